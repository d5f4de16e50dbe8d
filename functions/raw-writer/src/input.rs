//! The input side: a Kinesis event as Lambda delivers it, viewed as per-shard batches.
//!
//! Lambda hands the function `{"Records":[{"kinesis":{…,"data":"<base64>",
//! "approximateArrivalTimestamp":1764100518.25},"eventID":"<shard-id>:<sequence-number>",…}]}`.
//! [`KinesisBatchEvent`] reads exactly that JSON (the fields `aws_lambda_events`' `KinesisEvent`
//! reads, by the same names) with two deliberate differences:
//!
//! * `data` that is not valid base64 does not make the whole event unreadable: the record is kept
//!   as [`Payload::Undecodable`] and archived under `raw-invalid/`;
//! * `approximateArrivalTimestamp` is read exactly. `aws_lambda_events` 1.2 splits the float's
//!   decimal text and reads the fraction as milliseconds, so `…18.25` becomes `…18.025` (and
//!   `…18.5` becomes `…18.005`); the arrival written into every raw line must be the real one.
//!
//! Each record's base64 is decoded while the event is deserialized, one record at a time, so the
//! encoded text is never held for the whole batch. [`group`] then turns the records into
//! [`ShardBatch`]es of borrowed [`InRecord`] views: nothing more is copied, so peak memory stays
//! at one decoded event plus the compressed output.

use base64::Engine as _;
use caudal_core::pack::{self, PackError};
use caudal_core::raw::KinesisCoords;
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

/// Why an event cannot be processed at all. Always permanent: the event is not what Lambda
/// sends for a Kinesis stream, so retrying the same bytes cannot help.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// The payload is neither a Kinesis event nor an SQS event ([`crate::event`]).
    #[error("payload is not a Kinesis event or an SQS event: {0}")]
    Shape(String),
    /// A record has no `eventID` of the form `<shard-id>:<sequence-number>`.
    #[error("record {index} has no usable eventID (expected \"<shard-id>:<sequence-number>\")")]
    MissingShard {
        /// Position of the record in the event.
        index: usize,
    },
    /// A shard id that is not `[A-Za-z0-9_-]{1,128}` (it becomes part of an S3 key).
    #[error("record {index} has an invalid shard id {shard:?}")]
    BadShard {
        /// Position of the record in the event.
        index: usize,
        /// The offending value.
        shard: String,
    },
    /// A sequence number that is not 1–128 decimal digits: it could be neither keyed nor
    /// reported back in `batchItemFailures`.
    #[error("record {index} has an invalid sequence number {value:?}")]
    BadSequence {
        /// Position of the record in the event.
        index: usize,
        /// The offending value.
        value: String,
    },
    /// An arrival timestamp that is negative or out of range.
    #[error("record {index} has an invalid arrival timestamp {value}")]
    BadArrival {
        /// Position of the record in the event.
        index: usize,
        /// The offending value (seconds since the epoch).
        value: String,
    },
}

/// A Kinesis event as Lambda delivers it to a stream consumer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct KinesisBatchEvent {
    /// The records, in the order Lambda delivered them (stream order).
    #[serde(rename = "Records")]
    pub records: Vec<KinesisBatchRecord>,
}

/// One record of the event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KinesisBatchRecord {
    /// `<shard-id>:<sequence-number>`.
    #[serde(default, rename = "eventID")]
    pub event_id: Option<String>,
    /// The Kinesis part.
    pub kinesis: KinesisData,
}

/// The `kinesis` object of a record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisData {
    /// Approximate arrival time, seconds since the epoch (fractional: milliseconds).
    #[serde(deserialize_with = "seconds")]
    pub approximate_arrival_timestamp: f64,
    /// The record's data, decoded.
    pub data: Payload,
    /// Partition key.
    #[serde(default)]
    pub partition_key: String,
    /// Sequence number.
    #[serde(default)]
    pub sequence_number: String,
}

