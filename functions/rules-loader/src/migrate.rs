//! Additive migrations, run before the first load of a cold start (`MIGRATE_ON_START`, on by
//! default so a fresh deployment loads without a manual step).
//!
//! Why lazily on the first invocation rather than in `main`: Lambda's init phase is limited to
//! 10 s and a paused Redshift Serverless workgroup can take longer than that to answer; an
//! invocation has the function's full timeout. A failed migration fails that invocation (its
//! messages come back) and is tried again by the next one.
//!
//! Steps: read the schema's columns from `information_schema.columns` (Redshift and PostgreSQL
//! both have it), let the rules compute `CREATE TABLE IF NOT EXISTS` / `ADD COLUMN` statements
//! ([`caudal_core::rules::RuleSet::ddl_migrate`] — a non-additive difference is an error naming the
//! table and column), create the schema when it has no table yet, add the ledger and rejects
//! tables when missing and the views when a table changed or a view is missing, and run everything in Data API batches (≤ 40 statements each).
//! Every statement is idempotent, so concurrent cold starts are harmless.

use std::collections::BTreeMap;

use caudal_aws::redshift;
use caudal_core::rules::{ExistingColumn, MigrationPlan, RulesError};
use caudal_core::warehouse::{QueryError, Value};
use tokio::time::Instant;

use crate::error::LoadError;
use crate::sql::{self, MAX_BATCH_STATEMENTS};
use crate::{Config, State};

/// Columns of the ledger and rejects tables added after their first release: (table, column,
/// type). Older tables get them on migration; keep in step with `warehouse/*.sql`.
const ADDED_INTERNAL_COLUMNS: &[(&str, &str, &str)] = &[
    // The load that wrote the ledger row (sql::MAX_LOAD_ID_BYTES).
    (sql::LEDGER_TABLE, "load_id", "VARCHAR(128)"),
    // The principal of a rejected event (envelope::MAX_PRINCIPAL_BYTES).
    (sql::REJECTS_TABLE, "principal", "VARCHAR(2048)"),
];

/// The name a `CREATE … TABLE` / `CREATE … VIEW` statement creates (bare, lower case).
fn created_name(statement: &str) -> Option<String> {
    let upper = statement.to_ascii_uppercase();
    let start = ["VIEW ", "EXISTS "]
        .iter()
        .filter_map(|kw| upper.find(kw).map(|i| i + kw.len()))
        .min()?;
    let rest = statement.get(start..)?.trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '(')
        .unwrap_or(rest.len());
    let qualified = &rest[..end];
    let name = qualified.rsplit('.').next()?;
    Some(name.trim_matches('"').to_ascii_lowercase())
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// The statements that bring the warehouse in line with the rules (empty when it already is),
/// and the tables held back by a conflict only a person can resolve.
pub fn plan(cfg: &Config, existing: &BTreeMap<String, Vec<ExistingColumn>>) -> MigrationPlan {
    let rules = cfg.rules.as_ref();
    let mut statements = Vec::new();
    if existing.is_empty() {
        // Nothing in the schema: it may not exist yet (it always does for `public`).
        statements.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            cfg.schema.quoted()
        ));
    }
    let migration = rules.ddl_migrate(&cfg.schema, existing);
    statements.extend(migration.statements);
    let tables_changed = statements.len() > usize::from(existing.is_empty());
    let all = rules.ddl_create(&cfg.schema);
    let views = rules.ddl_views(&cfg.schema);
    // ddl_create = rules' tables, then the ledger and rejects tables, then the views.
    for s in all.iter().skip(rules.tables().len()) {
        if views.contains(s) {
            continue;
        }
        if created_name(s).is_some_and(|n| !existing.contains_key(&n)) {
            statements.push(s.clone());
        }
    }
    // Internal tables from before a column existed get it (additive, nullable).
    for (table, column, ty) in ADDED_INTERNAL_COLUMNS {
        if existing
            .get(*table)
            .is_some_and(|cols| !cols.iter().any(|c| c.name.eq_ignore_ascii_case(column)))
        {
            statements.push(format!(
                "ALTER TABLE {}.\"{table}\" ADD COLUMN \"{column}\" {ty}",
                cfg.schema.quoted(),
            ));
        }
    }
    let views_missing = views
        .iter()
        .any(|v| created_name(v).is_none_or(|n| !existing.contains_key(&n)));
    if tables_changed || views_missing {
        statements.extend(views);
    }
    MigrationPlan {
        statements,
        blocked: migration.blocked,
    }
}

