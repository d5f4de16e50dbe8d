//! A pass-through HTTP proxy in front of moto that serializes Kinesis writes.
//!
//! Why: moto 5.2 gives a new record the shard's highest sequence number + 1 without a lock, so
//! two concurrent PutRecords calls on one shard (ingest handles requests concurrently) can give
//! two records the same sequence number, and the second silently replaces the first — moto
//! answers success for both. Reproduced with 8 threads × 1,000 records: 41 of 8,000 records
//! lost. Real Kinesis has no such race, so the local stack routes every emulator call through
//! this proxy, which forwards requests unchanged (Host header included, so SQS queue URLs name
//! the proxy) and lets one `Kinesis_20131202.PutRecord(s)` call through at a time.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;

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

#[derive(Debug)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    kinesis_writes: tokio::sync::Mutex<()>,
}

/// Serves the proxy on `listener`, forwarding to `upstream` (`http://127.0.0.1:<moto port>`),
/// until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    upstream: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let proxy = Arc::new(Proxy {
        upstream,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .build()
            .map_err(std::io::Error::other)?,
        kinesis_writes: tokio::sync::Mutex::new(()),
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn bad_gateway(message: String) -> Response {
    let mut r = Response::new(Body::from(message));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return bad_gateway(format!("reading request body: {e}")),
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
    let is_kinesis_write = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("Kinesis_20131202.PutRecord"));
    let _guard = if is_kinesis_write {
        Some(proxy.kinesis_writes.lock().await)
    } else {
        None
    };
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("moto: {e}")),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return bad_gateway(format!("reading moto's response: {e}")),
    };
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            r.headers_mut().append(name, value.clone());
        }
    }
    r
}
