//! The one way to build the AWS clients caudal's functions use.
//!
//! Every call the functions make already runs inside caudal's own retry loop
//! ([`caudal_core::retry::send_partial`] for Kinesis PutRecords and Firehose PutRecordBatch,
//! [`caudal_core::retry::retry_call`] for S3, SQS and the Data API), which backs off with jitter, resends
//! only failed entries and stops at the invocation's deadline. So the clients built here have the
//! SDK's own retries **off** (`RetryConfig::disabled()`, one attempt per operation): with the
//! SDK's standard mode on as well, one caudal attempt would be up to three SDK attempts with a
//! backoff of their own that caudal's deadline arithmetic cannot see. The retry settings of the
//! `SdkConfig` (`AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`, profile) are overridden for the same reason.
//!
//! Instead each attempt is bounded by [`AttemptTimeouts`], so one slow or hung call becomes a
//! retryable `Timeout` [`CallError`](caudal_core::retry::CallError) (see [`crate::call_error`]) after a
//! few seconds instead of eating the whole budget. The values are per service and sized from the
//! request limits in `AWS-LIMITS.md`; see each constant.
//!
//! Response bodies streamed after the operation returns (S3 GetObject) are not covered by these
//! timeouts; the SDK's stalled-stream protection (on by default for the latest behavior version:
//! fails a transfer that moves no bytes for 5 s) and caudal's deadline bound them.
//!
//! Endpoints come from the `SdkConfig` (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`), never
//! from here: emulators differ only in [`ClientOptions::EMULATOR`] (S3 path-style addressing).

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

/// Time to set up the connection (TCP + TLS) for every service: in-region connects take
/// milliseconds and the first call of a cold start pays a TLS handshake of a few hundred ms
/// (AWS-LIMITS.md, cold start), so 2 s is several times the slow case.
const CONNECT: Duration = Duration::from_secs(2);

/// With the SDK's retries off one operation is one attempt, so the operation timeout is only a
/// backstop over the attempt timeout for what runs outside the attempt (serialization, request
/// checksums, interceptors); it never shortens a healthy attempt.
const OPERATION_SLACK: Duration = Duration::from_secs(1);

/// Timeouts of one SDK call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimeouts {
    /// Establishing the connection (TCP + TLS).
    pub connect: Duration,
    /// One attempt: connect, send the request body, receive the response head and, for
    /// non-streaming operations, the whole response.
    pub attempt: Duration,
    /// The whole operation (one attempt, since the SDK's retries are off) plus the work around it.
    pub operation: Duration,
}

impl AttemptTimeouts {
    /// Kinesis PutRecords (ingest-api): a request is ≤ 5 MiB (10 MiB once a stream's record size
    /// is raised) and the service answers in tens of ms, so an in-region attempt takes well under
    /// a second. 3 s still fits a full 5 MiB request at ~2 MB/s, and leaves room for at least two
    /// attempts plus backoff inside `PUT_DEADLINE_MS` (8 s default), far inside API Gateway's 29 s.
    pub const KINESIS: Self = Self {
        connect: CONNECT,
        attempt: Duration::from_secs(3),
        operation: Duration::from_secs(3).saturating_add(OPERATION_SLACK),
    };

    /// S3 PutObject/GetObject (raw-writer, rules-loader): a raw object holds one Kinesis batch
    /// (≤ 6 MB invocation payload, compressed), a staging part up to 32 MiB
    /// (`rules_loader::stage::PART_TARGET_BYTES`), a descriptor a few KB; GetObject's attempt
    /// ends at the response head (the body streams afterwards). 30 s fits the largest staging
    /// part at ~1.1 MB/s (Lambda reaches S3 at tens of MB/s) plus S3's first-byte latency, and a
    /// 503 SlowDown burst is retried by caudal with backoff; the writer's 115 s and the
    /// loader's ~300 s budgets hold several such attempts.
    pub const S3: Self = Self {
        connect: CONNECT,
        attempt: Duration::from_secs(30),
        operation: Duration::from_secs(30).saturating_add(OPERATION_SLACK),
    };

