//! # raw-writer — Kinesis batch → untouched raw archive in S3 (+ Firehose lake copy)
//!
//! One invocation receives either one shard's batch from the Kinesis event source mapping
//! (`ReportBatchItemFailures`, bisect, bounded retries, on-failure destination) or messages from
//! the lake retry queue (an SQS event source with `ReportBatchItemFailures`); [`event`] tells the
//! two apart. For a Kinesis batch it:
//!
//! 1. writes **one** compressed NDJSON object under `raw/` holding every valid record, in stream
//!    order, each line = the envelope verbatim + its Kinesis coordinates; records that are not
//!    envelopes go to a sibling object under `raw-invalid/` with the reason (a batch with no valid
//!    record writes only that one; one with no invalid record writes no `raw-invalid/` object).
//!    Keys come from the batch alone ([`caudal_core::keys::raw_key`]), so a re-delivered batch
//!    overwrites its object;
//! 2. forwards the valid lines to Firehose, packed into ≤ 1,000 KiB records ([`forward`](mod@forward));
//! 3. defers the lines Firehose did not take to the lake retry queue ([`lake`]): one small
//!    message naming the raw object and the line ranges;
//! 4. answers with `batchItemFailures` naming the lowest sequence number that is not safely
//!    stored, and one EMF metrics line per batch.
//!
//! For lake retry messages it reads the named lines back from the raw object and forwards them
//! with the same packer ([`reforward`]).
//!
//! Modules: [`event`] (the two invocation shapes), [`input`] (Kinesis event decoding, grouping by
//! shard), [`encode`] (streaming compression, invalid routing), [`forward`](mod@forward) (Firehose packing and
//! sending, for both paths), [`lake`] (the lake retry message), [`defer`](mod@defer) (sending it for the
//! lines Firehose did not take), [`reforward`] (the retry handler). `main.rs` only wires them.
//!
//! ## Why nothing is lost, and why the lake never holds the shard (the failure policy)
//! * Success is reported for a record once S3 acknowledged the object holding it **and** its
//!   line is either in Firehose or durably deferred. The raw archive is the pipeline's memory;
//!   the lake is a copy of it that can always be rebuilt from it, so the archive never waits on
//!   the copy. Anything else is reported in `batchItemFailures`; Lambda checkpoints *below* the
//!   lowest reported sequence number, so every unacknowledged record is delivered again.
//! * S3 failure after retries → the batch's first sequence number is reported (whole batch again):
//!   nothing may be checkpointed past an unwritten object. Firehose is not called then (it would
//!   only collect duplicates).
//! * Firehose failure after retries (or no answer within the time it is given) → **not** a batch
//!   item failure. Reporting it would stall the shard for as long as Firehose is out (iterator
//!   age grows for everyone) and every redelivery of the shifted batch would write another,
//!   overlapping raw object — extra objects and extra duplicates for the loader, all for a copy.
//!   Instead one SQS message per raw object names the lines still missing from the lake
//!   (`LAKE_RETRY_QUEUE_URL`, [`lake::LakeRetry`]: bucket, key, 1-based line ranges — never
//!   payload bytes, so it stays far below SQS's 256 KiB) and the batch is done. Firehose gets
//!   the invocation's retry budget minus [`Config::lake_defer_reserve`], so the deferral always
//!   has time to be sent.
//! * Only if that SendMessage fails too (after its own retries), or no retry queue is
//!   configured, is the lowest sequence number whose line is missing from the lake reported —
//!   the pre-deferral behaviour, the one way left to keep the lines: the re-delivered batch
//!   rewrites its raw object(s) (idempotent for the same batch, an overlapping object for a
//!   shifted one) and forwards again. The archive can only gain duplicates, never lose a record;
//!   the loader removes duplicates by event id. `LakeDeferFailures` counts these lines.
//! * The lake retry queue is consumed by this same function ([`reforward`]); a message that
//!   still fails is redelivered after the queue's visibility timeout and, after
//!   `maxReceiveCount` receives, lands in the dead-letter queue, from which a redrive starts it
//!   again. The raw object is kept forever, so a deferred line can always be forwarded later.
//!   The lake is therefore at-least-once: a line may reach it twice, never zero times.
//! * A payload that is not a usable event (no shard, non-numeric sequence numbers, a mix of
//!   Kinesis and SQS records) is an error for the whole invocation: Lambda retries it, bisects
//!   it and finally sends its metadata to the on-failure destination — never a silent success.
//! * Invalid records are archived under `raw-invalid/` (counted, never dropped) and are not
//!   forwarded to the lake. A line larger than one Firehose record cannot be forwarded at all; it
//!   is counted and logged but neither reported nor deferred, because retrying could never
//!   succeed and the raw archive already holds it.
//! * Retries are bounded by the Lambda deadline minus a margin, so the function always answers
//!   with `batchItemFailures` instead of being killed by the timeout mid-write. They are caudal's
//!   alone: the clients come from [`caudal_aws::clients`] with the SDK's retries off and a
//!   timeout per attempt, so a hung call is one retryable attempt, not a lost budget.
//!
//! ## Why one function for both sources
//! The retry path needs exactly the writer's configuration (bucket, codec, stream, packing
//! limits, retry policy) and its forwarder; a second function would duplicate the environment
//! and the role for one SQS event source. Its pressure on Firehose is capped by the event
//! source's `MaximumConcurrency`, not by the function's. The price is that the writer's role also
//! reads `raw/` and consumes its own retry queue.

