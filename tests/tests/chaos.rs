//! End-to-end under fault injection: the local stack with `--chaos on,dataapi=0.1,kill=0.05`
//! (the defaults, `caudal_local::emulators::chaos::DEFAULT_SPEC`, with more Data API failures and kills:
//! S3 503s and 500s after writes, Kinesis and Firehose throttling per call and per record,
//! Data API statements FAILED, stopped part way and rolled back, or delayed, 5 % of all
//! invocations killed part way, every S3 notification delivered three times to a loader with
//! four concurrent workers), at SNAPSHOT and at SERIALIZABLE isolation.
//!
//! Each run sends 22,000 events (21,000 generated — valid events of five tables, events the
//! rules filter or reject, events the API rejects — and 1,000 valid ones sent a second time)
//! through a client that behaves like a well-made SDK: a 5xx without a receipt sends the
//! request again, `retry` items are sent again with the same ids, with backoff and jitter,
//! until every item is accepted or rejected. When the pipeline is quiet, the warehouse must
//! hold every accepted id exactly once — as a row in its table, or as a reject — filtered ids
//! not at all, no id that was not accepted, every raw object in the ledger, reconciliation
//! differences 0, and every dead-letter / on-failure queue empty; and the lake (Firehose's
//! copy, at least once) must hold every accepted id. Failures name the ids.
//!
//! Needs moto_server (MOTO_SERVER or PATH) and PostgreSQL 15 server binaries, like `make local`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use caudal_local::cli::report;
use caudal_local::emulators::chaos::{ChaosConfig, Fault};
use caudal_local::emulators::dataapi::Isolation;
use caudal_local::stack::{Stack, StackOptions};
use common::{Expect, Item, db, item, post, rejects_by_id, repo, request, rows_by_id_and_table};
use serde_json::Value;
use tokio::sync::Mutex;

mod common;

/// The default faults, with twice the Data API failures and kills: a run submits a few
/// hundred statements and makes a few hundred invocations of each function, and each kind of
/// statement fault, and a kill of each function, must happen several times.
const CHAOS: &str = "on,dataapi=0.1,kill=0.05";
const GENERATED: usize = 21_000;
const RESENT: usize = 1_000;
const EVENTS_PER_REQUEST: usize = 100;
const CONCURRENT_REQUESTS: usize = 4;
const MAX_ATTEMPTS: u32 = 40;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_chaos_at_snapshot() {
    run(Isolation::Snapshot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_chaos_at_serializable() {
    run(Isolation::Serializable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_refusing_every_write_loses_and_duplicates_nothing() {
    spill_run().await;
}

/// Events sent while Kinesis refuses every write (then as many after, and some of the first
/// sent again).
const OUTAGE_EVENTS: usize = 3_000;
const RESENT_AFTER_OUTAGE: usize = 500;

/// What the client learnt from the receipts.
#[derive(Debug, Default)]
struct Sent {
    /// Times each id was reported accepted (a re-sent event twice).
    accepted: HashMap<String, u32>,
    /// Ids the API rejected.
    rejected: HashSet<String>,
    /// HTTP answers per status.
    statuses: BTreeMap<u16, u64>,
    /// Requests sent, first attempts and retries.
    requests: u64,
    /// Items sent again after a `retry` receipt or a 5xx.
    resent_items: u64,
}

/// Sends `items` until each is accepted or rejected, like a client SDK: a 5xx (or a broken
/// connection) without a receipt sends everything again, `retry` items are sent again alone.
async fn send_until_done(
    client: reqwest::Client,
    api: String,
    items: Vec<Item>,
    form: usize,
    sent: Arc<Mutex<Sent>>,
) {
    let mut pending = items;
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            let ceiling = (100u64 << attempt.min(5)).min(2_000);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()));
            let jitter = nanos % ceiling;
            tokio::time::sleep(Duration::from_millis(ceiling / 2 + jitter / 2)).await;
        }
        let r = request(&pending, form + attempt as usize, "caudal-chaos/1.0");
        let req = post(&client, &api, &r);
        let answer = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                Some((status, body))
            }
            Err(_) => None,
        };
        let mut s = sent.lock().await;
        s.requests += 1;
        if attempt > 0 {
            s.resent_items += pending.len() as u64;
        }
        let Some((status, body)) = answer else {
            continue;
        };
        *s.statuses.entry(status).or_default() += 1;
        let results = body["results"]
            .as_array()
            .filter(|r| r.len() == pending.len());
        let Some(results) = results else {
            assert!(
                status >= 500,
                "unexpected answer {status} without a receipt: {body}"
            );
            continue;
        };
        let mut again = Vec::new();
        for ((it, result), id) in pending.into_iter().zip(results).zip(&r.ids) {
            match result["status"].as_str() {
                Some("accepted") => {
                    assert_eq!(result["id"], id.as_str(), "receipt order");
                    *s.accepted.entry(it.id).or_default() += 1;
                }
                Some("rejected") => {
                    s.rejected.insert(it.id);
                }
                _ => again.push(it),
            }
        }
        pending = again;
        if pending.is_empty() {
            return;
        }
    }
    let ids: Vec<&str> = pending.iter().map(|i| i.id.as_str()).collect();
    panic!(
        "{} events never got a final answer after {MAX_ATTEMPTS} attempts: {ids:?}",
        ids.len()
    );
}

