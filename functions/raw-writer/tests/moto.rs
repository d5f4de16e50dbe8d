//! End-to-end against moto (S3 + Firehose delivering to S3 + SQS): the real handler, through
//! `invoke` with the JSON Lambda would send, on a 10,000-record (~6 MB) batch. The raw object is
//! read back record by record and compared with what was sent; what Firehose delivered to its S3
//! destination must hold every valid line. A second test takes the lake away: the batch is
//! archived anyway, its lines are deferred to a real SQS queue, and the message — received from
//! that queue — gets them into the lake once the stream exists.
//!
//! Needs `moto_server` (env `MOTO_SERVER` or on `PATH`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_firehose::types::{DeliveryStreamType, ExtendedS3DestinationConfiguration};
use base64::Engine as _;
use caudal_aws::clients::{self, ClientOptions};
use caudal_core::envelope::{EventRef, RequestMeta, encode};
use caudal_core::raw::RawLine;
use lambda_runtime::Context;
use raw_writer::{Config, State, invoke};
use time::macros::datetime;

const RECORDS: usize = 10_000;
const INVALID_AT: [usize; 3] = [17, 5_000, 9_998];
const SHARD: &str = "shardId-000000000007";

/// A deterministic, varied ~600-byte envelope (realistic compressibility, not repeated text).
fn envelope(i: usize, rng: &mut u64) -> Vec<u8> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let kinds = ["page_view", "click", "search", "add_to_cart", "purchase"];
    let kind = kinds[(next() % 5) as usize];
    let raw = format!(
        r#"{{"type":"{kind}","user_id":"u-{}","session":"{:016x}","url":"https://shop.example.com/c/{}/p/{}?utm_source=news&utm_campaign=w{}","referrer":"https://www.example.org/search?q=item+{}","ts":"2026-11-25T19:55:{:02}.{:03}Z","screen":{{"w":{},"h":{}}},"cart":[{{"sku":"SKU-{:06}","qty":{},"price":{}.{:02}}}],"flags":{{"beta":{},"consent":true}},"n":{i}}}"#,
        next() % 50_000,
        next(),
        next() % 40,
        next() % 9_000,
        next() % 52,
        next() % 1_000,
        next() % 60,
        next() % 1_000,
        1_280 + next() % 1_280,
        720 + next() % 720,
        next() % 999_999,
        1 + next() % 4,
        next() % 500,
        next() % 100,
        next().is_multiple_of(2),
    );
    let meta = RequestMeta {
        request_id: format!("K7x{:013x}=", next() % (1 << 52)),
        received_at: Some(caudal_core::envelope::format_timestamp(
            datetime!(2026-11-25 19:55:17.042 UTC),
        )),
        source_ip: Some(format!("203.0.113.{}", next() % 255)),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0".into()),
        principal: None,
        stage: Some("$default".into()),
        protocol: None,
    };
    encode(
        &EventRef {
            id: &format!("0193a7c2-5f1e-7d40-9b1a-{:012x}", i),
            id_generated: i.is_multiple_of(3),
            event_type: kind,
            raw: raw.as_bytes(),
            event_time: None,
        },
        &meta,
    )
}

fn seq(i: usize) -> String {
    format!(
        "49659732041357081734587521{:030}",
        9_471_837_450_129_318_200u128 + i as u128 * 1_000_003
    )
}

/// The Kinesis event JSON and, per record, its sequence number and data.
fn build_event() -> (serde_json::Value, Vec<(String, Vec<u8>)>) {
    build_event_of(RECORDS)
}

/// The same, with `n` records.
fn build_event_of(n: usize) -> (serde_json::Value, Vec<(String, Vec<u8>)>) {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut sent = Vec::with_capacity(n);
    let mut recs = Vec::with_capacity(n);
    for i in 0..n {
        let data = if INVALID_AT.contains(&i) {
            format!("legacy producer line {i}, not an envelope").into_bytes()
        } else {
            envelope(i, &mut rng)
        };
        let s = seq(i);
        recs.push(serde_json::json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": format!("u-{}", i % 977),
                "sequenceNumber": s,
                "data": base64::engine::general_purpose::STANDARD.encode(&data),
                "approximateArrivalTimestamp": 1_795_636_517.25 + (i as f64) * 0.001
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("{SHARD}:{s}"),
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/caudal-raw-writer",
            "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/caudal-events"
        }));
        sent.push((s, data));
    }
    (serde_json::json!({ "Records": recs }), sent)
}

