//! The lake retry message (docs/CONTRACTS.md §7): which lines of which raw object still have to
//! reach the lake.
//!
//! When Firehose does not take a batch's lines within the invocation, the writer does **not**
//! hold the shard for them: the raw object already holds every line, so all that must survive is
//! a *reference* — bucket, key and the 1-based line numbers — sent as one small SQS message per
//! raw object to the lake retry queue. The retry handler ([`crate::reforward`]) reads the object
//! back and forwards exactly those lines.
//!
//! ```json
//! {"v":1,"bucket":"caudal-raw-…","key":"raw/dt=…/hr=…/shardId-…/…-….ndjson.gz","lines":[[1,500],[731,1000]],"error":"ServiceUnavailableException"}
//! ```
//!
//! * `lines` are inclusive ranges of raw-object line numbers (1-based, the numbering the
//!   loader's lineage uses), ascending and disjoint. A whole object is one range.
//! * Size: a message never carries payload bytes. Ranges come from Firehose records, which hold
//!   consecutive lines, so a failure is a handful of ranges; past [`MAX_RANGES`] (only possible
//!   with many scattered per-record failures) the message names one covering range instead —
//!   a superset, so some lines may reach the lake twice, never zero times. The worst case is
//!   ~15 KB, far inside SQS's 256 KiB.
//! * `error` is the first Firehose error code, for whoever inspects the dead-letter queue.
//! * Parsing is strict ([`LakeRetry::parse`]): unknown version, a key outside `raw/` or its key
//!   alphabet, empty or unordered ranges are refused, so a hand-written or corrupted message
//!   fails (and reaches the dead-letter queue) instead of forwarding the wrong bytes.

use std::ops::RangeInclusive;

use caudal_core::codec::Codec;
use serde::{Deserialize, Serialize};

/// Version of the message format.
pub const LAKE_RETRY_VERSION: u32 = 1;
/// Most ranges one message lists before it names a single covering range.
pub const MAX_RANGES: usize = 1000;
/// Longest S3 key.
const MAX_KEY_BYTES: usize = 1024;

/// One lake retry message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeRetry {
    /// Format version ([`LAKE_RETRY_VERSION`]).
    pub v: u32,
    /// The raw bucket.
    pub bucket: String,
    /// The raw object's key.
    pub key: String,
    /// Inclusive 1-based line ranges, ascending and disjoint.
    pub lines: Vec<[usize; 2]>,
    /// The first Firehose error code seen, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a message body is not a usable lake retry message. Permanent: the same body can never
/// succeed, so the message is reported failed until the queue moves it to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LakeRetryError {
    /// Not the JSON shape above.
    #[error("not a lake retry message: {0}")]
    Shape(String),
    /// A version this code does not know.
    #[error("unknown lake retry message version {0}")]
    Version(u32),
    /// The key is not a raw object key.
    #[error("key {key:?} is not a raw object key: {reason}")]
    Key {
        /// The offending key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The ranges are empty, not 1-based, unordered or overlapping.
    #[error("invalid line ranges: {0}")]
    Lines(String),
}

impl LakeRetryError {
    /// None of these is fixed by retrying the same message.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

fn key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'=' | b'.' | b'_' | b'-')
}

