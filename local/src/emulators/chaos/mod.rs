//! Fault injection: the local stack with AWS misbehaving the way AWS does
//! (`caudal-local up --chaos …`, `tests/tests/chaos.rs`).
//!
//! One [`Chaos`] per stack, shared by the places that inject:
//! - [`aws`]: the emulator proxy ([`super::motoproxy`]) answers a share of the **functions'** S3,
//!   Kinesis and Firehose calls with the services' own error shapes — S3 `503 SlowDown` /
//!   `ServiceUnavailable` XML (and `500 InternalError` *after* a write went through), Kinesis
//!   `ProvisionedThroughputExceededException` for a whole call and per record inside an HTTP 200
//!   PutRecords answer (and `InternalFailure` after the records were written), Firehose
//!   `ServiceUnavailableException` for a whole call and per record with `FailedPutCount`. The
//!   stack's own clients (event source pollers, notification relays, reports) use a second,
//!   fault-free listener of the same proxy: they stand in for AWS's side, which retries for
//!   itself.
//! - the Data API ([`super::dataapi::exec`]): a share of statements end FAILED before running,
//!   a share is stopped part way and rolled back (ABORTED, or FAILED with a lost connection),
//!   and a share is delayed (stays SUBMITTED / STARTED longer) — [`Chaos::statement_fault`].
//! - in-process invocations ([`super::lambda`]): a share is killed at a random point of its run
//!   ([`Chaos::kill_after`]), the way a crashed or recycled sandbox ends; the event source
//!   mappings then retry as Lambda does.
//! - S3 notifications ([`super::notify`]): each is delivered [`ChaosConfig::dup_notify`] times,
//!   the copies a moment apart so that different loader workers pick them up concurrently.
//!
//! Faults are drawn from one seeded sequence ([`ChaosConfig::seed`]): the same seed gives the
//! same sequence of decisions, though which request meets which decision depends on timing.
//! Nothing is injected until the stack has started ([`Chaos::arm`]): start-up (resource
//! creation, the loader's migration) runs clean.
//!
//! The syntax of `--chaos` is documented on [`ChaosConfig::parse`] and in docs/LOCAL.md.

pub mod aws;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What `--chaos on` (or `default`) means: the rates the chaos end-to-end test runs with.
pub const DEFAULT_SPEC: &str = "s3=0.05,kinesis=0.05,firehose=0.1,dataapi=0.05,delay=0.1,\
                                delay-ms=100-2000,kill=0.02,dup-notify=3,visibility=20,seed=42";

