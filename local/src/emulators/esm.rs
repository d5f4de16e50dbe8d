//! Event source mappings: the pollers that feed functions from Kinesis and SQS the way Lambda's
//! event source mappings do.
//!
//! **Kinesis** ([`KinesisMapping`]): one task per shard. It starts at the template's
//! `StartingPosition`, reads with GetRecords (backing off ~200 ms when a shard is idle, within
//! the 5 reads/s/shard quota), and invokes when `BatchSize` records are buffered, when
//! `MaximumBatchingWindowInSeconds` has passed since the first buffered record, or when the
//! next record would push the event past the 6 MB payload limit. A batch is then retried until
//! it is done, in order, before the shard moves on (at-least-once, ordered per shard):
//! - a function error with `BisectBatchOnFunctionError` splits the batch in two and processes
//!   each half (splitting does not count as a retry, as in AWS);
//! - with `ReportBatchItemFailures`, a partial batch response checkpoints at the **lowest**
//!   failed sequence number: everything before it is done, the rest is retried; an empty, null
//!   or unknown identifier fails the whole batch;
//! - after `MaximumRetryAttempts` retries, or when records are older than
//!   `MaximumRecordAgeInSeconds`, the batch's description is sent to the `OnFailure` SQS
//!   destination and the shard moves on.
//!
//! **SQS** ([`SqsMapping`]): `MaximumConcurrency` workers (default 2 locally), each gathering
//! up to `BatchSize` messages within `MaximumBatchingWindowInSeconds`, invoking, then deleting
//! the messages that succeeded. Failed messages are left alone: they reappear after the queue's
//! visibility timeout and moto's redrive policy moves them to the dead-letter queue after
//! `maxReceiveCount` receives (checked by the tests).
//!
//! Modules: `kinesis` and `sqs` (the two mappings, re-exported here) and [`events`] (the JSON
//! documents both send, and the partial batch responses they read back).

pub mod events;
mod kinesis;
mod sqs;

pub use kinesis::KinesisMapping;
pub use sqs::{DEFAULT_SQS_CONCURRENCY, SqsMapping};

use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Pause between GetRecords calls on an idle shard (AWS allows 5 per second per shard).
pub const IDLE_BACKOFF: Duration = Duration::from_millis(200);

/// A failed call to the emulated service. Poll loops log it and try again after a pause
/// (every variant is retryable from the loop's point of view); start-up reports it.
#[derive(Debug, thiserror::Error)]
pub enum EsmError {
    /// A Kinesis call failed.
    #[error("kinesis {op} on {stream}: {message}")]
    Kinesis {
        /// Operation.
        op: &'static str,
        /// Stream name.
        stream: String,
        /// The SDK's error, with code.
        message: String,
    },
    /// An SQS call failed.
    #[error("sqs {op} on {queue}: {message}")]
    Sqs {
        /// Operation.
        op: &'static str,
        /// Queue URL.
        queue: String,
        /// The SDK's error, with code.
        message: String,
    },
}

impl EsmError {
    /// Service calls are retried by the poll loops.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// Counters of one mapping.
#[derive(Debug, Default)]
pub struct MappingStats {
    /// Records (Kinesis) or messages (SQS) read from the source, including redeliveries.
    pub received: AtomicU64,
    /// Records/messages whose processing succeeded (checkpointed or deleted).
    pub succeeded: AtomicU64,
    /// Kinesis: the events those records held (a packed record counts its user records,
    /// [`caudal_core::pack::contents`]); SQS: the messages again.
    pub events_succeeded: AtomicU64,
    /// Invocations made.
    pub invocations: AtomicU64,
    /// Invocations that failed or reported item failures.
    pub failed_invocations: AtomicU64,
    /// Records described in on-failure messages (Kinesis) — given up on.
    pub sent_to_on_failure: AtomicU64,
    /// Times a batch was split in two.
    pub bisections: AtomicU64,
    /// Most invocations of this mapping running at the same time (SQS).
    pub max_concurrent: AtomicU64,
}
