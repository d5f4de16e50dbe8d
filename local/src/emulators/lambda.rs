//! In-process functions: what "invoking a Lambda" means in the local stack.
//!
//! Each function of the template runs **in this process**: its library's `invoke(state,
//! payload, context)` is called with the exact JSON Lambda would send. One process to start
//! and stop, fast iteration and a debugger that sees every stage; the deployable arm64
//! binaries are exercised separately by the SAM build smoke test. What Lambda adds around a
//! call is emulated here: a fresh [`lambda_runtime::Context`] (request id, deadline, ARN), the
//! function's `Timeout`, the 6 MB synchronous payload limit, and a panic in a handler becoming
//! a failed invocation instead of taking the whole stack down. With [`super::chaos`], a share of
//! invocations is killed at a random point of its run (the handler's future is dropped at
//! whatever await it was in, as a sandbox dies mid-call).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::Instrument;

use crate::emulators::chaos::{Chaos, Fault};

/// Lambda's limit on a synchronous invocation payload (request and response).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// The future an in-process handler returns.
pub type InvokeFuture = Pin<Box<dyn Future<Output = Result<Value, lambda_runtime::Error>> + Send>>;

/// Something that handles an invocation: the payload as Lambda sends it and a context.
pub trait Handler: Send + Sync {
    /// Runs one invocation.
    fn call(&self, payload: Value, ctx: lambda_runtime::Context) -> InvokeFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Value, lambda_runtime::Context) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Value, lambda_runtime::Error>> + Send + 'static,
{
    fn call(&self, payload: Value, ctx: lambda_runtime::Context) -> InvokeFuture {
        Box::pin(self(payload, ctx))
    }
}

/// Why an invocation did not return a result. Lambda reports all of them as a function error
/// to the caller (event source mappings then retry; API Gateway answers 5xx).
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The handler returned an error (Lambda's `Unhandled` function error).
    #[error("function error: {0}")]
    Function(String),
    /// The handler did not finish within the function's Timeout.
    #[error("task timed out after {0:?}")]
    Timeout(Duration),
    /// The handler panicked (Lambda: `Runtime.ExitError`).
    #[error("function panicked: {0}")]
    Panicked(String),
    /// The request payload exceeds 6 MB (Lambda refuses it before running the function).
    #[error("request payload of {0} bytes exceeds the 6 MB invocation limit")]
    PayloadTooLarge(usize),
    /// The sandbox was killed part way (an injected fault, [`super::chaos`]; Lambda:
    /// `Runtime.ExitError`, "signal: killed").
    #[error("Runtime exited with error: signal: killed (after {0:?})")]
    Killed(Duration),
}

impl InvokeError {
    /// Every invocation error may succeed on another attempt (the caller's retry policy
    /// decides), except a payload that is too large, which never will.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, InvokeError::PayloadTooLarge(_))
    }
}

/// Counters of one function's invocations.
#[derive(Debug, Default)]
pub struct InvocationStats {
    /// Invocations started.
    pub invocations: AtomicU64,
    /// Invocations that ended in an [`InvokeError`].
    pub errors: AtomicU64,
    /// Invocations killed part way by [`super::chaos`] (counted in `errors` too).
    pub killed: AtomicU64,
}

/// A function of the template bound to its in-process handler.
pub struct LocalFunction {
    /// Logical ID in the template.
    pub logical_id: String,
    /// Function name.
    pub name: String,
    /// Function ARN.
    pub arn: String,
    /// Timeout from the template.
    pub timeout: Duration,
    /// MemorySize from the template (reported in the context only).
    pub memory_mb: u32,
    /// Invocation counters.
    pub stats: InvocationStats,
    /// The deployed code: replaced by [`LocalFunction::deploy`] (invocations already running
    /// finish on the code they started with, as in Lambda).
    handler: std::sync::RwLock<Arc<dyn Handler>>,
    chaos: Option<Arc<Chaos>>,
    /// Moving average of successful run times, in microseconds: where a kill may land.
    typical_us: AtomicU64,
}

/// The run time assumed before the first invocation finishes.
const FIRST_TYPICAL: Duration = Duration::from_millis(50);

