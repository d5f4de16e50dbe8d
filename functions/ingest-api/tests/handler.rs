//! Handler tests: Lambda-shaped events from `events/ingest-api-*.json` go through
//! [`ingest_api::invoke`] exactly as the runtime would deliver them; Kinesis is mocked with
//! aws-smithy-mocks (success, partial failures, throttling, 5xx, permanent errors).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::operation::put_records::{PutRecordsInput, PutRecordsOutput};
use aws_sdk_kinesis::types::PutRecordsResultEntry;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use base64::Engine;
use caudal_core::codec::Codec;
use caudal_core::config::Env;
use caudal_core::envelope::Envelope;
use caudal_core::retry::RetryPolicy;
use ingest_api::{Config, State, invoke};
use lambda_http::Context;
use serde_json::{Value, json};

const STREAM: &str = "caudal-events-test";

fn event(case: &str) -> Value {
    let path = format!(
        "{}/../../events/ingest-api-{case}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// The body the event file carries, decoded as API Gateway would hand it over.
fn event_body(ev: &Value) -> Vec<u8> {
    let body = ev["body"].as_str().unwrap();
    if ev["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    } else {
        body.as_bytes().to_vec()
    }
}

fn config(extra: &[(&str, &str)]) -> Config {
    // Most tests look at single-event records; the packed ones set PACK_TARGET_BYTES.
    let mut vars: HashMap<String, String> = [("STREAM_NAME", STREAM), ("PACK_TARGET_BYTES", "0")]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.entry("RUST_LOG".into())
        .or_insert_with(|| "off".into());
    Config::from_env(&Env::from_map(vars)).unwrap()
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

fn state(config: Config, mode: RuleMode, rules: &[&Rule]) -> State {
    let client = mock_client!(aws_sdk_kinesis, mode, rules, |c| c
        .retry_config(RetryConfig::disabled()));
    State::new(config, client)
        .with_retry_policy(fast_policy())
        .with_metrics(std::env::var_os("TEST_LOG").is_some())
}

fn ok_entry(i: usize) -> PutRecordsResultEntry {
    PutRecordsResultEntry::builder()
        .shard_id("shardId-000000000000")
        .sequence_number(format!(
            "49590338271490256608559692538361571095921575989136{i:06}"
        ))
        .build()
}

fn err_entry(code: &str) -> PutRecordsResultEntry {
    PutRecordsResultEntry::builder()
        .error_code(code)
        .error_message("Rate exceeded for shard shardId-000000000000")
        .build()
}

fn output(entries: Vec<PutRecordsResultEntry>) -> PutRecordsOutput {
    let failed = entries.iter().filter(|e| e.error_code().is_some()).count();
    PutRecordsOutput::builder()
        .failed_record_count(i32::try_from(failed).unwrap())
        .set_records(Some(entries))
        .build()
        .unwrap()
}

/// A Kinesis mock that writes pv-0001 and throttles every other record on every attempt.
fn only_pv_0001_gets_through() -> Rule {
    mock!(aws_sdk_kinesis::Client::put_records).then_compute_output(|req| {
        output(
            req.records()
                .iter()
                .map(|r| {
                    if r.partition_key() == Some("pv-0001") {
                        ok_entry(0)
                    } else {
                        err_entry("ProvisionedThroughputExceededException")
                    }
                })
                .collect(),
        )
    })
}

fn all_ok(req: &PutRecordsInput) -> PutRecordsOutput {
    output((0..req.records().len()).map(ok_entry).collect())
}

/// The records of each PutRecords request a mock saw: (partition key, data).
type Seen = Arc<Mutex<Vec<Vec<(String, Vec<u8>)>>>>;

/// A rule that accepts everything and records each request's records.
fn recording_ok() -> (Rule, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let rule = mock!(aws_sdk_kinesis::Client::put_records)
        .match_requests(move |req| {
            assert_eq!(req.stream_name(), Some(STREAM));
            s.lock().unwrap().push(
                req.records()
                    .iter()
                    .map(|r| {
                        (
                            r.partition_key().unwrap_or_default().to_owned(),
                            r.data().as_ref().to_vec(),
                        )
                    })
                    .collect(),
            );
            true
        })
        .then_compute_output(all_ok);
    (rule, seen)
}

struct Reply {
    status: u16,
    headers: Value,
    body: Value,
}

async fn call(state: &State, ev: Value) -> Reply {
    let out = invoke(state, ev, Context::default()).await.unwrap();
    let body = out["body"].as_str().unwrap_or("null");
    Reply {
        status: u16::try_from(out["statusCode"].as_u64().unwrap()).unwrap(),
        headers: out["headers"].clone(),
        body: serde_json::from_str(body).unwrap(),
    }
}

fn statuses(body: &Value) -> Vec<(u64, String)> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn v2_single_event_is_written_verbatim_with_metadata() {
    let (rule, seen) = recording_ok();
    let st = state(config(&[]), RuleMode::MatchAny, &[&rule]);
    let ev = event("v2-single");
    let r = call(&st, ev.clone()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.body,
        json!({"request_id": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "accepted": 1, "rejected": 0,
               "retry": 0, "results": [{"index": 0, "status": "accepted", "id": "pv-0001"}]})
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (pk, data) = &seen[0][0];
    assert_eq!(pk, "pv-0001");
    let env = Envelope::parse(data).unwrap();
    assert_eq!(&*env.event_bytes(), event_body(&ev).as_slice());
    assert_eq!(env.id, "pv-0001");
    assert_eq!(env.event_type, "page_view");
    assert_eq!(
        env.principal.as_deref(),
        Some("arn:aws:iam::123456789012:user/shop-backend")
    );
    assert_eq!(env.source_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(env.stage.as_deref(), Some("$default"));
    assert_eq!(
        env.user_agent.as_deref(),
        Some("shop-web/4.2 (+https://shop.example.com)")
    );
    assert_eq!(
        env.request_id.as_deref(),
        Some("c6af9ac6-7b61-11e6-9a41-93e8deadbeef")
    );
    assert!(env.received_at.is_some());
}

#[tokio::test]
async fn v2_batch_uses_jwt_sub_and_the_partition_key_field() {
    let (rule, seen) = recording_ok();
    let st = state(
        config(&[("PARTITION_KEY_FIELD", "user_id")]),
        RuleMode::MatchAny,
        &[&rule],
    );
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["retry"].as_u64()),
        (Some(4), Some(0))
    );
    let ids: Vec<&str> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pv-0001", "po-0001", "su-0001", "se-0001"]);
    let seen = seen.lock().unwrap();
    let keys: Vec<&str> = seen[0].iter().map(|(k, _)| k.as_str()).collect();
    // The search event has no user_id: it falls back to its id.
    assert_eq!(keys, ["u-42", "u-42", "u-77", "se-0001"]);
    for (_, data) in &seen[0] {
        assert_eq!(
            Envelope::parse(data).unwrap().principal.as_deref(),
            Some("user-7f3c2a")
        );
    }
}

#[tokio::test]
async fn envelope_ndjson_and_gzip_forms() {
    let (rule, seen) = recording_ok();
    let st = state(config(&[]), RuleMode::MatchAny, &[&rule]);

    let r = call(&st, event("v2-envelope")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        statuses(&r.body),
        [(0, "accepted".into()), (1, "accepted".into())]
    );

    let r = call(&st, event("v2-ndjson")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Line 1 is blank: not an event, indexes are line numbers.
    assert_eq!(
        statuses(&r.body),
        [
            (0, "accepted".into()),
            (2, "accepted".into()),
            (3, "accepted".into())
        ]
    );

    let gz = event("v2-gzip");
    let r = call(&st, gz.clone()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["accepted"], 2);
    let seen = seen.lock().unwrap();
    let last = seen.last().unwrap();
    let packed = event_body(&gz);
    let inflated = Codec::Gzip { level: 6 }
        .decompress_capped(&packed, usize::MAX)
        .unwrap();
    let text = String::from_utf8(inflated).unwrap();
    let first_line = text.lines().next().unwrap();
    assert_eq!(
        &*Envelope::parse(&last[0].1).unwrap().event_bytes(),
        first_line.as_bytes()
    );
}

#[tokio::test]
async fn invalid_items_are_rejected_and_the_rest_accepted() {
    let (rule, seen) = recording_ok();
    let st = state(config(&[]), RuleMode::MatchAny, &[&rule]);
    let r = call(&st, event("v2-invalid")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (
            r.body["accepted"].as_u64(),
            r.body["rejected"].as_u64(),
            r.body["retry"].as_u64()
        ),
        (Some(2), Some(5), Some(0))
    );
    let codes: Vec<Option<&str>> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        [
            None,
            Some("invalid_type"),
            Some("missing_type"),
            Some("not_an_object"),
            Some("duplicate_key"),
            Some("invalid_ts"),
            None
        ]
    );
    for item in r.body["results"].as_array().unwrap() {
        if item["status"] == "rejected" {
            assert!(!item["reason"].as_str().unwrap().is_empty());
            assert!(item.get("id").is_none());
        }
    }
    assert_eq!(seen.lock().unwrap()[0].len(), 2);
}

#[tokio::test]
async fn every_item_rejected_is_422_without_a_kinesis_call() {
    let (rule, _) = recording_ok();
    let st = state(config(&[]), RuleMode::MatchAny, &[&rule]);
    let mut ev = event("v2-batch");
    ev["body"] = json!(r#"[{"type":"Bad"},{"id":"x"}]"#);
    let r = call(&st, ev).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["rejected"], 2);
    assert_eq!(rule.num_calls(), 0);
}

#[tokio::test]
async fn body_errors_are_json_with_stable_codes() {
    let (rule, _) = recording_ok();
    let st = state(
        config(&[("MAX_BODY_BYTES", "2048")]),
        RuleMode::MatchAny,
        &[&rule],
    );

    let r = call(&st, event("v2-unparseable")).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("invalid_json"))
    );
    assert!(r.body["message"].as_str().unwrap().contains("line 1"));

    let mut ev = event("v2-single");
    ev["headers"]["content-type"] = json!("text/csv");
    let r = call(&st, ev).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    let mut ev = event("v2-single");
    ev["headers"]["content-encoding"] = json!("br");
    let r = call(&st, ev).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (415, Some("unsupported_content_encoding"))
    );

    let mut ev = event("v2-single");
    ev["body"] = json!(format!(r#"{{"type":"a","p":"{}"}}"#, "x".repeat(2048)));
    let r = call(&st, ev).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (413, Some("body_too_large"))
    );

    // A gzip bomb: 64 MiB of zeros in ~64 KiB, refused at the 2 KiB cap.
    let mut enc = Codec::Gzip { level: 9 }.encoder(Vec::new()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    let mut ev = event("v2-gzip");
    ev["body"] = json!(base64::engine::general_purpose::STANDARD.encode(bomb));
    let r = call(&st, ev).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (413, Some("body_too_large"))
    );

    let mut ev = event("v2-single");
    ev["body"] = json!("[]");
    let r = call(&st, ev).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("no_events"))
    );

    assert_eq!(rule.num_calls(), 0);
}

