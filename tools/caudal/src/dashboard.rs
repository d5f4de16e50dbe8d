//! The dashboard: one HTML page a person looks at — is data flowing, how fast, what was
//! rejected, does raw equal final. [`gather`] reads the figures from the stack (warehouse
//! through the Data API, queues, CloudWatch; the stream and the raw archive where CloudWatch is
//! not there), [`render`] draws them as one self-contained page (inline CSS and SVG, no
//! script but the live page's refresh), and [`serve`] keeps it live over HTTP.
//!
//! `caudal status --html report.html` writes the page once; `caudal-local up` serves it live.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use aws_sdk_cloudwatch::types::Statistic;
use caudal_core::keys::{RAW_INVALID_PREFIX, RAW_PREFIX, parse_batch_key};
use caudal_core::pack::contents;
use caudal_core::stream::seq_in_range;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::metrics::{self, MetricsError, Series};
use crate::queue::Depth;
use crate::status::{self, list_hours, own};
use crate::stream::{self, From};
use crate::warehouse::{Latency, ObjectBalance, RejectGroup};
use crate::{Ctx, OpError};

/// The window a page shows by default: the last hour, minute by minute.
pub const WINDOW: Duration = Duration::HOUR;
/// The longest window (CloudWatch answers a day of one-minute points in one call).
pub const MAX_WINDOW: Duration = Duration::DAY;
/// Events per type per hour are shown for this long.
pub const HOURLY_WINDOW: Duration = Duration::DAY;

/// One minute of the flow through the stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Minute {
    /// Start of the minute (Unix seconds).
    pub at: i64,
    /// Events the API made durable (accepted).
    pub accepted: f64,
    /// Events written to the raw archive.
    pub archived: f64,
    /// Raw lines loaded into the warehouse (rows, rejects, filtered and duplicates).
    pub loaded: f64,
}

/// Accepted and archived per minute, and the raw-writer's lag.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flow {
    /// Where the figures come from.
    pub source: String,
    /// (minute, accepted).
    pub accepted: Vec<(i64, f64)>,
    /// (minute, archived).
    pub archived: Vec<(i64, f64)>,
    /// How far the raw-writer is behind the stream now, seconds (`None`: unknown).
    pub lag_s: Option<f64>,
    /// The lag per minute, seconds (CloudWatch's `IteratorAge` maximum).
    pub lag: Vec<(i64, f64)>,
}

/// Everything the page shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dashboard {
    /// Whose figures (stack name or `local`).
    pub stack: String,
    /// When they were gathered (Unix seconds).
    pub at: i64,
    /// Start of the window (Unix seconds).
    pub since: i64,
    /// Every minute of the window.
    pub minutes: Vec<Minute>,
    /// Where accepted/archived/lag come from.
    pub flow_source: String,
    /// The raw-writer's lag now, seconds.
    pub lag_s: Option<f64>,
    /// The lag per minute, seconds.
    pub lag: Vec<(i64, f64)>,
    /// Ingest → queryable latency of the events loaded in the window.
    pub latency: Latency,
    /// Rejects loaded in the window by (code, rule), with samples.
    pub rejects: Vec<RejectGroup>,
    /// Events per (type, hour), the last [`HOURLY_WINDOW`].
    pub hourly: Vec<(String, i64, i64)>,
    /// Raw objects loaded in the window, unbalanced ones first.
    pub objects: Vec<ObjectBalance>,
    /// Raw objects loaded in the window that do not balance (all of them, not only shown).
    pub unbalanced: i64,
    /// Raw objects loaded in the window.
    pub objects_loaded: i64,
    /// Queues and their depths.
    pub queues: Vec<(String, Depth)>,
    /// What needs a person (as `caudal status`).
    pub problems: Vec<String>,
}

impl Dashboard {
    /// (accepted, archived, loaded) over the window.
    pub fn totals(&self) -> (f64, f64, f64) {
        self.minutes.iter().fold((0.0, 0.0, 0.0), |(a, r, l), m| {
            (a + m.accepted, r + m.archived, l + m.loaded)
        })
    }

