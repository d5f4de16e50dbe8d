//! The spill drain: S3 notifications of `spill/` objects (through the spill queue) → the same
//! raw archive the Kinesis path writes, with deterministic keys.
//!
//! ingest-api writes a spill object when Kinesis did not take some of a request's events in
//! time ([`caudal_core::spill`]). For each notification, in order:
//!
//! 1. the bucket must be this function's `RAW_BUCKET` and the key a spill key
//!    ([`caudal_core::keys::parse_spill_key`]); anything else is permanent (dead-letter queue);
//! 2. GetObject the spill object (shared retry policy) and read its lines (at most one
//!    request's events, [`caudal_core::spill::MAX_SPILL_LINES`]);
//! 3. give line *i* the coordinates `(spill, <id><i>)` ([`caudal_core::spill::coordinates`]) and
//!    its spill time as arrival, and store the lines as one shard batch exactly as the Kinesis
//!    path does (`write_batch`: raw object, `raw-invalid/` sibling, lake copy or deferral).
//!
//! The raw key follows from the spill object's id, so a redelivered notification (S3 delivers
//! at least once) or a drain retried after a failure overwrites the same object with the same
//! bytes; the loader's ledger loads it once. An event that reached Kinesis too (a PutRecords
//! that timed out but landed) is in two raw objects; the loader keeps one row per
//! (event id, principal) inside its dedupe window.

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::SqsBatchResponse;
use caudal_core::keys::{decode_notification_key, parse_spill_key};
use caudal_core::raw::KinesisCoords;
use caudal_core::retry::CallError;
use caudal_core::spill::{SPILL_SHARD, SpillError, coordinates, read_lines};
use caudal_core::telemetry::{Emf, Unit};
use lambda_runtime::Context;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use crate::event::SqsRecord;
use crate::input::{InRecord, RecordData, ShardBatch};
use crate::{FUNCTION_NAME, RawWriterError, State, batch_keys, write_batch};

/// Why one spill object was not drained. Every variant reports its message failed;
/// `is_retryable` says whether a redelivery can succeed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The notification names another bucket.
    #[error("spill notification names bucket {named:?}, but this function archives to {own:?}")]
    Bucket {
        /// The bucket in the notification.
        named: String,
        /// `RAW_BUCKET`.
        own: String,
    },
    /// The key or the object is not a spill object.
    #[error(transparent)]
    Spill(#[from] SpillError),
    /// A line's arrival time is not RFC 3339.
    #[error("spill line {line}: arrival {arrival:?} is not an RFC 3339 time")]
    Arrival {
        /// 0-based line.
        line: usize,
        /// The text.
        arrival: String,
    },
    /// Reading the spill object failed.
    #[error("reading {key}: {source}")]
    Read {
        /// Key.
        key: String,
        /// The S3 error.
        source: CallError,
    },
    /// The raw object (or its lake copy and deferral) was not written; retried by redelivery.
    #[error("raw object for {key} not written")]
    NotWritten {
        /// The spill key.
        key: String,
    },
    /// Building or encoding the raw object failed.
    #[error(transparent)]
    Write(#[from] RawWriterError),
}

impl DrainError {
    /// Whether a redelivery of the notification may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DrainError::Read { source, .. } => source.retryable,
            DrainError::NotWritten { .. } => true,
            _ => false,
        }
    }
}

/// Whether an SQS message body is an S3 event notification (the spill queue's messages; the
/// lake retry queue's are [`crate::lake::LakeRetry`] documents).
pub fn is_s3_notification(body: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "Records", default)]
        records: Vec<serde_json::Value>,
        #[serde(rename = "Event", default)]
        event: Option<String>,
    }
    serde_json::from_str::<Probe>(body).is_ok_and(|p| {
        p.event.as_deref() == Some("s3:TestEvent")
            || p.records.first().is_some_and(|r| r.get("s3").is_some())
    })
}

