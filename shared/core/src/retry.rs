//! Retries, written once for the whole pipeline.
//!
//! * [`send_partial`] — for batch APIs that **partially fail with HTTP 200** (Kinesis PutRecords,
//!   Firehose PutRecordBatch): only the failed entries are sent again, with exponential backoff
//!   and full jitter, until every entry succeeded, failed permanently, the attempts are spent, or
//!   the deadline would pass. The result is per entry, in input order.
//! * [`retry_call`] — for whole calls (S3 PutObject/GetObject, Data API calls).
//!
//! Error policy: adapters classify SDK errors into [`CallError`]/[`EntryResult`] with a
//! `retryable` flag (throttling, 5xx, timeouts, dispatch failures are retryable; validation and
//! access errors are not). A deadline is absolute (`tokio::time::Instant`) so nested operations
//! share one budget; a call still running at the deadline is abandoned and its entries are
//! reported as retryable failures — the caller must treat them as "unknown", never as written.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Lambda deadlines below this (2001-09-09 in ms since the epoch) are not absolute timestamps:
/// `Context::default()` carries 0 and `cargo lambda watch` sends its relative timeout (600000).
const PLAUSIBLE_EPOCH_MS: u64 = 1_000_000_000_000;

/// The retry deadline of one invocation, from the Lambda context's deadline (ms since the epoch):
/// the time left minus `margin` — kept free to build and return the answer instead of being
/// killed mid-call — but at least half of the time left, so a short invocation still tries. A
/// context without a real deadline (below 2001-09-09 in ms: 0 in `Context::default()`, a relative
/// timeout from `cargo lambda watch`) gets `fallback` from now.
pub fn invocation_deadline(
    lambda_deadline_ms: u64,
    margin: Duration,
    fallback: Duration,
) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Instant::now() + usable_time(lambda_deadline_ms, now_ms, margin, fallback)
}

/// How much of an invocation's time a function's retries may use: one policy per function,
/// in its `Config`, turned into the absolute deadline of each invocation by [`Self::deadline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePolicy {
    /// Time kept free before the Lambda deadline to build and return the answer.
    pub margin: Duration,
    /// The budget when the context carries no real deadline (tests, `cargo lambda watch`):
    /// the function's configured timeout.
    pub fallback: Duration,
    /// A cap from the invocation's start, whatever the Lambda deadline (ingest-api's
    /// `PUT_DEADLINE_MS`, under API Gateway's 29 s); `None` = the Lambda deadline alone.
    pub budget: Option<Duration>,
}

impl DeadlinePolicy {
    /// The retry deadline of an invocation whose context deadline is `lambda_deadline_ms`
    /// ([`invocation_deadline`], capped by [`Self::budget`]).
    pub fn deadline(&self, lambda_deadline_ms: u64) -> Instant {
        let d = invocation_deadline(lambda_deadline_ms, self.margin, self.fallback);
        match self.budget {
            Some(b) => d.min(Instant::now() + b),
            None => d,
        }
    }
}

fn usable_time(
    lambda_deadline_ms: u64,
    now_ms: u64,
    margin: Duration,
    fallback: Duration,
) -> Duration {
    if lambda_deadline_ms < PLAUSIBLE_EPOCH_MS {
        return fallback;
    }
    let remaining = Duration::from_millis(lambda_deadline_ms.saturating_sub(now_ms));
    remaining.saturating_sub(margin).max(remaining / 2)
}

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (≥ 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt (before jitter).
    pub base_delay: Duration,
    /// Cap of one backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The backoff after attempt number `attempt` (1-based): full jitter over
    /// `min(max_delay, base_delay · 2^(attempt-1))`, so synchronized clients spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        );
        let ceiling = exp.min(self.max_delay);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// A whole call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CallError {
    /// Worth trying again (throttling, 5xx, timeout, connection)?
    pub retryable: bool,
    /// The service's error code, or a transport category (`Timeout`, `DispatchFailure`).
    pub code: String,
    /// The service's message.
    pub message: String,
}

