//! Staging a load in S3: the rules over the load's raw objects, the CSV parts, the
//! manifests and rejects under an attempt-specific prefix, and the load [`Descriptor`] written
//! with a conditional put (or the earlier attempt's descriptor found and reused), so a retry
//! re-submits byte-identical SQL.

use std::collections::BTreeMap;

use bytes::Bytes;
use caudal_aws::s3::{self, PutRequest, lost_conditional_write};
use caudal_core::rules::{COPY_FORMAT_OPTIONS, STAGING_CODEC};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::State;
use crate::error::LoadError;
use crate::latency::Arrivals;
use crate::sql::{self, LoadPlan, ObjectStats, StagedTable};
use crate::stage::{Part, REJECTS_CODEC, Staged, Stager, manifest};

/// Name of the rejects folder under `staging/` (the rejects table).
const REJECTS_STAGING_NAME: &str = sql::REJECTS_TABLE;

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
    /// Statements before the first table's ([`sql::leading_statements`]): 1 for a load, more
    /// for a reprocess (its deletes). Descriptors written before reprocessing existed have 1.
    #[serde(default = "one")]
    pub leading_statements: usize,
    /// When the staged rows' events were received, for the latency metric (absent in
    /// descriptors written before it existed).
    #[serde(default)]
    pub arrivals: Arrivals,
}

fn one() -> usize {
    sql::LEADING_STATEMENTS
}

/// A raw object read from S3, ready to stage.
pub(super) struct Fetched {
    pub(super) key: String,
    pub(super) etag: String,
    pub(super) body: Bytes,
}

