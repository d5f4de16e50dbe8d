//! Typed reading of configuration from the environment.
//!
//! Each function's `main` reads its configuration once, at cold start, into a typed struct built
//! from an [`Env`]; a missing or malformed variable fails the cold start loudly with the variable's
//! name. Handlers never read the environment. [`Env`] takes a lookup function so config parsing is
//! testable without touching the process environment.

use std::collections::HashMap;
use std::str::FromStr;

use crate::rules::{BUNDLED_RULES_YAML, RuleSet, RulesError};

/// A configuration problem found at cold start. Always permanent: fix the deployment.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("environment variable {0} is required but not set")]
    Missing(String),
    /// A variable is set but its value cannot be used.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        /// Variable name.
        name: String,
        /// The offending value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

/// The variable naming the rules file ([`Env::rules`]).
pub const RULES_FILE: &str = "RULES_FILE";

/// Rules read by [`Env::rules`] and where they came from.
#[derive(Debug)]
pub struct LoadedRules {
    /// The compiled rules.
    pub rules: RuleSet,
    /// `RULES_FILE <path>` or `the bundled rules/rules.yaml`, for error messages.
    pub origin: String,
}

/// Why [`Env::rules`] failed. Always permanent: fix the deployment or the rules file.
#[derive(Debug, thiserror::Error)]
pub enum RulesFileError {
    /// The rules file cannot be read.
    #[error("RULES_FILE {path}: {reason}")]
    Read {
        /// The configured path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The rules are invalid.
    #[error("{origin}: {source}")]
    Invalid {
        /// `RULES_FILE <path>` or `the bundled rules/rules.yaml`.
        origin: String,
        /// What is wrong.
        source: RulesError,
    },
}

type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A source of configuration values.
pub struct Env {
    lookup: Lookup,
}

impl Env {
    /// Values from the process environment.
    pub fn process() -> Self {
        Self {
            lookup: Box::new(|name| std::env::var(name).ok()),
        }
    }

    /// Values from a map (tests, the local stack).
    pub fn from_map(map: HashMap<String, String>) -> Self {
        Self {
            lookup: Box::new(move |name| map.get(name).cloned()),
        }
    }

    /// Values from literal pairs (tests, examples).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self::from_map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The value of `name`, or `None` when unset or empty (empty counts as unset so templates can
    /// switch a feature off with `""`).
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// The value of `name`, or [`ConfigError::Missing`].
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.optional(name)
            .ok_or_else(|| ConfigError::Missing(name.to_owned()))
    }

