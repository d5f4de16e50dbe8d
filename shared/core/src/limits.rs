//! Request and event limits, with safe defaults and bounds.
//!
//! Every limit is configurable through the environment (docs/CONTRACTS.md §5) so a deployment can
//! tighten them, but each has a hard ceiling derived from a service limit so a typo cannot open
//! the door to requests the rest of the pipeline cannot carry:
//!
//! * the body cap applies **after** decompression (a gzip body is inflated with an output cap,
//!   so a gzip bomb is refused without being allocated);
//! * an event's size is measured on its exact original bytes; its envelope (event + ~300 B of
//!   metadata) must additionally fit one Kinesis record (1 MiB including the partition key);
//! * nesting depth is counted with one iterative walk, so a deep document cannot exhaust the
//!   stack whatever the limit.

use crate::config::{ConfigError, Env};

/// Kinesis PutRecords: records per request.
pub const PUT_RECORDS_MAX_RECORDS: usize = 500;
/// Kinesis PutRecords: bytes per request (data + partition keys). Older documentation says 5 MiB,
/// newer 10 MiB; we design for the stricter one.
pub const PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;
/// Kinesis: bytes of one record (data + partition key) at the default maximum record size.
pub const KINESIS_RECORD_MAX_BYTES: usize = 1024 * 1024;
/// Kinesis: maximum partition key length in Unicode characters.
pub const PARTITION_KEY_MAX_CHARS: usize = 256;
/// Largest record Firehose accepts: 1,000 KiB before base64 encoding.
pub const FIREHOSE_RECORD_MAX_BYTES: usize = 1_000 * 1024;
/// Most records one PutRecordBatch call may carry.
pub const FIREHOSE_BATCH_MAX_RECORDS: usize = 500;
/// Most bytes (sum of record data) one PutRecordBatch call may carry: 4 MiB.
pub const FIREHOSE_BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Default body cap after decompression (5 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// Default number of events per request.
pub const DEFAULT_MAX_EVENTS: usize = 500;
/// Default size of one event (256 KiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;
/// Default JSON nesting depth of one event (the event object itself is depth 1).
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// Ceiling of `MAX_BODY_BYTES`: a synchronous Lambda payload is 6 MB and gzip rarely does better
/// than 10:1 on JSON, so more than 64 MiB of decompressed body cannot be a real client.
pub const CEILING_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Ceiling of `MAX_EVENTS`.
pub const CEILING_MAX_EVENTS: usize = 10_000;
/// Ceiling of `MAX_EVENT_BYTES`: the envelope must fit a 1 MiB Kinesis record with its metadata.
pub const CEILING_MAX_EVENT_BYTES: usize = 1000 * 1024;
/// Ceiling of `MAX_DEPTH`.
pub const CEILING_MAX_DEPTH: usize = 100;

/// The limits applied to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum body size in bytes, after decompression (and before, for uncompressed bodies).
    pub max_body_bytes: usize,
    /// Maximum number of events (array items, NDJSON non-blank lines) per request.
    pub max_events: usize,
    /// Maximum size in bytes of one event's original JSON text.
    pub max_event_bytes: usize,
    /// Maximum nesting depth of one event; the event object itself is depth 1.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_events: DEFAULT_MAX_EVENTS,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl Limits {
    /// Read `MAX_BODY_BYTES`, `MAX_EVENTS`, `MAX_EVENT_BYTES` and `MAX_DEPTH`; unset means the
    /// default, zero or above the ceiling is a [`ConfigError`].
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        fn get(env: &Env, name: &str, default: usize, max: usize) -> Result<usize, ConfigError> {
            let v = env.bounded_or(name, default as u64, max as u64)?;
            // Bounded by `max`, which is a usize.
            Ok(usize::try_from(v).unwrap_or(max))
        }
        Ok(Self {
            max_body_bytes: get(
                env,
                "MAX_BODY_BYTES",
                DEFAULT_MAX_BODY_BYTES,
                CEILING_MAX_BODY_BYTES,
            )?,
            max_events: get(env, "MAX_EVENTS", DEFAULT_MAX_EVENTS, CEILING_MAX_EVENTS)?,
            max_event_bytes: get(
                env,
                "MAX_EVENT_BYTES",
                DEFAULT_MAX_EVENT_BYTES,
                CEILING_MAX_EVENT_BYTES,
            )?,
            max_depth: get(env, "MAX_DEPTH", DEFAULT_MAX_DEPTH, CEILING_MAX_DEPTH)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_match_the_contract() {
        let l = Limits::from_env(&env(&[])).unwrap();
        assert_eq!(l, Limits::default());
        assert_eq!(l.max_body_bytes, 5_242_880);
        assert_eq!(l.max_events, 500);
        assert_eq!(l.max_event_bytes, 262_144);
        assert_eq!(l.max_depth, 32);
    }

    #[test]
    fn values_are_read_and_bounded() {
        let l = Limits::from_env(&env(&[
            ("MAX_BODY_BYTES", "1024"),
            ("MAX_EVENTS", "10"),
            ("MAX_EVENT_BYTES", "100"),
            ("MAX_DEPTH", "4"),
        ]))
        .unwrap();
        assert_eq!(
            l,
            Limits {
                max_body_bytes: 1024,
                max_events: 10,
                max_event_bytes: 100,
                max_depth: 4
            }
        );
        for (name, bad) in [
            ("MAX_EVENTS", "0"),
            ("MAX_EVENTS", "10001"),
            ("MAX_DEPTH", "101"),
            ("MAX_EVENT_BYTES", "2000000"),
            ("MAX_BODY_BYTES", "abc"),
        ] {
            let err = Limits::from_env(&env(&[(name, bad)])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_largest_event_fits_one_kinesis_record_with_metadata() {
        // Envelope metadata is bounded (ids ≤ 128 chars, a few timestamps, IP, a user agent
        // API Gateway truncates); 24 KiB of head-room is far more than it needs.
        const _: () = assert!(CEILING_MAX_EVENT_BYTES + 24 * 1024 <= KINESIS_RECORD_MAX_BYTES);
    }
}
