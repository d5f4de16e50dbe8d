//! Loader staging per event, with criterion (`cargo bench -p rules-loader --bench stage`, part
//! of `make bench`): one raw object of 20,000 events of the shipped rules' mix
//! ([`caudal_core::rules::bench_event`]), zstd-compressed as the raw-writer writes it, through
//! the loader's [`Stager`] — decompression, the rules, the CSV rows, their gzip parts and the
//! rejects — as one load does it. The per-event figure goes to `cost/measured.yaml`.
//!
//! Peak memory: a child process stages the raw object of a 6 MB Kinesis batch (~12,000 events,
//! ~7 MB of NDJSON) and reports `VmHWM`, against the 128 MB a function may be given.

use std::hint::black_box;
use std::time::Duration;

use caudal_core::codec::RAW_DEFAULT;
use caudal_core::rules::{RuleSet, bench_event, wrap_client_event};
use criterion::{Criterion, Throughput};
use rules_loader::stage::Stager;
use testkit::bench::{mean_ns, record_measured, report};

const EVENTS: u64 = 20_000;
const KEY: &str = "raw/dt=2026-11-25/hr=19/shardId-000000000000/bench.ndjson.zst";

fn rules() -> RuleSet {
    let file = testkit::bench::workspace_root().join("rules/rules.yaml");
    let text = std::fs::read_to_string(&file).expect("rules/rules.yaml");
    RuleSet::from_yaml(&text).expect("the shipped rules compile")
}

/// A compressed raw object of `events` lines, and its NDJSON size.
fn raw_object(events: u64) -> (Vec<u8>, usize) {
    let now = time::OffsetDateTime::now_utc();
    let mut ndjson = Vec::new();
    for i in 0..events {
        ndjson.extend_from_slice(
            &wrap_client_event(bench_event(i).as_bytes(), i, now).expect("line"),
        );
        ndjson.push(b'\n');
    }
    (
        RAW_DEFAULT.compress(&ndjson).expect("compress"),
        ndjson.len(),
    )
}

fn stage(rules: &RuleSet, body: &[u8]) -> u64 {
    let mut stager = Stager::new(rules, time::OffsetDateTime::now_utc());
    let stats = stager.add_object(KEY, "\"etag\"", body).expect("stages");
    let staged = stager.finish().expect("finishes");
    black_box(&staged);
    stats.valid
}

fn rss_child() {
    let rules = rules();
    // A 6 MB batch of the mix's ~500 B envelopes.
    let (body, ndjson) = raw_object(12_000);
    let before = testkit::bench::vm_hwm_mb();
    let valid = stage(&rules, &body);
    let peak = testkit::bench::vm_hwm_mb();
    println!(
        "peak RSS staging the raw object of a 6 MB batch ({:.1} MB NDJSON, {valid} rows): VmHWM {peak:.1} MB (before staging {before:.1} MB)",
        ndjson as f64 / 1e6,
    );
    if let Err(e) = record_measured(&[("loader_peak_mb", peak)]) {
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
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let rules = rules();
    let (body, ndjson) = raw_object(EVENTS);
    let valid = stage(&rules, &body);
    println!(
        "{EVENTS} events, {:.1} MB NDJSON, {:.2} MB compressed, {valid} rows",
        ndjson as f64 / 1e6,
        body.len() as f64 / 1e6
    );
    let mut g = c.benchmark_group("loader");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("stage", |b| b.iter(|| stage(&rules, &body)));
    g.finish();
    c.final_summary();
    if let Some(ns) = mean_ns("loader", "stage") {
        let per_event = ns / EVENTS as f64;
        println!("\nloader staging (decode, rules, CSV, gzip parts), one core:");
        println!(
            "{}",
            report(
                "loader staging events/s",
                1e9 / per_event,
                "events/s",
                300_000.0,
                true
            )
        );
        if let Err(e) = record_measured(&[("loader_us_per_event", per_event / 1000.0)]) {
            eprintln!("cost/measured.yaml not updated: {e}");
        }
    }
    testkit::bench::run_rss_child();
}
