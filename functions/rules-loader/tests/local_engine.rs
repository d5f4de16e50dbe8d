//! The loader's real SQL on a real engine: PostgreSQL 15 behind the local Data API endpoint
//! (`caudal_local::dataapi`), staging files in moto's S3. Proves the migration runs, the
//! load is exactly once (a redelivered batch loads nothing more), duplicates across raw objects
//! are counted, and the reconciliation view balances for every raw object.
//!
//! Needs PostgreSQL 15 server binaries and `moto_server` (env `MOTO_SERVER` or PATH). Every
//! process started here is stopped by a Drop guard.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use caudal_local::dataapi::{DataApiOptions, serve};
use caudal_local::postgres::Postgres;
use rules_loader::{Config, State, invoke};
use shared::aws::redshift::{self, Connection, PollPolicy, Target, Value};
use shared::config::Env;
use shared::keys::{BatchId, raw_key};
use tokio::time::Instant;

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample_lines() -> Vec<Vec<u8>> {
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

fn key(shard: &str, first: &str, last: &str) -> String {
    raw_key(
        &BatchId {
            shard_id: shard,
            first_seq: first,
            last_seq: last,
            first_arrival: time::macros::datetime!(2026-11-25 19:55:18 UTC),
        },
        ".gz",
    )
    .unwrap()
}

fn sqs_event(objects: &[(&str, &str)]) -> serde_json::Value {
    let records: Vec<serde_json::Value> = objects
        .iter()
        .enumerate()
        .map(|(i, (bucket, key))| {
            let body = serde_json::json!({"Records": [{
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": "2026-11-25T20:00:03.412Z", "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:local"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {},
                "s3": {"s3SchemaVersion": "1.0", "configurationId": "raw",
                       "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                       "object": {"key": key.replace('=', "%3D"), "size": 1}}}]});
            serde_json::json!({
                "messageId": format!("m-{i}"), "receiptHandle": "r", "body": body.to_string(),
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:loader",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

async fn rows(api: &aws_sdk_redshiftdata::Client, conn: &Connection, sql: &str) -> Vec<Vec<Value>> {
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

fn int(v: &Value) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("not an integer: {v:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sql_loads_exactly_once_and_reconciles() {
    // Processes: PostgreSQL 15 and moto, stopped on drop.
    let dir = TempDir(std::env::temp_dir().join(format!("caudal-rl-e2e-{}", std::process::id())));
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

    // The Data API endpoint on PostgreSQL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        pg.pg_config(),
        s3.clone(),
        DataApiOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let api = aws_sdk_redshiftdata::Client::from_conf(
        aws_sdk_redshiftdata::config::Builder::from(&sdk)
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .build(),
    );

    let raw_bucket = "caudal-raw";
    let staging = "caudal-staging";
    for b in [raw_bucket, staging] {
        s3.create_bucket().bucket(b).send().await.unwrap();
    }
    let lines = sample_lines();
    let n = lines.len();
    let key_a = key("shardId-000000000000", "100", "199");
    let key_b = key("shardId-000000000000", "200", "299");
    let key_c = key("shardId-000000000001", "100", "199");
    let object_a = common::gzip(&lines.join(&b'\n'));
    // B repeats A's first four records (a retried PutRecords upstream): all duplicates.
    let object_b = common::gzip(&lines[..4].join(&b'\n'));
    for (k, body) in [
        (&key_a, &object_a),
        (&key_b, &object_b),
        (&key_c, &object_a),
    ] {
        s3.put_object()
            .bucket(raw_bucket)
            .key(k.as_str())
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
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
    let conn = config.connection.clone();
    assert_eq!(conn.target, Target::Workgroup("local".into()));
    let state = State::new(config, s3.clone(), api.clone());

    // 1. A and B in one batch: migration on first use, one transaction.
    let event = sqs_event(&[(raw_bucket, &key_a), (raw_bucket, &key_b)]);
    let resp = invoke(&state, event.clone(), common::ctx(120))
        .await
        .unwrap();
    assert_eq!(resp, serde_json::json!({"batchItemFailures": []}));
    assert!(state.is_migrated());

    let recon = "SELECT raw_key, records, valid, filtered_total, rejected, duplicates, \
                 rows_in_tables, rows_in_rejects, difference, ledger_difference FROM \
                 \"analytics\".caudal_reconciliation ORDER BY raw_key";
    let r = rows(&api, &conn, recon).await;
    assert_eq!(r.len(), 2, "{r:?}");
    for row in &r {
        assert_eq!(int(&row[8]), 0, "difference must be 0: {row:?}");
        assert_eq!(int(&row[9]), 0, "ledger difference must be 0: {row:?}");
    }
    let (a, b) = (&r[0], &r[1]);
    assert_eq!(a[0].as_str(), Some(key_a.as_str()));
    assert_eq!(int(&a[1]), n as i64);
    assert_eq!(int(&a[5]), 0, "A has no duplicates");
    assert!(
        int(&a[3]) >= 2 && int(&a[4]) >= 4,
        "filtered/rejected from the samples: {a:?}"
    );
    assert_eq!(int(&b[1]), 4);
    assert_eq!(int(&b[6]), 0, "B's rows are all duplicates of A's");
    assert_eq!(int(&b[5]), int(&b[2]), "B: duplicates = valid");

    let total = "SELECT (SELECT COUNT(*) FROM \"analytics\".page_views) + (SELECT COUNT(*) FROM \
                 \"analytics\".purchases) + (SELECT COUNT(*) FROM \"analytics\".signups) + \
                 (SELECT COUNT(*) FROM \"analytics\".searches) + (SELECT COUNT(*) FROM \
                 \"analytics\".unknown_events), (SELECT COUNT(*) FROM \"analytics\".caudal_rejects), \
                 (SELECT COUNT(*) FROM \"analytics\".caudal_ledger)";
    let before = rows(&api, &conn, total).await;
    assert_eq!(int(&before[0][0]), int(&a[2]));
    assert_eq!(int(&before[0][1]), int(&a[4]) + int(&b[4]));
    assert_eq!(int(&before[0][2]), 2);

    // 2. The same batch again (SQS redelivery): acknowledged from the ledger, nothing loaded.
    let resp = invoke(&state, event, common::ctx(120)).await.unwrap();
    assert_eq!(resp, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(rows(&api, &conn, total).await, before);

    // 3. C has A's content under another key: every row is a duplicate, still balanced.
    let resp = invoke(&state, sqs_event(&[(raw_bucket, &key_c)]), common::ctx(120))
        .await
        .unwrap();
    assert_eq!(resp, serde_json::json!({"batchItemFailures": []}));
    let r = rows(&api, &conn, recon).await;
    assert_eq!(r.len(), 3);
    let c = r
        .iter()
        .find(|row| row[0].as_str() == Some(key_c.as_str()))
        .unwrap();
    assert_eq!(int(&c[8]), 0, "{c:?}");
    assert_eq!(int(&c[6]), 0);
    assert_eq!(int(&c[5]), int(&c[2]));
    let after = rows(&api, &conn, total).await;
    assert_eq!(after[0][0], before[0][0], "no event row twice");

    // The statement id is recorded on the ledger rows (submitted after the load finished).
    let mut recorded = 0;
    for _ in 0..50 {
        let r = rows(
            &api,
            &conn,
            "SELECT COUNT(*) FROM \"analytics\".caudal_ledger WHERE statement_id IS NOT NULL",
        )
        .await;
        recorded = int(&r[0][0]);
        if recorded == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorded, 3);

    // Staging files exist where the keys module says; nothing was written into raw/.
    let listed = s3
        .list_objects_v2()
        .bucket(raw_bucket)
        .send()
        .await
        .unwrap()
        .key_count()
        .unwrap_or(0);
    assert_eq!(listed, 3);

    let _ = stop.send(());
    let _ = server.await;
    drop(moto);
    drop(pg);
}
