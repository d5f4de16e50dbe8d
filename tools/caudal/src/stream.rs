//! Reading the stream back: every record of a shard from a time on (`reconcile` counts what
//! the API accepted), or one sequence range (`redrive raw-failures` recovers a failed batch).
//! GetRecords is limited to five calls per second per shard; the reader paces itself and the
//! SDK's retries absorb throttling.

use std::time::Duration;

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use time::OffsetDateTime;

/// Kinesis refused or failed (after the SDK's retries).
#[derive(Debug, thiserror::Error)]
#[error("Kinesis {operation} ({stream} {shard}): {reason}")]
pub struct StreamError {
    /// The call.
    pub operation: &'static str,
    /// Stream.
    pub stream: String,
    /// Shard (empty for stream-wide calls).
    pub shard: String,
    /// Why.
    pub reason: String,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// Shard.
    pub shard: String,
    /// Sequence number.
    pub seq: String,
    /// Partition key.
    pub partition_key: String,
    /// Data.
    pub data: Vec<u8>,
    /// ApproximateArrivalTimestamp, epoch seconds with milliseconds.
    pub arrival: f64,
}

impl Read {
    /// The arrival time.
    pub fn arrival_time(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos((self.arrival * 1e3).round() as i128 * 1_000_000)
            .ok()
    }
}

/// Pause between GetRecords calls on one shard (the limit is 5 per second).
const PACE: Duration = Duration::from_millis(210);
/// Records per GetRecords call.
const LIMIT: i32 = 10_000;

/// The stream's shards (open and closed).
pub async fn shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<String>, StreamError> {
    let err = |reason: String| StreamError {
        operation: "ListShards",
        stream: stream.to_owned(),
        shard: String::new(),
        reason,
    };
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => kinesis.list_shards().next_token(t),
            None => kinesis.list_shards().stream_name(stream),
        };
        let page = req
            .send()
            .await
            .map_err(|e| err(caudal_aws::call_error(&e).to_string()))?;
        out.extend(page.shards().iter().map(|s| s.shard_id().to_owned()));
        match page.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    Ok(out)
}

/// Where to start reading.
#[derive(Debug, Clone)]
pub enum From {
    /// The first record that arrived at or after this time.
    Time(OffsetDateTime),
    /// This sequence number (or, when it is no longer retained, the oldest record kept).
    Sequence(String),
}

/// Reads `shard` from `from` until `stop` says so or the shard has nothing newer, handing every
/// record to `each`; `stop(record)` is asked before a record is handed over.
pub async fn read(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    from: &From,
    mut stop: impl FnMut(&Read) -> bool,
    mut each: impl FnMut(Read),
) -> Result<(), StreamError> {
    let err = |operation: &'static str, reason: String| StreamError {
        operation,
        stream: stream.to_owned(),
        shard: shard.to_owned(),
        reason,
    };
    let base = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    let first = match from {
        From::Time(t) => {
            base.shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(
                    (t.unix_timestamp_nanos() / 1_000_000) as i64,
                ))
                .send()
                .await
        }
        From::Sequence(s) => {
            let at = base
                .clone()
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(s.trim_start_matches('0'))
                .send()
                .await;
            match at {
                Ok(o) => Ok(o),
                // A sequence number past the trim horizon: start at the oldest record kept
                // (the caller sees what is missing).
                Err(e) if caudal_aws::call_error(&e).code == "InvalidArgumentException" => {
                    base.shard_iterator_type(ShardIteratorType::TrimHorizon)
                        .send()
                        .await
                }
                Err(e) => Err(e),
            }
        }
    }
    .map_err(|e| err("GetShardIterator", caudal_aws::call_error(&e).to_string()))?;
    let mut iterator = first.shard_iterator().map(str::to_owned);
    while let Some(it) = iterator.take() {
        let out = kinesis
            .get_records()
            .shard_iterator(it)
            .limit(LIMIT)
            .send()
            .await
            .map_err(|e| err("GetRecords", caudal_aws::call_error(&e).to_string()))?;
        for r in out.records() {
            let read = Read {
                shard: shard.to_owned(),
                seq: r.sequence_number().to_owned(),
                partition_key: r.partition_key().unwrap_or_default().to_owned(),
                data: r.data().as_ref().to_vec(),
                arrival: r
                    .approximate_arrival_timestamp()
                    .map_or(0.0, |t| t.as_secs_f64()),
            };
            if stop(&read) {
                return Ok(());
            }
            each(read);
        }
        let caught_up = out.records().is_empty() && out.millis_behind_latest().unwrap_or(0) == 0;
        if caught_up {
            break;
        }
        iterator = out.next_shard_iterator().map(str::to_owned);
        tokio::time::sleep(PACE).await;
    }
    Ok(())
}
