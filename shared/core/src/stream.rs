//! The Kinesis stream's plain data: a record to write, where Kinesis stored it, the per-record
//! outcomes of a PutRecords request and its request limits. The adapter (`caudal-aws`'s
//! `kinesis`) speaks in these types, so code that only builds or reads records (ingest's core,
//! receipts, benchmarks) needs no SDK.

use crate::batching::ChunkLimits;
use crate::limits::{PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_RECORDS};
use crate::retry::EntryOutcome;

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record data (an envelope).
    pub data: Vec<u8>,
    /// The partition key (1–256 characters).
    pub partition_key: String,
}

impl Record {
    /// What the record counts against the PutRecords size limits: data plus partition key bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Where Kinesis stored a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The shard.
    pub shard_id: String,
    /// The record's sequence number.
    pub sequence_number: String,
}

/// Per-record outcomes of a PutRecords request (the adapter's `put_records`), in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// One outcome per input record. An error is final for this request: retryable errors ran
    /// out of attempts or time, the others were permanent.
    pub results: Vec<EntryOutcome<Written>>,
    /// PutRecords calls made, over all chunks.
    pub calls: u32,
}

/// The PutRecords request limits (500 records, 5 MiB including partition keys).
pub const PUT_RECORDS_LIMITS: ChunkLimits = ChunkLimits {
    max_items: PUT_RECORDS_MAX_RECORDS,
    max_bytes: PUT_RECORDS_MAX_BYTES,
};

/// Compares two decimal sequence numbers numerically (they exceed every integer type; leading
/// zeros, as keys pad them, are ignored).
pub fn seq_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Whether `seq` lies in `first..=last` ([`seq_cmp`] order).
pub fn seq_in_range(seq: &str, first: &str, last: &str) -> bool {
    seq_cmp(first, seq).is_le() && seq_cmp(seq, last).is_le()
}

// ---------------------------------------------------------------------------------------------
// The event Lambda's Kinesis event source mapping sends (the local stack's poller builds it, and
// `caudal redrive raw-failures` builds it for records read back from the stream), written as
// AWS documents the wire shape ("Using AWS Lambda with Amazon Kinesis"), which is not what
// serializing `aws_lambda_events`' structs produces (`approximateArrivalTimestamp` is a JSON
// number on the wire).

use base64::Engine as _;
use serde_json::json;

/// One Kinesis record as the poller read it.
#[derive(Debug, Clone, PartialEq)]
pub struct KinesisRecord {
    /// Shard it came from.
    pub shard_id: String,
    /// Sequence number.
    pub sequence_number: String,
    /// Partition key.
    pub partition_key: String,
    /// The record's data (raw bytes; base64-encoded in the event).
    pub data: Vec<u8>,
    /// ApproximateArrivalTimestamp in epoch seconds (millisecond precision).
    pub arrival: f64,
}

impl KinesisRecord {
    /// An upper bound of the bytes this record adds to an event document.
    pub fn event_bytes(&self) -> usize {
        self.data.len().div_ceil(3) * 4
            + self.partition_key.len()
            + 2 * self.sequence_number.len()
            + self.shard_id.len()
            + 420
    }
}

/// Where a stream event comes from.
#[derive(Debug, Clone)]
pub struct StreamSource<'a> {
    /// The stream ARN (`eventSourceARN`).
    pub stream_arn: &'a str,
    /// Region (`awsRegion`).
    pub region: &'a str,
    /// The function's execution role (`invokeIdentityArn`).
    pub identity_arn: &'a str,
}

/// A Kinesis event (`{"Records": [...]}`) for `records`.
pub fn kinesis_event(records: &[KinesisRecord], src: &StreamSource<'_>) -> serde_json::Value {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key,
                    "sequenceNumber": r.sequence_number,
                    "data": base64::engine::general_purpose::STANDARD.encode(&r.data),
                    "approximateArrivalTimestamp": r.arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{}:{}", r.shard_id, r.sequence_number),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": src.identity_arn,
                "awsRegion": src.region,
                "eventSourceARN": src.stream_arn,
            })
        })
        .collect();
    json!({ "Records": records })
}

#[cfg(test)]
mod seq_tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn sequence_numbers_compare_as_numbers_and_ranges_are_inclusive() {
        assert_eq!(seq_cmp("9", "10"), Ordering::Less);
        assert_eq!(seq_cmp("000010", "10"), Ordering::Equal);
        assert_eq!(seq_cmp("49500", "49499"), Ordering::Greater);
        assert_eq!(seq_cmp("0", ""), Ordering::Equal);
        assert!(seq_in_range("10", "0010", "12"));
        assert!(seq_in_range("12", "10", "12"));
        assert!(!seq_in_range("9", "10", "12"));
        assert!(!seq_in_range("13", "10", "12"));
    }
}
