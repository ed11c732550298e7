//! Destination checks: does each flow's stream exist in its region and is it active, and whose
//! credentials are these (STS GetCallerIdentity)? Run by `--check-config --check-destinations`
//! (problems give exit code 2) and in the background at every start, so that a wrong stream name,
//! region or credentials is one clear line at once instead of "0 records sent" (the Java agent's
//! issue #13). A missing Describe permission is not a problem for sending: it is said, not failed.

use std::time::Duration;

use crate::aws::Clients;
use crate::config::{AgentConfig, Destination, PartitionKeyOption};
use crate::sink::client::request_failure;
use crate::sink::retry::{ErrorClass, Failure};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Could not be checked, or not ready yet; sending may still work.
    Warn,
    /// Sending cannot work until a person fixes it.
    Error,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub text: String,
    /// The service's own words (`ResourceNotFoundException: ...`), for `--check-destinations`;
    /// the log at start leaves them out, as the sender quotes them when a send fails.
    pub detail: Option<String>,
}

impl Finding {
    fn new(level: Level, text: String) -> Self {
        Finding { level, text, detail: None }
    }

    /// The text with the service's words, if any.
    pub fn full(&self) -> String {
        match &self.detail {
            Some(d) => format!("{} ({d})", self.text),
            None => self.text.clone(),
        }
    }
}

/// Each check gets this long (the SDK's own timeouts are those of agent.json).
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks every destination once (flows sharing a stream are checked once) and, where it means
/// something, the credentials' identity.
pub async fn destinations(cfg: &AgentConfig, clients: &Clients) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for flow in &cfg.flows {
        // Flows sharing a stream, in the same region and account, are checked once.
        let place = (flow.destination.clone(), crate::aws::destination_key(&cfg.aws, flow, None).ok());
        if seen.contains(&place) {
            continue;
        }
        seen.push(place);
        let finding = match &flow.destination {
            Destination::Kinesis { stream } => {
                let (client, region) = clients.kinesis(flow).expect("built for every flow");
                let label = flow.label(Some(&region));
                let call = client.describe_stream_summary().stream_name(stream).send();
                match tokio::time::timeout(CHECK_TIMEOUT, call).await {
                    Err(_) => timed_out(&label),
                    Ok(Ok(r)) => match r.stream_description_summary() {
                        Some(d) => {
                            let status = d.stream_status().as_str().to_string();
                            let shards = d.open_shard_count();
                            active(&label, &status, &format!("{shards} open shard(s)"))
                        }
                        None => Finding::new(Level::Warn, format!("{label}: no description returned")),
                    },
                    Ok(Err(e)) => failed(
                        &label,
                        "kinesisStream",
                        "kinesis.region",
                        "kinesis:DescribeStreamSummary",
                        request_failure(e),
                    ),
                }
            }
            Destination::Firehose { stream } => {
                let (client, region) = clients.firehose(flow).expect("built for every flow");
                let label = flow.label(Some(&region));
                let call = client.describe_delivery_stream().delivery_stream_name(stream).send();
                match tokio::time::timeout(CHECK_TIMEOUT, call).await {
                    Err(_) => timed_out(&label),
                    Ok(Ok(r)) => match r.delivery_stream_description() {
                        Some(d) => {
                            let status = d.delivery_stream_status().as_str().to_string();
                            let kind = d.delivery_stream_type().as_str().to_string();
                            if kind == "KinesisStreamAsSource" {
                                Finding::new(
                                    Level::Error,
                                    format!(
                                        "{label}: reads from a Kinesis stream (KinesisStreamAsSource), so it does not accept PutRecordBatch: send to that stream with kinesisStream instead"
                                    ),
                                )
                            } else {
                                active(&label, &status, &kind)
                            }
                        }
                        None => Finding::new(Level::Warn, format!("{label}: no description returned")),
                    },
                    Ok(Err(e)) => failed(
                        &label,
                        "deliveryStream",
                        "firehose.region",
                        "firehose:DescribeDeliveryStream",
                        request_failure(e),
                    ),
                }
            }
        };
        out.push(finding);
    }
    // KPL aggregation by shard needs the shard map; without it, aggregates still work, but hold
    // one partition key each.
    let mut listed = Vec::new();
    for flow in &cfg.flows {
        let Destination::Kinesis { stream } = &flow.destination else { continue };
        let place = (stream, crate::aws::destination_key(&cfg.aws, flow, None).ok());
        if flow.kpl_aggregation.is_none() || flow.partition_key == PartitionKeyOption::Random || listed.contains(&place)
        {
            continue;
        }
        listed.push(place);
        let (client, region) = clients.kinesis(flow).expect("built for every flow");
        let label = flow.label(Some(&region));
        match tokio::time::timeout(CHECK_TIMEOUT, crate::sink::shards::list_shards(&client, stream)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => out.push(Finding {
                level: Level::Warn,
                text: format!(
                    "{label}: kplAggregation groups records by shard with ListShards, which failed: until it works, \
                     each aggregate holds the records of one partition key (grant kinesis:ListShards)"
                ),
                detail: Some(e.to_string()),
            }),
            Err(_) => out.push(Finding::new(Level::Warn, format!("{label}: ListShards did not answer in time"))),
        }
    }
    if let Some(sts) = &clients.sts {
        let call = sts.get_caller_identity().send();
        out.push(match tokio::time::timeout(CHECK_TIMEOUT, call).await {
            Err(_) => Finding::new(Level::Warn, "credentials: STS did not answer in time".into()),
            Ok(Ok(r)) => Finding::new(
                Level::Ok,
                format!("credentials: {} (account {})", r.arn().unwrap_or("?"), r.account().unwrap_or("?")),
            ),
            Ok(Err(e)) => {
                let f = request_failure(e);
                Finding {
                    level: Level::Error,
                    text: format!("credentials: {}", credentials_hint(&f)),
                    detail: Some(format!("{}: {}", f.code, f.message)),
                }
            }
        });
    }
    out
}

