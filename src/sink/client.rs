//! One request to a destination: PutRecords (Kinesis) or PutRecordBatch (Firehose).

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::interceptors::context::Output;
use rand::rngs::SmallRng;

use super::kpl::Entry;
use super::retry::{ErrorClass, Failure, classify};
use super::wire::{self, Expect, Wire};
use crate::config::PartitionKeyOption;

/// A destination client bound to one stream.
#[derive(Clone)]
pub enum SinkClient {
    Kinesis {
        client: aws_sdk_kinesis::Client,
        stream: String,
        key: PartitionKeyOption,
    },
    Firehose {
        client: aws_sdk_firehose::Client,
        stream: String,
    },
    /// Unit tests of the batcher and the sender: an in-memory destination with faults.
    #[cfg(test)]
    Memory(std::sync::Arc<super::memory::MemorySink>),
}

/// The failed entries of a request that was answered: (index in the request, failure).
pub type EntryFailures = Vec<(usize, Failure)>;

/// What an answered request says: the failed entries, and the shard each Kinesis entry was
/// stored in (empty for Firehose).
#[derive(Debug, Default)]
pub struct PutResult {
    pub failures: EntryFailures,
    /// The shard each entry was stored on, when asked for (empty otherwise).
    pub shards: Vec<Option<String>>,
}

impl SinkClient {
    /// Send `entries` in one request. `Ok` holds the entries that failed (empty: all accepted);
    /// `Err` means the request as a whole failed and nothing is known to have been accepted.
    /// `shards`: also say where each entry was stored (a string per record: only when needed).
    pub async fn put(&self, entries: &[Entry], rng: &mut SmallRng, shards: bool) -> Result<PutResult, Failure> {
        match self {
            SinkClient::Kinesis { client, stream, key } => {
                let body = wire::put_records_body(stream, entries, key, rng);
                let expect = Expect { array: "Records", sent: entries.len(), shards };
                let (call, answer) = Wire::new(body, expect, || {
                    let out = aws_sdk_kinesis::operation::put_records::PutRecordsOutput::builder();
                    Output::erase(out.set_records(Some(Vec::new())).build().expect("records are set"))
                });
                // The SDK is given no records: `Wire` swaps our body in and reads a 2xx answer.
                let out = client
                    .put_records()
                    .stream_name(stream)
                    .set_records(Some(Vec::new()))
                    .customize()
                    .interceptor(call)
                    .send()
                    .await;
                match out {
                    Ok(_) => taken(&answer),
                    Err(e) => Err(request_failure(e)),
                }
            }
            #[cfg(test)]
            SinkClient::Memory(sink) => sink.put(entries).await,
            SinkClient::Firehose { client, stream } => {
                let body = wire::put_record_batch_body(stream, entries);
                let expect = Expect { array: "RequestResponses", sent: entries.len(), shards: false };
                let (call, answer) = Wire::new(body, expect, || {
                    let out = aws_sdk_firehose::operation::put_record_batch::PutRecordBatchOutput::builder();
                    let out = out.failed_put_count(0).set_request_responses(Some(Vec::new()));
                    Output::erase(out.build().expect("fields are set"))
                });
                let out = client
                    .put_record_batch()
                    .delivery_stream_name(stream)
                    .set_records(Some(Vec::new()))
                    .customize()
                    .interceptor(call)
                    .send()
                    .await;
                match out {
                    Ok(_) => taken(&answer),
                    Err(e) => Err(request_failure(e)),
                }
            }
        }
    }
}

/// What `Wire` read from a 2xx answer.
fn taken(answer: &wire::Answer) -> Result<PutResult, Failure> {
    answer.lock().unwrap().take().unwrap_or_else(|| {
        Err(Failure {
            class: ErrorClass::Transient,
            code: "InvalidResponse".into(),
            message: "the answer was accepted but not read".into(),
        })
    })
}