pub mod defer;
pub mod drain;
pub mod encode;
pub mod event;
pub mod forward;
pub mod input;
pub mod lake;
pub mod reforward;

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use aws_lambda_events::event::streams::KinesisEventResponse;
use bytes::Bytes;
use caudal_aws::clients::ClientFactory;
use caudal_core::codec::Codec;
use caudal_core::config::{ConfigError, Env};
use caudal_core::keys::{BatchId, KeyError, raw_invalid_key, raw_key};
use caudal_core::retry::{CallError, DeadlinePolicy, RetryPolicy};
use caudal_core::telemetry::{Emf, Unit};
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use tokio::time::Instant;

use crate::defer::{LakeDeferral, defer, firehose_deadline};
use crate::encode::{EncodedBatch, encode_batch};
use crate::event::{RawWriterEvent, RawWriterResponse, SqsRecord};
use crate::forward::{BatchLines, FirehoseSink, ForwardOutcome, PackLimits, forward, plan};
use crate::input::{EventError, RecordRef, ShardBatch, group};

/// Version of the raw-archive line format (docs/CONTRACTS.md §2), written to object metadata.
pub const RAW_FORMAT_VERSION: u32 = 1;
/// Function name used as the metrics dimension.
pub const FUNCTION_NAME: &str = "raw-writer";

/// The function's configuration (docs/CONTRACTS.md §5), read once at cold start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `RAW_BUCKET`: bucket for `raw/` and `raw-invalid/`.
    pub raw_bucket: String,
    /// `COMPRESSION`: `zstd` (default, level 1: [`caudal_core::codec::RAW_DEFAULT`]), `gzip`
    /// (level 6), or either with a level (`zstd-3`, `gzip-1`).
    pub codec: Codec,
    /// `RAW_KEY_REGION`: the region named in raw keys (`raw/…/hr=HH/region=<r>/…`); empty
    /// (`None`) in the warehouse's home region, so that region's keys stay as they always were.
    /// A second region's stream has the same shard ids as the first and may hand out the same
    /// sequence numbers, and the loader knows an object by its key
    /// ([`caudal_core::keys::BatchId::region`]).
    pub key_region: Option<String>,
    /// `FIREHOSE_STREAM_NAME`: the lake delivery stream; `None` (empty) disables forwarding.
    pub firehose_stream: Option<String>,
    /// `LAKE_RETRY_QUEUE_URL`: where lines Firehose did not take are deferred ([`lake`]).
    /// Required when forwarding is on; `None` (only when built in code) reports them in
    /// `batchItemFailures` instead.
    pub lake_retry_queue: Option<String>,
    /// Time of the retry budget kept for deferring to the lake retry queue: Firehose is given
    /// the rest (at most half of what is left after S3), so a Firehose outage that eats every
    /// retry still leaves room for the SendMessage that releases the batch.
    pub lake_defer_reserve: Duration,
    /// Firehose packing/request limits (the service limits unless a test lowers them).
    pub pack: PackLimits,
    /// Retry policy for S3 and Firehose.
    pub retry: RetryPolicy,
    /// The retry deadline of each invocation: 5 s kept free before the Lambda deadline to
    /// build and return the response; 60 s when the invocation has no deadline (local runs,
    /// tests).
    pub deadline: DeadlinePolicy,
}

