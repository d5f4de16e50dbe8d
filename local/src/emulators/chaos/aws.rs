//! The faults the emulator proxy injects into the functions' S3, Kinesis and Firehose calls, in
//! the services' own shapes, so the SDK classifies them exactly as it would in AWS:
//!
//! | service | whole call | per record |
//! |---|---|---|
//! | S3 (REST-XML) | `503` `<Error><Code>SlowDown</Code>…` or `ServiceUnavailable`, nothing done; on writes also `500 InternalError` after the write went through | — |
//! | Kinesis (JSON 1.1) | `400` `{"__type":"ProvisionedThroughputExceededException",…}`, nothing written; or `500 InternalFailure` after the records were written | HTTP 200, `FailedRecordCount` and `ErrorCode` `ProvisionedThroughputExceededException` / `InternalFailure` on the failed entries, which are **not** written |
//! | Firehose (JSON 1.1) | `500` `{"__type":"ServiceUnavailableException",…}`, nothing delivered | HTTP 200, `FailedPutCount` and `ErrorCode` `ServiceUnavailableException` / `InternalFailure` on the failed entries, which are **not** delivered |
//!
//! A per-record failure is real: the failed entries are taken out of the request before it is
//! forwarded, and the answer is merged back into request order ([`Plan::FailRecords`],
//! [`merge_records`]), so what the caller is told matches what the emulator holds.

use serde_json::{Value, json};

use super::{Chaos, Fault};

/// The account the local stack's resources live in (as moto names it).
const ACCOUNT: &str = "123456789012";

/// An answer the proxy sends instead of (or after) forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canned {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(&'static str, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// The batch APIs whose entries can fail one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchApi {
    /// Kinesis PutRecords (`Records` → `Records`, `FailedRecordCount`).
    KinesisPutRecords,
    /// Firehose PutRecordBatch (`Records` → `RequestResponses`, `FailedPutCount`).
    FirehosePutRecordBatch,
}

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Forward it unchanged and pass the answer on.
    Forward,
    /// Answer this without forwarding.
    Refuse(Canned),
    /// Forward it unchanged, then answer this instead of a success.
    ErrorAfter(Canned),
    /// Forward `body` (the request without the failed entries), then merge the answer with
    /// the error entries at the positions in `failed` (ascending, of `total` entries).
    FailRecords {
        /// Which API.
        api: BatchApi,
        /// The request to forward.
        body: Vec<u8>,
        /// Positions of the failed entries in the original request.
        failed: Vec<(usize, &'static str, String)>,
        /// Entries in the original request.
        total: usize,
    },
}

fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_ascii_uppercase()
}

fn json_error(status: u16, code: &str, message: &str) -> Canned {
    Canned {
        status,
        headers: vec![
            ("content-type", "application/x-amz-json-1.1".to_owned()),
            ("x-amzn-requestid", uuid::Uuid::new_v4().to_string()),
            ("x-amzn-errortype", format!("{code}:")),
        ],
        body: json!({"__type": code, "message": message})
            .to_string()
            .into_bytes(),
    }
}

/// S3's REST-XML error (HEAD answers carry no body).
pub fn s3_error(status: u16, code: &str, message: &str, head: bool) -> Canned {
    let rid = request_id();
    let host_id = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
    };
    let body = if head {
        Vec::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>\
             {message}</Message><RequestId>{rid}</RequestId><HostId>{host_id}</HostId></Error>"
        )
        .into_bytes()
    };
    Canned {
        status,
        headers: vec![
            ("content-type", "application/xml".to_owned()),
            ("x-amz-request-id", rid),
            ("x-amz-id-2", host_id),
        ],
        body,
    }
}

fn stream_name(v: &Value, name_field: &str) -> String {
    v.get(name_field)
        .or_else(|| v.get("StreamARN"))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned()
}