    /// Rejects in the window.
    pub fn rejected(&self) -> i64 {
        self.rejects.iter().map(|g| g.count).sum()
    }
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn floor_minute(t: OffsetDateTime) -> OffsetDateTime {
    let s = unix(t);
    OffsetDateTime::from_unix_timestamp(s - s.rem_euclid(60)).unwrap_or(t)
}

/// The window's minutes with each series' values in place (minutes outside the window are
/// dropped; a minute without data is 0).
pub fn minutes(
    since: i64,
    now: i64,
    accepted: &[(i64, f64)],
    archived: &[(i64, f64)],
    loaded: &[(i64, f64)],
) -> Vec<Minute> {
    let n = ((now - since).max(0) / 60 + 1) as usize;
    let mut out: Vec<Minute> = (0..n)
        .map(|i| Minute {
            at: since + 60 * i as i64,
            ..Minute::default()
        })
        .collect();
    let mut put = |series: &[(i64, f64)], f: fn(&mut Minute) -> &mut f64| {
        for (t, v) in series {
            let i = (t - since).div_euclid(60);
            if let Some(m) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
                *f(m) += v;
            }
        }
    };
    put(accepted, |m| &mut m.accepted);
    put(archived, |m| &mut m.archived);
    put(loaded, |m| &mut m.loaded);
    out
}

/// Gathers the page's figures for the window from `since` (clamped to [`MAX_WINDOW`]) to now.
pub async fn gather(ctx: &Ctx, stack: &str, since: OffsetDateTime) -> Result<Dashboard, OpError> {
    let now = OffsetDateTime::now_utc();
    // Totals are over exactly the window; the charts' minutes start at its first whole minute.
    let start = since.clamp(now - MAX_WINDOW, now);
    let first_minute = floor_minute(start);
    let st = status::status(ctx).await?;
    let flow = match cloudwatch_flow(ctx, start).await {
        Ok(f) => f,
        Err(e) => stream_flow(ctx, start, now, &e).await?,
    };
    let loaded: Vec<(i64, f64)> = ctx
        .warehouse
        .loaded_per_minute(start)
        .await?
        .into_iter()
        .map(|(t, n)| (t, n as f64))
        .collect();
    let w = &ctx.warehouse;
    let balances = w.reconciliation(Some(start)).await?;
    Ok(Dashboard {
        stack: stack.to_owned(),
        at: unix(now),
        since: unix(start),
        minutes: minutes(
            unix(first_minute),
            unix(now),
            &flow.accepted,
            &flow.archived,
            &loaded,
        ),
        flow_source: flow.source,
        lag_s: flow.lag_s,
        lag: flow.lag,
        latency: w.latency(start).await?,
        rejects: w.reject_groups(start).await?,
        hourly: w.events_hourly(now - HOURLY_WINDOW).await?,
        objects: w.object_balances(start).await?,
        unbalanced: balances.mismatched,
        objects_loaded: balances.objects,
        queues: st.queues,
        problems: st.problems,
    })
}

/// Accepted, archived and lag per minute from CloudWatch: the ingest function's
/// `EventsAccepted`, the raw-writer's `EventsArchived` and its `IteratorAge`.
async fn cloudwatch_flow(ctx: &Ctx, start: OffsetDateTime) -> Result<Flow, MetricsError> {
    let cw = &ctx.clients.cloudwatch;
    let caudal = |function: &'static str, name: &'static str| Series {
        namespace: caudal_core::telemetry::METRICS_NAMESPACE,
        name,
        dimension: "Function",
        value: function,
    };
    let accepted = metrics::per_minute(
        cw,
        caudal("ingest-api", "EventsAccepted"),
        Statistic::Sum,
        start,
    )
    .await?;
    let archived = metrics::per_minute(
        cw,
        caudal("raw-writer", "EventsArchived"),
        Statistic::Sum,
        start,
    )
    .await?;
    let mut lag = Vec::new();
    if let Some(f) = &ctx.resources.raw_writer {
        let age = Series {
            namespace: "AWS/Lambda",
            name: "IteratorAge",
            dimension: "FunctionName",
            value: f,
        };
        lag = metrics::per_minute(cw, age, Statistic::Maximum, start)
            .await?
            .into_iter()
            .map(|(t, ms)| (t, ms / 1000.0))
            .collect();
    }
    let recent = unix(OffsetDateTime::now_utc() - Duration::minutes(5));
    let lag_s = lag
        .iter()
        .filter(|(t, _)| *t >= recent)
        .map(|(_, s)| *s)
        .reduce(f64::max);
    Ok(Flow {
        source: "CloudWatch".to_owned(),
        accepted,
        archived,
        lag_s,
        lag,
    })
}

