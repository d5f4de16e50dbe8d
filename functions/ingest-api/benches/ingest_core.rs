//! Benchmark of the ingest core (parse + validate + envelope + packing + chunking, no network)
//! against the floor of `serde_json` merely parsing the same bytes, with criterion.
//!
//! `cargo bench -p ingest-api --bench ingest_core` (part of `make bench`). For bodies of 1, 100
//! and 500 events of ~500 B each, criterion measures the core, the floor (`serde_json` skipping
//! the body: `IgnoredAny`), a `serde_json::Value` parse (for reference) and parsing with
//! validation alone; then one line per body size prints core / floor against the target (≤ 2×),
//! and the 100-event figure goes to `cost/measured.yaml`. Events carry no `id`, so the core also
//! generates one UUIDv7 per event (the expensive case).

use std::hint::black_box;
use std::time::Duration;

use caudal_core::batching::chunk;
use caudal_core::envelope::RequestMeta;
use caudal_core::event::{MediaType, ParseOptions, parse_events};
use caudal_core::pack::PackPolicy;
use caudal_core::stream::PUT_RECORDS_LIMITS;
use criterion::{Criterion, Throughput};
use ingest_api::core::prepare;
use testkit::bench::{mean_ns, record_measured, report};

/// One realistic ~500-byte event; `i` varies the content so every event differs.
fn event(i: usize) -> String {
    let e = format!(
        concat!(
            r#"{{"type":"page_view","ts":"2026-11-25T19:55:17.{ms:03}Z","user_id":"u-{u:06}","#,
            r#""session_id":"s-8f14e45f-ceea-467f-a0e6-{i:012}","#,
            r#""page":{{"url":"https://shop.example.com/products/{i}?utm_source=newsletter&utm_medium=email","#,
            r#""referrer":"https://www.example.org/search?q=running+shoes","title":"Trail running shoes \u2013 size {s}"}},"#,
            r#""device":{{"os":"iOS","os_version":"18.1","browser":"Safari","screen":[390,844],"locale":"en-GB"}},"#,
            r#""props":{{"price":129.95,"currency":"EUR","in_stock":true,"tags":["trail","running","sale"]}}}}"#
        ),
        ms = i % 1000,
        u = i * 7919 % 1_000_000,
        i = i,
        s = 38 + i % 10,
    );
    e
}

fn body(n: usize) -> Vec<u8> {
    let items: Vec<String> = (0..n).map(event).collect();
    format!("[{}]", items.join(",")).into_bytes()
}

const SIZES: [usize; 3] = [1, 100, 500];

/// Child process: the largest request the defaults take (500 events, ~4.5 MB, what a 6 MB
/// Lambda payload carries once base64-encoded) through the real handler, Kinesis answered by
/// a mock; reports `VmHWM`.
fn rss_child() {
    use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
    use aws_sdk_kinesis::types::PutRecordsResultEntry;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    let ok = mock!(aws_sdk_kinesis::Client::put_records).then_compute_output(|req| {
        PutRecordsOutput::builder()
            .failed_record_count(0)
            .set_records(Some(
                req.records()
                    .iter()
                    .map(|_| {
                        PutRecordsResultEntry::builder()
                            .shard_id("shardId-000000000000")
                            .sequence_number("1")
                            .build()
                    })
                    .collect(),
            ))
            .build()
            .expect("output")
    });
    let kinesis = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&ok]);
    let env = caudal_core::config::Env::from_pairs(&[("STREAM_NAME", "caudal-events")]);
    let state =
        ingest_api::State::new(ingest_api::Config::from_env(&env).expect("config"), kinesis)
            .with_metrics(false);
    let pad = "x".repeat(8_500);
    let events: Vec<String> = (0..500)
        .map(|i| event(i).replacen("\"props\":{", &format!("\"pad\":\"{pad}\",\"props\":{{"), 1))
        .collect();
    let body = format!("[{}]", events.join(","));
    let path = testkit::bench::workspace_root().join("events/ingest-api-v2-batch.json");
    let mut payload: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("event file")).expect("json");
    payload["body"] = serde_json::Value::String(body.clone());
    if let Some(h) = payload["headers"].as_object_mut() {
        h.remove("content-length");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before = testkit::bench::vm_hwm_mb();
    let out = rt
        .block_on(ingest_api::invoke(
            &state,
            payload,
            lambda_http::Context::default(),
        ))
        .expect("invoke");
    assert_eq!(out["statusCode"], 202, "{out}");
    let peak = testkit::bench::vm_hwm_mb();
    println!(
        "peak RSS for a {:.2} MB, 500-event request through the handler: VmHWM {peak:.1} MB (before the request {before:.1} MB); PutRecords calls {}",
        body.len() as f64 / 1e6,
        ok.num_calls()
    );
    if let Err(e) = record_measured(&[("ingest_peak_mb", peak)]) {
        eprintln!("cost/measured.yaml not updated: {e}");
    }
}