    /// Firehose PutRecordBatch (raw-writer): ≤ 500 records / 4 MiB per request, acknowledged once
    /// buffered (delivery to S3 is asynchronous). 5 s fits a full 4 MiB request at ~1 MB/s.
    pub const FIREHOSE: Self = Self {
        connect: CONNECT,
        attempt: Duration::from_secs(5),
        operation: Duration::from_secs(5).saturating_add(OPERATION_SLACK),
    };

    /// SQS SendMessage (raw-writer's lake retry queue): one message of a few KB (a raw object's
    /// key and line ranges, never a payload), answered in milliseconds. 3 s catches a hung
    /// connection and still leaves the writer room for a second attempt inside the time it
    /// keeps free for deferring lake lines (`raw_writer::Config::lake_defer_reserve`).
    pub const SQS: Self = Self {
        connect: CONNECT,
        attempt: Duration::from_secs(3),
        operation: Duration::from_secs(3).saturating_add(OPERATION_SLACK),
    };

    /// Redshift Data API (rules-loader): requests are small (a statement ≤ 100 KB) and
    /// asynchronous — ExecuteStatement/BatchExecuteStatement only submit, DescribeStatement and
    /// the ledger's GetStatementResult pages are small — so the service answers in well under a
    /// second however long the COPY runs. 5 s catches a hung connection; the long wait is
    /// caudal's polling, bounded by the loader's deadline, never one HTTP call.
    pub const REDSHIFT_DATA: Self = Self {
        connect: CONNECT,
        attempt: Duration::from_secs(5),
        operation: Duration::from_secs(5).saturating_add(OPERATION_SLACK),
    };

    /// The SDK's timeout configuration for these values.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }
}

/// How to build the clients: timeouts per service and the one emulator difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Kinesis timeouts.
    pub kinesis: AttemptTimeouts,
    /// S3 timeouts.
    pub s3: AttemptTimeouts,
    /// Firehose timeouts.
    pub firehose: AttemptTimeouts,
    /// Redshift Data API timeouts.
    pub redshift_data: AttemptTimeouts,
    /// SQS timeouts.
    pub sqs: AttemptTimeouts,
    /// S3 path-style addressing (`http://host/bucket/key`). Needed by emulators on `127.0.0.1`,
    /// which has no bucket subdomains; AWS itself uses virtual-hosted addressing.
    pub s3_path_style: bool,
}

impl ClientOptions {
    /// What the functions use in Lambda.
    pub const LAMBDA: Self = Self {
        kinesis: AttemptTimeouts::KINESIS,
        s3: AttemptTimeouts::S3,
        firehose: AttemptTimeouts::FIREHOSE,
        redshift_data: AttemptTimeouts::REDSHIFT_DATA,
        sqs: AttemptTimeouts::SQS,
        s3_path_style: false,
    };

    /// For emulators on loopback (moto, the local Data API): the same timeouts, S3 path-style.
    pub const EMULATOR: Self = Self {
        s3_path_style: true,
        ..Self::LAMBDA
    };
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self::LAMBDA
    }
}

