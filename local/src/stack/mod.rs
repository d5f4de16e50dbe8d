//! The whole local stack: start, run, stop.
//!
//! [`Stack::start`] brings up, in order: moto (S3, Kinesis, Firehose, SQS) and PostgreSQL 15,
//! each on a free loopback port; the Redshift Data API endpoint on PostgreSQL; the template's
//! resources in moto; the template's functions in process (the loader migrates the warehouse
//! on the way); the HTTP API; and one event source poller per Kinesis/SQS event source.
//! [`Stack::stop`] stops them in reverse and waits for every child process to exit; dropping a
//! [`Stack`] without calling `stop` still kills moto and stops PostgreSQL (Drop guards), and a
//! stack killed with SIGKILL is cleaned up by the next `up` or `reset` from the process ids it
//! wrote to `<run-dir>/stack.json`.
//!
//! State lives in the run directory (default `.local/`): `pg/` (the warehouse's data),
//! `logs/` (moto's and the stack's logs) and `stack.json` (endpoints and process ids of the
//! running stack). The emulated AWS services keep their state in memory, and moto numbers each
//! shard's records from 1 again, so a warehouse kept from an earlier run would hold ledger
//! entries for raw keys the new run will reuse — and the loader would skip those objects as
//! already loaded. Every `up` therefore starts with an empty warehouse.
//!
//! Submodules: [`template`] (the template's model), [`resources`] (that model's resources
//! created in moto), [`functions`] (a template function's binary → its in-process handler),
//! and `start` ([`Stack::start`], one named step per thing it brings up).

pub mod functions;
pub mod resources;
mod start;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::emulators::chaos::{Chaos, ChaosConfig};
use crate::emulators::esm::{KinesisMapping, SqsMapping};
use crate::emulators::http::Api;
use crate::emulators::lambda::LocalFunction;
use crate::emulators::notify::Relay;
use crate::emulators::postgres::{Postgres, PostgresError};
use crate::shutdown::Trigger;
use crate::stack::functions::FunctionError;
use crate::stack::resources::ResourceError;
use crate::stack::template::{Model, TemplateError};

/// Parameter values the local stack uses unless the user overrides them (each applies only
/// when the template declares the parameter):
/// - `AuthMode=NONE`: the local endpoint has no authorizer, and saying so keeps the functions'
///   view (no principal) honest;
/// - `RedshiftWorkgroup=caudal-local`: the template requires exactly one Redshift target and
///   the local Data API accepts any name;
/// - batching windows of 1 s, so sample traffic is queryable in seconds rather than the
///   production windows (tens of seconds) — the batching logic itself is unchanged;
/// - `SegmentWriteKeys=caudal-local`, so a Segment SDK pointed at the local endpoint works
///   with that write key, and `SnowplowAppIds=*`, so a Snowplow tracker with any app id does
///   (docs/SDKS.md).
pub const LOCAL_PARAMETER_DEFAULTS: [(&str, &str); 6] = [
    ("AuthMode", "NONE"),
    ("RedshiftWorkgroup", "caudal-local"),
    ("RawWriterBatchWindowSeconds", "1"),
    ("LoaderBatchWindowSeconds", "1"),
    ("SegmentWriteKeys", "caudal-local"),
    ("SnowplowAppIds", "*"),
];

/// Parameter values a chaos run uses unless the user overrides them: the loader runs with 4
/// concurrent workers, so duplicate notifications meet concurrent loads.
pub const CHAOS_PARAMETER_DEFAULTS: [(&str, &str); 1] = [("LoaderConcurrency", "4")];

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Run directory (created if missing).
    pub run_dir: PathBuf,
    /// The SAM template.
    pub template: PathBuf,
    /// A rules file to load with (sets the template's `RulesFile` parameter when it has one);
    /// `None` = the rules compiled into the functions.
    pub rules: Option<PathBuf>,
    /// Port of the HTTP API; `None` = a free one.
    pub api_port: Option<u16>,
    /// Template parameter overrides (`NAME=VALUE`), applied after [`LOCAL_PARAMETER_DEFAULTS`].
    pub parameters: Vec<(String, String)>,
    /// Isolation level of the local workgroup's database (Redshift's default: SNAPSHOT).
    pub isolation: crate::emulators::dataapi::Isolation,
    /// Faults to inject once the stack has started ([`crate::emulators::chaos`]); `None` = none.
    pub chaos: Option<ChaosConfig>,
    /// A second ingest region (e.g. `us-west-2`): the template once more in that moto region —
    /// its own HTTP API, stream, raw archive, queues and functions — deployed the way a second
    /// region is (`RedshiftRegion` = the home region), loading into the one warehouse.
    pub second_region: Option<String>,
}

