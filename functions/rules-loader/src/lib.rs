//! # rules-loader
//!
//! Loads raw objects (`raw/…ndjson.gz`, docs/CONTRACTS.md §2) into Redshift, exactly once:
//! S3 notification (via SQS, or direct) → ledger check → rules → staging CSV in S3 → one
//! Data API transaction (COPY + merge + ledger) → partial batch response.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | env → [`Config`], validated at cold start (rules compiled once) |
//! | [`event`] | SQS / S3 event shapes → one [`event::Notice`] per raw object |
//! | [`stage`] | rules applied to raw lines → gzip CSV parts, rejects, per-object counts (pure) |
//! | [`sql`] | every SQL text: the load transaction, ledger look-up, migrations; `sql_literal` |
//! | [`error`] | [`LoadError`]: why an object or a load did not load (retryable or permanent) |
//! | [`load`] | the orchestration: ledger, S3, Data API submit/poll, outcome per message |
//! | [`migrate`] | additive migrations before the first load of a cold start |
//! | [`latency`] | ingest → loaded latency of a load's events, as metric values (pure) |
//!
//! ## Exactly once
//! Every AWS trigger is at least once, so the load is made idempotent three ways:
//! 1. **Ledger first.** Raw keys already in `caudal_ledger` are acknowledged without reading.
//! 2. **Deterministic load id.** [`caudal_core::keys::load_id`] over the load scope (workgroup or
//!    cluster, database, schema) and the (key, ETag) set names the
//!    staging files, the load descriptor and the Data API `ClientToken`; the descriptor keeps the
//!    exact SQL, so a retry after a Lambda timeout re-submits byte-identical SQL with the same
//!    token and re-attaches to the statement that may still be running — never a second load.
//!    A token whose statement FAILED in an earlier invocation moves to the next generation
//!    (`<load-id>-<n>`) so the load can be tried again.
//! 3. **In SQL.** The load transaction starts with `LOCK caudal_ledger`, so concurrent loads
//!    run one after the other at SNAPSHOT and SERIALIZABLE isolation alike; every insert is
//!    guarded by the ledger (an object already loaded inserts nothing), event ids already in a
//!    table are skipped, and duplicates inside a load keep one row ([`sql`] has the details).
//!    Concurrent first attempts stage under attempt-specific prefixes and agree on one
//!    descriptor through an S3 conditional write ([`load`]).
//!
//! Failures: a raw object whose load failed (statement FAILED/ABORTED, still running at the
//! deadline, S3 errors) is reported in `batchItemFailures` and comes back; a poison object
//! (invalid key, undecodable object) fails every time and reaches the queue's DLQ after
//! `maxReceiveCount`, its reason logged each time. A message none of whose objects could be
//! tried (migration failing, warehouse unavailable at the ledger look-up, too little time left
//! to start a load) is never failed towards the DLQ: it is sent to the queue again, delayed
//! ([`postpone`]), and the original acknowledged.

pub mod config;
pub mod error;
pub mod event;
pub mod latency;
pub mod load;
pub mod migrate;
pub mod postpone;
pub mod sql;
pub mod stage;

use std::sync::Arc;
use std::time::Duration;

use caudal_aws::clients::ClientFactory;
use caudal_core::config::Env;
use caudal_core::retry::{DeadlinePolicy, RetryPolicy};
use caudal_core::warehouse::PollPolicy;
use lambda_runtime::{Context, LambdaEvent};
use time::OffsetDateTime;

pub use config::{Config, ConfigError};
pub use error::LoadError;
pub use event::{LoaderEvent, LoaderResponse, Summary};

/// Everything a cold start builds, from the environment and the client factory: what `main`
/// runs in Lambda and the local stack runs in process.
pub fn start(env: &Env, clients: &ClientFactory) -> Result<State, ConfigError> {
    let config = Config::from_env(env)?;
    // A second ingest region loads into the one warehouse: its Data API calls go to the
    // warehouse's region, everything else stays in this one.
    let redshift_data = match &config.redshift_region {
        Some(region) => clients
            .clone()
            .with_redshift_data_region(region)
            .redshift_data(),
        None => clients.redshift_data(),
    };
    Ok(State::new(config, clients.s3(), redshift_data).with_sqs(clients.sqs()))
}

/// The clock used for `loaded_at` (injectable so tests can assert exact SQL).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Where each staging attempt's id comes from (`[a-z0-9]`, unique per attempt; injectable so
/// tests can assert exact keys).
pub type AttemptIds = Arc<dyn Fn() -> String + Send + Sync>;

/// A fresh attempt id: the 32 hex digits of a UUIDv7 (time-ordered, random per process).
pub fn new_attempt_id() -> String {
    caudal_core::event::new_event_id().replace('-', "")
}

