//! SQS adapter: `SendMessage` with the shared retry policy.
//!
//! Used by raw-writer to record, durably and in a few hundred bytes, which raw lines still have
//! to reach the lake (docs/CONTRACTS.md §7). Messages are small by construction (references,
//! never payloads); [`MAX_MESSAGE_BYTES`] is the service's limit, checked here before sending so
//! an oversized body is a permanent error with a clear message rather than an SDK validation
//! failure.

use aws_sdk_sqs::Client;
use tokio::time::Instant;

use crate::retry::{CallError, RetryPolicy, retry_call};

/// Largest message body SQS accepts: 256 KiB.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What SQS said about a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message id SQS assigned.
    pub message_id: String,
    /// Calls made, including retries.
    pub attempts: u32,
}

/// Send one message to `queue_url`, retrying transient failures (throttling, 5xx, timeouts)
/// until `deadline`. A body over [`MAX_MESSAGE_BYTES`] is refused without a call.
pub async fn send_message(
    client: &Client,
    queue_url: &str,
    body: &str,
    policy: &RetryPolicy,
    deadline: Instant,
) -> Result<Sent, CallError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(CallError {
            retryable: false,
            code: "MessageTooLarge".into(),
            message: format!(
                "message body of {} bytes exceeds the {MAX_MESSAGE_BYTES}-byte SQS limit",
                body.len()
            ),
        });
    }
    let (result, attempts) = retry_call(policy, deadline, || async {
        client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| super::call_error(&e))
    })
    .await;
    let out = result?;
    Ok(Sent {
        message_id: out.message_id().unwrap_or_default().to_owned(),
        attempts,
    })
}