#[tokio::test]
async fn routes_health_404_and_405() {
    let (rule, _) = recording_ok();
    let st = state(config(&[]), RuleMode::MatchAny, &[&rule]);

    let r = call(&st, event("v2-health")).await;
    assert_eq!((r.status, &r.body), (200, &json!({"status": "ok"})));

    let mut ev = event("v2-health");
    ev["rawPath"] = json!("/v1/nope");
    ev["requestContext"]["http"]["path"] = json!("/v1/nope");
    let r = call(&st, ev).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (404, Some("not_found"))
    );

    let mut ev = event("v2-single");
    ev["requestContext"]["http"]["method"] = json!("PUT");
    let r = call(&st, ev).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert_eq!(r.headers["allow"], "POST");

    // A named HTTP API stage prefixes rawPath with the stage.
    let mut ev = event("v2-health");
    ev["rawPath"] = json!("/live/v1/health");
    ev["requestContext"]["stage"] = json!("live");
    assert_eq!(call(&st, ev).await.status, 200);

    assert_eq!(rule.num_calls(), 0);
}

#[tokio::test]
async fn rest_api_v1_events() {
    let (rule, seen) = recording_ok();
    let st = state(config(&[]), RuleMode::MatchAny, &[&rule]);
    let out = invoke(&st, event("v1-single"), Context::default())
        .await
        .unwrap();
    // REST API response shape.
    assert_eq!(out["statusCode"], 202);
    assert_eq!(out["isBase64Encoded"], false);
    assert!(out.get("multiValueHeaders").is_some());
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["request_id"], "5b4a1f0e-2c3d-4e5f-8a9b-0c1d2e3f4a5b");
    assert_eq!(body["results"][0]["id"], "su-0001");

    let r = call(&st, event("v1-batch")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["accepted"], 2);

    let seen = seen.lock().unwrap();
    let env = Envelope::parse(&seen[0][0].1).unwrap();
    assert_eq!(env.principal.as_deref(), Some("user-7f3c2a"));
    assert_eq!(env.source_ip.as_deref(), Some("198.51.100.23"));
    assert_eq!(env.stage.as_deref(), Some("prod"));
    assert_eq!(
        env.user_agent.as_deref(),
        Some("shop-android/3.1.0 (Pixel 8; Android 15)")
    );
}

