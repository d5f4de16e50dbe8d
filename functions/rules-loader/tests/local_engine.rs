//! The loader's real SQL on a real engine: PostgreSQL 15 behind the local Data API endpoint
//! (`caudal_local::emulators::dataapi`), staging files in moto's S3. Proves the migration runs, the
//! load is exactly once (a redelivered batch loads nothing more), duplicates across raw objects
//! are counted, and the reconciliation view balances for every raw object.
//!
//! Needs PostgreSQL 15 server binaries and `moto_server` (env `MOTO_SERVER` or PATH). Every
//! process started here is stopped by a Drop guard.

mod common;
#[path = "common/engine.rs"]
mod engine;

use caudal_core::warehouse::Target;
use caudal_local::emulators::dataapi::Isolation;
use engine::*;
use rules_loader::{State, invoke};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sql_loads_exactly_once_and_reconciles() {
    let h = Harness::start("once", Isolation::Snapshot).await;
    let (api, s3) = (&h.api, &h.s3);
    let conn = h.config.connection.clone();
    let raw_bucket = RAW_BUCKET;
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
        h.put_raw(k, body).await;
    }
    assert_eq!(conn.target, Target::Workgroup("local".into()));
    let state = h.loader();

    // 1. A and B in one batch: migration on first use, one transaction.
    let event = sqs_event(&[(raw_bucket, &key_a), (raw_bucket, &key_b)]);
    let resp = invoke(&state, event.clone(), common::ctx(120))
        .await
        .unwrap();
    assert_eq!(resp, serde_json::json!({"batchItemFailures": []}));
    assert!(state.is_migrated());

    let recon = RECONCILIATION;
    let r = rows(api, &conn, recon).await;
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
    let before = rows(api, &conn, total).await;
    assert_eq!(int(&before[0][0]), int(&a[2]));
    assert_eq!(int(&before[0][1]), int(&a[4]) + int(&b[4]));
    assert_eq!(int(&before[0][2]), 2);

    // 2. The same batch again (SQS redelivery): acknowledged from the ledger, nothing loaded.
    let resp = invoke(&state, event, common::ctx(120)).await.unwrap();
    assert_eq!(resp, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(rows(api, &conn, total).await, before);

    // 3. C has A's content under another key: every row is a duplicate, still balanced.
    let resp = invoke(&state, sqs_event(&[(raw_bucket, &key_c)]), common::ctx(120))
        .await
        .unwrap();
    assert_eq!(resp, serde_json::json!({"batchItemFailures": []}));
    let r = rows(api, &conn, recon).await;
    assert_eq!(r.len(), 3);
    let c = r
        .iter()
        .find(|row| row[0].as_str() == Some(key_c.as_str()))
        .unwrap();
    assert_eq!(int(&c[8]), 0, "{c:?}");
    assert_eq!(int(&c[6]), 0);
    // Rejects count events: C's invalid events that carry an id are A's, re-sent, and are not
    // rejected a second time; lines without an id (unparseable) are each their own reject.
    let no_id = rows(
        api,
        &conn,
        &format!(
            "SELECT COUNT(*) FROM \"analytics\".caudal_rejects WHERE raw_key = '{key_a}' AND \
             event_id IS NULL"
        ),
    )
    .await;
    let no_id = int(&no_id[0][0]);
    assert!(
        int(&c[4]) > no_id,
        "the samples have rejects with an id: {c:?}"
    );
    assert_eq!(int(&c[7]), no_id, "{c:?}");
    assert_eq!(int(&c[5]), int(&c[2]) + int(&c[4]) - no_id, "{c:?}");
    let after = rows(api, &conn, total).await;
    assert_eq!(after[0][0], before[0][0], "no event row twice");
    assert_eq!(int(&after[0][1]), int(&before[0][1]) + no_id);

    // The load id is on every ledger row, written by the load's own transaction: A and B
    // share one load, C has its own.
    let r = h
        .rows(
            "SELECT COUNT(*), COUNT(DISTINCT load_id) FROM \"analytics\".caudal_ledger WHERE \
             load_id IS NOT NULL",
        )
        .await;
    assert_eq!((int(&r[0][0]), int(&r[0][1])), (3, 2));

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
}