impl StackOptions {
    /// Defaults for a repository root: `.local/`, `template.yaml`, `rules/rules.yaml` when present.
    pub fn for_repo(root: &Path) -> StackOptions {
        let rules = root.join("rules/rules.yaml");
        StackOptions {
            run_dir: root.join(".local"),
            template: root.join("template.yaml"),
            rules: rules.is_file().then_some(rules),
            api_port: None,
            parameters: Vec::new(),
            isolation: crate::emulators::dataapi::Isolation::default(),
            chaos: None,
            second_region: None,
        }
    }
}

/// Why the stack could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The template is wrong or uses something the local stack cannot resolve.
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    /// moto could not be started.
    #[error("moto: {0}")]
    Moto(#[from] testkit::StartError),
    /// PostgreSQL could not be started or stopped.
    #[error("postgres: {0}")]
    Postgres(#[from] PostgresError),
    /// A resource could not be created in moto.
    #[error("resources: {0}")]
    Resource(#[from] ResourceError),
    /// A function could not be set up.
    #[error("functions: {0}")]
    Function(#[from] FunctionError),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The template wires something the local stack cannot (e.g. an event source on a queue
    /// the template does not declare).
    #[error("wiring: {0}")]
    Wiring(String),
    /// Waiting for the pipeline to settle took too long.
    #[error("not settled after {0:?}: {1}")]
    Timeout(Duration, String),
}

impl StackError {
    /// Worth starting again without changes? Only for transient moto/port problems.
    pub fn is_retryable(&self) -> bool {
        match self {
            StackError::Postgres(e) => e.is_retryable(),
            StackError::Resource(e) => e.is_retryable(),
            StackError::Moto(testkit::StartError::NotReady(..)) | StackError::Timeout(..) => true,
            _ => false,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

/// AWS clients pointing at the stack's emulators, for the stack itself (resource set-up, event
/// source pollers, notification relays, the Data API's COPY reads) and for callers (reports,
/// tests).
///
/// These stand in for AWS's side of the pipeline or for a user, not for caudal's functions, so
/// they keep the SDK's default retries; the functions' clients come from
/// [`caudal_aws::clients`] through [`functions::Clients`].
#[derive(Debug, Clone)]
pub struct StackClients {
    /// The SDK configuration (moto endpoint, test credentials, the region's name).
    pub sdk: aws_config::SdkConfig,
    /// S3 (path style).
    pub s3: aws_sdk_s3::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// Kinesis.
    pub kinesis: aws_sdk_kinesis::Client,
    /// Redshift Data API (the local endpoint).
    pub redshift_data: aws_sdk_redshiftdata::Client,
}

impl StackClients {
    /// Clients for moto (`sdk`) and the local Data API (`data_api`).
    fn new(sdk: &aws_config::SdkConfig, data_api: &aws_config::SdkConfig) -> Self {
        // Path-style: `127.0.0.1` has no bucket subdomains.
        let s3 = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build();
        Self {
            sdk: sdk.clone(),
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(sdk),
            kinesis: aws_sdk_kinesis::Client::new(sdk),
            redshift_data: aws_sdk_redshiftdata::Client::new(data_api),
        }
    }
}

/// A running local stack: the emulators every region shares (moto, PostgreSQL with the Data
/// API) and one [`StackRegion`] per region the template runs in — the home region first.
pub struct Stack {
    run_dir: PathBuf,
    moto: Option<testkit::Moto>,
    pg: Option<Postgres>,
    trigger: Trigger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    data_api_url: String,
    aws_endpoint: String,
    lambda_url: String,
    regions: Vec<StackRegion>,
    chaos: Option<Arc<Chaos>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("run_dir", &self.run_dir)
            .field(
                "regions",
                &self
                    .regions
                    .iter()
                    .map(|r| (&r.name, &r.api_url))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// One region's copy of the template: its resources in moto's region, its functions, its HTTP
/// API and its event source pollers.
pub struct StackRegion {
    name: String,
    model: Model,
    api: Arc<Api>,
    api_url: String,
    functions: BTreeMap<String, Arc<LocalFunction>>,
    kinesis: Vec<Arc<KinesisMapping>>,
    sqs: Vec<Arc<SqsMapping>>,
    relays: Vec<Arc<Relay>>,
    queue_urls: BTreeMap<String, String>,
    clients: StackClients,
    fn_clients: functions::Clients,
}

impl StackRegion {
    /// Deploys the function `logical_id` again, as `sam deploy` of a new version would: its
    /// handler is built anew from the template's environment (a changed rules file is read
    /// again, the loader migrates) and serves every later invocation.
    pub async fn redeploy(&self, logical_id: &str) -> Result<(), StackError> {
        let f = self
            .model
            .functions
            .iter()
            .find(|f| f.logical_id == logical_id)
            .ok_or_else(|| {
                StackError::Wiring(format!("no function {logical_id} in the template"))
            })?;
        let local = self
            .functions
            .get(logical_id)
            .ok_or_else(|| StackError::Wiring(format!("function {logical_id} is not running")))?;
        let binary = f.binary.as_deref().ok_or_else(|| {
            StackError::Wiring(format!("{logical_id} has no local implementation"))
        })?;
        let handler = functions::build(binary, &f.environment, &self.fn_clients).await?;
        local.deploy(handler);
        tracing::info!(function = %f.name, "function_redeployed");
        Ok(())
    }

    /// The region's name (`us-east-1` for the home region).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Base URL of this region's HTTP API (`http://127.0.0.1:<port>`).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The template as resolved for this region.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Clients pointing at the emulators, in this region.
    pub fn clients(&self) -> &StackClients {
        &self.clients
    }

    /// This region's HTTP API (response counters).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// This region's in-process functions by logical ID.
    pub fn functions(&self) -> &BTreeMap<String, Arc<LocalFunction>> {
        &self.functions
    }

    /// This region's Kinesis event source mappings.
    pub fn kinesis_mappings(&self) -> &[Arc<KinesisMapping>] {
        &self.kinesis
    }

    /// This region's SQS event source mappings.
    pub fn sqs_mappings(&self) -> &[Arc<SqsMapping>] {
        &self.sqs
    }

    /// URL of the queue with this ARN.
    pub fn queue_url_by_arn(&self, arn: &str) -> Option<&str> {
        self.queue_urls.get(arn).map(String::as_str)
    }

    /// URL of the queue with this logical ID.
    pub fn queue_url(&self, logical_id: &str) -> Option<&str> {
        let q = self
            .model
            .queues
            .iter()
            .find(|q| q.logical_id == logical_id)?;
        self.queue_url_by_arn(&q.arn)
    }

    /// The value of an environment variable some function of this region's template gets
    /// (`RAW_BUCKET`, `REDSHIFT_SCHEMA`…), when one does and it is not empty.
    pub fn function_env(&self, name: &str) -> Option<String> {
        self.model
            .functions
            .iter()
            .find_map(|f| f.environment.get(name).filter(|v| !v.is_empty()).cloned())
    }

    /// What this region is still processing, or `None` when nothing.
    async fn pending_work(&self) -> Option<String> {
        for k in &self.kinesis {
            if !k.caught_up() {
                return Some(format!(
                    "{}: stream {} not fully processed",
                    self.name,
                    k.source().stream_name
                ));
            }
        }
        for r in &self.relays {
            if r.busy() {
                return Some(format!("{}: S3 notifications being relayed", self.name));
            }
            match queue_depth(&self.clients.sqs, r.relay_url()).await {
                Ok((0, 0)) => {}
                Ok(_) => {
                    return Some(format!(
                        "{}: S3 notifications waiting to be relayed",
                        self.name
                    ));
                }
                Err(e) => return Some(format!("{}: relay queue: {e}", self.name)),
            }
        }
        for s in &self.sqs {
            let q = &s.source().queue_name;
            if s.busy() {
                return Some(format!("{}: queue {q} batch in progress", self.name));
            }
            match queue_depth(&self.clients.sqs, s.queue_url()).await {
                Ok((0, 0)) => {}
                Ok((visible, in_flight)) => {
                    return Some(format!(
                        "{}: queue {q}: {visible} waiting, {in_flight} in flight",
                        self.name
                    ));
                }
                Err(e) => return Some(format!("{}: queue {q}: {e}", self.name)),
            }
        }
        None
    }
}

/// What `stack.json` records about a running stack.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StackFile {
    /// caudal-local's own pid.
    pub pid: u32,
    /// moto_server's pid.
    pub moto_pid: u32,
    /// moto endpoint.
    pub moto_endpoint: String,
    /// HTTP API base URL.
    pub api_url: String,
    /// Data API endpoint.
    pub data_api_url: String,
    /// Lambda's Invoke API for the functions ([`crate::emulators::invoke`]).
    #[serde(default)]
    pub lambda_url: String,
    /// PostgreSQL port.
    pub pg_port: u16,
    /// PostgreSQL data directory.
    pub pg_data_dir: PathBuf,
    /// A psql command line.
    pub psql: String,
    /// Every region's HTTP API, the home region first (`api_url` is the first one's).
    #[serde(default)]
    pub regions: Vec<RegionEndpoint>,
}

/// One region's HTTP API in `stack.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RegionEndpoint {
    /// The region.
    pub region: String,
    /// Its HTTP API base URL.
    pub api_url: String,
    /// The region's stack outputs, as `caudal` reads them from a deployed stack
    /// ([`crate::stack::template::Model::outputs`]; `ApiUrl` is the local API's URL).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
}

impl Stack {
    fn write_stack_file(&self) -> Result<(), StackError> {
        let (Some(moto), Some(pg)) = (&self.moto, &self.pg) else {
            return Ok(());
        };
        let file = StackFile {
            pid: std::process::id(),
            moto_pid: moto.pid(),
            moto_endpoint: self.aws_endpoint.clone(),
            api_url: self.home().api_url.clone(),
            data_api_url: self.data_api_url.clone(),
            lambda_url: self.lambda_url.clone(),
            pg_port: pg.port(),
            pg_data_dir: pg.data_dir().to_path_buf(),
            psql: pg.psql_command(),
            regions: self
                .regions
                .iter()
                .map(|r| {
                    let mut outputs = r.model.outputs.clone();
                    outputs.insert(
                        "ApiUrl".to_owned(),
                        format!("{}/", r.api_url.trim_end_matches('/')),
                    );
                    RegionEndpoint {
                        region: r.name.clone(),
                        api_url: r.api_url.clone(),
                        outputs,
                    }
                })
                .collect(),
        };
        let path = self.run_dir.join("stack.json");
        let text = serde_json::to_string_pretty(&file).unwrap_or_default();
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))
    }

    /// Stops every task and process and waits for them. Idempotent through `Drop`.
    pub async fn stop(mut self) -> Result<(), StackError> {
        self.trigger.fire();
        for t in self.tasks.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let mut result = Ok(());
        if let Some(mut pg) = self.pg.take() {
            result = tokio::task::spawn_blocking(move || pg.stop())
                .await
                .map_err(|e| StackError::Wiring(format!("postgres stop task: {e}")))
                .and_then(|r| r.map_err(StackError::from));
        }
        if let Some(moto) = self.moto.take() {
            // Moto's Drop kills and waits for the process.
            let _ = tokio::task::spawn_blocking(move || drop(moto)).await;
        }
        let _ = std::fs::remove_file(self.run_dir.join("stack.json"));
        tracing::info!("stack_stopped");
        result
    }

    /// The home region (the warehouse's): always there.
    pub fn home(&self) -> &StackRegion {
        &self.regions[0]
    }

    /// Every region, the home region first.
    pub fn regions(&self) -> &[StackRegion] {
        &self.regions
    }

    /// The region with this name.
    pub fn region(&self, name: &str) -> Option<&StackRegion> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Base URL of the home region's HTTP API (`http://127.0.0.1:<port>`).
    pub fn api_url(&self) -> &str {
        self.home().api_url()
    }

    /// URL of the Redshift Data API endpoint.
    pub fn data_api_url(&self) -> &str {
        &self.data_api_url
    }

    /// The AWS emulator endpoint (moto, behind the proxy that serializes Kinesis writes):
    /// point `AWS_ENDPOINT_URL` here to use the AWS CLI or SDKs against the stack.
    pub fn moto_endpoint(&self) -> String {
        self.aws_endpoint.clone()
    }

    /// tokio-postgres/libpq connection string of the warehouse.
    pub fn pg_connection_string(&self) -> String {
        self.pg
            .as_ref()
            .map(|p| p.connection_string())
            .unwrap_or_default()
    }

    /// A `psql` command for the warehouse.
    pub fn psql_command(&self) -> String {
        self.pg
            .as_ref()
            .map(|p| p.psql_command())
            .unwrap_or_default()
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The template as resolved for the home region.
    pub fn model(&self) -> &Model {
        self.home().model()
    }

    /// Clients pointing at the emulators, in the home region.
    pub fn clients(&self) -> &StackClients {
        self.home().clients()
    }

    /// The fault injector of a `--chaos` stack (its counters say what was injected).
    pub fn chaos(&self) -> Option<&Arc<Chaos>> {
        self.chaos.as_ref()
    }

    /// The home region's HTTP API (response counters).
    pub fn api(&self) -> &Api {
        self.home().api()
    }

    /// The home region's in-process functions by logical ID.
    pub fn functions(&self) -> &BTreeMap<String, Arc<LocalFunction>> {
        self.home().functions()
    }

    /// The home region's Kinesis event source mappings.
    pub fn kinesis_mappings(&self) -> &[Arc<KinesisMapping>] {
        self.home().kinesis_mappings()
    }

    /// The home region's SQS event source mappings.
    pub fn sqs_mappings(&self) -> &[Arc<SqsMapping>] {
        self.home().sqs_mappings()
    }

    /// URL of the home region's queue with this ARN.
    pub fn queue_url_by_arn(&self, arn: &str) -> Option<&str> {
        self.home().queue_url_by_arn(arn)
    }

    /// URL of the home region's queue with this logical ID.
    pub fn queue_url(&self, logical_id: &str) -> Option<&str> {
        self.home().queue_url(logical_id)
    }

    /// Waits until every event source of every region is drained: each Kinesis mapping has
    /// read and processed everything in its stream, and each SQS mapping's queue is empty with
    /// nothing in flight — twice in a row, half a second apart.
    pub async fn wait_until_drained(&self, timeout: Duration) -> Result<(), StackError> {
        let start = Instant::now();
        let mut stable = 0;
        loop {
            match self.pending_work().await {
                None => stable += 1,
                Some(what) => {
                    stable = 0;
                    if start.elapsed() > timeout {
                        return Err(StackError::Timeout(timeout, what));
                    }
                }
            }
            if stable >= 2 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What is still being processed in any region, or `None` when nothing is.
    pub async fn pending_work(&self) -> Option<String> {
        for r in &self.regions {
            if let Some(what) = r.pending_work().await {
                return Some(what);
            }
        }
        None
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.trigger.fire();
        for t in &self.tasks {
            t.abort();
        }
        // `pg` and `moto` stop themselves when dropped.
    }
}

/// (visible, in flight) messages of a queue.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<(u64, u64), String> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| caudal_aws::call_error(&e).to_string())?;
    let attrs = out.attributes();
    let get = |a: A| {
        attrs
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    ))
}

fn absolute(p: &Path) -> Result<PathBuf, StackError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .map_err(io("reading the current directory"))?
        .join(p))
}

fn wipe(dir: &Path) -> Result<(), StackError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StackError::Io {
            what: format!("removing the previous warehouse {}", dir.display()),
            source: e,
        }),
    }
}

