//! Running submitted statements on PostgreSQL: the background lifecycle SUBMITTED → PICKED →
//! STARTED → FINISHED | FAILED | ABORTED of each record, on a session from [`super::pool`].
//!
//! Each submission runs on one pooled connection, like a fresh Redshift session: afterwards the
//! connection is reset (rollback, settings, temp tables) before it serves the next statement.
//! A batch, or a multi-statement text without its own transaction control, runs inside one
//! transaction, so it is all or nothing. Injected faults ([`StatementFault`]) fail a statement
//! before it runs, stop it part way inside its transaction (rolled back by the session reset,
//! never half committed) or delay it in SUBMITTED and before its commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::copy::run_copy;
use super::outcome::{ExecError, SubOutcome};
use super::state::{Shared, Work};
use super::store::ResultSet;
use super::translate::Planned;
use super::wire::{ColumnMetadata, Field, Status};
use crate::emulators::chaos::StatementFault;

/// The error of a statement whose session an injected fault cut off part way.
const LOST_SESSION: &str = "FATAL: terminating connection due to administrator command";

/// Runs the record `id` through its lifecycle, with the injected `fault`
/// ([`crate::emulators::chaos`]; [`StatementFault::None`] normally). Spawned once per new
/// submission.
pub async fn drive(shared: Arc<Shared>, id: String, fault: StatementFault) {
    let began = Instant::now();
    let step = shared.opts.min_latency / 3;
    tokio::time::sleep(step).await;
    if let StatementFault::Delay { submitted, .. } = &fault {
        // Still SUBMITTED: a busy cluster's queue.
        tokio::time::sleep(*submitted).await;
    }
    if !shared.transition(&id, Status::Picked) {
        return;
    }
    let lease = match shared.pool.get().await {
        Ok(lease) => lease,
        Err(e) => {
            shared.finish(&id, Vec::new(), Err((0, e)));
            return;
        }
    };
    tokio::time::sleep(step).await;
    let (pid, cancel) = match &lease.conn {
        Some(c) => (c.pid, c.client.cancel_token()),
        None => return,
    };
    let Some(work) = shared.start(&id, pid, cancel, fault) else {
        lease.give_back().await;
        return;
    };
    if let StatementFault::Fail(message) = &work.fault {
        lease.give_back().await;
        if let Some(rest) = shared.opts.min_latency.checked_sub(began.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        shared.finish(
            &id,
            Vec::new(),
            Err((0, ExecError::Failed(message.clone()))),
        );
        return;
    }
    let (outcomes, end) = match lease.client() {
        Some(client) => run_subs(&shared, &id, client, &work).await,
        None => (Vec::new(), Ok(())),
    };
    lease.give_back().await;
    if let Some(rest) = shared.opts.min_latency.checked_sub(began.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    shared.finish(&id, outcomes, end);
}

async fn run_subs(
    shared: &Shared,
    id: &str,
    client: &Client,
    work: &Work,
) -> (Vec<SubOutcome>, Result<(), (usize, ExecError)>) {
    let (plans, is_batch, abort) = (&work.plans, work.is_batch, &work.abort);
    let control = |p: &Vec<Planned>| p.iter().any(Planned::is_transaction_control);
    // An injected stop needs a transaction to roll back, even around a single statement (the
    // chaos decision never stops a statement with transaction control of its own).
    let stop = match &work.fault {
        StatementFault::Stop { after, aborted } => Some((*after, *aborted)),
        _ => None,
    };
    let wrap = is_batch
        || stop.is_some()
        || (plans.iter().map(Vec::len).sum::<usize>() > 1 && !plans.iter().any(control));
    let mut outcomes = Vec::new();
    if wrap && let Err(e) = client.batch_execute("BEGIN").await {
        return (outcomes, Err((0, classify(abort, e.into()))));
    }
    for (index, statements) in plans.iter().enumerate() {
        if abort.load(Ordering::SeqCst) {
            return (outcomes, Err((index, ExecError::Aborted)));
        }
        if let Some((after, aborted)) = stop
            && index == after
        {
            // The caller's session reset rolls the open transaction back.
            return (outcomes, Err(stopped(index, aborted)));
        }
        if is_batch && control(statements) {
            return (
                outcomes,
                Err((
                    index,
                    ExecError::Failed(
                        "ERROR: transaction control statements (BEGIN/COMMIT/ROLLBACK/…) are not \
                         allowed in BatchExecuteStatement: the batch already is one transaction"
                            .into(),
                    ),
                )),
            );
        }
        shared.sub_started(id, index);
        match run_sub(shared, client, statements, abort).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => return (outcomes, Err((index, e))),
        }
    }
    let last = plans.len().saturating_sub(1);
    if let StatementFault::Delay { started, .. } = &work.fault {
        // Still STARTED, and still holding whatever it locked: a slow commit.
        tokio::time::sleep(*started).await;
    }
    if let Some((_, aborted)) = stop {
        // Stopped after its last statement, before the commit.
        return (outcomes, Err(stopped(last, aborted)));
    }
    if wrap {
        if abort.load(Ordering::SeqCst) {
            return (outcomes, Err((last, ExecError::Aborted)));
        }
        if let Err(e) = client.batch_execute("COMMIT").await {
            return (outcomes, Err((last, classify(abort, e.into()))));
        }
    }
    (outcomes, Ok(()))
}

/// Runs the statements of one sub-statement; its outcome is the last statement's.
async fn run_sub(
    shared: &Shared,
    client: &Client,
    statements: &[Planned],
    abort: &Arc<AtomicBool>,
) -> Result<SubOutcome, ExecError> {
    let t0 = Instant::now();
    let mut outcome = SubOutcome::default();
    for planned in statements {
        if abort.load(Ordering::SeqCst) {
            return Err(ExecError::Aborted);
        }
        let step = match planned {
            Planned::Unsupported(message) => Err(ExecError::Failed(format!("ERROR: {message}"))),
            Planned::Sql(sql) => run_sql(client, sql).await,
            Planned::Copy(plan) => run_copy(client, &shared.s3, plan, abort)
                .await
                .map(|n| (n as i64, None)),
        };
        match step {
            Ok((rows, result)) => {
                outcome.rows = rows;
                outcome.result = result;
            }
            Err(e) => return Err(classify(abort, e)),
        }
    }
    outcome.duration_ns = i64::try_from(t0.elapsed().as_nanos()).unwrap_or(i64::MAX);
    Ok(outcome)
}

/// After CancelStatement, whatever PostgreSQL reports for the interrupted step (usually
/// query_canceled) is the cancellation.
fn classify(abort: &AtomicBool, e: ExecError) -> ExecError {
    if abort.load(Ordering::SeqCst) && matches!(e, ExecError::Db(_)) {
        ExecError::Aborted
    } else {
        e
    }
}

/// The error of sub-statement `index` stopped by an injected fault: cancelled (ABORTED) or its
/// session lost (FAILED).
fn stopped(index: usize, aborted: bool) -> (usize, ExecError) {
    if aborted {
        (
            index,
            ExecError::Interrupted(format!(
                "Query ({}) cancelled on user's request",
                4000 + index
            )),
        )
    } else {
        (index, ExecError::Failed(LOST_SESSION.into()))
    }
}

/// Runs one plain statement; returns rows returned/affected and the result set, if any.
async fn run_sql(client: &Client, sql: &str) -> Result<(i64, Option<ResultSet>), ExecError> {
    // The simple protocol returns every value as text (what the Data API sends back), but not
    // the column types: preparing the statement first (parse + describe, no execution) gives
    // them.
    let types: Vec<(String, Type)> = {
        let stmt = client.prepare(sql).await?;
        stmt.columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect()
    };
    let mut rows = Vec::new();
    let mut affected = 0u64;
    let mut described = false;
    let mut size = 0i64;
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::Row(row) => {
                let fields = (0..row.len())
                    .map(|i| {
                        let value = row.get(i);
                        size += value.map_or(0, |v| v.len() as i64);
                        to_field(value, types.get(i).map(|(_, t)| t))
                    })
                    .collect();
                rows.push(fields);
            }
            SimpleQueryMessage::CommandComplete(n) => affected = n,
            SimpleQueryMessage::RowDescription(_) => described = true,
            _ => {}
        }
    }
    if types.is_empty() && !described {
        return Ok((i64::try_from(affected).unwrap_or(i64::MAX), None));
    }
    let n = rows.len() as i64;
    Ok((
        n,
        Some(ResultSet {
            columns: types
                .iter()
                .map(|(name, ty)| column_metadata(name, ty))
                .collect(),
            rows,
            size,
        }),
    ))
}