impl CallError {
    /// The error reported for a call abandoned at the deadline.
    pub fn deadline() -> Self {
        Self {
            retryable: true,
            code: "DeadlineExceeded".into(),
            message: "the retry deadline passed before the call completed".into(),
        }
    }
}

/// The result of one entry of a batch call, as the adapter read it from the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult<R> {
    /// Written; `R` is what the service returned for it (e.g. shard + sequence number).
    Ok(R),
    /// Not written.
    Failed(CallError),
}

/// The final outcome of one entry after all attempts.
pub type EntryOutcome<R> = Result<R, CallError>;

/// Per-entry outcomes, in input order, and how many calls were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialOutcome<R> {
    /// One outcome per input entry, in input order.
    pub results: Vec<EntryOutcome<R>>,
    /// Calls made (the first included).
    pub attempts: u32,
}

impl<R> PartialOutcome<R> {
    /// Number of entries that did not succeed.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.is_err()).count()
    }
}

/// Send `n` entries through `send`, resending only the failed ones.
///
/// `send` receives the indices (into the caller's entries, ascending) to send in this attempt and
/// returns one [`EntryResult`] per index in the same order (the services answer in request order)
/// or a [`CallError`] for the whole call. A response with the wrong number of results is treated
/// as a retryable call failure rather than guessed at.
pub async fn send_partial<R, F, Fut>(
    n: usize,
    policy: &RetryPolicy,
    deadline: Instant,
    mut send: F,
) -> PartialOutcome<R>
where
    F: FnMut(Vec<usize>) -> Fut,
    Fut: Future<Output = Result<Vec<EntryResult<R>>, CallError>>,
{
    let mut results: Vec<Option<EntryOutcome<R>>> = (0..n).map(|_| None).collect();
    let mut last_error: Vec<Option<CallError>> = vec![None; n];
    let mut pending: Vec<usize> = (0..n).collect();
    let mut attempts = 0u32;
    while !pending.is_empty() {
        attempts += 1;
        let sent = pending.clone();
        let response = match tokio::time::timeout_at(deadline, send(sent.clone())).await {
            Ok(r) => r,
            Err(_) => Err(CallError::deadline()),
        };
        let still = settle(response, sent, &mut results, &mut last_error);
        pending = still;
        if pending.is_empty() || attempts >= policy.max_attempts {
            break;
        }
        let delay = policy.backoff(attempts);
        if Instant::now() + delay >= deadline {
            break;
        }
        tokio::time::sleep(delay).await;
    }
    for idx in pending {
        results[idx] = Some(Err(last_error[idx]
            .take()
            .unwrap_or_else(CallError::deadline)));
    }
    PartialOutcome {
        results: results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(CallError::deadline())))
            .collect(),
        attempts,
    }
}

/// Sort one attempt's answer for the entries `sent`: final results into `results`, retryable
/// failures into `last_error`; the entries to try again.
fn settle<R>(
    response: Result<Vec<EntryResult<R>>, CallError>,
    sent: Vec<usize>,
    results: &mut [Option<EntryOutcome<R>>],
    last_error: &mut [Option<CallError>],
) -> Vec<usize> {
    let mut still = Vec::new();
    match response {
        Ok(entries) if entries.len() == sent.len() => {
            for (idx, entry) in sent.into_iter().zip(entries) {
                match entry {
                    EntryResult::Ok(r) => results[idx] = Some(Ok(r)),
                    EntryResult::Failed(e) if e.retryable => {
                        last_error[idx] = Some(e);
                        still.push(idx);
                    }
                    EntryResult::Failed(e) => results[idx] = Some(Err(e)),
                }
            }
        }
        Ok(entries) => {
            let e = CallError {
                retryable: true,
                code: "MalformedResponse".into(),
                message: format!("{} results for {} entries", entries.len(), sent.len()),
            };
            for idx in sent {
                last_error[idx] = Some(e.clone());
                still.push(idx);
            }
        }
        Err(e) if e.retryable => {
            for idx in sent {
                last_error[idx] = Some(e.clone());
                still.push(idx);
            }
        }
        Err(e) => {
            for idx in sent {
                results[idx] = Some(Err(e.clone()));
            }
        }
    }
    still
}

