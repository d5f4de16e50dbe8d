//! Handler tests: `events/raw-writer-*.json` (Kinesis events and lake retry messages shaped as
//! Lambda delivers them) run through the real handler with S3, Firehose and SQS answered by
//! `aws-smithy-mocks`.
//!
//! The SDK's own retries are disabled on the mocked clients so every call the mocks count is one
//! the function's shared retry code decided to make.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_firehose::operation::put_record_batch::{PutRecordBatchError, PutRecordBatchOutput};
use aws_sdk_firehose::types::PutRecordBatchResponseEntry;
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::operation::send_message::{SendMessageError, SendMessageOutput};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use base64::Engine as _;
use caudal_core::codec::Codec;
use caudal_core::raw::RawLine;
use caudal_core::retry::RetryPolicy;
use lambda_runtime::{Context, LambdaEvent};
use raw_writer::event::{RawWriterEvent, RawWriterResponse};
use raw_writer::lake::LakeRetry;
use raw_writer::{Config, State, handler, invoke};

// ---------------------------------------------------------------------------------------------
// fixtures

fn event_json(name: &str) -> serde_json::Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn event(name: &str) -> RawWriterEvent {
    RawWriterEvent::parse_value(&event_json(name)).unwrap()
}

/// (sequence number, decoded data) of each record of an event file, in file order.
fn records_of(name: &str) -> Vec<(String, Vec<u8>)> {
    event_json(name)["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let seq = r["kinesis"]["sequenceNumber"].as_str().unwrap().to_owned();
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["kinesis"]["data"].as_str().unwrap())
                .unwrap_or_default();
            (seq, data)
        })
        .collect()
}

fn ctx_with_deadline(from_now: Duration) -> Context {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut ctx = Context::default();
    ctx.request_id = "test-request".into();
    ctx.deadline = u64::try_from((now + from_now).as_millis()).unwrap();
    ctx
}

fn ctx() -> Context {
    ctx_with_deadline(Duration::from_secs(30))
}

/// A context with its own request id, so a test finds its own metrics line.
fn ctx_named(request_id: &str) -> Context {
    let mut c = ctx();
    c.request_id = request_id.into();
    c
}

const QUEUE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/caudal-lake-retry";

fn config(firehose: bool) -> Config {
    let mut c = Config::new("raw-bucket");
    c.firehose_stream = firehose.then(|| "lake-stream".to_owned());
    c.lake_retry_queue = firehose.then(|| QUEUE_URL.to_owned());
    c.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    c.deadline.margin = Duration::from_secs(1);
    c
}

fn pad(seq: &str) -> String {
    format!("{seq:0>64}")
}

// ---------------------------------------------------------------------------------------------
// S3 mock: the first `fail_first` calls answer `status` with an S3 error body, later calls
// succeed and are recorded.

#[derive(Debug, Clone)]
struct Put {
    key: String,
    body: Vec<u8>,
    content_type: String,
    metadata: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct S3Log {
    calls: Arc<AtomicUsize>,
    puts: Arc<Mutex<Vec<Put>>>,
}

impl S3Log {
    fn puts(&self) -> Vec<Put> {
        self.puts.lock().unwrap().clone()
    }
    fn put(&self, prefix: &str) -> Put {
        let all = self.puts();
        let found: Vec<&Put> = all.iter().filter(|p| p.key.starts_with(prefix)).collect();
        assert_eq!(found.len(), 1, "one object under {prefix}: {all:#?}");
        found[0].clone()
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn s3_error(status: u16, code: &str) -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(status).unwrap(),
        SdkBody::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>mocked {code}</Message><RequestId>r</RequestId></Error>"
        )),
    )
}

/// PutObject: the first `fail_first` calls answer `status`/`code`, later ones are recorded in
/// `log` and succeed.
fn put_rule(log: &S3Log, fail_first: usize, status: u16, code: &'static str) -> Rule {
    let l = log.clone();
    mock!(aws_sdk_s3::Client::put_object).then_compute_response(move |req| {
        let n = l.calls.fetch_add(1, Ordering::SeqCst);
        if n < fail_first {
            return MockResponse::<PutObjectOutput, PutObjectError>::Http(s3_error(status, code));
        }
        l.puts.lock().unwrap().push(Put {
            key: req.key().unwrap_or_default().to_owned(),
            body: req.body().bytes().unwrap_or_default().to_vec(),
            content_type: req.content_type().unwrap_or_default().to_owned(),
            metadata: req.metadata().cloned().unwrap_or_default(),
        });
        MockResponse::Output(PutObjectOutput::builder().e_tag("\"etag-1\"").build())
    })
}

/// GetObject serving `objects` (key → body) from the own raw bucket, counting calls in `gets`;
/// other keys are 404 NoSuchKey.
fn get_rule(objects: HashMap<String, Vec<u8>>, gets: &Arc<AtomicUsize>) -> Rule {
    let g = gets.clone();
    mock!(aws_sdk_s3::Client::get_object).then_compute_response(move |req| {
        g.fetch_add(1, Ordering::SeqCst);
        assert_eq!(
            req.bucket(),
            Some(RETRY_BUCKET),
            "only the own raw bucket is read"
        );
        match objects.get(req.key().unwrap_or_default()) {
            Some(body) => MockResponse::<GetObjectOutput, GetObjectError>::Output(
                GetObjectOutput::builder()
                    .body(ByteStream::from(body.clone()))
                    .e_tag("\"etag-1\"")
                    .build(),
            ),
            None => MockResponse::Http(s3_error(404, "NoSuchKey")),
        }
    })
}

fn s3_client(fail_first: usize, status: u16, code: &'static str) -> (aws_sdk_s3::Client, S3Log) {
    let log = S3Log::default();
    let rule = put_rule(&log, fail_first, status, code);
    let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    (client, log)
}

/// An S3 mock serving `objects` (key → body) to GetObject; other keys are 404 NoSuchKey.
fn s3_objects(objects: HashMap<String, Vec<u8>>) -> (aws_sdk_s3::Client, Arc<AtomicUsize>) {
    let gets = Arc::new(AtomicUsize::new(0));
    let rule = get_rule(objects, &gets);
    let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    (client, gets)
}

