//! The SAM template as a contract.
//!
//! `template.yaml` is what users deploy and what the local stack reads, so these tests hold it to
//! the rest of the repository:
//!
//! - every `AWS::Serverless::Function` is built from a workspace crate under `functions/` (a
//!   `src/main.rs` for the wiring and a `src/lib.rs` for the handler);
//! - the environment variables the template sets for a function are exactly the ones its config
//!   reads (both directions) and include everything `docs/CONTRACTS.md` §5 lists for it;
//! - every `events/<function>-<case>.json` parses into the event type the template wires to that
//!   function, and is used by at least one test;
//! - the failure semantics `AWS-LIMITS.md` insists on (bounded Kinesis retries, bisecting, partial
//!   batch responses, an on-failure destination, a DLQ behind the loader queue, the `raw/`
//!   notification, the lake retry queue consumed by raw-writer with a DLQ behind it) are really in
//!   the template.
//!
//! The template is read the way the local stack reads it: `caudal_local::stack::template`'s
//! [`Resolver`] (short tags, Globals, conditions, references resolved to local names) and the
//! [`Model`] built from it. A reference to a resource is checked by comparing the resolved value
//! with what `!Ref`/`!GetAtt` of that resource resolves to.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use aws_lambda_events::event::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::SqsEvent;
use caudal_local::stack::LOCAL_PARAMETER_DEFAULTS;
use caudal_local::stack::template::{self, Function, LocalNames, Model, Resolver};
use regex::Regex;
use serde_json::{Map, Value};

/// Variables a function may read without the template setting them, with the reason. Lambda's
/// own reserved variables (`AWS_*`, `_X_AMZN_*`, `LAMBDA_*`, `_HANDLER`) are always allowed.
const READ_BUT_NOT_SET: &[(&str, &str, &str)] = &[
    // (function, variable, why)
];

/// Event files that are deliberately NOT valid for the strict `aws_lambda_events` type, with the
/// reason. Lambda never delivers them; they exist to prove a function survives malformed input.
/// The test checks they really are rejected by the strict type, so this list cannot go stale.
const DELIBERATELY_MALFORMED: &[(&str, &str)] = &[(
    "raw-writer-bad-base64.json",
    "record data that is not base64: raw-writer reads events with its own lenient type and \
     archives such records under raw-invalid/ instead of failing the batch",
)];

/// Upper-case string literals that are not variable names even in call position.
const NOT_ENV_VARS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `template.yaml` as the local stack reads it, with the parameter values it uses.
struct Template {
    resolver: Resolver,
    model: Model,
}

impl Template {
    fn load() -> Self {
        let text = read(&repo_root().join("template.yaml"));
        let declared = template::declared_parameters(&text)
            .unwrap_or_else(|e| panic!("template.yaml is not valid: {e}"));
        let overrides: Vec<(String, String)> = LOCAL_PARAMETER_DEFAULTS
            .iter()
            .filter(|(k, _)| declared.iter().any(|d| d == k))
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let names = LocalNames::local("http://127.0.0.1:4566");
        let resolver = Resolver::new(&text, &overrides, &names)
            .unwrap_or_else(|e| panic!("template.yaml does not resolve: {e}"));
        let model = resolver
            .model()
            .unwrap_or_else(|e| panic!("template.yaml does not build a model: {e}"));
        Self { resolver, model }
    }

    fn type_of(&self, id: &str) -> &str {
        self.resolver
            .resource_type(id)
            .unwrap_or_else(|| panic!("template.yaml has no resource {id}"))
    }

    /// The resource's properties, resolved (SAM functions with `Globals.Function` merged in).
    fn properties(&self, id: &str) -> Map<String, Value> {
        self.type_of(id);
        self.resolver
            .properties(id)
            .unwrap_or_else(|e| panic!("resource {id}: {e}"))
    }

    fn function(&self, id: &str) -> &Function {
        self.model
            .function(id)
            .unwrap_or_else(|| panic!("{id} is not a function of the local model"))
    }

    /// What `!Ref id` resolves to.
    fn reference(&self, id: &str) -> String {
        self.resolver
            .resolve_ref(id)
            .unwrap_or_else(|e| panic!("Ref {id}: {e}"))
    }

    /// What `!GetAtt id.Arn` resolves to.
    fn arn(&self, id: &str) -> String {
        self.resolver
            .resolve_get_att(id, "Arn")
            .unwrap_or_else(|e| panic!("GetAtt {id}.Arn: {e}"))
    }

    /// Whether a resolved value is a reference to resource `id` (`!Ref` or `!GetAtt id.Arn`).
    fn names(&self, v: Option<&Value>, id: &str) -> bool {
        v.and_then(Value::as_str)
            .is_some_and(|s| s == self.reference(id) || s == self.arn(id))
    }

