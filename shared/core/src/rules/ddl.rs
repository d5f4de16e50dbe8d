//! Warehouse DDL: `CREATE TABLE IF NOT EXISTS` for the rules' tables (Redshift dialect), the
//! shipped `warehouse/*.sql` (ledger, rejects, views), and additive migrations.
//!
//! SQL files use two placeholders: `{schema}` (replaced by the quoted schema name) and
//! `{events_union}` (a `SELECT event_type, received_at, raw_key FROM … UNION ALL …` over every
//! table of the rules, so the views follow the rules file). They are written to run on Redshift
//! and, after the local stack's dialect translation (SUPER→jsonb, DISTKEY/SORTKEY/ENCODE/
//! DISTSTYLE dropped), on PostgreSQL 15.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::ColumnType;
use super::{Ident, RuleSet, RulesError, Table};

/// `warehouse/ledger.sql`: the `caudal_ledger` table.
pub const SQL_LEDGER: &str = include_str!("../../../../warehouse/ledger.sql");
/// `warehouse/rejects.sql`: the `caudal_rejects` table.
pub const SQL_REJECTS: &str = include_str!("../../../../warehouse/rejects.sql");
/// `warehouse/views.sql`: dashboard and reconciliation views.
pub const SQL_VIEWS: &str = include_str!("../../../../warehouse/views.sql");

fn nullable_default() -> bool {
    true
}

fn yes_no<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    Ok(match B::deserialize(d)? {
        B::Bool(b) => b,
        B::Text(t) => !t.eq_ignore_ascii_case("no"),
    })
}

/// `"name"` with embedded quotes doubled: a catalogue name in a suggested fix (never executed).
fn quote_name(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What it takes to bring the warehouse in line with the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationPlan {
    /// Additive DDL (`CREATE TABLE IF NOT EXISTS`, `ADD COLUMN`), in order.
    pub statements: Vec<String>,
    /// Tables that cannot be loaded until a person resolves a conflict, each with its first
    /// conflict (a [`RulesError::Migration`] naming the column and the DDL that fixes it). Every
    /// other table migrates and loads.
    pub blocked: Vec<RulesError>,
}

/// One existing column, as `information_schema.columns` (PostgreSQL) or `SVV_COLUMNS`
/// (Redshift) describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistingColumn {
    /// `column_name`.
    #[serde(alias = "column_name")]
    pub name: String,
    /// `data_type`, e.g. `character varying`, `bigint`, `timestamp with time zone`, `super`.
    pub data_type: String,
    /// `character_maximum_length` for VARCHAR.
    #[serde(default)]
    pub character_maximum_length: Option<i64>,
    /// `numeric_precision` for DECIMAL.
    #[serde(default)]
    pub numeric_precision: Option<i64>,
    /// `numeric_scale` for DECIMAL.
    #[serde(default)]
    pub numeric_scale: Option<i64>,
    /// `is_nullable` (`YES`/`NO` in the catalogue; missing = nullable).
    #[serde(
        alias = "is_nullable",
        default = "nullable_default",
        deserialize_with = "yes_no"
    )]
    pub nullable: bool,
    /// Whether the column has a default (`column_default` is not NULL).
    #[serde(default)]
    pub has_default: bool,
}

impl ColumnType {
    /// Whether a column of this type can be described by `existing` (one row of
    /// `information_schema.columns` / `SVV_COLUMNS`) without a type change. A VARCHAR that is at
    /// least as long is compatible; `jsonb`/`json` stand for SUPER on PostgreSQL.
    pub fn compatible_with(&self, existing: &ExistingColumn) -> bool {
        let dt = existing.data_type.trim().to_ascii_lowercase();
        match (self, dt.as_str()) {
            (ColumnType::SmallInt, "smallint" | "int2") => true,
            (ColumnType::Integer, "integer" | "int" | "int4") => true,
            (ColumnType::BigInt, "bigint" | "int8") => true,
            (ColumnType::Real, "real" | "float4") => true,
            (ColumnType::Double, "double precision" | "float8") => true,
            (ColumnType::Boolean, "boolean" | "bool") => true,
            (ColumnType::Date, "date") => true,
            (ColumnType::TimestampTz, "timestamp with time zone" | "timestamptz") => true,
            (ColumnType::Super, "super" | "jsonb" | "json") => true,
            (ColumnType::Varchar(n), "character varying" | "varchar") => existing
                .character_maximum_length
                .is_none_or(|len| len >= i64::from(*n)),
            (ColumnType::Decimal { precision, scale }, "numeric" | "decimal") => {
                existing
                    .numeric_precision
                    .is_none_or(|p| p == i64::from(*precision))
                    && existing
                        .numeric_scale
                        .is_none_or(|s| s == i64::from(*scale))
            }
            _ => false,
        }
    }
}