pub fn request_failure<E, R>(e: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus + 'static,
{
    let text = error_chain(&e);
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status_code();
            let code = e.code().unwrap_or("").to_string();
            let message = e.message().map(str::to_string).unwrap_or(text);
            Failure { class: classify(&code, Some(status)), code, message }
        }
        SdkError::TimeoutError(_) => Failure { class: ErrorClass::Transient, code: "Timeout".into(), message: text },
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            Failure { class: ErrorClass::Transient, code: "Timeout".into(), message: text }
        }
        // The server's certificate is not trusted: a person must act (no retry fixes it).
        SdkError::DispatchFailure(_) if untrusted_certificate(&text) => {
            Failure { class: ErrorClass::Fatal, code: "CertificateNotTrusted".into(), message: text }
        }
        // Refused: the request never left. Any other I/O error may have cut the answer to a
        // request the destination processed.
        SdkError::DispatchFailure(d) if d.is_io() && refused(&e) => {
            Failure { class: ErrorClass::Transient, code: "ConnectionRefused".into(), message: text }
        }
        SdkError::DispatchFailure(d) if d.is_io() => {
            Failure { class: ErrorClass::Transient, code: "ConnectionError".into(), message: text }
        }
        SdkError::ResponseError(_) => {
            Failure { class: ErrorClass::Transient, code: "ResponseError".into(), message: text }
        }
        _ if let Some(c) = credentials_error(&e) => {
            use aws_credential_types::provider::error::CredentialsError as C;
            // No provider, or a provider set up wrong: a person must act. A provider that failed
            // or timed out (instance metadata or STS briefly unreachable) may work next time.
            let class = match c {
                C::CredentialsNotLoaded(_) | C::InvalidConfiguration(_) => ErrorClass::Fatal,
                _ => ErrorClass::Transient,
            };
            Failure { class, code: "CredentialsError".into(), message: text }
        }
        SdkError::DispatchFailure(_) => {
            Failure { class: ErrorClass::Transient, code: "DispatchFailure".into(), message: text }
        }
        _ => Failure { class: ErrorClass::Fatal, code: "RequestError".into(), message: text },
    }
}

/// Whether a connection failed because the server's certificate chain is not trusted (rustls:
/// `invalid peer certificate: UnknownIssuer`, or no trust anchors at all).
fn untrusted_certificate(text: &str) -> bool {
    text.contains("invalid peer certificate") || text.contains("UnknownIssuer")
}

/// Whether the connection was refused (nothing was sent).
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cur = err.source();
    }
    false
}

/// Whether a request that failed this way may still have been processed by the destination:
/// its records are sent again and may arrive twice. A 2xx answer we cannot read
/// (`InvalidResponse`) most likely stored them.
pub fn outcome_unknown(f: &Failure) -> bool {
    matches!(f.code.as_str(), "Timeout" | "ResponseError" | "ConnectionError" | "InvalidResponse")
}

/// The credentials provider's error behind a request that could not be signed, if that is why.
fn credentials_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a aws_credential_types::provider::error::CredentialsError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref() {
            return Some(c);
        }
        cur = err.source();
    }
    None
}

/// "a: b: c" from an error and its sources, skipping repeats (the SDK nests the same text).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let t = err.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The HTTP status of a raw response, whatever its type.
pub trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::error::CredentialsError;
    use aws_credential_types::provider::{ProvideCredentials, future};
    use aws_sdk_kinesis::config::{BehaviorVersion, Region};

    #[derive(Debug)]
    struct Failing(fn() -> CredentialsError);

    impl ProvideCredentials for Failing {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err((self.0)()))
        }
    }

    async fn put_with(provider: Failing) -> Failure {
        let conf = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(provider)
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .build();
        let client = aws_sdk_kinesis::Client::from_conf(conf);
        let entry = aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
            .data(aws_sdk_kinesis::primitives::Blob::new(b"x".to_vec()))
            .partition_key("k")
            .build()
            .unwrap();
        let e = client.put_records().stream_name("s").records(entry).send().await.expect_err("no credentials");
        request_failure(e)
    }

    /// Credential errors are told apart by type, not by the words of their message: none found
    /// is for a person to fix, a provider that failed this time is retried.
    #[tokio::test]
    async fn credential_errors_by_kind() {
        let none = put_with(Failing(|| CredentialsError::not_loaded("no provider in the chain had any"))).await;
        assert_eq!((none.class, none.code.as_str()), (ErrorClass::Fatal, "CredentialsError"), "{none:?}");
        let bad = put_with(Failing(|| CredentialsError::invalid_configuration("profile x has no role_arn"))).await;
        assert_eq!(bad.class, ErrorClass::Fatal, "{bad:?}");
        let flaky = put_with(Failing(|| CredentialsError::provider_error("instance metadata answered 500"))).await;
        assert_eq!((flaky.class, flaky.code.as_str()), (ErrorClass::Transient, "CredentialsError"), "{flaky:?}");
        let slow = put_with(Failing(|| CredentialsError::provider_timed_out(std::time::Duration::from_secs(5)))).await;
        assert_eq!(slow.class, ErrorClass::Transient, "{slow:?}");
    }
}
