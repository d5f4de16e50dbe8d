//! A pass-through HTTP proxy in front of moto that serializes Kinesis writes and, on a chaos
//! listener, injects AWS's faults ([`super::chaos::aws`]).
//!
//! Why: moto 5.2 gives a new record the shard's highest sequence number + 1 without a lock, so
//! two concurrent PutRecords calls on one shard (ingest handles requests concurrently) can give
//! two records the same sequence number, and the second silently replaces the first — moto
//! answers success for both. Reproduced with 8 threads × 1,000 records: 41 of 8,000 records
//! lost. Real Kinesis has no such race, so the local stack routes every emulator call through
//! this proxy, which forwards requests unchanged (Host header included, so SQS queue URLs name
//! the proxy) and lets one `Kinesis_20131202.PutRecord(s)` call through at a time.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;

use crate::emulators::chaos::Chaos;
use crate::emulators::chaos::aws::{self, Canned, Plan};

/// Hop-by-hop headers that must not be forwarded (RFC 9110 §7.6.1) plus the length/encoding
/// headers that change when a body is buffered.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Largest request body forwarded (S3 uploads of the local stack are far smaller).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// The proxy's shared state: moto's address, one HTTP client, and the lock that lets one
/// Kinesis write through at a time. Serve it on one listener per audience with [`serve_proxy`].
#[derive(Debug)]
pub struct Proxy {
    upstream: String,
    client: reqwest::Client,
    kinesis_writes: Arc<tokio::sync::Mutex<()>>,
}

impl Proxy {
    /// A proxy forwarding to `upstream` (`http://127.0.0.1:<moto port>`).
    pub fn new(upstream: String) -> std::io::Result<Arc<Proxy>> {
        Ok(Arc::new(Proxy {
            upstream,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(16)
                .build()
                .map_err(std::io::Error::other)?,
            kinesis_writes: Arc::default(),
        }))
    }
}

/// Serves the proxy on `listener`, forwarding to `upstream` (`http://127.0.0.1:<moto port>`),
/// until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    upstream: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_proxy(listener, Proxy::new(upstream)?, None, shutdown).await
}

/// Serves `proxy` on `listener` until `shutdown` completes; with `chaos`, the requests of this
/// listener meet the faults of [`super::chaos::aws`]. Several listeners may share one proxy
/// (and so its locks).
pub async fn serve_proxy(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    chaos: Option<Arc<Chaos>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(forward)
        .with_state((proxy, chaos));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn bad_gateway(message: String) -> Response {
    let mut r = Response::new(Body::from(message));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

fn canned(c: Canned) -> Response {
    let mut r = Response::new(Body::from(c.body));
    *r.status_mut() = StatusCode::from_u16(c.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in c.headers {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

/// moto's answer to one forwarded request.
struct Upstream {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn forward(
    State((proxy, chaos)): State<(Arc<Proxy>, Option<Arc<Chaos>>)>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return bad_gateway(format!("reading request body: {e}")),
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let plan = match &chaos {
        Some(c) => aws::plan(c, parts.method.as_str(), target.as_deref(), &body),
        None => Plan::Forward,
    };
    let body = match &plan {
        Plan::Refuse(answer) => return canned(answer.clone()),
        Plan::FailRecords { body, .. } => Bytes::from(body.clone()),
        Plan::Forward | Plan::ErrorAfter(_) => body,
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", proxy.upstream);
    let mut out = proxy.client.request(parts.method.clone(), url).body(body);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let lock = if target
        .as_deref()
        .is_some_and(|t| t.starts_with("Kinesis_20131202.PutRecord"))
    {
        Some(proxy.kinesis_writes.clone())
    } else {
        None
    };
    let upstream = match exchange(out, lock).await {
        Ok(u) => u,
        Err(message) => return bad_gateway(message),
    };
    answer(plan, upstream)
}

/// Sends `out` to moto, holding `lock` (if any) until moto has answered.
///
/// The exchange runs in its own task: if the caller goes away (a killed invocation), moto still
/// finishes the request, and the lock is held until it has — releasing it early would let the
/// next write race the one moto is still doing.
async fn exchange(
    out: reqwest::RequestBuilder,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
) -> Result<Upstream, String> {
    let task = tokio::spawn(async move {
        let _guard = match lock {
            Some(l) => Some(l.lock_owned().await),
            None => None,
        };
        let resp = out.send().await.map_err(|e| format!("moto: {e}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("reading moto's response: {e}"))?;
        Ok::<_, String>(Upstream {
            status,
            headers,
            body,
        })
    });
    task.await.map_err(|e| format!("proxy task: {e}"))?
}

/// The answer to the caller: moto's, unless the plan replaces a success with an error or
/// merges injected per-record failures into it.
fn answer(plan: Plan, upstream: Upstream) -> Response {
    match plan {
        Plan::ErrorAfter(answer) if upstream.status.is_success() => canned(answer),
        Plan::FailRecords {
            api, failed, total, ..
        } if upstream.status.is_success() => {
            match aws::merge_records(api, &failed, total, &upstream.body) {
                Ok(merged) => respond(Upstream {
                    body: Bytes::from(merged),
                    ..upstream
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "chaos_merge_failed");
                    canned(aws::internal_failure(api))
                }
            }
        }
        _ => respond(upstream),
    }
}

fn respond(upstream: Upstream) -> Response {
    let mut r = Response::new(Body::from(upstream.body));
    *r.status_mut() = upstream.status;
    for (name, value) in &upstream.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            r.headers_mut().append(name, value.clone());
        }
    }
    r
}
