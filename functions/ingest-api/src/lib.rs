//! # ingest-api
//!
//! The HTTP front door: API Gateway (HTTP API payload v2 or REST API v1) → validated events →
//! Kinesis PutRecords → a per-event receipt. The endpoint contract is in `docs/API.md`.
//!
//! | module | role |
//! |---|---|
//! | [`core`] | pure: decoded body → slots + envelopes (what the benchmark measures) |
//! | [`meta`] | request id, stage, source IP, user agent, principal from the request context |
//! | [`receipt`] | receipt JSON and its status code (202 / 422 / 503) |
//! | this file | [`Config`], [`State`], routing, [`handler`], [`invoke`] |
//!
//! Error policy: body errors are the client's (400/413/415, stable `code`); per-event problems
//! are rejections in the receipt; anything Kinesis could not store in time becomes `retry`
//! (503 + `Retry-After`). Internal details (SDK error codes and messages) go to the logs only.

pub mod core;
pub mod meta;
pub mod receipt;
pub mod spill;

use std::sync::Arc;
use std::time::Duration;

use caudal_aws::clients::ClientFactory;
use caudal_aws::kinesis;
use caudal_core::config::{ConfigError, Env, RulesFileError};
use caudal_core::cors::AllowedOrigins;
use caudal_core::event::{self, BodyError, Event, MediaType, ParseOptions, RejectCode};
use caudal_core::limits::{KINESIS_RECORD_MAX_BYTES, Limits};
use caudal_core::pack::{DEFAULT_TARGET_BYTES, PackPolicy};
use caudal_core::retry::{DeadlinePolicy, RetryPolicy};
use caudal_core::rules::RuleSet;
use caudal_core::segment::{self, WriteKeys};
use caudal_core::snowplow::{self, AppIds};
use caudal_core::stream::PutOutcome;
use caudal_core::telemetry::{Emf, Unit};
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Context, Request, RequestExt, Response, Service, service_fn};
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::core::{EventCheck, Prepared, prepare, prepare_items};
use crate::receipt::Receipt;
use crate::spill::{Breaker, SpillReport, SpillTarget};

/// Time kept back from the Lambda deadline to build and return the response.
pub const DEADLINE_SAFETY_MARGIN: Duration = Duration::from_millis(1000);
/// `Retry-After` (seconds) sent with a 503.
pub const RETRY_AFTER_SECS: u32 = 1;
/// The route that takes events.
pub const EVENTS_PATH: &str = "/v1/events";
/// The probe route.
pub const HEALTH_PATH: &str = "/v1/health";

/// Configuration, read once per cold start (docs/CONTRACTS.md §5).
#[derive(Debug, Clone)]
pub struct Config {
    /// `STREAM_NAME`: the Kinesis stream (name or ARN).
    pub stream_name: String,
    /// `PARTITION_KEY_FIELD`: event field used as partition key; `None` = event id.
    pub partition_key_field: Option<String>,
    /// `MAX_BODY_BYTES`, `MAX_EVENTS`, `MAX_EVENT_BYTES`, `MAX_DEPTH`.
    pub limits: Limits,
    /// `PUT_DEADLINE_MS`: budget for PutRecords including retries.
    pub put_deadline: Duration,
    /// `SCHEMA_VALIDATION=on`: the rules whose JSON Schemas events are validated against
    /// (`RULES_FILE`, or the bundled file; [`Env::rules`]); `None` = no validation.
    pub schema_rules: Option<Arc<RuleSet>>,
    /// `SPILL_BUCKET`: where events go that Kinesis did not take in time ([`spill`]); `None` =
    /// no spill path (such events are answered `retry`).
    pub spill_bucket: Option<String>,
    /// `SPILL_RESERVE_MS`: time of the put budget kept back for the spill write.
    pub spill_reserve: Duration,
    /// `PACK_TARGET_BYTES` (0 = one event per record) and, from `PARTITION_KEY_FIELD`, whether
    /// packs hold one key each: how events are packed into Kinesis records
    /// ([`caudal_core::pack`]).
    pub pack: PackPolicy,
    /// `ALLOWED_ORIGINS` (the template's `AllowedOrigins`): the web pages whose browsers may
    /// send events; a request with any other `Origin` is refused (403). Empty = none.
    pub allowed_origins: AllowedOrigins,
    /// `SEGMENT_WRITE_KEYS` (the template's `SegmentWriteKeys`): the write keys Segment's SDKs
    /// may send with on the Segment routes ([`caudal_core::segment`]). Empty = those routes
    /// refuse every request.
    pub segment_write_keys: WriteKeys,
    /// `SNOWPLOW_APP_IDS` (the template's `SnowplowAppIds`): the app ids (`aid`) Snowplow's
    /// routes take, `*` = any ([`caudal_core::snowplow`]). Empty = those routes refuse every
    /// request (403).
    pub snowplow_app_ids: AppIds,
}

