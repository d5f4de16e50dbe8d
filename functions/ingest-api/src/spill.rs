//! The spill path: what ingest does with events Kinesis could not make durable in time.
//!
//! With `SPILL_BUCKET` set, PutRecords gets the request's budget minus `SPILL_RESERVE_MS`; the
//! records it did not take (throttled, failed, timed out — whatever the reason, none is the
//! event's fault: events are checked before they are sent) are written to S3 as one spill
//! object ([`caudal_core::spill`], `spill/…/<id>.ndjson`, `If-None-Match: *`) in the time kept
//! back. Only when that write succeeds are they answered `accepted`: every accepted event is
//! in Kinesis or in S3, never only in the client's memory. raw-writer's drain moves spill
//! objects into the raw archive; the loader's dedupe on (event id, principal) keeps an event
//! that reached both stores (a PutRecords that timed out but landed) to one row.
//!
//! S3 is the second store because it fails independently of Kinesis (another service, its own
//! SLA), takes a whole request in one PUT (SQS would need up to 5 MiB / 256 KiB = 20+ messages
//! per request, each a separate failure), and costs one PUT ($0.005 / 1,000) per spilled
//! request, only while Kinesis refuses.

use std::time::Duration;

use bytes::Bytes;
use caudal_aws::s3::{PutRequest, lost_conditional_write, put_object};
use caudal_core::envelope::format_timestamp;
use caudal_core::pack;
use caudal_core::retry::{CallError, RetryPolicy};
use caudal_core::spill::{SPILL_SHARD, SpillId, write_line};
use caudal_core::stream::{PutOutcome, Record, Written};
use time::OffsetDateTime;
use tokio::time::Instant;

/// Where spill objects go.
#[derive(Debug, Clone)]
pub struct SpillTarget {
    /// S3 client (from the client factory).
    pub s3: aws_sdk_s3::Client,
    /// `SPILL_BUCKET`.
    pub bucket: String,
    /// `SPILL_RESERVE_MS`: time of the request's budget kept back for the spill write.
    pub reserve: Duration,
}

/// How long the breaker stays open after a request whose every record Kinesis refused.
pub const BREAKER_OPEN_FOR: Duration = Duration::from_secs(10);
/// What Kinesis gets while the breaker is open: one attempt, at most this long.
pub const BREAKER_PROBE: Duration = Duration::from_millis(300);

/// A per-sandbox breaker: once Kinesis has refused every record of a request, the requests of
/// the next [`BREAKER_OPEN_FOR`] give it one short probe ([`BREAKER_PROBE`]) before spilling
/// instead of the whole budget, so an outage costs a request one S3 PUT, not seconds. Any
/// request that Kinesis takes whole closes it again.
#[derive(Debug, Default)]
pub struct Breaker {
    open_until: std::sync::Mutex<Option<Instant>>,
}

impl Breaker {
    /// Whether Kinesis should get only the probe now.
    pub fn is_open(&self, now: Instant) -> bool {
        self.open_until
            .lock()
            .map(|u| u.is_some_and(|t| now < t))
            .unwrap_or(false)
    }

    /// Learn from a PutRecords outcome (before any spill): every record refused opens the
    /// breaker, every record taken closes it, a partial failure leaves it as it is.
    pub fn record(&self, outcome: &PutOutcome, now: Instant) {
        let failed = outcome.results.iter().filter(|r| r.is_err()).count();
        let Ok(mut until) = self.open_until.lock() else {
            return;
        };
        if outcome.results.is_empty() {
            return;
        }
        if failed == outcome.results.len() {
            *until = Some(now + BREAKER_OPEN_FOR);
        } else if failed == 0 {
            *until = None;
        }
    }
}

/// What the spill step did for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpillReport {
    /// Events written to the spill object (answered `accepted`).
    pub spilled: usize,
    /// The spill object's key, when one was written.
    pub key: Option<String>,
    /// Why the spill write failed (its events stay `retry`).
    pub error: Option<CallError>,
    /// S3 calls made.
    pub attempts: u32,
}

/// The deadline PutRecords gets when spilling is on: `reserve` before `deadline`, but never
/// less than half of the time left (a short budget still tries Kinesis first).
pub fn kinesis_deadline(deadline: Instant, reserve: Duration, now: Instant) -> Instant {
    let left = deadline.saturating_duration_since(now);
    now + left.saturating_sub(reserve).max(left / 2)
}