/// Stops processes a previous stack in this run directory left behind (it was killed before
/// it could stop them): the PostgreSQL and moto recorded in `stack.json`, by process id, after
/// checking the id still belongs to that program.
pub fn reap_stale(run_dir: &Path) {
    let file = run_dir.join("stack.json");
    let Ok(text) = std::fs::read_to_string(&file) else {
        return;
    };
    let Ok(stale) = serde_json::from_str::<StackFile>(&text) else {
        let _ = std::fs::remove_file(&file);
        return;
    };
    if stale.pid != std::process::id() && process_matches(stale.pid, "caudal-local") {
        tracing::warn!(
            pid = stale.pid,
            "another caudal-local is still running on this run directory"
        );
        return;
    }
    if let Some(pid) = postmaster_pid(&stale.pg_data_dir)
        && process_matches(pid, "postgres")
    {
        tracing::warn!(pid, "stopping the PostgreSQL a previous run left behind");
        signal_and_wait(pid, "INT");
    }
    if process_matches(stale.moto_pid, "moto") {
        tracing::warn!(
            pid = stale.moto_pid,
            "stopping the moto_server a previous run left behind"
        );
        signal_and_wait(stale.moto_pid, "TERM");
    }
    let _ = std::fs::remove_file(&file);
}

fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn process_matches(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

fn signal_and_wait(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `caudal-local reset`: stops what a previous run left behind and deletes the run directory.
pub fn reset(run_dir: &Path) -> Result<(), StackError> {
    reap_stale(run_dir);
    match std::fs::remove_dir_all(run_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StackError::Io {
            what: format!("removing {}", run_dir.display()),
            source: e,
        }),
    }
}
