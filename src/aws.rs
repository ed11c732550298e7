//! AWS SDK set-up: region, credentials and endpoints from agent.json over the SDK's default chain.
//! The SDK's own retries are off: the sender owns retries (one layer, see `sink::sender`).

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

use aws_runtime::auth::PayloadSigningOverride;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::config::{AgentConfig, Destination};

/// Hashes the request body for SigV4 with aws-lc's assembly SHA-256 instead of the SDK's
/// portable one. Signing every byte sent is the largest CPU cost of shipping lines (measured:
/// 39 % of the agent's CPU without SHA extensions); the signature is the same.
#[derive(Debug)]
struct FastPayloadHash;

impl Intercept for FastPayloadHash {
    fn name(&self) -> &'static str {
        "FastPayloadHash"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(body) = context.request().body().bytes() {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
            let hex = crate::record::key::hex(digest.as_ref());
            cfg.interceptor_state().store_put(PayloadSigningOverride::Precomputed(hex));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error(
        "no AWS region for {service}: set `{key}` in the configuration, or AWS_REGION in the environment, or run on EC2"
    )]
    NoRegion { service: &'static str, key: &'static str },
    #[error("`{key}` is set but `{other}` is not: static credentials need both")]
    HalfCredentials { key: &'static str, other: &'static str },
}

/// Time allowed for one PutMetricData attempt.
const CLOUDWATCH_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Clients for the destinations the flows use.
#[derive(Clone)]
pub struct Clients {
    pub kinesis: Option<aws_sdk_kinesis::Client>,
    pub kinesis_region: Option<String>,
    pub firehose: Option<aws_sdk_firehose::Client>,
    pub firehose_region: Option<String>,
    /// For the identity check: only where it means something (AWS itself, or `sts.endpoint`
    /// given), so that a run against local emulators never calls out.
    pub sts: Option<aws_sdk_sts::Client>,
    /// For the agent's metrics, when `cloudwatch::wanted`.
    pub cloudwatch: Option<crate::metrics::cloudwatch::Target>,
}

/// `kinesis.endpoint` may be a bare host (`kinesis.eu-west-1.amazonaws.com`), as in Java.
pub fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") { endpoint.to_string() } else { format!("https://{endpoint}") }
}

/// The region in an AWS endpoint host such as `kinesis.eu-west-1.amazonaws.com`.
pub fn region_from_endpoint(endpoint: &str) -> Option<String> {
    let host = endpoint.split("://").last()?.split(['/', ':']).next()?;
    let mut parts = host.split('.');
    let _service = parts.next()?;
    let region = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    let aws = rest.first().is_some_and(|p| *p == "amazonaws" || *p == "api");
    (aws && region.contains('-')).then(|| region.to_string())
}