/// A shard's ranges: (first, last, minute the object was written).
type Ranges = Vec<(String, String, i64)>;

/// Accepted, archived and lag from the stream and the raw archive, where CloudWatch cannot be
/// read (the local stack): each record counts as the events it holds, accepted in the minute
/// it arrived and archived in the minute the raw object holding it was written; the lag is
/// the age of the oldest record no object holds yet.
async fn stream_flow(
    ctx: &Ctx,
    start: OffsetDateTime,
    now: OffsetDateTime,
    why: &MetricsError,
) -> Result<Flow, OpError> {
    let mut by_shard: BTreeMap<String, [Ranges; 2]> = BTreeMap::new();
    for (kind, root) in [(0usize, RAW_PREFIX), (1, RAW_INVALID_PREFIX)] {
        for o in own(
            ctx,
            list_hours(ctx, root, start - Duration::HOUR, now).await?,
        ) {
            if let Some(k) = parse_batch_key(&o.key) {
                let written = o.modified.map_or(unix(now), |m| unix(floor_minute(m)));
                by_shard.entry(k.shard_id).or_default()[kind].push((
                    k.first_seq,
                    k.last_seq,
                    written,
                ));
            }
        }
    }
    let (mut accepted, mut archived) = (BTreeMap::<i64, f64>::new(), BTreeMap::<i64, f64>::new());
    let mut oldest_waiting: Option<OffsetDateTime> = None;
    let empty: [Ranges; 2] = Default::default();
    for shard in stream::shards(&ctx.clients.kinesis, &ctx.resources.stream).await? {
        let ranges = by_shard.get(&shard).unwrap_or(&empty);
        let mut reads = Vec::new();
        stream::read(
            &ctx.clients.kinesis,
            &ctx.resources.stream,
            &shard,
            &From::Time(start),
            |_| false,
            |r| reads.push((r.seq.clone(), r.arrival_time(), contents(&r.data))),
        )
        .await?;
        for (seq, arrival, holds) in reads {
            let Some(t) = arrival else { continue };
            let covering = |kind: usize| {
                ranges[kind]
                    .iter()
                    .find(|(a, b, _)| seq_in_range(&seq, a, b))
                    .map(|(_, _, written)| *written)
            };
            if holds.events > 0 {
                *accepted.entry(unix(floor_minute(t))).or_default() += holds.events as f64;
                match covering(0) {
                    Some(written) => {
                        *archived.entry(written).or_default() += holds.events as f64;
                    }
                    None => oldest_waiting = Some(oldest_waiting.map_or(t, |o| o.min(t))),
                }
            }
            if holds.invalid > 0 && covering(1).is_none() {
                oldest_waiting = Some(oldest_waiting.map_or(t, |o| o.min(t)));
            }
        }
    }
    Ok(Flow {
        source: format!("the stream and the raw archive (CloudWatch could not be read: {why})"),
        accepted: accepted.into_iter().collect(),
        archived: archived.into_iter().collect(),
        lag_s: Some(oldest_waiting.map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0))),
        lag: Vec::new(),
    })
}

/// `s` with `&`, `<`, `>`, `"` and `'` escaped for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn hhmm(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t).map_or_else(
        |_| t.to_string(),
        |t| format!("{:02}:{:02}", t.hour(), t.minute()),
    )
}

fn when(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t).map_or_else(
        |_| t.to_string(),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        },
    )
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn secs(ms: i64) -> String {
    if ms < 10_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else {
        format!("{:.0} s", ms as f64 / 1000.0)
    }
}

const COLORS: [&str; 3] = ["#2563eb", "#16a34a", "#d97706"];

