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
//! The submodules, in the order a line meets them:
//!
//! | module | role |
//! |---|---|
//! | `spec` | the YAML shapes as written (serde, `deny_unknown_fields`) and the version check |
//! | `compile` | spec → compiled form: tables, catch-all, CEL filters, schemas, mappings ([`RuleSet::from_yaml`]) |
//! | `apply` | one raw line → one [`Outcome`] ([`RuleSet::apply_line`]), the rows' JSON view, reject rows |
//! | `expr`, `native` | CEL expressions: the interpreter, and the native evaluator tried first |
//! | `enrich`, `source_text` | enrichment steps, a number's source digits |
//! | `types`, `ident` | column types and the strict value → [`Cell`] conversion; SQL identifiers |
//! | `csv` | CSV for `COPY`, NULL as [`NULL_MARKER`] (defined at the crate root, shared with `event`) |
//! | `ddl` | `CREATE TABLE` / additive migrations and the `warehouse/*.sql` files |
//! | `sample` | synthetic raw lines from plain client events (`rules test`, benchmarks) |
//!
//! Nothing here touches AWS; the module is pure and `Send + Sync`.
#![allow(
    clippy::result_large_err,
    reason = "a Reject is a normal per-line outcome carried by value (its shape is part of the loader contract), not a rare error worth boxing"
)]

mod apply;
mod compile;
mod csv;
mod ddl;
mod enrich;
mod expr;
mod ident;
mod native;
mod sample;
mod source_text;
mod spec;
mod types;

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;

use self::compile::{EventRule, Filter};

pub use self::apply::REJECT_COLUMNS;
pub use self::csv::{COPY_FORMAT_OPTIONS, STAGING_CODEC, write_csv_cells, write_csv_row};
pub use self::ddl::{ExistingColumn, MigrationPlan, SQL_LEDGER, SQL_REJECTS, SQL_VIEWS};
pub use self::ident::{Ident, IdentError};
pub use self::sample::{bench_event, is_raw_line, wrap_client_event};
pub use self::types::{Cell, ColumnType};
pub use crate::null_marker::NULL_MARKER;

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

impl RuleSet {
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

    /// Every CEL expression of the file (filters, then mappings, by event type): its source
    /// text and whether the native evaluator covers it (`false`: every evaluation goes through
    /// the interpreter, several times slower).
    pub fn expressions(&self) -> Vec<(&str, bool)> {
        let mut all: Vec<&expr::Expr> = self.global_filters.iter().map(|f| &f.expr).collect();
        let mut types: Vec<_> = self.events.iter().collect();
        types.sort_unstable_by_key(|(name, _)| name.as_str());
        for (_, rule) in types {
            all.extend(rule.filters.iter().map(|f| &f.expr));
            for m in &rule.mappings {
                m.source.exprs(&mut all);
            }
        }
        all.into_iter()
            .map(|e| (e.source.as_str(), e.is_native()))
            .collect()
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
}

#[cfg(test)]
mod tests;