/// Decides what happens to one request of the functions' clients (`target` is its
/// `X-Amz-Target`, absent for S3).
pub fn plan(chaos: &Chaos, method: &str, target: Option<&str>, body: &[u8]) -> Plan {
    if !chaos.is_armed() {
        return Plan::Forward;
    }
    let c = chaos.config();
    match target {
        None => s3_plan(chaos, method),
        Some(t) if t.starts_with("Kinesis_20131202.PutRecord") => {
            if chaos.kinesis_refusing() {
                let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                chaos.stats.add(Fault::KinesisOutageCall, 1);
                return Plan::Refuse(json_error(
                    500,
                    "InternalFailure",
                    &format!(
                        "Internal service failure (stream {}).",
                        stream_name(&v, "StreamName")
                    ),
                ));
            }
            if chaos.roll(c.kinesis) {
                let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let stream = stream_name(&v, "StreamName");
                if chaos.uniform() < 0.25 {
                    chaos.stats.add(Fault::KinesisErrorAfterWrite, 1);
                    return Plan::ErrorAfter(json_error(
                        500,
                        "InternalFailure",
                        "Internal service failure.",
                    ));
                }
                chaos.stats.add(Fault::KinesisThrottledCall, 1);
                return Plan::Refuse(json_error(
                    400,
                    "ProvisionedThroughputExceededException",
                    &format!("Rate exceeded for stream {stream} under account {ACCOUNT}."),
                ));
            }
            if t == "Kinesis_20131202.PutRecords" {
                return records_plan(chaos, c.kinesis, BatchApi::KinesisPutRecords, body);
            }
            Plan::Forward
        }
        Some(t) if t.starts_with("Firehose_20150804.PutRecord") => {
            if chaos.roll(c.firehose) {
                chaos.stats.add(Fault::FirehoseUnavailableCall, 1);
                return Plan::Refuse(json_error(500, "ServiceUnavailableException", "Slow down."));
            }
            if t == "Firehose_20150804.PutRecordBatch" {
                return records_plan(chaos, c.firehose, BatchApi::FirehosePutRecordBatch, body);
            }
            Plan::Forward
        }
        Some(_) => Plan::Forward,
    }
}

fn s3_plan(chaos: &Chaos, method: &str) -> Plan {
    let write = matches!(method, "PUT" | "POST" | "DELETE");
    if write && chaos.outage(super::Outage::S3Writes) {
        chaos.stats.add(Fault::S3Unavailable, 1);
        return Plan::Refuse(s3_error(
            503,
            "SlowDown",
            "Please reduce your request rate.",
            false,
        ));
    }
    if !chaos.roll(chaos.config().s3) {
        return Plan::Forward;
    }
    if write && chaos.uniform() < 0.25 {
        chaos.stats.add(Fault::S3ErrorAfterWrite, 1);
        return Plan::ErrorAfter(s3_error(
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
            false,
        ));
    }
    chaos.stats.add(Fault::S3Unavailable, 1);
    let head = method == "HEAD";
    Plan::Refuse(if chaos.uniform() < 0.5 {
        s3_error(503, "SlowDown", "Please reduce your request rate.", head)
    } else {
        s3_error(
            503,
            "ServiceUnavailable",
            "Service is unable to handle request.",
            head,
        )
    })
}

fn records_plan(chaos: &Chaos, rate: f64, api: BatchApi, body: &[u8]) -> Plan {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return Plan::Forward;
    };
    let total = v
        .get("Records")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let stream = stream_name(&v, "StreamName");
    let mut failed = Vec::new();
    for i in 0..total {
        if !chaos.roll(rate) {
            continue;
        }
        let (code, message) = match (api, chaos.uniform() < 0.75) {
            (BatchApi::KinesisPutRecords, true) => (
                "ProvisionedThroughputExceededException",
                format!("Rate exceeded for shard in stream {stream} under account {ACCOUNT}."),
            ),
            (BatchApi::KinesisPutRecords, false) => {
                ("InternalFailure", "Internal service failure.".to_owned())
            }
            (BatchApi::FirehosePutRecordBatch, true) => {
                ("ServiceUnavailableException", "Slow down.".to_owned())
            }
            (BatchApi::FirehosePutRecordBatch, false) => {
                ("InternalFailure", "Internal service failure.".to_owned())
            }
        };
        failed.push((i, code, message));
    }
    if failed.is_empty() {
        return Plan::Forward;
    }
    let kind = match api {
        BatchApi::KinesisPutRecords => Fault::KinesisFailedRecords,
        BatchApi::FirehosePutRecordBatch => Fault::FirehoseFailedRecords,
    };
    chaos.stats.add(kind, failed.len() as u64);
    if failed.len() == total {
        return Plan::Refuse(Canned {
            status: 200,
            headers: vec![
                ("content-type", "application/x-amz-json-1.1".to_owned()),
                ("x-amzn-requestid", uuid::Uuid::new_v4().to_string()),
            ],
            body: merged(api, &failed, total, Vec::new().into_iter(), Value::Null).into_bytes(),
        });
    }
    if let Some(records) = v.get_mut("Records").and_then(Value::as_array_mut) {
        let mut position = 0usize;
        let mut next_failed = failed.iter().map(|(i, _, _)| *i).peekable();
        records.retain(|_| {
            let keep = next_failed.peek() != Some(&position);
            if !keep {
                next_failed.next();
            }
            position += 1;
            keep
        });
    }
    Plan::FailRecords {
        api,
        body: v.to_string().into_bytes(),
        failed,
        total,
    }
}

