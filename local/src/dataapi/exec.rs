//! Running submitted statements on PostgreSQL: the connection pool and the background
//! lifecycle SUBMITTED → PICKED → STARTED → FINISHED | FAILED | ABORTED.
//!
//! Each submission runs on one pooled connection, like a fresh Redshift session: afterwards the
//! connection is reset (rollback, settings, temp tables) before it serves the next statement.
//! A batch, or a multi-statement text without its own transaction control, runs inside one
//! transaction, so it is all or nothing. Injected faults ([`crate::chaos::StatementFault`])
//! fail a statement before it runs, stop it part way inside its transaction (rolled back by the
//! session reset, never half committed) or delay it in SUBMITTED and before its commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{Mutex as AsyncMutex, Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::Isolation;
use super::copy::run_copy;
use super::server::{Shared, Work};
use super::store::ResultSet;
use super::translate::Planned;
use super::wire::{ColumnMetadata, Field, Status};
use crate::chaos::StatementFault;

/// Why a statement did not finish. The statement is FAILED (or ABORTED); none of these are
/// retried by the endpoint — the caller resubmits if it wants to.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// PostgreSQL (or the connection to it) reported an error.
    #[error("{}", format_pg_error(.0))]
    Db(#[from] tokio_postgres::Error),
    /// A failure we detected, with a message for the caller.
    #[error("{0}")]
    Failed(String),
    /// Cancelled by CancelStatement.
    #[error("Query cancelled by CancelStatement")]
    Aborted,
    /// Stopped part way by an injected fault ([`crate::chaos`]): rolled back, ABORTED.
    #[error("{0}")]
    Interrupted(String),
}

fn format_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::T_R_SERIALIZATION_FAILURE => {
            // Redshift's shape for every serialization failure (there is no PostgreSQL text in
            // it); PostgreSQL's own reason follows for whoever debugs locally.
            format!(
                "ERROR: 1023 DETAIL: Serializable isolation violation on table - 0, transactions \
                 forming the cycle are: 0 (pid:0) [local: {}]",
                db.message()
            )
        }
        Some(db) => {
            let mut s = format!("ERROR: {}", db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!("\n  Detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("\n  Hint: {h}"));
            }
            s
        }
        None => format!("ERROR: database connection: {e}"),
    }
}

/// A pooled PostgreSQL session.
struct Conn {
    client: Client,
    pid: i64,
}

/// A small pool: at most `size` sessions, created lazily, reused after a reset.
pub struct Pool {
    config: tokio_postgres::Config,
    idle: AsyncMutex<Vec<Conn>>,
    permits: Semaphore,
}

/// A session on loan from the pool.
pub struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    healthy: bool,
    _permit: SemaphorePermit<'a>,
}

impl Pool {
    /// A pool of up to `size` sessions using `config` (sessions run in UTC with ISO dates,
    /// as Redshift does, and every transaction at `isolation`).
    pub fn new(mut config: tokio_postgres::Config, size: usize, isolation: Isolation) -> Pool {
        // Startup options, not SETs: the session reset (RESET ALL) returns to them. The space
        // in the level's name is escaped as the server's option parser wants. No nested-loop
        // joins: Redshift joins on equality by hash or merge, and a nested loop chosen from the
        // stale statistics of a table written earlier in the same transaction would make a
        // load quadratic here where it is linear there.
        config
            .options(format!(
                "-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres \
                 -c enable_nestloop=off -c default_transaction_isolation={}",
                isolation.postgres_level().replace(' ', "\\ ")
            ))
            .application_name("caudal-local-dataapi");
        Pool {
            config,
            idle: AsyncMutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    /// Borrows a session, connecting a new one if none is idle.
    pub async fn get(&self) -> Result<Lease<'_>, ExecError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ExecError::Failed("ERROR: the endpoint is shutting down".into()))?;
        let reused = {
            let mut idle = self.idle.lock().await;
            loop {
                match idle.pop() {
                    Some(c) if c.client.is_closed() => continue,
                    other => break other,
                }
            }
        };
        let conn = match reused {
            Some(c) => c,
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::warn!(%error, "dataapi_pg_connection_closed");
                    }
                });
                let pid = client
                    .query_one("SELECT pg_backend_pid()", &[])
                    .await?
                    .get::<_, i32>(0);
                Conn {
                    client,
                    pid: i64::from(pid),
                }
            }
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            healthy: true,
            _permit: permit,
        })
    }
}

