//! The business-rules engine: turns raw-archive lines into warehouse rows.
//!
//! A declarative, versioned rules file (YAML, see `rules/rules.yaml`) describes
//!
//! * **tables** — columns with Redshift types, dist/sort keys; every table also gets the
//!   standard lineage columns [`STANDARD_COLUMNS`];
//! * **event types** — per type a JSON Schema, named filters (CEL, `drop_if`), the target table
//!   and one mapping per column: a JSON pointer into `/event`, `/envelope` or `/kinesis`, a CEL
//!   expression, a constant or a coalesce of those, followed by enrichment steps
//!   (module `enrich`: trim/lower/upper, salted sha256, date parts, IP truncation, epochs,
//!   default) and a strict conversion to the column type (module `types`);
//! * **global filters** applied to every event before its type is looked at;
//! * what to do with **unknown event types**: reject them, or keep them whole in a catch-all
//!   table as `SUPER`.
//!
//! [`RuleSet::from_yaml`] validates and compiles everything once (per cold start); a bad file
//! fails there with an error naming the place. [`RuleSet::apply_line`] then maps each raw line
//! to exactly one [`Outcome`] — rows, filtered (by which rule) or rejected (with a stable code) —
//! so every raw record is accounted for. The processing order per line is: parse → global
//! filters → type lookup → JSON Schema → type filters → mappings.
//!
//! Reject codes: `parse` (line/envelope/event is not what docs/CONTRACTS.md promises),
//! `unknown_type`, `schema` (rule = event type, path = JSON pointer of the failing value),
//! `filter` (a filter could not be evaluated; rule = filter name), `mapping` (a value does not
//! fit its column; rule = `type.column`).
//!
//! Output goes to the warehouse through [`write_csv_row`] (CSV for `COPY`, see
//! [`COPY_FORMAT_OPTIONS`]); [`RuleSet::ddl_create`] / [`RuleSet::ddl_migrate`] produce the DDL,
//! including the ledger, rejects and dashboard views from `warehouse/*.sql`.
//!
//! Nothing here touches AWS; the module is pure and `Send + Sync`.
#![allow(
    clippy::result_large_err,
    reason = "a Reject is a normal per-line outcome carried by value (its shape is part of the loader contract), not a rare error worth boxing"
)]

mod csv;
mod ddl;
mod enrich;
mod expr;
mod ident;
mod source_text;
mod types;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::envelope::Envelope;
use crate::raw::{KinesisCoords, RawLine};

pub use self::csv::{COPY_FORMAT_OPTIONS, NULL_MARKER, write_csv_cells, write_csv_row};
pub use self::ddl::{ExistingColumn, MigrationPlan, SQL_LEDGER, SQL_REJECTS, SQL_VIEWS};
pub use self::ident::{Ident, IdentError};
pub use self::types::{Cell, ColumnType};

/// The example rules file shipped in the repository (`rules/rules.yaml`), compiled in so a
/// function can run without a `RULES_FILE`.
pub const BUNDLED_RULES_YAML: &str = include_str!("../../../../rules/rules.yaml");

/// Name of the event-id column every table has (the de-duplication key of the loader).
pub const EVENT_ID_COLUMN: &str = "event_id";
/// Name of the raw-object-key lineage column.
pub const RAW_KEY_COLUMN: &str = "raw_key";
/// Name of the ingest-time lineage column (the loader's de-duplication window runs on it).
pub const RECEIVED_AT_COLUMN: &str = "received_at";
/// Name of the authenticated-principal lineage column: event ids are unique per principal, so
/// one client's ids never suppress another's events (NULL = an unauthenticated API).
pub const PRINCIPAL_COLUMN: &str = "principal";

/// Columns appended to every table, in this order: name, type, nullable.
pub const STANDARD_COLUMNS: [(&str, ColumnType, bool); 8] = [
    (EVENT_ID_COLUMN, ColumnType::Varchar(128), false),
    ("event_type", ColumnType::Varchar(128), false),
    (RECEIVED_AT_COLUMN, ColumnType::TimestampTz, true),
    (RAW_KEY_COLUMN, ColumnType::Varchar(1024), false),
    ("raw_line", ColumnType::BigInt, false),
    ("rule_version", ColumnType::Varchar(64), false),
    ("loaded_at", ColumnType::TimestampTz, false),
    // Last, so a table created before it and migrated has the same column order as a new one.
    (
        PRINCIPAL_COLUMN,
        ColumnType::Varchar(crate::envelope::MAX_PRINCIPAL_BYTES as u32),
        true,
    ),
];

/// Default name of the catch-all table for unknown event types.
pub const DEFAULT_CATCH_ALL_TABLE: &str = "unknown_events";
/// Longest message kept in a [`Reject`].
const MAX_MESSAGE: usize = 1000;
/// Redshift's column limit per table.
const MAX_COLUMNS: usize = 1600;

/// A rules file that cannot be used, or a migration that cannot be applied. Never retryable:
/// the file (or the warehouse) must be fixed by a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// Not YAML, or not the rules file's shape (unknown key, wrong type); carries the parser's
    /// line/column.
    #[error("rules file: {0}")]
    Yaml(String),
    /// A semantic problem; `at` names the place, e.g. `events.purchase.columns.amount`.
    #[error("rules file: {at}: {reason}")]
    Invalid {
        /// Where in the file.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// A non-additive difference between the rules and the warehouse: only this table is held.
    #[error("migration refused: table {table}, column {column}: {reason}; to fix: {fix}")]
    Migration {
        /// Table name.
        table: String,
        /// Column name.
        column: String,
        /// What differs.
        reason: String,
        /// What a person does about it (the DDL to run, or the rules change).
        fix: String,
    },
}

