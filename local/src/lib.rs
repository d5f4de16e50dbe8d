//! caudal-local: the whole caudal pipeline on one machine, with no AWS account and no Docker.
//!
//! - [`postgres`]: a throw-away PostgreSQL 15 server standing in for Redshift's storage.
//! - [`dataapi`]: a Redshift Data API endpoint (AWS JSON 1.1) that runs the loader's SQL on
//!   that PostgreSQL, including `COPY … FROM 's3://…'` through the local S3.
//! - [`chaos`]: fault injection (`up --chaos`): AWS error shapes in the emulator proxy, failed,
//!   rolled-back and delayed Data API statements, killed invocations, duplicate notifications.
pub mod chaos;
pub mod dataapi;
pub mod esm;
pub mod events;
pub mod functions;
pub mod http;
pub mod lambda;
pub mod motoproxy;
pub mod notify;
pub mod postgres;
pub mod report;
pub mod resources;
pub mod shutdown;
pub mod stack;
pub mod template;
pub mod traffic;
