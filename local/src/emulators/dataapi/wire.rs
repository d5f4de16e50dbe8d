//! The AWS JSON 1.1 shapes of the Redshift Data API operations we serve, and its errors.
//!
//! Field names follow the service model exactly as `aws-sdk-redshiftdata` (de)serializes them
//! (`protocol_serde/shape_*.rs`): PascalCase members, camelCase inside `Field` and
//! `ColumnMetadata`, timestamps as epoch seconds (fractional) numbers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The content type of every request and response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A named parameter `{name, value}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlParameter {
    /// Placeholder name without the colon.
    pub name: String,
    /// Value as text; PostgreSQL casts the literal to the context's type.
    pub value: String,
}

/// Where and as whom a statement runs (shared by Execute and BatchExecute).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Target {
    /// Database name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Provisioned cluster identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_identifier: Option<String>,
    /// Serverless workgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workgroup_name: Option<String>,
    /// Secrets Manager ARN with the credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    /// Database user (temporary credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_user: Option<String>,
}

/// ExecuteStatement input.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecuteStatementInput {
    /// The SQL text.
    pub sql: String,
    /// Named parameters.
    #[serde(default)]
    pub parameters: Vec<SqlParameter>,
    /// Target, identity and options shared with the other submit operation.
    #[serde(flatten)]
    pub common: SubmitCommon,
}

/// The members ExecuteStatement and BatchExecuteStatement share.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubmitCommon {
    /// Target and identity.
    #[serde(flatten)]
    pub target: Target,
    /// Idempotency token.
    pub client_token: Option<String>,
    /// Name for ListStatements.
    pub statement_name: Option<String>,
    /// Send an EventBridge event when done (ignored locally).
    pub with_event: Option<bool>,
    /// JSON (default) or CSV.
    pub result_format: Option<String>,
    /// Session reuse (not supported locally).
    pub session_id: Option<String>,
    /// Session reuse (not supported locally).
    pub session_keep_alive_seconds: Option<i64>,
}

/// BatchExecuteStatement input.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchExecuteStatementInput {
    /// The SQL texts, run in order in one transaction.
    pub sqls: Vec<String>,
    /// Target, identity and options shared with the other submit operation.
    #[serde(flatten)]
    pub common: SubmitCommon,
}

/// ExecuteStatement / BatchExecuteStatement output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubmitOutput {
    /// Statement id (UUID).
    pub id: String,
    /// Submission time.
    pub created_at: f64,
    /// Echo of the target.
    #[serde(flatten)]
    pub target: Target,
}

/// Input naming one statement (DescribeStatement, CancelStatement).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdInput {
    /// Statement id, optionally with a `:N` sub-statement suffix.
    pub id: String,
}

/// GetStatementResult input.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetStatementResultInput {
    /// Statement id, `<id>:N` for a batch's sub-statement.
    pub id: String,
    /// Page token from a previous call.
    pub next_token: Option<String>,
}

/// ListStatements input.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListStatementsInput {
    /// Page token.
    pub next_token: Option<String>,
    /// Page size (1–100, default 100).
    pub max_results: Option<i64>,
    /// Prefix of the statement name.
    pub statement_name: Option<String>,
    /// Status filter (`ALL` or a status).
    pub status: Option<String>,
    /// Only this database.
    pub database: Option<String>,
    /// Only this cluster.
    pub cluster_identifier: Option<String>,
    /// Only this workgroup.
    pub workgroup_name: Option<String>,
}

/// The lifecycle of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Accepted, not yet picked up.
    Submitted,
    /// Picked up, waiting for a connection.
    Picked,
    /// Running in PostgreSQL.
    Started,
    /// Done successfully.
    Finished,
    /// Done with an error.
    Failed,
    /// Cancelled (or not run because an earlier batch statement failed).
    Aborted,
}

impl Status {
    /// Whether the statement still runs (or will).
    pub fn is_active(self) -> bool {
        matches!(self, Status::Submitted | Status::Picked | Status::Started)
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "SUBMITTED" => Status::Submitted,
            "PICKED" => Status::Picked,
            "STARTED" => Status::Started,
            "FINISHED" => Status::Finished,
            "FAILED" => Status::Failed,
            "ABORTED" => Status::Aborted,
            _ => return None,
        })
    }
}

/// One sub-statement of a batch in DescribeStatement.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubStatementData {
    /// `<id>:N`.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Error message when FAILED/ABORTED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The SQL text.
    pub query_string: String,
    /// Execution time in nanoseconds.
    pub duration: i64,
    /// Whether GetStatementResult has rows for it.
    pub has_result_set: bool,
    /// Rows returned or affected; -1 = unknown.
    pub result_rows: i64,
    /// Result size in bytes; -1 = none.
    pub result_size: i64,
    /// Submission time.
    pub created_at: f64,
    /// Last change.
    pub updated_at: f64,
    /// Query id (a local counter).
    pub redshift_query_id: i64,
}

/// DescribeStatement output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeStatementOutput {
    /// Statement id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Error message when FAILED/ABORTED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The SQL text (absent for a batch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_string: Option<String>,
    /// Execution time in nanoseconds.
    pub duration: i64,
    /// Whether a result set exists.
    pub has_result_set: bool,
    /// Rows returned or affected; -1 = unknown.
    pub result_rows: i64,
    /// Result size in bytes; -1 = none.
    pub result_size: i64,
    /// Submission time.
    pub created_at: f64,
    /// Last change.
    pub updated_at: f64,
    /// PostgreSQL backend pid that ran it (-1 before it started).
    pub redshift_pid: i64,
    /// Query id (a local counter).
    pub redshift_query_id: i64,
    /// Parameters as submitted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<SqlParameter>,
    /// Batch sub-statements.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sub_statements: Vec<SubStatementData>,
    /// JSON or CSV.
    pub result_format: &'static str,
    /// Target and identity.
    #[serde(flatten)]
    pub target: Target,
}

