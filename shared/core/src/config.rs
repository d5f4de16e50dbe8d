//! Typed reading of configuration from the environment.
//!
//! Each function's `main` reads its configuration once, at cold start, into a typed struct built
//! from an [`Env`]; a missing or malformed variable fails the cold start loudly with the variable's
//! name. Handlers never read the environment. [`Env`] takes a lookup function so config parsing is
//! testable without touching the process environment.

use std::collections::HashMap;
use std::str::FromStr;

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
    fn parse_or_names_the_variable() {
        let e = env(&[("N", "12"), ("BAD", "x")]);
        assert_eq!(e.parse_or("N", 1u32), Ok(12));
        assert_eq!(e.parse_or("UNSET", 7u32), Ok(7));
        let err = e.parse_or("BAD", 1u32).unwrap_err();
        assert!(err.to_string().contains("BAD"), "{err}");
    }

    #[test]
    fn bounded_rejects_zero_and_too_large() {
        let e = env(&[("Z", "0"), ("BIG", "11"), ("OK", "10")]);
        assert!(e.bounded_or("Z", 5, 10).is_err());
        assert!(e.bounded_or("BIG", 5, 10).is_err());
        assert_eq!(e.bounded_or("OK", 5, 10), Ok(10));
    }
}