#[tokio::test]
async fn partial_failure_resends_only_failed_records_then_succeeds() {
    let first = mock!(aws_sdk_kinesis::Client::put_records)
        .match_requests(|req| req.records().len() == 4)
        .then_output(|| {
            output(vec![
                ok_entry(0),
                err_entry("ProvisionedThroughputExceededException"),
                ok_entry(2),
                err_entry("InternalFailure"),
            ])
        });
    let second = mock!(aws_sdk_kinesis::Client::put_records)
        .match_requests(|req| {
            let keys: Vec<&str> = req
                .records()
                .iter()
                .map(|r| r.partition_key().unwrap_or_default())
                .collect();
            keys == ["po-0001", "se-0001"]
        })
        .then_compute_output(all_ok);
    let st = state(config(&[]), RuleMode::Sequential, &[&first, &second]);
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["accepted"], 4);
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

#[tokio::test]
async fn persistent_throttling_gives_retry_receipts_and_503() {
    // pv-0001 is written on the first call; every other record is throttled on every call.
    let throttled = only_pv_0001_gets_through();
    let st = state(config(&[]), RuleMode::MatchAny, &[&throttled]);
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "1");
    // The first record of the first attempt got through; the others never did.
    assert_eq!(
        statuses(&r.body),
        [
            (0, "accepted".into()),
            (1, "retry".into()),
            (2, "retry".into()),
            (3, "retry".into())
        ]
    );
    assert_eq!(r.body["results"][3]["id"], "se-0001");
    assert_eq!(throttled.num_calls(), 4, "max_attempts calls, then give up");
}

#[tokio::test]
async fn kinesis_500s_are_retried() {
    let flaky = mock!(aws_sdk_kinesis::Client::put_records)
        .sequence()
        .http_status(500, Some(r#"{"__type":"InternalFailure"}"#.into()))
        .times(2)
        .build();
    let then_ok = mock!(aws_sdk_kinesis::Client::put_records).then_compute_output(all_ok);
    let st = state(config(&[]), RuleMode::Sequential, &[&flaky, &then_ok]);
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!((flaky.num_calls(), then_ok.num_calls()), (2, 1));

    let down = mock!(aws_sdk_kinesis::Client::put_records)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let st = state(config(&[]), RuleMode::Sequential, &[&down]);
    let r = call(&st, event("v2-single")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["retry"], 1);
    assert_eq!(r.body["results"][0]["id"], "pv-0001");
    assert_eq!(down.num_calls(), 4);
}

#[tokio::test]
async fn whole_call_throttling_is_retried_and_permanent_errors_are_not() {
    let throttled = mock!(aws_sdk_kinesis::Client::put_records)
        .sequence()
        .http_status(
            400,
            Some(
                r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded"}"#
                    .into(),
            ),
        )
        .build();
    let then_ok = mock!(aws_sdk_kinesis::Client::put_records).then_compute_output(all_ok);
    let st = state(config(&[]), RuleMode::Sequential, &[&throttled, &then_ok]);
    assert_eq!(call(&st, event("v2-single")).await.status, 202);
    assert_eq!((throttled.num_calls(), then_ok.num_calls()), (1, 1));

    let missing = mock!(aws_sdk_kinesis::Client::put_records)
        .sequence()
        .http_status(
            400,
            Some(
                r#"{"__type":"ResourceNotFoundException","message":"Stream caudal-events-test under account 123456789012 not found."}"#
                    .into(),
            ),
        )
        .repeatedly()
        .build();
    let st = state(config(&[]), RuleMode::Sequential, &[&missing]);
    let r = call(&st, event("v2-single")).await;
    // Not the client's fault and not stored: retry later; the details stay in the logs.
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["results"][0]["status"], "retry");
    assert!(!r.body.to_string().contains("ResourceNotFound"));
    assert_eq!(missing.num_calls(), 1, "permanent errors are not retried");
}

#[tokio::test]
async fn schema_validation_rejects_events_against_the_rules_schemas() {
    let (rule, seen) = recording_ok();
    let st = state(
        config(&[("SCHEMA_VALIDATION", "on")]),
        RuleMode::MatchAny,
        &[&rule],
    );
    let mut ev = event("v2-batch");
    let good = r#"{"type":"purchase","id":"po-0001","ts":"2026-11-25T19:58:03Z","order_id":"A-1001","user_id":"u-42","currency":"eur","amount":129.9}"#;
    let bad = r#"{"type":"purchase","id":"po-bad","ts":"2026-11-25T19:58:03Z","order_id":"A-1002","currency":"EURO","amount":-5}"#;
    ev["body"] = json!(format!("[{good},{bad}]"));
    let r = call(&st, ev).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["results"][0]["status"], "accepted");
    assert_eq!(r.body["results"][1]["code"], "schema_violation");
    assert_eq!(seen.lock().unwrap()[0].len(), 1);

    // Off by default: the same body is accepted whole.
    let (rule, _) = recording_ok();
    let st = state(config(&[]), RuleMode::MatchAny, &[&rule]);
    let mut ev = event("v2-batch");
    ev["body"] = json!(format!("[{good},{bad}]"));
    assert_eq!(call(&st, ev).await.body["accepted"], 2);
}

