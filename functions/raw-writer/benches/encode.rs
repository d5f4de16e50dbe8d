//! Encoding benchmark for the raw writer, with criterion (`cargo bench -p raw-writer --bench
//! encode`, part of `make bench`).
//!
//! 1. Throughput: a 10,000-record (~5 MB) batch through [`encode_batch`] (envelope check + raw
//!    line + streaming compression) versus the codec alone compressing the very same NDJSON
//!    bytes, for the default (zstd level 1), zstd level 3 and gzip levels 6 and 1; plus
//!    Firehose packing. Prints MB/s of record data against the target (≥ 200 MB/s per core with the
//!    default codec) and encode / codec; the default's figures go to `cost/measured.yaml`.
//! 2. Peak memory: a child process decodes a ~6 MB, 10,000-record Lambda payload and runs the
//!    real handler on it (S3 and Firehose answered by mocks, so requests are still serialized),
//!    then reports `VmHWM` from `/proc/self/status`.

use std::fmt::Write as _;
use std::time::Duration;

use aws_sdk_firehose::operation::put_record_batch::PutRecordBatchOutput;
use aws_sdk_firehose::types::PutRecordBatchResponseEntry;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use base64::Engine as _;
use bytes::Bytes;
use caudal_core::codec::{Codec, RAW_DEFAULT};
use caudal_core::envelope::{EventRef, RequestMeta, encode};
use caudal_core::retry::CallError;
use criterion::{Criterion, Throughput};
use lambda_runtime::{Context, LambdaEvent};
use raw_writer::encode::encode_batch;
use raw_writer::event::RawWriterEvent;
use raw_writer::forward::{BatchLines, PackLimits, Sink, forward, plan};
use raw_writer::input::{KinesisBatchEvent, group};
use raw_writer::{Config, State, handler};
use testkit::bench::{mean_ns, record_measured, report};

const RECORDS: usize = 10_000;

/// A deterministic, varied envelope of roughly `400 + pad` bytes.
fn envelope(i: usize, rng: &mut u64, pad: usize) -> Vec<u8> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let kinds = ["page_view", "click", "search", "add_to_cart", "purchase"];
    let kind = kinds[(next() % 5) as usize];
    let note: String = (0..pad)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz      "[(next() % 32) as usize]))
        .collect();
    let raw = format!(
        r#"{{"type":"{kind}","user_id":"u-{}","session":"{:016x}","url":"https://shop.example.com/c/{}/p/{}","ts":"2026-11-25T19:55:{:02}.{:03}Z","sku":"SKU-{:06}","qty":{},"price":{}.{:02},"note":"{note}","n":{i}}}"#,
        next() % 50_000,
        next(),
        next() % 40,
        next() % 9_000,
        next() % 60,
        next() % 1_000,
        next() % 999_999,
        1 + next() % 4,
        next() % 500,
        next() % 100,
    );
    let meta = RequestMeta {
        request_id: format!("K7x{:013x}=", next() % (1 << 52)),
        received_at: Some(caudal_core::envelope::format_timestamp(
            time::macros::datetime!(2026-11-25 19:55:17.042 UTC),
        )),
        source_ip: Some(format!("203.0.113.{}", next() % 255)),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0".into()),
        principal: None,
        stage: Some("$default".into()),
        protocol: None,
    };
    encode(
        &EventRef {
            id: &format!("0193a7c2-5f1e-7d40-9b1a-{i:012x}"),
            id_generated: false,
            event_type: kind,
            raw: raw.as_bytes(),
            event_time: None,
        },
        &meta,
    )
}

/// The Lambda payload (JSON text) of a 10,000-record batch of about `target` bytes of record
/// data, written directly as text so the generator stays small next to what is measured.
fn payload(target: usize) -> (String, usize) {
    let mut probe = 1u64;
    let base: usize = (0..100)
        .map(|i| envelope(i, &mut probe, 0).len())
        .sum::<usize>()
        / 100;
    let pad = (target / RECORDS).saturating_sub(base);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = String::with_capacity(RECORDS * (pad + 1_200));
    let mut bytes_in = 0;
    out.push_str("{\"Records\":[");
    for i in 0..RECORDS {
        let data = envelope(i, &mut rng, pad);
        bytes_in += data.len();
        let seq = format!(
            "49659732041357081734587521{:030}",
            9_471_837_450_129_318_200u128 + i as u128 * 1_000_003
        );
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"kinesis":{{"kinesisSchemaVersion":"1.0","partitionKey":"u-{}","sequenceNumber":"{seq}","data":"{}","approximateArrivalTimestamp":{:.3}}},"eventSource":"aws:kinesis","eventVersion":"1.0","eventID":"shardId-000000000007:{seq}","eventName":"aws:kinesis:record","awsRegion":"us-east-1","eventSourceARN":"arn:aws:kinesis:us-east-1:123456789012:stream/caudal-events"}}"#,
            i % 977,
            base64::engine::general_purpose::STANDARD.encode(&data),
            1_795_636_517.25 + i as f64 * 0.001
        );
    }
    out.push_str("]}");
    (out, bytes_in)
}

