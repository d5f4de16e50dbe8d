//! Every SQL text the loader sends, built from validated parts only.
//!
//! * Identifiers come from the rules file as [`Ident`]s and reach SQL only through
//!   [`Ident::quoted`].
//! * Values either travel as Data API parameters (the ledger look-up, the statement-id update,
//!   the migration's catalogue query) or — where the Data API takes none (`COPY`, and the load
//!   transaction sent with `BatchExecuteStatement`) — are inlined through the one function
//!   [`sql_literal`], which accepts only the kinds of value the loader produces itself and
//!   validates each against a strict alphabet: raw keys, hex ETags, integers, the rule version
//!   hash, timestamps, count maps keyed by identifiers, staging S3 URIs and the COPY role ARN.
//!   Anything else is refused with [`SqlError::Refused`].
//!
//! The load transaction ([`load_batch`]), per table with rows: a temporary stage `(LIKE target
//! INCLUDING DEFAULTS)` (a DBA's NOT NULL column with a default then gets its default there too),
//! `COPY` of the load's manifest into it (explicit column list, so a migrated table whose
//! physical column order differs still loads correctly), and an `INSERT … SELECT` that skips
//! event ids already in the target and keeps one row per event id inside the load
//! (`ROW_NUMBER() OVER (PARTITION BY event_id, principal ORDER BY raw_key, raw_line) = 1`,
//! portable to PostgreSQL). Rejects load the same way, one per event id (a client re-sending the
//! same invalid event gets one reject, so "rejects by reason" counts events, not attempts).
//!
//! **Dedupe scope.** An event id is unique per authenticated principal (the envelope's
//! `principal`, set by the API's authorizer, never by the client): a client that sends another
//! client's ids — by accident or to suppress their events — only ever collides with its own.
//! An unauthenticated API has one scope (`principal` NULL). Rows loaded before the column
//! existed have NULL there, so an event re-sent across that upgrade by an authenticated client
//! loads once more.
//!
//! **Bounded de-duplication.** Redshift has no indexes: an anti-join on `event_id` (neither
//! dist nor sort key) reads the whole target, so load time would grow with the table until
//! loads miss their deadline. The search is bounded instead by a window on `received_at`, the
//! ingest time: only target rows received at most `DEDUPE_WINDOW_HOURS` (default 168) before
//! the load's earliest staged `received_at` are searched. Rows are appended in ingest order,
//! so Redshift's zone maps (min/max per block, on every column) skip every older block and the
//! cost follows the rows received inside the window — the ingest rate — not the table's size.
//! Rejects use their `loaded_at`; the lineage joins that count what went in use the load's own
//! `loaded_at`. The trade-off: an event re-sent later than the window after its first copy is
//! loaded again (and counted as a row, not a duplicate). Last, one
//! ledger row per raw object, carrying the load id; its `duplicates` column is computed in SQL
//! from the rows that really went in, so `records = rows in tables + duplicates + filtered +
//! rejected` holds per object (the reconciliation view checks it).
//!
//! **Concurrency.** Redshift runs at SNAPSHOT isolation by default and enforces no key, so two
//! concurrent loads of the same raw object whose `NOT EXISTS` checks both read a snapshot from
//! before the other's commit would both commit (at SERIALIZABLE one aborts with error 1023).
//! The transaction therefore starts with `LOCK caudal_ledger` — before any statement that takes
//! the snapshot — so loads run one after the other and each sees every load committed before
//! it. Every insert (rows, rejects, ledger) is guarded by the ledger: rows of a raw object that
//! the ledger already holds are never inserted, whatever the event-id check finds. The ledger is
//! the one lock all writers of caudal's tables take; readers (dashboards, reconciliation) are not
//! blocked by it. Correct at both isolation levels without relying on a conflict abort.

use std::collections::BTreeMap;

use caudal_core::rules::{Ident, REJECT_COLUMNS, Table};
use caudal_core::warehouse::Param;
use time::OffsetDateTime;

/// Name of the ledger table (`warehouse/ledger.sql`).
pub const LEDGER_TABLE: &str = "caudal_ledger";
/// Name of the rejects table (`warehouse/rejects.sql`).
pub const REJECTS_TABLE: &str = "caudal_rejects";
/// The Data API runs at most this many statements in one `BatchExecuteStatement`.
pub const MAX_BATCH_STATEMENTS: usize = 40;
/// The Data API refuses SQL texts above 100 KB.
pub const MAX_STATEMENT_BYTES: usize = 100 * 1024;
/// Statements per table with rows in a load (create stage, COPY, INSERT).
pub const STATEMENTS_PER_TABLE: usize = 3;
/// Statements before the first table's in a load (the `LOCK`).
pub const LEADING_STATEMENTS: usize = 1;
/// Statements a reprocess adds after the `LOCK`, besides one per rules table: the rejects'
/// and the ledger's `DELETE`.
pub const REPLACE_STATEMENTS: usize = 2;
/// A reprocess load's keys add up to at most this many bytes: each of its `DELETE`s lists them
/// and must stay within [`MAX_STATEMENT_BYTES`].
pub const MAX_REPLACE_KEY_BYTES: usize = 64 * 1024;
/// Longest load id accepted in SQL (the ledger column is `VARCHAR(128)`).
pub const MAX_LOAD_ID_BYTES: usize = 128;

