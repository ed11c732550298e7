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

use std::collections::HashMap;

use crate::config::{AgentConfig, AwsSettings, Destination, FlowConfig};

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
            sign_payload_hash(cfg, body);
        }
        Ok(())
    }
}

/// Gives SigV4 the SHA-256 of `body` (aws-lc's), so that the signer does not hash it itself.
pub fn sign_payload_hash(cfg: &mut ConfigBag, body: &[u8]) {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    cfg.interceptor_state().store_put(PayloadSigningOverride::Precomputed(crate::types::key::hex(digest.as_ref())));
}

#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error(
        "no AWS region for {service}: set `{key}` in the configuration, or AWS_REGION in the environment, or run on EC2"
    )]
    NoRegion { service: &'static str, key: &'static str },
    #[error("`{key}` is set but `{other}` is not: static credentials need both")]
    HalfCredentials { key: &'static str, other: &'static str },
    #[error("the CA bundle {0}")]
    CaBundle(#[from] crate::service::trust::CaBundleError),
}

/// Time allowed for one PutMetricData attempt.
const CLOUDWATCH_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Clients for the destinations the flows use: one per distinct (kind, region, endpoint, role),
/// shared by the flows that have the same.
#[derive(Clone)]
pub struct Clients {
    destinations: HashMap<DestinationKey, DestinationClient>,
    /// For the identity check: only where it means something (AWS itself, or `sts.endpoint`
    /// given), so that a run against local emulators never calls out.
    pub sts: Option<aws_sdk_sts::Client>,
    /// For the agent's metrics, when `cloudwatch::wanted`.
    pub cloudwatch: Option<crate::metrics::cloudwatch::Target>,
    /// The top-level settings, which flows override.
    settings: AwsSettings,
    /// The region of the SDK's chain (AWS_REGION, profile, instance metadata).
    default_region: Option<String>,
    /// The credentials found, before any role is assumed.
    source: SdkConfig,
    /// SDK configurations by role (`None`: the credentials found; the top-level role is there
    /// from the start).
    roles: HashMap<Option<Role>, SdkConfig>,
}

/// A role to assume: ARN and external id.
type Role = (String, Option<String>);

/// What a destination client is made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestinationKey {
    pub firehose: bool,
    pub region: String,
    pub endpoint: Option<String>,
    pub role: Option<Role>,
}

#[derive(Clone)]
enum DestinationClient {
    Kinesis(aws_sdk_kinesis::Client),
    Firehose(aws_sdk_firehose::Client),
}

/// A flow's destination settings: its own (`FlowAws`) over the top-level ones. A flow's region
/// goes with its own endpoint first: a flow endpoint naming a region wins over the top-level
/// `kinesis.region`.
pub fn destination_key(
    global: &AwsSettings,
    flow: &FlowConfig,
    default_region: Option<&str>,
) -> Result<DestinationKey, AwsSetupError> {
    let own = &flow.aws;
    let firehose = matches!(flow.destination, Destination::Firehose { .. });
    let (own_endpoint, endpoint) = if firehose {
        (&own.firehose_endpoint, &global.firehose_endpoint)
    } else {
        (&own.kinesis_endpoint, &global.kinesis_endpoint)
    };
    let endpoint_used = own_endpoint.clone().or_else(|| endpoint.clone());
    let region = configured_region(global, flow)
        .map(|(r, _)| r)
        .or_else(|| default_region.map(str::to_string))
        // Java uses us-east-1 for Firehose unless `firehose.endpoint` is set (its issue #207);
        // for Kinesis only with an endpoint (an emulator).
        .or_else(|| (firehose || endpoint_used.is_some()).then(|| "us-east-1".to_string()))
        .ok_or(AwsSetupError::NoRegion { service: "Kinesis", key: "kinesis.region" })?;
    let role = match (&own.assume_role_arn, &global.assume_role_arn) {
        (Some(arn), _) => Some((arn.clone(), own.assume_role_external_id.clone())),
        (None, Some(arn)) => {
            Some((arn.clone(), own.assume_role_external_id.clone().or_else(|| global.assume_role_external_id.clone())))
        }
        (None, None) => None,
    };
    Ok(DestinationKey { firehose, region, endpoint: endpoint_used, role })
}