/// Duplicate and overlapping deliveries handled by several loader instances at the same time
/// (LoaderConcurrency ≥ 2, an S3 notification delivered twice, a bisected batch): loads that
/// share raw objects run concurrently. Every event id must be in the warehouse once, every raw
/// object in the ledger once, and no load may fail on a serialization conflict — at Redshift's
/// default SNAPSHOT isolation (where nothing would abort a duplicate) and at SERIALIZABLE (where
/// a conflict would cost a redelivery).
async fn concurrent_overlapping_loads(isolation: Isolation) {
    let h = Harness::start(isolation.as_str(), isolation).await;
    let lines = sample_lines();
    let keys: Vec<String> = (0..4)
        .map(|i| key("shardId-000000000000", &format!("{i}00"), &format!("{i}99")))
        .collect();
    // Objects 0-2 hold the samples (object 2 repeats object 0's content under another key);
    // object 3 repeats the first four lines.
    let full = common::gzip(&lines.join(&b'\n'));
    let head = common::gzip(&lines[..4].join(&b'\n'));
    for (k, body) in keys.iter().zip([&full, &full, &full, &head]) {
        h.put_raw(k, body).await;
    }
    // Migrate first, as the first cold start would.
    let first = h.loader();
    let ev = sqs_event(&[(RAW_BUCKET, &keys[1])]);
    assert_eq!(
        invoke(&first, ev, common::ctx(120)).await.unwrap(),
        serde_json::json!({"batchItemFailures": []})
    );

    // Six loader instances, each with its own batch; batches overlap on every object.
    let sets: [&[usize]; 6] = [&[0], &[0], &[0, 2], &[2, 3], &[0, 3], &[1, 2, 3]];
    let runs = sets.iter().map(|set| {
        let state = h.loader();
        let objects: Vec<(&str, &str)> = set
            .iter()
            .map(|&i| (RAW_BUCKET, keys[i].as_str()))
            .collect();
        let ev = sqs_event(&objects);
        async move { invoke(&state, ev, common::ctx(120)).await.unwrap() }
    });
    let responses = futures_util::future::join_all(runs).await;
    for r in &responses {
        assert_eq!(
            r,
            &serde_json::json!({"batchItemFailures": []}),
            "{isolation:?}: no load may fail (no reliance on a conflict abort)"
        );
    }

    let ledger = h
        .rows("SELECT raw_key, COUNT(*) FROM \"analytics\".caudal_ledger GROUP BY raw_key")
        .await;
    assert_eq!(ledger.len(), 4, "{isolation:?}: {ledger:?}");
    assert!(
        ledger.iter().all(|r| int(&r[1]) == 1),
        "{isolation:?}: a raw object twice in the ledger: {ledger:?}"
    );
    for t in EVENT_TABLES {
        let dup = h
            .rows(&format!(
                "SELECT COUNT(*) - COUNT(DISTINCT event_id) FROM \"analytics\".{t}"
            ))
            .await;
        assert_eq!(int(&dup[0][0]), 0, "{isolation:?}: duplicated rows in {t}");
    }
    let rejects = h
        .rows(
            "SELECT COUNT(*) FROM (SELECT raw_key, raw_line FROM \"analytics\".caudal_rejects \
             GROUP BY raw_key, raw_line HAVING COUNT(*) > 1) AS d",
        )
        .await;
    assert_eq!(int(&rejects[0][0]), 0, "{isolation:?}: a reject twice");
    let recon = h.rows(RECONCILIATION).await;
    assert_eq!(recon.len(), 4);
    for row in &recon {
        assert_eq!(int(&row[8]), 0, "{isolation:?}: difference: {row:?}");
        assert_eq!(int(&row[9]), 0, "{isolation:?}: ledger difference: {row:?}");
    }
    // The distinct client events of the samples are each in exactly one table.
    let total: i64 = {
        let mut n = 0;
        for t in EVENT_TABLES {
            n += int(&h
                .rows(&format!("SELECT COUNT(*) FROM \"analytics\".{t}"))
                .await[0][0]);
        }
        n
    };
    // The same content loaded alone, serially, into another schema is the reference.
    let mut cfg = h.config.clone();
    cfg.schema = caudal_core::rules::Ident::parse("reference").unwrap();
    let reference = State::new(cfg, h.s3.clone(), h.api.clone());
    let ev = sqs_event(&[(RAW_BUCKET, &keys[0])]);
    assert_eq!(
        invoke(&reference, ev, common::ctx(120)).await.unwrap(),
        serde_json::json!({"batchItemFailures": []})
    );
    let mut expected = 0;
    for t in EVENT_TABLES {
        expected += int(&h
            .rows(&format!("SELECT COUNT(*) FROM \"reference\".{t}"))
            .await[0][0]);
    }
    assert!(expected > 0);
    assert_eq!(total, expected, "{isolation:?}: rows lost or doubled");
    let expected_rejects = int(&h
        .rows("SELECT COUNT(*) FROM \"reference\".caudal_rejects")
        .await[0][0]);
    let (head_no_id, rejects) = (
        int(&h
            .rows(&format!(
                "SELECT COUNT(*) FROM \"analytics\".caudal_rejects WHERE raw_key = '{}'",
                keys[3]
            ))
            .await[0][0]),
        int(&h
            .rows("SELECT COUNT(*) FROM \"analytics\".caudal_rejects")
            .await[0][0]),
    );
    // Objects 0-2 carry the same events (one reject per event id, plus one per id-less line
    // of each object); object 3's first four lines are object 0's.
    let no_id = int(&h
        .rows("SELECT COUNT(*) FROM \"reference\".caudal_rejects WHERE event_id IS NULL")
        .await[0][0]);
    assert_eq!(
        rejects,
        expected_rejects + 2 * no_id + head_no_id,
        "{isolation:?}: rejects lost or doubled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overlapping_loads_at_snapshot_isolation() {
    concurrent_overlapping_loads(Isolation::Snapshot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overlapping_loads_at_serializable_isolation() {
    concurrent_overlapping_loads(Isolation::Serializable).await;
}

/// Schema drift stops as little as possible: a DBA's extra nullable column changes nothing; a
/// real conflict (a NOT NULL column the rules do not know) holds only the objects with rows for
/// that table, with an error naming the column and the fix, and the others still load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_holds_only_the_objects_that_need_the_table() {
    let h = Harness::start("drift", Isolation::Snapshot).await;
    let lines = sample_lines();
    let page_view = common::gzip(&lines[0]);
    let purchase = common::gzip(&lines[1]);
    let keys: Vec<String> = (1..=3)
        .map(|i| key("shardId-000000000003", &format!("{i}00"), &format!("{i}99")))
        .collect();
    h.put_raw(&keys[0], &page_view).await;
    h.put_raw(&keys[1], &page_view).await;
    h.put_raw(&keys[2], &purchase).await;

    // First cold start migrates and loads a page view.
    let first = h.loader();
    let ev = sqs_event(&[(RAW_BUCKET, &keys[0])]);
    assert_eq!(
        invoke(&first, ev, common::ctx(120)).await.unwrap(),
        serde_json::json!({"batchItemFailures": []})
    );
    // A DBA adds a nullable column to page_views and a NOT NULL one to purchases.
    let (db, conn) = h.pg_config().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    db.batch_execute(
        "ALTER TABLE analytics.page_views ADD COLUMN dba_note VARCHAR(10); ALTER TABLE \
         analytics.purchases ADD COLUMN cost_center INT NOT NULL",
    )
    .await
    .unwrap();

    // A new cold start: the page view loads, the purchase is held (message m-1 fails).
    let second = h.loader();
    let ev = sqs_event(&[(RAW_BUCKET, &keys[1]), (RAW_BUCKET, &keys[2])]);
    let out = invoke(&second, ev, common::ctx(120)).await.unwrap();
    assert_eq!(
        out,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]})
    );
    let ledger = h
        .rows("SELECT raw_key FROM \"analytics\".caudal_ledger ORDER BY raw_key")
        .await;
    let loaded: Vec<&str> = ledger.iter().filter_map(|r| r[0].as_str()).collect();
    assert_eq!(loaded, [keys[0].as_str(), keys[1].as_str()]);

    // The DBA gives the column a default: after the re-check interval the purchase loads.
    // (Here a new cold start stands in for the interval.)
    db.batch_execute("ALTER TABLE analytics.purchases ALTER COLUMN cost_center SET DEFAULT 0")
        .await
        .unwrap();
    let third = h.loader();
    let ev = sqs_event(&[(RAW_BUCKET, &keys[2])]);
    assert_eq!(
        invoke(&third, ev, common::ctx(120)).await.unwrap(),
        serde_json::json!({"batchItemFailures": []})
    );
    let n = h.rows("SELECT COUNT(*) FROM \"analytics\".purchases").await;
    assert_eq!(int(&n[0][0]), 1);
}