fn merged(
    api: BatchApi,
    failed: &[(usize, &'static str, String)],
    total: usize,
    mut upstream: impl Iterator<Item = Value>,
    upstream_answer: Value,
) -> String {
    let mut failed_iter = failed.iter().peekable();
    let mut entries = Vec::with_capacity(total);
    let mut failed_count = 0u64;
    for i in 0..total {
        match failed_iter.peek() {
            Some((pos, code, message)) if *pos == i => {
                entries.push(json!({"ErrorCode": code, "ErrorMessage": message}));
                failed_iter.next();
                failed_count += 1;
            }
            _ => {
                let e = upstream.next().unwrap_or(Value::Null);
                if e.get("ErrorCode").is_some() {
                    failed_count += 1;
                }
                entries.push(e);
            }
        }
    }
    match api {
        BatchApi::KinesisPutRecords => json!({
            "FailedRecordCount": failed_count,
            "Records": entries,
            "EncryptionType": upstream_answer.get("EncryptionType").cloned().unwrap_or(json!("NONE")),
        }),
        BatchApi::FirehosePutRecordBatch => json!({
            "FailedPutCount": failed_count,
            "Encrypted": upstream_answer.get("Encrypted").cloned().unwrap_or(json!(false)),
            "RequestResponses": entries,
        }),
    }
    .to_string()
}

/// The answer to the original request: the upstream answer `body` (to the request without the
/// failed entries) with the error entries put back at their positions. `Err` when the upstream
/// answer does not have one entry per forwarded record (the caller then reports an internal
/// failure rather than guess).
pub fn merge_records(
    api: BatchApi,
    failed: &[(usize, &'static str, String)],
    total: usize,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("upstream answer: {e}"))?;
    let field = match api {
        BatchApi::KinesisPutRecords => "Records",
        BatchApi::FirehosePutRecordBatch => "RequestResponses",
    };
    let entries = v
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| format!("upstream answer has no {field}"))?;
    if entries.len() + failed.len() != total {
        return Err(format!(
            "upstream answered {} entries for {} forwarded records",
            entries.len(),
            total - failed.len()
        ));
    }
    Ok(merged(api, failed, total, entries.into_iter(), v).into_bytes())
}

/// The answer when a merge is impossible: the service's internal error for the whole call.
pub fn internal_failure(api: BatchApi) -> Canned {
    match api {
        BatchApi::KinesisPutRecords => {
            json_error(500, "InternalFailure", "Internal service failure.")
        }
        BatchApi::FirehosePutRecordBatch => {
            json_error(500, "ServiceUnavailableException", "Slow down.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ChaosConfig;
    use super::*;

    fn chaos(config: ChaosConfig) -> Chaos {
        let c = Chaos::new(config);
        c.arm();
        c
    }

    fn kinesis_request(n: usize) -> Vec<u8> {
        let records: Vec<Value> = (0..n)
            .map(|i| json!({"Data": "eA==", "PartitionKey": format!("p{i}")}))
            .collect();
        json!({"StreamName": "s", "Records": records})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn an_outage_refuses_every_kinesis_write_and_nothing_else() {
        let c = chaos(ChaosConfig::default());
        c.set_kinesis_down(true);
        for target in ["Kinesis_20131202.PutRecords", "Kinesis_20131202.PutRecord"] {
            match plan(&c, "POST", Some(target), &kinesis_request(3)) {
                Plan::Refuse(canned) => assert_eq!(canned.status, 500),
                _ => panic!("{target} not refused"),
            }
        }
        assert!(matches!(
            plan(&c, "POST", Some("Kinesis_20131202.GetRecords"), b"{}"),
            Plan::Forward
        ));
        assert!(
            matches!(plan(&c, "PUT", None, b""), Plan::Forward),
            "S3 untouched"
        );
        assert_eq!(c.stats.get(Fault::KinesisOutageCall), 2);
        c.set_kinesis_down(false);
        assert!(matches!(
            plan(
                &c,
                "POST",
                Some("Kinesis_20131202.PutRecords"),
                &kinesis_request(3)
            ),
            Plan::Forward
        ));
    }

    #[test]
    fn per_record_failures_take_the_entries_out_and_put_errors_back_in_order() {
        let c = chaos(ChaosConfig {
            kinesis: 0.3,
            seed: 3,
            ..ChaosConfig::default()
        });
        // Draw until a plan fails some but not all records (the whole-call roll comes first).
        let (body, failed, total) = loop {
            match plan(
                &c,
                "POST",
                Some("Kinesis_20131202.PutRecords"),
                &kinesis_request(10),
            ) {
                Plan::FailRecords {
                    api,
                    body,
                    failed,
                    total,
                } => {
                    assert_eq!(api, BatchApi::KinesisPutRecords);
                    break (body, failed, total);
                }
                _ => continue,
            }
        };
        let forwarded: Value = serde_json::from_slice(&body).unwrap();
        let keys: Vec<&str> = forwarded["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["PartitionKey"].as_str().unwrap())
            .collect();
        let failed_pos: Vec<usize> = failed.iter().map(|f| f.0).collect();
        let expected: Vec<String> = (0..total)
            .filter(|i| !failed_pos.contains(i))
            .map(|i| format!("p{i}"))
            .collect();
        assert_eq!(keys, expected, "failed entries are not forwarded");
        assert_eq!(forwarded["StreamName"], "s");
        // moto's answer for the forwarded records, in order.
        let upstream = json!({"FailedRecordCount": 0, "EncryptionType": "NONE", "Records":
            keys.iter().map(|k| json!({"SequenceNumber": k, "ShardId": "shardId-000000000000"})).collect::<Vec<_>>()});
        let out = merge_records(
            BatchApi::KinesisPutRecords,
            &failed,
            total,
            upstream.to_string().as_bytes(),
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["FailedRecordCount"], failed.len());
        for (i, e) in out["Records"].as_array().unwrap().iter().enumerate() {
            if failed_pos.contains(&i) {
                let code = e["ErrorCode"].as_str().unwrap();
                assert!(
                    code == "ProvisionedThroughputExceededException" || code == "InternalFailure"
                );
                assert!(e.get("SequenceNumber").is_none());
            } else {
                assert_eq!(
                    e["SequenceNumber"],
                    format!("p{i}"),
                    "entry {i} in request order"
                );
            }
        }
        assert_eq!(
            c.stats.get(Fault::KinesisFailedRecords),
            failed.len() as u64
        );
        // An answer with the wrong number of entries is not guessed at.
        assert!(
            merge_records(
                BatchApi::KinesisPutRecords,
                &failed,
                total + 1,
                upstream.to_string().as_bytes()
            )
            .is_err()
        );
    }

    #[test]
    fn the_sdk_reads_the_injected_errors_as_the_services_errors() {
        // Kinesis: the whole-call throttle, read the way aws-sdk-kinesis reads an error.
        let canned = json_error(
            400,
            "ProvisionedThroughputExceededException",
            "Rate exceeded",
        );
        let v: Value = serde_json::from_slice(&canned.body).unwrap();
        assert_eq!(v["__type"], "ProvisionedThroughputExceededException");
        assert!(caudal_aws::is_retryable_code(v["__type"].as_str().unwrap()));
        // S3: the XML error with code, message and request ids.
        let e = s3_error(503, "SlowDown", "Please reduce your request rate.", false);
        let text = String::from_utf8(e.body).unwrap();
        assert!(text.contains("<Code>SlowDown</Code>"));
        assert!(text.contains("<RequestId>"));
        assert!(caudal_aws::is_retryable_code("SlowDown"));
        assert!(s3_error(503, "SlowDown", "x", true).body.is_empty());
        // Firehose: every record failed → HTTP 200 with FailedPutCount = n.
        let c = chaos(ChaosConfig {
            firehose: 1.0,
            ..ChaosConfig::default()
        });
        c.disarm();
        assert_eq!(
            plan(&c, "POST", Some("Firehose_20150804.PutRecordBatch"), b"{}"),
            Plan::Forward,
            "disarmed: nothing injected"
        );
        let all = merged(
            BatchApi::FirehosePutRecordBatch,
            &[(0, "ServiceUnavailableException", "Slow down.".into())],
            1,
            Vec::new().into_iter(),
            Value::Null,
        );
        let v: Value = serde_json::from_str(&all).unwrap();
        assert_eq!(v["FailedPutCount"], 1);
        assert_eq!(
            v["RequestResponses"][0]["ErrorCode"],
            "ServiceUnavailableException"
        );
    }

    #[test]
    fn s3_faults_refuse_or_answer_after_a_write() {
        let c = chaos(ChaosConfig {
            s3: 1.0,
            ..ChaosConfig::default()
        });
        let mut refused = 0;
        let mut after = 0;
        for _ in 0..200 {
            match plan(&c, "PUT", None, b"") {
                Plan::Refuse(r) => {
                    assert_eq!(r.status, 503);
                    refused += 1;
                }
                Plan::ErrorAfter(r) => {
                    assert_eq!(r.status, 500);
                    after += 1;
                }
                other => panic!("{other:?}"),
            }
            assert!(
                matches!(plan(&c, "GET", None, b""), Plan::Refuse(_)),
                "reads are never answered after the fact"
            );
        }
        assert!(refused > 100 && after > 20, "{refused} {after}");
        assert_eq!(c.stats.get(Fault::S3ErrorAfterWrite), after);
    }
}
