//! Creating the template's resources in moto: streams, queues (dead-letter queues first, then
//! the queues that redrive to them), buckets with their SQS notifications, and Firehose
//! delivery streams writing to S3.
//!
//! moto delivers S3 → SQS notifications itself (including the `s3:TestEvent` S3 sends when a
//! notification is configured), moves messages to the dead-letter queue after
//! `maxReceiveCount` receives, and writes Firehose records straight to the destination bucket.
//! Two moto differences are worth knowing: Firehose does not buffer, compress or expand
//! `!{timestamp:…}` in prefixes, so `lake/` objects locally are one per PutRecordBatch under the
//! literal prefix; and Kinesis sequence numbers are small integers starting at 1 per shard.

use std::collections::BTreeMap;

use aws_sdk_firehose::types::{
    BufferingHints, CompressionFormat, DeliveryStreamType, ExtendedS3DestinationConfiguration,
};
use aws_sdk_s3::types::{
    BucketVersioningStatus, Event, FilterRule, FilterRuleName, NotificationConfiguration,
    NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter, VersioningConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::stack::template::Model;

/// A resource could not be created. Retrying the whole start-up may help when moto was
/// overloaded (`retryable`); a refused definition will not.
#[derive(Debug, thiserror::Error)]
#[error("creating {kind} {name}: {message}")]
pub struct ResourceError {
    /// Resource kind.
    pub kind: &'static str,
    /// Physical name.
    pub name: String,
    /// The service's error code and message.
    pub message: String,
    /// Whether the service called it transient.
    pub retryable: bool,
}

impl ResourceError {
    /// Whether trying again may help.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

fn err<E>(
    kind: &'static str,
    name: &str,
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> ResourceError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let c = caudal_aws::call_error(e);
    ResourceError {
        kind,
        name: name.to_owned(),
        message: c.to_string(),
        retryable: c.retryable,
    }
}

/// What was created: queue URLs by ARN (the URLs moto answered, used by the pollers).
#[derive(Debug, Clone, Default)]
pub struct Created {
    /// Queue URL per queue ARN.
    pub queue_urls: BTreeMap<String, String>,
    /// S3 notification relays: (relay queue URL, template queue URL); see
    /// [`crate::emulators::notify`].
    pub relays: Vec<(String, String)>,
}

/// The AWS clients resources are created with.
#[derive(Debug, Clone)]
pub struct ResourceClients {
    /// Kinesis.
    pub kinesis: aws_sdk_kinesis::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// S3 (path style).
    pub s3: aws_sdk_s3::Client,
    /// Firehose.
    pub firehose: aws_sdk_firehose::Client,
}

/// Creates everything `model` declares, in the order AWS needs: streams, queues (dead-letter
/// queues first), buckets, the notification relays, the bucket notifications (their target
/// queues must exist), the delivery streams.
pub async fn create(model: &Model, c: &ResourceClients) -> Result<Created, ResourceError> {
    create_streams(model, c).await?;
    let mut created = Created {
        queue_urls: create_queues(model, c).await?,
        relays: Vec::new(),
    };
    create_buckets(model, c).await?;
    let relay_arns = create_relays(model, c, &mut created).await?;
    set_notifications(model, c, &relay_arns).await?;
    create_delivery_streams(model, c).await?;
    Ok(created)
}

async fn create_streams(model: &Model, c: &ResourceClients) -> Result<(), ResourceError> {
    for s in &model.streams {
        c.kinesis
            .create_stream()
            .stream_name(&s.name)
            .shard_count(i32::try_from(s.shard_count).unwrap_or(2))
            .send()
            .await
            .map_err(|e| err("Kinesis stream", &s.name, &e))?;
        tracing::info!(stream = %s.name, shards = s.shard_count, "stream_created");
    }
    Ok(())
}

/// Queue URL per queue ARN.
async fn create_queues(
    model: &Model,
    c: &ResourceClients,
) -> Result<BTreeMap<String, String>, ResourceError> {
    let mut queue_urls = BTreeMap::new();
    // `model.queues` lists dead-letter queues first.
    for q in &model.queues {
        let mut req = c.sqs.create_queue().queue_name(&q.name).attributes(
            QueueAttributeName::VisibilityTimeout,
            q.visibility_timeout_s.to_string(),
        );
        if let Some(r) = q.retention_s {
            req = req.attributes(QueueAttributeName::MessageRetentionPeriod, r.to_string());
        }
        if q.fifo {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if let Some(r) = &q.redrive {
            let policy = serde_json::json!({
                "deadLetterTargetArn": r.dead_letter_arn,
                "maxReceiveCount": r.max_receive_count,
            });
            req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let out = req
            .send()
            .await
            .map_err(|e| err("SQS queue", &q.name, &e))?;
        let url = out.queue_url().unwrap_or(&q.url).to_owned();
        queue_urls.insert(q.arn.clone(), url);
        tracing::info!(queue = %q.name, "queue_created");
    }
    Ok(queue_urls)
}

async fn create_buckets(model: &Model, c: &ResourceClients) -> Result<(), ResourceError> {
    // Outside us-east-1, S3 (and moto) wants the region as the bucket's location constraint;
    // it is what GetBucketLocation answers, and what the Data API's COPY checks.
    let location =
        c.s3.config()
            .region()
            .map(|r| r.as_ref().to_owned())
            .filter(|r| r != "us-east-1")
            .map(|r| {
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        r.as_str(),
                    ))
                    .build()
            });
    for b in &model.buckets {
        c.s3.create_bucket()
            .bucket(&b.name)
            .set_create_bucket_configuration(location.clone())
            .send()
            .await
            .map_err(|e| err("S3 bucket", &b.name, &e))?;
        if b.versioned {
            c.s3.put_bucket_versioning()
                .bucket(&b.name)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| err("S3 bucket versioning", &b.name, &e))?;
        }
        tracing::info!(bucket = %b.name, "bucket_created");
    }
    Ok(())
}

/// S3 notifications go through a relay queue per target queue, which completes moto's
/// records to the shape S3 sends ([`crate::emulators::notify`]). Returns the relay queue's ARN
/// per target queue ARN, and adds (relay URL, target URL) to `created.relays`.
async fn create_relays(
    model: &Model,
    c: &ResourceClients,
    created: &mut Created,
) -> Result<BTreeMap<String, String>, ResourceError> {
    let mut relay_arns: BTreeMap<String, String> = BTreeMap::new();
    for n in model.buckets.iter().flat_map(|b| &b.queue_notifications) {
        if relay_arns.contains_key(&n.queue_arn) {
            continue;
        }
        let Some(target_url) = created.queue_urls.get(&n.queue_arn).cloned() else {
            return Err(ResourceError {
                kind: "S3 notification",
                name: n.queue_arn.clone(),
                message: "the target queue is not declared in the template".into(),
                retryable: false,
            });
        };
        let (prefix, target_name) = n.queue_arn.rsplit_once(':').unwrap_or(("", &n.queue_arn));
        let relay_name = crate::emulators::notify::relay_queue_name(target_name);
        let out = c
            .sqs
            .create_queue()
            .queue_name(&relay_name)
            .send()
            .await
            .map_err(|e| err("SQS relay queue", &relay_name, &e))?;
        let relay_url = out.queue_url().unwrap_or_default().to_owned();
        relay_arns.insert(n.queue_arn.clone(), format!("{prefix}:{relay_name}"));
        created.relays.push((relay_url, target_url));
    }
    Ok(relay_arns)
}

/// Each bucket's notifications, pointed at the relay queues. Called after every queue and
/// bucket exists (S3 checks the target).
async fn set_notifications(
    model: &Model,
    c: &ResourceClients,
    relay_arns: &BTreeMap<String, String>,
) -> Result<(), ResourceError> {
    for b in &model.buckets {
        if b.queue_notifications.is_empty() {
            continue;
        }
        let mut configs = Vec::new();
        for n in &b.queue_notifications {
            let target = relay_arns.get(&n.queue_arn).unwrap_or(&n.queue_arn);
            let mut rules = Vec::new();
            if let Some(p) = &n.prefix {
                rules.push(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value(p)
                        .build(),
                );
            }
            if let Some(s) = &n.suffix {
                rules.push(
                    FilterRule::builder()
                        .name(FilterRuleName::Suffix)
                        .value(s)
                        .build(),
                );
            }
            let mut qc = QueueConfiguration::builder()
                .queue_arn(target)
                .events(Event::from(n.event.as_str()));
            if !rules.is_empty() {
                qc = qc.filter(
                    NotificationConfigurationFilter::builder()
                        .key(S3KeyFilter::builder().set_filter_rules(Some(rules)).build())
                        .build(),
                );
            }
            configs.push(qc.build().map_err(|e| ResourceError {
                kind: "S3 notification",
                name: b.name.clone(),
                message: e.to_string(),
                retryable: false,
            })?);
        }
        c.s3.put_bucket_notification_configuration()
            .bucket(&b.name)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .set_queue_configurations(Some(configs))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err("S3 notification", &b.name, &e))?;
        tracing::info!(bucket = %b.name, notifications = b.queue_notifications.len(), "bucket_notifications_set");
    }
    Ok(())
}

