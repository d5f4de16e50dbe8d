//! Kinesis adapter: PutRecords with per-record outcomes.
//!
//! [`put_records`] chunks records by the PutRecords limits measured on what is sent (data +
//! partition key bytes, [`caudal_core::batching::chunk`]), sends the chunks concurrently, and lets
//! [`caudal_core::retry::send_partial`] resend only the failed entries of each chunk. A PutRecords call
//! "succeeds" with HTTP 200 even when some records failed: each result entry, in request order,
//! has either a shard id + sequence number or an `ErrorCode`
//! (`ProvisionedThroughputExceededException`, `InternalFailure`, KMS errors), which
//! [`entry_results`] turns into [`EntryResult`]s (throttling and internal failures retryable).

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use futures_util::future::join_all;
use tokio::time::Instant;

use caudal_core::batching::chunk;
use caudal_core::limits::KINESIS_RECORD_MAX_BYTES;
use caudal_core::retry::{CallError, EntryOutcome, EntryResult, RetryPolicy, send_partial};
use caudal_core::stream::{PUT_RECORDS_LIMITS, PutOutcome, Record, Written};

/// Convert a PutRecords response into one [`EntryResult`] per sent entry, in request order.
pub fn entry_results(out: &PutRecordsOutput) -> Vec<EntryResult<Written>> {
    out.records()
        .iter()
        .map(
            |r| match (r.error_code(), r.shard_id(), r.sequence_number()) {
                (Some(code), _, _) => EntryResult::Failed(CallError {
                    retryable: crate::is_retryable_code(code),
                    code: code.to_owned(),
                    message: r.error_message().unwrap_or_default().to_owned(),
                }),
                (None, Some(shard), Some(seq)) => EntryResult::Ok(Written {
                    shard_id: shard.to_owned(),
                    sequence_number: seq.to_owned(),
                }),
                // Neither an error nor a position: do not claim it was written.
                (None, _, _) => EntryResult::Failed(CallError {
                    retryable: true,
                    code: "MalformedResponse".into(),
                    message: "result entry without error code or sequence number".into(),
                }),
            },
        )
        .collect()
}

/// Write `records` to `stream` (a name, or an ARN starting with `arn:`), retrying failed entries
/// with `policy` until `deadline`. Records larger than one Kinesis record may be fail
/// permanently with `RecordTooLarge` without being sent; callers should refuse them earlier.
pub async fn put_records(
    client: &Client,
    stream: &str,
    records: &[Record],
    policy: &RetryPolicy,
    deadline: Instant,
) -> PutOutcome {
    let mut results: Vec<Option<EntryOutcome<Written>>> = vec![None; records.len()];
    let mut sendable = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if r.size() > KINESIS_RECORD_MAX_BYTES {
            results[i] = Some(Err(CallError {
                retryable: false,
                code: "RecordTooLarge".into(),
                message: format!(
                    "record is {} bytes, more than {KINESIS_RECORD_MAX_BYTES}",
                    r.size()
                ),
            }));
        } else {
            sendable.push(i);
        }
    }
    let sizes: Vec<usize> = sendable.iter().map(|&i| records[i].size()).collect();
    // Every size is ≤ 1 MiB < 5 MiB, so chunking cannot fail; keep the error path honest anyway.
    let ranges = chunk(&sizes, PUT_RECORDS_LIMITS)
        .unwrap_or_else(|_| (0..sendable.len()).map(|i| i..i + 1).collect());
    let chunks = ranges.into_iter().map(|range| {
        let members: Vec<usize> = sendable[range].to_vec();
        async move {
            let out = send_partial(members.len(), policy, deadline, |idx| {
                let entries: Result<Vec<PutRecordsRequestEntry>, _> = idx
                    .iter()
                    .map(|&k| {
                        let r = &records[members[k]];
                        PutRecordsRequestEntry::builder()
                            .data(Blob::new(r.data.clone()))
                            .partition_key(&r.partition_key)
                            .build()
                    })
                    .collect();
                async move {
                    let entries = entries.map_err(|e| CallError {
                        retryable: false,
                        code: "ConstructionFailure".into(),
                        message: e.to_string(),
                    })?;
                    let mut call = client.put_records().set_records(Some(entries));
                    call = if stream.starts_with("arn:") {
                        call.stream_arn(stream)
                    } else {
                        call.stream_name(stream)
                    };
                    let out = call.send().await.map_err(|e| crate::call_error(&e))?;
                    Ok(entry_results(&out))
                }
            })
            .await;
            (members, out)
        }
    });
    let mut calls = 0;
    for (members, out) in join_all(chunks).await {
        calls += out.attempts;
        for (k, r) in out.results.into_iter().enumerate() {
            results[members[k]] = Some(r);
        }
    }
    PutOutcome {
        results: results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(CallError::deadline())))
            .collect(),
        calls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::PutRecordsResultEntry;

    #[test]
    fn result_entries_become_entry_results_in_order() {
        let out = PutRecordsOutput::builder()
            .failed_record_count(3)
            .records(
                PutRecordsResultEntry::builder()
                    .shard_id("shardId-000000000000")
                    .sequence_number("1")
                    .build(),
            )
            .records(
                PutRecordsResultEntry::builder()
                    .error_code("ProvisionedThroughputExceededException")
                    .error_message("Rate exceeded")
                    .build(),
            )
            .records(
                PutRecordsResultEntry::builder()
                    .error_code("KMSAccessDeniedException")
                    .build(),
            )
            .records(PutRecordsResultEntry::builder().build())
            .build()
            .unwrap();
        let r = entry_results(&out);
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0],
            EntryResult::Ok(Written {
                shard_id: "shardId-000000000000".into(),
                sequence_number: "1".into()
            })
        );
        match &r[1] {
            EntryResult::Failed(e) => {
                assert!(e.retryable);
                assert_eq!(e.message, "Rate exceeded");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&r[2], EntryResult::Failed(e) if !e.retryable));
        assert!(
            matches!(&r[3], EntryResult::Failed(e) if e.retryable && e.code == "MalformedResponse")
        );
    }
}