fn mb_s(bytes: usize, ns: f64) -> f64 {
    bytes as f64 / 1e6 / (ns / 1e9)
}

/// The codecs compared: the default first.
const CODECS: [Codec; 4] = [
    RAW_DEFAULT,
    Codec::Zstd { level: 3 },
    Codec::Gzip { level: 6 },
    Codec::Gzip { level: 1 },
];

/// A codec's name in the results (`zstd-1`, `gzip-6`).
fn label(codec: Codec) -> String {
    match codec {
        Codec::Zstd { level } => format!("zstd-{level}"),
        Codec::Gzip { level } => format!("gzip-{level}"),
    }
}

struct NullSink;

impl Sink for NullSink {
    async fn put(
        &self,
        records: &[Bytes],
        _: tokio::time::Instant,
    ) -> (Vec<Result<(), CallError>>, u32) {
        (records.iter().map(|_| Ok(())).collect(), 1)
    }
}

fn throughput(c: &mut Criterion) {
    let (text, bytes_in) = payload(5_000_000);
    let event = KinesisBatchEvent::parse_str(&text).expect("payload parses");
    drop(text);
    let refs = event.records();
    let batches = group(&refs).expect("valid batch");
    let batch = &batches[0];
    // The exact NDJSON the raw object holds, for the codec-alone comparison.
    let mut plain = Vec::new();
    for r in &batch.records {
        raw_writer::encode::write_raw_line(&mut plain, r).expect("in-memory write");
    }
    println!(
        "batch: {} records, {:.2} MB of record data, {:.2} MB of NDJSON",
        batch.records.len(),
        bytes_in as f64 / 1e6,
        plain.len() as f64 / 1e6
    );
    let mut sizes = Vec::new();
    let mut g = c.benchmark_group("raw-writer");
    g.throughput(Throughput::Bytes(bytes_in as u64));
    for codec in CODECS {
        let name = label(codec);
        let enc = encode_batch(&batch.records, codec).expect("encode");
        assert_eq!(enc.raw_bytes as usize, plain.len());
        sizes.push((name.clone(), enc.bytes_written()));
        g.bench_function(format!("encode-{name}"), |b| {
            b.iter(|| encode_batch(&batch.records, codec).expect("encode"));
        });
        g.bench_function(format!("codec-{name}"), |b| {
            b.iter(|| codec.compress(&plain).expect("compress"));
        });
    }
    let enc = encode_batch(&batch.records, RAW_DEFAULT).expect("encode");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    g.bench_function("firehose-pack", |b| {
        b.iter(|| {
            let p = plan(&enc.line_sizes, PackLimits::default()).expect("plan");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let lines = BatchLines {
                batch,
                encoded: &enc,
            };
            rt.block_on(forward(&NullSink, &lines, &p, deadline))
        });
    });
    g.finish();
    c.final_summary();

    println!("\nraw-writer, MB/s of record data on one core:");
    println!(
        "{:<8} {:>12} {:>12} {:>14} {:>10} {:>8}",
        "codec", "encode MB/s", "codec MB/s", "encode/codec", "size", "ratio"
    );
    for (name, written) in &sizes {
        let (Some(full), Some(alone)) = (
            mean_ns("raw-writer", &format!("encode-{name}")),
            mean_ns("raw-writer", &format!("codec-{name}")),
        ) else {
            continue;
        };
        println!(
            "{name:<8} {:>12.1} {:>12.1} {:>13.2}x {:>10} {:>7.1}x",
            mb_s(bytes_in, full),
            mb_s(bytes_in, alone),
            full / alone,
            written,
            plain.len() as f64 / *written as f64
        );
    }
    let default = label(RAW_DEFAULT);
    if let Some(full) = mean_ns("raw-writer", &format!("encode-{default}")) {
        println!(
            "{}",
            report(
                &format!("raw-writer encode, default codec ({default})"),
                mb_s(bytes_in, full),
                "MB/s",
                200.0,
                true,
            )
        );
        let written = sizes.first().map_or(0, |(_, w)| *w);
        let measured = [
            (
                "raw_writer_us_per_kb",
                full / 1000.0 / (bytes_in as f64 / 1024.0),
            ),
            ("compression_ratio", written as f64 / plain.len() as f64),
        ];
        if let Err(e) = record_measured(&measured) {
            eprintln!("cost/measured.yaml not updated: {e}");
        }
    }
    if let Some(ns) = mean_ns("raw-writer", "firehose-pack") {
        println!(
            "firehose packing (plan + build): {:.1} MB/s",
            mb_s(plain.len(), ns)
        );
    }
}

