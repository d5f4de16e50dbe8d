//! In-memory statement registry: records, status transitions, results, idempotency tokens.
//!
//! Every submission is a [`Record`] with one [`Sub`] per SQL text (one for ExecuteStatement,
//! N for BatchExecuteStatement); the top-level view of a single statement is its only sub.
//! Records live as long as the process (the real service keeps them 24 h).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use super::translate::Planned;
use super::wire::{
    ApiError, ColumnMetadata, DescribeStatementOutput, Field, GetStatementResultOutput,
    ListStatementsInput, ListStatementsOutput, SqlParameter, StatementData, Status,
    SubStatementData, SubmitOutput, Target, epoch_seconds,
};

/// How long a ClientToken maps to its statement.
pub const CLIENT_TOKEN_TTL: Duration = Duration::from_secs(8 * 3600);

/// A finished query's rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultSet {
    /// Column metadata.
    pub columns: Vec<ColumnMetadata>,
    /// Rows.
    pub rows: Vec<Vec<Field>>,
    /// Approximate size in bytes of the text values.
    pub size: i64,
}

/// One SQL text of a submission.
#[derive(Debug)]
pub struct Sub {
    /// The SQL as submitted.
    pub query_string: String,
    /// The translated statements (filled at submission).
    pub plan: Vec<Planned>,
    /// Status.
    pub status: Status,
    /// Error message.
    pub error: Option<String>,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// Nanoseconds spent executing.
    pub duration_ns: i64,
    /// Rows returned or affected (-1 until known).
    pub result_rows: i64,
    /// The result set of the last statement, if it returned rows.
    pub result: Option<Arc<ResultSet>>,
    /// A local query id.
    pub query_id: i64,
}

impl Sub {
    /// A fresh, submitted sub-statement.
    pub fn new(
        query_string: String,
        plan: Vec<Planned>,
        now: OffsetDateTime,
        query_id: i64,
    ) -> Sub {
        Sub {
            query_string,
            plan,
            status: Status::Submitted,
            error: None,
            updated_at: now,
            duration_ns: 0,
            result_rows: -1,
            result: None,
            query_id,
        }
    }
}

/// A submission.
pub struct Record {
    /// UUID.
    pub id: String,
    /// Whether it came from BatchExecuteStatement.
    pub is_batch: bool,
    /// Target and identity as submitted.
    pub target: Target,
    /// StatementName.
    pub statement_name: Option<String>,
    /// Parameters as submitted.
    pub parameters: Vec<SqlParameter>,
    /// Submission time.
    pub created_at: OffsetDateTime,
    /// Overall status.
    pub status: Status,
    /// Overall error.
    pub error: Option<String>,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// Backend pid once started.
    pub pid: i64,
    /// Sub-statements (exactly one for ExecuteStatement).
    pub subs: Vec<Sub>,
    /// Set by CancelStatement; checked by the executor between steps.
    pub abort: Arc<AtomicBool>,
    /// Cancels the running PostgreSQL query.
    pub cancel: Option<tokio_postgres::CancelToken>,
}

impl Record {
    fn duration_ns(&self) -> i64 {
        self.subs.iter().map(|s| s.duration_ns).sum()
    }

    /// DescribeStatement for the record (top level).
    pub fn describe(&self) -> DescribeStatementOutput {
        let single = self.subs.first().filter(|_| !self.is_batch);
        let has_result_set = self.subs.iter().any(|s| s.result.is_some());
        let result_rows = match single {
            Some(s) => s.result_rows,
            None if self.status == Status::Finished => {
                self.subs.iter().map(|s| s.result_rows.max(0)).sum()
            }
            None => -1,
        };
        let result_size = single
            .and_then(|s| s.result.as_ref())
            .map_or(-1, |r| r.size);
        DescribeStatementOutput {
            id: self.id.clone(),
            status: self.status,
            error: self.error.clone(),
            query_string: single.map(|s| s.query_string.clone()),
            duration: self.duration_ns(),
            has_result_set,
            result_rows,
            result_size,
            created_at: epoch_seconds(self.created_at),
            updated_at: epoch_seconds(self.updated_at),
            redshift_pid: self.pid,
            redshift_query_id: self.subs.last().map_or(0, |s| s.query_id),
            query_parameters: self.parameters.clone(),
            sub_statements: if self.is_batch {
                (0..self.subs.len())
                    .filter_map(|i| self.sub_data(i))
                    .collect()
            } else {
                Vec::new()
            },
            result_format: "JSON",
            target: self.target.clone(),
        }
    }

