//! End-to-end: the real local stack (moto, PostgreSQL, the Data API endpoint, the three
//! functions in process, the event source pollers), driven over HTTP like a client would.
//!
//! One test, in phases, because starting the stack is the expensive part:
//! 1. ≥ 10,000 generated events in ~70 requests (JSON arrays, NDJSON, gzip of both, one
//!    request from a bot user agent): valid events of four types, an unknown type (catch-all),
//!    events the rules filter, events the rules reject (schema, mapping), events the API
//!    rejects, and 500 re-sent valid events (duplicate ids). Then, per accepted event id:
//!    valid → exactly one row in one table and no reject; rule-invalid → exactly one reject and
//!    no row; filtered → neither; and the ledger's totals match what was sent. The
//!    reconciliation view has zero differences. Ingest → queryable latency (p50/p95) is
//!    measured on one sampled event per request and printed.
//! 2. Every request is sent again: the event tables do not change.
//! 3. An S3 notification for an already-loaded raw object is delivered again to the loader's
//!    queue: the loader runs and loads nothing.
//! 4. Two-region ingest: the stack runs a second region (`us-west-2`: its own API, stream, raw
//!    archive and functions, deployed with `RedshiftRegion=us-east-1`). A client sends the
//!    same events to both regions' APIs and some events to the second only: every event is
//!    exactly one row, the second region's raw keys name it, the copies count as duplicates,
//!    and the reconciliation stays at zero.
//! 5. Packing: 1,000 events of 500 bytes in requests of 50 take at least 10× fewer Kinesis
//!    records than events (every phase's events are packed; this one measures the goal).
//! 6. Browsers: headless Chromium opens a page of an allowed origin (`AllowedOrigins`) and one
//!    of another origin; each sends events with `navigator.sendBeacon`, a `text/plain` `fetch`
//!    (no preflight) and an `application/json` `fetch` (preflighted). The allowed page reads its
//!    receipts and its events are one row each, and so are the events it sends with Snowplow's
//!    browser tracker from npm (`@snowplow/browser-tracker`, tests/browser); the other page's
//!    requests are refused (403, or at the preflight) and none of its events is loaded or
//!    rejected.
//! 7. Segment's SDK: the real `segment-analytics-python` (tests/sdk/segment_e2e.py) sends
//!    identify, track and page calls through a proxy that loses the answer to its first batch
//!    (a 503 after caudal took it): the SDK's retry does not duplicate, every message is one
//!    row in its table, and a client with a wrong write key gets 401, gives up, and writes
//!    nothing.
//! 8. Snowplow's tracker: the real `snowplow-tracker` (tests/sdk/snowplow_e2e.py) sends page
//!    views, structured and self-describing events (with base64 contexts) as tp2 POST batches
//!    and as `/i` pixels, through a proxy that loses the answer to the first of each: every
//!    event is one row in its table (the catch-all for a schema the rules do not name), and a
//!    tracker of an app the stack does not list gets 400, gives up, and writes nothing.
//!
//! Needs moto_server (MOTO_SERVER or PATH) and PostgreSQL 15 server binaries, like `make local`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use caudal_local::cli::report::{self, Counts};
use caudal_local::stack::{Stack, StackOptions};
use common::{
    Expect, Item, Request, db, event_tables_union, item, post, rejects_by_id, repo, request,
    rows_by_id_and_table,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[path = "common/browser.rs"]
mod browser;
mod common;

const EVENTS_PER_REQUEST: usize = 150;
const RESENT: usize = 500;
const LOAD_TIMEOUT: Duration = Duration::from_secs(150);
const SECOND_REGION: &str = "us-west-2";
/// Phase 7's write key (the stack's `SegmentWriteKeys`).
const SEGMENT_KEY: &str = "wk-e2e-source-1";
/// Phase 8's app id (the stack's `SnowplowAppIds`).
const SNOWPLOW_APP: &str = "e2e-shop";

/// Receipt summary: accepted ids and counts.
#[derive(Debug, Default)]
struct Sent {
    accepted: Vec<String>,
    rejected: usize,
    retry: usize,
    statuses: BTreeMap<u16, usize>,
}

type SampleTx = tokio::sync::mpsc::UnboundedSender<(String, Instant)>;

/// Sends `requests` (4 at a time); for ids in `sample_ids`, reports when the API accepted them.
async fn send_all(
    api: &str,
    requests: &[Request],
    sample_ids: &HashSet<String>,
    samples: Option<SampleTx>,
) -> Sent {
    let client = reqwest::Client::new();
    let sent = Arc::new(Mutex::new(Sent::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for r in requests {
        let req = post(&client, api, r);
        let (sent, gate) = (sent.clone(), gate.clone());
        let sample_ids = sample_ids.clone();
        let samples = samples.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let receipt: Value = resp.json().await.expect("json receipt");
            let answered = Instant::now();
            let mut s = sent.lock().await;
            *s.statuses.entry(status).or_default() += 1;
            for item in receipt["results"].as_array().into_iter().flatten() {
                match item["status"].as_str() {
                    Some("accepted") => {
                        let id = item["id"].as_str().unwrap_or_default().to_owned();
                        if let Some(tx) = samples.as_ref().filter(|_| sample_ids.contains(&id)) {
                            let _ = tx.send((id.clone(), answered));
                        }
                        s.accepted.push(id);
                    }
                    Some("rejected") => s.rejected += 1,
                    _ => s.retry += 1,
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("sender task");
    }
    Arc::try_unwrap(sent).expect("senders done").into_inner()
}

/// Polls the warehouse for the sampled ids arriving on `rx` (while the requests are still
/// being sent) and records how long after the API's answer each became queryable.
async fn measure_latency(
    pg: tokio_postgres::Client,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
) -> Vec<Duration> {
    let union = event_tables_union(&pg).await;
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut open = true;
    let mut out = Vec::new();
    let start = Instant::now();
    while (open || !pending.is_empty()) && start.elapsed() < LOAD_TIMEOUT + Duration::from_secs(60)
    {
        loop {
            match rx.try_recv() {
                Ok((id, t)) => {
                    pending.insert(id, t);
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let ids: Vec<String> = pending.keys().cloned().collect();
        let rows = pg
            .query(
                &format!("SELECT DISTINCT event_id FROM ({union}) u WHERE event_id = ANY($1)"),
                &[&ids],
            )
            .await
            .unwrap();
        let now = Instant::now();
        for r in rows {
            if let Some(t) = pending.remove(&r.get::<_, String>(0)) {
                out.push(now.duration_since(t));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pending.is_empty(),
        "{} sampled events never became queryable",
        pending.len()
    );
    out.sort();
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn table_fingerprint(pg: &tokio_postgres::Client) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for t in report::event_tables(pg, "public").await.unwrap() {
        // Count and an order-independent digest of every row's full content.
        let r = pg
            .query_one(
                &format!(
                    "SELECT COUNT(*), COALESCE(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '') \
                     FROM public.\"{t}\" x"
                ),
                &[],
            )
            .await
            .unwrap();
        out.push((t, r.get(0), r.get(1)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_loads_everything_exactly_once() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        caudal_core::telemetry::init_tracing(false, Some(&filter));
    }
    // The handlers' metric lines are noise in test output.
    caudal_core::telemetry::set_emf_sink(|_| {});
    let started = Instant::now();
    let run = format!("e2e{}", std::process::id());
    let run_dir = std::env::temp_dir().join(format!("caudal-{run}"));
    let mut opts = StackOptions::for_repo(&repo());
    opts.run_dir = run_dir.clone();
    opts.second_region = Some(SECOND_REGION.to_owned());
    // Phase 6's pages: one server, two origins; only the 127.0.0.1 one may send.
    let tracker =
        repo().join("tests/browser/node_modules/@snowplow/browser-tracker/dist/index.umd.min.js");
    let page_port = browser::serve_page(vec![("/sp.js", tracker)]);
    opts.parameters.push((
        "AllowedOrigins".to_owned(),
        format!("http://127.0.0.1:{page_port}"),
    ));
    opts.parameters
        .push(("SegmentWriteKeys".to_owned(), SEGMENT_KEY.to_owned()));
    opts.parameters
        .push(("SnowplowAppIds".to_owned(), SNOWPLOW_APP.to_owned()));
    let stack = Stack::start(opts).await.expect("local stack starts");
    eprintln!("stack started in {:?}", started.elapsed());

    // ---- Phase 1: the generated mix. ------------------------------------------------------
    let total = 10_400;
    let items: Vec<Item> = (0..total).map(|i| item(&run, i)).collect();
    let mut requests: Vec<Request> = items
        .chunks(EVENTS_PER_REQUEST)
        .enumerate()
        .map(|(n, chunk)| request(chunk, n, "caudal-e2e/1.0"))
        .collect();
    // A client retrying: the same valid page views again (duplicate ids, identical bytes).
    let resent: Vec<Item> = items
        .iter()
        .filter(|i| i.expect == Expect::Row("page_views"))
        .take(RESENT)
        .cloned()
        .collect();
    requests.extend(
        resent
            .chunks(EVENTS_PER_REQUEST)
            .enumerate()
            .map(|(n, c)| request(c, n + 1, "caudal-e2e/1.0")),
    );
    // A crawler: every event of this request is dropped by the `drop_bots` filter.
    let bot: Vec<Item> = (0..100)
        .map(|k| {
            let mut it = item(&format!("{run}bot"), k * 20);
            it.expect = Expect::Filtered;
            it
        })
        .collect();
    requests.push(request(&bot, 3, "Mozilla/5.0 (compatible; Googlebot/2.1)"));
    let expectations: HashMap<&str, Expect> = items
        .iter()
        .chain(&bot)
        .map(|i| (i.id.as_str(), i.expect))
        .collect();
    // One sampled event per request: its first event that becomes a row.
    let sample_ids: HashSet<String> = requests
        .iter()
        .filter_map(|r| {
            r.ids
                .iter()
                .find(|id| matches!(expectations.get(id.as_str()), Some(Expect::Row(_))))
        })
        .cloned()
        .collect();

    let send_start = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let latency = tokio::spawn(measure_latency(db(&stack).await, rx));
    let sent = send_all(stack.api_url(), &requests, &sample_ids, Some(tx)).await;
    let send_took = send_start.elapsed();
    let latencies = latency.await.expect("latency task");
    let counts: Counts = report::wait_until_loaded(&stack, LOAD_TIMEOUT)
        .await
        .expect("pipeline settles");
    let phase1 = send_start.elapsed();

    let api_rejected = items
        .iter()
        .filter(|i| i.expect == Expect::ApiRejected)
        .count();
    let accepted_lines = total - api_rejected + RESENT + bot.len();
    assert_eq!(sent.retry, 0, "nothing left to retry: {:?}", sent.statuses);
    assert_eq!(sent.rejected, api_rejected, "API rejections");
    assert_eq!(sent.accepted.len(), accepted_lines);
    assert!(sent.accepted.len() + sent.rejected >= 10_000);

    // Stage totals agree with what was sent.
    assert_eq!(
        counts.kinesis_events as usize, accepted_lines,
        "every accepted event reached Kinesis once"
    );
    assert!(
        counts.kinesis_processed * 10 <= counts.kinesis_events,
        "packed: {} records for {} events",
        counts.kinesis_processed,
        counts.kinesis_events
    );
    assert_eq!(counts.kinesis_failed, 0);
    assert_eq!(counts.raw_invalid_objects, 0);
    assert!(counts.unloaded().is_empty());
    assert_eq!(
        counts.raw_lines as usize, accepted_lines,
        "every accepted event is one raw line"
    );
    let expected_filtered = expectations
        .values()
        .filter(|e| **e == Expect::Filtered)
        .count();
    let expected_rejected = expectations
        .values()
        .filter(|e| **e == Expect::Rejected)
        .count();
    assert_eq!(counts.filtered as usize, expected_filtered, "filtered");
    assert_eq!(counts.rejected as usize, expected_rejected, "rejected");
    assert_eq!(counts.duplicates as usize, RESENT, "duplicates");
    assert!(
        counts.reconciliation.mismatches.is_empty(),
        "{:?}",
        counts.reconciliation.mismatches
    );
    assert_eq!(counts.reconciliation.records as usize, accepted_lines);

    // Per event: exactly one final row, or one reject, or (filtered) neither.
    let pg = db(&stack).await;
    let rows: HashMap<String, i64> = rows_by_id_and_table(&pg)
        .await
        .into_iter()
        .map(|(id, tables)| (id, tables.iter().map(|(_, n)| n).sum()))
        .collect();
    let rejects = rejects_by_id(&pg).await;
    let mut per_table: BTreeMap<&str, usize> = BTreeMap::new();
    for id in sent.accepted.iter().collect::<HashSet<_>>() {
        let expect = expectations
            .get(id.as_str())
            .copied()
            .unwrap_or_else(|| panic!("unknown id {id}"));
        let (r, j) = (
            rows.get(id).copied().unwrap_or(0),
            rejects.get(id).copied().unwrap_or(0),
        );
        match expect {
            Expect::Row(t) => {
                assert_eq!((r, j), (1, 0), "{id} ({t}) must be exactly one row");
                *per_table.entry(t).or_default() += 1;
            }
            Expect::Rejected => assert_eq!((r, j), (0, 1), "{id} must be exactly one reject"),
            Expect::Filtered => assert_eq!((r, j), (0, 0), "{id} was filtered"),
            Expect::ApiRejected => panic!("{id} was refused by the API but accepted"),
        }
    }
    for (t, n) in &counts.tables {
        assert_eq!(
            per_table.get(t.as_str()).copied().unwrap_or(0) as i64,
            *n,
            "rows in {t}"
        );
    }
    assert_eq!(
        rows.len(),
        per_table.values().sum::<usize>(),
        "no rows for unknown ids"
    );

    let p50 = percentile(&latencies, 0.5);
    let p95 = percentile(&latencies, 0.95);
    eprintln!(
        "phase 1: {} events in {} requests sent in {send_took:?}, all loaded after {phase1:?}; \
         ingest→queryable over {} sampled events: p50 {p50:?}, p95 {p95:?}",
        sent.accepted.len() + sent.rejected,
        requests.len(),
        latencies.len()
    );
    eprint!("{counts}");

    // ---- Phase 2: everything again changes nothing in the final tables. -------------------
    let before = table_fingerprint(&pg).await;
    let resend_start = Instant::now();
    let again = send_all(stack.api_url(), &requests, &HashSet::new(), None).await;
    assert_eq!(again.accepted.len(), accepted_lines);
    let counts2 = report::wait_until_loaded(&stack, LOAD_TIMEOUT)
        .await
        .expect("settles after re-send");
    assert_eq!(
        table_fingerprint(&pg).await,
        before,
        "re-sent events changed the final tables"
    );
    assert!(
        counts2.reconciliation.mismatches.is_empty(),
        "{:?}",
        counts2.reconciliation.mismatches
    );
    assert_eq!(
        counts2.raw_lines as usize,
        2 * accepted_lines,
        "the second copy was archived and accounted for"
    );
    let valid_lines = expectations
        .values()
        .filter(|e| matches!(e, Expect::Row(_)))
        .count()
        + RESENT;
    let rejected_lines = expectations
        .values()
        .filter(|e| **e == Expect::Rejected)
        .count();
    assert_eq!(
        counts2.duplicates as usize,
        RESENT + valid_lines + rejected_lines,
        "every re-sent valid event is a duplicate, and so is every re-sent invalid one (rejects \
         count events, not attempts)"
    );
    let reject_rows = |c: &Counts| c.rejects_by_code.iter().map(|(_, n)| n).sum::<i64>();
    assert_eq!(
        reject_rows(&counts2),
        reject_rows(&counts),
        "re-sending an invalid event adds no reject row"
    );
    eprintln!(
        "phase 2: re-sent everything, tables unchanged ({:?})",
        resend_start.elapsed()
    );

    // ---- Phase 3: a redelivered S3 notification loads nothing twice. ----------------------
    let loader = stack
        .model()
        .function_by_binary("rules-loader")
        .expect("the template has the loader");
    let queue_url = stack
        .queue_url_by_arn(&loader.sqs[0].queue_arn)
        .expect("loader queue")
        .to_owned();
    let key = counts2
        .raw_objects
        .iter()
        .next()
        .expect("a raw object")
        .clone();
    let head = stack
        .clients()
        .s3
        .head_object()
        .bucket(counts2.raw_bucket())
        .key(&key)
        .send()
        .await
        .unwrap();
    let notification = json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-25T20:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAE2E"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "E2E", "x-amz-id-2": "E2E"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "redelivery",
               "bucket": {"name": counts2.raw_bucket(), "ownerIdentity": {"principalId": "E2E"},
                          "arn": format!("arn:aws:s3:::{}", counts2.raw_bucket())},
               "object": {"key": key, "size": head.content_length().unwrap_or(0),
                          "eTag": head.e_tag().unwrap_or_default().trim_matches('"'),
                          "versionId": head.version_id(), "sequencer": "00E2E"}}
    }]});
    let loader_fn = &stack.functions()[&loader.logical_id];
    let invocations = loader_fn.stats.invocations.load(Ordering::Relaxed);
    let ledger_before: i64 = pg
        .query_one("SELECT COUNT(*) FROM public.caudal_ledger", &[])
        .await
        .unwrap()
        .get(0);
    stack
        .clients()
        .sqs
        .send_message()
        .queue_url(&queue_url)
        .message_body(notification.to_string())
        .send()
        .await
        .unwrap();
    let counts3 = report::wait_until_loaded(&stack, LOAD_TIMEOUT)
        .await
        .expect("settles after redelivery");
    assert!(
        loader_fn.stats.invocations.load(Ordering::Relaxed) > invocations,
        "the loader saw the redelivery"
    );
    let ledger_after: i64 = pg
        .query_one("SELECT COUNT(*) FROM public.caudal_ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ledger_after, ledger_before, "no second ledger entry");
    assert_eq!(table_fingerprint(&pg).await, before, "no second load");
    assert!(counts3.reconciliation.mismatches.is_empty());
    assert_eq!(
        counts3
            .unconsumed_queues
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>(),
        0,
        "nothing in DLQs"
    );

    two_regions(&stack, &run, &pg, &counts3).await;
    packing(&stack, &run, &pg).await;
    browsers(&stack, &run, &pg, page_port).await;
    segment_sdk(&stack, &run, &pg).await;
    snowplow_sdk(&stack, &run, &pg).await;

    stack.stop().await.expect("stack stops");
    let _ = std::fs::remove_dir_all(&run_dir);
    eprintln!("e2e total {:?}", started.elapsed());
}

/// Phase 5: 500-byte events in requests of 50 (the size and batch the packing goal names) take
/// at least 10× fewer Kinesis records than events, and still load exactly once.
async fn packing(stack: &Stack, run: &str, pg: &tokio_postgres::Client) {
    const REQUESTS: usize = 20;
    const PER_REQUEST: usize = 50;
    let phase = Instant::now();
    let before = report::wait_until_loaded(stack, LOAD_TIMEOUT)
        .await
        .expect("settled before packing");
    let items: Vec<Item> = (0..REQUESTS * PER_REQUEST)
        .map(|k| {
            // Page views only (i % 20 < 6), each padded to 500 bytes.
            let mut it = item(&format!("{run}pack"), (k / 6) * 20 + k % 6);
            let pad = 500usize.saturating_sub(it.line.len() + 10);
            let mut v: Value = serde_json::from_str(&it.line).unwrap();
            v["pad"] = json!("p".repeat(pad));
            it.line = v.to_string();
            assert!((495..=505).contains(&it.line.len()), "{}", it.line.len());
            it
        })
        .collect();
    let requests: Vec<Request> = items
        .chunks(PER_REQUEST)
        .enumerate()
        .map(|(n, c)| request(c, n, "caudal-e2e/1.0"))
        .collect();
    let sent = send_all(stack.api_url(), &requests, &HashSet::new(), None).await;
    assert_eq!(sent.accepted.len(), items.len(), "{:?}", sent.statuses);
    let after = report::wait_until_loaded(stack, LOAD_TIMEOUT)
        .await
        .expect("settles after packing");
    let records = after.kinesis_processed - before.kinesis_processed;
    let events = after.kinesis_events - before.kinesis_events;
    assert_eq!(
        events as usize,
        items.len(),
        "every event reached Kinesis once"
    );
    assert!(
        records * 10 <= events,
        "{records} records for {events} events: less than 10× packing"
    );
    assert!(after.reconciliation.mismatches.is_empty());
    let rows = rows_by_id_and_table(pg).await;
    for it in &items {
        let n: i64 = rows
            .get(&it.id)
            .map(|t| t.iter().map(|(_, n)| n).sum())
            .unwrap_or(0);
        assert_eq!(n, 1, "{} must be exactly one row", it.id);
    }
    eprintln!(
        "phase 5: {events} events of 500 B in requests of {PER_REQUEST} took {records} Kinesis \
         records ({:.1} events per record), all loaded once ({:?})",
        events as f64 / records.max(1) as f64,
        phase.elapsed()
    );
}

/// The script a tracking page runs (`args`: the API URL and four event ids): a beacon, a
/// `text/plain` fetch of two events and an `application/json` fetch; it returns what the page
/// could see of each.
const PAGE_SCRIPT: &str = r#"
const [api, ids] = args;
const ev = (id) => ({type: "page_view", id, ts: new Date().toISOString(), user_id: "u-browser",
  session_id: "s-browser", page: {url: location.href, title: "Shoes", referrer: "https://www.example.org/"},
  device: {mobile: false}});
const read = async (r) => ({status: r.status, body: await r.json(),
  request_id: r.headers.get("apigw-requestid")});
const out = {beacon: navigator.sendBeacon(api + "/v1/events", JSON.stringify([ev(ids[0])]))};
try {
  out.plain = await read(await fetch(api + "/v1/events", {method: "POST",
    headers: {"content-type": "text/plain"}, body: JSON.stringify([ev(ids[1]), ev(ids[2])])}));
} catch (e) { out.plain = {error: String(e)}; }
try {
  out.json = await read(await fetch(api + "/v1/events", {method: "POST",
    headers: {"content-type": "application/json"}, body: JSON.stringify(ev(ids[3]))}));
} catch (e) { out.json = {error: String(e)}; }
return out;
"#;

/// The script a page with Snowplow's browser tracker runs (`args`: the API URL and the app id):
/// it loads the tracker from npm (`/sp.js`, tests/browser) and tracks a page view, a structured
/// and a self-describing event as a site would; it returns the events the tracker reported
/// sent (`eid`, `e`) and any failure.
const TRACKER_SCRIPT: &str = r#"
const [api, app] = args;
await new Promise((ok, fail) => {
  const s = document.createElement("script");
  s.src = "/sp.js"; s.onload = ok; s.onerror = () => fail(new Error("no /sp.js"));
  document.head.appendChild(s);
});
const sp = window.snowplowBrowserTracking;
const sent = [], failed = [];
sp.newTracker("sp", api, {appId: app, eventMethod: "post", bufferSize: 1, credentials: "omit",
  onRequestSuccess: (payloads) => payloads.forEach((p) => sent.push({eid: p.eid, e: p.e})),
  onRequestFailure: (f) => failed.push(JSON.stringify(f))});
sp.trackPageView({title: "Shoes, from the browser tracker"});
sp.trackStructEvent({category: "cart", action: "add", label: "browser", value: 3});
sp.trackSelfDescribingEvent({event: {
  schema: "iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1",
  data: {targetUrl: "https://shop.example.com/sale", elementId: "banner"}}});
const until = Date.now() + 20000;
while (sent.length < 3 && failed.length === 0 && Date.now() < until) {
  await new Promise((r) => setTimeout(r, 100));
}
return {sent, failed};
"#;

/// Phase 6: a page of an allowed origin and one of another origin send events from a real
/// browser (see the module docs).
async fn browsers(stack: &Stack, run: &str, pg: &tokio_postgres::Client, page_port: u16) {
    let phase = Instant::now();
    let api = stack.api_url();
    let counted = |key: &str, status: u16| -> u64 {
        stack
            .api()
            .stats
            .snapshot()
            .get(&(key.to_owned(), status))
            .copied()
            .unwrap_or(0)
    };
    let (refused_before, preflights_before) =
        (counted("POST /v1/events", 403), counted("(preflight)", 204));
    let ids = |page: &str| -> Vec<String> { (0..4).map(|k| format!("{run}{page}-{k}")).collect() };
    let (allowed, other) = (ids("web"), ids("evil"));
    let chrome = browser::Browser::start(browser::DESKTOP_CHROME).await;
    let step = |what: &str| eprintln!("phase 6: {what} after {:?}", phase.elapsed());
    step("browser started");

    chrome
        .goto(&format!("http://127.0.0.1:{page_port}/shoes"))
        .await;
    let seen = chrome.run(PAGE_SCRIPT, json!([api, allowed])).await;
    assert_eq!(seen["beacon"], true, "{seen}");
    for (form, n) in [("plain", 2), ("json", 1)] {
        assert_eq!(seen[form]["status"], 202, "{form}: {seen}");
        assert_eq!(seen[form]["body"]["accepted"], n, "{form}: {seen}");
        assert!(
            seen[form]["request_id"].is_string(),
            "exposed header: {seen}"
        );
    }

    step("the allowed page sent");
    let tracked = chrome.run(TRACKER_SCRIPT, json!([api, SNOWPLOW_APP])).await;
    assert_eq!(tracked["failed"], json!([]), "{tracked}");
    let mut by_table = serde_json::Map::new();
    for ev in tracked["sent"].as_array().unwrap() {
        let table = match ev["e"].as_str() {
            Some("pv") => "snowplow_page_views",
            Some("se") => "snowplow_struct_events",
            Some("ue") => "snowplow_link_clicks",
            other => panic!("the tracker sent {other:?}: {tracked}"),
        };
        by_table
            .entry(table)
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .unwrap()
            .push(ev["eid"].clone());
    }
    assert_eq!(by_table.len(), 3, "three kinds sent: {tracked}");
    step("the browser tracker sent");
    chrome
        .goto(&format!("http://localhost:{page_port}/shoes"))
        .await;
    let blocked = chrome.run(PAGE_SCRIPT, json!([api, other])).await;
    for form in ["plain", "json"] {
        assert!(
            blocked[form]["error"]
                .as_str()
                .is_some_and(|e| e.contains("Failed to fetch")),
            "the browser must not hand the page a response: {blocked}"
        );
    }
    step("the other page sent");
    // The beacon and the text/plain fetch reach the function and are refused; the JSON fetch
    // never leaves the browser (its preflight has no CORS headers).
    let deadline = Instant::now() + Duration::from_secs(20);
    while counted("POST /v1/events", 403) < refused_before + 2 {
        assert!(
            Instant::now() < deadline,
            "the other origin's requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    chrome.quit().await;
    step("its refusals counted");
    // One preflight per page for its JSON fetch, and one for the tracker's POSTs (Chromium
    // caches it: MaxAge).
    assert_eq!(counted("(preflight)", 204), preflights_before + 3);

    // The beacon is sent after its script returns: wait until all four allowed events are in.
    let deadline = Instant::now() + LOAD_TIMEOUT;
    let rows = loop {
        let counts = report::wait_until_loaded(stack, LOAD_TIMEOUT)
            .await
            .expect("settles after the browsers");
        assert!(counts.reconciliation.mismatches.is_empty());
        let rows = rows_by_id_and_table(pg).await;
        if allowed.iter().all(|id| rows.contains_key(id)) || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for id in &allowed {
        assert_eq!(
            rows.get(id).cloned().unwrap_or_default(),
            vec![("page_views".to_owned(), 1)],
            "{id}: one row"
        );
    }
    each_once_in_its_table(stack, pg, &by_table).await;
    let title: String = pg
        .query_one(
            "SELECT title FROM public.snowplow_page_views WHERE event_id = $1",
            &[&by_table["snowplow_page_views"][0].as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, "Shoes, from the browser tracker");
    let rejects = rejects_by_id(pg).await;
    for id in &other {
        assert!(
            !rows.contains_key(id) && !rejects.contains_key(id),
            "{id} was refused"
        );
    }
    eprintln!(
        "phase 6: a page of an allowed origin sent 4 events (beacon, text/plain, JSON with a \
         preflight) and 3 with Snowplow's browser tracker from npm, each loaded once; another \
         origin's were refused ({:?})",
        phase.elapsed()
    );
}

/// Phase 7: Segment's Python SDK, unchanged but for its host (see the module docs).
async fn segment_sdk(stack: &Stack, run: &str, pg: &tokio_postgres::Client) {
    let phase = Instant::now();
    let venv = std::env::var("VENV").expect("VENV (the Makefile sets it; make tools fills it)");
    let out = tokio::process::Command::new(format!("{venv}/bin/python"))
        .arg(repo().join("tests/sdk/segment_e2e.py"))
        .args([
            stack.api_url(),
            SEGMENT_KEY,
            "wk-not-configured",
            &format!("{run}seg"),
        ])
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "segment_e2e.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    assert_eq!(
        report["errors"],
        json!([]),
        "the SDK reported no error: {report}"
    );
    assert_eq!(
        report["wrong_key_errors"],
        json!([401]),
        "a wrong key: one 401, not retried: {report}"
    );
    let proxy = report["proxy"].as_array().unwrap();
    assert!(
        proxy
            .iter()
            .any(|p| p[0] == "/v1/batch" && p[1] == 200 && p[2] == 503),
        "a batch caudal took was answered 503: {report}"
    );
    let sent = report["sent"].as_object().unwrap();
    let (total, rows) = each_once_in_its_table(stack, pg, sent).await;
    for id in report["wrong_key_ids"].as_array().unwrap() {
        assert!(!rows.contains_key(id.as_str().unwrap()), "{id}: wrong key");
    }
    // Clock skew corrected, pseudonymised traits, the message's fields in columns.
    let order: (String, Option<String>, String) = {
        let r = pg
            .query_one(
                "SELECT order_id, currency, user_id FROM public.segment_order_completed \
                 WHERE event_id = $1",
                &[&format!("{run}seg-order-0")],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        order,
        (
            format!("{run}seg-A-0"),
            Some("EUR".to_owned()),
            format!("{run}seg-user-0")
        )
    );
    eprintln!(
        "phase 7: segment-analytics-python sent {total} messages (one batch answered 503 after \
         it was taken, then retried): each one row in its table; a wrong write key got 401 and \
         wrote nothing ({:?})",
        phase.elapsed()
    );
}

/// Waits until every id of `sent` (table → ids) has landed (or the load timeout passes), then
/// checks that each is exactly one row, in its table. Returns how many ids and the rows.
async fn each_once_in_its_table(
    stack: &Stack,
    pg: &tokio_postgres::Client,
    sent: &serde_json::Map<String, Value>,
) -> (usize, HashMap<String, Vec<(String, i64)>>) {
    let ids = || {
        sent.iter()
            .flat_map(|(t, ids)| ids.as_array().unwrap().iter().map(move |id| (t, id)))
            .map(|(t, id)| (t, id.as_str().unwrap()))
    };
    let total = ids().count();
    let deadline = Instant::now() + LOAD_TIMEOUT;
    let rows = loop {
        report::wait_until_loaded(stack, LOAD_TIMEOUT)
            .await
            .expect("settles after the SDK");
        let rows = rows_by_id_and_table(pg).await;
        let landed = ids().filter(|(_, id)| rows.contains_key(*id)).count();
        if landed == total || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (table, id) in ids() {
        assert_eq!(
            rows.get(id).cloned().unwrap_or_default(),
            vec![(table.clone(), 1)],
            "{id}: exactly one row in {table}"
        );
    }
    (total, rows)
}

/// Phase 8: Snowplow's Python tracker, unchanged but for its collector (see the module docs).
async fn snowplow_sdk(stack: &Stack, run: &str, pg: &tokio_postgres::Client) {
    let phase = Instant::now();
    let venv = std::env::var("VENV").expect("VENV (the Makefile sets it; make tools fills it)");
    let out = tokio::process::Command::new(format!("{venv}/bin/python"))
        .arg(repo().join("tests/sdk/snowplow_e2e.py"))
        .args([
            stack.api_url(),
            SNOWPLOW_APP,
            "e2e-unlisted",
            &format!("{run}sp"),
        ])
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "snowplow_e2e.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    let proxy = report["proxy"].as_array().unwrap();
    // The proxy lost caudal's 200 to the first POST and the first pixel: the tracker saw a
    // failure for each, and no other.
    for (method, path) in [
        ("POST", "/com.snowplowanalytics.snowplow/tp2"),
        ("GET", "/i"),
    ] {
        assert!(
            proxy
                .iter()
                .any(|p| p[0] == method && p[1] == path && p[2] == 200 && p[3] == 503),
            "a {method} caudal took was answered 503: {report}"
        );
    }
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "only the two lost answers: {report}");
    assert_eq!(
        report["wrong_app_failures"],
        json!([3]),
        "another app: one 400, not retried: {report}"
    );
    assert!(
        proxy
            .iter()
            .filter(|p| p[2] == 400)
            .all(|p| p[4] == report["wrong_app_ids"]),
        "{report}"
    );
    let sent = report["sent"].as_object().unwrap();
    let (total, rows) = each_once_in_its_table(stack, pg, sent).await;
    let rejects = rejects_by_id(pg).await;
    for id in report["wrong_app_ids"].as_array().unwrap() {
        let id = id.as_str().unwrap();
        assert!(
            !rows.contains_key(id) && !rejects.contains_key(id),
            "{id}: another app"
        );
    }
    // The decoded fields in their columns: the POST's JSON escapes and the pixel's percent
    // escapes, the base64 context, the number from a string, the device time corrected.
    let first_view = report["sent"]["snowplow_page_views"][0].as_str().unwrap();
    let r = pg
        .query_one(
            "SELECT title, url, domain_userid, app_id, contexts::text \
             FROM public.snowplow_page_views WHERE event_id = $1",
            &[&first_view],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "Product 0 — café");
    assert_eq!(
        r.get::<_, String>(1),
        "https://shop.example.com/p/0?ref=mail&q=a+b"
    );
    assert_eq!(r.get::<_, String>(2), format!("{run}sp-duid-0"));
    assert_eq!(r.get::<_, String>(3), SNOWPLOW_APP);
    assert!(
        r.get::<_, String>(4).contains("gold"),
        "{}",
        r.get::<_, String>(4)
    );
    let pixel_struct = report["sent"]["snowplow_struct_events"][6]
        .as_str()
        .unwrap();
    let r = pg
        .query_one(
            "SELECT category, action, value, domain_userid FROM public.snowplow_struct_events \
             WHERE event_id = $1",
            &[&pixel_struct],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, f64>(2)
        ),
        ("video".to_owned(), "play".to_owned(), 1.0)
    );
    assert_eq!(r.get::<_, String>(3), format!("{run}sp-pixel-duid-1"));
    eprintln!(
        "phase 8: snowplow-tracker sent {total} events (tp2 POST batches and /i pixels; the first \
         of each answered 503 after it was taken, then retried): each one row in its table; \
         another app's got 400 and wrote nothing ({:?})",
        phase.elapsed()
    );
}

/// Phase 4: the same events sent to both regions, and some to the second only, are each one
/// row; the second region's raw objects name it and are loaded by its own loader.
async fn two_regions(stack: &Stack, run: &str, pg: &tokio_postgres::Client, before: &Counts) {
    let phase = Instant::now();
    let west = stack.region(SECOND_REGION).expect("the second region runs");
    let home_region = stack.home().name().to_owned();
    // Valid events only, so every id must end as exactly one row.
    let valid: Vec<Item> = (0..3_000)
        .map(|i| item(&format!("{run}r2"), i))
        .filter(|i| matches!(i.expect, Expect::Row(_)))
        .take(900)
        .collect();
    let (both, west_only) = valid.split_at(600);
    let to_requests = |items: &[Item]| -> Vec<Request> {
        items
            .chunks(EVENTS_PER_REQUEST)
            .enumerate()
            .map(|(n, c)| request(c, n, "caudal-e2e/1.0"))
            .collect()
    };
    let (both_requests, west_requests) = (to_requests(both), to_requests(west_only));
    let none = HashSet::new();
    let (home_sent, west_sent, west_only_sent) = tokio::join!(
        send_all(stack.api_url(), &both_requests, &none, None),
        send_all(west.api_url(), &both_requests, &none, None),
        send_all(west.api_url(), &west_requests, &none, None),
    );
    for sent in [&home_sent, &west_sent, &west_only_sent] {
        assert_eq!((sent.rejected, sent.retry), (0, 0), "{:?}", sent.statuses);
    }
    assert_eq!(
        home_sent.accepted.len() + west_sent.accepted.len(),
        2 * both.len()
    );
    assert_eq!(west_only_sent.accepted.len(), west_only.len());
    let counts = report::wait_until_loaded(stack, LOAD_TIMEOUT)
        .await
        .expect("both regions settle");

    // Every event once, whichever region (or both) it was sent to.
    let rows = rows_by_id_and_table(pg).await;
    for it in &valid {
        let Expect::Row(table) = it.expect else {
            unreachable!("only valid events")
        };
        let found: Vec<&(String, i64)> = rows
            .get(&it.id)
            .map(|t| t.iter().collect())
            .unwrap_or_default();
        assert_eq!(
            found,
            vec![&(table.to_owned(), 1)],
            "{} must be exactly one row in {table}",
            it.id
        );
    }
    assert_eq!(
        counts.raw_buckets.len(),
        2,
        "each region keeps its own raw archive"
    );
    assert!(counts.unloaded().is_empty());
    assert!(
        counts.reconciliation.mismatches.is_empty(),
        "{:?}",
        counts.reconciliation.mismatches
    );
    assert_eq!(
        counts.duplicates - before.duplicates,
        both.len() as i64,
        "the second copy of each event sent to both regions is a duplicate, nothing else"
    );
    assert_eq!(
        counts.raw_lines - before.raw_lines,
        (2 * both.len() + west_only.len()) as i64,
        "every copy was archived and accounted for"
    );

    // The second region's raw objects name it (its stream has the home stream's shard ids and
    // numbers its records from 1 again) and are loaded from its own bucket by its own loader.
    let marker = format!("/region={SECOND_REGION}/");
    let west_keys: Vec<&String> = counts
        .raw_objects
        .iter()
        .filter(|k| k.contains(&marker))
        .collect();
    assert!(!west_keys.is_empty(), "no raw key names {SECOND_REGION}");
    let home_keys = report::list_keys(stack, counts.raw_bucket(), caudal_core::keys::RAW_PREFIX)
        .await
        .expect("list the home raw bucket");
    assert!(
        home_keys.len() > before.raw_objects.len(),
        "phase 4 archived in the home region too"
    );
    assert!(
        home_keys.iter().all(|k| !k.contains("/region=")),
        "the home region's keys name no region"
    );
    let west_lines: i64 = pg
        .query_one(
            "SELECT COALESCE(SUM(records), 0)::BIGINT FROM public.caudal_ledger WHERE raw_key LIKE $1",
            &[&format!("%{marker}%")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(west_lines, (both.len() + west_only.len()) as i64);
    let west_loader = west
        .model()
        .function_by_binary("rules-loader")
        .expect("the second region has a loader");
    assert_eq!(
        west_loader
            .environment
            .get("REDSHIFT_REGION")
            .map(String::as_str),
        Some(home_region.as_str()),
        "the second region's loader is deployed against the home region's warehouse"
    );
    assert!(
        west.functions()[&west_loader.logical_id]
            .stats
            .invocations
            .load(Ordering::Relaxed)
            > 0
    );
    eprintln!(
        "phase 4: {} events to both regions and {} to {SECOND_REGION} only, each one row, \
         {} raw objects in {SECOND_REGION}, loaded in {:?}",
        both.len(),
        west_only.len(),
        west_keys.len(),
        phase.elapsed()
    );
}
