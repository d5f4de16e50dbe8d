//! The raw-archive line (docs/CONTRACTS.md §2): one Kinesis record as one NDJSON line.
//!
//! `{"kinesis":{"shard_id":…,"sequence_number":…,"arrival":…,"partition_key":…},"envelope":…}`
//! — the envelope bytes are copied verbatim, never re-encoded, and the Kinesis coordinates make
//! every final row traceable to its record. An event from a packed record ([`crate::pack`]) also
//! names its position in it: `"sub_sequence_number":n` after `partition_key`. Records that are not envelopes are archived as
//! `{"kinesis":{…},"reason":…,"data_b64":…}` lines under `raw-invalid/`.

use std::borrow::Cow;
use std::io::{self, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Where a record came from in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KinesisCoords<'a> {
    /// Shard id, e.g. `shardId-000000000000`.
    #[serde(borrow)]
    pub shard_id: Cow<'a, str>,
    /// Sequence number (decimal string).
    #[serde(borrow)]
    pub sequence_number: Cow<'a, str>,
    /// Approximate arrival time, RFC 3339 UTC with milliseconds.
    #[serde(borrow)]
    pub arrival: Cow<'a, str>,
    /// The record's partition key (a packed event's: its user record's).
    #[serde(borrow)]
    pub partition_key: Cow<'a, str>,
    /// The event's position inside a packed record ([`crate::pack`]; the KCL's name); absent
    /// for a record that holds one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_sequence_number: Option<u32>,
}

/// Write one archive line (with its trailing newline) for a valid envelope.
///
/// `envelope` must already be checked with [`crate::envelope::Envelope::parse`] (one line, valid
/// JSON): it is copied as is.
pub fn write_line<W: Write>(
    w: &mut W,
    coords: &KinesisCoords<'_>,
    envelope: &[u8],
) -> io::Result<()> {
    w.write_all(b"{\"kinesis\":")?;
    serde_json::to_writer(&mut *w, coords)?;
    w.write_all(b",\"envelope\":")?;
    w.write_all(envelope)?;
    w.write_all(b"}\n")
}

/// Write one `raw-invalid/` line (with its trailing newline): the record's bytes base64-encoded
/// with the reason it is not an envelope.
pub fn write_invalid_line<W: Write>(
    w: &mut W,
    coords: &KinesisCoords<'_>,
    reason: &str,
    data: &[u8],
) -> io::Result<()> {
    #[derive(Serialize)]
    struct Invalid<'a> {
        kinesis: &'a KinesisCoords<'a>,
        reason: &'a str,
        data_b64: String,
    }
    serde_json::to_writer(
        &mut *w,
        &Invalid {
            kinesis: coords,
            reason,
            data_b64: base64::engine::general_purpose::STANDARD.encode(data),
        },
    )?;
    w.write_all(b"\n")
}

/// A parsed archive line, borrowing from the line bytes.
#[derive(Debug, Deserialize)]
pub struct RawLine<'a> {
    /// Stream coordinates.
    #[serde(borrow)]
    pub kinesis: KinesisCoords<'a>,
    /// The envelope, verbatim; decode it with [`crate::envelope::Envelope::parse`].
    #[serde(borrow)]
    pub envelope: &'a RawValue,
}

impl<'a> RawLine<'a> {
    /// Decode one archive line (without its newline).
    pub fn parse(line: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{self, Envelope, EventRef, RequestMeta};

    fn coords() -> KinesisCoords<'static> {
        KinesisCoords {
            shard_id: "shardId-000000000001".into(),
            sequence_number: "49590338271490256608559692538361571095921575989136588898".into(),
            arrival: "2026-11-25T19:55:18.000Z".into(),
            partition_key: "user \"7\"".into(),
            sub_sequence_number: None,
        }
    }

    #[test]
    fn line_round_trips_and_keeps_envelope_bytes() {
        let env = envelope::encode(
            &EventRef {
                id: "e1",
                id_generated: false,
                event_type: "t",
                raw: br#"{"type":"t","a":[1, 2]}"#,
                event_time: None,
            },
            &RequestMeta::default(),
        );
        let mut out = Vec::new();
        write_line(&mut out, &coords(), &env).unwrap();
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
        let line = RawLine::parse(&out[..out.len() - 1]).unwrap();
        assert_eq!(line.kinesis, coords());
        assert_eq!(line.envelope.get().as_bytes(), &env[..]);
        let parsed = Envelope::parse(line.envelope.get().as_bytes()).unwrap();
        assert_eq!(&*parsed.event_bytes(), br#"{"type":"t","a":[1, 2]}"#);
    }

    #[test]
    fn invalid_line_keeps_every_byte() {
        let data = [0u8, 159, 146, 150, b'\n', b'x'];
        let mut out = Vec::new();
        write_invalid_line(&mut out, &coords(), "not an envelope: x", &data).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let b64 = v["data_b64"].as_str().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
            data
        );
        assert_eq!(v["reason"], "not an envelope: x");
        assert_eq!(v["kinesis"]["shard_id"], "shardId-000000000001");
    }
}
