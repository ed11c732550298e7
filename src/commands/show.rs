//! `--check-config`'s report: what the configuration says, flow by flow, and which certificate
//! authorities HTTPS trusts.

use crate::config::{self, AgentConfig, Destination};

/// `--check-config`: what the configuration says, flow by flow.
pub fn print_config(cfg: &AgentConfig) {
    println!("configuration: {}", cfg.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    println!("checkpoints: {} (kept {} days)", cfg.checkpoint_file.display(), cfg.checkpoint_ttl_days);
    for f in &cfg.flows {
        let dest = match &f.destination {
            Destination::Kinesis { stream } => {
                let kpl = match f.kpl_aggregation {
                    Some(n) => format!(", KPL aggregation up to {n} bytes"),
                    None => String::new(),
                };
                let order = match f.ordering {
                    config::KeyOrder::PerKey => ", order kept per key",
                    config::KeyOrder::None => "",
                };
                format!("kinesisStream {stream}, partitionKeyOption {}{kpl}{order}", f.partition_key.describe())
            }
            Destination::Firehose { stream } => format!("deliveryStream {stream}"),
        };
        println!("flows[{}] from {}", f.index, f.source.display());
        println!("  filePattern {}", f.file_pattern);
        println!("  {dest}");
        let own = [
            ("kinesis.endpoint", &f.aws.kinesis_endpoint),
            ("kinesis.region", &f.aws.kinesis_region),
            ("firehose.endpoint", &f.aws.firehose_endpoint),
            ("firehose.region", &f.aws.firehose_region),
            ("assumeRoleARN", &f.aws.assume_role_arn),
            ("assumeRoleExternalId", &f.aws.assume_role_external_id),
        ];
        let own: Vec<String> = own.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}"))).collect();
        if !own.is_empty() {
            println!("  its own destination settings: {}", own.join(", "));
        }
        match crate::aws::configured_region(&cfg.aws, f) {
            Some((region, from)) => println!("  region {region} (from {from})"),
            None => println!(
                "  region: from the AWS region chain (AWS_REGION, the profile, instance metadata), else us-east-1 for Firehose"
            ),
        }
        if crate::service::proxy::configured() {
            println!("  HTTP: {}", crate::service::proxy::describe(&destination_url(cfg, f)));
        }
        println!("  initialPosition {}, skipHeaderLines {}", f.initial_position.as_str(), f.skip_header_lines);
        if let Some(p) = &f.multi_line_start_pattern {
            println!(
                "  records: lines from one starting with /{p}/ to the next (flushed after {} ms quiet)",
                f.multi_line_flush_timeout.as_millis()
            );
        }
        println!(
            "  batches of up to {} records / {} bytes, or {} ms old; retry backoff {}..{} ms",
            f.max_buffer_size_records,
            f.max_buffer_size_bytes,
            f.max_buffer_age.as_millis(),
            f.retry_initial_backoff.as_millis(),
            f.retry_max_backoff.as_millis()
        );
    }
    for n in &cfg.notices {
        println!("note: {n}");
    }
}

/// `--check-config`: which certificate authorities HTTPS trusts (AWS_CA_BUNDLE, `ca_bundle`).
pub fn print_trust() -> Result<(), crate::service::trust::CaBundleError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(runtime) = runtime else { return Ok(()) };
    match runtime.block_on(crate::service::trust::configured())? {
        Some(b) => println!(
            "HTTPS trusts only the {} certificate(s) of {} (from {})",
            b.certificates,
            b.path.display(),
            b.from
        ),
        None => println!("HTTPS trusts the system's certificate store"),
    }
    Ok(())
}

/// The URL a flow's requests go to: its endpoint, or the AWS one of its region (as far as the
/// configuration says; the SDK's region chain is not consulted here).
fn destination_url(cfg: &AgentConfig, f: &config::FlowConfig) -> String {
    let service = match f.destination {
        Destination::Kinesis { .. } => "kinesis",
        Destination::Firehose { .. } => "firehose",
    };
    // The flow's endpoint and region as its client is built with (without the region chain).
    match crate::aws::destination_key(&cfg.aws, f, None) {
        Ok(key) => match key.endpoint {
            Some(e) => crate::aws::endpoint_url(&e),
            None => format!("https://{service}.{}.amazonaws.com", key.region),
        },
        Err(_) => format!("https://{service}.us-east-1.amazonaws.com"),
    }
}
