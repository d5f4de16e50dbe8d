//! End-to-end: operating the pipeline with `caudal` (tools/caudal, run with its command-line
//! arguments, exactly as the binary runs) on the real local stack, each situation created for
//! real by an outage the stack switches on and off (`caudal_local::emulators::chaos::Outage`;
//! no random faults):
//!
//! 1. S3 notifications are lost while events are sent: the raw objects sit unloaded;
//!    `caudal replay` announces them and they load.
//! 2. Every load transaction fails: the loader's messages reach its dead-letter queue after
//!    `LoaderMaxReceiveCount` deliveries, `caudal status` says a person is needed;
//!    `caudal redrive loader-dlq` moves them back and they load.
//! 3. S3 refuses the raw-writer's writes: its batches fail past their retries into the
//!    on-failure queue; `caudal redrive raw-failures` reads them back from the stream and has
//!    the raw-writer write them, and doing it a second time changes nothing.
//! 4. A rules fix is deployed (the loader redeployed with a changed rules file):
//!    `caudal reprocess` re-applies it to every loaded object.
//! 5. `caudal smoke` sends tagged events until they are queryable.
//! 6. The dashboard: the live page (`caudal::dashboard`, as `caudal-local up` serves it) open
//!    in headless Chromium while events are sent shows them accepted, archived and loaded, and
//!    the rejects with their reasons, by refreshing itself; `caudal status --html` writes the
//!    same figures to a file the browser opens.
//!
//! Every write is run with `--dry-run` first (which changes nothing), and every phase ends with
//! `caudal status` and `caudal reconcile` at 0 and every accepted event exactly once in the
//! warehouse — as a row or a reject, by the rules in force.
//!
//! Needs moto_server (MOTO_SERVER or PATH) and PostgreSQL 15 server binaries, like `make local`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caudal_local::cli::report;
use caudal_local::emulators::chaos::{ChaosConfig, Outage};
use caudal_local::stack::{Stack, StackOptions, queue_depth};
use common::{Expect, Item, db, item, post, rejects_by_id, repo, request, rows_by_id_and_table};
use serde_json::Value;

#[path = "common/browser.rs"]
mod browser;
mod common;

const LOAD_TIMEOUT: Duration = Duration::from_secs(180);
const PER_PHASE: usize = 400;
const PER_REQUEST: usize = 100;

/// Runs `caudal --local --run-dir <dir> <args>`: its exit code.
async fn caudal(run_dir: &Path, args: &[&str]) -> u8 {
    let mut all = vec!["caudal", "--local", "--run-dir"];
    let dir = run_dir.display().to_string();
    all.push(&dir);
    all.extend_from_slice(args);
    eprintln!("$ {}", all.join(" "));
    caudal::cli::run(all).await
}

/// The events of phase `phase`; sends them and returns them with the ids the API accepted.
async fn send(stack: &Stack, run: &str, phase: usize) -> Vec<Item> {
    let items: Vec<Item> = (0..PER_PHASE)
        .map(|i| item(&format!("{run}p{phase}"), i))
        .collect();
    let client = reqwest::Client::new();
    for (n, chunk) in items.chunks(PER_REQUEST).enumerate() {
        let r = request(chunk, n, "caudal-operate/1.0");
        let resp = post(&client, stack.api_url(), &r)
            .send()
            .await
            .expect("request");
        let receipt: Value = resp.json().await.expect("receipt");
        let results = receipt["results"].as_array().expect("results");
        assert_eq!(results.len(), r.ids.len(), "one receipt per event");
        for (it, res) in chunk.iter().zip(results) {
            let want = if it.expect == Expect::ApiRejected {
                "rejected"
            } else {
                "accepted"
            };
            assert_eq!(res["status"].as_str(), Some(want), "{}: {res}", it.id);
        }
    }
    items
}

/// What the rules fix ([`testkit::rules_fix`]) makes of an event: searches with queries over
/// five characters are rejected, `/healthz` page views are rows.
fn after_fix(it: &Item) -> Expect {
    let v: Value = serde_json::from_str(&it.line).unwrap_or(Value::Null);
    match (it.expect, v["type"].as_str()) {
        (Expect::Row("searches"), _) if v["query"].as_str().is_some_and(|q| q.len() > 5) => {
            Expect::Rejected
        }
        (Expect::Filtered, Some("page_view"))
            if v["page"]["url"]
                .as_str()
                .is_some_and(|u| u.contains("/healthz"))
                && v.get("test").is_none() =>
        {
            Expect::Row("page_views")
        }
        (e, _) => e,
    }
}

