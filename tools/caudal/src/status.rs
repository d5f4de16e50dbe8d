//! `caudal status` (per stage: is data flowing, how far behind, what needs a person) and
//! `caudal reconcile` (does raw equal final: the warehouse's reconciliation view, plus the
//! stream against the raw archive).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use caudal_core::keys::{RAW_INVALID_PREFIX, RAW_PREFIX, parse_batch_key};
use caudal_core::pack::contents;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::archive::{self, KEY_END, Listed, hour_prefixes};
use crate::metrics::{self, Series};
use crate::queue::{self, Depth};
use crate::rawfail::FailedBatch;
use caudal_core::stream::seq_in_range;

use crate::stream::{self, From};
use crate::warehouse::{LedgerRow, Reconciliation};
use crate::{Ctx, OpError};

/// A raw object written this long ago and still not in the ledger needs a look.
pub const STUCK_AFTER: Duration = Duration::minutes(15);
/// The raw-writer this far behind the stream needs a look (the template's
/// `RawWriterIteratorAgeAlarm` fires at the same age).
pub const BEHIND_AFTER: Duration = Duration::minutes(10);

/// What `caudal status` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// When it was gathered (RFC 3339).
    pub at: String,
    /// Records the stream accepted (events the API made durable) in the last hour and day
    /// (CloudWatch `AWS/Kinesis IncomingRecords`; `None`: no data).
    pub accepted: (Option<f64>, Option<f64>),
    /// How far behind the raw-writer reads the stream: the largest `AWS/Lambda IteratorAge` of
    /// the last 5 minutes, ms (`None`: no data — nothing read lately, or no function name).
    pub iterator_age_ms: Option<f64>,
    /// Why CloudWatch could not be read, when it could not (the rest of the status stands).
    pub metrics_unavailable: Option<String>,
    /// Raw objects written in the last hour and the last day.
    pub raw_objects: (u64, u64),
    /// Seconds since the newest raw object was written.
    pub newest_raw_age_s: Option<i64>,
    /// `raw-invalid/` objects written in the last day (foreign records, kept as they came).
    pub raw_invalid_objects: u64,
    /// Raw objects of the last day not loaded yet, and how many of them are older than
    /// [`STUCK_AFTER`].
    pub waiting: (u64, u64),
    /// Loaded in the last hour and day: (objects, lines).
    pub loaded: ((i64, i64), (i64, i64)),
    /// The last load's time.
    pub last_load: Option<String>,
    /// Queues: (name, depth).
    pub queues: Vec<(String, Depth)>,
    /// Rejects of the last day by (code, rule).
    pub rejects: Vec<(String, String, i64)>,
    /// The reconciliation view over the last day's loads.
    pub reconciliation: Reconciliation,
    /// What needs a person, each with what to do.
    pub problems: Vec<String>,
}