/// Smallest packing target accepted: below a few events' worth, packing costs a protobuf and
/// an MD5 per record for nothing.
pub const MIN_PACK_TARGET_BYTES: u64 = 1024;
/// Largest packing target: one Kinesis record with a 256-byte partition key.
pub const MAX_PACK_TARGET_BYTES: u64 = (KINESIS_RECORD_MAX_BYTES - 256) as u64;

impl Config {
    /// Read and check the configuration (and the rules file, when schema validation is on);
    /// any problem names the variable.
    pub fn from_env(env: &Env) -> Result<Self, StartError> {
        let schema_rules = if env.flag("SCHEMA_VALIDATION", false)? {
            Some(Arc::new(env.rules()?.rules))
        } else {
            None
        };
        let partition_key_field = env
            .optional("PARTITION_KEY_FIELD")
            .map(|v| v.trim().to_owned());
        let target: u64 = env.parse_or("PACK_TARGET_BYTES", DEFAULT_TARGET_BYTES as u64)?;
        if target != 0 && !(MIN_PACK_TARGET_BYTES..=MAX_PACK_TARGET_BYTES).contains(&target) {
            return Err(ConfigError::Invalid {
                name: "PACK_TARGET_BYTES".into(),
                value: target.to_string(),
                reason: format!(
                    "must be 0 (no packing) or between {MIN_PACK_TARGET_BYTES} and {MAX_PACK_TARGET_BYTES}"
                ),
            }
            .into());
        }
        let pack = PackPolicy {
            target_bytes: usize::try_from(target).unwrap_or(DEFAULT_TARGET_BYTES),
            by_key: partition_key_field.is_some(),
        };
        let origins = env.optional("ALLOWED_ORIGINS").unwrap_or_default();
        let allowed_origins =
            AllowedOrigins::parse(&origins).map_err(|e| ConfigError::Invalid {
                name: "ALLOWED_ORIGINS".into(),
                value: origins.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            allowed_origins,
            segment_write_keys: WriteKeys::parse(
                &env.optional("SEGMENT_WRITE_KEYS").unwrap_or_default(),
            ),
            snowplow_app_ids: AppIds::parse(&env.optional("SNOWPLOW_APP_IDS").unwrap_or_default()),
            stream_name: env.required("STREAM_NAME")?,
            partition_key_field,
            pack,
            limits: Limits::from_env(env)?,
            // API Gateway gives up after 29 s; the budget must stay well under it.
            put_deadline: Duration::from_millis(env.bounded_or("PUT_DEADLINE_MS", 8000, 25_000)?),
            schema_rules,
            spill_bucket: env.optional("SPILL_BUCKET").map(|b| b.trim().to_owned()),
            spill_reserve: Duration::from_millis(env.bounded_or(
                "SPILL_RESERVE_MS",
                2000,
                10_000,
            )?),
        })
    }
}

/// Why the function cannot start. Always permanent: fix the deployment.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration variable is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The rules file for schema validation cannot be read or is invalid.
    #[error("schema validation: {0}")]
    Rules(#[from] RulesFileError),
}

/// Everything a cold start builds, from the environment and the client factory: what `main`
/// runs in Lambda and the local stack runs in process.
pub fn start(env: &Env, clients: &ClientFactory) -> Result<State, StartError> {
    let config = Config::from_env(env)?;
    let spill = config.spill_bucket.clone().map(|bucket| SpillTarget {
        s3: clients.s3(),
        bucket,
        reserve: config.spill_reserve,
    });
    let state = State::new(config, clients.kinesis());
    Ok(match spill {
        Some(target) => state.with_spill(target),
        None => state,
    })
}

/// Everything a request needs, built once per cold start.
pub struct State {
    config: Config,
    kinesis: aws_sdk_kinesis::Client,
    spill: Option<SpillTarget>,
    breaker: Breaker,
    retry: RetryPolicy,
    metrics: bool,
}

