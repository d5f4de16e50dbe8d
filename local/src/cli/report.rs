//! Per-stage counts and the reconciliation view, read from the running stack: the API's
//! responses, the stream pollers, the raw archive in S3, and the warehouse in PostgreSQL
//! (ledger, event tables, rejects, `caudal_reconciliation`).
//!
//! This is the one module that knows the pipeline's contracts by name (docs/CONTRACTS.md): the
//! raw bucket is whatever the template passes as `RAW_BUCKET`, the schema is `REDSHIFT_SCHEMA`
//! (default `public`), and the warehouse objects are the loader's `caudal_ledger`,
//! `caudal_rejects` and `caudal_reconciliation`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::stack::{Stack, StackError, queue_depth};

/// Why the report could not be built. Retryable: the warehouse or S3 may be busy.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A PostgreSQL query failed.
    #[error("warehouse query: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// Listing the raw archive failed.
    #[error("listing s3://{bucket}/{prefix}: {message}")]
    S3 {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
        /// Error code and message.
        message: String,
    },
}

impl ReportError {
    /// Reads can be retried.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// One reconciliation row with a non-zero difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Raw object.
    pub raw_key: String,
    /// `difference` column.
    pub difference: i64,
    /// `ledger_difference` column.
    pub ledger_difference: i64,
}

/// Totals of `caudal_reconciliation`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Raw objects in the ledger.
    pub objects: i64,
    /// Lines in them.
    pub records: i64,
    /// Rows found in the event tables.
    pub rows_in_tables: i64,
    /// Rows found in the rejects table.
    pub rows_in_rejects: i64,
    /// Lines dropped by filters.
    pub filtered: i64,
    /// Rows not inserted as duplicates.
    pub duplicates: i64,
    /// Objects whose `difference` or `ledger_difference` is not 0.
    pub mismatches: Vec<Mismatch>,
}

/// The numbers `up` prints and the end-to-end tests assert.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// HTTP responses per route and status.
    pub api: BTreeMap<(String, u16), u64>,
    /// Stream records read by the pollers (including redeliveries) and processed.
    pub kinesis_read: u64,
    /// Stream records whose batch succeeded.
    pub kinesis_processed: u64,
    /// The events those records held (a packed record holds many).
    pub kinesis_events: u64,
    /// Stream records given up on (sent to the OnFailure destination).
    pub kinesis_failed: u64,
    /// Every region's raw bucket, the home region's first.
    pub raw_buckets: Vec<String>,
    /// Objects under `raw/`, in every region's raw bucket (their keys name the region
    /// everywhere but at home, so they never collide).
    pub raw_objects: BTreeSet<String>,
    /// Objects under `raw-invalid/`.
    pub raw_invalid_objects: u64,
    /// Raw objects with a ledger row.
    pub ledger_objects: BTreeSet<String>,
    /// Sum of the ledger's `records` (lines in loaded raw objects).
    pub raw_lines: i64,
    /// Sum of `valid`.
    pub valid: i64,
    /// Sum of `filtered_total`.
    pub filtered: i64,
    /// Sum of `rejected`.
    pub rejected: i64,
    /// Sum of `duplicates`.
    pub duplicates: i64,
    /// Rows per event table.
    pub tables: Vec<(String, i64)>,
    /// Rejects per code.
    pub rejects_by_code: Vec<(String, i64)>,
    /// The reconciliation view.
    pub reconciliation: Reconciliation,
    /// Messages waiting in queues nobody consumes (dead-letter / on-failure queues).
    pub unconsumed_queues: Vec<(String, u64)>,
    /// Ingest → load latency (p50, p95) in seconds, from `loaded_at - received_at`.
    pub load_latency: Option<(f64, f64)>,
}

impl Counts {
    /// The home region's raw bucket (empty when the template has none).
    pub fn raw_bucket(&self) -> &str {
        self.raw_buckets.first().map_or("", String::as_str)
    }

    /// Raw objects that have no ledger row yet.
    pub fn unloaded(&self) -> Vec<&String> {
        self.raw_objects.difference(&self.ledger_objects).collect()
    }