impl RulesError {
    /// Always false: retrying cannot fix a rules file or a warehouse schema.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

fn invalid(at: impl Into<String>, reason: impl Into<String>) -> RulesError {
    RulesError::Invalid {
        at: at.into(),
        reason: reason.into(),
    }
}

/// One output table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Table name.
    pub name: Ident,
    /// Columns in order: the mapped ones, then [`STANDARD_COLUMNS`].
    pub columns: Vec<Column>,
    /// `DISTKEY` column.
    pub dist_key: Option<Ident>,
    /// `SORTKEY` columns.
    pub sort_key: Vec<Ident>,
    /// True for the catch-all table of unknown event types.
    pub catch_all: bool,
}

impl Table {
    /// Index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name.as_str() == name)
    }
}

/// One column of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: Ident,
    /// Type.
    pub ty: ColumnType,
    /// False for `NOT NULL`.
    pub nullable: bool,
    /// True for the lineage/standard columns every table gets.
    pub standard: bool,
}

/// Where a line came from: lineage of every row it produces.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    /// The raw object's S3 key.
    pub raw_key: &'a str,
    /// 1-based line number in the raw object.
    pub line: u64,
    /// Load time (same for the whole load).
    pub loaded_at: OffsetDateTime,
}

/// What became of one raw line: exactly one of these, so every record is accounted for.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Rows to load (one per line today; a list so a rule can fan out later).
    Rows(Vec<Row>),
    /// Dropped on purpose by the named filter.
    Filtered {
        /// The filter's name.
        rule: String,
    },
    /// Refused, with the reason.
    Rejected(Reject),
}

/// One output row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Index into [`RuleSet::tables`].
    pub table: usize,
    /// One cell per column of that table, in column order (lineage included).
    pub values: Vec<Cell>,
}

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Stable machine code: `parse`, `unknown_type`, `schema`, `filter`, `mapping`.
    pub code: String,
    /// The rule that refused it (event type, filter name or `type.column`).
    pub rule: Option<String>,
    /// JSON pointer of the failing value (schema failures, pointer mappings).
    pub path: Option<String>,
    /// Human-readable explanation.
    pub message: String,
    /// The event id, when the envelope could be read.
    pub event_id: Option<String>,
    /// The event type, when the envelope could be read.
    pub event_type: Option<String>,
    /// The authenticated principal that sent the event, when the envelope could be read and
    /// has one (rejects are de-duplicated per principal, like rows).
    pub principal: Option<String>,
}

impl Reject {
    fn new(code: &str, rule: Option<String>, path: Option<String>, message: String) -> Reject {
        Reject {
            code: code.to_owned(),
            rule,
            path,
            message: clip(message, MAX_MESSAGE),
            event_id: None,
            event_type: None,
            principal: None,
        }
    }
}

