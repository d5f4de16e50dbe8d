//! Streaming encoding of one shard batch into its `raw/` and `raw-invalid/` objects.
//!
//! Each record is checked with [`Envelope::parse`]; a valid one is written as a raw-archive line
//! (docs/CONTRACTS.md §2) **straight into the compressor** over a `Vec<u8>`, so the batch never
//! exists uncompressed a second time: peak memory ≈ the decoded event + the compressed outputs.
//! A record that is not an envelope (or whose `data` was not base64) goes, base64-encoded with the
//! reason, to the invalid object — counted, never dropped, never blocking the valid ones.
//!
//! The uncompressed size of every valid line is recorded on the way: the Firehose packer needs it
//! and can rebuild any line later from the borrowed record without keeping a copy.

use std::io::{self, BufWriter, Write};

use bytes::Bytes;

use caudal_core::codec::{Codec, Encoder};
use caudal_core::envelope::Envelope;
use caudal_core::raw;

use crate::input::{InRecord, RecordData};

/// The result of encoding one batch.
#[derive(Debug)]
pub struct EncodedBatch {
    /// Compressed NDJSON of the valid records (`None` when there are none).
    pub raw: Option<Bytes>,
    /// Compressed NDJSON of the invalid records (`None` when there are none).
    pub invalid: Option<Bytes>,
    /// Indices (into the batch's records) of the valid records, in order: line `n` (0-based) of
    /// the raw object is record `valid[n]`.
    pub valid: Vec<usize>,
    /// Uncompressed size of each raw line, newline included (parallel to `valid`).
    pub line_sizes: Vec<usize>,
    /// Number of records routed to the invalid object.
    pub invalid_count: usize,
    /// Sum of the records' payload sizes.
    pub bytes_in: u64,
    /// Uncompressed bytes of the raw object.
    pub raw_bytes: u64,
    /// Uncompressed bytes of the invalid object.
    pub invalid_bytes: u64,
}

impl EncodedBatch {
    /// Compressed bytes of both objects.
    pub fn bytes_written(&self) -> u64 {
        let len = |v: &Option<Bytes>| v.as_ref().map_or(0, |b| b.len() as u64);
        len(&self.raw) + len(&self.invalid)
    }
}

/// Why a record is not archived as a raw line, or `None` when it is a valid envelope.
pub fn invalid_reason(data: &RecordData<'_>) -> Option<String> {
    match data {
        RecordData::Bytes(bytes) => Envelope::parse(bytes).err().map(|e| e.to_string()),
        RecordData::Undecodable { reason, .. } => Some((*reason).to_owned()),
        RecordData::Unpackable { error, .. } => Some(format!("packed record: {error}")),
    }
}

/// Counts what goes through it (the uncompressed line sizes).
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressor behind a buffer: a raw line is written as many small pieces (serde writes
/// each token separately), and feeding those one by one to the compressor costs more than the
/// compression itself.
type LineSink = Counting<BufWriter<Encoder<Vec<u8>>>>;

const WRITE_BUFFER: usize = 64 * 1024;

fn new_encoder(codec: Codec, capacity: usize) -> io::Result<LineSink> {
    Ok(Counting {
        inner: BufWriter::with_capacity(WRITE_BUFFER, codec.encoder(Vec::with_capacity(capacity))?),
        count: 0,
    })
}

/// Write one valid record's raw line (used again by the Firehose packer: same bytes).
pub fn write_raw_line<W: Write>(w: &mut W, record: &InRecord<'_>) -> io::Result<()> {
    match record.data {
        RecordData::Bytes(bytes) => raw::write_line(w, &record.coords, bytes),
        RecordData::Undecodable { .. } | RecordData::Unpackable { .. } => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "undecodable record has no raw line",
        )),
    }
}

