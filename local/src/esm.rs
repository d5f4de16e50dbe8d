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

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use time::OffsetDateTime;

use crate::events::{
    self, BatchResponse, FailureCondition, KinesisRecord, SqsMessage, StreamSource,
};
use crate::lambda::{LocalFunction, MAX_PAYLOAD_BYTES};
use crate::shutdown::Shutdown;
use crate::template::{KinesisSource, SqsSource, StartingPosition};

/// Pause between GetRecords calls on an idle shard (AWS allows 5 per second per shard).
pub const IDLE_BACKOFF: Duration = Duration::from_millis(200);
/// Upper bound of the pause between retries of a failing batch.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);
/// Room left in the 6 MB payload for the event's envelope.
const PAYLOAD_BUDGET: usize = MAX_PAYLOAD_BYTES - 64 * 1024;

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

fn sdk_message<E>(
    e: &aws_sdk_kinesis::error::SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> String
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    caudal_aws::call_error(e).to_string()
}

/// Counters of one mapping.
#[derive(Debug, Default)]
pub struct MappingStats {
    /// Records (Kinesis) or messages (SQS) read from the source, including redeliveries.
    pub received: AtomicU64,
    /// Records/messages whose processing succeeded (checkpointed or deleted).
    pub succeeded: AtomicU64,
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

// ------------------------------------------------------------------------------------------
// Kinesis.

/// A Kinesis event source mapping.
pub struct KinesisMapping {
    kinesis: aws_sdk_kinesis::Client,
    sqs: aws_sdk_sqs::Client,
    source: KinesisSource,
    function: Arc<LocalFunction>,
    region: String,
    identity_arn: String,
    on_failure_url: Option<String>,
    /// Counters.
    pub stats: MappingStats,
    shards: std::sync::Mutex<BTreeMap<String, Arc<ShardState>>>,
}

/// What a shard poller is doing, for "has everything been processed?" questions.
#[derive(Debug, Default)]
struct ShardState {
    /// True once a GetRecords call found nothing new and nothing is buffered or in flight.
    caught_up: AtomicBool,
}

impl std::fmt::Debug for KinesisMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisMapping")
            .field("source", &self.source.name)
            .field("function", &self.function.name)
            .finish_non_exhaustive()
    }
}

