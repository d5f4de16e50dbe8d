//! A small PostgreSQL session pool: at most `size` sessions, each reset (rollback, settings,
//! temp tables) before it serves the next statement, like a fresh Redshift session.

use tokio::sync::{Mutex as AsyncMutex, Semaphore, SemaphorePermit};
use tokio_postgres::{Client, NoTls};

use super::Isolation;
use super::outcome::ExecError;

/// A pooled PostgreSQL session.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) pid: i64,
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
    pub(super) conn: Option<Conn>,
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
    pub(super) fn client(&self) -> Option<&Client> {
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

    pub(super) async fn give_back(mut self) {
        self.reset().await;
        if let Some(conn) = self.conn.take()
            && self.healthy
            && !conn.client.is_closed()
        {
            self.pool.idle.lock().await.push(conn);
        }
    }
}
