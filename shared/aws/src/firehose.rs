//! Firehose adapter: `PutRecordBatch` with per-entry partial-failure handling.
//!
//! PutRecordBatch answers HTTP 200 even when some entries were not accepted: `FailedPutCount` says
//! how many, and each response entry (in request order) carries either a `RecordId` or an
//! `ErrorCode`/`ErrorMessage`. This adapter maps every entry to an [`EntryResult`] and lets
//! [`caudal_core::retry::send_partial`] resend only the failed entries, with backoff and jitter, within
//! the caller's deadline. Callers keep each request and record within the Firehose limits of
//! [`caudal_core::limits`] (see [`caudal_core::batching::chunk`]).

use aws_sdk_firehose::Client;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::{PutRecordBatchResponseEntry, Record};
use bytes::Bytes;
use tokio::time::Instant;

use caudal_core::retry::{CallError, EntryResult, PartialOutcome, RetryPolicy, send_partial};

/// Whether a per-entry error code is transient. Firehose reports `ServiceUnavailableException`
/// and `InternalFailure` per entry; KMS-backed streams add `KMS.ThrottlingException`-style codes.
pub fn is_retryable_entry_code(code: &str) -> bool {
    crate::is_retryable_code(code) || code.contains("Throttl") || code.contains("Unavailable")
}

/// Map one response entry to its result; the record id is what Firehose returns on success.
pub fn entry_result(entry: &PutRecordBatchResponseEntry) -> EntryResult<String> {
    match entry.error_code() {
        Some(code) if !code.is_empty() => EntryResult::Failed(CallError {
            retryable: is_retryable_entry_code(code),
            code: code.to_owned(),
            message: entry.error_message().unwrap_or_default().to_owned(),
        }),
        _ => EntryResult::Ok(entry.record_id().unwrap_or_default().to_owned()),
    }
}

/// Send `records` to `stream`, resending only failed entries until all are accepted, an entry
/// fails permanently, the policy's attempts are spent or `deadline` would pass.
///
/// The outcome has one result per record, in input order. A record reported as failed may still
/// have been accepted if its call was abandoned at the deadline: treat failures as "not known to
/// be written" (at-least-once), never as "certainly not written".
pub async fn put_record_batch(
    client: &Client,
    stream: &str,
    records: &[Bytes],
    policy: &RetryPolicy,
    deadline: Instant,
) -> PartialOutcome<String> {
    send_partial(records.len(), policy, deadline, |indices| async move {
        let mut call = client.put_record_batch().delivery_stream_name(stream);
        for &i in &indices {
            // Blob wraps `Bytes`: a resend clones a reference count, not the data.
            let data = records.get(i).cloned().unwrap_or_default();
            let record = Record::builder()
                .data(Blob::new(data))
                .build()
                .map_err(|e| CallError {
                    retryable: false,
                    code: "ConstructionFailure".into(),
                    message: e.to_string(),
                })?;
            call = call.records(record);
        }
        let out = call.send().await.map_err(|e| crate::call_error(&e))?;
        if out.failed_put_count() > 0 {
            tracing::debug!(
                failed = out.failed_put_count(),
                sent = indices.len(),
                "firehose partial failure"
            );
        }
        Ok(out.request_responses().iter().map(entry_result).collect())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: Option<&str>) -> PutRecordBatchResponseEntry {
        let b = PutRecordBatchResponseEntry::builder();
        match code {
            Some(c) => b.error_code(c).error_message("nope").build(),
            None => b.record_id("r-1").build(),
        }
    }

    #[test]
    fn entries_map_to_results() {
        assert_eq!(entry_result(&entry(None)), EntryResult::Ok("r-1".into()));
        for code in [
            "ServiceUnavailableException",
            "InternalFailure",
            "ThrottlingException",
            "KMS.ThrottlingException",
        ] {
            match entry_result(&entry(Some(code))) {
                EntryResult::Failed(e) => {
                    assert!(e.retryable, "{code} should be retryable");
                    assert_eq!(e.code, code);
                    assert_eq!(e.message, "nope");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        match entry_result(&entry(Some("KMS.AccessDeniedException"))) {
            EntryResult::Failed(e) => assert!(!e.retryable),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits_match_the_service() {
        use caudal_core::limits::{
            FIREHOSE_BATCH_MAX_BYTES, FIREHOSE_BATCH_MAX_RECORDS, FIREHOSE_RECORD_MAX_BYTES,
        };
        assert_eq!(FIREHOSE_RECORD_MAX_BYTES, 1_024_000);
        assert_eq!(FIREHOSE_BATCH_MAX_BYTES, 4_194_304);
        assert_eq!(FIREHOSE_BATCH_MAX_RECORDS, 500);
    }
}
