//! The loader on a real engine: PostgreSQL 15 behind the local Data API endpoint
//! (`caudal_local::emulators::dataapi`), staging and raw objects in moto's S3. Shared by
//! `tests/local_engine.rs` and `benches/dedupe.rs` (included with `#[path]`; the including
//! crate also has `mod common`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use caudal_aws::redshift;
use caudal_core::config::Env;
use caudal_core::keys::{BatchId, raw_key};
use caudal_core::warehouse::{Connection, PollPolicy, Value};
use caudal_local::emulators::dataapi::{DataApiOptions, Isolation, serve};
use caudal_local::emulators::postgres::Postgres;
use rules_loader::{Config, State};
use tokio::time::Instant;

use crate::common;

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn sample_lines() -> Vec<Vec<u8>> {
    let root = format!("{}/../..", env!("CARGO_MANIFEST_DIR"));
    let events = std::fs::read_to_string(format!("{root}/rules/samples/events.ndjson")).unwrap();
    let raw = std::fs::read_to_string(format!("{root}/rules/samples/raw.ndjson")).unwrap();
    let mut lines: Vec<Vec<u8>> = events
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| common::raw_line(l, i as u64 + 1))
        .collect();
    lines.extend(
        raw.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.as_bytes().to_vec()),
    );
    lines
}

pub fn key(shard: &str, first: &str, last: &str) -> String {
    raw_key(
        &BatchId {
            region: None,
            shard_id: shard,
            first_seq: first,
            last_seq: last,
            first_arrival: time::macros::datetime!(2026-11-25 19:55:18 UTC),
        },
        ".gz",
    )
    .unwrap()
}

/// An SQS event of one operator command per object.
pub fn command_event(
    action: caudal_core::command::Action,
    objects: &[(&str, &str)],
) -> serde_json::Value {
    let bodies: Vec<String> = objects
        .iter()
        .map(|(bucket, key)| {
            caudal_core::command::CommandMessage::new(action, bucket, key).to_body()
        })
        .collect();
    sqs_messages(&bodies)
}

/// An SQS event carrying `bodies`, one message each.
pub fn sqs_messages(bodies: &[String]) -> serde_json::Value {
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            serde_json::json!({
                "messageId": format!("m-{i}"), "receiptHandle": "r", "body": body,
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:loader",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

pub fn sqs_event(objects: &[(&str, &str)]) -> serde_json::Value {
    let bodies: Vec<String> = objects
        .iter()
        .map(|(bucket, key)| {
            serde_json::json!({"Records": [{
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": "2026-11-25T20:00:03.412Z", "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:local"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {},
                "s3": {"s3SchemaVersion": "1.0", "configurationId": "raw",
                       "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                       "object": {"key": key.replace('=', "%3D"), "size": 1}}}]})
            .to_string()
        })
        .collect();
    sqs_messages(&bodies)
}

pub async fn rows(
    api: &aws_sdk_redshiftdata::Client,
    conn: &Connection,
    sql: &str,
) -> Vec<Vec<Value>> {
    redshift::query(
        api,
        conn,
        sql,
        &[],
        &PollPolicy::default(),
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn int(v: &Value) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("not an integer: {v:?}"))
}

/// PostgreSQL 15 behind the local Data API (at `isolation`), moto's S3 with the raw and
/// staging buckets, and the loader's configuration for schema `schema`. Stops everything on drop
/// (field order: the endpoint first, then moto, then PostgreSQL, then the directory).
pub struct Harness {
    pub api: aws_sdk_redshiftdata::Client,
    pub s3: aws_sdk_s3::Client,
    pub config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _moto: testkit::Moto,
    pg: Postgres,
    _dir: TempDir,
}

pub const RAW_BUCKET: &str = "caudal-raw";

impl Harness {
    pub async fn start(tag: &str, isolation: Isolation) -> Harness {
        let dir =
            TempDir(std::env::temp_dir().join(format!("caudal-rl-{tag}-{}", std::process::id())));
        let data = dir.0.join("pg");
        let pg = tokio::task::spawn_blocking(move || Postgres::start(&data))
            .await
            .unwrap()
            .expect("start PostgreSQL 15");
        let moto = tokio::task::spawn_blocking(|| testkit::Moto::start(None))
            .await
            .unwrap()
            .expect("start moto_server");
        let sdk = moto.sdk_config().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            pg.pg_config(),
            s3.clone(),
            DataApiOptions {
                isolation,
                ..DataApiOptions::default()
            },
            async {
                let _ = stopped.await;
            },
        ));
        let api = aws_sdk_redshiftdata::Client::from_conf(
            aws_sdk_redshiftdata::config::Builder::from(&sdk)
                .endpoint_url(format!("http://127.0.0.1:{port}"))
                .build(),
        );
        let staging = "caudal-staging";
        for b in [RAW_BUCKET, staging] {
            s3.create_bucket().bucket(b).send().await.unwrap();
        }
        let env: HashMap<String, String> = [
            ("STAGING_BUCKET", staging),
            ("REDSHIFT_WORKGROUP", "local"),
            ("REDSHIFT_DATABASE", "dev"),
            ("REDSHIFT_SCHEMA", "analytics"),
            (
                "COPY_ROLE_ARN",
                "arn:aws:iam::000000000000:role/caudal-copy",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Config::from_env(&Env::from_map(env)).unwrap();
        Harness {
            api,
            s3,
            config,
            stop: Some(stop),
            _moto: moto,
            pg,
            _dir: dir,
        }
    }

    /// How to reach the warehouse's PostgreSQL directly (bench set-up, bypassing the Data API).
    pub fn pg_config(&self) -> tokio_postgres::Config {
        self.pg.pg_config()
    }

    /// A loader instance (one Lambda execution environment).
    pub fn loader(&self) -> State {
        State::new(self.config.clone(), self.s3.clone(), self.api.clone())
    }

    /// A loader instance deployed with the rules file `rules` (YAML) instead of the shipped one.
    pub fn loader_with_rules(&self, rules: &str) -> State {
        let mut config = self.config.clone();
        config.rules = std::sync::Arc::new(caudal_core::rules::RuleSet::from_yaml(rules).unwrap());
        State::new(config, self.s3.clone(), self.api.clone())
    }

    pub async fn put_raw(&self, key: &str, body: &[u8]) {
        self.s3
            .put_object()
            .bucket(RAW_BUCKET)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .unwrap();
    }

    pub async fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        rows(&self.api, &self.config.connection, sql).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub const RECONCILIATION: &str = "SELECT raw_key, records, valid, filtered_total, rejected, \
                              duplicates, rows_in_tables, rows_in_rejects, difference, \
                              ledger_difference FROM \"analytics\".caudal_reconciliation ORDER \
                              BY raw_key";

pub const EVENT_TABLES: [&str; 5] = [
    "page_views",
    "purchases",
    "signups",
    "searches",
    "unknown_events",
];
