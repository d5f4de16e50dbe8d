//! Executing a Redshift `COPY … FROM 's3://…'` on PostgreSQL.
//!
//! The objects (one, all under a prefix, or the manifest's entries) are fetched through the
//! S3 client handed to the server, decompressed, filtered per object (IGNOREHEADER,
//! ACCEPTINVCHARS) and streamed into `COPY <table> (<cols>) FROM STDIN WITH (FORMAT csv, …)`.
//! Options PostgreSQL's COPY lacks (BLANKSASNULL, TRUNCATECOLUMNS) go through a temporary
//! text staging table and an `INSERT … SELECT` that applies them.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;
use futures_util::SinkExt;
use serde::Deserialize;
use tokio_postgres::Client;

use super::outcome::ExecError;
use super::translate::{Compression, CopyPlan, parse_s3_url, quote_ident};

/// Bytes handed to PostgreSQL per CopyData message.
const CHUNK: usize = 64 * 1024;

/// Unique names for staging tables.
static STAGE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A Redshift COPY manifest.
#[derive(Debug, Deserialize)]
struct Manifest {
    entries: Vec<ManifestEntry>,
}

#[derive(Debug, Deserialize)]
struct ManifestEntry {
    url: String,
    #[serde(default)]
    mandatory: bool,
}

/// One object to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// A missing mandatory object fails the COPY; a missing optional one is skipped.
    pub mandatory: bool,
}

/// Parses a manifest body into sources.
pub fn parse_manifest(body: &[u8]) -> Result<Vec<Source>, String> {
    let manifest: Manifest =
        serde_json::from_slice(body).map_err(|e| format!("invalid manifest JSON: {e}"))?;
    manifest
        .entries
        .into_iter()
        .map(|e| {
            let (bucket, key) = parse_s3_url(&e.url)
                .filter(|(_, k)| !k.is_empty())
                .ok_or_else(|| {
                    format!("manifest entry '{}' is not an s3://bucket/key URL", e.url)
                })?;
            Ok(Source {
                bucket,
                key,
                mandatory: e.mandatory,
            })
        })
        .collect()
}

/// Per-object byte filter: skips `ignore_header` lines, then (optionally) replaces each byte
/// of invalid UTF-8 with `replacement`, like Redshift's ACCEPTINVCHARS.
#[derive(Debug)]
pub struct ObjectFilter {
    header_left: u64,
    replacement: Option<u8>,
    carry: Vec<u8>,
}

impl ObjectFilter {
    /// A filter for one object.
    pub fn new(ignore_header: u64, replacement: Option<u8>) -> ObjectFilter {
        ObjectFilter {
            header_left: ignore_header,
            replacement,
            carry: Vec::new(),
        }
    }

    /// Filters `chunk`, appending the result to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        while self.header_left > 0 && !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    chunk = &chunk[nl + 1..];
                    self.header_left -= 1;
                }
                None => return,
            }
        }
        let Some(replacement) = self.replacement else {
            out.extend_from_slice(chunk);
            return;
        };
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        let mut rest = &data[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(_) => {
                    out.extend_from_slice(rest);
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.extend_from_slice(&rest[..valid]);
                    match e.error_len() {
                        Some(n) => {
                            out.extend(std::iter::repeat_n(replacement, n));
                            rest = &rest[valid + n..];
                        }
                        None => {
                            // An incomplete sequence at the end: wait for the next chunk.
                            self.carry = rest[valid..].to_vec();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Ends the object: an incomplete trailing sequence is invalid.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(replacement) = self.replacement {
            out.extend(std::iter::repeat_n(replacement, self.carry.len()));
        }
        self.carry.clear();
    }
}

/// A target column, resolved from the catalog.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    sql_type: String,
    is_text: bool,
    /// varchar(n)/char(n) length, if any.
    max_len: Option<i32>,
}

async fn resolve_columns(client: &Client, plan: &CopyPlan) -> Result<Vec<Column>, ExecError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                    t.typcategory::text, a.atttypmod, t.typname::text, \
                    a.attidentity::text, a.attgenerated::text \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&plan.table],
        )
        .await?;
    if rows.is_empty() {
        return Err(ExecError::Failed(format!(
            "ERROR: relation \"{}\" does not exist",
            plan.table
        )));
    }
    let all: Vec<(Column, bool)> = rows
        .iter()
        .map(|r| {
            let typname: String = r.get(4);
            let typmod: i32 = r.get(3);
            let column = Column {
                name: r.get(0),
                sql_type: r.get(1),
                is_text: r.get::<_, String>(2) == "S",
                max_len: (matches!(typname.as_str(), "varchar" | "bpchar") && typmod > 4)
                    .then_some(typmod - 4),
            };
            let implicit = !r.get::<_, String>(5).is_empty() || !r.get::<_, String>(6).is_empty();
            (column, implicit)
        })
        .collect();
    match &plan.columns {
        None => Ok(all
            .into_iter()
            // Without a column list Redshift loads every column but IDENTITY ones (unless
            // EXPLICIT_IDS); generated columns cannot be loaded at all.
            .filter(|(_, implicit)| !implicit || plan.explicit_ids)
            .map(|(c, _)| c)
            .collect()),
        Some(wanted) => wanted
            .iter()
            .map(|w| {
                all.iter()
                    .find(|(c, _)| c.name == w.name)
                    .map(|(c, _)| c.clone())
                    .ok_or_else(|| {
                        ExecError::Failed(format!(
                            "ERROR: column \"{}\" of relation \"{}\" does not exist",
                            w.name, plan.table
                        ))
                    })
            })
            .collect(),
    }
}

