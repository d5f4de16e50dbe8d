//! Benchmark of the ingest core (parse + validate + envelope + chunking, no network) against
//! the floor of `serde_json` merely parsing the same bytes.
//!
//! Run with `cargo bench -p ingest-api` (release profile). Prints, for bodies of 1, 100 and 500
//! events of ~500 B each, the per-event cost of the core, of `serde_json` skipping the body
//! (`IgnoredAny`, the floor), of `serde_json` building a `Value` (for reference), of parsing and
//! validation alone (no envelopes), and the ratio core / floor. Events carry no `id`, so the
//! core also generates one UUIDv7 per event (the expensive case).

use std::hint::black_box;
use std::time::{Duration, Instant};

use caudal_core::batching::chunk;
use caudal_core::envelope::RequestMeta;
use caudal_core::event::{MediaType, ParseOptions, parse_events};
use caudal_core::stream::PUT_RECORDS_LIMITS;
use ingest_api::core::prepare;

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

/// Run `f` repeatedly for about `target` and return the mean time per call.
fn time_per_call(target: Duration, mut f: impl FnMut()) -> Duration {
    // Warm up and estimate.
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < target / 10 {
        f();
        calls += 1;
    }
    let per = start.elapsed() / u32::try_from(calls.max(1)).unwrap_or(u32::MAX);
    let n = (target.as_nanos() / per.as_nanos().max(1)).clamp(10, 10_000_000) as u64;
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / u32::try_from(n).unwrap_or(u32::MAX)
}

fn main() {
    let target = Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    let meta = RequestMeta {
        request_id: "c0a8e7d2-5b1f-4b8e-9a51-3c2b1d7e9f00".into(),
        received_at: Some(caudal_core::envelope::format_timestamp(
            time::OffsetDateTime::now_utc(),
        )),
        source_ip: Some("203.0.113.9".into()),
        user_agent: Some("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)".into()),
        principal: Some("arn:aws:iam::123456789012:user/tracker".into()),
        stage: Some("$default".into()),
    };
    let opts = ParseOptions {
        partition_key_field: Some("user_id"),
        ..ParseOptions::default()
    };
    println!(
        "{:>7} {:>9} {:>10} | {:>14} {:>15} {:>7} | {:>16} {:>19}",
        "events",
        "body B",
        "B/event",
        "core ns/event",
        "floor ns/event",
        "ratio",
        "Value ns/event",
        "validate ns/event"
    );
    for n in [1usize, 100, 500] {
        let body = body(n);
        // Sanity: every event is valid and enveloped.
        let p = prepare(&body, MediaType::Json, &opts, &meta, None).expect("valid body");
        assert_eq!(p.records.len(), n);
        let core = time_per_call(target, || {
            let p =
                prepare(black_box(&body), MediaType::Json, &opts, &meta, None).expect("valid body");
            let sizes: Vec<usize> = p.records.iter().map(|r| r.size()).collect();
            black_box(chunk(&sizes, PUT_RECORDS_LIMITS).expect("records fit"));
            black_box(p);
        });
        let floor = time_per_call(target, || {
            black_box(
                serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&body))
                    .expect("valid json"),
            );
        });
        let value = time_per_call(target, || {
            black_box(
                serde_json::from_slice::<serde_json::Value>(black_box(&body)).expect("valid json"),
            );
        });
        let validate = time_per_call(target, || {
            black_box(parse_events(black_box(&body), MediaType::Json, &opts).expect("valid body"));
        });
        let per = |d: Duration| d.as_nanos() as f64 / n as f64;
        println!(
            "{:>7} {:>9} {:>10} | {:>14.0} {:>15.0} {:>6.2}x | {:>16.0} {:>19.0}",
            n,
            body.len(),
            body.len() / n,
            per(core),
            per(floor),
            per(core) / per(floor),
            per(value),
            per(validate),
        );
    }
}
