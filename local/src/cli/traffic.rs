//! Sample traffic for `up`: the repository's own example requests and sample events, posted
//! through the local HTTP API like a client would.
//!
//! Sources (whatever exists, so new samples are picked up without code changes):
//! - `events/ingest-api-*.json`: API Gateway events of the ingest function's tests; every one
//!   that is a `POST /v1/events` is replayed with its body, Content-Type and Content-Encoding
//!   (JSON arrays, NDJSON, gzip, invalid items, unparseable bodies — and, because several of
//!   them carry the same event ids, duplicates);
//! - `rules/samples/*.ndjson` files of client events (files of raw-archive lines are skipped):
//!   posted once as NDJSON and once gzip-compressed (the second copy is all duplicates).

use std::path::Path;

use base64::Engine as _;
use caudal_core::codec::Codec;
use serde_json::Value;

/// How the gzip copies of the samples are compressed (flate2's default level).
const GZIP: Codec = Codec::Gzip { level: 6 };

/// A request to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRequest {
    /// Where it came from.
    pub name: String,
    /// Path (with query).
    pub path: String,
    /// Content-Type, if any.
    pub content_type: Option<String>,
    /// Content-Encoding, if any.
    pub content_encoding: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// What the API answered, summed over requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficSummary {
    /// Requests sent.
    pub requests: u64,
    /// Responses per status code.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Events accepted (from the receipts).
    pub accepted: u64,
    /// Events rejected (from the receipts).
    pub rejected: u64,
    /// Events to retry (from the receipts).
    pub retry: u64,
}

/// Why samples could not be read or sent. Reading errors are permanent; sending errors may
/// be retried.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// A sample file could not be read.
    #[error("reading {path}: {message}")]
    Read {
        /// File.
        path: String,
        /// Why.
        message: String,
    },
    /// The HTTP request failed.
    #[error("sending {name}: {source}")]
    Send {
        /// Sample name.
        name: String,
        /// The client error.
        source: reqwest::Error,
    },
}