    /// `(logical id, binary/package name)` of every SAM function.
    fn functions(&self) -> Vec<(String, String)> {
        self.resolver
            .resource_ids()
            .filter(|id| self.resolver.resource_type(id) == Some("AWS::Serverless::Function"))
            .map(|id| {
                let binary =
                    self.function(id).binary.clone().unwrap_or_else(|| {
                        panic!("{id}: Metadata.BuildProperties.Binary is missing")
                    });
                (id.to_owned(), binary)
            })
            .collect()
    }

    /// Names of the environment variables set for a function: Globals plus its own.
    fn env_vars(&self, function_id: &str) -> BTreeSet<String> {
        self.function(function_id)
            .environment
            .keys()
            .cloned()
            .collect()
    }

    /// Event source types (`Kinesis`, `SQS`, ...) of a function's `Events`, plus `HttpApi` when an
    /// HTTP API route is integrated with it.
    fn event_kinds(&self, function_id: &str) -> BTreeSet<String> {
        let mut kinds: BTreeSet<String> = events(&self.properties(function_id))
            .filter_map(|e| e.get("Type").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        if self.model.routes.iter().any(|r| r.function == function_id) {
            kinds.insert("HttpApi".to_owned());
        }
        kinds
    }
}

/// The entries of a function's (resolved) `Events`.
fn events(properties: &Map<String, Value>) -> impl Iterator<Item = &Value> {
    properties
        .get("Events")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.values())
}

/// The `Properties` of the function's first event source of type `kind`.
fn event_source<'a>(properties: &'a Map<String, Value>, kind: &str) -> Option<&'a Value> {
    events(properties)
        .find(|e| e.get("Type").and_then(Value::as_str) == Some(kind))
        .and_then(|e| e.get("Properties"))
}

/// Whether a resolved list holds the string `item`.
fn lists(v: Option<&Value>, item: &str) -> bool {
    v.and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|x| x.as_str() == Some(item)))
}