/// One value as the Data API types it.
pub fn to_field(value: Option<&str>, ty: Option<&Type>) -> Field {
    let Some(v) = value else {
        return Field::IsNull(true);
    };
    let text = || Field::StringValue(v.to_string());
    match ty {
        Some(t) if [Type::INT2, Type::INT4, Type::INT8, Type::OID].contains(t) => {
            v.parse().map(Field::LongValue).unwrap_or_else(|_| text())
        }
        Some(t) if [Type::FLOAT4, Type::FLOAT8].contains(t) => v
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Field::DoubleValue)
            .unwrap_or_else(text),
        Some(t) if *t == Type::BOOL => Field::BooleanValue(v == "t"),
        _ => text(),
    }
}

/// Column metadata with Redshift's type names where they differ from PostgreSQL's.
pub fn column_metadata(name: &str, ty: &Type) -> ColumnMetadata {
    let type_name = match *ty {
        Type::TEXT => "varchar",
        Type::JSON | Type::JSONB => "super",
        _ => ty.name(),
    };
    let numeric = [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
    ]
    .contains(ty);
    let textual = [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty);
    ColumnMetadata {
        name: name.to_string(),
        label: name.to_string(),
        type_name: type_name.to_string(),
        nullable: 1,
        is_signed: numeric,
        is_case_sensitive: textual,
        is_currency: false,
        precision: 0,
        scale: 0,
        length: 0,
        schema_name: String::new(),
        table_name: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_the_data_api_typing() {
        assert_eq!(to_field(None, Some(&Type::INT4)), Field::IsNull(true));
        assert_eq!(
            to_field(Some("42"), Some(&Type::INT8)),
            Field::LongValue(42)
        );
        assert_eq!(
            to_field(Some("1.5"), Some(&Type::FLOAT8)),
            Field::DoubleValue(1.5)
        );
        assert_eq!(
            to_field(Some("NaN"), Some(&Type::FLOAT8)),
            Field::StringValue("NaN".into())
        );
        assert_eq!(
            to_field(Some("t"), Some(&Type::BOOL)),
            Field::BooleanValue(true)
        );
        assert_eq!(
            to_field(Some("f"), Some(&Type::BOOL)),
            Field::BooleanValue(false)
        );
        assert_eq!(
            to_field(Some("12.50"), Some(&Type::NUMERIC)),
            Field::StringValue("12.50".into())
        );
        assert_eq!(column_metadata("p", &Type::JSONB).type_name, "super");
        assert_eq!(column_metadata("t", &Type::TEXT).type_name, "varchar");
        assert_eq!(column_metadata("n", &Type::INT8).type_name, "int8");
    }
}
