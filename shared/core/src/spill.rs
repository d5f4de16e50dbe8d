//! The spill path's plain data (docs/CONTRACTS.md §2a): what ingest-api writes to S3 when
//! Kinesis cannot make events durable within a request's budget, and what raw-writer's drain
//! reads back into the raw archive.
//!
//! A spill object holds the records PutRecords did not take, one NDJSON line each:
//! `{"arrival":…,"partition_key":…,"envelope":…}` — the envelope bytes exactly as they would
//! have been the Kinesis record's data. Its key names a fresh [`SpillId`]
//! ([`crate::keys::spill_key`]), and the drain gives every line stream coordinates derived from
//! that id and the line's position ([`coordinates`]): shard [`SPILL_SHARD`], a sequence number
//! that is the id's 39 decimal digits followed by the 6-digit line index. So a drained object
//! has one deterministic raw key, a drain that runs twice overwrites its own object, and two
//! spill objects never share a key.

use std::borrow::Cow;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::limits::CEILING_MAX_EVENTS;

/// The pseudo shard of drained spill lines in the raw archive (`raw/…/spill/…`).
pub const SPILL_SHARD: &str = "spill";

/// Lines a spill object may hold: one request's events at most.
pub const MAX_SPILL_LINES: usize = CEILING_MAX_EVENTS;

/// Width of a spill sequence number's line index.
const INDEX_DIGITS: usize = 6;
const _: () = assert!(
    MAX_SPILL_LINES < 1_000_000,
    "line index must fit INDEX_DIGITS"
);

/// Why a spill object or key cannot be read. Permanent: the object is not what ingest writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpillError {
    /// The key is not `spill/dt=YYYY-MM-DD/hr=HH/<32 hex>.ndjson`.
    #[error("not a spill object key: {0:?}")]
    Key(String),
    /// A line is not a spill line.
    #[error("spill line {line}: {reason}")]
    Line {
        /// 0-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// More lines than one request can hold, or none.
    #[error("spill object with {0} lines (1–{MAX_SPILL_LINES} expected)")]
    Count(usize),
}

/// The identity of one spill object: a UUIDv7 (time-ordered, random per object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpillId(u128);

impl SpillId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().as_u128())
    }

    /// The id as 32 lowercase hex digits (its form in keys).
    pub fn hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Parse 32 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let lower_hex = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        lower_hex
            .then(|| u128::from_str_radix(s, 16).ok())
            .flatten()
            .map(Self)
    }
}

impl Default for SpillId {
    fn default() -> Self {
        Self::new()
    }
}

/// The stream coordinates the drain gives line `index` of spill object `id`:
/// `(SPILL_SHARD, sequence number)`. Sequence numbers ascend with the index, and differ between
/// objects.
pub fn coordinates(id: SpillId, index: usize) -> (&'static str, String) {
    (SPILL_SHARD, format!("{:039}{index:0INDEX_DIGITS$}", id.0))
}

/// One line of a spill object, borrowing from its bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpillLine<'a> {
    /// When ingest spilled it (RFC 3339 UTC, milliseconds): the line's arrival in the archive.
    #[serde(borrow)]
    pub arrival: Cow<'a, str>,
    /// The partition key the Kinesis record would have had.
    #[serde(borrow)]
    pub partition_key: Cow<'a, str>,
    /// The envelope, verbatim.
    #[serde(borrow)]
    pub envelope: &'a RawValue,
}

/// Append one spill line (with its newline). `envelope` is one line of valid JSON (what
/// [`crate::envelope::Encoder`] writes), copied as is.
pub fn write_line<W: Write>(
    w: &mut W,
    arrival: &str,
    partition_key: &str,
    envelope: &[u8],
) -> io::Result<()> {
    w.write_all(b"{\"arrival\":")?;
    serde_json::to_writer(&mut *w, arrival)?;
    w.write_all(b",\"partition_key\":")?;
    serde_json::to_writer(&mut *w, partition_key)?;
    w.write_all(b",\"envelope\":")?;
    w.write_all(envelope)?;
    w.write_all(b"}\n")
}

