//! The typed model of the template: what the local stack builds, and the entry points that read
//! a template into it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::resolver::{LocalNames, Resolver};
use super::tags::yaml_to_json;
use super::{Result, TemplateError};

/// Where a Kinesis event source starts reading a shard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StartingPosition {
    /// The oldest record in the shard.
    TrimHorizon,
    /// Only records written after the poller started.
    Latest,
    /// Records from this time (epoch seconds).
    AtTimestamp(f64),
}

/// `DestinationConfig.OnFailure` of a stream event source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnFailure {
    /// The destination ARN as the template resolves it.
    pub arn: String,
    /// The queue name, when the destination is an SQS queue (the only kind emulated).
    pub queue_name: Option<String>,
}

/// A Kinesis event source of a function (SAM `Type: Kinesis` event or an
/// `AWS::Lambda::EventSourceMapping`).
#[derive(Debug, Clone, PartialEq)]
pub struct KinesisSource {
    /// Event name (SAM) or mapping logical ID.
    pub name: String,
    /// Stream ARN.
    pub stream_arn: String,
    /// Stream name (from the ARN).
    pub stream_name: String,
    /// Records per invocation (default 100).
    pub batch_size: usize,
    /// MaximumBatchingWindowInSeconds (default 0).
    pub batching_window: Duration,
    /// Where to start reading.
    pub starting_position: StartingPosition,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// BisectBatchOnFunctionError.
    pub bisect_on_error: bool,
    /// MaximumRetryAttempts; `None` = retry until the record expires (-1, the default).
    pub max_retry_attempts: Option<u32>,
    /// MaximumRecordAgeInSeconds; `None` = no limit (-1, the default).
    pub max_record_age: Option<Duration>,
    /// Where batches go when retries are exhausted.
    pub on_failure: Option<OnFailure>,
    /// ParallelizationFactor (not emulated beyond 1; see warnings).
    pub parallelization_factor: u32,
}

/// An SQS event source of a function.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsSource {
    /// Event name (SAM) or mapping logical ID.
    pub name: String,
    /// Queue ARN.
    pub queue_arn: String,
    /// Queue name (from the ARN).
    pub queue_name: String,
    /// Messages per invocation (default 10).
    pub batch_size: usize,
    /// MaximumBatchingWindowInSeconds (default 0).
    pub batching_window: Duration,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// ScalingConfig.MaximumConcurrency (None when unset).
    pub maximum_concurrency: Option<u32>,
}

/// A function of the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// Logical ID.
    pub logical_id: String,
    /// Function name (FunctionName or generated).
    pub name: String,
    /// Function ARN.
    pub arn: String,
    /// `Metadata.BuildProperties.Binary`: the package whose `invoke` runs it locally.
    pub binary: Option<String>,
    /// The execution role ARN (`Role`), when the template sets one.
    pub role_arn: Option<String>,
    /// Environment variables, references resolved to local names (Globals merged in).
    pub environment: BTreeMap<String, String>,
    /// Timeout (default 3 s).
    pub timeout: Duration,
    /// MemorySize in MB (default 128).
    pub memory_mb: u32,
    /// Kinesis event sources.
    pub kinesis: Vec<KinesisSource>,
    /// SQS event sources.
    pub sqs: Vec<SqsSource>,
}

/// A Kinesis stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Logical ID.
    pub logical_id: String,
    /// Stream name.
    pub name: String,
    /// Stream ARN.
    pub arn: String,
    /// Shards to create (ShardCount, or 2 for an on-demand stream).
    pub shard_count: u32,
}

/// A bucket notification to an SQS queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNotification {
    /// Event pattern, e.g. `s3:ObjectCreated:*`.
    pub event: String,
    /// Target queue ARN.
    pub queue_arn: String,
    /// Key prefix filter.
    pub prefix: Option<String>,
    /// Key suffix filter.
    pub suffix: Option<String>,
}

/// An S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Logical ID.
    pub logical_id: String,
    /// Bucket name.
    pub name: String,
    /// Versioning enabled.
    pub versioned: bool,
    /// Notifications to SQS.
    pub queue_notifications: Vec<QueueNotification>,
}

/// A queue's redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// Dead-letter queue ARN.
    pub dead_letter_arn: String,
    /// Receives before a message moves to the dead-letter queue.
    pub max_receive_count: u32,
}

