//! S3 → SQS event notifications with the shape S3 really sends.
//!
//! moto delivers bucket notifications, but its records lack fields S3 always sends
//! (`userIdentity`, `requestParameters`, `responseElements`, `bucket.ownerIdentity`,
//! `object.sequencer`, `object.versionId` on versioned buckets) — and the loader, like any
//! handler deserializing `aws_lambda_events::s3::S3Event`, rightly refuses a record without
//! `userIdentity`. So the local stack points each bucket notification at a relay queue
//! (`<queue>-s3-relay`) and a [`Relay`] task completes every record to the documented shape
//! ("Event message structure", S3 user guide) before forwarding it to the template's queue.
//! Fields moto does send are left untouched; `s3:TestEvent` messages pass through with the
//! `RequestId`/`HostId` S3 adds. With [`super::chaos`], every notification is delivered several
//! times, the copies spread over a moment ([`Relay::with_chaos`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde_json::{Value, json};

use crate::emulators::chaos::{Chaos, Fault, Outage};
use crate::shutdown::Shutdown;

/// Suffix of relay queue names.
pub const RELAY_SUFFIX: &str = "-s3-relay";

/// The relay queue name for a target queue name (SQS names are at most 80 characters).
pub fn relay_queue_name(target: &str) -> String {
    let mut base = target.to_owned();
    base.truncate(80 - RELAY_SUFFIX.len());
    format!("{base}{RELAY_SUFFIX}")
}

/// Completes one notification message body. `version_of(bucket, key)` gives the object's
/// version id on versioned buckets; `sequence` numbers the records (S3's `sequencer` orders
/// events for one key). Returns `None` when the body is not JSON (forwarded unchanged).
pub fn complete_notification(
    body: &str,
    sequence: &AtomicU64,
    version_of: &dyn Fn(&str, &str) -> Option<String>,
) -> Option<Value> {
    let mut v: Value = serde_json::from_str(body).ok()?;
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        let obj = v.as_object_mut()?;
        obj.entry("RequestId")
            .or_insert_with(|| json!(request_id()));
        obj.entry("HostId").or_insert_with(|| json!(host_id()));
        return Some(v);
    }
    for rec in v.get_mut("Records")?.as_array_mut()?.iter_mut() {
        let Some(r) = rec.as_object_mut() else {
            continue;
        };
        r.entry("userIdentity")
            .or_insert_with(|| json!({"principalId": "AWS:AIDACAUDALLOCALEXAMPLE"}));
        r.entry("requestParameters")
            .or_insert_with(|| json!({"sourceIPAddress": "127.0.0.1"}));
        r.entry("responseElements")
            .or_insert_with(|| json!({"x-amz-request-id": request_id(), "x-amz-id-2": host_id()}));
        let Some(s3) = r.get_mut("s3").and_then(Value::as_object_mut) else {
            continue;
        };
        let bucket_name = s3
            .get("bucket")
            .and_then(|b| b.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(b) = s3.get_mut("bucket").and_then(Value::as_object_mut) {
            b.entry("ownerIdentity")
                .or_insert_with(|| json!({"principalId": "A3CAUDALLOCALEXAMPLE"}));
        }
        if let Some(o) = s3.get_mut("object").and_then(Value::as_object_mut) {
            let n = sequence.fetch_add(1, Ordering::Relaxed);
            o.entry("sequencer")
                .or_insert_with(|| json!(format!("{n:018X}")));
            if !o.contains_key("versionId") {
                let key = o.get("key").and_then(Value::as_str).unwrap_or_default();
                let key = caudal_core::keys::decode_notification_key(key);
                if let Some(version) = version_of(&bucket_name, &key) {
                    o.insert("versionId".into(), json!(version));
                }
            }
        }
    }
    Some(v)
}

fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_ascii_uppercase()
}

