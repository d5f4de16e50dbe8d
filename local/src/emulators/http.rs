//! The local HTTP API: the template's routes served on a loopback port, each request turned
//! into the API Gateway HTTP API **payload format 2.0** event the function would receive in AWS,
//! and the function's answer turned back into an HTTP response as API Gateway does.
//!
//! What is emulated (from the API Gateway developer guide, "Working with AWS Lambda proxy
//! integrations for HTTP APIs"): header names lower-cased and repeated headers joined with
//! commas, the `Cookie` header moved to `cookies`, `rawPath`/`rawQueryString`, decoded
//! `queryStringParameters`, `pathParameters` from `{name}`/`{name+}` templates, the request
//! context (`requestId`, `stage` = `$default`, `http.sourceIp`, `userAgent`, `time`,
//! `timeEpoch`), bodies base64-encoded unless they are UTF-8 text without a Content-Encoding,
//! the 10 MB API payload limit (413), and the response rules: an object with `statusCode` is
//! the response, anything else is a 200 JSON body; a failed invocation is a 500, a timed-out
//! one a 503, both with API Gateway's `{"message": …}` bodies. With a `CorsConfiguration`
//! (developer guide, "Configuring CORS for an HTTP API"): a preflight (`OPTIONS` with `Origin`
//! and `Access-Control-Request-Method`) is answered by the API itself, 204 with the configured
//! `Access-Control-*` headers when the origin is allowed and none when it is not (so the browser
//! refuses); an integration's response loses the `Access-Control-*` headers the function set
//! and gets the configured ones for an allowed origin. Authorizers are not emulated:
//! the local endpoint accepts every request, which is why the local stack runs with
//! `AuthMode=NONE`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::emulators::lambda::{InvokeError, LocalFunction};
use crate::stack::template::{Cors, Route};

/// API Gateway's maximum request payload.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

/// A route bound to the function it invokes.
#[derive(Debug, Clone)]
pub struct BoundRoute {
    /// The route from the template.
    pub route: Route,
    /// The function.
    pub function: Arc<LocalFunction>,
}

/// Responses per route key and status code.
#[derive(Debug, Default)]
pub struct ApiStats {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
}

impl ApiStats {
    fn record(&self, route_key: &str, status: u16) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((route_key.to_owned(), status)).or_default() += 1;
        }
    }

    /// A copy of the counters: `(route key, status) -> responses`.
    pub fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// The server's shared state.
#[derive(Debug)]
pub struct Api {
    routes: Vec<BoundRoute>,
    api_id: String,
    account_id: String,
    cors: Option<Cors>,
    /// Response counters.
    pub stats: ApiStats,
}

impl Api {
    /// An API serving `routes`.
    pub fn new(routes: Vec<BoundRoute>, api_id: &str, account_id: &str) -> Api {
        Api {
            routes,
            api_id: api_id.to_owned(),
            account_id: account_id.to_owned(),
            cors: None,
            stats: ApiStats::default(),
        }
    }

    /// The same API with the template's CORS configuration.
    pub fn with_cors(mut self, cors: Option<Cors>) -> Api {
        self.cors = cors;
        self
    }
}

/// Serves `api` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(handle).with_state(api);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn handle(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let origin = parts
        .headers
        .get(http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    if let (Some(cors), Some(origin)) = (&api.cors, &origin)
        && parts.method == http::Method::OPTIONS
        && parts
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        api.stats.record("(preflight)", 204);
        return preflight(cors, origin);
    }
    let Some((bound, path_params)) = match_route(&api.routes, &method, &path) else {
        api.stats.record("(no route)", 404);
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let route_key = bound.route.route_key.clone();
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            api.stats.record(&route_key, 413);
            return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
        }
    };
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let request = RequestParts {
        method: &method,
        path: &path,
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
        source_ip: peer.ip().to_string(),
        protocol: format!("{:?}", parts.version),
        domain_name: &host,
    };
    let event = api_gateway_v2_event(
        &api,
        &bound.route,
        &path_params,
        &request,
        OffsetDateTime::now_utc(),
    );
    let request_id = event["requestContext"]["requestId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut response = match bound.function.invoke(event).await {
        Ok(out) => match http_response(&out) {
            Ok(mut r) => {
                if let Some(cors) = &api.cors {
                    cors_response_headers(cors, origin.as_deref(), r.headers_mut());
                }
                r
            }
            Err(e) => {
                tracing::warn!(route = %route_key, error = %e, "malformed_function_response");
                message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        },
        Err(InvokeError::PayloadTooLarge(_)) => {
            message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large")
        }
        Err(InvokeError::Timeout(_)) => {
            message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        }
        Err(_) => message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("apigw-requestid", v);
    }
    api.stats.record(&route_key, response.status().as_u16());
    response
}

