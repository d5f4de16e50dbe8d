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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chaos::{Chaos, ChaosConfig};
use crate::esm::{KinesisMapping, SqsMapping};
use crate::functions::{self, Clients, FunctionError};
use crate::http::{Api, BoundRoute};
use crate::lambda::LocalFunction;
use crate::notify::Relay;
use crate::postgres::{Postgres, PostgresError};
use crate::resources::{self, ResourceClients, ResourceError};
use crate::shutdown::{self, Trigger};
use crate::template::{LocalNames, Model, TemplateError};

/// Parameter values the local stack uses unless the user overrides them (each applies only
/// when the template declares the parameter):
/// - `AuthMode=NONE`: the local endpoint has no authorizer, and saying so keeps the functions'
///   view (no principal) honest;
/// - `RedshiftWorkgroup=caudal-local`: the template requires exactly one Redshift target and
///   the local Data API accepts any name;
/// - batching windows of 1 s, so sample traffic is queryable in seconds rather than the
///   production windows (tens of seconds) — the batching logic itself is unchanged.
pub const LOCAL_PARAMETER_DEFAULTS: [(&str, &str); 4] = [
    ("AuthMode", "NONE"),
    ("RedshiftWorkgroup", "caudal-local"),
    ("RawWriterBatchWindowSeconds", "1"),
    ("LoaderBatchWindowSeconds", "1"),
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
    pub isolation: crate::dataapi::Isolation,
    /// Faults to inject once the stack has started ([`crate::chaos`]); `None` = none.
    pub chaos: Option<ChaosConfig>,
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
            isolation: crate::dataapi::Isolation::default(),
            chaos: None,
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
/// [`caudal_aws::clients`] through [`Clients`].
#[derive(Debug, Clone)]
pub struct StackClients {
    /// The SDK configuration (moto endpoint, test credentials, us-east-1).
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

/// A running local stack.
pub struct Stack {
    run_dir: PathBuf,
    model: Model,
    moto: Option<testkit::Moto>,
    pg: Option<Postgres>,
    trigger: Trigger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    api: Arc<Api>,
    api_url: String,
    data_api_url: String,
    aws_endpoint: String,
    functions: BTreeMap<String, Arc<LocalFunction>>,
    kinesis: Vec<Arc<KinesisMapping>>,
    sqs: Vec<Arc<SqsMapping>>,
    relays: Vec<Arc<Relay>>,
    queue_urls: BTreeMap<String, String>,
    clients: StackClients,
    chaos: Option<Arc<Chaos>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("run_dir", &self.run_dir)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
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
    /// PostgreSQL port.
    pub pg_port: u16,
    /// PostgreSQL data directory.
    pub pg_data_dir: PathBuf,
    /// A psql command line.
    pub psql: String,
}

impl Stack {
    /// Starts everything. On error, whatever was started is stopped again.
    pub async fn start(opts: StackOptions) -> Result<Stack, StackError> {
        let run_dir = absolute(&opts.run_dir)?;
        let logs = run_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
        reap_stale(&run_dir);

        let moto_log = logs.join("moto.log");
        let moto = tokio::task::spawn_blocking(move || testkit::Moto::start(Some(&moto_log)))
            .await
            .map_err(|e| StackError::Wiring(format!("moto start task: {e}")))??;
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = Vec::new();
        let chaos = opts.chaos.clone().map(|c| Arc::new(Chaos::new(c)));
        // Every emulator call goes through the proxy that serializes Kinesis writes (moto loses
        // records under concurrent PutRecords; see crate::motoproxy). With chaos, the functions
        // reach it on a second listener that injects faults; the stack's own clients (standing
        // in for AWS's side, which retries for itself) keep the clean one.
        let proxy = crate::motoproxy::Proxy::new(moto.endpoint())
            .map_err(io("building the emulator proxy"))?;
        let aws_endpoint = serve_proxy(&proxy, None, &shutdown, &mut tasks).await?;
        let functions_endpoint = match &chaos {
            Some(c) => serve_proxy(&proxy, Some(c.clone()), &shutdown, &mut tasks).await?,
            None => aws_endpoint.clone(),
        };
        let sdk = testkit::sdk_config_for(&aws_endpoint).await;
        let functions_sdk = testkit::sdk_config_for(&functions_endpoint).await;
        let names = LocalNames::local(&aws_endpoint);

        // The template first: a mistake there should not cost a PostgreSQL start.
        let text = std::fs::read_to_string(&opts.template)
            .map_err(io(format!("reading {}", opts.template.display())))?;
        let declared = crate::template::declared_parameters(&text)?;
        let declares = |p: &str| declared.iter().any(|d| d == p);
        let mut overrides: Vec<(String, String)> = Vec::new();
        for (k, v) in LOCAL_PARAMETER_DEFAULTS {
            if declares(k) {
                overrides.push((k.to_owned(), v.to_owned()));
            }
        }
        if let Some(rules) = &opts.rules
            && declares("RulesFile")
        {
            let abs = absolute(rules)?;
            overrides.push(("RulesFile".to_owned(), abs.display().to_string()));
        }
        if chaos.is_some() {
            for (k, v) in CHAOS_PARAMETER_DEFAULTS {
                if declares(k) {
                    overrides.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        overrides.extend(opts.parameters.iter().cloned());
        let mut model = Model::from_yaml(&text, &overrides, &names)?;
        if let Some(c) = &chaos {
            // Killed and failed invocations leave messages in flight: they must come back in
            // seconds, not after the template's 12 or 30 minutes.
            for q in &mut model.queues {
                q.visibility_timeout_s = q.visibility_timeout_s.min(c.config().visibility_s);
            }
        }
        for w in &model.warnings {
            tracing::warn!(warning = %w, "template_not_emulated");
        }

        let pg_dir = run_dir.join("pg");
        let pg = start_postgres(pg_dir).await?;

        // Data API on PostgreSQL.
        let data_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io("binding the Data API port"))?;
        let data_api_url = format!(
            "http://{}",
            data_listener.local_addr().map_err(io("Data API address"))?
        );
        let pg_config: crate::dataapi::PgConfig = pg
            .connection_string()
            .parse()
            .map_err(|e| StackError::Wiring(format!("postgres connection string: {e}")))?;
        let fn_clients = Clients {
            aws: functions_sdk,
            redshift_data_url: data_api_url.clone(),
        };
        let stack_data_api = Clients {
            aws: sdk.clone(),
            redshift_data_url: data_api_url.clone(),
        };
        let clients = StackClients::new(&sdk, &stack_data_api.redshift_data_sdk());
        {
            // Redshift's COPY reads S3 with AWS's own retries; so does the emulator standing in.
            let s3 = clients.s3.clone();
            let sd = shutdown.clone();
            let dataapi_opts = crate::dataapi::DataApiOptions {
                isolation: opts.isolation,
                chaos: chaos.clone(),
                ..crate::dataapi::DataApiOptions::default()
            };
            tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    crate::dataapi::serve(data_listener, pg_config, s3, dataapi_opts, sd.wait())
                        .await
                {
                    tracing::error!(error = %e, "dataapi_failed");
                }
            }));
        }

        let created = resources::create(
            &model,
            &ResourceClients {
                kinesis: clients.kinesis.clone(),
                sqs: clients.sqs.clone(),
                s3: clients.s3.clone(),
                firehose: aws_sdk_firehose::Client::new(&sdk),
            },
        )
        .await?;

        let versioned: Vec<String> = model
            .buckets
            .iter()
            .filter(|b| b.versioned)
            .map(|b| b.name.clone())
            .collect();
        let mut relays = Vec::new();
        for (relay_url, target_url) in &created.relays {
            let mut r = Relay::new(
                clients.sqs.clone(),
                clients.s3.clone(),
                relay_url.clone(),
                target_url.clone(),
                versioned.clone(),
            );
            if let Some(c) = &chaos {
                r = r.with_chaos(c.clone());
            }
            let r = Arc::new(r);
            tasks.push(r.start(shutdown.clone()));
            relays.push(r);
        }

        // Functions, in process.
        let mut fns: BTreeMap<String, Arc<LocalFunction>> = BTreeMap::new();
        for f in &model.functions {
            let Some(binary) = &f.binary else { continue };
            let handler = functions::build(binary, &f.environment, &fn_clients).await?;
            let mut function = LocalFunction::new(f, handler);
            if let Some(c) = &chaos {
                function = function.with_chaos(c.clone());
            }
            fns.insert(f.logical_id.clone(), Arc::new(function));
            tracing::info!(function = %f.name, binary = %binary, "function_ready");
        }

        // HTTP API.
        let routes: Vec<BoundRoute> = model
            .routes
            .iter()
            .filter_map(|r| {
                fns.get(&r.function).map(|f| BoundRoute {
                    route: r.clone(),
                    function: f.clone(),
                })
            })
            .collect();
        let api = Arc::new(Api::new(routes, "local", &names.account_id));
        let api_listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.api_port.unwrap_or(0)))
            .await
            .map_err(io(format!(
                "binding the HTTP API port {}",
                opts.api_port.unwrap_or(0)
            )))?;
        let api_url = format!(
            "http://{}",
            api_listener.local_addr().map_err(io("API address"))?
        );
        {
            let api = api.clone();
            let sd = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::http::serve(api_listener, api, sd.wait()).await {
                    tracing::error!(error = %e, "http_api_failed");
                }
            }));
        }

        // Event source mappings.
        let mut kinesis = Vec::new();
        let mut sqs = Vec::new();
        for f in &model.functions {
            let Some(func) = fns.get(&f.logical_id) else {
                continue;
            };
            let identity = f.role_arn.clone().unwrap_or_else(|| {
                format!("arn:aws:iam::{}:role/{}-role", names.account_id, f.name)
            });
            for src in &f.kinesis {
                let on_failure_url = match src.on_failure.as_ref() {
                    Some(of) if of.queue_name.is_some() => {
                        Some(created.queue_urls.get(&of.arn).cloned().ok_or_else(|| {
                            StackError::Wiring(format!(
                                "{}: OnFailure queue {} is not in the template",
                                f.logical_id, of.arn
                            ))
                        })?)
                    }
                    _ => None,
                };
                let m = Arc::new(KinesisMapping::new(
                    clients.kinesis.clone(),
                    clients.sqs.clone(),
                    src.clone(),
                    func.clone(),
                    &names.region,
                    &identity,
                    on_failure_url,
                ));
                tasks.extend(
                    m.start(shutdown.clone())
                        .await
                        .map_err(|e| StackError::Wiring(e.to_string()))?,
                );
                kinesis.push(m);
            }
            for src in &f.sqs {
                let url = created
                    .queue_urls
                    .get(&src.queue_arn)
                    .cloned()
                    .ok_or_else(|| {
                        StackError::Wiring(format!(
                            "{}: queue {} is not in the template",
                            f.logical_id, src.queue_arn
                        ))
                    })?;
                let m = Arc::new(SqsMapping::new(
                    clients.sqs.clone(),
                    src.clone(),
                    url,
                    func.clone(),
                    &names.region,
                ));
                tasks.extend(m.start(shutdown.clone()));
                sqs.push(m);
            }
        }

        let stack = Stack {
            run_dir,
            model,
            moto: Some(moto),
            pg: Some(pg),
            trigger,
            tasks,
            api,
            api_url,
            data_api_url,
            aws_endpoint,
            functions: fns,
            kinesis,
            sqs,
            relays,
            queue_urls: created.queue_urls,
            clients,
            chaos,
        };
        stack.write_stack_file()?;
        if let Some(c) = &stack.chaos {
            c.arm();
            tracing::info!(chaos = %c.config(), "chaos_armed");
        }
        tracing::info!(api = %stack.api_url, data_api = %stack.data_api_url, "stack_started");
        Ok(stack)
    }

    fn write_stack_file(&self) -> Result<(), StackError> {
        let (Some(moto), Some(pg)) = (&self.moto, &self.pg) else {
            return Ok(());
        };
        let file = StackFile {
            pid: std::process::id(),
            moto_pid: moto.pid(),
            moto_endpoint: self.aws_endpoint.clone(),
            api_url: self.api_url.clone(),
            data_api_url: self.data_api_url.clone(),
            pg_port: pg.port(),
            pg_data_dir: pg.data_dir().to_path_buf(),
            psql: pg.psql_command(),
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

    /// Base URL of the HTTP API (`http://127.0.0.1:<port>`).
    pub fn api_url(&self) -> &str {
        &self.api_url
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

    /// The resolved template.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Clients pointing at the emulators.
    pub fn clients(&self) -> &StackClients {
        &self.clients
    }

    /// The fault injector of a `--chaos` stack (its counters say what was injected).
    pub fn chaos(&self) -> Option<&Arc<Chaos>> {
        self.chaos.as_ref()
    }

    /// The HTTP API (response counters).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The in-process functions by logical ID.
    pub fn functions(&self) -> &BTreeMap<String, Arc<LocalFunction>> {
        &self.functions
    }

    /// The Kinesis event source mappings.
    pub fn kinesis_mappings(&self) -> &[Arc<KinesisMapping>] {
        &self.kinesis
    }

    /// The SQS event source mappings.
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

    /// Waits until every event source is drained: each Kinesis mapping has read and processed
    /// everything in its stream, and each SQS mapping's queue is empty with nothing in flight
    /// — twice in a row, half a second apart.
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

    /// What is still being processed, or `None` when nothing is.
    pub async fn pending_work(&self) -> Option<String> {
        for k in &self.kinesis {
            if !k.caught_up() {
                return Some(format!(
                    "stream {} not fully processed",
                    k.source().stream_name
                ));
            }
        }
        for r in &self.relays {
            if r.busy() {
                return Some("S3 notifications being relayed".to_owned());
            }
            match queue_depth(&self.clients.sqs, r.relay_url()).await {
                Ok((0, 0)) => {}
                Ok(_) => return Some("S3 notifications waiting to be relayed".to_owned()),
                Err(e) => return Some(format!("relay queue: {e}")),
            }
        }
        for s in &self.sqs {
            if s.busy() {
                return Some(format!("queue {} batch in progress", s.source().queue_name));
            }
            match queue_depth(&self.clients.sqs, s.queue_url()).await {
                Ok((0, 0)) => {}
                Ok((visible, in_flight)) => {
                    return Some(format!(
                        "queue {}: {visible} waiting, {in_flight} in flight",
                        s.source().queue_name
                    ));
                }
                Err(e) => return Some(format!("queue {}: {e}", s.source().queue_name)),
            }
        }
        None
    }
}

/// Serves `proxy` on a new loopback listener (with `chaos`: the fault-injecting one) until
/// shutdown; returns its endpoint.
async fn serve_proxy(
    proxy: &Arc<crate::motoproxy::Proxy>,
    chaos: Option<Arc<Chaos>>,
    shutdown: &shutdown::Shutdown,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<String, StackError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding the emulator proxy port"))?;
    let endpoint = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(io("emulator proxy address"))?
    );
    let (proxy, sd) = (proxy.clone(), shutdown.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = crate::motoproxy::serve_proxy(listener, proxy, chaos, sd.wait()).await {
            tracing::error!(error = %e, "emulator_proxy_failed");
        }
    }));
    Ok(endpoint)
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

/// Starts PostgreSQL with an empty warehouse in `dir`, or — when the unprivileged user
/// PostgreSQL must run as (we are root) cannot reach `dir`, e.g. under `/root` — in a
/// directory under the system temp dir.
async fn start_postgres(dir: PathBuf) -> Result<Postgres, StackError> {
    tokio::task::spawn_blocking(move || {
        wipe(&dir)?;
        match Postgres::start(&dir) {
            Err(PostgresError::DirNotAccessible { .. }) => {
                let fallback = std::env::temp_dir().join(format!("caudal-local-pg-{}", std::process::id()));
                tracing::warn!(
                    wanted = %dir.display(),
                    using = %fallback.display(),
                    "postgres cannot use the run directory (not reachable by its user); using a temp dir"
                );
                let _ = std::fs::remove_dir_all(&dir);
                wipe(&fallback)?;
                Postgres::start(&fallback).map_err(StackError::from)
            }
            other => other.map_err(StackError::from),
        }
    })
    .await
    .map_err(|e| StackError::Wiring(format!("postgres start task: {e}")))?
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
