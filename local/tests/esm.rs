//! The event source pollers against a real moto: ordering, batching, partial batch responses,
//! bisection, retries with the OnFailure destination, SQS deletes and redrive to the DLQ.
//! Needs `moto_server` (MOTO_SERVER or PATH), like every emulator test in the workspace.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use caudal_local::emulators::esm::{KinesisMapping, SqsMapping};
use caudal_local::emulators::lambda::{Handler, LocalFunction};
use caudal_local::shutdown;
use caudal_local::stack::template::{KinesisSource, OnFailure, SqsSource, StartingPosition};
use serde_json::{Value, json};

struct Env {
    _moto: testkit::Moto,
    kinesis: aws_sdk_kinesis::Client,
    sqs: aws_sdk_sqs::Client,
}

async fn env() -> Env {
    let moto = testkit::Moto::start(None).expect("moto_server must be installed");
    let conf = moto.sdk_config().await;
    Env {
        kinesis: aws_sdk_kinesis::Client::new(&conf),
        sqs: aws_sdk_sqs::Client::new(&conf),
        _moto: moto,
    }
}

async fn stream_with(env: &Env, name: &str, records: usize) -> Vec<String> {
    env.kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for i in 0..records {
        let out = env
            .kinesis
            .put_record()
            .stream_name(name)
            .partition_key(format!("pk{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                "record-{i}"
            )))
            .send()
            .await
            .unwrap();
        seqs.push(out.sequence_number().to_owned());
    }
    seqs
}

fn kinesis_source(stream: &str, batch: usize) -> KinesisSource {
    KinesisSource {
        name: "Test".into(),
        stream_arn: format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}"),
        stream_name: stream.into(),
        batch_size: batch,
        batching_window: Duration::ZERO,
        starting_position: StartingPosition::TrimHorizon,
        report_batch_item_failures: true,
        bisect_on_error: false,
        max_retry_attempts: Some(3),
        max_record_age: None,
        on_failure: None,
        parallelization_factor: 1,
    }
}

