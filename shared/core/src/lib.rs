//! # caudal-core: the pure core
//!
//! Everything the three Lambda functions have in common that does not talk to AWS (the
//! adapters are the `caudal-aws` crate, beside this one in `shared/`; this crate depends on no
//! `aws-*` or `lambda*` crate, and `cargo tree -p caudal-core` shows it). Read it top-down to follow one event
//! from HTTP body to Redshift row:
//!
//! | module | role | pure? |
//! |---|---|---|
//! | [`config`] | typed reading of environment variables (done once, in each `main`) | yes |
//! | [`cors`] | which browser origins may send (API Gateway's matching rules) | yes |
//! | [`limits`] | request/event limits with safe defaults | yes |
//! | [`event`] | parse and validate client bodies (JSON, arrays, NDJSON, gzip) into events | yes |
//! | [`envelope`] | the envelope written to Kinesis: original bytes + server metadata | yes |
//! | [`batching`] | size- and count-aware chunking (PutRecords, PutRecordBatch, packing) | yes |
//! | [`retry`] | backoff with jitter, deadline, partial-failure resend of failed entries only | yes (tokio timers) |
//! | [`pack`] | packed Kinesis records (KPL aggregation): many envelopes per record | yes |
//! | [`raw`] | the raw-archive NDJSON line: envelope + Kinesis coordinates | yes |
//! | [`keys`] | deterministic S3 key naming (raw, raw-invalid, staging, rejected) | yes |
//! | [`codec`] | gzip/zstd encoders and capped decoders | yes |
//! | [`command`] | operator commands on the loader's queue (load, reprocess one raw object) | yes |
//! | [`rules`] | the business-rules engine (schemas, filters, mappings, routes, DDL) | yes |
//! | [`segment`] | Segment's tracking API (batch and single calls, write keys, clock skew) into events | yes |
//! | [`snowplow`] | Snowplow's tracker protocol (tp2 POST, the `/i` pixel, base64 contexts) into events, and the view the rules read | yes |
//! | [`telemetry`] | tracing set-up and CloudWatch EMF metric lines | yes |
//! | [`spill`] | the spill path: objects ingest writes when Kinesis refuses, read back by the drain | yes |
//! | [`stream`] | Kinesis records, where they landed, PutRecords outcomes and limits | yes |
//! | [`warehouse`] | Data API connection, parameters, statement outcomes, poll policy | yes |
//!
//! A private leaf, `null_marker`, holds the CSV NULL marker both `event` (event ids) and
//! `rules` (CSV, typed conversion) refuse as a value; it is public as [`rules::NULL_MARKER`].

pub mod batching;
pub mod codec;
pub mod command;
pub mod config;
pub mod cors;
pub mod envelope;
pub mod event;
pub mod keys;
pub mod limits;
mod null_marker;
pub mod pack;
pub mod raw;
pub mod retry;
pub mod rules;
pub mod segment;
pub mod snowplow;
pub mod spill;
pub mod stream;
pub mod telemetry;
pub mod warehouse;