/// API Gateway's own answer to a preflight: 204, with the configured headers only when the
/// origin is allowed.
fn preflight(cors: &Cors, origin: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let Some(allow) = cors.allow_origins.allow_origin_header(origin) else {
        return r;
    };
    let h = r.headers_mut();
    set_cors(h, http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    set_cors(
        h,
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        &cors.allow_methods.join(","),
    );
    set_cors(
        h,
        http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        &cors.allow_headers.join(","),
    );
    if let Some(age) = cors.max_age {
        set_cors(h, http::header::ACCESS_CONTROL_MAX_AGE, &age.to_string());
    }
    if cors.allow_credentials {
        set_cors(h, http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    r
}

/// Set a configured CORS header; an empty value (an empty list) is not sent.
fn set_cors(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value)
        && !value.is_empty()
    {
        headers.insert(name, v);
    }
}

/// An integration's response under a CORS configuration: the function's own
/// `Access-Control-*` headers are dropped (API Gateway ignores them) and, for an allowed
/// origin, the configured ones are set.
fn cors_response_headers(cors: &Cors, origin: Option<&str>, headers: &mut HeaderMap) {
    let theirs: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for k in theirs {
        headers.remove(k);
    }
    let Some(allow) = origin.and_then(|o| cors.allow_origins.allow_origin_header(o)) else {
        return;
    };
    set_cors(headers, http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    set_cors(
        headers,
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        &cors.expose_headers.join(","),
    );
    if cors.allow_credentials {
        set_cors(
            headers,
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            "true",
        );
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    let mut r = Response::new(Body::from(json!({ "message": text }).to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Finds the route for `method path`: method-specific routes before `ANY`, literal segments
/// before `{param}` before `{proxy+}`, and `$default` last — API Gateway's precedence.
pub fn match_route<'a>(
    routes: &'a [BoundRoute],
    method: &str,
    path: &str,
) -> Option<(&'a BoundRoute, BTreeMap<String, String>)> {
    let mut best: Option<(i64, &BoundRoute, BTreeMap<String, String>)> = None;
    for r in routes {
        if let Some(m) = &r.route.method
            && !m.eq_ignore_ascii_case(method)
        {
            continue;
        }
        let (score, params) = match &r.route.path {
            None => (i64::MIN + 1, BTreeMap::new()),
            Some(template) => match match_path(template, path) {
                Some((score, params)) => (score * 2 + i64::from(r.route.method.is_some()), params),
                None => continue,
            },
        };
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, r, params));
        }
    }
    best.map(|(_, r, p)| (r, p))
}

/// Matches a path against a template; the score ranks literal segments over parameters over
/// a greedy parameter.
fn match_path(template: &str, path: &str) -> Option<(i64, BTreeMap<String, String>)> {
    let t: Vec<&str> = template
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let p: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut params = BTreeMap::new();
    let mut score = 0i64;
    for (i, seg) in t.iter().enumerate() {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix("+}")) {
            if i >= p.len() || i != t.len() - 1 {
                return None;
            }
            params.insert(name.to_owned(), p[i..].join("/"));
            return Some((score * 100, params));
        }
        let got = p.get(i)?;
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.insert(name.to_owned(), (*got).to_owned());
            score += 1;
        } else if seg == got {
            score += 3;
        } else {
            return None;
        }
    }
    (t.len() == p.len()).then_some((score * 100 + 50, params))
}

/// The parts of an HTTP request an event is built from.
#[derive(Debug)]
pub struct RequestParts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path, not decoded.
    pub path: &'a str,
    /// Query string without `?`, not decoded.
    pub raw_query: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Body bytes.
    pub body: &'a [u8],
    /// Client address.
    pub source_ip: String,
    /// `HTTP/1.1` etc.
    pub protocol: String,
    /// Host header.
    pub domain_name: &'a str,
}