/// Why a `--chaos` value was refused. Permanent: the value must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosError {
    /// An item is not `key=value` (or `on`/`default`).
    #[error("chaos: expected key=value, got {0:?}")]
    Syntax(String),
    /// An unknown key.
    #[error(
        "chaos: unknown key {0:?} (known: s3, kinesis, kinesis-down, firehose, dataapi, delay, \
         delay-ms, kill, dup-notify, visibility, seed)"
    )]
    UnknownKey(String),
    /// A value of the wrong kind or out of range.
    #[error("chaos: {key}={value}: {reason}")]
    Value {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

impl ChaosError {
    /// None of these is fixed by trying again.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// What to inject, and how often. Rates are probabilities in `0..=1`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosConfig {
    /// Seed of the decision sequence.
    pub seed: u64,
    /// Share of the functions' S3 requests answered with an error.
    pub s3: f64,
    /// Share of PutRecords/PutRecord calls failed as a whole, and, independently, share of the
    /// records of the other PutRecords calls failed per record.
    pub kinesis: f64,
    /// A Kinesis outage: from `.0` to `.1` seconds after the stack is up, every PutRecords /
    /// PutRecord call of the functions is refused (nothing written). `None` = no outage
    /// (tests also switch one on and off with [`Chaos::set_kinesis_down`]).
    pub kinesis_down_s: Option<(u64, u64)>,
    /// Same as `kinesis`, for Firehose PutRecordBatch/PutRecord.
    pub firehose: f64,
    /// Share of Data API statements that end FAILED (half, before running) or are stopped part
    /// way and rolled back (the other half).
    pub dataapi: f64,
    /// Share of Data API statements delayed by a time drawn from `delay_ms`.
    pub delay: f64,
    /// Range of a Data API delay, in milliseconds (inclusive).
    pub delay_ms: (u64, u64),
    /// Share of in-process invocations killed part way.
    pub kill: f64,
    /// Deliveries of each S3 notification (1 = no duplicates).
    pub dup_notify: u32,
    /// Cap of every queue's VisibilityTimeout, in seconds: a failed or killed invocation's
    /// messages come back after this long instead of the template's minutes.
    pub visibility_s: u32,
}

impl Default for ChaosConfig {
    /// Nothing injected (every rate 0, one delivery per notification, visibility 20 s).
    fn default() -> Self {
        ChaosConfig {
            seed: 0,
            s3: 0.0,
            kinesis: 0.0,
            kinesis_down_s: None,
            firehose: 0.0,
            dataapi: 0.0,
            delay: 0.0,
            delay_ms: (100, 2000),
            kill: 0.0,
            dup_notify: 1,
            visibility_s: 20,
        }
    }
}

fn rate(key: &str, value: &str) -> Result<f64, ChaosError> {
    let bad = |reason| ChaosError::Value {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let r: f64 = value.parse().map_err(|_| bad("expected a number"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(bad("a rate is between 0 and 1"))
    }
}

/// `MIN-MAX` (or one number for both), `MIN ≤ MAX`.
fn range(key: &str, value: &str, reason: &'static str) -> Result<(u64, u64), ChaosError> {
    let (lo, hi) = value.split_once('-').unwrap_or((value, value));
    let lo: u64 = integer(key, lo.trim(), reason)?;
    let hi: u64 = integer(key, hi.trim(), reason)?;
    if lo > hi {
        return Err(ChaosError::Value {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: "MIN is above MAX",
        });
    }
    Ok((lo, hi))
}

fn integer<T: std::str::FromStr>(
    key: &str,
    value: &str,
    reason: &'static str,
) -> Result<T, ChaosError> {
    value.parse().map_err(|_| ChaosError::Value {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    })
}

impl ChaosConfig {
    /// Parses a comma-separated list of `key=value` items, applied left to right over
    /// [`ChaosConfig::default`] (nothing injected):
    ///
    /// | key | value |
    /// |---|---|
    /// | `s3`, `kinesis`, `firehose`, `dataapi`, `delay`, `kill` | rate, `0`–`1` |
    /// | `kinesis-down` | `START-END` seconds after start-up during which Kinesis refuses every write |
    /// | `delay-ms` | `MIN-MAX` milliseconds of a Data API delay (or one number) |
    /// | `dup-notify` | deliveries of each S3 notification, ≥ 1 |
    /// | `visibility` | cap of SQS visibility timeouts, seconds, ≥ 1 |
    /// | `seed` | seed of the decision sequence |
    ///
    /// `on` or `default` stands for [`DEFAULT_SPEC`], so `on,kill=0.1` is the default with more
    /// kills.
    pub fn parse(spec: &str) -> Result<ChaosConfig, ChaosError> {
        let mut c = ChaosConfig::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "on" || item == "default" {
                let preset = ChaosConfig::parse(DEFAULT_SPEC)?;
                c = preset;
                continue;
            }
            let (key, value) = item
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| ChaosError::Syntax(item.to_owned()))?;
            match key {
                "s3" => c.s3 = rate(key, value)?,
                "kinesis" => c.kinesis = rate(key, value)?,
                "firehose" => c.firehose = rate(key, value)?,
                "dataapi" => c.dataapi = rate(key, value)?,
                "delay" => c.delay = rate(key, value)?,
                "kill" => c.kill = rate(key, value)?,
                "delay-ms" => c.delay_ms = range(key, value, "expected MIN-MAX milliseconds")?,
                "kinesis-down" => {
                    c.kinesis_down_s = Some(range(key, value, "expected START-END seconds")?);
                }
                "dup-notify" => {
                    c.dup_notify = integer(key, value, "expected a whole number ≥ 1")?;
                    if c.dup_notify == 0 {
                        return Err(ChaosError::Value {
                            key: key.to_owned(),
                            value: value.to_owned(),
                            reason: "at least one delivery",
                        });
                    }
                }
                "visibility" => {
                    c.visibility_s = integer(key, value, "expected whole seconds ≥ 1")?;
                    if c.visibility_s == 0 {
                        return Err(ChaosError::Value {
                            key: key.to_owned(),
                            value: value.to_owned(),
                            reason: "expected whole seconds ≥ 1",
                        });
                    }
                }
                "seed" => c.seed = integer(key, value, "expected a whole number")?,
                other => return Err(ChaosError::UnknownKey(other.to_owned())),
            }
        }
        Ok(c)
    }
}

impl fmt::Display for ChaosConfig {
    /// The `--chaos` text that parses back to this configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s3={},kinesis={},{}firehose={},dataapi={},delay={},delay-ms={}-{},kill={},\
             dup-notify={},visibility={},seed={}",
            self.s3,
            self.kinesis,
            self.kinesis_down_s
                .map(|(a, b)| format!("kinesis-down={a}-{b},"))
                .unwrap_or_default(),
            self.firehose,
            self.dataapi,
            self.delay,
            self.delay_ms.0,
            self.delay_ms.1,
            self.kill,
            self.dup_notify,
            self.visibility_s,
            self.seed
        )
    }
}