/// Cut `s` to at most `max` bytes on a character boundary.
fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The file format (deserialised with serde; semantics checked by `compile`).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    version: u32,
    #[serde(default)]
    pii_salt: Option<String>,
    #[serde(default)]
    unknown_types: UnknownTypes,
    #[serde(default)]
    catch_all_table: Option<String>,
    tables: BTreeMap<String, TableSpec>,
    #[serde(default)]
    filters: Vec<FilterSpec>,
    events: BTreeMap<String, EventSpec>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum UnknownTypes {
    #[default]
    Reject,
    CatchAll,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSpec {
    columns: Vec<ColumnSpec>,
    #[serde(default)]
    dist_key: Option<String>,
    #[serde(default)]
    sort_key: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnSpec {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default = "yes")]
    nullable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterSpec {
    name: String,
    drop_if: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    table: String,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    filters: Vec<FilterSpec>,
    #[serde(default)]
    columns: BTreeMap<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Compiled form.

/// Envelope fields a pointer or expression may read.
const ENVELOPE_FIELDS: [&str; 10] = [
    "v",
    "id",
    "id_generated",
    "type",
    "received_at",
    "request_id",
    "source_ip",
    "user_agent",
    "principal",
    "stage",
];
/// Kinesis coordinate fields a pointer or expression may read.
const KINESIS_FIELDS: [&str; 4] = ["shard_id", "sequence_number", "arrival", "partition_key"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Event,
    Envelope,
    Kinesis,
}

#[derive(Debug)]
struct Pointer {
    text: String,
    root: Root,
    /// JSON pointer within the root ("" = the root itself).
    rest: String,
}

#[derive(Debug)]
enum Source {
    Pointer(Pointer),
    Expr(expr::Expr),
    Const(Value),
    Coalesce(Vec<Source>),
}

impl Source {
    fn uses(&self, acc: &mut [bool; 3]) {
        match self {
            Source::Expr(e) => {
                for (a, u) in acc.iter_mut().zip(e.uses) {
                    *a |= u;
                }
            }
            Source::Coalesce(list) => list.iter().for_each(|s| s.uses(acc)),
            Source::Pointer(_) | Source::Const(_) => {}
        }
    }

    fn path(&self) -> Option<String> {
        match self {
            Source::Pointer(p) => Some(p.text.clone()),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Mapping {
    column: usize,
    source: Source,
    steps: Vec<enrich::Step>,
}

#[derive(Debug)]
struct Filter {
    name: String,
    expr: expr::Expr,
}

#[derive(Debug)]
struct EventRule {
    table: usize,
    schema: Option<jsonschema::Validator>,
    filters: Vec<Filter>,
    mappings: Vec<Mapping>,
    /// CEL variables needed by this type's filters and mappings.
    uses: [bool; 3],
}

/// A compiled rules file. Build once per cold start with [`RuleSet::from_yaml`]; share freely
/// (`Send + Sync`).
pub struct RuleSet {
    version: String,
    tables: Vec<Table>,
    events: HashMap<String, EventRule>,
    global_filters: Vec<Filter>,
    global_uses: [bool; 3],
    catch_all: Option<usize>,
    salt: String,
    cel: Arc<cel::Env>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("version", &self.version)
            .field("tables", &self.tables.len())
            .field("event_types", &self.events.len())
            .finish_non_exhaustive()
    }
}

fn parse_ident(at: &str, s: &str) -> Result<Ident, RulesError> {
    Ident::parse(s).map_err(|e| invalid(at, e.to_string()))
}

fn check_event_type_name(at: &str, name: &str) -> Result<(), RulesError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(invalid(
            at,
            "an event type name must be 1-128 bytes without control characters",
        ));
    }
    Ok(())
}

fn parse_pointer(at: &str, text: &str) -> Result<Pointer, RulesError> {
    let bad = |why: &str| invalid(at, format!("{text:?} {why}"));
    let Some(after) = text.strip_prefix('/') else {
        return Err(bad(
            "is not a JSON pointer (must start with /event, /envelope or /kinesis)",
        ));
    };
    let (first, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    let root = match first {
        "event" => Root::Event,
        "envelope" => Root::Envelope,
        "kinesis" => Root::Kinesis,
        _ => return Err(bad("must start with /event, /envelope or /kinesis")),
    };
    let fields: &[&str] = match root {
        Root::Event => &[],
        Root::Envelope => &ENVELOPE_FIELDS,
        Root::Kinesis => &KINESIS_FIELDS,
    };
    if root != Root::Event {
        let field = rest.trim_start_matches('/').split('/').next().unwrap_or("");
        if !rest.is_empty() && !fields.contains(&field) {
            return Err(bad(&format!(
                "names an unknown field (known: {})",
                fields.join(", ")
            )));
        }
    }
    if rest.contains('~') {
        // `~0`/`~1` are the only valid escapes.
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(bad("has an invalid ~ escape (only ~0 and ~1)"));
            }
        }
    }
    Ok(Pointer {
        text: text.to_owned(),
        root,
        rest: rest.to_owned(),
    })
}

fn compile_source(
    env: &cel::Env,
    at: &str,
    spec: &Value,
    allow_then: bool,
) -> Result<(Source, Vec<enrich::Step>), RulesError> {
    match spec {
        Value::String(s) => Ok((Source::Pointer(parse_pointer(at, s)?), Vec::new())),
        Value::Object(m) => {
            let mut source = None;
            let mut steps = Vec::new();
            for (k, v) in m {
                let s = match k.as_str() {
                    "from" => {
                        let Value::String(p) = v else {
                            return Err(invalid(at, "`from` must be a JSON pointer string"));
                        };
                        Source::Pointer(parse_pointer(at, p)?)
                    }
                    "expr" => {
                        let Value::String(src) = v else {
                            return Err(invalid(at, "`expr` must be a CEL expression string"));
                        };
                        Source::Expr(expr::Expr::compile(env, src).map_err(|e| invalid(at, e))?)
                    }
                    "const" => Source::Const(v.clone()),
                    "coalesce" => {
                        let Value::Array(items) = v else {
                            return Err(invalid(at, "`coalesce` must be a list of sources"));
                        };
                        if items.is_empty() {
                            return Err(invalid(at, "`coalesce` needs at least one source"));
                        }
                        let mut list = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            let (s, _) =
                                compile_source(env, &format!("{at}.coalesce[{i}]"), item, false)?;
                            list.push(s);
                        }
                        Source::Coalesce(list)
                    }
                    "then" if allow_then => {
                        let Value::Array(items) = v else {
                            return Err(invalid(at, "`then` must be a list of enrichment steps"));
                        };
                        for (i, item) in items.iter().enumerate() {
                            steps.push(
                                enrich::Step::parse(item)
                                    .map_err(|e| invalid(format!("{at}.then[{i}]"), e))?,
                            );
                        }
                        continue;
                    }
                    other => {
                        return Err(invalid(
                            at,
                            format!(
                                "unknown key `{other}` (expected one of from, expr, const, coalesce{})",
                                if allow_then { ", then" } else { "" }
                            ),
                        ));
                    }
                };
                if source.replace(s).is_some() {
                    return Err(invalid(
                        at,
                        "give exactly one of from, expr, const, coalesce",
                    ));
                }
            }
            let source = source
                .ok_or_else(|| invalid(at, "give exactly one of from, expr, const, coalesce"))?;
            Ok((source, steps))
        }
        other => Err(invalid(
            at,
            format!(
                "a mapping is a JSON pointer string or a map with from/expr/const/coalesce, got {other}"
            ),
        )),
    }
}

fn compile_filters(
    env: &cel::Env,
    at: &str,
    specs: &[FilterSpec],
    names: &mut HashSet<String>,
) -> Result<Vec<Filter>, RulesError> {
    let mut out = Vec::with_capacity(specs.len());
    for (i, f) in specs.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let name = parse_ident(&here, &f.name)?.to_string();
        if !names.insert(name.clone()) {
            return Err(invalid(
                here,
                format!("filter name `{name}` is used twice (names must be unique in the file)"),
            ));
        }
        let expr = expr::Expr::compile(env, &f.drop_if)
            .map_err(|e| invalid(format!("{here} ({name})"), e))?;
        out.push(Filter { name, expr });
    }
    Ok(out)
}