    /// Rows in all event tables.
    pub fn rows(&self) -> i64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Every key under `prefix` in `bucket` of the stack's S3.
pub async fn list_keys(
    stack: &Stack,
    bucket: &str,
    prefix: &str,
) -> Result<BTreeSet<String>, ReportError> {
    let mut keys = BTreeSet::new();
    let mut pages = stack
        .clients()
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ReportError::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            message: caudal_aws::call_error(&e).to_string(),
        })?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    Ok(keys)
}

/// Connects to the stack's warehouse.
pub async fn connect(stack: &Stack) -> Result<tokio_postgres::Client, ReportError> {
    let (client, conn) = tokio_postgres::connect(&stack.pg_connection_string(), NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "report_connection_closed");
        }
    });
    Ok(client)
}

/// Event tables of the schema: tables with the lineage columns, not the ledger/rejects.
pub async fn event_tables(
    db: &tokio_postgres::Client,
    schema: &str,
) -> Result<Vec<String>, ReportError> {
    let rows = db
        .query(
            "SELECT c.table_name FROM information_schema.columns c \
             JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema = $1 AND t.table_type = 'BASE TABLE' \
               AND c.column_name IN ('event_id', 'raw_key', 'received_at', 'loaded_at') \
               AND c.table_name NOT IN ('caudal_ledger', 'caudal_rejects') \
             GROUP BY c.table_name HAVING COUNT(*) = 4 ORDER BY c.table_name",
            &[&schema],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Collects the counts.
pub async fn collect(stack: &Stack) -> Result<Counts, ReportError> {
    let mut c = Counts::default();
    for r in stack.regions() {
        for (k, n) in r.api().stats.snapshot() {
            *c.api.entry(k).or_default() += n;
        }
    }
    collect_pipeline(stack, &mut c).await?;
    collect_warehouse(stack, &mut c).await?;
    Ok(c)
}

/// The stream pollers, the raw archives in S3, and the queues nothing consumes, of every
/// region (a second region's queues are named `<region>/<logical id>`).
async fn collect_pipeline(stack: &Stack, c: &mut Counts) -> Result<(), ReportError> {
    for (i, r) in stack.regions().iter().enumerate() {
        for k in r.kinesis_mappings() {
            c.kinesis_read += k.stats.received.load(Ordering::Relaxed);
            c.kinesis_processed += k.stats.succeeded.load(Ordering::Relaxed);
            c.kinesis_events += k.stats.events_succeeded.load(Ordering::Relaxed);
            c.kinesis_failed += k.stats.sent_to_on_failure.load(Ordering::Relaxed);
        }
        if let Some(bucket) = r.function_env("RAW_BUCKET") {
            let keys = list_keys(stack, &bucket, caudal_core::keys::RAW_PREFIX).await?;
            c.raw_objects.extend(keys);
            c.raw_invalid_objects +=
                list_keys(stack, &bucket, caudal_core::keys::RAW_INVALID_PREFIX)
                    .await?
                    .len() as u64;
            c.raw_buckets.push(bucket);
        }
        let consumed: BTreeSet<&str> = r.sqs_mappings().iter().map(|m| m.queue_url()).collect();
        for q in &r.model().queues {
            let Some(url) = r.queue_url_by_arn(&q.arn) else {
                continue;
            };
            if consumed.contains(url) {
                continue;
            }
            if let Ok((visible, in_flight)) = queue_depth(&r.clients().sqs, url).await {
                let name = if i == 0 {
                    q.logical_id.clone()
                } else {
                    format!("{}/{}", r.name(), q.logical_id)
                };
                c.unconsumed_queues.push((name, visible + in_flight));
            }
        }
    }
    Ok(())
}

/// The warehouse: ledger, event tables, rejects, reconciliation and load latency (each only
/// when its table exists yet).
async fn collect_warehouse(stack: &Stack, c: &mut Counts) -> Result<(), ReportError> {
    let schema = stack
        .home()
        .function_env("REDSHIFT_SCHEMA")
        .unwrap_or_else(|| "public".to_owned());
    let s = quote_ident(&schema);
    let db = connect(stack).await?;
    if has_table(&db, &schema, "caudal_ledger").await? {
        ledger_counts(&db, &s, c).await?;
    }
    let tables = event_tables(&db, &schema).await?;
    for t in &tables {
        let n: i64 = db
            .query_one(&format!("SELECT COUNT(*) FROM {s}.{}", quote_ident(t)), &[])
            .await?
            .get(0);
        c.tables.push((t.clone(), n));
    }
    if has_table(&db, &schema, "caudal_rejects").await? {
        let rows = db
            .query(
                &format!(
                    "SELECT code, COUNT(*) FROM {s}.caudal_rejects GROUP BY code ORDER BY code"
                ),
                &[],
            )
            .await?;
        c.rejects_by_code = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
    }
    if has_table(&db, &schema, "caudal_reconciliation").await? {
        c.reconciliation = reconciliation(&db, &s).await?;
    }
    if !tables.is_empty() {
        c.load_latency = load_latency(&db, &s, &tables).await?;
    }
    Ok(())
}

async fn has_table(
    db: &tokio_postgres::Client,
    schema: &str,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    db.query_opt(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
        &[&schema, &name],
    )
    .await
    .map(|r| r.is_some())
}

/// The ledger's objects and summed counts; `s` is the quoted schema.
async fn ledger_counts(
    db: &tokio_postgres::Client,
    s: &str,
    c: &mut Counts,
) -> Result<(), ReportError> {
    let keys = db
        .query(&format!("SELECT raw_key FROM {s}.caudal_ledger"), &[])
        .await?;
    c.ledger_objects = keys.iter().map(|r| r.get::<_, String>(0)).collect();
    let row = db
        .query_one(
            &format!(
                "SELECT COALESCE(SUM(records),0)::bigint, COALESCE(SUM(valid),0)::bigint, \
                 COALESCE(SUM(filtered_total),0)::bigint, COALESCE(SUM(rejected),0)::bigint, \
                 COALESCE(SUM(duplicates),0)::bigint FROM {s}.caudal_ledger"
            ),
            &[],
        )
        .await?;
    c.raw_lines = row.get(0);
    c.valid = row.get(1);
    c.filtered = row.get(2);
    c.rejected = row.get(3);
    c.duplicates = row.get(4);
    Ok(())
}

/// The `caudal_reconciliation` view summed, with its mismatching objects.
async fn reconciliation(
    db: &tokio_postgres::Client,
    s: &str,
) -> Result<Reconciliation, ReportError> {
    let r = db
        .query_one(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(records),0)::bigint, COALESCE(SUM(rows_in_tables),0)::bigint, \
                 COALESCE(SUM(rows_in_rejects),0)::bigint, COALESCE(SUM(filtered_total),0)::bigint, \
                 COALESCE(SUM(duplicates),0)::bigint FROM {s}.caudal_reconciliation"
            ),
            &[],
        )
        .await?;
    let mut reconciliation = Reconciliation {
        objects: r.get(0),
        records: r.get(1),
        rows_in_tables: r.get(2),
        rows_in_rejects: r.get(3),
        filtered: r.get(4),
        duplicates: r.get(5),
        mismatches: Vec::new(),
    };
    let bad = db
        .query(
            &format!(
                "SELECT raw_key, difference::bigint, ledger_difference::bigint FROM {s}.caudal_reconciliation \
                 WHERE difference <> 0 OR ledger_difference <> 0 ORDER BY raw_key"
            ),
            &[],
        )
        .await?;
    reconciliation.mismatches = bad
        .iter()
        .map(|r| Mismatch {
            raw_key: r.get(0),
            difference: r.get(1),
            ledger_difference: r.get(2),
        })
        .collect();
    Ok(reconciliation)
}