impl Lease<'_> {
    fn client(&self) -> Option<&Client> {
        self.conn.as_ref().map(|c| &c.client)
    }

    /// Resets the session so the next statement sees a fresh one; a session that cannot be
    /// reset is discarded instead of returned.
    async fn reset(&mut self) {
        let Some(client) = self.client() else { return };
        // ROLLBACK outside a transaction only warns. DISCARD ALL minus DEALLOCATE ALL, which
        // would drop tokio-postgres's cached internal statements.
        let ok = client.batch_execute("ROLLBACK").await.is_ok()
            && client
                .batch_execute(
                    "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *; \
                     SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; \
                     DISCARD SEQUENCES",
                )
                .await
                .is_ok();
        self.healthy = ok;
    }

    async fn give_back(mut self) {
        self.reset().await;
        if let Some(conn) = self.conn.take()
            && self.healthy
            && !conn.client.is_closed()
        {
            self.pool.idle.lock().await.push(conn);
        }
    }
}

/// The outcome of one finished sub-statement.
#[derive(Debug, Default)]
pub struct SubOutcome {
    /// Rows returned or affected.
    pub rows: i64,
    /// The result set of its last statement, if any.
    pub result: Option<ResultSet>,
    /// Execution time.
    pub duration_ns: i64,
}

/// The error of a statement whose session an injected fault cut off part way.
const LOST_SESSION: &str = "FATAL: terminating connection due to administrator command";

