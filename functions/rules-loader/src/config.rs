//! Configuration, read once at cold start (docs/CONTRACTS.md §5).
//!
//! Every value that ends up in SQL text (staging bucket → COPY URIs, COPY role ARN, schema name)
//! is validated here so a bad deployment fails the cold start with the variable's name instead
//! of producing a statement the warehouse rejects, or worse, one it accepts.

use std::sync::Arc;

use caudal_core::config::{ConfigError as EnvError, Env, LoadedRules, RulesFileError};
use caudal_core::rules::{Ident, RuleSet, RulesError};
use caudal_core::warehouse::{Connection, Target};

use crate::sql::{
    LEADING_STATEMENTS, LEDGER_TABLE, MAX_BATCH_STATEMENTS, REJECTS_TABLE, STATEMENTS_PER_TABLE,
    check_bucket, check_role_arn,
};

/// A configuration problem. Always permanent: fix the deployment or the rules file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable is missing or malformed.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The rules file cannot be read or is invalid.
    #[error(transparent)]
    RulesFile(#[from] RulesFileError),
    /// The rules do not fit the loader ([`check_rules_fit`]).
    #[error("{origin}: {source}")]
    Rules {
        /// `RULES_FILE <path>` or `the bundled rules/rules.yaml`.
        origin: String,
        /// What is wrong.
        source: RulesError,
    },
}

impl ConfigError {
    /// Always false.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// The loader's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bucket for `staging/` and `rejected/`.
    pub staging_bucket: String,
    /// Where statements run.
    pub connection: Connection,
    /// Schema of the tables.
    pub schema: Ident,
    /// Role Redshift assumes for COPY.
    pub copy_role_arn: String,
    /// `REDSHIFT_REGION`: the warehouse's region when it is not this function's (a second
    /// ingest region loading into the one warehouse); the Data API client is built for it.
    /// `None`: the warehouse is in this region.
    pub redshift_region: Option<String>,
    /// `STAGING_REGION`: the staging bucket's region (this function's), required with
    /// `REDSHIFT_REGION`: COPY names it, since Redshift reads a bucket outside its own region
    /// only when told where it is.
    pub staging_region: Option<String>,
    /// The compiled rules.
    pub rules: Arc<RuleSet>,
    /// Create missing tables / add missing columns before the first load of a cold start.
    pub migrate_on_start: bool,
    /// How far back, in `received_at`, a load looks for an event id it already holds
    /// (`DEDUPE_WINDOW_HOURS`; see [`crate::sql`]).
    pub dedupe_window: time::Duration,
    /// `LOADER_QUEUE_URL`: the queue this function consumes, where messages it could not try
    /// are sent again ([`crate::postpone`]); `None` reports them failed instead.
    pub queue_url: Option<String>,
}

/// Default of `DEDUPE_WINDOW_HOURS`: a week covers client retries, offline mobile queues and a
/// redrive after a weekend.
pub const DEFAULT_DEDUPE_WINDOW_HOURS: u64 = 168;
/// Largest `DEDUPE_WINDOW_HOURS` (a year and a day).
pub const MAX_DEDUPE_WINDOW_HOURS: u64 = 8784;

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Env(EnvError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    })
}

impl Config {
    /// Where loads go — warehouse, database, schema — as part of every load id.
    pub fn load_scope(&self) -> String {
        let target = match &self.connection.target {
            Target::Workgroup(w) => format!("workgroup:{w}"),
            Target::Cluster(c) => format!("cluster:{c}"),
        };
        format!(
            "{target}/{}/{}",
            self.connection.database,
            self.schema.as_str()
        )
    }

    /// Read and validate the configuration.
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let staging_bucket = env.required("STAGING_BUCKET")?;
        check_bucket(&staging_bucket)
            .map_err(|_| invalid("STAGING_BUCKET", &staging_bucket, "not a valid bucket name"))?;

        let connection = connection_from_env(env)?;

        let schema_text = env
            .optional("REDSHIFT_SCHEMA")
            .unwrap_or_else(|| "public".to_owned());
        let schema = Ident::parse(schema_text.trim())
            .map_err(|e| invalid("REDSHIFT_SCHEMA", &schema_text, e.reason))?;