/// Find the load's descriptor in S3, or stage the load and write it.
pub(super) async fn descriptor_for(
    state: &State,
    load_id: &str,
    set: &[(usize, Fetched)],
    reprocess: bool,
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
    let d = stage_load(state, load_id, &staging_id, set, reprocess, deadline).await?;
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

/// Where a load's uploaded parts are: (table index, or `None` for rejects) → (uri, size) in
/// part order.
type Uploaded = BTreeMap<Option<usize>, Vec<(String, usize)>>;

/// Run the rules over the load's objects and upload everything its SQL reads, under
/// `staging_id` (the load id plus this attempt's id). A `reprocess` replaces an earlier rule
/// version's result ([`LoadPlan::replace`]).
async fn stage_load(
    state: &State,
    load_id: &str,
    staging_id: &str,
    set: &[(usize, Fetched)],
    reprocess: bool,
    deadline: Instant,
) -> Result<Descriptor, LoadError> {
    let rules = state.config.rules.as_ref();
    let loaded_at = now_micros(state);
    let mut uploaded = Uploaded::new();
    let (objects, failed, staged) = stage_objects(
        state,
        load_id,
        staging_id,
        set,
        loaded_at,
        &mut uploaded,
        deadline,
    )
    .await?;

    // Manifests, then the SQL.
    let (manifests, rejects_manifest) =
        put_manifests(state, staging_id, &uploaded, deadline).await?;
    if let Some(gz) = staged.rejects_ndjson_gz {
        let key =
            caudal_core::keys::rejected_key(staging_id, REJECTS_CODEC.suffix()).map_err(|e| {
                LoadError::Descriptor {
                    key: staging_id.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        put(
            state,
            &key,
            Bytes::from(gz),
            REJECTS_CODEC.content_type(),
            deadline,
        )
        .await?;
    }
    let sqls = if objects.is_empty() {
        Vec::new()
    } else {
        load_sqls(
            state,
            &LoadSql {
                load_id,
                loaded_at,
                objects: &objects,
                manifests: &manifests,
                rejects_manifest: rejects_manifest.as_deref(),
                min_received_at: &staged.min_received_at,
                reprocess,
            },
        )?
    };
    let tables = rules.tables();
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
        leading_statements: sql::leading_statements(reprocess.then_some(tables.len())),
        // A reprocess reloads old events: their latency says nothing about the pipeline.
        arrivals: if reprocess {
            Arrivals::default()
        } else {
            staged.arrivals.clone()
        },
    })
}

/// The rules over each object of the set, parts uploaded as soon as they are ready (recorded
/// in `uploaded`): the staged objects' counts, the objects that could not be staged (key,
/// reason), and what the stager has left (last parts already uploaded).
async fn stage_objects(
    state: &State,
    load_id: &str,
    staging_id: &str,
    set: &[(usize, Fetched)],
    loaded_at: OffsetDateTime,
    uploaded: &mut Uploaded,
    deadline: Instant,
) -> Result<(Vec<ObjectStats>, Vec<(String, String)>, Staged), LoadError> {
    let mut stager = Stager::new(state.config.rules.as_ref(), loaded_at);
    let mut objects = Vec::new();
    let mut failed = Vec::new();
    for (_, f) in set {
        match stager.add_object(&f.key, &f.etag, &f.body) {
            Ok(stats) => objects.push(stats),
            Err(e) => failed.push((f.key.clone(), e.to_string())),
        }
        for part in stager.take_ready() {
            upload_part(state, staging_id, part, uploaded, deadline).await?;
        }
    }
    let mut staged = stager.finish().map_err(|source| LoadError::Stage {
        key: load_id.to_owned(),
        source,
    })?;
    for part in std::mem::take(&mut staged.parts) {
        upload_part(state, staging_id, part, uploaded, deadline).await?;
    }
    Ok((objects, failed, staged))
}

/// One manifest per staged table and one for the rejects: (table index, manifest URI) in
/// table order, and the rejects manifest's URI.
async fn put_manifests(
    state: &State,
    staging_id: &str,
    uploaded: &Uploaded,
    deadline: Instant,
) -> Result<(Vec<(usize, String)>, Option<String>), LoadError> {
    let mut manifests: Vec<(usize, String)> = Vec::new();
    let mut rejects_manifest = None;
    for (table, entries) in uploaded {
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
        let uri = format!("s3://{}/{key}", state.config.staging_bucket);
        match table {
            Some(t) => manifests.push((*t, uri)),
            None => rejects_manifest = Some(uri),
        }
    }
    Ok((manifests, rejects_manifest))
}

/// What the load's SQL is built from, besides the configuration.
struct LoadSql<'a> {
    load_id: &'a str,
    loaded_at: OffsetDateTime,
    objects: &'a [ObjectStats],
    manifests: &'a [(usize, String)],
    rejects_manifest: Option<&'a str>,
    min_received_at: &'a BTreeMap<usize, OffsetDateTime>,
    reprocess: bool,
}

/// The load's batch of statements ([`sql::load_batch`]).
fn load_sqls(state: &State, l: &LoadSql<'_>) -> Result<Vec<String>, LoadError> {
    let cfg = &state.config;
    let rules = cfg.rules.as_ref();
    let tables = rules.tables();
    let staged_tables: Vec<StagedTable<'_>> = l
        .manifests
        .iter()
        .filter_map(|(t, uri)| {
            Some(StagedTable {
                table: tables.get(*t)?,
                manifest_uri: uri.as_str(),
                dedupe_since: l.min_received_at.get(t).map(|m| *m - cfg.dedupe_window),
            })
        })
        .collect();
    let names: Vec<_> = tables.iter().map(|t| t.name.clone()).collect();
    Ok(sql::load_batch(&LoadPlan {
        schema: &cfg.schema,
        tables: &staged_tables,
        rejects_manifest_uri: l.rejects_manifest,
        copy_options: COPY_FORMAT_OPTIONS,
        copy_role_arn: &cfg.copy_role_arn,
        copy_region: cfg.staging_region.as_deref(),
        objects: l.objects,
        rule_version: rules.version(),
        loaded_at: l.loaded_at,
        load_id: l.load_id,
        dedupe_window: cfg.dedupe_window,
        replace: l.reprocess.then_some(names.as_slice()),
    })?)
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
    uploaded: &mut Uploaded,
    deadline: Instant,
) -> Result<(), LoadError> {
    let name = staging_name(state, part.table);
    let suffix = STAGING_CODEC.suffix();
    let key = caudal_core::keys::staging_part_key(&name, staging_id, part.number, suffix).map_err(
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
        STAGING_CODEC.content_type(),
        deadline,
    )
    .await?;
    uploaded
        .entry(part.table)
        .or_default()
        .push((format!("s3://{}/{key}", state.config.staging_bucket), len));
    Ok(())
}