fn standard_columns() -> impl Iterator<Item = Column> {
    STANDARD_COLUMNS.iter().filter_map(|(name, ty, nullable)| {
        Some(Column {
            name: Ident::parse(name).ok()?,
            ty: *ty,
            nullable: *nullable,
            standard: true,
        })
    })
}

impl RuleSet {
    /// Parse + validate + compile a rules file (YAML). Every problem is a [`RulesError`] that
    /// names the place (event type, column, rule).
    pub fn from_yaml(text: &str) -> Result<RuleSet, RulesError> {
        let spec: FileSpec =
            serde_yaml_ng::from_str(text).map_err(|e| RulesError::Yaml(e.to_string()))?;
        if spec.version != 1 {
            return Err(invalid(
                "version",
                format!(
                    "unsupported rules format version {} (this build reads 1)",
                    spec.version
                ),
            ));
        }
        let cel = expr::environment().map_err(|e| invalid("cel", e))?;
        let version = hex::encode(Sha256::digest(text.as_bytes()));

        // Tables.
        let mut tables = Vec::with_capacity(spec.tables.len() + 1);
        if spec.tables.is_empty() {
            return Err(invalid("tables", "at least one table is required"));
        }
        for (tname, t) in &spec.tables {
            let at = format!("tables.{tname}");
            let name = parse_ident(&at, tname)?;
            let mut columns: Vec<Column> =
                Vec::with_capacity(t.columns.len() + STANDARD_COLUMNS.len());
            for (i, c) in t.columns.iter().enumerate() {
                let cat = format!("{at}.columns[{i}]");
                let cname = parse_ident(&cat, &c.name)?;
                let cat = format!("{at}.columns.{cname}");
                if STANDARD_COLUMNS
                    .iter()
                    .any(|(s, _, _)| *s == cname.as_str())
                {
                    return Err(invalid(
                        cat,
                        "is a reserved lineage column name (every table gets it automatically)",
                    ));
                }
                if columns.iter().any(|x| x.name == cname) {
                    return Err(invalid(cat, "duplicate column"));
                }
                let ty = ColumnType::parse(&c.ty).map_err(|e| invalid(&cat, e))?;
                columns.push(Column {
                    name: cname,
                    ty,
                    nullable: c.nullable,
                    standard: false,
                });
            }
            columns.extend(standard_columns());
            if columns.len() > MAX_COLUMNS {
                return Err(invalid(at, format!("more than {MAX_COLUMNS} columns")));
            }
            let mut table = Table {
                name,
                columns,
                dist_key: None,
                sort_key: Vec::new(),
                catch_all: false,
            };
            if let Some(dk) = &t.dist_key {
                let id = parse_ident(&format!("{at}.dist_key"), dk)?;
                if table.column_index(id.as_str()).is_none() {
                    return Err(invalid(
                        format!("{at}.dist_key"),
                        format!("`{id}` is not a column of the table"),
                    ));
                }
                table.dist_key = Some(id);
            }
            for sk in &t.sort_key {
                let id = parse_ident(&format!("{at}.sort_key"), sk)?;
                if table.column_index(id.as_str()).is_none() {
                    return Err(invalid(
                        format!("{at}.sort_key"),
                        format!("`{id}` is not a column of the table"),
                    ));
                }
                if table.sort_key.contains(&id) {
                    return Err(invalid(
                        format!("{at}.sort_key"),
                        format!("`{id}` listed twice"),
                    ));
                }
                table.sort_key.push(id);
            }
            tables.push(table);
        }

        // Catch-all table.
        let catch_all = match (spec.unknown_types, &spec.catch_all_table) {
            (UnknownTypes::Reject, Some(_)) => {
                return Err(invalid(
                    "catch_all_table",
                    "is set but unknown_types is `reject`; set unknown_types: catch_all or remove it",
                ));
            }
            (UnknownTypes::Reject, None) => None,
            (UnknownTypes::CatchAll, name) => {
                let name = parse_ident(
                    "catch_all_table",
                    name.as_deref().unwrap_or(DEFAULT_CATCH_ALL_TABLE),
                )?;
                if tables.iter().any(|t| t.name == name) {
                    return Err(invalid(
                        "catch_all_table",
                        format!("`{name}` is also declared under tables"),
                    ));
                }
                let mut columns = vec![Column {
                    name: parse_ident("catch_all_table", "payload")?,
                    ty: ColumnType::Super,
                    nullable: false,
                    standard: false,
                }];
                columns.extend(standard_columns());
                let sort_key = vec![parse_ident("catch_all_table", "received_at")?];
                tables.push(Table {
                    name,
                    columns,
                    dist_key: None,
                    sort_key,
                    catch_all: true,
                });
                Some(tables.len() - 1)
            }
        };

        // Filters.
        let mut filter_names = HashSet::new();
        let global_filters = compile_filters(&cel, "filters", &spec.filters, &mut filter_names)?;
        let mut global_uses = [false; 3];
        for f in &global_filters {
            for (a, u) in global_uses.iter_mut().zip(f.expr.uses) {
                *a |= u;
            }
        }

        // Event types.
        if spec.events.is_empty() {
            return Err(invalid("events", "at least one event type is required"));
        }
        let mut events = HashMap::with_capacity(spec.events.len());
        for (etype, e) in &spec.events {
            let at = format!("events.{etype}");
            check_event_type_name(&at, etype)?;
            let table = tables
                .iter()
                .position(|t| !t.catch_all && t.name.as_str() == e.table)
                .ok_or_else(|| {
                    invalid(
                        format!("{at}.table"),
                        format!("`{}` is not declared under tables", e.table),
                    )
                })?;
            let schema = match &e.schema {
                None => None,
                Some(s) => Some(
                    jsonschema::options()
                        .should_validate_formats(true)
                        .build(s)
                        .map_err(|err| {
                            invalid(
                                format!("{at}.schema"),
                                format!("invalid JSON Schema: {err}"),
                            )
                        })?,
                ),
            };
            let filters = compile_filters(
                &cel,
                &format!("{at}.filters"),
                &e.filters,
                &mut filter_names,
            )?;
            let tdef = &tables[table];
            let mut mappings = Vec::with_capacity(e.columns.len());
            for (col, mspec) in &e.columns {
                let cat = format!("{at}.columns.{col}");
                let idx = tdef
                    .column_index(col)
                    .filter(|i| !tdef.columns[*i].standard)
                    .ok_or_else(|| {
                        invalid(
                            &cat,
                            format!("table `{}` has no mappable column `{col}`", tdef.name),
                        )
                    })?;
                let (source, steps) = compile_source(&cel, &cat, mspec, true)?;
                mappings.push(Mapping {
                    column: idx,
                    source,
                    steps,
                });
            }
            for c in tdef.columns.iter().filter(|c| !c.standard && !c.nullable) {
                if !e.columns.contains_key(c.name.as_str()) {
                    return Err(invalid(
                        format!("{at}.columns"),
                        format!(
                            "NOT NULL column `{}` of table `{}` has no mapping",
                            c.name, tdef.name
                        ),
                    ));
                }
            }
            let mut uses = global_uses;
            for f in &filters {
                for (a, u) in uses.iter_mut().zip(f.expr.uses) {
                    *a |= u;
                }
            }
            for m in &mappings {
                m.source.uses(&mut uses);
            }
            events.insert(
                etype.clone(),
                EventRule {
                    table,
                    schema,
                    filters,
                    mappings,
                    uses,
                },
            );
        }

        Ok(RuleSet {
            version,
            tables,
            events,
            global_filters,
            global_uses,
            catch_all,
            salt: spec.pii_salt.unwrap_or_default(),
            cel,
        })
    }

