//! S3 adapter: whole-object put and get with the shared retry policy.
//!
//! Objects the pipeline writes are bounded (a raw batch ≤ 6 MB before compression, a staging part
//! a few MB), so a single PutObject with a known length is used; no multipart state to clean up.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::time::Instant;

use caudal_core::retry::{CallError, RetryPolicy, retry_call};

/// An object to write.
#[derive(Debug, Clone)]
pub struct PutRequest<'a> {
    /// Bucket name.
    pub bucket: &'a str,
    /// Object key.
    pub key: &'a str,
    /// The object's bytes.
    pub body: Bytes,
    /// Content-Type header.
    pub content_type: &'a str,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: &'a [(String, String)],
    /// Write only if no object has the key (`If-None-Match: *`, S3 conditional write): a
    /// concurrent writer that got there first makes this a permanent `PreconditionFailed` (or
    /// `ConditionalRequestConflict`) error, see [`lost_conditional_write`].
    pub if_absent: bool,
}

/// Whether `e` says a conditional write lost to an object already there (412) or to a
/// concurrent conditional write of the same key (409).
pub fn lost_conditional_write(e: &CallError) -> bool {
    e.code == "PreconditionFailed" || e.code == "ConditionalRequestConflict"
}

/// What S3 said about a written object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// The object's ETag (quotes removed).
    pub etag: String,
    /// Calls made, including retries.
    pub attempts: u32,
}

/// Write one object, retrying transient failures (503 SlowDown, 5xx, timeouts) until `deadline`.
pub async fn put_object(
    client: &Client,
    req: &PutRequest<'_>,
    policy: &RetryPolicy,
    deadline: Instant,
) -> Result<PutResult, CallError> {
    let (result, attempts) = retry_call(policy, deadline, || async {
        let mut call = client
            .put_object()
            .bucket(req.bucket)
            .key(req.key)
            .content_type(req.content_type)
            .content_length(i64::try_from(req.body.len()).unwrap_or(i64::MAX))
            .body(ByteStream::from(req.body.clone()));
        for (k, v) in req.metadata {
            call = call.metadata(k, v);
        }
        if req.if_absent {
            call = call.if_none_match("*");
        }
        call.send().await.map_err(|e| crate::call_error(&e))
    })
    .await;
    let out = result?;
    Ok(PutResult {
        etag: out.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
        attempts,
    })
}

/// A fetched object.
#[derive(Debug, Clone)]
pub struct Object {
    /// The object's bytes.
    pub body: Bytes,
    /// ETag (quotes removed).
    pub etag: String,
}

/// Read a whole object, retrying transient failures until `deadline`. A missing object is a
/// permanent `NoSuchKey` error.
pub async fn get_object(
    client: &Client,
    bucket: &str,
    key: &str,
    policy: &RetryPolicy,
    deadline: Instant,
) -> Result<Object, CallError> {
    let (result, _) = retry_call(policy, deadline, || async {
        let out = client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| crate::call_error(&e))?;
        let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_owned();
        let body = out.body.collect().await.map_err(|e| CallError {
            retryable: true,
            code: "BodyReadFailure".into(),
            message: e.to_string(),
        })?;
        Ok::<_, CallError>(Object {
            body: body.into_bytes(),
            etag,
        })
    })
    .await;
    result
}