/// Encode a batch's records (already in stream order) with `codec`.
///
/// Errors come only from the compressor writing into memory, i.e. effectively never; they are
/// reported rather than unwrapped.
pub fn encode_batch(records: &[InRecord<'_>], codec: Codec) -> io::Result<EncodedBatch> {
    let bytes_in: u64 = records.iter().map(|r| r.data.len() as u64).sum();
    // Capacity is a reservation, not resident memory: pages are touched only as output grows,
    // and reserving avoids the Vec doubling (which would briefly hold two copies).
    let capacity = usize::try_from(bytes_in / 3).unwrap_or(0) + 4096;
    let mut raw_enc: Option<LineSink> = None;
    let mut invalid_enc: Option<LineSink> = None;
    let mut valid = Vec::with_capacity(records.len());
    let mut line_sizes = Vec::with_capacity(records.len());
    let mut invalid_count = 0usize;
    for (i, record) in records.iter().enumerate() {
        match invalid_reason(&record.data) {
            None => {
                let enc = match &mut raw_enc {
                    Some(e) => e,
                    None => raw_enc.insert(new_encoder(codec, capacity)?),
                };
                let before = enc.count;
                write_raw_line(enc, record)?;
                valid.push(i);
                line_sizes.push(usize::try_from(enc.count - before).unwrap_or(usize::MAX));
            }
            Some(reason) => {
                let enc = match &mut invalid_enc {
                    Some(e) => e,
                    None => invalid_enc.insert(new_encoder(codec, 4096)?),
                };
                let original = match record.data {
                    RecordData::Bytes(b) | RecordData::Unpackable { bytes: b, .. } => b,
                    RecordData::Undecodable { original, .. } => original,
                };
                raw::write_invalid_line(enc, &record.coords, &reason, original)?;
                invalid_count += 1;
            }
        }
    }
    // `Bytes::from(Vec)` takes the buffer over without copying it.
    let finish = |e: Option<LineSink>| -> io::Result<(Option<Bytes>, u64)> {
        match e {
            Some(c) => {
                let encoder = c.inner.into_inner().map_err(|e| e.into_error())?;
                Ok((Some(Bytes::from(encoder.finish()?)), c.count))
            }
            None => Ok((None, 0)),
        }
    };
    let (raw, raw_bytes) = finish(raw_enc)?;
    let (invalid, invalid_bytes) = finish(invalid_enc)?;
    Ok(EncodedBatch {
        raw,
        invalid,
        valid,
        line_sizes,
        invalid_count,
        bytes_in,
        raw_bytes,
        invalid_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use caudal_core::envelope::{EventRef, RequestMeta, encode};
    use caudal_core::raw::{KinesisCoords, RawLine};

    fn rec<'a>(seq: &'a str, data: RecordData<'a>) -> InRecord<'a> {
        InRecord {
            coords: KinesisCoords {
                shard_id: "shardId-000000000000".into(),
                sequence_number: seq.into(),
                arrival: "2026-11-25T19:55:18.000Z".into(),
                partition_key: "pk".into(),
                sub_sequence_number: None,
            },
            arrival: time::macros::datetime!(2026-11-25 19:55:18 UTC),
            data,
        }
    }

    fn envelope(i: usize) -> Vec<u8> {
        let raw = format!(r#"{{"type":"click","n":{i},"s":"{}"}}"#, "x".repeat(i % 50));
        encode(
            &EventRef {
                id: &format!("id-{i}"),
                id_generated: false,
                event_type: "click",
                raw: raw.as_bytes(),
                event_time: None,
            },
            &RequestMeta::default(),
        )
    }

    #[test]
    fn compression_round_trips_for_both_codecs() {
        let envs: Vec<Vec<u8>> = (0..300).map(envelope).collect();
        let seqs: Vec<String> = (0..300).map(|i| (1000 + i).to_string()).collect();
        let records: Vec<InRecord<'_>> = envs
            .iter()
            .zip(&seqs)
            .map(|(e, s)| rec(s, RecordData::Bytes(e)))
            .collect();
        for codec in [Codec::Gzip { level: 6 }, Codec::Zstd { level: 3 }] {
            let out = encode_batch(&records, codec).unwrap();
            assert!(out.invalid.is_none());
            assert_eq!(out.invalid_count, 0);
            let packed = out.raw.as_ref().unwrap();
            let plain = codec.decompress_capped(packed, 10 << 20).unwrap();
            assert_eq!(plain.len() as u64, out.raw_bytes);
            assert!((packed.len() as u64) < out.raw_bytes / 3, "compresses");
            let lines: Vec<&[u8]> = plain
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(lines.len(), 300);
            for (n, line) in lines.iter().enumerate() {
                assert_eq!(out.line_sizes[n], line.len() + 1);
                let parsed = RawLine::parse(line).unwrap();
                assert_eq!(parsed.kinesis, records[n].coords);
                assert_eq!(parsed.envelope.get().as_bytes(), &envs[n][..]);
            }
        }
    }

    #[test]
    fn invalid_records_are_routed_not_dropped() {
        let good = envelope(1);
        let records = vec![
            rec("1", RecordData::Bytes(&good)),
            rec("2", RecordData::Bytes(b"Hello, this is a test 123.")),
            rec("3", RecordData::Bytes(br#"{"v":1,"id":"x"}"#)),
            rec(
                "4",
                RecordData::Undecodable {
                    original: b"%%%",
                    reason: "data is not valid base64",
                },
            ),
            rec("5", RecordData::Bytes(&good)),
            rec("6", RecordData::Bytes(b"")),
        ];
        let codec = Codec::default();
        let out = encode_batch(&records, codec).unwrap();
        assert_eq!(out.valid, vec![0, 4]);
        assert_eq!(out.invalid_count, 4);
        let plain = codec
            .decompress_capped(out.invalid.as_ref().unwrap(), 1 << 20)
            .unwrap();
        let lines: Vec<serde_json::Value> = plain
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let seqs: Vec<&str> = lines
            .iter()
            .map(|l| l["kinesis"]["sequence_number"].as_str().unwrap())
            .collect();
        assert_eq!(seqs, ["2", "3", "4", "6"]);
        assert_eq!(lines[0]["data_b64"], "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0IDEyMy4=");
        assert!(
            lines[0]["reason"]
                .as_str()
                .unwrap()
                .starts_with("not an envelope")
        );
        assert_eq!(lines[2]["data_b64"], "JSUl");
        assert_eq!(lines[2]["reason"], "data is not valid base64");
        assert_eq!(lines[3]["data_b64"], "");
        let raw = codec
            .decompress_capped(out.raw.as_ref().unwrap(), 1 << 20)
            .unwrap();
        assert_eq!(raw.iter().filter(|b| **b == b'\n').count(), 2);
    }

    #[test]
    fn all_invalid_writes_no_raw_object() {
        let records = vec![rec("1", RecordData::Bytes(b"nope"))];
        let out = encode_batch(&records, Codec::default()).unwrap();
        assert!(out.raw.is_none());
        assert!(out.invalid.is_some());
        assert!(out.valid.is_empty());
    }
}