/// Ids (of this run) found in the lake: every object the delivery stream wrote.
async fn ids_in_lake(stack: &Stack, run: &str) -> HashSet<String> {
    let s3 = &stack.clients().s3;
    let id = regex::Regex::new(&format!("{run}-[0-9]{{5}}")).expect("id pattern");
    let mut ids = HashSet::new();
    for d in &stack.model().delivery_streams {
        let mut pages = s3
            .list_objects_v2()
            .bucket(&d.bucket)
            .prefix("lake/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.expect("list lake").contents() {
                let body = s3
                    .get_object()
                    .bucket(&d.bucket)
                    .key(o.key().unwrap_or_default())
                    .send()
                    .await
                    .expect("get lake object")
                    .body
                    .collect()
                    .await
                    .expect("lake object body")
                    .into_bytes();
                let text = if body.starts_with(&[0x1f, 0x8b]) {
                    let mut out = String::new();
                    std::io::Read::read_to_string(
                        &mut flate2::read::GzDecoder::new(&body[..]),
                        &mut out,
                    )
                    .expect("gzip lake object");
                    out
                } else {
                    String::from_utf8_lossy(&body).into_owned()
                };
                ids.extend(id.find_iter(&text).map(|m| m.as_str().to_owned()));
            }
        }
    }
    ids
}

/// Panics with the offending ids (at most 50 shown) when `ids` is not empty.
fn assert_none(what: &str, mut ids: Vec<String>) {
    ids.sort();
    assert!(
        ids.is_empty(),
        "{} id(s) {what}: {:?}{}",
        ids.len(),
        &ids[..ids.len().min(50)],
        if ids.len() > 50 { " …" } else { "" }
    );
}

/// Sends every batch (a few at a time) until each item is accepted or rejected.
async fn send_all(api: &str, batches: Vec<Vec<Item>>) -> Sent {
    let sent = Arc::new(Mutex::new(Sent::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REQUESTS));
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, batch) in batches.into_iter().enumerate() {
        let (client, api, sent, gate) =
            (client.clone(), api.to_owned(), sent.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore");
            send_until_done(client, api, batch, n, sent).await;
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("sender");
    }
    Arc::try_unwrap(sent).expect("senders done").into_inner()
}

/// Every valid item was accepted, every item the API refuses was refused.
fn check_answers(expect: &HashMap<String, Expect>, sent: &Sent) {
    let mut not_final = Vec::new();
    let mut wrongly_accepted = Vec::new();
    for (id, e) in expect {
        match (
            e,
            sent.accepted.contains_key(id),
            sent.rejected.contains(id),
        ) {
            (Expect::ApiRejected, false, true) => {}
            (Expect::ApiRejected, _, _) => wrongly_accepted.push(id.clone()),
            (_, true, false) => {}
            _ => not_final.push(id.clone()),
        }
    }
    assert_none("refused by the API but accepted", wrongly_accepted);
    assert_none("valid but never accepted", not_final);
}