impl State {
    /// State from configuration and a Kinesis client — [`caudal_aws::clients::kinesis`] in
    /// Lambda and the local stack (SDK retries off: [`caudal_core::retry::send_partial`] retries whole
    /// calls and failed entries within the request's deadline, each attempt bounded), a mocked
    /// client in tests.
    pub fn new(config: Config, kinesis: aws_sdk_kinesis::Client) -> Self {
        Self {
            config,
            kinesis,
            spill: None,
            breaker: Breaker::default(),
            retry: RetryPolicy::default(),
            metrics: true,
        }
    }

    /// Turn the spill path on ([`start`] does when `SPILL_BUCKET` is set; tests pass a mocked
    /// S3 client).
    pub fn with_spill(mut self, target: SpillTarget) -> Self {
        self.spill = Some(target);
        self
    }

    /// Replace the retry policy (tests use short backoffs).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Switch the per-request EMF line on stdout on or off (on by default; tests keep their
    /// output quiet).
    pub fn with_metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// JSON response with the given status.
fn json_response(status: u16, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The error body every non-receipt failure uses.
fn error_response(status: u16, code: &str, message: &str, request_id: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"code": code, "message": message, "request_id": request_id}),
    )
}

/// The deadline policy of PutRecords: `budget` (`PUT_DEADLINE_MS`) from now, but never later
/// than the Lambda deadline minus [`DEADLINE_SAFETY_MARGIN`].
pub fn put_deadline_policy(budget: Duration) -> DeadlinePolicy {
    DeadlinePolicy {
        margin: DEADLINE_SAFETY_MARGIN,
        fallback: budget,
        budget: Some(budget),
    }
}