/// Runs the record `id` through its lifecycle, with the injected `fault` ([`crate::chaos`];
/// [`StatementFault::None`] normally). Spawned once per new submission.
pub async fn drive(shared: Arc<Shared>, id: String, fault: StatementFault) {
    let began = Instant::now();
    let step = shared.opts.min_latency / 3;
    tokio::time::sleep(step).await;
    if let StatementFault::Delay { submitted, .. } = &fault {
        // Still SUBMITTED: a busy cluster's queue.
        tokio::time::sleep(*submitted).await;
    }
    if !shared.transition(&id, Status::Picked) {
        return;
    }
    let lease = match shared.pool.get().await {
        Ok(lease) => lease,
        Err(e) => {
            shared.finish(&id, Vec::new(), Err((0, e)));
            return;
        }
    };
    tokio::time::sleep(step).await;
    let (pid, cancel) = match &lease.conn {
        Some(c) => (c.pid, c.client.cancel_token()),
        None => return,
    };
    let Some(work) = shared.start(&id, pid, cancel, fault) else {
        lease.give_back().await;
        return;
    };
    if let StatementFault::Fail(message) = &work.fault {
        lease.give_back().await;
        if let Some(rest) = shared.opts.min_latency.checked_sub(began.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        shared.finish(
            &id,
            Vec::new(),
            Err((0, ExecError::Failed(message.clone()))),
        );
        return;
    }
    let (outcomes, end) = match lease.client() {
        Some(client) => run_subs(&shared, &id, client, &work).await,
        None => (Vec::new(), Ok(())),
    };
    lease.give_back().await;
    if let Some(rest) = shared.opts.min_latency.checked_sub(began.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    shared.finish(&id, outcomes, end);
}

async fn run_subs(
    shared: &Shared,
    id: &str,
    client: &Client,
    work: &Work,
) -> (Vec<SubOutcome>, Result<(), (usize, ExecError)>) {
    let (plans, is_batch, abort) = (&work.plans, work.is_batch, &work.abort);
    let control = |p: &Vec<Planned>| p.iter().any(Planned::is_transaction_control);
    // An injected stop needs a transaction to roll back, even around a single statement (the
    // chaos decision never stops a statement with transaction control of its own).
    let stop = match &work.fault {
        StatementFault::Stop { after, aborted } => Some((*after, *aborted)),
        _ => None,
    };
    let stopped = |index: usize, aborted: bool| {
        if aborted {
            (
                index,
                ExecError::Interrupted(format!(
                    "Query ({}) cancelled on user's request",
                    4000 + index
                )),
            )
        } else {
            (index, ExecError::Failed(LOST_SESSION.into()))
        }
    };
    let wrap = is_batch
        || stop.is_some()
        || (plans.iter().map(Vec::len).sum::<usize>() > 1 && !plans.iter().any(control));
    let mut outcomes = Vec::new();
    let classify = |e: ExecError| -> ExecError {
        // After CancelStatement, whatever PostgreSQL reports for the interrupted step
        // (usually query_canceled) is the cancellation.
        if abort.load(Ordering::SeqCst) && matches!(e, ExecError::Db(_)) {
            ExecError::Aborted
        } else {
            e
        }
    };
    if wrap && let Err(e) = client.batch_execute("BEGIN").await {
        return (outcomes, Err((0, classify(e.into()))));
    }
    for (index, statements) in plans.iter().enumerate() {
        if abort.load(Ordering::SeqCst) {
            return (outcomes, Err((index, ExecError::Aborted)));
        }
        if let Some((after, aborted)) = stop
            && index == after
        {
            // The caller's session reset rolls the open transaction back.
            return (outcomes, Err(stopped(index, aborted)));
        }
        if is_batch && control(statements) {
            return (
                outcomes,
                Err((
                    index,
                    ExecError::Failed(
                        "ERROR: transaction control statements (BEGIN/COMMIT/ROLLBACK/…) are not \
                         allowed in BatchExecuteStatement: the batch already is one transaction"
                            .into(),
                    ),
                )),
            );
        }
        shared.sub_started(id, index);
        let t0 = Instant::now();
        let mut outcome = SubOutcome::default();
        for planned in statements {
            if abort.load(Ordering::SeqCst) {
                return (outcomes, Err((index, ExecError::Aborted)));
            }
            let step = match planned {
                Planned::Unsupported(message) => {
                    Err(ExecError::Failed(format!("ERROR: {message}")))
                }
                Planned::Sql(sql) => run_sql(client, sql).await,
                Planned::Copy(plan) => run_copy(client, &shared.s3, plan, abort)
                    .await
                    .map(|n| (n as i64, None)),
            };
            match step {
                Ok((rows, result)) => {
                    outcome.rows = rows;
                    outcome.result = result;
                }
                Err(e) => return (outcomes, Err((index, classify(e)))),
            }
        }
        outcome.duration_ns = i64::try_from(t0.elapsed().as_nanos()).unwrap_or(i64::MAX);
        outcomes.push(outcome);
    }
    let last = plans.len().saturating_sub(1);
    if let StatementFault::Delay { started, .. } = &work.fault {
        // Still STARTED, and still holding whatever it locked: a slow commit.
        tokio::time::sleep(*started).await;
    }
    if let Some((_, aborted)) = stop {
        // Stopped after its last statement, before the commit.
        return (outcomes, Err(stopped(last, aborted)));
    }
    if wrap {
        if abort.load(Ordering::SeqCst) {
            return (outcomes, Err((last, ExecError::Aborted)));
        }
        if let Err(e) = client.batch_execute("COMMIT").await {
            return (outcomes, Err((last, classify(e.into()))));
        }
    }
    (outcomes, Ok(()))
}

/// Runs one plain statement; returns rows returned/affected and the result set, if any.
async fn run_sql(client: &Client, sql: &str) -> Result<(i64, Option<ResultSet>), ExecError> {
    // The simple protocol returns every value as text (what the Data API sends back), but not
    // the column types: preparing the statement first (parse + describe, no execution) gives
    // them.
    let types: Vec<(String, Type)> = {
        let stmt = client.prepare(sql).await?;
        stmt.columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect()
    };
    let mut rows = Vec::new();
    let mut affected = 0u64;
    let mut described = false;
    let mut size = 0i64;
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::Row(row) => {
                let fields = (0..row.len())
                    .map(|i| {
                        let value = row.get(i);
                        size += value.map_or(0, |v| v.len() as i64);
                        to_field(value, types.get(i).map(|(_, t)| t))
                    })
                    .collect();
                rows.push(fields);
            }
            SimpleQueryMessage::CommandComplete(n) => affected = n,
            SimpleQueryMessage::RowDescription(_) => described = true,
            _ => {}
        }
    }
    if types.is_empty() && !described {
        return Ok((i64::try_from(affected).unwrap_or(i64::MAX), None));
    }
    let n = rows.len() as i64;
    Ok((
        n,
        Some(ResultSet {
            columns: types
                .iter()
                .map(|(name, ty)| column_metadata(name, ty))
                .collect(),
            rows,
            size,
        }),
    ))
}