fn host_id() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// Forwards completed notifications from a relay queue to the template's queue.
pub struct Relay {
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    relay_url: String,
    target_url: String,
    versioned_buckets: Vec<String>,
    sequence: AtomicU64,
    busy: AtomicBool,
    /// Notifications forwarded.
    pub forwarded: AtomicU64,
    chaos: Option<Arc<Chaos>>,
    /// Extra deliveries waiting for their moment ([`Chaos::duplicate_delays`]).
    pending_duplicates: Arc<AtomicU64>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("relay_url", &self.relay_url)
            .field("target_url", &self.target_url)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay from `relay_url` to `target_url`.
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        s3: aws_sdk_s3::Client,
        relay_url: String,
        target_url: String,
        versioned_buckets: Vec<String>,
    ) -> Relay {
        Relay {
            sqs,
            s3,
            relay_url,
            target_url,
            versioned_buckets,
            sequence: AtomicU64::new(1),
            busy: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            chaos: None,
            pending_duplicates: Arc::default(),
        }
    }

    /// Delivers every notification [`super::chaos::ChaosConfig::dup_notify`] times (the extra
    /// copies a moment later, so that different loader workers receive them), as S3's
    /// at-least-once delivery may.
    pub fn with_chaos(mut self, chaos: Arc<Chaos>) -> Relay {
        self.chaos = Some(chaos);
        self
    }

    /// The relay queue's URL.
    pub fn relay_url(&self) -> &str {
        &self.relay_url
    }

    /// True while messages are being forwarded (duplicates still to come included).
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) || self.pending_duplicates.load(Ordering::Acquire) > 0
    }

    /// Runs until `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            while !shutdown.is_triggered() {
                if let Err(e) = me.pass(&shutdown).await {
                    tracing::warn!(relay = %me.relay_url, error = %e, "s3_notification_relay_failed");
                    shutdown.sleep(Duration::from_secs(1)).await;
                }
            }
        })
    }

    async fn version_of(&self, bucket: &str, key: &str) -> Option<String> {
        if !self.versioned_buckets.iter().any(|b| b == bucket) {
            return None;
        }
        let out = self
            .s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        out.version_id().map(str::to_owned)
    }

    async fn pass(&self, shutdown: &Shutdown) -> Result<(), String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.relay_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| caudal_aws::call_error(&e).to_string())?;
        if out.messages().is_empty() || shutdown.is_triggered() {
            return Ok(());
        }
        self.busy.store(true, Ordering::Release);
        let result = self.forward(out.messages()).await;
        self.busy.store(false, Ordering::Release);
        result
    }

    /// Deletes `m` from the relay queue (best effort: a failed delete only delivers it again).
    async fn delete_relayed(&self, m: &aws_sdk_sqs::types::Message) {
        if let Some(rh) = m.receipt_handle() {
            let _ = self
                .sqs
                .delete_message()
                .queue_url(&self.relay_url)
                .receipt_handle(rh)
                .send()
                .await;
        }
    }

    async fn forward(&self, messages: &[aws_sdk_sqs::types::Message]) -> Result<(), String> {
        if let Some(c) = self
            .chaos
            .as_ref()
            .filter(|c| c.outage(Outage::Notifications))
        {
            // Lost: deleted from the relay queue, never delivered.
            for m in messages {
                self.delete_relayed(m).await;
            }
            c.stats
                .add(Fault::NotificationsDropped, messages.len() as u64);
            return Ok(());
        }
        let mut entries = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let body = m.body().unwrap_or_default();
            // Version ids need an async look-up: collect them before completing the record.
            let mut versions: Vec<(String, String, String)> = Vec::new();
            if let Ok(v) = serde_json::from_str::<Value>(body) {
                for r in v
                    .get("Records")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let bucket = r["s3"]["bucket"]["name"].as_str().unwrap_or_default();
                    let key = caudal_core::keys::decode_notification_key(
                        r["s3"]["object"]["key"].as_str().unwrap_or_default(),
                    );
                    if let Some(ver) = self.version_of(bucket, &key).await {
                        versions.push((bucket.to_owned(), key, ver));
                    }
                }
            }
            let lookup = |b: &str, k: &str| {
                versions
                    .iter()
                    .find(|(vb, vk, _)| vb == b && vk == k)
                    .map(|(_, _, ver)| ver.clone())
            };
            let completed = complete_notification(body, &self.sequence, &lookup)
                .map(|v| v.to_string())
                .unwrap_or_else(|| body.to_owned());
            entries.push(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(completed)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
        let sent = self
            .sqs
            .send_message_batch()
            .queue_url(&self.target_url)
            .set_entries(Some(entries.clone()))
            .send()
            .await
            .map_err(|e| caudal_aws::call_error(&e).to_string())?;
        let failed: Vec<&str> = sent.failed().iter().map(|f| f.id()).collect();
        self.send_duplicates(
            entries
                .iter()
                .filter(|e| !failed.contains(&e.id()))
                .cloned()
                .collect(),
        );
        for (i, m) in messages.iter().enumerate() {
            if failed.contains(&i.to_string().as_str()) {
                continue; // stays in the relay queue and is forwarded again
            }
            self.forwarded.fetch_add(1, Ordering::Relaxed);
            self.delete_relayed(m).await;
        }
        Ok(())
    }
}