impl KinesisMapping {
    /// A mapping feeding `function` from `source`. `on_failure_url` is the URL of the OnFailure
    /// queue when the source has one.
    pub fn new(
        kinesis: aws_sdk_kinesis::Client,
        sqs: aws_sdk_sqs::Client,
        source: KinesisSource,
        function: Arc<LocalFunction>,
        region: &str,
        identity_arn: &str,
        on_failure_url: Option<String>,
    ) -> KinesisMapping {
        KinesisMapping {
            kinesis,
            sqs,
            source,
            function,
            region: region.to_owned(),
            identity_arn: identity_arn.to_owned(),
            on_failure_url,
            stats: MappingStats::default(),
            shards: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The event source settings.
    pub fn source(&self) -> &KinesisSource {
        &self.source
    }

    /// True when every shard poller has read everything and has nothing buffered or in flight.
    pub fn caught_up(&self) -> bool {
        let shards = match self.shards.lock() {
            Ok(s) => s,
            Err(_) => return false,
        };
        !shards.is_empty() && shards.values().all(|s| s.caught_up.load(Ordering::Acquire))
    }

    /// Lists the stream's shards and starts one poller per shard; the returned handles finish
    /// after `shutdown`.
    pub async fn start(
        self: &Arc<Self>,
        shutdown: Shutdown,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, EsmError> {
        let stream = self.source.stream_name.clone();
        let mut shard_ids = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let req = match &next {
                Some(token) => self.kinesis.list_shards().next_token(token),
                None => self.kinesis.list_shards().stream_name(&stream),
            };
            let out = req.send().await.map_err(|e| EsmError::Kinesis {
                op: "ListShards",
                stream: stream.clone(),
                message: sdk_message(&e),
            })?;
            shard_ids.extend(out.shards().iter().map(|s| s.shard_id().to_owned()));
            next = out.next_token().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        let mut handles = Vec::new();
        for shard in shard_ids {
            let state = Arc::new(ShardState::default());
            if let Ok(mut m) = self.shards.lock() {
                m.insert(shard.clone(), state.clone());
            }
            let me = self.clone();
            let sd = shutdown.clone();
            handles.push(tokio::spawn(async move {
                me.poll_shard(shard, state, sd).await
            }));
        }
        Ok(handles)
    }

    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, EsmError> {
        let mut req = self
            .kinesis
            .get_shard_iterator()
            .stream_name(&self.source.stream_name)
            .shard_id(shard);
        req = match (after, self.source.starting_position) {
            (Some(seq), _) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            (None, StartingPosition::TrimHorizon) => {
                req.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            (None, StartingPosition::Latest) => req.shard_iterator_type(ShardIteratorType::Latest),
            (None, StartingPosition::AtTimestamp(ts)) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs_f64(ts)),
        };
        let out = req.send().await.map_err(|e| EsmError::Kinesis {
            op: "GetShardIterator",
            stream: self.source.stream_name.clone(),
            message: sdk_message(&e),
        })?;
        out.shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| EsmError::Kinesis {
                op: "GetShardIterator",
                stream: self.source.stream_name.clone(),
                message: "no iterator returned".into(),
            })
    }

    async fn poll_shard(
        self: Arc<Self>,
        shard: String,
        state: Arc<ShardState>,
        shutdown: Shutdown,
    ) {
        let stream = self.source.stream_name.clone();
        let mut last_read: Option<String> = None;
        let mut iterator: Option<String> = None;
        let mut pending: VecDeque<KinesisRecord> = VecDeque::new();
        let mut pending_bytes = 0usize;
        let mut window_start: Option<Instant> = None;
        let batch_size = self.source.batch_size;
        let window = self.source.batching_window;
        let mut shard_closed = false;
        tracing::info!(stream = %stream, shard = %shard, function = %self.function.name, "kinesis_poller_started");
        while !shutdown.is_triggered() {
            let mut read_nothing = true;
            if !shard_closed && pending.len() < batch_size && pending_bytes < PAYLOAD_BUDGET {
                if iterator.is_none() {
                    match self.iterator(&shard, last_read.as_deref()).await {
                        Ok(it) => iterator = Some(it),
                        Err(e) => {
                            tracing::warn!(error = %e, "kinesis_iterator_failed");
                            shutdown.sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                let limit = batch_size.clamp(100, 10_000) as i32;
                let res = self
                    .kinesis
                    .get_records()
                    .shard_iterator(iterator.clone().unwrap_or_default())
                    .limit(limit)
                    .send()
                    .await;
                match res {
                    Ok(out) => {
                        for r in out.records() {
                            let rec = KinesisRecord {
                                shard_id: shard.clone(),
                                sequence_number: r.sequence_number().to_owned(),
                                partition_key: r.partition_key().unwrap_or_default().to_owned(),
                                data: r.data().as_ref().to_vec(),
                                arrival: r
                                    .approximate_arrival_timestamp()
                                    .map(|t| (t.as_secs_f64() * 1000.0).round() / 1000.0)
                                    .unwrap_or_else(now_secs),
                            };
                            pending_bytes += rec.event_bytes();
                            last_read = Some(rec.sequence_number.clone());
                            pending.push_back(rec);
                            read_nothing = false;
                        }
                        self.stats
                            .received
                            .fetch_add(out.records().len() as u64, Ordering::Relaxed);
                        iterator = out.next_shard_iterator().map(str::to_owned);
                        shard_closed = iterator.is_none();
                        if !read_nothing && window_start.is_none() {
                            window_start = Some(Instant::now());
                        }
                    }
                    Err(e) => {
                        let code = aws_sdk_kinesis::error::ProvideErrorMetadata::code(&e)
                            .unwrap_or("")
                            .to_owned();
                        if code == "ExpiredIteratorException" {
                            iterator = None;
                        } else {
                            tracing::warn!(stream = %stream, shard = %shard, error = %sdk_message(&e), "kinesis_get_records_failed");
                            shutdown.sleep(Duration::from_secs(1)).await;
                        }
                        continue;
                    }
                }
            }
            let window_over = window_start.is_some_and(|s| s.elapsed() >= window);
            let ready = !pending.is_empty()
                && (pending.len() >= batch_size
                    || pending_bytes >= PAYLOAD_BUDGET
                    || window_over
                    || shard_closed);
            if ready {
                state.caught_up.store(false, Ordering::Release);
                let mut batch = Vec::with_capacity(batch_size.min(pending.len()));
                let mut bytes = 0usize;
                while let Some(r) = pending.front() {
                    if batch.len() >= batch_size
                        || (!batch.is_empty() && bytes + r.event_bytes() > PAYLOAD_BUDGET)
                    {
                        break;
                    }
                    bytes += r.event_bytes();
                    if let Some(r) = pending.pop_front() {
                        batch.push(r);
                    }
                }
                pending_bytes = pending_bytes.saturating_sub(bytes);
                self.deliver(&batch, 0, &shutdown).await;
                window_start = (!pending.is_empty()).then(Instant::now);
                continue;
            }
            if read_nothing {
                if pending.is_empty() {
                    state.caught_up.store(true, Ordering::Release);
                    if shard_closed {
                        break;
                    }
                }
                shutdown.sleep(IDLE_BACKOFF).await;
            } else {
                state.caught_up.store(false, Ordering::Release);
                // Stay within the 5 GetRecords/s/shard quota while a batch fills up.
                shutdown.sleep(IDLE_BACKOFF).await;
            }
        }
        tracing::info!(stream = %stream, shard = %shard, "kinesis_poller_stopped");
    }

    /// Processes `records` until done (success, or given up on to the OnFailure destination).
    fn deliver<'a>(
        &'a self,
        records: &'a [KinesisRecord],
        retries_so_far: u32,
        shutdown: &'a Shutdown,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let mut records = records;
            if let Some(max_age) = self.source.max_record_age {
                let cutoff = now_secs() - max_age.as_secs_f64();
                let expired = records.iter().take_while(|r| r.arrival < cutoff).count();
                if expired > 0 {
                    self.give_up(
                        &records[..expired],
                        FailureCondition::RecordAgeExceeded,
                        0,
                        None,
                    )
                    .await;
                    records = &records[expired..];
                }
            }
            let mut retries = retries_so_far;
            let mut invocations = 0u32;
            while !records.is_empty() {
                let src = StreamSource {
                    stream_arn: &self.source.stream_arn,
                    region: &self.region,
                    identity_arn: &self.identity_arn,
                };
                let event = events::kinesis_event(records, &src);
                self.stats.invocations.fetch_add(1, Ordering::Relaxed);
                invocations += 1;
                let failed_from = match self.function.invoke(event).await {
                    Ok(_) if !self.source.report_batch_item_failures => None,
                    Ok(out) => {
                        let ids: Vec<&str> =
                            records.iter().map(|r| r.sequence_number.as_str()).collect();
                        match events::parse_batch_response(&out, &ids) {
                            BatchResponse::AllSucceeded => None,
                            BatchResponse::Failed(idx) => Some((idx[0], None)),
                            BatchResponse::Invalid => Some((0, None)),
                        }
                    }
                    Err(e) => {
                        if self.source.bisect_on_error && records.len() > 1 {
                            self.stats
                                .failed_invocations
                                .fetch_add(1, Ordering::Relaxed);
                            self.stats.bisections.fetch_add(1, Ordering::Relaxed);
                            let mid = records.len() / 2;
                            tracing::info!(function = %self.function.name, size = records.len(), error = %e, "kinesis_batch_bisected");
                            self.deliver(&records[..mid], retries, shutdown).await;
                            self.deliver(&records[mid..], retries, shutdown).await;
                            return;
                        }
                        Some((0, Some(e)))
                    }
                };
                let Some((checkpoint, error)) = failed_from else {
                    self.stats
                        .succeeded
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    return;
                };
                self.stats
                    .failed_invocations
                    .fetch_add(1, Ordering::Relaxed);
                // Everything before the lowest failed sequence number is done.
                self.stats
                    .succeeded
                    .fetch_add(checkpoint as u64, Ordering::Relaxed);
                records = &records[checkpoint..];
                if self
                    .source
                    .max_retry_attempts
                    .is_some_and(|max| retries >= max)
                {
                    let function_error = error.as_ref().map(|_| "Unhandled");
                    self.give_up(
                        records,
                        FailureCondition::RetryAttemptsExhausted,
                        invocations,
                        function_error,
                    )
                    .await;
                    return;
                }
                if error.as_ref().is_some_and(|e| !e.is_retryable()) && records.len() == 1 {
                    // A single record that can never fit an invocation: nothing to retry.
                    self.give_up(
                        records,
                        FailureCondition::RetryAttemptsExhausted,
                        invocations,
                        Some("Unhandled"),
                    )
                    .await;
                    return;
                }
                retries += 1;
                let backoff =
                    Duration::from_millis(100u64 << retries.min(5)).min(MAX_RETRY_BACKOFF);
                if !shutdown.sleep(backoff).await {
                    return;
                }
            }
        })
    }

    async fn give_up(
        &self,
        records: &[KinesisRecord],
        condition: FailureCondition,
        invocations: u32,
        function_error: Option<&str>,
    ) {
        self.stats
            .sent_to_on_failure
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let first = records
            .first()
            .map(|r| r.sequence_number.as_str())
            .unwrap_or_default();
        let last = records
            .last()
            .map(|r| r.sequence_number.as_str())
            .unwrap_or_default();
        tracing::warn!(
            function = %self.function.name,
            stream = %self.source.stream_name,
            records = records.len(),
            first, last,
            condition = ?condition,
            "kinesis_batch_discarded"
        );
        let Some(url) = &self.on_failure_url else {
            return;
        };
        let src = StreamSource {
            stream_arn: &self.source.stream_arn,
            region: &self.region,
            identity_arn: &self.identity_arn,
        };
        let body = events::kinesis_on_failure(
            records,
            &src,
            &self.function.arn,
            condition,
            invocations,
            function_error,
            OffsetDateTime::now_utc(),
        );
        if let Err(e) = self
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(body.to_string())
            .send()
            .await
        {
            tracing::error!(queue = %url, error = %caudal_aws::call_error(&e), "on_failure_send_failed");
        }
    }
}

fn now_secs() -> f64 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}

// ------------------------------------------------------------------------------------------
// SQS.

/// Concurrent workers when the template sets no MaximumConcurrency.
pub const DEFAULT_SQS_CONCURRENCY: u32 = 2;
/// Longest ReceiveMessage long poll (short, so shutdown is prompt).
const SQS_WAIT_SECONDS: i32 = 1;

/// An SQS event source mapping.
pub struct SqsMapping {
    sqs: aws_sdk_sqs::Client,
    source: SqsSource,
    queue_url: String,
    function: Arc<LocalFunction>,
    region: String,
    /// Counters.
    pub stats: MappingStats,
    busy: AtomicU64,
    invoking: AtomicU64,
}

impl std::fmt::Debug for SqsMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsMapping")
            .field("queue", &self.queue_url)
            .field("function", &self.function.name)
            .finish_non_exhaustive()
    }
}