fn timed_out(label: &str) -> Finding {
    Finding::new(
        Level::Error,
        format!("{label}: no answer within {} s: check the endpoint and the network", CHECK_TIMEOUT.as_secs()),
    )
}

fn active(label: &str, status: &str, detail: &str) -> Finding {
    match status {
        "ACTIVE" | "UPDATING" => Finding::new(Level::Ok, format!("{label}: {status}, {detail}")),
        _ => Finding::new(Level::Warn, format!("{label}: {status}, {detail}: records are accepted once it is ACTIVE")),
    }
}

fn failed(label: &str, name_key: &str, region_key: &str, permission: &str, f: Failure) -> Finding {
    let code = f.code.as_str();
    let (level, what) = match code {
        "ResourceNotFoundException" => {
            (Level::Error, format!("does not exist in this region: check `{name_key}` and `{region_key}`"))
        }
        "AccessDeniedException" | "AccessDenied" => (
            Level::Warn,
            format!(
                "cannot be checked: the credentials lack {permission} (sending needs only the Put permission, so this may be fine)"
            ),
        ),
        _ if is_credentials(code, &f) => (Level::Error, credentials_hint(&f).to_string()),
        _ if f.class == ErrorClass::Throttled => (Level::Warn, "cannot be checked now: throttled".to_string()),
        _ if f.class == ErrorClass::Transient => {
            (Level::Error, "cannot be reached: check the endpoint, the region and the network".to_string())
        }
        _ => (Level::Error, "cannot be used".to_string()),
    };
    Finding { level, text: format!("{label} {what}"), detail: Some(format!("{code}: {}", f.message)) }
}

fn is_credentials(code: &str, f: &Failure) -> bool {
    matches!(
        code,
        "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "CredentialsError"
    ) || f.message.contains("credentials")
}

fn credentials_hint(f: &Failure) -> &'static str {
    match f.code.as_str() {
        "ExpiredTokenException" | "ExpiredToken" => "the credentials have expired",
        "CredentialsError" => {
            "no usable credentials: set awsAccessKeyId/awsSecretAccessKey, AWS_* variables, a profile, or an instance role"
        }
        _ => "the credentials are not valid for this account and region",
    }
}

/// Log the findings (at start): one line each.
pub fn log(findings: &[Finding]) {
    for f in findings {
        match f.level {
            Level::Ok => tracing::info!("check at start: {}", f.text),
            Level::Warn => tracing::warn!("check at start: {}", f.text),
            Level::Error => tracing::error!("check at start: {}", f.text),
        }
    }
}

/// What `--check-destinations` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// A destination or the credentials have a problem (or the clients could not be built).
    Problems,
    /// The check could not run at all.
    NoRuntime,
}

/// `--check-destinations`: one line per destination and for the credentials.
pub fn check_destinations(cfg: &AgentConfig) -> Verdict {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Verdict::NoRuntime;
        }
    };
    runtime.block_on(async {
        let clients = match crate::aws::build(cfg).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Verdict::Problems;
            }
        };
        let findings = destinations(cfg, &clients).await;
        let mut errors = 0;
        for f in &findings {
            match f.level {
                Level::Ok => println!("ok: {}", f.full()),
                Level::Warn => println!("warning: {}", f.full()),
                Level::Error => {
                    errors += 1;
                    eprintln!("error: {}", f.full());
                }
            }
        }
        if errors > 0 {
            eprintln!("{errors} destination problem(s)");
            Verdict::Problems
        } else {
            Verdict::Ok
        }
    })
}
