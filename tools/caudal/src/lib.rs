//! # caudal — the operator CLI
//!
//! One command for the person who runs a caudal stack, deployed (`--stack <name> --region …`,
//! resources read from the stack's outputs) or local (`--local`, read from the local stack's
//! `stack.json`): the same code for both after [`target`].
//!
//! | command | module |
//! |---|---|
//! | `status` — per stage, and what needs a person (exit code 2); `--html` the dashboard page | [`status`], [`dashboard`] |
//! | `reconcile` — stream → raw archive → warehouse | [`status`] |
//! | `replay` — raw objects announced to the loader again | [`announce`] |
//! | `reprocess` — raw objects loaded again with the current rules | [`announce`] |
//! | `redrive loader-dlq` — the loader's dead letters back to its queue | [`queue`] |
//! | `redrive raw-failures` — failed raw-writer batches read back from the stream | [`rawfail`] |
//! | `smoke` — tagged events through the endpoint until queryable, with their latency | [`smoke`] |
//! | `cost` — cost per million events from the price table and the benchmarks (no stack) | [`cost`] |
//!
//! Every write has `--dry-run`; long operations show progress on stderr, stop cleanly on
//! Ctrl-C and resume where they stopped ([`run`]).

pub mod announce;
pub mod archive;
pub mod cli;
pub mod cost;
pub mod dashboard;
pub mod metrics;
pub mod queue;
pub mod rawfail;
pub mod run;
pub mod smoke;
pub mod status;
pub mod stream;
pub mod target;
pub mod warehouse;

use target::{Clients, Resources};
use warehouse::Warehouse;

/// What every command works with.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The stack's resources.
    pub resources: Resources,
    /// Clients.
    pub clients: Clients,
    /// The warehouse.
    pub warehouse: Warehouse,
}

impl Ctx {
    /// The context for `stack`.
    pub async fn new(stack: &target::Stack) -> Result<Ctx, OpError> {
        let resources = Resources::from_outputs(&stack.outputs)?;
        let clients = stack.clients(&resources).await;
        let warehouse = Warehouse {
            client: clients.redshift.clone(),
            connection: resources.warehouse.clone(),
            schema: resources.schema.clone(),
        };
        Ok(Ctx {
            resources,
            clients,
            warehouse,
        })
    }
}

/// Why a command failed. All are permanent for the run (the SDK already retried what it
/// could): the message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The stack or its outputs.
    #[error(transparent)]
    Target(#[from] target::TargetError),
    /// Listing the raw archive, or a bad selection.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// SQS.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    /// Kinesis.
    #[error(transparent)]
    Stream(#[from] stream::StreamError),
    /// The warehouse.
    #[error("warehouse: {0}")]
    Warehouse(#[from] caudal_core::warehouse::QueryError),
    /// Reading an object.
    #[error("reading {0}: {1}")]
    Read(String, String),
    /// The checkpoint file.
    #[error("checkpoint {0}: {1}")]
    Checkpoint(String, std::io::Error),
    /// CloudWatch.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The smoke test could not run.
    #[error("smoke: {0}")]
    Smoke(String),
}