/// The kinds of fault, as counted in [`ChaosStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// S3 `503 SlowDown` / `ServiceUnavailable` (nothing done).
    S3Unavailable,
    /// S3 `500 InternalError` after the write went through.
    S3ErrorAfterWrite,
    /// Kinesis `ProvisionedThroughputExceededException` for a whole call (nothing written).
    KinesisThrottledCall,
    /// Kinesis `500 InternalFailure` after the call's records were written.
    KinesisErrorAfterWrite,
    /// PutRecords entries answered with an `ErrorCode` (not written).
    KinesisFailedRecords,
    /// Firehose `ServiceUnavailableException` for a whole call (nothing delivered).
    FirehoseUnavailableCall,
    /// PutRecordBatch entries answered with an `ErrorCode` (counted in `FailedPutCount`).
    FirehoseFailedRecords,
    /// Data API statements that ended FAILED before running.
    DataApiFailed,
    /// Data API statements stopped part way and rolled back.
    DataApiStopped,
    /// Data API statements delayed.
    DataApiDelayed,
    /// In-process invocations killed part way.
    Killed,
    /// Extra deliveries of S3 notifications.
    DuplicateNotifications,
    /// Kinesis calls refused during an outage (`kinesis-down`).
    KinesisOutageCall,
    /// S3 notifications dropped during an [`Outage::Notifications`].
    NotificationsDropped,
}

impl Fault {
    /// Every kind, in report order.
    pub const ALL: [Fault; 14] = [
        Fault::S3Unavailable,
        Fault::S3ErrorAfterWrite,
        Fault::KinesisThrottledCall,
        Fault::KinesisErrorAfterWrite,
        Fault::KinesisFailedRecords,
        Fault::FirehoseUnavailableCall,
        Fault::FirehoseFailedRecords,
        Fault::DataApiFailed,
        Fault::DataApiStopped,
        Fault::DataApiDelayed,
        Fault::Killed,
        Fault::DuplicateNotifications,
        Fault::KinesisOutageCall,
        Fault::NotificationsDropped,
    ];

