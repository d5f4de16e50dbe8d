//! `caudal smoke`: a few tagged test events through the stack's endpoint (signed as its
//! `AuthMode` requires), followed through the stream and the raw archive until the warehouse
//! holds them, with the ingest → queryable latency of each.
//!
//! The events are `{"type": "caudal_smoke", "id": "caudal-smoke-<run>-<n>", "ts": …,
//! "caudal_smoke": {"run": …}}`: an event type the rules do not know, so they land where the
//! rules put unknown types (the catch-all table of the shipped rules, or a reject with code
//! `unknown_type`); dashboards exclude `event_type = 'caudal_smoke'`. How they are found needs
//! no knowledge of the rules: their records are read back from the stream (shard and sequence
//! number), the raw object whose range covers each is found in the archive, and an event is
//! queryable once that object's ledger row exists (it is written in the transaction that loads
//! the object's rows and rejects). `--table` also waits for the rows in a table.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use caudal_core::keys::{RAW_PREFIX, parse_batch_key};
use caudal_core::rules::Ident;
use serde::Serialize;
use time::OffsetDateTime;

use crate::archive::{self, hour_prefixes};
use caudal_core::stream::seq_in_range;

use crate::stream::{self, From};
use crate::warehouse::in_params;
use crate::{Ctx, OpError};

/// How to smoke-test.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events to send.
    pub events: usize,
    /// How long to wait until they are queryable.
    pub timeout: Duration,
    /// Bearer token for `AuthMode=JWT`.
    pub token: Option<String>,
    /// Also wait until the events are rows of this table.
    pub table: Option<Ident>,
}

/// One smoke event's way through the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Trace {
    /// Event id.
    pub id: String,
    /// Where its record is: (shard, sequence number).
    pub record: Option<(String, String)>,
    /// The raw object holding it.
    pub raw_key: Option<String>,
    /// Milliseconds from the API's answer to the load's commit (the ledger's `loaded_at`).
    pub latency_ms: Option<i64>,
}

/// What `caudal smoke` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run's id (in every event id).
    pub run: String,
    /// The API's status code.
    pub status: u16,
    /// Events the API accepted.
    pub accepted: usize,
    /// Per event.
    pub events: Vec<Trace>,
    /// Rows found in `--table`.
    pub rows_in_table: Option<usize>,
    /// Every event queryable within the time given.
    pub passed: bool,
    /// What went wrong, when it did.
    pub failure: Option<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "smoke run {}: HTTP {}, {} of {} accepted",
            self.run,
            self.status,
            self.accepted,
            self.events.len()
        )?;
        for t in &self.events {
            let rec = t
                .record
                .as_ref()
                .map_or("not in the stream".to_owned(), |(s, q)| format!("{s}/{q}"));
            let lat = t.latency_ms.map_or("not queryable".to_owned(), |ms| {
                format!("queryable after {ms} ms")
            });
            writeln!(
                f,
                "  {} → {rec} → {} → {lat}",
                t.id,
                t.raw_key.as_deref().unwrap_or("-")
            )?;
        }
        let mut lat: Vec<i64> = self.events.iter().filter_map(|t| t.latency_ms).collect();
        lat.sort_unstable();
        if let (Some(min), Some(max)) = (lat.first(), lat.last()) {
            writeln!(
                f,
                "ingest → queryable: min {min} ms, median {} ms, max {max} ms",
                lat[lat.len() / 2]
            )?;
        }
        if let Some(n) = self.rows_in_table {
            writeln!(f, "rows in the table asked for: {n}")?;
        }
        match (&self.failure, self.passed) {
            (_, true) => write!(f, "PASSED"),
            (Some(why), false) => write!(f, "FAILED: {why}"),
            (None, false) => write!(f, "FAILED"),
        }
    }
}

/// The smoke events' body (a JSON array) and ids.
pub fn events(run: &str, n: usize, now: OffsetDateTime) -> (String, Vec<String>) {
    let ts = caudal_core::envelope::format_timestamp(now);
    let ids: Vec<String> = (0..n).map(|i| format!("caudal-smoke-{run}-{i}")).collect();
    let body: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({"type": "caudal_smoke", "id": id, "ts": ts, "caudal_smoke": {"run": run}}))
        .collect();
    (serde_json::Value::Array(body).to_string(), ids)
}

