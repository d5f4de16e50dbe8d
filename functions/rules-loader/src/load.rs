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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use bytes::Bytes;
use caudal_aws::redshift;
use caudal_aws::s3::{self, PutRequest, lost_conditional_write};
use caudal_core::retry::{CallError, Retryable};
use caudal_core::rules::{COPY_FORMAT_OPTIONS, RulesError};
use caudal_core::telemetry::{Emf, Unit};
use caudal_core::warehouse::{Described, QueryError, WaitError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::State;
use crate::event::{Notices, Summary};
use crate::sql::{self, LoadPlan, MAX_OBJECTS_PER_LOAD, ObjectStats, SqlError, StagedTable};
use crate::stage::{Part, StageError, Stager, manifest};

/// How many token generations a load may go through (each after a FAILED/ABORTED attempt in an
/// earlier invocation). The queue's `maxReceiveCount` normally ends the story sooner.
pub const MAX_GENERATIONS: u32 = 16;
/// A statement created this long before the invocation started is from an earlier attempt.
const STALE_AFTER: Duration = Duration::from_secs(5);
/// Name of the rejects folder under `staging/` (the rejects table).
const REJECTS_STAGING_NAME: &str = sql::REJECTS_TABLE;

/// Why a raw object (or a whole load) did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Migrations could not be applied: a non-additive difference between the rules and the
    /// warehouse (names the table and column). Permanent until a person fixes it.
    #[error("migration refused: {0}")]
    Migration(#[from] RulesError),
    /// A Data API query failed (ledger look-up, catalogue read).
    #[error("query failed: {0}")]
    Query(#[from] QueryError),
    /// Reading a raw object failed.
    #[error("reading s3://{bucket}/{key} failed: {source}")]
    Fetch {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The S3 error.
        source: CallError,
    },
    /// A raw object cannot be staged (corrupt, too large, unknown suffix). Permanent.
    #[error("raw object {key} cannot be staged: {source}")]
    Stage {
        /// Key.
        key: String,
        /// Why.
        source: StageError,
    },
    /// A value or statement refused by the SQL builder. Permanent.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// Writing a staging object or reading the load descriptor failed.
    #[error("staging s3://{bucket}/{key} failed: {source}")]
    Staging {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The S3 error.
        source: CallError,
    },
    /// The load descriptor in S3 is not ours / unreadable. Permanent until removed.
    #[error("load descriptor {key} is corrupt: {reason}")]
    Descriptor {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Submitting the load failed.
    #[error("submitting the load failed: {0}")]
    Submit(CallError),
    /// The load statement did not finish (FAILED, ABORTED, still running at the deadline).
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// Every token generation of this load failed.
    #[error("load {0} failed in {MAX_GENERATIONS} generations")]
    Generations(String),
}

impl Retryable for LoadError {
    fn is_retryable(&self) -> bool {
        match self {
            LoadError::Migration(_)
            | LoadError::Stage { .. }
            | LoadError::Sql(_)
            | LoadError::Descriptor { .. }
            | LoadError::Generations(_) => false,
            LoadError::Query(e) => e.is_retryable(),
            LoadError::Fetch { source, .. }
            | LoadError::Staging { source, .. }
            | LoadError::Submit(source) => source.retryable,
            LoadError::Wait(e) => e.is_retryable(),
        }
    }
}

/// What a load submits, kept in S3 so a retry re-submits the identical SQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The load id.
    pub load_id: String,
    /// `loaded_at` of every row (ISO 8601).
    pub loaded_at: String,
    /// Rule version hash.
    pub rule_version: String,
    /// The batch's statements.
    pub sqls: Vec<String>,
    /// The loaded objects' counts.
    pub objects: Vec<ObjectStats>,
    /// Objects of the load set that could not be staged: (key, reason). Permanent.
    pub failed: Vec<(String, String)>,
    /// Rows staged per table (table name → rows), in batch order.
    pub staged: Vec<(String, u64)>,
}

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

struct Fetched {
    key: String,
    etag: String,
    body: Bytes,
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

    // Unique objects, sorted by key, each with the messages that reference it.
    let mut objects: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for n in &notices.objects {
        objects
            .entry((n.key.clone(), n.bucket.clone()))
            .or_default()
            .push(n.message);
    }

    let mut blocked = std::sync::Arc::default();
    if !objects.is_empty() && state.config.migrate_on_start {
        match crate::migrate::ensure(state, deadline).await {
            Ok(b) => blocked = b,
            Err(e) => {
                tracing::error!(error = %e, retryable = e.is_retryable(), "migration failed; no object tried, their messages are postponed");
                for msgs in objects.values() {
                    postponed_messages.extend(msgs);
                }
                summary.postponed = objects.len();
                return finish(notices, failed_messages, postponed_messages, summary);
            }
        }
    }

    let all: Vec<((String, String), Vec<usize>)> = objects.into_iter().collect();
    for chunk in all.chunks(MAX_OBJECTS_PER_LOAD) {
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = if left < state.min_load_time {
            tracing::warn!(
                left_ms = left.as_millis() as u64,
                objects = chunk.len(),
                "too close to the deadline to start a load; its messages are postponed"
            );
            vec![ObjectOutcome::Untried; chunk.len()]
        } else {
            load_chunk(state, chunk, &blocked, deadline, started).await
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

async fn load_chunk(
    state: &State,
    chunk: &[((String, String), Vec<usize>)],
    blocked: &BTreeMap<String, RulesError>,
    deadline: Instant,
    started: SystemTime,
) -> Vec<ObjectOutcome> {
    let cfg = &state.config;
    let mut out = vec![ObjectOutcome::Failed; chunk.len()];

    // 1. Ledger.
    let keys: Vec<&str> = chunk.iter().map(|((k, _), _)| k.as_str()).collect();
    let (lookup, params) = sql::ledger_lookup(&cfg.schema, &keys);
    let loaded: BTreeMap<String, String> = match redshift::query(
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
                let etag = r.get(1).and_then(|v| v.as_str()).unwrap_or("").to_owned();
                Some((key, etag))
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
            return out;
        }
    };

    // 2. Read what is not loaded yet.
    let mut todo = Vec::new();
    for (i, ((key, bucket), _)) in chunk.iter().enumerate() {
        if let Some(etag) = loaded.get(key) {
            tracing::debug!(raw_key = %key, ledger_etag = %etag, "already loaded");
            out[i] = ObjectOutcome::AlreadyLoaded;
        } else {
            todo.push((i, bucket.clone(), key.clone()));
        }
    }
    if todo.is_empty() {
        return out;
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
    if set.is_empty() {
        return out;
    }

    // 3. Stage (or find the earlier attempt's staging).
    let load_id = caudal_core::keys::load_id(
        &cfg.load_scope(),
        set.iter().map(|(_, f)| (f.key.as_str(), f.etag.as_str())),
    );
    let descriptor = match descriptor_for(state, &load_id, &set, deadline).await {
        Ok(d) => d,
        Err(e) => {
            for (_, f) in &set {
                log_failure(&f.key, &e);
            }
            return out;
        }
    };
    let index_of: BTreeMap<&str, usize> = set.iter().map(|(i, f)| (f.key.as_str(), *i)).collect();
    for (key, reason) in &descriptor.failed {
        tracing::error!(raw_key = %key, reason = %reason, retryable = false, "raw object not loaded (poison; goes to the DLQ after maxReceiveCount)");
    }
    if descriptor.objects.is_empty() {
        return out;
    }

    // 4. Submit and follow.
    let submitted = Instant::now();
    match submit_and_wait(state, &descriptor, deadline, started).await {
        Ok((id, d)) => {
            let elapsed = submitted.elapsed();
            for o in &descriptor.objects {
                if let Some(&i) = index_of.get(o.raw_key.as_str()) {
                    out[i] = ObjectOutcome::Loaded;
                }
            }
            emit_metrics(&descriptor, &d, elapsed, &id);
        }
        Err(e) => {
            tracing::error!(load_id = %descriptor.load_id, error = %e, retryable = e.is_retryable(), objects = descriptor.objects.len(), "load not done; its messages will be redelivered");
        }
    }
    out
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

/// Find the load's descriptor in S3, or stage the load and write it.
async fn descriptor_for(
    state: &State,
    load_id: &str,
    set: &[(usize, Fetched)],
    deadline: Instant,
) -> Result<Descriptor, LoadError> {
    let cfg = &state.config;
    let bucket = cfg.staging_bucket.as_str();
    let key =
        caudal_core::keys::load_descriptor_key(load_id).map_err(|e| LoadError::Descriptor {
            key: load_id.to_owned(),
            reason: e.to_string(),
        })?;
    match s3::get_object(&state.s3, bucket, &key, &state.retry, deadline).await {
        Ok(obj) => {
            let d = parse_descriptor(&key, load_id, &obj.body)?;
            tracing::info!(
                load_id,
                "load already staged by an earlier attempt; re-submitting it"
            );
            return Ok(d);
        }
        Err(e) if e.code == "NoSuchKey" || e.code == "NotFound" => {}
        Err(source) => {
            return Err(LoadError::Staging {
                bucket: bucket.to_owned(),
                key,
                source,
            });
        }
    }

    let staging_id = format!("{load_id}-{}", (state.attempt_id)());
    let d = stage_load(state, load_id, &staging_id, set, deadline).await?;
    let body = serde_json::to_vec(&d).map_err(|e| LoadError::Descriptor {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    match put_new(state, &key, Bytes::from(body), deadline).await {
        Ok(()) => Ok(d),
        Err(LoadError::Staging { source, .. }) if lost_conditional_write(&source) => {
            // A concurrent attempt (or our own timed-out write, retried) got there first: its
            // staging is complete, and everyone must submit the same SQL under the same token.
            tracing::info!(
                load_id,
                staging_id,
                "another attempt staged this load first; adopting its descriptor"
            );
            let obj = s3::get_object(&state.s3, bucket, &key, &state.retry, deadline)
                .await
                .map_err(|source| LoadError::Staging {
                    bucket: bucket.to_owned(),
                    key: key.clone(),
                    source,
                })?;
            parse_descriptor(&key, load_id, &obj.body)
        }
        Err(e) => Err(e),
    }
}

fn parse_descriptor(key: &str, load_id: &str, body: &[u8]) -> Result<Descriptor, LoadError> {
    let d: Descriptor = serde_json::from_slice(body).map_err(|e| LoadError::Descriptor {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    if d.load_id != load_id {
        return Err(LoadError::Descriptor {
            key: key.to_owned(),
            reason: format!("it describes load {}", d.load_id),
        });
    }
    Ok(d)
}

/// Write the load descriptor only if none exists yet (S3 conditional write).
async fn put_new(
    state: &State,
    key: &str,
    body: Bytes,
    deadline: Instant,
) -> Result<(), LoadError> {
    put_object(state, key, body, "application/json", true, deadline).await
}

async fn put(
    state: &State,
    key: &str,
    body: Bytes,
    content_type: &str,
    deadline: Instant,
) -> Result<(), LoadError> {
    put_object(state, key, body, content_type, false, deadline).await
}

async fn put_object(
    state: &State,
    key: &str,
    body: Bytes,
    content_type: &str,
    if_absent: bool,
    deadline: Instant,
) -> Result<(), LoadError> {
    let bucket = state.config.staging_bucket.as_str();
    s3::put_object(
        &state.s3,
        &PutRequest {
            bucket,
            key,
            body,
            content_type,
            metadata: &[],
            if_absent,
        },
        &state.retry,
        deadline,
    )
    .await
    .map(|_| ())
    .map_err(|source| LoadError::Staging {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        source,
    })
}

fn now_micros(state: &State) -> OffsetDateTime {
    let t = (state.clock)();
    t.replace_nanosecond(t.microsecond() * 1_000).unwrap_or(t)
}

/// Run the rules over the load's objects and upload everything its SQL reads, under
/// `staging_id` (the load id plus this attempt's id).
async fn stage_load(
    state: &State,
    load_id: &str,
    staging_id: &str,
    set: &[(usize, Fetched)],
    deadline: Instant,
) -> Result<Descriptor, LoadError> {
    let cfg = &state.config;
    let rules = cfg.rules.as_ref();
    let loaded_at = now_micros(state);
    let mut stager = Stager::new(rules, loaded_at);
    let mut objects = Vec::new();
    let mut failed = Vec::new();
    // (table index or None for rejects) → uploaded (uri, size) in part order.
    let mut uploaded: BTreeMap<Option<usize>, Vec<(String, usize)>> = BTreeMap::new();

    for (_, f) in set {
        match stager.add_object(&f.key, &f.etag, &f.body) {
            Ok(stats) => objects.push(stats),
            Err(e) => failed.push((f.key.clone(), e.to_string())),
        }
        for part in stager.take_ready() {
            upload_part(state, staging_id, part, &mut uploaded, deadline).await?;
        }
    }
    let staged = stager.finish().map_err(|source| LoadError::Stage {
        key: load_id.to_owned(),
        source,
    })?;
    for part in staged.parts {
        upload_part(state, staging_id, part, &mut uploaded, deadline).await?;
    }

    // Manifests, then the SQL.
    let mut manifests: Vec<(usize, String)> = Vec::new();
    let mut rejects_manifest = None;
    for (table, entries) in &uploaded {
        let name = staging_name(state, *table);
        let key = caudal_core::keys::staging_manifest_key(&name, staging_id).map_err(|e| {
            LoadError::Descriptor {
                key: name.clone(),
                reason: e.to_string(),
            }
        })?;
        put(
            state,
            &key,
            Bytes::from(manifest(entries)),
            "application/json",
            deadline,
        )
        .await?;
        let uri = format!("s3://{}/{key}", cfg.staging_bucket);
        match table {
            Some(t) => manifests.push((*t, uri)),
            None => rejects_manifest = Some(uri),
        }
    }
    if let Some(gz) = staged.rejects_ndjson_gz {
        let key = caudal_core::keys::rejected_key(staging_id, ".gz").map_err(|e| {
            LoadError::Descriptor {
                key: staging_id.to_owned(),
                reason: e.to_string(),
            }
        })?;
        put(state, &key, Bytes::from(gz), "application/gzip", deadline).await?;
    }

    let tables = rules.tables();
    let staged_tables: Vec<StagedTable<'_>> = manifests
        .iter()
        .filter_map(|(t, uri)| {
            Some(StagedTable {
                table: tables.get(*t)?,
                manifest_uri: uri.as_str(),
                dedupe_since: staged
                    .min_received_at
                    .get(t)
                    .map(|m| *m - cfg.dedupe_window),
            })
        })
        .collect();
    let sqls = if objects.is_empty() {
        Vec::new()
    } else {
        sql::load_batch(&LoadPlan {
            schema: &cfg.schema,
            tables: &staged_tables,
            rejects_manifest_uri: rejects_manifest.as_deref(),
            copy_options: COPY_FORMAT_OPTIONS,
            copy_role_arn: &cfg.copy_role_arn,
            objects: &objects,
            rule_version: rules.version(),
            loaded_at,
            load_id,
            dedupe_window: cfg.dedupe_window,
        })?
    };
    let staged_counts = manifests
        .iter()
        .filter_map(|(t, _)| {
            Some((
                tables.get(*t)?.name.to_string(),
                staged.rows_per_table.get(t).copied().unwrap_or(0),
            ))
        })
        .collect();
    Ok(Descriptor {
        load_id: load_id.to_owned(),
        loaded_at: caudal_core::warehouse::format_timestamp(loaded_at),
        rule_version: rules.version().to_owned(),
        sqls,
        objects,
        failed,
        staged: staged_counts,
    })
}

fn staging_name(state: &State, table: Option<usize>) -> String {
    match table {
        Some(t) => state
            .config
            .rules
            .tables()
            .get(t)
            .map(|t| t.name.to_string())
            .unwrap_or_default(),
        None => REJECTS_STAGING_NAME.to_owned(),
    }
}

async fn upload_part(
    state: &State,
    staging_id: &str,
    part: Part,
    uploaded: &mut BTreeMap<Option<usize>, Vec<(String, usize)>>,
    deadline: Instant,
) -> Result<(), LoadError> {
    let name = staging_name(state, part.table);
    let key = caudal_core::keys::staging_part_key(&name, staging_id, part.number, ".gz").map_err(
        |e| LoadError::Descriptor {
            key: name.clone(),
            reason: e.to_string(),
        },
    )?;
    let len = part.bytes.len();
    put(
        state,
        &key,
        Bytes::from(part.bytes),
        "application/gzip",
        deadline,
    )
    .await?;
    uploaded
        .entry(part.table)
        .or_default()
        .push((format!("s3://{}/{key}", state.config.staging_bucket), len));
    Ok(())
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
                .get(sql::insert_statement_index(i))
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
    tracing::info!(
        load_id = %d.load_id,
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