/// Position in the load batch of table `i`'s `INSERT` (its `result_rows` is what went in),
/// when `leading` statements come before the first table's ([`leading_statements`]).
pub fn insert_statement_index(leading: usize, i: usize) -> usize {
    leading + i * STATEMENTS_PER_TABLE + 2
}

/// Statements before the first table's: the `LOCK`, and for a reprocess that replaces the
/// results in `replaced` tables, their `DELETE`s and the rejects' and the ledger's.
pub fn leading_statements(replaced: Option<usize>) -> usize {
    LEADING_STATEMENTS + replaced.map_or(0, |tables| tables + REPLACE_STATEMENTS)
}
/// Raw objects per load: keeps the ledger statement and the look-up parameter list small.
pub const MAX_OBJECTS_PER_LOAD: usize = 100;
/// Longest raw key accepted (the lineage column is `VARCHAR(1024)`).
pub const MAX_RAW_KEY_BYTES: usize = 1024;

/// A value or statement that must not be sent. Always permanent: the input or the rules must
/// change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// A value outside the alphabet of its kind.
    #[error("refusing to put {what} {value:?} into SQL: {reason}")]
    Refused {
        /// Kind of value.
        what: &'static str,
        /// The value (cut to 200 bytes).
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// More statements than the Data API runs in one batch.
    #[error(
        "the load needs {0} statements but the Data API runs at most {MAX_BATCH_STATEMENTS} in one \
         transaction (too many tables with rows in one load)"
    )]
    TooManyStatements(usize),
    /// A statement above the Data API's size limit.
    #[error(
        "statement {index} is {bytes} bytes; the Data API accepts at most {MAX_STATEMENT_BYTES}"
    )]
    TooLarge {
        /// Position in the batch.
        index: usize,
        /// Its size.
        bytes: usize,
    },
}

/// The kinds of value that may be inlined into SQL text.
#[derive(Debug, Clone, Copy)]
pub enum Literal<'a> {
    /// A raw object key: `raw/` + `[A-Za-z0-9/=._-]`, at most 1024 bytes.
    RawKey(&'a str),
    /// An S3 ETag: hex, optionally `-N` (multipart).
    Etag(&'a str),
    /// An integer.
    Int(i64),
    /// The rules file's version: 64 lower-case hex digits.
    RuleVersion(&'a str),
    /// A timestamp, written as ISO 8601 UTC with microseconds and cast to `TIMESTAMPTZ`.
    Timestamp(OffsetDateTime),
    /// A JSON object of identifier → count (filtered per rule, rows per table).
    Counts(&'a BTreeMap<String, u64>),
    /// A staging object URI: `s3://<bucket>/<key>` with a valid bucket name and a key in
    /// `[A-Za-z0-9/=._-]`.
    S3Uri(&'a str),
    /// An IAM role ARN (`arn:<partition>:iam::<12 digits>:role/<path+name>`).
    RoleArn(&'a str),
    /// A load id: `[a-z0-9_-]`, at most 128 bytes.
    LoadId(&'a str),
    /// An AWS region name ([`caudal_core::config::is_region_name`]).
    Region(&'a str),
}

fn refused(what: &'static str, value: &str, reason: &'static str) -> SqlError {
    let mut value = value.to_owned();
    if value.len() > 200 {
        let mut cut = 200;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
    }
    SqlError::Refused {
        what,
        value,
        reason,
    }
}

fn key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'=' | b'.' | b'_' | b'-')
}

/// Whether `key` is a raw key the loader can load (`raw/` + `[A-Za-z0-9/=._-]`, ≤ 1024 bytes).
/// Other keys under `raw/` are a permanent failure for their object.
pub fn check_raw_key(key: &str) -> Result<(), SqlError> {
    if !key.starts_with(caudal_core::keys::RAW_PREFIX) {
        return Err(refused("raw key", key, "does not start with raw/"));
    }
    if key.len() > MAX_RAW_KEY_BYTES {
        return Err(refused("raw key", key, "longer than 1024 bytes"));
    }
    if !key.bytes().all(key_byte) {
        return Err(refused(
            "raw key",
            key,
            "contains characters outside [A-Za-z0-9/=._-]",
        ));
    }
    Ok(())
}

/// Whether `etag` looks like an S3 ETag (hex, optionally `-<parts>`).
pub fn check_etag(etag: &str) -> Result<(), SqlError> {
    let (hex, parts) = match etag.split_once('-') {
        Some((h, p)) => (h, Some(p)),
        None => (etag, None),
    };
    let hex_ok = !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let parts_ok = parts
        .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if hex_ok && parts_ok {
        Ok(())
    } else {
        Err(refused("etag", etag, "not a hex S3 ETag"))
    }
}

/// Whether `name` is a valid S3 bucket name (3–63 of `[a-z0-9.-]`, starting and ending with a
/// letter or digit).
pub fn check_bucket(name: &str) -> Result<(), SqlError> {
    let b = name.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(refused("bucket", name, "not a valid S3 bucket name"))
    }
}

/// Whether `arn` is an IAM role ARN COPY can use.
pub fn check_role_arn(arn: &str) -> Result<(), SqlError> {
    let bad = || {
        refused(
            "role ARN",
            arn,
            "not arn:<partition>:iam::<account>:role/<name>",
        )
    };
    let mut it = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) else {
        return Err(bad());
    };
    let partition_ok = partition.starts_with("aws")
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-');
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let name = resource.strip_prefix("role/").unwrap_or("");
    let name_ok = !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_/-".contains(&b));
    if partition_ok && account_ok && name_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Render one validated value as a SQL literal. The only way a value reaches inlined SQL text.
pub fn sql_literal(lit: Literal<'_>) -> Result<String, SqlError> {
    match lit {
        Literal::RawKey(k) => {
            check_raw_key(k)?;
            Ok(format!("'{k}'"))
        }
        Literal::Etag(e) => {
            check_etag(e)?;
            Ok(format!("'{e}'"))
        }
        Literal::Int(n) => Ok(n.to_string()),
        Literal::RuleVersion(v) => {
            if v.len() == 64
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                Ok(format!("'{v}'"))
            } else {
                Err(refused("rule version", v, "not 64 lower-case hex digits"))
            }
        }
        Literal::Timestamp(t) => Ok(format!(
            "CAST('{}' AS TIMESTAMPTZ)",
            caudal_core::warehouse::format_timestamp(t)
        )),
        Literal::Counts(map) => {
            let mut out = String::from("'{");
            for (i, (name, n)) in map.iter().enumerate() {
                Ident::parse(name).map_err(|_| {
                    refused("count name", name, "not an identifier ([a-z_][a-z0-9_]*)")
                })?;
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!("\"{name}\":{n}"));
            }
            out.push_str("}'");
            Ok(out)
        }
        Literal::Region(r) => {
            if caudal_core::config::is_region_name(r) {
                Ok(format!("'{r}'"))
            } else {
                Err(refused("region", r, "not a region name"))
            }
        }
        Literal::S3Uri(uri) => {
            let rest = uri
                .strip_prefix("s3://")
                .ok_or_else(|| refused("S3 URI", uri, "does not start with s3://"))?;
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| refused("S3 URI", uri, "has no key"))?;
            check_bucket(bucket).map_err(|_| refused("S3 URI", uri, "invalid bucket name"))?;
            if key.is_empty() || key.len() > 1024 || !key.bytes().all(key_byte) {
                return Err(refused(
                    "S3 URI",
                    uri,
                    "key is empty or has characters outside [A-Za-z0-9/=._-]",
                ));
            }
            Ok(format!("'{uri}'"))
        }
        Literal::RoleArn(arn) => {
            check_role_arn(arn)?;
            Ok(format!("'{arn}'"))
        }
        Literal::LoadId(id) => {
            let ok = !id.is_empty()
                && id.len() <= MAX_LOAD_ID_BYTES
                && id.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if ok {
                Ok(format!("'{id}'"))
            } else {
                Err(refused("load id", id, "not 1-128 of [a-z0-9_-]"))
            }
        }
    }
}

/// What the rules made of one raw object (the ledger row's inputs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectStats {
    /// Raw object key.
    pub raw_key: String,
    /// ETag of the version read.
    pub etag: String,
    /// Lines in the object.
    pub records: u64,
    /// Rows produced (all tables).
    pub valid: u64,
    /// Lines dropped per filter.
    pub filtered: BTreeMap<String, u64>,
    /// Lines refused.
    pub rejected: u64,
    /// Rows produced per table.
    pub rows: BTreeMap<String, u64>,
}