/// The objects under `root` of the hours from `from` to `to`.
pub(crate) async fn list_hours(
    ctx: &Ctx,
    root: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<Listed>, OpError> {
    Ok(archive::list(
        &ctx.clients.s3,
        &ctx.resources.raw_bucket,
        &hour_prefixes(root, from, to),
    )
    .await?)
}

/// The raw objects of this stack's own region (keys name a region everywhere but at home).
pub(crate) fn own(ctx: &Ctx, objects: Vec<Listed>) -> Vec<Listed> {
    let region = ctx.resources.raw_key_region.as_deref();
    objects
        .into_iter()
        .filter(|o| parse_batch_key(&o.key).is_none_or(|k| k.region.as_deref() == region))
        .collect()
}

/// Gathers the status.
pub async fn status(ctx: &Ctx) -> Result<Status, OpError> {
    let now = OffsetDateTime::now_utc();
    let day = now - Duration::DAY;
    let hour = now - Duration::HOUR;
    let r = &ctx.resources;
    let raw = own(ctx, list_hours(ctx, RAW_PREFIX, day, now).await?);
    let invalid = own(ctx, list_hours(ctx, RAW_INVALID_PREFIX, day, now).await?);
    let written_since = |o: &Listed, t: OffsetDateTime| o.modified.is_none_or(|m| m >= t);
    let mut s = Status {
        at: caudal_core::envelope::format_timestamp(now),
        raw_objects: (
            raw.iter().filter(|o| written_since(o, hour)).count() as u64,
            raw.len() as u64,
        ),
        newest_raw_age_s: raw
            .iter()
            .filter_map(|o| o.modified)
            .max()
            .map(|m| (now - m).whole_seconds()),
        raw_invalid_objects: invalid.len() as u64,
        ..Status::default()
    };
    let lo = hour_prefixes(RAW_PREFIX, day, day)
        .first()
        .cloned()
        .unwrap_or_default();
    let ledger = ctx
        .warehouse
        .ledger_range(&lo, &format!("{RAW_PREFIX}{KEY_END}"))
        .await?;
    let waiting: Vec<&Listed> = raw
        .iter()
        .filter(|o| !ledger.contains_key(&o.key))
        .collect();
    let stuck = waiting
        .iter()
        .filter(|o| o.modified.is_some_and(|m| m < now - STUCK_AFTER))
        .count() as u64;
    s.waiting = (waiting.len() as u64, stuck);
    let (last, h_objects, h_lines) = ctx.warehouse.loads(hour).await?;
    let (_, d_objects, d_lines) = ctx.warehouse.loads(day).await?;
    s.last_load = last;
    s.loaded = ((h_objects, h_lines), (d_objects, d_lines));
    let mut queues = vec![
        ("loader queue".to_owned(), r.loader_queue.clone()),
        ("loader dead-letter queue".to_owned(), r.loader_dlq.clone()),
        (
            "raw-writer on-failure queue".to_owned(),
            r.raw_failures.clone(),
        ),
    ];
    queues.extend(r.other_dlqs.iter().cloned());
    for (name, url) in queues {
        s.queues
            .push((name, queue::depth(&ctx.clients.sqs, &url).await?));
    }
    if let Err(e) = flow(ctx, &mut s, now).await {
        s.metrics_unavailable = Some(e.to_string());
    }
    s.rejects = ctx.warehouse.rejects_by_code(Some(day)).await?;
    s.reconciliation = ctx.warehouse.reconciliation(Some(day)).await?;
    s.problems = problems(&s);
    Ok(s)
}

/// The stream's accepted records and the raw-writer's lag, from CloudWatch.
async fn flow(ctx: &Ctx, s: &mut Status, now: OffsetDateTime) -> Result<(), metrics::MetricsError> {
    let (cw, r) = (&ctx.clients.cloudwatch, &ctx.resources);
    let incoming = Series {
        namespace: "AWS/Kinesis",
        name: "IncomingRecords",
        dimension: "StreamName",
        value: &r.stream,
    };
    s.accepted = (
        metrics::sum_since(cw, incoming, now - Duration::HOUR).await?,
        metrics::sum_since(cw, incoming, now - Duration::DAY).await?,
    );
    if let Some(f) = &r.raw_writer {
        let age = Series {
            namespace: "AWS/Lambda",
            name: "IteratorAge",
            dimension: "FunctionName",
            value: f,
        };
        s.iterator_age_ms = metrics::max_since(cw, age, now - Duration::minutes(5)).await?;
    }
    Ok(())
}

/// What needs a person in `s`, each with the command that helps.
pub fn problems(s: &Status) -> Vec<String> {
    let mut out = Vec::new();
    for (name, d) in &s.queues {
        let n = d.total();
        if n == 0 || name == "loader queue" {
            continue;
        }
        let fix = match name.as_str() {
            "loader dead-letter queue" => {
                "look at the loader's errors, then `caudal redrive loader-dlq`"
            }
            "raw-writer on-failure queue" => {
                "`caudal redrive raw-failures` before the stream's retention drops the records"
            }
            _ => "look at its messages and redrive them",
        };
        out.push(format!("{n} message(s) in the {name}: {fix}"));
    }
    if let Some(ms) = s
        .iterator_age_ms
        .filter(|ms| *ms > BEHIND_AFTER.whole_milliseconds() as f64)
    {
        out.push(format!(
            "the raw-writer is {:.0} minutes behind the stream: look at its errors, throttles and \
             duration (records older than StreamRetentionHours are lost)",
            ms / 60_000.0
        ));
    }
    if s.waiting.1 > 0 {
        out.push(format!(
            "{} raw object(s) written more than {} minutes ago are not loaded: check the loader \
             (its queue, errors), or `caudal replay` if their notifications were lost",
            s.waiting.1,
            STUCK_AFTER.whole_minutes()
        ));
    }
    if s.reconciliation.mismatched > 0 {
        out.push(format!(
            "{} raw object(s) do not reconcile: `caudal reconcile` names them",
            s.reconciliation.mismatched
        ));
    }
    out
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "caudal status at {}", self.at)?;
        let n = |v: Option<f64>| v.map_or("no data".to_owned(), |v| format!("{v:.0}"));
        writeln!(f, "ingest")?;
        if let Some(why) = &self.metrics_unavailable {
            writeln!(f, "  CloudWatch unavailable: {why}")?;
        }
        writeln!(
            f,
            "  events accepted        {} last hour, {} last day",
            n(self.accepted.0),
            n(self.accepted.1)
        )?;
        writeln!(
            f,
            "  raw-writer behind by   {}",
            self.iterator_age_ms
                .map_or("no data (last 5 min)".to_owned(), |ms| format!(
                    "{:.1} s",
                    ms / 1000.0
                ))
        )?;
        writeln!(f, "raw archive")?;
        writeln!(
            f,
            "  objects written        {} last hour, {} last day",
            self.raw_objects.0, self.raw_objects.1
        )?;
        match self.newest_raw_age_s {
            Some(a) => writeln!(f, "  newest object          {a} s ago")?,
            None => writeln!(f, "  newest object          none in the last day")?,
        }
        writeln!(
            f,
            "  raw-invalid/ objects   {} last day",
            self.raw_invalid_objects
        )?;
        writeln!(f, "loader")?;
        writeln!(
            f,
            "  waiting to load        {} ({} older than {} min)",
            self.waiting.0,
            self.waiting.1,
            STUCK_AFTER.whole_minutes()
        )?;
        let ((ho, hl), (d_o, dl)) = self.loaded;
        writeln!(
            f,
            "  loaded                 {ho} objects / {hl} lines last hour, {d_o} / {dl} last day"
        )?;
        writeln!(
            f,
            "  last load              {}",
            self.last_load.as_deref().unwrap_or("never")
        )?;
        writeln!(f, "queues")?;
        for (name, d) in &self.queues {
            writeln!(
                f,
                "  {name:<30} {} waiting, {} in flight, {} delayed",
                d.visible, d.in_flight, d.delayed
            )?;
        }
        writeln!(f, "rejects (last day)")?;
        if self.rejects.is_empty() {
            writeln!(f, "  none")?;
        }
        for (code, rule, n) in &self.rejects {
            writeln!(f, "  {code:<10} {rule:<30} {n}")?;
        }
        let rc = &self.reconciliation;
        writeln!(f, "reconciliation (objects loaded in the last day)")?;
        writeln!(
            f,
            "  {} objects, {} lines = {} rows + {} rejects + {} filtered + {} duplicates; {} \
             object(s) off",
            rc.objects,
            rc.records,
            rc.rows_in_tables,
            rc.rows_in_rejects,
            rc.filtered,
            rc.duplicates,
            rc.mismatched
        )?;
        if self.problems.is_empty() {
            write!(f, "OK: nothing needs a person")
        } else {
            writeln!(f, "NEEDS A PERSON")?;
            let lines: Vec<String> = self.problems.iter().map(|p| format!("  - {p}")).collect();
            write!(f, "{}", lines.join("\n"))
        }
    }
}