/// Split a SQL file into statements on `;`, ignoring `--` comments and `'…'` literals; comment
/// lines are dropped.
pub(crate) fn split_sql(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_str = false;
    for line in text.lines() {
        let mut chars = line.char_indices().peekable();
        let mut keep_until = line.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => in_str = !in_str,
                '-' if !in_str && matches!(chars.peek(), Some((_, '-'))) => {
                    keep_until = i;
                    break;
                }
                _ => {}
            }
        }
        let code = line[..keep_until].trim_end();
        if code.trim().is_empty() {
            continue;
        }
        for piece in split_keep(code, in_str) {
            match piece {
                Piece::Text(t) => {
                    if !cur.is_empty() && !t.is_empty() {
                        cur.push('\n');
                    }
                    cur.push_str(t);
                }
                Piece::End => {
                    let stmt = cur.trim().to_owned();
                    if !stmt.is_empty() {
                        out.push(stmt);
                    }
                    cur.clear();
                }
            }
        }
    }
    let stmt = cur.trim().to_owned();
    if !stmt.is_empty() {
        out.push(stmt);
    }
    out
}

enum Piece<'a> {
    Text(&'a str),
    End,
}

/// Split one comment-free line at statement-ending semicolons outside string literals.
/// `ends_in_str` is the literal state at the end of the line (already computed), so a line
/// without quotes can be split naively.
fn split_keep(line: &str, _ends_in_str: bool) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut in_str = false;
    let mut start = 0;
    for (i, c) in line.char_indices() {
        match c {
            '\'' => in_str = !in_str,
            ';' if !in_str => {
                pieces.push(Piece::Text(line[start..i].trim_end()));
                pieces.push(Piece::End);
                start = i + 1;
            }
            _ => {}
        }
    }
    let tail = line[start..].trim();
    if !tail.is_empty() {
        pieces.push(Piece::Text(&line[start..]));
    }
    pieces
}

