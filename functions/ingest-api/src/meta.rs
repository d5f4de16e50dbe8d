//! Server-side request metadata from the API Gateway request context.
//!
//! Works for HTTP API (payload v2) and REST API (payload v1) events as `lambda_http` exposes them.
//! The principal is what the authorizer established, never a header the client could forge:
//! IAM user ARN, then JWT/Cognito `sub`, then a Lambda authorizer's `principalId`.

use caudal_core::envelope::RequestMeta;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde_json::Value;
use time::OffsetDateTime;

/// Metadata recorded in every envelope of this request. `fallback_request_id` is used when the
/// event has no API Gateway request id (e.g. a hand-written test event).
pub fn request_meta(req: &Request, fallback_request_id: &str) -> RequestMeta {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut meta = RequestMeta {
        request_id: String::new(),
        received_at: Some(caudal_core::envelope::format_timestamp(
            OffsetDateTime::now_utc(),
        )),
        ..RequestMeta::default()
    };
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) => {
            meta.request_id = c.request_id.clone().unwrap_or_default();
            meta.stage = c.stage.clone();
            meta.source_ip = c.http.source_ip.clone();
            meta.user_agent = c.http.user_agent.clone();
            meta.principal = c.authorizer.as_ref().and_then(|a| {
                a.iam
                    .as_ref()
                    .and_then(|iam| iam.user_arn.clone())
                    .or_else(|| a.jwt.as_ref().and_then(|j| j.claims.get("sub").cloned()))
                    .or_else(|| string_field(a.fields.get("principalId")))
            });
        }
        Some(RequestContext::ApiGatewayV1(c)) => {
            meta.request_id = c.request_id.clone().unwrap_or_default();
            meta.stage = c.stage.clone();
            meta.source_ip = c.identity.source_ip.clone();
            meta.user_agent = c.identity.user_agent.clone();
            let fields = &c.authorizer.fields;
            meta.principal = c
                .identity
                .user_arn
                .clone()
                .or_else(|| {
                    fields
                        .get("claims")
                        .and_then(|claims| string_field(claims.get("sub")))
                })
                .or_else(|| string_field(fields.get("principalId")));
        }
        _ => {}
    }
    if meta.request_id.is_empty() {
        meta.request_id = fallback_request_id.to_owned();
    }
    if meta.user_agent.is_none() {
        meta.user_agent = header("user-agent");
    }
    meta
}

fn string_field(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The request path relative to the API stage: `lambda_http` gives the path as sent, which for a
/// named stage of an HTTP API starts with `/<stage>`; REST API paths never include it.
pub fn route_path(req: &Request) -> String {
    let raw = req.raw_http_path();
    let path = if raw.is_empty() {
        req.uri().path()
    } else {
        raw
    };
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) => c.stage.as_deref(),
        _ => None,
    };
    if let Some(stage) = stage.filter(|s| !s.is_empty() && *s != "$default")
        && let Some(rest) = path.strip_prefix('/').and_then(|p| p.strip_prefix(stage))
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return if rest.is_empty() {
            "/".into()
        } else {
            rest.into()
        };
    }
    path.to_owned()
}
