//! The two shapes one raw-writer invocation can receive, told apart by their records.
//!
//! The function has two event sources: the Kinesis stream (a batch to archive) and the lake
//! retry queue (references to raw lines still missing from the lake). Lambda sends both as
//! `{"Records":[…]}`; a Kinesis record has a `kinesis` object, an SQS message a `messageId`.
//! [`RawWriterEvent`] reads the payload **in one pass**, each record into a struct with the
//! fields of both shapes, then decides. Nothing is buffered as a JSON tree first (the way an
//! untagged enum or a `serde_json::Value` would): a Kinesis payload is up to 6 MB and its
//! base64 is decoded record by record while it is read, exactly as [`KinesisBatchEvent`] does.
//!
//! An event whose records are neither, or a mix of both, is a [`EventError::Shape`] error for
//! the whole invocation: Lambda never sends one, so it is a wiring mistake to be seen loudly.

use aws_lambda_events::event::sqs::SqsBatchResponse;
use aws_lambda_events::event::streams::KinesisEventResponse;
use serde::{Deserialize, Deserializer, Serialize};

use crate::input::{EventError, KinesisBatchEvent, KinesisBatchRecord, KinesisData};

/// What the function is invoked with.
#[derive(Debug, Clone, PartialEq)]
pub enum RawWriterEvent {
    /// A batch from the stream (also an empty `Records` array).
    Kinesis(KinesisBatchEvent),
    /// Messages from the lake retry queue.
    LakeRetry(Vec<SqsRecord>),
}

/// One SQS message, as much of it as the retry handler uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsRecord {
    /// The message id (what `batchItemFailures` names).
    pub message_id: String,
    /// The body.
    pub body: String,
    /// `attributes.ApproximateReceiveCount`, for the log.
    pub receive_count: Option<u32>,
}

/// What the function answers: both shapes are `{"batchItemFailures":[{"itemIdentifier":…}]}`,
/// naming a sequence number for Kinesis and a message id for SQS.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RawWriterResponse {
    /// For a Kinesis batch.
    Kinesis(KinesisEventResponse),
    /// For lake retry messages.
    LakeRetry(SqsBatchResponse),
}

#[derive(Deserialize)]
struct AnyEvent {
    #[serde(rename = "Records")]
    records: Vec<AnyRecord>,
}

#[derive(Deserialize, Default)]
struct SqsAttributes {
    #[serde(default, rename = "ApproximateReceiveCount")]
    approximate_receive_count: Option<String>,
}

/// The fields of a Kinesis record and of an SQS message; the rest is skipped unread.
#[derive(Deserialize)]
struct AnyRecord {
    #[serde(default, rename = "eventID")]
    event_id: Option<String>,
    #[serde(default)]
    kinesis: Option<KinesisData>,
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    attributes: Option<SqsAttributes>,
}

impl RawWriterEvent {
    /// Decode a payload from JSON text (what the Lambda runtime receives).
    pub fn parse_str(payload: &str) -> Result<Self, EventError> {
        let any: AnyEvent =
            serde_json::from_str(payload).map_err(|e| EventError::Shape(e.to_string()))?;
        Self::from_records(any.records)
    }

    /// Decode a payload from a JSON value (what the local stack passes to `invoke`).
    pub fn parse_value(payload: &serde_json::Value) -> Result<Self, EventError> {
        let any = AnyEvent::deserialize(payload).map_err(|e| EventError::Shape(e.to_string()))?;
        Self::from_records(any.records)
    }

