//! The emulated services: each stands in for one AWS service (or Lambda's machinery around a
//! function) and is started by [`crate::stack::Stack::start`], or alone by a test.
//!
//! - [`postgres`]: the warehouse process (PostgreSQL 15) behind the Data API.
//! - [`dataapi`]: the Redshift Data API endpoint on that PostgreSQL.
//! - [`http`]: API Gateway's HTTP API in front of the functions.
//! - [`lambda`]: invoking a function in process as Lambda would.
//! - [`invoke`]: Lambda's Invoke API in front of those functions.
//! - [`esm`]: Lambda's event source mappings (Kinesis and SQS pollers).
//! - [`notify`]: S3 → SQS notifications in the shape S3 sends.
//! - [`motoproxy`]: the proxy in front of moto (S3, Kinesis, Firehose, SQS).
//! - [`chaos`]: the faults the emulators above inject when asked to.
//!
//! Dependencies point one way: [`http`], [`esm`] and [`invoke`] invoke through [`lambda`]; [`chaos`] depends
//! on none of the others. The only thing read from outside is the typed settings (routes, event
//! sources, a function's timeout) in [`crate::stack::template`], which imports nothing from the
//! crate.

pub mod chaos;
pub mod dataapi;
pub mod esm;
pub mod http;
pub mod invoke;
pub mod lambda;
pub mod motoproxy;
pub mod notify;
pub mod postgres;
