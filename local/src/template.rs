//! Reading `template.yaml` into the model the local stack runs.
//!
//! The SAM template is the single source of truth: the functions, their environment variables
//! and event sources, the HTTP routes, streams, buckets, queues and delivery streams are all
//! taken from it. Nothing here knows a logical ID; a new event source, queue or environment
//! variable in the template shows up locally without touching this crate.
//!
//! Reading happens in three steps:
//! 1. YAML (with CloudFormation short tags such as `!Ref`, `!Sub`, `!GetAtt`, `!If`) is parsed
//!    and the short tags are rewritten to their long form (`{"Fn::Sub": …}`), giving plain JSON.
//! 2. Values are resolved lazily through [`Resolver`]: parameters take their `Default` (or an
//!    override), pseudo parameters take local values ([`LocalNames`]), conditions are evaluated
//!    and references resolve to **local** physical names (`caudal-local-<logicalid>` unless the
//!    template names the resource itself). Only the values the local stack needs are resolved,
//!    so IAM policies or dashboards using exotic intrinsics do not get in the way; an intrinsic
//!    the resolver does not implement is a [`TemplateError::UnsupportedIntrinsic`] naming it.
//! 3. The resolved resources are turned into the typed [`Model`]. Anything the template declares
//!    that the local stack does not emulate (a Lambda filter pattern, an SNS notification…) is
//!    listed in [`Model::warnings`] instead of being dropped silently.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

/// A problem in the template or in the overrides. Always permanent: fix the template or the
/// `--param` values and start again.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The template path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not YAML or has a shape CloudFormation would refuse.
    #[error("template is not valid: {0}")]
    Syntax(String),
    /// An intrinsic function this resolver does not implement was needed.
    #[error(
        "{at}: intrinsic function {name} is not supported by the local stack (supported: Ref, \
         Condition, Fn::GetAtt, Fn::Sub, Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or, Fn::Join, \
         Fn::Select, Fn::Split, Fn::FindInMap, Fn::Base64, Fn::GetAZs)"
    )]
    UnsupportedIntrinsic {
        /// Where in the template (resource and property path).
        at: String,
        /// The intrinsic's name.
        name: String,
    },
    /// A parameter has neither a default nor an override.
    #[error("parameter {0} has no Default in the template: pass --param {0}=VALUE")]
    MissingParameter(String),
    /// An override names a parameter the template does not declare.
    #[error("--param {0}: the template declares no such parameter")]
    UnknownParameter(String),
    /// A parameter value is not one of its AllowedValues.
    #[error("parameter {name}={value:?} is not one of {allowed:?}")]
    NotAllowed {
        /// Parameter name.
        name: String,
        /// The refused value.
        value: String,
        /// The template's AllowedValues.
        allowed: Vec<String>,
    },
    /// A template rule (`Rules` section) does not hold for the parameter values.
    #[error("template rule {rule} failed: {message} (set parameters with --param NAME=VALUE)")]
    RuleFailed {
        /// Rule name.
        rule: String,
        /// The rule's AssertDescription.
        message: String,
    },
    /// A value has the wrong shape or refers to something that does not exist.
    #[error("{at}: {message}")]
    Invalid {
        /// Where in the template.
        at: String,
        /// What is wrong.
        message: String,
    },
}

impl TemplateError {
    /// Template errors never go away by retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }

    fn invalid(at: &str, message: impl Into<String>) -> TemplateError {
        TemplateError::Invalid {
            at: at.to_owned(),
            message: message.into(),
        }
    }
}

type Result<T, E = TemplateError> = std::result::Result<T, E>;

/// The local values of the pseudo parameters and the naming scheme for resources.
#[derive(Debug, Clone)]
pub struct LocalNames {
    /// `AWS::StackName`, also the prefix of generated physical names.
    pub stack_name: String,
    /// `AWS::AccountId` (moto's default account, so ARNs moto builds agree with ours).
    pub account_id: String,
    /// `AWS::Region`.
    pub region: String,
    /// Base of SQS queue URLs (`<base>/<account>/<name>`), i.e. the emulator's endpoint.
    pub sqs_base_url: String,
}

impl LocalNames {
    /// The names used by the local stack, with SQS URLs under `sqs_base_url`.
    pub fn local(sqs_base_url: &str) -> LocalNames {
        LocalNames {
            stack_name: "caudal-local".to_owned(),
            account_id: "123456789012".to_owned(),
            region: "us-east-1".to_owned(),
            sqs_base_url: sqs_base_url.trim_end_matches('/').to_owned(),
        }
    }

    fn stack_id(&self) -> String {
        format!(
            "arn:aws:cloudformation:{}:{}:stack/{}/10ca1000-5eed-4000-8000-00000000ca0d",
            self.region, self.account_id, self.stack_name
        )
    }

    /// The physical name given to a resource the template does not name:
    /// `<stack>-<logical id in lower case>`.
    pub fn generated(&self, logical_id: &str) -> String {
        format!("{}-{}", self.stack_name, logical_id.to_ascii_lowercase())
    }
}

// ------------------------------------------------------------------------------------------
// The model.

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
    /// The parameter values used (defaults + overrides).
    pub parameters: BTreeMap<String, String>,
    /// Things declared in the template that the local stack does not emulate.
    pub warnings: Vec<String>,
}

impl Model {
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

// ------------------------------------------------------------------------------------------
// Parsing: YAML with short tags -> JSON with long-form intrinsics.

fn yaml_to_json(v: serde_yaml_ng::Value, at: &str) -> Result<Value> {
    use serde_yaml_ng::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| {
                        TemplateError::Syntax(format!("{at}: number {n} is not finite"))
                    })?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(|i| yaml_to_json(i, at))
                .collect::<Result<_>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => {
                        return Err(TemplateError::Syntax(format!(
                            "{at}: mapping key {other:?} is not a string"
                        )));
                    }
                };
                let child = format!("{at}.{key}");
                out.insert(key, yaml_to_json(v, &child)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = yaml_to_json(t.value, at)?;
            let long = match name {
                "Ref" => "Ref".to_owned(),
                "Condition" => "Condition".to_owned(),
                "GetAtt" => {
                    // `!GetAtt A.B` is a string; the long form is a list.
                    let inner = match inner {
                        Value::String(s) => match s.split_once('.') {
                            Some((res, attr)) => Value::Array(vec![res.into(), attr.into()]),
                            None => {
                                return Err(TemplateError::Syntax(format!(
                                    "{at}: !GetAtt {s} needs Resource.Attribute"
                                )));
                            }
                        },
                        other => other,
                    };
                    let mut m = Map::new();
                    m.insert("Fn::GetAtt".into(), inner);
                    return Ok(Value::Object(m));
                }
                other => format!("Fn::{other}"),
            };
            let mut m = Map::new();
            m.insert(long, inner);
            Value::Object(m)
        }
    })
}