/// Records every batch (sequence numbers) the function saw; `decide` chooses the answer.
#[derive(Clone, Default)]
struct Recorder {
    batches: Arc<Mutex<Vec<Vec<String>>>>,
    succeeded: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn function<F>(&self, decide: F) -> Arc<LocalFunction>
    where
        F: Fn(&[String], usize) -> Result<Value, String> + Send + Sync + 'static,
    {
        let me = self.clone();
        let decide = Arc::new(decide);
        let h = move |payload: Value, _ctx: lambda_runtime::Context| {
            let me = me.clone();
            let decide = decide.clone();
            async move {
                // Exactly what a handler does: deserialize the Lambda event type.
                let ev: KinesisEvent = serde_json::from_value(payload)?;
                let seqs: Vec<String> = ev
                    .records
                    .iter()
                    .map(|r| r.kinesis.sequence_number.clone())
                    .collect();
                let attempt = {
                    let mut b = me.batches.lock().unwrap();
                    b.push(seqs.clone());
                    b.len()
                };
                match decide(&seqs, attempt) {
                    Ok(v) => {
                        let failed: Vec<String> = v["batchItemFailures"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                            .collect();
                        let lowest = seqs
                            .iter()
                            .position(|s| failed.contains(s))
                            .unwrap_or(seqs.len());
                        me.succeeded
                            .lock()
                            .unwrap()
                            .extend(seqs[..lowest].iter().cloned());
                        Ok(v)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        };
        Arc::new(LocalFunction::detached(
            "test-fn",
            Duration::from_secs(5),
            Arc::new(h) as Arc<dyn Handler>,
        ))
    }
}

async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kinesis_batches_are_ordered_bounded_and_complete() {
    let env = env().await;
    let seqs = stream_with(&env, "ordered", 35).await;
    let rec = Recorder::default();
    let f = rec.function(|_, _| Ok(Value::Null));
    let m = Arc::new(KinesisMapping::new(
        env.kinesis.clone(),
        env.sqs.clone(),
        kinesis_source("ordered", 10),
        f,
        "us-east-1",
        "arn:aws:iam::123456789012:role/r",
        None,
    ));
    let (trigger, sd) = shutdown::channel();
    let handles = m.start(sd).await.unwrap();
    wait_until(Duration::from_secs(20), || {
        rec.succeeded.lock().unwrap().len() >= 35
    })
    .await;
    wait_until(Duration::from_secs(5), || m.caught_up()).await;
    trigger.fire();
    for h in handles {
        h.await.unwrap();
    }
    let batches = rec.batches.lock().unwrap();
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 10),
        "{batches:?}"
    );
    let flat: Vec<String> = batches.iter().flatten().cloned().collect();
    assert_eq!(flat, seqs, "every record once, in order");
}

#[tokio::test]
async fn partial_batch_response_checkpoints_at_the_lowest_failure() {
    let env = env().await;
    let seqs = stream_with(&env, "partial", 6).await;
    let (s2, s4) = (seqs[2].clone(), seqs[4].clone());
    let rec = Recorder::default();
    // First invocation reports records 4 and 2 as failed; later ones succeed.
    let f = rec.function(move |_, attempt| {
        if attempt == 1 {
            Ok(json!({"batchItemFailures": [{"itemIdentifier": s4}, {"itemIdentifier": s2}]}))
        } else {
            Ok(json!({"batchItemFailures": []}))
        }
    });
    let m = Arc::new(KinesisMapping::new(
        env.kinesis.clone(),
        env.sqs.clone(),
        kinesis_source("partial", 100),
        f,
        "us-east-1",
        "arn:aws:iam::123456789012:role/r",
        None,
    ));
    let (trigger, sd) = shutdown::channel();
    let handles = m.start(sd).await.unwrap();
    wait_until(Duration::from_secs(20), || {
        rec.succeeded.lock().unwrap().len() >= 6
    })
    .await;
    trigger.fire();
    for h in handles {
        h.await.unwrap();
    }
    let batches = rec.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert_eq!(batches[0], seqs);
    assert_eq!(
        batches[1],
        seqs[2..].to_vec(),
        "redelivered from the lowest failed record"
    );
    assert_eq!(*rec.succeeded.lock().unwrap(), seqs);
}

#[tokio::test]
async fn a_poison_record_is_bisected_out_and_reported_on_failure() {
    let env = env().await;
    let seqs = stream_with(&env, "poison", 8).await;
    let q = env
        .sqs
        .create_queue()
        .queue_name("failures")
        .send()
        .await
        .unwrap();
    let q_url = q.queue_url().unwrap().to_owned();
    let poison = seqs[5].clone();
    let rec = Recorder::default();
    let p = poison.clone();
    let f = rec.function(move |batch, _| {
        if batch.contains(&p) {
            Err("cannot handle this record".into())
        } else {
            Ok(Value::Null)
        }
    });
    let mut source = kinesis_source("poison", 100);
    source.bisect_on_error = true;
    source.max_retry_attempts = Some(2);
    source.on_failure = Some(OnFailure {
        arn: "arn:aws:sqs:us-east-1:123456789012:failures".into(),
        queue_name: Some("failures".into()),
    });
    let m = Arc::new(KinesisMapping::new(
        env.kinesis.clone(),
        env.sqs.clone(),
        source,
        f,
        "us-east-1",
        "arn:aws:iam::123456789012:role/r",
        Some(q_url.clone()),
    ));
    let (trigger, sd) = shutdown::channel();
    let handles = m.start(sd).await.unwrap();
    wait_until(Duration::from_secs(30), || {
        m.stats
            .sent_to_on_failure
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
            && m.caught_up()
    })
    .await;
    trigger.fire();
    for h in handles {
        h.await.unwrap();
    }
    let mut ok = rec.succeeded.lock().unwrap().clone();
    ok.sort_by_key(|s| s.parse::<u128>().unwrap());
    let expected: Vec<String> = seqs.iter().filter(|s| **s != poison).cloned().collect();
    assert_eq!(ok, expected, "every other record processed exactly once");
    // The poison record alone was tried 1 + 2 retries times after isolation.
    let alone = rec
        .batches
        .lock()
        .unwrap()
        .iter()
        .filter(|b| **b == vec![poison.clone()])
        .count();
    assert_eq!(alone, 3);
    assert!(
        m.stats
            .bisections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    let msgs = env
        .sqs
        .receive_message()
        .queue_url(&q_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(msgs.messages().len(), 1);
    let body: Value = serde_json::from_str(msgs.messages()[0].body().unwrap()).unwrap();
    assert_eq!(
        body["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(body["responseContext"]["functionError"], "Unhandled");
    assert_eq!(
        body["KinesisBatchInfo"]["startSequenceNumber"],
        poison.as_str()
    );
    assert_eq!(
        body["KinesisBatchInfo"]["endSequenceNumber"],
        poison.as_str()
    );
    assert_eq!(body["KinesisBatchInfo"]["batchSize"], 1);
}

#[tokio::test]
async fn the_batching_window_gathers_records_before_invoking() {
    let env = env().await;
    stream_with(&env, "window", 0).await;
    let rec = Recorder::default();
    let f = rec.function(|_, _| Ok(Value::Null));
    let mut source = kinesis_source("window", 1000);
    source.batching_window = Duration::from_secs(2);
    let m = Arc::new(KinesisMapping::new(
        env.kinesis.clone(),
        env.sqs.clone(),
        source,
        f,
        "us-east-1",
        "arn:aws:iam::123456789012:role/r",
        None,
    ));
    let (trigger, sd) = shutdown::channel();
    let handles = m.start(sd).await.unwrap();
    let started = Instant::now();
    for i in 0..5 {
        env.kinesis
            .put_record()
            .stream_name("window")
            .partition_key("k")
            .data(aws_sdk_kinesis::primitives::Blob::new(vec![i]))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(Duration::from_secs(10), || {
        rec.succeeded.lock().unwrap().len() >= 5
    })
    .await;
    let took = started.elapsed();
    trigger.fire();
    for h in handles {
        h.await.unwrap();
    }
    let batches = rec.batches.lock().unwrap();
    assert_eq!(batches.len(), 1, "one batch after the window: {batches:?}");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
}

fn sqs_function(
    seen: Arc<Mutex<Vec<(String, String)>>>,
    fail_body: &'static str,
) -> Arc<LocalFunction> {
    let h = move |payload: Value, _ctx: lambda_runtime::Context| {
        let seen = seen.clone();
        async move {
            let ev: SqsEvent = serde_json::from_value(payload)?;
            let mut failures = Vec::new();
            for r in &ev.records {
                let body = r.body.clone().unwrap_or_default();
                let count = r
                    .attributes
                    .get("ApproximateReceiveCount")
                    .cloned()
                    .unwrap_or_default();
                seen.lock().unwrap().push((body.clone(), count));
                if body == fail_body {
                    failures.push(json!({"itemIdentifier": r.message_id}));
                }
            }
            Ok(json!({ "batchItemFailures": failures }))
        }
    };
    Arc::new(LocalFunction::detached(
        "sqs-fn",
        Duration::from_secs(5),
        Arc::new(h) as Arc<dyn Handler>,
    ))
}

#[tokio::test]
async fn sqs_deletes_successes_and_redrives_failures_to_the_dlq() {
    let env = env().await;
    let dlq = env
        .sqs
        .create_queue()
        .queue_name("dlq")
        .send()
        .await
        .unwrap();
    let dlq_url = dlq.queue_url().unwrap().to_owned();
    let redrive = json!({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:dlq", "maxReceiveCount": 2});
    let q = env
        .sqs
        .create_queue()
        .queue_name("work")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "1",
        )
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            redrive.to_string(),
        )
        .send()
        .await
        .unwrap();
    let url = q.queue_url().unwrap().to_owned();
    for body in ["a", "b", "bad", "c"] {
        env.sqs
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let source = SqsSource {
        name: "Jobs".into(),
        queue_arn: "arn:aws:sqs:us-east-1:123456789012:work".into(),
        queue_name: "work".into(),
        batch_size: 10,
        batching_window: Duration::ZERO,
        report_batch_item_failures: true,
        maximum_concurrency: Some(1),
    };
    let m = Arc::new(SqsMapping::new(
        env.sqs.clone(),
        source,
        url.clone(),
        sqs_function(seen.clone(), "bad"),
        "us-east-1",
    ));
    let (trigger, sd) = shutdown::channel();
    let handles = m.start(sd);
    // The failing message is received twice (visibility 1 s), then moto moves it to the DLQ.
    let start = Instant::now();
    let dlq_body = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never reached the DLQ: {:?}",
            seen.lock().unwrap()
        );
        let out = env
            .sqs
            .receive_message()
            .queue_url(&dlq_url)
            .send()
            .await
            .unwrap();
        if let Some(msg) = out.messages().first() {
            break msg.body().unwrap_or_default().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    trigger.fire();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(dlq_body, "bad");
    let seen = seen.lock().unwrap().clone();
    for ok in ["a", "b", "c"] {
        assert_eq!(
            seen.iter().filter(|(b, _)| b == ok).count(),
            1,
            "{ok} delivered once: {seen:?}"
        );
    }
    let bad: Vec<&String> = seen
        .iter()
        .filter(|(b, _)| b == "bad")
        .map(|(_, c)| c)
        .collect();
    assert_eq!(
        bad,
        ["1", "2"],
        "ApproximateReceiveCount grows with each receive"
    );
    let attrs = env
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let a = attrs.attributes().unwrap();
    assert_eq!(
        a[&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages],
        "0"
    );
    assert_eq!(
        m.stats.succeeded.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}