/// Every accepted id exactly once in the warehouse (and at least once in the lake), nothing
/// else there, every object loaded and reconciled, no dead letters. Returns the rejects.
async fn check_warehouse(
    stack: &Stack,
    run: &str,
    expect: &HashMap<String, Expect>,
    sent: &Sent,
    counts: &report::Counts,
) -> i64 {
    let pg = db(stack).await;
    let rows = rows_by_id_and_table(&pg).await;
    let rejects = rejects_by_id(&pg).await;
    let (mut lost, mut duplicated, mut misplaced) = (Vec::new(), Vec::new(), Vec::new());
    for id in sent.accepted.keys() {
        let in_tables: i64 = rows.get(id).map_or(0, |v| v.iter().map(|(_, n)| n).sum());
        let in_rejects = rejects.get(id).copied().unwrap_or(0);
        let total = in_tables + in_rejects;
        let want = match expect.get(id) {
            Some(Expect::Row(t)) => (Some(*t), 1, 0),
            Some(Expect::Rejected) => (None, 0, 1),
            Some(Expect::Filtered) => (None, 0, 0),
            _ => (None, -1, -1),
        };
        let wanted_total = want.1 + want.2;
        if total < wanted_total {
            lost.push(id.clone());
        } else if total > wanted_total {
            duplicated.push(format!("{id} ({in_tables} rows, {in_rejects} rejects)"));
        } else if (in_tables, in_rejects) != (want.1, want.2)
            || want
                .0
                .is_some_and(|t| rows[id].iter().any(|(table, _)| table != t))
        {
            misplaced.push(format!("{id} ({:?}, {in_rejects} rejects)", rows.get(id)));
        }
    }
    let unknown: Vec<String> = rows
        .keys()
        .chain(rejects.keys())
        .filter(|id| !sent.accepted.contains_key(*id))
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    assert_none("accepted but lost", lost);
    assert_none(
        "in the warehouse more than once (or at all, when filtered)",
        duplicated,
    );
    assert_none("in the wrong place", misplaced);
    assert_none("in the warehouse but never accepted", unknown);

    // The lake is a copy, at least once: Firehose failures must not lose a line there either.
    let lake = ids_in_lake(stack, run).await;
    assert_none(
        "accepted but missing from the lake",
        sent.accepted
            .keys()
            .filter(|id| !lake.contains(*id))
            .cloned()
            .collect(),
    );
    assert!(
        counts.unloaded().is_empty(),
        "unloaded: {:?}",
        counts.unloaded()
    );
    assert!(
        counts.reconciliation.mismatches.is_empty(),
        "reconciliation differences: {:?}",
        counts.reconciliation.mismatches
    );
    assert_eq!(counts.kinesis_failed, 0, "no stream batch given up");
    let dead: Vec<&(String, u64)> = counts
        .unconsumed_queues
        .iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(dead.is_empty(), "messages in dead-letter queues: {dead:?}");

    rejects.values().sum()
}

/// Each kind of fault was injected, each function was killed, and loads ran concurrently.
/// Returns the kills per function and the most concurrent loads.
fn check_faults(stack: &Stack) -> (BTreeMap<String, u64>, u64) {
    let chaos = stack.chaos().expect("a chaos stack");
    let f = chaos.stats.snapshot();
    let kinds = |ks: &[Fault]| ks.iter().map(|k| f[k]).sum::<u64>();
    for (what, n) in [
        (
            "S3 errors",
            kinds(&[Fault::S3Unavailable, Fault::S3ErrorAfterWrite]),
        ),
        (
            "Kinesis call failures",
            kinds(&[Fault::KinesisThrottledCall, Fault::KinesisErrorAfterWrite]),
        ),
        ("Kinesis record failures", f[&Fault::KinesisFailedRecords]),
        ("Firehose call failures", f[&Fault::FirehoseUnavailableCall]),
        ("Firehose record failures", f[&Fault::FirehoseFailedRecords]),
        (
            "errors after a write",
            kinds(&[Fault::S3ErrorAfterWrite, Fault::KinesisErrorAfterWrite]),
        ),
        ("failed Data API statements", f[&Fault::DataApiFailed]),
        ("rolled-back Data API statements", f[&Fault::DataApiStopped]),
        ("delayed Data API statements", f[&Fault::DataApiDelayed]),
        ("killed invocations", f[&Fault::Killed]),
        ("duplicate notifications", f[&Fault::DuplicateNotifications]),
    ] {
        assert!(n > 0, "no {what} were injected: {f:?}");
    }
    let mut kills = BTreeMap::new();
    for f in stack.functions().values() {
        let n = f.stats.killed.load(Ordering::Relaxed);
        kills.insert(f.name.clone(), n);
        assert!(n > 0, "{} was never killed part way", f.name);
    }
    let loader = stack
        .sqs_mappings()
        .iter()
        .find(|m| m.source().queue_name.contains("loader"))
        .expect("the loader's queue mapping");
    let loader_concurrency = loader.stats.max_concurrent.load(Ordering::Relaxed);
    assert!(
        loader_concurrency >= 2,
        "loads ran one at a time (max {loader_concurrency})"
    );

    (kills, loader_concurrency)
}

