//! Through the proxy, concurrent PutRecords on one shard keep every record (moto alone loses
//! some: it hands out duplicate sequence numbers under concurrency).

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_kinesis_writes_through_the_proxy_lose_nothing() {
    let moto = testkit::Moto::start(None).expect("moto_server must be installed");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = caudal_local::shutdown::channel();
    let server = tokio::spawn(caudal_local::motoproxy::serve(
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
    let mut data = std::collections::HashSet::new();
    loop {
        let out = kinesis
            .get_records()
            .shard_iterator(&it)
            .limit(10_000)
            .send()
            .await
            .unwrap();
        if out.records().is_empty() {
            break;
        }
        for r in out.records() {
            data.insert(r.data().as_ref().to_vec());
        }
        it = out.next_shard_iterator().unwrap().to_owned();
    }
    assert_eq!(
        data.len(),
        8 * 5 * 200,
        "every record is in the stream exactly once"
    );
    trigger.fire();
    server.await.unwrap().unwrap();
}
