//! Building the typed [`Model`] from the resolved resources: functions with their event
//! sources and routes, streams, buckets, queues and delivery streams, and the warnings for what
//! the local stack does not emulate.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Map, Value};

use super::model::*;
use super::resolver::{Resolver, Resource, scalar_string};
use super::{Result, TemplateError};

impl Resolver {
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
                "AWS::ApiGatewayV2::Api" => {
                    let p = self.properties(id)?;
                    if let Some(c) = p.get("CorsConfiguration") {
                        m.cors = Some(cors_from(c, &format!("Resources.{id}.Properties"))?);
                    }
                }
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
        self.outputs(&mut m);
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

    /// The template's `Outputs` (see [`Model::outputs`]).
    fn outputs(&self, m: &mut Model) {
        for (name, o) in &self.outputs {
            let at = format!("Outputs.{name}");
            let enabled = match o.get("Condition").and_then(Value::as_str) {
                Some(c) => self.condition(c),
                None => Ok(true),
            };
            let value = enabled.and_then(|on| match (on, o.get("Value")) {
                (true, Some(v)) => self.resolve(v, &format!("{at}.Value")),
                _ => Ok(None),
            });
            match value {
                Ok(Some(v)) => {
                    if let Some(text) = scalar_string(&v) {
                        m.outputs.insert(name.clone(), text);
                    }
                }
                Ok(None) => {}
                Err(e) => m
                    .warnings
                    .push(format!("{at}: not available locally ({e})")),
            }
        }
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
        function_events(id, &p, &at, &mut f, warnings, routes)?;
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

/// A SAM function's `Events`: Kinesis and SQS sources into `f`, HTTP API events into `routes`,
/// anything else a warning.
fn function_events(
    id: &str,
    p: &Map<String, Value>,
    at: &str,
    f: &mut Function,
    warnings: &mut Vec<String>,
    routes: &mut Vec<Route>,
) -> Result<()> {
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
    Ok(())
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
    let starting_position = starting_position(p, at)?;
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
    let on_failure = on_failure(p, at, warnings);
    let parallelization_factor = opt_u64(p, "ParallelizationFactor", at)?.unwrap_or(1) as u32;
    if parallelization_factor > 1 {
        warnings.push(format!(
            "{at}: ParallelizationFactor {parallelization_factor} is emulated as 1 (one batch per shard at a time)"
        ));
    }
    unemulated_stream_settings(p, at, warnings);
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

/// `StartingPosition` (with `StartingPositionTimestamp` for AT_TIMESTAMP).
fn starting_position(p: &Map<String, Value>, at: &str) -> Result<StartingPosition> {
    Ok(match req_str(p, "StartingPosition", at)?.as_str() {
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
    })
}

/// `DestinationConfig.OnFailure.Destination`; only an SQS queue is emulated.
fn on_failure(p: &Map<String, Value>, at: &str, warnings: &mut Vec<String>) -> Option<OnFailure> {
    match p
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
    }
}

/// Settings of a stream event source the local poller does not honour, as warnings.
fn unemulated_stream_settings(p: &Map<String, Value>, at: &str, warnings: &mut Vec<String>) {
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

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// An HTTP API's `CorsConfiguration`.
fn cors_from(v: &Value, at: &str) -> Result<Cors> {
    let at = format!("{at}.CorsConfiguration");
    let c = v
        .as_object()
        .ok_or_else(|| TemplateError::invalid(&at, "must be an object"))?;
    let list = |key: &str| -> Result<Vec<String>> {
        match c.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    scalar_string(i).ok_or_else(|| {
                        TemplateError::invalid(&at, format!("{key} must be a list of strings"))
                    })
                })
                .collect(),
            Some(_) => Err(TemplateError::invalid(
                &at,
                format!("{key} must be a list of strings"),
            )),
        }
    };
    let allow_origins = caudal_core::cors::AllowedOrigins::parse(&list("AllowOrigins")?.join(","))
        .map_err(|e| TemplateError::invalid(&at, format!("AllowOrigins: {e}")))?;
    Ok(Cors {
        allow_origins,
        allow_methods: list("AllowMethods")?,
        allow_headers: list("AllowHeaders")?,
        expose_headers: list("ExposeHeaders")?,
        max_age: opt_u64(c, "MaxAge", &at)?,
        allow_credentials: c.get("AllowCredentials").and_then(as_bool).unwrap_or(false),
    })
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
