//! Handler tests: Lambda-shaped events from `events/`, S3 and the Data API mocked with
//! aws-smithy-mocks.

mod common;

use std::time::{Duration, SystemTime};

use aws_sdk_redshiftdata::types::StatusString;
use common::*;
use rules_loader::invoke;
use serde_json::json;

const Z: &str = "0000000000000000000000000000000000000000000000000000000000000";
const ETAG: &str = "0123456789abcdef0123456789abcdef";

fn key1() -> String {
    format!("raw/dt=2026-11-25/hr=19/shardId-000000000000/{Z}101-{Z}103.ndjson.gz")
}
fn key2() -> String {
    format!("raw/dt=2026-11-25/hr=19/shardId-000000000001/{Z}201-{Z}202.ndjson.gz")
}
fn key3() -> String {
    format!("raw/dt=2026-11-25/hr=19/shardId-000000000002/{Z}301-{Z}301.ndjson.gz")
}

fn failures(resp: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = resp["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// The load scope of [`config`]: workgroup, database, schema.
const SCOPE: &str = "workgroup:caudal/dev/analytics";
const LEDGER: &str = "\"analytics\".\"caudal_ledger\"";
const LOADED_AT: &str = "CAST('2026-11-25T20:00:05.123456Z' AS TIMESTAMPTZ)";

/// The exact batch for the happy path's raw object.
fn expected_batch(load_id: &str, version: &str) -> Vec<String> {
    let k = key1();
    let staging = format!("{load_id}-{ATTEMPT}");
    vec![
        "LOCK \"analytics\".\"caudal_ledger\"".to_owned(),
        "CREATE TEMP TABLE \"caudal_stage_0\" (LIKE \"analytics\".\"page_views\" INCLUDING DEFAULTS)".to_owned(),
        format!(
            "COPY \"caudal_stage_0\" (\"event_time\", \"url\", \"event_id\", \"event_type\", \
             \"received_at\", \"raw_key\", \"raw_line\", \"rule_version\", \"loaded_at\", \
             \"principal\") FROM 's3://caudal-staging/staging/page_views/{staging}/manifest.json' IAM_ROLE \
             'arn:aws:iam::123456789012:role/caudal-copy' MANIFEST FORMAT AS CSV NULL AS \
             '~caudal~null~' ZSTD DATEFORMAT 'YYYY-MM-DD' TIMEFORMAT 'auto'"
        ),
        format!(
            "INSERT INTO \"analytics\".\"page_views\" (\"event_time\", \"url\", \"event_id\", \
             \"event_type\", \"received_at\", \"raw_key\", \"raw_line\", \"rule_version\", \
             \"loaded_at\", \"principal\") SELECT \"event_time\", \"url\", \"event_id\", \
             \"event_type\", \"received_at\", \"raw_key\", \"raw_line\", \"rule_version\", \
             \"loaded_at\", \"principal\" FROM (SELECT s.*, ROW_NUMBER() OVER (PARTITION BY \
             s.\"event_id\", s.\"principal\" ORDER BY s.\"raw_key\", s.\"raw_line\") AS caudal_rn \
             FROM \"caudal_stage_0\" AS s WHERE NOT EXISTS (SELECT 1 FROM {LEDGER} AS l WHERE \
             l.\"raw_key\" = s.\"raw_key\") AND NOT EXISTS (SELECT 1 FROM \
             \"analytics\".\"page_views\" AS t WHERE t.\"event_id\" = s.\"event_id\" AND \
             (t.\"principal\" = s.\"principal\" OR (t.\"principal\" IS NULL AND s.\"principal\" \
             IS NULL)) AND t.\"received_at\" >= CAST('2026-11-18T19:55:17.500000Z' AS TIMESTAMPTZ))) AS d \
             WHERE d.caudal_rn = 1"
        ),
        "CREATE TEMP TABLE \"caudal_stage_rejects\" (LIKE \"analytics\".\"caudal_rejects\" INCLUDING \
         DEFAULTS)"
            .to_owned(),
        format!(
            "COPY \"caudal_stage_rejects\" (\"event_id\", \"event_type\", \"raw_key\", \
             \"raw_line\", \"code\", \"rule\", \"path\", \"message\", \"rule_version\", \
             \"loaded_at\", \"raw_text\", \"raw_truncated\", \"principal\") FROM \
             's3://caudal-staging/staging/caudal_rejects/{staging}/manifest.json' IAM_ROLE \
             'arn:aws:iam::123456789012:role/caudal-copy' MANIFEST FORMAT AS CSV NULL AS \
             '~caudal~null~' ZSTD DATEFORMAT 'YYYY-MM-DD' TIMEFORMAT 'auto'"
        ),
        format!(
            "INSERT INTO \"analytics\".\"caudal_rejects\" (\"event_id\", \"event_type\", \
             \"raw_key\", \"raw_line\", \"code\", \"rule\", \"path\", \"message\", \
             \"rule_version\", \"loaded_at\", \"raw_text\", \"raw_truncated\", \"principal\") \
             SELECT \"event_id\", \"event_type\", \"raw_key\", \"raw_line\", \"code\", \
             \"rule\", \"path\", \"message\", \"rule_version\", \"loaded_at\", \"raw_text\", \
             \"raw_truncated\", \"principal\" FROM (SELECT s.*, ROW_NUMBER() OVER (PARTITION BY \
             s.\"event_id\", s.\"principal\", CASE WHEN s.\"event_id\" IS NULL THEN s.\"raw_key\" END, CASE WHEN s.\"event_id\" \
             IS NULL THEN s.\"raw_line\" END ORDER BY s.\"raw_key\", s.\"raw_line\") AS caudal_rn \
             FROM \"caudal_stage_rejects\" AS s WHERE NOT EXISTS (SELECT 1 FROM {LEDGER} AS l \
             WHERE l.\"raw_key\" = s.\"raw_key\") AND (s.\"event_id\" IS NULL OR NOT EXISTS \
             (SELECT 1 FROM \"analytics\".\"caudal_rejects\" AS r WHERE r.\"event_id\" = \
             s.\"event_id\" AND (r.\"principal\" = s.\"principal\" OR (r.\"principal\" IS NULL \
             AND s.\"principal\" IS NULL)) AND r.\"loaded_at\" >= CAST('2026-11-18T20:00:05.123456Z' AS \
             TIMESTAMPTZ)))) AS d WHERE d.caudal_rn = 1"
        ),
        format!(
            "INSERT INTO {LEDGER} (\"raw_key\", \"etag\", \"records\", \"valid\", \"filtered\", \
             \"filtered_total\", \"rejected\", \"loaded\", \"duplicates\", \"rule_version\", \
             \"load_id\", \"loaded_at\") SELECT o.raw_key, o.etag, o.records, o.valid, \
             JSON_PARSE(o.filtered), o.filtered_total, o.rejected, JSON_PARSE(o.loaded), o.valid \
             + o.rejected - COALESCE(n.inserted, 0), '{version}', '{load_id}', {LOADED_AT} FROM \
             (SELECT '{k}' AS raw_key, '{ETAG}' AS etag, 4 AS records, 2 AS valid, \
             '{{\"drop_internal_test\":1}}' AS filtered, 1 AS filtered_total, 1 AS rejected, \
             '{{\"page_views\":2}}' AS loaded) AS o LEFT JOIN (SELECT x.raw_key, COUNT(*) AS \
             inserted FROM (SELECT s.\"raw_key\" FROM \"caudal_stage_0\" AS s JOIN \
             \"analytics\".\"page_views\" AS t ON t.\"event_id\" = s.\"event_id\" AND \
             t.\"raw_key\" = s.\"raw_key\" AND t.\"raw_line\" = s.\"raw_line\" AND t.\"loaded_at\" \
             = {LOADED_AT} UNION ALL SELECT s.\"raw_key\" FROM \"caudal_stage_rejects\" AS s JOIN \
             \"analytics\".\"caudal_rejects\" AS r ON r.\"raw_key\" = s.\"raw_key\" AND \
             r.\"raw_line\" = s.\"raw_line\" AND r.\"loaded_at\" = {LOADED_AT}) AS x GROUP BY \
             x.raw_key) AS n ON n.raw_key = o.raw_key WHERE NOT EXISTS (SELECT 1 FROM {LEDGER} AS \
             l WHERE l.\"raw_key\" = o.raw_key)"
        ),
    ]
}

#[tokio::test(start_paused = true)]
async fn happy_path_stages_and_submits_the_exact_batch() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let api = DataApi::new(&[], vec![StatusString::Started, StatusString::Finished]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);

    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(resp, json!({"batchItemFailures": []}));

    // The ledger was asked first, with the decoded key as a real parameter.
    let executes = api.executes.lock().unwrap().clone();
    assert!(executes[0].0.starts_with(
        "SELECT \"raw_key\", \"etag\", \"rule_version\" FROM \"analytics\".\"caudal_ledger\""
    ));
    assert_eq!(executes[0].1, vec![("k0".to_owned(), key1())]);

    let load_id = caudal_core::keys::load_id(SCOPE, [(key1().as_str(), ETAG)]);
    let version = st.config.rules.version().to_owned();
    let batches = api.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0].client_token.as_deref(),
        Some(format!("{load_id}-0").as_str())
    );
    let expected = expected_batch(&load_id, &version);
    for (i, (got, want)) in batches[0].sqls.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "statement {i}");
    }
    assert_eq!(batches[0].sqls.len(), expected.len());

    // Staging files: parts, manifests, human-readable rejects, and the descriptor last.
    let puts = s3.put_keys();
    let part = format!("staging/page_views/{load_id}-{ATTEMPT}/part-0000.csv.zst");
    let manifest = format!("staging/page_views/{load_id}-{ATTEMPT}/manifest.json");
    let descriptor = format!("staging/load-descriptors/{load_id}.json");
    for k in [
        &part,
        &manifest,
        &format!("staging/caudal_rejects/{load_id}-{ATTEMPT}/part-0000.csv.zst"),
        &format!("rejected/{load_id}-{ATTEMPT}/rejects.ndjson.gz"),
        &descriptor,
    ] {
        assert!(puts.contains(k), "{k} not written: {puts:?}");
    }
    assert_eq!(puts.last(), Some(&descriptor));
    assert!(
        puts.iter().all(|k| !k.starts_with("raw/")),
        "wrote into raw/: {puts:?}"
    );

    let csv = unstage(&s3.put_body(&part).unwrap());
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[0].starts_with(
            "2026-11-25T19:55:17.120000Z,\"https://shop.example.com/a\",\"pv-1\",\"page_view\","
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with(&format!(
            ",1,\"{version}\",2026-11-25T20:00:05.123456Z,~caudal~null~"
        )),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(",4,\""), "{}", lines[1]);
    let m: serde_json::Value = serde_json::from_slice(&s3.put_body(&manifest).unwrap()).unwrap();
    assert_eq!(
        m["entries"][0]["url"],
        format!("s3://caudal-staging/{part}")
    );
    assert_eq!(m["entries"][0]["mandatory"], true);
    let rejects = gunzip(
        &s3.put_body(&format!("rejected/{load_id}-{ATTEMPT}/rejects.ndjson.gz"))
            .unwrap(),
    );
    let r: serde_json::Value = serde_json::from_str(rejects.lines().next().unwrap()).unwrap();
    assert_eq!(r["code"], "unknown_type");
    assert_eq!(r["raw_line"], 3);
    assert_eq!(r["event_id"], "nl-1");

    // Polled until FINISHED; the load id went into the ledger inside the load itself, so
    // nothing follows the look-up (no follow-up UPDATE that could be lost).
    assert_eq!(api.load_describes(), 2);
    assert_eq!(api.executes.lock().unwrap().len(), 1);
    // The descriptor is written only if no other attempt wrote one first.
    assert_eq!(s3.conditional_puts(), vec![descriptor.clone()]);
}