    fn from_records(records: Vec<AnyRecord>) -> Result<Self, EventError> {
        let sqs = records.first().is_some_and(|r| r.kinesis.is_none());
        if !sqs {
            let mut out = Vec::with_capacity(records.len());
            for (index, r) in records.into_iter().enumerate() {
                let kinesis = r.kinesis.ok_or_else(|| {
                    EventError::Shape(format!("record {index} is not a Kinesis record"))
                })?;
                out.push(KinesisBatchRecord {
                    event_id: r.event_id,
                    kinesis,
                });
            }
            return Ok(RawWriterEvent::Kinesis(KinesisBatchEvent { records: out }));
        }
        let mut out = Vec::with_capacity(records.len());
        for (index, r) in records.into_iter().enumerate() {
            let message_id = r.message_id.filter(|id| !id.is_empty()).ok_or_else(|| {
                EventError::Shape(format!(
                    "record {index} is neither a Kinesis record nor an SQS message"
                ))
            })?;
            out.push(SqsRecord {
                message_id,
                // A missing body is that message's problem, not the batch's: it fails alone.
                body: r.body.unwrap_or_default(),
                receive_count: r
                    .attributes
                    .and_then(|a| a.approximate_receive_count)
                    .and_then(|c| c.parse().ok()),
            });
        }
        Ok(RawWriterEvent::LakeRetry(out))
    }
}

impl<'de> Deserialize<'de> for RawWriterEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let any = AnyEvent::deserialize(d)?;
        Self::from_records(any.records).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_and_sqs_records_are_told_apart() {
        let kinesis = serde_json::json!({"Records": [{"eventID": "s-1:1", "eventSource": "aws:kinesis",
            "kinesis": {"sequenceNumber": "1", "data": "YQ==", "approximateArrivalTimestamp": 1.5}}]});
        match RawWriterEvent::parse_value(&kinesis).unwrap() {
            RawWriterEvent::Kinesis(e) => {
                assert_eq!(e.records.len(), 1);
                assert_eq!(e.records[0].event_id.as_deref(), Some("s-1:1"));
            }
            other => panic!("{other:?}"),
        }
        let sqs = serde_json::json!({"Records": [{"messageId": "m-1", "receiptHandle": "r",
            "body": "{}", "attributes": {"ApproximateReceiveCount": "3"}, "eventSource": "aws:sqs"},
            {"messageId": "m-2", "eventSource": "aws:sqs"}]});
        let text = sqs.to_string();
        for event in [
            RawWriterEvent::parse_value(&sqs).unwrap(),
            RawWriterEvent::parse_str(&text).unwrap(),
            serde_json::from_str::<RawWriterEvent>(&text).unwrap(),
        ] {
            assert_eq!(
                event,
                RawWriterEvent::LakeRetry(vec![
                    SqsRecord {
                        message_id: "m-1".into(),
                        body: "{}".into(),
                        receive_count: Some(3),
                    },
                    SqsRecord {
                        message_id: "m-2".into(),
                        body: String::new(),
                        receive_count: None,
                    },
                ])
            );
        }
        assert_eq!(
            RawWriterEvent::parse_value(&serde_json::json!({"Records": []})).unwrap(),
            RawWriterEvent::Kinesis(KinesisBatchEvent::default())
        );
    }

    #[test]
    fn mixed_or_unknown_records_fail_the_event() {
        let k = serde_json::json!({"eventID": "s-1:1",
            "kinesis": {"sequenceNumber": "1", "data": "", "approximateArrivalTimestamp": 1}});
        let m = serde_json::json!({"messageId": "m-1", "body": "{}"});
        for (v, what) in [
            (
                serde_json::json!({"Records": [k.clone(), m.clone()]}),
                "record 1 is not a Kinesis",
            ),
            (
                serde_json::json!({"Records": [m, k]}),
                "record 1 is neither",
            ),
            (
                serde_json::json!({"Records": [{"s3": {}}]}),
                "record 0 is neither",
            ),
            (serde_json::json!({"hello": 1}), "Records"),
        ] {
            let err = RawWriterEvent::parse_value(&v).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        }
    }

    #[test]
    fn responses_have_the_lambda_shape() {
        let mut k = KinesisEventResponse::default();
        k.add_failure("42");
        let v = serde_json::to_value(RawWriterResponse::Kinesis(k)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "42"}]})
        );
        let mut s = SqsBatchResponse::default();
        s.add_failure("m-1");
        let v = serde_json::to_value(RawWriterResponse::LakeRetry(s)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]})
        );
    }
}