/// One value as the Data API types it.
pub fn to_field(value: Option<&str>, ty: Option<&Type>) -> Field {
    let Some(v) = value else {
        return Field::IsNull(true);
    };
    let text = || Field::StringValue(v.to_string());
    match ty {
        Some(t) if [Type::INT2, Type::INT4, Type::INT8, Type::OID].contains(t) => {
            v.parse().map(Field::LongValue).unwrap_or_else(|_| text())
        }
        Some(t) if [Type::FLOAT4, Type::FLOAT8].contains(t) => v
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Field::DoubleValue)
            .unwrap_or_else(text),
        Some(t) if *t == Type::BOOL => Field::BooleanValue(v == "t"),
        _ => text(),
    }
}

/// Column metadata with Redshift's type names where they differ from PostgreSQL's.
pub fn column_metadata(name: &str, ty: &Type) -> ColumnMetadata {
    let type_name = match *ty {
        Type::TEXT => "varchar",
        Type::JSON | Type::JSONB => "super",
        _ => ty.name(),
    };
    let numeric = [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
    ]
    .contains(ty);
    let textual = [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty);
    ColumnMetadata {
        name: name.to_string(),
        label: name.to_string(),
        type_name: type_name.to_string(),
        nullable: 1,
        is_signed: numeric,
        is_case_sensitive: textual,
        is_currency: false,
        precision: 0,
        scale: 0,
        length: 0,
        schema_name: String::new(),
        table_name: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_the_data_api_typing() {
        assert_eq!(to_field(None, Some(&Type::INT4)), Field::IsNull(true));
        assert_eq!(
            to_field(Some("42"), Some(&Type::INT8)),
            Field::LongValue(42)
        );
        assert_eq!(
            to_field(Some("1.5"), Some(&Type::FLOAT8)),
            Field::DoubleValue(1.5)
        );
        assert_eq!(
            to_field(Some("NaN"), Some(&Type::FLOAT8)),
            Field::StringValue("NaN".into())
        );
        assert_eq!(
            to_field(Some("t"), Some(&Type::BOOL)),
            Field::BooleanValue(true)
        );
        assert_eq!(
            to_field(Some("f"), Some(&Type::BOOL)),
            Field::BooleanValue(false)
        );
        assert_eq!(
            to_field(Some("12.50"), Some(&Type::NUMERIC)),
            Field::StringValue("12.50".into())
        );
        assert_eq!(column_metadata("p", &Type::JSONB).type_name, "super");
        assert_eq!(column_metadata("t", &Type::TEXT).type_name, "varchar");
        assert_eq!(column_metadata("n", &Type::INT8).type_name, "int8");
    }
}
