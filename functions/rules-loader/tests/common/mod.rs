//! Shared fixtures for the handler tests: a small rules file, raw objects, mocked S3 and Data API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementOutput;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::operation::execute_statement::ExecuteStatementOutput;
use aws_sdk_redshiftdata::operation::get_statement_result::GetStatementResultOutput;
use aws_sdk_redshiftdata::types::{Field, StatusString, SubStatementData};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_mocks::{Rule, mock};
use caudal_core::codec::Codec;
use caudal_core::rules::{Ident, RuleSet};
use caudal_core::warehouse::{Connection, Target};
use lambda_runtime::Context;
use rules_loader::{Config, State};
use time::OffsetDateTime;

/// A rules file small enough to spell out the SQL it produces.
pub const RULES: &str = r#"version: 1
unknown_types: reject
filters:
  - name: drop_internal_test
    drop_if: has(event.test) && event.test == true
tables:
  page_views:
    sort_key: [event_time]
    columns:
      - {name: event_time, type: TIMESTAMPTZ, nullable: false}
      - {name: url, type: VARCHAR(2048)}
events:
  page_view:
    table: page_views
    schema:
      type: object
      required: [ts, page]
    columns:
      event_time: /event/ts
      url: /event/page/url
"#;

pub const STAGING_BUCKET: &str = "caudal-staging";
pub const RAW_BUCKET: &str = "caudal-raw-123456789012";
pub const ROLE: &str = "arn:aws:iam::123456789012:role/caudal-copy";

/// The fixed `loaded_at` of the tests.
pub fn loaded_at() -> OffsetDateTime {
    time::macros::datetime!(2026-11-25 20:00:05.123456 UTC)
}

pub fn config(rules: &str) -> Config {
    Config {
        staging_bucket: STAGING_BUCKET.into(),
        connection: Connection {
            target: Target::Workgroup("caudal".into()),
            database: "dev".into(),
            secret_arn: None,
            db_user: None,
        },
        schema: Ident::parse("analytics").unwrap(),
        copy_role_arn: ROLE.into(),
        redshift_region: None,
        staging_region: None,
        rules: Arc::new(RuleSet::from_yaml(rules).unwrap()),
        migrate_on_start: false,
        dedupe_window: time::Duration::hours(168),
        queue_url: None,
    }
}

/// The staging attempt id of [`state`].
pub const ATTEMPT: &str = "a1";

pub fn state(s3: aws_sdk_s3::Client, rs: aws_sdk_redshiftdata::Client) -> State {
    State::new(config(RULES), s3, rs)
        .with_clock(Arc::new(loaded_at))
        .with_attempt_ids(Arc::new(|| ATTEMPT.to_owned()))
}

/// A Lambda context whose deadline is `secs` from now.
pub fn ctx(secs: u64) -> Context {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut c = Context::default();
    c.request_id = "req-1".into();
    c.deadline = u64::try_from((now + Duration::from_secs(secs)).as_millis()).unwrap();
    c
}

pub fn event_file(name: &str) -> serde_json::Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// A raw-archive line for a client event, as the raw writer would have written it.
pub fn raw_line(event: &str, n: u64) -> Vec<u8> {
    caudal_core::rules::wrap_client_event(
        event.as_bytes(),
        n,
        time::macros::datetime!(2026-11-25 19:55:17.5 UTC),
    )
    .unwrap()
}

/// The raw object of the happy path: two page views with the same id, one internal test
/// (filtered), one unknown type (rejected).
pub fn raw_object() -> Vec<u8> {
    let lines = [
        raw_line(
            r#"{"type":"page_view","id":"pv-1","ts":"2026-11-25T19:55:17.120Z","page":{"url":"https://shop.example.com/a"}}"#,
            1,
        ),
        raw_line(
            r#"{"type":"page_view","id":"pv-2","test":true,"ts":"2026-11-25T19:55:17.120Z","page":{"url":"https://shop.example.com/"}}"#,
            2,
        ),
        raw_line(r#"{"type":"newsletter_open","id":"nl-1"}"#, 3),
        raw_line(
            r#"{"type":"page_view","id":"pv-1","ts":"2026-11-25T19:55:17.120Z","page":{"url":"https://shop.example.com/a"}}"#,
            4,
        ),
    ];
    gzip(&lines.join(&b'\n'))
}

/// `data` gzip-compressed with the one encoder the pipeline uses ([`Codec`]).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    Codec::Gzip { level: 6 }.compress(data).unwrap()
}

