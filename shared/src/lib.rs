//! # caudal shared core
//!
//! Everything the three Lambda functions have in common. Read it top-down to follow one event
//! from HTTP body to Redshift row:
//!
//! | module | role | pure? |
//! |---|---|---|
//! | [`config`] | typed reading of environment variables (done once, in each `main`) | yes |
//! | [`limits`] | request/event limits with safe defaults | yes |
//! | [`event`] | parse and validate client bodies (JSON, arrays, NDJSON, gzip) into events | yes |
//! | [`envelope`] | the envelope written to Kinesis: original bytes + server metadata | yes |
//! | [`batching`] | size- and count-aware chunking (PutRecords, PutRecordBatch, packing) | yes |
//! | [`retry`] | backoff with jitter, deadline, partial-failure resend of failed entries only | yes (tokio timers) |
//! | [`raw`] | the raw-archive NDJSON line: envelope + Kinesis coordinates | yes |
//! | [`keys`] | deterministic S3 key naming (raw, raw-invalid, staging, rejected) | yes |
//! | [`codec`] | gzip/zstd encoders and capped decoders | yes |
//! | [`rules`] | the business-rules engine (schemas, filters, mappings, routes, DDL) | yes |
//! | [`telemetry`] | tracing set-up and CloudWatch EMF metric lines | yes |
//! | [`aws`] | thin SDK adapters: SDK ↔ domain conversions, error classification, the client factory ([`aws::clients`]: SDK retries off, per-attempt timeouts) | no |
//!
//! Domain modules never import `aws_*` or `lambda_*`; only [`aws`] does.
#![forbid(unsafe_code)]

pub mod aws;
pub mod batching;
pub mod codec;
pub mod config;
pub mod envelope;
pub mod event;
pub mod keys;
pub mod limits;
pub mod raw;
pub mod retry;
pub mod rules;
pub mod telemetry;