/// The headers that sign `body` for `url` with SigV4 (service `execute-api`).
pub fn sigv4_headers(
    url: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    credentials: aws_credential_types::Credentials,
    region: &str,
    at: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = credentials.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Runs the smoke test.
pub async fn smoke(
    ctx: &Ctx,
    sdk: &aws_config::SdkConfig,
    opts: &Options,
) -> Result<Report, OpError> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let sent_at = OffsetDateTime::now_utc();
    let (body, ids) = events(&run, opts.events.max(1), sent_at);
    let url = format!("{}v1/events", ctx.resources.api_url);
    let mut report = Report {
        run: run.clone(),
        events: ids
            .iter()
            .map(|id| Trace {
                id: id.clone(),
                ..Trace::default()
            })
            .collect(),
        ..Report::default()
    };
    let mut req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("user-agent", "caudal-smoke/1");
    match ctx.resources.auth_mode.as_deref().unwrap_or("NONE") {
        "NONE" => {}
        "JWT" => {
            let token = opts.token.as_deref().ok_or_else(|| {
                OpError::Smoke("the stack's AuthMode is JWT: pass --token <bearer token>".into())
            })?;
            req = req.bearer_auth(token);
        }
        "IAM" => {
            let provider = sdk
                .credentials_provider()
                .ok_or_else(|| OpError::Smoke("no AWS credentials to sign with".into()))?;
            let creds = provider
                .provide_credentials()
                .await
                .map_err(|e| OpError::Smoke(format!("AWS credentials: {e}")))?;
            let host = url
                .split("://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or_default()
                .to_owned();
            let signed = sigv4_headers(
                &url,
                body.as_bytes(),
                &[("content-type", "application/json"), ("host", &host)],
                creds,
                &ctx.resources.region,
                SystemTime::now(),
            )
            .map_err(OpError::Smoke)?;
            for (k, v) in signed {
                req = req.header(k, v);
            }
        }
        other => return Err(OpError::Smoke(format!("unknown AuthMode {other:?}"))),
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| OpError::Smoke(format!("POST {url}: {e}")))?;
    report.status = resp.status().as_u16();
    let receipt: serde_json::Value = resp.json().await.unwrap_or_default();
    report.accepted = receipt["results"].as_array().map_or(0, |r| {
        r.iter().filter(|i| i["status"] == "accepted").count()
    });
    if report.accepted != ids.len() {
        report.failure = Some(format!("the API did not accept every event: {receipt}"));
        return Ok(report);
    }
    let deadline = tokio::time::Instant::now() + opts.timeout;
    follow(ctx, &mut report, sent_at, deadline).await?;
    if let Some(table) = &opts.table {
        report.rows_in_table = Some(rows_in(ctx, table, &ids, deadline).await?);
    }
    let all = report.events.iter().all(|t| t.latency_ms.is_some());
    let rows_ok = report.rows_in_table.is_none_or(|n| n == ids.len());
    report.passed = all && rows_ok;
    if !all {
        report.failure = Some(format!("not queryable within {:?}", opts.timeout));
    } else if !rows_ok {
        report.failure = Some("not every event is a row of the table asked for".into());
    }
    Ok(report)
}

/// Follows the events until each is queryable or `deadline`.
async fn follow(
    ctx: &Ctx,
    report: &mut Report,
    sent_at: OffsetDateTime,
    deadline: tokio::time::Instant,
) -> Result<(), OpError> {
    let since = sent_at - time::Duration::seconds(30);
    let shards = stream::shards(&ctx.clients.kinesis, &ctx.resources.stream).await?;
    loop {
        // 1. The records.
        if report.events.iter().any(|t| t.record.is_none()) {
            for shard in &shards {
                let mut found: Vec<(String, String)> = Vec::new();
                stream::read(
                    &ctx.clients.kinesis,
                    &ctx.resources.stream,
                    shard,
                    &From::Time(since),
                    |_| false,
                    |r| {
                        let text = String::from_utf8_lossy(&r.data);
                        for t in &report.events {
                            if t.record.is_none() && text.contains(&format!("\"{}\"", t.id)) {
                                found.push((t.id.clone(), r.seq.clone()));
                            }
                        }
                    },
                )
                .await?;
                for (id, seq) in found {
                    if let Some(t) = report.events.iter_mut().find(|t| t.id == id) {
                        t.record = Some((shard.clone(), seq));
                    }
                }
            }
        }
        // 2. Their raw objects.
        if report
            .events
            .iter()
            .any(|t| t.record.is_some() && t.raw_key.is_none())
        {
            let listed = archive::list(
                &ctx.clients.s3,
                &ctx.resources.raw_bucket,
                &hour_prefixes(RAW_PREFIX, since, OffsetDateTime::now_utc()),
            )
            .await?;
            for t in report.events.iter_mut().filter(|t| t.raw_key.is_none()) {
                let Some((shard, seq)) = &t.record else {
                    continue;
                };
                t.raw_key = listed
                    .iter()
                    .find(|o| {
                        parse_batch_key(&o.key).is_some_and(|k| {
                            &k.shard_id == shard
                                && k.region == ctx.resources.raw_key_region
                                && seq_in_range(seq, &k.first_seq, &k.last_seq)
                        })
                    })
                    .map(|o| o.key.clone());
            }
        }
        // 3. Their loads.
        let keys: Vec<String> = report
            .events
            .iter()
            .filter(|t| t.latency_ms.is_none())
            .filter_map(|t| t.raw_key.clone())
            .collect();
        if !keys.is_empty() {
            let loaded = loaded_at_ms(ctx, &keys).await?;
            let sent_ms = (sent_at.unix_timestamp_nanos() / 1_000_000) as i64;
            for t in report.events.iter_mut() {
                if let Some(ms) = t.raw_key.as_ref().and_then(|k| loaded.get(k)) {
                    t.latency_ms = Some(ms - sent_ms);
                }
            }
        }
        if report.events.iter().all(|t| t.latency_ms.is_some())
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The ledger's `loaded_at` (epoch ms) of `keys`.
async fn loaded_at_ms(ctx: &Ctx, keys: &[String]) -> Result<BTreeMap<String, i64>, OpError> {
    let (names, params) = in_params("k", keys);
    let sql = format!(
        "SELECT raw_key, CAST(EXTRACT(EPOCH FROM loaded_at) * 1000 AS BIGINT) FROM {}.\"caudal_ledger\" \
         WHERE raw_key IN ({})",
        ctx.warehouse.schema.quoted(),
        names
    );
    Ok(ctx
        .warehouse
        .rows(&sql, &params)
        .await?
        .iter()
        .filter_map(|r| Some((r.first()?.as_str()?.to_owned(), r.get(1)?.as_i64()?)))
        .collect())
}

/// Rows of `table` with the smoke ids (waiting until all are there or `deadline`).
async fn rows_in(
    ctx: &Ctx,
    table: &Ident,
    ids: &[String],
    deadline: tokio::time::Instant,
) -> Result<usize, OpError> {
    let (names, params) = in_params("e", ids);
    let sql = format!(
        "SELECT COUNT(*) FROM {}.{} WHERE event_id IN ({})",
        ctx.warehouse.schema.quoted(),
        table.quoted(),
        names
    );
    loop {
        let n = ctx
            .warehouse
            .rows(&sql, &params)
            .await?
            .first()
            .and_then(|r| r.first()?.as_i64())
            .unwrap_or(0) as usize;
        if n >= ids.len() || tokio::time::Instant::now() >= deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_events_are_tagged_and_unique() {
        let (body, ids) = events("r1", 3, time::macros::datetime!(2026-12-03 08:00 UTC));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            ids,
            [
                "caudal-smoke-r1-0",
                "caudal-smoke-r1-1",
                "caudal-smoke-r1-2"
            ]
        );
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[1]["type"], "caudal_smoke");
        assert_eq!(v[1]["id"], "caudal-smoke-r1-1");
        assert_eq!(v[1]["caudal_smoke"]["run"], "r1");
        assert_eq!(v[1]["ts"], "2026-12-03T08:00:00.000Z");
    }

    #[test]
    fn sigv4_signs_for_execute_api_in_the_region() {
        let creds = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("tok".into()),
            None,
            "test",
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_748_800); // 2025-12-03T08:00:00Z
        let h = sigv4_headers(
            "https://abc.execute-api.eu-west-1.amazonaws.com/v1/events",
            b"[]",
            &[
                ("content-type", "application/json"),
                ("host", "abc.execute-api.eu-west-1.amazonaws.com"),
            ],
            creds,
            "eu-west-1",
            at,
        )
        .unwrap();
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let auth = get("authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251203/eu-west-1/execute-api/aws4_request"), "{auth}");
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{auth}"
        );
        assert_eq!(get("x-amz-date"), Some("20251203T080000Z"));
        assert_eq!(get("x-amz-security-token"), Some("tok"));
    }
}