/// The text of a staging part (every frame), in the loader's staging codec.
pub fn unstage(data: &[u8]) -> String {
    let bytes = caudal_core::rules::STAGING_CODEC
        .decompress_capped(data, usize::MAX)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// The text of a gzip object (every member), through [`Codec`].
pub fn gunzip(data: &[u8]) -> String {
    let bytes = Codec::Gzip { level: 6 }
        .decompress_capped(data, usize::MAX)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// What the mocked S3 saw and holds.
#[derive(Default)]
pub struct S3World {
    /// key → body of objects that exist (raw objects, descriptors put by an earlier run).
    pub objects: Mutex<BTreeMap<String, (Vec<u8>, String)>>,
    /// Keys and bodies written, in order.
    pub puts: Mutex<Vec<(String, Vec<u8>)>>,
    /// Keys read, in order.
    pub gets: Mutex<Vec<String>>,
    /// Keys written with `If-None-Match: *`, in order.
    pub conditional: Mutex<Vec<String>>,
    /// An object that a concurrent writer creates just before our conditional write of its key.
    pub race: Mutex<Option<(String, Vec<u8>)>>,
}

impl S3World {
    pub fn with(objects: &[(&str, Vec<u8>, &str)]) -> Arc<S3World> {
        let w = S3World::default();
        for (k, b, e) in objects {
            w.objects
                .lock()
                .unwrap()
                .insert((*k).to_owned(), (b.clone(), (*e).to_owned()));
        }
        Arc::new(w)
    }

    /// Keys written only-if-absent.
    pub fn conditional_puts(&self) -> Vec<String> {
        self.conditional.lock().unwrap().clone()
    }

    /// Make `key` appear (written by someone else) when we first write it conditionally.
    pub fn appears_on_conditional_put(&self, key: &str, body: Vec<u8>) {
        *self.race.lock().unwrap() = Some((key.to_owned(), body));
    }

    pub fn put_keys(&self) -> Vec<String> {
        self.puts
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn put_body(&self, key: &str) -> Option<Vec<u8>> {
        self.puts
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, b)| b.clone())
    }

    /// Rules: GetObject answers from `objects` (NoSuchKey otherwise); PutObject records and
    /// answers with an ETag.
    /// A mocked S3 client on this world.
    pub fn client(self: &Arc<Self>) -> aws_sdk_s3::Client {
        let rules = self.rules();
        aws_smithy_mocks::mock_client!(
            aws_sdk_s3,
            aws_smithy_mocks::RuleMode::MatchAny,
            rules.iter()
        )
    }

    pub fn rules(self: &Arc<Self>) -> Vec<Rule> {
        let w = self.clone();
        let get = mock!(aws_sdk_s3::Client::get_object).then_compute_response(move |req| {
            let key = req.key().unwrap_or_default().to_owned();
            w.gets.lock().unwrap().push(key.clone());
            match w.objects.lock().unwrap().get(&key) {
                Some((body, etag)) => aws_smithy_mocks::MockResponse::Output(
                    GetObjectOutput::builder()
                        .body(ByteStream::from(body.clone()))
                        .e_tag(format!("\"{etag}\""))
                        .build(),
                ),
                None => aws_smithy_mocks::MockResponse::Error(GetObjectError::NoSuchKey(
                    aws_sdk_s3::types::error::NoSuchKey::builder()
                        .message("The specified key does not exist.")
                        .meta(
                            aws_smithy_types::error::ErrorMetadata::builder()
                                .code("NoSuchKey")
                                .message("The specified key does not exist.")
                                .build(),
                        )
                        .build(),
                )),
            }
        });
        let w = self.clone();
        let put = mock!(aws_sdk_s3::Client::put_object).then_compute_response(move |req| {
            let key = req.key().unwrap_or_default().to_owned();
            let body = req.body().bytes().unwrap_or_default().to_vec();
            if req.if_none_match() == Some("*") {
                w.conditional.lock().unwrap().push(key.clone());
                let mut race = w.race.lock().unwrap();
                if race.as_ref().is_some_and(|(k, _)| *k == key)
                    && let Some((k, b)) = race.take()
                {
                    w.objects
                        .lock()
                        .unwrap()
                        .insert(k, (b, "0123456789abcdef0123456789abcdef".to_owned()));
                }
                if w.objects.lock().unwrap().contains_key(&key) {
                    return aws_smithy_mocks::MockResponse::Error(PutObjectError::generic(
                        aws_smithy_types::error::ErrorMetadata::builder()
                            .code("PreconditionFailed")
                            .message(
                                "At least one of the pre-conditions you specified did not hold",
                            )
                            .build(),
                    ));
                }
            }
            w.puts.lock().unwrap().push((key, body));
            aws_smithy_mocks::MockResponse::Output(
                PutObjectOutput::builder()
                    .e_tag("\"5d41402abc4b2a76b9719d911017c592\"")
                    .build(),
            )
        });
        vec![get, put]
    }
}

/// One recorded BatchExecuteStatement call.
#[derive(Debug, Clone)]
pub struct Batch {
    pub sqls: Vec<String>,
    pub client_token: Option<String>,
}

/// One recorded ExecuteStatement call: SQL and parameters (name, value).
pub type Execute = (String, Vec<(String, String)>);

/// What the mocked Data API saw, and how it answers.
pub struct DataApi {
    /// raw keys the ledger already has (answer of the look-up query).
    pub ledger: Vec<String>,
    /// Statuses the load statement goes through on successive DescribeStatement calls (the last
    /// repeats).
    pub load_statuses: Vec<StatusString>,
    /// Error text when the load FAILS.
    pub load_error: Option<String>,
    /// created_at of the load statement.
    pub load_created_at: SystemTime,
    /// Id returned per client token (the Data API's idempotency).
    pub ids: Mutex<BTreeMap<String, String>>,
    pub batches: Mutex<Vec<Batch>>,
    pub executes: Mutex<Vec<Execute>>,
    pub describes: Mutex<Vec<String>>,
}

impl DataApi {
    pub fn new(ledger: &[&str], load_statuses: Vec<StatusString>) -> Arc<DataApi> {
        Arc::new(DataApi {
            ledger: ledger.iter().map(|s| s.to_string()).collect(),
            load_statuses,
            load_error: None,
            load_created_at: SystemTime::now(),
            ids: Mutex::new(BTreeMap::new()),
            batches: Mutex::new(Vec::new()),
            executes: Mutex::new(Vec::new()),
            describes: Mutex::new(Vec::new()),
        })
    }

    pub fn batches(&self) -> Vec<Batch> {
        self.batches.lock().unwrap().clone()
    }

    pub fn load_describes(&self) -> usize {
        self.describes
            .lock()
            .unwrap()
            .iter()
            .filter(|id| id.starts_with("load-"))
            .count()
    }

    pub fn rules(self: &Arc<Self>) -> Vec<Rule> {
        let d = self.clone();
        let execute = mock!(aws_sdk_redshiftdata::Client::execute_statement).then_compute_output(
            move |req| {
                let mut ex = d.executes.lock().unwrap();
                ex.push((
                    req.sql().unwrap_or_default().to_owned(),
                    req.parameters()
                        .iter()
                        .map(|p| (p.name().to_owned(), p.value().to_owned()))
                        .collect(),
                ));
                ExecuteStatementOutput::builder()
                    .id(format!("q-{}", ex.len()))
                    .build()
            },
        );
        let d = self.clone();
        let batch = mock!(aws_sdk_redshiftdata::Client::batch_execute_statement)
            .then_compute_output(move |req| {
                let token = req.client_token().unwrap_or_default().to_owned();
                d.batches.lock().unwrap().push(Batch {
                    sqls: req.sqls().to_vec(),
                    client_token: req.client_token().map(str::to_owned),
                });
                let mut ids = d.ids.lock().unwrap();
                let n = ids.len() + 1;
                let id = ids
                    .entry(token)
                    .or_insert_with(|| format!("load-{n}"))
                    .clone();
                BatchExecuteStatementOutput::builder().id(id).build()
            });
        let d = self.clone();
        let describe = mock!(aws_sdk_redshiftdata::Client::describe_statement).then_compute_output(
            move |req| {
                let id = req.id().unwrap_or_default().to_owned();
                let mut seen = d.describes.lock().unwrap();
                seen.push(id.clone());
                if id.starts_with("q-") {
                    return DescribeStatementOutput::builder()
                        .id(id)
                        .status(StatusString::Finished)
                        .has_result_set(true)
                        .build()
                        .unwrap();
                }
                let n = seen.iter().filter(|s| s.starts_with("load-")).count();
                let status = d
                    .load_statuses
                    .get(n - 1)
                    .or(d.load_statuses.last())
                    .cloned()
                    .unwrap_or(StatusString::Finished);
                let mut b = DescribeStatementOutput::builder()
                    .id(&id)
                    .status(status.clone())
                    .created_at(aws_smithy_types::DateTime::from(d.load_created_at))
                    .duration(1_500_000_000)
                    .has_result_set(false);
                if status == StatusString::Failed {
                    b = b.error(d.load_error.clone().unwrap_or_else(|| "ERROR: boom".into()));
                }
                // Sub-statements: the page_views INSERT (index 2) inserted 1 row.
                for i in 0..7 {
                    b = b.sub_statements(
                        SubStatementData::builder()
                            .id(format!("{id}:{}", i + 1))
                            .result_rows(if i == 2 { 1 } else { 0 })
                            .build()
                            .unwrap(),
                    );
                }
                b.build().unwrap()
            },
        );
        let d = self.clone();
        let result = mock!(aws_sdk_redshiftdata::Client::get_statement_result).then_compute_output(
            move |_req| {
                let mut b = GetStatementResultOutput::builder().set_records(Some(Vec::new()));
                for k in &d.ledger {
                    b = b.records(vec![
                        Field::StringValue(k.clone()),
                        Field::StringValue("0123456789abcdef0123456789abcdef".into()),
                    ]);
                }
                b.build().unwrap()
            },
        );
        vec![execute, batch, describe, result]
    }
}

pub fn clients(
    s3: &Arc<S3World>,
    api: &Arc<DataApi>,
) -> (aws_sdk_s3::Client, aws_sdk_redshiftdata::Client) {
    let api_rules = api.rules();
    let s3c = s3.client();
    let rsc = aws_smithy_mocks::mock_client!(
        aws_sdk_redshiftdata,
        aws_smithy_mocks::RuleMode::MatchAny,
        api_rules.iter()
    );
    (s3c, rsc)
}

/// One recorded SendMessage: body, delay, the postponement attribute.
pub type Sent = (String, Option<i32>, Option<String>);

/// A mocked SQS for postponed messages: records every SendMessage, or refuses them all.
#[derive(Default)]
pub struct SqsWorld {
    pub sent: Mutex<Vec<Sent>>,
    /// The `caudal-first-sent` attribute of every message sent, in order.
    pub first_sent: Mutex<Vec<Option<String>>>,
    /// Answer every SendMessage with a (non-retryable) error.
    pub refuse: bool,
}

impl SqsWorld {
    pub fn client(self: &Arc<Self>) -> aws_sdk_sqs::Client {
        use aws_sdk_sqs::operation::send_message::{SendMessageError, SendMessageOutput};
        let w = self.clone();
        let send = mock!(aws_sdk_sqs::Client::send_message)
            .match_requests({
                let w = self.clone();
                move |_| !w.refuse
            })
            .then_compute_output(move |req| {
                w.first_sent.lock().unwrap().push(
                    req.message_attributes()
                        .and_then(|a| a.get("caudal-first-sent"))
                        .and_then(|v| v.string_value())
                        .map(str::to_owned),
                );
                let mut sent = w.sent.lock().unwrap();
                sent.push((
                    req.message_body().unwrap_or_default().to_owned(),
                    req.delay_seconds(),
                    req.message_attributes()
                        .and_then(|a| a.get("caudal-postponed"))
                        .and_then(|v| v.string_value())
                        .map(str::to_owned),
                ));
                SendMessageOutput::builder()
                    .message_id(format!("copy-{}", sent.len()))
                    .build()
            });
        let refuse = mock!(aws_sdk_sqs::Client::send_message)
            .match_requests({
                let w = self.clone();
                move |_| w.refuse
            })
            .then_error(|| {
                SendMessageError::QueueDoesNotExist(
                    aws_sdk_sqs::types::error::QueueDoesNotExist::builder()
                        .message("The specified queue does not exist.")
                        .meta(meta("AWS.SimpleQueueService.NonExistentQueue"))
                        .build(),
                )
            });
        aws_smithy_mocks::mock_client!(
            aws_sdk_sqs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&send, &refuse]
        )
    }
}

