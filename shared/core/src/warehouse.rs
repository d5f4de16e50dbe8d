//! The warehouse's plain data, as the Redshift Data API adapter (`caudal-aws`'s `redshift`)
//! speaks it: where statements run ([`Connection`], [`Target`]), named parameters, a
//! statement's description and final outcome ([`Described`], [`Status`], [`WaitError`]), result
//! values, and how statements are polled ([`PollPolicy`]). Pure: the loader's SQL planning and
//! its tests use these without the SDK.

use std::time::Duration;

use crate::retry::{CallError, RetryPolicy, Retryable};

/// Where statements run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Redshift Serverless workgroup (name or ARN).
    Workgroup(String),
    /// A provisioned cluster identifier.
    Cluster(String),
}

/// Everything the Data API needs to know to run a statement: target, database and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Workgroup or cluster.
    pub target: Target,
    /// Database name.
    pub database: String,
    /// Secrets Manager secret with the credentials (optional).
    pub secret_arn: Option<String>,
    /// Database user for temporary credentials (optional; provisioned clusters).
    pub db_user: Option<String>,
}

impl Connection {
    /// The request's `WorkgroupName` and `ClusterIdentifier`: exactly one is set.
    /// The Data API's `(WorkgroupName, ClusterIdentifier)` pair for this target.
    pub fn target_names(&self) -> (Option<String>, Option<String>) {
        match &self.target {
            Target::Workgroup(w) => (Some(w.clone()), None),
            Target::Cluster(c) => (None, Some(c.clone())),
        }
    }
}

/// A named Data API parameter (`:name` in the SQL). Values travel as text and are cast by the
/// engine; the Data API has no NULL parameter, so callers never pass optional values this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Name without the colon.
    pub name: String,
    /// Value as text.
    pub value: String,
}

impl Param {
    /// A parameter `name` = `value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A statement's lifecycle status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Accepted, not yet picked up.
    Submitted,
    /// Picked up by the service.
    Picked,
    /// Running.
    Started,
    /// Done and committed.
    Finished,
    /// Failed; the transaction was rolled back.
    Failed,
    /// Cancelled.
    Aborted,
    /// A status this code does not know (treated as still running).
    Other(String),
}

impl Status {
    /// Whether the statement has reached a final status.
    pub fn is_final(&self) -> bool {
        matches!(self, Status::Finished | Status::Failed | Status::Aborted)
    }
}

/// One sub-statement of a batch, as `DescribeStatement` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubStatement {
    /// Sub-statement id (`<batch-id>:<n>`).
    pub id: String,
    /// Its status (text as the service sent it, e.g. `FINISHED`).
    pub status: String,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// Rows affected or returned.
    pub result_rows: i64,
    /// Whether it has a result set to fetch.
    pub has_result_set: bool,
}

/// What `DescribeStatement` says about a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// Statement id.
    pub id: String,
    /// Current status.
    pub status: Status,
    /// The engine's error message when FAILED.
    pub error: Option<String>,
    /// Time the statement ran, as reported by the service.
    pub duration: Duration,
    /// Rows affected or returned.
    pub result_rows: i64,
    /// Whether there is a result set to fetch.
    pub has_result_set: bool,
    /// Sub-statements of a batch (empty for a single statement).
    pub sub_statements: Vec<SubStatement>,
    /// When the statement was created (tells a statement re-found through its `ClientToken`
    /// from one submitted just now).
    pub created_at: Option<std::time::SystemTime>,
}

/// One cell of a result set.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// BOOLEAN.
    Bool(bool),
    /// Integer types.
    Long(i64),
    /// Floating point types.
    Double(f64),
    /// Text (also DECIMAL, timestamps and SUPER, which the Data API returns as text).
    String(String),
    /// Binary.
    Blob(Vec<u8>),
}

impl Value {
    /// The cell as text (`None` for NULL and blobs).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The cell as an integer: a long, or text holding one (DECIMAL/BIGINT sums come as text on
    /// some engines).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Long(v) => Some(*v),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The cell as a number: a double, a long, or text holding one (DECIMAL comes as text).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Double(v) => Some(*v),
            Value::Long(v) => Some(*v as f64),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// Why waiting for a statement did not end in FINISHED.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The statement FAILED (transaction rolled back). Retryable: the whole load can be tried
    /// again (serialization conflicts and transient COPY errors are common); a statement that
    /// fails every time ends in the queue's DLQ after the bounded receives.
    #[error("statement {id} failed: {error}")]
    Failed {
        /// Statement id.
        id: String,
        /// The engine's error text.
        error: String,
    },
    /// The statement was ABORTED (cancelled by an operator or the service). Retryable.
    #[error("statement {id} was aborted")]
    Aborted {
        /// Statement id.
        id: String,
    },
    /// The deadline came while the statement was still running. Its outcome is **unknown** —
    /// it may still commit. Retryable: the caller must re-attach (same `ClientToken`) or check
    /// its ledger, never assume it did not happen.
    #[error("statement {id} still {status:?} at the deadline")]
    StillRunning {
        /// Statement id.
        id: String,
        /// Last status seen.
        status: Status,
    },
    /// `DescribeStatement` itself failed.
    #[error("describing statement {id} failed: {source}")]
    Call {
        /// Statement id.
        id: String,
        /// The classified SDK error.
        source: CallError,
    },
}