/// Whether `key` is one the writer could have written under `raw/`: the prefix, the key
/// alphabet of [`caudal_core::keys`], no `..`, and a codec suffix.
pub fn check_raw_key(key: &str) -> Result<Codec, LakeRetryError> {
    let refuse = |reason| LakeRetryError::Key {
        key: key.to_owned(),
        reason,
    };
    if !key.starts_with(caudal_core::keys::RAW_PREFIX) {
        return Err(refuse("does not start with raw/"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(refuse("longer than 1024 bytes"));
    }
    if !key.bytes().all(key_byte) || key.contains("..") {
        return Err(refuse("characters outside [A-Za-z0-9/=._-]"));
    }
    Codec::from_key(key).ok_or_else(|| refuse("no .gz or .zst suffix"))
}

/// Coalesce ascending 0-based positions into inclusive 1-based line ranges.
fn ranges(positions: &[usize]) -> Vec<[usize; 2]> {
    let mut out: Vec<[usize; 2]> = Vec::new();
    for &p in positions {
        let line = p + 1;
        match out.last_mut() {
            Some(last) if line <= last[1] + 1 => last[1] = last[1].max(line),
            _ => out.push([line, line]),
        }
    }
    out
}

impl LakeRetry {
    /// The message for the lines at `positions` (0-based, ascending) of the raw object `key`.
    pub fn for_lines(
        bucket: &str,
        key: &str,
        positions: &[usize],
        error: Option<&str>,
    ) -> LakeRetry {
        let mut lines = ranges(positions);
        if lines.len() > MAX_RANGES
            && let (Some(first), Some(last)) = (lines.first(), lines.last())
        {
            lines = vec![[first[0], last[1]]];
        }
        LakeRetry {
            v: LAKE_RETRY_VERSION,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            lines,
            error: error.map(str::to_owned),
        }
    }

    /// The message body.
    pub fn to_body(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Read and validate a message body.
    pub fn parse(body: &str) -> Result<LakeRetry, LakeRetryError> {
        let m: LakeRetry =
            serde_json::from_str(body).map_err(|e| LakeRetryError::Shape(e.to_string()))?;
        if m.v != LAKE_RETRY_VERSION {
            return Err(LakeRetryError::Version(m.v));
        }
        check_raw_key(&m.key)?;
        if m.lines.is_empty() {
            return Err(LakeRetryError::Lines("no ranges".into()));
        }
        let mut prev_end = 0usize;
        for &[first, last] in &m.lines {
            if first == 0 || first > last || first <= prev_end {
                return Err(LakeRetryError::Lines(format!(
                    "[{first},{last}] after line {prev_end}: ranges are 1-based, ascending and disjoint"
                )));
            }
            prev_end = last;
        }
        Ok(m)
    }

    /// The named lines as inclusive 1-based ranges.
    pub fn ranges(&self) -> impl Iterator<Item = RangeInclusive<usize>> + '_ {
        self.lines.iter().map(|&[a, b]| a..=b)
    }

    /// The highest line number named.
    pub fn last_line(&self) -> usize {
        self.lines.last().map_or(0, |r| r[1])
    }

    /// How many lines the message names.
    pub fn line_count(&self) -> usize {
        self.lines.iter().map(|&[a, b]| b - a + 1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "raw/dt=2026-11-25/hr=19/shardId-000000000003/\
        0000000000000000000000000000000000000000000000000000000000000101-\
        0000000000000000000000000000000000000000000000000000000000000105.ndjson.gz";

    #[test]
    fn positions_become_one_based_ranges_and_round_trip() {
        let m = LakeRetry::for_lines("b", KEY, &[0, 1, 2, 5, 7, 8], Some("InternalFailure"));
        assert_eq!(m.lines, vec![[1, 3], [6, 6], [8, 9]]);
        assert_eq!(m.line_count(), 6);
        assert_eq!(m.last_line(), 9);
        let body = m.to_body();
        assert_eq!(
            body,
            format!(
                r#"{{"v":1,"bucket":"b","key":"{KEY}","lines":[[1,3],[6,6],[8,9]],"error":"InternalFailure"}}"#
            )
        );
        assert_eq!(LakeRetry::parse(&body).unwrap(), m);
        let whole = LakeRetry::for_lines("b", KEY, &(0..10_000).collect::<Vec<_>>(), None);
        assert_eq!(whole.lines, vec![[1, 10_000]]);
        assert!(!whole.to_body().contains("error"));
    }

    #[test]
    fn scattered_failures_name_one_covering_range_and_stay_small() {
        // Every other line of a 10,000-line object: 5,000 ranges, more than MAX_RANGES.
        let positions: Vec<usize> = (0..10_000).step_by(2).collect();
        let m = LakeRetry::for_lines("b", KEY, &positions, None);
        assert_eq!(m.lines, vec![[1, 9_999]]);
        // Just under the limit the ranges are kept, and the body is far below 256 KiB.
        let positions: Vec<usize> = (0..2 * MAX_RANGES).step_by(2).map(|p| p + 10_000).collect();
        let m = LakeRetry::for_lines("b", KEY, &positions, Some("ServiceUnavailableException"));
        assert_eq!(m.lines.len(), MAX_RANGES);
        assert!(m.to_body().len() < 32 * 1024, "{}", m.to_body().len());
    }

    #[test]
    fn bad_messages_are_refused() {
        let ok = LakeRetry::for_lines("b", KEY, &[0], None);
        let with = |f: &dyn Fn(&mut LakeRetry)| {
            let mut m = ok.clone();
            f(&mut m);
            LakeRetry::parse(&m.to_body())
        };
        assert!(with(&|_| ()).is_ok());
        assert!(matches!(
            with(&|m| m.v = 2),
            Err(LakeRetryError::Version(2))
        ));
        for key in [
            "raw-invalid/x.ndjson.gz",
            "raw/../staging/x.ndjson.gz",
            "raw/a b.ndjson.gz",
            "raw/x.ndjson",
        ] {
            assert!(
                matches!(
                    with(&|m| m.key = key.into()),
                    Err(LakeRetryError::Key { .. })
                ),
                "{key}"
            );
        }
        for lines in [
            vec![],
            vec![[0, 1]],
            vec![[3, 2]],
            vec![[1, 5], [5, 6]],
            vec![[4, 5], [1, 2]],
        ] {
            assert!(
                matches!(
                    with(&|m| m.lines = lines.clone()),
                    Err(LakeRetryError::Lines(_))
                ),
                "{lines:?}"
            );
        }
        assert!(matches!(
            LakeRetry::parse(r#"{"v":1,"bucket":"b","key":"raw/x.gz","lines":[[1,1]],"data":"x"}"#),
            Err(LakeRetryError::Shape(_))
        ));
        assert!(matches!(
            LakeRetry::parse("not json"),
            Err(LakeRetryError::Shape(_))
        ));
    }
}
