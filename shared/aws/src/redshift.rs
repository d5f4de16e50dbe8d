//! Redshift Data API adapter: submit, follow and read statements.
//!
//! The Data API is asynchronous: `ExecuteStatement` / `BatchExecuteStatement` only *submit* and
//! return a statement id; the statement then moves SUBMITTED → PICKED → STARTED → FINISHED |
//! FAILED | ABORTED and is followed with `DescribeStatement`. This module
//!
//! * submits with an optional `ClientToken` ([`execute`], [`batch_execute`]) — the Data API
//!   returns the *same* statement id for a repeated token (for 8 h), which is what makes a retried
//!   Lambda re-attach to its own load instead of starting a second one;
//! * polls with the shared backoff until a final status or a deadline ([`wait`]), so a caller
//!   never blocks past its Lambda deadline on a long COPY;
//! * reads small result sets ([`fetch_result`], following `NextToken`) into domain [`Value`]s;
//! * classifies every SDK error into [`CallError`] (code and message kept) and every final
//!   outcome into [`WaitError`], each of which knows whether trying again may help.
//!
//! `BatchExecuteStatement` runs its statements as one transaction; its statement text is built by
//! the caller from validated parts only (see the rules loader's `sql` module).

use std::time::Duration;

use aws_sdk_redshiftdata::Client;
use aws_sdk_redshiftdata::types::{Field, SqlParameter, StatusString};
use tokio::time::Instant;

use caudal_core::retry::{CallError, RetryPolicy, retry_call};
use caudal_core::warehouse::{
    Connection, Described, Param, PollPolicy, QueryError, Status, SubStatement, Value, WaitError,
};

/// Redshift Data API error codes that mean "busy, try again" in addition to the shared list.
const REDSHIFT_RETRYABLE_CODES: &[&str] = &[
    "ActiveSessionsExceededException",
    "ActiveWaitingRequestsExceededException",
    "DatabaseConnectionException",
];

/// The statement id a submission must return; its absence is a malformed (permanent) answer.
fn statement_id(id: Option<&str>, operation: &str) -> Result<String, CallError> {
    id.map(str::to_owned).ok_or_else(|| CallError {
        retryable: false,
        code: "MalformedResponse".into(),
        message: format!("{operation} returned no statement id"),
    })
}

/// Classify a Data API SDK error: the shared classification plus the Data API's own "busy"
/// errors.
fn classify<E>(
    err: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> CallError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut e = crate::call_error(err);
    if REDSHIFT_RETRYABLE_CODES.contains(&e.code.as_str()) {
        e.retryable = true;
    }
    e
}