/// Drain the spill objects the messages announce; the response names the messages to
/// redeliver.
pub async fn drain(state: &State, messages: &[&SqsRecord], ctx: &Context) -> SqsBatchResponse {
    let deadline = state.config.deadline.deadline(ctx.deadline);
    let mut response = SqsBatchResponse::default();
    let (mut objects, mut lines, mut failed) = (0usize, 0usize, 0usize);
    for m in messages {
        let Ok(event) = serde_json::from_str::<S3Event>(&m.body) else {
            // `s3:TestEvent` (sent once when the notification is configured): nothing to do.
            continue;
        };
        let mut ok = true;
        for r in &event.records {
            let bucket = r.s3.bucket.name.clone().unwrap_or_default();
            let key = decode_notification_key(r.s3.object.key.as_deref().unwrap_or_default());
            match drain_object(state, &bucket, &key, deadline, ctx).await {
                Ok(n) => {
                    objects += 1;
                    lines += n;
                }
                Err(error) => {
                    ok = false;
                    tracing::warn!(
                        message_id = m.message_id.as_str(),
                        receive_count = m.receive_count,
                        key = key.as_str(),
                        retryable = error.is_retryable(),
                        error = %error,
                        "spill object not drained; left for redelivery"
                    );
                }
            }
        }
        if !ok {
            failed += 1;
            response.add_failure(m.message_id.clone());
        }
    }
    tracing::info!(
        messages = messages.len(),
        drained_objects = objects,
        drained_lines = lines,
        failed_messages = failed,
        "spill drain batch"
    );
    Emf::new(FUNCTION_NAME)
        .metric("SpillDrainedObjects", objects as f64, Unit::Count)
        .metric("SpillDrainedLines", lines as f64, Unit::Count)
        .metric("SpillDrainFailures", failed as f64, Unit::Count)
        .property("RequestId", ctx.request_id.as_str())
        .emit();
    response
}

/// Drain one spill object; returns its line count.
async fn drain_object(
    state: &State,
    bucket: &str,
    key: &str,
    deadline: Instant,
    ctx: &Context,
) -> Result<usize, DrainError> {
    let cfg = &state.config;
    if bucket != cfg.raw_bucket {
        return Err(DrainError::Bucket {
            named: bucket.to_owned(),
            own: cfg.raw_bucket.clone(),
        });
    }
    let id = parse_spill_key(key)?;
    let object = caudal_aws::s3::get_object(&state.s3, bucket, key, &cfg.retry, deadline)
        .await
        .map_err(|source| DrainError::Read {
            key: key.to_owned(),
            source,
        })?;
    let spilled = read_lines(&object.body)?;
    let mut records = Vec::with_capacity(spilled.len());
    for (i, line) in spilled.iter().enumerate() {
        let arrival =
            OffsetDateTime::parse(&line.arrival, &Rfc3339).map_err(|_| DrainError::Arrival {
                line: i,
                arrival: line.arrival.to_string(),
            })?;
        let (shard, sequence_number) = coordinates(id, i);
        records.push(InRecord {
            coords: KinesisCoords {
                shard_id: shard.into(),
                sequence_number: sequence_number.into(),
                arrival: line.arrival.clone(),
                partition_key: line.partition_key.clone(),
                sub_sequence_number: None,
            },
            arrival,
            data: RecordData::Bytes(line.envelope.get().as_bytes()),
        });
    }
    let batch = ShardBatch {
        shard_id: SPILL_SHARD,
        records,
    };
    let keys = batch_keys(&batch, cfg).map_err(RawWriterError::from)?;
    match write_batch(state, &batch, &keys, deadline, ctx).await? {
        None => Ok(batch.records.len()),
        Some(_) => Err(DrainError::NotWritten {
            key: key.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        let call = |retryable| CallError {
            retryable,
            code: if retryable {
                "SlowDown"
            } else {
                "AccessDenied"
            }
            .into(),
            message: "m".into(),
        };
        let read = |retryable| DrainError::Read {
            key: "spill/k".into(),
            source: call(retryable),
        };
        assert!(read(true).is_retryable());
        assert!(!read(false).is_retryable());
        assert!(DrainError::NotWritten { key: "k".into() }.is_retryable());
        let bucket = DrainError::Bucket {
            named: "a".into(),
            own: "b".into(),
        };
        assert!(!bucket.is_retryable());
        assert!(!DrainError::Spill(SpillError::Count(0)).is_retryable());
    }

    #[test]
    fn notifications_are_told_from_lake_retry_messages() {
        assert!(is_s3_notification(
            r#"{"Records":[{"eventSource":"aws:s3","s3":{"bucket":{"name":"b"},"object":{"key":"spill/x"}}}]}"#
        ));
        assert!(is_s3_notification(
            r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#
        ));
        assert!(!is_s3_notification(
            r#"{"v":1,"bucket":"b","key":"raw/x","lines":[[0,3]]}"#
        ));
        assert!(!is_s3_notification(r#"{"Records":[]}"#));
        assert!(!is_s3_notification(r#"{"Records":[{"kinesis":{}}]}"#));
        assert!(!is_s3_notification("not json"));
        assert!(!is_s3_notification(r#"{"Event":"s3:ObjectCreated:Put"}"#));
    }
}
