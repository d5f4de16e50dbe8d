//! Reading `template.yaml` into the model the local stack runs.
//!
//! The SAM template is the single source of truth: the functions, their environment variables
//! and event sources, the HTTP routes, streams, buckets, queues and delivery streams are all
//! taken from it. Nothing here knows a logical ID; a new event source, queue or environment
//! variable in the template shows up locally without touching this crate.
//!
//! Reading happens in three steps, one module each:
//! 1. `tags`: YAML (with CloudFormation short tags such as `!Ref`, `!Sub`, `!GetAtt`, `!If`)
//!    is parsed and the short tags are rewritten to their long form (`{"Fn::Sub": …}`), giving
//!    plain JSON.
//! 2. `resolver`: values are resolved lazily through [`Resolver`]: parameters take their
//!    `Default` (or an override), pseudo parameters take local values ([`LocalNames`]),
//!    conditions are evaluated and references resolve to **local** physical names
//!    (`caudal-local-<logicalid>` unless the template names the resource itself). Only the
//!    values the local stack needs are resolved, so IAM policies or dashboards using exotic
//!    intrinsics do not get in the way; an intrinsic the resolver does not implement is a
//!    [`TemplateError::UnsupportedIntrinsic`] naming it.
//! 3. `build`: the resolved resources are turned into the typed [`Model`] (whose types are in
//!    `model`). Anything the template declares that the local stack does not emulate (a Lambda
//!    filter pattern, an SNS notification…) is listed in [`Model::warnings`] instead of being
//!    dropped silently.

mod build;
mod model;
mod resolver;
mod tags;

pub use model::*;
pub use resolver::{LocalNames, Resolver};

/// A problem in the template or in the overrides. Always permanent: fix the template or the
/// `--param` values and start again.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The template path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not YAML or has a shape CloudFormation would refuse.
    #[error("template is not valid: {0}")]
    Syntax(String),
    /// An intrinsic function this resolver does not implement was needed.
    #[error(
        "{at}: intrinsic function {name} is not supported by the local stack (supported: Ref, \
         Condition, Fn::GetAtt, Fn::Sub, Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or, Fn::Join, \
         Fn::Select, Fn::Split, Fn::FindInMap, Fn::Base64, Fn::GetAZs)"
    )]
    UnsupportedIntrinsic {
        /// Where in the template (resource and property path).
        at: String,
        /// The intrinsic's name.
        name: String,
    },
    /// A parameter has neither a default nor an override.
    #[error("parameter {0} has no Default in the template: pass --param {0}=VALUE")]
    MissingParameter(String),
    /// An override names a parameter the template does not declare.
    #[error("--param {0}: the template declares no such parameter")]
    UnknownParameter(String),
    /// A parameter value is not one of its AllowedValues.
    #[error("parameter {name}={value:?} is not one of {allowed:?}")]
    NotAllowed {
        /// Parameter name.
        name: String,
        /// The refused value.
        value: String,
        /// The template's AllowedValues.
        allowed: Vec<String>,
    },
    /// A template rule (`Rules` section) does not hold for the parameter values.
    #[error("template rule {rule} failed: {message} (set parameters with --param NAME=VALUE)")]
    RuleFailed {
        /// Rule name.
        rule: String,
        /// The rule's AssertDescription.
        message: String,
    },
    /// A value has the wrong shape or refers to something that does not exist.
    #[error("{at}: {message}")]
    Invalid {
        /// Where in the template.
        at: String,
        /// What is wrong.
        message: String,
    },
}

impl TemplateError {
    /// Template errors never go away by retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }

    fn invalid(at: &str, message: impl Into<String>) -> TemplateError {
        TemplateError::Invalid {
            at: at.to_owned(),
            message: message.into(),
        }
    }
}

type Result<T, E = TemplateError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