/// All `.rs` files under `dir`, skipping build output and VCS directories.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !matches!(
                    name.as_ref(),
                    "target" | ".git" | ".aws-sam" | "node_modules" | ".local"
                ) {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A crate's non-test source: everything under `src/`, each file cut at its first
/// `#[cfg(test)]` (tests build config maps with literal names that nobody reads from the env).
fn crate_source(crate_dir: &Path) -> String {
    rust_files(&crate_dir.join("src"))
        .iter()
        .map(|p| {
            let text = read(p);
            match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_owned(),
                None => text,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_lambda_reserved(name: &str) -> bool {
    name.starts_with("AWS_")
        || name.starts_with("_X_AMZN")
        || name.starts_with("LAMBDA_")
        || name == "_HANDLER"
}

/// Upper-case literals passed as the first argument of a call (`env.required("X")`,
/// `std::env::var("X")`, `parse_or("X", ..)`): the variables a crate's config reads.
fn env_names_read(source: &str) -> BTreeSet<String> {
    let call =
        Regex::new(r#"[A-Za-z_][A-Za-z0-9_]*\(\s*&?"([A-Z][A-Z0-9_]{2,})""#).expect("static regex");
    call.captures_iter(source)
        .map(|c| c[1].to_owned())
        .filter(|n| !NOT_ENV_VARS.contains(&n.as_str()))
        .collect()
}

/// `docs/CONTRACTS.md` §5: function package -> variables it must be given.
fn contract_env_vars(functions: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let text = read(&repo_root().join("docs/CONTRACTS.md"));
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("5.") || s.to_lowercase().starts_with("environment variables"))
        .expect("docs/CONTRACTS.md has an environment variables section");
    let name = Regex::new(r"`([A-Z][A-Z0-9_]+)`").expect("static regex");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(owner), Some(vars)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let owners: Vec<String> = if *owner == "all" {
            functions.to_vec()
        } else if functions.iter().any(|f| f == owner) {
            vec![(*owner).to_owned()]
        } else {
            continue; // header and separator rows
        };
        for cap in name.captures_iter(vars) {
            for o in &owners {
                out.entry(o.clone()).or_default().insert(cap[1].to_owned());
            }
        }
    }
    out
}

#[test]
fn template_declares_the_contract_resources() {
    let t = Template::load();
    let expected = [
        ("HttpApi", "AWS::ApiGatewayV2::Api"),
        ("IngestApiFunction", "AWS::Serverless::Function"),
        ("RawWriterFunction", "AWS::Serverless::Function"),
        ("RulesLoaderFunction", "AWS::Serverless::Function"),
        ("EventStream", "AWS::Kinesis::Stream"),
        ("RawBucket", "AWS::S3::Bucket"),
        ("StagingBucket", "AWS::S3::Bucket"),
        ("LakeBucket", "AWS::S3::Bucket"),
        ("LakeDeliveryStream", "AWS::KinesisFirehose::DeliveryStream"),
        ("LoaderQueue", "AWS::SQS::Queue"),
        ("LoaderDeadLetterQueue", "AWS::SQS::Queue"),
        ("RawWriterFailureQueue", "AWS::SQS::Queue"),
        ("LakeRetryQueue", "AWS::SQS::Queue"),
        ("LakeRetryDLQ", "AWS::SQS::Queue"),
        ("AlarmTopic", "AWS::SNS::Topic"),
        ("Dashboard", "AWS::CloudWatch::Dashboard"),
        ("CopyRole", "AWS::IAM::Role"),
    ];
    for (id, ty) in expected {
        assert_eq!(t.type_of(id), ty, "resource {id}");
    }

    let globals = t
        .resolver
        .function_globals()
        .unwrap_or_else(|e| panic!("Globals.Function: {e}"))
        .expect("Globals.Function");
    let global = |key: &str| globals.get(key).and_then(Value::as_str);
    assert_eq!(global("Runtime"), Some("provided.al2023"));
    assert_eq!(global("Handler"), Some("bootstrap"));
    assert_eq!(global("Tracing"), Some("Active"));
    let arch = globals
        .get("Architectures")
        .and_then(Value::as_array)
        .expect("Architectures");
    assert_eq!(
        arch.iter().filter_map(Value::as_str).collect::<Vec<_>>(),
        ["arm64"]
    );
    assert_eq!(
        globals
            .pointer("/LoggingConfig/LogFormat")
            .and_then(Value::as_str),
        Some("JSON")
    );

    // API routes the ingest function serves.
    let routes: BTreeSet<String> = t
        .resolver
        .resource_ids()
        .filter(|id| t.resolver.resource_type(id) == Some("AWS::ApiGatewayV2::Route"))
        .filter_map(|id| {
            t.properties(id)
                .get("RouteKey")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert!(routes.contains("POST /v1/events"), "{routes:?}");
    assert!(routes.contains("GET /v1/health"), "{routes:?}");
}

#[test]
fn failure_semantics_are_bounded() {
    let t = Template::load();

    // Kinesis -> raw-writer: never the retry-forever defaults (AWS-LIMITS.md).
    let raw_writer = t.properties("RawWriterFunction");
    let kinesis =
        event_source(&raw_writer, "Kinesis").expect("raw-writer has a Kinesis event source");
    assert!(
        t.names(kinesis.get("Stream"), "EventStream"),
        "raw-writer reads EventStream"
    );
    for key in [
        "MaximumRetryAttempts",
        "MaximumRecordAgeInSeconds",
        "BatchSize",
        "ParallelizationFactor",
    ] {
        let v = kinesis
            .get(key)
            .unwrap_or_else(|| panic!("Kinesis source sets {key}"));
        assert_ne!(v.as_i64(), Some(-1), "{key} must be bounded");
    }
    let source = t
        .function("RawWriterFunction")
        .kinesis
        .first()
        .expect("raw-writer has a Kinesis event source");
    assert!(source.bisect_on_error, "BisectBatchOnFunctionError");
    assert!(source.report_batch_item_failures, "ReportBatchItemFailures");
    let on_failure = source.on_failure.as_ref().map(|o| o.arn.clone());
    assert_eq!(on_failure, Some(t.arn("RawWriterFailureQueue")));

    // The loader queue redrives to its DLQ after a bounded number of receives.
    let redrive = t
        .model
        .queue("LoaderQueue")
        .and_then(|q| q.redrive.as_ref())
        .expect("LoaderQueue.RedrivePolicy");
    assert_eq!(redrive.dead_letter_arn, t.arn("LoaderDeadLetterQueue"));
    assert!(
        t.properties("LoaderQueue")
            .get("RedrivePolicy")
            .and_then(|r| r.get("maxReceiveCount"))
            .is_some()
    );

    // raw/ object-created notifications go to the loader queue, and only raw/ (no recursion).
    let queues = &t
        .model
        .bucket("RawBucket")
        .expect("RawBucket")
        .queue_notifications;
    assert!(!queues.is_empty(), "RawBucket notifies a queue");
    let to_loader = queues
        .iter()
        .find(|q| q.queue_arn == t.arn("LoaderQueue"))
        .expect("RawBucket notifies LoaderQueue");
    assert_eq!(to_loader.event, "s3:ObjectCreated:*");
    assert_eq!(
        to_loader.prefix.as_deref(),
        Some("raw/"),
        "notification filter must be prefix raw/"
    );

    // Lines Firehose did not take: raw-writer defers them to LakeRetryQueue and consumes it
    // itself, with partial batch responses; failed messages end in LakeRetryDLQ.
    assert_eq!(
        t.function("RawWriterFunction")
            .environment
            .get("LAKE_RETRY_QUEUE_URL"),
        Some(&t.reference("LakeRetryQueue"))
    );
    let retry = event_source(&raw_writer, "SQS")
        .expect("raw-writer has an SQS event source (the lake retry queue)");
    assert!(
        t.names(retry.get("Queue"), "LakeRetryQueue"),
        "raw-writer consumes LakeRetryQueue"
    );
    assert!(
        lists(
            retry.get("FunctionResponseTypes"),
            "ReportBatchItemFailures"
        ),
        "lake retries report failed messages one by one"
    );
    assert!(
        retry.pointer("/ScalingConfig/MaximumConcurrency").is_some(),
        "lake retries are capped so a backlog cannot flood a recovering Firehose"
    );
    let queue = t.properties("LakeRetryQueue");
    let redrive = t
        .model
        .queue("LakeRetryQueue")
        .and_then(|q| q.redrive.as_ref())
        .expect("LakeRetryQueue.RedrivePolicy");
    assert_eq!(redrive.dead_letter_arn, t.arn("LakeRetryDLQ"));
    assert!(
        queue
            .get("RedrivePolicy")
            .and_then(|r| r.get("maxReceiveCount"))
            .is_some()
    );
    // Lambda refuses an SQS source whose visibility timeout is below the function's timeout.
    let visibility = queue
        .get("VisibilityTimeout")
        .and_then(Value::as_u64)
        .expect("LakeRetryQueue.VisibilityTimeout is a number");
    let timeout = raw_writer
        .get("Timeout")
        .and_then(Value::as_u64)
        .expect("RawWriterFunction.Timeout is a number");
    assert!(
        visibility >= timeout,
        "visibility {visibility} s < timeout {timeout} s"
    );

    // The loader takes partial batch responses and is capped.
    let loader = t.properties("RulesLoaderFunction");
    assert!(
        loader.get("ReservedConcurrentExecutions").is_some(),
        "loader concurrency is capped"
    );
    let sqs = event_source(&loader, "SQS").expect("rules-loader has an SQS event source");
    assert!(
        t.names(sqs.get("Queue"), "LoaderQueue"),
        "rules-loader consumes LoaderQueue"
    );
    assert!(lists(
        sqs.get("FunctionResponseTypes"),
        "ReportBatchItemFailures"
    ));
    // Messages the loader could not try are postponed: sent again to its own queue, which it
    // may do (and encrypt for), and watched by an alarm on their age.
    assert_eq!(
        t.function("RulesLoaderFunction")
            .environment
            .get("LOADER_QUEUE_URL"),
        Some(&t.reference("LoaderQueue"))
    );
    let role = t.properties("RulesLoaderRole");
    let statements = role
        .get("Policies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.pointer("/PolicyDocument/Statement"))
        .filter_map(Value::as_array)
        .flatten()
        .collect::<Vec<_>>();
    let allows = |action: &str, resource: &str| {
        statements.iter().any(|s| {
            let has_action = match s.get("Action") {
                Some(Value::String(a)) => a == action,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(action)),
                _ => false,
            };
            has_action && t.names(s.get("Resource"), resource)
        })
    };
    assert!(
        allows("sqs:SendMessage", "LoaderQueue"),
        "the loader postpones to its queue"
    );
    assert!(
        allows("kms:GenerateDataKey", "StreamKey"),
        "sending to the encrypted loader queue needs GenerateDataKey"
    );
    let alarm = t.properties("LoaderPostponedAlarm");
    assert_eq!(
        alarm.get("MetricName").and_then(Value::as_str),
        Some("PostponedAgeSeconds")
    );
}

#[test]
fn every_function_is_a_workspace_crate() {
    let t = Template::load();
    let root = repo_root();
    let workspace = read(&root.join("Cargo.toml"));
    let functions = t.functions();
    assert!(!functions.is_empty(), "template.yaml declares no functions");
    for (id, binary) in functions {
        let build_method = t
            .resolver
            .metadata(&id)
            .and_then(|m| m.get("BuildMethod"))
            .and_then(Value::as_str);
        assert_eq!(
            build_method,
            Some("rust-cargolambda"),
            "{id}: Metadata.BuildMethod"
        );
        assert_eq!(
            t.properties(&id).get("CodeUri").and_then(Value::as_str),
            Some("."),
            "{id}: CodeUri is the workspace root"
        );

        let dir = root.join("functions").join(&binary);
        for file in ["Cargo.toml", "src/main.rs", "src/lib.rs"] {
            assert!(
                dir.join(file).is_file(),
                "{id}: functions/{binary}/{file} is missing"
            );
        }
        let manifest: toml_lite::Manifest = toml_lite::parse(&read(&dir.join("Cargo.toml")));
        assert_eq!(
            manifest.package_name.as_deref(),
            Some(binary.as_str()),
            "{id}: functions/{binary} package name"
        );
        // The bin target must be named like the package so `cargo lambda build --bin <Binary>`
        // and `cargo lambda invoke <Binary>` find it.
        assert!(
            manifest.bin_names.is_empty() || manifest.bin_names.iter().any(|b| b == &binary),
            "{id}: functions/{binary} has no bin named {binary} (bins: {:?})",
            manifest.bin_names
        );
        assert!(
            workspace.contains(&format!("\"functions/{binary}\""))
                || workspace.contains("\"functions/*\""),
            "{id}: functions/{binary} is not a workspace member"
        );
    }
}

#[test]
fn env_vars_match_each_functions_config() {
    let t = Template::load();
    let root = repo_root();
    let functions = t.functions();
    let packages: Vec<String> = functions.iter().map(|(_, b)| b.clone()).collect();
    let contract = contract_env_vars(&packages);
    let shared_src = [root.join("shared/core"), root.join("shared/aws")]
        .iter()
        .map(|d| crate_source(d))
        .collect::<Vec<_>>()
        .join("\n");
    let mut problems = Vec::new();

    for (id, binary) in &functions {
        let set = t.env_vars(id);
        let dir = root.join("functions").join(binary);
        let source = crate_source(&dir);

        // Template -> crate: whatever the template sets, the function reads.
        for var in &set {
            let literal = format!("\"{var}\"");
            let read_here = source.contains(&literal);
            // Settings common to several functions (request limits, the log filter) are read by
            // `caudal-core` / `caudal-aws` helpers the crate's config calls.
            let read_shared = shared_src.contains(&literal);
            if !read_here && !read_shared {
                problems.push(format!(
                    "{id} ({binary}): template sets {var} but neither the crate nor shared/ reads \"{var}\""
                ));
            }
        }

        // Crate -> template: whatever the config reads, the template sets (or it is listed).
        for var in env_names_read(&source) {
            let allowed = READ_BUT_NOT_SET
                .iter()
                .any(|(f, v, _)| f == binary && *v == var);
            if !set.contains(&var) && !is_lambda_reserved(&var) && !allowed {
                problems.push(format!(
                    "{id} ({binary}): the crate reads {var} but template.yaml does not set it"
                ));
            }
        }

        // Contract -> template: docs/CONTRACTS.md §5 is what the local stack and users rely on.
        for var in contract.get(binary).into_iter().flatten() {
            if !set.contains(var) {
                problems.push(format!(
                    "{id} ({binary}): CONTRACTS.md lists {var} but template.yaml does not set it"
                ));
            }
        }
    }
    assert!(
        contract.values().map(BTreeSet::len).sum::<usize>() > 0,
        "no variables parsed from CONTRACTS.md §5"
    );
    assert!(
        problems.is_empty(),
        "environment mismatches:\n  {}",
        problems.join("\n  ")
    );
}

/// The event a function receives, decided by what the template wires to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    Http,
    Kinesis,
    SqsOrS3,
}

/// The events a function can receive, from the sources the template wires to it (raw-writer
/// has two: its stream and the lake retry queue).
fn event_kinds_of(kinds: &BTreeSet<String>) -> BTreeSet<EventKind> {
    let mut out = BTreeSet::new();
    if kinds.contains("HttpApi") || kinds.contains("Api") {
        out.insert(EventKind::Http);
    }
    if kinds.contains("Kinesis") {
        out.insert(EventKind::Kinesis);
    }
    if kinds.contains("SQS") || kinds.contains("S3") {
        out.insert(EventKind::SqsOrS3);
    }
    out
}

/// The kind of event an event file holds: a `Records` array names its source, an HTTP request
/// does not have one.
fn file_event_kind(name: &str, text: &str) -> EventKind {
    let raw: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
    match raw
        .pointer("/Records/0/eventSource")
        .and_then(|s| s.as_str())
    {
        Some("aws:kinesis") => EventKind::Kinesis,
        Some("aws:sqs" | "aws:s3") => EventKind::SqsOrS3,
        Some(other) => panic!("{name}: unknown eventSource {other:?}"),
        None if raw.get("Records").is_some() => {
            panic!("{name}: Records[0].eventSource is missing")
        }
        None => EventKind::Http,
    }
}

fn check_http(name: &str, text: &str) {
    let raw: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
    if raw.get("version").and_then(|v| v.as_str()) == Some("2.0") {
        let req: ApiGatewayV2httpRequest = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{name}: not an API Gateway v2 request: {e}"));
        assert!(
            req.request_context.http.method.as_str().len() >= 3,
            "{name}: no requestContext.http.method"
        );
        assert!(
            req.raw_path.as_deref().is_some_and(|p| p.starts_with('/')),
            "{name}: no rawPath"
        );
    } else {
        let req: ApiGatewayProxyRequest = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{name}: not an API Gateway v1 request: {e}"));
        assert!(
            req.path.as_deref().is_some_and(|p| p.starts_with('/')),
            "{name}: no path"
        );
        assert!(raw.get("httpMethod").is_some(), "{name}: no httpMethod");
    }
    // What the function really does with it: lambda_http's own parsing into an http::Request.
    let req = lambda_http::request::from_str(text)
        .unwrap_or_else(|e| panic!("{name}: lambda_http rejects it: {e}"));
    assert!(
        req.uri().path().starts_with('/'),
        "{name}: lambda_http request has no path"
    );
}

fn check_kinesis(name: &str, text: &str) {
    if DELIBERATELY_MALFORMED.iter().any(|(f, _)| *f == name) {
        assert!(
            serde_json::from_str::<KinesisEvent>(text).is_err(),
            "{name} is listed as deliberately malformed but parses as a KinesisEvent"
        );
        let raw: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        let records = raw["Records"].as_array().map(Vec::len).unwrap_or(0);
        assert!(records > 0, "{name}: no Records");
        return;
    }
    let event: KinesisEvent =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: not a KinesisEvent: {e}"));
    assert!(!event.records.is_empty(), "{name}: no Records");
    for (i, r) in event.records.iter().enumerate() {
        assert!(
            !r.kinesis.sequence_number.is_empty(),
            "{name}: record {i} has no sequenceNumber"
        );
        assert!(
            r.event_id.as_deref().is_some_and(|s| !s.is_empty()),
            "{name}: record {i} has no eventID"
        );
        assert_eq!(
            r.event_source.as_deref(),
            Some("aws:kinesis"),
            "{name}: record {i} eventSource"
        );
    }
}

fn check_s3(name: &str, event: &S3Event) {
    assert!(
        !event.records.is_empty(),
        "{name}: S3 notification without Records"
    );
    for (i, r) in event.records.iter().enumerate() {
        assert!(
            r.s3.bucket.name.as_deref().is_some_and(|b| !b.is_empty()),
            "{name}: record {i} has no bucket"
        );
        assert!(
            r.s3.object.key.as_deref().is_some_and(|k| !k.is_empty()),
            "{name}: record {i} has no object key"
        );
    }
}

fn check_sqs_or_s3(name: &str, binary: &str, text: &str) {
    let raw: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
    let source = raw
        .pointer("/Records/0/eventSource")
        .and_then(|s| s.as_str())
        .unwrap_or_else(|| panic!("{name}: Records[0].eventSource is missing"));
    match source {
        "aws:sqs" => {
            let event: SqsEvent = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{name}: not an SqsEvent: {e}"));
            assert!(!event.records.is_empty(), "{name}: no Records");
            for (i, m) in event.records.iter().enumerate() {
                assert!(
                    m.message_id.as_deref().is_some_and(|s| !s.is_empty()),
                    "{name}: message {i} has no messageId"
                );
                let body = m
                    .body
                    .as_deref()
                    .unwrap_or_else(|| panic!("{name}: message {i} has no body"));
                let inner: Value = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("{name}: message {i} body is not JSON: {e}"));
                // S3 sends one s3:TestEvent when a notification is configured; loaders must skip it.
                if inner.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
                    continue;
                }
                // raw-writer's queues carry its own lake retry messages and S3 notifications of
                // spill/ objects (the spill drain).
                if binary == "raw-writer" && !raw_writer::drain::is_s3_notification(body) {
                    raw_writer::lake::LakeRetry::parse(body).unwrap_or_else(|e| {
                        panic!("{name}: message {i} body is not a lake retry message: {e}")
                    });
                    continue;
                }
                let s3: S3Event = serde_json::from_value(inner).unwrap_or_else(|e| {
                    panic!("{name}: message {i} body is not an S3 notification: {e}")
                });
                check_s3(&format!("{name} message {i}"), &s3);
            }
        }
        "aws:s3" => {
            let event: S3Event = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{name}: not an S3Event: {e}"));
            check_s3(name, &event);
        }
        other => panic!("{name}: eventSource {other:?} is neither aws:sqs nor aws:s3"),
    }
}

fn event_files() -> Vec<PathBuf> {
    let dir = repo_root().join("events");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn event_files_parse_into_their_functions_event_type() {
    let t = Template::load();
    let functions = t.functions();
    let files = event_files();
    let mut per_function: BTreeMap<String, usize> = BTreeMap::new();

    for path in &files {
        let name = file_name(path);
        // Longest prefix wins, so `a-b-case.json` belongs to function `a-b`, not `a`.
        let owner = functions
            .iter()
            .filter(|(_, b)| name.starts_with(&format!("{b}-")))
            .max_by_key(|(_, b)| b.len())
            .unwrap_or_else(|| panic!("events/{name} is not named <function>-<case>.json for any function in template.yaml"));
        let (id, binary) = owner;
        let kinds = event_kinds_of(&t.event_kinds(id));
        assert!(
            !kinds.is_empty(),
            "{id}: template.yaml wires no HTTP API, Kinesis, SQS or S3 source to it"
        );
        let text = read(path);
        let kind = file_event_kind(&name, &text);
        assert!(
            kinds.contains(&kind),
            "events/{name} is a {kind:?} event, but template.yaml wires only {kinds:?} to {id}"
        );
        match kind {
            EventKind::Http => check_http(&name, &text),
            EventKind::Kinesis => check_kinesis(&name, &text),
            EventKind::SqsOrS3 => check_sqs_or_s3(&name, binary, &text),
        }
        *per_function.entry(binary.clone()).or_default() += 1;
    }

    for (id, binary) in &functions {
        assert!(
            per_function.get(binary).copied().unwrap_or(0) > 0,
            "{id}: no events/{binary}-<case>.json file (sam local invoke / cargo lambda invoke need one)"
        );
    }
}

#[test]
fn every_event_file_is_used_by_a_test() {
    let root = repo_root();
    let this_file = root.join("tests/tests/template.rs");
    let sources: Vec<(PathBuf, String)> = rust_files(&root)
        .into_iter()
        .filter(|p| p != &this_file)
        .map(|p| {
            let text = read(&p);
            (p, text)
        })
        .collect();
    let functions: Vec<String> = Template::load()
        .functions()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let unused: Vec<String> = event_files()
        .iter()
        .map(|p| file_name(p))
        .filter(|name| !is_referenced(name, &functions, &root, &sources))
        .collect();
    assert!(
        unused.is_empty(),
        "event files no test mentions (by file name, \"stem\", or \"case\" next to a \
         \"<function>-{{case}}\" pattern in the function's crate): {unused:?}"
    );
}

/// Whether a `.rs` file names the event file: `ingest-api-v2-single.json`, `"ingest-api-v2-single"`,
/// or — inside `functions/ingest-api/` in a file that builds names from `ingest-api-{case}` — the
/// case alone, `"v2-single"`.
fn is_referenced(
    name: &str,
    functions: &[String],
    root: &Path,
    sources: &[(PathBuf, String)],
) -> bool {
    let stem = name.trim_end_matches(".json");
    let quoted_stem = format!("\"{stem}\"");
    let owner = functions
        .iter()
        .filter(|f| stem.starts_with(&format!("{f}-")))
        .max_by_key(|f| f.len());
    sources.iter().any(|(path, text)| {
        if text.contains(name) || text.contains(&quoted_stem) {
            return true;
        }
        let Some(function) = owner else { return false };
        let case = &stem[function.len() + 1..];
        path.starts_with(root.join("functions").join(function))
            && text.contains(&format!("{function}-{{"))
            && text.contains(&format!("\"{case}\""))
    })
}

#[test]
fn env_var_scanner_finds_config_reads_and_ignores_other_literals() {
    let src = r#"
        let stream = env.required("STREAM_NAME")?;
        let max = env.bounded_or("MAX_EVENTS", 500, 10_000)?;
        let x = std::env::var("PUT_DEADLINE_MS");
        let label = "NOT_A_READ";
        if method == "POST" {}
        match (m, p) { ("GET", "/v1/health") => {} }
        let y = f("ab");
    "#;
    let found = env_names_read(src);
    let expected: BTreeSet<String> = ["MAX_EVENTS", "PUT_DEADLINE_MS", "STREAM_NAME"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, expected);
}

/// Just enough of a Cargo.toml reader for package and bin names (no toml crate in the workspace).
mod toml_lite {
    pub struct Manifest {
        pub package_name: Option<String>,
        pub bin_names: Vec<String>,
    }

    pub fn parse(text: &str) -> Manifest {
        let mut section = String::new();
        let mut package_name = None;
        let mut bin_names = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line
                    .trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key.trim() != "name" {
                continue;
            }
            let value = value.trim().trim_matches('"').to_owned();
            match section.as_str() {
                "package" => package_name = Some(value),
                "bin" => bin_names.push(value),
                _ => {}
            }
        }
        Manifest {
            package_name,
            bin_names,
        }
    }
}

/// The template resolved in `region` with `extra` parameter values on top of the local ones.
fn model_in(region: &str, extra: &[(&str, &str)]) -> Result<Model, String> {
    let text = read(&repo_root().join("template.yaml"));
    let mut overrides: Vec<(String, String)> = LOCAL_PARAMETER_DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    overrides.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let names = LocalNames::in_region("http://127.0.0.1:4566", region);
    Model::from_yaml(&text, &overrides, &names).map_err(|e| e.to_string())
}

fn env_of<'a>(model: &'a Model, binary: &str, name: &str) -> &'a str {
    model
        .function_by_binary(binary)
        .and_then(|f| f.environment.get(name))
        .map_or("<unset>", String::as_str)
}