async fn run(isolation: Isolation) {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        caudal_core::telemetry::init_tracing(false, Some(&filter));
    }
    caudal_core::telemetry::set_emf_sink(|_| {});
    let started = Instant::now();
    let level = isolation.as_str();
    let run = format!("chaos{}{}", &level[..4], std::process::id());
    let run_dir = std::env::temp_dir().join(format!("caudal-{run}"));
    let mut opts = StackOptions::for_repo(&repo());
    opts.run_dir = run_dir.clone();
    opts.isolation = isolation;
    opts.chaos = Some(ChaosConfig::parse(CHAOS).expect("the chaos spec parses"));
    // Smaller raw objects and loader batches: more objects, notifications, loads and
    // invocations for the faults to meet. Packed records of 4 KB (about a dozen events, several
    // per request) keep packing in play — a refused record fails a dozen events at once —
    // while leaving enough records for raw objects of 10.
    opts.parameters = vec![
        ("KinesisPackBytes".into(), "4096".into()),
        ("RawWriterBatchSize".into(), "10".into()),
        ("LoaderBatchSize".into(), "5".into()),
    ];
    let stack = Stack::start(opts).await.expect("local stack starts");
    let chaos = stack.chaos().expect("a chaos stack").clone();

    // ---- Send, like a client that retries. -------------------------------------------------
    let items: Vec<Item> = (0..GENERATED).map(|i| item(&run, i)).collect();
    let resent: Vec<Item> = items
        .iter()
        .filter(|i| matches!(i.expect, Expect::Row(_)))
        .take(RESENT)
        .cloned()
        .collect();
    let expect: HashMap<String, Expect> = items.iter().map(|i| (i.id.clone(), i.expect)).collect();
    let batches: Vec<Vec<Item>> = items
        .chunks(EVENTS_PER_REQUEST)
        .chain(resent.chunks(EVENTS_PER_REQUEST))
        .map(<[Item]>::to_vec)
        .collect();
    let send_start = Instant::now();
    let sent = send_all(stack.api_url(), batches).await;
    let send_took = send_start.elapsed();
    let settle_start = Instant::now();
    let counts = report::wait_until_loaded(&stack, SETTLE_TIMEOUT)
        .await
        .expect("the pipeline settles under chaos");
    let settle_took = settle_start.elapsed();

    // ---- What the client was told. ----------------------------------------------------------
    let events_sent = GENERATED + RESENT;
    assert!(events_sent >= 20_000);
    check_answers(&expect, &sent);

    // ---- What the warehouse holds. ----------------------------------------------------------
    let rejects = check_warehouse(&stack, &run, &expect, &sent, &counts).await;

    // ---- The faults really happened. --------------------------------------------------------
    let (kills, loader_concurrency) = check_faults(&stack);

    eprintln!(
        "chaos at {level}: {events_sent} events in {} requests ({} items re-sent; answers {:?}) \
         sent in {send_took:?}; {} ids accepted, {} rejected at the API; settled {settle_took:?} \
         later; {} raw objects, {} rows, {} rejects; 0 lost, 0 duplicated; loader ran up to \
         {loader_concurrency} loads at once; kills {kills:?}; total {:?}",
        sent.requests,
        sent.resent_items,
        sent.statuses,
        sent.accepted.len(),
        sent.rejected.len(),
        counts.raw_objects.len(),
        counts.rows(),
        rejects,
        started.elapsed()
    );
    eprint!("faults injected at {level}:\n{}", chaos.stats);
    stack.stop().await.expect("stack stops");
    let _ = std::fs::remove_dir_all(&run_dir);
}

impl Sent {
    /// Both senders' answers together.
    fn merge(mut self, other: Sent) -> Sent {
        for (id, n) in other.accepted {
            *self.accepted.entry(id).or_default() += n;
        }
        self.rejected.extend(other.rejected);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.requests += other.requests;
        self.resent_items += other.resent_items;
        self
    }
}

/// Keys under `prefix` in the stack's raw bucket.
async fn raw_bucket_keys(stack: &Stack, prefix: &str) -> Vec<String> {
    let bucket = &stack
        .model()
        .bucket("RawBucket")
        .expect("the raw bucket")
        .name;
    report::list_keys(stack, bucket, prefix)
        .await
        .expect("list raw bucket")
        .into_iter()
        .collect()
}