/// (p50, p95) of loaded_at − received_at over every event table, in seconds.
async fn load_latency(
    db: &tokio_postgres::Client,
    s: &str,
    tables: &[String],
) -> Result<Option<(f64, f64)>, ReportError> {
    let union = tables
        .iter()
        .map(|t| format!("SELECT received_at, loaded_at FROM {s}.{}", quote_ident(t)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let row = db
        .query_one(
            &format!(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.95) WITHIN GROUP (ORDER BY d) \
                 FROM (SELECT EXTRACT(EPOCH FROM (loaded_at - received_at))::float8 AS d FROM ({union}) u) x"
            ),
            &[],
        )
        .await?;
    let p50: Option<f64> = row.get(0);
    let p95: Option<f64> = row.get(1);
    Ok(p50.zip(p95))
}

/// Waits until the pipeline has settled: every event source drained and every raw object
/// under `raw/` in the ledger (checked twice in a row). Returns the final counts.
pub async fn wait_until_loaded(stack: &Stack, timeout: Duration) -> Result<Counts, StackError> {
    let start = Instant::now();
    let mut stable = 0;
    loop {
        let pending = match stack.pending_work().await {
            Some(p) => Some(p),
            None => match collect(stack).await {
                Ok(c) if c.unloaded().is_empty() => {
                    stable += 1;
                    if stable >= 2 {
                        return Ok(c);
                    }
                    None
                }
                Ok(c) => Some(format!(
                    "{} raw object(s) not in the ledger yet",
                    c.unloaded().len()
                )),
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(what) = pending {
            stable = 0;
            if start.elapsed() > timeout {
                return Err(StackError::Timeout(timeout, what));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP API")?;
        for ((route, status), n) in &self.api {
            writeln!(f, "  {route:<28} {status}  {n:>8} responses")?;
        }
        writeln!(f, "Kinesis")?;
        writeln!(
            f,
            "  records processed {:>10}   (read {}, given up {})",
            self.kinesis_processed, self.kinesis_read, self.kinesis_failed
        )?;
        writeln!(
            f,
            "  events in them    {:>10}   ({:.1} per record)",
            self.kinesis_events,
            self.kinesis_events as f64 / self.kinesis_processed.max(1) as f64
        )?;
        let buckets: Vec<String> = self
            .raw_buckets
            .iter()
            .map(|b| format!("s3://{b}"))
            .collect();
        writeln!(f, "Raw archive ({})", buckets.join(", "))?;
        writeln!(
            f,
            "  raw/ objects      {:>10}   raw-invalid/ objects {}",
            self.raw_objects.len(),
            self.raw_invalid_objects
        )?;
        writeln!(
            f,
            "  lines loaded      {:>10}   (objects in ledger {})",
            self.raw_lines,
            self.ledger_objects.len()
        )?;
        writeln!(f, "Warehouse")?;
        for (t, n) in &self.tables {
            writeln!(f, "  {t:<18}{n:>10} rows")?;
        }
        writeln!(f, "  filtered          {:>10}", self.filtered)?;
        writeln!(f, "  rejected          {:>10}", self.rejected)?;
        for (code, n) in &self.rejects_by_code {
            writeln!(f, "    {code:<16}{n:>10}")?;
        }
        writeln!(f, "  duplicates        {:>10}", self.duplicates)?;
        for (q, n) in &self.unconsumed_queues {
            writeln!(f, "  {q:<18}{n:>10} messages (dead letters / failures)")?;
        }
        if let Some((p50, p95)) = self.load_latency {
            writeln!(f, "  ingest→load       p50 {p50:.2}s   p95 {p95:.2}s")?;
        }
        let r = &self.reconciliation;
        writeln!(f, "Reconciliation (caudal_reconciliation)")?;
        writeln!(
            f,
            "  {} objects, {} lines = {} rows + {} duplicates + {} filtered + {} rejects",
            r.objects, r.records, r.rows_in_tables, r.duplicates, r.filtered, r.rows_in_rejects
        )?;
        if r.mismatches.is_empty() {
            writeln!(f, "  differences: 0 (every line accounted for)")?;
        } else {
            writeln!(f, "  DIFFERENCES in {} object(s):", r.mismatches.len())?;
            for m in r.mismatches.iter().take(20) {
                writeln!(
                    f,
                    "    {}  difference {}  ledger_difference {}",
                    m.raw_key, m.difference, m.ledger_difference
                )?;
            }
        }
        Ok(())
    }
}