impl ObjectStats {
    /// Sum of `filtered`.
    pub fn filtered_total(&self) -> u64 {
        self.filtered.values().sum()
    }
}

/// One table with staged rows in a load.
#[derive(Debug, Clone, Copy)]
pub struct StagedTable<'a> {
    /// The table (from the rules).
    pub table: &'a Table,
    /// `s3://…/manifest.json` of its staging parts.
    pub manifest_uri: &'a str,
    /// Start of the de-duplication window: only target rows with `received_at` at or after it
    /// are searched for the load's event ids (`None`: no staged row has a `received_at`, the
    /// whole table is searched).
    pub dedupe_since: Option<OffsetDateTime>,
}

/// Everything one load transaction is made of.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan<'a> {
    /// Warehouse schema.
    pub schema: &'a Ident,
    /// Tables with rows in this load (empty tables are skipped).
    pub tables: &'a [StagedTable<'a>],
    /// Manifest of the rejects' CSV, when there are rejects.
    pub rejects_manifest_uri: Option<&'a str>,
    /// The `COPY_FORMAT_OPTIONS` the staging files were written for.
    pub copy_options: &'a str,
    /// Role Redshift assumes to read the staging bucket.
    pub copy_role_arn: &'a str,
    /// The staging bucket's region, when the warehouse is in another one: COPY then names it
    /// (`REGION '…'`), which Redshift requires for a bucket outside its own region.
    pub copy_region: Option<&'a str>,
    /// One entry per raw object of the load.
    pub objects: &'a [ObjectStats],
    /// Rule version hash.
    pub rule_version: &'a str,
    /// Load time, the rows' `loaded_at`.
    pub loaded_at: OffsetDateTime,
    /// The load id, recorded on every ledger row of the load.
    pub load_id: &'a str,
    /// How far back (by the rejects' `loaded_at`) a rejected event id is looked for.
    pub dedupe_window: time::Duration,
    /// A reprocess: the rules' tables (every one, with rows in this load or not). The result
    /// of an earlier rule version — the objects' rows in these tables, their rejects and their
    /// ledger rows — is deleted first, in the same transaction, so each object ends either
    /// old or new. Objects the ledger holds under `rule_version` already are left alone (the
    /// guarded inserts then skip them too). `None`: an ordinary load.
    pub replace: Option<&'a [Ident]>,
}