    /// Rule version: hex SHA-256 of the rules file bytes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Target tables, lineage columns and the catch-all table (when configured) included.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// Event types the file knows, sorted.
    pub fn event_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.events.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The table an event type is routed to.
    pub fn event_table(&self, event_type: &str) -> Option<&Table> {
        self.events
            .get(event_type)
            .and_then(|e| self.tables.get(e.table))
    }

    /// Names of all filters (global first, then per type), i.e. the possible `Filtered` rules.
    pub fn filter_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .global_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        let mut per_type: Vec<&str> = self
            .events
            .values()
            .flat_map(|e| e.filters.iter().map(|f| f.name.as_str()))
            .collect();
        per_type.sort_unstable();
        v.extend(per_type);
        v
    }

    /// True when unknown event types go to a catch-all table instead of being rejected.
    pub fn has_catch_all(&self) -> bool {
        self.catch_all.is_some()
    }

    /// Apply the rules to one raw-archive line (docs/CONTRACTS.md §2, without its newline).
    pub fn apply_line(&self, line: &[u8], lineage: &Lineage<'_>) -> Outcome {
        let parse_reject = |what: &str, e: &dyn std::fmt::Display| {
            Outcome::Rejected(Reject::new("parse", None, None, format!("{what}: {e}")))
        };
        let raw = match RawLine::parse(line) {
            Ok(r) => r,
            Err(e) => return parse_reject("not a raw-archive line", &e),
        };
        let env = match Envelope::parse(raw.envelope.get().as_bytes()) {
            Ok(e) => e,
            Err(e) => return parse_reject("bad envelope", &e),
        };
        let identify = |mut r: Reject| {
            r.event_id = Some(env.id.to_string());
            r.event_type = Some(env.event_type.to_string());
            r.principal = env.principal.as_deref().map(str::to_owned);
            Outcome::Rejected(r)
        };
        let bytes = env.event_bytes();
        let event: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return identify(Reject::new(
                    "parse",
                    None,
                    None,
                    format!("event is not JSON: {e}"),
                ));
            }
        };
        let rule = self.events.get(env.event_type.as_ref());
        let lc = LineCtx {
            event,
            event_bytes: &bytes,
            env: &env,
            kin: &raw.kinesis,
            env_json: OnceCell::new(),
            kin_json: OnceCell::new(),
            uses: rule.map_or(self.global_uses, |r| r.uses),
        };
        // Declared after `lc`, which it borrows (dropped first).
        let sc: Scope<'_> = OnceCell::new();

        for f in &self.global_filters {
            match self.run_filter(f, &lc, &sc) {
                Ok(true) => {
                    return Outcome::Filtered {
                        rule: f.name.clone(),
                    };
                }
                Ok(false) => {}
                Err(r) => return identify(r),
            }
        }

        let Some(rule) = rule else {
            return match self.catch_all {
                None => identify(Reject::new(
                    "unknown_type",
                    None,
                    None,
                    format!("event type {:?} is not in the rules file", env.event_type),
                )),
                Some(t) => match self.catch_all_row(t, &lc, &bytes, lineage) {
                    Ok(row) => Outcome::Rows(vec![row]),
                    Err(r) => identify(r),
                },
            };
        };

        if let Err(r) = self.validate(env.event_type.as_ref(), rule, &lc.event) {
            return identify(r);
        }
        for f in &rule.filters {
            match self.run_filter(f, &lc, &sc) {
                Ok(true) => {
                    return Outcome::Filtered {
                        rule: f.name.clone(),
                    };
                }
                Ok(false) => {}
                Err(r) => return identify(r),
            }
        }
        match self.map_row(env.event_type.as_ref(), rule, &lc, &sc, lineage) {
            Ok(row) => Outcome::Rows(vec![row]),
            Err(r) => identify(r),
        }
    }

    /// Apply only the JSON Schema and known-type checks to one parsed client event (ingest-time
    /// validation). With a catch-all table, unknown types pass.
    pub fn check_event(&self, event_type: &str, event: &Value) -> Result<(), Reject> {
        match self.events.get(event_type) {
            None if self.catch_all.is_some() => Ok(()),
            None => Err(Reject::new(
                "unknown_type",
                None,
                None,
                format!("event type {event_type:?} is not in the rules file"),
            )),
            Some(rule) => self.validate(event_type, rule, event),
        }
    }

    fn validate(&self, event_type: &str, rule: &EventRule, event: &Value) -> Result<(), Reject> {
        let Some(schema) = &rule.schema else {
            return Ok(());
        };
        match schema.validate(event) {
            Ok(()) => Ok(()),
            Err(e) => Err(Reject::new(
                "schema",
                Some(event_type.to_owned()),
                Some(e.instance_path().as_str().to_owned()),
                e.to_string(),
            )),
        }
    }

    fn run_filter<'s>(
        &self,
        f: &Filter,
        lc: &'s LineCtx<'_>,
        sc: &Scope<'s>,
    ) -> Result<bool, Reject> {
        let fail = |msg: String| Reject::new("filter", Some(f.name.clone()), None, msg);
        let scope = self.scope(lc, sc);
        match f.expr.eval(scope).map_err(fail)? {
            Value::Bool(b) => Ok(b),
            other => Err(fail(format!(
                "filter `{}` returned {other}, not a boolean",
                f.name
            ))),
        }
    }

    /// The CEL scope of a line, built on first use (most lines of a type without expressions
    /// never pay for it).
    fn scope<'s, 'c>(&self, lc: &'s LineCtx<'_>, cell: &'c Scope<'s>) -> &'c cel::Context<'s, 's> {
        cell.get_or_init(|| {
            let ev = || &lc.event;
            let en = || lc.envelope_json();
            let ki = || lc.kinesis_json();
            expr::scope(&self.cel, lc.uses, [&ev, &en, &ki])
        })
    }

    fn eval_source<'v>(
        &self,
        s: &Source,
        lc: &'v LineCtx<'_>,
        sc: &Scope<'v>,
    ) -> Result<Cow<'v, Value>, String> {
        match s {
            Source::Const(v) => Ok(Cow::Owned(v.clone())),
            Source::Pointer(p) => {
                let root = match p.root {
                    Root::Event => &lc.event,
                    Root::Envelope => lc.envelope_json(),
                    Root::Kinesis => lc.kinesis_json(),
                };
                Ok(root
                    .pointer(&p.rest)
                    .map_or(Cow::Owned(Value::Null), Cow::Borrowed))
            }
            Source::Expr(e) => Ok(Cow::Owned(e.eval(self.scope(lc, sc))?)),
            Source::Coalesce(list) => {
                for s in list {
                    let v = self.eval_source(s, lc, sc)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Ok(Cow::Owned(Value::Null))
            }
        }
    }

    fn standard_cells(
        &self,
        lc: &LineCtx<'_>,
        lineage: &Lineage<'_>,
        event_type: &str,
    ) -> Result<[Cell; 8], Reject> {
        let mapping_err = |col: &str, msg: String| {
            Reject::new("mapping", Some(format!("{event_type}.{col}")), None, msg)
        };
        let id = lc.env.id.as_ref();
        if !crate::event::is_valid_id(id) {
            return Err(mapping_err(
                EVENT_ID_COLUMN,
                format!(
                    "event id is {} bytes, a control character or the NULL marker; ingest \
                     accepts 1-{} bytes without control characters",
                    id.len(),
                    crate::event::MAX_EVENT_ID_BYTES
                ),
            ));
        }
        if lc.env.event_type.len() > 128
            || lc.env.event_type.contains('\0')
            || lc.env.event_type == NULL_MARKER
        {
            return Err(mapping_err(
                "event_type",
                "event type longer than 128 bytes or contains NUL".into(),
            ));
        }
        let received_at = match lc.env.received_at.as_deref() {
            None => Cell::Null,
            Some(s) => Cell::Timestamp(
                types::parse_timestamp(s).map_err(|e| mapping_err("received_at", e))?,
            ),
        };
        let principal = match lc.env.principal.as_deref() {
            None => Cell::Null,
            Some(p) if crate::envelope::is_valid_principal(p) => Cell::Text(p.to_owned()),
            Some(p) => {
                return Err(mapping_err(
                    PRINCIPAL_COLUMN,
                    format!(
                        "principal is {} bytes or has control characters; at most {} bytes fit \
                         (ingest refuses such requests)",
                        p.len(),
                        crate::envelope::MAX_PRINCIPAL_BYTES
                    ),
                ));
            }
        };
        if lineage.raw_key.len() > 1024 {
            return Err(mapping_err(
                RAW_KEY_COLUMN,
                "raw object key longer than 1024 bytes".into(),
            ));
        }
        Ok([
            Cell::Text(id.to_owned()),
            Cell::Text(lc.env.event_type.to_string()),
            received_at,
            Cell::Text(lineage.raw_key.to_owned()),
            Cell::Int(i64::try_from(lineage.line).unwrap_or(i64::MAX)),
            Cell::Text(self.version.clone()),
            Cell::Timestamp(lineage.loaded_at),
            principal,
        ])
    }

    /// The source text of the number a mapping's source took verbatim from the event (a pointer
    /// into `/event`, or the coalesce member that gave the value), if it did.
    fn number_text<'v>(&self, s: &Source, lc: &'v LineCtx<'_>, sc: &Scope<'v>) -> Option<&'v str> {
        match s {
            Source::Pointer(p) if p.root == Root::Event => {
                source_text::number_at(lc.event_bytes, &p.rest)
            }
            Source::Coalesce(list) => {
                let first = list
                    .iter()
                    .find(|s| self.eval_source(s, lc, sc).is_ok_and(|v| !v.is_null()))?;
                self.number_text(first, lc, sc)
            }
            _ => None,
        }
    }

    fn map_row<'s>(
        &self,
        event_type: &str,
        rule: &EventRule,
        lc: &'s LineCtx<'_>,
        sc: &Scope<'s>,
        lineage: &Lineage<'_>,
    ) -> Result<Row, Reject> {
        let table = &self.tables[rule.table];
        let mut values = vec![Cell::Null; table.columns.len()];
        for m in &rule.mappings {
            let col = &table.columns[m.column];
            let fail = |msg: String| {
                Reject::new(
                    "mapping",
                    Some(format!("{event_type}.{}", col.name)),
                    m.source.path(),
                    format!("column `{}` ({}): {msg}", col.name, col.ty),
                )
            };
            let mut v = self.eval_source(&m.source, lc, sc).map_err(fail)?;
            for step in &m.steps {
                v = step.apply(v, &self.salt).map_err(fail)?;
            }
            let text = match (col.ty, &*v) {
                // The client's digits, never through f64 (`steps` may have computed the value).
                (ColumnType::Decimal { .. }, Value::Number(n))
                    if n.is_f64() && m.steps.is_empty() =>
                {
                    self.number_text(&m.source, lc, sc)
                }
                _ => None,
            };
            let cell = match text {
                Some(t) => types::convert_number_text(t, col.ty),
                None => types::convert(&v, col.ty),
            }
            .map_err(fail)?;
            if cell == Cell::Null && !col.nullable {
                return Err(fail("is NOT NULL but the value is missing/null".into()));
            }
            values[m.column] = cell;
        }
        // COPY applies no NULL marker to SUPER columns: a missing SUPER value loads as JSON null.
        for (v, c) in values.iter_mut().zip(&table.columns) {
            if c.ty == ColumnType::Super && *v == Cell::Null {
                *v = Cell::Super("null".to_owned());
            }
        }
        let std = self.standard_cells(lc, lineage, event_type)?;
        let first_std = table.columns.len() - STANDARD_COLUMNS.len();
        for (slot, cell) in values[first_std..].iter_mut().zip(std) {
            *slot = cell;
        }
        Ok(Row {
            table: rule.table,
            values,
        })
    }

    fn catch_all_row(
        &self,
        t: usize,
        lc: &LineCtx<'_>,
        bytes: &[u8],
        lineage: &Lineage<'_>,
    ) -> Result<Row, Reject> {
        let event_type = lc.env.event_type.as_ref();
        let payload = types::convert(&lc.event, ColumnType::Super).map_err(|e| {
            Reject::new(
                "mapping",
                Some(format!("{event_type}.payload")),
                None,
                format!("column `payload` (SUPER): {e}"),
            )
        })?;
        // Keep the client's exact bytes when they are one line (they always are valid JSON).
        let payload = match (payload, std::str::from_utf8(bytes)) {
            (Cell::Super(_), Ok(s)) if !s.contains(['\n', '\r']) => Cell::Super(s.to_owned()),
            (p, _) => p,
        };
        let mut values = Vec::with_capacity(1 + STANDARD_COLUMNS.len());
        values.push(payload);
        values.extend(self.standard_cells(lc, lineage, event_type)?);
        Ok(Row { table: t, values })
    }

    /// A row as JSON, `{"table": name, "values": {column: value, …}}` (for `rules test`).
    pub fn row_json(&self, row: &Row) -> Value {
        let Some(table) = self.tables.get(row.table) else {
            return Value::Null;
        };
        let values: Map<String, Value> = table
            .columns
            .iter()
            .zip(&row.values)
            .map(|(c, v)| (c.name.to_string(), v.to_json()))
            .collect();
        serde_json::json!({"table": table.name.as_str(), "values": values})
    }

    /// The `caudal_rejects` row for a refused line, in the column order of
    /// `warehouse/rejects.sql` (see [`REJECT_COLUMNS`]). The raw line is kept as text up to
    /// 65535 bytes; `raw_truncated` says when it was cut.
    pub fn reject_cells(&self, reject: &Reject, line: &[u8], lineage: &Lineage<'_>) -> Vec<Cell> {
        let text = |s: Option<&str>, max: usize| match s {
            None => Cell::Null,
            Some(s) => Cell::Text(clip(sanitize(s), max)),
        };
        let raw = String::from_utf8_lossy(line);
        let clean = sanitize(&raw);
        let truncated = clean.len() > 65_535 || clean != *line_str(line);
        vec![
            text(reject.event_id.as_deref(), 256),
            text(reject.event_type.as_deref(), 256),
            Cell::Text(clip(sanitize(lineage.raw_key), 1024)),
            Cell::Int(i64::try_from(lineage.line).unwrap_or(i64::MAX)),
            Cell::Text(clip(sanitize(&reject.code), 32)),
            text(reject.rule.as_deref(), 512),
            text(reject.path.as_deref(), 1024),
            Cell::Text(clip(sanitize(&reject.message), 4096)),
            Cell::Text(self.version.clone()),
            Cell::Timestamp(lineage.loaded_at),
            Cell::Text(clip(clean, 65_535)),
            Cell::Bool(truncated),
            text(
                reject.principal.as_deref(),
                crate::envelope::MAX_PRINCIPAL_BYTES,
            ),
        ]
    }
}

