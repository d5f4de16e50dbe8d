//! The lake retry path: SQS messages from the lake retry queue → the named raw lines, read back
//! from the archive, forwarded to Firehose with the same packer as the Kinesis path.
//!
//! For each message ([`crate::lake::LakeRetry`]), in order:
//!
//! 1. parse and validate it; the bucket must be this function's `RAW_BUCKET` (the function
//!    reads nothing else, whatever a message says);
//! 2. GetObject the raw object (shared retry policy), decompress it by its key's suffix (capped
//!    at [`MAX_RAW_OBJECT_BYTES`]: one object holds one ≤ 6 MB Kinesis batch), and cut it into
//!    lines — the exact bytes, newline included, so the lake gets the raw object's lines byte
//!    for byte;
//! 3. plan and forward the named lines ([`crate::forward`](mod@crate::forward)).
//!
//! A message succeeds only when every named line that fits a Firehose record was accepted
//! (lines larger than a record can never be forwarded; they are counted, as on the Kinesis
//! path). Anything else reports the message in `batchItemFailures`: SQS makes it visible again
//! after the queue's visibility timeout, and after `maxReceiveCount` receives moves it to the
//! dead-letter queue — nothing is dropped, and a redrive of the dead-letter queue starts the
//! retries again (docs/CONTRACTS.md §7). A message is all or nothing: when Firehose took some of
//! its lines before failing, the redelivery forwards those again (the lake is at-least-once,
//! as Firehose itself is when a call is abandoned at the deadline).
//!
//! Once Firehose has failed for one message, the remaining messages of the invocation are
//! reported failed without a call: Firehose is evidently unwell, and each of them would only
//! spend its retries and the invocation's time finding that out again.

use std::ops::Range;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use caudal_core::codec::Codec;
use caudal_core::retry::CallError;
use caudal_core::telemetry::{Emf, Unit};
use lambda_runtime::Context;
use tokio::time::Instant;

use crate::event::SqsRecord;
use crate::forward::{FirehoseSink, Lines, forward, plan};
use crate::lake::{LakeRetry, LakeRetryError, check_raw_key};
use crate::{FUNCTION_NAME, State};

/// Largest raw object read back, decompressed. The writer's objects hold one invocation's
/// batch (≤ 6 MB of payload plus the coordinates of ≤ 10,000 lines); anything far bigger is not
/// one of them.
pub const MAX_RAW_OBJECT_BYTES: usize = 64 * 1024 * 1024;

/// Why one message was not done. Every variant reports the message failed; `is_retryable`
/// says whether a redelivery can succeed (the others reach the dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum ReforwardError {
    /// The body is not a valid lake retry message.
    #[error(transparent)]
    Message(#[from] LakeRetryError),
    /// The message names another bucket.
    #[error("message names bucket {named:?}, but this function archives to {own:?}")]
    Bucket {
        /// The bucket in the message.
        named: String,
        /// `RAW_BUCKET`.
        own: String,
    },
    /// `FIREHOSE_STREAM_NAME` is empty: there is no lake to forward to.
    #[error("lake forwarding is off (FIREHOSE_STREAM_NAME is empty)")]
    LakeOff,
    /// The raw object could not be read.
    #[error("reading s3://{bucket}/{key}: {error}")]
    Read {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The S3 error.
        error: CallError,
    },
    /// The raw object is not what the writer writes.
    #[error("raw object {key}: {reason}")]
    Object {
        /// Key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Firehose did not accept every line.
    #[error("firehose did not take {lines} line(s): {error}")]
    Firehose {
        /// Lines not known to be in Firehose.
        lines: usize,
        /// The first error.
        error: String,
    },
    /// Firehose failed for an earlier message of this invocation; this one was not attempted.
    #[error("not attempted: firehose failed for an earlier message of this invocation")]
    Skipped,
    /// The invocation's retry deadline passed before the message was handled.
    #[error("not attempted: the invocation's retry deadline passed")]
    Deadline,
}

impl ReforwardError {
    /// Whether a redelivery of the same message may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReforwardError::Read { error, .. } => error.retryable,
            ReforwardError::Firehose { .. }
            | ReforwardError::Skipped
            | ReforwardError::Deadline
            | ReforwardError::LakeOff => true,
            ReforwardError::Message(_)
            | ReforwardError::Bucket { .. }
            | ReforwardError::Object { .. } => false,
        }
    }
}

