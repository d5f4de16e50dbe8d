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

use crate::envelope::{Envelope, EnvelopeError, has_line_break};

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

/// An archive line with its envelope decoded in the same pass over the bytes: what the loader
/// reads for every line. It accepts exactly the lines that [`RawLine::parse`] followed by
/// [`Envelope::parse`] accept, with the same values and, for a line it refuses, the same error
/// (the rare refused line is decoded again the two-step way, which names the failing step).
#[derive(Debug)]
pub struct DecodedLine<'a> {
    /// Stream coordinates.
    pub kinesis: KinesisCoords<'a>,
    /// The envelope, decoded and checked.
    pub envelope: Envelope<'a>,
}

/// Why an archive line does not decode ([`DecodedLine::parse`]). Permanent: the line is what
/// the archive holds.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// Not a raw-archive line (not JSON, or not `{"kinesis":…,"envelope":…}`).
    #[error("{0}")]
    Line(serde_json::Error),
    /// The line's envelope is not a valid envelope.
    #[error("{0}")]
    Envelope(EnvelopeError),
}

impl<'a> DecodedLine<'a> {
    /// Decode one archive line (without its newline) and its envelope.
    pub fn parse(line: &'a [u8]) -> Result<Self, LineError> {
        /// The line's shape with the envelope's fields read in place.
        #[derive(Deserialize)]
        struct OnePass<'a> {
            #[serde(borrow)]
            kinesis: KinesisCoords<'a>,
            #[serde(borrow)]
            envelope: Envelope<'a>,
        }
        // A line break anywhere (only a `\r` can be in a line) is refused by the envelope's
        // check when it is inside the envelope: leave that case to the two-step path.
        if !has_line_break(line)
            && let Ok(one) = serde_json::from_slice::<OnePass<'a>>(line)
            && let Ok(envelope) = one.envelope.checked()
        {
            return Ok(Self {
                kinesis: one.kinesis,
                envelope,
            });
        }
        let raw = RawLine::parse(line).map_err(LineError::Line)?;
        let envelope =
            Envelope::parse(raw.envelope.get().as_bytes()).map_err(LineError::Envelope)?;
        Ok(Self {
            kinesis: raw.kinesis,
            envelope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{self, EventRef, RequestMeta};

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
    /// The two-step decode, as [`DecodedLine::parse`] must match it.
    fn two_step(line: &[u8]) -> Result<String, String> {
        let raw = RawLine::parse(line).map_err(|e| format!("line: {e}"))?;
        let env =
            Envelope::parse(raw.envelope.get().as_bytes()).map_err(|e| format!("envelope: {e}"))?;
        Ok(format!("{:?} {env:?}", raw.kinesis))
    }

    fn one_pass(line: &[u8]) -> Result<String, String> {
        match DecodedLine::parse(line) {
            Ok(d) => Ok(format!("{:?} {:?}", d.kinesis, d.envelope)),
            Err(LineError::Line(e)) => Err(format!("line: {e}")),
            Err(LineError::Envelope(e)) => Err(format!("envelope: {e}")),
        }
    }

    #[test]
    fn one_pass_decodes_what_two_steps_decode_and_fails_alike() {
        let env = envelope::encode(
            &EventRef {
                id: "e\"1",
                id_generated: true,
                event_type: "page_view",
                raw: br#"{"type":"page_view","a":[1, 2],"s":"x\u00e9\"y"}"#,
                event_time: Some("2026-11-25T19:55:17.000Z"),
            },
            &RequestMeta {
                request_id: "req-1".into(),
                received_at: Some("2026-11-25T19:55:17.123Z".into()),
                source_ip: Some("203.0.113.9".into()),
                user_agent: Some("Mozilla/5.0 \"quoted\"".into()),
                principal: Some("key-1".into()),
                stage: Some("$default".into()),
                protocol: Some("segment"),
            },
        );
        let mut good = Vec::new();
        write_line(&mut good, &coords(), &env).unwrap();
        good.pop();
        let mut lines: Vec<Vec<u8>> = vec![good.clone()];
        // Every truncation and every one-byte deletion: mostly refused, by the same step with
        // the same message.
        for i in 0..good.len() {
            lines.push(good[..i].to_vec());
            let mut cut = good.clone();
            cut.remove(i);
            lines.push(cut);
        }
        let text = String::from_utf8(good.clone()).unwrap();
        for (from, to) in [
            (r#""v":1"#, r#""v":2"#),
            (r#""id":"e\"1""#, r#""id":"""#),
            (r#""type":"page_view""#, r#""type":"""#),
            (r#","event":{"#, r#","event_text":"{}","event":{"#),
            (r#""event":{"#, r#""other":{"#),
            ("Mozilla", "Mo\rzilla"),
            (r#","id":"#, ",\r\"id\":"),
            ("Mozilla", "Mo\\rzilla"),
            (r#""arrival""#, r#""arrival":1,"x""#),
        ] {
            assert!(text.contains(from), "{from}");
            lines.push(text.replacen(from, to, 1).into_bytes());
        }
        lines.push(b"{\"envelope\":{},\"kinesis\":{}}\r".to_vec());
        let mut refused = 0;
        for line in &lines {
            let want = two_step(line);
            refused += usize::from(want.is_err());
            assert_eq!(one_pass(line), want, "{}", String::from_utf8_lossy(line));
        }
        assert!(one_pass(&good).is_ok());
        assert!(
            refused > good.len(),
            "most variants are refused ({refused})"
        );
    }
}