/// Column names of `caudal_rejects`, in order (matches [`RuleSet::reject_cells`] and
/// `warehouse/rejects.sql`).
pub const REJECT_COLUMNS: [&str; 13] = [
    "event_id",
    "event_type",
    "raw_key",
    "raw_line",
    "code",
    "rule",
    "path",
    "message",
    "rule_version",
    "loaded_at",
    "raw_text",
    "raw_truncated",
    "principal",
];

fn line_str(line: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(line)
}

/// Text safe for the warehouse: no NUL, never the NULL marker.
fn sanitize(s: &str) -> String {
    let s = s.replace('\0', "\u{FFFD}");
    if s == NULL_MARKER { format!("{s} ") } else { s }
}

/// The lazily built CEL scope of one line.
type Scope<'s> = OnceCell<cel::Context<'s, 's>>;

/// Per-line evaluation state: the parsed event plus lazily built JSON/CEL views.
struct LineCtx<'a> {
    event: Value,
    /// The event's bytes as the client sent them (numbers for `DECIMAL` columns are read here).
    event_bytes: &'a [u8],
    env: &'a Envelope<'a>,
    kin: &'a KinesisCoords<'a>,
    env_json: OnceCell<Value>,
    kin_json: OnceCell<Value>,
    uses: [bool; 3],
}