async fn list_sources(s3: &aws_sdk_s3::Client, plan: &CopyPlan) -> Result<Vec<Source>, ExecError> {
    let url = format!("s3://{}/{}", plan.bucket, plan.key);
    if plan.manifest {
        let body = get_object(s3, &plan.bucket, &plan.key)
            .await?
            .ok_or_else(|| {
                ExecError::Failed(format!("ERROR: manifest file {url} does not exist"))
            })?;
        let sources = parse_manifest(&body)
            .map_err(|e| ExecError::Failed(format!("ERROR: manifest {url}: {e}")))?;
        return Ok(sources);
    }
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&plan.bucket)
        .prefix(&plan.key)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error("ListObjectsV2", &url, &e))?;
        for obj in page.contents() {
            match obj.key() {
                // Zero-byte "folder" markers are not data.
                Some(k) if !k.ends_with('/') => keys.push(k.to_string()),
                _ => {}
            }
        }
    }
    if keys.is_empty() {
        return Err(ExecError::Failed(format!(
            "ERROR: The specified S3 prefix '{}' does not exist (no objects under {url})",
            plan.key
        )));
    }
    Ok(keys
        .into_iter()
        .map(|key| Source {
            bucket: plan.bucket.clone(),
            key,
            // Listed a moment ago: vanishing now is an error.
            mandatory: true,
        })
        .collect())
}

fn s3_error<E: ProvideErrorMetadata>(op: &str, url: &str, e: &E) -> ExecError {
    ExecError::Failed(format!(
        "ERROR: S3 {op} {url} failed: {}: {}",
        e.code().unwrap_or("unknown"),
        e.message().unwrap_or("no message")
    ))
}

/// The object's bytes, or `None` when it does not exist.
async fn get_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Bytes>, ExecError> {
    let url = format!("s3://{bucket}/{key}");
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let body = out.body.collect().await.map_err(|e| {
                ExecError::Failed(format!("ERROR: reading S3 object {url} failed: {e}"))
            })?;
            Ok(Some(body.into_bytes()))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
        Err(e) => Err(s3_error("GetObject", &url, &e)),
    }
}

fn decoder<'a>(
    compression: Option<Compression>,
    bytes: &'a [u8],
    url: &str,
) -> Result<Box<dyn Read + Send + 'a>, ExecError> {
    Ok(match compression {
        None => Box::new(bytes),
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        Some(Compression::Zstd) => Box::new(
            zstd::stream::read::Decoder::new(bytes)
                .map_err(|e| ExecError::Failed(format!("ERROR: zstd decoder for {url}: {e}")))?,
        ),
    })
}

/// Redshift reads S3 in its own region unless COPY says `REGION '…'`: a bucket elsewhere
/// without it — or with the wrong region — fails with S3's redirect. The warehouse's region is
/// the region of the S3 client the server reads with.
struct BucketRegions<'a> {
    s3: &'a aws_sdk_s3::Client,
    expected: String,
    checked: std::collections::BTreeSet<String>,
}

impl<'a> BucketRegions<'a> {
    fn new(s3: &'a aws_sdk_s3::Client, plan: &CopyPlan) -> Self {
        let warehouse = s3
            .config()
            .region()
            .map_or_else(|| "us-east-1".to_owned(), |r| r.as_ref().to_owned());
        BucketRegions {
            s3,
            expected: plan.region.clone().unwrap_or(warehouse),
            checked: std::collections::BTreeSet::new(),
        }
    }