/// How long a migration that held tables is trusted before the catalogue is read again (so a
/// DBA's fix takes effect without a redeploy).
pub const BLOCKED_RECHECK: std::time::Duration = std::time::Duration::from_secs(300);

/// The last migration of an execution environment.
#[derive(Debug, Clone)]
pub struct MigrationState {
    /// When it ran.
    pub at: Instant,
    /// The tables it held.
    pub blocked: std::sync::Arc<BTreeMap<String, RulesError>>,
}

/// Migrate once per execution environment — again after [`BLOCKED_RECHECK`] while a table is
/// held — and return the held tables.
pub async fn ensure(
    state: &State,
    deadline: Instant,
) -> Result<std::sync::Arc<BTreeMap<String, RulesError>>, LoadError> {
    let mut last = state.migrated.lock().await;
    if let Some(m) = last.as_ref()
        && (m.blocked.is_empty() || m.at.elapsed() < BLOCKED_RECHECK)
    {
        return Ok(m.blocked.clone());
    }
    let done = migrate(state, deadline).await?;
    let blocked = std::sync::Arc::new(done.blocked);
    *last = Some(MigrationState {
        at: Instant::now(),
        blocked: blocked.clone(),
    });
    Ok(blocked)
}

/// What a migration did, and which tables wait for a person.
#[derive(Debug, Clone, Default)]
pub struct Migrated {
    /// The statements run.
    pub statements: Vec<String>,
    /// Table name → the conflict that holds it (names the column and the fix). Objects with
    /// rows for these tables do not load; every other object does.
    pub blocked: BTreeMap<String, RulesError>,
}