/// A full load of long keys: 100 raw objects whose keys are near the 1 KB the ledger holds need
/// more than the Data API's 100 KB in ledger rows, so the ledger insert is cut into several
/// statements — every object still in the ledger exactly once, in the one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_rows_of_a_full_load_of_long_keys_fit_the_statement_limit() {
    let h = Harness::start("longkeys", Isolation::Snapshot).await;
    let lines = sample_lines();
    let n = rules_loader::sql::MAX_OBJECTS_PER_LOAD;
    let keys: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "raw/dt=2026-11-25/hr=19/{}/{i:04}.ndjson.gz",
                "p".repeat(980)
            )
        })
        .collect();
    for (i, k) in keys.iter().enumerate() {
        h.put_raw(k, &common::gzip(&lines[i % 3])).await;
    }
    let objects: Vec<(&str, &str)> = keys.iter().map(|k| (RAW_BUCKET, k.as_str())).collect();
    let state = h.loader();
    let out = invoke(&state, sqs_event(&objects), common::ctx(300))
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    let r = h
        .rows(
            "SELECT COUNT(*), COUNT(DISTINCT raw_key), COUNT(DISTINCT load_id) FROM \
             \"analytics\".caudal_ledger",
        )
        .await;
    assert_eq!(
        (int(&r[0][0]), int(&r[0][1]), int(&r[0][2])),
        (n as i64, n as i64, 1),
        "one load, every object once"
    );
    // The descriptor holds the batch as it ran: several ledger inserts, each within the limit.
    let listed =
        h.s3.list_objects_v2()
            .bucket(&h.config.staging_bucket)
            .prefix("staging/load-descriptors/")
            .send()
            .await
            .unwrap();
    let keys_listed: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys_listed.len(), 1, "{keys_listed:?}");
    let body =
        h.s3.get_object()
            .bucket(&h.config.staging_bucket)
            .key(keys_listed[0])
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
    let descriptor: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sqls: Vec<&str> = descriptor["sqls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    let ledger_inserts = sqls
        .iter()
        .filter(|s| s.starts_with("INSERT INTO \"analytics\".\"caudal_ledger\""))
        .count();
    assert!(ledger_inserts >= 2, "{ledger_inserts} ledger statement(s)");
    assert!(
        sqls.iter()
            .all(|s| s.len() <= rules_loader::sql::MAX_STATEMENT_BYTES)
    );
    let recon = h.rows(RECONCILIATION).await;
    assert_eq!(recon.len(), n);
    assert!(
        recon
            .iter()
            .all(|row| int(&row[8]) == 0 && int(&row[9]) == 0),
        "{recon:?}"
    );
}