fn ident(s: &str) -> Result<Ident, SqlError> {
    Ident::parse(s).map_err(|_| refused("identifier", s, "not a valid identifier"))
}

fn column_list(cols: &[Ident]) -> String {
    cols.iter()
        .map(Ident::quoted)
        .collect::<Vec<_>>()
        .join(", ")
}

fn copy_statement(
    stage: &Ident,
    cols: &[Ident],
    manifest: &str,
    plan: &LoadPlan<'_>,
) -> Result<String, SqlError> {
    let region = match plan.copy_region {
        Some(r) => format!(" REGION {}", sql_literal(Literal::Region(r))?),
        None => String::new(),
    };
    Ok(format!(
        "COPY {} ({}) FROM {} IAM_ROLE {} MANIFEST{region} {}",
        stage.quoted(),
        column_list(cols),
        sql_literal(Literal::S3Uri(manifest))?,
        sql_literal(Literal::RoleArn(plan.copy_role_arn))?,
        plan.copy_options
    ))
}

/// The quoted names and literals every statement of a load uses.
struct LoadNames {
    schema: String,
    ledger: String,
    event_id: String,
    raw_key: String,
    raw_line: String,
    received_at: String,
    principal: String,
    loaded_at_col: String,
    loaded_at: String,
    /// Rows of a raw object the ledger already holds are never inserted again.
    unloaded: String,
}

impl LoadNames {
    fn new(plan: &LoadPlan<'_>) -> Result<LoadNames, SqlError> {
        let schema = plan.schema.quoted();
        let ledger = format!("{schema}.{}", ident(LEDGER_TABLE)?.quoted());
        let event_id = ident(caudal_core::rules::EVENT_ID_COLUMN)?.quoted();
        let raw_key = ident(caudal_core::rules::RAW_KEY_COLUMN)?.quoted();
        let raw_line = ident("raw_line")?.quoted();
        let received_at = ident(caudal_core::rules::RECEIVED_AT_COLUMN)?.quoted();
        let principal = ident(caudal_core::rules::PRINCIPAL_COLUMN)?.quoted();
        let loaded_at_col = ident("loaded_at")?.quoted();
        let loaded_at = sql_literal(Literal::Timestamp(plan.loaded_at))?;
        let unloaded =
            format!("NOT EXISTS (SELECT 1 FROM {ledger} AS l WHERE l.\"raw_key\" = s.{raw_key})");
        Ok(LoadNames {
            schema,
            ledger,
            event_id,
            raw_key,
            raw_line,
            received_at,
            principal,
            loaded_at_col,
            loaded_at,
            unloaded,
        })
    }

    /// Event ids are unique per principal (one client's ids never suppress another's events);
    /// NULL (an unauthenticated API) is one scope of its own. No `IS NOT DISTINCT FROM`:
    /// Redshift lacks it.
    fn same_principal(&self, a: &str, b: &str) -> String {
        let p = &self.principal;
        format!("({a}.{p} = {b}.{p} OR ({a}.{p} IS NULL AND {b}.{p} IS NULL))")
    }
}

/// The statements of one load transaction (see the module docs), checked against the Data
/// API's limits.
pub fn load_batch(plan: &LoadPlan<'_>) -> Result<Vec<String>, SqlError> {
    let n = LoadNames::new(plan)?;
    // First, before anything that takes the snapshot (see the module docs).
    let mut sqls = vec![format!("LOCK {}", n.ledger)];
    if let Some(tables) = plan.replace {
        replace_statements(plan, &n, tables, &mut sqls)?;
    }
    let mut inserted_parts = Vec::new();
    for (i, st) in plan.tables.iter().enumerate() {
        table_statements(plan, &n, i, st, &mut sqls, &mut inserted_parts)?;
    }
    if let Some(manifest) = plan.rejects_manifest_uri {
        rejects_statements(plan, &n, manifest, &mut sqls, &mut inserted_parts)?;
    }
    sqls.extend(ledger_inserts(plan, &inserted_parts)?);
    if sqls.len() > MAX_BATCH_STATEMENTS {
        return Err(SqlError::TooManyStatements(sqls.len()));
    }
    if let Some((index, s)) = sqls
        .iter()
        .enumerate()
        .find(|(_, s)| s.len() > MAX_STATEMENT_BYTES)
    {
        return Err(SqlError::TooLarge {
            index,
            bytes: s.len(),
        });
    }
    Ok(sqls)
}

/// A reprocess's deletes (see [`LoadPlan::replace`]): per table, then the rejects, the rows
/// of the load's objects whose ledger row has another rule version; then those ledger rows.
/// Each `DELETE` finds the objects through the ledger, so it must come last.
fn replace_statements(
    plan: &LoadPlan<'_>,
    n: &LoadNames,
    tables: &[Ident],
    sqls: &mut Vec<String>,
) -> Result<(), SqlError> {
    let keys = plan
        .objects
        .iter()
        .map(|o| sql_literal(Literal::RawKey(&o.raw_key)))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let version = sql_literal(Literal::RuleVersion(plan.rule_version))?;
    let stale = format!("\"raw_key\" IN ({keys}) AND \"rule_version\" <> {version}");
    let rejects = ident(REJECTS_TABLE)?;
    for t in tables.iter().chain(std::iter::once(&rejects)) {
        sqls.push(format!(
            "DELETE FROM {}.{} WHERE {rk} IN (SELECT l.\"raw_key\" FROM {} AS l WHERE l.{stale})",
            n.schema,
            t.quoted(),
            n.ledger,
            rk = n.raw_key,
        ));
    }
    sqls.push(format!("DELETE FROM {} WHERE {stale}", n.ledger));
    Ok(())
}

