//! A local Amazon Redshift Data API endpoint that executes on PostgreSQL 15.
//!
//! moto emulates the Data API's bookkeeping but runs no SQL, so the local stack serves this
//! instead: the AWS JSON 1.1 protocol (`X-Amz-Target: RedshiftData.<Operation>`) that the real
//! `aws-sdk-redshiftdata` client speaks (point it here with `AWS_ENDPOINT_URL_REDSHIFT_DATA`),
//! with the loader's real SQL running on a real engine.
//!
//! Modules, from the wire inwards:
//! - [`wire`]: request/response shapes and AWS JSON errors, named as the service model names them.
//! - [`server`]: the axum route, validation, submission and the shared state.
//! - [`store`]: statements, their status, results, ClientToken idempotency, listing.
//! - [`state`]: the state the handlers and executors share, and each record's transitions.
//! - [`exec`]: the asynchronous lifecycle of each statement, run on PostgreSQL.
//! - [`pool`]: the PostgreSQL sessions, reset between statements.
//! - [`outcome`]: how a statement ended (its error, or what it produced).
//! - [`translate`]: Redshift SQL → PostgreSQL (tokens and parameters, DDL rewriting, COPY
//!   parsing).
//! - [`copy`]: COPY from S3 (manifest, prefix, gzip/zstd) streamed into `COPY … FROM STDIN`.
//! - [`zonemaps`]: Redshift's zone maps as BRIN indexes (never a B-tree), added to every table.
//!
//! Imports point inwards only: `server` → `exec` → `state` → `pool`/`store`, and `exec` →
//! `copy`; `copy`, `pool` and `state` share [`outcome`] and nothing imports `server`.
//!
//! Error policy: malformed requests are answered synchronously with the service's error types
//! (ValidationException, ResourceNotFoundException, ActiveStatementsExceededException, HTTP 400);
//! everything that goes wrong while running SQL — including Redshift features we cannot
//! reproduce faithfully — makes the statement FAILED with a message, as Redshift would.

pub mod copy;
pub mod exec;
pub mod outcome;
pub mod pool;
pub mod server;
pub mod state;
pub mod store;
pub mod translate;
pub mod wire;
pub mod zonemaps;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How to reach PostgreSQL: a tokio-postgres config, e.g. parsed from
/// [`super::postgres::Postgres::connection_string`].
pub type PgConfig = tokio_postgres::Config;

/// Tunables of the endpoint.
#[derive(Debug, Clone)]
pub struct DataApiOptions {
    /// Minimum time from submission to a final status, so callers' polling is exercised
    /// (the real service takes at least ~100 ms).
    pub min_latency: Duration,
    /// PostgreSQL sessions (one statement or batch per session at a time).
    pub pool_size: usize,
    /// Statements allowed in SUBMITTED/PICKED/STARTED before ActiveStatementsExceededException.
    pub max_active_statements: usize,
    /// Records per GetStatementResult page.
    pub result_page_rows: usize,
    /// The database's isolation level (Redshift's `ALTER DATABASE … ISOLATION LEVEL`).
    pub isolation: Isolation,
    /// Statement faults to inject (`caudal-local up --chaos`): FAILED, stopped part way and
    /// rolled back, delayed ([`super::chaos::Chaos::statement_fault`]).
    pub chaos: Option<Arc<crate::emulators::chaos::Chaos>>,
}

/// Redshift's two isolation levels, as PostgreSQL runs them.
///
/// Both take the transaction's snapshot at its first SELECT/DML/DDL statement — not at `BEGIN`
/// and not at `LOCK`, in Redshift as in PostgreSQL — so a `LOCK` as the first statement makes
/// the transaction see everything committed before it got the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// SNAPSHOT, the default of new Redshift clusters and Serverless workgroups: PostgreSQL
    /// REPEATABLE READ. Two transactions whose `NOT EXISTS` checks read what the other writes
    /// can both commit (write skew).
    #[default]
    Snapshot,
    /// SERIALIZABLE: PostgreSQL's SERIALIZABLE. A conflict makes one statement FAILED with
    /// Redshift's `ERROR: 1023` serializable isolation violation.
    Serializable,
}

impl Isolation {
    /// Parses `snapshot` or `serializable` (any case), as Redshift's
    /// `ALTER DATABASE … ISOLATION LEVEL` names them.
    pub fn parse(s: &str) -> Option<Isolation> {
        match s.to_ascii_lowercase().as_str() {
            "snapshot" => Some(Isolation::Snapshot),
            "serializable" => Some(Isolation::Serializable),
            _ => None,
        }
    }

    /// The level's Redshift name.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Snapshot => "snapshot",
            Isolation::Serializable => "serializable",
        }
    }

    /// The PostgreSQL level that stands for it.
    pub fn postgres_level(self) -> &'static str {
        match self {
            Isolation::Snapshot => "repeatable read",
            Isolation::Serializable => "serializable",
        }
    }
}

impl Default for DataApiOptions {
    fn default() -> Self {
        DataApiOptions {
            min_latency: Duration::from_millis(100),
            pool_size: 4,
            max_active_statements: 200,
            result_page_rows: 1000,
            isolation: Isolation::Snapshot,
            chaos: None,
        }
    }
}

/// Why the endpoint stopped serving. Permanent: the listener or runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Accepting or serving connections failed.
    #[error("data api server failed: {0}")]
    Io(#[from] std::io::Error),
    /// The warehouse could not be prepared (zone-map trigger).
    #[error("preparing the warehouse failed: {0}")]
    Warehouse(#[from] tokio_postgres::Error),
}

/// Serves the Data API on `listener` until `shutdown` completes, executing on the PostgreSQL
/// database `pg` names and reading COPY sources through `s3`. On shutdown, statements still
/// running are cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pg: PgConfig,
    s3: aws_sdk_s3::Client,
    opts: DataApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let database = pg
        .get_dbname()
        .or(pg.get_user())
        .unwrap_or("postgres")
        .to_string();
    zonemaps::install(&pg).await?;
    let pool = pool::Pool::new(pg, opts.pool_size, opts.isolation);
    let shared = Arc::new(state::Shared::new(pool, s3, opts, database));
    let app = axum::Router::new()
        .route("/", axum::routing::post(server::handle))
        // 40 statements of up to 100 KB each must fit in one BatchExecuteStatement.
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(shared.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "dataapi_listening");
    }
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    shared.abort_all().await;
    tracing::info!("dataapi_stopped");
    result.map_err(ServeError::from)
}
