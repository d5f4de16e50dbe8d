//! De-duplication cost against table size: the same 10,000-event raw object loaded into
//! `page_views` holding 0, 1 M and 5 M rows of history, on PostgreSQL 15 behind the local Data
//! API (zone maps modelled as BRIN indexes, never a B-tree — no cheaper than Redshift).
//!
//! The history is older than the de-duplication window (as a table's rows are, once it has
//! been loaded for longer than `DEDUPE_WINDOW_HOURS`), so the load's work should follow the
//! rows inside the window, not the table: the target is a load time ratio ≤ 1.5× against the
//! empty table. The second series puts the same history *inside* the window (a window as long
//! as the table's life) to show what the bound saves. Run with `make bench`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/engine.rs"]
mod engine;

use std::time::{Duration, Instant};

use caudal_core::rules::Ident;
use caudal_local::emulators::dataapi::Isolation;
use engine::{Harness, RAW_BUCKET, key, sqs_event};
use rules_loader::{State, invoke};

/// Events in the object loaded at each size.
const EVENTS: usize = 10_000;
/// Loads timed per size (the median is reported).
const RUNS: usize = 3;
/// Age of the newest history row: older than the 168 h window, inside the 8784 h one.
const HISTORY_AGE_DAYS: u64 = 30;
/// The target: load time at 5 M rows over load time at 0 rows.
const TARGET_RATIO: f64 = 1.5;

fn page_view(i: usize, run: usize) -> String {
    format!(
        r#"{{"type":"page_view","id":"bench-{run}-{i}","ts":"2026-11-25T19:55:17.120Z","session_id":"s-{}","page":{{"url":"https://shop.example.com/p/{i}","title":"Product {i}"}}}}"#,
        i % 500
    )
}

/// Fill `schema.page_views` with `n` rows, one a second, the newest `min_age_days` old.
async fn fill(h: &Harness, schema: &str, n: u64, min_age_days: u64) {
    if n == 0 {
        return;
    }
    let (client, conn) = h
        .pg_config()
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let sql = format!(
        "INSERT INTO \"{schema}\".page_views (event_time, url, session_id, event_id, event_type, \
         received_at, raw_key, raw_line, rule_version, loaded_at) SELECT t, \
         'https://shop.example.com/p/' || (i % 5000), 's-' || (i % 100000), md5(i::text), \
         'page_view', t, 'raw/dt=2025-01-01/hr=00/history/' || (i / 10000) || '.ndjson.gz', \
         i % 10000, repeat('0', 64), t FROM (SELECT i, now() - interval '{min_age_days} days' - \
         (({n} - i) * interval '1 second') AS t FROM generate_series(1, {n}) AS i) AS h"
    );
    client.batch_execute(&sql).await.expect("fill history");
    // Redshift's automatic vacuum/analyze; summarises the BRIN ranges (zone maps).
    client
        .batch_execute(&format!("VACUUM ANALYZE \"{schema}\".page_views"))
        .await
        .expect("vacuum");
}

async fn timed_loads(h: &Harness, schema: &str, window_hours: i64, rows: u64) -> Duration {
    let mut cfg = h.config.clone();
    cfg.schema = Ident::parse(schema).expect("schema");
    cfg.dedupe_window = time::Duration::hours(window_hours);
    // Migrate (creates the schema and tables) with one small object, then add the history.
    let state = State::new(cfg.clone(), h.s3.clone(), h.api.clone());
    let warm = key(&format!("shardId-{schema}"), "1", "1");
    h.put_raw(
        &warm,
        &common::gzip(&common::raw_line(&page_view(0, 999), 1)),
    )
    .await;
    let out = invoke(&state, sqs_event(&[(RAW_BUCKET, &warm)]), common::ctx(600))
        .await
        .expect("warm-up load");
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    fill(h, schema, rows, HISTORY_AGE_DAYS).await;

    let mut times = Vec::new();
    for run in 0..RUNS {
        let lines: Vec<Vec<u8>> = (0..EVENTS)
            .map(|i| common::raw_line(&page_view(i, run), i as u64 + 1))
            .collect();
        let k = key(
            &format!("shardId-{schema}"),
            &format!("{run}00"),
            &format!("{run}99"),
        );
        h.put_raw(&k, &common::gzip(&lines.join(&b'\n'))).await;
        // A fresh instance per load, as a new invocation would be (migration already done).
        let state = State::new(cfg.clone(), h.s3.clone(), h.api.clone());
        let t0 = Instant::now();
        let out = invoke(&state, sqs_event(&[(RAW_BUCKET, &k)]), common::ctx(600))
            .await
            .expect("load");
        times.push(t0.elapsed());
        assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    }
    times.sort();
    times[RUNS / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The loader's CloudWatch metric lines are not the bench's output.
    caudal_core::telemetry::set_emf_sink(|_| {});
    let h = Harness::start("dedupe-bench", Isolation::Snapshot).await;
    let sizes = [0u64, 1_000_000, 5_000_000];
    for (label, window_hours, prefix) in [
        ("history outside the 168 h window", 168, "w"),
        (
            "history inside the window (8784 h, no bound in practice)",
            8784,
            "u",
        ),
    ] {
        println!("dedupe: {EVENTS} events per load, {label}");
        let mut base = None;
        let mut last_ratio = 0.0;
        for n in sizes {
            let t = timed_loads(&h, &format!("{prefix}{n}"), window_hours, n).await;
            let b = *base.get_or_insert(t);
            last_ratio = t.as_secs_f64() / b.as_secs_f64();
            println!(
                "  {:>9} rows in table: load {:>7.0} ms  ratio {:.2}x",
                n,
                t.as_secs_f64() * 1e3,
                last_ratio
            );
        }
        if window_hours == 168 {
            let verdict = if last_ratio <= TARGET_RATIO {
                "within"
            } else {
                "ABOVE"
            };
            println!("  5 M / 0 rows: {last_ratio:.2}x ({verdict} the {TARGET_RATIO}x target)");
        }
    }
}
