//! Lambda's `Invoke` API (`POST /2015-03-31/functions/{name}/invocations`, synchronous
//! `RequestResponse`) in front of the in-process functions, so a client of the real API —
//! `caudal redrive raw-failures` invoking the raw-writer — runs against the local stack
//! unchanged.
//!
//! As Lambda answers: 200 with the function's response; a function error is still 200, with
//! `X-Amz-Function-Error: Unhandled` and `{"errorMessage", "errorType"}` as the body; an unknown
//! function is 404 `ResourceNotFoundException`; a payload over 6 MB is 413
//! `RequestTooLargeException`. Only `RequestResponse` is served: `Event` (asynchronous) and
//! `DryRun` are refused with 400 `InvalidParameterValueException`, not faked.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::lambda::{InvokeError, LocalFunction};

/// Functions by name and by ARN.
pub type Functions = BTreeMap<String, Arc<LocalFunction>>;

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [
            ("x-amzn-errortype", kind),
            ("content-type", "application/json"),
        ],
        json!({"__type": kind, "message": message, "Type": "User"}).to_string(),
    )
        .into_response()
}

async fn invoke(
    State(fns): State<Arc<Functions>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(f) = fns.get(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {name}"),
        );
    };
    let kind = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    if kind != "RequestResponse" {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!("the local stack serves InvocationType RequestResponse only, not {kind}"),
        );
    }
    let payload: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    &format!("Could not parse request body into json: {e}"),
                );
            }
        }
    };
    match f.invoke(payload).await {
        Ok(v) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response(),
        Err(InvokeError::PayloadTooLarge(n)) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            &format!(
                "Request must be smaller than 6291456 bytes for the InvokeFunction operation ({n})"
            ),
        ),
        Err(e) => (
            StatusCode::OK,
            [
                ("x-amz-function-error", "Unhandled"),
                ("content-type", "application/json"),
            ],
            json!({"errorMessage": e.to_string(), "errorType": "Runtime.Error"}).to_string(),
        )
            .into_response(),
    }
}

/// Serves `functions` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    functions: Functions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .with_state(Arc::new(functions));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
