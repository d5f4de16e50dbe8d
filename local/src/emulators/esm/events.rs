//! The JSON documents Lambda's event source mappings send, built exactly as AWS documents them.
//!
//! Why the JSON is written here rather than produced by serializing the `aws_lambda_events`
//! structs: those structs are the *handler's* side of the contract, and serializing them is not
//! what Lambda sends — e.g. `KinesisRecord` serializes `approximateArrivalTimestamp` as a
//! string, where Lambda sends a JSON number. Building the documented wire shape and letting the
//! handlers deserialize it with `aws_lambda_events` (checked by the tests below) is what makes
//! event-shape bugs surface locally instead of in AWS.
//!
//! Sources: "Using AWS Lambda with Amazon Kinesis" (sample event, on-failure record), "Using
//! Lambda with Amazon SQS" (sample event), "Implementing partial batch responses".

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use caudal_core::stream::{KinesisRecord, StreamSource, kinesis_event};

/// Why a stream batch went to the on-failure destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCondition {
    /// MaximumRetryAttempts exhausted.
    RetryAttemptsExhausted,
    /// MaximumRecordAgeInSeconds exceeded.
    RecordAgeExceeded,
}

impl FailureCondition {
    fn as_str(self) -> &'static str {
        match self {
            FailureCondition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            FailureCondition::RecordAgeExceeded => "RecordAgeExceeded",
        }
    }
}

fn rfc3339_secs(epoch: f64) -> String {
    let nanos = (epoch * 1e9) as i128;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map(caudal_core::envelope::format_timestamp)
        .unwrap_or_default()
}

/// The record Lambda sends to a stream mapping's OnFailure destination: metadata about the
/// batch (shard and sequence range), not the records themselves, which stay in the stream.
pub fn kinesis_on_failure(
    records: &[KinesisRecord],
    src: &StreamSource<'_>,
    function_arn: &str,
    condition: FailureCondition,
    invoke_count: u32,
    function_error: Option<&str>,
    now: OffsetDateTime,
) -> Value {
    let first = records.first();
    let last = records.last();
    let mut response = json!({"statusCode": 200, "executedVersion": "$LATEST"});
    if let Some(e) = function_error {
        response["functionError"] = json!(e);
    }
    json!({
        "requestContext": {
            "requestId": uuid::Uuid::new_v4().to_string(),
            "functionArn": function_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": now.format(&Rfc3339).unwrap_or_default(),
        "KinesisBatchInfo": {
            "shardId": first.map(|r| r.shard_id.as_str()).unwrap_or_default(),
            "startSequenceNumber": first.map(|r| r.sequence_number.as_str()).unwrap_or_default(),
            "endSequenceNumber": last.map(|r| r.sequence_number.as_str()).unwrap_or_default(),
            "approximateArrivalOfFirstRecord": first.map(|r| rfc3339_secs(r.arrival)).unwrap_or_default(),
            "approximateArrivalOfLastRecord": last.map(|r| rfc3339_secs(r.arrival)).unwrap_or_default(),
            "batchSize": records.len(),
            "streamArn": src.stream_arn,
        }
    })
}

/// One SQS message as the poller received it.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsMessage {
    /// MessageId.
    pub message_id: String,
    /// ReceiptHandle.
    pub receipt_handle: String,
    /// Body.
    pub body: String,
    /// MD5OfBody.
    pub md5_of_body: String,
    /// System attributes (ApproximateReceiveCount, SentTimestamp, …).
    pub attributes: std::collections::BTreeMap<String, String>,
    /// Message attributes in Lambda's shape (`stringValue`, `dataType`, …).
    pub message_attributes: serde_json::Map<String, Value>,
}

/// An SQS event (`{"Records": [...]}`) for `messages` from the queue `queue_arn`.
pub fn sqs_event(messages: &[SqsMessage], queue_arn: &str, region: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "attributes": m.attributes,
                "messageAttributes": m.message_attributes,
                "md5OfBody": m.md5_of_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// The outcome of reading a partial batch response against the batch that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchResponse {
    /// Every item succeeded (no or empty `batchItemFailures`).
    AllSucceeded,
    /// These item positions (indices into the batch, ascending) failed.
    Failed(Vec<usize>),
    /// The response cannot be trusted (an empty, null or unknown `itemIdentifier`): Lambda
    /// treats the whole batch as failed.
    Invalid,
}