    /// The `<id>:N` view of sub-statement `index` (0-based).
    pub fn sub_data(&self, index: usize) -> Option<SubStatementData> {
        let s = self.subs.get(index)?;
        Some(SubStatementData {
            id: format!("{}:{}", self.id, index + 1),
            status: s.status,
            error: s.error.clone(),
            query_string: s.query_string.clone(),
            duration: s.duration_ns,
            has_result_set: s.result.is_some(),
            result_rows: s.result_rows,
            result_size: s.result.as_ref().map_or(-1, |r| r.size),
            created_at: epoch_seconds(self.created_at),
            updated_at: epoch_seconds(s.updated_at),
            redshift_query_id: s.query_id,
        })
    }

    /// The ListStatements entry.
    pub fn list_entry(&self) -> StatementData {
        StatementData {
            id: self.id.clone(),
            status: self.status,
            query_string: self
                .subs
                .first()
                .filter(|_| !self.is_batch)
                .map(|s| s.query_string.clone()),
            query_strings: self
                .is_batch
                .then(|| self.subs.iter().map(|s| s.query_string.clone()).collect()),
            is_batch_statement: self.is_batch,
            statement_name: self.statement_name.clone(),
            secret_arn: self.target.secret_arn.clone(),
            query_parameters: self.parameters.clone(),
            created_at: epoch_seconds(self.created_at),
            updated_at: epoch_seconds(self.updated_at),
            result_format: "JSON",
        }
    }

    /// The submit response.
    pub fn submit_output(&self) -> SubmitOutput {
        SubmitOutput {
            id: self.id.clone(),
            created_at: epoch_seconds(self.created_at),
            target: self.target.clone(),
        }
    }
}

#[derive(Debug)]
struct TokenEntry {
    fingerprint: String,
    id: String,
    at: OffsetDateTime,
}

/// All statements of this endpoint.
#[derive(Default)]
pub struct Store {
    records: HashMap<String, Record>,
    /// Ids in submission order.
    order: Vec<String>,
    tokens: HashMap<String, TokenEntry>,
    next_query_id: i64,
}

/// A parsed statement id: the record id and an optional 0-based sub index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRef {
    /// The record id.
    pub id: String,
    /// `Some(i)` for `<id>:<i+1>`.
    pub sub: Option<usize>,
}

impl StatementRef {
    /// Parses `<uuid>` or `<uuid>:N` (N ≥ 1).
    pub fn parse(raw: &str) -> Result<StatementRef, ApiError> {
        let (id, sub) = match raw.rsplit_once(':') {
            Some((id, n)) => {
                let n: usize =
                    n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        ApiError::validation(format!("invalid statement id: {raw}"))
                    })?;
                (id, Some(n - 1))
            }
            None => (raw, None),
        };
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ApiError::validation(format!(
                "invalid statement id: {raw} (expected a UUID, optionally with :N)"
            )));
        }
        Ok(StatementRef {
            id: id.to_string(),
            sub,
        })
    }
}

/// What `submit` did.
#[derive(Debug)]
pub enum Submitted {
    /// A new record; the caller must start executing it.
    New(SubmitOutput),
    /// A ClientToken replay: the earlier record, not executed again.
    Replay(SubmitOutput),
}

impl Store {
    /// Allocates a local query id.
    pub fn next_query_id(&mut self) -> i64 {
        self.next_query_id += 1;
        self.next_query_id
    }

    /// Number of statements not yet finished.
    pub fn active(&self) -> usize {
        self.records
            .values()
            .filter(|r| r.status.is_active())
            .count()
    }