/// True when API Gateway passes the body as text rather than base64.
fn is_text_body(headers: &HeaderMap, body: &[u8]) -> bool {
    if headers.contains_key(http::header::CONTENT_ENCODING) || std::str::from_utf8(body).is_err() {
        return false;
    }
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.is_empty()
        || mime.starts_with("text/")
        || mime.ends_with("/json")
        || mime.ends_with("+json")
        || mime.ends_with("/xml")
        || mime.ends_with("+xml")
        || matches!(
            mime,
            "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/x-ndjson"
                | "application/jsonl"
        )
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The payload format 2.0 event for a request.
// Long on purpose: one JSON document built field by field, in the order AWS documents it.
pub fn api_gateway_v2_event(
    api: &Api,
    route: &Route,
    path_params: &BTreeMap<String, String>,
    req: &RequestParts<'_>,
    now: OffsetDateTime,
) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in req.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == http::header::COOKIE {
            cookies.extend(
                v.split(';')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for pair in req.raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query
            .entry(decode(k))
            .and_modify(|e| {
                e.push(',');
                e.push_str(&decode(v));
            })
            .or_insert_with(|| decode(v));
    }
    let user_agent = headers.get("user-agent").cloned().unwrap_or_default();
    let request_id = {
        let id = uuid::Uuid::new_v4();
        let mut s = B64.encode(&id.as_bytes()[..12]);
        s.truncate(15);
        s.push('=');
        s
    };
    let time = now
        .format(time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    let domain_prefix = req.domain_name.split('.').next().unwrap_or(req.domain_name);
    let mut ev = Map::new();
    ev.insert("version".into(), json!("2.0"));
    ev.insert("routeKey".into(), json!(route.route_key));
    ev.insert("rawPath".into(), json!(req.path));
    ev.insert("rawQueryString".into(), json!(req.raw_query));
    if !cookies.is_empty() {
        ev.insert("cookies".into(), json!(cookies));
    }
    ev.insert("headers".into(), json!(headers));
    if !query.is_empty() {
        ev.insert("queryStringParameters".into(), json!(query));
    }
    ev.insert(
        "requestContext".into(),
        json!({
            "accountId": api.account_id,
            "apiId": api.api_id,
            "domainName": req.domain_name,
            "domainPrefix": domain_prefix,
            "http": {
                "method": req.method,
                "path": req.path,
                "protocol": req.protocol,
                "sourceIp": req.source_ip,
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": time,
            "timeEpoch": (now.unix_timestamp_nanos() / 1_000_000) as i64,
        }),
    );
    if !path_params.is_empty() {
        ev.insert("pathParameters".into(), json!(path_params));
    }
    if !req.body.is_empty() {
        if is_text_body(req.headers, req.body) {
            ev.insert("body".into(), json!(String::from_utf8_lossy(req.body)));
            ev.insert("isBase64Encoded".into(), json!(false));
        } else {
            ev.insert("body".into(), json!(B64.encode(req.body)));
            ev.insert("isBase64Encoded".into(), json!(true));
        }
    } else {
        ev.insert("isBase64Encoded".into(), json!(false));
    }
    Value::Object(ev)
}

/// Why a function's output could not be turned into a response (API Gateway answers 500).
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// `statusCode` is not a valid HTTP status.
    #[error("statusCode {0} is not a valid HTTP status")]
    Status(String),
    /// A header name or value is not valid HTTP.
    #[error("invalid header {0}")]
    Header(String),
    /// `isBase64Encoded` is true but the body is not base64.
    #[error("body is not valid base64")]
    Base64,
}

/// Turns a function's output into the HTTP response API Gateway would send.
pub fn http_response(out: &Value) -> Result<Response, ResponseError> {
    let Some(obj) = out.as_object().filter(|o| o.contains_key("statusCode")) else {
        // Payload 2.0: output without statusCode is a 200 JSON body.
        let body = match out {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(r);
    };
    let status = obj
        .get("statusCode")
        .and_then(|s| {
            s.as_u64()
                .or_else(|| s.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| ResponseError::Status(obj["statusCode"].to_string()))?;
    let body_text = obj.get("body").and_then(Value::as_str).unwrap_or("");
    let body = if obj.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        B64.decode(body_text).map_err(|_| ResponseError::Base64)?
    } else {
        body_text.as_bytes().to_vec()
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let mut add = |name: &str, value: &str| -> Result<(), ResponseError> {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ResponseError::Header(name.to_owned()))?;
        let v = HeaderValue::from_str(value).map_err(|_| ResponseError::Header(name.to_owned()))?;
        r.headers_mut().append(n, v);
        Ok(())
    };
    if let Some(h) = obj.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            add(k, &v)?;
        }
    }
    if let Some(h) = obj.get("multiValueHeaders").and_then(Value::as_object) {
        for (k, vs) in h {
            for v in vs
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                add(k, v)?;
            }
        }
    }
    for c in obj
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        add("set-cookie", c)?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests;