/// One result value: a JSON union with exactly one member.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Field {
    /// SQL NULL.
    IsNull(bool),
    /// bool.
    BooleanValue(bool),
    /// Integer types.
    LongValue(i64),
    /// Finite floating point.
    DoubleValue(f64),
    /// Everything else, as PostgreSQL's text output (timestamps, numeric, json, …).
    StringValue(String),
}

/// Column metadata of a result set.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMetadata {
    /// Column name.
    pub name: String,
    /// Column label (same as the name).
    pub label: String,
    /// Redshift-style type name (`int8`, `varchar`, `timestamptz`, `super`, …).
    pub type_name: String,
    /// 1 = nullable (unknown for computed columns, as in JDBC's `columnNullableUnknown`).
    pub nullable: i32,
    /// Numeric types.
    pub is_signed: bool,
    /// Text types.
    pub is_case_sensitive: bool,
    /// Never.
    pub is_currency: bool,
    /// Declared precision (0 if none).
    pub precision: i32,
    /// Declared scale (0 if none).
    pub scale: i32,
    /// Declared length (0 if none).
    pub length: i32,
    /// Unknown for query results.
    pub schema_name: String,
    /// Unknown for query results.
    pub table_name: String,
}

/// GetStatementResult output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetStatementResultOutput {
    /// Rows of fields.
    pub records: Vec<Vec<Field>>,
    /// One entry per column.
    pub column_metadata: Vec<ColumnMetadata>,
    /// Rows in the whole result.
    pub total_num_rows: i64,
    /// Token for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One entry of ListStatements.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatementData {
    /// Statement id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// SQL of a single statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_string: Option<String>,
    /// SQLs of a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_strings: Option<Vec<String>>,
    /// Whether it is a batch.
    pub is_batch_statement: bool,
    /// Name given at submission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_name: Option<String>,
    /// Secret ARN given at submission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    /// Parameters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<SqlParameter>,
    /// Submission time.
    pub created_at: f64,
    /// Last change.
    pub updated_at: f64,
    /// JSON or CSV.
    pub result_format: &'static str,
}

/// ListStatements output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListStatementsOutput {
    /// Newest first.
    pub statements: Vec<StatementData>,
    /// Token for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// CancelStatement output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CancelStatementOutput {
    /// Whether the cancel was accepted.
    pub status: bool,
}

/// The error codes we return (`__type`). All are the caller's problem and permanent except
/// `ActiveStatementsExceeded` (retry later) and `InternalServer` (retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Bad input.
    Validation,
    /// Unknown statement id.
    ResourceNotFound,
    /// Too many statements running.
    ActiveStatementsExceeded,
    /// Missing or unknown `X-Amz-Target`.
    UnknownOperation,
    /// Body is not the expected JSON.
    Serialization,
    /// Our bug.
    InternalServer,
}

impl ErrorCode {
    /// The `__type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Validation => "ValidationException",
            ErrorCode::ResourceNotFound => "ResourceNotFoundException",
            ErrorCode::ActiveStatementsExceeded => "ActiveStatementsExceededException",
            ErrorCode::UnknownOperation => "UnknownOperationException",
            ErrorCode::Serialization => "SerializationException",
            ErrorCode::InternalServer => "InternalServerException",
        }
    }

    /// Whether the caller may retry the same request.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::ActiveStatementsExceeded | ErrorCode::InternalServer
        )
    }
}

/// An API error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// The error code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// The statement id, for ResourceNotFoundException.
    pub resource_id: Option<String>,
}

impl ApiError {
    /// A ValidationException.
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError {
            code: ErrorCode::Validation,
            message: message.into(),
            resource_id: None,
        }
    }

    /// A ResourceNotFoundException for `id`.
    pub fn not_found(id: &str) -> ApiError {
        ApiError {
            code: ErrorCode::ResourceNotFound,
            message: format!("Query does not exist: {id}"),
            resource_id: Some(id.to_string()),
        }
    }

    /// Another code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            resource_id: None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    kind: &'static str,
    // The SDK reads `Message` for modelled errors and `message` for generic ones.
    #[serde(rename = "Message")]
    message_upper: &'a str,
    message: &'a str,
    #[serde(rename = "ResourceId", skip_serializing_if = "Option::is_none")]
    resource_id: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.code {
            ErrorCode::InternalServer => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = ErrorBody {
            kind: self.code.as_str(),
            message_upper: &self.message,
            message: &self.message,
            resource_id: self.resource_id.as_deref(),
        };
        json_response(status, &body)
    }
}

/// Serializes `body` as an AWS JSON 1.1 response.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = (status, bytes).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            resp
        }
        Err(error) => {
            tracing::error!(%error, "dataapi_response_serialize_failed");
            let mut resp = (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"__type":"InternalServerException","message":"response serialization failed"}"#,
            )
                .into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            resp
        }
    }
}

/// Epoch seconds with millisecond precision, as the service sends them.
pub fn epoch_seconds(t: time::OffsetDateTime) -> f64 {
    let millis = t.unix_timestamp_nanos() / 1_000_000;
    millis as f64 / 1000.0
}
