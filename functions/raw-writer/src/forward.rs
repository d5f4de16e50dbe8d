//! Forwarding raw lines to Firehose (the data lake copy) — the one forwarder, used by both
//! entry points: a Kinesis batch just archived, and a lake retry re-read from the archive.
//!
//! **Packing.** Firehose bills every record rounded up to 5 KB, so many raw lines (the very
//! same NDJSON lines as the raw object, so the lake holds the same shape) are packed into one
//! Firehose record of at most [`PackLimits::record_max_bytes`]. Every line ends in `\n`, so the
//! concatenation Firehose writes to S3 stays valid NDJSON. Records are then grouped into
//! PutRecordBatch calls of at most 500 records / 4 MiB. Both steps use
//! [`caudal_core::batching::chunk`]. Only valid envelopes are forwarded; `raw-invalid/` stays in S3.
//!
//! **Lines.** Where a line's bytes come from is the [`Lines`] trait: [`BatchLines`] rebuilds
//! them from the borrowed Kinesis records (the raw object's lines, byte for byte), and the retry
//! path ([`crate::reforward`]) slices them out of the decompressed raw object. Either way the
//! forwarder sees positions `0..n` of one line list and answers in those positions.
//!
//! **Failures.** Each call resends only its failed records ([`caudal_aws::firehose`] on
//! [`caudal_core::retry::send_partial`]). The outcome lists the positions of every line not known to
//! be in Firehose ([`ForwardOutcome::failed_lines`]); the caller decides what happens to them
//! (the Kinesis path defers them to the lake retry queue, the retry path fails its message).
//! Calls after the first failing one are not made — Firehose is evidently unwell, their lines
//! are deferred with the rest, and sending them would only add load and lake duplicates.
//!
//! **Memory.** Records are built per call (≤ 4 MiB at a time), never for the whole line list.

use std::ops::Range;

use bytes::Bytes;
use caudal_core::batching::{ChunkLimits, ItemTooLarge, chunk};
use caudal_core::retry::{CallError, RetryPolicy};
use tokio::time::Instant;

use crate::encode::{EncodedBatch, write_raw_line};
use crate::input::ShardBatch;

/// Packing and request limits (the Firehose service limits by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLimits {
    /// Largest Firehose record (sum of its lines).
    pub record_max_bytes: usize,
    /// Most records per PutRecordBatch.
    pub batch_max_records: usize,
    /// Most bytes per PutRecordBatch.
    pub batch_max_bytes: usize,
}

impl Default for PackLimits {
    fn default() -> Self {
        Self {
            record_max_bytes: caudal_core::limits::FIREHOSE_RECORD_MAX_BYTES,
            batch_max_records: caudal_core::limits::FIREHOSE_BATCH_MAX_RECORDS,
            batch_max_bytes: caudal_core::limits::FIREHOSE_BATCH_MAX_BYTES,
        }
    }
}

/// How a batch's valid lines map onto Firehose records and calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Positions (into the valid-line list) of the lines that are forwarded, in order.
    pub lines: Vec<usize>,
    /// Positions of lines larger than one Firehose record: they cannot be forwarded at all.
    pub oversize: Vec<usize>,
    /// Each Firehose record as a range into `lines`.
    pub records: Vec<Range<usize>>,
    /// Each record's size in bytes.
    pub record_sizes: Vec<usize>,
    /// Each PutRecordBatch call as a range into `records`.
    pub requests: Vec<Range<usize>>,
}

/// Pack lines of the given sizes into records and calls.
///
/// A line larger than a record cannot be forwarded (Firehose would refuse the whole call) and is
/// listed in `oversize`; the caller counts and logs it — it is safe in the raw archive.
pub fn plan(line_sizes: &[usize], limits: PackLimits) -> Result<Plan, ItemTooLarge> {
    let (lines, oversize): (Vec<usize>, Vec<usize>) =
        (0..line_sizes.len()).partition(|&i| line_sizes[i] <= limits.record_max_bytes);
    let sizes: Vec<usize> = lines.iter().map(|&i| line_sizes[i]).collect();
    let records = chunk(
        &sizes,
        ChunkLimits {
            max_items: usize::MAX,
            max_bytes: limits.record_max_bytes,
        },
    )?;
    let record_sizes: Vec<usize> = records
        .iter()
        .map(|r| sizes[r.clone()].iter().sum())
        .collect();
    let requests = chunk(
        &record_sizes,
        ChunkLimits {
            max_items: limits.batch_max_records,
            max_bytes: limits.batch_max_bytes,
        },
    )?;
    Ok(Plan {
        lines,
        oversize,
        records,
        record_sizes,
        requests,
    })
}