impl Relay {
    /// Sends the chaos duplicates of `entries` (already delivered once), each copy after its
    /// own pause.
    fn send_duplicates(&self, entries: Vec<SendMessageBatchRequestEntry>) {
        let Some(chaos) = &self.chaos else { return };
        if entries.is_empty() {
            return;
        }
        for delay in chaos.duplicate_delays() {
            let (sqs, url, entries) = (self.sqs.clone(), self.target_url.clone(), entries.clone());
            let (pending, chaos) = (self.pending_duplicates.clone(), chaos.clone());
            pending.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let n = entries.len() as u64;
                match sqs
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                {
                    Ok(out) => chaos.stats.add(
                        Fault::DuplicateNotifications,
                        n.saturating_sub(out.failed().len() as u64),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %caudal_aws::call_error(&e), "chaos_duplicate_not_sent")
                    }
                }
                pending.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::s3::S3Event;

    /// What moto 5 sends.
    const MOTO: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
      "eventTime":"2026-11-25T20:35:30.123Z","eventName":"ObjectCreated:Put",
      "s3":{"s3SchemaVersion":"1.0","configurationId":"c1","bucket":{"name":"b","arn":"arn:aws:s3:::b"},
      "object":{"key":"raw/dt%3D2026-11-25/a+b.ndjson.gz","size":12,"eTag":"abc"}}}]}"#;

    #[test]
    fn moto_records_are_completed_to_what_s3_sends() {
        assert!(
            serde_json::from_str::<S3Event>(MOTO).is_err(),
            "moto's record alone is refused"
        );
        let seq = AtomicU64::new(7);
        let seen = std::sync::Mutex::new(Vec::new());
        let lookup = |b: &str, k: &str| {
            seen.lock().unwrap().push((b.to_owned(), k.to_owned()));
            Some("v1".to_owned())
        };
        let v = complete_notification(MOTO, &seq, &lookup).unwrap();
        let ev: S3Event = serde_json::from_value(v.clone()).unwrap();
        let r = &ev.records[0];
        assert!(r.principal_id.principal_id.is_some());
        assert_eq!(
            r.request_parameters.source_ip_address.as_deref(),
            Some("127.0.0.1")
        );
        assert!(r.response_elements.contains_key("x-amz-request-id"));
        assert_eq!(r.s3.object.sequencer.as_deref(), Some("000000000000000007"));
        assert_eq!(r.s3.object.version_id.as_deref(), Some("v1"));
        assert_eq!(
            r.s3.object.key.as_deref(),
            Some("raw/dt%3D2026-11-25/a+b.ndjson.gz"),
            "key stays URL-encoded"
        );
        assert_eq!(
            *seen.lock().unwrap(),
            vec![("b".to_owned(), "raw/dt=2026-11-25/a b.ndjson.gz".to_owned())]
        );
        assert!(r.s3.bucket.owner_identity.is_some());
    }

    #[test]
    fn present_fields_are_kept_and_test_events_pass_through() {
        let seq = AtomicU64::new(1);
        let none = |_: &str, _: &str| None;
        let with = MOTO.replace(
            "\"eventName\"",
            "\"userIdentity\":{\"principalId\":\"X\"},\"eventName\"",
        );
        let v = complete_notification(&with, &seq, &none).unwrap();
        assert_eq!(v["Records"][0]["userIdentity"]["principalId"], "X");
        assert!(v["Records"][0]["s3"]["object"].get("versionId").is_none());
        let t = complete_notification(
            r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#,
            &seq,
            &none,
        )
        .unwrap();
        assert_eq!(t["Event"], "s3:TestEvent");
        assert!(t["RequestId"].is_string() && t["HostId"].is_string());
        assert!(complete_notification("not json", &seq, &none).is_none());
    }

    #[test]
    fn relay_names_fit_sqs_limits() {
        assert_eq!(relay_queue_name("q"), "q-s3-relay");
        assert_eq!(relay_queue_name(&"x".repeat(100)).len(), 80);
    }
}
