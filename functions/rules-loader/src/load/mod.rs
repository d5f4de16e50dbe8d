//! One invocation's work: from notices to a per-message outcome.
//!
//! Per load (≤ [`MAX_OBJECTS_PER_LOAD`] raw objects, sorted by key):
//! 1. ledger look-up (`ExecuteStatement` with parameters) — loaded keys are acknowledged;
//! 2. read the other objects (bounded concurrency);
//! 3. load id over (key, ETag); if the load's descriptor exists in S3 a previous attempt already
//!    staged it: reuse its SQL byte for byte; otherwise run the rules, upload parts, manifests
//!    and rejects under an attempt-specific prefix (`<load-id>-<attempt>`, so concurrent first
//!    attempts never overwrite each other's files), then the descriptor with an S3 conditional
//!    write (`If-None-Match: *`): the first attempt to finish staging wins, a later one adopts
//!    the winner's descriptor and leaves its own files to the staging lifecycle rule;
//! 4. `BatchExecuteStatement` with `ClientToken = <load-id>-<generation>`, then poll until a
//!    final status or the deadline;
//! 5. FINISHED → loaded (the ledger rows carry the load id, written in the same transaction);
//!    anything else → the load's messages are reported failed and come back.
//!
//! Objects named by an operator's `reprocess` command load in loads of their own: in step 1 an
//! object counts as done only when the ledger holds it under the current rule version; its load
//! id also covers the rule version (so a reprocess never re-submits an earlier rule version's
//! staged SQL), and its transaction first deletes the earlier version's rows, rejects and
//! ledger row ([`sql::LoadPlan::replace`]).
//!
//! Step 3 (the descriptor, the rules and every staging upload) is the submodule `staging`; this
//! module runs the steps in order and turns their results into per-message outcomes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use caudal_aws::redshift;
use caudal_aws::s3;
use caudal_core::retry::Retryable;
use caudal_core::rules::RulesError;
use caudal_core::telemetry::{Emf, Unit};
use caudal_core::warehouse::{Described, WaitError};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::State;
use crate::event::{Notices, Summary};
use crate::sql::{self, MAX_OBJECTS_PER_LOAD};

mod staging;

pub use self::staging::Descriptor;
use self::staging::{Fetched, descriptor_for};
pub use crate::error::{LoadError, MAX_GENERATIONS};

/// A statement created this long before the invocation started is from an earlier attempt.
const STALE_AFTER: Duration = Duration::from_secs(5);
/// The result of one invocation.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// SQS partial batch response.
    pub batch_response: SqsBatchResponse,
    /// Counts.
    pub summary: Summary,
    /// Messages (indices) none of whose objects was tried, for [`crate::postpone`]; not in
    /// `batch_response`.
    pub postponed: BTreeSet<usize>,
}

impl RunResult {
    /// Report the messages `which` (indices into `notices`) failed after all.
    pub fn add_failures(&mut self, notices: &Notices, which: &BTreeSet<usize>) {
        for &i in which {
            if let Some(id) = notices.message_ids.get(i).cloned().flatten() {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                self.batch_response.batch_item_failures.push(f);
            }
        }
    }
}