impl std::fmt::Debug for LocalFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFunction")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LocalFunction {
    /// Binds `handler` to the function described by the template.
    pub fn new(
        function: &crate::stack::template::Function,
        handler: Arc<dyn Handler>,
    ) -> LocalFunction {
        LocalFunction {
            logical_id: function.logical_id.clone(),
            name: function.name.clone(),
            arn: function.arn.clone(),
            timeout: function.timeout,
            memory_mb: function.memory_mb,
            stats: InvocationStats::default(),
            handler: std::sync::RwLock::new(handler),
            chaos: None,
            typical_us: AtomicU64::new(FIRST_TYPICAL.as_micros() as u64),
        }
    }

    /// A function not taken from a template (tests).
    pub fn detached(name: &str, timeout: Duration, handler: Arc<dyn Handler>) -> LocalFunction {
        LocalFunction {
            logical_id: name.to_owned(),
            name: name.to_owned(),
            arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            timeout,
            memory_mb: 128,
            stats: InvocationStats::default(),
            handler: std::sync::RwLock::new(handler),
            chaos: None,
            typical_us: AtomicU64::new(FIRST_TYPICAL.as_micros() as u64),
        }
    }

    /// Deploys new code: every invocation from now on runs `handler` (a new version's cold
    /// start, e.g. with a changed rules file); running ones finish on the old code.
    pub fn deploy(&self, handler: Arc<dyn Handler>) {
        match self.handler.write() {
            Ok(mut h) => *h = handler,
            Err(poisoned) => *poisoned.into_inner() = handler,
        }
    }

    /// Kills a share of this function's invocations part way ([`Chaos::kill_after`]).
    pub fn with_chaos(mut self, chaos: Arc<Chaos>) -> LocalFunction {
        self.chaos = Some(chaos);
        self
    }

    /// Invokes the function with `payload` (the JSON Lambda would send), as Lambda would: a
    /// new context, the payload limit, the timeout, and panics contained.
    pub async fn invoke(&self, payload: Value) -> Result<Value, InvokeError> {
        self.stats.invocations.fetch_add(1, Ordering::Relaxed);
        let result = self.invoke_inner(payload).await;
        if let Err(e) = &result {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(function = %self.name, error = %e, "invocation_failed");
        }
        result
    }

    async fn invoke_inner(&self, payload: Value) -> Result<Value, InvokeError> {
        let size = serde_json::to_vec(&payload).map(|v| v.len()).unwrap_or(0);
        if size > MAX_PAYLOAD_BYTES {
            return Err(InvokeError::PayloadTooLarge(size));
        }
        let ctx = self.context();
        let span =
            tracing::info_span!("invoke", function = %self.name, request_id = %ctx.request_id);
        let handler = match self.handler.read() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let fut = handler.call(payload, ctx);
        // A separate task so a panic unwinds only that task and is reported like Lambda's
        // Runtime.ExitError; the timeout aborts it like Lambda kills a timed-out sandbox.
        let task = tokio::spawn(fut.instrument(span));
        let abort = task.abort_handle();
        let typical = Duration::from_micros(self.typical_us.load(Ordering::Relaxed));
        let kill = self
            .chaos
            .as_ref()
            .and_then(|c| c.kill_after(typical))
            .filter(|k| *k < self.timeout);
        let started = std::time::Instant::now();
        let limit = kill.unwrap_or(self.timeout);
        let result = match tokio::time::timeout(limit, task).await {
            Err(_) => {
                abort.abort();
                match kill {
                    Some(after) => {
                        self.stats.killed.fetch_add(1, Ordering::Relaxed);
                        if let Some(c) = &self.chaos {
                            c.stats.add(Fault::Killed, 1);
                        }
                        Err(InvokeError::Killed(after))
                    }
                    None => Err(InvokeError::Timeout(self.timeout)),
                }
            }
            Ok(Err(join)) => Err(InvokeError::Panicked(panic_message(join))),
            Ok(Ok(Err(e))) => Err(InvokeError::Function(e.to_string())),
            Ok(Ok(Ok(v))) => Ok(v),
        };
        if result.is_ok() {
            // An exponential moving average (1/8 weight): kills follow the function's pace.
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let old = self.typical_us.load(Ordering::Relaxed);
            self.typical_us
                .store(old - old / 8 + took / 8, Ordering::Relaxed);
        }
        result
    }

    fn context(&self) -> lambda_runtime::Context {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut ctx = lambda_runtime::Context::default();
        ctx.request_id = uuid::Uuid::new_v4().to_string();
        ctx.deadline = now_ms + self.timeout.as_millis() as u64;
        ctx.invoked_function_arn = self.arn.clone();
        ctx.env_config = Arc::new(lambda_runtime::Config {
            function_name: self.name.clone(),
            memory: i32::try_from(self.memory_mb).unwrap_or(i32::MAX),
            version: "$LATEST".to_owned(),
            log_stream: "local".to_owned(),
            log_group: format!("/aws/lambda/{}", self.name),
        });
        ctx
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if join.is_cancelled() {
        return "cancelled".to_owned();
    }
    match join.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn func(timeout_ms: u64, h: impl Handler + 'static) -> LocalFunction {
        LocalFunction::detached("t", Duration::from_millis(timeout_ms), Arc::new(h))
    }

    #[tokio::test]
    async fn passes_payload_and_a_lambda_like_context() {
        let f = func(
            5_000,
            |payload: Value, ctx: lambda_runtime::Context| async move {
                Ok(serde_json::json!({
                    "echo": payload,
                    "arn": ctx.invoked_function_arn,
                    "rid": ctx.request_id,
                    "deadline": ctx.deadline,
                    "name": ctx.env_config.function_name,
                }))
            },
        );
        let out = f.invoke(serde_json::json!({"a": 1})).await.unwrap();
        assert_eq!(out["echo"]["a"], 1);
        assert_eq!(out["name"], "t");
        assert!(out["arn"].as_str().unwrap().ends_with(":function:t"));
        assert_eq!(out["rid"].as_str().unwrap().len(), 36);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let deadline = out["deadline"].as_u64().unwrap();
        assert!(
            deadline > now && deadline <= now + 5_000,
            "{deadline} vs {now}"
        );
        assert_eq!(f.stats.invocations.load(Ordering::Relaxed), 1);
        assert_eq!(f.stats.errors.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn errors_timeouts_and_panics_are_invocation_errors() {
        let f = func(1_000, |_: Value, _: lambda_runtime::Context| async {
            Err("boom".into())
        });
        assert!(
            matches!(f.invoke(Value::Null).await, Err(InvokeError::Function(m)) if m == "boom")
        );

        let f = func(50, |_: Value, _: lambda_runtime::Context| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Value::Null)
        });
        assert!(matches!(
            f.invoke(Value::Null).await,
            Err(InvokeError::Timeout(_))
        ));

        let f = func(1_000, |v: Value, _: lambda_runtime::Context| async move {
            if v.is_null() {
                panic!("handler bug");
            }
            Ok(v)
        });
        assert!(
            matches!(f.invoke(Value::Null).await, Err(InvokeError::Panicked(m)) if m.contains("handler bug"))
        );
        // The function still works after a panic.
        assert_eq!(f.invoke(serde_json::json!(1)).await.unwrap(), 1);
        assert_eq!(f.stats.errors.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn chaos_kills_invocations_part_way() {
        let ran_to_the_end = Arc::new(AtomicU64::new(0));
        let done = ran_to_the_end.clone();
        let chaos = Arc::new(Chaos::new(crate::emulators::chaos::ChaosConfig {
            kill: 1.0,
            ..crate::emulators::chaos::ChaosConfig::default()
        }));
        let f = func(5_000, move |_: Value, _: lambda_runtime::Context| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(Value::Null)
            }
        })
        .with_chaos(chaos.clone());
        // Not armed: runs to the end, and the run time is learnt.
        f.invoke(Value::Null).await.unwrap();
        chaos.arm();
        let err = f.invoke(Value::Null).await.unwrap_err();
        assert!(matches!(err, InvokeError::Killed(_)), "{err}");
        assert!(err.is_retryable());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            ran_to_the_end.load(Ordering::SeqCst),
            1,
            "the killed run never finished"
        );
        assert_eq!(chaos.stats.get(Fault::Killed), 1);
    }

    #[tokio::test]
    async fn payloads_over_6_mb_are_refused_before_the_handler_runs() {
        let f = func(1_000, |_: Value, _: lambda_runtime::Context| async {
            panic!("must not run")
        });
        let big = Value::String("x".repeat(MAX_PAYLOAD_BYTES));
        let err = f.invoke(big).await.unwrap_err();
        assert!(matches!(err, InvokeError::PayloadTooLarge(n) if n > MAX_PAYLOAD_BYTES));
        assert!(!err.is_retryable());
    }
}