/// The lines of a decompressed raw object, selected by byte range.
struct ObjectLines<'a> {
    plain: &'a [u8],
    lines: Vec<Range<usize>>,
}

impl Lines for ObjectLines<'_> {
    fn write_line(&self, pos: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        let bytes = self
            .lines
            .get(pos)
            .and_then(|r| self.plain.get(r.clone()))
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no such line"))?;
        out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Byte ranges of every line of `plain`, newline included. `None` when the last line has no
/// newline (the writer ends every line with one).
pub fn line_ranges(plain: &[u8]) -> Option<Vec<Range<usize>>> {
    if plain.is_empty() {
        return Some(Vec::new());
    }
    if plain.last() != Some(&b'\n') {
        return None;
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in plain.iter().enumerate() {
        if b == b'\n' {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    Some(out)
}

/// What one message achieved.
#[derive(Debug, Default, Clone, Copy)]
struct Done {
    lines: usize,
    oversize: usize,
    records: usize,
    attempts: u32,
}

/// Counts of one invocation.
#[derive(Debug, Default)]
struct Totals {
    messages: usize,
    failed: usize,
    failed_lines: usize,
    done: Done,
}

/// Read the raw object the message names and find the lines it lists: the decompressed
/// object and the byte ranges of those lines in it.
async fn read_lines(
    state: &State,
    retry: &LakeRetry,
    codec: Codec,
    deadline: Instant,
) -> Result<(Vec<u8>, Vec<Range<usize>>), ReforwardError> {
    let cfg = &state.config;
    let object =
        caudal_aws::s3::get_object(&state.s3, &cfg.raw_bucket, &retry.key, &cfg.retry, deadline)
            .await
            .map_err(|error| ReforwardError::Read {
                bucket: cfg.raw_bucket.clone(),
                key: retry.key.clone(),
                error,
            })?;
    let object_err = |reason: String| ReforwardError::Object {
        key: retry.key.clone(),
        reason,
    };
    let plain = codec
        .decompress_capped(&object.body, MAX_RAW_OBJECT_BYTES)
        .map_err(|e| object_err(format!("cannot be decompressed: {e}")))?;
    drop(object);
    let all =
        line_ranges(&plain).ok_or_else(|| object_err("does not end with a newline".into()))?;
    if retry.last_line() > all.len() {
        return Err(object_err(format!(
            "has {} lines, the message names line {}",
            all.len(),
            retry.last_line()
        )));
    }
    let lines: Vec<Range<usize>> = retry
        .ranges()
        .flat_map(|r| all[r.start() - 1..*r.end()].iter().cloned())
        .collect();
    drop(all);
    Ok((plain, lines))
}

async fn reforward_one(
    state: &State,
    message: &SqsRecord,
    deadline: Instant,
) -> Result<Done, ReforwardError> {
    let cfg = &state.config;
    let retry = LakeRetry::parse(&message.body)?;
    if retry.bucket != cfg.raw_bucket {
        return Err(ReforwardError::Bucket {
            named: retry.bucket,
            own: cfg.raw_bucket.clone(),
        });
    }
    let codec = check_raw_key(&retry.key)?;
    let stream = cfg
        .firehose_stream
        .as_deref()
        .ok_or(ReforwardError::LakeOff)?;
    if Instant::now() >= deadline {
        return Err(ReforwardError::Deadline);
    }
    let (plain, lines) = read_lines(state, &retry, codec, deadline).await?;
    let sizes: Vec<usize> = lines.iter().map(ExactSizeIterator::len).collect();
    let plan = plan(&sizes, cfg.pack).map_err(|e| ReforwardError::Firehose {
        lines: lines.len(),
        error: format!("PackingFailure: {e}"),
    })?;
    let sink = FirehoseSink {
        client: &state.firehose,
        stream,
        policy: &cfg.retry,
    };
    let source = ObjectLines {
        plain: &plain,
        lines,
    };
    let out = forward(&sink, &source, &plan, deadline).await;
    if !out.failed_lines.is_empty() {
        return Err(ReforwardError::Firehose {
            lines: out.failed_lines.len(),
            error: out
                .first_error
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        });
    }
    if out.oversize_lines > 0 {
        tracing::warn!(
            key = retry.key.as_str(),
            oversize_lines = out.oversize_lines,
            "lines larger than a Firehose record: archived in raw/ only"
        );
    }
    Ok(Done {
        lines: source.lines.len() - out.oversize_lines,
        oversize: out.oversize_lines,
        records: out.records,
        attempts: out.attempts,
    })
}

/// Handle the lake retry queue's messages; the response names the ones to redeliver.
pub async fn reforward(state: &State, messages: &[&SqsRecord], ctx: &Context) -> SqsBatchResponse {
    let started = std::time::Instant::now();
    let deadline = state.config.deadline.deadline(ctx.deadline);
    let mut response = SqsBatchResponse::default();
    let mut totals = Totals::default();
    let mut firehose_down = false;
    for m in messages {
        totals.messages += 1;
        let result = if firehose_down {
            Err(ReforwardError::Skipped)
        } else {
            reforward_one(state, m, deadline).await
        };
        match result {
            Ok(done) => {
                totals.done.lines += done.lines;
                totals.done.oversize += done.oversize;
                totals.done.records += done.records;
                totals.done.attempts += done.attempts;
            }
            Err(error) => {
                firehose_down |= matches!(error, ReforwardError::Firehose { .. });
                totals.failed += 1;
                totals.failed_lines += LakeRetry::parse(&m.body).map_or(0, |r| r.line_count());
                tracing::warn!(
                    message_id = m.message_id.as_str(),
                    receive_count = m.receive_count,
                    retryable = error.is_retryable(),
                    error = %error,
                    "lake retry message left for redelivery"
                );
                response.add_failure(m.message_id.clone());
            }
        }
    }
    emit_summary(&totals, ctx, started.elapsed());
    response
}

fn emit_summary(t: &Totals, ctx: &Context, elapsed: Duration) {
    tracing::info!(
        messages = t.messages,
        failed_messages = t.failed,
        reforwarded_lines = t.done.lines,
        failed_lines = t.failed_lines,
        oversize_lines = t.done.oversize,
        firehose_records = t.done.records,
        firehose_attempts = t.done.attempts,
        elapsed_ms = elapsed.as_millis() as u64,
        "lake retry batch"
    );
    Emf::new(FUNCTION_NAME)
        .metric("LakeRetryMessages", t.messages as f64, Unit::Count)
        .metric("LakeRetryFailedMessages", t.failed as f64, Unit::Count)
        .metric("LakeReforwardedLines", t.done.lines as f64, Unit::Count)
        .metric("LakeRetryFailedLines", t.failed_lines as f64, Unit::Count)
        .metric("FirehoseRecords", t.done.records as f64, Unit::Count)
        .metric("FirehoseAttempts", f64::from(t.done.attempts), Unit::Count)
        .metric("FirehoseOversizeLines", t.done.oversize as f64, Unit::Count)
        .property("RequestId", ctx.request_id.as_str())
        .emit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_newlines() {
        let plain = b"{\"a\":1}\n{\"b\":2}\n\n";
        let r = line_ranges(plain).unwrap();
        assert_eq!(r, vec![0..8, 8..16, 16..17]);
        assert_eq!(&plain[r[1].clone()], b"{\"b\":2}\n");
        assert_eq!(line_ranges(b""), Some(vec![]));
        assert_eq!(line_ranges(b"{}\n{}"), None);
    }

    #[test]
    fn only_transient_failures_are_worth_a_redelivery() {
        assert!(ReforwardError::Skipped.is_retryable());
        assert!(
            ReforwardError::Firehose {
                lines: 1,
                error: String::new()
            }
            .is_retryable()
        );
        assert!(!ReforwardError::Message(LakeRetryError::Version(9)).is_retryable());
        let read = |retryable| ReforwardError::Read {
            bucket: "b".into(),
            key: "k".into(),
            error: CallError {
                retryable,
                code: "x".into(),
                message: String::new(),
            },
        };
        assert!(read(true).is_retryable());
        assert!(!read(false).is_retryable(), "NoSuchKey, AccessDenied");
    }
}
