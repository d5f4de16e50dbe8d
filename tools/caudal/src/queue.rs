//! SQS, as `caudal` uses it: queue depths, sending command messages in batches of ten (failed
//! entries sent again), and moving a dead-letter queue's messages back to the queue they came
//! from.

use std::time::Duration;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use indicatif::ProgressBar;

use crate::run::Interrupt;

/// SQS refused or failed (after the SDK's retries). Permanent for this run.
#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} on {queue}: {reason}")]
pub struct QueueError {
    /// The call.
    pub operation: &'static str,
    /// Queue URL.
    pub queue: String,
    /// Why.
    pub reason: String,
}

fn err(operation: &'static str, queue: &str, reason: impl ToString) -> QueueError {
    QueueError {
        operation,
        queue: queue.to_owned(),
        reason: reason.to_string(),
    }
}

/// SendMessageBatch takes at most ten entries.
pub const BATCH: usize = 10;
/// Times a refused entry is sent again before giving up.
const RESENDS: u32 = 5;

/// Messages in a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Depth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received, not deleted yet.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

impl Depth {
    /// Every message in the queue.
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// The queue's approximate depth.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<Depth, QueueError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| err("GetQueueAttributes", url, caudal_aws::call_error(&e)))?;
    let get = |a: QueueAttributeName| {
        out.attributes()
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Depth {
        visible: get(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

/// Sends `bodies` (at most [`BATCH`]) to `url`; entries SQS refuses are sent again.
pub async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    bodies: &[String],
) -> Result<(), QueueError> {
    let mut pending: Vec<(usize, &String)> = bodies.iter().enumerate().collect();
    for attempt in 0..=RESENDS {
        if pending.is_empty() {
            return Ok(());
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let entries = pending
            .iter()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(body.as_str())
                    .build()
                    .map_err(|e| err("SendMessageBatch", url, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| err("SendMessageBatch", url, caudal_aws::call_error(&e)))?;
        let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
        if let Some(f) = out.failed().iter().find(|f| f.sender_fault()) {
            return Err(err(
                "SendMessageBatch",
                url,
                format!("{}: {}", f.code(), f.message().unwrap_or("")),
            ));
        }
        pending.retain(|(i, _)| failed.contains(&format!("m{i}").as_str()));
    }
    Err(err(
        "SendMessageBatch",
        url,
        format!(
            "{} messages still refused after {RESENDS} resends",
            pending.len()
        ),
    ))
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Redriven {
    /// Messages in the dead-letter queue when it started.
    pub found: u64,
    /// Moved (sent to the target, then deleted from the dead-letter queue).
    pub moved: u64,
    /// Stopped by Ctrl-C before the queue was empty.
    pub interrupted: bool,
}

/// Moves every message of `dlq` to `target`, ten at a time: each batch is sent to the target
/// first and deleted from the dead-letter queue only then, so a crash in between sends a
/// message twice, never loses one (the loader's ledger makes the second copy a no-op). Stops
/// after as many messages as the queue held when it started, so a message that fails again
/// and comes back is not moved round in circles within one run.
pub async fn redrive(
    sqs: &aws_sdk_sqs::Client,
    dlq: &str,
    target: &str,
    bar: &ProgressBar,
    interrupt: &Interrupt,
) -> Result<Redriven, QueueError> {
    let found = depth(sqs, dlq).await?.total();
    bar.set_length(found);
    let mut r = Redriven {
        found,
        ..Redriven::default()
    };
    let mut empty_receives = 0;
    while r.moved < found {
        if interrupt.stopped() {
            r.interrupted = true;
            break;
        }
        let messages = receive(sqs, dlq, 120).await?;
        if messages.is_empty() {
            empty_receives += 1;
            // The counts are approximate: a few empty receives in a row mean empty.
            if empty_receives >= 3 {
                break;
            }
            continue;
        }
        empty_receives = 0;
        let bodies: Vec<String> = messages.iter().map(|(b, _)| b.clone()).collect();
        send_batch(sqs, target, &bodies).await?;
        for (_, receipt) in &messages {
            delete(sqs, dlq, receipt).await?;
        }
        r.moved += messages.len() as u64;
        bar.inc(messages.len() as u64);
    }
    Ok(r)
}

/// Up to ten message bodies of `url`, made visible again at once (what a dry run shows).
pub async fn peek(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<Vec<String>, QueueError> {
    Ok(receive(sqs, url, 0)
        .await?
        .into_iter()
        .map(|(body, _)| body)
        .collect())
}

/// Up to ten messages of `url` as (body, receipt handle), hidden for `visibility_s` seconds.
pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    visibility_s: i32,
) -> Result<Vec<(String, String)>, QueueError> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(BATCH as i32)
        .wait_time_seconds(1)
        .visibility_timeout(visibility_s)
        .send()
        .await
        .map_err(|e| err("ReceiveMessage", url, caudal_aws::call_error(&e)))?;
    Ok(out
        .messages()
        .iter()
        .filter_map(|m| Some((m.body()?.to_owned(), m.receipt_handle()?.to_owned())))
        .collect())
}

/// Deletes a received message.
pub async fn delete(sqs: &aws_sdk_sqs::Client, url: &str, receipt: &str) -> Result<(), QueueError> {
    sqs.delete_message()
        .queue_url(url)
        .receipt_handle(receipt)
        .send()
        .await
        .map_err(|e| err("DeleteMessage", url, caudal_aws::call_error(&e)))?;
    Ok(())
}

/// Makes a received message visible again at once.
pub async fn release(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    receipt: &str,
) -> Result<(), QueueError> {
    sqs.change_message_visibility()
        .queue_url(url)
        .receipt_handle(receipt)
        .visibility_timeout(0)
        .send()
        .await
        .map_err(|e| err("ChangeMessageVisibility", url, caudal_aws::call_error(&e)))?;
    Ok(())
}

/// What a loader message names, for people: the raw keys of an S3 notification, or the action
/// and key of an operator command; otherwise the first 200 characters.
pub fn describe(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if let Some(c) = v.get(caudal_core::command::COMMAND_MEMBER) {
        return format!(
            "command {} {}",
            c["action"].as_str().unwrap_or("?"),
            c["key"].as_str().unwrap_or("?")
        );
    }
    let keys: Vec<String> = v["Records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["s3"]["object"]["key"].as_str())
        .map(caudal_core::keys::decode_notification_key)
        .collect();
    if keys.is_empty() {
        body.chars().take(200).collect()
    } else {
        format!("notification {}", keys.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_described_by_what_they_name() {
        let n = r#"{"Records":[{"s3":{"object":{"key":"raw/dt%3D2026-12-03/hr%3D08/s/1-2.ndjson.gz"}}}]}"#;
        assert_eq!(
            describe(n),
            "notification raw/dt=2026-12-03/hr=08/s/1-2.ndjson.gz"
        );
        let c = caudal_core::command::CommandMessage::new(
            caudal_core::command::Action::Reprocess,
            "b",
            "raw/k",
        )
        .to_body();
        assert_eq!(describe(&c), "command reprocess raw/k");
        assert_eq!(describe("not json"), "not json");
        assert_eq!(
            Depth {
                visible: 1,
                in_flight: 2,
                delayed: 3
            }
            .total(),
            6
        );
    }
}