impl RuleSet {
    /// `CREATE TABLE IF NOT EXISTS` for one table (Redshift dialect).
    pub fn create_table_sql(&self, schema: &Ident, table: &Table) -> String {
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (\n",
            schema.quoted(),
            table.name.quoted()
        );
        let cols: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                format!(
                    "  {} {}{}",
                    c.name.quoted(),
                    c.ty,
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect();
        sql.push_str(&cols.join(",\n"));
        sql.push_str("\n)");
        if let Some(dk) = &table.dist_key {
            sql.push_str(&format!(" DISTSTYLE KEY DISTKEY ({})", dk.quoted()));
        }
        if !table.sort_key.is_empty() {
            let keys: Vec<String> = table.sort_key.iter().map(Ident::quoted).collect();
            sql.push_str(&format!(" SORTKEY ({})", keys.join(", ")));
        }
        sql
    }

    fn events_union(&self, schema: &Ident) -> String {
        self.tables()
            .iter()
            .map(|t| {
                format!(
                    "SELECT event_type, received_at, raw_key FROM {}.{}",
                    schema.quoted(),
                    t.name.quoted()
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    }

    fn render(&self, sql: &str, schema: &Ident) -> Vec<String> {
        split_sql(sql)
            .into_iter()
            .map(|s| {
                s.replace("{schema}", &schema.quoted())
                    .replace("{events_union}", &self.events_union(schema))
            })
            .collect()
    }

    /// Every statement needed on an empty schema, in order: the rules' tables, the ledger, the
    /// rejects table, then the views. Idempotent (`IF NOT EXISTS` / `CREATE OR REPLACE VIEW`).
    pub fn ddl_create(&self, schema: &Ident) -> Vec<String> {
        let mut out: Vec<String> = self
            .tables()
            .iter()
            .map(|t| self.create_table_sql(schema, t))
            .collect();
        out.extend(self.render(SQL_LEDGER, schema));
        out.extend(self.render(SQL_REJECTS, schema));
        out.extend(self.render(SQL_VIEWS, schema));
        out
    }

    /// The views only (re-run after a table is added so they cover it).
    pub fn ddl_views(&self, schema: &Ident) -> Vec<String> {
        self.render(SQL_VIEWS, schema)
    }

    /// Additive migration against the columns that exist now (`existing`: table name → columns,
    /// from `information_schema.columns` / `SVV_COLUMNS`). Tables missing from `existing` get
    /// their `CREATE TABLE IF NOT EXISTS`; missing columns get `ALTER TABLE … ADD COLUMN` (always
    /// nullable: existing rows have no value). A column the rules do not know is fine when it
    /// is nullable or has a default (a DBA's addition). A changed type, or an unknown NOT NULL
    /// column without a default, blocks that table alone ([`MigrationPlan::blocked`], naming
    /// the column and the fix); the other tables still migrate. Tables the rules do not know
    /// (ledger, rejects, others) are ignored.
    pub fn ddl_migrate(
        &self,
        schema: &Ident,
        existing: &BTreeMap<String, Vec<ExistingColumn>>,
    ) -> MigrationPlan {
        let mut plan = MigrationPlan::default();
        for table in self.tables() {
            let Some(cols) = existing.get(table.name.as_str()) else {
                plan.statements.push(self.create_table_sql(schema, table));
                continue;
            };
            let qualified = format!("{}.{}", schema.quoted(), table.name.quoted());
            let blocked = cols
                .iter()
                .find_map(|have| column_conflict(table, &qualified, have));
            if let Some(c) = blocked {
                plan.blocked.push(c);
                continue;
            }
            for want in &table.columns {
                if !cols
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case(want.name.as_str()))
                {
                    plan.statements.push(format!(
                        "ALTER TABLE {qualified} ADD COLUMN {} {}",
                        want.name.quoted(),
                        want.ty
                    ));
                }
            }
        }
        plan
    }
}

/// The conflict an existing column makes with `table`'s rules, if any: an unknown NOT NULL
/// column without a default, or a type the rules' type is not compatible with.
fn column_conflict(table: &Table, qualified: &str, have: &ExistingColumn) -> Option<RulesError> {
    let conflict = |column: &str, reason: String, fix: String| RulesError::Migration {
        table: table.name.to_string(),
        column: column.to_owned(),
        reason,
        fix,
    };
    let name = have.name.to_ascii_lowercase();
    match table.columns.iter().find(|c| c.name.as_str() == name) {
        // A column the rules do not know (added by a DBA, or dropped from the
        // rules): the loader names its columns, so a nullable one or one with a
        // default simply stays NULL/default. A NOT NULL one would fail every insert.
        None if have.nullable || have.has_default => None,
        None => Some(conflict(
            &name,
            "exists in the warehouse as NOT NULL without a default but not in \
                 the rules file, so every insert would fail"
                .into(),
            format!(
                "add it to tables.{}.columns in the rules file, or run: ALTER \
                     TABLE {qualified} DROP COLUMN {}",
                table.name,
                quote_name(&name)
            ),
        )),
        Some(want) if !want.ty.compatible_with(have) => {
            let len = have
                .character_maximum_length
                .map(|n| format!("({n})"))
                .or_else(|| {
                    have.numeric_precision
                        .map(|p| format!("({p},{})", have.numeric_scale.unwrap_or(0)))
                })
                .unwrap_or_default();
            let widen = matches!(want.ty, ColumnType::Varchar(_))
                && have.data_type.eq_ignore_ascii_case("character varying");
            let fix = if widen {
                format!(
                    "ALTER TABLE {qualified} ALTER COLUMN {} TYPE {}",
                    want.name.quoted(),
                    want.ty
                )
            } else {
                format!(
                    "change the rules' type back to {}{len}, or run: ALTER TABLE \
                     {qualified} RENAME COLUMN {} TO {} (the loader then adds {} \
                     as {})",
                    have.data_type,
                    want.name.quoted(),
                    quote_name(&format!("{name}_old")),
                    want.name,
                    want.ty
                )
            };
            Some(conflict(
                &name,
                format!(
                    "type changed: warehouse has {}{len}, rules want {}; type \
                     changes are not automatic",
                    have.data_type, want.ty
                ),
                fix,
            ))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_drops_comments() {
        let sql = "-- header; with a semicolon\nCREATE TABLE a (x VARCHAR(3)); -- trailing\nCREATE VIEW v AS SELECT ';' AS s\nFROM a;\n\n";
        let st = split_sql(sql);
        assert_eq!(
            st,
            vec![
                "CREATE TABLE a (x VARCHAR(3))",
                "CREATE VIEW v AS SELECT ';' AS s\nFROM a"
            ]
        );
    }

    #[test]
    fn shipped_sql_files_have_the_expected_statements() {
        assert_eq!(split_sql(SQL_LEDGER).len(), 1);
        assert_eq!(split_sql(SQL_REJECTS).len(), 1);
        assert_eq!(split_sql(SQL_VIEWS).len(), 4);
        for s in split_sql(SQL_LEDGER)
            .iter()
            .chain(&split_sql(SQL_REJECTS))
            .chain(&split_sql(SQL_VIEWS))
        {
            assert!(s.contains("{schema}"), "{s}");
            assert!(
                !s.to_ascii_uppercase().contains("GETDATE"),
                "Redshift-only function in {s}"
            );
        }
    }
}
