//! # caudal-aws: the thin AWS adapters
//!
//! The only crate of caudal's core that imports the AWS SDK. Each adapter converts between
//! [`caudal_core`]'s plain types and the SDK's, and classifies SDK errors into
//! [`caudal_core::retry::CallError`] (keeping the service's error code and message), so the
//! retry code in [`caudal_core::retry`] decides what to resend.
//!
//! | module | service | speaks in |
//! |---|---|---|
//! | [`clients`] | all: the one client factory | `SdkConfig` |
//! | [`kinesis`] | Kinesis PutRecords | [`caudal_core::stream`] |
//! | [`firehose`] | Firehose PutRecordBatch | [`caudal_core::limits`] |
//! | [`s3`] | S3 get/put (conditional writes) | bytes |
//! | [`sqs`] | SQS send | message bodies |
//! | [`redshift`] | Redshift Data API | [`caudal_core::warehouse`] |
//!
//! [`clients`] is the one place the functions' clients are built (in each `main` and in the local
//! stack): the SDK's own retries off, so [`caudal_core::retry`] is the only retry loop, and every
//! attempt bounded by a per-service timeout that [`call_error`] reports as a retryable `Timeout`.

pub mod clients;
pub mod firehose;
pub mod kinesis;
pub mod redshift;
pub mod s3;
pub mod sqs;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use caudal_core::retry::CallError;

/// Error codes that mean "slow down / try again" across the services we call.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "LimitExceededException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServiceUnavailableError",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "InternalServerException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "KMSThrottlingException",
    "ActiveStatementsExceededException",
];

/// Whether a service error code (from a response or a per-entry result) is transient.
pub fn is_retryable_code(code: &str) -> bool {
    RETRYABLE_CODES.contains(&code)
}

/// Classify an SDK error, keeping the service's code and message.
pub fn call_error<E>(err: &SdkError<E, HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) => CallError {
            retryable: true,
            code: "Timeout".into(),
            message: "the request timed out".into(),
        },
        SdkError::DispatchFailure(e) => CallError {
            retryable: true,
            code: "DispatchFailure".into(),
            message: format!("{e:?}"),
        },
        SdkError::ResponseError(_) => CallError {
            retryable: true,
            code: "ResponseError".into(),
            message: "the response could not be read".into(),
        },
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let code = e.code().unwrap_or("Unknown").to_owned();
            let status = ctx.raw().status().as_u16();
            CallError {
                retryable: is_retryable_code(&code) || status >= 500 || status == 429,
                message: e.message().unwrap_or_default().to_owned(),
                code,
            }
        }
        other => CallError {
            retryable: false,
            code: "ConstructionFailure".into(),
            message: format!("{other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::get_object::GetObjectError;

    use super::*;

    #[test]
    fn a_per_attempt_timeout_is_a_retryable_call_error() {
        let err: SdkError<GetObjectError, HttpResponse> =
            SdkError::timeout_error("operation attempt timeout");
        let e = call_error(&err);
        assert!(e.retryable);
        assert_eq!(e.code, "Timeout");
    }

    #[test]
    fn a_request_that_cannot_be_built_is_permanent() {
        let err: SdkError<GetObjectError, HttpResponse> =
            SdkError::construction_failure("missing bucket");
        assert!(!call_error(&err).retryable);
    }
}