/// Writes the records `outcome` failed to one spill object and, when it is written, turns
/// their outcomes into successes (`Written { shard_id: SPILL_SHARD, sequence_number: <key> }`).
/// Records that succeeded are untouched; nothing is written when none failed.
pub async fn spill_failed(
    target: &SpillTarget,
    records: &[Record],
    outcome: &mut PutOutcome,
    policy: &RetryPolicy,
    deadline: Instant,
    now: OffsetDateTime,
) -> SpillReport {
    let failed: Vec<usize> = outcome
        .results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    if failed.is_empty() {
        return SpillReport::default();
    }
    let arrival = format_timestamp(now);
    let mut body = Vec::new();
    let mut lines = 0usize;
    // A packed record spills as its events, one line each: the drain archives envelopes.
    let failed: Vec<usize> = failed
        .into_iter()
        .filter(|&i| match records.get(i) {
            Some(r) => match spill_lines(&mut body, &arrival, r) {
                Some(n) => {
                    lines += n;
                    true
                }
                // Not a record ingest built; it stays `retry` rather than spill unreadable.
                None => false,
            },
            None => false,
        })
        .collect();
    if failed.is_empty() {
        return SpillReport::default();
    }
    let key = caudal_core::keys::spill_key(SpillId::new(), now);
    let req = PutRequest {
        bucket: &target.bucket,
        key: &key,
        body: Bytes::from(body),
        content_type: "application/x-ndjson",
        metadata: &[],
        if_absent: true,
    };
    let (result, attempts) = match put_object(&target.s3, &req, policy, deadline).await {
        Ok(put) => (Ok(()), put.attempts),
        // The id is new: an object already there is this request's own earlier attempt, which
        // S3 stored before its answer was lost.
        Err(e) if lost_conditional_write(&e) => (Ok(()), 2),
        Err(e) => (Err(e), 0),
    };
    match result {
        Ok(()) => {
            for &i in &failed {
                if let Some(slot) = outcome.results.get_mut(i) {
                    *slot = Ok(Written {
                        shard_id: SPILL_SHARD.to_owned(),
                        sequence_number: key.clone(),
                    });
                }
            }
            SpillReport {
                spilled: lines,
                key: Some(key),
                error: None,
                attempts,
            }
        }
        Err(e) => SpillReport {
            spilled: 0,
            key: None,
            error: Some(e),
            attempts,
        },
    }
}

/// Append the spill lines of one record (its events, when it is packed); how many, or `None`
/// when a packed record cannot be read back.
fn spill_lines(body: &mut Vec<u8>, arrival: &str, r: &Record) -> Option<usize> {
    // Writing into a Vec cannot fail.
    if !pack::is_aggregate(&r.data) {
        let _ = write_line(body, arrival, &r.partition_key, &r.data);
        return Some(1);
    }
    let users = pack::unpack(&r.data).ok()?;
    for u in &users {
        let _ = write_line(body, arrival, u.partition_key, u.data);
    }
    Some(users.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ok: usize, failed: usize) -> PutOutcome {
        let err = CallError {
            retryable: true,
            code: "InternalFailure".into(),
            message: "x".into(),
        };
        let written = Written {
            shard_id: "s".into(),
            sequence_number: "1".into(),
        };
        PutOutcome {
            results: std::iter::repeat_n(Ok(written), ok)
                .chain(std::iter::repeat_n(Err(err), failed))
                .collect(),
            calls: 1,
        }
    }

    #[test]
    fn the_breaker_opens_on_a_full_refusal_and_closes_on_a_full_success() {
        let b = Breaker::default();
        let t = Instant::now();
        assert!(!b.is_open(t));
        b.record(&outcome(0, 3), t);
        assert!(b.is_open(t));
        assert!(b.is_open(t + BREAKER_OPEN_FOR - Duration::from_millis(1)));
        assert!(!b.is_open(t + BREAKER_OPEN_FOR), "it closes by itself");
        b.record(&outcome(1, 2), t);
        assert!(b.is_open(t), "a partial failure changes nothing");
        b.record(&outcome(0, 0), t);
        assert!(b.is_open(t), "nor does an empty request");
        b.record(&outcome(3, 0), t);
        assert!(!b.is_open(t), "Kinesis took everything");
        b.record(&outcome(2, 1), t);
        assert!(!b.is_open(t), "a partial failure does not open it");
    }

    #[test]
    fn kinesis_keeps_the_reserve_free_but_always_gets_half() {
        let now = Instant::now();
        let reserve = Duration::from_secs(2);
        assert_eq!(
            kinesis_deadline(now + Duration::from_secs(8), reserve, now),
            now + Duration::from_secs(6)
        );
        assert_eq!(
            kinesis_deadline(now + Duration::from_secs(3), reserve, now),
            now + Duration::from_millis(1500)
        );
        assert_eq!(
            kinesis_deadline(now + Duration::from_secs(4), reserve, now),
            now + Duration::from_secs(2)
        );
        assert_eq!(kinesis_deadline(now, reserve, now), now);
        assert_eq!(
            kinesis_deadline(now, reserve, now + Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
