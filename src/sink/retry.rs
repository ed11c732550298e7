//! Error classification and backoff. One layer owns retries (the SDK's are off).

use std::time::Duration;

use rand::RngExt;

/// How a failure is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The destination asks us to slow down: back off and retry for ever.
    Throttled,
    /// 5xx, timeouts, connection errors: back off and retry for ever.
    Transient,
    /// Missing stream, access denied, bad credentials, invalid request: a person must act.
    /// Reported at once; the daemon retries at the slowest pace, `--once` gives up.
    Fatal,
}

/// A failed request or record.
#[derive(Debug, Clone)]
pub struct Failure {
    pub class: ErrorClass,
    pub code: String,
    pub message: String,
}

const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "KMSThrottlingException",
    "LimitExceededException",
    "RequestLimitExceeded",
    "SlowDown",
    "ServiceUnavailableException",
    "ServiceUnavailable",
];

/// Expired credentials are retried like a 5xx: providers that rotate them (instance profile,
/// container, assumed role) hand out new ones before or soon after the expiry, and the SDK picks
/// them up; a request signed just before that must not end a `--once` run or wait the slowest
/// backoff. If they are never renewed, the error is reported once and retried (the daemon) or
/// given up after `--give-up-after` (`--once`).
const TRANSIENT: &[&str] = &[
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "ServiceFailure",
    "RequestTimeout",
    "ExpiredTokenException",
    "ExpiredToken",
    "RequestExpired",
];

/// Classify an AWS error code (whole request or per record), with the HTTP status if known.
pub fn classify(code: &str, status: Option<u16>) -> ErrorClass {
    if THROTTLING.contains(&code) || status == Some(429) {
        ErrorClass::Throttled
    } else if TRANSIENT.contains(&code) || status.is_some_and(|s| s >= 500) || (code.is_empty() && status.is_none()) {
        ErrorClass::Transient
    } else {
        ErrorClass::Fatal
    }
}

/// What the user should check for a fatal code.
pub fn hint(code: &str) -> &'static str {
    match code {
        "ResourceNotFoundException" => "check the stream name and the region",
        "AccessDeniedException" | "AccessDenied" => {
            "the credentials lack permission: allow kinesis:PutRecords / firehose:PutRecordBatch on this stream"
        }
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch" => "the credentials are not valid for this endpoint",
        "ExpiredTokenException" | "ExpiredToken" => {
            "the credentials have expired: waiting for the provider to renew them"
        }
        "RequestExpired" => "the request's signing time is too far from the service's: check the clock",
        c if c.starts_with("KMS") => "the stream's KMS key cannot be used: check the key and its policy",
        "ValidationException" | "InvalidArgumentException" => "the request was refused as invalid",
        "CertificateNotTrusted" => {
            "the endpoint's TLS certificate is not trusted: behind a TLS-inspecting proxy, set AWS_CA_BUNDLE (or \
             ca_bundle in the AWS profile) to its CA bundle; otherwise install the system's CA certificates \
             (ca-certificates)"
        }
        "CredentialsError" => {
            "no credentials could be obtained: check the credential chain (instance profile, environment, profile, assumeRoleARN)"
        }
        _ => "see the message",
    }
}

/// Exponential backoff with full jitter: a uniform delay in [0, min(max, initial × 2^(attempt-1))].
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    if cap.is_zero() {
        return cap;
    }
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify("ProvisionedThroughputExceededException", Some(400)), ErrorClass::Throttled);
        assert_eq!(classify("InternalFailure", Some(500)), ErrorClass::Transient);
        assert_eq!(classify("Whatever", Some(503)), ErrorClass::Transient);
        assert_eq!(classify("ResourceNotFoundException", Some(400)), ErrorClass::Fatal);
        assert_eq!(classify("AccessDeniedException", Some(400)), ErrorClass::Fatal);
        assert_eq!(classify("KMSAccessDeniedException", None), ErrorClass::Fatal);
        assert_eq!(classify("KMSThrottlingException", None), ErrorClass::Throttled);
        assert_eq!(classify("ExpiredTokenException", Some(400)), ErrorClass::Transient);
        assert_eq!(classify("UnrecognizedClientException", Some(400)), ErrorClass::Fatal);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let i = Duration::from_millis(100);
        let m = Duration::from_millis(1000);
        for attempt in 1..40 {
            let d = backoff(attempt, i, m);
            assert!(d <= m);
            assert!(d <= i * 2u32.pow((attempt - 1).min(10)));
        }
        assert_eq!(backoff(3, Duration::ZERO, m), Duration::ZERO);
    }
}
