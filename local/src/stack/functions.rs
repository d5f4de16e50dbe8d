//! The one place that maps a template function's `Metadata.BuildProperties.Binary` to the
//! in-process implementation: the package's `Config::from_env`, `State` and `invoke`.
//!
//! Each function gets exactly the environment variables the template gives it (references
//! resolved to local names) through [`caudal_core::config::Env::from_map`], so a variable added to
//! the template reaches the function locally with no change here. AWS clients are built the way
//! each function's `main` builds them — [`caudal_aws::clients`], SDK retries off and the same
//! per-attempt timeouts — from an `SdkConfig` that points at the emulators: moto for Kinesis, S3,
//! Firehose and SQS, and this crate's Data API endpoint for Redshift. The only difference is
//! [`ClientOptions::EMULATOR`]'s path-style S3 addressing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use caudal_aws::clients::{self as factory, ClientOptions};
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
    /// Options of every function client: Lambda's timeouts, path-style S3 (`127.0.0.1` has no
    /// bucket subdomains).
    const OPTIONS: ClientOptions = ClientOptions::EMULATOR;

    /// ingest-api's Kinesis client for moto.
    pub fn kinesis(&self) -> aws_sdk_kinesis::Client {
        factory::kinesis(&self.aws, &Self::OPTIONS)
    }

    /// The functions' S3 client for moto.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        factory::s3(&self.aws, &Self::OPTIONS)
    }

    /// raw-writer's Firehose client for moto.
    pub fn firehose(&self) -> aws_sdk_firehose::Client {
        factory::firehose(&self.aws, &Self::OPTIONS)
    }

    /// raw-writer's SQS client (the lake retry queue) for moto.
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        factory::sqs(&self.aws, &Self::OPTIONS)
    }

    /// The SDK configuration for the local Data API: moto's, with the endpoint the loader
    /// would get from `AWS_ENDPOINT_URL_REDSHIFT_DATA`.
    pub fn redshift_data_sdk(&self) -> aws_config::SdkConfig {
        self.aws
            .to_builder()
            .endpoint_url(&self.redshift_data_url)
            .build()
    }

    /// rules-loader's Data API client for the local endpoint.
    pub fn redshift_data(&self) -> aws_sdk_redshiftdata::Client {
        factory::redshift_data(&self.redshift_data_sdk(), &Self::OPTIONS)
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
    match binary {
        "ingest-api" => {
            let config = ingest_api::Config::from_env(&env()).map_err(|e| config_err(binary, e))?;
            let state = ingest_api::State::new(config, clients.kinesis())
                .map_err(|e| start_err(binary, e))?;
            let state = Arc::new(state);
            Ok(Arc::new(move |payload, ctx| {
                let state = state.clone();
                async move { ingest_api::invoke(&state, payload, ctx).await }
            }))
        }
        "raw-writer" => {
            let config = raw_writer::Config::from_env(&env()).map_err(|e| config_err(binary, e))?;
            let state = Arc::new(raw_writer::State::new(
                config,
                clients.s3(),
                clients.firehose(),
                clients.sqs(),
            ));
            Ok(Arc::new(move |payload, ctx| {
                let state = state.clone();
                async move { Box::pin(raw_writer::invoke(&state, payload, ctx)).await }
            }))
        }
        "rules-loader" => {
            let config =
                rules_loader::Config::from_env(&env()).map_err(|e| config_err(binary, e))?;
            let state = rules_loader::State::new(config, clients.s3(), clients.redshift_data())
                .with_sqs(clients.sqs());
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