        let copy_role_arn = env.required("COPY_ROLE_ARN")?;
        check_role_arn(&copy_role_arn).map_err(|_| {
            invalid(
                "COPY_ROLE_ARN",
                &copy_role_arn,
                "not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
            )
        })?;

        let redshift_region = env.region("REDSHIFT_REGION")?;
        let staging_region = match redshift_region {
            Some(_) => Some(
                env.region("STAGING_REGION")?
                    .ok_or_else(|| EnvError::Missing("STAGING_REGION".to_owned()))?,
            ),
            None => None,
        };

        let migrate_on_start = env.flag("MIGRATE_ON_START", true)?;

        let hours = env.bounded_or(
            "DEDUPE_WINDOW_HOURS",
            DEFAULT_DEDUPE_WINDOW_HOURS,
            MAX_DEDUPE_WINDOW_HOURS,
        )?;
        let dedupe_window = time::Duration::hours(i64::try_from(hours).unwrap_or(i64::MAX));

        let LoadedRules { rules, origin } = env.rules()?;
        check_rules_fit(&rules).map_err(|source| ConfigError::Rules { origin, source })?;

        Ok(Config {
            staging_bucket,
            connection,
            schema,
            copy_role_arn,
            redshift_region,
            staging_region,
            rules: Arc::new(rules),
            migrate_on_start,
            dedupe_window,
            queue_url: env.optional("LOADER_QUEUE_URL").filter(|u| !u.is_empty()),
        })
    }
}

/// The Data API connection: exactly one of `REDSHIFT_WORKGROUP` and `REDSHIFT_CLUSTER_ID`,
/// the database, and the optional secret or database user.
fn connection_from_env(env: &Env) -> Result<Connection, ConfigError> {
    let target = match (
        env.optional("REDSHIFT_WORKGROUP"),
        env.optional("REDSHIFT_CLUSTER_ID"),
    ) {
        (Some(w), None) => Target::Workgroup(w),
        (None, Some(c)) => Target::Cluster(c),
        (Some(w), Some(_)) => {
            return Err(invalid(
                "REDSHIFT_WORKGROUP",
                &w,
                "set exactly one of REDSHIFT_WORKGROUP and REDSHIFT_CLUSTER_ID, not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::Env(EnvError::Missing(
                "REDSHIFT_WORKGROUP or REDSHIFT_CLUSTER_ID".into(),
            )));
        }
    };
    Ok(Connection {
        target,
        database: env.required("REDSHIFT_DATABASE")?,
        secret_arn: env.optional("REDSHIFT_SECRET_ARN"),
        db_user: env.optional("REDSHIFT_DB_USER"),
    })
}