/// Handle one HTTP request (the function `lambda_http::run` serves).
pub async fn handler(state: &State, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let started = std::time::Instant::now();
    let ctx = req.lambda_context_ref().cloned().unwrap_or_default();
    let fallback_id = if ctx.request_id.is_empty() {
        uuid::Uuid::now_v7().to_string()
    } else {
        ctx.request_id.clone()
    };
    let meta = meta::request_meta(&req, &fallback_id);
    if req.headers().contains_key(INVALID_QUERY_HEADER) {
        return Ok(error_response(
            400,
            "invalid_query",
            "the query string holds characters a URI may not (a space, a quote, a control \
             character) or is longer than 64 KiB: percent-encode them",
            &meta.request_id,
        ));
    }
    let path = meta::route_path(&req);
    let method = req.method().clone();
    let unrecordable = meta
        .principal
        .as_deref()
        .is_some_and(|p| !caudal_core::envelope::is_valid_principal(p));
    // A browser's request from a page that may not send (API Gateway's CORS only hides the
    // response from the page; a request without a preflight still arrives here).
    let refused_origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
        .filter(|o| !state.config.allowed_origins.allows(o));
    let segment_call = segment::Call::from_path(&path);
    let snowplow_route = snowplow::Route::from_path(&path);
    let tracking = path == EVENTS_PATH || segment_call.is_some() || snowplow_route.is_some();
    // The method each tracking route takes: the pixel is a GET, the others are POSTs.
    let tracking_method = match snowplow_route {
        Some(snowplow::Route::Pixel) => Method::GET,
        _ => Method::POST,
    };
    let resp = match (path.as_str(), &method) {
        (_, m) if tracking && *m == tracking_method && refused_origin.is_some() => {
            let origin = refused_origin.as_deref().unwrap_or_default();
            tracing::warn!(request_id = %meta.request_id, origin, "origin_not_allowed");
            error_response(
                403,
                "origin_not_allowed",
                &format!(
                    "origin {:?} may not send events: add it to the stack's AllowedOrigins",
                    event::truncate(origin, 200)
                ),
                &meta.request_id,
            )
        }
        // Events are de-duplicated per principal, so it is recorded whole or not at all.
        (EVENTS_PATH, &Method::POST) if unrecordable => error_response(
            403,
            "principal_unrecordable",
            &format!(
                "the authorizer's principal is longer than {} bytes or has control characters, \
                 so events cannot be attributed to it; fix the authorizer",
                caudal_core::envelope::MAX_PRINCIPAL_BYTES
            ),
            &meta.request_id,
        ),
        (EVENTS_PATH, &Method::POST) => {
            ingest(state, &req, meta, ctx.deadline, started, Protocol::Caudal).await
        }
        (_, &Method::POST) if let Some(call) = segment_call => {
            ingest(
                state,
                &req,
                meta,
                ctx.deadline,
                started,
                Protocol::Segment(call),
            )
            .await
        }
        (_, m)
            if let Some(route) = snowplow_route
                && *m == tracking_method =>
        {
            ingest(
                state,
                &req,
                meta,
                ctx.deadline,
                started,
                Protocol::Snowplow(route),
            )
            .await
        }
        (HEALTH_PATH, &Method::GET | &Method::HEAD) => json_response(200, &json!({"status": "ok"})),
        (p, _) if tracking || p == HEALTH_PATH => {
            let allow = match (tracking, snowplow_route) {
                (true, Some(snowplow::Route::Pixel)) => "GET",
                (true, _) => "POST",
                (false, _) => "GET, HEAD",
            };
            let mut r = error_response(
                405,
                "method_not_allowed",
                &format!("{method} is not allowed on {path}; use {allow}"),
                &meta.request_id,
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => error_response(
            404,
            "not_found",
            "no such route; POST /v1/events, Segment's POST /v1/batch (and /v1/track, …), Snowplow's POST /com.snowplowanalytics.snowplow/tp2 and GET /i, or GET /v1/health",
            &meta.request_id,
        ),
    };
    Ok(resp)
}

/// What a tracking route speaks.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// caudal's own `POST /v1/events`.
    Caudal,
    /// Segment's tracking API ([`caudal_core::segment`]).
    Segment(segment::Call),
    /// Snowplow's tracker protocol ([`caudal_core::snowplow`]).
    Snowplow(snowplow::Route),
}

/// Why a request was refused as a whole.
#[derive(Debug)]
enum Refused {
    /// Its body cannot be read.
    Body(BodyError),
    /// A Segment request without a configured write key (401, which Segment's SDKs do not
    /// retry).
    WriteKey(&'static str, String),
    /// Snowplow's routes while the stack takes no app id (403, which Snowplow's trackers do not
    /// retry).
    SnowplowOff,
}

impl Refused {
    fn status(&self) -> u16 {
        match self {
            Refused::Body(e) => e.status(),
            Refused::WriteKey(..) => 401,
            Refused::SnowplowOff => 403,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Refused::Body(e) => e.code(),
            Refused::WriteKey(code, _) => code,
            Refused::SnowplowOff => "snowplow_not_enabled",
        }
    }

    fn message(&self) -> String {
        match self {
            Refused::Body(e) => e.to_string(),
            Refused::WriteKey(_, m) => m.clone(),
            Refused::SnowplowOff => {
                "this stack takes no Snowplow events: list the app ids in its SnowplowAppIds".into()
            }
        }
    }
}

/// `POST /v1/events`, Segment's and Snowplow's routes.
async fn ingest(
    state: &State,
    req: &Request,
    mut meta: caudal_core::envelope::RequestMeta,
    lambda_deadline_ms: u64,
    started: std::time::Instant,
    protocol: Protocol,
) -> Response<Body> {
    let prepared = match protocol {
        Protocol::Caudal => prepare_request(state, req, &meta).map_err(Refused::Body),
        Protocol::Segment(call) => prepare_segment(state, req, &mut meta, call),
        Protocol::Snowplow(route) => prepare_snowplow(state, req, &mut meta, route),
    };
    let (slots, records) = match prepared {
        Ok(p) => p,
        Err(e) => {
            log_refused(&e, &meta.request_id);
            if state.metrics {
                emit_metrics(
                    &meta.request_id,
                    e.status(),
                    [0, 0, 0],
                    [0, 0],
                    &SpillReport::default(),
                    started,
                );
            }
            // Snowplow's trackers retry any 4xx but 400, 401, 403, 410 and 422: a body they
            // should not send again is a 400 (its code still says why).
            let status = match (protocol, e.status()) {
                (Protocol::Snowplow(_), 413 | 415) => 400,
                (_, s) => s,
            };
            return error_response(status, e.code(), &e.message(), &meta.request_id);
        }
    };
    let (outcome, spilled) = put_durably(state, &records, lambda_deadline_ms).await;
    let receipt = Receipt::build(&meta.request_id, &slots, &outcome.results);
    let status = receipt.status();
    log_outcome(&receipt, &outcome, status, started);
    log_spill(&meta.request_id, &spilled);
    if state.metrics {
        emit_metrics(
            &meta.request_id,
            status,
            [receipt.accepted, receipt.rejected, receipt.retry],
            [records.len(), outcome.calls as usize],
            &spilled,
            started,
        );
    }
    let body = serde_json::to_value(&receipt).unwrap_or(Value::Null);
    let (status, body) = match protocol {
        Protocol::Caudal => (status, body),
        Protocol::Segment(_) => segment_answer(status, body, &receipt),
        Protocol::Snowplow(_) => (tracker_status(status), body),
    };
    let mut resp = match protocol {
        Protocol::Snowplow(snowplow::Route::Pixel) if status == 200 => pixel_response(),
        _ => json_response(status, &body),
    };
    if status == 503 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}

/// A receipt's status as the trackers read it (Segment's SDKs and Snowplow's): they take only a
/// 2xx as success, drop a batch on 400, 401, 403 and 422, and send it again on 429 and 5xx. So
/// 202 → 200, 422 (every event rejected: sending it again cannot help) → 400, and the rest as
/// they are (503: some events to retry; the tracker resends the batch, and the events already
/// taken are de-duplicated by their ids).
fn tracker_status(receipt_status: u16) -> u16 {
    match receipt_status {
        202 => 200,
        422 => 400,
        other => other,
    }
}

/// The pixel's answer: the 1×1 GIF, never cached (each request is an event).
fn pixel_response() -> Response<Body> {
    let mut resp = Response::new(Body::Binary(snowplow::PIXEL_GIF.to_vec()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    resp
}

/// A receipt as Segment's SDKs read it: they treat exactly 200 as success, drop a batch on
/// another 4xx and retry it whole on 429 or 5xx. So: some events accepted → 200 with
/// `success` (the receipt's statuses are still there); every message rejected → 400 with the
/// first reason (retrying cannot help); some events to retry → 503 (the SDK resends the batch,
/// and the accepted ones are de-duplicated by `messageId`).
fn segment_answer(status: u16, mut body: Value, receipt: &Receipt) -> (u16, Value) {
    let (status, extra) = match tracker_status(status) {
        200 => (200, json!({"success": true})),
        400 => (
            400,
            json!({"success": false, "code": "invalid_messages",
                   "message": format!("every message was rejected; the first: {}",
                                      receipt.first_rejection().unwrap_or("(none)"))}),
        ),
        503 => (
            503,
            json!({"success": false, "code": "retry",
                   "message": "some messages could not be stored in time; send the batch again"}),
        ),
        other => (other, json!({})),
    };
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    (status, body)
}

/// A Segment request: the write key (HTTP Basic, or the body's `writeKey`) names the
/// principal; then its messages are split and enveloped like caudal's own events, with the
/// protocol and each event's time on the envelope.
fn prepare_segment(
    state: &State,
    req: &Request,
    meta: &mut caudal_core::envelope::RequestMeta,
    call: segment::Call,
) -> Result<(Vec<core::Slot<'static>>, Vec<caudal_core::stream::Record>), Refused> {
    let cfg = &state.config;
    let header = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let opts = ParseOptions {
        limits: cfg.limits,
        partition_key_field: None,
    };
    let basic = header(header::AUTHORIZATION).and_then(segment::basic_auth_key);
    let media =
        MediaType::from_content_type(header(header::CONTENT_TYPE)).map_err(Refused::Body)?;
    if media != MediaType::Json {
        return Err(Refused::Body(BodyError::InvalidShape(
            "Segment's API takes JSON (application/json or text/plain)",
        )));
    }
    let body = event::decode_body(
        req.body().as_ref(),
        header(header::CONTENT_ENCODING),
        &cfg.limits,
    )
    .map_err(Refused::Body)?;
    let received_at = received_time(meta);
    let parsed = segment::parse(&body, call, &opts, received_at).map_err(Refused::Body)?;
    let Some(key) = basic.or(parsed.write_key) else {
        return Err(Refused::WriteKey(
            "missing_write_key",
            "send the source's write key as HTTP Basic user (or writeKey)".into(),
        ));
    };
    let Some(principal) = cfg.segment_write_keys.principal(&key) else {
        return Err(Refused::WriteKey(
            "invalid_write_key",
            "the write key is not one of this stack's SegmentWriteKeys".into(),
        ));
    };
    meta.principal = Some(principal);
    meta.protocol = Some(segment::PROTOCOL);
    let schema_check = |ev: &Event<'_>| schema_check(state, ev, false);
    let check: Option<EventCheck<'_>> = cfg
        .schema_rules
        .as_ref()
        .map(|_| &schema_check as EventCheck<'_>);
    // A user's messages stay in order: packs hold one partition key (userId, else
    // anonymousId) each.
    let policy = PackPolicy {
        by_key: true,
        ..cfg.pack
    };
    Ok(owned(
        prepare_items(parsed.items, meta, check).pack(&policy),
    ))
}

/// A Snowplow request: a tp2 POST body or the pixel's query string, read into events with the
/// protocol and each event's time on the envelope. Snowplow's routes carry no credential, so
/// their principal is `snowplow` (its events are de-duplicated by `eid` among themselves).
fn prepare_snowplow(
    state: &State,
    req: &Request,
    meta: &mut caudal_core::envelope::RequestMeta,
    route: snowplow::Route,
) -> Result<(Vec<core::Slot<'static>>, Vec<caudal_core::stream::Record>), Refused> {
    let cfg = &state.config;
    if cfg.snowplow_app_ids.is_empty() {
        return Err(Refused::SnowplowOff);
    }
    let header = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let opts = ParseOptions {
        limits: cfg.limits,
        partition_key_field: None,
    };
    let received_at = received_time(meta);
    meta.principal = Some(snowplow::PROTOCOL.to_owned());
    meta.protocol = Some(snowplow::PROTOCOL);
    let schema_check = |ev: &Event<'_>| schema_check(state, ev, true);
    let check: Option<EventCheck<'_>> = cfg
        .schema_rules
        .as_ref()
        .map(|_| &schema_check as EventCheck<'_>);
    // One browser's events stay in order: packs hold one partition key (duid, else uid) each.
    let policy = PackPolicy {
        by_key: true,
        ..cfg.pack
    };
    match route {
        snowplow::Route::Pixel => {
            let query = req.uri().query().unwrap_or_default();
            let items = snowplow::parse_pixel(query, &opts, &cfg.snowplow_app_ids, received_at)
                .map_err(Refused::Body)?;
            Ok(owned(prepare_items(items, meta, check).pack(&policy)))
        }
        snowplow::Route::Post => {
            let media = MediaType::from_content_type(header(header::CONTENT_TYPE))
                .map_err(Refused::Body)?;
            if media != MediaType::Json {
                return Err(Refused::Body(BodyError::InvalidShape(
                    "Snowplow's tp2 takes JSON (application/json or text/plain)",
                )));
            }
            let body = event::decode_body(
                req.body().as_ref(),
                header(header::CONTENT_ENCODING),
                &cfg.limits,
            )
            .map_err(Refused::Body)?;
            let items = snowplow::parse_post(&body, &opts, &cfg.snowplow_app_ids, received_at)
                .map_err(Refused::Body)?;
            Ok(owned(prepare_items(items, meta, check).pack(&policy)))
        }
    }
}

/// When the request was received (its `received_at`), as a time.
fn received_time(meta: &caudal_core::envelope::RequestMeta) -> time::OffsetDateTime {
    meta.received_at
        .as_deref()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or_else(time::OffsetDateTime::now_utc)
}

/// The slots and records of a prepared request, owning their ids (the body they borrowed ends
/// with the request's preparation).
fn owned(p: Prepared<'_>) -> (Vec<core::Slot<'static>>, Vec<caudal_core::stream::Record>) {
    let slots = p
        .slots
        .into_iter()
        .map(|s| match s {
            core::Slot::Send { index, id, record } => core::Slot::Send {
                index,
                id: std::borrow::Cow::Owned(id.into_owned()),
                record,
            },
            core::Slot::Rejected(r) => core::Slot::Rejected(r),
        })
        .collect();
    (slots, p.records)
}

/// Decode and split the request body into per-item slots and the Kinesis records to send,
/// owning everything (`prepare` borrows the decoded body, which ends here).
fn prepare_request(
    state: &State,
    req: &Request,
    meta: &caudal_core::envelope::RequestMeta,
) -> Result<(Vec<core::Slot<'static>>, Vec<caudal_core::stream::Record>), BodyError> {
    let cfg = &state.config;
    let header = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let opts = ParseOptions {
        limits: cfg.limits,
        partition_key_field: cfg.partition_key_field.as_deref(),
    };
    let decoded = MediaType::from_content_type(header(header::CONTENT_TYPE)).and_then(|media| {
        event::decode_body(
            req.body().as_ref(),
            header(header::CONTENT_ENCODING),
            &cfg.limits,
        )
        .map(|b| (media, b))
    });
    let schema_check = |ev: &Event<'_>| schema_check(state, ev, false);
    let check: Option<EventCheck<'_>> = cfg
        .schema_rules
        .as_ref()
        .map(|_| &schema_check as EventCheck<'_>);
    decoded.and_then(|(media, body)| {
        // `prepare` borrows the body; move both into one owner for the rest of the request.
        prepare(&body, media, &opts, meta, check).map(|p| owned(p.pack(&cfg.pack)))
    })
}

/// Makes `records` durable: PutRecords (with the spill reserve kept back when the spill path is
/// on), then the records it did not take into one spill object. The outcome has one entry per
/// record; a success is a Kinesis record or a spilled one.
async fn put_durably(
    state: &State,
    records: &[caudal_core::stream::Record],
    lambda_deadline_ms: u64,
) -> (PutOutcome, SpillReport) {
    if records.is_empty() {
        let none = PutOutcome {
            results: Vec::new(),
            calls: 0,
        };
        return (none, SpillReport::default());
    }
    let cfg = &state.config;
    let deadline = put_deadline_policy(cfg.put_deadline).deadline(lambda_deadline_ms);
    let now = Instant::now();
    let probe_only = state.spill.is_some() && state.breaker.is_open(now);
    let (kinesis_deadline, kinesis_retry) = match &state.spill {
        // Kinesis has just refused everything: one short attempt, then the spill path.
        Some(_) if probe_only => (
            deadline.min(now + spill::BREAKER_PROBE),
            RetryPolicy {
                max_attempts: 1,
                ..state.retry
            },
        ),
        Some(t) => (
            spill::kinesis_deadline(deadline, t.reserve, now),
            state.retry,
        ),
        None => (deadline, state.retry),
    };
    let mut outcome = kinesis::put_records(
        &state.kinesis,
        &cfg.stream_name,
        records,
        &kinesis_retry,
        kinesis_deadline,
    )
    .await;
    state.breaker.record(&outcome, Instant::now());
    let report = match &state.spill {
        Some(target) => {
            let now = time::OffsetDateTime::now_utc();
            spill::spill_failed(target, records, &mut outcome, &state.retry, deadline, now).await
        }
        None => SpillReport::default(),
    };
    (outcome, report)
}

fn log_spill(request_id: &str, spilled: &SpillReport) {
    if let Some(key) = &spilled.key {
        tracing::warn!(
            request_id,
            spilled = spilled.spilled,
            key = key.as_str(),
            s3_attempts = spilled.attempts,
            "kinesis did not take every event in time: the rest spilled to S3"
        );
    }
    if let Some(e) = &spilled.error {
        tracing::error!(
            request_id,
            error = %e,
            code = e.code.as_str(),
            "spill write failed: those events are answered retry"
        );
    }
}

/// Optional ingest-time schema validation with the rules engine.
/// `snowplow`: the event is Snowplow's, validated as the rules see it ([`snowplow::view`]).
fn schema_check(state: &State, ev: &Event<'_>, snowplow: bool) -> Option<(RejectCode, String)> {
    let rules = state.config.schema_rules.as_ref()?;
    let value = if snowplow {
        snowplow::view(ev.raw.as_bytes()).map_err(|e| e.to_string())
    } else {
        serde_json::from_str::<Value>(ev.raw).map_err(|e| e.to_string())
    };
    let value = match value {
        Ok(v) => v,
        // Already validated (the scanner's depth limit is below serde_json's recursion
        // limit), so this is not expected.
        Err(e) => return Some((RejectCode::SchemaViolation, format!("cannot validate: {e}"))),
    };
    match rules.check_event(&ev.event_type, &value) {
        Ok(()) => None,
        Err(rej) => {
            let code = if rej.code == "unknown_type" {
                RejectCode::UnknownType
            } else {
                RejectCode::SchemaViolation
            };
            let reason = match rej.path {
                Some(p) if !p.is_empty() => format!("{} (at {p})", rej.message),
                _ => rej.message,
            };
            Some((code, reason))
        }
    }
}

fn log_refused(e: &Refused, request_id: &str) {
    tracing::info!(
        request_id,
        status = e.status(),
        code = e.code(),
        "request refused"
    );
}

fn log_outcome(receipt: &Receipt, outcome: &PutOutcome, status: u16, started: std::time::Instant) {
    let latency_ms = started.elapsed().as_millis() as u64;
    let first_error = outcome.results.iter().find_map(|r| r.as_ref().err());
    match first_error {
        None => tracing::info!(
            request_id = %receipt.request_id,
            status,
            accepted = receipt.accepted,
            rejected = receipt.rejected,
            retry = receipt.retry,
            put_calls = outcome.calls,
            latency_ms,
            "request done"
        ),
        Some(err) => {
            let permanent = outcome
                .results
                .iter()
                .filter(|r| matches!(r, Err(e) if !e.retryable))
                .count();
            // Permanent Kinesis errors (missing stream, access denied, KMS key disabled) are
            // ours, not the client's: the events are reported as `retry` and logged as errors.
            if permanent > 0 {
                tracing::error!(
                    request_id = %receipt.request_id,
                    status,
                    accepted = receipt.accepted,
                    retry = receipt.retry,
                    permanent,
                    put_calls = outcome.calls,
                    error = %err,
                    "events not stored: permanent Kinesis error"
                );
            } else {
                tracing::warn!(
                    request_id = %receipt.request_id,
                    status,
                    accepted = receipt.accepted,
                    rejected = receipt.rejected,
                    retry = receipt.retry,
                    put_calls = outcome.calls,
                    latency_ms,
                    error = %err,
                    "events not stored in time"
                );
            }
        }
    }
}

fn emit_metrics(
    request_id: &str,
    status: u16,
    [accepted, rejected, retry]: [usize; 3],
    [records, calls]: [usize; 2],
    spilled: &SpillReport,
    started: std::time::Instant,
) {
    Emf::new("ingest-api")
        .metric("EventsSpilled", spilled.spilled as f64, Unit::Count)
        .metric(
            "SpillFailures",
            f64::from(u8::from(spilled.error.is_some())),
            Unit::Count,
        )
        .metric("EventsAccepted", accepted as f64, Unit::Count)
        .metric("EventsRejected", rejected as f64, Unit::Count)
        .metric("EventsRetry", retry as f64, Unit::Count)
        .metric("PutRecordsCalls", calls as f64, Unit::Count)
        // With EventsAccepted, how well packing works: events per Kinesis record.
        .metric("KinesisRecords", records as f64, Unit::Count)
        .metric(
            "LatencyMs",
            started.elapsed().as_secs_f64() * 1000.0,
            Unit::Milliseconds,
        )
        .property("request_id", request_id)
        .property("status", status)
        .emit();
}

/// Run [`handler`] on a raw Lambda payload exactly as `lambda_http::run` would: the payload is
/// deserialized as API Gateway v1/v2 from its JSON bytes, and the response serialized in the
/// shape that API expects. The local stack and tests call this.
pub async fn invoke(
    state: &State,
    payload: Value,
    ctx: Context,
) -> Result<Value, lambda_runtime::Error> {
    let bytes = serde_json::to_vec(&payload)?;
    let request: LambdaRequest = serde_json::from_slice(&bytes)?;
    let response = serve(state, LambdaEvent::new(request, ctx)).await?;
    Ok(serde_json::to_value(response)?)
}

/// Serve one invocation as the Lambda runtime delivers it (what `main` runs):
/// [`guard_query`], then `lambda_http`'s conversion, [`handler`] and the response.
pub async fn serve(
    state: &State,
    mut event: LambdaEvent<LambdaRequest>,
) -> Result<impl serde::Serialize, lambda_http::Error> {
    guard_query(&mut event.payload);
    let mut adapter = lambda_http::Adapter::from(service_fn(|req: Request| handler(state, req)));
    adapter.call(event).await
}

/// Set by [`guard_query`] on a request whose query string a URI cannot hold; [`handler`]
/// answers it 400 (a client sending it itself only refuses its own request).
pub const INVALID_QUERY_HEADER: &str = "x-caudal-invalid-query";

/// `lambda_http` builds the request's URI from API Gateway's `rawQueryString` as the client
/// sent it and panics on one a URI cannot hold (a space, `"`, `<`, a control byte, more than
/// 64 KiB). Such a query is dropped before the conversion and the request marked with
/// [`INVALID_QUERY_HEADER`], so the client gets a 400 with the reason instead of a 500 its
/// tracker would retry forever.
pub fn guard_query(request: &mut LambdaRequest) {
    if let LambdaRequest::ApiGatewayV2(r) = request
        && let Some(q) = r.raw_query_string.as_deref()
        && !q.is_empty()
        && format!("/?{q}").parse::<lambda_http::http::Uri>().is_err()
    {
        r.raw_query_string = None;
        r.query_string_parameters = Default::default();
        r.headers
            .insert(INVALID_QUERY_HEADER, HeaderValue::from_static("1"));
    }
}
