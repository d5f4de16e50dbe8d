//! The Kinesis side of the lake retry: what happens to the lines Firehose did not take.
//!
//! The raw object is already written when Firehose is called, so those lines are safe; what has
//! to survive is the fact that the lake is missing them. [`defer`] sends that fact — one
//! [`LakeRetry`] message per raw object — to the lake retry queue and the batch is done; only if
//! the send fails too (or no queue is configured) does it return the sequence number to report
//! in `batchItemFailures` (the failure policy in the crate docs). [`firehose_deadline`] keeps
//! part of the retry budget for that send, so a Firehose outage that spends every retry cannot
//! also spend the time needed to release the batch.

use tokio::time::Instant;

use caudal_core::retry::CallError;

use crate::encode::EncodedBatch;
use crate::forward::ForwardOutcome;
use crate::input::ShardBatch;
use crate::lake::LakeRetry;
use crate::{BatchKeys, Config, State};

/// What became of the lines Firehose did not take.
#[derive(Debug, Default)]
pub struct LakeDeferral {
    /// Lines named in a lake retry message.
    pub deferred: usize,
    /// Lines that could not be deferred (reported in `batchItemFailures` instead).
    pub undeferred: usize,
}

/// The deadline Firehose gets: the invocation's, minus [`Config::lake_defer_reserve`] (at most
/// half of what is left) when a retry queue is configured.
pub fn firehose_deadline(config: &Config, deadline: Instant) -> Instant {
    if config.lake_retry_queue.is_none() {
        return deadline;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    deadline - config.lake_defer_reserve.min(left / 2)
}

/// Record the lines Firehose did not take in the lake retry queue. Returns the sequence number
/// to report when that is not possible (no queue, or SendMessage failing after retries).
pub async fn defer(
    state: &State,
    batch: &ShardBatch<'_>,
    keys: &BatchKeys,
    enc: &EncodedBatch,
    fwd: &ForwardOutcome,
    deadline: Instant,
) -> Option<String> {
    let firehose_error = fwd.first_error.as_ref();
    let message = LakeRetry::for_lines(
        &state.config.raw_bucket,
        &keys.raw,
        &fwd.failed_lines,
        firehose_error.map(|e| e.code.as_str()),
    );
    let sent = match &state.config.lake_retry_queue {
        Some(url) => {
            caudal_aws::sqs::send_message(
                &state.sqs,
                url,
                &message.to_body(),
                &state.config.retry,
                deadline,
            )
            .await
        }
        None => Err(CallError {
            retryable: false,
            code: "NoLakeRetryQueue".into(),
            message: "LAKE_RETRY_QUEUE_URL is not configured".into(),
        }),
    };
    match sent {
        Ok(sent) => {
            tracing::warn!(
                shard_id = batch.shard_id,
                raw_key = keys.raw.as_str(),
                deferred_lines = fwd.failed_lines.len(),
                ranges = message.lines.len(),
                message_id = sent.message_id.as_str(),
                firehose_error = %firehose_error.map(ToString::to_string).unwrap_or_default(),
                "firehose did not take every line; deferred to the lake retry queue"
            );
            None
        }
        Err(error) => {
            // Positions ascend with the stream: the first failed line has the lowest sequence
            // number of those missing from the lake.
            let seq = fwd
                .failed_lines
                .first()
                .and_then(|&pos| enc.valid.get(pos))
                .and_then(|&i| batch.records.get(i))
                .map(|r| r.seq().to_owned());
            tracing::error!(
                shard_id = batch.shard_id,
                raw_key = keys.raw.as_str(),
                failed_lines = fwd.failed_lines.len(),
                from_seq = seq.as_deref().unwrap_or_default(),
                error = %error,
                firehose_error = %firehose_error.map(ToString::to_string).unwrap_or_default(),
                "lines missing from the lake could not be deferred; re-delivery requested"
            );
            seq
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn firehose_leaves_time_to_defer() {
        let mut cfg = Config::new("b");
        let deadline = Instant::now() + Duration::from_secs(100);
        assert_eq!(
            firehose_deadline(&cfg, deadline),
            deadline,
            "nowhere to defer to"
        );
        cfg.lake_retry_queue = Some("q".into());
        assert_eq!(
            firehose_deadline(&cfg, deadline),
            deadline - Duration::from_secs(10)
        );
        // Little time left after S3: Firehose still gets half of it.
        let deadline = Instant::now() + Duration::from_secs(4);
        let fh = firehose_deadline(&cfg, deadline);
        let reserved = deadline - fh;
        assert!(
            reserved <= Duration::from_secs(2) && reserved > Duration::from_millis(1900),
            "{reserved:?}"
        );
    }
}