/// Load the objects of `notices`; report which messages failed.
pub async fn run(state: &State, notices: &Notices, deadline: Instant) -> RunResult {
    let started = SystemTime::now();
    let mut failed_messages: BTreeSet<usize> = BTreeSet::new();
    let mut postponed_messages: BTreeSet<usize> = BTreeSet::new();
    let mut summary = Summary {
        ignored: notices.ignored,
        ..Summary::default()
    };
    for bad in &notices.bad {
        tracing::error!(
            message_id = notices.message_ids.get(bad.message).cloned().flatten().as_deref().unwrap_or(""),
            reason = %bad.reason,
            "unusable notification (permanent; goes to the DLQ after maxReceiveCount)"
        );
        failed_messages.insert(bad.message);
    }

    // Unique objects, sorted by key, each with the messages that reference it and whether one
    // of them asks for a reprocess (which also loads an object not loaded yet).
    let mut objects: BTreeMap<(String, String), (Vec<usize>, bool)> = BTreeMap::new();
    for n in &notices.objects {
        let e = objects
            .entry((n.key.clone(), n.bucket.clone()))
            .or_default();
        e.0.push(n.message);
        e.1 |= n.reprocess;
    }

    let mut blocked = std::sync::Arc::default();
    if !objects.is_empty() && state.config.migrate_on_start {
        match crate::migrate::ensure(state, deadline).await {
            Ok(b) => blocked = b,
            Err(e) => {
                tracing::error!(error = %e, retryable = e.is_retryable(), "migration failed; no object tried, their messages are postponed");
                for (msgs, _) in objects.values() {
                    postponed_messages.extend(msgs);
                }
                summary.postponed = objects.len();
                return finish(notices, failed_messages, postponed_messages, summary);
            }
        }
    }

    // Loads first, then reprocesses, each in loads of their own.
    let mut groups: [(Vec<ItemMessages>, bool); 2] = [(Vec::new(), false), (Vec::new(), true)];
    for (item, (msgs, reprocess)) in objects {
        groups[usize::from(reprocess)].0.push((item, msgs));
    }
    let mut chunks: Vec<(&[ItemMessages], bool)> = Vec::new();
    for (all, reprocess) in &groups {
        // A reprocess names its keys in its deletes: those statements stay within the limit.
        let key_bytes = if *reprocess {
            sql::MAX_REPLACE_KEY_BYTES
        } else {
            usize::MAX
        };
        for c in chunks_within(all, MAX_OBJECTS_PER_LOAD, key_bytes) {
            chunks.push((c, *reprocess));
        }
    }
    for (chunk, reprocess) in chunks {
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = if left < state.min_load_time {
            tracing::warn!(
                left_ms = left.as_millis() as u64,
                objects = chunk.len(),
                "too close to the deadline to start a load; its messages are postponed"
            );
            vec![ObjectOutcome::Untried; chunk.len()]
        } else {
            load_chunk(state, chunk, reprocess, &blocked, deadline, started).await
        };
        for (i, (_, msgs)) in chunk.iter().enumerate() {
            match &outcome[i] {
                ObjectOutcome::Loaded => summary.loaded += 1,
                ObjectOutcome::AlreadyLoaded => summary.already_loaded += 1,
                ObjectOutcome::Failed => {
                    summary.failed += 1;
                    failed_messages.extend(msgs);
                }
                ObjectOutcome::Untried => {
                    summary.postponed += 1;
                    postponed_messages.extend(msgs);
                }
            }
        }
    }
    finish(notices, failed_messages, postponed_messages, summary)
}

