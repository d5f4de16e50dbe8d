//! Why a raw object (or a whole load) did not load: [`LoadError`], each variant retryable or
//! permanent. Its own module because both the load ([`crate::load`]) and the migration before it
//! ([`crate::migrate`]) fail with it.

use caudal_core::retry::{CallError, Retryable};
use caudal_core::rules::RulesError;
use caudal_core::warehouse::{QueryError, WaitError};

use crate::sql::SqlError;
use crate::stage::StageError;

/// How many token generations a load may go through (each after a FAILED/ABORTED attempt in an
/// earlier invocation). The queue's `maxReceiveCount` normally ends the story sooner.
pub const MAX_GENERATIONS: u32 = 16;

/// Why a raw object (or a whole load) did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Migrations could not be applied: a non-additive difference between the rules and the
    /// warehouse (names the table and column). Permanent until a person fixes it.
    #[error("migration refused: {0}")]
    Migration(#[from] RulesError),
    /// A Data API query failed (ledger look-up, catalogue read).
    #[error("query failed: {0}")]
    Query(#[from] QueryError),
    /// Reading a raw object failed.
    #[error("reading s3://{bucket}/{key} failed: {source}")]
    Fetch {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The S3 error.
        source: CallError,
    },
    /// A raw object cannot be staged (corrupt, too large, unknown suffix). Permanent.
    #[error("raw object {key} cannot be staged: {source}")]
    Stage {
        /// Key.
        key: String,
        /// Why.
        source: StageError,
    },
    /// A value or statement refused by the SQL builder. Permanent.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// Writing a staging object or reading the load descriptor failed.
    #[error("staging s3://{bucket}/{key} failed: {source}")]
    Staging {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The S3 error.
        source: CallError,
    },
    /// The load descriptor in S3 is not ours / unreadable. Permanent until removed.
    #[error("load descriptor {key} is corrupt: {reason}")]
    Descriptor {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Submitting the load failed.
    #[error("submitting the load failed: {0}")]
    Submit(CallError),
    /// The load statement did not finish (FAILED, ABORTED, still running at the deadline).
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// Every token generation of this load failed.
    #[error("load {0} failed in {MAX_GENERATIONS} generations")]
    Generations(String),
}

impl Retryable for LoadError {
    fn is_retryable(&self) -> bool {
        match self {
            LoadError::Migration(_)
            | LoadError::Stage { .. }
            | LoadError::Sql(_)
            | LoadError::Descriptor { .. }
            | LoadError::Generations(_) => false,
            LoadError::Query(e) => e.is_retryable(),
            LoadError::Fetch { source, .. }
            | LoadError::Staging { source, .. }
            | LoadError::Submit(source) => source.retryable,
            LoadError::Wait(e) => e.is_retryable(),
        }
    }
}
