//! The HTTP side: one POST route that dispatches on `X-Amz-Target: RedshiftData.<Operation>`,
//! validates input like the service does, and reads or updates the shared statement store.
//! Signatures are not checked; the target header is required.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::exec::drive;
use super::state::Shared;
use super::store::{Record, StatementRef, Sub, Submitted};
use super::translate::{Planned, plan};
use super::wire::{
    ApiError, BatchExecuteStatementInput, CancelStatementOutput, ErrorCode, ExecuteStatementInput,
    GetStatementResultInput, IdInput, ListStatementsInput, SqlParameter, Status, SubmitCommon,
    Target, json_response,
};
use crate::emulators::chaos::StatementFault;

/// Largest SQL text the service accepts.
pub const MAX_SQL_BYTES: usize = 100 * 1024;
/// Most SQL texts in one BatchExecuteStatement.
pub const MAX_BATCH_SQLS: usize = 40;

/// A validated submission, before it gets an id.
struct Submission {
    is_batch: bool,
    target: Target,
    statement_name: Option<String>,
    parameters: Vec<SqlParameter>,
    /// (SQL text, its plan) per sub-statement.
    subs: Vec<(String, Vec<Planned>)>,
    /// (token, request fingerprint).
    client_token: Option<(String, String)>,
    with_event: Option<bool>,
}

/// The single route.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = match dispatch(&shared, &headers, &body).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(code = e.code.as_str(), message = %e.message, "dataapi_request_rejected");
            e.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::Serialization,
            format!("could not parse the request body: {e}"),
        )
    })
}

async fn dispatch(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownOperation, "missing X-Amz-Target header"))?;
    let operation = target.strip_prefix("RedshiftData.").ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownOperation,
            format!("X-Amz-Target '{target}' is not a RedshiftData operation"),
        )
    })?;
    match operation {
        "ExecuteStatement" => {
            let input: ExecuteStatementInput = parse(body)?;
            Ok(ok(&execute(shared, input)?))
        }
        "BatchExecuteStatement" => {
            let input: BatchExecuteStatementInput = parse(body)?;
            Ok(ok(&batch_execute(shared, input)?))
        }
        "DescribeStatement" => {
            let input: IdInput = parse(body)?;
            let r = StatementRef::parse(&input.id)?;
            Ok(ok(&shared.store().describe(&r)?))
        }
        "GetStatementResult" => {
            let input: GetStatementResultInput = parse(body)?;
            let r = StatementRef::parse(&input.id)?;
            let out = shared.store().result(
                &r,
                input.next_token.as_deref(),
                shared.opts.result_page_rows,
            )?;
            Ok(ok(&out))
        }
        "ListStatements" => {
            let input: ListStatementsInput = parse(body)?;
            Ok(ok(&shared.store().list(&input)?))
        }
        "CancelStatement" => {
            let input: IdInput = parse(body)?;
            let r = StatementRef::parse(&input.id)?;
            let token = shared.store().cancel(&r, OffsetDateTime::now_utc())?;
            if let Some(token) = token
                && let Err(error) = token.cancel_query(tokio_postgres::NoTls).await
            {
                // The abort flag is set regardless; the executor stops at its next step.
                tracing::warn!(%error, id = %r.id, "dataapi_cancel_failed");
            }
            tracing::info!(id = %r.id, "dataapi_statement_cancel_requested");
            Ok(ok(&CancelStatementOutput { status: true }))
        }
        other => Err(ApiError::new(
            ErrorCode::UnknownOperation,
            format!("operation {other} is not implemented by the local Data API endpoint"),
        )),
    }
}

fn ok<T: serde::Serialize>(body: &T) -> Response {
    json_response(StatusCode::OK, body)
}

/// Checks the target fields shared by both submit operations.
fn check_target(shared: &Shared, common: &SubmitCommon) -> Result<(), ApiError> {
    let target = &common.target;
    if common.session_id.is_some() || common.session_keep_alive_seconds.is_some_and(|k| k > 0) {
        return Err(ApiError::validation(
            "sessions (SessionId, SessionKeepAliveSeconds) are not supported by the local Data API \
             endpoint",
        ));
    }
    if common.result_format.as_deref().is_some_and(|f| f != "JSON") {
        return Err(ApiError::validation(
            "only ResultFormat JSON is supported by the local Data API endpoint",
        ));
    }
    match (&target.cluster_identifier, &target.workgroup_name) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "specify either ClusterIdentifier or WorkgroupName, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::validation(
                "either ClusterIdentifier or WorkgroupName is required",
            ));
        }
        _ => {}
    }
    if target.secret_arn.is_some() && target.db_user.is_some() {
        return Err(ApiError::validation(
            "specify either SecretArn or DbUser, not both",
        ));
    }
    match &target.database {
        None => Err(ApiError::validation("Database is required")),
        Some(db) if *db != shared.database => Err(ApiError::validation(format!(
            "database \"{db}\" does not exist (the local endpoint serves \"{}\")",
            shared.database
        ))),
        Some(_) => Ok(()),
    }
}