impl TrafficError {
    /// Sending may be retried; a bad sample file will not get better.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TrafficError::Send { .. })
    }
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> TrafficError {
    TrafficError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn sorted_files(dir: &Path, prefix: &str, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    files.sort();
    files
}

/// The sample requests in `events_dir` (`ingest-api-*.json`) and `samples_dir` (`*.ndjson`).
// Long on purpose: the two sample sources side by side, each a short block.
pub fn sample_requests(
    events_dir: &Path,
    samples_dir: &Path,
) -> Result<Vec<SampleRequest>, TrafficError> {
    let mut out = Vec::new();
    for path in sorted_files(events_dir, "ingest-api-", ".json") {
        let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
        let ev: Value = serde_json::from_str(&text).map_err(|e| read_err(&path, e))?;
        let (method, raw_path) = match ev.get("routeKey").and_then(Value::as_str) {
            Some(rk) => {
                let mut parts = rk.splitn(2, ' ');
                (
                    parts.next().unwrap_or_default().to_owned(),
                    ev["rawPath"].as_str().unwrap_or_default().to_owned(),
                )
            }
            None => (
                ev["httpMethod"].as_str().unwrap_or_default().to_owned(),
                ev["path"].as_str().unwrap_or_default().to_owned(),
            ),
        };
        if method != "POST" || raw_path != "/v1/events" {
            continue;
        }
        let header = |name: &str| -> Option<String> {
            ev.get("headers")?
                .as_object()?
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        };
        let body_text = ev.get("body").and_then(Value::as_str).unwrap_or_default();
        let body = if ev.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
            base64::engine::general_purpose::STANDARD
                .decode(body_text)
                .map_err(|e| read_err(&path, e))?
        } else {
            body_text.as_bytes().to_vec()
        };
        out.push(SampleRequest {
            name: path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned(),
            path: "/v1/events".to_owned(),
            content_type: header("content-type"),
            content_encoding: header("content-encoding"),
            body,
        });
    }
    for path in sorted_files(samples_dir, "", ".ndjson") {
        let body = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
        let first = body
            .split(|b| *b == b'\n')
            .find(|l| !l.is_empty())
            .unwrap_or_default();
        if caudal_core::rules::is_raw_line(first) {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        out.push(SampleRequest {
            name: name.clone(),
            path: "/v1/events".to_owned(),
            content_type: Some("application/x-ndjson".to_owned()),
            content_encoding: None,
            body: body.clone(),
        });
        out.push(SampleRequest {
            name: format!("{name} (gzip)"),
            path: "/v1/events".to_owned(),
            content_type: Some("application/x-ndjson".to_owned()),
            content_encoding: Some("gzip".to_owned()),
            // Compressing into memory cannot fail.
            body: GZIP.compress(&body).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Attempts per request: a request answered 5xx without a receipt (the function failed or was
/// killed before answering) is sent again, as a client SDK would.
const SEND_ATTEMPTS: u32 = 6;

/// Posts `requests` to `api_url` and sums the receipts. A 5xx answer without a receipt is
/// retried (up to 6 attempts, with backoff): sample events that carry no id get a new
/// one at every attempt, so an event stored before such a failure may be loaded twice — as for
/// any client that does not set ids.
pub async fn send(
    api_url: &str,
    requests: &[SampleRequest],
) -> Result<TrafficSummary, TrafficError> {
    let client = reqwest::Client::new();
    let mut s = TrafficSummary::default();
    for r in requests {
        let mut attempt = 0;
        let (status, body) = loop {
            attempt += 1;
            let mut req = client
                .post(format!("{api_url}{}", r.path))
                .body(r.body.clone());
            if let Some(ct) = &r.content_type {
                req = req.header("content-type", ct);
            }
            if let Some(ce) = &r.content_encoding {
                req = req.header("content-encoding", ce);
            }
            let sent = req.send().await;
            let resp = match sent {
                Ok(resp) => resp,
                Err(source) if attempt >= SEND_ATTEMPTS => {
                    return Err(TrafficError::Send {
                        name: r.name.clone(),
                        source,
                    });
                }
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status >= 500 && body.get("results").is_none() && attempt < SEND_ATTEMPTS {
                tracing::info!(sample = %r.name, status, attempt, "sample_resent");
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                continue;
            }
            break (status, body);
        };
        s.requests += 1;
        *s.statuses.entry(status).or_default() += 1;
        let n = |k: &str| body.get(k).and_then(Value::as_u64).unwrap_or(0);
        s.accepted += n("accepted");
        s.rejected += n("rejected");
        s.retry += n("retry");
        tracing::info!(sample = %r.name, status, accepted = n("accepted"), rejected = n("rejected"), "sample_posted");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_samples_include_gzip_ndjson_and_skip_raw_lines() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let reqs = sample_requests(&root.join("events"), &root.join("rules/samples")).unwrap();
        assert!(!reqs.is_empty());
        assert!(reqs.iter().all(|r| r.path == "/v1/events"));
        assert!(
            reqs.iter()
                .any(|r| r.content_encoding.as_deref() == Some("gzip"))
        );
        assert!(reqs.iter().any(
            |r| r.content_type.as_deref() == Some("application/x-ndjson")
                && r.content_encoding.is_none()
        ));
        assert!(
            !reqs.iter().any(|r| r.name.starts_with("raw.ndjson")),
            "raw-archive lines are not client events"
        );
        // Gzip bodies decode to what the sample file holds.
        let gz = reqs.iter().find(|r| r.name.ends_with("(gzip)")).unwrap();
        let plain = reqs
            .iter()
            .find(|r| format!("{} (gzip)", r.name) == gz.name)
            .unwrap();
        let mut d = flate2::read::GzDecoder::new(gz.body.as_slice());
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut out).unwrap();
        assert_eq!(out, plain.body);
    }
}