/// Every line of a spill object, in order; the first bad line fails the whole object (a spill
/// object is written whole by ingest, so a bad line means it is not one).
pub fn read_lines(body: &[u8]) -> Result<Vec<SpillLine<'_>>, SpillError> {
    let mut out = Vec::new();
    for (line, text) in body.split(|&b| b == b'\n').enumerate() {
        if text.is_empty() {
            continue;
        }
        if out.len() == MAX_SPILL_LINES {
            return Err(SpillError::Count(MAX_SPILL_LINES + 1));
        }
        let parsed: SpillLine<'_> = serde_json::from_slice(text).map_err(|e| SpillError::Line {
            line,
            reason: e.to_string(),
        })?;
        out.push(parsed);
    }
    if out.is_empty() {
        return Err(SpillError::Count(0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_hex_and_only_as_lowercase_hex() {
        let id = SpillId::new();
        assert_eq!(SpillId::from_hex(&id.hex()), Some(id));
        assert_ne!(SpillId::new(), SpillId::new());
        for bad in [
            "",
            "0",
            &"A".repeat(32),
            &"g".repeat(32),
            &"0".repeat(31),
            &"0".repeat(33),
            "+0000000000000000000000000000000",
        ] {
            assert_eq!(SpillId::from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(SpillId::from_hex(&"f".repeat(32)), Some(SpillId(u128::MAX)));
    }

    #[test]
    fn coordinates_ascend_within_an_object_and_differ_between_objects() {
        let a = SpillId(u128::MAX);
        let (shard, s0) = coordinates(a, 0);
        assert_eq!(shard, SPILL_SHARD);
        assert_eq!(s0, format!("{}000000", u128::MAX));
        assert_eq!(s0.len(), 45);
        let (_, s1) = coordinates(a, 1);
        let (_, last) = coordinates(a, MAX_SPILL_LINES - 1);
        assert!(s0 < s1 && s1 < last && last.len() == 45);
        let (_, b0) = coordinates(SpillId(1), 0);
        assert_eq!(b0, format!("{}1000000", "0".repeat(38)));
        assert!(b0.bytes().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn lines_round_trip_verbatim() {
        let mut body = Vec::new();
        write_line(
            &mut body,
            "2026-12-02T10:00:00.000Z",
            "u-\"1\"",
            br#"{"v":1,"event":{"a":1.50}}"#,
        )
        .unwrap();
        write_line(&mut body, "2026-12-02T10:00:00.001Z", "p2", br#"{"v":1}"#).unwrap();
        assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 2);
        let lines = read_lines(&body).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].partition_key, "u-\"1\"");
        assert_eq!(lines[0].envelope.get(), r#"{"v":1,"event":{"a":1.50}}"#);
        assert_eq!(lines[1].arrival, "2026-12-02T10:00:00.001Z");
    }

    #[test]
    fn objects_that_are_not_spill_objects_are_refused() {
        assert_eq!(read_lines(b"").unwrap_err(), SpillError::Count(0));
        assert_eq!(read_lines(b"\n\n").unwrap_err(), SpillError::Count(0));
        let err =
            read_lines(b"{\"arrival\":\"x\",\"partition_key\":\"p\",\"envelope\":{}}\nnot json\n")
                .unwrap_err();
        assert!(matches!(err, SpillError::Line { line: 1, .. }), "{err}");
        let err = read_lines(b"{\"partition_key\":\"p\",\"envelope\":{}}").unwrap_err();
        assert!(matches!(err, SpillError::Line { line: 0, .. }), "{err}");
        let one = b"{\"arrival\":\"x\",\"partition_key\":\"p\",\"envelope\":{}}\n";
        let full: Vec<u8> = one.repeat(MAX_SPILL_LINES);
        assert_eq!(read_lines(&full).unwrap().len(), MAX_SPILL_LINES);
        let over: Vec<u8> = one.repeat(MAX_SPILL_LINES + 1);
        assert_eq!(
            read_lines(&over).unwrap_err(),
            SpillError::Count(MAX_SPILL_LINES + 1)
        );
    }
}
