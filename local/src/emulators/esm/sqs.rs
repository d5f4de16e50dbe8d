//! The SQS event source mapping: `MaximumConcurrency` workers gathering batches, invoking, and
//! deleting the messages that succeeded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

use super::events::{self, BatchResponse, SqsMessage};
use super::{EsmError, IDLE_BACKOFF, MappingStats};
use crate::emulators::lambda::LocalFunction;
use crate::shutdown::Shutdown;
use crate::stack::template::SqsSource;

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
                    for n in [&self.stats.succeeded, &self.stats.events_succeeded] {
                        n.fetch_add((chunk.len() - failed) as u64, Ordering::Relaxed);
                    }
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