/// A line chart of `series` (name, one value per x) over `labels`, as inline SVG.
fn line_chart(labels: &[i64], series: &[(&str, Vec<f64>)], unit: &str) -> String {
    const W: f64 = 720.0;
    const H: f64 = 180.0;
    const L: f64 = 48.0;
    const B: f64 = 22.0;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let n = labels.len().max(2) as f64;
    let x = |i: usize| L + (W - L - 8.0) * i as f64 / (n - 1.0);
    let y = |v: f64| 8.0 + (H - B - 8.0) * (1.0 - v / max);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(unit)
    );
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            W - 8.0,
            L - 4.0,
            y(v) + 4.0,
            if max >= 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            },
            y = y(v)
        );
    }
    let step = (labels.len() / 6).max(1);
    for (i, t) in labels.iter().enumerate().step_by(step) {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
            x(i),
            H - 6.0,
            hhmm(*t)
        );
    }
    for (k, (name, values)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{}\" points=\"{}\"><title>{}</title></polyline>",
            // Earlier series drawn wider, so equal ones (accepted = archived) both show.
            2 * (series.len() - k) + 1,
            pts.join(" "),
            esc(name)
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (k, (name, _)) in series.iter().enumerate() {
        let _ = write!(
            svg,
            "<span><i style=\"background:{}\"></i>{}</span>",
            COLORS[k % COLORS.len()],
            esc(name)
        );
    }
    let _ = write!(svg, "<span class=\"unit\">{}</span></div>", esc(unit));
    svg
}

fn tile(out: &mut String, id: &str, label: &str, value: &str, warn: bool) {
    let _ = write!(
        out,
        "<div class=\"tile{}\"><div class=\"label\">{}</div><div class=\"value\" \
         data-figure=\"{id}\">{}</div></div>",
        if warn { " warn" } else { "" },
        esc(label),
        esc(value)
    );
}

const STYLE: &str = "body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;\
background:#f8fafc;color:#0f172a}header{background:#0f172a;color:#f8fafc;padding:14px 24px}\
header h1{margin:0;font-size:20px}header .sub{color:#94a3b8;font-size:13px}\
main{padding:16px 24px;max-width:1200px}section{background:#fff;border:1px solid #e2e8f0;\
border-radius:8px;padding:12px 16px;margin:0 0 16px}h2{font-size:15px;margin:0 0 8px}\
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;\
margin-bottom:16px}.tile{background:#fff;border:1px solid #e2e8f0;border-radius:8px;\
padding:10px 12px}.tile .label{color:#64748b;font-size:12px}.tile .value{font-size:22px;\
font-weight:600}.tile.warn{border-color:#dc2626;background:#fef2f2}.tile.warn .value{color:#b91c1c}\
.ok{background:#dcfce7;color:#166534;border-radius:6px;padding:8px 12px;margin-bottom:16px}\
.problems{background:#fef2f2;color:#991b1b;border:1px solid #fecaca;border-radius:6px;\
padding:8px 12px;margin-bottom:16px}table{border-collapse:collapse;width:100%;font-size:13px}\
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #f1f5f9;vertical-align:top}\
th{color:#64748b;font-weight:500}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.off td{background:#fee2e2;color:#991b1b;font-weight:600}code{font-size:12px;\
background:#f1f5f9;padding:1px 4px;border-radius:4px;word-break:break-all}\
.chart{width:100%;height:auto;max-height:220px}.grid{stroke:#e2e8f0}\
.axis{fill:#64748b;font-size:11px}.legend{display:flex;gap:16px;font-size:12px;color:#334155}\
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}\
.legend .unit{color:#94a3b8}details{font-size:12px;color:#64748b}.sample{margin-bottom:6px}.bar{display:inline-block;height:10px;background:#93c5fd;\
border-radius:2px;vertical-align:middle}.note{color:#64748b;font-size:12px}";

/// The live page's refresh: the page is fetched again every `every_s` seconds and its `main`
/// replaced (no flicker, one renderer: this module).
fn refresh_script(every_s: u32) -> String {
    format!(
        "<script>setInterval(async()=>{{try{{const r=await fetch(location.href,{{cache:'no-store'}});\
         if(!r.ok)return;const d=new DOMParser().parseFromString(await r.text(),'text/html');\
         for(const id of ['head','dash']){{const n=d.getElementById(id),o=document.getElementById(id);\
         if(n&&o)o.replaceWith(n);}}}}catch(e){{}}}},{}000);</script>",
        every_s
    )
}

