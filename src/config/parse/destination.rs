//! Destination settings: the top-level AWS keys, and those a flow may set for itself.

use super::*;

impl Loader {
    pub(super) fn aws(&mut self, s: &Section) -> AwsSettings {
        let access_key_id = self.get(s, "awsAccessKeyId", parse_nonempty);
        let secret_access_key = self.get(s, "awsSecretAccessKey", parse_nonempty).map(Secret);
        if secret_access_key.is_some() {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(s.file)
                && m.permissions().mode() & 0o004 != 0
            {
                let text = format!(
                    "this file holds a secret key and every user can read it (mode {:o}): `chmod 640 {}` (the packages install it 0640, group kinesis-agent)",
                    m.permissions().mode() & 0o777,
                    s.file.display()
                );
                self.notice(s, "awsSecretAccessKey", text);
            }
        }
        match (s.has("awsAccessKeyId"), s.has("awsSecretAccessKey")) {
            (true, false) => {
                self.key_error(s, "awsAccessKeyId", "needs `awsSecretAccessKey` too: static credentials are a pair")
            }
            (false, true) => {
                self.key_error(s, "awsSecretAccessKey", "needs `awsAccessKeyId` too: static credentials are a pair")
            }
            _ => {}
        }
        AwsSettings {
            kinesis_endpoint: self.optional(s, "kinesis.endpoint"),
            kinesis_region: self.optional(s, "kinesis.region"),
            firehose_endpoint: self.optional(s, "firehose.endpoint"),
            firehose_region: self.optional(s, "firehose.region"),
            sts_endpoint: self.optional(s, "sts.endpoint"),
            cloudwatch_endpoint: self.optional(s, "cloudwatch.endpoint"),
            ec2_metadata_endpoint: self.optional(s, "ec2.metadataEndpoint"),
            access_key_id,
            secret_access_key,
            assume_role_arn: self.optional(s, "assumeRoleARN"),
            assume_role_external_id: self.optional(s, "assumeRoleExternalId"),
            user_agent: self.optional(s, "userAgent").map(|v| v.trim().to_owned()),
            // Used whenever present, even empty, as in the Java agent.
            user_agent_override: self.get(s, "userAgentOverride", parse_str),
            connection_timeout: self.millis_key(s, "connectionTimeoutMillis"),
            socket_timeout: self.millis_key(s, "socketTimeoutMillis"),
        }
    }

    /// A flow's own destination settings. The keys of the other destination kind are noticed
    /// and ignored.
    pub(super) fn flow_aws(&mut self, s: &Section, firehose: bool) -> FlowAws {
        let (mine, other) = if firehose { ("firehose.", "kinesis.") } else { ("kinesis.", "firehose.") };
        for key in ["endpoint", "region"] {
            let key = format!("{other}{key}");
            if s.has(&key) {
                let text = format!(
                    "accepted and ignored: this flow sends to {}",
                    if firehose { "Firehose" } else { "Kinesis" }
                );
                self.notice(s, &key, text);
            }
        }
        let endpoint = self.optional(s, &format!("{mine}endpoint"));
        let region = self.optional(s, &format!("{mine}region"));
        let (kinesis_endpoint, kinesis_region, firehose_endpoint, firehose_region) =
            if firehose { (None, None, endpoint, region) } else { (endpoint, region, None, None) };
        FlowAws {
            kinesis_endpoint,
            kinesis_region,
            firehose_endpoint,
            firehose_region,
            assume_role_arn: self.optional(s, "assumeRoleARN"),
            assume_role_external_id: self.optional(s, "assumeRoleExternalId"),
        }
    }
}