#[test]
fn config_from_env() {
    let c = config(&[]);
    assert_eq!(c.stream_name, STREAM);
    assert_eq!(c.partition_key_field, None);
    assert_eq!(c.put_deadline, Duration::from_millis(8000));
    assert!(c.schema_rules.is_none());
    let env = |pairs: &[(&str, &str)]| {
        Env::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let err = Config::from_env(&env(&[])).unwrap_err();
    assert!(err.to_string().contains("STREAM_NAME"), "{err}");
    for (k, v) in [
        ("SCHEMA_VALIDATION", "maybe"),
        ("PUT_DEADLINE_MS", "0"),
        ("PUT_DEADLINE_MS", "30000"),
        ("MAX_EVENTS", "-1"),
        ("ALLOWED_ORIGINS", "https://shop.example.com/"),
    ] {
        let err = Config::from_env(&env(&[("STREAM_NAME", "s"), (k, v)])).unwrap_err();
        assert!(err.to_string().contains(k), "{err}");
    }
    // The rules file is read at cold start, only when validation is on.
    let missing = [
        ("STREAM_NAME", "s"),
        ("SCHEMA_VALIDATION", "on"),
        ("RULES_FILE", "/nonexistent/rules.yaml"),
    ];
    let err = Config::from_env(&env(&missing)).unwrap_err();
    assert!(
        err.to_string()
            .contains("RULES_FILE /nonexistent/rules.yaml"),
        "{err}"
    );
    let off = Config::from_env(&env(&[
        missing[0],
        ("SCHEMA_VALIDATION", "off"),
        missing[2],
    ]));
    assert!(off.unwrap().schema_rules.is_none());
    // Packing: on by default at one PUT payload unit, per key when a key field is set.
    let c = Config::from_env(&env(&[missing[0]])).unwrap();
    assert_eq!((c.pack.target_bytes, c.pack.by_key), (25_000, false));
    let c = Config::from_env(&env(&[missing[0], ("PARTITION_KEY_FIELD", "u")])).unwrap();
    assert!(c.pack.by_key);
    for (v, ok) in [
        ("0", Some(0)),
        ("1023", None),
        ("1024", Some(1024)),
        ("1048320", Some(1_048_320)),
        ("1048321", None),
        ("x", None),
    ] {
        let c = Config::from_env(&env(&[missing[0], ("PACK_TARGET_BYTES", v)]));
        match ok {
            Some(n) => assert_eq!(c.unwrap().pack.target_bytes, n, "{v}"),
            None => assert!(
                c.unwrap_err().to_string().contains("PACK_TARGET_BYTES"),
                "{v}"
            ),
        }
    }
}

/// The envelopes of each record a request sent: a packed record's in order, a single one alone.
fn unpacked(records: &[(String, Vec<u8>)]) -> Vec<Vec<(String, String)>> {
    records
        .iter()
        .map(|(pk, data)| {
            let users = if caudal_core::pack::is_aggregate(data) {
                caudal_core::pack::unpack(data)
                    .unwrap()
                    .into_iter()
                    .map(|u| (u.partition_key.to_owned(), u.data.to_vec()))
                    .collect()
            } else {
                vec![(pk.clone(), data.clone())]
            };
            users
                .into_iter()
                .map(|(k, d)| (k, Envelope::parse(&d).unwrap().id.into_owned()))
                .collect()
        })
        .collect()
}

const PACKED: (&str, &str) = ("PACK_TARGET_BYTES", "25000");

#[tokio::test]
async fn a_batch_is_packed_into_one_record_and_every_event_answered() {
    let (rule, seen) = recording_ok();
    let st = state(config(&[PACKED]), RuleMode::MatchAny, &[&rule]);
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["accepted"], 4);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].len(), 1, "four events, one record");
    assert_eq!(seen[0][0].0, "pv-0001", "the first event's key");
    let ids: Vec<(String, String)> = unpacked(&seen[0]).concat();
    let want: Vec<(String, String)> = ["pv-0001", "po-0001", "su-0001", "se-0001"]
        .iter()
        .map(|id| ("pv-0001".to_owned(), (*id).to_owned()))
        .collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn with_a_key_field_each_key_gets_its_own_record_and_a_failed_record_fails_its_events() {
    let (rule, seen) = recording_ok();
    let keyed = [PACKED, ("PARTITION_KEY_FIELD", "user_id")];
    let st = state(config(&keyed), RuleMode::MatchAny, &[&rule]);
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.body["accepted"], 4, "{}", r.body);
    let per_record: Vec<Vec<String>> = unpacked(&seen.lock().unwrap()[0])
        .into_iter()
        .map(|r| r.into_iter().map(|(k, id)| format!("{k}/{id}")).collect())
        .collect();
    assert_eq!(
        per_record,
        [
            vec!["u-42/pv-0001", "u-42/po-0001"],
            vec!["u-77/su-0001"],
            vec!["se-0001/se-0001"]
        ]
    );
    // Kinesis keeps refusing u-42's record: both its events are `retry`, the rest accepted.
    let u42_refused = mock!(aws_sdk_kinesis::Client::put_records).then_compute_output(|req| {
        output(
            req.records()
                .iter()
                .enumerate()
                .map(|(i, r)| match r.partition_key() {
                    Some("u-42") => err_entry("ProvisionedThroughputExceededException"),
                    _ => ok_entry(i),
                })
                .collect(),
        )
    });
    let st = state(config(&keyed), RuleMode::MatchAny, &[&u42_refused]);
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        statuses(&r.body),
        [
            (0, "retry".into()),
            (1, "retry".into()),
            (2, "accepted".into()),
            (3, "accepted".into())
        ]
    );
}

#[tokio::test]
async fn a_packed_record_kinesis_refuses_spills_as_its_events() {
    let down = mock!(aws_sdk_kinesis::Client::put_records)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let (s3_rule, spilled) = spill_s3(200);
    let st = spilling(
        state(config(&[PACKED]), RuleMode::Sequential, &[&down]),
        &s3_rule,
    );
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["accepted"], 4);
    let objects = spilled.lock().unwrap().clone();
    assert_eq!(objects.len(), 1);
    let lines = caudal_core::spill::read_lines(&objects[0].1).unwrap();
    let ids: Vec<String> = lines
        .iter()
        .map(|l| {
            assert_eq!(
                l.partition_key, "pv-0001",
                "the key of the record it was in"
            );
            let env = Envelope::parse(l.envelope.get().as_bytes()).unwrap();
            env.id.into_owned()
        })
        .collect();
    assert_eq!(ids, ["pv-0001", "po-0001", "su-0001", "se-0001"]);
}

#[test]
fn put_deadline_respects_the_lambda_deadline() {
    let now = tokio::time::Instant::now();
    let budget = Duration::from_secs(8);
    // Unknown Lambda deadline (0 in Context::default(), a relative 600000 from cargo lambda
    // watch): the budget.
    for unknown in [0, 600_000] {
        let d = ingest_api::put_deadline_policy(budget).deadline(unknown);
        assert!(d >= now + budget && d <= now + budget + Duration::from_millis(100));
    }
    // Lambda deadline in 3 s: 3 s minus the safety margin.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let d = ingest_api::put_deadline_policy(budget).deadline(now_ms + 3000);
    assert!(d <= now + Duration::from_millis(2100), "{:?}", d - now);
    assert!(d >= now + Duration::from_millis(1800), "{:?}", d - now);
    // Already past: no time at all.
    assert!(
        ingest_api::put_deadline_policy(budget).deadline(now_ms.saturating_sub(10))
            <= tokio::time::Instant::now()
    );
}