impl SqsMapping {
    /// A mapping feeding `function` from the queue at `queue_url`.
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        source: SqsSource,
        queue_url: String,
        function: Arc<LocalFunction>,
        region: &str,
    ) -> SqsMapping {
        SqsMapping {
            sqs,
            source,
            queue_url,
            function,
            region: region.to_owned(),
            stats: MappingStats::default(),
            busy: AtomicU64::new(0),
            invoking: AtomicU64::new(0),
        }
    }

    /// The event source settings.
    pub fn source(&self) -> &SqsSource {
        &self.source
    }

    /// The queue URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// True while a worker holds received messages (gathering a batch or invoking).
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    /// Starts the workers; the handles finish after `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let n = self
            .source
            .maximum_concurrency
            .unwrap_or(DEFAULT_SQS_CONCURRENCY)
            .clamp(1, 8);
        (0..n)
            .map(|_| {
                let me = self.clone();
                let sd = shutdown.clone();
                tokio::spawn(async move { me.work(sd).await })
            })
            .collect()
    }

    async fn work(self: Arc<Self>, shutdown: Shutdown) {
        tracing::info!(queue = %self.queue_url, function = %self.function.name, "sqs_poller_started");
        while !shutdown.is_triggered() {
            let batch = match self.gather(&shutdown).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "sqs_receive_failed");
                    shutdown.sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            self.process(&batch).await;
            self.busy.fetch_sub(1, Ordering::AcqRel);
        }
        tracing::info!(queue = %self.queue_url, "sqs_poller_stopped");
    }

    /// Receives until the batch is full or the batching window has passed since the first
    /// message. A non-empty result means `busy` was incremented.
    async fn gather(&self, shutdown: &Shutdown) -> Result<Vec<SqsMessage>, EsmError> {
        let mut batch: Vec<SqsMessage> = Vec::new();
        let mut first_at: Option<Instant> = None;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let remaining_window =
                first_at.map(|t| self.source.batching_window.saturating_sub(t.elapsed()));
            if batch.len() >= self.source.batch_size
                || remaining_window.is_some_and(|r| r.is_zero())
            {
                break;
            }
            let want = (self.source.batch_size - batch.len()).min(10) as i32;
            let wait = match remaining_window {
                None => SQS_WAIT_SECONDS,
                Some(r) => (r.as_secs() as i32).clamp(0, SQS_WAIT_SECONDS),
            };
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(want)
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await;
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    if batch.is_empty() {
                        return Err(EsmError::Sqs {
                            op: "ReceiveMessage",
                            queue: self.queue_url.clone(),
                            message: caudal_aws::call_error(&e).to_string(),
                        });
                    }
                    break;
                }
            };
            let got = out.messages().len();
            if got > 0 && batch.is_empty() {
                self.busy.fetch_add(1, Ordering::AcqRel);
                first_at = Some(Instant::now());
            }
            self.stats.received.fetch_add(got as u64, Ordering::Relaxed);
            batch.extend(out.messages().iter().map(to_message));
            if batch.is_empty() {
                // Nothing yet: keep long-polling (the wait above is the idle back-off).
                if wait == 0 {
                    shutdown.sleep(IDLE_BACKOFF).await;
                }
                continue;
            }
            if got == 0 && self.source.batching_window.is_zero() {
                break;
            }
            if got == 0 && wait == 0 {
                shutdown.sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(batch)
    }

    async fn process(&self, batch: &[SqsMessage]) {
        let event = events::sqs_event(batch, &self.source.queue_arn, &self.region);
        self.stats.invocations.fetch_add(1, Ordering::Relaxed);
        let now = self.invoking.fetch_add(1, Ordering::AcqRel) + 1;
        self.stats.max_concurrent.fetch_max(now, Ordering::Relaxed);
        let result = self.function.invoke(event).await;
        self.invoking.fetch_sub(1, Ordering::AcqRel);
        let succeeded: Vec<&SqsMessage> = match result {
            // The whole batch failed: every message reappears after the visibility timeout.
            Err(_) => Vec::new(),
            Ok(_) if !self.source.report_batch_item_failures => batch.iter().collect(),
            Ok(out) => {
                let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
                match events::parse_batch_response(&out, &ids) {
                    BatchResponse::AllSucceeded => batch.iter().collect(),
                    BatchResponse::Failed(idx) => batch
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !idx.contains(i))
                        .map(|(_, m)| m)
                        .collect(),
                    BatchResponse::Invalid => Vec::new(),
                }
            }
        };
        if succeeded.len() < batch.len() {
            self.stats
                .failed_invocations
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                queue = %self.queue_url,
                failed = batch.len() - succeeded.len(),
                "sqs_messages_left_for_redelivery"
            );
        }
        for chunk in succeeded.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt_handle)
                        .build()
                        .ok()
                })
                .collect();
            match self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    let failed = out.failed().len();
                    self.stats
                        .succeeded
                        .fetch_add((chunk.len() - failed) as u64, Ordering::Relaxed);
                    if failed > 0 {
                        tracing::warn!(queue = %self.queue_url, failed, "sqs_delete_partially_failed");
                    }
                }
                Err(e) => {
                    // The messages will be delivered again: at-least-once, as in AWS.
                    tracing::warn!(queue = %self.queue_url, error = %caudal_aws::call_error(&e), "sqs_delete_failed");
                }
            }
        }
    }
}

fn to_message(m: &aws_sdk_sqs::types::Message) -> SqsMessage {
    let attributes = m
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut message_attributes = serde_json::Map::new();
    for (k, v) in m.message_attributes().into_iter().flatten() {
        use base64::Engine as _;
        let b64 = |b: &aws_sdk_sqs::primitives::Blob| {
            base64::engine::general_purpose::STANDARD.encode(b.as_ref())
        };
        message_attributes.insert(
            k.clone(),
            serde_json::json!({
                "stringValue": v.string_value(),
                "binaryValue": v.binary_value().map(b64),
                "stringListValues": v.string_list_values(),
                "binaryListValues": v.binary_list_values().iter().map(b64).collect::<Vec<_>>(),
                "dataType": v.data_type(),
            }),
        );
    }
    SqsMessage {
        message_id: m.message_id().unwrap_or_default().to_owned(),
        receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
        body: m.body().unwrap_or_default().to_owned(),
        md5_of_body: m.md5_of_body().unwrap_or_default().to_owned(),
        attributes,
        message_attributes,
    }
}