/// One hour of `caudal reconcile`: the stream's records by arrival hour, and where each is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hour {
    /// Events (and foreign items) the stream accepted, arrived in this hour: a packed record
    /// counts as what it holds.
    pub accepted: u64,
    /// Of those, in a `raw/` object's range.
    pub archived: u64,
    /// In a `raw-invalid/` object's range.
    pub invalid: u64,
    /// In a failed batch's range (on-failure queue): to redrive.
    pub failed: u64,
    /// In none: not written yet (the last minutes) or lost.
    pub missing: u64,
}

/// A raw object whose lines are not the stream records of its range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectDifference {
    /// Key.
    pub key: String,
    /// Lines in the object (ledger, or counted).
    pub lines: i64,
    /// Stream records in its range.
    pub records: u64,
}

/// What `caudal reconcile` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconcile {
    /// Start of the window (the hour `--since` falls in).
    pub since: String,
    /// Per arrival hour (`YYYY-MM-DDTHH`).
    pub hours: BTreeMap<String, Hour>,
    /// Raw objects whose lines differ from their range's records.
    pub objects: Vec<ObjectDifference>,
    /// `raw-invalid/` objects in the window: (key, records in range).
    pub raw_invalid: Vec<(String, u64)>,
    /// Failed batches waiting in the on-failure queue (up to ten shown).
    pub failed_batches: Vec<FailedBatch>,
    /// Messages in the on-failure queue.
    pub failed_messages: u64,
    /// The warehouse's reconciliation view over loads since the window's start.
    pub warehouse: Reconciliation,
    /// Records in the last minutes not written yet (not counted as missing).
    pub in_flight: u64,
    /// Raw objects of the window the ledger does not hold: (key, written more than
    /// [`STUCK_AFTER`] ago).
    pub unloaded: Vec<(String, bool)>,
    /// Whether anything does not add up.
    pub off: bool,
}