fn main() {
    if testkit::bench::is_rss_child() {
        rss_child();
        return;
    }
    let mut c = Criterion::default()
        .output_directory(&testkit::bench::criterion_dir())
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let meta = RequestMeta {
        request_id: "c0a8e7d2-5b1f-4b8e-9a51-3c2b1d7e9f00".into(),
        received_at: Some(caudal_core::envelope::format_timestamp(
            time::OffsetDateTime::now_utc(),
        )),
        source_ip: Some("203.0.113.9".into()),
        user_agent: Some("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)".into()),
        principal: Some("arn:aws:iam::123456789012:user/tracker".into()),
        stage: Some("$default".into()),
        protocol: None,
    };
    let opts = ParseOptions {
        partition_key_field: Some("user_id"),
        ..ParseOptions::default()
    };
    let pack = PackPolicy {
        by_key: true,
        ..PackPolicy::default()
    };
    for n in SIZES {
        let body = body(n);
        // Sanity: every event is valid and enveloped.
        let p = prepare(&body, MediaType::Json, &opts, &meta, None).expect("valid body");
        assert_eq!(p.records.len(), n);
        let mut g = c.benchmark_group(format!("ingest-{n}"));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("core", |b| {
            b.iter(|| {
                let p = prepare(black_box(&body), MediaType::Json, &opts, &meta, None)
                    .expect("valid body")
                    .pack(&pack);
                let sizes: Vec<usize> = p.records.iter().map(|r| r.size()).collect();
                black_box(chunk(&sizes, PUT_RECORDS_LIMITS).expect("records fit"));
                black_box(p);
            });
        });
        g.bench_function("floor", |b| {
            b.iter(|| {
                serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&body))
                    .expect("valid json")
            });
        });
        g.bench_function("value", |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).expect("json"));
        });
        g.bench_function("validate", |b| {
            b.iter(|| parse_events(black_box(&body), MediaType::Json, &opts).expect("valid body"));
        });
        g.finish();
    }
    c.final_summary();

    println!("\ningest core against the serde_json floor (same bytes, ~500 B events):");
    for n in SIZES {
        let group = format!("ingest-{n}");
        let (Some(core), Some(floor)) = (mean_ns(&group, "core"), mean_ns(&group, "floor")) else {
            continue;
        };
        let per = |ns: f64| ns / n as f64;
        println!(
            "{}",
            report(
                &format!(
                    "ingest core / floor, {n} events ({:.0} ns/event)",
                    per(core)
                ),
                core / floor,
                "×",
                2.0,
                false,
            )
        );
        if let Some(validate) = mean_ns(&group, "validate") {
            println!("  of which parse + validate: {:.0} ns/event", per(validate));
        }
        if n == 100
            && let Err(e) = record_measured(&[
                ("ingest_us_per_event", per(core) / 1000.0),
                (
                    "ingest_us_per_kb",
                    core / (body(n).len() as f64 / 1024.0) / 1000.0,
                ),
            ])
        {
            eprintln!("cost/measured.yaml not updated: {e}");
        }
    }
    testkit::bench::run_rss_child();
}