/// A raw line for `event` sent by `principal` (as ingest records it), received at a fixed time.
fn line_from(principal: Option<&str>, id: &str, event: &str, seq: u64) -> Vec<u8> {
    let env = caudal_core::envelope::encode(
        &caudal_core::envelope::EventRef {
            id,
            id_generated: false,
            event_type: "page_view",
            raw: event.as_bytes(),
            event_time: None,
        },
        &caudal_core::envelope::RequestMeta {
            request_id: format!("req-{seq}"),
            received_at: Some("2026-11-25T19:55:17.500Z".into()),
            principal: principal.map(str::to_owned),
            ..caudal_core::envelope::RequestMeta::default()
        },
    );
    let coords = caudal_core::raw::KinesisCoords {
        shard_id: "shardId-000000000000".into(),
        sequence_number: seq.to_string().into(),
        arrival: "2026-11-25T19:55:18.000Z".into(),
        partition_key: "pk".into(),
        sub_sequence_number: None,
    };
    let mut out = Vec::new();
    caudal_core::raw::write_line(&mut out, &coords, &env).unwrap();
    out.pop();
    out
}

/// Event ids are unique per principal: the same id from two clients is two events, from the
/// same client (a retry) one; an invalid event re-sent by one client is one reject, and the
/// same invalid id from another client is that client's own reject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_is_scoped_to_the_principal() {
    let h = Harness::start("principal", Isolation::Snapshot).await;
    let ok = r#"{"type":"page_view","id":"same-1","ts":"2026-11-25T19:55:17.120Z","page":{"url":"https://x/"}}"#;
    // page_view requires `page`: a schema reject.
    let bad = r#"{"type":"page_view","id":"bad-1","ts":"2026-11-25T19:55:17.120Z"}"#;
    let (ann, bob) = (Some("arn:aws:iam::123456789012:user/ann"), Some("sub-bob"));
    let first = [
        line_from(ann, "same-1", ok, 1),
        line_from(bob, "same-1", ok, 2),
        line_from(None, "same-1", ok, 3),
        line_from(ann, "same-1", ok, 4), // Ann's retry inside one object
        line_from(ann, "bad-1", bad, 5),
        line_from(bob, "bad-1", bad, 6),
    ];
    // A later object: every client retries everything once more.
    let second = [
        line_from(ann, "same-1", ok, 7),
        line_from(bob, "same-1", ok, 8),
        line_from(None, "same-1", ok, 9),
        line_from(ann, "bad-1", bad, 10),
        line_from(bob, "bad-1", bad, 11),
    ];
    let keys = [
        key("shardId-000000000000", "1", "6"),
        key("shardId-000000000000", "7", "11"),
    ];
    h.put_raw(&keys[0], &common::gzip(&first.join(&b'\n')))
        .await;
    h.put_raw(&keys[1], &common::gzip(&second.join(&b'\n')))
        .await;
    for k in &keys {
        let out = invoke(&h.loader(), sqs_event(&[(RAW_BUCKET, k)]), common::ctx(120))
            .await
            .unwrap();
        assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    }
    let rows = h
        .rows(
            "SELECT COALESCE(principal, '-'), COUNT(*) FROM \"analytics\".page_views WHERE \
             event_id = 'same-1' GROUP BY 1 ORDER BY 1",
        )
        .await;
    let rows: Vec<(String, i64)> = rows
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), int(&r[1])))
        .collect();
    assert_eq!(
        rows,
        [
            ("-".to_owned(), 1),
            ("arn:aws:iam::123456789012:user/ann".to_owned(), 1),
            ("sub-bob".to_owned(), 1)
        ]
    );
    let rejects = h
        .rows(
            "SELECT principal, COUNT(*) FROM \"analytics\".caudal_rejects WHERE event_id = \
             'bad-1' GROUP BY 1 ORDER BY 1",
        )
        .await;
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert!(rejects.iter().all(|r| int(&r[1]) == 1), "{rejects:?}");
    let recon = h.rows(RECONCILIATION).await;
    assert!(
        recon
            .iter()
            .all(|row| int(&row[8]) == 0 && int(&row[9]) == 0),
        "{recon:?}"
    );
}