impl Retryable for WaitError {
    fn is_retryable(&self) -> bool {
        match self {
            WaitError::Failed { .. }
            | WaitError::Aborted { .. }
            | WaitError::StillRunning { .. } => true,
            WaitError::Call { source, .. } => source.retryable,
        }
    }
}

/// Why a query (submit + wait + fetch) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Submitting or fetching failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The statement did not finish.
    #[error(transparent)]
    Wait(#[from] WaitError),
}

impl Retryable for QueryError {
    fn is_retryable(&self) -> bool {
        match self {
            QueryError::Call(e) => e.retryable,
            QueryError::Wait(e) => e.is_retryable(),
        }
    }
}

/// How statements are polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    /// Backoff between polls: `base_delay` plus the shared full-jitter backoff, capped by
    /// `max_delay`. `max_attempts` bounds retries of one failing `DescribeStatement` call.
    pub retry: RetryPolicy,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            retry: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(250),
                max_delay: Duration::from_secs(5),
            },
        }
    }
}

impl PollPolicy {
    /// Delay before poll number `n + 1` (1-based `n`): never shorter than `base_delay` so a busy
    /// statement is not hammered, growing towards `max_delay`.
    pub fn delay(&self, n: u32) -> Duration {
        (self.retry.base_delay + self.retry.backoff(n)).min(self.retry.max_delay)
    }
}

/// ISO 8601 UTC with microseconds, `2026-11-25T19:55:17.123456Z`: the one text of a
/// `TIMESTAMPTZ` the loader writes (CSV cells, SQL literals, `loaded_at`) — read by Redshift
/// COPY with `TIMEFORMAT 'auto'` and by PostgreSQL as is. (The envelope's own fields use
/// [`crate::envelope::format_timestamp`], milliseconds.)
pub fn format_timestamp(t: time::OffsetDateTime) -> String {
    if let Some(b) = timestamp_bytes(t) {
        return b.iter().map(|&c| char::from(c)).collect();
    }
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A date as `YYYY-MM-DD`, the `DATE` text the loader writes.
pub fn format_date(d: time::Date) -> String {
    let (year, month, day) = d.to_calendar_date();
    if let Some(year) = four_digit_year(year) {
        let mut b = *b"0000-00-00";
        put_digits(&mut b[..4], year);
        put_digits(&mut b[5..7], u32::from(u8::from(month)));
        put_digits(&mut b[8..], u32::from(day));
        return b.iter().map(|&c| char::from(c)).collect();
    }
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The year when it is written with exactly four digits (0–9999).
/// [`format_timestamp`]'s text as bytes, without allocating, when the year has four digits
/// (the loader writes three per row into its CSV).
pub fn timestamp_bytes(t: time::OffsetDateTime) -> Option<[u8; 27]> {
    let t = t.to_offset(time::UtcOffset::UTC);
    let (year, month, day) = t.to_calendar_date();
    let year = four_digit_year(year)?;
    let (hour, minute, second, micro) = t.to_hms_micro();
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut b[..4], year);
    put_digits(&mut b[5..7], u32::from(u8::from(month)));
    put_digits(&mut b[8..10], u32::from(day));
    put_digits(&mut b[11..13], u32::from(hour));
    put_digits(&mut b[14..16], u32::from(minute));
    put_digits(&mut b[17..19], u32::from(second));
    put_digits(&mut b[20..26], micro);
    Some(b)
}

fn four_digit_year(year: i32) -> Option<u32> {
    u32::try_from(year).ok().filter(|y| *y <= 9999)
}

/// `n` in decimal, right-aligned and zero-padded into all of `out` (`n` must fit).
fn put_digits(out: &mut [u8], mut n: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The digits written by hand are `format!`'s, for every representable instant.
        #[test]
        fn hand_written_timestamps_are_the_formatted_ones(
            secs in -377_705_116_800i64..253_402_300_800 + 86_400 * 365,
            nanos in 0u32..1_000_000_000,
            offset_min in -1439i32..1440,
        ) {
            let Ok(t) = time::OffsetDateTime::from_unix_timestamp(secs) else { return Ok(()) };
            let t = t.replace_nanosecond(nanos).unwrap();
            let Ok(offset) = time::UtcOffset::from_whole_seconds(offset_min * 60) else { return Ok(()) };
            let t = t.to_offset(offset);
            let u = t.to_offset(time::UtcOffset::UTC);
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                u.year(), u8::from(u.month()), u.day(), u.hour(), u.minute(), u.second(), u.microsecond()
            );
            proptest::prop_assert_eq!(format_timestamp(t), want);
            let want = format!("{:04}-{:02}-{:02}", u.year(), u8::from(u.month()), u.day());
            proptest::prop_assert_eq!(format_date(u.date()), want);
        }
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let t = time::macros::datetime!(2026-11-25 20:55:17.123456789 +01:00);
        assert_eq!(format_timestamp(t), "2026-11-25T19:55:17.123456Z");
        let t = time::macros::datetime!(0999-01-02 03:04:05 UTC);
        assert_eq!(format_timestamp(t), "0999-01-02T03:04:05.000000Z");
    }
}