    /// `name` parsed as `T`, or `default` when unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => value
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::Invalid {
                    name: name.to_owned(),
                    value,
                    reason: e.to_string(),
                }),
        }
    }

    /// An on/off switch: `on`/`true`/`yes`/`1` or `off`/`false`/`no`/`0` (any case), or
    /// `default` when unset. Every function's switches read this way.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(value) = self.optional(name) else {
            return Ok(default);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" => Ok(false),
            _ => Err(ConfigError::Invalid {
                name: name.to_owned(),
                value,
                reason: "use on or off".to_owned(),
            }),
        }
    }

    /// The rules of `RULES_FILE`, or the bundled `rules/rules.yaml` when unset: read and
    /// compiled once per cold start by every function that applies or checks rules.
    pub fn rules(&self) -> Result<LoadedRules, RulesFileError> {
        let (text, origin) = match self.optional(RULES_FILE) {
            None => (
                BUNDLED_RULES_YAML.to_owned(),
                "the bundled rules/rules.yaml".to_owned(),
            ),
            Some(path) => (
                std::fs::read_to_string(&path).map_err(|e| RulesFileError::Read {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
                format!("{RULES_FILE} {path}"),
            ),
        };
        match RuleSet::from_yaml(&text) {
            Ok(rules) => Ok(LoadedRules { rules, origin }),
            Err(source) => Err(RulesFileError::Invalid { origin, source }),
        }
    }

    /// An optional AWS region name ([`is_region_name`]), or `None` when unset. Region names
    /// end up in object keys and SQL text (COPY's `REGION`), so a malformed one fails the cold
    /// start here.
    pub fn region(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.optional(name) {
            None => Ok(None),
            Some(value) if is_region_name(value.trim()) => Ok(Some(value.trim().to_owned())),
            Some(value) => Err(ConfigError::Invalid {
                name: name.to_owned(),
                value,
                reason: "not a region name ([a-z][a-z0-9-]*, at most 32 characters)".to_owned(),
            }),
        }
    }

    /// `name` parsed as a positive integer within `1..=max`, or `default` when unset.
    pub fn bounded_or(&self, name: &str, default: u64, max: u64) -> Result<u64, ConfigError> {
        let v: u64 = self.parse_or(name, default)?;
        if v == 0 || v > max {
            return Err(ConfigError::Invalid {
                name: name.to_owned(),
                value: v.to_string(),
                reason: format!("must be between 1 and {max}"),
            });
        }
        Ok(v)
    }
}

/// Whether `name` has the shape of an AWS region name (`us-east-1`, `us-gov-west-1`):
/// `[a-z][a-z0-9-]*`, at most 32 bytes — nothing that could add a path segment to a key or
/// close a SQL literal.
pub fn is_region_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    #[test]
    fn missing_and_empty_are_both_missing() {
        let e = env(&[("EMPTY", "  ")]);
        assert_eq!(e.required("NOPE"), Err(ConfigError::Missing("NOPE".into())));
        assert_eq!(
            e.required("EMPTY"),
            Err(ConfigError::Missing("EMPTY".into()))
        );
    }

    #[test]
    fn regions_are_region_shaped_or_refused_by_name() {
        let e = env(&[
            ("R", " eu-west-1 "),
            ("BAD", "eu-west-1' --"),
            ("UP", "EU-WEST-1"),
        ]);
        assert_eq!(e.region("R"), Ok(Some("eu-west-1".to_owned())));
        assert_eq!(e.region("UNSET"), Ok(None));
        for name in ["BAD", "UP"] {
            assert!(
                matches!(e.region(name), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}"
            );
        }
        for ok in ["us-east-1", "us-gov-west-1", "a", &"a".repeat(32)] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1us",
            "-us",
            "us/east",
            "us.east",
            "us_east",
            "us east",
            &"a".repeat(33),
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn parse_or_names_the_variable() {
        let e = env(&[("N", "12"), ("BAD", "x")]);
        assert_eq!(e.parse_or("N", 1u32), Ok(12));
        assert_eq!(e.parse_or("UNSET", 7u32), Ok(7));
        let err = e.parse_or("BAD", 1u32).unwrap_err();
        assert!(err.to_string().contains("BAD"), "{err}");
    }

    #[test]
    fn flags_read_one_way_with_a_default() {
        let e = env(&[
            ("A", "on"),
            ("B", " OFF "),
            ("C", "true"),
            ("D", "0"),
            ("E", "maybe"),
            ("F", "yes"),
            ("G", "No"),
            ("H", "1"),
            ("I", "False"),
        ]);
        assert_eq!(e.flag("A", false), Ok(true));
        assert_eq!(e.flag("B", true), Ok(false));
        assert_eq!(e.flag("C", false), Ok(true));
        assert_eq!(e.flag("D", true), Ok(false));
        assert_eq!(e.flag("F", false), Ok(true));
        assert_eq!(e.flag("G", true), Ok(false));
        assert_eq!(e.flag("H", false), Ok(true));
        assert_eq!(e.flag("I", true), Ok(false));
        assert_eq!(e.flag("UNSET", true), Ok(true));
        assert_eq!(e.flag("UNSET", false), Ok(false));
        let err = e.flag("E", false).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Invalid {
                name: "E".into(),
                value: "maybe".into(),
                reason: "use on or off".into()
            }
        );
    }

    #[test]
    fn rules_come_from_the_file_or_the_bundle_and_name_their_origin() {
        let bundled = env(&[]).rules().unwrap();
        assert_eq!(bundled.origin, "the bundled rules/rules.yaml");
        assert!(!bundled.rules.tables().is_empty());

        let missing = env(&[("RULES_FILE", "/nonexistent/rules.yaml")]).rules();
        let err = missing.unwrap_err();
        assert!(matches!(err, RulesFileError::Read { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("RULES_FILE /nonexistent/rules.yaml: "),
            "{err}"
        );

        let dir = std::env::temp_dir().join(format!("caudal-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "version: 1\ntables: nope\n").unwrap();
        let path = bad.display().to_string();
        let err = env(&[("RULES_FILE", &path)]).rules().unwrap_err();
        assert!(matches!(err, RulesFileError::Invalid { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&format!("RULES_FILE {path}: ")),
            "{err}"
        );

        let good = dir.join("good.yaml");
        std::fs::write(&good, BUNDLED_RULES_YAML).unwrap();
        let path = good.display().to_string();
        let loaded = env(&[("RULES_FILE", &path)]).rules().unwrap();
        assert_eq!(loaded.origin, format!("RULES_FILE {path}"));
        assert_eq!(loaded.rules.tables().len(), bundled.rules.tables().len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bounded_rejects_zero_and_too_large() {
        let e = env(&[("Z", "0"), ("BIG", "11"), ("OK", "10")]);
        assert!(e.bounded_or("Z", 5, 10).is_err());
        assert!(e.bounded_or("BIG", 5, 10).is_err());
        assert_eq!(e.bounded_or("OK", 5, 10), Ok(10));
    }
}
