//! Logs and metrics.
//!
//! Logs go through `tracing`: JSON lines in Lambda (the template sets `LogFormat: JSON`), compact
//! text on a terminal; one summary event per request/batch, never whole payloads at INFO.
//! Metrics are CloudWatch Embedded Metric Format lines written to stdout — CloudWatch turns them
//! into metrics without any API call on the hot path.

use std::io::Write;

use serde_json::{Map, Value, json};

/// Where EMF lines go instead of stdout; set once per process.
static EMF_SINK: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Sends EMF lines to `sink` instead of stdout, for processes where stdout is a terminal
/// rather than a Lambda log stream (the local stack runs the handlers in process and keeps
/// their metric lines in its log file). The first call wins; returns whether this one did.
pub fn set_emf_sink(sink: fn(&str)) -> bool {
    EMF_SINK.set(sink).is_ok()
}

/// Set up `tracing` once per process: JSON when `json` is true (in Lambda), text otherwise.
/// The filter comes from `filter` (e.g. the `RUST_LOG` value), default `info`.
pub fn init_tracing(json: bool, filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_new(filter.unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // `try_init` so tests and the local stack (several handlers in one process) can call it freely.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .try_init()
    } else {
        builder.compact().with_writer(std::io::stderr).try_init()
    };
}

/// CloudWatch metric units used by the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count of things.
    Count,
    /// Bytes.
    Bytes,
    /// Milliseconds.
    Milliseconds,
    /// Seconds (ages, waits).
    Seconds,
    /// A ratio or other plain number.
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::None => "None",
        }
    }
}

/// The CloudWatch namespace of every caudal metric (dashboards and alarms in template.yaml
/// name it too).
pub const METRICS_NAMESPACE: &str = "caudal";

/// One EMF line: a set of metrics in [`METRICS_NAMESPACE`] under one dimension set.
#[derive(Debug, Clone)]
pub struct Emf {
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, Value, Unit)>,
    properties: Map<String, Value>,
}

/// Values one EMF metric may carry in one line (the format's limit).
pub const EMF_MAX_VALUES: usize = 100;

impl Emf {
    /// A metrics line for `function` (dimension `Function`).
    pub fn new(function: &str) -> Self {
        Self {
            dimensions: vec![("Function".to_owned(), function.to_owned())],
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    /// Add a metric.
    pub fn metric(mut self, name: &str, value: f64, unit: Unit) -> Self {
        self.metrics.push((name.to_owned(), json!(value), unit));
        self
    }

    /// Add a metric with several values (each counts as one sample, so CloudWatch computes
    /// percentiles over them); at most [`EMF_MAX_VALUES`] are kept — split longer series over
    /// several lines.
    pub fn metric_values(mut self, name: &str, values: &[f64], unit: Unit) -> Self {
        let kept = &values[..values.len().min(EMF_MAX_VALUES)];
        self.metrics.push((name.to_owned(), json!(kept), unit));
        self
    }

    /// Add a searchable property that is not a metric (e.g. a request id).
    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The EMF JSON document with the given timestamp (ms since the epoch).
    pub fn to_json(&self, timestamp_ms: i64) -> Value {
        let mut root = self.properties.clone();
        for (k, v) in &self.dimensions {
            root.insert(k.clone(), Value::String(v.clone()));
        }
        for (name, value, _) in &self.metrics {
            root.insert(name.clone(), value.clone());
        }
        let defs: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let dims: Vec<&str> = self.dimensions.iter().map(|(k, _)| k.as_str()).collect();
        root.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{"Namespace": METRICS_NAMESPACE, "Dimensions": [dims], "Metrics": defs}]
            }),
        );
        Value::Object(root)
    }

    /// Write the line to stdout (where the Lambda log agent picks EMF up), or to the sink set
    /// with [`set_emf_sink`].
    pub fn emit(&self) {
        let now = time::OffsetDateTime::now_utc();
        let ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        if let Some(sink) = EMF_SINK.get() {
            sink(&self.to_json(ms).to_string());
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut stdout, &self.to_json(ms));
        let _ = stdout.write_all(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_declares_every_metric() {
        let doc = Emf::new("ingest-api")
            .metric("EventsAccepted", 3.0, Unit::Count)
            .metric("LatencyMs", 12.5, Unit::Milliseconds)
            .property("RequestId", "r1")
            .to_json(1_700_000_000_000);
        assert_eq!(doc["EventsAccepted"], 3.0);
        assert_eq!(doc["Function"], "ingest-api");
        assert_eq!(doc["RequestId"], "r1");
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "caudal");
        assert_eq!(cw["Dimensions"][0][0], "Function");
        assert_eq!(cw["Metrics"][1]["Name"], "LatencyMs");
        assert_eq!(cw["Metrics"][1]["Unit"], "Milliseconds");
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }

    #[test]
    fn a_metric_may_carry_up_to_a_hundred_values() {
        let values: Vec<f64> = (0..150).map(f64::from).collect();
        let doc = Emf::new("rules-loader")
            .metric_values("IngestToLoadedMs", &values, Unit::Milliseconds)
            .to_json(0);
        let kept = doc["IngestToLoadedMs"].as_array().unwrap();
        assert_eq!(kept.len(), EMF_MAX_VALUES);
        assert_eq!(kept[99], 99.0);
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Metrics"][0]["Unit"], "Milliseconds");
    }
}