#[tokio::test]
async fn a_principal_that_cannot_be_recorded_whole_is_refused_before_anything_is_written() {
    let (rule, seen) = recording_ok();
    let st = state(config(&[]), RuleMode::MatchAny, &[&rule]);
    for bad in ["u".repeat(2049), "user\u{0}7".to_owned()] {
        let mut ev = event("v1-batch");
        ev["requestContext"]["authorizer"]["claims"]["sub"] = json!(bad);
        let r = call(&st, ev).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(r.body["code"], "principal_unrecordable");
    }
    // The longest recordable one is fine.
    let mut ev = event("v1-batch");
    ev["requestContext"]["authorizer"]["claims"]["sub"] = json!("u".repeat(2048));
    assert_eq!(call(&st, ev).await.status, 202);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "only the accepted request reached Kinesis");
}

#[tokio::test]
async fn a_browser_beacon_from_an_allowed_origin_is_accepted_as_json() {
    // events/ingest-api-v2-beacon.json: what `navigator.sendBeacon(url, JSON.stringify(events))`
    // sends from https://shop.example.com (text/plain, with its Origin).
    let (rule, seen) = recording_ok();
    let st = state(
        config(&[(
            "ALLOWED_ORIGINS",
            "https://other.example,https://shop.example.com",
        )]),
        RuleMode::MatchAny,
        &[&rule],
    );
    let ev = event("v2-beacon");
    let r = call(&st, ev.clone()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        statuses(&r.body),
        vec![(0, "accepted".to_owned()), (1, "accepted".to_owned())]
    );
    let seen = seen.lock().unwrap();
    let env = Envelope::parse(&seen[0][0].1).unwrap();
    let sent: Vec<Value> = serde_json::from_slice(&event_body(&ev)).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&env.event_bytes()).unwrap(),
        sent[0],
        "the beacon's first event, as sent"
    );
}

#[tokio::test]
async fn a_request_from_an_origin_that_may_not_send_is_refused_and_nothing_is_written() {
    let (rule, seen) = recording_ok();
    for allowed in ["", "https://other.example", "http://*"] {
        let st = state(
            config(&[("ALLOWED_ORIGINS", allowed)]),
            RuleMode::MatchAny,
            &[&rule],
        );
        let r = call(&st, event("v2-beacon")).await;
        assert_eq!(r.status, 403, "{allowed:?}: {}", r.body);
        assert_eq!(r.body["code"], "origin_not_allowed");
        let msg = r.body["message"].as_str().unwrap();
        assert!(
            msg.contains("https://shop.example.com") && msg.contains("AllowedOrigins"),
            "{msg}"
        );
        // A server SDK sends no Origin: unaffected by the list.
        let mut ev = event("v2-beacon");
        ev["headers"].as_object_mut().unwrap().remove("origin");
        assert_eq!(call(&st, ev).await.status, 202, "{allowed:?}");
        // The probe route is not refused.
        let mut probe = event("v2-health");
        probe["headers"]["origin"] = json!("https://evil.example");
        assert_eq!(call(&st, probe).await.status, 200);
    }
    for allowed in ["*", "https://*", "HTTPS://SHOP.EXAMPLE.COM"] {
        let st = state(
            config(&[("ALLOWED_ORIGINS", allowed)]),
            RuleMode::MatchAny,
            &[&rule],
        );
        assert_eq!(
            call(&st, event("v2-beacon")).await.status,
            202,
            "{allowed:?}"
        );
    }
    // Three origin-less requests and three allowed ones: six, no refused one.
    assert_eq!(seen.lock().unwrap().len(), 6);
}

/// (key, body) of every spill PutObject a mock saw.
type SpillLog = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// The spill path's S3 mock: records every PutObject (key, body) and answers `status`.
fn spill_s3(status: u16) -> (Rule, SpillLog) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let rule = mock!(aws_sdk_s3::Client::put_object).match_requests(move |req| {
        assert_eq!(req.bucket(), Some("spill-bucket"));
        assert_eq!(req.if_none_match(), Some("*"), "a spill never overwrites");
        let body = req.body().bytes().unwrap_or_default().to_vec();
        s.lock()
            .unwrap()
            .push((req.key().unwrap_or_default().to_owned(), body));
        true
    });
    let rule = if status == 200 {
        rule.then_output(|| {
            aws_sdk_s3::operation::put_object::PutObjectOutput::builder()
                .e_tag("\"e\"")
                .build()
        })
    } else {
        rule.then_http_response(move || {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap(),
                aws_smithy_types::body::SdkBody::from(
                    "<Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>",
                ),
            )
        })
    };
    (rule, seen)
}

fn spilling(st: State, s3_rule: &Rule) -> State {
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[s3_rule], |c| c
        .retry_config(RetryConfig::disabled()));
    st.with_spill(ingest_api::spill::SpillTarget {
        s3,
        bucket: "spill-bucket".into(),
        reserve: Duration::from_millis(500),
    })
}

#[tokio::test]
async fn events_kinesis_refuses_are_spilled_to_s3_and_accepted() {
    // pv-0001 reaches Kinesis; the other three are throttled on every attempt.
    let throttled = only_pv_0001_gets_through();
    let (s3_rule, spilled) = spill_s3(200);
    let st = spilling(
        state(config(&[]), RuleMode::MatchAny, &[&throttled]),
        &s3_rule,
    );
    let ev = event("v2-batch");
    let r = call(&st, ev).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["accepted"], 4);
    assert_eq!(r.body["retry"], 0);
    assert_eq!(r.body["results"][3]["id"], "se-0001");
    let objects = spilled.lock().unwrap().clone();
    assert_eq!(objects.len(), 1, "one spill object per request");
    let (key, body) = &objects[0];
    caudal_core::keys::parse_spill_key(key).unwrap();
    let lines = caudal_core::spill::read_lines(body).unwrap();
    // Exactly the refused three, in request order, with the envelopes Kinesis would have had.
    assert_eq!(lines.len(), 3);
    let ids: Vec<String> = lines
        .iter()
        .map(|l| {
            let env = Envelope::parse(l.envelope.get().as_bytes()).unwrap();
            assert_eq!(
                l.partition_key, env.id,
                "the partition key Kinesis would have had"
            );
            env.id.to_string()
        })
        .collect();
    assert_eq!(ids, ["po-0001", "su-0001", "se-0001"]);
}

#[tokio::test]
async fn a_failed_spill_leaves_the_events_retry() {
    let down = mock!(aws_sdk_kinesis::Client::put_records)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let (s3_rule, spilled) = spill_s3(503);
    let st = spilling(state(config(&[]), RuleMode::Sequential, &[&down]), &s3_rule);
    let r = call(&st, event("v2-single")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["retry"], 1);
    assert!(s3_rule.num_calls() >= 2, "the spill write is retried too");
    assert!(!spilled.lock().unwrap().is_empty());
}

