//! The rules file as written: the YAML shapes, deserialised with serde (`deny_unknown_fields`,
//! so a typo is an error with the parser's line and column). Nothing here is checked beyond
//! the shape and the format version; [`super::compile`] checks the meaning.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{RulesError, invalid};

/// The format version this build reads.
const SUPPORTED_VERSION: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
    pub(super) version: u32,
    #[serde(default)]
    pub(super) pii_salt: Option<String>,
    #[serde(default)]
    pub(super) unknown_types: UnknownTypes,
    #[serde(default)]
    pub(super) catch_all_table: Option<String>,
    pub(super) tables: BTreeMap<String, TableSpec>,
    #[serde(default)]
    pub(super) filters: Vec<FilterSpec>,
    pub(super) events: BTreeMap<String, EventSpec>,
}

impl FileSpec {
    /// Deserialise `text` and check its format version.
    pub(super) fn parse(text: &str) -> Result<FileSpec, RulesError> {
        let spec: FileSpec =
            serde_yaml_ng::from_str(text).map_err(|e| RulesError::Yaml(e.to_string()))?;
        if spec.version != SUPPORTED_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "unsupported rules format version {} (this build reads {SUPPORTED_VERSION})",
                    spec.version
                ),
            ));
        }
        Ok(spec)
    }
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(super) enum UnknownTypes {
    #[default]
    Reject,
    CatchAll,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TableSpec {
    pub(super) columns: Vec<ColumnSpec>,
    #[serde(default)]
    pub(super) dist_key: Option<String>,
    #[serde(default)]
    pub(super) sort_key: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ColumnSpec {
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) ty: String,
    #[serde(default = "yes")]
    pub(super) nullable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilterSpec {
    pub(super) name: String,
    pub(super) drop_if: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventSpec {
    pub(super) table: String,
    #[serde(default)]
    pub(super) schema: Option<Value>,
    #[serde(default)]
    pub(super) filters: Vec<FilterSpec>,
    #[serde(default)]
    pub(super) columns: BTreeMap<String, Value>,
}