/// The region the configuration gives a flow, and the key it comes from: the flow's own
/// region, its own endpoint's, the top-level region, the top-level endpoint's. `None`: the AWS
/// region chain decides (AWS_REGION, the profile, instance metadata).
pub fn configured_region(global: &AwsSettings, flow: &FlowConfig) -> Option<(String, &'static str)> {
    let own = &flow.aws;
    let candidates: [(&Option<String>, bool, &'static str); 4] = match flow.destination {
        Destination::Kinesis { .. } => [
            (&own.kinesis_region, false, "the flow's kinesis.region"),
            (&own.kinesis_endpoint, true, "the flow's kinesis.endpoint"),
            (&global.kinesis_region, false, "kinesis.region"),
            (&global.kinesis_endpoint, true, "kinesis.endpoint"),
        ],
        Destination::Firehose { .. } => [
            (&own.firehose_region, false, "the flow's firehose.region"),
            (&own.firehose_endpoint, true, "the flow's firehose.endpoint"),
            (&global.firehose_region, false, "firehose.region"),
            (&global.firehose_endpoint, true, "firehose.endpoint"),
        ],
    };
    candidates.into_iter().find_map(|(value, endpoint, key)| {
        let v = value.as_deref()?;
        let region = if endpoint { region_from_endpoint(v)? } else { v.to_string() };
        Some((region, key))
    })
}

impl Clients {
    fn key(&self, flow: &FlowConfig) -> Option<DestinationKey> {
        destination_key(&self.settings, flow, self.default_region.as_deref()).ok()
    }

    /// The Kinesis client of a Kinesis flow (built by `build` or `add_flows`), and its region.
    pub fn kinesis(&self, flow: &FlowConfig) -> Option<(aws_sdk_kinesis::Client, String)> {
        let key = self.key(flow)?;
        match self.destinations.get(&key)? {
            DestinationClient::Kinesis(c) => Some((c.clone(), key.region)),
            DestinationClient::Firehose(_) => None,
        }
    }

    /// The Firehose client of a Firehose flow, and its region.
    pub fn firehose(&self, flow: &FlowConfig) -> Option<(aws_sdk_firehose::Client, String)> {
        let key = self.key(flow)?;
        match self.destinations.get(&key)? {
            DestinationClient::Firehose(c) => Some((c.clone(), key.region)),
            DestinationClient::Kinesis(_) => None,
        }
    }

    /// The region a flow sends to (for labels), if it resolves.
    pub fn region(&self, flow: &FlowConfig) -> Option<String> {
        self.key(flow).map(|k| k.region)
    }

    /// Builds the clients `flows` need that are not there yet (roles are assumed here).
    pub async fn add_flows(&mut self, flows: &[FlowConfig]) -> Result<(), AwsSetupError> {
        for flow in flows {
            let key = destination_key(&self.settings, flow, self.default_region.as_deref())?;
            if self.destinations.contains_key(&key) {
                continue;
            }
            if !self.roles.contains_key(&key.role) {
                let (arn, external_id) = key.role.clone().expect("the no-role config is always there");
                let conf =
                    assume_role(self.source.clone(), &arn, external_id.as_deref(), &self.settings, &key.region).await;
                self.roles.insert(key.role.clone(), conf);
            }
            let base = &self.roles[&key.role];
            let client = if key.firehose {
                let mut b = aws_sdk_firehose::config::Builder::from(base)
                    .region(Region::new(key.region.clone()))
                    .interceptor(FastPayloadHash);
                if let Some(ep) = &key.endpoint {
                    b = b.endpoint_url(endpoint_url(ep));
                }
                DestinationClient::Firehose(aws_sdk_firehose::Client::from_conf(b.build()))
            } else {
                let mut b = aws_sdk_kinesis::config::Builder::from(base)
                    .region(Region::new(key.region.clone()))
                    .interceptor(FastPayloadHash);
                if let Some(ep) = &key.endpoint {
                    b = b.endpoint_url(endpoint_url(ep));
                }
                DestinationClient::Kinesis(aws_sdk_kinesis::Client::from_conf(b.build()))
            };
            self.destinations.insert(key, client);
        }
        Ok(())
    }
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
    if let Some(bundle) = crate::service::trust::configured().await? {
        tracing::info!(
            "HTTPS trusts only the {} certificate(s) of {} (from {})",
            bundle.certificates,
            bundle.path.display(),
            bundle.from
        );
        loader = loader.http_client(crate::service::trust::https_client(&bundle));
    }
    if let Some(app) = aws.user_agent.as_deref().and_then(|ua| AppName::new(ua.to_string()).ok()) {
        loader = loader.app_name(app);
    }
    // When the configuration gives every flow its region, the region chain is not asked: off EC2
    // it would wait for instance metadata that does not answer, at every start.
    let configured: Option<Vec<String>> = cfg.flows.iter().map(|f| configured_region(aws, f).map(|(r, _)| r)).collect();
    if let Some(first) = configured.and_then(|regions| regions.into_iter().next()) {
        loader = loader.region(Region::new(first));
    }
    let source = loader.load().await;
    let default_region = source.region().map(|r| r.to_string());
    if default_region.is_none() {
        let unset: Vec<String> = cfg
            .flows
            .iter()
            .filter(|f| configured_region(aws, f).is_none())
            .map(|f| format!("flows[{}]", f.index))
            .collect();
        if !unset.is_empty() {
            tracing::warn!(
                "no AWS region for {}: none is configured and none came from AWS_REGION, the profile or \
                 instance metadata; set `kinesis.region` (or `firehose.region`) in agent.json",
                unset.join(", ")
            );
        }
    }
    let global_role = aws.assume_role_arn.clone().map(|arn| (arn, aws.assume_role_external_id.clone()));
    let base = match &global_role {
        Some((arn, ext)) => {
            let region = aws
                .kinesis_region
                .clone()
                .or_else(|| aws.sts_endpoint.as_deref().and_then(region_from_endpoint))
                .unwrap_or_else(|| "us-east-1".to_string());
            assume_role(source.clone(), arn, ext.as_deref(), aws, &region).await
        }
        None => source.clone(),
    };
    let mut roles = HashMap::from([(None, source.clone())]);
    if global_role.is_some() {
        roles.insert(global_role, base.clone());
    }
    let mut clients = Clients {
        destinations: HashMap::new(),
        sts: None,
        cloudwatch: None,
        settings: aws.clone(),
        default_region: default_region.clone(),
        source,
        roles,
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
    clients.add_flows(&cfg.flows).await?;
    let custom_endpoints = aws.kinesis_endpoint.is_some()
        || aws.firehose_endpoint.is_some()
        || cfg.flows.iter().any(|f| f.aws.kinesis_endpoint.is_some() || f.aws.firehose_endpoint.is_some());
    if aws.sts_endpoint.is_some() || !custom_endpoints {
        let region = default_region
            .or_else(|| clients.destinations.keys().next().map(|k| k.region.clone()))
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
/// STS is called in `base`'s region, else `region`.
async fn assume_role(
    base: SdkConfig,
    arn: &str,
    external_id: Option<&str>,
    aws: &AwsSettings,
    region: &str,
) -> SdkConfig {
    let mut sts = base.clone().into_builder();
    if let Some(ep) = &aws.sts_endpoint {
        sts = sts.endpoint_url(endpoint_url(ep));
    }
    if base.region().is_none() {
        sts = sts.region(Region::new(region.to_string()));
    }
    let sts = sts.build();
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(arn).session_name("AWSKinesisAgent").configure(&sts);
    if let Some(ext) = external_id {
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

    /// A flow's own settings win over the top level's, its endpoint's region over the top-level
    /// region, and a flow's role goes with its own external id only.
    #[test]
    fn a_flows_destination_settings_win() {
        use crate::config::FlowAws;
        let flow = crate::config::load_str(
            std::path::Path::new("/a.json"),
            r#"{"flows": [{"filePattern": "/a", "kinesisStream": "s"}, {"filePattern": "/b", "deliveryStream": "d"}]}"#,
        )
        .unwrap()
        .flows;
        let (kinesis, firehose) = (flow[0].clone(), flow[1].clone());
        let global = AwsSettings {
            kinesis_region: Some("us-east-1".into()),
            assume_role_arn: Some("arn:top".into()),
            assume_role_external_id: Some("top-ext".into()),
            ..Default::default()
        };
        let key = |f: &FlowConfig, own: FlowAws, g: &AwsSettings, chain: Option<&str>| {
            let mut f = f.clone();
            f.aws = own;
            destination_key(g, &f, chain)
        };
        let k = key(&kinesis, FlowAws::default(), &global, Some("ap-south-1")).unwrap();
        assert_eq!(
            (k.region.as_str(), k.role.clone()),
            ("us-east-1", Some(("arn:top".into(), Some("top-ext".into()))))
        );
        let own = FlowAws {
            kinesis_endpoint: Some("https://kinesis.eu-west-1.amazonaws.com".into()),
            assume_role_arn: Some("arn:flow".into()),
            ..Default::default()
        };
        let k = key(&kinesis, own, &global, None).unwrap();
        assert_eq!(k.region, "eu-west-1", "the flow's endpoint names its region");
        assert_eq!(k.role, Some(("arn:flow".into(), None)), "the top-level external id is the top-level role's");
        let k =
            key(&kinesis, FlowAws { kinesis_region: Some("eu-north-1".into()), ..Default::default() }, &global, None);
        assert_eq!(k.unwrap().region, "eu-north-1");
        // Without any region: Kinesis is an error (unless an endpoint is set), Firehose us-east-1.
        let bare = AwsSettings::default();
        assert!(key(&kinesis, FlowAws::default(), &bare, None).is_err());
        let k = key(
            &kinesis,
            FlowAws { kinesis_endpoint: Some("http://127.0.0.1:1".into()), ..Default::default() },
            &bare,
            None,
        );
        assert_eq!(k.unwrap().region, "us-east-1");
        let k =
            key(&firehose, FlowAws { firehose_region: Some("us-west-2".into()), ..Default::default() }, &bare, None);
        assert_eq!((k.as_ref().unwrap().firehose, k.unwrap().region.as_str()), (true, "us-west-2"));
        // Kinesis settings do not apply to a Firehose flow.
        let k = key(&firehose, FlowAws::default(), &global, Some("ca-central-1")).unwrap();
        assert_eq!(k.region, "ca-central-1");
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
