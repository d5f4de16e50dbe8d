//! The loader's inputs: S3 object-created notifications, delivered through SQS (the deployed
//! path) or directly (`sam local invoke -e events/rules-loader-s3-put.json`).
//!
//! [`LoaderEvent`] deserializes either shape, told apart by the records' fields, into the exact
//! `aws_lambda_events` types the Lambda runtime would use. [`notices`] flattens it into one
//! [`Notice`] per referenced raw object plus the messages that can be acknowledged or must fail
//! right away:
//!
//! * `s3:TestEvent` messages (sent when a notification is configured) — acknowledged;
//! * keys outside `raw/` and non-`ObjectCreated` events — acknowledged and ignored (the loader
//!   never reads or writes anything else, so a misconfigured prefix cannot make it recurse);
//! * keys are URL-decoded ([`caudal_core::keys::decode_notification_key`]); a `raw/` key outside the
//!   strict key alphabet, an undecodable body or a bucket name that is not one — a permanent
//!   failure of that message (it reaches the DLQ after the queue's bounded receives).
//!
//! Beside notifications the queue carries operator commands
//! ([`caudal_core::command::CommandMessage`], from `caudal replay`, `redrive` and
//! `reprocess`): one raw object each, checked like a notification's (bucket name, `raw/` key in
//! the strict alphabet), with `reprocess` set on its [`Notice`] for a reprocess. A body with a
//! `caudal` member that is not a valid command fails permanently with the reason.

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use caudal_core::command::{Action, COMMAND_MEMBER, CommandMessage};

use crate::sql::{check_bucket, check_raw_key};

/// What the function is invoked with.
#[derive(Debug, Clone, PartialEq)]
pub enum LoaderEvent {
    /// SQS messages whose bodies are S3 notifications.
    Sqs(SqsEvent),
    /// A direct S3 notification.
    S3(S3Event),
}

impl<'de> Deserialize<'de> for LoaderEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let is_sqs = v
            .get("Records")
            .and_then(Value::as_array)
            .is_some_and(|records| {
                records.iter().any(|r| {
                    r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs")
                        || r.get("messageId").is_some()
                })
            });
        let is_s3 = v
            .get("Records")
            .and_then(Value::as_array)
            .is_some_and(|records| records.iter().any(|r| r.get("s3").is_some()));
        if is_sqs {
            serde_json::from_value(v)
                .map(LoaderEvent::Sqs)
                .map_err(serde::de::Error::custom)
        } else if is_s3 {
            serde_json::from_value(v)
                .map(LoaderEvent::S3)
                .map_err(serde::de::Error::custom)
        } else if v
            .get("Records")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            Ok(LoaderEvent::Sqs(SqsEvent::default()))
        } else {
            Err(serde::de::Error::custom(
                "expected an SQS event with S3 notifications or an S3 event (a `Records` array)",
            ))
        }
    }
}

/// What the function answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LoaderResponse {
    /// For SQS: the partial batch response (messages to redeliver).
    Sqs(SqsBatchResponse),
    /// For a direct S3 event: a summary (failures are returned as an error instead, so the
    /// asynchronous invocation is retried).
    S3(Summary),
}

/// Per-invocation counts, returned for direct S3 events and logged for every batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Raw objects loaded by this invocation.
    pub loaded: usize,
    /// Raw objects already in the ledger (acknowledged without loading).
    pub already_loaded: usize,
    /// Raw objects that failed.
    pub failed: usize,
    /// Raw objects not tried (their messages are postponed, see [`crate::postpone`]).
    pub postponed: usize,
    /// Notifications ignored (test events, other prefixes, other event types).
    pub ignored: usize,
}

/// One raw object referenced by one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Index of the message in the batch (0 for a direct S3 event).
    pub message: usize,
    /// Bucket.
    pub bucket: String,
    /// Decoded key (validated: under `raw/`, strict alphabet).
    pub key: String,
    /// An operator's `reprocess` command: load with the current rules, replacing an earlier
    /// rule version's result.
    pub reprocess: bool,
}

/// A message that failed before any object was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMessage {
    /// Index of the message in the batch.
    pub message: usize,
    /// Why (logged; the message goes back to the queue and eventually to the DLQ).
    pub reason: String,
}

/// Message attribute counting how often a notification was postponed (sent again to the queue
/// untried, see [`crate::postpone`]).
pub const POSTPONED_ATTRIBUTE: &str = "caudal-postponed";
/// Message attribute carrying when the first of a chain of postponed copies was sent (epoch
/// milliseconds), so the wait can be measured although every copy is a new message.
pub const FIRST_SENT_ATTRIBUTE: &str = "caudal-first-sent";

/// An SQS message as it can be sent again: its body and how often it was postponed before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resendable {
    /// The body, byte for byte.
    pub body: String,
    /// Earlier postponements (the [`POSTPONED_ATTRIBUTE`]; 0 when absent or unreadable).
    pub postponed: u32,
    /// When the notification was first sent (epoch ms): the [`FIRST_SENT_ATTRIBUTE`], else the
    /// message's own `SentTimestamp`.
    pub first_sent_ms: Option<u64>,
}

/// An invocation's input, flattened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notices {
    /// SQS message ids by index (`None` for a direct S3 event).
    pub message_ids: Vec<Option<String>>,
    /// SQS messages by index, for sending them again (`None` for a direct S3 event).
    pub messages: Vec<Option<Resendable>>,
    /// Raw objects to load.
    pub objects: Vec<Notice>,
    /// Messages that fail permanently.
    pub bad: Vec<BadMessage>,
    /// Notifications ignored.
    pub ignored: usize,
}