/// Everything a handler needs, built once per cold start.
pub struct State {
    /// Configuration.
    pub config: Config,
    /// S3 client (raw reads, staging writes).
    pub s3: aws_sdk_s3::Client,
    /// Redshift Data API client.
    pub redshift: aws_sdk_redshiftdata::Client,
    /// Retries of single calls (S3, Data API submit/describe).
    pub retry: RetryPolicy,
    /// How statements are polled.
    pub poll: PollPolicy,
    /// The retry deadline of each invocation: 3 s kept free before the Lambda deadline to
    /// answer; 5 minutes (the function's timeout) when the context has no real deadline (`0`
    /// in `Context::default()`, a relative timeout from `cargo lambda watch`).
    pub deadline: DeadlinePolicy,
    /// Objects read concurrently.
    pub fetch_concurrency: usize,
    /// A load is not started with less time than this before the deadline: its messages are
    /// postponed untried ([`postpone`]) instead of failing half way.
    pub min_load_time: Duration,
    /// SQS client for postponing messages (`None`: untried messages are reported failed).
    pub sqs: Option<aws_sdk_sqs::Client>,
    pub(crate) clock: Clock,
    pub(crate) attempt_id: AttemptIds,
    /// The last migration of this execution environment: when, and which tables it held.
    pub(crate) migrated: tokio::sync::Mutex<Option<migrate::MigrationState>>,
}

impl State {
    /// State with the default policies and the system clock. The clients come from
    /// [`caudal_aws::clients`] in Lambda and the local stack (SDK retries off, so [`State::retry`]
    /// and [`State::poll`] are the only retry loops and each attempt is bounded); tests pass
    /// mocked ones.
    pub fn new(
        config: Config,
        s3: aws_sdk_s3::Client,
        redshift: aws_sdk_redshiftdata::Client,
    ) -> Self {
        Self {
            config,
            s3,
            redshift,
            retry: RetryPolicy::default(),
            poll: PollPolicy::default(),
            deadline: DeadlinePolicy {
                margin: Duration::from_secs(3),
                fallback: Duration::from_secs(300),
                budget: None,
            },
            fetch_concurrency: 8,
            min_load_time: Duration::from_secs(20),
            sqs: None,
            clock: Arc::new(OffsetDateTime::now_utc),
            attempt_id: Arc::new(new_attempt_id),
            migrated: tokio::sync::Mutex::new(None),
        }
    }

    /// The SQS client untried messages are postponed with (to `LOADER_QUEUE_URL`).
    pub fn with_sqs(mut self, sqs: aws_sdk_sqs::Client) -> Self {
        self.sqs = Some(sqs);
        self
    }

    /// Replace the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Replace the source of staging attempt ids (tests).
    pub fn with_attempt_ids(mut self, ids: AttemptIds) -> Self {
        self.attempt_id = ids;
        self
    }

    /// Whether the migration of this cold start has run.
    pub fn is_migrated(&self) -> bool {
        self.migrated.try_lock().is_ok_and(|m| m.is_some())
    }
}

/// The Lambda handler: SQS → partial batch response; direct S3 → summary, or an error when an
/// object failed (so the asynchronous invocation is retried).
pub async fn handler(
    state: &State,
    event: LambdaEvent<LoaderEvent>,
) -> Result<LoaderResponse, lambda_runtime::Error> {
    let deadline = state.deadline.deadline(event.context.deadline);
    let is_sqs = matches!(event.payload, LoaderEvent::Sqs(_));
    let notices = event::notices(&event.payload);
    // Boxed: the load future is deep, and a boxed one keeps the runtime's future small.
    let mut result = Box::pin(load::run(state, &notices, deadline)).await;
    if is_sqs {
        let unsent = postpone::postpone(state, &notices, &result.postponed, deadline).await;
        result.add_failures(&notices, &unsent);
        Ok(LoaderResponse::Sqs(result.batch_response))
    } else if result.summary.failed + result.summary.postponed > 0 {
        Err(format!(
            "{} raw object(s) failed to load, {} not tried; see the logs for reasons",
            result.summary.failed, result.summary.postponed
        )
        .into())
    } else {
        Ok(LoaderResponse::S3(result.summary))
    }
}

/// Deserialize `payload` as the Lambda runtime would, run [`handler`], serialize the answer.
pub async fn invoke(
    state: &State,
    payload: serde_json::Value,
    ctx: Context,
) -> Result<serde_json::Value, lambda_runtime::Error> {
    let event: LoaderEvent = serde_json::from_value(payload)?;
    let response = handler(state, LambdaEvent::new(event, ctx)).await?;
    Ok(serde_json::to_value(response)?)
}