#[test]
fn redshift_region_turns_a_stack_into_a_second_region_only_elsewhere() {
    // A second region: its keys and its loader name the regions.
    let west = model_in("us-west-2", &[("RedshiftRegion", "us-east-1")]).unwrap();
    assert_eq!(env_of(&west, "raw-writer", "RAW_KEY_REGION"), "us-west-2");
    assert_eq!(
        env_of(&west, "rules-loader", "REDSHIFT_REGION"),
        "us-east-1"
    );
    assert_eq!(env_of(&west, "rules-loader", "STAGING_REGION"), "us-west-2");
    // The warehouse's own region, named or not: keys and loader as in one region.
    for extra in [&[("RedshiftRegion", "us-east-1")][..], &[][..]] {
        let home = model_in("us-east-1", extra).unwrap();
        assert_eq!(
            env_of(&home, "raw-writer", "RAW_KEY_REGION"),
            "",
            "{extra:?}"
        );
        assert_eq!(
            env_of(&home, "rules-loader", "REDSHIFT_REGION"),
            "",
            "{extra:?}"
        );
    }
    // One name for every region needs a zone and a certificate, and no IAM (SigV4 is regional).
    let cert = "arn:aws:acm:us-west-2:123456789012:certificate/abc";
    let domain = [("IngestDomainName", "ingest.example.com")];
    let err = model_in("us-west-2", &domain).unwrap_err();
    assert!(err.contains("IngestHostedZoneId"), "{err}");
    let full = [
        ("IngestDomainName", "ingest.example.com"),
        ("IngestHostedZoneId", "Z0123456789ABC"),
        ("IngestCertificateArn", cert),
    ];
    model_in("us-west-2", &full).unwrap();
    let mut iam = full.to_vec();
    iam.push(("AuthMode", "IAM"));
    let err = model_in("us-west-2", &iam).unwrap_err();
    assert!(err.contains("AuthMode"), "{err}");
}