    async fn check(&mut self, bucket: &str) -> Result<(), ExecError> {
        if self.checked.contains(bucket) {
            return Ok(());
        }
        let url = format!("s3://{bucket}");
        let out = self
            .s3
            .get_bucket_location()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| s3_error("GetBucketLocation", &url, &e))?;
        // S3 answers no constraint for us-east-1 and the legacy `EU` for eu-west-1.
        let region = match out.location_constraint().map(|c| c.as_str()) {
            None | Some("") => "us-east-1",
            Some("EU") => "eu-west-1",
            Some(r) => r,
        };
        if region != self.expected {
            return Err(ExecError::Failed(format!(
                "ERROR: S3ServiceException:The bucket you are attempting to access must be \
                 addressed using the specified endpoint. Please send all future requests to \
                 this endpoint.,Status 301,Error PermanentRedirect,Bucket {bucket} is in \
                 {region}, COPY reads {} (use REGION '{region}')",
                self.expected
            )));
        }
        self.checked.insert(bucket.to_owned());
        Ok(())
    }
}

/// Runs the COPY; returns the number of rows loaded.
pub async fn run_copy(
    client: &Client,
    s3: &aws_sdk_s3::Client,
    plan: &CopyPlan,
    abort: &Arc<AtomicBool>,
) -> Result<u64, ExecError> {
    let columns = resolve_columns(client, plan).await?;
    let mut regions = BucketRegions::new(s3, plan);
    regions.check(&plan.bucket).await?;
    let sources = list_sources(s3, plan).await?;
    for source in &sources {
        regions.check(&source.bucket).await?;
    }
    let stage = plan.needs_staging().then(|| {
        format!(
            "caudal_copy_stage_{}",
            STAGE_SEQ.fetch_add(1, Ordering::Relaxed)
        )
    });
    // The target's column list, for the direct COPY or the insert from the stage.
    let column_list = columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let copy_sql = copy_statement(client, plan, &columns, &column_list, stage.as_deref()).await?;
    let sink = client.copy_in::<_, Bytes>(&copy_sql).await?;
    let mut sink = std::pin::pin!(sink);
    stream_objects(&mut sink, s3, plan, &sources, abort).await?;
    let copied = sink.as_mut().finish().await?;
    match stage {
        None => Ok(copied),
        Some(stage) => insert_from_stage(client, plan, &columns, &column_list, &stage).await,
    }
}

/// The `COPY … FROM STDIN` to run: into the target, or into a new text staging table `stage`.
async fn copy_statement(
    client: &Client,
    plan: &CopyPlan,
    columns: &[Column],
    column_list: &str,
    stage: Option<&str>,
) -> Result<String, ExecError> {
    let text_cols = |names: &dyn Fn(usize, &Column) -> String| -> Vec<String> {
        columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_text)
            .map(|(i, c)| names(i, c))
            .collect()
    };
    Ok(match stage {
        None => format!(
            "COPY {} ({}) FROM STDIN WITH ({})",
            plan.table,
            column_list,
            plan.pg_options(&text_cols(&|_, c| quote_ident(&c.name)))
        ),
        Some(stage) => {
            let defs: Vec<String> = (1..=columns.len()).map(|i| format!("c{i} text")).collect();
            client
                .batch_execute(&format!("CREATE TEMP TABLE {stage} ({})", defs.join(", ")))
                .await?;
            format!(
                "COPY {stage} FROM STDIN WITH ({})",
                plan.pg_options(&text_cols(&|i, _| format!("c{}", i + 1)))
            )
        }
    })
}

