//! `caudal redrive raw-failures`: the batches the raw-writer gave up on (Lambda's on-failure
//! records: shard and sequence range only) read back from the stream while it keeps them, and
//! handed to the deployed raw-writer as the event source mapping would have (the same Kinesis
//! event, so the same deterministic keys: running it twice writes the same objects again and
//! changes nothing). Records the stream no longer keeps are reported as lost, with their count,
//! and the failure record stays in the queue until the loss is accepted (`--accept-loss`).

use caudal_core::stream::{KinesisRecord, StreamSource, kinesis_event};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::queue;
use crate::run::Interrupt;
use caudal_core::stream::seq_cmp;

use crate::stream::{self, From};
use crate::{Ctx, OpError};

/// One failed batch (the `KinesisBatchInfo` of an on-failure record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedBatch {
    /// Shard.
    #[serde(rename = "shardId")]
    pub shard: String,
    /// First sequence number.
    #[serde(rename = "startSequenceNumber")]
    pub start: String,
    /// Last sequence number.
    #[serde(rename = "endSequenceNumber")]
    pub end: String,
    /// Records in the batch.
    #[serde(rename = "batchSize")]
    pub size: u64,
    /// The stream.
    #[serde(rename = "streamArn", default)]
    pub stream_arn: String,
}

impl FailedBatch {
    /// The batch an on-failure message describes (`None`: not an on-failure record).
    pub fn from_message(body: &str) -> Option<FailedBatch> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        serde_json::from_value(v.get("KinesisBatchInfo")?.clone()).ok()
    }
}

/// What happened to one failed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The batch.
    pub batch: FailedBatch,
    /// Records read back from the stream.
    pub recovered: u64,
    /// Records the stream no longer keeps.
    pub lost: u64,
    /// The raw-writer wrote the recovered records.
    pub written: bool,
    /// The on-failure record was deleted.
    pub cleared: bool,
    /// Why not, when it failed.
    pub error: Option<String>,
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Per batch.
    pub batches: Vec<Outcome>,
    /// Messages that are not on-failure records (left in the queue).
    pub unreadable: u64,
    /// A dry run.
    pub dry_run: bool,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
}

impl Report {
    /// Records lost in all.
    pub fn lost(&self) -> u64 {
        self.batches.iter().map(|b| b.lost).sum()
    }

    /// Whether every batch was written and cleared.
    pub fn complete(&self) -> bool {
        self.unreadable == 0
            && !self.interrupted
            && self.batches.iter().all(|b| b.cleared && b.error.is_none())
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "failed batches: {}", self.batches.len())?;
        for o in &self.batches {
            let b = &o.batch;
            let what = if self.dry_run {
                "would write".to_owned()
            } else if o.written {
                "written".to_owned()
            } else {
                "NOT written".to_owned()
            };
            writeln!(
                f,
                "  {} {}..{}: {} records, {} read back ({what}){}{}",
                b.shard,
                b.start,
                b.end,
                b.size,
                o.recovered,
                if o.lost > 0 {
                    format!(", {} LOST (no longer in the stream)", o.lost)
                } else {
                    String::new()
                },
                o.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )?;
        }
        if self.unreadable > 0 {
            writeln!(
                f,
                "  {} message(s) that are not on-failure records left in the queue",
                self.unreadable
            )?;
        }
        if self.lost() > 0 {
            writeln!(
                f,
                "LOST: {} record(s) were past the stream's retention; their failure records stay in \
                 the queue until you run again with --accept-loss",
                self.lost()
            )?;
        }
        write!(
            f,
            "{}",
            if self.complete() {
                "done: every failed batch is in the raw archive"
            } else if self.dry_run {
                "dry run: nothing written"
            } else {
                "not done: see above"
            }
        )
    }
}

/// The account and region a stream ARN names.
fn arn_parts(arn: &str) -> (String, String) {
    let parts: Vec<&str> = arn.split(':').collect();
    (
        parts.get(3).copied().unwrap_or_default().to_owned(),
        parts.get(4).copied().unwrap_or_default().to_owned(),
    )
}

/// Reads `b`'s records back: those in its range, in order.
pub async fn read_back(ctx: &Ctx, b: &FailedBatch) -> Result<Vec<KinesisRecord>, OpError> {
    let mut out = Vec::new();
    stream::read(
        &ctx.clients.kinesis,
        &ctx.resources.stream,
        &b.shard,
        &From::Sequence(b.start.clone()),
        |r| seq_cmp(&r.seq, &b.end).is_gt(),
        |r| {
            if seq_cmp(&r.seq, &b.start).is_ge() {
                out.push(KinesisRecord {
                    shard_id: r.shard,
                    sequence_number: r.seq,
                    partition_key: r.partition_key,
                    data: r.data,
                    arrival: r.arrival,
                });
            }
        },
    )
    .await?;
    Ok(out)
}