/// Something that knows whether trying again may help.
pub trait Retryable {
    /// True for transient failures (throttling, 5xx, timeouts, connection problems).
    fn is_retryable(&self) -> bool;
}

impl Retryable for CallError {
    fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// Call `f` until it succeeds, fails permanently, the attempts are spent or the next backoff would
/// cross `deadline`. Returns the last result and the number of calls made.
pub async fn retry_call<T, E, F, Fut>(
    policy: &RetryPolicy,
    deadline: Instant,
    mut f: F,
) -> (Result<T, E>, u32)
where
    E: Retryable + From<CallError>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let result = match tokio::time::timeout_at(deadline, f()).await {
            Ok(r) => r,
            Err(_) => Err(E::from(CallError::deadline())),
        };
        match result {
            Ok(v) => return (Ok(v), attempts),
            Err(e) if !e.is_retryable() || attempts >= policy.max_attempts => {
                return (Err(e), attempts);
            }
            Err(e) => {
                let delay = policy.backoff(attempts);
                if Instant::now() + delay >= deadline {
                    return (Err(e), attempts);
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        }
    }

    fn throttled() -> CallError {
        CallError {
            retryable: true,
            code: "ProvisionedThroughputExceededException".into(),
            message: "slow down".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_policy_caps_by_the_budget_only_when_it_has_one() {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let start = Instant::now();
        let open = DeadlinePolicy {
            margin: Duration::from_secs(1),
            fallback: Duration::from_secs(7),
            budget: None,
        };
        let left = open.deadline(now_ms + 20_000) - start;
        assert!(
            left > Duration::from_secs(18) && left <= Duration::from_secs(19),
            "{left:?}"
        );
        assert_eq!(open.deadline(0) - start, Duration::from_secs(7));
        let capped = DeadlinePolicy {
            budget: Some(Duration::from_secs(3)),
            ..open
        };
        assert_eq!(
            capped.deadline(now_ms + 20_000) - start,
            Duration::from_secs(3)
        );
        assert_eq!(capped.deadline(0) - start, Duration::from_secs(3));
        // A Lambda deadline sooner than the budget wins.
        let left = capped.deadline(now_ms + 2_000) - start;
        assert!(left <= Duration::from_secs(1), "{left:?}");
    }

    #[test]
    fn usable_time_keeps_a_margin_and_knows_unknown_deadlines() {
        let now = 1_800_000_000_000;
        let (m, f) = (Duration::from_secs(5), Duration::from_secs(60));
        assert_eq!(
            usable_time(now + 60_000, now, m, f),
            Duration::from_secs(55)
        );
        // Less than the margin left: half of it.
        assert_eq!(usable_time(now + 2_000, now, m, f), Duration::from_secs(1));
        assert_eq!(usable_time(now - 10, now, m, f), Duration::ZERO);
        // Context::default() and cargo lambda watch's relative timeout.
        assert_eq!(usable_time(0, now, m, f), f);
        assert_eq!(usable_time(600_000, now, m, f), f);
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = policy();
        for attempt in 1..40 {
            assert!(p.backoff(attempt) <= p.max_delay);
        }
        assert!(p.backoff(1) <= Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn resends_only_failed_entries() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = calls.clone();
        let out = send_partial(
            4,
            &policy(),
            Instant::now() + Duration::from_secs(10),
            move |idx| {
                let c = c.clone();
                async move {
                    let n = {
                        let mut g = c.lock().unwrap();
                        g.push(idx.clone());
                        g.len()
                    };
                    Ok(idx
                        .iter()
                        .map(|&i| {
                            if n == 1 && (i == 1 || i == 3) {
                                EntryResult::Failed(throttled())
                            } else {
                                EntryResult::Ok(i * 10)
                            }
                        })
                        .collect())
                }
            },
        )
        .await;
        assert_eq!(out.results, vec![Ok(0), Ok(10), Ok(20), Ok(30)]);
        assert_eq!(out.attempts, 2);
        assert_eq!(*calls.lock().unwrap(), vec![vec![0, 1, 2, 3], vec![1, 3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_entry_errors_are_not_retried() {
        let out = send_partial(
            2,
            &policy(),
            Instant::now() + Duration::from_secs(10),
            |idx| async move {
                Ok(idx
                    .iter()
                    .map(|&i| {
                        if i == 0 {
                            EntryResult::Failed(CallError {
                                retryable: false,
                                code: "ValidationException".into(),
                                message: "bad".into(),
                            })
                        } else {
                            EntryResult::Ok(())
                        }
                    })
                    .collect())
            },
        )
        .await;
        assert_eq!(out.attempts, 1);
        assert_eq!(
            out.results[0].as_ref().unwrap_err().code,
            "ValidationException"
        );
        assert!(out.results[1].is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn persistent_throttling_gives_up_after_max_attempts() {
        let out: PartialOutcome<()> = send_partial(
            3,
            &policy(),
            Instant::now() + Duration::from_secs(60),
            |idx| async move {
                Ok(idx
                    .iter()
                    .map(|_| EntryResult::Failed(throttled()))
                    .collect())
            },
        )
        .await;
        assert_eq!(out.attempts, 5);
        assert_eq!(out.failed(), 3);
        assert!(
            out.results
                .iter()
                .all(|r| r.as_ref().unwrap_err().retryable)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_stops_retrying_early() {
        let p = RetryPolicy {
            max_attempts: 100,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
        };
        let start = Instant::now();
        let out: PartialOutcome<()> =
            send_partial(1, &p, start + Duration::from_secs(3), |_| async move {
                Err(throttled())
            })
            .await;
        assert!(out.attempts < 100);
        assert!(Instant::now() <= start + Duration::from_secs(3));
        assert_eq!(
            out.results[0].as_ref().unwrap_err().code,
            "ProvisionedThroughputExceededException"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_hanging_past_the_deadline_is_abandoned() {
        let start = Instant::now();
        let out: PartialOutcome<()> = send_partial(
            2,
            &policy(),
            start + Duration::from_secs(1),
            |_| async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(vec![])
            },
        )
        .await;
        assert_eq!(out.attempts, 1);
        assert!(
            out.results
                .iter()
                .all(|r| r.as_ref().unwrap_err().code == "DeadlineExceeded")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_result_count_is_retried_not_guessed() {
        let n = Arc::new(Mutex::new(0));
        let out = send_partial(
            2,
            &policy(),
            Instant::now() + Duration::from_secs(10),
            |idx| {
                let n = n.clone();
                async move {
                    let mut g = n.lock().unwrap();
                    *g += 1;
                    if *g == 1 {
                        Ok(vec![EntryResult::Ok(())])
                    } else {
                        Ok(idx.iter().map(|_| EntryResult::Ok(())).collect())
                    }
                }
            },
        )
        .await;
        assert_eq!(out.attempts, 2);
        assert_eq!(out.failed(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_call_stops_on_permanent_error() {
        let (r, attempts): (Result<(), CallError>, u32) = retry_call(
            &policy(),
            Instant::now() + Duration::from_secs(10),
            || async {
                Err(CallError {
                    retryable: false,
                    code: "AccessDenied".into(),
                    message: "no".into(),
                })
            },
        )
        .await;
        assert_eq!(attempts, 1);
        assert_eq!(r.unwrap_err().code, "AccessDenied");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_call_retries_transient_then_succeeds() {
        let n = Arc::new(Mutex::new(0));
        let (r, attempts) = retry_call(&policy(), Instant::now() + Duration::from_secs(10), || {
            let n = n.clone();
            async move {
                let mut g = n.lock().unwrap();
                *g += 1;
                if *g < 3 { Err(throttled()) } else { Ok(*g) }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(attempts, 3);
    }
}
