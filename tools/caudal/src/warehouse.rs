//! What `caudal` asks the warehouse, through the Data API (`caudal_aws::redshift::query`): the
//! ledger's rows for raw keys, the reconciliation view, rejects by code, the last load.
//! Values travel as Data API parameters; the schema is an [`Ident`].

use std::collections::BTreeMap;
use std::time::Duration;

use caudal_aws::redshift;
use caudal_core::rules::Ident;
use caudal_core::warehouse::{Connection, Param, PollPolicy, QueryError, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

/// How long one query may take before `caudal` gives up on it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// The warehouse of a stack.
#[derive(Debug, Clone)]
pub struct Warehouse {
    /// Data API client.
    pub client: aws_sdk_redshiftdata::Client,
    /// Workgroup or cluster, database, identity.
    pub connection: Connection,
    /// Schema of caudal's tables.
    pub schema: Ident,
}

/// A raw object's ledger row (the part `caudal` uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// Lines in the object.
    pub records: i64,
    /// Lines refused.
    pub rejected: i64,
    /// The rules version that loaded it.
    pub rule_version: String,
    /// When it was loaded.
    pub loaded_at: String,
}

/// Totals of `caudal_reconciliation`, and the rows that do not balance.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reconciliation {
    /// Raw objects in the ledger.
    pub objects: i64,
    /// Lines in them.
    pub records: i64,
    /// Rows in the event tables.
    pub rows_in_tables: i64,
    /// Rows in caudal_rejects.
    pub rows_in_rejects: i64,
    /// Lines filtered on purpose.
    pub filtered: i64,
    /// Rows not inserted as duplicates.
    pub duplicates: i64,
    /// Objects whose difference is not 0: (raw key, difference, ledger difference), at most 20.
    pub mismatches: Vec<(String, i64, i64)>,
    /// How many objects do not balance.
    pub mismatched: i64,
}

fn int(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or("").to_owned()
}

impl Warehouse {
    fn table(&self, name: &str) -> String {
        format!("{}.\"{name}\"", self.schema.quoted())
    }

    /// Runs one query with `params`: its rows.
    pub async fn rows(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>, QueryError> {
        self.query(sql, params).await
    }

    async fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>, QueryError> {
        redshift::query(
            &self.client,
            &self.connection,
            sql,
            params,
            &PollPolicy::default(),
            Instant::now() + QUERY_TIMEOUT,
        )
        .await
    }

    /// The ledger rows of the raw keys from `lo` (inclusive) to `hi` (exclusive): one range
    /// query on the ledger's sort key.
    pub async fn ledger_range(
        &self,
        lo: &str,
        hi: &str,
    ) -> Result<BTreeMap<String, LedgerRow>, QueryError> {
        let sql = format!(
            "SELECT raw_key, records, rejected, rule_version, CAST(loaded_at AS VARCHAR) FROM {} \
             WHERE raw_key >= :lo AND raw_key < :hi",
            self.table("caudal_ledger"),
        );
        let params = [Param::new("lo", lo), Param::new("hi", hi)];
        let mut out = BTreeMap::new();
        for r in self.query(&sql, &params).await? {
            out.insert(
                text(r.first()),
                LedgerRow {
                    records: int(r.get(1)),
                    rejected: int(r.get(2)),
                    rule_version: text(r.get(3)),
                    loaded_at: text(r.get(4)),
                },
            );
        }
        Ok(out)
    }

    /// The reconciliation view's totals over objects loaded since `since` (all when `None`).
    pub async fn reconciliation(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Reconciliation, QueryError> {
        let (filter, params) = since_filter(since);
        let view = self.table("caudal_reconciliation");
        let sums = self
            .query(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(records), 0), COALESCE(SUM(rows_in_tables), 0), \
                     COALESCE(SUM(rows_in_rejects), 0), COALESCE(SUM(filtered_total), 0), \
                     COALESCE(SUM(duplicates), 0), COALESCE(SUM(CASE WHEN difference <> 0 OR \
                     ledger_difference <> 0 THEN 1 ELSE 0 END), 0) FROM {view}{filter}"
                ),
                &params,
            )
            .await?;
        let s = sums.first().cloned().unwrap_or_default();
        let mut r = Reconciliation {
            objects: int(s.first()),
            records: int(s.get(1)),
            rows_in_tables: int(s.get(2)),
            rows_in_rejects: int(s.get(3)),
            filtered: int(s.get(4)),
            duplicates: int(s.get(5)),
            mismatched: int(s.get(6)),
            mismatches: Vec::new(),
        };
        if r.mismatched > 0 {
            let and = if filter.is_empty() { " WHERE" } else { " AND" };
            let rows = self
                .query(
                    &format!(
                        "SELECT raw_key, difference, ledger_difference FROM {view}{filter}{and} \
                         (difference <> 0 OR ledger_difference <> 0) ORDER BY raw_key LIMIT 20"
                    ),
                    &params,
                )
                .await?;
            r.mismatches = rows
                .iter()
                .map(|row| (text(row.first()), int(row.get(1)), int(row.get(2))))
                .collect();
        }
        Ok(r)
    }