    /// Registers a submission, honouring ClientToken idempotency: the same token with the
    /// same request within 8 h returns the earlier statement; with a different request it is
    /// a ValidationException.
    pub fn submit(
        &mut self,
        record: Record,
        client_token: Option<(String, String)>,
        max_active: usize,
    ) -> Result<Submitted, ApiError> {
        let now = record.created_at;
        if let Some((token, fingerprint)) = &client_token
            && let Some(entry) = self.tokens.get(token)
            && now - entry.at < CLIENT_TOKEN_TTL
        {
            if &entry.fingerprint != fingerprint {
                return Err(ApiError::validation(
                    "ClientToken was already used with a different request",
                ));
            }
            if let Some(existing) = self.records.get(&entry.id) {
                return Ok(Submitted::Replay(existing.submit_output()));
            }
        }
        if self.active() >= max_active {
            return Err(ApiError::new(
                super::wire::ErrorCode::ActiveStatementsExceeded,
                format!("Active statements exceeded the allowed quota ({max_active})."),
            ));
        }
        if let Some((token, fingerprint)) = client_token {
            self.tokens.insert(
                token,
                TokenEntry {
                    fingerprint,
                    id: record.id.clone(),
                    at: now,
                },
            );
        }
        let out = record.submit_output();
        self.order.push(record.id.clone());
        self.records.insert(record.id.clone(), record);
        Ok(Submitted::New(out))
    }

    /// The record with this id.
    pub fn get(&self, id: &str) -> Option<&Record> {
        self.records.get(id)
    }