/// `(event_id, table)` of every row of `raw_key`'s object, and `(event_id, code)` of its
/// rejects, sorted.
async fn result_of(h: &Harness, raw_key: &str) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let union = EVENT_TABLES
        .iter()
        .map(|t| {
            format!(
                "SELECT event_id, '{t}' AS t FROM \"analytics\".{t} WHERE raw_key = '{raw_key}'"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let pairs = |rows: Vec<Vec<caudal_core::warehouse::Value>>| -> Vec<(String, String)> {
        rows.iter()
            .map(|r| {
                let s = |i: usize| r[i].as_str().unwrap_or("").to_owned();
                (s(0), s(1))
            })
            .collect()
    };
    let rows = pairs(
        h.rows(&format!(
            "SELECT event_id, t FROM ({union}) u ORDER BY 1, 2"
        ))
        .await,
    );
    let rejects = pairs(
        h.rows(&format!(
            "SELECT COALESCE(event_id, ''), code FROM \"analytics\".caudal_rejects WHERE raw_key = \
             '{raw_key}' ORDER BY 1, 2"
        ))
        .await,
    );
    (rows, rejects)
}

/// The ledger's rule version of `raw_key`.
async fn version_of(h: &Harness, raw_key: &str) -> String {
    let r = h
        .rows(&format!(
            "SELECT rule_version FROM \"analytics\".caudal_ledger WHERE raw_key = '{raw_key}'"
        ))
        .await;
    assert_eq!(r.len(), 1, "one ledger row for {raw_key}: {r:?}");
    r[0][0].as_str().unwrap().to_owned()
}

fn assert_reconciled(recon: &[Vec<caudal_core::warehouse::Value>]) {
    for row in recon {
        assert_eq!(int(&row[8]), 0, "difference must be 0: {row:?}");
        assert_eq!(int(&row[9]), 0, "ledger difference must be 0: {row:?}");
    }
}

/// A rules fix, then `reprocess`: an object's rows, rejects and ledger row are replaced by the
/// new rules' result in one transaction — a statement failing part way leaves the old result
/// whole, two loaders reprocessing the same object at once replace it once, a repeated
/// reprocess changes nothing, a reprocess of an object never loaded loads it, and an object
/// not named keeps its old result. Reconciliation is 0 after every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_replaces_an_objects_result_with_the_current_rules_in_one_transaction() {
    use caudal_core::command::Action;
    let h = Harness::start("reprocess", Isolation::Snapshot).await;
    let lines = sample_lines();
    let key_a = key("shardId-000000000000", "100", "199");
    let key_b = key("shardId-000000000000", "200", "299");
    let key_c = key("shardId-000000000001", "100", "199");
    h.put_raw(&key_a, &common::gzip(&lines.join(&b'\n'))).await;
    // B repeats A's first four records: duplicates of A's rows.
    h.put_raw(&key_b, &common::gzip(&lines[..4].join(&b'\n')))
        .await;
    h.put_raw(&key_c, &common::gzip(&lines.join(&b'\n'))).await;
    let old = h.loader();
    let out = invoke(
        &old,
        sqs_event(&[(RAW_BUCKET, &key_a), (RAW_BUCKET, &key_b)]),
        common::ctx(120),
    )
    .await
    .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    let v1 = old.config.rules.version().to_owned();
    let (rows_v1, rejects_v1) = result_of(&h, &key_a).await;
    let b_v1 = result_of(&h, &key_b).await;
    assert!(
        rows_v1.contains(&("se-0001".into(), "searches".into())),
        "{rows_v1:?}"
    );
    assert!(
        !rows_v1.iter().any(|(id, _)| id == "pv-health"),
        "filtered under v1"
    );

    // The fix is deployed: a new loader (a new execution environment) with the new rules.
    let shipped = caudal_core::rules::BUNDLED_RULES_YAML;
    let new = h.loader_with_rules(&testkit::rules_fix(shipped));
    let v2 = new.config.rules.version().to_owned();
    assert_ne!(v1, v2);
    // Its first invocation (an ordinary notification of B, already loaded) migrates; nothing
    // changes.
    let out = invoke(
        &new,
        command_event(Action::Load, &[(RAW_BUCKET, &key_b)]),
        common::ctx(120),
    )
    .await
    .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(version_of(&h, &key_b).await, v1);

    // 1. A statement fails part way (the last table's COPY names a column that is gone): the
    //    deletes and the first tables' inserts roll back with it; A keeps its v1 result whole.
    let (pg, conn) = h.pg_config().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    pg.batch_execute("ALTER TABLE analytics.unknown_events RENAME COLUMN payload TO payload_gone")
        .await
        .unwrap();
    let reprocess_a = command_event(Action::Reprocess, &[(RAW_BUCKET, &key_a)]);
    let out = invoke(&new, reprocess_a.clone(), common::ctx(60))
        .await
        .unwrap();
    assert_eq!(
        out["batchItemFailures"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );
    assert_eq!(version_of(&h, &key_a).await, v1);
    assert_eq!(
        result_of(&h, &key_a).await,
        (rows_v1.clone(), rejects_v1.clone())
    );
    assert_reconciled(&h.rows(RECONCILIATION).await);
    pg.batch_execute("ALTER TABLE analytics.unknown_events RENAME COLUMN payload_gone TO payload")
        .await
        .unwrap();

    // 2. The message comes back (after its visibility timeout: an invocation's failed token is
    //    only given up for the next generation once it is older than the invocation) while a
    //    second loader (another execution environment) got the same command: both run at
    //    once, A is replaced once.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let other = h.loader_with_rules(&testkit::rules_fix(shipped));
    let (x, y) = tokio::join!(
        invoke(&new, reprocess_a.clone(), common::ctx(120)),
        invoke(&other, reprocess_a.clone(), common::ctx(120)),
    );
    for out in [x.unwrap(), y.unwrap()] {
        assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    }
    assert_eq!(version_of(&h, &key_a).await, v2);
    let (rows_v2, rejects_v2) = result_of(&h, &key_a).await;
    assert!(
        rows_v2.contains(&("pv-health".into(), "page_views".into())),
        "no longer filtered"
    );
    assert!(
        !rows_v2.iter().any(|(id, _)| id == "se-0001"),
        "rejected under v2"
    );
    assert!(
        rejects_v2.iter().any(|(id, _)| id == "se-0001"),
        "{rejects_v2:?}"
    );
    let mut ids: Vec<&str> = rows_v2.iter().map(|(id, _)| id.as_str()).collect();
    ids.extend(
        rejects_v2
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| !id.is_empty()),
    );
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "every event of A once, as a row or a reject");
    let currencies = h
        .rows(&format!(
            "SELECT DISTINCT currency FROM \"analytics\".purchases WHERE raw_key = '{key_a}'"
        ))
        .await;
    let currencies: Vec<Option<&str>> = currencies.iter().map(|r| r[0].as_str()).collect();
    assert!(
        !currencies.is_empty()
            && currencies
                .iter()
                .all(|c| c.is_some_and(|c| c.len() == 3 && c == c.to_lowercase())),
        "lower-cased by the new mapping: {currencies:?}"
    );
    let ledger = h
        .rows(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT load_id) FROM \"analytics\".caudal_ledger WHERE raw_key = '{key_a}'"
        ))
        .await;
    assert_eq!(int(&ledger[0][0]), 1, "one ledger row");
    assert_eq!(
        result_of(&h, &key_b).await,
        b_v1,
        "B was not named: unchanged"
    );
    assert_eq!(version_of(&h, &key_b).await, v1);
    assert_reconciled(&h.rows(RECONCILIATION).await);

    // 3. The same command again, and a reprocess of C, never loaded: A is untouched, C loads.
    let load_a = h
        .rows(&format!(
            "SELECT load_id FROM \"analytics\".caudal_ledger WHERE raw_key = '{key_a}'"
        ))
        .await;
    let out = invoke(
        &new,
        command_event(
            Action::Reprocess,
            &[(RAW_BUCKET, &key_a), (RAW_BUCKET, &key_c)],
        ),
        common::ctx(120),
    )
    .await
    .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(
        h.rows(&format!(
            "SELECT load_id FROM \"analytics\".caudal_ledger WHERE raw_key = '{key_a}'"
        ))
        .await,
        load_a
    );
    assert_eq!(result_of(&h, &key_a).await, (rows_v2, rejects_v2));
    assert_eq!(version_of(&h, &key_c).await, v2);
    let recon = h.rows(RECONCILIATION).await;
    assert_eq!(recon.len(), 3);
    assert_reconciled(&recon);
}