/// The page for `d`: self-contained HTML; `live_every_s` adds the refresh that keeps it live.
pub fn render(d: &Dashboard, live_every_s: Option<u32>) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width,initial-scale=1\"><title>caudal — {}</title><style>{STYLE}\
         </style></head><body><header id=\"head\"><h1>caudal — {}</h1><div class=\"sub\">at \
         <span data-figure=\"at\">{}</span> · window since {} · {}</div></header><main id=\"dash\">",
        esc(&d.stack),
        esc(&d.stack),
        when(d.at),
        when(d.since),
        if live_every_s.is_some() {
            "live"
        } else {
            "report"
        }
    );
    if d.problems.is_empty() {
        h.push_str("<div class=\"ok\" data-figure=\"health\">OK: nothing needs a person</div>");
    } else {
        h.push_str("<div class=\"problems\" data-figure=\"health\"><b>Needs a person</b><ul>");
        for p in &d.problems {
            let _ = write!(h, "<li>{}</li>", esc(p));
        }
        h.push_str("</ul></div>");
    }
    let (accepted, archived, loaded) = d.totals();
    let depth = |name: &str| {
        d.queues
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, q)| q.total())
    };
    let dlq = depth("loader dead-letter queue");
    let failures = depth("raw-writer on-failure queue");
    h.push_str("<div class=\"tiles\">");
    tile(
        &mut h,
        "accepted",
        "events accepted",
        &count(accepted),
        false,
    );
    tile(
        &mut h,
        "archived",
        "events archived",
        &count(archived),
        false,
    );
    tile(&mut h, "loaded", "lines loaded", &count(loaded), false);
    tile(
        &mut h,
        "rejected",
        "lines rejected",
        &d.rejected().to_string(),
        false,
    );
    let l = &d.latency;
    let lat = |ms: i64| {
        if l.events > 0 {
            secs(ms)
        } else {
            "—".to_owned()
        }
    };
    tile(
        &mut h,
        "p50",
        "ingest → queryable p50",
        &lat(l.p50_ms),
        false,
    );
    tile(&mut h, "p95", "p95", &lat(l.p95_ms), false);
    tile(&mut h, "p99", "p99", &lat(l.p99_ms), false);
    tile(
        &mut h,
        "lag",
        "raw-writer behind by",
        &d.lag_s.map_or("—".to_owned(), |s| format!("{s:.1} s")),
        d.lag_s
            .is_some_and(|s| s > status::BEHIND_AFTER.whole_seconds() as f64),
    );
    tile(
        &mut h,
        "unbalanced",
        "objects off",
        &d.unbalanced.to_string(),
        d.unbalanced > 0,
    );
    tile(
        &mut h,
        "dlq",
        "loader dead letters",
        &dlq.to_string(),
        dlq > 0,
    );
    tile(
        &mut h,
        "failures",
        "raw-writer failures",
        &failures.to_string(),
        failures > 0,
    );
    h.push_str("</div>");

    let labels: Vec<i64> = d.minutes.iter().map(|m| m.at).collect();
    let _ = write!(
        h,
        "<section id=\"flow\"><h2>Events per minute, per stage</h2>{}<div class=\"note\">accepted \
         and archived from {}; loaded from the warehouse's ledger</div></section>",
        line_chart(
            &labels,
            &[
                ("accepted", d.minutes.iter().map(|m| m.accepted).collect()),
                ("archived", d.minutes.iter().map(|m| m.archived).collect()),
                ("loaded", d.minutes.iter().map(|m| m.loaded).collect()),
            ],
            "events / minute",
        ),
        esc(&d.flow_source)
    );
    h.push_str("<section id=\"lag\"><h2>Kinesis lag (raw-writer behind the stream)</h2>");
    if d.lag.is_empty() {
        let _ = write!(
            h,
            "<p>Now: <b>{}</b>. <span class=\"note\">(No per-minute series: CloudWatch's \
             IteratorAge is not readable here; the figure is the age of the oldest record no raw \
             object holds yet.)</span></p>",
            d.lag_s
                .map_or("unknown".to_owned(), |s| format!("{s:.1} s"))
        );
    } else {
        let first = d.minutes.first().map_or(d.since, |m| m.at);
        let lag = minutes(first, d.at, &d.lag, &[], &[]);
        h.push_str(&line_chart(
            &labels,
            &[("IteratorAge max", lag.iter().map(|m| m.accepted).collect())],
            "seconds",
        ));
    }
    h.push_str("</section>");

    let _ = write!(
        h,
        "<section id=\"latency\"><h2>Ingest → queryable latency</h2><p>{} events loaded in the \
         window: p50 <b>{}</b>, p95 <b>{}</b>, p99 <b>{}</b> <span class=\"note\">(received_at → \
         the load's commit, caudal_load_latency)</span></p></section>",
        l.events,
        lat(l.p50_ms),
        lat(l.p95_ms),
        lat(l.p99_ms)
    );

    h.push_str("<section id=\"rejects\"><h2>Rejects by reason</h2>");
    if d.rejects.is_empty() {
        h.push_str("<p class=\"note\">No rejects in the window.</p>");
    } else {
        h.push_str(
            "<table><tr><th>code</th><th>rule</th><th class=\"n\">lines</th><th>newest \
             (reason, raw line)</th></tr>",
        );
        for g in &d.rejects {
            let _ = write!(
                h,
                "<tr data-code=\"{}\" data-rule=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>",
                esc(&g.code),
                esc(&g.rule),
                esc(&g.code),
                esc(&g.rule),
                g.count
            );
            for (message, raw) in &g.samples {
                let _ = write!(
                    h,
                    "<div class=\"sample\"><div>{}</div><code>{}</code><details><summary>raw \
                     line</summary><code>{}</code></details></div>",
                    esc(message),
                    esc(&shorten(&client_event(raw), 400)),
                    esc(&shorten(raw, 4000))
                );
            }
            h.push_str("</td></tr>");
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");

    h.push_str("<section id=\"hourly\"><h2>Events per type per hour (caudal_events_hourly)</h2>");
    if d.hourly.is_empty() {
        h.push_str("<p class=\"note\">No events in the last day.</p>");
    } else {
        let top = d.hourly.iter().map(|r| r.2).max().unwrap_or(1).max(1);
        h.push_str(
            "<table><tr><th>hour (UTC)</th><th>type</th><th class=\"n\">events</th><th></th></tr>",
        );
        for (ty, hour, n) in d.hourly.iter().rev() {
            let _ = write!(
                h,
                "<tr data-type=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{n}</td><td><span \
                 class=\"bar\" style=\"width:{}px\"></span></td></tr>",
                esc(ty),
                when(*hour),
                esc(ty),
                (240 * n / top).max(1)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");

    let _ = write!(
        h,
        "<section id=\"reconciliation\"><h2>Reconciliation per raw object</h2><p>{} objects loaded \
         in the window, <b data-figure=\"off\">{}</b> off (lines ≠ rows + rejects + filtered + \
         duplicates).</p>",
        d.objects_loaded, d.unbalanced
    );
    if !d.objects.is_empty() {
        h.push_str(
            "<table><tr><th>raw object</th><th class=\"n\">lines</th><th class=\"n\">rows</th>\
             <th class=\"n\">rejects</th><th class=\"n\">filtered</th><th class=\"n\">duplicates\
             </th><th class=\"n\">difference</th><th>loaded</th></tr>",
        );
        for o in &d.objects {
            let _ = write!(
                h,
                "<tr{}><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td \
                 class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td \
                 class=\"n\">{}</td><td>{}</td></tr>",
                if o.off() {
                    " class=\"off\" data-off=\"true\""
                } else {
                    ""
                },
                esc(&o.raw_key),
                o.records,
                o.rows_in_tables,
                o.rows_in_rejects,
                o.filtered,
                o.duplicates,
                if o.ledger_difference != 0 {
                    format!("{} (ledger {})", o.difference, o.ledger_difference)
                } else {
                    o.difference.to_string()
                },
                hhmm(o.loaded_at)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section><section id=\"queues\"><h2>Queues</h2><table><tr><th>queue</th><th class=\"n\">waiting</th><th class=\"n\">in flight</th><th class=\"n\">delayed</th></tr>");
    for (name, q) in &d.queues {
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            if q.total() > 0 && name != "loader queue" {
                " class=\"off\""
            } else {
                ""
            },
            esc(name),
            q.visible,
            q.in_flight,
            q.delayed
        );
    }
    h.push_str("</table></section></main>");
    if let Some(s) = live_every_s {
        h.push_str(&refresh_script(s));
    }
    h.push_str("</body></html>");
    h
}

/// The client's event inside a raw-archive line, exactly as it was sent; the whole line when
/// it is not one (cut at 64 KB in caudal_rejects, or a foreign record).
pub fn client_event(line: &str) -> String {
    caudal_core::raw::RawLine::parse(line.as_bytes())
        .ok()
        .and_then(|l| {
            let env = caudal_core::envelope::Envelope::parse(l.envelope.get().as_bytes()).ok()?;
            String::from_utf8(env.event_bytes().into_owned()).ok()
        })
        .unwrap_or_else(|| line.to_owned())
}

/// `s` cut to at most `max` characters, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The live page's query: `?since=<RFC 3339>` or `?minutes=<n>` picks the window.
fn window_from_query(query: Option<&str>, now: OffsetDateTime) -> OffsetDateTime {
    let mut since = now - WINDOW;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = caudal_core::keys::form_decode(v).unwrap_or_default();
        match k {
            "since" => {
                if let Ok(t) =
                    OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                {
                    since = t;
                }
            }
            "minutes" => {
                if let Ok(m) = v.parse::<i64>() {
                    since = now - Duration::minutes(m.clamp(1, MAX_WINDOW.whole_minutes()));
                }
            }
            _ => {}
        }
    }
    since
}

/// How often the live page refreshes itself, seconds.
pub const LIVE_REFRESH_S: u32 = 2;

/// Serves the live page on `listener` until the task is dropped: `GET /` (and `?since=`,
/// `?minutes=`) the page, `GET /dashboard.json` its figures. Each request gathers afresh
/// (one at a time, so a slow stack is not asked twice at once).
pub async fn serve(
    ctx: Ctx,
    stack: String,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    use axum::extract::{RawQuery, State};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};

    #[derive(Clone)]
    struct Live {
        ctx: Ctx,
        stack: String,
        gate: Arc<tokio::sync::Mutex<()>>,
    }
    async fn figures(live: &Live, query: Option<&str>) -> Result<Dashboard, Response> {
        let _one = live.gate.lock().await;
        let since = window_from_query(query, OffsetDateTime::now_utc());
        gather(&live.ctx, &live.stack, since).await.map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CACHE_CONTROL, "no-store")],
                format!("caudal dashboard: {e}"),
            )
                .into_response()
        })
    }
    async fn page(State(live): State<Live>, RawQuery(q): RawQuery) -> Response {
        match figures(&live, q.as_deref()).await {
            Ok(d) => (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                render(&d, Some(LIVE_REFRESH_S)),
            )
                .into_response(),
            Err(r) => r,
        }
    }
    async fn json(State(live): State<Live>, RawQuery(q): RawQuery) -> Response {
        match figures(&live, q.as_deref()).await {
            Ok(d) => (
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(serde_json::to_value(&d).unwrap_or_default()),
            )
                .into_response(),
            Err(r) => r,
        }
    }
    let live = Live {
        ctx,
        stack,
        gate: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/", axum::routing::get(page))
        .route("/dashboard.json", axum::routing::get(json))
        .with_state(live);
    axum::serve(listener, app).await
}

/// The live page of the local stack of `run_dir` (its `stack.json`), served on
/// `127.0.0.1:<port>` (`None`: a free port) by a task of the current runtime: its URL and the
/// task (dropping the handle leaves it running; abort it to stop).
pub async fn spawn_local(
    run_dir: &std::path::Path,
    port: Option<u16>,
) -> Result<(String, tokio::task::JoinHandle<std::io::Result<()>>), OpError> {
    let stack = crate::target::Stack::local(run_dir, None)?;
    let ctx = Ctx::new(&stack).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .await
        .map_err(|e| OpError::Read("the dashboard's port".into(), e.to_string()))?;
    let url = match listener.local_addr() {
        Ok(a) => format!("http://{a}/"),
        Err(e) => return Err(OpError::Read("the dashboard's port".into(), e.to_string())),
    };
    let task = tokio::spawn(serve(ctx, "local".to_owned(), listener));
    Ok((url, task))
}

#[cfg(test)]
mod tests;