/// Refuse rules the loader cannot load: table names that collide with the loader's own tables,
/// or more tables than fit in one Data API transaction.
pub fn check_rules_fit(rules: &RuleSet) -> Result<(), RulesError> {
    for t in rules.tables() {
        if t.name.as_str() == LEDGER_TABLE || t.name.as_str() == REJECTS_TABLE {
            return Err(RulesError::Invalid {
                at: format!("tables.{}", t.name),
                reason: "is the name of a table the loader owns".into(),
            });
        }
    }
    // The LOCK, tables + rejects three statements each, plus the ledger statement.
    let needed = LEADING_STATEMENTS + (rules.tables().len() + 1) * STATEMENTS_PER_TABLE + 1;
    if needed > MAX_BATCH_STATEMENTS {
        return Err(RulesError::Invalid {
            at: "tables".into(),
            reason: format!(
                "{} tables need {needed} statements per load; the Data API runs at most \
                 {MAX_BATCH_STATEMENTS} in one transaction (at most {} tables)",
                rules.tables().len(),
                (MAX_BATCH_STATEMENTS - 1) / STATEMENTS_PER_TABLE - 1
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    const BASE: [(&str, &str); 4] = [
        ("STAGING_BUCKET", "caudal-staging"),
        ("REDSHIFT_WORKGROUP", "wg"),
        ("REDSHIFT_DATABASE", "dev"),
        (
            "COPY_ROLE_ARN",
            "arn:aws:iam::123456789012:role/caudal-copy",
        ),
    ];

    #[test]
    fn defaults_and_bundled_rules() {
        let c = Config::from_env(&env(&BASE)).unwrap();
        assert_eq!(c.schema.as_str(), "public");
        assert!(c.migrate_on_start);
        assert_eq!(c.dedupe_window, time::Duration::hours(168));
        assert_eq!(c.connection.target, Target::Workgroup("wg".into()));
        assert!(!c.rules.tables().is_empty());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: [(&str, &str, &str); 7] = [
            ("DEDUPE_WINDOW_HOURS", "0", "DEDUPE_WINDOW_HOURS"),
            ("DEDUPE_WINDOW_HOURS", "8785", "DEDUPE_WINDOW_HOURS"),
            ("STAGING_BUCKET", "Bad_Bucket", "STAGING_BUCKET"),
            ("REDSHIFT_SCHEMA", "x; drop", "REDSHIFT_SCHEMA"),
            ("COPY_ROLE_ARN", "arn:aws:iam::1:role/x'", "COPY_ROLE_ARN"),
            ("MIGRATE_ON_START", "maybe", "MIGRATE_ON_START"),
            ("REDSHIFT_CLUSTER_ID", "c1", "REDSHIFT_WORKGROUP"),
        ];
        for (name, value, expect) in cases {
            let mut pairs: Vec<(&str, &str)> =
                BASE.iter().copied().filter(|(k, _)| *k != name).collect();
            pairs.push((name, value));
            let err = Config::from_env(&env(&pairs)).unwrap_err();
            assert!(err.to_string().contains(expect), "{name}: {err}");
        }
        let pairs: Vec<(&str, &str)> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "REDSHIFT_WORKGROUP")
            .collect();
        let err = Config::from_env(&env(&pairs)).unwrap_err();
        assert!(err.to_string().contains("REDSHIFT_CLUSTER_ID"), "{err}");
    }

    #[test]
    fn a_warehouse_in_another_region_needs_the_staging_region() {
        let c = Config::from_env(&env(&BASE)).unwrap();
        assert_eq!((c.redshift_region, c.staging_region), (None, None));
        let mut pairs = BASE.to_vec();
        pairs.push(("REDSHIFT_REGION", "us-east-1"));
        assert!(matches!(
            Config::from_env(&env(&pairs)),
            Err(ConfigError::Env(EnvError::Missing(n))) if n == "STAGING_REGION"
        ));
        pairs.push(("STAGING_REGION", "us-west-2"));
        let c = Config::from_env(&env(&pairs)).unwrap();
        assert_eq!(c.redshift_region.as_deref(), Some("us-east-1"));
        assert_eq!(c.staging_region.as_deref(), Some("us-west-2"));
        // Without a warehouse elsewhere the staging region is not used.
        let mut pairs = BASE.to_vec();
        pairs.push(("STAGING_REGION", "us-west-2"));
        assert_eq!(Config::from_env(&env(&pairs)).unwrap().staging_region, None);
        // Both end up in SQL text or client set-up: malformed ones fail the cold start.
        for (name, value) in [("REDSHIFT_REGION", "us-east-1'"), ("STAGING_REGION", "x y")] {
            let mut pairs = BASE.to_vec();
            pairs.push(("REDSHIFT_REGION", "us-east-1"));
            pairs.push(("STAGING_REGION", "us-west-2"));
            pairs.retain(|(k, _)| *k != name);
            pairs.push((name, value));
            let err = Config::from_env(&env(&pairs)).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn a_bad_rules_file_fails_with_its_path() {
        let dir = std::env::temp_dir().join(format!("caudal-rl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.yaml");
        std::fs::write(&path, "version: 1\ntables: {}\nevents: {}\n").unwrap();
        let p = path.to_string_lossy().to_string();
        let mut pairs = BASE.to_vec();
        pairs.push(("RULES_FILE", &p));
        let err = Config::from_env(&env(&pairs)).unwrap_err();
        assert!(err.to_string().contains("bad.yaml"), "{err}");
        let mut pairs = BASE.to_vec();
        pairs.push(("RULES_FILE", "/nonexistent/rules.yaml"));
        let err = Config::from_env(&env(&pairs)).unwrap_err();
        assert!(matches!(err, ConfigError::RulesFile { .. }), "{err}");
    }
}