// ---------------------------------------------------------------------------------------------
// SQS mock: the first `fail_first` SendMessage calls answer 500, later ones are recorded.

#[derive(Clone, Default)]
struct SqsLog {
    calls: Arc<AtomicUsize>,
    sent: Arc<Mutex<Vec<(String, String)>>>,
}

impl SqsLog {
    /// (queue URL, body) of every accepted message.
    fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap().clone()
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn sqs_client(fail_first: usize) -> (aws_sdk_sqs::Client, SqsLog) {
    let log = SqsLog::default();
    let l = log.clone();
    let rule = mock!(aws_sdk_sqs::Client::send_message).then_compute_response(move |req| {
        let n = l.calls.fetch_add(1, Ordering::SeqCst);
        if n < fail_first {
            return MockResponse::<SendMessageOutput, SendMessageError>::Http(HttpResponse::new(
                StatusCode::try_from(500).unwrap(),
                SdkBody::from(r#"{"__type":"InternalError","message":"mocked"}"#),
            ));
        }
        l.sent.lock().unwrap().push((
            req.queue_url().unwrap_or_default().to_owned(),
            req.message_body().unwrap_or_default().to_owned(),
        ));
        MockResponse::Output(
            SendMessageOutput::builder()
                .message_id(format!("msg-{n}"))
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled()));
    (client, log)
}

fn sqs_ok() -> aws_sdk_sqs::Client {
    sqs_client(0).0
}

// ---------------------------------------------------------------------------------------------
// Firehose mock: `decide(call_number, record_bytes)` returns `None` (accepted) or an error code
// per entry; every call's records are recorded.

type Decide = dyn Fn(usize, &[u8]) -> Option<&'static str> + Send + Sync;

#[derive(Clone, Default)]
struct FhLog {
    calls: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
}

impl FhLog {
    fn calls(&self) -> Vec<Vec<Vec<u8>>> {
        self.calls.lock().unwrap().clone()
    }
}

fn firehose_client(decide: Arc<Decide>) -> (aws_sdk_firehose::Client, FhLog) {
    let log = FhLog::default();
    let l = log.clone();
    let rule =
        mock!(aws_sdk_firehose::Client::put_record_batch).then_compute_response(move |req| {
            assert_eq!(req.delivery_stream_name(), Some("lake-stream"));
            let records: Vec<Vec<u8>> = req
                .records()
                .iter()
                .map(|r| r.data().as_ref().to_vec())
                .collect();
            let n = {
                let mut calls = l.calls.lock().unwrap();
                calls.push(records.clone());
                calls.len() - 1
            };
            let mut failed = 0;
            let entries = records
                .iter()
                .map(|r| match decide(n, r) {
                    Some(code) => {
                        failed += 1;
                        PutRecordBatchResponseEntry::builder()
                            .error_code(code)
                            .error_message("mocked")
                            .build()
                    }
                    None => PutRecordBatchResponseEntry::builder()
                        .record_id(format!("rec-{n}"))
                        .build(),
                })
                .collect::<Vec<_>>();
            MockResponse::<PutRecordBatchOutput, PutRecordBatchError>::Output(
                PutRecordBatchOutput::builder()
                    .failed_put_count(failed)
                    .set_request_responses(Some(entries))
                    .build()
                    .unwrap(),
            )
        });
    let client = mock_client!(aws_sdk_firehose, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(aws_sdk_firehose::config::retry::RetryConfig::disabled()));
    (client, log)
}

fn firehose_ok() -> (aws_sdk_firehose::Client, FhLog) {
    firehose_client(Arc::new(|_, _| None))
}

fn lines(codec: Codec, body: &[u8]) -> Vec<Vec<u8>> {
    let plain = codec.decompress_capped(body, 64 << 20).unwrap();
    assert_eq!(plain.last(), Some(&b'\n'));
    plain
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn failures(resp: RawWriterResponse) -> Vec<String> {
    match resp {
        RawWriterResponse::Kinesis(r) => r
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier.unwrap())
            .collect(),
        RawWriterResponse::LakeRetry(r) => r
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect(),
    }
}

async fn run_with(state: &State, name: &str, ctx: Context) -> Vec<String> {
    failures(
        handler(state, LambdaEvent::new(event(name), ctx))
            .await
            .unwrap(),
    )
}

async fn run(state: &State, name: &str) -> Vec<String> {
    run_with(state, name, ctx()).await
}

// ---------------------------------------------------------------------------------------------
// metrics: every EMF line of the process, found again by the request id of the context.

static EMF_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn capture_emf(line: &str) {
    EMF_LINES.lock().unwrap().push(line.to_owned());
}

/// The metrics lines emitted for `request_id` (capture must have been on before the call).
fn metrics_of(request_id: &str) -> Vec<serde_json::Value> {
    EMF_LINES
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["RequestId"] == request_id)
        .collect()
}

fn metric(lines: &[serde_json::Value], name: &str) -> f64 {
    assert_eq!(lines.len(), 1, "one metrics line per batch: {lines:?}");
    lines[0][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric {name} in {}", lines[0]))
}

// ---------------------------------------------------------------------------------------------
// lake retry events

const RETRY_BUCKET: &str = "caudal-raw-123456789012-us-east-1-4f2a9c10";

/// An SQS event as Lambda delivers it, one message per body.
fn sqs_event(bodies: &[(&str, String)]) -> serde_json::Value {
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .map(|(id, body)| {
            serde_json::json!({
                "messageId": id, "receiptHandle": format!("AQEB{id}"), "body": body,
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:caudal-lake-retry",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

fn retry_config() -> Config {
    let mut c = config(true);
    c.raw_bucket = RETRY_BUCKET.to_owned();
    c
}

/// The codec of the objects the lake retry fixture names: gzip, as objects archived before
/// zstd became the default are (the reader follows the key's suffix either way).
const RETRY_CODEC: Codec = Codec::Gzip { level: 6 };

/// The raw object the writer stores for `name` (key, compressed body), in [`RETRY_CODEC`].
async fn archive(name: &str) -> (String, Vec<u8>) {
    let (s3, log) = s3_client(0, 200, "");
    let (fh, _) = firehose_ok();
    let mut cfg = config(true);
    cfg.codec = RETRY_CODEC;
    let state = State::new(cfg, s3, fh, sqs_ok());
    assert!(run(&state, name).await.is_empty());
    let put = log.put("raw/");
    (put.key, put.body)
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn batch_is_archived_after_an_s3_503_and_forwarded() {
    let (s3, s3_log) = s3_client(1, 503, "SlowDown");
    let (fh, fh_log) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    let failures = run(&state, "raw-writer-batch.json").await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(s3_log.calls(), 2, "one 503, one success");

    let expected = records_of("raw-writer-batch.json");
    let put = s3_log.put("raw/");
    assert_eq!(
        put.key,
        format!(
            "raw/dt=2026-11-25/hr=19/shardId-000000000003/{}-{}.ndjson.zst",
            pad(&expected[0].0),
            pad(&expected[4].0)
        )
    );
    assert_eq!(put.content_type, "application/zstd");
    assert_eq!(put.metadata["record-count"], "5");
    assert_eq!(put.metadata["invalid-count"], "0");
    assert_eq!(put.metadata["first-seq"], expected[0].0);
    assert_eq!(put.metadata["last-seq"], expected[4].0);
    assert_eq!(put.metadata["format-version"], "1");
    assert_eq!(put.metadata["codec"], "zstd");
    assert_eq!(put.metadata["shard-id"], "shardId-000000000003");
    assert!(
        s3_log
            .puts()
            .iter()
            .all(|p| !p.key.starts_with("raw-invalid/"))
    );

    let got = lines(caudal_core::codec::RAW_DEFAULT, &put.body);
    assert_eq!(got.len(), 5);
    for (line, (seq, data)) in got.iter().zip(&expected) {
        let parsed = RawLine::parse(line).unwrap();
        assert_eq!(parsed.kinesis.sequence_number, seq.as_str());
        assert_eq!(parsed.kinesis.shard_id, "shardId-000000000003");
        assert_eq!(
            parsed.envelope.get().as_bytes(),
            &data[..],
            "envelope kept verbatim"
        );
    }
    let first = RawLine::parse(&got[0]).unwrap();
    assert_eq!(first.kinesis.arrival, "2026-11-25T19:55:17.250Z");
    assert_eq!(first.kinesis.partition_key, "u-1042");
    let last = RawLine::parse(&got[4]).unwrap();
    assert_eq!(last.kinesis.arrival, "2026-11-25T19:55:19.237Z");

    // Firehose got the very same NDJSON, packed into one record.
    let calls = fh_log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].len(), 1);
    let plain = caudal_core::codec::RAW_DEFAULT
        .decompress_capped(&put.body, 1 << 20)
        .unwrap();
    assert_eq!(calls[0][0], plain);
}

#[tokio::test]
async fn s3_failing_after_retries_fails_the_whole_batch() {
    let (s3, s3_log) = s3_client(usize::MAX, 503, "SlowDown");
    let (fh, fh_log) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    let failures = run(&state, "raw-writer-batch.json").await;
    let first = records_of("raw-writer-batch.json")[0].0.clone();
    assert_eq!(failures, vec![first]);
    assert_eq!(s3_log.calls(), 4, "the policy's 4 attempts");
    assert!(
        fh_log.calls().is_empty(),
        "nothing forwarded for an unarchived batch"
    );
}

#[tokio::test]
async fn s3_permanent_error_is_not_retried_and_fails_the_batch() {
    let (s3, s3_log) = s3_client(usize::MAX, 403, "AccessDenied");
    let (fh, _) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    let failures = run(&state, "raw-writer-single.json").await;
    assert_eq!(
        failures,
        vec![records_of("raw-writer-single.json")[0].0.clone()]
    );
    assert_eq!(s3_log.calls(), 1);
}

#[tokio::test]
async fn invalid_object_failing_also_fails_the_batch() {
    // Two objects are written (raw + raw-invalid); one 500 each time for the invalid one only.
    let log = S3Log::default();
    let l = log.clone();
    let rule = mock!(aws_sdk_s3::Client::put_object).then_compute_response(move |req| {
        l.calls.fetch_add(1, Ordering::SeqCst);
        if req.key().unwrap_or_default().starts_with("raw-invalid/") {
            return MockResponse::Http(s3_error(500, "InternalError"));
        }
        MockResponse::Output(PutObjectOutput::builder().build())
    });
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    let (fh, fh_log) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    let failures = run(&state, "raw-writer-invalid.json").await;
    assert_eq!(
        failures,
        vec![records_of("raw-writer-invalid.json")[0].0.clone()]
    );
    assert_eq!(log.calls(), 1 + 4);
    assert!(fh_log.calls().is_empty());
}

#[tokio::test]
async fn firehose_partial_failure_resends_only_the_failed_entries() {
    let (s3, _) = s3_client(0, 200, "");
    // First call: the purchase and the search records fail; later calls accept everything.
    let (fh, fh_log) = firehose_client(Arc::new(|n, data| {
        (n == 0 && (contains(data, "order-2026-000187") || contains(data, "\"search\"")))
            .then_some("ServiceUnavailableException")
    }));
    let mut cfg = config(true);
    // One line per Firehose record, so entries map to events.
    cfg.pack.record_max_bytes = 1000;
    let state = State::new(cfg, s3, fh, sqs_ok());
    let failures = run(&state, "raw-writer-batch.json").await;
    assert!(failures.is_empty(), "{failures:?}");
    let calls = fh_log.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].len(), 5, "one record per line");
    assert_eq!(calls[1], vec![calls[0][2].clone(), calls[0][3].clone()]);
    assert!(contains(&calls[1][0], "order-2026-000187"));
    assert!(calls.iter().flatten().all(|r| r.ends_with(b"\n")));
}

#[tokio::test]
async fn firehose_failing_after_retries_defers_the_lines_instead_of_holding_the_shard() {
    let _ = caudal_core::telemetry::set_emf_sink(capture_emf);
    let (s3, s3_log) = s3_client(0, 200, "");
    // The purchase (3rd record) and the last page view never get in.
    let (fh, fh_log) = firehose_client(Arc::new(|_, data| {
        (contains(data, "order-2026-000187") || contains(data, "1a05")).then_some("InternalFailure")
    }));
    let (sqs, sqs_log) = sqs_client(0);
    let mut cfg = config(true);
    cfg.pack.record_max_bytes = 1000;
    let state = State::new(cfg, s3, fh, sqs);
    let failures = run_with(&state, "raw-writer-batch.json", ctx_named("defer-partial")).await;
    assert!(
        failures.is_empty(),
        "the raw object is written: nothing to re-deliver ({failures:?})"
    );
    assert_eq!(
        s3_log.puts().len(),
        1,
        "one raw object, no overlapping rewrite"
    );
    let calls = fh_log.calls();
    assert_eq!(calls.len(), 4, "the policy's 4 attempts");
    for later in &calls[1..] {
        assert_eq!(later.len(), 2, "only the two failing entries are resent");
    }

    // One small message naming the raw object and exactly the two missing lines.
    let sent = sqs_log.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, QUEUE_URL);
    let msg = LakeRetry::parse(&sent[0].1).unwrap();
    assert_eq!(msg.bucket, "raw-bucket");
    assert_eq!(msg.key, s3_log.put("raw/").key);
    assert_eq!(msg.lines, vec![[3, 3], [5, 5]]);
    assert_eq!(msg.error.as_deref(), Some("InternalFailure"));
    assert!(sent[0].1.len() < 1024, "a reference, not a payload");

    let m = metrics_of("defer-partial");
    assert_eq!(
        metric(&m, "EventsArchived"),
        calls[0].len() as f64,
        "every line of the raw object (the dashboard's archived per minute)"
    );
    assert_eq!(metric(&m, "LakeDeferredLines"), 2.0);
    assert_eq!(metric(&m, "LakeDeferFailures"), 0.0);
    assert_eq!(metric(&m, "FirehoseFailedRecords"), 2.0);
}

#[tokio::test]
async fn sqs_failing_too_falls_back_to_reporting_the_lowest_missing_line() {
    let _ = caudal_core::telemetry::set_emf_sink(capture_emf);
    let (s3, s3_log) = s3_client(0, 200, "");
    let (fh, _) = firehose_client(Arc::new(|_, data| {
        (contains(data, "order-2026-000187") || contains(data, "1a05")).then_some("InternalFailure")
    }));
    let (sqs, sqs_log) = sqs_client(usize::MAX);
    let mut cfg = config(true);
    cfg.pack.record_max_bytes = 1000;
    let state = State::new(cfg, s3, fh, sqs);
    let failures = run_with(&state, "raw-writer-batch.json", ctx_named("defer-fails")).await;
    let expected = records_of("raw-writer-batch.json");
    // Nothing else keeps the lines: Lambda re-delivers from the purchase, as before deferral.
    assert_eq!(failures, vec![expected[2].0.clone()]);
    assert_eq!(s3_log.puts().len(), 1);
    assert_eq!(sqs_log.calls(), 4, "the policy's 4 attempts");
    assert!(sqs_log.sent().is_empty());
    let m = metrics_of("defer-fails");
    assert_eq!(metric(&m, "LakeDeferredLines"), 0.0);
    assert_eq!(metric(&m, "LakeDeferFailures"), 2.0);
}

#[tokio::test]
async fn without_a_retry_queue_lake_failures_are_reported() {
    let (s3, _) = s3_client(0, 200, "");
    let (fh, _) = firehose_client(Arc::new(|_, data| {
        contains(data, "order-2026-000187").then_some("InternalFailure")
    }));
    let (sqs, sqs_log) = sqs_client(0);
    let mut cfg = config(true);
    cfg.lake_retry_queue = None;
    cfg.pack.record_max_bytes = 1000;
    let state = State::new(cfg, s3, fh, sqs);
    let failures = run(&state, "raw-writer-batch.json").await;
    assert_eq!(
        failures,
        vec![records_of("raw-writer-batch.json")[2].0.clone()]
    );
    assert_eq!(sqs_log.calls(), 0);
}

#[tokio::test]
async fn firehose_call_failing_defers_every_valid_line() {
    let (s3, s3_log) = s3_client(0, 200, "");
    let rule = mock!(aws_sdk_firehose::Client::put_record_batch)
        .sequence()
        .http_status(
            500,
            Some(r#"{"__type":"ServiceUnavailableException","message":"down"}"#.into()),
        )
        .repeatedly()
        .build();
    let fh = mock_client!(aws_sdk_firehose, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(aws_sdk_firehose::config::retry::RetryConfig::disabled()));
    let (sqs, sqs_log) = sqs_client(0);
    let state = State::new(config(true), s3, fh, sqs);
    // In the invalid event two records are valid: the raw object's two lines.
    let failures = run(&state, "raw-writer-invalid.json").await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(rule.num_calls(), 4);
    let sent = sqs_log.sent();
    assert_eq!(sent.len(), 1);
    let msg = LakeRetry::parse(&sent[0].1).unwrap();
    assert_eq!(
        msg.key,
        s3_log.put("raw/").key,
        "the raw/ object, not raw-invalid/"
    );
    assert_eq!(msg.lines, vec![[1, 2]]);
}

#[tokio::test]
async fn a_firehose_outage_leaves_time_to_defer_before_the_deadline() {
    let (s3, _) = s3_client(0, 200, "");
    let (fh, fh_log) = firehose_client(Arc::new(|_, _| Some("ServiceUnavailableException")));
    let (sqs, sqs_log) = sqs_client(0);
    let mut cfg = config(true);
    // A policy that would retry Firehose far past the deadline.
    cfg.retry = RetryPolicy {
        max_attempts: 1000,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(200),
    };
    let state = State::new(cfg, s3, fh, sqs);
    let started = std::time::Instant::now();
    let resp = handler(
        &state,
        LambdaEvent::new(
            event("raw-writer-batch.json"),
            ctx_with_deadline(Duration::from_secs(4)),
        ),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(failures(resp).is_empty());
    assert!(
        took < Duration::from_millis(3500),
        "answered in time: {took:?}"
    );
    assert!(fh_log.calls().len() > 2, "firehose was retried");
    assert_eq!(sqs_log.sent().len(), 1, "and the deferral still went out");
}

#[tokio::test]
async fn the_same_batch_twice_gives_the_same_key_and_bytes() {
    for codec in [Codec::Gzip { level: 6 }, Codec::Zstd { level: 3 }] {
        let mut puts = Vec::new();
        for _ in 0..2 {
            let (s3, log) = s3_client(0, 200, "");
            let (fh, _) = firehose_ok();
            let mut cfg = config(true);
            cfg.codec = codec;
            let state = State::new(cfg, s3, fh, sqs_ok());
            assert!(run(&state, "raw-writer-invalid.json").await.is_empty());
            let mut p = log.puts();
            p.sort_by(|a, b| a.key.cmp(&b.key));
            puts.push(p);
        }
        assert_eq!(puts[0].len(), 2);
        for (a, b) in puts[0].iter().zip(&puts[1]) {
            assert_eq!(a.key, b.key);
            assert_eq!(a.body, b.body, "{codec:?}: byte-identical object");
            assert_eq!(a.metadata, b.metadata);
        }
        let suffix = codec.suffix();
        assert!(
            puts[0]
                .iter()
                .all(|p| p.key.ends_with(&format!(".ndjson{suffix}")))
        );
    }
}

#[tokio::test]
async fn invalid_records_go_to_raw_invalid_and_are_not_forwarded() {
    let (s3, log) = s3_client(0, 200, "");
    let (fh, fh_log) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    assert!(run(&state, "raw-writer-invalid.json").await.is_empty());
    let expected = records_of("raw-writer-invalid.json");
    let raw = log.put("raw/");
    let invalid = log.put("raw-invalid/");
    assert_eq!(
        invalid.key,
        raw.key.replacen("raw/", "raw-invalid/", 1),
        "sibling object, same naming"
    );
    assert_eq!(raw.metadata["record-count"], "2");
    assert_eq!(raw.metadata["invalid-count"], "3");
    assert_eq!(invalid.metadata["record-count"], "3");

    let good = lines(caudal_core::codec::RAW_DEFAULT, &raw.body);
    let good_seqs: Vec<String> = good
        .iter()
        .map(|l| {
            RawLine::parse(l)
                .unwrap()
                .kinesis
                .sequence_number
                .into_owned()
        })
        .collect();
    assert_eq!(
        good_seqs,
        vec![expected[0].0.clone(), expected[3].0.clone()]
    );

    let bad = lines(caudal_core::codec::RAW_DEFAULT, &invalid.body);
    assert_eq!(bad.len(), 3);
    for (line, idx) in bad.iter().zip([1, 2, 4]) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(v["kinesis"]["sequence_number"], expected[idx].0.as_str());
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data_b64"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, expected[idx].1, "every byte kept");
        assert!(!v["reason"].as_str().unwrap().is_empty());
    }

    let calls = fh_log.calls();
    assert_eq!(calls.len(), 1);
    let forwarded: Vec<u8> = calls.concat().concat();
    assert_eq!(
        forwarded,
        caudal_core::codec::RAW_DEFAULT
            .decompress_capped(&raw.body, 1 << 20)
            .unwrap(),
        "valid lines only"
    );
}

#[tokio::test]
async fn packed_records_are_archived_one_line_per_event_with_their_position() {
    // Four records: a single envelope; a packed record of [envelope, foreign bytes, envelope]
    // under key u-7; a packed record whose MD5 is wrong; a single envelope.
    let (s3, log) = s3_client(0, 200, "");
    let (fh, fh_log) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    assert!(run(&state, "raw-writer-packed.json").await.is_empty());
    let records = records_of("raw-writer-packed.json");
    let users = caudal_core::pack::unpack(&records[1].1).unwrap();
    let raw = log.put("raw/");
    assert!(
        raw.key.contains(&pad(&records[0].0)) && raw.key.contains(&pad(&records[3].0)),
        "keyed by the records' range: {}",
        raw.key
    );
    assert_eq!(raw.metadata["record-count"], "4");
    assert_eq!(raw.metadata["invalid-count"], "2");
    let good = lines(caudal_core::codec::RAW_DEFAULT, &raw.body);
    let seen: Vec<(String, String, Option<u32>, Vec<u8>)> = good
        .iter()
        .map(|l| {
            let line = RawLine::parse(l).unwrap();
            (
                line.kinesis.sequence_number.into_owned(),
                line.kinesis.partition_key.into_owned(),
                line.kinesis.sub_sequence_number,
                line.envelope.get().as_bytes().to_vec(),
            )
        })
        .collect();
    let want = vec![
        (
            records[0].0.clone(),
            "u-1".to_owned(),
            None,
            records[0].1.clone(),
        ),
        (
            records[1].0.clone(),
            "u-7".to_owned(),
            Some(0),
            users[0].data.to_vec(),
        ),
        (
            records[1].0.clone(),
            "u-7".to_owned(),
            Some(2),
            users[2].data.to_vec(),
        ),
        (
            records[3].0.clone(),
            "u-9".to_owned(),
            None,
            records[3].1.clone(),
        ),
    ];
    assert_eq!(seen, want, "every event byte for byte, in stream order");
    // A single-event record's line is exactly the one written before packing existed.
    assert!(!contains(&good[0], "sub_sequence_number"));
    assert!(contains(
        &good[1],
        r#""partition_key":"u-7","sub_sequence_number":0}"#
    ));

    let bad = lines(
        caudal_core::codec::RAW_DEFAULT,
        &log.put("raw-invalid/").body,
    );
    assert_eq!(bad.len(), 2);
    let v: Vec<serde_json::Value> = bad
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v["data_b64"].as_str().unwrap())
            .unwrap()
    };
    // The foreign user record alone, at its position; the unreadable pack whole.
    assert_eq!(v[0]["kinesis"]["sub_sequence_number"], 1);
    assert_eq!(b64(&v[0]), users[1].data);
    assert_eq!(v[1]["kinesis"]["sequence_number"], records[2].0.as_str());
    assert!(v[1]["kinesis"].get("sub_sequence_number").is_none());
    assert_eq!(b64(&v[1]), records[2].1, "every byte kept");
    assert!(
        v[1]["reason"].as_str().unwrap().contains("MD5"),
        "{}",
        v[1]["reason"]
    );
    let forwarded: Vec<u8> = fh_log.calls().concat().concat();
    assert_eq!(
        forwarded,
        caudal_core::codec::RAW_DEFAULT
            .decompress_capped(&raw.body, 1 << 20)
            .unwrap(),
        "the lake gets the same lines"
    );
}

#[tokio::test]
async fn a_single_record_batch_is_keyed_by_its_own_sequence_number() {
    let (s3, log) = s3_client(0, 200, "");
    let (fh, _) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    assert!(run(&state, "raw-writer-single.json").await.is_empty());
    let seq = &records_of("raw-writer-single.json")[0].0;
    let put = log.put("raw/");
    assert_eq!(
        put.key,
        format!(
            "raw/dt=2026-11-25/hr=20/shardId-000000000000/{}-{}.ndjson.zst",
            pad(seq),
            pad(seq)
        )
    );
    assert_eq!(lines(caudal_core::codec::RAW_DEFAULT, &put.body).len(), 1);
}

#[tokio::test]
async fn undecodable_base64_is_archived_as_invalid_through_invoke() {
    let (s3, log) = s3_client(0, 200, "");
    let (fh, fh_log) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    let out = invoke(&state, event_json("raw-writer-bad-base64.json"), ctx())
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    let invalid = log.put("raw-invalid/");
    let bad = lines(caudal_core::codec::RAW_DEFAULT, &invalid.body);
    assert_eq!(bad.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&bad[0]).unwrap();
    assert!(v["reason"].as_str().unwrap().contains("base64"));
    let kept = base64::engine::general_purpose::STANDARD
        .decode(v["data_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(kept, b"this is *not* base64!");
    assert_eq!(
        lines(caudal_core::codec::RAW_DEFAULT, &log.put("raw/").body).len(),
        2
    );
    assert_eq!(fh_log.calls().concat().len(), 1);
}

#[tokio::test]
async fn invoke_answers_in_the_lambda_response_shape() {
    let (s3, _) = s3_client(usize::MAX, 503, "SlowDown");
    let (fh, _) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    let out = invoke(&state, event_json("raw-writer-batch.json"), ctx())
        .await
        .unwrap();
    let first = records_of("raw-writer-batch.json")[0].0.clone();
    assert_eq!(
        out,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": first}]})
    );
}

#[tokio::test]
async fn firehose_off_forwards_nothing() {
    let (s3, log) = s3_client(0, 200, "");
    let (fh, fh_log) = firehose_ok();
    let state = State::new(config(false), s3, fh, sqs_ok());
    assert!(run(&state, "raw-writer-batch.json").await.is_empty());
    assert_eq!(log.puts().len(), 1);
    assert!(fh_log.calls().is_empty());
}

#[tokio::test]
async fn a_malformed_event_is_an_error_and_writes_nothing() {
    let (s3, log) = s3_client(0, 200, "");
    let (fh, _) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    let mut v = event_json("raw-writer-batch.json");
    v["Records"][3]["eventID"] = serde_json::Value::Null;
    let err = invoke(&state, v, ctx()).await.unwrap_err();
    assert!(err.to_string().contains("record 3"), "{err}");
    let err = invoke(&state, serde_json::json!({"Records": "nope"}), ctx())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a Kinesis event"), "{err}");
    assert_eq!(log.calls(), 0);
}

#[tokio::test]
async fn an_empty_event_writes_nothing() {
    let (s3, log) = s3_client(0, 200, "");
    let (fh, fh_log) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    let out = invoke(&state, serde_json::json!({"Records": []}), ctx())
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(log.calls(), 0);
    assert!(fh_log.calls().is_empty());
}

#[tokio::test]
async fn several_shards_get_one_object_each() {
    let (s3, log) = s3_client(0, 200, "");
    let (fh, _) = firehose_ok();
    let state = State::new(config(true), s3, fh, sqs_ok());
    let mut v = event_json("raw-writer-batch.json");
    let single = event_json("raw-writer-single.json");
    let recs = v["Records"].as_array_mut().unwrap();
    recs.push(single["Records"][0].clone());
    let out = invoke(&state, v, ctx()).await.unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    let puts = log.puts();
    assert_eq!(puts.len(), 2);
    assert!(
        puts.iter()
            .any(|p| p.key.contains("/shardId-000000000003/"))
    );
    assert!(
        puts.iter()
            .any(|p| p.key.contains("/shardId-000000000000/"))
    );
}

#[tokio::test]
async fn retries_stop_before_the_lambda_deadline() {
    let (s3, log) = s3_client(usize::MAX, 503, "SlowDown");
    let (fh, _) = firehose_ok();
    let mut cfg = config(true);
    cfg.retry = RetryPolicy {
        max_attempts: 1000,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
    };
    cfg.deadline.margin = Duration::from_secs(1);
    let state = State::new(cfg, s3, fh, sqs_ok());
    let started = std::time::Instant::now();
    let resp = handler(
        &state,
        LambdaEvent::new(
            event("raw-writer-batch.json"),
            ctx_with_deadline(Duration::from_secs(3)),
        ),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "answered in time: {took:?}"
    );
    assert!(log.calls() > 1 && log.calls() < 1000);
    assert_eq!(
        failures(resp),
        vec![records_of("raw-writer-batch.json")[0].0.clone()]
    );
}

// ---------------------------------------------------------------------------------------------
// the lake retry path

#[tokio::test]
async fn the_retry_handler_reforwards_exactly_the_named_lines() {
    let _ = caudal_core::telemetry::set_emf_sink(capture_emf);
    let (key, body) = archive("raw-writer-batch.json").await;
    let plain = RETRY_CODEC.decompress_capped(&body, 1 << 20).unwrap();
    let raw_lines: Vec<&[u8]> = plain.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(raw_lines.len(), 5);
    let (s3, gets) = s3_objects(HashMap::from([(key.clone(), body)]));
    let (fh, fh_log) = firehose_ok();
    let (sqs, sqs_log) = sqs_client(0);
    let state = State::new(retry_config(), s3, fh, sqs);
    // events/raw-writer-lake-retry.json names lines 2, 4-5 and then all five of this object.
    let fixture = event_json("raw-writer-lake-retry.json");
    assert!(
        fixture.to_string().contains(&key),
        "fixture names the archived key"
    );
    let out = invoke(&state, fixture, ctx_named("reforward-ok"))
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(gets.load(Ordering::SeqCst), 2, "one read per message");
    let calls = fh_log.calls();
    assert_eq!(calls.len(), 2, "one call per message");
    // Byte for byte the raw object's lines, in order, newlines included.
    assert_eq!(
        calls[0],
        vec![[raw_lines[1], raw_lines[3], raw_lines[4]].concat()]
    );
    assert_eq!(calls[1], vec![plain.clone()]);
    assert!(sqs_log.sent().is_empty(), "a retry never defers again");
    let m = metrics_of("reforward-ok");
    assert_eq!(metric(&m, "LakeRetryMessages"), 2.0);
    assert_eq!(metric(&m, "LakeReforwardedLines"), 8.0);
    assert_eq!(metric(&m, "LakeRetryFailedMessages"), 0.0);
}

#[tokio::test]
async fn deferred_lines_reach_the_lake_through_the_retry_queue() {
    // Kinesis path: Firehose refuses the purchase; the message goes to the queue.
    let (s3, s3_log) = s3_client(0, 200, "");
    let (fh, _) = firehose_client(Arc::new(|_, data| {
        contains(data, "order-2026-000187").then_some("ServiceUnavailableException")
    }));
    let (sqs, sqs_log) = sqs_client(0);
    let mut cfg = retry_config();
    cfg.pack.record_max_bytes = 1000;
    let state = State::new(cfg.clone(), s3, fh, sqs);
    assert!(run(&state, "raw-writer-batch.json").await.is_empty());
    let put = s3_log.put("raw/");
    let body = sqs_log.sent()[0].1.clone();

    // Retry path: the very message, delivered by SQS, once Firehose is back.
    let (s3, _) = s3_objects(HashMap::from([(put.key.clone(), put.body.clone())]));
    let (fh, fh_log) = firehose_ok();
    let state = State::new(cfg, s3, fh, sqs_ok());
    let out = invoke(&state, sqs_event(&[("m-1", body)]), ctx())
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    let plain = caudal_core::codec::RAW_DEFAULT
        .decompress_capped(&put.body, 1 << 20)
        .unwrap();
    let purchase = plain.split_inclusive(|b| *b == b'\n').nth(2).unwrap();
    assert!(contains(purchase, "order-2026-000187"));
    assert_eq!(fh_log.calls(), vec![vec![purchase.to_vec()]]);
}

#[tokio::test]
async fn the_retry_handler_reports_a_message_firehose_still_refuses() {
    let _ = caudal_core::telemetry::set_emf_sink(capture_emf);
    let (key, body) = archive("raw-writer-batch.json").await;
    let (s3, gets) = s3_objects(HashMap::from([(key, body)]));
    let (fh, fh_log) = firehose_client(Arc::new(|_, _| Some("ServiceUnavailableException")));
    let state = State::new(retry_config(), s3, fh, sqs_ok());
    let out = invoke(
        &state,
        event_json("raw-writer-lake-retry.json"),
        ctx_named("reforward-down"),
    )
    .await
    .unwrap();
    let ids: Vec<String> = event_json("raw-writer-lake-retry.json")["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["messageId"].as_str().unwrap().to_owned())
        .collect();
    // Both are redelivered by SQS (and reach the DLQ after maxReceiveCount); the second is
    // not even tried once Firehose has failed for the first.
    assert_eq!(
        out,
        serde_json::json!({"batchItemFailures": [
            {"itemIdentifier": ids[0]}, {"itemIdentifier": ids[1]}
        ]})
    );
    assert_eq!(
        fh_log.calls().len(),
        4,
        "the policy's 4 attempts, for the first only"
    );
    assert_eq!(gets.load(Ordering::SeqCst), 1);
    let m = metrics_of("reforward-down");
    assert_eq!(metric(&m, "LakeRetryFailedMessages"), 2.0);
    assert_eq!(metric(&m, "LakeRetryFailedLines"), 8.0);
    assert_eq!(metric(&m, "LakeReforwardedLines"), 0.0);
}

#[tokio::test]
async fn a_bad_retry_message_fails_alone() {
    let (key, body) = archive("raw-writer-batch.json").await;
    let (s3, _) = s3_objects(HashMap::from([(key.clone(), body)]));
    let (fh, fh_log) = firehose_ok();
    let state = State::new(retry_config(), s3, fh, sqs_ok());
    let good = LakeRetry::for_lines(RETRY_BUCKET, &key, &[0], None).to_body();
    let other_bucket = LakeRetry::for_lines("someone-elses-bucket", &key, &[0], None).to_body();
    let missing =
        LakeRetry::for_lines(RETRY_BUCKET, &key.replace("hr=19", "hr=20"), &[0], None).to_body();
    let past_the_end = LakeRetry::for_lines(RETRY_BUCKET, &key, &[5], None).to_body();
    let out = invoke(
        &state,
        sqs_event(&[
            ("bad-json", "{\"v\":1".into()),
            ("other-bucket", other_bucket),
            ("missing", missing),
            ("good", good),
            ("past-the-end", past_the_end),
        ]),
        ctx(),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        serde_json::json!({"batchItemFailures": [
            {"itemIdentifier": "bad-json"}, {"itemIdentifier": "other-bucket"},
            {"itemIdentifier": "missing"}, {"itemIdentifier": "past-the-end"}
        ]})
    );
    assert_eq!(
        fh_log.calls().len(),
        1,
        "only the good message is forwarded"
    );
}

// ---------------------------------------------------------------------------------------------
// the spill drain

/// The drain's summary metrics line for `request_id` (the batch it writes has its own).
fn drain_metrics(request_id: &str) -> Vec<serde_json::Value> {
    metrics_of(request_id)
        .into_iter()
        .filter(|l| l.get("SpillDrainedObjects").is_some())
        .collect()
}

/// The spill object `events/raw-writer-spill.json` announces.
const SPILL_KEY: &str = "spill/dt=2026-12-02/hr=10/019ade5b7c1e7a3f8b2c4d5e6f708192.ndjson";

/// A spill object holding the envelopes of `raw-writer-batch.json`'s records, as ingest-api
/// writes it.
fn spill_object() -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let records: Vec<(String, Vec<u8>)> = event_json("raw-writer-batch.json")["Records"]
        .as_array()
        .unwrap()
        .iter()
        .zip(records_of("raw-writer-batch.json"))
        .map(|(r, (_, data))| {
            (
                r["kinesis"]["partitionKey"].as_str().unwrap().to_owned(),
                data,
            )
        })
        .collect();
    let mut body = Vec::new();
    for (pk, data) in &records {
        caudal_core::spill::write_line(&mut body, "2026-12-02T10:15:03.118Z", pk, data).unwrap();
    }
    (body, records)
}

/// One S3 client serving `objects` to GetObject (others: 404) and recording every PutObject.
fn s3_store(objects: HashMap<String, Vec<u8>>) -> (aws_sdk_s3::Client, S3Log) {
    let log = S3Log::default();
    let put = put_rule(&log, 0, 200, "");
    let get = get_rule(objects, &Arc::new(AtomicUsize::new(0)));
    let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put, &get], |c| c
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    (client, log)
}

#[tokio::test]
async fn spilled_events_are_drained_into_the_raw_archive_once_and_deterministically() {
    let (body, records) = spill_object();
    let (s3, log) = s3_store(HashMap::from([(SPILL_KEY.to_owned(), body)]));
    let (fh, fh_log) = firehose_ok();
    let state = State::new(retry_config(), s3, fh, sqs_ok());
    let _ = caudal_core::telemetry::set_emf_sink(capture_emf);
    assert!(
        run_with(&state, "raw-writer-spill.json", ctx_named("drain-once"))
            .await
            .is_empty()
    );
    let drained = drain_metrics("drain-once");
    assert_eq!(metric(&drained, "SpillDrainedObjects"), 1.0);
    assert_eq!(metric(&drained, "SpillDrainedLines"), records.len() as f64);
    assert_eq!(metric(&drained, "SpillDrainFailures"), 0.0);
    let raw = log.put("raw/");
    // raw/dt=<spill hour>/hr=…/spill/<id><first index>-<id><last index>.ndjson.zst
    let id = u128::from_str_radix("019ade5b7c1e7a3f8b2c4d5e6f708192", 16).unwrap();
    let last = records.len() - 1;
    assert_eq!(
        raw.key,
        format!(
            "raw/dt=2026-12-02/hr=10/spill/{}-{}.ndjson.zst",
            pad(&format!("{id:039}000000")),
            pad(&format!("{id:039}{last:06}"))
        )
    );
    let archived = lines(caudal_core::codec::RAW_DEFAULT, &raw.body);
    assert_eq!(archived.len(), records.len());
    for (i, (line, (pk, data))) in archived.iter().zip(&records).enumerate() {
        let parsed: RawLine<'_> = serde_json::from_slice(line).unwrap();
        assert_eq!(parsed.kinesis.shard_id, "spill");
        assert_eq!(parsed.kinesis.sequence_number, format!("{id:039}{i:06}"));
        assert_eq!(parsed.kinesis.partition_key, pk.as_str());
        assert_eq!(parsed.kinesis.arrival, "2026-12-02T10:15:03.118Z");
        assert_eq!(
            parsed.envelope.get().as_bytes(),
            data.as_slice(),
            "envelope verbatim"
        );
    }
    assert!(!fh_log.calls().is_empty(), "the lake gets its copy too");

    // A redelivered notification writes the same object with the same bytes.
    assert!(run(&state, "raw-writer-spill.json").await.is_empty());
    let again: Vec<Put> = log
        .puts()
        .into_iter()
        .filter(|p| p.key.starts_with("raw/"))
        .collect();
    assert_eq!(again.len(), 2);
    assert_eq!(
        (again[1].key.as_str(), &again[1].body),
        (raw.key.as_str(), &raw.body)
    );
}

#[tokio::test]
async fn a_spill_object_that_cannot_be_read_or_is_not_one_is_left_for_redelivery() {
    // Missing object: the message is reported, nothing written.
    let (s3, log) = s3_store(HashMap::new());
    let (fh, _) = firehose_ok();
    let state = State::new(retry_config(), s3, fh, sqs_ok());
    let _ = caudal_core::telemetry::set_emf_sink(capture_emf);
    assert_eq!(
        run_with(&state, "raw-writer-spill.json", ctx_named("drain-missing")).await,
        ["5c1f9a2e-0001-4b7d-9e3a-2f6d8c1b0001"]
    );
    assert!(log.puts().is_empty());
    let drained = drain_metrics("drain-missing");
    assert_eq!(metric(&drained, "SpillDrainFailures"), 1.0);
    assert_eq!(metric(&drained, "SpillDrainedObjects"), 0.0);

    // Not a spill object (a line without an envelope): reported, nothing written.
    let (s3, log) = s3_store(HashMap::from([(
        SPILL_KEY.to_owned(),
        b"{\"x\":1}\n".to_vec(),
    )]));
    let (fh, _) = firehose_ok();
    let state = State::new(retry_config(), s3, fh, sqs_ok());
    assert_eq!(run(&state, "raw-writer-spill.json").await.len(), 1);
    assert!(log.puts().is_empty());

    // Another bucket: never read.
    let mut other = retry_config();
    other.raw_bucket = "someone-elses-bucket".into();
    let (s3, log) = s3_store(HashMap::new());
    let (fh, _) = firehose_ok();
    let state = State::new(other, s3, fh, sqs_ok());
    assert_eq!(run(&state, "raw-writer-spill.json").await.len(), 1);
    assert_eq!(log.calls(), 0);
}