/// A number, or a number in a string (both forms appear in hand-made events).
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }
    match Num::deserialize(d)? {
        Num::F(f) => Ok(f),
        Num::S(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// A record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Base64-decoded bytes.
    Decoded(Vec<u8>),
    /// Text that is not valid base64, as delivered, with the reason.
    Undecodable {
        /// The `data` text as delivered.
        text: String,
        /// Why it could not be decoded.
        reason: String,
    },
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(
            match base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) {
                Ok(bytes) => Payload::Decoded(bytes),
                Err(e) => Payload::Undecodable {
                    text,
                    reason: format!(
                        "data is not valid base64 (data_b64 holds the text as delivered): {e}"
                    ),
                },
            },
        )
    }
}

impl KinesisBatchEvent {
    /// Decode a payload from JSON text (what the Lambda runtime receives).
    pub fn parse_str(payload: &str) -> Result<Self, EventError> {
        serde_json::from_str(payload).map_err(|e| EventError::Shape(e.to_string()))
    }

    /// Decode a payload from a JSON value (what the local stack passes to `invoke`).
    pub fn parse_value(payload: &serde_json::Value) -> Result<Self, EventError> {
        Self::deserialize(payload).map_err(|e| EventError::Shape(e.to_string()))
    }

    /// Borrowed views of the records, in event order.
    pub fn records(&self) -> Vec<RecordRef<'_>> {
        self.records
            .iter()
            .map(|r| RecordRef {
                event_id: r.event_id.as_deref(),
                arrival: r.kinesis.approximate_arrival_timestamp,
                partition_key: &r.kinesis.partition_key,
                sequence_number: &r.kinesis.sequence_number,
                data: match &r.kinesis.data {
                    Payload::Decoded(bytes) => RecordData::Bytes(bytes),
                    Payload::Undecodable { text, reason } => RecordData::Undecodable {
                        original: text.as_bytes(),
                        reason,
                    },
                },
            })
            .collect()
    }
}

/// One record of the event, not yet validated.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    event_id: Option<&'a str>,
    arrival: f64,
    partition_key: &'a str,
    sequence_number: &'a str,
    data: RecordData<'a>,
}

/// A record's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordData<'a> {
    /// The decoded Kinesis record data.
    Bytes(&'a [u8]),
    /// The `data` field was not valid base64; `original` is the text as delivered.
    Undecodable {
        /// The `data` text as Lambda delivered it.
        original: &'a [u8],
        /// Why it could not be decoded.
        reason: &'a str,
    },
    /// The record has the packed form's magic but is not a readable packed record.
    Unpackable {
        /// The record data.
        bytes: &'a [u8],
        /// What is wrong with it.
        error: PackError,
    },
}

impl RecordData<'_> {
    /// Number of payload bytes.
    pub fn len(&self) -> usize {
        match self {
            RecordData::Bytes(b) | RecordData::Unpackable { bytes: b, .. } => b.len(),
            RecordData::Undecodable { original, .. } => original.len(),
        }
    }

    /// True when the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One validated record: its stream coordinates and payload.
#[derive(Debug, Clone)]
pub struct InRecord<'a> {
    /// Shard, sequence number, arrival time (formatted once) and partition key.
    pub coords: KinesisCoords<'a>,
    /// Approximate arrival time.
    pub arrival: OffsetDateTime,
    /// The payload.
    pub data: RecordData<'a>,
}

impl InRecord<'_> {
    /// The record's sequence number.
    pub fn seq(&self) -> &str {
        &self.coords.sequence_number
    }
}

/// The records of one shard, in stream (sequence-number) order. Never empty.
#[derive(Debug, Clone)]
pub struct ShardBatch<'a> {
    /// The shard the records came from.
    pub shard_id: &'a str,
    /// Its records, ascending by sequence number.
    pub records: Vec<InRecord<'a>>,
}

impl ShardBatch<'_> {
    /// The first (lowest) sequence number.
    pub fn first_seq(&self) -> &str {
        self.records.first().map(InRecord::seq).unwrap_or_default()
    }

    /// The last (highest) sequence number.
    pub fn last_seq(&self) -> &str {
        self.records.last().map(InRecord::seq).unwrap_or_default()
    }
}

pub use caudal_core::stream::seq_cmp;