fn from_s3(event: &S3Event, message: usize, out: &mut Notices) {
    for record in &event.records {
        let name = record.event_name.as_deref().unwrap_or_default();
        if !name.starts_with("ObjectCreated:") {
            out.ignored += 1;
            continue;
        }
        let key = record
            .s3
            .object
            .key
            .as_deref()
            .map(caudal_core::keys::decode_notification_key)
            .unwrap_or_default();
        if !key.starts_with(caudal_core::keys::RAW_PREFIX) {
            out.ignored += 1;
            continue;
        }
        let bucket = record.s3.bucket.name.clone().unwrap_or_default();
        if let Err(e) = check_bucket(&bucket) {
            out.bad.push(BadMessage {
                message,
                reason: e.to_string(),
            });
            continue;
        }
        if let Err(e) = check_raw_key(&key) {
            out.bad.push(BadMessage {
                message,
                reason: e.to_string(),
            });
            continue;
        }
        out.objects.push(Notice {
            message,
            bucket,
            key,
            reprocess: false,
        });
    }
}

/// An operator command (`value` has the [`COMMAND_MEMBER`]): one notice, or a bad message.
fn from_command(value: Value, message: usize, out: &mut Notices) {
    let command = match serde_json::from_value::<CommandMessage>(value) {
        Ok(c) => c.caudal,
        Err(e) => {
            out.bad.push(BadMessage {
                message,
                reason: format!("not a caudal command: {e}"),
            });
            return;
        }
    };
    if let Err(e) = check_bucket(&command.bucket).and_then(|()| check_raw_key(&command.key)) {
        out.bad.push(BadMessage {
            message,
            reason: format!("caudal command: {e}"),
        });
        return;
    }
    out.objects.push(Notice {
        message,
        bucket: command.bucket,
        key: command.key,
        reprocess: command.action == Action::Reprocess,
    });
}

/// Flatten an event into notices (see the module docs).
pub fn notices(event: &LoaderEvent) -> Notices {
    let mut out = Notices::default();
    match event {
        LoaderEvent::S3(e) => {
            out.message_ids.push(None);
            out.messages.push(None);
            from_s3(e, 0, &mut out);
        }
        LoaderEvent::Sqs(e) => {
            for (i, msg) in e.records.iter().enumerate() {
                out.message_ids.push(msg.message_id.clone());
                let body = msg.body.as_deref().unwrap_or_default();
                let postponed = msg
                    .message_attributes
                    .get(POSTPONED_ATTRIBUTE)
                    .and_then(|a| a.string_value.as_deref())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0);
                let first_sent_ms = msg
                    .message_attributes
                    .get(FIRST_SENT_ATTRIBUTE)
                    .and_then(|a| a.string_value.as_deref())
                    .or(msg.attributes.get("SentTimestamp").map(String::as_str))
                    .and_then(|v| v.parse::<u64>().ok());
                out.messages.push(Some(Resendable {
                    body: body.to_owned(),
                    postponed,
                    first_sent_ms,
                }));
                let value: Value = match serde_json::from_str(body) {
                    Ok(v) => v,
                    Err(e) => {
                        out.bad.push(BadMessage {
                            message: i,
                            reason: format!("message body is not JSON: {e}"),
                        });
                        continue;
                    }
                };
                if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
                    out.ignored += 1;
                    continue;
                }
                if value.get(COMMAND_MEMBER).is_some() {
                    from_command(value, i, &mut out);
                    continue;
                }
                match serde_json::from_value::<S3Event>(value) {
                    Ok(s3) => from_s3(&s3, i, &mut out),
                    Err(e) => out.bad.push(BadMessage {
                        message: i,
                        reason: format!("message body is not an S3 notification: {e}"),
                    }),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqs(bodies: &[&str]) -> LoaderEvent {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                serde_json::json!({"messageId": format!("m-{i}"), "body": b,
                    "eventSource": "aws:sqs", "messageAttributes": {}, "attributes": {}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    #[test]
    fn operator_commands_become_notices_and_bad_ones_fail_with_their_reason() {
        let key = "raw/dt=2026-12-03/hr=07/shardId-000000000000/1-2.ndjson.gz";
        let reprocess = CommandMessage::new(Action::Reprocess, "caudal-raw", key).to_body();
        let load = CommandMessage::new(Action::Load, "caudal-raw", key).to_body();
        let outside = CommandMessage::new(Action::Load, "caudal-raw", "staging/x").to_body();
        let bad_bucket = CommandMessage::new(Action::Load, "Bad_Bucket", key).to_body();
        let n = notices(&sqs(&[
            &reprocess,
            &load,
            r#"{"caudal":{"action":"drop","bucket":"b","key":"raw/x"}}"#,
            &outside,
            &bad_bucket,
        ]));
        assert_eq!(
            n.objects,
            vec![
                Notice {
                    message: 0,
                    bucket: "caudal-raw".into(),
                    key: key.into(),
                    reprocess: true
                },
                Notice {
                    message: 1,
                    bucket: "caudal-raw".into(),
                    key: key.into(),
                    reprocess: false
                },
            ]
        );
        let bad: Vec<(usize, &str)> = n
            .bad
            .iter()
            .map(|b| (b.message, b.reason.as_str()))
            .collect();
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(bad[0].0, 2);
        assert!(bad[0].1.starts_with("not a caudal command"), "{bad:?}");
        assert_eq!(bad[1].0, 3);
        assert!(bad[1].1.contains("raw/"), "{bad:?}");
        assert_eq!(bad[2].0, 4);
        assert!(bad[2].1.contains("bucket"), "{bad:?}");
        assert_eq!(n.ignored, 0);
    }
}