fn check_sql(sql: &str) -> Result<(), ApiError> {
    if sql.trim().is_empty() {
        return Err(ApiError::validation("Sql must not be empty"));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::validation(format!(
            "Sql is {} bytes; the maximum is {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    Ok(())
}

fn params_of(p: &[SqlParameter]) -> Vec<(String, String)> {
    p.iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect()
}

fn execute(
    shared: &Arc<Shared>,
    input: ExecuteStatementInput,
) -> Result<super::wire::SubmitOutput, ApiError> {
    check_target(shared, &input.common)?;
    check_sql(&input.sql)?;
    let planned = plan(&input.sql, &params_of(&input.parameters))
        .map_err(|e| ApiError::validation(e.to_string()))?;
    let fingerprint = serde_json::json!({
        "op": "ExecuteStatement", "sql": input.sql, "params": input.parameters,
        "target": input.common.target, "name": input.common.statement_name,
    })
    .to_string();
    submit(
        shared,
        Submission {
            is_batch: false,
            target: input.common.target,
            statement_name: input.common.statement_name,
            parameters: input.parameters,
            subs: vec![(input.sql, planned)],
            client_token: input.common.client_token.map(|t| (t, fingerprint)),
            with_event: input.common.with_event,
        },
    )
}

fn batch_execute(
    shared: &Arc<Shared>,
    input: BatchExecuteStatementInput,
) -> Result<super::wire::SubmitOutput, ApiError> {
    check_target(shared, &input.common)?;
    if input.sqls.is_empty() || input.sqls.len() > MAX_BATCH_SQLS {
        return Err(ApiError::validation(format!(
            "Sqls must hold 1 to {MAX_BATCH_SQLS} statements, got {}",
            input.sqls.len()
        )));
    }
    let mut subs = Vec::with_capacity(input.sqls.len());
    for sql in &input.sqls {
        check_sql(sql)?;
        let planned = plan(sql, &[]).map_err(|e| ApiError::validation(e.to_string()))?;
        subs.push((sql.clone(), planned));
    }
    let fingerprint = serde_json::json!({
        "op": "BatchExecuteStatement", "sqls": input.sqls, "target": input.common.target,
        "name": input.common.statement_name,
    })
    .to_string();
    submit(
        shared,
        Submission {
            is_batch: true,
            target: input.common.target,
            statement_name: input.common.statement_name,
            parameters: Vec::new(),
            subs,
            client_token: input.common.client_token.map(|t| (t, fingerprint)),
            with_event: input.common.with_event,
        },
    )
}

fn submit(shared: &Arc<Shared>, sub: Submission) -> Result<super::wire::SubmitOutput, ApiError> {
    let Submission {
        is_batch,
        target,
        statement_name,
        parameters,
        subs,
        client_token,
        with_event,
    } = sub;
    let now = OffsetDateTime::now_utc();
    let id = uuid::Uuid::new_v4().to_string();
    // (sub-statements, any COPY, no transaction control of its own) for the chaos decision.
    let shape = (
        subs.len(),
        subs.iter()
            .flat_map(|(_, p)| p)
            .any(|p| matches!(p, Planned::Copy(_))),
        !subs
            .iter()
            .flat_map(|(_, p)| p)
            .any(Planned::is_transaction_control),
    );
    let mut store = shared.store();
    let subs = subs
        .into_iter()
        .map(|(sql, planned)| {
            let qid = store.next_query_id();
            Sub::new(sql, planned, now, qid)
        })
        .collect();
    let record = Record {
        id: id.clone(),
        is_batch,
        target,
        statement_name,
        parameters,
        created_at: now,
        status: Status::Submitted,
        error: None,
        updated_at: now,
        pid: -1,
        subs,
        abort: Arc::default(),
        cancel: None,
    };
    let submitted = store.submit(record, client_token, shared.opts.max_active_statements)?;
    drop(store);
    match submitted {
        Submitted::New(out) => {
            if with_event == Some(true) {
                tracing::debug!(id, "dataapi_with_event_ignored");
            }
            tracing::info!(id, batch = is_batch, "dataapi_statement_submitted");
            let fault = match &shared.opts.chaos {
                Some(chaos) => chaos.statement_fault(shape.0, shape.1, shape.2),
                None => StatementFault::None,
            };
            if fault != StatementFault::None {
                tracing::info!(id, fault = ?fault, "dataapi_chaos_fault");
            }
            tokio::spawn(drive(shared.clone(), id, fault));
            Ok(out)
        }
        Submitted::Replay(out) => {
            tracing::info!(id = %out.id, "dataapi_client_token_replayed");
            Ok(out)
        }
    }
}