    /// Rejects per (code, rule) loaded since `since`, most first.
    pub async fn rejects_by_code(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<(String, String, i64)>, QueryError> {
        let (filter, params) = since_filter(since);
        let rows = self
            .query(
                &format!(
                    "SELECT code, COALESCE(rule, ''), COUNT(*) FROM {}{filter} GROUP BY code, rule \
                     ORDER BY 3 DESC, 1, 2",
                    self.table("caudal_rejects")
                ),
                &params,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (text(r.first()), text(r.get(1)), int(r.get(2))))
            .collect())
    }

    /// The last load's time, and the lines loaded since `since`.
    pub async fn loads(
        &self,
        since: OffsetDateTime,
    ) -> Result<(Option<String>, i64, i64), QueryError> {
        let (filter, params) = since_filter(Some(since));
        let ledger = self.table("caudal_ledger");
        let rows = self
            .query(
                &format!(
                    "SELECT (SELECT CAST(MAX(loaded_at) AS VARCHAR) FROM {ledger}), COUNT(*), \
                     COALESCE(SUM(records), 0) FROM {ledger}{filter}"
                ),
                &params,
            )
            .await?;
        let r = rows.first().cloned().unwrap_or_default();
        let last = r.first().and_then(Value::as_str).map(str::to_owned);
        Ok((last, int(r.get(1)), int(r.get(2))))
    }
}

/// Ingest → queryable latency percentiles over a window, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    /// Events measured (rows in the event tables loaded in the window).
    pub events: i64,
    /// Median.
    pub p50_ms: i64,
    /// 95th percentile.
    pub p95_ms: i64,
    /// 99th percentile.
    pub p99_ms: i64,
}

/// One (code, rule) of the rejects, with a few of its lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RejectGroup {
    /// Reject code (`schema`, `mapping`, …).
    pub code: String,
    /// The rule (event type, filter or `type.column`; empty when none).
    pub rule: String,
    /// Rejects in the window.
    pub count: i64,
    /// The newest few: (message, raw line as the archive holds it).
    pub samples: Vec<(String, String)>,
}

/// One raw object's row of `caudal_reconciliation`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ObjectBalance {
    /// Raw key.
    pub raw_key: String,
    /// Lines in the object.
    pub records: i64,
    /// Rows in the event tables.
    pub rows_in_tables: i64,
    /// Rows in caudal_rejects.
    pub rows_in_rejects: i64,
    /// Lines filtered on purpose.
    pub filtered: i64,
    /// Duplicates not inserted.
    pub duplicates: i64,
    /// `records` − everything accounted for: 0 unless something is wrong.
    pub difference: i64,
    /// The ledger's own arithmetic: 0 unless something is wrong.
    pub ledger_difference: i64,
    /// Load time (Unix seconds).
    pub loaded_at: i64,
}

impl ObjectBalance {
    /// Whether the object does not balance.
    pub fn off(&self) -> bool {
        self.difference != 0 || self.ledger_difference != 0
    }
}

/// Samples kept per reject reason.
pub const REJECT_SAMPLES: i64 = 3;
/// Raw objects shown in the per-object reconciliation (every unbalanced one comes first).
pub const OBJECTS_SHOWN: i64 = 50;

impl Warehouse {
    /// Lines loaded per minute since `since`: (minute as Unix seconds, lines), in order.
    pub async fn loaded_per_minute(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(i64, i64)>, QueryError> {
        let (filter, params) = since_filter(Some(since));
        let rows = self
            .query(
                &format!(
                    "SELECT CAST(EXTRACT(EPOCH FROM date_trunc('minute', loaded_at)) AS BIGINT), \
                     COALESCE(SUM(records), 0) FROM {}{filter} GROUP BY 1 ORDER BY 1",
                    self.table("caudal_ledger")
                ),
                &params,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (int(r.first()), int(r.get(1))))
            .collect())
    }

    /// Ingest → queryable latency of the events loaded since `since` (`caudal_load_latency`).
    pub async fn latency(&self, since: OffsetDateTime) -> Result<Latency, QueryError> {
        let (filter, params) = since_filter(Some(since));
        // Redshift: several sort-based aggregates in one query must share their ORDER BY.
        let p = |q: &str| {
            format!(
                "CAST(COALESCE(PERCENTILE_CONT({q}) WITHIN GROUP (ORDER BY seconds), 0) * 1000 AS BIGINT)"
            )
        };
        let rows = self
            .query(
                &format!(
                    "SELECT COUNT(*), {}, {}, {} FROM {}{filter}",
                    p("0.5"),
                    p("0.95"),
                    p("0.99"),
                    self.table("caudal_load_latency")
                ),
                &params,
            )
            .await?;
        let r = rows.first().cloned().unwrap_or_default();
        Ok(Latency {
            events: int(r.first()),
            p50_ms: int(r.get(1)),
            p95_ms: int(r.get(2)),
            p99_ms: int(r.get(3)),
        })
    }