/// What forwarding achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardOutcome {
    /// Firehose records planned.
    pub records: usize,
    /// PutRecordBatch calls made, retries included.
    pub attempts: u32,
    /// Records not known to be accepted (failed after retries, or not sent after a failure).
    pub failed_records: usize,
    /// Lines too large for a Firehose record (archived in raw only).
    pub oversize_lines: usize,
    /// Positions (into the line list) of the lines carried by the failed records, ascending.
    pub failed_lines: Vec<usize>,
    /// The first failure seen, for the log and the retry message.
    pub first_error: Option<CallError>,
}

impl ForwardOutcome {
    /// The outcome when nothing could be planned: every line failed with `error`.
    pub fn all_failed(lines: usize, error: CallError) -> Self {
        Self {
            failed_lines: (0..lines).collect(),
            first_error: Some(error),
            ..Self::default()
        }
    }
}

/// A list of raw lines, by position, as the forwarder reads them.
pub trait Lines {
    /// Append line `pos` (newline included) to `out`.
    fn write_line(&self, pos: usize, out: &mut Vec<u8>) -> std::io::Result<()>;
}

/// The valid lines of a Kinesis batch, rebuilt from its borrowed records: line `pos` is the raw
/// object's line `pos + 1`.
pub struct BatchLines<'a, 'b> {
    /// The batch.
    pub batch: &'a ShardBatch<'b>,
    /// Its encoding (which records are valid).
    pub encoded: &'a EncodedBatch,
}

impl Lines for BatchLines<'_, '_> {
    fn write_line(&self, pos: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        let record = self
            .encoded
            .valid
            .get(pos)
            .and_then(|&i| self.batch.records.get(i))
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no such line"))?;
        write_raw_line(out, record)
    }
}

/// The Firehose side the forwarder talks to (the SDK adapter in production).
pub trait Sink {
    /// Send `records`, returning one result per record in order and the calls made.
    fn put(
        &self,
        records: &[Bytes],
        deadline: Instant,
    ) -> impl Future<Output = (Vec<Result<(), CallError>>, u32)>;
}

/// Firehose through the SDK, with the shared retry policy.
pub struct FirehoseSink<'a> {
    /// The client.
    pub client: &'a aws_sdk_firehose::Client,
    /// Delivery stream name.
    pub stream: &'a str,
    /// Retry policy.
    pub policy: &'a RetryPolicy,
}

impl Sink for FirehoseSink<'_> {
    async fn put(&self, records: &[Bytes], deadline: Instant) -> (Vec<Result<(), CallError>>, u32) {
        let out = caudal_aws::firehose::put_record_batch(
            self.client,
            self.stream,
            records,
            self.policy,
            deadline,
        )
        .await;
        (
            out.results.into_iter().map(|r| r.map(|_| ())).collect(),
            out.attempts,
        )
    }
}