/// A Data API whose every ExecuteStatement fails with `code` (retryable or not, as the service
/// would classify it).
pub fn failing_data_api(retryable: bool) -> aws_sdk_redshiftdata::Client {
    use aws_sdk_redshiftdata::operation::execute_statement::ExecuteStatementError;
    use aws_sdk_redshiftdata::types::error::{InternalServerException, ValidationException};
    let rule = mock!(aws_sdk_redshiftdata::Client::execute_statement).then_error(move || {
        if retryable {
            ExecuteStatementError::InternalServerException(
                InternalServerException::builder()
                    .message("internal error")
                    .meta(meta("InternalServerException"))
                    .build()
                    .unwrap(),
            )
        } else {
            ExecuteStatementError::ValidationException(
                ValidationException::builder()
                    .message("workgroup not found")
                    .meta(meta("ValidationException"))
                    .build(),
            )
        }
    });
    aws_smithy_mocks::mock_client!(
        aws_sdk_redshiftdata,
        aws_smithy_mocks::RuleMode::MatchAny,
        [&rule]
    )
}

/// The loader queue's URL in the tests.
pub const QUEUE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/caudal-loader";

/// Error metadata with the service's error code (what classification reads).
fn meta(code: &str) -> aws_smithy_types::error::ErrorMetadata {
    aws_smithy_types::error::ErrorMetadata::builder()
        .code(code)
        .build()
}