/// Reads `{"batchItemFailures": [{"itemIdentifier": …}]}` from a function's output, mapping
/// identifiers to positions in `ids` (sequence numbers for streams, message ids for SQS).
pub fn parse_batch_response(output: &Value, ids: &[&str]) -> BatchResponse {
    let Some(failures) = output.get("batchItemFailures") else {
        return BatchResponse::AllSucceeded;
    };
    let Some(list) = failures.as_array() else {
        return if failures.is_null() {
            BatchResponse::AllSucceeded
        } else {
            BatchResponse::Invalid
        };
    };
    let mut idx = Vec::with_capacity(list.len());
    for item in list {
        let Some(id) = item
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return BatchResponse::Invalid;
        };
        match ids.iter().position(|x| *x == id) {
            Some(i) => idx.push(i),
            None => return BatchResponse::Invalid,
        }
    }
    if idx.is_empty() {
        return BatchResponse::AllSucceeded;
    }
    idx.sort_unstable();
    idx.dedup();
    BatchResponse::Failed(idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::kinesis::KinesisEvent;
    use aws_lambda_events::event::sqs::SqsEvent;

    fn rec(seq: &str, data: &[u8]) -> KinesisRecord {
        KinesisRecord {
            shard_id: "shardId-000000000001".into(),
            sequence_number: seq.into(),
            partition_key: "pk-1".into(),
            data: data.to_vec(),
            arrival: 1_545_084_650.987,
        }
    }

    const SRC: StreamSource<'static> = StreamSource {
        stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s",
        region: "us-east-1",
        identity_arn: "arn:aws:iam::123456789012:role/r",
    };

    #[test]
    fn kinesis_events_match_the_documented_shape_and_parse_as_aws_lambda_events() {
        let ev = kinesis_event(&[rec("1", b"hello"), rec("2", &[0, 255])], &SRC);
        let r = &ev["Records"][0];
        assert_eq!(r["eventSource"], "aws:kinesis");
        assert_eq!(r["eventName"], "aws:kinesis:record");
        assert_eq!(r["eventVersion"], "1.0");
        assert_eq!(r["eventID"], "shardId-000000000001:1");
        assert_eq!(r["eventSourceARN"], SRC.stream_arn);
        assert_eq!(r["invokeIdentityArn"], SRC.identity_arn);
        assert_eq!(r["awsRegion"], "us-east-1");
        assert_eq!(r["kinesis"]["data"], "aGVsbG8=");
        assert_eq!(r["kinesis"]["kinesisSchemaVersion"], "1.0");
        // A JSON number, as Lambda sends it (not a string).
        assert!(r["kinesis"]["approximateArrivalTimestamp"].is_f64());
        let typed: KinesisEvent = serde_json::from_value(ev).unwrap();
        assert_eq!(typed.records.len(), 2);
        assert_eq!(typed.records[1].kinesis.data.0, vec![0, 255]);
        assert_eq!(typed.records[0].kinesis.sequence_number, "1");
        assert_eq!(
            typed.records[0]
                .kinesis
                .approximate_arrival_timestamp
                .0
                .timestamp_millis(),
            1_545_084_650_987
        );
    }

    #[test]
    fn event_size_estimate_is_an_upper_bound() {
        for n in [0usize, 1, 2, 3, 1000, 65_537] {
            let r = rec(
                "49590338271490256608559692538361571095921575989136588898",
                &vec![7u8; n],
            );
            let actual = kinesis_event(std::slice::from_ref(&r), &SRC)
                .to_string()
                .len();
            assert!(
                r.event_bytes() >= actual - 13,
                "{n}: {} < {actual}",
                r.event_bytes()
            );
        }
    }

    #[test]
    fn sqs_events_parse_as_aws_lambda_events() {
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("ApproximateReceiveCount".to_owned(), "2".to_owned());
        attributes.insert("SentTimestamp".to_owned(), "1545082649183".to_owned());
        let mut ma = serde_json::Map::new();
        ma.insert(
            "k".into(),
            json!({"stringValue": "v", "stringListValues": [], "binaryListValues": [], "dataType": "String"}),
        );
        let m = SqsMessage {
            message_id: "m1".into(),
            receipt_handle: "rh".into(),
            body: "{\"Records\":[]}".into(),
            md5_of_body: "abc".into(),
            attributes,
            message_attributes: ma,
        };
        let ev = sqs_event(&[m], "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1");
        assert_eq!(ev["Records"][0]["eventSource"], "aws:sqs");
        let typed: SqsEvent = serde_json::from_value(ev).unwrap();
        let r = &typed.records[0];
        assert_eq!(r.attributes["ApproximateReceiveCount"], "2");
        assert_eq!(
            r.event_source_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:123456789012:q")
        );
        assert_eq!(r.message_attributes["k"].string_value.as_deref(), Some("v"));
        assert_eq!(r.body.as_deref(), Some("{\"Records\":[]}"));
    }

    #[test]
    fn partial_batch_responses_follow_lambda_rules() {
        let ids = ["10", "11", "12"];
        assert_eq!(
            parse_batch_response(&Value::Null, &ids),
            BatchResponse::AllSucceeded
        );
        assert_eq!(
            parse_batch_response(&json!({"batchItemFailures": []}), &ids),
            BatchResponse::AllSucceeded
        );
        assert_eq!(
            parse_batch_response(
                &json!({"batchItemFailures": [{"itemIdentifier": "12"}, {"itemIdentifier": "11"}]}),
                &ids
            ),
            BatchResponse::Failed(vec![1, 2])
        );
        for bad in [
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"itemIdentifier": "99"}]}),
            json!({"batchItemFailures": "x"}),
        ] {
            assert_eq!(
                parse_batch_response(&bad, &ids),
                BatchResponse::Invalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn on_failure_records_describe_the_batch() {
        let now = OffsetDateTime::from_unix_timestamp(1_764_100_517).unwrap();
        let v = kinesis_on_failure(
            &[rec("5", b"a"), rec("9", b"b")],
            &SRC,
            "arn:aws:lambda:us-east-1:123456789012:function:f",
            FailureCondition::RetryAttemptsExhausted,
            4,
            Some("Unhandled"),
            now,
        );
        assert_eq!(v["requestContext"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(v["requestContext"]["approximateInvokeCount"], 4);
        assert_eq!(v["responseContext"]["functionError"], "Unhandled");
        let b = &v["KinesisBatchInfo"];
        assert_eq!(
            (
                b["startSequenceNumber"].as_str(),
                b["endSequenceNumber"].as_str()
            ),
            (Some("5"), Some("9"))
        );
        assert_eq!(b["batchSize"], 2);
        assert_eq!(
            b["approximateArrivalOfFirstRecord"],
            "2018-12-17T22:10:50.987Z"
        );
        assert_eq!(v["timestamp"], "2025-11-25T19:55:17Z");
    }
}