fn params(params: &[Param]) -> Result<Option<Vec<SqlParameter>>, CallError> {
    if params.is_empty() {
        return Ok(None);
    }
    params
        .iter()
        .map(|p| {
            SqlParameter::builder()
                .name(&p.name)
                .value(&p.value)
                .build()
                .map_err(|e| CallError {
                    retryable: false,
                    code: "InvalidParameter".into(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Submit one statement (with named parameters) and return its statement id.
///
/// With `client_token`, a resubmission of the same request returns the original statement id
/// instead of running it again.
pub async fn execute(
    client: &Client,
    conn: &Connection,
    sql: &str,
    parameters: &[Param],
    client_token: Option<&str>,
    policy: &RetryPolicy,
    deadline: Instant,
) -> Result<String, CallError> {
    let sdk_params = params(parameters)?;
    let (result, _) = retry_call(policy, deadline, || async {
        let (workgroup, cluster) = conn.target_names();
        let out = client
            .execute_statement()
            .sql(sql)
            .database(&conn.database)
            .set_workgroup_name(workgroup)
            .set_cluster_identifier(cluster)
            .set_secret_arn(conn.secret_arn.clone())
            .set_db_user(conn.db_user.clone())
            .set_parameters(sdk_params.clone())
            .set_client_token(client_token.map(str::to_owned))
            .send()
            .await
            .map_err(|e| classify(&e))?;
        statement_id(out.id(), "ExecuteStatement")
    })
    .await;
    result
}

/// Submit several statements as **one transaction** and return the batch's statement id.
///
/// With `client_token`, a resubmission returns the original statement id (for 8 h), so a retried
/// caller re-attaches to the load it already started.
pub async fn batch_execute(
    client: &Client,
    conn: &Connection,
    sqls: &[String],
    client_token: Option<&str>,
    policy: &RetryPolicy,
    deadline: Instant,
) -> Result<String, CallError> {
    let (result, _) = retry_call(policy, deadline, || async {
        let (workgroup, cluster) = conn.target_names();
        let out = client
            .batch_execute_statement()
            .set_sqls(Some(sqls.to_vec()))
            .database(&conn.database)
            .set_workgroup_name(workgroup)
            .set_cluster_identifier(cluster)
            .set_secret_arn(conn.secret_arn.clone())
            .set_db_user(conn.db_user.clone())
            .set_client_token(client_token.map(str::to_owned))
            .send()
            .await
            .map_err(|e| classify(&e))?;
        statement_id(out.id(), "BatchExecuteStatement")
    })
    .await;
    result
}

/// One `DescribeStatement` call (with retries of transient errors).
pub async fn describe(
    client: &Client,
    id: &str,
    policy: &RetryPolicy,
    deadline: Instant,
) -> Result<Described, CallError> {
    let (result, _) = retry_call(policy, deadline, || async {
        let out = client
            .describe_statement()
            .id(id)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok::<_, CallError>(Described {
            id: out.id().to_owned(),
            status: status_from_sdk(out.status()),
            error: out.error().map(str::to_owned),
            duration: Duration::from_nanos(u64::try_from(out.duration()).unwrap_or(0)),
            result_rows: out.result_rows(),
            has_result_set: out.has_result_set().unwrap_or(false),
            sub_statements: out
                .sub_statements()
                .iter()
                .map(|s| SubStatement {
                    id: s.id().to_owned(),
                    status: s
                        .status()
                        .map(|st| st.as_str().to_owned())
                        .unwrap_or_default(),
                    error: s.error().map(str::to_owned),
                    result_rows: s.result_rows(),
                    has_result_set: s.has_result_set().unwrap_or(false),
                })
                .collect(),
            created_at: out
                .created_at()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
        })
    })
    .await;
    result
}

/// Poll `id` until it reaches a final status or `deadline` is near.
///
/// Returns the final description for FINISHED; FAILED and ABORTED become [`WaitError`]s with the
/// engine's message. When the next poll would land after `deadline`, returns
/// [`WaitError::StillRunning`] — the statement's fate is then unknown and the caller must not
/// assume it failed. `on_poll` is told about every description (for logs and tests).
pub async fn wait(
    client: &Client,
    id: &str,
    policy: &PollPolicy,
    deadline: Instant,
    mut on_poll: impl FnMut(&Described),
) -> Result<Described, WaitError> {
    let mut polls = 0u32;
    loop {
        polls += 1;
        let d = describe(client, id, &policy.retry, deadline)
            .await
            .map_err(|source| WaitError::Call {
                id: id.to_owned(),
                source,
            })?;
        on_poll(&d);
        match d.status {
            Status::Finished => return Ok(d),
            Status::Failed => {
                return Err(WaitError::Failed {
                    id: id.to_owned(),
                    error: d
                        .error
                        .clone()
                        .unwrap_or_else(|| "no error message".to_owned()),
                });
            }
            Status::Aborted => return Err(WaitError::Aborted { id: id.to_owned() }),
            _ => {}
        }
        let delay = policy.delay(polls);
        if Instant::now() + delay >= deadline {
            return Err(WaitError::StillRunning {
                id: id.to_owned(),
                status: d.status,
            });
        }
        tokio::time::sleep(delay).await;
    }
}

/// Read a statement's whole result set (following `NextToken`). For small results only: the
/// Data API caps a result at 100 MB and pages of 1,000s of rows.
pub async fn fetch_result(
    client: &Client,
    id: &str,
    policy: &RetryPolicy,
    deadline: Instant,
) -> Result<Vec<Vec<Value>>, CallError> {
    let mut rows = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (result, _) = retry_call(policy, deadline, || {
            let token = token.clone();
            async move {
                client
                    .get_statement_result()
                    .id(id)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| classify(&e))
            }
        })
        .await;
        let out = result?;
        rows.extend(
            out.records()
                .iter()
                .map(|r| r.iter().map(value_from_sdk).collect::<Vec<_>>()),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(rows),
        }
    }
}

/// Run a small query: submit with parameters, wait until FINISHED, fetch the rows.
pub async fn query(
    client: &Client,
    conn: &Connection,
    sql: &str,
    parameters: &[Param],
    policy: &PollPolicy,
    deadline: Instant,
) -> Result<Vec<Vec<Value>>, QueryError> {
    let id = execute(client, conn, sql, parameters, None, &policy.retry, deadline).await?;
    tracing::debug!(statement_id = %id, "query submitted");
    let d = wait(client, &id, policy, deadline, |_| {}).await?;
    if !d.has_result_set {
        return Ok(Vec::new());
    }
    Ok(fetch_result(client, &id, &policy.retry, deadline).await?)
}

fn status_from_sdk(s: Option<&StatusString>) -> Status {
    match s {
        Some(StatusString::Submitted) => Status::Submitted,
        Some(StatusString::Picked) => Status::Picked,
        Some(StatusString::Started) => Status::Started,
        Some(StatusString::Finished) => Status::Finished,
        Some(StatusString::Failed) => Status::Failed,
        Some(StatusString::Aborted) => Status::Aborted,
        Some(other) => Status::Other(other.as_str().to_owned()),
        None => Status::Other("missing".to_owned()),
    }
}

fn value_from_sdk(f: &Field) -> Value {
    match f {
        Field::IsNull(true) => Value::Null,
        Field::BooleanValue(b) => Value::Bool(*b),
        Field::LongValue(v) => Value::Long(*v),
        Field::DoubleValue(v) => Value::Double(*v),
        Field::StringValue(s) => Value::String(s.clone()),
        Field::BlobValue(b) => Value::Blob(b.as_ref().to_vec()),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementOutput;
    use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
    use aws_sdk_redshiftdata::operation::execute_statement::ExecuteStatementOutput;
    use aws_sdk_redshiftdata::operation::get_statement_result::GetStatementResultOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use caudal_core::retry::Retryable;
    use caudal_core::warehouse::Target;
    use std::sync::{Arc, Mutex};

    fn conn() -> Connection {
        Connection {
            target: Target::Workgroup("wg".into()),
            database: "dev".into(),
            secret_arn: Some("arn:aws:secretsmanager:us-east-1:1:secret:s".into()),
            db_user: None,
        }
    }

    fn described(id: &str, status: StatusString) -> DescribeStatementOutput {
        DescribeStatementOutput::builder()
            .id(id)
            .status(status)
            .has_result_set(true)
            .build()
            .expect("valid output")
    }

    /// Error metadata as the deserializer would set it from a real response.
    fn meta(code: &str, message: &str) -> aws_smithy_types::error::ErrorMetadata {
        aws_smithy_types::error::ErrorMetadata::builder()
            .code(code)
            .message(message)
            .build()
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(600)
    }

    #[tokio::test(start_paused = true)]
    async fn execute_sends_target_parameters_and_token() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let rule = mock!(Client::execute_statement)
            .match_requests(move |r| {
                s.lock().unwrap().push((
                    r.sql().map(str::to_owned),
                    r.workgroup_name().map(str::to_owned),
                    r.cluster_identifier().map(str::to_owned),
                    r.database().map(str::to_owned),
                    r.secret_arn().map(str::to_owned),
                    r.client_token().map(str::to_owned),
                    r.parameters()
                        .iter()
                        .map(|p| (p.name().to_owned(), p.value().to_owned()))
                        .collect::<Vec<_>>(),
                ));
                true
            })
            .then_output(|| ExecuteStatementOutput::builder().id("st-1").build());
        let client = mock_client!(aws_sdk_redshiftdata, [&rule]);
        let id = execute(
            &client,
            &conn(),
            "select :k",
            &[Param::new("k", "raw/a")],
            Some("tok"),
            &RetryPolicy::default(),
            far(),
        )
        .await
        .unwrap();
        assert_eq!(id, "st-1");
        let seen = seen.lock().unwrap();
        let (sql, wg, cl, db, secret, token, params) = &seen[0];
        assert_eq!(sql.as_deref(), Some("select :k"));
        assert_eq!(wg.as_deref(), Some("wg"));
        assert_eq!(cl.as_deref(), None);
        assert_eq!(db.as_deref(), Some("dev"));
        assert!(secret.is_some());
        assert_eq!(token.as_deref(), Some("tok"));
        assert_eq!(params, &vec![("k".to_owned(), "raw/a".to_owned())]);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_errors_are_retried_then_validation_is_permanent() {
        let busy = mock!(Client::batch_execute_statement)
            .sequence()
            .error(|| {
                aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementError::ActiveSessionsExceededException(
                    aws_sdk_redshiftdata::types::error::ActiveSessionsExceededException::builder()
                        .message("busy")
                        .meta(meta("ActiveSessionsExceededException", "busy"))
                        .build(),
                )
            })
            .output(|| BatchExecuteStatementOutput::builder().id("b-1").build())
            .build();
        let client = mock_client!(aws_sdk_redshiftdata, [&busy]);
        let id = batch_execute(
            &client,
            &conn(),
            &["select 1".to_owned()],
            Some("t"),
            &RetryPolicy::default(),
            far(),
        )
        .await
        .unwrap();
        assert_eq!(id, "b-1");
        assert_eq!(busy.num_calls(), 2);

        let invalid = mock!(Client::batch_execute_statement).then_error(|| {
            aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementError::ValidationException(
                aws_sdk_redshiftdata::types::error::ValidationException::builder()
                    .message("bad sql")
                    .meta(meta("ValidationException", "bad sql"))
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_redshiftdata, [&invalid]);
        let err = batch_execute(
            &client,
            &conn(),
            &["x".to_owned()],
            None,
            &RetryPolicy::default(),
            far(),
        )
        .await
        .unwrap_err();
        assert!(!err.retryable);
        assert_eq!(err.code, "ValidationException");
        assert_eq!(err.message, "bad sql");
        assert_eq!(invalid.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_polls_until_finished() {
        let rule = mock!(Client::describe_statement)
            .sequence()
            .output(|| described("s", StatusString::Submitted))
            .output(|| described("s", StatusString::Started))
            .times(3)
            .output(|| described("s", StatusString::Finished))
            .build();
        let client = mock_client!(aws_sdk_redshiftdata, [&rule]);
        let mut seen = Vec::new();
        let d = wait(&client, "s", &PollPolicy::default(), far(), |d| {
            seen.push(d.status.clone())
        })
        .await
        .unwrap();
        assert_eq!(d.status, Status::Finished);
        assert_eq!(rule.num_calls(), 5);
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], Status::Submitted);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_reports_failed_and_aborted() {
        let rule = mock!(Client::describe_statement).then_output(|| {
            DescribeStatementOutput::builder()
                .id("s")
                .status(StatusString::Failed)
                .error("ERROR: relation \"x\" does not exist")
                .build()
                .unwrap()
        });
        let client = mock_client!(aws_sdk_redshiftdata, [&rule]);
        let err = wait(&client, "s", &PollPolicy::default(), far(), |_| {})
            .await
            .unwrap_err();
        assert_eq!(
            err,
            WaitError::Failed {
                id: "s".into(),
                error: "ERROR: relation \"x\" does not exist".into()
            }
        );
        assert!(err.is_retryable());

        let rule =
            mock!(Client::describe_statement).then_output(|| described("s", StatusString::Aborted));
        let client = mock_client!(aws_sdk_redshiftdata, [&rule]);
        let err = wait(&client, "s", &PollPolicy::default(), far(), |_| {})
            .await
            .unwrap_err();
        assert_eq!(err, WaitError::Aborted { id: "s".into() });
    }

    #[tokio::test(start_paused = true)]
    async fn wait_stops_before_the_deadline() {
        let rule = mock!(Client::describe_statement)
            .sequence()
            .output(|| described("s", StatusString::Started))
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_redshiftdata, RuleMode::MatchAny, [&rule]);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let err = wait(&client, "s", &PollPolicy::default(), deadline, |_| {})
            .await
            .unwrap_err();
        assert_eq!(
            err,
            WaitError::StillRunning {
                id: "s".into(),
                status: Status::Started
            }
        );
        assert!(Instant::now() < deadline);
        assert!(rule.num_calls() >= 2, "polled {} times", rule.num_calls());
    }

    #[tokio::test(start_paused = true)]
    async fn fetch_result_follows_next_token_and_converts_fields() {
        let rule = mock!(Client::get_statement_result)
            .sequence()
            .output(|| {
                GetStatementResultOutput::builder()
                    .records(vec![
                        Field::StringValue("raw/a".into()),
                        Field::LongValue(7),
                        Field::IsNull(true),
                    ])
                    .next_token("p2")
                    .build()
                    .unwrap()
            })
            .output(|| {
                GetStatementResultOutput::builder()
                    .records(vec![
                        Field::StringValue("raw/b".into()),
                        Field::StringValue("8".into()),
                        Field::BooleanValue(true),
                    ])
                    .build()
                    .unwrap()
            })
            .build();
        let client = mock_client!(aws_sdk_redshiftdata, [&rule]);
        let rows = fetch_result(&client, "s", &RetryPolicy::default(), far())
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0].as_str(), Some("raw/a"));
        assert_eq!(rows[0][1].as_i64(), Some(7));
        assert_eq!(rows[0][2], Value::Null);
        assert_eq!(rows[1][1].as_i64(), Some(8));
        assert_eq!(rows[1][2], Value::Bool(true));
    }

    #[tokio::test(start_paused = true)]
    async fn describe_server_errors_are_retried() {
        let rule = mock!(Client::describe_statement)
            .sequence()
            .http_status(500, None)
            .output(|| described("s", StatusString::Finished))
            .build();
        let client = mock_client!(aws_sdk_redshiftdata, [&rule]);
        let d = describe(&client, "s", &RetryPolicy::default(), far())
            .await
            .unwrap();
        assert_eq!(d.status, Status::Finished);
        assert!(rule.num_calls() >= 2);
    }
}
