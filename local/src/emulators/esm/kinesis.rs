//! The Kinesis event source mapping: one poller per shard, batches invoked in order and retried
//! (bisected, checkpointed, given up on to the OnFailure destination) as Lambda does.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use time::OffsetDateTime;

use super::events::{self, BatchResponse, FailureCondition, KinesisRecord, StreamSource};
use super::{EsmError, IDLE_BACKOFF, MappingStats};
use crate::emulators::lambda::{LocalFunction, MAX_PAYLOAD_BYTES};
use crate::shutdown::Shutdown;
use crate::stack::template::{KinesisSource, StartingPosition};

/// Upper bound of the pause between retries of a failing batch.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);
/// Room left in the 6 MB payload for the event's envelope.
const PAYLOAD_BUDGET: usize = MAX_PAYLOAD_BYTES - 64 * 1024;

fn sdk_message<E>(
    e: &aws_sdk_kinesis::error::SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> String
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    caudal_aws::call_error(e).to_string()
}

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

    // Long on purpose: the shard's read position, buffer and window are one loop's state.
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
    // Long on purpose: one retry loop (checkpoint, retries, bisection) over the same batch.
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
                    self.count_succeeded(records);
                    return;
                };
                self.stats
                    .failed_invocations
                    .fetch_add(1, Ordering::Relaxed);
                // Everything before the lowest failed sequence number is done.
                self.count_succeeded(&records[..checkpoint.min(records.len())]);
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

    /// Counts `records` as processed: records and the events they hold.
    fn count_succeeded(&self, records: &[KinesisRecord]) {
        let events: usize = records
            .iter()
            .map(|r| {
                let c = caudal_core::pack::contents(&r.data);
                c.events + c.invalid
            })
            .sum();
        self.stats
            .succeeded
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.stats
            .events_succeeded
            .fetch_add(events as u64, Ordering::Relaxed);
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