#[tokio::test]
async fn nothing_is_spilled_when_kinesis_takes_everything() {
    let (rule, _) = recording_ok();
    let (s3_rule, _) = spill_s3(200);
    let st = spilling(state(config(&[]), RuleMode::MatchAny, &[&rule]), &s3_rule);
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(s3_rule.num_calls(), 0);
}

#[tokio::test]
async fn a_spill_whose_first_write_landed_unanswered_is_accepted_not_written_twice() {
    let down = mock!(aws_sdk_kinesis::Client::put_records)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    // The first PUT is stored but answered 500; the retry meets its own object (412).
    let s3_rule = mock!(aws_sdk_s3::Client::put_object)
        .sequence()
        .http_status(
            500,
            Some("<Error><Code>InternalError</Code><Message>x</Message></Error>".into()),
        )
        .times(1)
        .http_status(
            412,
            Some(
                "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions \
                 you specified did not hold</Message></Error>"
                    .into(),
            ),
        )
        .times(1)
        .build();
    let st = spilling(state(config(&[]), RuleMode::Sequential, &[&down]), &s3_rule);
    let r = call(&st, event("v2-single")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["accepted"], 1);
    assert_eq!(s3_rule.num_calls(), 2, "no third write");
}

#[tokio::test]
async fn during_an_outage_later_requests_spill_after_one_short_probe() {
    let down = mock!(aws_sdk_kinesis::Client::put_records)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let (s3_rule, spilled) = spill_s3(200);
    let st = spilling(state(config(&[]), RuleMode::Sequential, &[&down]), &s3_rule);
    assert_eq!(call(&st, event("v2-single")).await.status, 202);
    let first = down.num_calls();
    assert_eq!(
        first, 4,
        "the first request tries Kinesis with the whole policy"
    );
    let r = call(&st, event("v2-batch")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["accepted"], 4);
    assert_eq!(down.num_calls() - first, 1, "then one probe per request");
    assert_eq!(spilled.lock().unwrap().len(), 2);
}

/// The Segment routes' state: two write keys, every record accepted and recorded.
fn segment_state(rule: &Rule) -> State {
    state(
        config(&[("SEGMENT_WRITE_KEYS", "wk-test-1, wk-test-2")]),
        RuleMode::MatchAny,
        &[rule],
    )
}

fn envelopes(seen: &Seen) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .flatten()
        .flat_map(|(_, data)| unpacked_envelopes(data))
        .collect()
}

/// The envelopes of one record, packed or single, as JSON.
fn unpacked_envelopes(data: &[u8]) -> Vec<Value> {
    match caudal_core::pack::unpack(data) {
        Ok(users) => users
            .iter()
            .map(|u| serde_json::from_slice(u.data).unwrap())
            .collect(),
        Err(_) => vec![serde_json::from_slice(data).unwrap()],
    }
}

#[tokio::test]
async fn a_segment_batch_as_analytics_python_sends_it_is_200_and_one_event_per_message() {
    let (rule, seen) = recording_ok();
    let st = segment_state(&rule);
    let ev = event("v2-segment-batch");
    let r = call(&st, ev.clone()).await;
    assert_eq!(r.status, 200, "the SDK counts only 200 as sent: {}", r.body);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["accepted"], 3);
    let sent: Value = serde_json::from_slice(&event_body(&ev)).unwrap();
    let envs = envelopes(&seen);
    assert_eq!(envs.len(), 3);
    let types: Vec<&str> = envs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "segment.track.order_completed",
            "segment.identify",
            "segment.page"
        ]
    );
    for (env, msg) in envs.iter().zip(sent["batch"].as_array().unwrap()) {
        assert_eq!(env["protocol"], "segment");
        assert_eq!(env["id"], msg["messageId"], "messageId is the event id");
        assert_eq!(&env["event"], msg, "each message as the SDK sent it");
        let p = env["principal"].as_str().unwrap();
        assert!(p.starts_with("segment:") && !p.contains("wk-test"), "{p}");
        // receivedAt − (sentAt − timestamp), to the millisecond.
        let t = |v: &Value| {
            time::OffsetDateTime::parse(
                v.as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        };
        let want = t(&env["received_at"]) - (t(&sent["sentAt"]) - t(&msg["timestamp"]));
        assert_eq!(t(&env["event_time"]), want);
    }
    // The batch-level members are read, not stored as events.
    assert!(!envs.iter().any(|e| e["event"].get("writeKey").is_some()));
}

#[tokio::test]
async fn a_single_segment_call_with_basic_auth_takes_its_type_from_the_route() {
    let (rule, seen) = recording_ok();
    let st = segment_state(&rule);
    let r = call(&st, event("v2-segment-track")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let envs = envelopes(&seen);
    assert_eq!(envs[0]["type"], "segment.track.signed_up");
    assert_eq!(envs[0]["id"], "node-0001");
    // Another key: another source, so another principal (de-duplication is per source).
    let (rule2, seen2) = recording_ok();
    let r = call(&segment_state(&rule2), event("v2-segment-batch")).await;
    assert_eq!(r.status, 200);
    assert_ne!(envelopes(&seen2)[0]["principal"], envs[0]["principal"]);
}

#[tokio::test]
async fn a_wrong_or_missing_write_key_is_401_and_writes_nothing() {
    let (rule, seen) = recording_ok();
    let st = segment_state(&rule);
    let mut wrong = event("v2-segment-batch");
    let body = event_body(&wrong);
    let mut v: Value = serde_json::from_slice(&body).unwrap();
    v["writeKey"] = json!("wk-revoked");
    wrong["body"] = json!(v.to_string());
    let r = call(&st, wrong).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (401, Some("invalid_write_key"))
    );
    assert!(
        r.body["message"].is_string(),
        "the SDK logs code and message"
    );
    v.as_object_mut().unwrap().remove("writeKey");
    let mut missing = event("v2-segment-batch");
    missing["body"] = json!(v.to_string());
    let r = call(&st, missing).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (401, Some("missing_write_key"))
    );
    // No keys configured: the routes refuse every key.
    let none = state(config(&[]), RuleMode::MatchAny, &[&rule]);
    assert_eq!(call(&none, event("v2-segment-batch")).await.status, 401);
    assert!(seen.lock().unwrap().is_empty(), "nothing reached Kinesis");
    // A good request right after is unaffected.
    assert_eq!(call(&st, event("v2-segment-batch")).await.status, 200);
}