/// An SQS queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Logical ID.
    pub logical_id: String,
    /// Queue name.
    pub name: String,
    /// Queue ARN.
    pub arn: String,
    /// Queue URL (local).
    pub url: String,
    /// FIFO queue.
    pub fifo: bool,
    /// VisibilityTimeout in seconds (default 30).
    pub visibility_timeout_s: u32,
    /// MessageRetentionPeriod in seconds, when set.
    pub retention_s: Option<u32>,
    /// RedrivePolicy.
    pub redrive: Option<Redrive>,
}

/// A Firehose delivery stream writing to S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStream {
    /// Logical ID.
    pub logical_id: String,
    /// Delivery stream name.
    pub name: String,
    /// Destination bucket name.
    pub bucket: String,
    /// Destination key prefix.
    pub prefix: String,
    /// Error output prefix.
    pub error_prefix: Option<String>,
    /// Compression format (e.g. GZIP, UNCOMPRESSED).
    pub compression: String,
}

/// The HTTP API's `CorsConfiguration` (what the local API emulates: docs/LOCAL.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `AllowOrigins`, with API Gateway's matching rules.
    pub allow_origins: caudal_core::cors::AllowedOrigins,
    /// `AllowMethods`.
    pub allow_methods: Vec<String>,
    /// `AllowHeaders`.
    pub allow_headers: Vec<String>,
    /// `ExposeHeaders`.
    pub expose_headers: Vec<String>,
    /// `MaxAge` (seconds), when set.
    pub max_age: Option<u64>,
    /// `AllowCredentials`.
    pub allow_credentials: bool,
}

/// An HTTP API route mapped to a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route key as API Gateway writes it: `POST /v1/events` or `$default`.
    pub route_key: String,
    /// Method, or `None` for ANY / `$default`.
    pub method: Option<String>,
    /// Path template (`/v1/items/{id}`, `/{proxy+}`), `None` for `$default`.
    pub path: Option<String>,
    /// Logical ID of the function it invokes.
    pub function: String,
}

/// Everything the local stack builds from the template.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Functions (with their event sources).
    pub functions: Vec<Function>,
    /// Kinesis streams.
    pub streams: Vec<Stream>,
    /// S3 buckets.
    pub buckets: Vec<Bucket>,
    /// SQS queues (dead-letter queues first, so redrive targets exist before their sources).
    pub queues: Vec<Queue>,
    /// Firehose delivery streams.
    pub delivery_streams: Vec<DeliveryStream>,
    /// HTTP routes.
    pub routes: Vec<Route>,
    /// The HTTP API's CORS configuration, when it has one.
    pub cors: Option<Cors>,
    /// The parameter values used (defaults + overrides).
    pub parameters: BTreeMap<String, String>,
    /// Things declared in the template that the local stack does not emulate.
    pub warnings: Vec<String>,
    /// The stack's outputs as CloudFormation would report them (an output whose condition is
    /// false is absent), resolved against the local names: what `caudal` reads from a stack.
    /// An output naming something the local stack does not have (a URL of a service it does
    /// not emulate) is absent, with a warning.
    pub outputs: BTreeMap<String, String>,
}

impl Model {
    /// The function whose `Metadata.BuildProperties.Binary` is `binary` (`rules-loader`…).
    pub fn function_by_binary(&self, binary: &str) -> Option<&Function> {
        self.functions
            .iter()
            .find(|f| f.binary.as_deref() == Some(binary))
    }

    /// Reads and resolves the template at `path`.
    pub fn load(path: &Path, overrides: &[(String, String)], names: &LocalNames) -> Result<Model> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Model::from_yaml(&text, overrides, names)
    }

    /// Resolves a template given as YAML text.
    pub fn from_yaml(
        text: &str,
        overrides: &[(String, String)],
        names: &LocalNames,
    ) -> Result<Model> {
        let resolver = Resolver::new(text, overrides, names)?;
        resolver.model()
    }

    /// The function with this logical ID.
    pub fn function(&self, logical_id: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.logical_id == logical_id)
    }

    /// The queue with this logical ID.
    pub fn queue(&self, logical_id: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.logical_id == logical_id)
    }

    /// The bucket with this logical ID.
    pub fn bucket(&self, logical_id: &str) -> Option<&Bucket> {
        self.buckets.iter().find(|b| b.logical_id == logical_id)
    }

    /// The queue with this ARN.
    pub fn queue_by_arn(&self, arn: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.arn == arn)
    }
}

/// The names of the parameters a template declares (to apply local defaults only to those).
pub fn declared_parameters(text: &str) -> Result<Vec<String>> {
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| TemplateError::Syntax(e.to_string()))?;
    let doc = yaml_to_json(yaml, "template")?;
    Ok(doc
        .get("Parameters")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}