/// The [`STATEMENTS_PER_TABLE`] statements of staged table `i` (temp table, COPY, guarded
/// insert) into `sqls`, and the query of its inserted raw keys into `inserted_parts`.
fn table_statements(
    plan: &LoadPlan<'_>,
    n: &LoadNames,
    i: usize,
    st: &StagedTable<'_>,
    sqls: &mut Vec<String>,
    inserted_parts: &mut Vec<String>,
) -> Result<(), SqlError> {
    let target = format!("{}.{}", n.schema, st.table.name.quoted());
    let stage = ident(&format!("caudal_stage_{i}"))?;
    let cols: Vec<Ident> = st.table.columns.iter().map(|c| c.name.clone()).collect();
    let list = column_list(&cols);
    let window = match st.dedupe_since {
        Some(since) => format!(
            " AND t.{} >= {}",
            n.received_at,
            sql_literal(Literal::Timestamp(since))?
        ),
        None => String::new(),
    };
    sqls.push(format!(
        "CREATE TEMP TABLE {} (LIKE {target} INCLUDING DEFAULTS)",
        stage.quoted()
    ));
    sqls.push(copy_statement(&stage, &cols, st.manifest_uri, plan)?);
    sqls.push(format!(
        "INSERT INTO {target} ({list}) SELECT {list} FROM (SELECT s.*, ROW_NUMBER() OVER \
         (PARTITION BY s.{eid}, s.{pr} ORDER BY s.{rk}, s.{rl}) AS caudal_rn FROM {stage} AS \
         s WHERE {unloaded} AND NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.{eid} = \
         s.{eid} AND {same}{window})) AS d WHERE d.caudal_rn = 1",
        stage = stage.quoted(),
        eid = n.event_id,
        pr = n.principal,
        rk = n.raw_key,
        rl = n.raw_line,
        unloaded = n.unloaded,
        same = n.same_principal("t", "s"),
    ));
    // Rows of this load that are now in the target: the winners of the insert. A stage row
    // matches a target row on (event_id, raw_key, raw_line) only if it was inserted now —
    // the ledger check guarantees this raw object had no rows in the target before. The
    // load's own loaded_at bounds the scan (zone maps), whatever the table's size.
    inserted_parts.push(format!(
        "SELECT s.{rk} FROM {stage} AS s JOIN {target} AS t ON t.{eid} = s.{eid} AND t.{rk} \
         = s.{rk} AND t.{rl} = s.{rl} AND t.{la} = {loaded_at}",
        stage = stage.quoted(),
        eid = n.event_id,
        rk = n.raw_key,
        rl = n.raw_line,
        la = n.loaded_at_col,
        loaded_at = n.loaded_at,
    ));
    Ok(())
}

/// The statements staging the rejects from `manifest` (temp table, COPY, de-duplicated
/// insert) into `sqls`, and the query of their inserted raw keys into `inserted_parts`.
fn rejects_statements(
    plan: &LoadPlan<'_>,
    n: &LoadNames,
    manifest: &str,
    sqls: &mut Vec<String>,
    inserted_parts: &mut Vec<String>,
) -> Result<(), SqlError> {
    let target = format!("{}.{}", n.schema, ident(REJECTS_TABLE)?.quoted());
    let stage = ident("caudal_stage_rejects")?;
    let cols = REJECT_COLUMNS
        .iter()
        .map(|c| ident(c))
        .collect::<Result<Vec<_>, _>>()?;
    let list = column_list(&cols);
    sqls.push(format!(
        "CREATE TEMP TABLE {} (LIKE {target} INCLUDING DEFAULTS)",
        stage.quoted()
    ));
    sqls.push(copy_statement(&stage, &cols, manifest, plan)?);
    // Rejects count events: an event id already rejected inside the window for the same
    // principal (a client re-sending the same invalid event) or twice in this load is kept
    // once; lines without an id (unparseable) are each their own reject.
    let since = sql_literal(Literal::Timestamp(plan.loaded_at - plan.dedupe_window))?;
    sqls.push(format!(
        "INSERT INTO {target} ({list}) SELECT {list} FROM (SELECT s.*, ROW_NUMBER() OVER \
         (PARTITION BY s.{eid}, s.{pr}, CASE WHEN s.{eid} IS NULL THEN s.{rk} END, CASE WHEN \
         s.{eid} IS NULL THEN s.{rl} END ORDER BY s.{rk}, s.{rl}) AS caudal_rn FROM {stage} \
         AS s WHERE {unloaded} AND (s.{eid} IS NULL OR NOT EXISTS (SELECT 1 FROM {target} AS \
         r WHERE r.{eid} = s.{eid} AND {same} AND r.{la} >= {since}))) AS d WHERE \
         d.caudal_rn = 1",
        stage = stage.quoted(),
        eid = n.event_id,
        pr = n.principal,
        unloaded = n.unloaded,
        same = n.same_principal("r", "s"),
        rk = n.raw_key,
        rl = n.raw_line,
        la = n.loaded_at_col,
    ));
    inserted_parts.push(format!(
        "SELECT s.{rk} FROM {stage} AS s JOIN {target} AS r ON r.{rk} = s.{rk} AND r.{rl} = \
         s.{rl} AND r.{la} = {loaded_at}",
        stage = stage.quoted(),
        rk = n.raw_key,
        rl = n.raw_line,
        la = n.loaded_at_col,
        loaded_at = n.loaded_at,
    ));
    Ok(())
}