#[tokio::test]
async fn segment_answers_follow_what_the_sdks_retry() {
    let (rule, _) = recording_ok();
    let st = segment_state(&rule);
    // Every message invalid: 400, which the SDK does not retry.
    let mut bad = event("v2-segment-batch");
    bad["body"] = json!(r#"{"batch":[{"type":"launch"},{"type":"track"}],"writeKey":"wk-test-1"}"#);
    let r = call(&st, bad).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("invalid_messages"))
    );
    assert!(
        r.body["message"].as_str().unwrap().contains("launch"),
        "{}",
        r.body
    );
    // Kinesis keeps refusing: 503, so the SDK sends the batch again.
    let throttled = mock!(aws_sdk_kinesis::Client::put_records).then_compute_output(|req| {
        output(
            req.records()
                .iter()
                .map(|_| err_entry("ProvisionedThroughputExceededException"))
                .collect(),
        )
    });
    let st = state(
        config(&[
            ("SEGMENT_WRITE_KEYS", "wk-test-1"),
            ("PUT_DEADLINE_MS", "200"),
        ]),
        RuleMode::MatchAny,
        &[&throttled],
    );
    let r = call(&st, event("v2-segment-batch")).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (503, Some("retry")),
        "{}",
        r.body
    );
    assert!(r.headers.get("retry-after").is_some());
    // Wrong method on a Segment route.
    let mut get = event("v2-segment-batch");
    get["requestContext"]["http"]["method"] = json!("GET");
    assert_eq!(call(&segment_state(&rule), get).await.status, 405);
}

/// The Snowplow routes' state: app id `shop`, every record accepted and recorded.
fn snowplow_state(rule: &Rule) -> State {
    state(
        config(&[("SNOWPLOW_APP_IDS", "shop")]),
        RuleMode::MatchAny,
        &[rule],
    )
}

#[tokio::test]
async fn a_tp2_post_as_the_python_tracker_sends_it_is_200_and_one_event_per_element() {
    let (rule, seen) = recording_ok();
    let st = snowplow_state(&rule);
    let ev = event("v2-snowplow-tp2");
    let r = call(&st, ev.clone()).await;
    assert_eq!(r.status, 200, "trackers count only 2xx as sent: {}", r.body);
    assert_eq!(r.body["accepted"], 3);
    let sent: Value = serde_json::from_slice(&event_body(&ev)).unwrap();
    let envs = envelopes(&seen);
    let types: Vec<&str> = envs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "snowplow.page_view",
            "snowplow.struct",
            "snowplow.unstruct.link_click"
        ]
    );
    for (env, e) in envs.iter().zip(sent["data"].as_array().unwrap()) {
        assert_eq!(env["protocol"], "snowplow");
        assert_eq!(env["principal"], "snowplow");
        assert_eq!(env["id"], e["eid"], "eid is the event id");
        assert_eq!(&env["event"], e, "each event as the tracker sent it");
    }
    // dtm corrected by stm: received − (stm − dtm), 400 ms for the page view.
    let t = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        t(&envs[0]["received_at"]) - t(&envs[0]["event_time"]),
        time::Duration::milliseconds(400)
    );
    // One user's events in one packed record would be one key: here every event has uid u-42.
    let keys: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    assert!(keys.iter().all(|k| k == "u-42"), "{keys:?}");
}

/// The raw Lambda answer (the pixel's body is base64, not JSON).
async fn call_raw(state: &State, ev: Value) -> Value {
    invoke(state, ev, Context::default()).await.unwrap()
}

#[tokio::test]
async fn the_pixel_answers_a_gif_and_keeps_the_query_string_byte_for_byte() {
    let (rule, seen) = recording_ok();
    let st = snowplow_state(&rule);
    let ev = event("v2-snowplow-pixel");
    let out = call_raw(&st, ev.clone()).await;
    assert_eq!(out["statusCode"], 200, "{out}");
    assert_eq!(out["headers"]["content-type"], "image/gif");
    assert!(
        out["headers"]["cache-control"]
            .as_str()
            .unwrap()
            .contains("no-store")
    );
    assert_eq!(out["isBase64Encoded"], true);
    let gif = base64::engine::general_purpose::STANDARD
        .decode(out["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(gif, caudal_core::snowplow::PIXEL_GIF);
    let records = seen.lock().unwrap().concat();
    assert_eq!(records.len(), 1);
    let (key, data) = &records[0];
    assert_eq!(
        key, "9a8b7c6d-1111-4222-8333-444455556666",
        "duid keys a browser"
    );
    let env = Envelope::parse(data).unwrap();
    assert_eq!(
        &*env.event_bytes(),
        ev["rawQueryString"].as_str().unwrap().as_bytes()
    );
    assert!(
        env.event.is_none(),
        "a query string is carried as event_text"
    );
    assert_eq!(env.event_type, "snowplow.page_view");
    assert_eq!(env.id, "2c3d4e5f-0000-4111-8222-333344445555");
    assert_eq!(env.protocol.as_deref(), Some("snowplow"));
}

#[tokio::test]
async fn snowplow_answers_follow_what_the_trackers_retry() {
    let (rule, seen) = recording_ok();
    let st = snowplow_state(&rule);
    // Every event refused (another app): 400, which trackers do not retry.
    let mut other = event("v2-snowplow-tp2");
    other["body"] = json!(
        event_body(&other)
            .iter()
            .map(|b| *b as char)
            .collect::<String>()
            .replace("\"aid\": \"shop\"", "\"aid\": \"blog\"")
    );
    let r = call(&st, other).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["results"][0]["code"], "unknown_app_id");
    // A pixel of another app is a 400 with its reason, not a GIF.
    let mut pixel = event("v2-snowplow-pixel");
    pixel["rawQueryString"] = json!("e=pv&aid=blog&eid=p-1");
    let r = call(&st, pixel).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["results"][0]["code"], "unknown_app_id");
    let mut empty = event("v2-snowplow-pixel");
    empty["rawQueryString"] = json!("");
    assert_eq!(call(&st, empty).await.status, 400);
    // Not tp2.
    let mut not_tp2 = event("v2-snowplow-tp2");
    not_tp2["body"] = json!(r#"{"data":[{"e":"pv"}]}"#);
    let r = call(&st, not_tp2).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("invalid_body")),
        "{}",
        r.body
    );
    assert!(r.body["message"].as_str().unwrap().contains("payload_data"));
    // The wrong method on each route.
    let mut get = event("v2-snowplow-tp2");
    get["requestContext"]["http"]["method"] = json!("GET");
    let out = call_raw(&st, get).await;
    assert_eq!(out["statusCode"], 405);
    assert_eq!(out["headers"]["allow"], "POST");
    let mut post = event("v2-snowplow-pixel");
    post["requestContext"]["http"]["method"] = json!("POST");
    let out = call_raw(&st, post).await;
    assert_eq!(out["statusCode"], 405);
    assert_eq!(out["headers"]["allow"], "GET");
    assert!(seen.lock().unwrap().is_empty(), "nothing reached Kinesis");
    // No app id configured: 403 on both routes, nothing written.
    let off = state(config(&[]), RuleMode::MatchAny, &[&rule]);
    for case in ["v2-snowplow-tp2", "v2-snowplow-pixel"] {
        let r = call(&off, event(case)).await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (403, Some("snowplow_not_enabled")),
            "{case}"
        );
    }
    assert!(seen.lock().unwrap().is_empty());
    // Kinesis keeps refusing: 503, so the tracker sends the batch again.
    let throttled = mock!(aws_sdk_kinesis::Client::put_records).then_compute_output(|req| {
        output(
            req.records()
                .iter()
                .map(|_| err_entry("ProvisionedThroughputExceededException"))
                .collect(),
        )
    });
    let st = state(
        config(&[("SNOWPLOW_APP_IDS", "*"), ("PUT_DEADLINE_MS", "200")]),
        RuleMode::MatchAny,
        &[&throttled],
    );
    for case in ["v2-snowplow-tp2", "v2-snowplow-pixel"] {
        let out = call_raw(&st, event(case)).await;
        assert_eq!(out["statusCode"], 503, "{case}: {out}");
        assert!(out["headers"]["retry-after"].is_string());
    }
}

