//! How a statement ended: the error that makes it FAILED or ABORTED, and what a finished
//! sub-statement produced. Shared by the executor, the COPY loader and the statement state.

use tokio_postgres::error::SqlState;

use super::store::ResultSet;

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
    /// Stopped part way by an injected fault ([`crate::emulators::chaos`]): rolled back, ABORTED.
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

#[derive(Debug, Default)]
pub struct SubOutcome {
    /// Rows returned or affected.
    pub rows: i64,
    /// The result set of its last statement, if any.
    pub result: Option<ResultSet>,
    /// Execution time.
    pub duration_ns: i64,
}