#[tokio::test(start_paused = true)]
async fn a_concurrent_attempt_that_staged_first_wins_and_its_sql_is_submitted() {
    // Another invocation of the same load finished staging between our descriptor look-up and
    // our descriptor write: the conditional write fails, we adopt its descriptor (its staging
    // prefix, its loaded_at) and submit its SQL under the shared token.
    let load_id = caudal_core::keys::load_id(SCOPE, [(key1().as_str(), ETAG)]);
    let descriptor_key = format!("staging/load-descriptors/{load_id}.json");
    let winner = {
        let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
        let api = DataApi::new(&[], vec![StatusString::Finished]);
        let (s3c, rsc) = clients(&s3, &api);
        let st = state(s3c, rsc)
            .with_attempt_ids(std::sync::Arc::new(|| "winner".to_owned()))
            .with_clock(std::sync::Arc::new(
                || time::macros::datetime!(2026-11-25 20:00:01 UTC),
            ));
        invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
            .await
            .unwrap();
        s3.put_body(&descriptor_key).unwrap()
    };
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    s3.appears_on_conditional_put(&descriptor_key, winner.clone());
    let api = DataApi::new(&[], vec![StatusString::Finished]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    let d: serde_json::Value = serde_json::from_slice(&winner).unwrap();
    let batches = api.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(serde_json::json!(batches[0].sqls), d["sqls"]);
    assert!(batches[0].sqls[2].contains(&format!("{load_id}-winner/manifest.json")));
    assert_eq!(
        batches[0].client_token.as_deref(),
        Some(format!("{load_id}-0").as_str())
    );
    // Our own staging went under our attempt's prefix and never touched the winner's.
    assert!(
        s3.put_keys()
            .iter()
            .filter(|k| k.starts_with("staging/page_views/"))
            .all(|k| k.contains(&format!("{load_id}-{ATTEMPT}/"))),
        "{:?}",
        s3.put_keys()
    );
}

#[tokio::test(start_paused = true)]
async fn failed_statement_reports_the_message() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let api = DataApi::new(&[], vec![StatusString::Failed]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(
        failures(&resp),
        vec!["7f1c0a3e-0001-4d1e-9a55-5c8e2a1b0001"]
    );
    assert_eq!(api.batches().len(), 1);
    // No statement id recorded for a failed load.
    assert_eq!(api.executes.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn aborted_statement_reports_the_message() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let api = DataApi::new(&[], vec![StatusString::Picked, StatusString::Aborted]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(
        failures(&resp),
        vec!["7f1c0a3e-0001-4d1e-9a55-5c8e2a1b0001"]
    );
    assert_eq!(api.load_describes(), 2);
}

#[tokio::test(start_paused = true)]
async fn slow_statement_is_polled_until_finished() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let mut statuses = vec![StatusString::Submitted, StatusString::Picked];
    statuses.extend(std::iter::repeat_n(StatusString::Started, 6));
    statuses.push(StatusString::Finished);
    let api = DataApi::new(&[], statuses);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let started = tokio::time::Instant::now();
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    assert_eq!(api.load_describes(), 9);
    // Backoff between polls: 8 waits of at least the base delay (250 ms) each.
    assert!(
        started.elapsed() >= Duration::from_millis(8 * 250),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn already_ledgered_object_is_not_loaded_again() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let api = DataApi::new(&[&key1()], vec![StatusString::Finished]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    assert!(
        api.batches().is_empty(),
        "no BatchExecuteStatement for a ledgered object"
    );
    assert!(
        s3.gets.lock().unwrap().is_empty(),
        "the object is not even read"
    );
    assert!(s3.puts.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn multi_event_decodes_keys_ignores_test_events_and_other_prefixes() {
    let s3 = S3World::with(&[
        (&key1(), raw_object(), ETAG),
        (&key2(), raw_object(), "fedcba9876543210fedcba9876543210"),
        (
            &key3(),
            gzip(b"not json\n"),
            "00112233445566778899aabbccddeeff",
        ),
    ]);
    let api = DataApi::new(&[], vec![StatusString::Finished]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let resp = invoke(&st, event_file("rules-loader-sqs-multi.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    // %3D decoded; the duplicate notification of key1 read once; raw-invalid/ never read.
    let mut gets: Vec<String> = s3
        .gets
        .lock()
        .unwrap()
        .iter()
        .filter(|k| k.starts_with("raw"))
        .cloned()
        .collect();
    gets.sort();
    assert_eq!(gets, vec![key1(), key2(), key3()]);
    // One ledger look-up with the three decoded keys, one load for all of them.
    let executes = api.executes.lock().unwrap().clone();
    assert_eq!(executes[0].1.len(), 3);
    let batches = api.batches();
    assert_eq!(batches.len(), 1);
    let ledger = batches[0].sqls.last().unwrap();
    for k in [key1(), key2(), key3()] {
        assert!(
            ledger.contains(&format!("'{k}' AS raw_key")),
            "{k} missing in {ledger}"
        );
    }
    // key3's only line is not JSON: a reject, not a failure.
    assert!(
        ledger.contains(
            "1 AS records, 0 AS valid, '{}' AS filtered, 0 AS filtered_total, 1 AS rejected"
        ),
        "{ledger}"
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_while_running_fails_then_the_retry_reattaches_with_the_same_token() {
    // First invocation: the statement is still running when the deadline comes.
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let api = DataApi::new(&[], vec![StatusString::Started]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(40))
        .await
        .unwrap();
    assert_eq!(
        failures(&resp),
        vec!["7f1c0a3e-0001-4d1e-9a55-5c8e2a1b0001"]
    );
    assert!(
        api.load_describes() >= 3,
        "polled {} times",
        api.load_describes()
    );
    let first = api.batches();
    assert_eq!(first.len(), 1);
    let load_id = caudal_core::keys::load_id(SCOPE, [(key1().as_str(), ETAG)]);
    let descriptor_key = format!("staging/load-descriptors/{load_id}.json");
    let descriptor = s3.put_body(&descriptor_key).unwrap();

    // Redelivery: the staging is found, nothing is written again, the same SQL goes out with
    // the same ClientToken, and the Data API hands back the same statement, now FINISHED.
    let s3b = S3World::with(&[
        (&key1(), raw_object(), ETAG),
        (
            &descriptor_key,
            descriptor,
            "abcdef0123456789abcdef0123456789",
        ),
    ]);
    let api_b = DataApi::new(&[], vec![StatusString::Finished]);
    api_b
        .ids
        .lock()
        .unwrap()
        .insert(first[0].client_token.clone().unwrap(), "load-1".into());
    let (s3c, rsc) = clients(&s3b, &api_b);
    let st = state(s3c, rsc).with_clock(std::sync::Arc::new(
        || time::macros::datetime!(2026-11-25 20:40:00 UTC),
    ));
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    assert!(
        s3b.puts.lock().unwrap().is_empty(),
        "re-staged: {:?}",
        s3b.put_keys()
    );
    let second = api_b.batches();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].client_token, first[0].client_token);
    assert_eq!(second[0].sqls, first[0].sqls, "byte-identical SQL on retry");
    assert_eq!(
        api_b.describes.lock().unwrap().last().map(String::as_str),
        Some("load-1")
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_that_failed_in_an_earlier_invocation_moves_to_the_next_generation() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let api = std::sync::Arc::new({
        let a = DataApi::new(&[], vec![StatusString::Failed, StatusString::Finished]);
        let mut a = std::sync::Arc::try_unwrap(a).ok().unwrap();
        a.load_created_at = SystemTime::now() - Duration::from_secs(3600);
        a
    });
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    let batches = api.batches();
    let load_id = caudal_core::keys::load_id(SCOPE, [(key1().as_str(), ETAG)]);
    let tokens: Vec<_> = batches
        .iter()
        .map(|b| b.client_token.clone().unwrap())
        .collect();
    assert_eq!(tokens, vec![format!("{load_id}-0"), format!("{load_id}-1")]);
}

#[tokio::test(start_paused = true)]
async fn poison_objects_fail_alone() {
    let bad = format!("raw/dt=2026-11-25/hr=19/shardId-000000000001/{Z}201-{Z}202.ndjson.gz");
    let s3 = S3World::with(&[
        (&key1(), raw_object(), ETAG),
        (
            &bad,
            b"definitely not gzip".to_vec(),
            "fedcba9876543210fedcba9876543210",
        ),
    ]);
    let api = DataApi::new(&[], vec![StatusString::Finished]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let mut ev = event_file("rules-loader-sqs-multi.json");
    // Keep only the key1 and key2 messages.
    let recs: Vec<serde_json::Value> = ev["Records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let id = r["messageId"].as_str().unwrap();
            id.ends_with("0001") || id.ends_with("0003")
        })
        .cloned()
        .collect();
    ev["Records"] = serde_json::Value::Array(recs);
    let resp = invoke(&st, ev, ctx(120)).await.unwrap();
    assert_eq!(
        failures(&resp),
        vec!["7f1c0a3e-0002-4d1e-9a55-5c8e2a1b0003"]
    );
    let ledger = api.batches()[0].sqls.last().unwrap().clone();
    assert!(ledger.contains(&key1()));
    assert!(!ledger.contains(&bad), "poison object in the ledger insert");
}

#[tokio::test(start_paused = true)]
async fn invalid_raw_keys_and_bodies_fail_permanently_without_io() {
    let api = DataApi::new(&[], vec![StatusString::Finished]);
    let s3 = S3World::with(&[]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let mut ev = event_file("rules-loader-sqs.json");
    let mut bad_key = ev["Records"][0].clone();
    bad_key["messageId"] = json!("bad-key");
    bad_key["body"] = json!(
        ev["Records"][0]["body"]
            .as_str()
            .unwrap()
            .replace("shardId-000000000000", "shard%27%3B+DROP+TABLE+x%3B")
    );
    let mut bad_body = ev["Records"][0].clone();
    bad_body["messageId"] = json!("bad-body");
    bad_body["body"] = json!("{not json");
    ev["Records"] = json!([bad_key, bad_body]);
    let resp = invoke(&st, ev, ctx(120)).await.unwrap();
    assert_eq!(failures(&resp), vec!["bad-body", "bad-key"]);
    assert!(api.executes.lock().unwrap().is_empty());
    assert!(s3.gets.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn direct_s3_event_loads_and_reports_errors() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let api = DataApi::new(&[], vec![StatusString::Finished]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let resp = invoke(&st, event_file("rules-loader-s3-put.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(resp["loaded"], 1);
    assert_eq!(resp["failed"], 0);

    let api = DataApi::new(&[], vec![StatusString::Failed]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let err = invoke(&st, event_file("rules-loader-s3-put.json"), ctx(120))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failed to load"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn unknown_payload_shape_is_an_error() {
    let api = DataApi::new(&[], vec![]);
    let s3 = S3World::with(&[]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    assert!(
        invoke(&st, json!({"hello": "world"}), ctx(10))
            .await
            .is_err()
    );
    let resp = invoke(&st, json!({"Records": []}), ctx(10)).await.unwrap();
    assert_eq!(resp, json!({"batchItemFailures": []}));
}

const MESSAGE_ID: &str = "7f1c0a3e-0001-4d1e-9a55-5c8e2a1b0001";

/// The handler with postponing configured: the queue URL and a mocked SQS.
fn postponing_state(
    s3c: aws_sdk_s3::Client,
    rsc: aws_sdk_redshiftdata::Client,
    sqs: &std::sync::Arc<SqsWorld>,
    migrate_on_start: bool,
) -> rules_loader::State {
    let mut cfg = config(RULES);
    cfg.queue_url = Some(QUEUE_URL.into());
    cfg.migrate_on_start = migrate_on_start;
    rules_loader::State::new(cfg, s3c, rsc)
        .with_clock(std::sync::Arc::new(loaded_at))
        .with_sqs(sqs.client())
}

fn sqs_body(event: &serde_json::Value) -> String {
    event["Records"][0]["body"].as_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_migration_that_cannot_run_postpones_the_messages_untried() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let sqs = std::sync::Arc::new(SqsWorld::default());
    let st = postponing_state(s3.client(), failing_data_api(true), &sqs, true);
    let event = event_file("rules-loader-sqs.json");
    let resp = invoke(&st, event.clone(), ctx(120)).await.unwrap();
    assert_eq!(
        failures(&resp),
        Vec::<String>::new(),
        "acknowledged: a copy was sent"
    );
    let sent = sqs.sent.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![(sqs_body(&event), Some(60), Some("1".to_owned()))],
        "the same body, byte for byte, delayed, counted"
    );
    assert!(s3.gets.lock().unwrap().is_empty(), "nothing was tried");
}

#[tokio::test(start_paused = true)]
async fn a_transient_ledger_failure_postpones_and_a_permanent_one_fails() {
    for (retryable, postponed) in [(true, true), (false, false)] {
        let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
        let sqs = std::sync::Arc::new(SqsWorld::default());
        let st = postponing_state(s3.client(), failing_data_api(retryable), &sqs, false);
        let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
            .await
            .unwrap();
        let sent = sqs.sent.lock().unwrap().len();
        if postponed {
            assert_eq!((failures(&resp), sent), (vec![], 1));
        } else {
            assert_eq!((failures(&resp), sent), (vec![MESSAGE_ID.to_owned()], 0));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn postponements_are_counted_and_back_off() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let sqs = std::sync::Arc::new(SqsWorld::default());
    let st = postponing_state(s3.client(), failing_data_api(true), &sqs, true);
    let mut event = event_file("rules-loader-sqs.json");
    event["Records"][0]["messageAttributes"] = json!({"caudal-postponed":
        {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"}});
    let resp = invoke(&st, event.clone(), ctx(120)).await.unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    let sent = sqs.sent.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![(sqs_body(&event), Some(480), Some("4".to_owned()))]
    );
}

static EMF_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[tokio::test(start_paused = true)]
async fn a_postponed_copy_keeps_the_first_send_time_and_its_age_is_measured() {
    let now_ms = || {
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let sqs = std::sync::Arc::new(SqsWorld::default());
    let st = postponing_state(s3.client(), failing_data_api(true), &sqs, true);
    let _ = caudal_core::telemetry::set_emf_sink(|l| EMF_LINES.lock().unwrap().push(l.to_owned()));

    // No SentTimestamp and no attribute: the copy says "first sent now".
    let mut event = event_file("rules-loader-sqs.json");
    event["Records"][0]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("SentTimestamp");
    let before = now_ms();
    invoke(&st, event, ctx(120)).await.unwrap();
    let first: u64 = sqs.first_sent.lock().unwrap()[0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first >= before && first <= now_ms(), "{first} not now");

    // An hour-old copy: the next copy keeps the hour, and the age metric says an hour.
    let hour_ago = (now_ms() - 3_600_000).to_string();
    let mut event = event_file("rules-loader-sqs.json");
    event["Records"][0]["messageAttributes"] = json!({"caudal-first-sent":
        {"stringValue": hour_ago, "stringListValues": [], "binaryListValues": [], "dataType": "Number"}});
    invoke(&st, event, ctx(120)).await.unwrap();
    assert_eq!(
        sqs.first_sent.lock().unwrap()[1].as_deref(),
        Some(hour_ago.as_str())
    );
    let ages: Vec<(f64, f64)> = EMF_LINES
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["PostponedAgeSeconds"].as_f64()?, v["Postponed"].as_f64()?))
        })
        .collect();
    assert!(
        ages.iter()
            .any(|(age, n)| (3600.0..3700.0).contains(age) && *n == 1.0),
        "{ages:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_load_measures_ingest_to_loaded_latency_of_its_rows() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let api = DataApi::new(&[], vec![StatusString::Finished]);
    let (s3c, rsc) = clients(&s3, &api);
    let st = state(s3c, rsc);
    let _ = caudal_core::telemetry::set_emf_sink(|l| EMF_LINES.lock().unwrap().push(l.to_owned()));
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    let load_id = caudal_core::keys::load_id(SCOPE, [(key1().as_str(), ETAG)]);
    // Other tests load the same object at the same time (one EMF sink for the process): look
    // at every line of this load id, each one load's.
    let lines: Vec<Vec<f64>> = EMF_LINES
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["LoadId"] == load_id.as_str())
        .filter_map(|v| v["IngestToLoadedMs"].as_array().cloned())
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .collect();
    // Two rows (pv-1 twice; pv-2 is filtered, nl-1 rejected), received at 19:55:17.5: one
    // value per load, the bucket's middle (17.55 s) to now.
    let received = time::macros::datetime!(2026-11-25 19:55:17.55 UTC);
    let expected = (time::OffsetDateTime::now_utc() - received).whole_milliseconds() as f64;
    assert!(!lines.is_empty(), "no IngestToLoadedMs line");
    for values in &lines {
        assert_eq!(values.len(), 1, "{values:?}");
        assert!(
            (values[0] - expected).abs() < 5_000.0,
            "{values:?} vs {expected}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_that_cannot_be_postponed_is_reported_failed() {
    // SQS refuses the copy; or no queue is configured (a direct invocation set-up).
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let sqs = std::sync::Arc::new(SqsWorld {
        refuse: true,
        ..SqsWorld::default()
    });
    let st = postponing_state(s3.client(), failing_data_api(true), &sqs, true);
    let _ = caudal_core::telemetry::set_emf_sink(|l| EMF_LINES.lock().unwrap().push(l.to_owned()));
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(failures(&resp), vec![MESSAGE_ID]);
    let zero_lines = EMF_LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["Postponed"].as_f64() == Some(0.0))
        })
        .count();
    assert_eq!(zero_lines, 0, "nothing postponed, no Postponed metric line");
    let mut cfg = config(RULES);
    cfg.migrate_on_start = true;
    let st = rules_loader::State::new(cfg, s3.client(), failing_data_api(true));
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(120))
        .await
        .unwrap();
    assert_eq!(failures(&resp), vec![MESSAGE_ID]);
}

#[tokio::test(start_paused = true)]
async fn no_load_starts_too_close_to_the_deadline() {
    let s3 = S3World::with(&[(&key1(), raw_object(), ETAG)]);
    let api = DataApi::new(&[], vec![StatusString::Finished]);
    let (s3c, rsc) = clients(&s3, &api);
    let sqs = std::sync::Arc::new(SqsWorld::default());
    let st = postponing_state(s3c, rsc, &sqs, false);
    // 15 s left, minus the 3 s margin: less than the 20 s a load may need.
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(15))
        .await
        .unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    assert_eq!(sqs.sent.lock().unwrap().len(), 1);
    assert!(
        api.executes.lock().unwrap().is_empty(),
        "the warehouse was not asked"
    );
    assert!(api.batches().is_empty());
    // With time enough the same message loads.
    let resp = invoke(&st, event_file("rules-loader-sqs.json"), ctx(60))
        .await
        .unwrap();
    assert_eq!(failures(&resp), Vec::<String>::new());
    assert_eq!(api.batches().len(), 1);
    assert_eq!(sqs.sent.lock().unwrap().len(), 1, "not postponed again");
}

/// A loader in a second region: its Data API client goes to the warehouse's region, S3 and SQS
/// stay in its own (the local Data API does not check the signing region, so only this catches a
/// client built in the wrong one).
#[tokio::test]
async fn a_second_region_loader_calls_the_warehouse_in_its_region() {
    let sdk = testkit::sdk_config_in("http://127.0.0.1:9", "us-west-2").await;
    let clients =
        caudal_aws::clients::ClientFactory::new(sdk, caudal_aws::clients::ClientOptions::EMULATOR);
    let base = [
        ("STAGING_BUCKET", "caudal-staging"),
        ("REDSHIFT_WORKGROUP", "wg"),
        ("REDSHIFT_DATABASE", "dev"),
        (
            "COPY_ROLE_ARN",
            "arn:aws:iam::123456789012:role/caudal-copy",
        ),
    ];
    let region = |c: Option<&aws_sdk_s3::config::Region>| c.map(|r| r.as_ref().to_owned());
    let home = rules_loader::start(&caudal_core::config::Env::from_pairs(&base), &clients)
        .expect("starts");
    assert_eq!(
        region(home.redshift.config().region()),
        Some("us-west-2".into())
    );
    let mut pairs = base.to_vec();
    pairs.extend([
        ("REDSHIFT_REGION", "us-east-1"),
        ("STAGING_REGION", "us-west-2"),
    ]);
    let second = rules_loader::start(&caudal_core::config::Env::from_pairs(&pairs), &clients)
        .expect("starts");
    assert_eq!(
        region(second.redshift.config().region()),
        Some("us-east-1".into())
    );
    assert_eq!(
        region(second.s3.config().region()),
        Some("us-west-2".into())
    );
    assert_eq!(second.config.staging_region.as_deref(), Some("us-west-2"));
}
