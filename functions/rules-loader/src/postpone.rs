//! Postponing notifications the loader could not try, so that none reaches the DLQ untried.
//!
//! SQS counts every receive against the queue's `maxReceiveCount`, whatever the consumer did
//! with the message. A message the loader reports failed without having tried its objects — the
//! migration could not run (warehouse unavailable, a missing permission), the ledger look-up
//! failed on a transient error, or the invocation's deadline came before the message's load
//! started — would burn a receive each time and end in the DLQ although nothing was wrong with
//! it. Instead the loader **sends the message again** (same body, byte for byte) with a delivery
//! delay and acknowledges the original: the copy starts with a fresh receive count and a fresh
//! retention period. Only when that send fails too is the message reported in
//! `batchItemFailures` (and then it is a receive that counts, like any failure).
//!
//! A postponement is counted in the [`POSTPONED_ATTRIBUTE`] message attribute; the delay grows
//! with it ([`delay_for`]: 1, 2, 4, 8, then 15 minutes, SQS's maximum). There is no limit: a
//! cause that lasts (a revoked permission) keeps the notification waiting, not lost. Because
//! every copy is a new message, the queue's own `ApproximateAgeOfOldestMessage` restarts; the
//! copies carry the first send time ([`FIRST_SENT_ATTRIBUTE`]) instead, and each postponement
//! emits `Postponed` and `PostponedAgeSeconds` (the oldest notification's wait), on which the
//! template alarms after an hour, like the queue-age alarm. Loading stays idempotent through the ledger, so a
//! copy sent by an invocation that then dies before answering (the original comes back too)
//! loads nothing twice.

use std::collections::BTreeSet;

use caudal_aws::sqs::{self, Outgoing};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::State;
use crate::event::{FIRST_SENT_ATTRIBUTE, Notices, POSTPONED_ATTRIBUTE};
use caudal_core::telemetry::{Emf, Unit};

/// How many copies are sent at once.
const SEND_CONCURRENCY: usize = 8;

/// The delivery delay of a message postponed `before` times already: 60 s doubling per
/// postponement, at most 900 s (SQS's `DelaySeconds` limit).
pub fn delay_for(before: u32) -> i32 {
    60_i32.saturating_mul(1 << before.min(4)).min(900)
}

/// Send the messages `which` (indices into `notices`) again, delayed. Returns the indices that
/// could not be postponed (no queue configured, a direct S3 event, or the send failed): the
/// caller reports them failed.
pub async fn postpone(
    state: &State,
    notices: &Notices,
    which: &BTreeSet<usize>,
    deadline: Instant,
) -> BTreeSet<usize> {
    let (Some(client), Some(queue_url)) = (&state.sqs, &state.config.queue_url) else {
        if !which.is_empty() {
            tracing::warn!(
                messages = which.len(),
                "no LOADER_QUEUE_URL: untried messages are reported failed instead of postponed"
            );
        }
        return which.clone();
    };
    let sends: Vec<_> = which
        .iter()
        .map(|&i| resend(state, client, queue_url, notices, i, deadline))
        .collect();
    let sent: Vec<(usize, bool)> = futures_util::stream::iter(sends)
        .buffer_unordered(SEND_CONCURRENCY)
        .collect()
        .await;
    let now_ms = now_ms();
    let oldest_ms = which
        .iter()
        .filter_map(|&i| notices.messages.get(i)?.as_ref()?.first_sent_ms)
        .min();
    let done = sent.iter().filter(|(_, ok)| *ok).count();
    if done > 0 {
        let mut emf = Emf::new("rules-loader").metric("Postponed", done as f64, Unit::Count);
        if let Some(first) = oldest_ms {
            let age = now_ms.saturating_sub(first) as f64 / 1000.0;
            emf = emf.metric("PostponedAgeSeconds", age, Unit::Seconds);
        }
        emf.emit();
    }
    sent.into_iter()
        .filter_map(|(i, ok)| (!ok).then_some(i))
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Send message `i` again; `(i, whether it was sent)`.
async fn resend(
    state: &State,
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    notices: &Notices,
    i: usize,
    deadline: Instant,
) -> (usize, bool) {
    let Some(Some(msg)) = notices.messages.get(i) else {
        return (i, false);
    };
    let count = msg.postponed.saturating_add(1);
    let message = Outgoing {
        body: &msg.body,
        delay_seconds: Some(delay_for(msg.postponed)),
        attributes: vec![
            (POSTPONED_ATTRIBUTE, count.to_string()),
            (
                FIRST_SENT_ATTRIBUTE,
                msg.first_sent_ms.unwrap_or_else(now_ms).to_string(),
            ),
        ],
    };
    let message_id = notices.message_ids.get(i).cloned().flatten();
    match sqs::send(client, queue_url, &message, &state.retry, deadline).await {
        Ok(sent) => {
            tracing::warn!(
                message_id = message_id.as_deref().unwrap_or(""),
                copy_id = %sent.message_id,
                postponed = count,
                delay_seconds = message.delay_seconds.unwrap_or(0),
                "message not tried; postponed (sent again, original acknowledged)"
            );
            (i, true)
        }
        Err(e) => {
            tracing::error!(
                message_id = message_id.as_deref().unwrap_or(""),
                error = %e,
                retryable = e.retryable,
                "postponing failed; the message is reported failed"
            );
            (i, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::delay_for;

    #[test]
    fn delays_double_up_to_the_sqs_maximum() {
        let d: Vec<i32> = (0..8).map(delay_for).collect();
        assert_eq!(d, [60, 120, 240, 480, 900, 900, 900, 900]);
        assert_eq!(delay_for(u32::MAX), 900);
    }
}