/// The ledger rows of a load: as few `INSERT`s as keep each statement within
/// [`MAX_STATEMENT_BYTES`] (one row carries a raw key of up to 1 KB and two count maps, so a
/// hundred objects can need more than one). All of them run in the load's transaction, each
/// guarded by the ledger like every other insert.
fn ledger_inserts(plan: &LoadPlan<'_>, inserted_parts: &[String]) -> Result<Vec<String>, SqlError> {
    let ledger = format!("{}.{}", plan.schema.quoted(), ident(LEDGER_TABLE)?.quoted());
    let int = |n: u64| sql_literal(Literal::Int(i64::try_from(n).unwrap_or(i64::MAX)));
    let mut rows = Vec::with_capacity(plan.objects.len());
    for o in plan.objects {
        rows.push(format!(
            "SELECT {} AS raw_key, {} AS etag, {} AS records, {} AS valid, {} AS filtered, {} AS \
             filtered_total, {} AS rejected, {} AS loaded",
            sql_literal(Literal::RawKey(&o.raw_key))?,
            sql_literal(Literal::Etag(&o.etag))?,
            int(o.records)?,
            int(o.valid)?,
            sql_literal(Literal::Counts(&o.filtered))?,
            int(o.filtered_total())?,
            int(o.rejected)?,
            sql_literal(Literal::Counts(&o.rows))?,
        ));
    }
    // Duplicates = rows and rejects produced but not inserted (already there, or repeated).
    let (join, duplicates) = if inserted_parts.is_empty() {
        (String::new(), "o.valid + o.rejected - 0".to_owned())
    } else {
        (
            format!(
                " LEFT JOIN (SELECT x.raw_key, COUNT(*) AS inserted FROM ({}) AS x GROUP BY \
                 x.raw_key) AS n ON n.raw_key = o.raw_key",
                inserted_parts.join(" UNION ALL ")
            ),
            "o.valid + o.rejected - COALESCE(n.inserted, 0)".to_owned(),
        )
    };
    let head = format!(
        "INSERT INTO {ledger} (\"raw_key\", \"etag\", \"records\", \"valid\", \"filtered\", \
         \"filtered_total\", \"rejected\", \"loaded\", \"duplicates\", \"rule_version\", \
         \"load_id\", \"loaded_at\") SELECT o.raw_key, o.etag, o.records, o.valid, \
         JSON_PARSE(o.filtered), o.filtered_total, o.rejected, JSON_PARSE(o.loaded), {duplicates}, \
         {version}, {load_id}, {loaded_at} FROM (",
        version = sql_literal(Literal::RuleVersion(plan.rule_version))?,
        load_id = sql_literal(Literal::LoadId(plan.load_id))?,
        loaded_at = sql_literal(Literal::Timestamp(plan.loaded_at))?,
    );
    let tail = format!(
        ") AS o{join} WHERE NOT EXISTS (SELECT 1 FROM {ledger} AS l WHERE l.\"raw_key\" = \
         o.raw_key)"
    );
    const SEP: &str = " UNION ALL ";
    let fixed = head.len() + tail.len();
    let mut out = Vec::new();
    let mut group: Vec<&str> = Vec::new();
    let mut size = fixed;
    for row in &rows {
        let grown = size + row.len() + if group.is_empty() { 0 } else { SEP.len() };
        if grown > MAX_STATEMENT_BYTES && !group.is_empty() {
            out.push(format!("{head}{}{tail}", group.join(SEP)));
            group.clear();
            size = fixed;
        }
        size += row.len() + if group.is_empty() { 0 } else { SEP.len() };
        group.push(row);
    }
    if !group.is_empty() {
        out.push(format!("{head}{}{tail}", group.join(SEP)));
    }
    Ok(out)
}

/// `SELECT raw_key, etag, rule_version FROM ledger WHERE raw_key IN (:k0, …)` with one
/// parameter per key.
pub fn ledger_lookup(schema: &Ident, keys: &[&str]) -> (String, Vec<Param>) {
    let names: Vec<String> = (0..keys.len()).map(|i| format!(":k{i}")).collect();
    let sql = format!(
        "SELECT \"raw_key\", \"etag\", \"rule_version\" FROM {}.\"{LEDGER_TABLE}\" WHERE \"raw_key\" IN ({})",
        schema.quoted(),
        names.join(", ")
    );
    let params = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Param::new(format!("k{i}"), *k))
        .collect();
    (sql, params)
}