/// The spill path end to end: while Kinesis refuses every write, every request is still
/// answered `accepted` (the events are spilled to S3) and the spilled events reach the warehouse
/// through the drain *during* the outage; after it, more events and some of the outage's sent
/// again (a client that lost its receipts) — every accepted id exactly once, reconciliation 0.
async fn spill_run() {
    caudal_core::telemetry::set_emf_sink(|_| {});
    let run = format!("spill{}", std::process::id());
    let run_dir = std::env::temp_dir().join(format!("caudal-{run}"));
    let mut opts = StackOptions::for_repo(&repo());
    opts.run_dir = run_dir.clone();
    // No random faults: only the outage this test switches on and off.
    opts.chaos = Some(ChaosConfig::default());
    let stack = Stack::start(opts).await.expect("local stack starts");
    let chaos = stack.chaos().expect("a chaos stack").clone();
    let batches = |items: &[Item]| -> Vec<Vec<Item>> {
        items
            .chunks(EVENTS_PER_REQUEST)
            .map(<[Item]>::to_vec)
            .collect()
    };

    // ---- Kinesis down: every answer final on the first attempt. ----------------------------
    chaos.set_kinesis_down(true);
    let outage: Vec<Item> = (0..OUTAGE_EVENTS).map(|i| item(&run, i)).collect();
    let outage_start = Instant::now();
    let during = send_all(stack.api_url(), batches(&outage)).await;
    let outage_send = outage_start.elapsed();
    assert!(
        during.statuses.keys().all(|s| *s < 500) && during.resent_items == 0,
        "a request during the outage was not answered whole: {:?}, {} items re-sent",
        during.statuses,
        during.resent_items
    );
    assert!(chaos.stats.get(Fault::KinesisOutageCall) > 0);
    let spilled = raw_bucket_keys(&stack, "spill/").await;
    assert!(!spilled.is_empty(), "nothing was spilled");
    // Still down: the drain, not Kinesis, brings the spilled events to the warehouse.
    let drained = report::wait_until_loaded(&stack, SETTLE_TIMEOUT)
        .await
        .expect("the spilled events load while Kinesis is down");
    let drain_took = outage_start.elapsed() - outage_send;
    assert!(
        chaos.kinesis_refusing(),
        "the outage lasted the whole phase"
    );
    assert!(drained.rows() > 0);

    // ---- Kinesis back: more events, and some of the outage's sent again. -------------------
    chaos.set_kinesis_down(false);
    // Each ingest sandbox's breaker stays open for BREAKER_OPEN_FOR after its last refused
    // request, giving Kinesis one 300 ms probe before spilling; on a busy local moto a probe
    // can take longer, and spilling then is correct. Past that window every request gets the
    // whole budget, so from here on nothing may spill (the probe path has its handler test).
    let breakers_closed = outage_start + outage_send + ingest_api::spill::BREAKER_OPEN_FOR;
    tokio::time::sleep_until(breakers_closed.into()).await;
    let after: Vec<Item> = (OUTAGE_EVENTS..2 * OUTAGE_EVENTS)
        .map(|i| item(&run, i))
        .collect();
    let again: Vec<Item> = outage
        .iter()
        .filter(|i| matches!(i.expect, Expect::Row(_)))
        .take(RESENT_AFTER_OUTAGE)
        .cloned()
        .collect();
    let later = send_all(
        stack.api_url(),
        batches(&after).into_iter().chain(batches(&again)).collect(),
    )
    .await;
    let counts = report::wait_until_loaded(&stack, SETTLE_TIMEOUT)
        .await
        .expect("the pipeline settles");
    let spilled_after = raw_bucket_keys(&stack, "spill/").await.len();
    let (during_requests, during_statuses) = (during.requests, during.statuses.clone());
    let sent = during.merge(later);
    let expect: HashMap<String, Expect> = outage
        .iter()
        .chain(&after)
        .map(|i| (i.id.clone(), i.expect))
        .collect();
    check_answers(&expect, &sent);
    let rejects = check_warehouse(&stack, &run, &expect, &sent, &counts).await;
    let drained_objects = raw_bucket_keys(&stack, "raw/")
        .await
        .into_iter()
        .filter(|k| k.contains("/spill/"))
        .count();
    assert!(
        drained_objects >= spilled.len(),
        "{} spill objects, {drained_objects} drained raw objects",
        spilled.len()
    );
    assert_eq!(
        spilled_after,
        spilled.len(),
        "nothing spilled once Kinesis was back"
    );
    eprintln!(
        "kinesis outage: {OUTAGE_EVENTS} events in {} requests all answered during the outage \
         ({:?}, {} Kinesis calls refused) in {outage_send:?}, {} spill objects drained into \
         raw/ and loaded {drain_took:?} after the last answer, Kinesis still down; then \
         {OUTAGE_EVENTS} more and {RESENT_AFTER_OUTAGE} of the outage's again: {} ids accepted, \
         {} rows, {rejects} rejects, 0 lost, 0 duplicated, reconciliation 0",
        during_requests,
        during_statuses,
        chaos.stats.get(Fault::KinesisOutageCall),
        spilled.len(),
        sent.accepted.len(),
        counts.rows()
    );
    stack.stop().await.expect("stack stops");
    let _ = std::fs::remove_dir_all(&run_dir);
}