/// Seconds since the epoch (millisecond precision, as Kinesis reports it) to a UTC time.
fn arrival_time(seconds: f64) -> Option<OffsetDateTime> {
    // NaN and infinities fall outside the range too.
    if !(0.0..=253_402_300_799.0).contains(&seconds) {
        return None;
    }
    // f64 holds today's epoch milliseconds exactly enough for rounding to recover them.
    let millis = (seconds * 1000.0).round() as i128;
    OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000).ok()
}

fn valid_shard(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_seq(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Append `rec`, or the events of a packed record ([`caudal_core::pack`]): each keeps the
/// record's shard, sequence number and arrival, with its own partition key and sub-sequence
/// number. A record with the packed form's magic that cannot be unpacked stays whole, as
/// [`RecordData::Unpackable`], for `raw-invalid/`.
fn unpack_into<'a>(out: &mut Vec<InRecord<'a>>, rec: InRecord<'a>) {
    let RecordData::Bytes(bytes) = rec.data else {
        out.push(rec);
        return;
    };
    if !pack::is_aggregate(bytes) {
        out.push(rec);
        return;
    }
    match pack::unpack(bytes) {
        Ok(users) => out.extend(users.into_iter().enumerate().map(|(i, u)| InRecord {
            coords: KinesisCoords {
                partition_key: u.partition_key.into(),
                // At most 1 MiB of record, so at most ~300k user records of ≥ 3 bytes.
                sub_sequence_number: Some(u32::try_from(i).unwrap_or(u32::MAX)),
                ..rec.coords.clone()
            },
            arrival: rec.arrival,
            data: RecordData::Bytes(u.data),
        })),
        Err(error) => out.push(InRecord {
            data: RecordData::Unpackable { bytes, error },
            ..rec
        }),
    }
}

/// Validate every record and group them by shard (shards in order of first appearance; records
/// of each shard sorted by sequence number, which is the order Lambda delivers them in).
///
/// Lambda sends one shard per invocation; several shards are handled anyway, one object each.
/// Any record that cannot be keyed or reported fails the whole event before anything is written.
pub fn group<'a>(records: &[RecordRef<'a>]) -> Result<Vec<ShardBatch<'a>>, EventError> {
    let mut batches: Vec<ShardBatch<'a>> = Vec::new();
    for (index, r) in records.iter().enumerate() {
        let shard = r
            .event_id
            .and_then(|id| id.split_once(':'))
            .map(|(shard, _)| shard)
            .ok_or(EventError::MissingShard { index })?;
        if !valid_shard(shard) {
            return Err(EventError::BadShard {
                index,
                shard: shard.to_owned(),
            });
        }
        if !valid_seq(r.sequence_number) {
            return Err(EventError::BadSequence {
                index,
                value: r.sequence_number.to_owned(),
            });
        }
        let arrival = arrival_time(r.arrival).ok_or_else(|| EventError::BadArrival {
            index,
            value: r.arrival.to_string(),
        })?;
        let rec = InRecord {
            coords: KinesisCoords {
                shard_id: shard.into(),
                sequence_number: r.sequence_number.into(),
                arrival: caudal_core::envelope::format_timestamp(arrival).into(),
                partition_key: r.partition_key.into(),
                sub_sequence_number: None,
            },
            arrival,
            data: r.data,
        };
        let batch = match batches.iter().position(|b| b.shard_id == shard) {
            Some(i) => &mut batches[i],
            None => {
                batches.push(ShardBatch {
                    shard_id: shard,
                    records: Vec::new(),
                });
                let last = batches.len() - 1;
                &mut batches[last]
            }
        };
        unpack_into(&mut batch.records, rec);
    }
    for b in &mut batches {
        // Stable and a no-op for what Lambda sends; keeps keys and "lowest failed" exact for
        // hand-built events too.
        b.records.sort_by(|x, y| seq_cmp(x.seq(), y.seq()));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    fn event(records: &[(&str, &str, &str)]) -> serde_json::Value {
        let recs: Vec<serde_json::Value> = records
            .iter()
            .map(|(event_id, seq, data)| {
                serde_json::json!({
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": "pk",
                        "sequenceNumber": seq,
                        "data": data,
                        "approximateArrivalTimestamp": 1_764_100_518.25
                    },
                    "eventSource": "aws:kinesis",
                    "eventID": event_id,
                })
            })
            .collect();
        serde_json::json!({ "Records": recs })
    }

    #[test]
    fn sequence_numbers_compare_numerically() {
        assert_eq!(seq_cmp("9", "10"), Ordering::Less);
        assert_eq!(seq_cmp("0010", "10"), Ordering::Equal);
        assert_eq!(seq_cmp("496", "495"), Ordering::Greater);
    }

    #[test]
    fn groups_by_shard_and_sorts() {
        let v = event(&[
            ("shardId-1:12", "12", "YQ=="),
            ("shardId-2:5", "5", "Yg=="),
            ("shardId-1:9", "9", "Yw=="),
        ]);
        let input = KinesisBatchEvent::parse_value(&v).unwrap();
        let refs = input.records();
        let batches = group(&refs).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].shard_id, "shardId-1");
        assert_eq!(batches[0].first_seq(), "9");
        assert_eq!(batches[0].last_seq(), "12");
        assert_eq!(batches[0].records[0].data, RecordData::Bytes(b"c"));
        assert_eq!(
            batches[0].records[0].coords.arrival,
            "2025-11-25T19:55:18.250Z"
        );
        assert_eq!(batches[1].records.len(), 1);
    }

    #[test]
    fn undecodable_data_is_kept_not_fatal() {
        let v = event(&[("s-1:1", "1", "YQ=="), ("s-1:2", "2", "%%% not base64")]);
        let text = v.to_string();
        for input in [
            KinesisBatchEvent::parse_value(&v).unwrap(),
            KinesisBatchEvent::parse_str(&text).unwrap(),
        ] {
            let refs = input.records();
            let batches = group(&refs).unwrap();
            let recs = &batches[0].records;
            assert_eq!(recs[0].data, RecordData::Bytes(b"a"));
            match recs[1].data {
                RecordData::Undecodable { original, reason } => {
                    assert_eq!(original, b"%%% not base64");
                    assert!(reason.contains("base64"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unusable_coordinates_fail_the_event() {
        let cases = [
            (event(&[("", "1", "YQ==")]), "eventID"),
            (event(&[("../x:1", "1", "YQ==")]), "shard"),
            (event(&[("s-1:1", "", "YQ==")]), "sequence"),
            (event(&[("s-1:1", "12a", "YQ==")]), "sequence"),
        ];
        for (v, what) in cases {
            let input = KinesisBatchEvent::parse_value(&v).unwrap();
            let err = group(&input.records()).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        }
        assert!(matches!(
            KinesisBatchEvent::parse_value(&serde_json::json!({"hello": 1})),
            Err(EventError::Shape(_))
        ));
    }

    #[test]
    fn arrival_keeps_its_milliseconds() {
        for (secs, text) in [
            (
                serde_json::json!(1_764_100_518.25),
                "2025-11-25T19:55:18.250Z",
            ),
            (
                serde_json::json!(1_764_100_518.5),
                "2025-11-25T19:55:18.500Z",
            ),
            (
                serde_json::json!(1_764_100_518.987),
                "2025-11-25T19:55:18.987Z",
            ),
            (
                serde_json::json!(1_764_100_518.025),
                "2025-11-25T19:55:18.025Z",
            ),
            (
                serde_json::json!(1_764_100_518u64),
                "2025-11-25T19:55:18.000Z",
            ),
            (
                serde_json::json!("1764100518.1"),
                "2025-11-25T19:55:18.100Z",
            ),
        ] {
            let v = serde_json::json!({"Records": [{"eventID": "s-1:1", "kinesis": {
                "sequenceNumber": "1", "data": "", "approximateArrivalTimestamp": secs}}]});
            let input = KinesisBatchEvent::parse_value(&v).unwrap();
            let batches = group(&input.records()).unwrap();
            assert_eq!(batches[0].records[0].coords.arrival, text);
        }
        let v = serde_json::json!({"Records": [{"eventID": "s-1:1", "kinesis": {
            "sequenceNumber": "1", "data": "", "approximateArrivalTimestamp": -5}}]});
        let input = KinesisBatchEvent::parse_value(&v).unwrap();
        assert!(matches!(
            group(&input.records()),
            Err(EventError::BadArrival { index: 0, .. })
        ));
    }
}