/// Child process: decode a ~6 MB payload and run the real handler with mocked clients.
fn rss_child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s3_rule = mock!(aws_sdk_s3::Client::put_object)
        .then_output(|| PutObjectOutput::builder().e_tag("\"e\"").build());
    let fh_rule = mock!(aws_sdk_firehose::Client::put_record_batch).then_compute_output(|req| {
        PutRecordBatchOutput::builder()
            .failed_put_count(0)
            .set_request_responses(Some(
                req.records()
                    .iter()
                    .map(|_| {
                        PutRecordBatchResponseEntry::builder()
                            .record_id("r")
                            .build()
                    })
                    .collect(),
            ))
            .build()
            .expect("output")
    });
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&s3_rule]);
    let fh = mock_client!(aws_sdk_firehose, RuleMode::MatchAny, [&fh_rule]);
    // Firehose accepts everything: nothing is deferred, the queue is never called.
    let sqs_rule = mock!(aws_sdk_sqs::Client::send_message).then_output(|| {
        aws_sdk_sqs::operation::send_message::SendMessageOutput::builder()
            .message_id("m")
            .build()
    });
    let sqs = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&sqs_rule]);
    let mut config = Config::new("raw-bucket");
    config.firehose_stream = Some("lake".into());
    config.lake_retry_queue = Some("https://sqs.local/1/lake-retry".into());
    let state = State::new(config, s3, fh, sqs);
    let start_kb = testkit::bench::vm_hwm_kib(None);
    let (text, bytes_in) = payload(6_000_000);
    let payload_kb = testkit::bench::vm_hwm_kib(None);
    // The dispatching reader the runtime uses: one pass, base64 decoded record by record.
    let event = RawWriterEvent::parse_str(&text).expect("payload parses");
    let parsed_kb = testkit::bench::vm_hwm_kib(None);
    drop(text);
    let resp = rt
        .block_on(handler(&state, LambdaEvent::new(event, Context::default())))
        .expect("handler");
    assert_eq!(
        serde_json::to_value(&resp).expect("response"),
        serde_json::json!({"batchItemFailures": []})
    );
    assert_eq!(sqs_rule.num_calls(), 0);
    let end_kb = testkit::bench::vm_hwm_kib(None);
    println!(
        "peak RSS for a {:.2} MB, {RECORDS}-record batch through the handler: VmHWM {:.1} MB \
         (process start {:.1} MB; +payload text {:.1} MB; +decoded event {:.1} MB; \
         +encode/S3/Firehose {:.1} MB); S3 calls {}, Firehose calls {}",
        bytes_in as f64 / 1e6,
        end_kb as f64 / 1024.0,
        start_kb as f64 / 1024.0,
        payload_kb.saturating_sub(start_kb) as f64 / 1024.0,
        parsed_kb.saturating_sub(payload_kb) as f64 / 1024.0,
        end_kb.saturating_sub(parsed_kb) as f64 / 1024.0,
        s3_rule.num_calls(),
        fh_rule.num_calls(),
    );
    if let Err(e) = record_measured(&[("raw_writer_peak_mb", end_kb as f64 / 1024.0)]) {
        eprintln!("cost/measured.yaml not updated: {e}");
    }
}

fn main() {
    if testkit::bench::is_rss_child() {
        rss_child();
        return;
    }
    let mut c = Criterion::default()
        .output_directory(&testkit::bench::criterion_dir())
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    throughput(&mut c);
    // Peak RSS is per process: measure it in a fresh one.
    testkit::bench::run_rss_child();
}
