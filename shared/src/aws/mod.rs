//! Thin AWS adapters: the only place in `shared` that imports the SDK.
//!
//! Each adapter converts between domain types and SDK types and classifies SDK errors into
//! [`crate::retry::CallError`] (keeping the service's error code and message) so the retry code
//! in [`crate::retry`] decides what to resend.

pub mod firehose;
pub mod kinesis;
pub mod redshift;
pub mod s3;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::retry::CallError;

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
