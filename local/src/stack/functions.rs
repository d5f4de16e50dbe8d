//! The one place that maps a template function's `Metadata.BuildProperties.Binary` to the
//! in-process implementation: the package's `start` and `invoke`.
//!
//! Each function gets exactly the environment variables the template gives it (references
//! resolved to local names) through [`caudal_core::config::Env::from_map`], so a variable added to
//! the template reaches the function locally with no change here. Each function is built by the
//! same `start(env, factory)` its Lambda `main` calls, with a [`ClientFactory`] (SDK retries
//! off, the same per-attempt timeouts) whose `SdkConfig` points at the emulators: moto for
//! Kinesis, S3, Firehose and SQS, and this crate's Data API endpoint for Redshift. The only
//! difference is [`ClientOptions::EMULATOR`]'s path-style S3 addressing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use caudal_aws::clients::{ClientFactory, ClientOptions};
use caudal_core::config::Env;

use crate::emulators::lambda::Handler;

/// Why a function could not be set up. Permanent: the template's environment or the local
/// warehouse is wrong.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// No in-process implementation for this binary.
    #[error(
        "no local implementation for binary {0:?} (known: ingest-api, raw-writer, rules-loader)"
    )]
    UnknownBinary(String),
    /// `Config::from_env` refused the template's environment.
    #[error("{binary}: configuration from the template's environment: {message}")]
    Config {
        /// Binary.
        binary: String,
        /// The function's own error (names the variable).
        message: String,
    },
    /// Building the state or running the start-up migration failed.
    #[error("{binary}: start-up: {message}")]
    Start {
        /// Binary.
        binary: String,
        /// What failed.
        message: String,
    },
}

impl FunctionError {
    /// None of these is fixed by retrying.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// The clients handed to the functions.
#[derive(Debug, Clone)]
pub struct Clients {
    /// SDK configuration pointing at moto.
    pub aws: aws_config::SdkConfig,
    /// URL of the local Redshift Data API endpoint.
    pub redshift_data_url: String,
}

impl Clients {
    /// The factory every function's `start` takes: the one a Lambda cold start builds, but
    /// with [`ClientOptions::EMULATOR`] (path-style S3: `127.0.0.1` has no bucket subdomains)
    /// and the Data API at the local endpoint (what `AWS_ENDPOINT_URL_REDSHIFT_DATA` would do).
    pub fn factory(&self) -> ClientFactory {
        ClientFactory::new(self.aws.clone(), ClientOptions::EMULATOR)
            .with_redshift_data_endpoint(&self.redshift_data_url)
    }

    /// The SDK configuration for the local Data API: moto's, with the endpoint the loader
    /// would get from `AWS_ENDPOINT_URL_REDSHIFT_DATA`.
    pub fn redshift_data_sdk(&self) -> aws_config::SdkConfig {
        self.aws
            .to_builder()
            .endpoint_url(&self.redshift_data_url)
            .build()
    }
}

/// The binaries this crate can run in process.
pub const KNOWN_BINARIES: [&str; 3] = ["ingest-api", "raw-writer", "rules-loader"];

fn config_err(binary: &str, e: impl std::fmt::Display) -> FunctionError {
    FunctionError::Config {
        binary: binary.to_owned(),
        message: e.to_string(),
    }
}

fn start_err(binary: &str, e: impl std::fmt::Display) -> FunctionError {
    FunctionError::Start {
        binary: binary.to_owned(),
        message: e.to_string(),
    }
}

/// Builds the handler for `binary` from the function's template environment — what the
/// binary's `main` does at cold start. The loader also runs its warehouse migration now, so
/// the tables exist (and can be queried) before the first load.
pub async fn build(
    binary: &str,
    environment: &BTreeMap<String, String>,
    clients: &Clients,
) -> Result<Arc<dyn Handler>, FunctionError> {
    let env = || {
        Env::from_map(
            environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    let clients = clients.factory();
    match binary {
        "ingest-api" => {
            let state = ingest_api::start(&env(), &clients).map_err(|e| config_err(binary, e))?;
            let state = Arc::new(state);
            Ok(Arc::new(move |payload, ctx| {
                let state = state.clone();
                async move { ingest_api::invoke(&state, payload, ctx).await }
            }))
        }
        "raw-writer" => {
            let state = raw_writer::start(&env(), &clients).map_err(|e| config_err(binary, e))?;
            let state = Arc::new(state);
            Ok(Arc::new(move |payload, ctx| {
                let state = state.clone();
                async move { Box::pin(raw_writer::invoke(&state, payload, ctx)).await }
            }))
        }
        "rules-loader" => {
            let state = rules_loader::start(&env(), &clients).map_err(|e| config_err(binary, e))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            // Migrated before the first event (the warehouse is new every run); recorded on the
            // state, so the first invocation does not migrate again.
            let blocked = rules_loader::migrate::ensure(&state, deadline)
                .await
                .map_err(|e| start_err(binary, format!("warehouse migration: {e}")))?;
            tracing::info!(held_tables = blocked.len(), "warehouse_migrated");
            let state = Arc::new(state);
            Ok(Arc::new(move |payload, ctx| {
                let state = state.clone();
                async move { Box::pin(rules_loader::invoke(&state, payload, ctx)).await }
            }))
        }
        other => Err(FunctionError::UnknownBinary(other.to_owned())),
    }
}