/// Invokes the raw-writer with `records` as its event source mapping would; an error when it
/// failed or reported any record.
async fn write(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    b: &FailedBatch,
    records: &[KinesisRecord],
) -> Result<(), String> {
    let (region, account) = arn_parts(&b.stream_arn);
    let identity = format!("arn:aws:iam::{account}:role/caudal-redrive");
    let event = kinesis_event(
        records,
        &StreamSource {
            stream_arn: &b.stream_arn,
            region: &region,
            identity_arn: &identity,
        },
    );
    let out = lambda
        .invoke()
        .function_name(function)
        .payload(aws_sdk_lambda::primitives::Blob::new(event.to_string()))
        .send()
        .await
        .map_err(|e| caudal_aws::call_error(&e).to_string())?;
    let body = out
        .payload()
        .map(|p| p.as_ref().to_vec())
        .unwrap_or_default();
    if let Some(e) = out.function_error() {
        return Err(format!(
            "the raw-writer failed ({e}): {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match v.get("batchItemFailures").and_then(|f| f.as_array()) {
        Some(f) if f.is_empty() => Ok(()),
        Some(f) => Err(format!(
            "the raw-writer reported {} record(s) failed again",
            f.len()
        )),
        None => Err(format!("unexpected raw-writer response: {v}")),
    }
}

/// Whether a batch's failure record may be deleted: what could be read back was written (or
/// nothing could be), and no record is lost unless the loss was accepted.
pub fn may_clear(o: &Outcome, accept_loss: bool) -> bool {
    let done = (o.written || o.recovered == 0) && o.error.is_none();
    done && (o.lost == 0 || accept_loss)
}

/// Redrives every failure record in the queue (see the module docs).
pub async fn redrive(
    ctx: &Ctx,
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    dry_run: bool,
    accept_loss: bool,
    bar: &ProgressBar,
    interrupt: &Interrupt,
) -> Result<Report, OpError> {
    let url = &ctx.resources.raw_failures;
    let sqs = &ctx.clients.sqs;
    let found = queue::depth(sqs, url).await?.total();
    bar.set_length(found);
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let mut seen = 0u64;
    let mut empty = 0;
    while seen < found {
        if interrupt.stopped() {
            report.interrupted = true;
            break;
        }
        let messages = queue::receive(sqs, url, if dry_run { 30 } else { 900 }).await?;
        if messages.is_empty() {
            empty += 1;
            if empty >= 3 {
                break;
            }
            continue;
        }
        empty = 0;
        for (body, receipt) in messages {
            seen += 1;
            bar.inc(1);
            let Some(batch) = FailedBatch::from_message(&body) else {
                report.unreadable += 1;
                queue::release(sqs, url, &receipt).await?;
                continue;
            };
            let records = read_back(ctx, &batch).await?;
            let recovered = records.len() as u64;
            let mut o = Outcome {
                lost: batch.size.saturating_sub(recovered),
                recovered,
                batch,
                written: false,
                cleared: false,
                error: None,
            };
            if !dry_run {
                if recovered > 0 {
                    match write(lambda, function, &o.batch, &records).await {
                        Ok(()) => o.written = true,
                        Err(e) => o.error = Some(e),
                    }
                }
                if may_clear(&o, accept_loss) {
                    queue::delete(sqs, url, &receipt).await?;
                    o.cleared = true;
                }
            }
            if !o.cleared {
                queue::release(sqs, url, &receipt).await?;
            }
            report.batches.push(o);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(size: u64, recovered: u64, written: bool, error: Option<&str>) -> Outcome {
        Outcome {
            batch: FailedBatch {
                shard: "shardId-000000000000".into(),
                start: "10".into(),
                end: "19".into(),
                size,
                stream_arn: "arn:aws:kinesis:eu-west-1:123456789012:stream/s".into(),
            },
            recovered,
            lost: size.saturating_sub(recovered),
            written,
            cleared: false,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn a_failure_record_is_cleared_only_when_nothing_is_left_to_do_or_the_loss_is_accepted() {
        assert!(may_clear(&outcome(10, 10, true, None), false));
        assert!(!may_clear(
            &outcome(10, 10, false, Some("raw-writer failed")),
            false
        ));
        assert!(!may_clear(
            &outcome(10, 10, true, Some("reported again")),
            true
        ));
        assert!(
            !may_clear(&outcome(10, 7, true, None), false),
            "3 lost, not accepted"
        );
        assert!(may_clear(&outcome(10, 7, true, None), true));
        assert!(!may_clear(&outcome(10, 0, false, None), false), "all lost");
        assert!(may_clear(&outcome(10, 0, false, None), true));
        assert!(
            !may_clear(&outcome(10, 7, false, None), true),
            "read back but not written"
        );
    }

    #[test]
    fn reports_count_losses_and_completeness() {
        let mut r = Report::default();
        r.batches.push(outcome(10, 7, true, None));
        r.batches.push(outcome(5, 5, true, None));
        assert_eq!(r.lost(), 3);
        assert!(!r.complete(), "nothing cleared");
        for b in &mut r.batches {
            b.cleared = true;
        }
        assert!(r.complete());
        r.unreadable = 1;
        assert!(!r.complete());
        let text = r.to_string();
        assert!(text.contains("3 LOST"), "{text}");
        assert!(text.contains("--accept-loss"), "{text}");
        assert!(text.contains("(written)"), "{text}");
        r.dry_run = true;
        let text = r.to_string();
        assert!(text.contains("(would write)"), "{text}");
    }

    #[test]
    fn on_failure_records_parse_and_arns_split() {
        let body = r#"{"requestContext":{"condition":"RetryAttemptsExhausted"},"KinesisBatchInfo":{"shardId":"shardId-000000000001","startSequenceNumber":"49","endSequenceNumber":"60","batchSize":12,"streamArn":"arn:aws:kinesis:eu-west-1:123456789012:stream/s"}}"#;
        let b = FailedBatch::from_message(body).unwrap();
        assert_eq!(
            (b.shard.as_str(), b.start.as_str(), b.end.as_str(), b.size),
            ("shardId-000000000001", "49", "60", 12)
        );
        assert_eq!(
            arn_parts(&b.stream_arn),
            ("eu-west-1".to_owned(), "123456789012".to_owned())
        );
        assert_eq!(FailedBatch::from_message(r#"{"Records":[]}"#), None);
        assert_eq!(FailedBatch::from_message("x"), None);
    }
}