#[test]
fn allowed_origins_turn_on_the_http_apis_cors_and_the_ingest_functions_check() {
    // Default: no CORS configuration, no origin allowed.
    let none = model_in("us-east-1", &[]).unwrap();
    assert!(none.cors.is_none());
    assert_eq!(env_of(&none, "ingest-api", "ALLOWED_ORIGINS"), "");
    let on = model_in(
        "us-east-1",
        &[(
            "AllowedOrigins",
            "https://shop.example.com,https://*.invalid",
        )],
    );
    assert!(
        on.unwrap_err().contains("AllowOrigins"),
        "an entry API Gateway would not take fails the local stack too"
    );
    let on = model_in(
        "us-east-1",
        &[(
            "AllowedOrigins",
            "https://shop.example.com,http://localhost:8080",
        )],
    )
    .unwrap();
    let cors = on.cors.as_ref().unwrap();
    assert!(cors.allow_origins.allows("https://shop.example.com"));
    assert!(cors.allow_origins.allows("http://localhost:8080"));
    assert!(!cors.allow_origins.allows("https://evil.example"));
    assert_eq!(cors.allow_methods, ["GET", "POST"]);
    for h in ["content-type", "content-encoding", "authorization"] {
        assert!(cors.allow_headers.iter().any(|a| a == h), "{h}");
    }
    assert!(cors.expose_headers.iter().any(|e| e == "retry-after"));
    assert!(!cors.allow_credentials);
    // The function refuses what the API's CORS would only hide: the same list.
    assert_eq!(
        env_of(&on, "ingest-api", "ALLOWED_ORIGINS"),
        "https://shop.example.com,http://localhost:8080"
    );
}