/// A one-key object whose key is an intrinsic function name.
fn intrinsic(v: &Value) -> Option<(&str, &Value)> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let (k, arg) = obj.iter().next()?;
    if k == "Ref" || k.starts_with("Fn::") || (k == "Condition" && arg.is_string()) {
        Some((k.as_str(), arg))
    } else {
        None
    }
}

#[derive(Debug, Clone)]
struct Resource {
    kind: String,
    properties: Value,
    metadata: Value,
    condition: Option<String>,
}

/// Resolves values of one template against the local names.
pub struct Resolver {
    names: LocalNames,
    parameters: BTreeMap<String, Value>,
    conditions: Map<String, Value>,
    mappings: Map<String, Value>,
    rules: Map<String, Value>,
    resources: BTreeMap<String, Resource>,
    globals_function: Value,
}

const MAX_DEPTH: usize = 64;

impl Resolver {
    /// Parses `text` and fixes the parameter values (defaults + `overrides`).
    pub fn new(text: &str, overrides: &[(String, String)], names: &LocalNames) -> Result<Resolver> {
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| TemplateError::Syntax(e.to_string()))?;
        let doc = yaml_to_json(yaml, "template")?;
        let doc = doc
            .as_object()
            .ok_or_else(|| TemplateError::Syntax("the template is not a mapping".into()))?;
        let section = |name: &str| -> Map<String, Value> {
            doc.get(name)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };

