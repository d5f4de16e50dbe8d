//! The state shared by the HTTP handlers and the background executors: the statement store,
//! the session pool, the S3 client for COPY, and the lifecycle transitions of a record.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use time::OffsetDateTime;

use super::DataApiOptions;
use super::outcome::{ExecError, SubOutcome};
use super::pool::Pool;
use super::store::Store;
use super::translate::Planned;
use super::wire::Status;
use crate::emulators::chaos::StatementFault;

/// What the executor runs for one record.
pub struct Work {
    /// The translated statements of each sub-statement.
    pub plans: Vec<Vec<Planned>>,
    /// Whether the record is a batch.
    pub is_batch: bool,
    /// The record's abort flag.
    pub abort: Arc<std::sync::atomic::AtomicBool>,
    /// The injected fault ([`crate::emulators::chaos`]), [`StatementFault::None`] normally.
    pub fault: StatementFault,
}

/// State shared by the handlers and the background executors.
pub struct Shared {
    store: Mutex<Store>,
    /// PostgreSQL sessions.
    pub pool: Pool,
    /// S3 for COPY.
    pub s3: aws_sdk_s3::Client,
    /// Options.
    pub opts: DataApiOptions,
    /// The only database name this endpoint serves.
    pub(super) database: String,
}

impl Shared {
    /// New shared state.
    pub fn new(
        pool: Pool,
        s3: aws_sdk_s3::Client,
        opts: DataApiOptions,
        database: String,
    ) -> Shared {
        Shared {
            store: Mutex::new(Store::default()),
            pool,
            s3,
            opts,
            database,
        }
    }

    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves an active record to `status`; false if it was aborted meanwhile.
    pub fn transition(&self, id: &str, status: Status) -> bool {
        let now = OffsetDateTime::now_utc();
        let mut store = self.store();
        let Some(rec) = store.get_mut(id) else {
            return false;
        };
        if !rec.status.is_active() || rec.abort.load(Ordering::SeqCst) {
            return false;
        }
        rec.status = status;
        rec.updated_at = now;
        for s in &mut rec.subs {
            s.status = status;
            s.updated_at = now;
        }
        true
    }

    /// Marks the record STARTED on backend `pid` and returns what to run (with `fault`);
    /// `None` if aborted.
    pub fn start(
        &self,
        id: &str,
        pid: i64,
        cancel: tokio_postgres::CancelToken,
        fault: StatementFault,
    ) -> Option<Work> {
        let now = OffsetDateTime::now_utc();
        let mut store = self.store();
        let rec = store.get_mut(id)?;
        if !rec.status.is_active() || rec.abort.load(Ordering::SeqCst) {
            return None;
        }
        rec.status = Status::Started;
        rec.updated_at = now;
        rec.pid = pid;
        rec.cancel = Some(cancel);
        Some(Work {
            plans: rec.subs.iter().map(|s| s.plan.clone()).collect(),
            is_batch: rec.is_batch,
            abort: rec.abort.clone(),
            fault,
        })
    }

    /// Marks sub-statement `index` STARTED.
    pub fn sub_started(&self, id: &str, index: usize) {
        let now = OffsetDateTime::now_utc();
        if let Some(sub) = self.store().get_mut(id).and_then(|r| r.subs.get_mut(index)) {
            sub.status = Status::Started;
            sub.updated_at = now;
        }
    }

    /// Records the final outcome. `end` is `Err((index, error))` when sub-statement `index`
    /// failed: subs before it keep their results, later ones are ABORTED.
    pub(crate) fn finish(
        &self,
        id: &str,
        outcomes: Vec<SubOutcome>,
        end: Result<(), (usize, ExecError)>,
    ) {
        let now = OffsetDateTime::now_utc();
        let mut store = self.store();
        let Some(rec) = store.get_mut(id) else { return };
        rec.cancel = None;
        if !rec.status.is_active() {
            return;
        }
        let done = outcomes.len();
        for (sub, outcome) in rec.subs.iter_mut().zip(outcomes) {
            sub.status = Status::Finished;
            sub.result_rows = outcome.rows;
            sub.result = outcome.result.map(Arc::new);
            sub.duration_ns = outcome.duration_ns;
            sub.updated_at = now;
        }
        match end {
            Ok(()) => {
                rec.status = Status::Finished;
                tracing::info!(id, "dataapi_statement_finished");
            }
            Err((index, error)) => {
                let aborted = matches!(error, ExecError::Aborted | ExecError::Interrupted(_));
                let message = error.to_string();
                rec.status = if aborted {
                    Status::Aborted
                } else {
                    Status::Failed
                };
                rec.error = Some(message.clone());
                for (i, sub) in rec.subs.iter_mut().enumerate().skip(done) {
                    sub.updated_at = now;
                    if i == index {
                        sub.status = rec.status;
                        sub.error = Some(message.clone());
                    } else {
                        sub.status = Status::Aborted;
                    }
                }
                tracing::info!(id, status = ?rec.status, error = %message, "dataapi_statement_failed");
            }
        }
        rec.updated_at = now;
    }

    /// Aborts everything still running (shutdown).
    pub async fn abort_all(&self) {
        let tokens = self.store().abort_all();
        for token in tokens {
            if let Err(error) = token.cancel_query(tokio_postgres::NoTls).await {
                tracing::warn!(%error, "dataapi_cancel_failed");
            }
        }
    }
}