impl Config {
    /// A configuration with defaults for everything but the bucket.
    pub fn new(raw_bucket: impl Into<String>) -> Self {
        Self {
            raw_bucket: raw_bucket.into(),
            codec: caudal_core::codec::RAW_DEFAULT,
            key_region: None,
            firehose_stream: None,
            lake_retry_queue: None,
            lake_defer_reserve: Duration::from_secs(10),
            pack: PackLimits::default(),
            retry: RetryPolicy::default(),
            deadline: DeadlinePolicy {
                margin: Duration::from_secs(5),
                fallback: Duration::from_secs(60),
                budget: None,
            },
        }
    }

    /// Read `RAW_BUCKET` (required), `COMPRESSION`, `RAW_KEY_REGION`, `FIREHOSE_STREAM_NAME`
    /// and `LAKE_RETRY_QUEUE_URL` (required when `FIREHOSE_STREAM_NAME` is set: without it a
    /// Firehose outage would stall the shard again).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut cfg = Self::new(env.required("RAW_BUCKET")?);
        cfg.codec = env.parse_or("COMPRESSION", caudal_core::codec::RAW_DEFAULT)?;
        cfg.key_region = env.region("RAW_KEY_REGION")?;
        cfg.firehose_stream = env.optional("FIREHOSE_STREAM_NAME");
        cfg.lake_retry_queue = match cfg.firehose_stream {
            Some(_) => Some(env.required("LAKE_RETRY_QUEUE_URL")?),
            None => env.optional("LAKE_RETRY_QUEUE_URL"),
        };
        Ok(cfg)
    }
}

/// Everything the handler needs, built once per cold start.
#[derive(Debug, Clone)]
pub struct State {
    /// Configuration.
    pub config: Config,
    /// S3 client.
    pub s3: aws_sdk_s3::Client,
    /// Firehose client (unused when forwarding is off).
    pub firehose: aws_sdk_firehose::Client,
    /// SQS client for the lake retry queue (unused without one).
    pub sqs: aws_sdk_sqs::Client,
}

impl State {
    /// Bundle configuration and clients: the [`ClientFactory`]'s in Lambda and the local stack
    /// ([`start`]; SDK retries off, so [`Config::retry`] is the only retry loop and each attempt
    /// is bounded), mocked clients in tests.
    pub fn new(
        config: Config,
        s3: aws_sdk_s3::Client,
        firehose: aws_sdk_firehose::Client,
        sqs: aws_sdk_sqs::Client,
    ) -> Self {
        Self {
            config,
            s3,
            firehose,
            sqs,
        }
    }
}

/// Everything a cold start builds, from the environment and the client factory: what `main`
/// runs in Lambda and the local stack runs in process.
pub fn start(env: &Env, clients: &ClientFactory) -> Result<State, ConfigError> {
    Ok(State::new(
        Config::from_env(env)?,
        clients.s3(),
        clients.firehose(),
        clients.sqs(),
    ))
}