/// `all` cut into runs of at most `max` objects whose keys add up to at most `max_key_bytes`
/// (a run always holds at least one object).
fn chunks_within<T>(all: &[(Item, T)], max: usize, max_key_bytes: usize) -> Vec<&[(Item, T)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, ((key, _), _)) in all.iter().enumerate() {
        if i > start && (i - start == max || bytes.saturating_add(key.len()) > max_key_bytes) {
            out.push(&all[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(key.len());
    }
    if start < all.len() {
        out.push(&all[start..]);
    }
    out
}

/// The answer: `failed` messages are reported; `postponed` ones (unless also failed: a message
/// with one tried-and-failed object is an ordinary failure) are left to [`crate::postpone`].
fn finish(
    notices: &Notices,
    failed: BTreeSet<usize>,
    postponed: BTreeSet<usize>,
    summary: Summary,
) -> RunResult {
    let postponed: BTreeSet<usize> = postponed.difference(&failed).copied().collect();
    let batch_item_failures = failed
        .into_iter()
        .filter_map(|i| notices.message_ids.get(i).cloned().flatten())
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    let mut batch_response = SqsBatchResponse::default();
    batch_response.batch_item_failures = batch_item_failures;
    tracing::info!(
        loaded = summary.loaded,
        already_loaded = summary.already_loaded,
        failed = summary.failed,
        ignored = summary.ignored,
        postponed = summary.postponed,
        failed_messages = batch_response.batch_item_failures.len(),
        postponed_messages = postponed.len(),
        "batch done"
    );
    RunResult {
        batch_response,
        summary,
        postponed,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectOutcome {
    Loaded,
    AlreadyLoaded,
    /// Tried and failed: the message comes back (and counts towards the DLQ).
    Failed,
    /// Not tried (the warehouse could not be asked, or no time to start): postponed.
    Untried,
}

fn log_failure(key: &str, e: &LoadError) {
    tracing::error!(raw_key = key, error = %e, retryable = e.is_retryable(), "raw object not loaded");
}

/// A raw object: (key, bucket).
type Item = (String, String);
/// A raw object and the messages (indices) that name it.
type ItemMessages = (Item, Vec<usize>);
/// What the ledger holds of a chunk's objects: key → (ETag, rule version).
type Ledgered = BTreeMap<String, (String, String)>;

/// One load: ledger → read → stage → submit. Every object starts as failed; each step settles
/// the ones it can (already loaded, untried, loaded) and returns early when nothing is left.
async fn load_chunk(
    state: &State,
    chunk: &[ItemMessages],
    reprocess: bool,
    blocked: &BTreeMap<String, RulesError>,
    deadline: Instant,
    started: SystemTime,
) -> Vec<ObjectOutcome> {
    let mut out = vec![ObjectOutcome::Failed; chunk.len()];
    let Some(loaded) = ledger_step(state, chunk, deadline, &mut out).await else {
        return out;
    };
    let set = read_step(
        state, chunk, &loaded, reprocess, blocked, deadline, &mut out,
    )
    .await;
    if set.is_empty() {
        return out;
    }
    let Some(descriptor) = stage_step(state, &set, reprocess, deadline).await else {
        return out;
    };
    submit_step(state, &descriptor, &set, deadline, started, &mut out).await;
    out
}

/// Step 1, the ledger: the chunk's keys already loaded (key → ETag, rule version). `None` when
/// the look-up failed: a transient failure marks every object untried in `out` (nothing was
/// read).
async fn ledger_step(
    state: &State,
    chunk: &[ItemMessages],
    deadline: Instant,
    out: &mut [ObjectOutcome],
) -> Option<Ledgered> {
    let cfg = &state.config;
    let keys: Vec<&str> = chunk.iter().map(|((k, _), _)| k.as_str()).collect();
    let (lookup, params) = sql::ledger_lookup(&cfg.schema, &keys);
    let loaded: Ledgered = match redshift::query(
        &state.redshift,
        &cfg.connection,
        &lookup,
        &params,
        &state.poll,
        deadline,
    )
    .await
    {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|r| {
                let key = r.first()?.as_str()?.to_owned();
                let text = |i: usize| r.get(i).and_then(|v| v.as_str()).unwrap_or("").to_owned();
                Some((key, (text(1), text(2))))
            })
            .collect(),
        Err(e) => {
            let e = LoadError::Query(e);
            for k in &keys {
                log_failure(k, &e);
            }
            // A transient warehouse failure before anything was read: nothing was tried.
            if e.is_retryable() {
                out.fill(ObjectOutcome::Untried);
            }
            return None;
        }
    };
    Some(loaded)
}

/// Step 2, read what is not loaded yet — for a `reprocess`, what the ledger does not hold
/// under the current rule version — (bounded concurrency; the others are marked in `out`),
/// dropping objects that cannot be read or that a migration conflict holds: (index in the
/// chunk, object).
async fn read_step(
    state: &State,
    chunk: &[ItemMessages],
    loaded: &Ledgered,
    reprocess: bool,
    blocked: &BTreeMap<String, RulesError>,
    deadline: Instant,
    out: &mut [ObjectOutcome],
) -> Vec<(usize, Fetched)> {
    let current = state.config.rules.version();
    let mut todo = Vec::new();
    for (i, ((key, bucket), _)) in chunk.iter().enumerate() {
        let done = loaded
            .get(key)
            .filter(|(_, version)| !reprocess || version == current);
        if let Some((etag, version)) = done {
            tracing::debug!(raw_key = %key, ledger_etag = %etag, rule_version = %version, reprocess, "already loaded");
            out[i] = ObjectOutcome::AlreadyLoaded;
        } else {
            todo.push((i, bucket.clone(), key.clone()));
        }
    }
    if todo.is_empty() {
        return Vec::new();
    }
    let fetched: Vec<(usize, Result<Fetched, LoadError>)> =
        futures_util::stream::iter(todo.into_iter().map(|(i, bucket, key)| async move {
            let r = s3::get_object(&state.s3, &bucket, &key, &state.retry, deadline)
                .await
                .map_err(|source| LoadError::Fetch {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    source,
                })
                .and_then(|o| {
                    sql::check_etag(&o.etag)?;
                    Ok(Fetched {
                        key,
                        etag: o.etag,
                        body: o.body,
                    })
                });
            (i, r)
        }))
        .buffered(state.fetch_concurrency.max(1))
        .collect()
        .await;
    let mut set: Vec<(usize, Fetched)> = Vec::new();
    for (i, r) in fetched {
        match r.and_then(|f| held_by(state, blocked, f)) {
            Ok(f) => set.push((i, f)),
            Err(e) => log_failure(&chunk[i].0.0, &e),
        }
    }
    set
}
/// Step 3, stage (or find the earlier attempt's staging): the load's descriptor, `None` when
/// staging failed or no object of the set could be staged (the reasons are logged).
async fn stage_step(
    state: &State,
    set: &[(usize, Fetched)],
    reprocess: bool,
    deadline: Instant,
) -> Option<Descriptor> {
    let scope = state.config.load_scope();
    let scope = if reprocess {
        format!("{scope}/reprocess/{}", state.config.rules.version())
    } else {
        scope
    };
    let load_id = caudal_core::keys::load_id(
        &scope,
        set.iter().map(|(_, f)| (f.key.as_str(), f.etag.as_str())),
    );
    let descriptor = match descriptor_for(state, &load_id, set, reprocess, deadline).await {
        Ok(d) => d,
        Err(e) => {
            for (_, f) in set {
                log_failure(&f.key, &e);
            }
            return None;
        }
    };
    for (key, reason) in &descriptor.failed {
        tracing::error!(raw_key = %key, reason = %reason, retryable = false, "raw object not loaded (poison; goes to the DLQ after maxReceiveCount)");
    }
    if descriptor.objects.is_empty() {
        return None;
    }
    Some(descriptor)
}

/// Step 4, submit and follow: the descriptor's objects are marked loaded in `out` when the
/// statement finished; otherwise they stay failed and their messages come back.
async fn submit_step(
    state: &State,
    descriptor: &Descriptor,
    set: &[(usize, Fetched)],
    deadline: Instant,
    started: SystemTime,
    out: &mut [ObjectOutcome],
) {
    let index_of: BTreeMap<&str, usize> = set.iter().map(|(i, f)| (f.key.as_str(), *i)).collect();
    let submitted = Instant::now();
    match submit_and_wait(state, descriptor, deadline, started).await {
        Ok((id, d)) => {
            let elapsed = submitted.elapsed();
            for o in &descriptor.objects {
                if let Some(&i) = index_of.get(o.raw_key.as_str()) {
                    out[i] = ObjectOutcome::Loaded;
                }
            }
            emit_metrics(descriptor, &d, elapsed, &id);
        }
        Err(e) => {
            tracing::error!(load_id = %descriptor.load_id, error = %e, retryable = e.is_retryable(), objects = descriptor.objects.len(), "load not done; its messages will be redelivered");
        }
    }
}

/// `f` unless it has rows for a table a migration conflict holds: then that conflict (naming
/// the column and the fix), so only the objects that need the table wait for a person.
fn held_by(
    state: &State,
    blocked: &BTreeMap<String, RulesError>,
    f: Fetched,
) -> Result<Fetched, LoadError> {
    if blocked.is_empty() {
        return Ok(f);
    }
    let rules = state.config.rules.as_ref();
    let tables =
        crate::stage::tables_of(rules, &f.key, &f.body).map_err(|source| LoadError::Stage {
            key: f.key.clone(),
            source,
        })?;
    let held = tables
        .iter()
        .filter_map(|&t| rules.tables().get(t))
        .find_map(|t| blocked.get(t.name.as_str()));
    match held {
        Some(conflict) => Err(LoadError::Migration(conflict.clone())),
        None => Ok(f),
    }
}

/// Submit the load's batch and follow it. A token whose statement already FAILED or was
/// ABORTED in an earlier invocation moves to the next generation; a token whose statement is
/// still running (an earlier invocation timed out) is simply followed.
async fn submit_and_wait(
    state: &State,
    d: &Descriptor,
    deadline: Instant,
    started: SystemTime,
) -> Result<(String, Described), LoadError> {
    let cfg = &state.config;
    for generation in 0..MAX_GENERATIONS {
        let token = format!("{}-{generation}", d.load_id);
        let id = redshift::batch_execute(
            &state.redshift,
            &cfg.connection,
            &d.sqls,
            Some(&token),
            &state.retry,
            deadline,
        )
        .await
        .map_err(LoadError::Submit)?;
        tracing::info!(load_id = %d.load_id, statement_id = %id, client_token = %token, objects = d.objects.len(), "load submitted");
        let mut first: Option<Described> = None;
        let result = redshift::wait(&state.redshift, &id, &state.poll, deadline, |desc| {
            if first.is_none() {
                first = Some(desc.clone());
            }
            tracing::debug!(statement_id = %desc.id, status = ?desc.status, "polled");
        })
        .await;
        match result {
            Ok(desc) => return Ok((id, desc)),
            Err(e @ (WaitError::Failed { .. } | WaitError::Aborted { .. })) => {
                let stale = first
                    .as_ref()
                    .filter(|f| f.status.is_final())
                    .and_then(|f| f.created_at)
                    .is_some_and(|created| created + STALE_AFTER < started);
                if stale {
                    tracing::warn!(statement_id = %id, client_token = %token, error = %e, "token already used by a failed attempt; next generation");
                    continue;
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(LoadError::Generations(d.load_id.clone()))
}

fn emit_metrics(d: &Descriptor, desc: &Described, elapsed: Duration, id: &str) {
    let rows: u64 = d.objects.iter().map(|o| o.valid).sum();
    let rejects: u64 = d.objects.iter().map(|o| o.rejected).sum();
    let filtered: u64 = d.objects.iter().map(|o| o.filtered_total()).sum();
    let records: u64 = d.objects.iter().map(|o| o.records).sum();
    // The INSERT of each table; its result_rows is what went in.
    let inserted: Option<i64> = d
        .staged
        .iter()
        .enumerate()
        .map(|(i, _)| {
            desc.sub_statements
                .get(sql::insert_statement_index(d.leading_statements, i))
                .map(|s| s.result_rows)
        })
        .sum();
    let mut emf = Emf::new("rules-loader")
        .metric("Objects", d.objects.len() as f64, Unit::Count)
        .metric("Records", records as f64, Unit::Count)
        .metric("Rows", rows as f64, Unit::Count)
        .metric("Rejects", rejects as f64, Unit::Count)
        .metric("Filtered", filtered as f64, Unit::Count)
        .metric(
            "StatementMs",
            elapsed.as_millis() as f64,
            Unit::Milliseconds,
        )
        .property("StatementId", id)
        .property("LoadId", d.load_id.as_str())
        .property("RedshiftDurationMs", desc.duration.as_millis() as u64);
    for (table, n) in &d.staged {
        emf = emf.metric(&format!("Rows.{table}"), *n as f64, Unit::Count);
    }
    let mut duplicates = None;
    if let Some(ins) = inserted {
        let dup = rows.saturating_sub(u64::try_from(ins).unwrap_or(0));
        duplicates = Some(dup);
        emf = emf.metric("Duplicates", dup as f64, Unit::Count);
    }
    emf.emit();
    let latencies = d.arrivals.latencies_ms(time::OffsetDateTime::now_utc());
    for chunk in latencies.chunks(caudal_core::telemetry::EMF_MAX_VALUES) {
        Emf::new("rules-loader")
            .metric_values("IngestToLoadedMs", chunk, Unit::Milliseconds)
            .property("LoadId", d.load_id.as_str())
            .emit();
    }
    // Highest latency first: the median is in the middle, the p99 near the start.
    let quantile = |q: f64| {
        latencies
            .get(((1.0 - q) * latencies.len() as f64) as usize)
            .map(|ms| *ms as u64)
    };
    tracing::info!(
        load_id = %d.load_id,
        ingest_to_loaded_p50_ms = quantile(0.5),
        ingest_to_loaded_p99_ms = quantile(0.99),
        statement_id = %id,
        objects = d.objects.len(),
        records,
        rows,
        rejects,
        filtered,
        duplicates,
        statement_ms = elapsed.as_millis() as u64,
        "load finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(lens: &[usize]) -> Vec<(Item, ())> {
        lens.iter()
            .map(|&n| (("k".repeat(n), "b".to_owned()), ()))
            .collect()
    }

    #[test]
    fn chunks_keep_to_the_object_and_key_byte_limits() {
        let sizes = |all: &[(Item, ())], max, bytes| -> Vec<usize> {
            chunks_within(all, max, bytes)
                .iter()
                .map(|c| c.len())
                .collect()
        };
        let all = items(&[10; 7]);
        assert_eq!(sizes(&all, 3, usize::MAX), [3, 3, 1]);
        assert_eq!(sizes(&all, 7, usize::MAX), [7]);
        assert_eq!(
            sizes(&all, 100, 30),
            [3, 3, 1],
            "30 bytes hold exactly three keys"
        );
        assert_eq!(sizes(&all, 100, 29), [2, 2, 2, 1]);
        assert_eq!(
            sizes(&items(&[50, 5]), 100, 20),
            [1, 1],
            "an oversized key is alone"
        );
        assert!(chunks_within(&items(&[]), 3, 10).is_empty());
    }
}