/// Streams every source object, decompressed and filtered, into `sink` in chunks of about
/// [`CHUNK`] bytes.
async fn stream_objects(
    sink: &mut std::pin::Pin<&mut tokio_postgres::CopyInSink<Bytes>>,
    s3: &aws_sdk_s3::Client,
    plan: &CopyPlan,
    sources: &[Source],
    abort: &Arc<AtomicBool>,
) -> Result<(), ExecError> {
    let mut out = Vec::with_capacity(CHUNK * 2);
    let mut buf = vec![0u8; CHUNK];
    for source in sources {
        let url = format!("s3://{}/{}", source.bucket, source.key);
        let Some(body) = get_object(s3, &source.bucket, &source.key).await? else {
            if source.mandatory {
                return Err(ExecError::Failed(format!(
                    "ERROR: S3 object {url} is a mandatory manifest entry but does not exist"
                )));
            }
            tracing::info!(%url, "copy_optional_entry_missing");
            continue;
        };
        let mut reader = decoder(plan.compression, &body, &url)?;
        let mut filter = ObjectFilter::new(plan.ignore_header, plan.accept_inv_chars);
        let mut last = None;
        loop {
            if abort.load(Ordering::SeqCst) {
                // Dropping the sink without finishing aborts the COPY in PostgreSQL.
                return Err(ExecError::Aborted);
            }
            let n = reader.read(&mut buf).map_err(|e| {
                ExecError::Failed(format!("ERROR: decompressing {url} failed: {e}"))
            })?;
            if n == 0 {
                break;
            }
            let before = out.len();
            filter.push(&buf[..n], &mut out);
            if out.len() > before {
                last = out.last().copied();
            }
            if out.len() >= CHUNK {
                sink.send(Bytes::from(std::mem::take(&mut out))).await?;
            }
        }
        let before = out.len();
        filter.finish(&mut out);
        if out.len() > before {
            last = out.last().copied();
        }
        // Objects are separate files: a last line without a newline must not run into the
        // first line of the next object.
        if last.is_some_and(|b| b != b'\n') {
            out.push(b'\n');
        }
    }
    if !out.is_empty() {
        sink.send(Bytes::from(out)).await?;
    }
    Ok(())
}

/// Moves the staged rows into the target, applying BLANKSASNULL and TRUNCATECOLUMNS.
async fn insert_from_stage(
    client: &Client,
    plan: &CopyPlan,
    columns: &[Column],
    column_list: &str,
    stage: &str,
) -> Result<u64, ExecError> {
    let exprs: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut e = format!("c{}", i + 1);
            if c.is_text && plan.blanks_as_null {
                e = format!("CASE WHEN btrim({e}, E' \\t\\r\\n') = '' THEN NULL ELSE {e} END");
            }
            if let (true, Some(n)) = (c.is_text && plan.truncate_columns, c.max_len) {
                e = format!("left({e}, {n})");
            }
            if !c.is_text {
                // Redshift loads an empty field of a non-character column as NULL, whatever
                // the NULL AS string.
                e = format!("NULLIF({e}, '')");
            }
            format!("({e})::{}", c.sql_type)
        })
        .collect();
    let insert = format!(
        "INSERT INTO {} ({}) SELECT {} FROM {stage}",
        plan.table,
        column_list,
        exprs.join(", ")
    );
    let inserted = client.execute(&insert, &[]).await?;
    client.batch_execute(&format!("DROP TABLE {stage}")).await?;
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(filter: &mut ObjectFilter, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            filter.push(c, &mut out);
        }
        filter.finish(&mut out);
        out
    }

    #[test]
    fn header_lines_are_skipped_across_chunks() {
        let mut f = ObjectFilter::new(2, None);
        assert_eq!(
            run(&mut f, &[b"h1,h", b"2\nh3\nrow1\n", b"row2\n"]),
            b"row1\nrow2\n"
        );
        let mut f = ObjectFilter::new(1, None);
        assert_eq!(run(&mut f, &[b"only header no newline"]), b"");
    }

    #[test]
    fn invalid_utf8_is_replaced_per_byte_even_when_split() {
        let mut f = ObjectFilter::new(0, Some(b'?'));
        // "é" split across chunks stays intact; 0xFF and a truncated tail are replaced.
        let out = run(&mut f, &[b"a\xC3", b"\xA9b\xFFc\xE2\x82"]);
        assert_eq!(out, "aéb?c??".as_bytes());
        let mut f = ObjectFilter::new(0, None);
        assert_eq!(
            run(&mut f, &[b"\xFF"]),
            b"\xFF",
            "without the option bytes pass through"
        );
    }

    #[test]
    fn manifest_parsing() {
        let m =
            br#"{"entries":[{"url":"s3://b/k1.gz","mandatory":true},{"url":"s3://b/d/k2.gz"}]}"#;
        let s = parse_manifest(m).expect("valid");
        assert_eq!(
            s,
            vec![
                Source {
                    bucket: "b".into(),
                    key: "k1.gz".into(),
                    mandatory: true
                },
                Source {
                    bucket: "b".into(),
                    key: "d/k2.gz".into(),
                    mandatory: false
                },
            ]
        );
        assert!(parse_manifest(b"{}").is_err());
        assert!(
            parse_manifest(br#"{"entries":[{"url":"https://x/y"}]}"#)
                .expect_err("bad url")
                .contains("not an s3://")
        );
    }
}