/// Why an invocation failed as a whole (S3, Firehose and SQS failures are not errors: they
/// become `batchItemFailures` or lake retry messages).
#[derive(Debug, thiserror::Error)]
pub enum RawWriterError {
    /// The payload is not a usable Kinesis event. Permanent.
    #[error(transparent)]
    Event(#[from] EventError),
    /// A key could not be built from the batch. Permanent.
    #[error("cannot name the raw object: {0}")]
    Key(#[from] KeyError),
    /// Compressing into memory failed. Permanent for these bytes.
    #[error("encoding failed: {0}")]
    Encode(#[from] std::io::Error),
}

impl RawWriterError {
    /// Whether retrying the same invocation may succeed. None of these can: Lambda's bounded
    /// retries and the on-failure destination take over.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

impl From<RawWriterError> for Diagnostic {
    fn from(e: RawWriterError) -> Self {
        let error_type = match &e {
            RawWriterError::Event(_) => "RawWriter.MalformedEvent",
            RawWriterError::Key(_) => "RawWriter.Key",
            RawWriterError::Encode(_) => "RawWriter.Encode",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// The handler: a Kinesis batch or lake retry messages in, `batchItemFailures` out. `main`
/// registers it with the runtime, which deserializes the invocation payload into
/// [`RawWriterEvent`].
pub async fn handler(
    state: &State,
    event: LambdaEvent<RawWriterEvent>,
) -> Result<RawWriterResponse, RawWriterError> {
    match &event.payload {
        RawWriterEvent::Kinesis(batch) => process(state, &batch.records(), &event.context)
            .await
            .map(RawWriterResponse::Kinesis),
        RawWriterEvent::LakeRetry(messages) => {
            // One function, two queues: spill notifications (S3 events) and lake retry messages.
            let (spills, retries): (Vec<&SqsRecord>, Vec<&SqsRecord>) = messages
                .iter()
                .partition(|m| drain::is_s3_notification(&m.body));
            let mut response = SqsBatchResponse::default();
            if !spills.is_empty() {
                let drained = drain::drain(state, &spills, &event.context).await;
                response
                    .batch_item_failures
                    .extend(drained.batch_item_failures);
            }
            if !retries.is_empty() {
                let retried = reforward::reforward(state, &retries, &event.context).await;
                response
                    .batch_item_failures
                    .extend(retried.batch_item_failures);
            }
            Ok(RawWriterResponse::LakeRetry(response))
        }
    }
}

/// Run the function on the JSON Lambda would send (used by the local stack) and return the JSON
/// the runtime would answer.
pub async fn invoke(
    state: &State,
    payload: serde_json::Value,
    ctx: Context,
) -> Result<serde_json::Value, lambda_runtime::Error> {
    let event = RawWriterEvent::parse_value(&payload)?;
    drop(payload);
    let response = handler(state, LambdaEvent::new(event, ctx)).await?;
    Ok(serde_json::to_value(response)?)
}

async fn process(
    state: &State,
    records: &[RecordRef<'_>],
    ctx: &Context,
) -> Result<KinesisEventResponse, RawWriterError> {
    let deadline = state.config.deadline.deadline(ctx.deadline);
    let batches = group(records)?;
    // Name every object before writing any, so a bad key cannot leave a half-written invocation.
    let mut keyed = Vec::with_capacity(batches.len());
    for batch in &batches {
        let keys = batch_keys(batch, &state.config)?;
        keyed.push((batch, keys));
    }
    let mut response = KinesisEventResponse::default();
    for (batch, keys) in keyed {
        if let Some(seq) = write_batch(state, batch, &keys, deadline, ctx).await? {
            response.add_failure(seq);
        }
    }
    Ok(response)
}

/// The two object keys of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKeys {
    /// `raw/…` key.
    pub raw: String,
    /// `raw-invalid/…` key.
    pub invalid: String,
}

/// Keys of a batch: from its shard, first/last sequence numbers and first arrival only, with
/// the configured codec suffix and key region.
pub fn batch_keys(batch: &ShardBatch<'_>, config: &Config) -> Result<BatchKeys, KeyError> {
    let codec = config.codec;
    let first_arrival = batch
        .records
        .first()
        .map_or(time::OffsetDateTime::UNIX_EPOCH, |r| r.arrival);
    let id = BatchId {
        region: config.key_region.as_deref(),
        shard_id: batch.shard_id,
        first_seq: batch.first_seq(),
        last_seq: batch.last_seq(),
        first_arrival,
    };
    Ok(BatchKeys {
        raw: raw_key(&id, codec.suffix())?,
        invalid: raw_invalid_key(&id, codec.suffix())?,
    })
}

/// The stored object's Content-Type. Deliberately **no** `Content-Encoding`: with it, S3 and
/// HTTP clients would transparently decompress on GET, and tools that pick the codec from the
/// key suffix (Redshift COPY, Spark, our loader) would get bytes that no longer match it.
pub fn content_type(codec: Codec) -> &'static str {
    match codec {
        Codec::Gzip { .. } => "application/gzip",
        Codec::Zstd { .. } => "application/zstd",
    }
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Gzip { .. } => "gzip",
        Codec::Zstd { .. } => "zstd",
    }
}

/// Object metadata (`x-amz-meta-*`) for a batch object.
pub fn object_metadata(
    batch: &ShardBatch<'_>,
    codec: Codec,
    records: usize,
    invalid: usize,
) -> Vec<(String, String)> {
    vec![
        ("record-count".into(), records.to_string()),
        ("invalid-count".into(), invalid.to_string()),
        ("shard-id".into(), batch.shard_id.to_owned()),
        ("first-seq".into(), batch.first_seq().to_owned()),
        ("last-seq".into(), batch.last_seq().to_owned()),
        ("format-version".into(), RAW_FORMAT_VERSION.to_string()),
        ("codec".into(), codec_name(codec).to_owned()),
    ]
}

struct S3Outcome {
    attempts: u32,
    error: Option<(String, CallError)>,
}

async fn put(
    state: &State,
    key: &str,
    body: Option<&Bytes>,
    metadata: &[(String, String)],
    deadline: Instant,
) -> S3Outcome {
    let Some(body) = body else {
        return S3Outcome {
            attempts: 0,
            error: None,
        };
    };
    let req = caudal_aws::s3::PutRequest {
        bucket: &state.config.raw_bucket,
        key,
        body: body.clone(),
        content_type: content_type(state.config.codec),
        metadata,
        // Deterministic keys: a retried batch rewrites the same bytes.
        if_absent: false,
    };
    match caudal_aws::s3::put_object(&state.s3, &req, &state.config.retry, deadline).await {
        Ok(r) => S3Outcome {
            attempts: r.attempts,
            error: None,
        },
        Err(e) => S3Outcome {
            attempts: 0,
            error: Some((key.to_owned(), e)),
        },
    }
}

/// Store one shard batch; returns the sequence number to report, if any.
pub(crate) async fn write_batch(
    state: &State,
    batch: &ShardBatch<'_>,
    keys: &BatchKeys,
    deadline: Instant,
    ctx: &Context,
) -> Result<Option<String>, RawWriterError> {
    let started = std::time::Instant::now();
    let codec = state.config.codec;
    let enc = encode_batch(&batch.records, codec)?;
    let valid = enc.valid.len();
    let raw_meta = object_metadata(batch, codec, valid, enc.invalid_count);
    let invalid_meta = object_metadata(batch, codec, enc.invalid_count, enc.invalid_count);
    let (raw_put, invalid_put) = tokio::join!(
        put(state, &keys.raw, enc.raw.as_ref(), &raw_meta, deadline),
        put(
            state,
            &keys.invalid,
            enc.invalid.as_ref(),
            &invalid_meta,
            deadline
        ),
    );
    let s3_attempts = raw_put.attempts + invalid_put.attempts;
    let s3_error = raw_put.error.or(invalid_put.error);

    let mut fwd = ForwardOutcome::default();
    let mut lake = LakeDeferral::default();
    let report = if let Some((key, error)) = &s3_error {
        // Nothing of this batch may be checkpointed: report its first record.
        tracing::error!(
            shard_id = batch.shard_id,
            key = key.as_str(),
            error = %error,
            retryable = error.retryable,
            "raw object not written; the whole batch will be re-delivered"
        );
        Some(batch.first_seq().to_owned())
    } else if let (Some(stream), true) = (&state.config.firehose_stream, valid > 0) {
        let firehose_deadline = firehose_deadline(&state.config, deadline);
        fwd = forward_batch(state, stream, batch, &enc, firehose_deadline).await;
        if fwd.failed_lines.is_empty() {
            None
        } else {
            let report = defer(state, batch, keys, &enc, &fwd, deadline).await;
            if report.is_some() {
                lake.undeferred = fwd.failed_lines.len();
            } else {
                lake.deferred = fwd.failed_lines.len();
            }
            report
        }
    } else {
        None
    };
    emit_summary(
        &Summary {
            batch,
            keys,
            enc: &enc,
            fwd: &fwd,
            lake: &lake,
            s3_attempts,
            s3_failed: s3_error.is_some(),
            elapsed: started.elapsed(),
        },
        ctx,
    );
    Ok(report)
}

async fn forward_batch(
    state: &State,
    stream: &str,
    batch: &ShardBatch<'_>,
    enc: &EncodedBatch,
    deadline: Instant,
) -> ForwardOutcome {
    let plan = match plan(&enc.line_sizes, state.config.pack) {
        Ok(p) => p,
        Err(e) => {
            // Only reachable with a record limit above the call limit (a configuration error).
            return ForwardOutcome::all_failed(
                enc.valid.len(),
                CallError {
                    retryable: false,
                    code: "PackingFailure".into(),
                    message: e.to_string(),
                },
            );
        }
    };
    for &pos in &plan.oversize {
        if let Some(rec) = enc.valid.get(pos).and_then(|&i| batch.records.get(i)) {
            tracing::warn!(
                shard_id = batch.shard_id,
                sequence_number = rec.seq(),
                bytes = enc.line_sizes.get(pos).copied().unwrap_or(0),
                "line larger than a Firehose record: archived in raw/ only"
            );
        }
    }
    let sink = FirehoseSink {
        client: &state.firehose,
        stream,
        policy: &state.config.retry,
    };
    let lines = BatchLines {
        batch,
        encoded: enc,
    };
    forward(&sink, &lines, &plan, deadline).await
}

/// Everything one batch's summary line reports.
struct Summary<'a, 'b> {
    batch: &'a ShardBatch<'b>,
    keys: &'a BatchKeys,
    enc: &'a EncodedBatch,
    fwd: &'a ForwardOutcome,
    lake: &'a LakeDeferral,
    s3_attempts: u32,
    s3_failed: bool,
    elapsed: Duration,
}

fn emit_summary(sum: &Summary<'_, '_>, ctx: &Context) {
    let Summary {
        batch,
        keys,
        enc,
        fwd,
        lake,
        s3_attempts,
        s3_failed,
        elapsed,
    } = *sum;
    let now = time::OffsetDateTime::now_utc();
    let iterator_age_ms = batch
        .records
        .iter()
        .map(|r| r.arrival)
        .min()
        .map_or(0.0, |oldest| {
            ((now - oldest).whole_milliseconds().max(0)) as f64
        });
    let written = enc.bytes_written();
    let ratio = if written > 0 {
        (enc.raw_bytes + enc.invalid_bytes) as f64 / written as f64
    } else {
        0.0
    };
    let records = batch.records.len();
    tracing::info!(
        shard_id = batch.shard_id,
        records,
        valid = enc.valid.len(),
        invalid = enc.invalid_count,
        bytes_in = enc.bytes_in,
        bytes_written = written,
        raw_key = keys.raw.as_str(),
        s3_attempts,
        s3_failed,
        firehose_records = fwd.records,
        firehose_attempts = fwd.attempts,
        firehose_failed = fwd.failed_records,
        lake_deferred_lines = lake.deferred,
        lake_undeferred_lines = lake.undeferred,
        iterator_age_ms,
        elapsed_ms = elapsed.as_millis() as u64,
        "raw batch"
    );
    Emf::new(FUNCTION_NAME)
        .metric("Records", records as f64, Unit::Count)
        .metric("EventsArchived", enc.valid.len() as f64, Unit::Count)
        .metric("BytesIn", enc.bytes_in as f64, Unit::Bytes)
        .metric("BytesWritten", written as f64, Unit::Bytes)
        .metric("CompressionRatio", ratio, Unit::None)
        .metric("InvalidRecords", enc.invalid_count as f64, Unit::Count)
        .metric("S3Attempts", f64::from(s3_attempts), Unit::Count)
        .metric("S3Failures", if s3_failed { 1.0 } else { 0.0 }, Unit::Count)
        .metric("FirehoseRecords", fwd.records as f64, Unit::Count)
        .metric("FirehoseAttempts", f64::from(fwd.attempts), Unit::Count)
        .metric(
            "FirehoseFailedRecords",
            fwd.failed_records as f64,
            Unit::Count,
        )
        .metric(
            "FirehoseOversizeLines",
            fwd.oversize_lines as f64,
            Unit::Count,
        )
        .metric("LakeDeferredLines", lake.deferred as f64, Unit::Count)
        .metric("LakeDeferFailures", lake.undeferred as f64, Unit::Count)
        .metric("IteratorAgeMs", iterator_age_ms, Unit::Milliseconds)
        .property("ShardId", batch.shard_id)
        .property("RawKey", keys.raw.as_str())
        .property("RequestId", ctx.request_id.as_str())
        .emit();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::KinesisBatchEvent;
    use std::collections::HashMap;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    #[test]
    fn config_reads_the_contract_names() {
        let c = Config::from_env(&env(&[
            ("RAW_BUCKET", "b"),
            ("COMPRESSION", "gzip"),
            ("FIREHOSE_STREAM_NAME", "lake"),
            ("LAKE_RETRY_QUEUE_URL", "https://sqs.example/1/lake-retry"),
        ]))
        .unwrap();
        assert_eq!(c.raw_bucket, "b");
        assert_eq!(c.codec, Codec::Gzip { level: 6 });
        assert_eq!(c.firehose_stream.as_deref(), Some("lake"));
        assert_eq!(
            c.lake_retry_queue.as_deref(),
            Some("https://sqs.example/1/lake-retry")
        );
        // Forwarding without a retry queue would stall shards on a Firehose outage: refused.
        assert!(matches!(
            Config::from_env(&env(&[("RAW_BUCKET", "b"), ("FIREHOSE_STREAM_NAME", "lake")])),
            Err(ConfigError::Missing(name)) if name == "LAKE_RETRY_QUEUE_URL"
        ));
        let c =
            Config::from_env(&env(&[("RAW_BUCKET", "b"), ("FIREHOSE_STREAM_NAME", "")])).unwrap();
        assert_eq!(
            c.codec,
            Codec::Zstd { level: 1 },
            "zstd-1 unless told otherwise"
        );
        assert_eq!(c.firehose_stream, None, "empty disables forwarding");
        assert!(matches!(
            Config::from_env(&env(&[])),
            Err(ConfigError::Missing(name)) if name == "RAW_BUCKET"
        ));
        assert!(Config::from_env(&env(&[("RAW_BUCKET", "b"), ("COMPRESSION", "lz4")])).is_err());
        assert_eq!(c.key_region, None, "unset: the home region's keys");
        let c = Config::from_env(&env(&[
            ("RAW_BUCKET", "b"),
            ("RAW_KEY_REGION", "eu-west-1"),
        ]))
        .unwrap();
        assert_eq!(c.key_region.as_deref(), Some("eu-west-1"));
        // A key region that could add a path segment fails the cold start.
        assert!(matches!(
            Config::from_env(&env(&[("RAW_BUCKET", "b"), ("RAW_KEY_REGION", "eu/../x")])),
            Err(ConfigError::Invalid { name, .. }) if name == "RAW_KEY_REGION"
        ));
    }

    #[tokio::test]
    async fn deadline_keeps_a_margin() {
        let cfg = Config::new("b");
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let d = cfg.deadline.deadline(now_ms + 60_000);
        let left = d - Instant::now();
        assert!(
            left <= Duration::from_secs(55) && left > Duration::from_secs(53),
            "{left:?}"
        );
        // Less than the margin left: half of it is used, never more than remains.
        let d = cfg.deadline.deadline(now_ms + 2_000);
        assert!(d - Instant::now() <= Duration::from_secs(1));
        // No deadline: the default budget.
        let d = cfg.deadline.deadline(0);
        assert!(d - Instant::now() > Duration::from_secs(59));
    }

    #[test]
    fn keys_and_metadata_come_from_the_batch() {
        let v = serde_json::json!({"Records": [
            {"kinesis": {"partitionKey": "a", "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
              "data": "YQ==", "approximateArrivalTimestamp": 1_764_100_518.0}, "eventID": "shardId-000000000006:x"},
            {"kinesis": {"partitionKey": "a", "sequenceNumber": "49590338271490256608559692540925702759324208523137515618",
              "data": "Yg==", "approximateArrivalTimestamp": 1_764_104_000.0}, "eventID": "shardId-000000000006:y"}
        ]});
        let input = KinesisBatchEvent::parse_value(&v).unwrap();
        let refs = input.records();
        let batches = group(&refs).unwrap();
        let cfg = Config {
            codec: Codec::Gzip { level: 6 },
            ..Config::new("b")
        };
        let keys = batch_keys(&batches[0], &cfg).unwrap();
        assert_eq!(
            keys.raw,
            "raw/dt=2025-11-25/hr=19/shardId-000000000006/\
             0000000049590338271490256608559692538361571095921575989136588898-\
             0000000049590338271490256608559692540925702759324208523137515618.ndjson.gz"
        );
        assert_eq!(keys.invalid, keys.raw.replacen("raw/", "raw-invalid/", 1));
        assert_eq!(batch_keys(&batches[0], &cfg).unwrap(), keys);
        let zst = batch_keys(
            &batches[0],
            &Config {
                codec: Codec::Zstd { level: 3 },
                ..cfg.clone()
            },
        )
        .unwrap();
        assert!(zst.raw.ends_with(".ndjson.zst"));
        // A second region's keys name it, the rest unchanged.
        let west = batch_keys(
            &batches[0],
            &Config {
                key_region: Some("us-west-2".to_owned()),
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_eq!(
            west.raw,
            keys.raw.replace("/shardId-", "/region=us-west-2/shardId-")
        );
        assert_eq!(
            west.invalid,
            keys.invalid
                .replace("/shardId-", "/region=us-west-2/shardId-")
        );
        let meta: HashMap<String, String> = object_metadata(&batches[0], Codec::default(), 2, 0)
            .into_iter()
            .collect();
        assert_eq!(meta["record-count"], "2");
        assert_eq!(meta["invalid-count"], "0");
        assert_eq!(
            meta["first-seq"],
            "49590338271490256608559692538361571095921575989136588898"
        );
        assert_eq!(meta["format-version"], "1");
        assert_eq!(meta["codec"], "gzip");
        assert_eq!(content_type(Codec::Zstd { level: 3 }), "application/zstd");
    }
}