/// Every accepted event exactly once: a row in its table or one reject, filtered ones nowhere.
async fn assert_exactly_once(pg: &tokio_postgres::Client, expect: &HashMap<String, Expect>) {
    let rows = rows_by_id_and_table(pg).await;
    let rejects = rejects_by_id(pg).await;
    let mut wrong = Vec::new();
    for (id, e) in expect {
        let r = rows.get(id).cloned().unwrap_or_default();
        let j = rejects.get(id).copied().unwrap_or(0);
        let ok = match e {
            Expect::Row(t) => r == [(t.to_string(), 1)] && j == 0,
            Expect::Rejected => r.is_empty() && j == 1,
            Expect::Filtered | Expect::ApiRejected => r.is_empty() && j == 0,
        };
        if !ok {
            wrong.push(format!("{id}: want {e:?}, rows {r:?}, rejects {j}"));
        }
    }
    wrong.sort();
    assert!(
        wrong.is_empty(),
        "{} event(s) not exactly once: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// Everything settled: loaded, `caudal status` 0, `caudal reconcile` 0, exactly once.
async fn settled(stack: &Stack, pg: &tokio_postgres::Client, expect: &HashMap<String, Expect>) {
    let counts = report::wait_until_loaded(stack, LOAD_TIMEOUT)
        .await
        .expect("settles");
    assert!(
        counts.reconciliation.mismatches.is_empty(),
        "{:?}",
        counts.reconciliation.mismatches
    );
    assert_exactly_once(pg, expect).await;
    assert_eq!(caudal(stack.run_dir(), &["status"]).await, 0, "status");
    assert_eq!(
        caudal(stack.run_dir(), &["reconcile", "--since", "2h"]).await,
        0,
        "reconcile"
    );
}

fn queue(stack: &Stack, logical_id: &str) -> String {
    stack
        .queue_url(logical_id)
        .unwrap_or_else(|| panic!("queue {logical_id}"))
        .to_owned()
}

async fn depth(stack: &Stack, logical_id: &str) -> u64 {
    let (v, f) = queue_depth(&stack.clients().sqs, &queue(stack, logical_id))
        .await
        .expect("depth");
    v + f
}

/// Waits until `cond` holds (polling every half second) or panics with `what`.
async fn until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn ledger_rows(pg: &tokio_postgres::Client) -> i64 {
    pg.query_one("SELECT COUNT(*) FROM public.caudal_ledger", &[])
        .await
        .unwrap()
        .get(0)
}

/// The page's figures (`data-figure` elements) and its reject rows, read in the browser.
async fn page_figures(chrome: &browser::Browser) -> Value {
    chrome
        .run(
            "const f = {};\n\
             for (const e of document.querySelectorAll('[data-figure]')) f[e.dataset.figure] = e.textContent;\n\
             const rejects = [...document.querySelectorAll('#rejects tr[data-code]')].map(r =>\n\
               ({code: r.dataset.code, rule: r.dataset.rule, lines: Number(r.children[2].textContent),\n\
                 samples: [...r.querySelectorAll('.sample')].map(x => x.textContent)}));\n\
             return {f, rejects, off: document.querySelectorAll('tr[data-off]').length};",
            Value::Null,
        )
        .await
}

/// Phase 6: the live page (as `caudal-local up` serves it) opened in headless Chromium before
/// events are sent: its figures change to the right numbers by themselves and the rejects
/// appear with their reasons; then `caudal status --html` writes the same figures to a file,
/// which the browser opens too. A screenshot goes to `$CAUDAL_SCREENSHOT` when set (the
/// README's, docs/dashboard.png).
async fn dashboard_phase(stack: &Stack, pg: &tokio_postgres::Client, run: &str) {
    let (url, task) = caudal::dashboard::spawn_local(stack.run_dir(), None)
        .await
        .expect("dashboard starts");
    let since = time::OffsetDateTime::now_utc();
    let since_arg = caudal_core::envelope::format_timestamp(since);
    let page = format!("{url}?since={since_arg}");
    let chrome = browser::Browser::start(browser::DESKTOP_CHROME).await;
    chrome.resize(1280, 2200).await;
    chrome.goto(&page).await;
    let before = page_figures(&chrome).await;
    for k in ["accepted", "archived", "loaded", "rejected"] {
        assert_eq!(
            before["f"][k], "0",
            "{k} before anything was sent: {before}"
        );
    }
    assert_eq!(before["f"]["p50"], "—", "{before}");

    let items = send(stack, run, 6).await;
    let accepted = items
        .iter()
        .filter(|i| i.expect != Expect::ApiRejected)
        .count();
    let expect: HashMap<String, Expect> =
        items.iter().map(|i| (i.id.clone(), after_fix(i))).collect();
    let rejected = expect.values().filter(|e| **e == Expect::Rejected).count();
    let rows = expect
        .values()
        .filter(|e| matches!(e, Expect::Row(_)))
        .count();
    assert!(rejected > 0 && rows > 0);
    let want = accepted.to_string();
    // The page refreshes itself: no reload, only reading what it shows.
    let deadline = Instant::now() + LOAD_TIMEOUT;
    let now = loop {
        let seen = page_figures(&chrome).await;
        let f = &seen["f"];
        if f["loaded"] == want.as_str()
            && f["archived"] == want.as_str()
            && f["rejected"] == rejected.to_string().as_str()
        {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the live page did not show every event loaded: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_exactly_once(pg, &expect).await;
    let f = &now["f"];
    assert_eq!(f["accepted"], want.as_str(), "{now}");
    assert_eq!(f["off"], "0", "{now}");
    assert_eq!(now["off"], 0, "no object highlighted: {now}");
    assert_eq!(f["dlq"], "0", "{now}");
    assert_eq!(f["health"], "OK: nothing needs a person", "{now}");
    assert!(
        f["p50"].as_str().is_some_and(|s| s.ends_with(" s")),
        "{now}"
    );
    // Every reject is in a row of its reason, with the newest lines and their messages.
    let shown: i64 = now["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["lines"].as_i64().unwrap())
        .sum();
    assert_eq!(shown, rejected as i64, "{now}");
    let reject_ids: Vec<&String> = expect
        .iter()
        .filter(|(_, e)| **e == Expect::Rejected)
        .map(|(id, _)| id)
        .collect();
    let samples: Vec<String> = now["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["samples"].as_array().unwrap().iter())
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert!(
        samples
            .iter()
            .any(|s| reject_ids.iter().any(|id| s.contains(id.as_str()))),
        "a sample is one of this phase's rejected lines: {samples:?}"
    );
    // Each of this phase's reject codes has its row, and the reasons shown are the warehouse's.
    let mine: Vec<(String, String)> = pg
        .query(
            "SELECT code, message FROM public.caudal_rejects WHERE event_id LIKE $1",
            &[&format!("{run}p6-%")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(mine.len(), rejected);
    let rows_shown = now["rejects"].as_array().unwrap();
    for (code, _) in &mine {
        assert!(
            rows_shown.iter().any(|r| r["code"] == code.as_str()),
            "no row for reject code {code}: {now}"
        );
    }
    assert!(
        samples
            .iter()
            .any(|s| mine.iter().any(|(_, m)| s.contains(m.as_str()))),
        "a reason is shown: {samples:?} vs {mine:?}"
    );
    // The screenshot shows the whole run (every phase's traffic, its rejects and objects).
    chrome.goto(&format!("{url}?minutes=10")).await;
    let png = chrome.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if let Ok(path) = std::env::var("CAUDAL_SCREENSHOT") {
        std::fs::write(&path, &png).expect("writing the screenshot");
        eprintln!("screenshot: {path}");
    }

    // The report: the same page as one file, from `caudal status --html`.
    let report = stack.run_dir().join("report.html");
    let file = report.display().to_string();
    let code = caudal(
        stack.run_dir(),
        &["status", "--html", &file, "--since", &since_arg],
    )
    .await;
    assert_eq!(code, 0, "status");
    let html = std::fs::read_to_string(&report).expect("the report");
    assert!(!html.contains("<script"), "a report needs no script");
    chrome.goto(&format!("file://{file}")).await;
    let r = page_figures(&chrome).await;
    for k in ["accepted", "archived", "loaded", "rejected", "off", "dlq"] {
        assert_eq!(r["f"][k], f[k], "{k}: report {r} vs live {now}");
    }
    chrome.quit().await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operating_the_pipeline_with_caudal() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        caudal_core::telemetry::init_tracing(false, Some(&filter));
    }
    caudal_core::telemetry::set_emf_sink(|_| {});
    let started = Instant::now();
    let run = format!("op{}", std::process::id());
    let run_dir: PathBuf = std::env::temp_dir().join(format!("caudal-{run}"));
    std::fs::create_dir_all(&run_dir).unwrap();
    // The rules file the loader is deployed with: phase 4 changes it.
    let rules = run_dir.join("rules.yaml");
    let shipped = std::fs::read_to_string(repo().join("rules/rules.yaml")).unwrap();
    std::fs::write(&rules, &shipped).unwrap();
    let mut opts = StackOptions::for_repo(&repo());
    opts.run_dir = run_dir.clone();
    opts.rules = Some(rules.clone());
    // Outages only (no random faults); failed messages come back after 2 s, not minutes.
    opts.chaos = Some(ChaosConfig {
        visibility_s: 2,
        ..ChaosConfig::default()
    });
    let stack = Stack::start(opts).await.expect("local stack starts");
    let chaos = stack.chaos().expect("outage switches").clone();
    let pg = db(&stack).await;
    let checkpoints = run_dir.join("checkpoints");
    let ckpt = checkpoints.display().to_string();
    eprintln!("stack started in {:?}", started.elapsed());
    let mut expect: HashMap<String, Expect> = HashMap::new();
    let mut all: Vec<Item> = Vec::new();

    // ---- 1. Lost notifications, then replay. ---------------------------------------------
    let t = Instant::now();
    chaos.set_outage(Outage::Notifications, true);
    let items = send(&stack, &run, 1).await;
    stack
        .wait_until_drained(LOAD_TIMEOUT)
        .await
        .expect("written");
    chaos.set_outage(Outage::Notifications, false);
    assert_eq!(
        ledger_rows(&pg).await,
        0,
        "nothing was announced to the loader"
    );
    let dry = caudal(
        &run_dir,
        &[
            "--checkpoint-dir",
            &ckpt,
            "replay",
            "--from",
            "1h",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(dry, 0);
    assert_eq!(
        depth(&stack, "LoaderQueue").await,
        0,
        "a dry run sends nothing"
    );
    let code = caudal(
        &run_dir,
        &[
            "--checkpoint-dir",
            &ckpt,
            "replay",
            "--from",
            "1h",
            "--wait",
            "120",
        ],
    )
    .await;
    assert_eq!(code, 0);
    expect.extend(items.iter().map(|i| (i.id.clone(), i.expect)));
    all.extend(items);
    settled(&stack, &pg, &expect).await;
    // A second replay finds everything loaded and announces nothing.
    assert_eq!(
        caudal(
            &run_dir,
            &["--checkpoint-dir", &ckpt, "replay", "--from", "1h"]
        )
        .await,
        0
    );
    assert_eq!(depth(&stack, "LoaderQueue").await, 0);
    eprintln!("phase 1 (replay) {:?}", t.elapsed());

    // ---- 2. Failing loads fill the loader's DLQ, then redrive. -----------------------------
    let t = Instant::now();
    chaos.set_outage(Outage::Loads, true);
    let ledger_before = ledger_rows(&pg).await;
    let items = send(&stack, &run, 2).await;
    until(
        "the loader's messages are all dead letters",
        LOAD_TIMEOUT,
        || async {
            stack.pending_work().await.is_none() && depth(&stack, "LoaderDeadLetterQueue").await > 0
        },
    )
    .await;
    chaos.set_outage(Outage::Loads, false);
    assert_eq!(ledger_rows(&pg).await, ledger_before, "nothing loaded");
    assert_eq!(caudal(&run_dir, &["status"]).await, 2, "a person is needed");
    let dead = depth(&stack, "LoaderDeadLetterQueue").await;
    assert_eq!(
        caudal(&run_dir, &["redrive", "loader-dlq", "--dry-run"]).await,
        0
    );
    assert_eq!(
        depth(&stack, "LoaderDeadLetterQueue").await,
        dead,
        "a dry run moves nothing"
    );
    assert_eq!(caudal(&run_dir, &["redrive", "loader-dlq"]).await, 0);
    expect.extend(items.iter().map(|i| (i.id.clone(), i.expect)));
    all.extend(items);
    settled(&stack, &pg, &expect).await;
    assert_eq!(depth(&stack, "LoaderDeadLetterQueue").await, 0);
    eprintln!("phase 2 (redrive loader-dlq) {:?}", t.elapsed());

    // ---- 3. The raw-writer's batches fail past their retries, then redrive raw-failures. --
    let t = Instant::now();
    chaos.set_outage(Outage::S3Writes, true);
    let items = send(&stack, &run, 3).await;
    until(
        "the raw-writer gave its batches up",
        LOAD_TIMEOUT,
        || async {
            stack.pending_work().await.is_none() && depth(&stack, "RawWriterFailureQueue").await > 0
        },
    )
    .await;
    chaos.set_outage(Outage::S3Writes, false);
    assert_eq!(caudal(&run_dir, &["status"]).await, 2, "a person is needed");
    assert_eq!(
        caudal(&run_dir, &["reconcile", "--since", "2h"]).await,
        2,
        "failed batches"
    );
    let failed = depth(&stack, "RawWriterFailureQueue").await;
    // The failure records, kept to deliver them a second time below.
    let sqs = &stack.clients().sqs;
    let failures_url = queue(&stack, "RawWriterFailureQueue");
    let mut bodies: Vec<String> = Vec::new();
    let read_since = Instant::now();
    while (bodies.len() as u64) < failed {
        assert!(
            read_since.elapsed() < Duration::from_secs(30),
            "reading the failure records"
        );
        let out = sqs
            .receive_message()
            .queue_url(&failures_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            let b = m.body().unwrap_or_default().to_owned();
            if !bodies.contains(&b) {
                bodies.push(b);
            }
        }
    }
    assert_eq!(
        caudal(&run_dir, &["redrive", "raw-failures", "--dry-run"]).await,
        0
    );
    assert_eq!(
        depth(&stack, "RawWriterFailureQueue").await,
        failed,
        "a dry run clears nothing"
    );
    assert_eq!(caudal(&run_dir, &["redrive", "raw-failures"]).await, 0);
    assert_eq!(depth(&stack, "RawWriterFailureQueue").await, 0);
    expect.extend(items.iter().map(|i| (i.id.clone(), i.expect)));
    all.extend(items);
    settled(&stack, &pg, &expect).await;
    // Twice: the same failure records again write the same objects; nothing changes.
    let objects = report::collect(&stack).await.expect("counts").raw_objects;
    let ledger = ledger_rows(&pg).await;
    for b in &bodies {
        sqs.send_message()
            .queue_url(&failures_url)
            .message_body(b)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(caudal(&run_dir, &["redrive", "raw-failures"]).await, 0);
    settled(&stack, &pg, &expect).await;
    assert_eq!(
        report::collect(&stack).await.expect("counts").raw_objects,
        objects
    );
    assert_eq!(ledger_rows(&pg).await, ledger);
    eprintln!("phase 3 (redrive raw-failures) {:?}", t.elapsed());

    // ---- 4. A rules fix, then reprocess. ---------------------------------------------------
    let t = Instant::now();
    std::fs::write(&rules, testkit::rules_fix(&shipped)).unwrap();
    let loader = stack
        .model()
        .function_by_binary("rules-loader")
        .expect("loader")
        .logical_id
        .clone();
    stack
        .home()
        .redeploy(&loader)
        .await
        .expect("loader redeployed");
    let versions = || async {
        pg.query(
            "SELECT DISTINCT rule_version FROM public.caudal_ledger",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
    };
    let old = versions().await;
    assert_eq!(old.len(), 1);
    let ledger = ledger_rows(&pg).await;
    // Interrupted before its first batch, then resumed from an earlier run's checkpoint (the
    // library under the command, with its Ctrl-C flag and checkpoint file).
    let target = caudal::target::Stack::local(&run_dir, None).expect("stack.json");
    let ctx = caudal::Ctx::new(&target).await.expect("context");
    let req = caudal::announce::Request {
        action: caudal_core::command::Action::Reprocess,
        selection: caudal::archive::Selection::new(
            None,
            Some(time::OffsetDateTime::now_utc() - time::Duration::hours(2)),
            None,
        )
        .unwrap(),
        rejected_only: false,
        dry_run: false,
    };
    let ck = || caudal::run::Checkpoint::open(&checkpoints, "resume-test");
    let stopped = caudal::run::Interrupt::default();
    stopped.stop();
    let r = caudal::announce::run(&ctx, &req, &ck(), &stopped)
        .await
        .unwrap();
    assert!(r.interrupted && r.announced == 0, "{r:?}");
    let keys: Vec<String> = caudal::archive::list(
        &ctx.clients.s3,
        &ctx.resources.raw_bucket,
        &req.selection.prefixes(caudal_core::keys::RAW_PREFIX),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|o| o.key)
    .collect();
    assert!(keys.len() >= 4, "{keys:?}");
    ck().save(&keys[2]).unwrap();
    let r = caudal::announce::run(&ctx, &req, &ck(), &caudal::run::Interrupt::default())
        .await
        .unwrap();
    assert_eq!(r.resumed_past, 3, "{r:?}");
    assert_eq!(r.announced as usize, keys.len() - 3, "{r:?}");
    assert_eq!(ck().after, None, "a finished run leaves no checkpoint");
    let left = caudal::announce::wait_for_loader(&ctx, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(left, 0, "the loader took the resumed run's commands");
    // The command over every object (those just announced are skipped by the loader once done).
    assert_eq!(
        caudal(
            &run_dir,
            &[
                "--checkpoint-dir",
                &ckpt,
                "reprocess",
                "--from",
                "2h",
                "--dry-run"
            ]
        )
        .await,
        0
    );
    assert_eq!(
        depth(&stack, "LoaderQueue").await,
        0,
        "a dry run sends nothing"
    );
    let code = caudal(
        &run_dir,
        &[
            "--checkpoint-dir",
            &ckpt,
            "reprocess",
            "--from",
            "2h",
            "--wait",
            "150",
        ],
    )
    .await;
    assert_eq!(code, 0);
    for it in &all {
        expect.insert(it.id.clone(), after_fix(it));
    }
    assert!(
        all.iter().any(|i| after_fix(i) != i.expect),
        "the fix changes some events"
    );
    settled(&stack, &pg, &expect).await;
    let new = versions().await;
    assert_eq!(new.len(), 1, "every object at one rule version: {new:?}");
    assert_ne!(new, old);
    assert_eq!(
        ledger_rows(&pg).await,
        ledger,
        "one ledger row per object still"
    );
    eprintln!("phase 4 (reprocess) {:?}", t.elapsed());

    // ---- 5. Smoke: tagged events through the endpoint until queryable. ---------------------
    let t = Instant::now();
    assert_eq!(caudal(&run_dir, &["smoke", "--dry-run"]).await, 0);
    let args = [
        "smoke",
        "--events",
        "3",
        "--timeout",
        "120",
        "--table",
        "unknown_events",
    ];
    assert_eq!(caudal(&run_dir, &args).await, 0, "smoke passes");
    let smoke_rows: i64 = pg
        .query_one(
            "SELECT COUNT(*) FROM public.unknown_events WHERE event_id LIKE 'caudal-smoke-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(smoke_rows, 3);
    eprintln!("phase 5 (smoke) {:?}", t.elapsed());

    // ---- 6. The dashboard: live in a real browser, and as a report file. ------------------
    let t = Instant::now();
    dashboard_phase(&stack, &pg, &run).await;
    eprintln!("phase 6 (dashboard) {:?}", t.elapsed());

    stack.stop().await.expect("stack stops");
    let _ = std::fs::remove_dir_all(&run_dir);
    eprintln!("operate total {:?}", started.elapsed());
}