    /// Rejects per (code, rule) loaded since `since`, most first, each with its newest
    /// [`REJECT_SAMPLES`] lines.
    pub async fn reject_groups(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<RejectGroup>, QueryError> {
        let mut groups: Vec<RejectGroup> = self
            .rejects_by_code(Some(since))
            .await?
            .into_iter()
            .map(|(code, rule, count)| RejectGroup {
                code,
                rule,
                count,
                samples: Vec::new(),
            })
            .collect();
        let (filter, params) = since_filter(Some(since));
        let rows = self
            .query(
                &format!(
                    "SELECT code, rule, message, raw_text FROM (SELECT code, COALESCE(rule, '') AS \
                     rule, message, raw_text, ROW_NUMBER() OVER (PARTITION BY code, rule ORDER BY \
                     loaded_at DESC, raw_key DESC, raw_line DESC) AS n FROM {}{filter}) AS s \
                     WHERE n <= {REJECT_SAMPLES} ORDER BY code, rule, n",
                    self.table("caudal_rejects")
                ),
                &params,
            )
            .await?;
        for r in rows {
            let (code, rule) = (text(r.first()), text(r.get(1)));
            if let Some(g) = groups.iter_mut().find(|g| g.code == code && g.rule == rule) {
                g.samples.push((text(r.get(2)), text(r.get(3))));
            }
        }
        Ok(groups)
    }

    /// Events per (type, hour of ingest) since `since` (`caudal_events_hourly`): (type, hour
    /// as Unix seconds, events), by hour then type.
    pub async fn events_hourly(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(String, i64, i64)>, QueryError> {
        let params = [Param::new(
            "since",
            caudal_core::warehouse::format_timestamp(since),
        )];
        let rows = self
            .query(
                &format!(
                    "SELECT event_type, CAST(EXTRACT(EPOCH FROM event_hour) AS BIGINT), events \
                     FROM {} WHERE event_hour >= date_trunc('hour', CAST(:since AS TIMESTAMPTZ)) \
                     ORDER BY 2, 1",
                    self.table("caudal_events_hourly")
                ),
                &params,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (text(r.first()), int(r.get(1)), int(r.get(2))))
            .collect())
    }

    /// The reconciliation per raw object loaded since `since`: every unbalanced one first,
    /// then the newest, [`OBJECTS_SHOWN`] in all.
    pub async fn object_balances(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<ObjectBalance>, QueryError> {
        let (filter, params) = since_filter(Some(since));
        let rows = self
            .query(
                &format!(
                    "SELECT raw_key, records, rows_in_tables, rows_in_rejects, filtered_total, \
                     duplicates, difference, ledger_difference, \
                     CAST(EXTRACT(EPOCH FROM loaded_at) AS BIGINT) FROM {}{filter} ORDER BY \
                     CASE WHEN difference <> 0 OR ledger_difference <> 0 THEN 0 ELSE 1 END, \
                     loaded_at DESC, raw_key LIMIT {OBJECTS_SHOWN}",
                    self.table("caudal_reconciliation")
                ),
                &params,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ObjectBalance {
                raw_key: text(r.first()),
                records: int(r.get(1)),
                rows_in_tables: int(r.get(2)),
                rows_in_rejects: int(r.get(3)),
                filtered: int(r.get(4)),
                duplicates: int(r.get(5)),
                difference: int(r.get(6)),
                ledger_difference: int(r.get(7)),
                loaded_at: int(r.get(8)),
            })
            .collect())
    }
}

/// `:<p>0, :<p>1, …` for `values`, and their parameters: an `IN (…)` list of Data API
/// parameters.
pub fn in_params(prefix: &str, values: &[String]) -> (String, Vec<Param>) {
    let names: Vec<String> = (0..values.len()).map(|i| format!(":{prefix}{i}")).collect();
    let params = values
        .iter()
        .enumerate()
        .map(|(i, v)| Param::new(format!("{prefix}{i}"), v.as_str()))
        .collect();
    (names.join(", "), params)
}

/// ` WHERE loaded_at >= CAST(:since AS TIMESTAMPTZ)` and its parameter, or nothing.
fn since_filter(since: Option<OffsetDateTime>) -> (String, Vec<Param>) {
    match since {
        Some(t) => (
            " WHERE loaded_at >= CAST(:since AS TIMESTAMPTZ)".to_owned(),
            vec![Param::new(
                "since",
                caudal_core::warehouse::format_timestamp(t),
            )],
        ),
        None => (String::new(), Vec::new()),
    }
}
