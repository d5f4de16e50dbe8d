//! Through the proxy, concurrent PutRecords on one shard keep every record (moto alone loses
//! some: it hands out duplicate sequence numbers under concurrency).

use aws_sdk_kinesis::primitives::Blob;
use std::collections::HashSet;
use std::sync::Arc;

use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_kinesis_writes_through_the_proxy_lose_nothing() {
    let moto = testkit::Moto::start(None).expect("moto_server must be installed");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = caudal_local::shutdown::channel();
    let server = tokio::spawn(caudal_local::emulators::motoproxy::serve(
        listener,
        moto.endpoint(),
        shutdown.wait(),
    ));
    let kinesis = aws_sdk_kinesis::Client::new(&testkit::sdk_config_for(&endpoint).await);
    kinesis
        .create_stream()
        .stream_name("s")
        .shard_count(1)
        .send()
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for t in 0..8 {
        let k = kinesis.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..5 {
                let entries = (0..200)
                    .map(|i| {
                        PutRecordsRequestEntry::builder()
                            .data(Blob::new(format!("{t}-{b}-{i}")))
                            .partition_key(format!("{t}-{b}-{i}"))
                            .build()
                            .unwrap()
                    })
                    .collect();
                let out = k
                    .put_records()
                    .stream_name("s")
                    .set_records(Some(entries))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(out.failed_record_count(), Some(0));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let data: HashSet<Vec<u8>> = stream_records(&kinesis).await.into_iter().collect();
    assert_eq!(
        data.len(),
        8 * 5 * 200,
        "every record is in the stream exactly once"
    );
    trigger.fire();
    server.await.unwrap().unwrap();
}

/// On the chaos listener, the functions' own clients (SDK retries off) meet AWS's error shapes
/// and classify them as the services' errors; a per-record failure really was not written, an
/// error after a write really was written, and nothing else reaches moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_have_the_services_shapes_and_tell_the_truth() {
    use aws_sdk_kinesis::error::ProvideErrorMetadata as _;
    use caudal_aws::clients::{self, ClientOptions};
    use caudal_local::emulators::chaos::{Chaos, ChaosConfig, Fault};

    let moto = testkit::Moto::start(None).expect("moto_server must be installed");
    let (trigger, shutdown) = caudal_local::shutdown::channel();
    let proxy = caudal_local::emulators::motoproxy::Proxy::new(moto.endpoint()).unwrap();
    let chaos = Arc::new(Chaos::new(ChaosConfig {
        s3: 0.5,
        kinesis: 0.3,
        seed: 5,
        ..ChaosConfig::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(caudal_local::emulators::motoproxy::serve_proxy(
        listener,
        proxy,
        Some(chaos.clone()),
        shutdown.wait(),
    ));
    let sdk = testkit::sdk_config_for(&endpoint).await;
    let kinesis = clients::kinesis(&sdk, &ClientOptions::EMULATOR);
    let s3 = clients::s3(&sdk, &ClientOptions::EMULATOR);
    kinesis
        .create_stream()
        .stream_name("s")
        .shard_count(1)
        .send()
        .await
        .unwrap();
    s3.create_bucket()
        .bucket("chaos-bucket")
        .send()
        .await
        .unwrap();
    chaos.arm();

    // Kinesis: what each call said was written is what the stream holds.
    let mut expected = HashSet::new();
    let mut codes = HashSet::new();
    for call in 0..40 {
        let data: Vec<String> = (0..20).map(|i| format!("{call}-{i}")).collect();
        let entries = data
            .iter()
            .map(|d| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(d.clone()))
                    .partition_key(d)
                    .build()
                    .unwrap()
            })
            .collect();
        match kinesis
            .put_records()
            .stream_name("s")
            .set_records(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                let failed = out
                    .records()
                    .iter()
                    .filter(|r| r.error_code().is_some())
                    .count();
                assert_eq!(out.failed_record_count(), Some(failed as i32));
                assert_eq!(out.records().len(), 20);
                for (d, r) in data.iter().zip(out.records()) {
                    match r.error_code() {
                        Some(code) => {
                            assert!(caudal_aws::is_retryable_code(code), "{code}");
                            assert!(r.sequence_number().is_none());
                            codes.insert(code.to_owned());
                        }
                        None => {
                            assert!(r.sequence_number().is_some());
                            expected.insert(d.clone());
                        }
                    }
                }
            }
            Err(e) => {
                let classified = caudal_aws::call_error(&e);
                assert!(classified.retryable, "{classified}");
                codes.insert(classified.code.clone());
                match e.code() {
                    Some("ProvisionedThroughputExceededException") => {}
                    // Written, but the caller was told otherwise: at least once.
                    Some("InternalFailure") => expected.extend(data),
                    other => panic!("unexpected {other:?}: {classified}"),
                }
            }
        }
    }
    for code in ["ProvisionedThroughputExceededException", "InternalFailure"] {
        assert!(codes.contains(code), "{code} never injected: {codes:?}");
    }
    assert!(chaos.stats.get(Fault::KinesisFailedRecords) > 0);
    let stored: HashSet<String> = stream_records(&kinesis)
        .await
        .into_iter()
        .map(|d| String::from_utf8(d).unwrap())
        .collect();
    assert_eq!(
        stored, expected,
        "the answers tell exactly what was written"
    );

    // S3: 503 SlowDown / ServiceUnavailable (nothing written) or 500 after the write.
    let mut s3_codes = HashSet::new();
    for n in 0..40 {
        let key = format!("k{n}");
        let put = s3
            .put_object()
            .bucket("chaos-bucket")
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
            .send()
            .await;
        chaos.disarm();
        let exists = s3
            .head_object()
            .bucket("chaos-bucket")
            .key(&key)
            .send()
            .await
            .is_ok();
        chaos.arm();
        match put {
            Ok(_) => assert!(exists),
            Err(e) => {
                let classified = caudal_aws::call_error(&e);
                assert!(classified.retryable, "{classified}");
                match classified.code.as_str() {
                    "SlowDown" | "ServiceUnavailable" => assert!(!exists, "refused, not written"),
                    "InternalError" => assert!(exists, "written before the error"),
                    other => panic!("unexpected {other}"),
                }
                s3_codes.insert(classified.code);
            }
        }
    }
    assert_eq!(s3_codes.len(), 3, "{s3_codes:?}");
    trigger.fire();
    server.await.unwrap().unwrap();
}

/// Every record's data in stream `s`'s only shard, from the trim horizon.
async fn stream_records(kinesis: &aws_sdk_kinesis::Client) -> Vec<Vec<u8>> {
    let mut it = kinesis
        .get_shard_iterator()
        .stream_name("s")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator()
        .unwrap()
        .to_owned();
    let mut data = Vec::new();
    loop {
        let out = kinesis
            .get_records()
            .shard_iterator(&it)
            .limit(10_000)
            .send()
            .await
            .unwrap();
        if out.records().is_empty() {
            return data;
        }
        data.extend(out.records().iter().map(|r| r.data().as_ref().to_vec()));
        it = out.next_shard_iterator().unwrap().to_owned();
    }
}