        let declared = section("Parameters");
        for (k, _) in overrides {
            if !declared.contains_key(k) {
                return Err(TemplateError::UnknownParameter(k.clone()));
            }
        }
        let mut parameters = BTreeMap::new();
        for (name, decl) in &declared {
            let ty = decl.get("Type").and_then(Value::as_str).unwrap_or("String");
            let value = match overrides.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => v.clone(),
                None => match decl.get("Default") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(scalar_string)
                        .collect::<Option<Vec<_>>>()
                        .map(|v| v.join(","))
                        .ok_or_else(|| {
                            TemplateError::invalid(
                                &format!("Parameters.{name}.Default"),
                                "list of non-scalars",
                            )
                        })?,
                    _ => return Err(TemplateError::MissingParameter(name.clone())),
                },
            };
            if let Some(Value::Array(allowed)) = decl.get("AllowedValues") {
                let allowed: Vec<String> = allowed.iter().filter_map(scalar_string).collect();
                if !allowed.contains(&value) {
                    return Err(TemplateError::NotAllowed {
                        name: name.clone(),
                        value,
                        allowed,
                    });
                }
            }
            let resolved = if ty == "CommaDelimitedList" || ty.starts_with("List<") {
                if value.is_empty() {
                    Value::Array(vec![Value::String(String::new())])
                } else {
                    Value::Array(
                        value
                            .split(',')
                            .map(|s| Value::String(s.trim().to_owned()))
                            .collect(),
                    )
                }
            } else {
                Value::String(value)
            };
            parameters.insert(name.clone(), resolved);
        }

        let mut resources = BTreeMap::new();
        for (id, r) in section("Resources") {
            let kind = r
                .get("Type")
                .and_then(Value::as_str)
                .ok_or_else(|| TemplateError::invalid(&format!("Resources.{id}"), "no Type"))?
                .to_owned();
            let condition = r
                .get("Condition")
                .and_then(Value::as_str)
                .map(str::to_owned);
            resources.insert(
                id,
                Resource {
                    kind,
                    properties: r
                        .get("Properties")
                        .cloned()
                        .unwrap_or(Value::Object(Map::new())),
                    metadata: r.get("Metadata").cloned().unwrap_or(Value::Null),
                    condition,
                },
            );
        }
        let globals_function = doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .cloned()
            .unwrap_or(Value::Null);
        Ok(Resolver {
            names: names.clone(),
            parameters,
            conditions: section("Conditions"),
            mappings: section("Mappings"),
            rules: section("Rules"),
            resources,
            globals_function,
        })
    }

    /// Evaluates the named condition.
    pub fn condition(&self, name: &str) -> Result<bool> {
        self.condition_at(name, 0)
    }

    fn condition_at(&self, name: &str, depth: usize) -> Result<bool> {
        let at = format!("Conditions.{name}");
        if depth > MAX_DEPTH {
            return Err(TemplateError::invalid(
                &at,
                "conditions refer to each other in a cycle",
            ));
        }
        let expr = self
            .conditions
            .get(name)
            .ok_or_else(|| TemplateError::invalid(&at, "no such condition"))?;
        let v = self.eval(expr, &at, depth + 1)?;
        v.as_ref()
            .and_then(Value::as_bool)
            .ok_or_else(|| TemplateError::invalid(&at, "does not evaluate to a boolean"))
    }

    fn resource_enabled(&self, r: &Resource) -> Result<bool> {
        match &r.condition {
            Some(c) => self.condition(c),
            None => Ok(true),
        }
    }

    /// Resolves every intrinsic in `v`. `Ok(None)` means `AWS::NoValue` (the property is absent).
    pub fn resolve(&self, v: &Value, at: &str) -> Result<Option<Value>> {
        self.eval(v, at, 0)
    }

    fn eval(&self, v: &Value, at: &str, depth: usize) -> Result<Option<Value>> {
        if depth > MAX_DEPTH {
            return Err(TemplateError::invalid(
                at,
                "references nest too deeply (a cycle?)",
            ));
        }
        if let Some((name, arg)) = intrinsic(v) {
            return self.eval_intrinsic(name, arg, at, depth + 1);
        }
        Ok(Some(match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(x) = self.eval(item, &format!("{at}[{i}]"), depth + 1)? {
                        out.push(x);
                    }
                }
                Value::Array(out)
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, item) in m {
                    if let Some(x) = self.eval(item, &format!("{at}.{k}"), depth + 1)? {
                        out.insert(k.clone(), x);
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }))
    }

    fn eval_required(&self, v: &Value, at: &str, depth: usize) -> Result<Value> {
        self.eval(v, at, depth)?
            .ok_or_else(|| TemplateError::invalid(at, "AWS::NoValue is not allowed here"))
    }

    fn eval_string(&self, v: &Value, at: &str, depth: usize) -> Result<String> {
        let x = self.eval_required(v, at, depth)?;
        scalar_string(&x)
            .ok_or_else(|| TemplateError::invalid(at, format!("expected a string, got {x}")))
    }

    fn eval_list(&self, v: &Value, at: &str, depth: usize) -> Result<Vec<Value>> {
        match self.eval_required(v, at, depth)? {
            Value::Array(items) => Ok(items),
            other => Err(TemplateError::invalid(
                at,
                format!("expected a list, got {other}"),
            )),
        }
    }

    fn eval_intrinsic(
        &self,
        name: &str,
        arg: &Value,
        at: &str,
        depth: usize,
    ) -> Result<Option<Value>> {
        let at_fn = format!("{at} ({name})");
        let args = |n: usize| -> Result<&Vec<Value>> {
            match arg.as_array() {
                Some(a) if a.len() == n => Ok(a),
                _ => Err(TemplateError::invalid(
                    &at_fn,
                    format!("expects a list of {n} arguments"),
                )),
            }
        };
        match name {
            "Ref" => {
                let target = self.eval_string(arg, &at_fn, depth)?;
                self.reference(&target, &at_fn, depth)
            }
            "Condition" => {
                let c = arg.as_str().unwrap_or_default();
                Ok(Some(Value::Bool(self.condition_at(c, depth)?)))
            }
            "Fn::GetAtt" => {
                let a = args(2)?;
                let res = self.eval_string(&a[0], &at_fn, depth)?;
                let attr = self.eval_string(&a[1], &at_fn, depth)?;
                self.get_att(&res, &attr, &at_fn, depth)
                    .map(|s| Some(Value::String(s)))
            }
            "Fn::Sub" => {
                let (text, vars) = match arg {
                    Value::String(s) => (s.clone(), Map::new()),
                    Value::Array(a) if a.len() == 2 => {
                        let text = self.eval_string(&a[0], &at_fn, depth)?;
                        let vars = match self.eval_required(&a[1], &at_fn, depth)? {
                            Value::Object(m) => m,
                            _ => {
                                return Err(TemplateError::invalid(
                                    &at_fn,
                                    "variables must be a mapping",
                                ));
                            }
                        };
                        (text, vars)
                    }
                    _ => {
                        return Err(TemplateError::invalid(
                            &at_fn,
                            "expects a string or [string, mapping]",
                        ));
                    }
                };
                self.sub(&text, &vars, &at_fn, depth)
                    .map(|s| Some(Value::String(s)))
            }
            "Fn::If" => {
                let a = args(3)?;
                let cond = a[0].as_str().ok_or_else(|| {
                    TemplateError::invalid(&at_fn, "first argument must be a condition name")
                })?;
                let branch = if self.condition_at(cond, depth)? {
                    &a[1]
                } else {
                    &a[2]
                };
                self.eval(branch, at, depth)
            }
            "Fn::Equals" => {
                let a = args(2)?;
                let l = self.eval_required(&a[0], &at_fn, depth)?;
                let r = self.eval_required(&a[1], &at_fn, depth)?;
                let eq = match (scalar_string(&l), scalar_string(&r)) {
                    (Some(x), Some(y)) => x == y,
                    _ => l == r,
                };
                Ok(Some(Value::Bool(eq)))
            }
            "Fn::Not" => {
                let a = args(1)?;
                let b = self.eval_bool(&a[0], &at_fn, depth)?;
                Ok(Some(Value::Bool(!b)))
            }
            "Fn::And" | "Fn::Or" => {
                let a = arg.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                    TemplateError::invalid(&at_fn, "expects a list of conditions")
                })?;
                let mut acc = name == "Fn::And";
                for c in a {
                    let b = self.eval_bool(c, &at_fn, depth)?;
                    acc = if name == "Fn::And" {
                        acc && b
                    } else {
                        acc || b
                    };
                }
                Ok(Some(Value::Bool(acc)))
            }
            "Fn::Join" => {
                let a = args(2)?;
                let sep = self.eval_string(&a[0], &at_fn, depth)?;
                let parts = self.eval_list(&a[1], &at_fn, depth)?;
                let parts: Vec<String> = parts
                    .iter()
                    .map(|p| {
                        scalar_string(p)
                            .ok_or_else(|| TemplateError::invalid(&at_fn, "parts must be strings"))
                    })
                    .collect::<Result<_>>()?;
                Ok(Some(Value::String(parts.join(&sep))))
            }
            "Fn::Select" => {
                let a = args(2)?;
                let idx = self.eval_string(&a[0], &at_fn, depth)?;
                let idx: usize = idx.parse().map_err(|_| {
                    TemplateError::invalid(&at_fn, format!("index {idx:?} is not a number"))
                })?;
                let list = self.eval_list(&a[1], &at_fn, depth)?;
                list.into_iter().nth(idx).map(Some).ok_or_else(|| {
                    TemplateError::invalid(&at_fn, format!("index {idx} out of range"))
                })
            }
            "Fn::Split" => {
                let a = args(2)?;
                let sep = self.eval_string(&a[0], &at_fn, depth)?;
                let s = self.eval_string(&a[1], &at_fn, depth)?;
                if sep.is_empty() {
                    return Err(TemplateError::invalid(&at_fn, "empty delimiter"));
                }
                Ok(Some(Value::Array(
                    s.split(sep.as_str())
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                )))
            }
            "Fn::FindInMap" => {
                let a = args(3)?;
                let map = self.eval_string(&a[0], &at_fn, depth)?;
                let k1 = self.eval_string(&a[1], &at_fn, depth)?;
                let k2 = self.eval_string(&a[2], &at_fn, depth)?;
                let v = self
                    .mappings
                    .get(&map)
                    .and_then(|m| m.get(&k1))
                    .and_then(|m| m.get(&k2))
                    .ok_or_else(|| {
                        TemplateError::invalid(&at_fn, format!("no {map}.{k1}.{k2} in Mappings"))
                    })?;
                self.eval(v, &at_fn, depth)
            }
            "Fn::Base64" => {
                use base64::Engine as _;
                let s = self.eval_string(arg, &at_fn, depth)?;
                Ok(Some(Value::String(
                    base64::engine::general_purpose::STANDARD.encode(s),
                )))
            }
            "Fn::GetAZs" => Ok(Some(Value::Array(
                ["a", "b", "c"]
                    .iter()
                    .map(|z| Value::String(format!("{}{z}", self.names.region)))
                    .collect(),
            ))),
            other => Err(TemplateError::UnsupportedIntrinsic {
                at: at.to_owned(),
                name: other.to_owned(),
            }),
        }
    }

    fn eval_bool(&self, v: &Value, at: &str, depth: usize) -> Result<bool> {
        match self.eval_required(v, at, depth)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
            other => Err(TemplateError::invalid(
                at,
                format!("expected a condition, got {other}"),
            )),
        }
    }

    fn sub(&self, text: &str, vars: &Map<String, Value>, at: &str, depth: usize) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| TemplateError::invalid(at, "unterminated ${ in Fn::Sub"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                // `${!Literal}` writes `${Literal}`.
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(&scalar_string(v).ok_or_else(|| {
                    TemplateError::invalid(at, format!("variable {name} is not a string"))
                })?);
            } else if let Some((res, attr)) = name
                .split_once('.')
                .filter(|(r, _)| self.resources.contains_key(*r))
            {
                out.push_str(&self.get_att(res, attr, at, depth)?);
            } else {
                let v = self.reference(name, at, depth)?.ok_or_else(|| {
                    TemplateError::invalid(at, format!("${{{name}}} is AWS::NoValue"))
                })?;
                out.push_str(&scalar_string(&v).ok_or_else(|| {
                    TemplateError::invalid(at, format!("${{{name}}} is not a string"))
                })?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `Ref` of a parameter, pseudo parameter or resource.
    fn reference(&self, target: &str, at: &str, depth: usize) -> Result<Option<Value>> {
        let n = &self.names;
        let pseudo = match target {
            "AWS::NoValue" => return Ok(None),
            "AWS::AccountId" => Some(n.account_id.clone()),
            "AWS::Region" => Some(n.region.clone()),
            "AWS::StackName" => Some(n.stack_name.clone()),
            "AWS::StackId" => Some(n.stack_id()),
            "AWS::Partition" => Some("aws".to_owned()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
            "AWS::NotificationARNs" => return Ok(Some(Value::Array(vec![]))),
            _ => None,
        };
        if let Some(p) = pseudo {
            return Ok(Some(Value::String(p)));
        }
        if let Some(p) = self.parameters.get(target) {
            return Ok(Some(p.clone()));
        }
        if self.resources.contains_key(target) {
            return self
                .resource_ref(target, at, depth)
                .map(|s| Some(Value::String(s)));
        }
        Err(TemplateError::invalid(
            at,
            format!("Ref to unknown parameter or resource {target}"),
        ))
    }

    fn resource(&self, id: &str, at: &str) -> Result<&Resource> {
        self.resources
            .get(id)
            .ok_or_else(|| TemplateError::invalid(at, format!("no resource {id}")))
    }

    /// The physical name of a resource: its name property when the template sets one, else
    /// `<stack>-<logical id>`.
    pub fn physical_name(&self, id: &str) -> Result<String> {
        self.physical_name_at(id, &format!("Resources.{id}"), 0)
    }

    fn physical_name_at(&self, id: &str, at: &str, depth: usize) -> Result<String> {
        let r = self.resource(id, at)?;
        let prop = match r.kind.as_str() {
            "AWS::S3::Bucket" => "BucketName",
            "AWS::SQS::Queue" => "QueueName",
            "AWS::Kinesis::Stream" => "Name",
            "AWS::KinesisFirehose::DeliveryStream" => "DeliveryStreamName",
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => "FunctionName",
            "AWS::IAM::Role" => "RoleName",
            "AWS::Logs::LogGroup" => "LogGroupName",
            "AWS::SNS::Topic" => "TopicName",
            _ => "",
        };
        if let Some(v) = r.properties.get(prop).filter(|_| !prop.is_empty()) {
            let at = format!("Resources.{id}.Properties.{prop}");
            if let Some(v) = self.eval(v, &at, depth + 1)? {
                return scalar_string(&v)
                    .ok_or_else(|| TemplateError::invalid(&at, "must be a string"));
            }
        }
        let mut name = self.names.generated(id);
        if r.kind == "AWS::SQS::Queue"
            && r.properties.get("FifoQueue").and_then(Value::as_bool) == Some(true)
        {
            name.push_str(".fifo");
        }
        Ok(name)
    }

    fn resource_ref(&self, id: &str, at: &str, depth: usize) -> Result<String> {
        let r = self.resource(id, at)?;
        let name = self.physical_name_at(id, at, depth)?;
        let n = &self.names;
        Ok(match r.kind.as_str() {
            "AWS::SQS::Queue" => format!("{}/{}/{}", n.sqs_base_url, n.account_id, name),
            "AWS::SNS::Topic" => format!("arn:aws:sns:{}:{}:{}", n.region, n.account_id, name),
            // API and integration ids are opaque; the logical ID keeps them readable and lets
            // a route's `integrations/<id>` target be mapped back to its resource.
            "AWS::ApiGatewayV2::Api"
            | "AWS::ApiGatewayV2::Integration"
            | "AWS::ApiGatewayV2::Authorizer"
            | "AWS::Serverless::HttpApi" => id.to_owned(),
            _ => name,
        })
    }

    fn get_att(&self, id: &str, attr: &str, at: &str, depth: usize) -> Result<String> {
        let r = self.resource(id, at)?;
        let name = self.physical_name_at(id, at, depth)?;
        let n = &self.names;
        let (region, account) = (&n.region, &n.account_id);
        let unsupported = || {
            TemplateError::invalid(
                at,
                format!(
                    "Fn::GetAtt {id}.{attr}: attribute not supported locally for {}",
                    r.kind
                ),
            )
        };
        Ok(match (r.kind.as_str(), attr) {
            ("AWS::S3::Bucket", "Arn") => format!("arn:aws:s3:::{name}"),
            ("AWS::S3::Bucket", "DomainName") => format!("{name}.s3.amazonaws.com"),
            ("AWS::S3::Bucket", "RegionalDomainName") => {
                format!("{name}.s3.{region}.amazonaws.com")
            }
            ("AWS::SQS::Queue", "Arn") => format!("arn:aws:sqs:{region}:{account}:{name}"),
            ("AWS::SQS::Queue", "QueueName") => name,
            ("AWS::SQS::Queue", "QueueUrl") => self.resource_ref(id, at, depth)?,
            ("AWS::Kinesis::Stream", "Arn") => {
                format!("arn:aws:kinesis:{region}:{account}:stream/{name}")
            }
            ("AWS::KinesisFirehose::DeliveryStream", "Arn") => {
                format!("arn:aws:firehose:{region}:{account}:deliverystream/{name}")
            }
            ("AWS::Serverless::Function" | "AWS::Lambda::Function", "Arn") => {
                format!("arn:aws:lambda:{region}:{account}:function:{name}")
            }
            ("AWS::IAM::Role", "Arn") => format!("arn:aws:iam::{account}:role/{name}"),
            ("AWS::IAM::Role", "RoleId") => format!("AROA{}", name.to_ascii_uppercase()),
            ("AWS::Logs::LogGroup", "Arn") => {
                format!("arn:aws:logs:{region}:{account}:log-group:{name}:*")
            }
            ("AWS::KMS::Key", "Arn") => format!("arn:aws:kms:{region}:{account}:key/{name}"),
            ("AWS::KMS::Key", "KeyId") => name,
            ("AWS::SNS::Topic", "TopicArn") => format!("arn:aws:sns:{region}:{account}:{name}"),
            ("AWS::SNS::Topic", "TopicName") => name,
            ("AWS::ApiGatewayV2::Api" | "AWS::Serverless::HttpApi", "ApiEndpoint") => {
                "http://127.0.0.1".to_owned()
            }
            (_, "Arn") => {
                // Unknown resource types still get a stable, well-formed ARN so templates that
                // grow new resources keep resolving.
                let service = r
                    .kind
                    .split("::")
                    .nth(1)
                    .unwrap_or("unknown")
                    .to_ascii_lowercase();
                format!("arn:aws:{service}:{region}:{account}:{name}")
            }
            _ => return Err(unsupported()),
        })
    }

    /// The properties of a resource with SAM `Globals.Function` merged in (functions only),
    /// fully resolved.
    fn properties(&self, id: &str) -> Result<Map<String, Value>> {
        let r = self.resource(id, &format!("Resources.{id}"))?;
        let raw = if r.kind == "AWS::Serverless::Function" && !self.globals_function.is_null() {
            merge_globals(&self.globals_function, &r.properties)
        } else {
            r.properties.clone()
        };
        match self.eval(&raw, &format!("Resources.{id}.Properties"), 0)? {
            Some(Value::Object(m)) => Ok(m),
            Some(_) => Err(TemplateError::invalid(
                &format!("Resources.{id}"),
                "Properties is not a mapping",
            )),
            None => Ok(Map::new()),
        }
    }

    /// Builds the model.
    pub fn model(&self) -> Result<Model> {
        let mut m = Model {
            parameters: self
                .parameters
                .iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::Array(items) => items
                            .iter()
                            .filter_map(scalar_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        other => scalar_string(other).unwrap_or_default(),
                    };
                    (k.clone(), s)
                })
                .collect(),
            ..Model::default()
        };
        let mut integrations: HashMap<String, String> = HashMap::new();
        let mut route_resources = Vec::new();
        let mut mappings = Vec::new();
        for (id, r) in &self.resources {
            if !self.resource_enabled(r)? {
                continue;
            }
            match r.kind.as_str() {
                "AWS::Serverless::Function" | "AWS::Lambda::Function" => {
                    let f = self.function(id, r, &mut m.warnings, &mut m.routes)?;
                    m.functions.push(f);
                }
                "AWS::Kinesis::Stream" => m.streams.push(self.stream(id)?),
                "AWS::S3::Bucket" => m.buckets.push(self.bucket(id, &mut m.warnings)?),
                "AWS::SQS::Queue" => m.queues.push(self.queue(id)?),
                "AWS::KinesisFirehose::DeliveryStream" => {
                    if let Some(d) = self.delivery_stream(id, &mut m.warnings)? {
                        m.delivery_streams.push(d);
                    }
                }
                "AWS::ApiGatewayV2::Integration" => {
                    let p = self.properties(id)?;
                    if let Some(uri) = p.get("IntegrationUri").and_then(scalar_string) {
                        integrations.insert(id.clone(), uri);
                    }
                }
                "AWS::ApiGatewayV2::Route" => route_resources.push(id.clone()),
                "AWS::Lambda::EventSourceMapping" => mappings.push(id.clone()),
                "AWS::Serverless::Api" | "AWS::ApiGateway::RestApi" => m.warnings.push(format!(
                    "{id}: REST APIs (v1) are not emulated; only HTTP API routes are served"
                )),
                _ => {}
            }
        }
        self.check_rules()?;
        for id in route_resources {
            self.route_resource(&id, &integrations, &mut m)?;
        }
        for id in mappings {
            self.event_source_mapping(&id, &mut m)?;
        }
        // Dead-letter queues first: a redrive policy must name an existing queue.
        let dlqs: Vec<String> = m
            .queues
            .iter()
            .filter_map(|q| q.redrive.as_ref().map(|r| r.dead_letter_arn.clone()))
            .collect();
        m.queues.sort_by_key(|q| !dlqs.contains(&q.arn));
        for f in &m.functions {
            if f.binary.is_none() {
                m.warnings.push(format!(
                    "{}: no Metadata.BuildProperties.Binary, so no local implementation; its events are ignored",
                    f.logical_id
                ));
            }
        }
        Ok(m)
    }

    /// Evaluates the template's `Rules` assertions, as CloudFormation does before creating
    /// anything, so a missing parameter override fails with the template's own explanation.
    fn check_rules(&self) -> Result<()> {
        for (name, rule) in &self.rules {
            let at = format!("Rules.{name}");
            if let Some(cond) = rule.get("RuleCondition")
                && !self.eval_bool(cond, &format!("{at}.RuleCondition"), 0)?
            {
                continue;
            }
            let assertions = rule.get("Assertions").and_then(Value::as_array);
            for (i, a) in assertions.into_iter().flatten().enumerate() {
                let aat = format!("{at}.Assertions[{i}]");
                let expr = a
                    .get("Assert")
                    .ok_or_else(|| TemplateError::invalid(&aat, "no Assert"))?;
                if !self.eval_bool(expr, &aat, 0)? {
                    let why = a
                        .get("AssertDescription")
                        .and_then(Value::as_str)
                        .unwrap_or("assertion failed");
                    return Err(TemplateError::RuleFailed {
                        rule: name.clone(),
                        message: why.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    fn function(
        &self,
        id: &str,
        r: &Resource,
        warnings: &mut Vec<String>,
        routes: &mut Vec<Route>,
    ) -> Result<Function> {
        let p = self.properties(id)?;
        let at = format!("Resources.{id}.Properties");
        let name = self.physical_name(id)?;
        let arn = self.get_att(id, "Arn", &at, 0)?;
        let binary = r
            .metadata
            .get("BuildProperties")
            .and_then(|b| b.get("Binary"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut environment = BTreeMap::new();
        if let Some(vars) = p
            .get("Environment")
            .and_then(|e| e.get("Variables"))
            .and_then(Value::as_object)
        {
            for (k, v) in vars {
                let s = scalar_string(v).ok_or_else(|| {
                    TemplateError::invalid(
                        &format!("{at}.Environment.Variables.{k}"),
                        "must resolve to a string",
                    )
                })?;
                environment.insert(k.clone(), s);
            }
        }
        let timeout = Duration::from_secs(opt_u64(&p, "Timeout", &at)?.unwrap_or(3));
        let memory_mb = opt_u64(&p, "MemorySize", &at)?.unwrap_or(128) as u32;
        let role_arn = p.get("Role").and_then(scalar_string);
        let mut f = Function {
            logical_id: id.to_owned(),
            name,
            arn,
            binary,
            role_arn,
            environment,
            timeout,
            memory_mb,
            kinesis: vec![],
            sqs: vec![],
        };
        if let Some(events) = p.get("Events").and_then(Value::as_object) {
            for (ev_name, ev) in events {
                let ev_at = format!("{at}.Events.{ev_name}");
                let kind = ev.get("Type").and_then(Value::as_str).unwrap_or_default();
                let empty = Map::new();
                let props = ev
                    .get("Properties")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                match kind {
                    "Kinesis" => {
                        let arn = req_str(props, "Stream", &ev_at)?;
                        f.kinesis
                            .push(kinesis_source(ev_name, &arn, props, &ev_at, warnings)?);
                    }
                    "SQS" => {
                        let arn = req_str(props, "Queue", &ev_at)?;
                        f.sqs
                            .push(sqs_source(ev_name, &arn, props, &ev_at, warnings)?);
                    }
                    "HttpApi" => {
                        let method = props.get("Method").and_then(scalar_string);
                        let path = props.get("Path").and_then(scalar_string);
                        let fmt = props
                            .get("PayloadFormatVersion")
                            .and_then(scalar_string)
                            .unwrap_or_else(|| "2.0".into());
                        if fmt != "2.0" {
                            warnings.push(format!(
                                "{ev_at}: payload format {fmt} is not emulated (only 2.0)"
                            ));
                            continue;
                        }
                        routes.push(route_from(method.as_deref(), path.as_deref(), id));
                    }
                    other => warnings.push(format!(
                        "{ev_at}: event type {other} is not emulated locally"
                    )),
                }
            }
        }
        Ok(f)
    }

    fn route_resource(
        &self,
        id: &str,
        integrations: &HashMap<String, String>,
        m: &mut Model,
    ) -> Result<()> {
        let at = format!("Resources.{id}.Properties");
        let p = self.properties(id)?;
        let key = req_str(&p, "RouteKey", &at)?;
        let Some(target) = p.get("Target").and_then(scalar_string) else {
            m.warnings
                .push(format!("{id}: route {key} has no Target; not served"));
            return Ok(());
        };
        let integration = target.strip_prefix("integrations/").unwrap_or(&target);
        let uri = integrations.get(integration).ok_or_else(|| {
            TemplateError::invalid(
                &at,
                format!("Target {target} is not an integration of this template"),
            )
        })?;
        if let Ok(ip) = self.properties(integration) {
            let fmt = ip
                .get("PayloadFormatVersion")
                .and_then(scalar_string)
                .unwrap_or_else(|| "2.0".into());
            if fmt != "2.0" {
                m.warnings.push(format!(
                    "{id}: payload format {fmt} is not emulated (only 2.0); route not served"
                ));
                return Ok(());
            }
        }
        let Some(function) = m.functions.iter().find(|f| uri.contains(&f.arn)) else {
            m.warnings.push(format!(
                "{id}: integration {integration} does not target a function of this template"
            ));
            return Ok(());
        };
        let route = if key == "$default" {
            route_from(None, None, &function.logical_id)
        } else {
            let (method, path) = key.split_once(' ').ok_or_else(|| {
                TemplateError::invalid(&at, format!("RouteKey {key:?} is not 'METHOD /path'"))
            })?;
            route_from(Some(method), Some(path), &function.logical_id)
        };
        m.routes.push(route);
        Ok(())
    }

    fn event_source_mapping(&self, id: &str, m: &mut Model) -> Result<()> {
        let at = format!("Resources.{id}.Properties");
        let p = self.properties(id)?;
        let source = req_str(&p, "EventSourceArn", &at)?;
        let fname = req_str(&p, "FunctionName", &at)?;
        let Some(f) = m.functions.iter_mut().find(|f| {
            f.name == fname || f.arn == fname || fname.starts_with(&format!("{}:", f.arn))
        }) else {
            m.warnings.push(format!(
                "{id}: function {fname} is not in this template; mapping ignored"
            ));
            return Ok(());
        };
        if source.starts_with("arn:aws:kinesis:") {
            f.kinesis
                .push(kinesis_source(id, &source, &p, &at, &mut m.warnings)?);
        } else if source.starts_with("arn:aws:sqs:") {
            f.sqs
                .push(sqs_source(id, &source, &p, &at, &mut m.warnings)?);
        } else {
            m.warnings.push(format!(
                "{id}: event source {source} is not emulated locally"
            ));
        }
        Ok(())
    }

    fn stream(&self, id: &str) -> Result<Stream> {
        let at = format!("Resources.{id}.Properties");
        let p = self.properties(id)?;
        let mode = p
            .get("StreamModeDetails")
            .and_then(|d| d.get("StreamMode"))
            .and_then(scalar_string)
            .unwrap_or_else(|| "PROVISIONED".into());
        // On-demand streams start with 4 shards in AWS; two are enough to exercise per-shard
        // ordering and parallel pollers without loading a 2-core laptop.
        let shard_count = match (mode.as_str(), opt_u64(&p, "ShardCount", &at)?) {
            ("ON_DEMAND", _) | (_, None) => 2,
            (_, Some(n)) => u32::try_from(n.clamp(1, 64)).unwrap_or(2),
        };
        let name = self.physical_name(id)?;
        Ok(Stream {
            logical_id: id.to_owned(),
            arn: self.get_att(id, "Arn", &at, 0)?,
            name,
            shard_count,
        })
    }

    fn bucket(&self, id: &str, warnings: &mut Vec<String>) -> Result<Bucket> {
        let at = format!("Resources.{id}.Properties");
        let p = self.properties(id)?;
        let versioned = p
            .get("VersioningConfiguration")
            .and_then(|v| v.get("Status"))
            .and_then(Value::as_str)
            == Some("Enabled");
        let mut queue_notifications = vec![];
        if let Some(nc) = p
            .get("NotificationConfiguration")
            .and_then(Value::as_object)
        {
            for (k, v) in nc {
                match k.as_str() {
                    "QueueConfigurations" => {
                        for (i, q) in v.as_array().into_iter().flatten().enumerate() {
                            let qat = format!("{at}.NotificationConfiguration.QueueConfigurations[{i}]");
                            let q = q
                                .as_object()
                                .ok_or_else(|| TemplateError::invalid(&qat, "not a mapping"))?;
                            let mut prefix = None;
                            let mut suffix = None;
                            let rules = q
                                .get("Filter")
                                .and_then(|f| f.get("S3Key"))
                                .and_then(|k| k.get("Rules"))
                                .and_then(Value::as_array);
                            for rule in rules.into_iter().flatten() {
                                let name = rule.get("Name").and_then(Value::as_str).unwrap_or_default();
                                let value = rule.get("Value").and_then(scalar_string);
                                match name.to_ascii_lowercase().as_str() {
                                    "prefix" => prefix = value,
                                    "suffix" => suffix = value,
                                    other => {
                                        return Err(TemplateError::invalid(&qat, format!("filter rule {other:?}")));
                                    }
                                }
                            }
                            queue_notifications.push(QueueNotification {
                                event: req_str(q, "Event", &qat)?,
                                queue_arn: req_str(q, "Queue", &qat)?,
                                prefix,
                                suffix,
                            });
                        }
                    }
                    other => warnings.push(format!(
                        "{id}: NotificationConfiguration.{other} is not emulated locally (only QueueConfigurations)"
                    )),
                }
            }
        }
        Ok(Bucket {
            logical_id: id.to_owned(),
            name: self.physical_name(id)?,
            versioned,
            queue_notifications,
        })
    }

    fn queue(&self, id: &str) -> Result<Queue> {
        let at = format!("Resources.{id}.Properties");
        let p = self.properties(id)?;
        let redrive = match p.get("RedrivePolicy") {
            None => None,
            Some(rp) => {
                let rp = match rp {
                    // CloudFormation also accepts the policy as a JSON string.
                    Value::String(s) => serde_json::from_str::<Value>(s)
                        .map_err(|e| TemplateError::invalid(&at, format!("RedrivePolicy: {e}")))?,
                    other => other.clone(),
                };
                let rat = format!("{at}.RedrivePolicy");
                let obj = rp
                    .as_object()
                    .ok_or_else(|| TemplateError::invalid(&rat, "not a mapping"))?;
                Some(Redrive {
                    dead_letter_arn: req_str(obj, "deadLetterTargetArn", &rat)?,
                    max_receive_count: u32::try_from(
                        opt_u64(obj, "maxReceiveCount", &rat)?.ok_or_else(|| {
                            TemplateError::invalid(&rat, "maxReceiveCount is required")
                        })?,
                    )
                    .map_err(|_| TemplateError::invalid(&rat, "maxReceiveCount too large"))?,
                })
            }
        };
        let name = self.physical_name(id)?;
        Ok(Queue {
            logical_id: id.to_owned(),
            arn: self.get_att(id, "Arn", &at, 0)?,
            url: self.resource_ref(id, &at, 0)?,
            fifo: p.get("FifoQueue").and_then(as_bool) == Some(true),
            visibility_timeout_s: opt_u64(&p, "VisibilityTimeout", &at)?.unwrap_or(30) as u32,
            retention_s: opt_u64(&p, "MessageRetentionPeriod", &at)?.map(|v| v as u32),
            redrive,
            name,
        })
    }

    fn delivery_stream(
        &self,
        id: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Option<DeliveryStream>> {
        let at = format!("Resources.{id}.Properties");
        let p = self.properties(id)?;
        let kind = p
            .get("DeliveryStreamType")
            .and_then(scalar_string)
            .unwrap_or_else(|| "DirectPut".into());
        if kind != "DirectPut" {
            warnings.push(format!(
                "{id}: DeliveryStreamType {kind} is not emulated locally"
            ));
            return Ok(None);
        }
        let Some(dest) = p
            .get("ExtendedS3DestinationConfiguration")
            .or_else(|| p.get("S3DestinationConfiguration"))
            .and_then(Value::as_object)
        else {
            warnings.push(format!("{id}: only S3 destinations are emulated locally"));
            return Ok(None);
        };
        let dat = format!("{at}.ExtendedS3DestinationConfiguration");
        let bucket_arn = req_str(dest, "BucketARN", &dat)?;
        let bucket = bucket_arn
            .strip_prefix("arn:aws:s3:::")
            .ok_or_else(|| {
                TemplateError::invalid(
                    &dat,
                    format!("BucketARN {bucket_arn} is not an S3 bucket ARN"),
                )
            })?
            .to_owned();
        Ok(Some(DeliveryStream {
            logical_id: id.to_owned(),
            name: self.physical_name(id)?,
            bucket,
            prefix: dest
                .get("Prefix")
                .and_then(scalar_string)
                .unwrap_or_default(),
            error_prefix: dest.get("ErrorOutputPrefix").and_then(scalar_string),
            compression: dest
                .get("CompressionFormat")
                .and_then(scalar_string)
                .unwrap_or_else(|| "UNCOMPRESSED".into()),
        }))
    }
}

fn route_from(method: Option<&str>, path: Option<&str>, function: &str) -> Route {
    let method = method
        .map(|m| m.to_ascii_uppercase())
        .filter(|m| m != "ANY" && m != "X-AMAZON-APIGATEWAY-ANY-METHOD");
    match path {
        None => Route {
            route_key: "$default".into(),
            method: None,
            path: None,
            function: function.to_owned(),
        },
        Some(p) => Route {
            route_key: format!("{} {p}", method.as_deref().unwrap_or("ANY")),
            method,
            path: Some(p.to_owned()),
            function: function.to_owned(),
        },
    }
}

fn kinesis_source(
    name: &str,
    arn: &str,
    p: &Map<String, Value>,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<KinesisSource> {
    let stream_name = arn
        .split_once(":stream/")
        .map(|(_, n)| n.to_owned())
        .ok_or_else(|| TemplateError::invalid(at, format!("{arn} is not a Kinesis stream ARN")))?;
    let starting_position = match req_str(p, "StartingPosition", at)?.as_str() {
        "TRIM_HORIZON" => StartingPosition::TrimHorizon,
        "LATEST" => StartingPosition::Latest,
        "AT_TIMESTAMP" => {
            let ts = p
                .get("StartingPositionTimestamp")
                .and_then(scalar_string)
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| {
                    TemplateError::invalid(at, "AT_TIMESTAMP needs StartingPositionTimestamp")
                })?;
            StartingPosition::AtTimestamp(ts)
        }
        other => {
            return Err(TemplateError::invalid(
                at,
                format!("StartingPosition {other:?}"),
            ));
        }
    };
    let batch_size = opt_u64(p, "BatchSize", at)?.unwrap_or(100);
    if !(1..=10_000).contains(&batch_size) {
        return Err(TemplateError::invalid(
            at,
            format!("BatchSize {batch_size} is outside 1..=10000"),
        ));
    }
    let max_retry_attempts = match opt_i64(p, "MaximumRetryAttempts", at)? {
        None | Some(-1) => None,
        Some(n) if (0..=10_000).contains(&n) => Some(n as u32),
        Some(n) => {
            return Err(TemplateError::invalid(
                at,
                format!("MaximumRetryAttempts {n}"),
            ));
        }
    };
    let max_record_age = match opt_i64(p, "MaximumRecordAgeInSeconds", at)? {
        None | Some(-1) => None,
        Some(n) if n >= 0 => Some(Duration::from_secs(n as u64)),
        Some(n) => {
            return Err(TemplateError::invalid(
                at,
                format!("MaximumRecordAgeInSeconds {n}"),
            ));
        }
    };
    let on_failure = match p
        .get("DestinationConfig")
        .and_then(|d| d.get("OnFailure"))
        .and_then(|o| o.get("Destination"))
        .and_then(scalar_string)
    {
        None => None,
        Some(arn) => {
            let queue_name = arn
                .starts_with("arn:aws:sqs:")
                .then(|| arn.rsplit(':').next().unwrap_or_default().to_owned());
            if queue_name.is_none() {
                warnings.push(format!(
                    "{at}: OnFailure destination {arn} is not an SQS queue; not emulated"
                ));
            }
            Some(OnFailure { arn, queue_name })
        }
    };
    let parallelization_factor = opt_u64(p, "ParallelizationFactor", at)?.unwrap_or(1) as u32;
    if parallelization_factor > 1 {
        warnings.push(format!(
            "{at}: ParallelizationFactor {parallelization_factor} is emulated as 1 (one batch per shard at a time)"
        ));
    }
    if p.contains_key("FilterCriteria") {
        warnings.push(format!(
            "{at}: FilterCriteria is not emulated locally: every record is delivered"
        ));
    }
    if p.get("TumblingWindowInSeconds").is_some() {
        warnings.push(format!(
            "{at}: TumblingWindowInSeconds is not emulated locally"
        ));
    }
    let enabled = p.get("Enabled").and_then(as_bool).unwrap_or(true);
    if !enabled {
        warnings.push(format!("{at}: event source is disabled (Enabled: false)"));
    }
    Ok(KinesisSource {
        name: name.to_owned(),
        stream_arn: arn.to_owned(),
        stream_name,
        batch_size: batch_size as usize,
        batching_window: Duration::from_secs(
            opt_u64(p, "MaximumBatchingWindowInSeconds", at)?.unwrap_or(0),
        ),
        starting_position,
        report_batch_item_failures: has_report_failures(p),
        bisect_on_error: p
            .get("BisectBatchOnFunctionError")
            .and_then(as_bool)
            .unwrap_or(false),
        max_retry_attempts,
        max_record_age,
        on_failure,
        parallelization_factor,
    })
}

fn sqs_source(
    name: &str,
    arn: &str,
    p: &Map<String, Value>,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<SqsSource> {
    let queue_name = arn
        .strip_prefix("arn:aws:sqs:")
        .and_then(|rest| rest.rsplit(':').next())
        .map(str::to_owned)
        .ok_or_else(|| TemplateError::invalid(at, format!("{arn} is not an SQS queue ARN")))?;
    let batch_size = opt_u64(p, "BatchSize", at)?.unwrap_or(10);
    if !(1..=10_000).contains(&batch_size) {
        return Err(TemplateError::invalid(
            at,
            format!("BatchSize {batch_size} is outside 1..=10000"),
        ));
    }
    if p.contains_key("FilterCriteria") {
        warnings.push(format!(
            "{at}: FilterCriteria is not emulated locally: every message is delivered"
        ));
    }
    Ok(SqsSource {
        name: name.to_owned(),
        queue_arn: arn.to_owned(),
        queue_name,
        batch_size: batch_size as usize,
        batching_window: Duration::from_secs(
            opt_u64(p, "MaximumBatchingWindowInSeconds", at)?.unwrap_or(0),
        ),
        report_batch_item_failures: has_report_failures(p),
        maximum_concurrency: p
            .get("ScalingConfig")
            .and_then(|s| s.get("MaximumConcurrency"))
            .and_then(scalar_string)
            .and_then(|s| s.parse().ok()),
    })
}

fn has_report_failures(p: &Map<String, Value>) -> bool {
    p.get("FunctionResponseTypes")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
        })
}

/// SAM Globals merge: mappings merge key by key (the function wins), lists are concatenated,
/// scalars are overridden.
fn merge_globals(global: &Value, local: &Value) -> Value {
    match (global, local) {
        (Value::Object(g), Value::Object(l)) => {
            let mut out = g.clone();
            for (k, v) in l {
                let merged = match out.get(k) {
                    Some(gv) if intrinsic(gv).is_none() && intrinsic(v).is_none() => {
                        merge_globals(gv, v)
                    }
                    _ => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(g), Value::Array(l)) => Value::Array(g.iter().chain(l).cloned().collect()),
        (_, l) => l.clone(),
    }
}

/// A scalar as the string CloudFormation would use.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn req_str(p: &Map<String, Value>, key: &str, at: &str) -> Result<String> {
    p.get(key)
        .and_then(scalar_string)
        .ok_or_else(|| TemplateError::invalid(at, format!("{key} is required")))
}

fn opt_i64(p: &Map<String, Value>, key: &str, at: &str) -> Result<Option<i64>> {
    match p.get(key) {
        None => Ok(None),
        Some(v) => scalar_string(v)
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| {
                TemplateError::invalid(at, format!("{key} must be an integer, got {v}"))
            }),
    }
}

fn opt_u64(p: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u64>> {
    match opt_i64(p, key, at)? {
        None => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as u64)),
        Some(n) => Err(TemplateError::invalid(
            at,
            format!("{key} must not be negative, got {n}"),
        )),
    }
}

#[cfg(test)]
mod tests;