pub async fn build(cfg: &AgentConfig) -> Result<Clients, AwsSetupError> {
    let aws = &cfg.aws;
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::disabled()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(aws.connection_timeout)
                .operation_attempt_timeout(aws.socket_timeout)
                .build(),
        );
    match (&aws.access_key_id, &aws.secret_access_key) {
        (Some(id), Some(secret)) => {
            loader = loader.credentials_provider(Credentials::new(id, &secret.0, None, None, "agent.json"));
        }
        (Some(_), None) => {
            return Err(AwsSetupError::HalfCredentials { key: "awsAccessKeyId", other: "awsSecretAccessKey" });
        }
        (None, Some(_)) => {
            return Err(AwsSetupError::HalfCredentials { key: "awsSecretAccessKey", other: "awsAccessKeyId" });
        }
        (None, None) => {}
    }
    if let Some(app) = aws.user_agent.as_deref().and_then(|ua| AppName::new(ua.to_string()).ok()) {
        loader = loader.app_name(app);
    }
    let mut base = loader.load().await;

    if let Some(arn) = &aws.assume_role_arn {
        base = assume_role(base, arn, cfg).await;
    }

    let uses_kinesis = cfg.flows.iter().any(|f| matches!(f.destination, Destination::Kinesis { .. }));
    let uses_firehose = cfg.flows.iter().any(|f| matches!(f.destination, Destination::Firehose { .. }));
    let default_region = base.region().map(|r| r.to_string());

    let mut clients = Clients {
        kinesis: None,
        kinesis_region: None,
        firehose: None,
        firehose_region: None,
        sts: None,
        cloudwatch: None,
    };
    if crate::metrics::cloudwatch::wanted(cfg).is_ok() {
        // Java uses us-east-1 unless `cloudwatch.endpoint` is set; we honour the region chain
        // first (metrics land where the agent runs) and keep us-east-1 as the last resort.
        let region = aws
            .cloudwatch_endpoint
            .as_deref()
            .and_then(region_from_endpoint)
            .or_else(|| default_region.clone())
            .unwrap_or_else(|| "us-east-1".to_string());
        // Its own attempt timeout: a slow CloudWatch only delays the next metrics.
        let mut b =
            aws_sdk_cloudwatch::config::Builder::from(&base).region(Region::new(region.clone())).timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(aws.connection_timeout.min(CLOUDWATCH_ATTEMPT_TIMEOUT))
                    .operation_attempt_timeout(CLOUDWATCH_ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(ep) = &aws.cloudwatch_endpoint {
            b = b.endpoint_url(endpoint_url(ep));
        }
        clients.cloudwatch = Some(crate::metrics::cloudwatch::Target {
            client: aws_sdk_cloudwatch::Client::from_conf(b.build()),
            region,
        });
    }
    if uses_kinesis {
        let region = aws
            .kinesis_region
            .clone()
            .or_else(|| aws.kinesis_endpoint.as_deref().and_then(region_from_endpoint))
            .or_else(|| default_region.clone())
            .or_else(|| aws.kinesis_endpoint.as_ref().map(|_| "us-east-1".to_string()))
            .ok_or(AwsSetupError::NoRegion { service: "Kinesis", key: "kinesis.region" })?;
        let mut b = aws_sdk_kinesis::config::Builder::from(&base)
            .region(Region::new(region.clone()))
            .interceptor(FastPayloadHash);
        if let Some(ep) = &aws.kinesis_endpoint {
            b = b.endpoint_url(endpoint_url(ep));
        }
        clients.kinesis = Some(aws_sdk_kinesis::Client::from_conf(b.build()));
        clients.kinesis_region = Some(region);
    }
    if uses_firehose {
        // Java uses us-east-1 unless `firehose.endpoint` is set (its issue #207); we honour the
        // region chain first and keep us-east-1 as the last resort.
        let region = aws
            .firehose_region
            .clone()
            .or_else(|| aws.firehose_endpoint.as_deref().and_then(region_from_endpoint))
            .or_else(|| default_region.clone())
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut b = aws_sdk_firehose::config::Builder::from(&base)
            .region(Region::new(region.clone()))
            .interceptor(FastPayloadHash);
        if let Some(ep) = &aws.firehose_endpoint {
            b = b.endpoint_url(endpoint_url(ep));
        }
        clients.firehose = Some(aws_sdk_firehose::Client::from_conf(b.build()));
        clients.firehose_region = Some(region);
    }
    let custom_endpoints = aws.kinesis_endpoint.is_some() || aws.firehose_endpoint.is_some();
    if aws.sts_endpoint.is_some() || !custom_endpoints {
        let region = default_region
            .or_else(|| clients.kinesis_region.clone())
            .or_else(|| clients.firehose_region.clone())
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut b = aws_sdk_sts::config::Builder::from(&base).region(Region::new(region));
        if let Some(ep) = &aws.sts_endpoint {
            b = b.endpoint_url(endpoint_url(ep));
        }
        clients.sts = Some(aws_sdk_sts::Client::from_conf(b.build()));
    }
    Ok(clients)
}