async fn create_delivery_streams(model: &Model, c: &ResourceClients) -> Result<(), ResourceError> {
    for d in &model.delivery_streams {
        let compression = CompressionFormat::from(d.compression.as_str());
        let dest = ExtendedS3DestinationConfiguration::builder()
            .bucket_arn(format!("arn:aws:s3:::{}", d.bucket))
            .role_arn("arn:aws:iam::123456789012:role/caudal-local-firehose")
            .prefix(&d.prefix)
            .set_error_output_prefix(d.error_prefix.clone())
            .compression_format(compression)
            .buffering_hints(
                BufferingHints::builder()
                    .interval_in_seconds(60)
                    .size_in_mbs(5)
                    .build(),
            )
            .build()
            .map_err(|e| ResourceError {
                kind: "Firehose delivery stream",
                name: d.name.clone(),
                message: e.to_string(),
                retryable: false,
            })?;
        c.firehose
            .create_delivery_stream()
            .delivery_stream_name(&d.name)
            .delivery_stream_type(DeliveryStreamType::DirectPut)
            .extended_s3_destination_configuration(dest)
            .send()
            .await
            .map_err(|e| err("Firehose delivery stream", &d.name, &e))?;
        tracing::info!(delivery_stream = %d.name, bucket = %d.bucket, "delivery_stream_created");
    }
    Ok(())
}