/// Read the catalogue and apply the migration.
pub async fn migrate(state: &State, deadline: Instant) -> Result<Migrated, LoadError> {
    let cfg = &state.config;
    let (sql_text, params) = sql::existing_columns(&cfg.schema);
    let rows = redshift::query(
        &state.redshift,
        &cfg.connection,
        &sql_text,
        &params,
        &state.poll,
        deadline,
    )
    .await?;
    let mut existing: BTreeMap<String, Vec<ExistingColumn>> = BTreeMap::new();
    for r in &rows {
        let (Some(table), Some(name), Some(data_type)) =
            (text(r.first()), text(r.get(1)), text(r.get(2)))
        else {
            continue;
        };
        existing
            .entry(table.to_ascii_lowercase())
            .or_default()
            .push(ExistingColumn {
                name,
                data_type,
                character_maximum_length: r.get(3).and_then(Value::as_i64),
                numeric_precision: r.get(4).and_then(Value::as_i64),
                numeric_scale: r.get(5).and_then(Value::as_i64),
                nullable: text(r.get(6)).is_none_or(|v| !v.eq_ignore_ascii_case("no")),
                has_default: r.get(7).and_then(Value::as_i64).is_some_and(|d| d != 0),
            });
    }
    let MigrationPlan {
        statements,
        blocked,
    } = plan(cfg, &existing);
    for conflict in &blocked {
        tracing::error!(schema = %cfg.schema, error = %conflict, "table held: its objects do not load until this is fixed; the other tables load");
    }
    let blocked = blocked
        .into_iter()
        .filter_map(|e| match &e {
            RulesError::Migration { table, .. } => Some((table.clone(), e)),
            _ => None,
        })
        .collect();
    if statements.is_empty() {
        tracing::info!(schema = %cfg.schema, "warehouse schema up to date");
        return Ok(Migrated {
            statements,
            blocked,
        });
    }
    for batch in statements.chunks(MAX_BATCH_STATEMENTS) {
        let id = redshift::batch_execute(
            &state.redshift,
            &cfg.connection,
            batch,
            None,
            &state.retry,
            deadline,
        )
        .await
        .map_err(|e| LoadError::Query(QueryError::Call(e)))?;
        redshift::wait(&state.redshift, &id, &state.poll, deadline, |_| {})
            .await
            .map_err(|e| LoadError::Query(QueryError::Wait(e)))?;
    }
    tracing::info!(schema = %cfg.schema, statements = statements.len(), "warehouse schema migrated");
    Ok(Migrated {
        statements,
        blocked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use caudal_core::config::Env;

    fn config() -> Config {
        let env = Env::from_map(
            [
                ("STAGING_BUCKET", "caudal-staging"),
                ("REDSHIFT_WORKGROUP", "wg"),
                ("REDSHIFT_DATABASE", "dev"),
                ("REDSHIFT_SCHEMA", "analytics"),
                ("COPY_ROLE_ARN", "arn:aws:iam::123456789012:role/c"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        Config::from_env(&env).unwrap()
    }

    fn col(name: &str, data_type: &str, len: Option<i64>) -> ExistingColumn {
        ExistingColumn {
            name: name.into(),
            data_type: data_type.into(),
            character_maximum_length: len,
            numeric_precision: None,
            numeric_scale: None,
            nullable: true,
            has_default: false,
        }
    }

    /// The catalogue as it looks after `plan` on an empty schema was applied.
    fn full(cfg: &Config) -> BTreeMap<String, Vec<ExistingColumn>> {
        let mut m = BTreeMap::new();
        for t in cfg.rules.tables() {
            let cols = t
                .columns
                .iter()
                .map(|c| {
                    let ty = c.ty.to_string().to_ascii_lowercase();
                    let (dt, len) = match ty.split_once('(') {
                        Some(("varchar", n)) => (
                            "character varying".to_owned(),
                            n.trim_end_matches(')').parse().ok(),
                        ),
                        _ => (ty.clone(), None),
                    };
                    let dt = match dt.as_str() {
                        "timestamptz" => "timestamp with time zone".to_owned(),
                        d if d.starts_with("decimal") => "numeric".to_owned(),
                        _ => dt,
                    };
                    col(c.name.as_str(), &dt, len)
                })
                .collect();
            m.insert(t.name.to_string(), cols);
        }
        for other in [
            "caudal_ledger",
            "caudal_rejects",
            "caudal_events_hourly",
            "caudal_rejects_by_reason",
            "caudal_reconciliation",
            "caudal_load_latency",
        ] {
            m.insert(other.to_owned(), vec![col("x", "bigint", None)]);
        }
        m.get_mut("caudal_ledger")
            .unwrap()
            .push(col("load_id", "character varying", Some(128)));
        m.get_mut("caudal_rejects").unwrap().push(col(
            "principal",
            "character varying",
            Some(2048),
        ));
        m
    }

    #[test]
    fn old_rejects_and_tables_get_the_principal_column() {
        let cfg = config();
        let mut existing = full(&cfg);
        for cols in existing.values_mut() {
            cols.retain(|c| c.name != "principal");
        }
        let st = plan(&cfg, &existing).statements;
        assert!(
            st.contains(
                &"ALTER TABLE \"analytics\".\"caudal_rejects\" ADD COLUMN \"principal\" \
                  VARCHAR(2048)"
                    .to_owned()
            ),
            "{st:?}"
        );
        for t in cfg.rules.tables() {
            let add = format!(
                "ALTER TABLE \"analytics\".{} ADD COLUMN \"principal\" VARCHAR(2048)",
                t.name.quoted()
            );
            assert!(st.contains(&add), "{add} not in {st:?}");
        }
    }

    #[test]
    fn an_old_ledger_gets_the_load_id_column() {
        let cfg = config();
        let mut existing = full(&cfg);
        existing
            .get_mut("caudal_ledger")
            .unwrap()
            .retain(|c| c.name != "load_id");
        assert_eq!(
            plan(&cfg, &existing).statements,
            ["ALTER TABLE \"analytics\".\"caudal_ledger\" ADD COLUMN \"load_id\" VARCHAR(128)"]
        );
    }

    #[test]
    fn empty_schema_gets_everything_in_order() {
        let cfg = config();
        let st = plan(&cfg, &BTreeMap::new()).statements;
        assert_eq!(st[0], "CREATE SCHEMA IF NOT EXISTS \"analytics\"");
        let n = cfg.rules.tables().len();
        for (i, t) in cfg.rules.tables().iter().enumerate() {
            assert!(
                st[1 + i].starts_with(&format!(
                    "CREATE TABLE IF NOT EXISTS \"analytics\".\"{}\"",
                    t.name
                )),
                "{}",
                st[1 + i]
            );
        }
        assert!(st[1 + n].contains("caudal_ledger"));
        assert!(st[2 + n].contains("caudal_rejects"));
        assert_eq!(st.len(), 1 + n + 2 + 4);
    }

    #[test]
    fn up_to_date_schema_needs_nothing_and_a_new_column_is_added() {
        let cfg = config();
        let mut existing = full(&cfg);
        let planned = plan(&cfg, &existing);
        assert_eq!(planned, MigrationPlan::default());
        let table = cfg.rules.tables()[0].name.to_string();
        let cols = existing.get_mut(&table).unwrap();
        let dropped = cols.remove(0);
        let st = plan(&cfg, &existing).statements;
        assert_eq!(
            st[0],
            format!(
                "ALTER TABLE \"analytics\".\"{table}\" ADD COLUMN \"{}\" {}",
                dropped.name,
                cfg.rules.tables()[0].columns[0].ty
            )
        );
        // A changed table re-creates the views so they cover it.
        assert!(st.iter().any(|s| s.contains("VIEW")));
    }

    #[test]
    fn a_type_change_is_refused_naming_the_column() {
        let cfg = config();
        let mut existing = full(&cfg);
        let table = cfg.rules.tables()[0].name.to_string();
        let cols = existing.get_mut(&table).unwrap();
        let name = cols[0].name.clone();
        cols[0] = col(&name, "boolean", None);
        // A DBA's extra nullable column elsewhere is no conflict.
        let other = cfg.rules.tables()[1].name.to_string();
        existing
            .get_mut(&other)
            .unwrap()
            .push(col("dba_note", "character varying", Some(10)));
        let planned = plan(&cfg, &existing);
        assert_eq!(planned.blocked.len(), 1, "{planned:?}");
        let err = LoadError::from(planned.blocked[0].clone());
        let text = err.to_string();
        assert!(text.contains(&table) && text.contains(&name), "{text}");
        assert!(text.contains("to fix:"), "{text}");
        assert!(!caudal_core::retry::Retryable::is_retryable(&err));
        // Only that table is held: another table's missing column is still added.
        existing.get_mut(&other).unwrap().remove(0);
        let planned = plan(&cfg, &existing);
        assert!(
            planned.statements.iter().any(
                |s| s.starts_with(&format!("ALTER TABLE \"analytics\".\"{other}\" ADD COLUMN"))
            ),
            "{planned:?}"
        );
    }

    #[test]
    fn created_names() {
        assert_eq!(
            created_name(
                "CREATE TABLE IF NOT EXISTS \"public\".caudal_ledger (\n raw_key VARCHAR)"
            )
            .as_deref(),
            Some("caudal_ledger")
        );
        assert_eq!(
            created_name("CREATE OR REPLACE VIEW \"s\".caudal_events_hourly AS\nSELECT 1")
                .as_deref(),
            Some("caudal_events_hourly")
        );
        assert_eq!(
            created_name("CREATE TABLE IF NOT EXISTS \"s\".\"page_views\" (").as_deref(),
            Some("page_views")
        );
        assert_eq!(created_name("SELECT 1"), None);
    }
}