/// Records arrived this recently may not be written yet.
pub const IN_FLIGHT: Duration = Duration::minutes(5);

/// A shard's sorted ranges of one kind: (first, last, index of the owner).
type Ranges = Vec<(String, String, usize)>;

fn covering<'a>(ranges: &'a Ranges, seq: &str) -> Option<&'a (String, String, usize)> {
    // Few ranges per shard and window: a linear scan is plenty.
    ranges.iter().find(|(a, b, _)| seq_in_range(seq, a, b))
}

/// Gathers the reconciliation since `since`.
pub async fn reconcile(ctx: &Ctx, since: OffsetDateTime) -> Result<Reconcile, OpError> {
    let now = OffsetDateTime::now_utc();
    let start = since
        .replace_minute(0)
        .and_then(|t| t.replace_second(0))
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(since);
    let raw = own(ctx, list_hours(ctx, RAW_PREFIX, start, now).await?);
    let invalid = own(ctx, list_hours(ctx, RAW_INVALID_PREFIX, start, now).await?);
    let lo = hour_prefixes(RAW_PREFIX, start, start)
        .first()
        .cloned()
        .unwrap_or_default();
    let ledger: BTreeMap<String, LedgerRow> = ctx
        .warehouse
        .ledger_range(&lo, &format!("{RAW_PREFIX}{KEY_END}"))
        .await?;
    let failed_messages = queue::depth(&ctx.clients.sqs, &ctx.resources.raw_failures)
        .await?
        .total();
    let failed_batches: Vec<FailedBatch> =
        queue::peek(&ctx.clients.sqs, &ctx.resources.raw_failures)
            .await?
            .iter()
            .filter_map(|b| FailedBatch::from_message(b))
            .collect();

    // Ranges per shard: raw/ objects, raw-invalid/ objects, failed batches.
    let mut by_shard: BTreeMap<String, [Ranges; 3]> = BTreeMap::new();
    for (kind, list) in [(0usize, &raw), (1, &invalid)] {
        for (i, o) in list.iter().enumerate() {
            if let Some(k) = parse_batch_key(&o.key) {
                by_shard.entry(k.shard_id).or_default()[kind].push((k.first_seq, k.last_seq, i));
            }
        }
    }
    for (i, b) in failed_batches.iter().enumerate() {
        by_shard.entry(b.shard.clone()).or_default()[2].push((b.start.clone(), b.end.clone(), i));
    }
    let mut rep = Reconcile {
        since: caudal_core::envelope::format_timestamp(start),
        failed_messages,
        failed_batches: failed_batches.clone(),
        ..Reconcile::default()
    };
    let mut raw_counts = vec![0u64; raw.len()];
    let mut invalid_counts = vec![0u64; invalid.len()];
    let shards = stream::shards(&ctx.clients.kinesis, &ctx.resources.stream).await?;
    let bar = crate::run::progress(shards.len() as u64, "reading shards");
    let empty: [Ranges; 3] = Default::default();
    for shard in &shards {
        let ranges = by_shard.get(shard).unwrap_or(&empty);
        let mut reads = Vec::new();
        stream::read(
            &ctx.clients.kinesis,
            &ctx.resources.stream,
            shard,
            &From::Time(start),
            |_| false,
            |r| {
                let t = r.arrival_time();
                reads.push((r.seq, t, contents(&r.data)));
            },
        )
        .await?;
        for (seq, arrival, holds) in reads {
            let Some(t) = arrival else { continue };
            let hour = format!(
                "{:04}-{:02}-{:02}T{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour()
            );
            let h = rep.hours.entry(hour).or_default();
            // A packed record's events go to raw/, its other items to raw-invalid/, both
            // objects keyed by the batch's range; a failed batch holds both kinds.
            for (kind, n) in [(0, holds.events), (1, holds.invalid)] {
                let n = n as u64;
                if n == 0 {
                    continue;
                }
                h.accepted += n;
                if let Some((_, _, i)) = covering(&ranges[kind], &seq) {
                    if kind == 0 {
                        h.archived += n;
                        raw_counts[*i] += n;
                    } else {
                        h.invalid += n;
                        invalid_counts[*i] += n;
                    }
                } else if covering(&ranges[2], &seq).is_some() {
                    h.failed += n;
                } else if t > now - IN_FLIGHT {
                    rep.in_flight += n;
                    h.accepted -= n;
                } else {
                    h.missing += n;
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    rep.unloaded = raw
        .iter()
        .filter(|o| !ledger.contains_key(&o.key))
        .map(|o| {
            (
                o.key.clone(),
                o.modified.is_some_and(|m| m < now - STUCK_AFTER),
            )
        })
        .collect();
    // Each raw object's lines against its range's records.
    for (o, records) in raw.iter().zip(raw_counts) {
        let lines = match ledger.get(&o.key) {
            Some(l) => l.records,
            None => count_lines(ctx, &o.key).await?,
        };
        if u64::try_from(lines).ok() != Some(records) {
            rep.objects.push(ObjectDifference {
                key: o.key.clone(),
                lines,
                records,
            });
        }
    }
    rep.raw_invalid = invalid
        .iter()
        .zip(invalid_counts)
        .map(|(o, n)| (o.key.clone(), n))
        .collect();
    rep.warehouse = ctx.warehouse.reconciliation(Some(start)).await?;
    rep.off = !rep.objects.is_empty()
        || rep.unloaded.iter().any(|(_, stuck)| *stuck)
        || rep.warehouse.mismatched > 0
        || rep.hours.values().any(|h| h.missing > 0)
        || failed_messages > 0;
    Ok(rep)
}

/// The most a raw object decompresses to that `caudal` reads (a raw object holds one Lambda
/// batch: ≤ 6 MB of records, base64 in the event, smaller as lines).
const MAX_RAW_OBJECT_BYTES: usize = 64 * 1024 * 1024;

/// Lines in a raw object not loaded yet (read and decompressed).
async fn count_lines(ctx: &Ctx, key: &str) -> Result<i64, OpError> {
    let obj = ctx
        .clients
        .s3
        .get_object()
        .bucket(&ctx.resources.raw_bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| OpError::Read(key.to_owned(), caudal_aws::call_error(&e).to_string()))?;
    let body = obj
        .body
        .collect()
        .await
        .map_err(|e| OpError::Read(key.to_owned(), e.to_string()))?
        .into_bytes();
    let codec = caudal_core::codec::Codec::from_key(key)
        .ok_or_else(|| OpError::Read(key.to_owned(), "not a .gz or .zst key".into()))?;
    let text = codec
        .decompress_capped(&body, MAX_RAW_OBJECT_BYTES)
        .map_err(|e| OpError::Read(key.to_owned(), e.to_string()))?;
    Ok(text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as i64)
}

impl std::fmt::Display for Reconcile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "caudal reconcile since {}", self.since);
        let _ = writeln!(
            out,
            "stream → raw archive, by arrival hour (UTC)\n  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "hour", "accepted", "archived", "invalid", "failed", "missing"
        );
        let mut total = Hour::default();
        for (h, r) in &self.hours {
            let _ = writeln!(
                out,
                "  {h:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
                r.accepted, r.archived, r.invalid, r.failed, r.missing
            );
            total.accepted += r.accepted;
            total.archived += r.archived;
            total.invalid += r.invalid;
            total.failed += r.failed;
            total.missing += r.missing;
        }
        let _ = writeln!(
            out,
            "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "total", total.accepted, total.archived, total.invalid, total.failed, total.missing
        );
        if self.in_flight > 0 {
            let _ = writeln!(
                out,
                "  ({} records of the last {} minutes not written yet)",
                self.in_flight,
                IN_FLIGHT.whole_minutes()
            );
        }
        for d in &self.objects {
            let _ = writeln!(
                out,
                "  OFF {}: {} lines, {} stream records in its range",
                d.key, d.lines, d.records
            );
        }
        let stuck = self.unloaded.iter().filter(|(_, s)| *s).count();
        let _ = writeln!(
            out,
            "raw objects not loaded yet: {} ({stuck} written more than {} minutes ago{})",
            self.unloaded.len(),
            STUCK_AFTER.whole_minutes(),
            if stuck > 0 { ": `caudal replay`" } else { "" }
        );
        for (k, _) in self.unloaded.iter().take(20) {
            let _ = writeln!(out, "  {k}");
        }
        let _ = writeln!(out, "raw-invalid/ objects: {}", self.raw_invalid.len());
        for (k, n) in &self.raw_invalid {
            let _ = writeln!(out, "  {k} ({n} records)");
        }
        let _ = writeln!(
            out,
            "failed batches (on-failure queue): {}",
            self.failed_messages
        );
        for b in &self.failed_batches {
            let _ = writeln!(
                out,
                "  {} {}..{} ({} records): `caudal redrive raw-failures`",
                b.shard, b.start, b.end, b.size
            );
        }
        let w = &self.warehouse;
        let _ = writeln!(
            out,
            "raw archive → warehouse (objects loaded since {}): {} objects, {} lines = {} rows + \
             {} rejects + {} filtered + {} duplicates",
            self.since,
            w.objects,
            w.records,
            w.rows_in_tables,
            w.rows_in_rejects,
            w.filtered,
            w.duplicates
        );
        for (k, d, l) in &w.mismatches {
            let _ = writeln!(out, "  OFF {k}: difference {d}, ledger difference {l}");
        }
        let _ = write!(
            out,
            "{}",
            if self.off {
                "DIFFERENCES: see above"
            } else {
                "OK: every accepted record is in the archive and every archived line in the warehouse"
            }
        );
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(n: u64) -> Depth {
        Depth {
            visible: n,
            ..Depth::default()
        }
    }

    #[test]
    fn a_person_is_needed_for_dead_letters_stuck_objects_differences_and_lag() {
        let mut s = Status {
            queues: vec![
                ("loader queue".into(), depth(500)),
                ("loader dead-letter queue".into(), depth(0)),
                ("raw-writer on-failure queue".into(), depth(0)),
            ],
            waiting: (40, 0),
            iterator_age_ms: Some(BEHIND_AFTER.whole_milliseconds() as f64),
            ..Status::default()
        };
        assert!(
            problems(&s).is_empty(),
            "a busy loader queue, fresh objects, lag at the limit"
        );
        s.queues[1].1 = depth(2);
        s.queues[2].1 = Depth {
            in_flight: 1,
            ..Depth::default()
        };
        s.waiting.1 = 3;
        s.reconciliation.mismatched = 1;
        s.iterator_age_ms = Some(BEHIND_AFTER.whole_milliseconds() as f64 + 1.0);
        let p = problems(&s);
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(
            p[0].starts_with("2 message(s) in the loader dead-letter queue"),
            "{p:?}"
        );
        assert!(p[1].contains("redrive raw-failures"), "{p:?}");
        assert!(p[2].contains("behind the stream"), "{p:?}");
        assert!(p[3].starts_with("3 raw object(s)"), "{p:?}");
        assert!(p[4].contains("do not reconcile"), "{p:?}");
        s.problems = p;
        let text = s.to_string();
        assert!(text.contains("NEEDS A PERSON"), "{text}");
        assert!(
            text.contains("events accepted        no data last hour"),
            "{text}"
        );
        assert!(text.contains("raw-writer behind by   600.0 s"), "{text}");
    }
}
