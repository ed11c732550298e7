//! EC2 instance metadata (IMDSv2, through `aws-config`'s IMDS client): the instance identity for
//! ADDEC2METADATA and the instance id for `cloudwatch.tagInstance`. Every call here runs in a
//! background task or under a short bound: the data path never waits on IMDS.

use std::time::Duration;

use aws_config::imds;

/// Total time allowed for one metadata read (token included) before it counts as unreachable.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Where IMDS is, and whether to ask it at all.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `ec2.metadataEndpoint` (wins over the environment).
    Configured(String),
    /// The SDK's default: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else `http://169.254.169.254`.
    Default,
    /// `AWS_EC2_METADATA_DISABLED=true` and no `ec2.metadataEndpoint`.
    Disabled,
}

impl Endpoint {
    pub fn from_config(configured: Option<&str>) -> Endpoint {
        match configured {
            Some(url) => Endpoint::Configured(url.to_owned()),
            None if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) => {
                Endpoint::Disabled
            }
            None => Endpoint::Default,
        }
    }

    /// For log lines.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Configured(url) => url.clone(),
            Endpoint::Default => std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|_| "http://169.254.169.254".to_owned()),
            Endpoint::Disabled => "disabled by AWS_EC2_METADATA_DISABLED".to_owned(),
        }
    }

    /// The IMDS client, or why there is none.
    pub fn client(&self) -> Result<imds::Client, ImdsError> {
        // Never through a proxy, whatever HTTP_PROXY says (`ec2.metadataEndpoint` may share a host
        // with things that are proxied, so NO_PROXY cannot say it).
        let direct = aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
            let mut b = aws_smithy_http_client::ConnectorBuilder::default();
            b.set_connector_settings(settings.cloned());
            if let Some(c) = components {
                b.set_sleep_impl(c.sleep_impl());
            }
            b.build_http()
        });
        let provider = aws_config::provider_config::ProviderConfig::default().with_http_client(direct);
        let builder = imds::Client::builder()
            .configure(&provider)
            .max_attempts(2)
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .operation_timeout(OPERATION_TIMEOUT);
        match self {
            Endpoint::Configured(url) => builder
                .endpoint(url)
                .map(|b| b.build())
                .map_err(|e| ImdsError::BadEndpoint { url: url.clone(), reason: e.to_string() }),
            Endpoint::Default => Ok(builder.build()),
            Endpoint::Disabled => Err(ImdsError::Disabled),
        }
    }
}

/// Why instance metadata could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImdsError {
    #[error("instance metadata is disabled (AWS_EC2_METADATA_DISABLED=true)")]
    Disabled,
    #[error("ec2.metadataEndpoint {url:?} is not a valid URL: {reason}")]
    BadEndpoint { url: String, reason: String },
    /// The call failed: the error with its causes.
    #[error("{0}")]
    Call(String),
    #[error("no answer within {secs} s")]
    NoAnswer { secs: u64 },
    #[error("the instance identity document is not a JSON object")]
    BadDocument,
}

/// The error text of an IMDS call, with its causes.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// One metadata path as text.
pub async fn get(client: &imds::Client, path: &str) -> Result<String, ImdsError> {
    let wait = OPERATION_TIMEOUT + Duration::from_secs(1);
    match tokio::time::timeout(wait, client.get(path)).await {
        Ok(Ok(text)) => Ok(text.as_ref().to_owned()),
        Ok(Err(e)) => Err(ImdsError::Call(error_text(&e))),
        Err(_) => Err(ImdsError::NoAnswer { secs: wait.as_secs() }),
    }
}

/// The instance identity document (`/latest/dynamic/instance-identity/document`).
pub async fn identity_document(client: &imds::Client) -> Result<serde_json::Map<String, serde_json::Value>, ImdsError> {
    let text = get(client, "/latest/dynamic/instance-identity/document").await?;
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(ImdsError::BadDocument),
    }
}

/// The instance's tags, when tags in instance metadata are allowed on it (`None` otherwise),
/// keys lower-cased as the Java agent writes them, sorted by key.
pub async fn tags(client: &imds::Client) -> Option<Vec<(String, String)>> {
    let keys = get(client, "/latest/meta-data/tags/instance").await.ok()?;
    let mut tags = Vec::new();
    for key in keys.lines().map(str::trim).filter(|k| !k.is_empty()) {
        let value = get(client, &format!("/latest/meta-data/tags/instance/{key}")).await.ok()?;
        tags.push((key.to_lowercase(), value));
    }
    tags.sort();
    Some(tags)
}