#[tokio::test]
async fn a_pixel_from_a_page_that_may_not_send_is_403() {
    let (rule, seen) = recording_ok();
    let st = state(
        config(&[
            ("SNOWPLOW_APP_IDS", "shop"),
            ("ALLOWED_ORIGINS", "https://shop.example.com"),
        ]),
        RuleMode::MatchAny,
        &[&rule],
    );
    let mut ev = event("v2-snowplow-pixel");
    ev["headers"]["origin"] = json!("https://evil.example");
    let r = call(&st, ev).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    assert!(seen.lock().unwrap().is_empty());
    let mut ev = event("v2-snowplow-pixel");
    ev["headers"]["origin"] = json!("https://shop.example.com");
    assert_eq!(call_raw(&st, ev).await["statusCode"], 200);
}

#[tokio::test]
async fn snowplow_events_are_schema_checked_as_the_rules_see_them() {
    let (rule, seen) = recording_ok();
    let st = state(
        config(&[("SNOWPLOW_APP_IDS", "*"), ("SCHEMA_VALIDATION", "on")]),
        RuleMode::MatchAny,
        &[&rule],
    );
    let r = call(&st, event("v2-snowplow-tp2")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], 3);
    // A structured event without its action: the shipped schema requires se_ac.
    let mut ev = event("v2-snowplow-pixel");
    ev["rawQueryString"] = json!("e=se&se_ca=cart&eid=s-1");
    let r = call(&st, ev).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["results"][0]["code"], "schema_violation");
    assert!(
        r.body["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("se_ac"),
        "{}",
        r.body
    );
    assert_eq!(envelopes(&seen).len(), 3);
}

#[tokio::test]
async fn analytics_js_sends_text_plain_to_the_short_paths() {
    let (rule, seen) = recording_ok();
    let st = state(
        config(&[
            ("SEGMENT_WRITE_KEYS", "wk-test-1"),
            ("ALLOWED_ORIGINS", "https://shop.example.com"),
        ]),
        RuleMode::MatchAny,
        &[&rule],
    );
    let ev = event("v2-segment-ajs");
    let r = call(&st, ev.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let envs = envelopes(&seen);
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0]["type"], "segment.track.product_viewed");
    assert_eq!(
        envs[0]["event"],
        serde_json::from_slice::<Value>(&event_body(&ev)).unwrap()
    );
    // The short batch path takes analytics.js's batching body.
    let mut b = event("v2-segment-ajs");
    b["rawPath"] = json!("/v1/b");
    b["requestContext"]["http"]["path"] = json!("/v1/b");
    b["body"] = json!(
        r#"{"writeKey":"wk-test-1","batch":[{"type":"page","messageId":"ajs-b-1"},{"type":"identify","messageId":"ajs-b-2","userId":"u-1"}],"sentAt":"2026-11-25T19:55:17.000Z"}"#
    );
    let r = call(&st, b).await;
    assert_eq!(
        (r.status, r.body["accepted"].as_u64()),
        (200, Some(2)),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_query_string_a_uri_cannot_hold_is_400_not_a_panic() {
    let (rule, seen) = recording_ok();
    let st = snowplow_state(&rule);
    for q in [
        "e=pv&page=a b",
        "e=pv&x=\"q\"",
        "e=pv&x=<script>",
        "e=pv&x=\u{1}",
    ] {
        let mut ev = event("v2-snowplow-pixel");
        ev["rawQueryString"] = json!(q);
        let r = call(&st, ev).await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (400, Some("invalid_query")),
            "{q:?}: {}",
            r.body
        );
    }
    let mut long = event("v2-snowplow-pixel");
    long["rawQueryString"] = json!(format!("e=pv&url={}", "x".repeat(70_000)));
    assert_eq!(call(&st, long).await.body["code"], "invalid_query");
    assert!(seen.lock().unwrap().is_empty());
    // Percent-encoded, the same values are fine.
    let mut ok = event("v2-snowplow-pixel");
    ok["rawQueryString"] = json!("e=pv&aid=shop&page=a%20b&x=%22q%22");
    assert_eq!(call_raw(&st, ok).await["statusCode"], 200);
}

#[tokio::test]
async fn a_tp2_body_too_large_or_of_another_type_is_400_which_trackers_drop() {
    let (rule, seen) = recording_ok();
    let st = state(
        config(&[("SNOWPLOW_APP_IDS", "*"), ("MAX_BODY_BYTES", "1024")]),
        RuleMode::MatchAny,
        &[&rule],
    );
    let mut big = event("v2-snowplow-tp2");
    big["body"] = json!(format!(
        r#"{{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":[{{"e":"pv","url":"{}"}}]}}"#,
        "x".repeat(2000)
    ));
    let r = call(&st, big).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("body_too_large")),
        "{}",
        r.body
    );
    let mut xml = event("v2-snowplow-tp2");
    xml["headers"]["content-type"] = json!("application/xml");
    let r = call(&st, xml).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["code"], "unsupported_media_type");
    assert!(seen.lock().unwrap().is_empty());
    // caudal's own route keeps its 413.
    let mut own = event("v2-single");
    own["body"] = json!(format!(r#"{{"type":"a","p":"{}"}}"#, "x".repeat(2000)));
    assert_eq!(call(&st, own).await.status, 413);
}