/// The catalogue query for migrations: every column of every table in the schema (works on
/// Redshift and PostgreSQL).
pub fn existing_columns(schema: &Ident) -> (String, Vec<Param>) {
    (
        "SELECT table_name, column_name, data_type, character_maximum_length, numeric_precision, \
         numeric_scale, is_nullable, CASE WHEN column_default IS NULL THEN 0 ELSE 1 END FROM \
         information_schema.columns WHERE table_schema = :schema ORDER BY table_name, \
         ordinal_position"
            .to_owned(),
        vec![Param::new("schema", schema.as_str())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_accept_what_the_loader_produces() {
        assert_eq!(
            sql_literal(Literal::RawKey(
                "raw/dt=2026-11-05/hr=07/shardId-0/1-2.ndjson.gz"
            ))
            .unwrap(),
            "'raw/dt=2026-11-05/hr=07/shardId-0/1-2.ndjson.gz'"
        );
        assert_eq!(
            sql_literal(Literal::Etag("d41d8cd98f00b204e9800998ecf8427e-3")).unwrap(),
            "'d41d8cd98f00b204e9800998ecf8427e-3'"
        );
        assert_eq!(sql_literal(Literal::Int(-7)).unwrap(), "-7");
        let v = "a".repeat(64);
        assert_eq!(
            sql_literal(Literal::RuleVersion(&v)).unwrap(),
            format!("'{v}'")
        );
        let t = time::macros::datetime!(2026-11-25 19:55:17.5 UTC);
        assert_eq!(
            sql_literal(Literal::Timestamp(t)).unwrap(),
            "CAST('2026-11-25T19:55:17.500000Z' AS TIMESTAMPTZ)"
        );
        let counts = BTreeMap::from([("bots".to_owned(), 3), ("internal".to_owned(), 0)]);
        assert_eq!(
            sql_literal(Literal::Counts(&counts)).unwrap(),
            "'{\"bots\":3,\"internal\":0}'"
        );
        assert_eq!(
            sql_literal(Literal::Counts(&BTreeMap::new())).unwrap(),
            "'{}'"
        );
        assert!(
            sql_literal(Literal::S3Uri(
                "s3://my-bucket.x/staging/t/ab/manifest.json"
            ))
            .is_ok()
        );
        assert!(
            sql_literal(Literal::RoleArn(
                "arn:aws:iam::123456789012:role/caudal-copy"
            ))
            .is_ok()
        );
    }

    #[test]
    fn literals_refuse_injection_attempts() {
        for bad in [
            "raw/a'; DROP TABLE x; --",
            "raw/a b",
            "raw/é",
            "raw/a\\",
            "staging/a",
            "raw/a\0",
        ] {
            let e = sql_literal(Literal::RawKey(bad)).unwrap_err();
            assert!(
                matches!(
                    e,
                    SqlError::Refused {
                        what: "raw key",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        assert!(sql_literal(Literal::RawKey(&format!("raw/{}", "a".repeat(1021)))).is_err());
        assert!(sql_literal(Literal::Etag("abc'")).is_err());
        assert!(sql_literal(Literal::Etag("")).is_err());
        assert!(sql_literal(Literal::Etag("abc-")).is_err());
        assert!(sql_literal(Literal::RuleVersion("ABC")).is_err());
        let evil = BTreeMap::from([("x'}".to_owned(), 1)]);
        assert!(sql_literal(Literal::Counts(&evil)).is_err());
        assert!(sql_literal(Literal::S3Uri("s3://b/x' IAM_ROLE 'y")).is_err());
        assert!(sql_literal(Literal::S3Uri("https://b/x")).is_err());
        assert!(sql_literal(Literal::S3Uri("s3://B/x")).is_err());
        assert!(sql_literal(Literal::RoleArn("arn:aws:iam::123456789012:role/x'")).is_err());
        assert!(sql_literal(Literal::RoleArn("arn:aws:iam::12345:role/x")).is_err());
        assert!(
            sql_literal(Literal::RoleArn(
                "arn:aws:iam::123456789012:role/a,arn:aws:iam::123456789012:role/b"
            ))
            .is_err()
        );
    }

    #[test]
    fn lookup_uses_parameters() {
        let schema = Ident::parse("analytics").unwrap();
        let (sql, params) = ledger_lookup(&schema, &["raw/a", "raw/b'x"]);
        assert_eq!(
            sql,
            "SELECT \"raw_key\", \"etag\", \"rule_version\" FROM \"analytics\".\"caudal_ledger\" \
             WHERE \"raw_key\" IN (:k0, :k1)"
        );
        assert_eq!(params[1], Param::new("k1", "raw/b'x"));
    }

    #[test]
    fn copy_names_the_staging_region_only_when_the_warehouse_is_elsewhere() {
        let schema = Ident::parse("analytics").unwrap();
        let version = "a".repeat(64);
        let plan = |copy_region| LoadPlan {
            schema: &schema,
            tables: &[],
            rejects_manifest_uri: None,
            copy_options: "FORMAT CSV GZIP",
            copy_role_arn: "arn:aws:iam::123456789012:role/caudal-copy",
            copy_region,
            objects: &[],
            rule_version: &version,
            loaded_at: OffsetDateTime::UNIX_EPOCH,
            load_id: "l1",
            dedupe_window: time::Duration::hours(1),
            replace: None,
        };
        let stage = Ident::parse("s1").unwrap();
        let cols = [Ident::parse("event_id").unwrap()];
        let m = "s3://caudal-staging/staging/t/l1/manifest.json";
        assert_eq!(
            copy_statement(&stage, &cols, m, &plan(None)).unwrap(),
            "COPY \"s1\" (\"event_id\") FROM 's3://caudal-staging/staging/t/l1/manifest.json' \
             IAM_ROLE 'arn:aws:iam::123456789012:role/caudal-copy' MANIFEST FORMAT CSV GZIP"
        );
        assert_eq!(
            copy_statement(&stage, &cols, m, &plan(Some("us-west-2"))).unwrap(),
            "COPY \"s1\" (\"event_id\") FROM 's3://caudal-staging/staging/t/l1/manifest.json' \
             IAM_ROLE 'arn:aws:iam::123456789012:role/caudal-copy' MANIFEST REGION 'us-west-2' \
             FORMAT CSV GZIP"
        );
        for bad in ["us-west-2' CREDENTIALS 'x", "US", ""] {
            assert!(
                copy_statement(&stage, &cols, m, &plan(Some(bad))).is_err(),
                "{bad}"
            );
        }
    }

    fn stats(key: &str) -> ObjectStats {
        ObjectStats {
            raw_key: key.to_owned(),
            etag: "d41d8cd98f00b204e9800998ecf8427e".to_owned(),
            records: 3,
            valid: 2,
            filtered: BTreeMap::new(),
            rejected: 1,
            rows: BTreeMap::from([("page_views".to_owned(), 2)]),
        }
    }

    #[test]
    fn a_reprocess_deletes_the_earlier_versions_result_after_the_lock_and_before_any_insert() {
        let schema = Ident::parse("analytics").unwrap();
        let version = "b".repeat(64);
        let objects = [stats("raw/a.ndjson.gz"), stats("raw/b.ndjson.gz")];
        let names = [
            Ident::parse("page_views").unwrap(),
            Ident::parse("signups").unwrap(),
        ];
        let plan = |replace| LoadPlan {
            schema: &schema,
            tables: &[],
            rejects_manifest_uri: None,
            copy_options: "FORMAT CSV GZIP",
            copy_role_arn: "arn:aws:iam::123456789012:role/caudal-copy",
            copy_region: None,
            objects: &objects,
            rule_version: &version,
            loaded_at: OffsetDateTime::UNIX_EPOCH,
            load_id: "l1",
            dedupe_window: time::Duration::hours(1),
            replace,
        };
        let load = load_batch(&plan(None)).unwrap();
        let sqls = load_batch(&plan(Some(&names))).unwrap();
        assert_eq!(leading_statements(None), 1);
        assert_eq!(leading_statements(Some(names.len())), 1 + names.len() + 2);
        assert_eq!(sqls.len(), load.len() + names.len() + 2);
        assert_eq!(sqls[0], "LOCK \"analytics\".\"caudal_ledger\"");
        let stale = format!(
            "\"raw_key\" IN ('raw/a.ndjson.gz', 'raw/b.ndjson.gz') AND \"rule_version\" <> '{version}'"
        );
        let rows = |t: &str| {
            format!(
                "DELETE FROM \"analytics\".\"{t}\" WHERE \"raw_key\" IN (SELECT l.\"raw_key\" FROM \
                 \"analytics\".\"caudal_ledger\" AS l WHERE l.{stale})"
            )
        };
        assert_eq!(sqls[1], rows("page_views"));
        assert_eq!(sqls[2], rows("signups"));
        assert_eq!(sqls[3], rows("caudal_rejects"));
        assert_eq!(
            sqls[4],
            format!("DELETE FROM \"analytics\".\"caudal_ledger\" WHERE {stale}")
        );
        // Then exactly the ordinary load's statements.
        assert_eq!(&sqls[5..], &load[1..]);
    }

    #[test]
    fn each_tables_insert_is_where_the_metrics_look_for_it() {
        let rules =
            caudal_core::rules::RuleSet::from_yaml(caudal_core::rules::BUNDLED_RULES_YAML).unwrap();
        let schema = Ident::parse("analytics").unwrap();
        let version = "c".repeat(64);
        let objects = [stats("raw/a.ndjson.gz")];
        let names: Vec<Ident> = rules.tables().iter().map(|t| t.name.clone()).collect();
        assert!(names.len() >= 3);
        let m = "s3://caudal-staging/staging/t/l1/manifest.json";
        let staged: Vec<StagedTable<'_>> = rules.tables()[1..3]
            .iter()
            .map(|table| StagedTable {
                table,
                manifest_uri: m,
                dedupe_since: None,
            })
            .collect();
        for replace in [None, Some(names.as_slice())] {
            let sqls = load_batch(&LoadPlan {
                schema: &schema,
                tables: &staged,
                rejects_manifest_uri: Some(m),
                copy_options: "FORMAT CSV GZIP",
                copy_role_arn: "arn:aws:iam::123456789012:role/caudal-copy",
                copy_region: None,
                objects: &objects,
                rule_version: &version,
                loaded_at: OffsetDateTime::UNIX_EPOCH,
                load_id: "l1",
                dedupe_window: time::Duration::hours(1),
                replace,
            })
            .unwrap();
            let leading = leading_statements(replace.map(<[Ident]>::len));
            for (i, st) in staged.iter().enumerate() {
                let at = &sqls[insert_statement_index(leading, i)];
                let want = format!("INSERT INTO \"analytics\".{} (", st.table.name.quoted());
                assert!(at.starts_with(&want), "{replace:?} table {i}: {at}");
            }
        }
        assert_eq!(leading_statements(Some(5)), 8);
    }

    #[test]
    fn load_ids_are_checked() {
        let id = "0123456789abcdef0123456789abcdef-0a1b";
        assert_eq!(sql_literal(Literal::LoadId(id)).unwrap(), format!("'{id}'"));
        for bad in ["", "A", "x'y", "a/b", &"a".repeat(129)] {
            assert!(sql_literal(Literal::LoadId(bad)).is_err(), "{bad}");
        }
        assert!(sql_literal(Literal::LoadId(&"a".repeat(128))).is_ok());
    }
}