    /// The record with this id, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Record> {
        self.records.get_mut(id)
    }

    /// DescribeStatement.
    pub fn describe(&self, r: &StatementRef) -> Result<DescribeStatementOutput, ApiError> {
        let rec = self
            .records
            .get(&r.id)
            .ok_or_else(|| ApiError::not_found(&r.id))?;
        let Some(index) = r.sub else {
            return Ok(rec.describe());
        };
        let sub = rec
            .sub_data(index)
            .filter(|_| rec.is_batch)
            .ok_or_else(|| ApiError::not_found(&format!("{}:{}", r.id, index + 1)))?;
        let mut out = rec.describe();
        out.id = sub.id;
        out.status = sub.status;
        out.error = sub.error;
        out.query_string = Some(sub.query_string);
        out.duration = sub.duration;
        out.has_result_set = sub.has_result_set;
        out.result_rows = sub.result_rows;
        out.result_size = sub.result_size;
        out.updated_at = sub.updated_at;
        out.redshift_query_id = sub.redshift_query_id;
        out.sub_statements = Vec::new();
        Ok(out)
    }

    /// GetStatementResult, `page_rows` records per page.
    pub fn result(
        &self,
        r: &StatementRef,
        next_token: Option<&str>,
        page_rows: usize,
    ) -> Result<GetStatementResultOutput, ApiError> {
        let rec = self
            .records
            .get(&r.id)
            .ok_or_else(|| ApiError::not_found(&r.id))?;
        let sub = match (r.sub, rec.is_batch) {
            (None, true) => {
                return Err(ApiError::validation(format!(
                    "{} is a batch statement: pass the sub-statement id ({}:N)",
                    r.id, r.id
                )));
            }
            (None, false) => rec.subs.first().ok_or_else(|| ApiError::not_found(&r.id))?,
            (Some(i), true) => rec
                .subs
                .get(i)
                .ok_or_else(|| ApiError::not_found(&format!("{}:{}", r.id, i + 1)))?,
            (Some(_), false) => {
                return Err(ApiError::validation(format!(
                    "{} is not a batch statement: pass its id without a suffix",
                    r.id
                )));
            }
        };
        if sub.status != Status::Finished {
            return Err(ApiError::validation(format!(
                "Query has not finished (status {:?}). Check its status with DescribeStatement.",
                sub.status
            )));
        }
        let Some(result) = &sub.result else {
            return Err(ApiError::validation(
                "Query does not have result. Please check query status with DescribeStatement.",
            ));
        };
        let start: usize = match next_token {
            None => 0,
            Some(t) => t
                .parse()
                .ok()
                .filter(|n| *n <= result.rows.len())
                .ok_or_else(|| ApiError::validation("invalid NextToken"))?,
        };
        let end = start
            .saturating_add(page_rows.max(1))
            .min(result.rows.len());
        Ok(GetStatementResultOutput {
            records: result.rows[start..end].to_vec(),
            column_metadata: result.columns.clone(),
            total_num_rows: result.rows.len() as i64,
            next_token: (end < result.rows.len()).then(|| end.to_string()),
        })
    }

    /// ListStatements: newest first, filtered, paged.
    pub fn list(&self, input: &ListStatementsInput) -> Result<ListStatementsOutput, ApiError> {
        let status = match input.status.as_deref() {
            None | Some("ALL") => None,
            Some(s) => Some(
                Status::parse(s)
                    .ok_or_else(|| ApiError::validation(format!("invalid Status filter: {s}")))?,
            ),
        };
        let max = match input.max_results {
            None => 100,
            Some(n @ 1..=100) => n as usize,
            Some(n) => {
                return Err(ApiError::validation(format!(
                    "MaxResults must be between 1 and 100, got {n}"
                )));
            }
        };
        let start: usize = match &input.next_token {
            None => 0,
            Some(t) => t
                .parse()
                .map_err(|_| ApiError::validation("invalid NextToken"))?,
        };
        let matching: Vec<&Record> = self
            .order
            .iter()
            .rev()
            .filter_map(|id| self.records.get(id))
            .filter(|r| status.is_none_or(|s| r.status == s))
            .filter(|r| {
                input.statement_name.as_deref().is_none_or(|prefix| {
                    r.statement_name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(prefix))
                })
            })
            .filter(|r| {
                input
                    .database
                    .as_ref()
                    .is_none_or(|d| r.target.database.as_ref() == Some(d))
            })
            .filter(|r| {
                input
                    .cluster_identifier
                    .as_ref()
                    .is_none_or(|c| r.target.cluster_identifier.as_ref() == Some(c))
            })
            .filter(|r| {
                input
                    .workgroup_name
                    .as_ref()
                    .is_none_or(|w| r.target.workgroup_name.as_ref() == Some(w))
            })
            .collect();
        let end = start.saturating_add(max).min(matching.len());
        let page = matching.get(start..end).unwrap_or_default();
        Ok(ListStatementsOutput {
            statements: page.iter().map(|r| r.list_entry()).collect(),
            next_token: (end < matching.len()).then(|| end.to_string()),
        })
    }

    /// CancelStatement: an active statement is marked for abort (SUBMITTED/PICKED become
    /// ABORTED at once; a STARTED one gets its PostgreSQL query cancelled). Returns the
    /// cancel token to fire (outside the lock), or an error for a finished statement.
    pub fn cancel(
        &mut self,
        r: &StatementRef,
        now: OffsetDateTime,
    ) -> Result<Option<tokio_postgres::CancelToken>, ApiError> {
        if r.sub.is_some() {
            return Err(ApiError::validation(
                "CancelStatement takes the statement id without a sub-statement suffix",
            ));
        }
        let rec = self
            .records
            .get_mut(&r.id)
            .ok_or_else(|| ApiError::not_found(&r.id))?;
        if !rec.status.is_active() {
            return Err(ApiError::validation(format!(
                "Could not cancel a query that is already in {:?} state.",
                rec.status
            )));
        }
        rec.abort.store(true, Ordering::SeqCst);
        match rec.status {
            Status::Submitted | Status::Picked => {
                rec.status = Status::Aborted;
                rec.error = Some("Query cancelled by CancelStatement".into());
                rec.updated_at = now;
                for s in &mut rec.subs {
                    s.status = Status::Aborted;
                    s.updated_at = now;
                }
                Ok(None)
            }
            _ => Ok(rec.cancel.clone()),
        }
    }

    /// Marks every active statement for abort (shutdown); returns their cancel tokens.
    pub fn abort_all(&mut self) -> Vec<tokio_postgres::CancelToken> {
        self.records
            .values_mut()
            .filter(|r| r.status.is_active())
            .filter_map(|r| {
                r.abort.store(true, Ordering::SeqCst);
                r.cancel.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: Option<&str>, at: OffsetDateTime) -> Record {
        Record {
            id: id.into(),
            is_batch: false,
            target: Target::default(),
            statement_name: name.map(Into::into),
            parameters: vec![],
            created_at: at,
            status: Status::Submitted,
            error: None,
            updated_at: at,
            pid: -1,
            subs: vec![Sub::new("select 1".into(), vec![], at, 1)],
            abort: Arc::default(),
            cancel: None,
        }
    }

    const A: &str = "11111111-1111-4111-8111-111111111111";
    const B: &str = "22222222-2222-4222-8222-222222222222";

    #[test]
    fn client_token_replays_within_ttl_only() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut store = Store::default();
        let tok = || Some(("tok".to_string(), "fp".to_string()));
        assert!(matches!(
            store.submit(record(A, None, t0), tok(), 10),
            Ok(Submitted::New(_))
        ));
        match store.submit(record(B, None, t0 + Duration::from_secs(60)), tok(), 10) {
            Ok(Submitted::Replay(out)) => assert_eq!(out.id, A),
            other => panic!("{other:?}"),
        }
        let other_request = Some(("tok".to_string(), "other".to_string()));
        let err = store
            .submit(record(B, None, t0), other_request, 10)
            .expect_err("mismatch");
        assert_eq!(err.code, super::super::wire::ErrorCode::Validation);
        let late = t0 + CLIENT_TOKEN_TTL + Duration::from_secs(1);
        assert!(matches!(
            store.submit(record(B, None, late), tok(), 10),
            Ok(Submitted::New(_))
        ));
    }

    #[test]
    fn active_limit_and_cancel() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut store = Store::default();
        store.submit(record(A, None, t0), None, 1).expect("first");
        let err = store
            .submit(record(B, None, t0), None, 1)
            .expect_err("limit");
        assert!(err.code.is_retryable());
        let r = StatementRef::parse(A).expect("id");
        assert!(store.cancel(&r, t0).expect("cancel").is_none());
        assert_eq!(store.get(A).map(|r| r.status), Some(Status::Aborted));
        assert!(store.cancel(&r, t0).is_err(), "already aborted");
        store
            .submit(record(B, None, t0), None, 1)
            .expect("room again");
    }

    #[test]
    fn list_filters_and_pages_newest_first() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut store = Store::default();
        store
            .submit(record(A, Some("load-1"), t0), None, 10)
            .expect("a");
        store
            .submit(record(B, Some("other"), t0), None, 10)
            .expect("b");
        let all = store.list(&ListStatementsInput::default()).expect("list");
        assert_eq!(
            all.statements
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>(),
            [B, A]
        );
        let named = store
            .list(&ListStatementsInput {
                statement_name: Some("load".into()),
                ..Default::default()
            })
            .expect("list");
        assert_eq!(named.statements.len(), 1);
        let page = store
            .list(&ListStatementsInput {
                max_results: Some(1),
                ..Default::default()
            })
            .expect("list");
        assert_eq!(page.next_token.as_deref(), Some("1"));
        let finished = store
            .list(&ListStatementsInput {
                status: Some("FINISHED".into()),
                ..Default::default()
            })
            .expect("list");
        assert!(finished.statements.is_empty());
        assert!(
            store
                .list(&ListStatementsInput {
                    status: Some("BOGUS".into()),
                    ..Default::default()
                })
                .is_err()
        );
    }

    #[test]
    fn statement_refs() {
        assert_eq!(StatementRef::parse(A).expect("ok").sub, None);
        assert_eq!(
            StatementRef::parse(&format!("{A}:3")).expect("ok").sub,
            Some(2)
        );
        assert!(StatementRef::parse(&format!("{A}:0")).is_err());
        assert!(StatementRef::parse("nope").is_err());
    }
}