    /// A short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Fault::S3Unavailable => "s3 503 SlowDown/ServiceUnavailable",
            Fault::S3ErrorAfterWrite => "s3 500 InternalError after the write",
            Fault::KinesisThrottledCall => "kinesis ProvisionedThroughputExceeded (call)",
            Fault::KinesisErrorAfterWrite => "kinesis 500 InternalFailure after the write",
            Fault::KinesisFailedRecords => "kinesis records failed in PutRecords",
            Fault::FirehoseUnavailableCall => "firehose ServiceUnavailable (call)",
            Fault::FirehoseFailedRecords => "firehose records failed (FailedPutCount)",
            Fault::DataApiFailed => "dataapi statements FAILED",
            Fault::DataApiStopped => "dataapi statements stopped part way, rolled back",
            Fault::DataApiDelayed => "dataapi statements delayed",
            Fault::Killed => "invocations killed part way",
            Fault::DuplicateNotifications => "duplicate S3 notifications",
            Fault::KinesisOutageCall => "kinesis calls refused in an outage",
            Fault::NotificationsDropped => "s3 notifications dropped in an outage",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Faults injected so far, per kind.
#[derive(Debug, Default)]
pub struct ChaosStats {
    counts: [AtomicU64; Fault::ALL.len()],
}

impl ChaosStats {
    /// Counts `n` faults of `kind`.
    pub fn add(&self, kind: Fault, n: u64) {
        self.counts[kind.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Faults of `kind` so far.
    pub fn get(&self, kind: Fault) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }

    /// Every kind with its count.
    pub fn snapshot(&self) -> BTreeMap<Fault, u64> {
        Fault::ALL.iter().map(|&k| (k, self.get(k))).collect()
    }
}

/// What happens to one Data API statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementFault {
    /// It runs normally.
    None,
    /// It waits this long in SUBMITTED and this long in STARTED (before its commit).
    Delay {
        /// Extra time before it is picked up.
        submitted: Duration,
        /// Extra time after its statements ran, before the commit.
        started: Duration,
    },
    /// It ends FAILED with this error before running anything.
    Fail(String),
    /// It runs its first `after` sub-statements inside its transaction, then stops: the
    /// transaction is rolled back and the statement ends ABORTED (`aborted`) or FAILED with a
    /// lost connection.
    Stop {
        /// Sub-statements run before the stop.
        after: usize,
        /// ABORTED rather than FAILED.
        aborted: bool,
    },
}

/// An outage a test (or an operator rehearsing) switches on and off while the stack runs,
/// beside the random faults: each makes one part fail every time, as a real outage or a
/// misconfiguration does, until it is switched off. Only the functions' calls are affected
/// (the stack's own clients and `caudal` reach the emulators directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Every S3 write of the functions is refused with `503 SlowDown`.
    S3Writes,
    /// Every Data API batch (`BatchExecuteStatement`: the loader's load transactions) ends
    /// FAILED; single statements (look-ups, `caudal`'s queries) still run.
    Loads,
    /// S3 event notifications are dropped instead of delivered (a notification configuration
    /// that was removed, or lost events).
    Notifications,
}

impl Outage {
    fn index(self) -> usize {
        self as usize
    }
}

/// A running stack's fault injector.
#[derive(Debug)]
pub struct Chaos {
    config: ChaosConfig,
    armed: AtomicBool,
    armed_at: std::sync::OnceLock<std::time::Instant>,
    kinesis_down: AtomicBool,
    outages: [AtomicBool; 3],
    draws: AtomicU64,
    /// Faults injected so far.
    pub stats: ChaosStats,
}

/// splitmix64: a full-period mix of a 64-bit counter (Steele et al., "Fast splittable
/// pseudorandom number generators"): good enough for fault decisions, no dependency, no lock.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Transient errors Redshift reports for a statement that did not run.
const STATEMENT_ERRORS: [&str; 3] = [
    "ERROR: could not complete because of conflict with concurrent transaction",
    "ERROR: Query (4242) cancelled by WLM abort action of Query Monitoring Rule \"caudal_chaos\".",
    "ERROR: S3ServiceException:Please reduce your request rate.,Status 503,Error SlowDown,\
     Rid CAUDALCHAOS,ExtRid CAUDALCHAOS,CanRetry 1",
];

