//! SQS adapter: `SendMessage` with the shared retry policy.
//!
//! Used by rules-loader to postpone a notification it could not try (sent again with a delay,
//! see its `postpone` module) and by raw-writer to record, durably and in a few hundred bytes, which raw lines still have
//! to reach the lake (docs/CONTRACTS.md §7). Messages are small by construction (references,
//! never payloads); [`MAX_MESSAGE_BYTES`] is the service's limit, checked here before sending so
//! an oversized body is a permanent error with a clear message rather than an SDK validation
//! failure.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use tokio::time::Instant;

use caudal_core::retry::{CallError, RetryPolicy, retry_call};

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

/// A message to send: the body, an optional delivery delay and string message attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The body (at most [`MAX_MESSAGE_BYTES`]).
    pub body: &'a str,
    /// Seconds before the message becomes visible (0–900; `None` = the queue's default).
    pub delay_seconds: Option<i32>,
    /// String message attributes (name, value).
    pub attributes: Vec<(&'a str, String)>,
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
    let message = Outgoing {
        body,
        ..Outgoing::default()
    };
    send(client, queue_url, &message, policy, deadline).await
}

/// [`send_message`] with a delay and message attributes.
pub async fn send(
    client: &Client,
    queue_url: &str,
    message: &Outgoing<'_>,
    policy: &RetryPolicy,
    deadline: Instant,
) -> Result<Sent, CallError> {
    let body = message.body;
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
    let mut attributes = std::collections::HashMap::new();
    for (name, value) in &message.attributes {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(|e| CallError {
                retryable: false,
                code: "InvalidAttribute".into(),
                message: format!("message attribute {name}: {e}"),
            })?;
        attributes.insert((*name).to_owned(), value);
    }
    let (result, attempts) = retry_call(policy, deadline, || async {
        client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .set_delay_seconds(message.delay_seconds)
            .set_message_attributes((!attributes.is_empty()).then(|| attributes.clone()))
            .send()
            .await
            .map_err(|e| crate::call_error(&e))
    })
    .await;
    let out = result?;
    Ok(Sent {
        message_id: out.message_id().unwrap_or_default().to_owned(),
        attempts,
    })
}