async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

fn split_lines(plain: &[u8]) -> Vec<&[u8]> {
    assert_eq!(
        plain.last(),
        Some(&b'\n'),
        "every object ends with a newline"
    );
    plain[..plain.len() - 1].split(|b| *b == b'\n').collect()
}

async fn create_lake_stream(firehose: &aws_sdk_firehose::Client) {
    firehose
        .create_delivery_stream()
        .delivery_stream_name("lake-stream")
        .delivery_stream_type(DeliveryStreamType::DirectPut)
        .extended_s3_destination_configuration(
            ExtendedS3DestinationConfiguration::builder()
                .role_arn("arn:aws:iam::123456789012:role/firehose-lake")
                .bucket_arn("arn:aws:s3:::lake-bucket")
                .prefix("lake/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// Every line Firehose delivered under `lake/`.
async fn lake_lines(s3: &aws_sdk_s3::Client) -> (Vec<Vec<u8>>, usize) {
    let listed = s3
        .list_objects_v2()
        .bucket("lake-bucket")
        .prefix("lake/")
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    let mut lake: Vec<Vec<u8>> = Vec::new();
    for k in &keys {
        let obj = get(s3, "lake-bucket", k).await;
        lake.extend(split_lines(&obj).into_iter().map(<[u8]>::to_vec));
    }
    (lake, keys.len())
}

fn ctx_for(secs: u64) -> Context {
    let mut ctx = Context::default();
    ctx.deadline = u64::try_from(
        (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(secs))
            .as_millis(),
    )
    .unwrap();
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_round_trip_through_s3_and_firehose() {
    let moto = testkit::Moto::start(None).expect("moto_server (MOTO_SERVER or PATH)");
    let sdk = moto.sdk_config().await;
    // The clients the function gets in Lambda (SDK retries off, per-attempt timeouts), with
    // path-style S3 for moto: a ~6 MB batch must fit those timeouts.
    let s3 = clients::s3(&sdk, &ClientOptions::EMULATOR);
    let firehose = clients::firehose(&sdk, &ClientOptions::EMULATOR);
    for bucket in ["raw-bucket", "lake-bucket"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    create_lake_stream(&firehose).await;

    let mut config = Config::new("raw-bucket");
    config.firehose_stream = Some("lake-stream".into());
    let state = State::new(
        config,
        s3.clone(),
        firehose,
        clients::sqs(&sdk, &ClientOptions::EMULATOR),
    );

    let (event, sent) = build_event();
    let bytes_in: usize = sent.iter().map(|(_, d)| d.len()).sum();
    assert!(bytes_in > 5_000_000, "a ~6 MB batch: {bytes_in}");
    let out = invoke(&state, event, ctx_for(120)).await.unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));

    // The raw object, read back record by record.
    let key = format!(
        "raw/dt=2026-11-25/hr=19/{SHARD}/{:0>64}-{:0>64}.ndjson.zst",
        sent[0].0,
        sent[RECORDS - 1].0
    );
    let head = s3
        .head_object()
        .bucket("raw-bucket")
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/zstd"));
    assert_eq!(head.content_encoding(), None);
    let meta = head.metadata().unwrap();
    assert_eq!(
        meta["record-count"],
        (RECORDS - INVALID_AT.len()).to_string()
    );
    assert_eq!(meta["invalid-count"], INVALID_AT.len().to_string());
    assert_eq!(meta["first-seq"], sent[0].0);
    assert_eq!(meta["last-seq"], sent[RECORDS - 1].0);

    let body = get(&s3, "raw-bucket", &key).await;
    let plain = caudal_core::codec::RAW_DEFAULT
        .decompress_capped(&body, 64 << 20)
        .unwrap();
    let raw_lines = split_lines(&plain);
    let valid: Vec<&(String, Vec<u8>)> = sent
        .iter()
        .enumerate()
        .filter(|(i, _)| !INVALID_AT.contains(i))
        .map(|(_, r)| r)
        .collect();
    assert_eq!(raw_lines.len(), valid.len());
    for (n, (line, (s, data))) in raw_lines.iter().zip(&valid).enumerate() {
        let parsed = RawLine::parse(line).unwrap_or_else(|e| panic!("line {n}: {e}"));
        assert_eq!(parsed.kinesis.sequence_number, s.as_str(), "line {n}");
        assert_eq!(parsed.kinesis.shard_id, SHARD);
        assert_eq!(parsed.envelope.get().as_bytes(), &data[..], "line {n}");
    }
    println!(
        "raw object: {} records, {} bytes in, {} compressed ({:.1}x)",
        raw_lines.len(),
        bytes_in,
        body.len(),
        plain.len() as f64 / body.len() as f64
    );

    // The invalid records, with every byte.
    let invalid_key = key.replacen("raw/", "raw-invalid/", 1);
    let body = get(&s3, "raw-bucket", &invalid_key).await;
    let plain_invalid = caudal_core::codec::RAW_DEFAULT
        .decompress_capped(&body, 1 << 20)
        .unwrap();
    let bad = split_lines(&plain_invalid);
    assert_eq!(bad.len(), INVALID_AT.len());
    for (line, &i) in bad.iter().zip(&INVALID_AT) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(v["kinesis"]["sequence_number"], sent[i].0.as_str());
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data_b64"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, sent[i].1);
    }

    // What Firehose delivered to its S3 destination: every valid line, nothing else.
    let (mut lake, objects) = lake_lines(&s3).await;
    assert!(objects > 0);
    let mut expected: Vec<Vec<u8>> = raw_lines.iter().map(|l| l.to_vec()).collect();
    expected.sort();
    lake.sort();
    assert_eq!(lake.len(), expected.len(), "{objects} lake objects");
    assert!(lake == expected, "the lake holds exactly the raw lines");
    println!("lake: {objects} objects (one per PutRecordBatch)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_lake_defers_to_sqs_and_the_retry_fills_it_from_the_archive() {
    let moto = testkit::Moto::start(None).expect("moto_server (MOTO_SERVER or PATH)");
    let sdk = moto.sdk_config().await;
    let s3 = clients::s3(&sdk, &ClientOptions::EMULATOR);
    let firehose = clients::firehose(&sdk, &ClientOptions::EMULATOR);
    let sqs = clients::sqs(&sdk, &ClientOptions::EMULATOR);
    for bucket in ["raw-bucket", "lake-bucket"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let queue_url = sqs
        .create_queue()
        .queue_name("lake-retry")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let mut config = Config::new("raw-bucket");
    config.firehose_stream = Some("lake-stream".into());
    config.lake_retry_queue = Some(queue_url.clone());
    let state = State::new(config, s3.clone(), firehose.clone(), sqs.clone());

    // The delivery stream does not exist yet: Firehose refuses every call.
    let (event, sent) = build_event_of(300);
    let out = invoke(&state, event, ctx_for(60)).await.unwrap();
    assert_eq!(
        out,
        serde_json::json!({"batchItemFailures": []}),
        "the archive does not wait for the lake"
    );
    let key = format!(
        "raw/dt=2026-11-25/hr=19/{SHARD}/{:0>64}-{:0>64}.ndjson.zst",
        sent[0].0, sent[299].0
    );
    let plain = caudal_core::codec::RAW_DEFAULT
        .decompress_capped(&get(&s3, "raw-bucket", &key).await, 64 << 20)
        .unwrap();
    let raw_lines = split_lines(&plain);
    assert_eq!(raw_lines.len(), 299, "one record of 300 is invalid");

    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let messages = received.messages();
    assert_eq!(messages.len(), 1, "one message for the one raw object");
    let body = messages[0].body().unwrap();
    let retry = raw_writer::lake::LakeRetry::parse(body).unwrap();
    assert_eq!(retry.key, key);
    assert_eq!(retry.lines, vec![[1, 299]]);
    assert_eq!(retry.error.as_deref(), Some("ResourceNotFoundException"));

    // The lake is back: the message, as the SQS event source would deliver it.
    create_lake_stream(&firehose).await;
    let event = serde_json::json!({"Records": [{
        "messageId": messages[0].message_id().unwrap(),
        "receiptHandle": messages[0].receipt_handle().unwrap(),
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": messages[0].md5_of_body().unwrap_or_default(),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:lake-retry",
        "awsRegion": "us-east-1"
    }]});
    let out = invoke(&state, event, ctx_for(60)).await.unwrap();
    assert_eq!(out, serde_json::json!({"batchItemFailures": []}));
    let (mut lake, _) = lake_lines(&s3).await;
    let mut expected: Vec<Vec<u8>> = raw_lines.iter().map(|l| l.to_vec()).collect();
    expected.sort();
    lake.sort();
    assert!(
        lake == expected,
        "the lake holds exactly the raw lines, once"
    );
}