impl Chaos {
    /// An injector for `config`, not yet armed.
    pub fn new(config: ChaosConfig) -> Chaos {
        Chaos {
            config,
            armed: AtomicBool::new(false),
            armed_at: std::sync::OnceLock::new(),
            kinesis_down: AtomicBool::new(false),
            outages: Default::default(),
            draws: AtomicU64::new(0),
            stats: ChaosStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ChaosConfig {
        &self.config
    }

    /// Starts injecting (the stack calls this once it has started).
    pub fn arm(&self) {
        let _ = self.armed_at.set(std::time::Instant::now());
        self.armed.store(true, Ordering::Release);
    }

    /// Starts (`true`) or ends a Kinesis outage now, whatever `kinesis-down` says.
    pub fn set_kinesis_down(&self, down: bool) {
        self.kinesis_down.store(down, Ordering::Release);
    }

    /// Starts (`true`) or ends the outage `o` now.
    pub fn set_outage(&self, o: Outage, on: bool) {
        self.outages[o.index()].store(on, Ordering::Release);
    }

    /// Whether the outage `o` is on now (and the injector armed).
    pub fn outage(&self, o: Outage) -> bool {
        self.is_armed() && self.outages[o.index()].load(Ordering::Acquire)
    }

    /// Whether Kinesis is refusing every write now: an outage switched on, or inside the
    /// configured `kinesis-down` window (counted from [`Chaos::arm`]).
    pub fn kinesis_refusing(&self) -> bool {
        if !self.is_armed() {
            return false;
        }
        if self.kinesis_down.load(Ordering::Acquire) {
            return true;
        }
        match (self.config.kinesis_down_s, self.armed_at.get()) {
            (Some((from, to)), Some(at)) => {
                let s = at.elapsed().as_secs_f64();
                s >= from as f64 && s < to as f64
            }
            _ => false,
        }
    }

    /// Stops injecting.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Release);
    }

    /// Whether faults are being injected.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    /// The next number of the sequence, uniform in `[0, 1)`.
    pub fn uniform(&self) -> f64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let x = splitmix64(self.config.seed ^ splitmix64(n));
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `rate` while armed (never draws when `rate` is 0).
    pub fn roll(&self, rate: f64) -> bool {
        rate > 0.0 && self.is_armed() && self.uniform() < rate
    }

    /// A whole number in `0..n` (0 when `n` is 0).
    pub fn below(&self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// When to kill an invocation that typically takes `typical`: `None` (let it run) or a
    /// point drawn uniformly from its typical run time, so kills land mid-run.
    pub fn kill_after(&self, typical: Duration) -> Option<Duration> {
        if !self.roll(self.config.kill) {
            return None;
        }
        Some(typical.mul_f64(self.uniform()))
    }

    /// What happens to a Data API statement of `subs` sub-statements (`with_copy`: one of them
    /// is a COPY, which fails the way S3 throttling fails a COPY; `stoppable`: it has no
    /// transaction control of its own, so stopping it part way can roll all of it back — a
    /// statement that commits for itself is failed before running instead).
    pub fn statement_fault(&self, subs: usize, with_copy: bool, stoppable: bool) -> StatementFault {
        let c = &self.config;
        if subs > 1 && self.outage(Outage::Loads) {
            self.stats.add(Fault::DataApiFailed, 1);
            return StatementFault::Fail(
                "ERROR: permission denied for relation caudal_ledger (caudal-local outage: loads)"
                    .to_owned(),
            );
        }
        if self.roll(c.dataapi) {
            if !stoppable || self.uniform() < 0.5 {
                let mut pick = self.below(STATEMENT_ERRORS.len());
                if !with_copy && pick == STATEMENT_ERRORS.len() - 1 {
                    pick = 0;
                }
                self.stats.add(Fault::DataApiFailed, 1);
                return StatementFault::Fail(STATEMENT_ERRORS[pick].to_owned());
            }
            self.stats.add(Fault::DataApiStopped, 1);
            return StatementFault::Stop {
                after: self.below(subs + 1),
                aborted: self.uniform() < 0.5,
            };
        }
        if self.roll(c.delay) {
            let (lo, hi) = c.delay_ms;
            let total = lo + (self.uniform() * (hi - lo) as f64) as u64;
            let submitted = total / 2;
            self.stats.add(Fault::DataApiDelayed, 1);
            return StatementFault::Delay {
                submitted: Duration::from_millis(submitted),
                started: Duration::from_millis(total - submitted),
            };
        }
        StatementFault::None
    }

    /// Extra deliveries of an S3 notification, each with the pause before it is sent (spread
    /// over 1.5 s, so different pollers receive them); empty while disarmed.
    pub fn duplicate_delays(&self) -> Vec<Duration> {
        if !self.is_armed() || self.config.dup_notify <= 1 {
            return Vec::new();
        }
        (1..self.config.dup_notify)
            .map(|_| Duration::from_millis((self.uniform() * 1500.0) as u64))
            .collect()
    }
}

impl fmt::Display for ChaosStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (kind, n) in self.snapshot() {
            writeln!(f, "  {:<52}{n:>8}", kind.label())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_parses_and_prints_back() {
        let c = ChaosConfig::parse(
            "s3=0.05, kinesis=0.05,firehose=0.1,dataapi=0.05,delay=0.2,delay-ms=10-30,kill=0.02,\
             dup-notify=3,visibility=7,seed=42",
        )
        .unwrap();
        assert_eq!(c.s3, 0.05);
        assert_eq!(c.firehose, 0.1);
        assert_eq!(c.delay_ms, (10, 30));
        assert_eq!(c.dup_notify, 3);
        assert_eq!(c.visibility_s, 7);
        assert_eq!(c.seed, 42);
        assert_eq!(ChaosConfig::parse(&c.to_string()).unwrap(), c);
        let on = ChaosConfig::parse("on").unwrap();
        assert_eq!(on, ChaosConfig::parse(DEFAULT_SPEC).unwrap());
        assert!(on.kill > 0.0 && on.dup_notify > 1);
        assert_eq!(ChaosConfig::parse("on,kill=0.5").unwrap().kill, 0.5);
        assert_eq!(ChaosConfig::parse("s3=1").unwrap().kinesis, 0.0);
        assert_eq!(ChaosConfig::parse("delay-ms=5").unwrap().delay_ms, (5, 5));
        let down = ChaosConfig::parse("kinesis-down=10-70").unwrap();
        assert_eq!(down.kinesis_down_s, Some((10, 70)));
        assert_eq!(ChaosConfig::parse(&down.to_string()).unwrap(), down);
        assert!(ChaosConfig::parse("kinesis-down=70-10").is_err());
        assert!(ChaosConfig::parse("kinesis-down=x").is_err());
    }

    #[test]
    fn a_kinesis_outage_follows_its_window_and_the_switch() {
        let c = Chaos::new(ChaosConfig::parse("kinesis-down=0-3600").unwrap());
        assert!(!c.kinesis_refusing(), "nothing before the stack is up");
        c.arm();
        assert!(c.kinesis_refusing(), "inside the window");
        let later = Chaos::new(ChaosConfig::parse("kinesis-down=3600-7200").unwrap());
        later.arm();
        assert!(!later.kinesis_refusing(), "before the window");
        later.set_kinesis_down(true);
        assert!(later.kinesis_refusing(), "switched on");
        later.set_kinesis_down(false);
        assert!(!later.kinesis_refusing());
        later.disarm();
        later.set_kinesis_down(true);
        assert!(!later.kinesis_refusing(), "never while disarmed");
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!(matches!(
            ChaosConfig::parse("s3"),
            Err(ChaosError::Syntax(s)) if s == "s3"
        ));
        assert!(matches!(
            ChaosConfig::parse("lambda=0.1"),
            Err(ChaosError::UnknownKey(k)) if k == "lambda"
        ));
        for bad in [
            "s3=1.5",
            "s3=-0.1",
            "kill=x",
            "dup-notify=0",
            "visibility=0",
            "delay-ms=9-3",
            "seed=-1",
        ] {
            let e = ChaosConfig::parse(bad).unwrap_err();
            assert!(matches!(e, ChaosError::Value { .. }), "{bad}: {e}");
            assert!(!e.is_retryable());
        }
    }

    #[test]
    fn draws_are_reproducible_and_follow_the_rates() {
        let config = ChaosConfig {
            seed: 7,
            kill: 0.25,
            ..ChaosConfig::default()
        };
        let (a, b) = (Chaos::new(config.clone()), Chaos::new(config));
        a.arm();
        b.arm();
        let xs: Vec<f64> = (0..100).map(|_| a.uniform()).collect();
        let ys: Vec<f64> = (0..100).map(|_| b.uniform()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let kills = (0..10_000)
            .filter(|_| a.kill_after(Duration::from_secs(1)).is_some())
            .count();
        assert!((2_200..2_800).contains(&kills), "{kills}");
        let other = Chaos::new(ChaosConfig {
            seed: 8,
            ..ChaosConfig::default()
        });
        assert_ne!(
            other.uniform(),
            Chaos::new(ChaosConfig::default()).uniform()
        );
    }

    #[test]
    fn nothing_is_injected_until_armed() {
        let c = Chaos::new(ChaosConfig::parse("on,kill=1,dataapi=1").unwrap());
        assert_eq!(c.kill_after(Duration::from_secs(1)), None);
        assert_eq!(c.statement_fault(3, true, true), StatementFault::None);
        assert!(c.duplicate_delays().is_empty());
        c.arm();
        assert!(c.kill_after(Duration::from_secs(1)).is_some());
        assert_ne!(c.statement_fault(3, true, true), StatementFault::None);
        assert_eq!(c.duplicate_delays().len(), 2);
        c.disarm();
        assert_eq!(c.kill_after(Duration::from_secs(1)), None);
    }

    #[test]
    fn statement_faults_cover_every_kind_and_stay_in_range() {
        let c = Chaos::new(ChaosConfig {
            dataapi: 0.5,
            delay: 0.5,
            delay_ms: (100, 200),
            ..ChaosConfig::default()
        });
        c.arm();
        let mut seen = BTreeMap::new();
        for _ in 0..2_000 {
            let f = c.statement_fault(4, false, true);
            let kind = match &f {
                StatementFault::None => "none",
                StatementFault::Delay { submitted, started } => {
                    let total = *submitted + *started;
                    assert!(
                        (Duration::from_millis(100)..=Duration::from_millis(200)).contains(&total)
                    );
                    "delay"
                }
                StatementFault::Fail(m) => {
                    assert!(m.starts_with("ERROR: "));
                    assert!(!m.contains("S3ServiceException"), "no COPY, no S3 error");
                    "fail"
                }
                StatementFault::Stop { after, .. } => {
                    assert!(*after <= 4);
                    "stop"
                }
            };
            *seen.entry(kind).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(
            c.stats.get(Fault::DataApiFailed) + c.stats.get(Fault::DataApiStopped),
            seen["fail"] + seen["stop"]
        );
        assert_eq!(c.stats.get(Fault::DataApiDelayed), seen["delay"]);
        // A statement with its own BEGIN/COMMIT is never stopped part way.
        assert!((0..500).all(|_| !matches!(
            c.statement_fault(2, false, false),
            StatementFault::Stop { .. }
        )));
    }
}
