//! caudal-local: the whole caudal pipeline on one machine, with no AWS account and no Docker.
//!
//! Three folders — what stands in for AWS, what wires it from the template, what the command
//! adds — and every module in them, one line each:
//! - [`emulators`]: the emulated services, started by [`stack::Stack::start`] or alone by tests.
//!   - [`emulators::postgres`]: a throw-away PostgreSQL 15 server, the warehouse's storage.
//!   - [`emulators::dataapi`]: the Redshift Data API (AWS JSON 1.1) on that PostgreSQL.
//!     - [`emulators::dataapi::wire`]: the operations' request/response shapes and errors.
//!     - [`emulators::dataapi::server`]: the HTTP route: validation and submission.
//!     - [`emulators::dataapi::state`]: what handlers and executors share; record transitions.
//!     - [`emulators::dataapi::store`]: statements, status, results, idempotency tokens.
//!     - [`emulators::dataapi::exec`]: each statement's lifecycle, run on PostgreSQL.
//!     - [`emulators::dataapi::pool`]: the PostgreSQL sessions, reset between statements.
//!     - [`emulators::dataapi::outcome`]: how a statement ended (its error, what it produced).
//!     - [`emulators::dataapi::translate`]: Redshift SQL → PostgreSQL (`lex`: tokens,
//!       parameters, splitting; `rewrite`: DDL and names; `copy_parse`: COPY → plan).
//!     - [`emulators::dataapi::copy`]: running a COPY plan: S3 objects into `COPY … FROM STDIN`.
//!     - [`emulators::dataapi::zonemaps`]: Redshift's zone maps as BRIN indexes.
//!   - [`emulators::http`]: the template's HTTP API routes, requests as API Gateway 2.0 events.
//!   - [`emulators::lambda`]: an in-process "Lambda": context, timeout, payload limit, panics.
//!   - [`emulators::esm`]: Lambda's event source mappings (`kinesis` and `sqs` pollers).
//!     - [`emulators::esm::events`]: the JSON documents they send, the batch responses read back.
//!   - [`emulators::notify`]: the relay that gives S3 → SQS notifications S3's real shape.
//!   - [`emulators::motoproxy`]: the proxy in front of moto (serialized Kinesis writes, faults).
//!   - [`emulators::chaos`]: fault injection (`up --chaos`) for the emulators above.
//!     - [`emulators::chaos::aws`]: the faults in the S3/Kinesis/Firehose error shapes.
//! - [`stack`]: the running stack: start (`start`, one step per part), stop, drain, reset.
//!   - [`stack::template`]: `template.yaml` → the typed [`stack::template::Model`] (`tags`:
//!     short tags; `resolver`: intrinsics and local names; `build`: the model; `model`: types).
//!   - [`stack::resources`]: the model's streams, queues, buckets and delivery streams in moto.
//!   - [`stack::functions`]: a template function's binary → its in-process handler.
//! - [`cli`]: what `caudal-local up` does with a running stack (the binary is `main.rs`).
//!   - [`cli::traffic`]: the repository's sample requests posted through the local API.
//!   - [`cli::report`]: per-stage counts and the reconciliation view of a running stack.
//! - [`shutdown`]: the one shutdown signal every server and poller waits on.
//!
//! The data path: a client's request reaches [`emulators::http`], which invokes the ingest
//! function through [`emulators::lambda`]; its Kinesis and S3 calls go through
//! [`emulators::motoproxy`] to moto; [`emulators::esm`] polls the stream into the raw writer,
//! whose S3 objects raise notifications that [`emulators::notify`] completes onto SQS; the SQS
//! poller invokes the loader, whose Redshift statements run in [`emulators::dataapi`] on
//! [`emulators::postgres`]. [`stack`] builds all of it from the template;
//! [`cli::report`] reads every stage back.

pub mod cli;
pub mod emulators;
pub mod shutdown;
pub mod stack;