impl LineCtx<'_> {
    fn envelope_json(&self) -> &Value {
        self.env_json.get_or_init(|| {
            let e = self.env;
            let opt = |v: &Option<Cow<'_, str>>| {
                v.as_deref()
                    .map_or(Value::Null, |s| Value::String(s.to_owned()))
            };
            serde_json::json!({
                "v": e.v,
                "id": e.id.as_ref(),
                "id_generated": e.id_generated,
                "type": e.event_type.as_ref(),
                "received_at": opt(&e.received_at),
                "request_id": opt(&e.request_id),
                "source_ip": opt(&e.source_ip),
                "user_agent": opt(&e.user_agent),
                "principal": opt(&e.principal),
                "stage": opt(&e.stage),
            })
        })
    }

    fn kinesis_json(&self) -> &Value {
        self.kin_json
            .get_or_init(|| serde_json::to_value(self.kin).unwrap_or(Value::Null))
    }
}

/// Wrap a plain client event (one JSON object with a string `type`) into a synthetic raw-archive
/// line, as the pipeline would have written it — for `rules test` and benchmarks. `n` makes the
/// generated id unique when the event has no string `id`.
pub fn wrap_client_event(
    event: &[u8],
    n: u64,
    received_at: OffsetDateTime,
) -> Result<Vec<u8>, String> {
    let v: Value = serde_json::from_slice(event).map_err(|e| format!("not JSON: {e}"))?;
    let event_type = v
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("a plain client event needs a non-empty string field `type`")?;
    let generated = format!("sample-{n:08}");
    let (id, id_generated) = match v.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => (id, false),
        _ => (generated.as_str(), true),
    };
    let env = crate::envelope::encode(
        &crate::envelope::EventRef {
            id,
            id_generated,
            event_type,
            raw: event,
        },
        &crate::envelope::RequestMeta {
            request_id: "rules-test".into(),
            received_at: Some(crate::envelope::format_timestamp(received_at)),
            source_ip: Some("192.0.2.10".into()),
            user_agent: Some("caudal-rules-test/1.0".into()),
            principal: None,
            stage: Some("local".into()),
        },
    );
    let coords = KinesisCoords {
        shard_id: "shardId-000000000000".into(),
        sequence_number: format!("{n:056}").into(),
        arrival: crate::envelope::format_timestamp(received_at).into(),
        partition_key: id.to_owned().into(),
    };
    let mut out = Vec::with_capacity(env.len() + 200);
    crate::raw::write_line(&mut out, &coords, &env).map_err(|e| e.to_string())?;
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    Ok(out)
}

/// True when `line` looks like a raw-archive line (an object with `kinesis` and `envelope`)
/// rather than a plain client event.
pub fn is_raw_line(line: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        kinesis: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        envelope: Option<&'a serde_json::value::RawValue>,
    }
    serde_json::from_slice::<Probe<'_>>(line)
        .is_ok_and(|p| p.kinesis.is_some() && p.envelope.is_some())
}

#[cfg(test)]
mod tests;
