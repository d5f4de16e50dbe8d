//! Rules + CSV throughput on generated raw-archive lines, next to the floor of merely parsing
//! the same lines as JSON (`serde_json::Value`), with criterion (`make bench`).
//!
//! `cargo bench -p rules --bench rules` — single-threaded, so the figures are per core. The
//! event mix follows the shipped rules file (`rules/rules.yaml`): page views, purchases,
//! sign-ups, searches, some internal test traffic (filtered), some schema-invalid purchases
//! (rejected) and an unknown type (catch-all). Prints events/s against the target (≥ 300,000)
//! and rules / floor (the loader's whole staging per event is `rules-loader`'s `stage` bench).

use std::hint::black_box;
use std::time::Duration;

use caudal_core::rules::{Lineage, Outcome, RuleSet, bench_event, write_csv_row};
use criterion::{Criterion, Throughput};
use testkit::bench::{mean_ns, report};

const EVENTS: u64 = 20_000;

/// The rules and the CSV encoding over `lines`: rows, filtered, rejected.
fn rules_pass(
    rs: &RuleSet,
    lines: &[Vec<u8>],
    csv: &mut [Vec<u8>],
    now: time::OffsetDateTime,
) -> (u64, u64, u64) {
    let (mut rows, mut filtered, mut rejected) = (0u64, 0u64, 0u64);
    for buf in csv.iter_mut() {
        buf.clear();
    }
    for (i, l) in lines.iter().enumerate() {
        let lineage = Lineage {
            raw_key: "raw/dt=2026-11-25/hr=19/shardId-000000000000/bench.ndjson.zst",
            line: i as u64 + 1,
            loaded_at: now,
        };
        match rs.apply_line(l, &lineage) {
            Outcome::Rows(out) => {
                for row in &out {
                    write_csv_row(&mut csv[row.table], row).expect("in-memory CSV");
                    rows += 1;
                }
            }
            Outcome::Filtered { .. } => filtered += 1,
            Outcome::Rejected(_) => rejected += 1,
        }
    }
    (rows, filtered, rejected)
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&testkit::bench::criterion_dir())
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let file = testkit::bench::workspace_root().join("rules/rules.yaml");
    let text = std::fs::read_to_string(&file).expect("rules/rules.yaml");
    let rs = RuleSet::from_yaml(&text).expect("the shipped rules compile");
    let now = time::OffsetDateTime::now_utc();
    let lines: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| {
            caudal_core::rules::wrap_client_event(bench_event(i).as_bytes(), i, now).expect("line")
        })
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut csv: Vec<Vec<u8>> = vec![Vec::with_capacity(4 << 20); rs.tables().len()];
    let (rows, filtered, rejected) = rules_pass(&rs, &lines, &mut csv, now);
    println!(
        "{EVENTS} raw lines ({:.1} MB, {} B/line): {rows} rows, {filtered} filtered, {rejected} rejected",
        bytes as f64 / 1e6,
        bytes / EVENTS as usize
    );
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("floor", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(serde_json::from_slice::<serde_json::Value>(l).expect("json"));
            }
        });
    });
    g.bench_function("rules-csv", |b| {
        b.iter(|| black_box(rules_pass(&rs, &lines, &mut csv, now)));
    });
    g.finish();
    c.final_summary();

    let (Some(rules), Some(floor)) = (mean_ns("rules", "rules-csv"), mean_ns("rules", "floor"))
    else {
        return;
    };
    let per_event_ns = rules / EVENTS as f64;
    println!("\nrules + CSV, shipped rules file, one core:");
    println!(
        "{}",
        report(
            "rules + CSV events/s",
            1e9 / per_event_ns,
            "events/s",
            300_000.0,
            true
        )
    );
    println!("  rules + CSV / JSON parse floor: {:.1}×", rules / floor);
}