/// Forward `lines` according to `plan` (made from the same lines' sizes).
pub async fn forward<S: Sink, L: Lines>(
    sink: &S,
    lines: &L,
    plan: &Plan,
    deadline: Instant,
) -> ForwardOutcome {
    let mut out = ForwardOutcome {
        records: plan.records.len(),
        oversize_lines: plan.oversize.len(),
        ..ForwardOutcome::default()
    };
    let mut failed: Vec<usize> = Vec::new();
    for (n, request) in plan.requests.iter().enumerate() {
        let mut bodies: Vec<Bytes> = Vec::with_capacity(request.len());
        let mut build_error = None;
        for r in request.clone() {
            let members = plan.records.get(r).cloned().unwrap_or_default();
            let mut body = Vec::with_capacity(plan.record_sizes.get(r).copied().unwrap_or(0));
            for k in members {
                if let Some(&pos) = plan.lines.get(k)
                    && let Err(e) = lines.write_line(pos, &mut body)
                {
                    build_error = Some(e);
                }
            }
            bodies.push(Bytes::from(body));
        }
        let results = match build_error {
            // Cannot happen for lines the encoder accepted; reported as a failure, not a panic.
            Some(e) => {
                let err = CallError {
                    retryable: false,
                    code: "EncodeFailure".into(),
                    message: e.to_string(),
                };
                vec![Err(err); bodies.len()]
            }
            None => {
                let (results, attempts) = sink.put(&bodies, deadline).await;
                out.attempts += attempts;
                results
            }
        };
        drop(bodies);
        for (r, result) in request.clone().zip(results) {
            if let Err(e) = result {
                failed.push(r);
                out.first_error.get_or_insert(e);
            }
        }
        if !failed.is_empty() {
            // Later calls are skipped: their lines are handled with the failed ones.
            for later in plan.requests.iter().skip(n + 1) {
                failed.extend(later.clone());
            }
            break;
        }
    }
    out.failed_records = failed.len();
    let mut failed_lines: Vec<usize> = failed
        .iter()
        .filter_map(|&r| plan.records.get(r))
        .flat_map(|members| members.clone())
        .filter_map(|k| plan.lines.get(k).copied())
        .collect();
    failed_lines.sort_unstable();
    out.failed_lines = failed_lines;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode_batch;
    use crate::input::{InRecord, RecordData};
    use caudal_core::limits::{
        FIREHOSE_BATCH_MAX_BYTES as MAX_BATCH_BYTES,
        FIREHOSE_BATCH_MAX_RECORDS as MAX_BATCH_RECORDS,
        FIREHOSE_RECORD_MAX_BYTES as MAX_RECORD_BYTES,
    };
    use caudal_core::raw::KinesisCoords;
    use std::sync::Mutex;

    /// Fails every record whose body contains `poison`; remembers what it was sent.
    struct FakeSink {
        poison: &'static str,
        calls: Mutex<Vec<Vec<Bytes>>>,
    }

    impl Sink for FakeSink {
        async fn put(&self, records: &[Bytes], _: Instant) -> (Vec<Result<(), CallError>>, u32) {
            if let Ok(mut c) = self.calls.lock() {
                c.push(records.to_vec());
            }
            let results = records
                .iter()
                .map(|r| {
                    if String::from_utf8_lossy(r).contains(self.poison) {
                        Err(CallError {
                            retryable: true,
                            code: "ServiceUnavailableException".into(),
                            message: "busy".into(),
                        })
                    } else {
                        Ok(())
                    }
                })
                .collect();
            (results, 1)
        }
    }

    #[tokio::test]
    async fn reports_the_failed_lines_and_skips_later_calls() {
        let envs: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                caudal_core::envelope::encode(
                    &caudal_core::envelope::EventRef {
                        id: &format!("id-{i}"),
                        id_generated: false,
                        event_type: "t",
                        raw: format!(r#"{{"n":"m{i}"}}"#).as_bytes(),
                        event_time: None,
                    },
                    &Default::default(),
                )
            })
            .collect();
        let seqs: Vec<String> = (0..10).map(|i| format!("{}", 100 + i)).collect();
        let mut records: Vec<InRecord<'_>> = envs
            .iter()
            .zip(&seqs)
            .map(|(e, s)| InRecord {
                coords: KinesisCoords {
                    shard_id: "s".into(),
                    sequence_number: s.as_str().into(),
                    arrival: "2026-11-25T19:55:18.000Z".into(),
                    partition_key: "p".into(),
                    sub_sequence_number: None,
                },
                arrival: time::OffsetDateTime::UNIX_EPOCH,
                data: RecordData::Bytes(e),
            })
            .collect();
        // Record 3 is not an envelope: not forwarded, so it cannot be the failure point.
        records[3].data = RecordData::Bytes(b"junk");
        let batch = ShardBatch {
            shard_id: "s",
            records,
        };
        let enc = encode_batch(&batch.records, caudal_core::codec::Codec::default()).unwrap();
        let line = enc.line_sizes[0];
        // Two lines per record, two records per call: calls of lines [0,1,2,4] [5,6,7,8] [9].
        let limits = PackLimits {
            record_max_bytes: 2 * line + 1,
            batch_max_records: 2,
            batch_max_bytes: MAX_BATCH_BYTES,
        };
        let p = plan(&enc.line_sizes, limits).unwrap();
        assert_eq!(p.requests.len(), 3);
        let sink = FakeSink {
            poison: r#""m7""#,
            calls: Mutex::new(Vec::new()),
        };
        let lines = BatchLines {
            batch: &batch,
            encoded: &enc,
        };
        let out = forward(&sink, &lines, &p, Instant::now()).await;
        // Records (by message): [m0,m1] [m2,m4] [m5,m6] [m7,m8] [m9]. The record [m7, m8]
        // fails and the call holding [m9] is skipped: lines 6, 7, 8 (m7, m8, m9) are not in
        // Firehose.
        assert_eq!(out.failed_lines, vec![6, 7, 8]);
        assert_eq!(batch.records[enc.valid[6]].seq(), "107");
        assert_eq!(
            out.failed_records, 2,
            "the failed record and the unsent last one"
        );
        let calls = sink.calls.lock().unwrap();
        assert_eq!(calls.len(), 2, "the third call is skipped");
        let first: Vec<String> = calls[0]
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(first.len(), 2);
        assert!(first[0].contains(r#""m0""#) && first[0].contains(r#""m1""#));
        assert!(first[1].contains(r#""m2""#) && first[1].contains(r#""m4""#));
        assert!(!first.concat().contains("junk"));
        assert!(calls.iter().flatten().all(|b| b.ends_with(b"\n")));
    }

    #[test]
    fn records_fill_exactly_to_the_record_limit() {
        let limits = PackLimits::default();
        // Two lines that sum to exactly 1,000 KiB share a record; one more byte starts another.
        let sizes = [MAX_RECORD_BYTES - 100, 100, 1, MAX_RECORD_BYTES];
        let p = plan(&sizes, limits).unwrap();
        assert_eq!(p.records, vec![0..2, 2..3, 3..4]);
        assert_eq!(p.record_sizes, vec![MAX_RECORD_BYTES, 1, MAX_RECORD_BYTES]);
        assert!(p.oversize.is_empty());
        assert_eq!(p.requests, vec![0..3]);
    }

    #[test]
    fn a_line_over_the_record_limit_is_set_aside() {
        let p = plan(&[10, MAX_RECORD_BYTES + 1, 20], PackLimits::default()).unwrap();
        assert_eq!(p.oversize, vec![1]);
        assert_eq!(p.lines, vec![0, 2]);
        assert_eq!(p.records, vec![0..2]);
        assert_eq!(p.record_sizes, vec![30]);
    }

    #[test]
    fn calls_respect_500_records() {
        // 1,001 lines of exactly one record each: 500 + 500 + 1.
        let limits = PackLimits {
            record_max_bytes: 10,
            ..PackLimits::default()
        };
        let p = plan(&vec![10; 1001], limits).unwrap();
        assert_eq!(p.records.len(), 1001);
        assert_eq!(p.requests, vec![0..500, 500..1000, 1000..1001]);
        assert!(p.requests.iter().all(|r| r.len() <= MAX_BATCH_RECORDS));
    }

    #[test]
    fn calls_respect_4_mib() {
        // Full records of 1,000 KiB: four fit in 4 MiB (4,096,000 ≤ 4,194,304), a fifth does not.
        let line = MAX_RECORD_BYTES;
        let p = plan(&[line; 9], PackLimits::default()).unwrap();
        assert_eq!(p.requests, vec![0..4, 4..8, 8..9]);
        for r in &p.requests {
            let bytes: usize = p.record_sizes[r.clone()].iter().sum();
            assert!(bytes <= MAX_BATCH_BYTES);
        }
        // Records that sum to exactly 4 MiB share a call.
        let exact = [MAX_BATCH_BYTES / 8; 8];
        let limits = PackLimits {
            record_max_bytes: MAX_BATCH_BYTES / 8,
            ..PackLimits::default()
        };
        let p = plan(&exact, limits).unwrap();
        assert_eq!(p.requests, vec![0..8]);
        let p = plan(
            &[MAX_BATCH_BYTES / 8 + 1; 8],
            PackLimits {
                record_max_bytes: MAX_BATCH_BYTES / 8 + 1,
                ..PackLimits::default()
            },
        )
        .unwrap();
        assert_eq!(p.requests, vec![0..7, 7..8]);
    }

    #[test]
    fn small_events_pack_many_per_record() {
        // 10,000 lines of ~600 bytes: ~1,706 per 1,000 KiB record, 6 records, one call.
        let p = plan(&vec![600; 10_000], PackLimits::default()).unwrap();
        assert_eq!(p.records.len(), 6);
        assert_eq!(p.records[0], 0..1706);
        assert_eq!(p.requests.len(), 2);
        let covered: usize = p.records.iter().map(|r| r.len()).sum();
        assert_eq!(covered, 10_000);
    }

    #[test]
    fn empty_batch_plans_nothing() {
        let p = plan(&[], PackLimits::default()).unwrap();
        assert!(p.records.is_empty() && p.requests.is_empty());
    }
}
