//! `rules-bench` — throughput of rules + CSV encoding on generated raw-archive lines, next to the
//! floor of merely parsing the same bytes as JSON (`serde_json::Value`).
//!
//! `cargo run --release -p rules --bin rules-bench -- [--events 100000] [--file rules/rules.yaml]`
//!
//! Single-threaded, so the numbers are per core. The event mix follows the example rules file:
//! page views, purchases, sign-ups, searches, some internal test traffic (filtered), some
//! schema-invalid purchases (rejected) and an unknown type (catch-all or rejected).

use std::hint::black_box;
use std::time::Instant;

use caudal_core::rules::{Lineage, Outcome, RuleSet, write_csv_row};

fn event(i: u64) -> String {
    let ts = format!(
        "2026-11-25T{:02}:{:02}:{:02}.{:03}Z",
        (i / 3600) % 24,
        (i / 60) % 60,
        i % 60,
        i % 1000
    );
    match i % 100 {
        0..=54 => format!(
            r#"{{"type":"page_view","id":"pv-{i}","ts":"{ts}","user_id":"user-{u}","session_id":"sess-{s}","page":{{"url":"https://shop.example.com/products/{i}?utm_source=news&ref=abc","title":"  Product {i} - Example Shop ","referrer":"https://www.google.com/search?q=shoes"}},"device":{{"mobile":{m}}}}}"#,
            u = i % 5000,
            s = i % 20000,
            m = i.is_multiple_of(3)
        ),
        55..=69 => format!(
            r#"{{"type":"purchase","id":"po-{i}","ts":"{ts}","order_id":"order-{i}","user_id":"user-{u}","email":" User{u}@Example.com ","currency":"eur","amount":{a}.{c:02},"coupon":"bf24","items":[{{"sku":"sku-{k}","qty":2,"price":10.5}},{{"sku":"sku-{k2}","qty":1}}]}}"#,
            u = i % 5000,
            a = i % 900,
            c = i % 100,
            k = i % 300,
            k2 = (i + 7) % 300
        ),
        70..=79 => format!(
            r#"{{"type":"signup","id":"su-{i}","ts":"{ts}","user_id":"user-{i}","email":"New.User{i}@Mail.Example.org","plan":"pro","country":"de","marketing_opt_in":true}}"#
        ),
        80..=94 => format!(
            r#"{{"type":"search","id":"se-{i}","ts":"{ts}","user_id":"user-{u}","session_id":"sess-{s}","query":"  Red Running Shoes {q} ","result_count":{r}}}"#,
            u = i % 5000,
            s = i % 20000,
            q = i % 50,
            r = i % 40
        ),
        95..=96 => format!(
            r#"{{"type":"page_view","id":"t-{i}","test":true,"ts":"{ts}","page":{{"url":"https://x/"}}}}"#
        ),
        97..=98 => format!(
            r#"{{"type":"purchase","id":"bad-{i}","ts":"{ts}","order_id":"o-{i}","currency":"EURO","amount":-1}}"#
        ),
        _ => format!(
            r#"{{"type":"newsletter_open","id":"nl-{i}","ts":"{ts}","campaign":"nov-{c}"}}"#,
            c = i % 7
        ),
    }
}

/// `--events N` (default 100 000) and `--file PATH` (default `rules/rules.yaml`).
fn parse_args() -> anyhow::Result<(u64, String)> {
    let mut n: u64 = 100_000;
    let mut file = String::from("rules/rules.yaml");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => {
                n = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--events N"))?
            }
            "--file" => file = args.next().ok_or_else(|| anyhow::anyhow!("--file PATH"))?,
            other => anyhow::bail!("unknown argument {other} (use --events N, --file PATH)"),
        }
    }
    Ok((n, file))
}

/// One timed pass of the rules and the CSV encoding over `lines`: its seconds, and rows,
/// filtered, rejected, CSV bytes.
fn rules_round(
    rs: &RuleSet,
    lines: &[Vec<u8>],
    now: time::OffsetDateTime,
) -> anyhow::Result<(f64, (u64, u64, u64, usize))> {
    let (mut rows, mut filtered, mut rejected, mut csv_bytes) = (0u64, 0u64, 0u64, 0usize);
    let mut csv: Vec<Vec<u8>> = vec![Vec::with_capacity(1 << 20); rs.tables().len()];
    let t = Instant::now();
    for (i, l) in lines.iter().enumerate() {
        let lineage = Lineage {
            raw_key: "raw/dt=2026-11-25/hr=19/shardId-000000000000/bench.ndjson.gz",
            line: i as u64 + 1,
            loaded_at: now,
        };
        match rs.apply_line(l, &lineage) {
            Outcome::Rows(out) => {
                for row in &out {
                    let buf = &mut csv[row.table];
                    write_csv_row(buf, row)?;
                    if buf.len() > 8 << 20 {
                        csv_bytes += buf.len();
                        buf.clear();
                    }
                    rows += 1;
                }
            }
            Outcome::Filtered { .. } => filtered += 1,
            Outcome::Rejected(_) => rejected += 1,
        }
    }
    csv_bytes += csv.iter().map(Vec::len).sum::<usize>();
    Ok((
        t.elapsed().as_secs_f64(),
        (rows, filtered, rejected, csv_bytes),
    ))
}

fn main() -> anyhow::Result<()> {
    let (n, file) = parse_args()?;
    let text = std::fs::read_to_string(&file)?;
    let rs = RuleSet::from_yaml(&text)?;
    let now = time::OffsetDateTime::now_utc();
    let lines: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            caudal_core::rules::wrap_client_event(event(i).as_bytes(), i, now)
                .map_err(anyhow::Error::msg)
        })
        .collect::<anyhow::Result<_>>()?;
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();

    let mut best_floor = f64::MAX;
    let mut best_rules = f64::MAX;
    let (mut rows, mut filtered, mut rejected, mut csv_bytes) = (0u64, 0u64, 0u64, 0usize);
    for _round in 0..3 {
        let t = Instant::now();
        for l in &lines {
            let v: serde_json::Value = serde_json::from_slice(l)?;
            black_box(v);
        }
        best_floor = best_floor.min(t.elapsed().as_secs_f64());

        let (secs, counts) = rules_round(&rs, &lines, now)?;
        (rows, filtered, rejected, csv_bytes) = counts;
        best_rules = best_rules.min(secs);
    }
    let eps = |s: f64| n as f64 / s;
    let mbps = |s: f64| bytes as f64 / s / 1e6;
    println!(
        "events: {n} ({:.1} MB of raw lines, avg {} B/line), rules file {file} v{}",
        bytes as f64 / 1e6,
        bytes / n.max(1) as usize,
        &rs.version()[..16]
    );
    println!(
        "outcomes: {rows} rows, {filtered} filtered, {rejected} rejected; CSV {:.1} MB",
        csv_bytes as f64 / 1e6
    );
    println!(
        "json parse floor : {:>10.0} events/s  {:>7.1} MB/s  ({:.3} s)",
        eps(best_floor),
        mbps(best_floor),
        best_floor
    );
    println!(
        "rules + CSV      : {:>10.0} events/s  {:>7.1} MB/s  ({:.3} s)",
        eps(best_rules),
        mbps(best_rules),
        best_rules
    );
    println!(
        "ratio            : rules+CSV takes {:.1}x the parse-only time (single core, best of 3)",
        best_rules / best_floor
    );
    Ok(())
}