/// Wrap the credentials of `base` in STS AssumeRole (session `AWSKinesisAgent`, as in Java).
async fn assume_role(base: SdkConfig, arn: &str, cfg: &AgentConfig) -> SdkConfig {
    let aws = &cfg.aws;
    let mut sts = base.clone().into_builder();
    if let Some(ep) = &aws.sts_endpoint {
        sts = sts.endpoint_url(endpoint_url(ep));
    }
    if base.region().is_none() {
        let region = aws
            .kinesis_region
            .clone()
            .or_else(|| aws.sts_endpoint.as_deref().and_then(region_from_endpoint))
            .unwrap_or_else(|| "us-east-1".to_string());
        sts = sts.region(Region::new(region));
    }
    let sts = sts.build();
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(arn).session_name("AWSKinesisAgent").configure(&sts);
    if let Some(ext) = &aws.assume_role_external_id {
        builder = builder.external_id(ext);
    }
    let provider = match base.credentials_provider() {
        Some(p) => builder.build_from_provider(p).await,
        None => builder.build().await,
    };
    base.into_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The precomputed body hash must give exactly the signature the SDK computes itself
    /// (no emulator checks signatures, so this is the test that real AWS would accept it).
    #[tokio::test]
    async fn fast_payload_hash_signs_identically() {
        use aws_sdk_kinesis::primitives::Blob;
        use aws_sdk_kinesis::types::PutRecordsRequestEntry;
        use std::time::{Duration, UNIX_EPOCH};
        /// Proves the override is used at all: a wrong hash must change the signature.
        #[derive(Debug)]
        struct WrongHash;
        impl Intercept for WrongHash {
            fn name(&self) -> &'static str {
                "WrongHash"
            }
            fn modify_before_signing(
                &self,
                _: &mut BeforeTransmitInterceptorContextMut<'_>,
                _: &RuntimeComponents,
                cfg: &mut ConfigBag,
            ) -> Result<(), BoxError> {
                cfg.interceptor_state().store_put(PayloadSigningOverride::Precomputed("00".repeat(32)));
                Ok(())
            }
        }
        async fn authorization(fast: Option<bool>, body: Vec<u8>) -> String {
            let (http, rx) = aws_smithy_http_client::test_util::capture_request(None);
            let mut b = aws_sdk_kinesis::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("eu-west-1"))
                .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", Some("token".into()), None, "t"))
                .time_source(aws_smithy_async::time::StaticTimeSource::new(
                    UNIX_EPOCH + Duration::from_secs(1_795_000_000),
                ))
                .http_client(http)
                .retry_config(RetryConfig::disabled());
            match fast {
                Some(true) => b = b.interceptor(FastPayloadHash),
                Some(false) => b = b.interceptor(WrongHash),
                None => {}
            }
            let client = aws_sdk_kinesis::Client::from_conf(b.build());
            let entry = PutRecordsRequestEntry::builder().data(Blob::new(body)).partition_key("k").build().unwrap();
            let _ = client.put_records().stream_name("s").records(entry).send().await;
            let req = rx.expect_request();
            req.headers().get("authorization").expect("signed").to_string()
        }
        for body in [b"hello\n".to_vec(), vec![0xff; 70_000], Vec::new()] {
            let sdk = authorization(None, body.clone()).await;
            assert!(sdk.contains("Signature="));
            assert_eq!(sdk, authorization(Some(true), body.clone()).await);
            assert_ne!(sdk, authorization(Some(false), body).await);
        }
    }

    #[test]
    fn endpoints_and_regions() {
        assert_eq!(endpoint_url("kinesis.eu-west-1.amazonaws.com"), "https://kinesis.eu-west-1.amazonaws.com");
        assert_eq!(endpoint_url("http://127.0.0.1:4567"), "http://127.0.0.1:4567");
        assert_eq!(region_from_endpoint("https://kinesis.eu-west-1.amazonaws.com").as_deref(), Some("eu-west-1"));
        assert_eq!(region_from_endpoint("firehose.us-east-2.amazonaws.com").as_deref(), Some("us-east-2"));
        assert_eq!(region_from_endpoint("http://127.0.0.1:4567"), None);
        assert_eq!(region_from_endpoint("http://localhost:4567"), None);
    }
}