/// The SDK configuration from the environment (region, credentials, `AWS_ENDPOINT_URL*`), loaded
/// once per cold start: it is the expensive part, the clients built from it are cheap.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// A Kinesis client (ingest-api's PutRecords).
pub fn kinesis(sdk: &SdkConfig, opts: &ClientOptions) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(opts.kinesis.timeout_config())
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// An S3 client (raw objects, staging parts, load descriptors).
pub fn s3(sdk: &SdkConfig, opts: &ClientOptions) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(opts.s3.timeout_config())
        .force_path_style(opts.s3_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A Firehose client (raw-writer's lake copy).
pub fn firehose(sdk: &SdkConfig, opts: &ClientOptions) -> aws_sdk_firehose::Client {
    let conf = aws_sdk_firehose::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(opts.firehose.timeout_config())
        .build();
    aws_sdk_firehose::Client::from_conf(conf)
}

/// A Redshift Data API client (rules-loader's loads, ledger look-ups and migrations).
pub fn redshift_data(sdk: &SdkConfig, opts: &ClientOptions) -> aws_sdk_redshiftdata::Client {
    let conf = aws_sdk_redshiftdata::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(opts.redshift_data.timeout_config())
        .build();
    aws_sdk_redshiftdata::Client::from_conf(conf)
}

/// An SQS client (raw-writer's lake retry queue).
pub fn sqs(sdk: &SdkConfig, opts: &ClientOptions) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(opts.sqs.timeout_config())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// Every client a function builds at cold start, from one SDK configuration and one set of
/// [`ClientOptions`]: what each function's `start` takes, in Lambda ([`Self::lambda`]) and in
/// the local stack ([`Self::new`] with [`ClientOptions::EMULATOR`] and the emulators'
/// endpoints). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientFactory {
    sdk: SdkConfig,
    redshift_data_sdk: SdkConfig,
    opts: ClientOptions,
}

impl ClientFactory {
    /// The factory of a Lambda cold start: the environment's SDK configuration
    /// ([`load_sdk_config`]) and [`ClientOptions::LAMBDA`].
    pub async fn lambda() -> Self {
        Self::new(load_sdk_config().await, ClientOptions::LAMBDA)
    }

    /// A factory over `sdk` with `opts`.
    pub fn new(sdk: SdkConfig, opts: ClientOptions) -> Self {
        Self {
            redshift_data_sdk: sdk.clone(),
            sdk,
            opts,
        }
    }

    /// The same, with the Data API at `url` (what `AWS_ENDPOINT_URL_REDSHIFT_DATA` does in a
    /// deployed function; the local stack's Data API endpoint is not moto's).
    pub fn with_redshift_data_endpoint(mut self, url: &str) -> Self {
        // From the Data API's own configuration, so a region set before is kept.
        self.redshift_data_sdk = self
            .redshift_data_sdk
            .to_builder()
            .endpoint_url(url)
            .build();
        self
    }

    /// The same, with the Data API client in `region` (a loader in a second ingest region
    /// reaches the warehouse in its home region; every other client stays in this one). The
    /// endpoint set by [`Self::with_redshift_data_endpoint`] or the environment is kept.
    pub fn with_redshift_data_region(mut self, region: &str) -> Self {
        self.redshift_data_sdk = self
            .redshift_data_sdk
            .to_builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build();
        self
    }

    /// A Kinesis client ([`kinesis`]).
    pub fn kinesis(&self) -> aws_sdk_kinesis::Client {
        kinesis(&self.sdk, &self.opts)
    }

    /// An S3 client ([`s3`]).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        s3(&self.sdk, &self.opts)
    }

    /// A Firehose client ([`firehose`]).
    pub fn firehose(&self) -> aws_sdk_firehose::Client {
        firehose(&self.sdk, &self.opts)
    }

    /// An SQS client ([`sqs`]).
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        sqs(&self.sdk, &self.opts)
    }

    /// A Redshift Data API client ([`redshift_data`]).
    pub fn redshift_data(&self) -> aws_sdk_redshiftdata::Client {
        redshift_data(&self.redshift_data_sdk, &self.opts)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_config::Region;
    use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
    use tokio::io::AsyncReadExt;
    use tokio::time::Instant;

    use super::*;
    use caudal_core::retry::RetryPolicy;

    /// An SDK configuration that asks for SDK retries (as `AWS_MAX_ATTEMPTS=5` would) and
    /// long timeouts, so the tests see the factory override both.
    fn sdk() -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "unit",
            )))
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(60))
                    .operation_attempt_timeout(Duration::from_secs(600))
                    .build(),
            )
            .build()
    }

    fn assert_one_bounded_attempt(
        retry: Option<&RetryConfig>,
        timeouts: Option<&TimeoutConfig>,
        want: AttemptTimeouts,
    ) {
        assert_eq!(retry.expect("retry config set").max_attempts(), 1);
        let t = timeouts.expect("timeout config set");
        assert_eq!(t.connect_timeout(), Some(want.connect));
        assert_eq!(t.operation_attempt_timeout(), Some(want.attempt));
        assert_eq!(t.operation_timeout(), Some(want.operation));
    }

    #[test]
    fn every_client_has_sdk_retries_off_and_its_timeouts() {
        let (sdk, opts) = (sdk(), ClientOptions::LAMBDA);
        let c = kinesis(&sdk, &opts);
        let c = c.config();
        assert_one_bounded_attempt(c.retry_config(), c.timeout_config(), opts.kinesis);
        let c = s3(&sdk, &opts);
        let c = c.config();
        assert_one_bounded_attempt(c.retry_config(), c.timeout_config(), opts.s3);
        let c = firehose(&sdk, &opts);
        let c = c.config();
        assert_one_bounded_attempt(c.retry_config(), c.timeout_config(), opts.firehose);
        let c = redshift_data(&sdk, &opts);
        let c = c.config();
        assert_one_bounded_attempt(c.retry_config(), c.timeout_config(), opts.redshift_data);
        let c = sqs(&sdk, &opts);
        let c = c.config();
        assert_one_bounded_attempt(c.retry_config(), c.timeout_config(), opts.sqs);
    }

    #[test]
    fn the_factory_builds_the_same_clients_and_moves_only_the_data_api() {
        let f = ClientFactory::new(sdk(), ClientOptions::EMULATOR)
            .with_redshift_data_endpoint("http://127.0.0.1:9");
        let opts = ClientOptions::EMULATOR;
        let c = f.kinesis();
        assert_one_bounded_attempt(
            c.config().retry_config(),
            c.config().timeout_config(),
            opts.kinesis,
        );
        let c = f.s3();
        assert_one_bounded_attempt(
            c.config().retry_config(),
            c.config().timeout_config(),
            opts.s3,
        );
        let c = f.firehose();
        assert_one_bounded_attempt(
            c.config().retry_config(),
            c.config().timeout_config(),
            opts.firehose,
        );
        let c = f.sqs();
        assert_one_bounded_attempt(
            c.config().retry_config(),
            c.config().timeout_config(),
            opts.sqs,
        );
        let c = f.redshift_data();
        assert_one_bounded_attempt(
            c.config().retry_config(),
            c.config().timeout_config(),
            opts.redshift_data,
        );
        assert_eq!(
            f.redshift_data_sdk.endpoint_url(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(f.sdk.endpoint_url(), None, "the other services keep theirs");
    }

    #[test]
    fn a_data_api_region_moves_only_the_data_api_and_keeps_its_endpoint() {
        // Either order keeps both.
        let g = ClientFactory::new(sdk(), ClientOptions::EMULATOR)
            .with_redshift_data_region("eu-west-1")
            .with_redshift_data_endpoint("http://127.0.0.1:9");
        assert_eq!(
            g.redshift_data()
                .config()
                .region()
                .map(|r| r.as_ref().to_owned()),
            Some("eu-west-1".to_owned())
        );
        assert_eq!(
            g.redshift_data_sdk.endpoint_url(),
            Some("http://127.0.0.1:9")
        );
        let f = ClientFactory::new(sdk(), ClientOptions::EMULATOR)
            .with_redshift_data_endpoint("http://127.0.0.1:9")
            .with_redshift_data_region("eu-west-1");
        let region = |c: Option<&Region>| c.map(|r| r.as_ref().to_owned());
        assert_eq!(
            region(f.redshift_data().config().region()),
            Some("eu-west-1".to_owned())
        );
        assert_eq!(
            f.redshift_data_sdk.endpoint_url(),
            Some("http://127.0.0.1:9")
        );
        for r in [
            region(f.s3().config().region()),
            region(f.sqs().config().region()),
            region(f.kinesis().config().region()),
            region(f.firehose().config().region()),
        ] {
            assert_eq!(r, Some("us-east-1".to_owned()));
        }
    }

    #[test]
    fn service_timeouts_are_ordered_and_fit_the_ingest_budget() {
        let all = [
            AttemptTimeouts::KINESIS,
            AttemptTimeouts::S3,
            AttemptTimeouts::FIREHOSE,
            AttemptTimeouts::REDSHIFT_DATA,
            AttemptTimeouts::SQS,
        ];
        for t in all {
            assert!(t.connect < t.attempt && t.attempt < t.operation, "{t:?}");
        }
        // ingest-api's default PUT_DEADLINE_MS (8 s) must hold two Kinesis attempts.
        assert!(AttemptTimeouts::KINESIS.attempt * 2 < Duration::from_secs(8));
        const { assert!(!ClientOptions::LAMBDA.s3_path_style) };
        assert_eq!(
            ClientOptions {
                s3_path_style: false,
                ..ClientOptions::EMULATOR
            },
            ClientOptions::default()
        );
    }

    /// A loopback server that reads each request head, records its request line and never
    /// answers: every attempt against it hangs until the client gives up.
    async fn silent_server() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    log.lock().unwrap().push(line);
                    // Hold the connection open, answering nothing, until the client drops it.
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        (url, seen)
    }

    fn short(attempt_ms: u64) -> AttemptTimeouts {
        AttemptTimeouts {
            connect: Duration::from_secs(1),
            attempt: Duration::from_millis(attempt_ms),
            operation: Duration::from_secs(5),
        }
    }

    fn quick_policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn a_hung_s3_attempt_is_a_retryable_timeout_and_caudal_owns_every_retry() {
        let (url, seen) = silent_server().await;
        let sdk = sdk().to_builder().endpoint_url(url).build();
        let opts = ClientOptions {
            s3: short(200),
            ..ClientOptions::EMULATOR
        };
        let client = s3(&sdk, &opts);
        let started = Instant::now();
        let err = crate::s3::get_object(
            &client,
            "bucket",
            "key",
            &quick_policy(3),
            Instant::now() + Duration::from_secs(30),
        )
        .await
        .unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert_eq!(err.code, "Timeout");
        assert!(started.elapsed() < Duration::from_secs(10));
        let seen = seen.lock().unwrap().clone();
        // One HTTP request per caudal attempt: with the SDK's retries on (5 attempts from the
        // SdkConfig) this would be 15.
        assert_eq!(seen.len(), 3, "{seen:?}");
        // Path-style addressing: the bucket is in the path, not a subdomain of 127.0.0.1.
        assert!(
            seen.iter().all(|l| l.starts_with("GET /bucket/key")),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn a_hung_put_records_attempt_leaves_its_entries_retryable() {
        let (url, seen) = silent_server().await;
        let sdk = sdk().to_builder().endpoint_url(url).build();
        let opts = ClientOptions {
            kinesis: short(200),
            ..ClientOptions::LAMBDA
        };
        let client = kinesis(&sdk, &opts);
        let records = vec![caudal_core::stream::Record {
            data: b"{}".to_vec(),
            partition_key: "k".into(),
        }];
        let out = crate::kinesis::put_records(
            &client,
            "stream",
            &records,
            &quick_policy(2),
            Instant::now() + Duration::from_secs(30),
        )
        .await;
        assert_eq!(out.calls, 2);
        let err = out.results[0].as_ref().unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert_eq!(err.code, "Timeout");
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}
