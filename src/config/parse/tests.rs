//! Tests of the loader as a whole: agent.json text in, `AgentConfig` or located errors out.

use super::*;
use crate::config::load_str;

pub(super) const MAIN: &str = "/etc/aws-kinesis/agent.json";
pub(super) const FLOW: &str = r#""filePattern": "/var/log/app.log", "kinesisStream": "s""#;

pub(super) fn parse(text: &str) -> Result<AgentConfig, ConfigErrors> {
    load_str(Path::new(MAIN), text)
}

pub(super) fn ok(text: &str) -> AgentConfig {
    parse(text).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

pub(super) fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("expected errors for {text}"),
        Err(e) => e.0,
    }
}

pub(super) fn one_error(text: &str) -> ConfigError {
    let mut errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.remove(0)
}

/// A config with one Kinesis flow plus `extra` keys in the flow.
pub(super) fn flow_with(extra: &str) -> String {
    format!(r#"{{"flows": [{{{FLOW}{extra}}}]}}"#)
}

/// The one flow of a config, with `extra` keys in it.
pub(super) fn one_flow(extra: &str) -> FlowConfig {
    ok(&flow_with(extra)).flows.remove(0)
}

pub(super) fn flow_error(extra: &str) -> ConfigError {
    one_error(&flow_with(extra))
}

#[test]
fn minimal_kinesis_flow_gets_the_defaults() {
    let config = ok(&flow_with(""));
    assert_eq!(config.sources, vec![PathBuf::from(MAIN)]);
    assert_eq!(config.checkpoint_file, PathBuf::from(DEFAULT_CHECKPOINT_FILE));
    assert_eq!(config.checkpoint_ttl_days, 7);
    assert_eq!(config.shutdown_timeout, Duration::from_millis(10_000));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(config.max_sending_threads, (12 * cpus).max(2));
    assert_eq!(config.status_period, Duration::from_secs(30));
    assert_eq!(config.aws.connection_timeout, Duration::from_millis(10_000));
    assert_eq!(config.aws.socket_timeout, Duration::from_millis(50_000));
    assert!(config.aws.kinesis_endpoint.is_none() && config.aws.secret_access_key.is_none());
    assert!(config.notices.is_empty(), "{:?}", config.notices);

    let flow = &config.flows[0];
    assert_eq!(flow.index, 0);
    assert_eq!(flow.source, PathBuf::from(MAIN));
    assert_eq!(flow.id, "kinesis:s:/var/log/app.log");
    assert_eq!(flow.file_pattern, "/var/log/app.log");
    assert_eq!(flow.destination, Destination::Kinesis { stream: "s".into() });
    assert_eq!(flow.partition_key, PartitionKeyOption::Random);
    assert_eq!(flow.initial_position, InitialPosition::EndOfFile);
    assert_eq!(flow.max_buffer_age, Duration::from_millis(60_000));
    assert_eq!(flow.max_buffer_size_records, 500);
    assert_eq!(flow.max_buffer_size_bytes, 5_242_880);
    assert_eq!(flow.publish_queue_capacity, 100);
    assert_eq!(flow.retry_initial_backoff, Duration::from_millis(100));
    assert_eq!(flow.retry_max_backoff, Duration::from_millis(10_000));
    assert_eq!(flow.min_time_between_file_polls, Duration::from_millis(100));
    assert_eq!(flow.max_time_between_file_tracker_refresh, Duration::from_millis(10_000));
    assert_eq!(flow.skip_header_lines, 0);
    assert_eq!(flow.truncated_record_terminator, b"\n");
    assert_eq!(flow.multi_line_start_pattern, None);
    assert_eq!(flow.aggregated_record_size_bytes, 0);
    assert!(flow.data_processing_options.is_empty());
}

#[test]
fn firehose_flow_defaults_to_4_mib() {
    let config = ok(r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d"}]}"#);
    let flow = &config.flows[0];
    assert_eq!(flow.destination, Destination::Firehose { stream: "d".into() });
    assert_eq!(flow.id, "fh:d:/a.log");
    assert_eq!(flow.max_buffer_size_bytes, 4_194_304);
    assert_eq!(flow.max_buffer_size_records, 500);
    assert!(config.notices.is_empty());

    let e =
        one_error(r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d", "maxBufferSizeBytes": 5242880}]}"#);
    assert_eq!(e.location, "flows[0].maxBufferSizeBytes");
    assert!(e.message.contains("from 1 to 4194304"), "{}", e.message);
    assert_eq!(one_flow(r#", "maxBufferSizeBytes": 5242880"#).max_buffer_size_bytes, 5_242_880);
}

#[test]
fn delivery_stream_wins_over_kinesis_stream() {
    let config = ok(r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d", "kinesisStream": "k"}]}"#);
    assert_eq!(config.flows[0].destination, Destination::Firehose { stream: "d".into() });
    assert_eq!(config.notices.len(), 1);
    assert!(config.notices[0].contains("flows[0].kinesisStream: accepted and ignored"));
}

#[test]
fn partition_key_on_firehose_is_a_notice() {
    let config =
        ok(r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d", "partitionKeyOption": "whatever"}]}"#);
    assert_eq!(config.flows[0].partition_key, PartitionKeyOption::Random);
    assert_eq!(
        config.notices,
        vec![format!(
            "{MAIN}: flows[0].partitionKeyOption: accepted and ignored: partition keys apply to `kinesisStream` flows only"
        )]
    );
}

#[test]
fn numbers_may_be_strings() {
    let flow = one_flow(
        r#", "maxBufferAgeMillis": "1000", "maxBufferSizeRecords": " 7 ", "skipHeaderLines": "+2", "maxBufferSizeBytes": 1000.0"#,
    );
    assert_eq!(flow.max_buffer_age, Duration::from_millis(1000));
    assert_eq!(flow.max_buffer_size_records, 7);
    assert_eq!(flow.skip_header_lines, 2);
    assert_eq!(flow.max_buffer_size_bytes, 1000);
    let config = ok(&format!(
        r#"{{"checkpointTimeToLiveDays": "3", "log.statusReportingPeriodSeconds": "5", "flows": [{{{FLOW}}}]}}"#
    ));
    assert_eq!(config.checkpoint_ttl_days, 3);
    assert_eq!(config.status_period, Duration::from_secs(5));
}

#[test]
fn bad_numbers_say_the_range_and_the_value() {
    let cases = [
        (r#""maxBufferAgeMillis": 999"#, "from 1000 to 900000, found 999"),
        (r#""maxBufferAgeMillis": 900001"#, "from 1000 to 900000, found 900001"),
        (r#""maxBufferSizeRecords": 0"#, "from 1 to 500, found 0"),
        (r#""maxBufferSizeRecords": 501"#, "from 1 to 500, found 501"),
        (r#""maxBufferSizeRecords": 1.5"#, "from 1 to 500, found 1.5"),
        (r#""maxBufferSizeRecords": "1.5""#, r#"from 1 to 500, found "1.5""#),
        (r#""maxBufferSizeRecords": "ten""#, r#"found "ten""#),
        (r#""maxBufferSizeRecords": true"#, "found true"),
        (r#""maxBufferSizeRecords": [1]"#, "found an array"),
        (r#""skipHeaderLines": -1"#, "from 0 to 2147483647, found -1"),
        (r#""skipHeaderLines": 2147483648"#, "found 2147483648"),
        (r#""publishQueueCapacity": 0"#, "from 1 to 2147483647, found 0"),
        (r#""retryInitialBackoffMillis": -5"#, "at least 0, found -5"),
        (r#""retryMaxBackoffMillis": 99999999999999999999"#, "at least 0, found 1e+20"),
        (r#""retryMaxBackoffMillis": "99999999999999999999""#, "at least 0"),
        (r#""minTimeBetweenFilePollsMillis": 0"#, "at least 1, found 0"),
        (r#""maxTimeBetweenFileTrackerRefreshMillis": 0"#, "at least 1, found 0"),
    ];
    for (extra, expected) in cases {
        let key = extra.split('"').nth(1).unwrap();
        let e = flow_error(&format!(", {extra}"));
        assert_eq!(e.location, format!("flows[0].{key}"), "{extra}");
        assert!(e.message.contains("must be a whole number"), "{extra}: {}", e.message);
        assert!(e.message.contains(expected), "{extra}: {}", e.message);
    }
    let e = one_error(&format!(r#"{{"connectionTimeoutMillis": 0, "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(e.location, "connectionTimeoutMillis");
}

#[test]
fn retry_max_must_not_be_below_initial() {
    let e = flow_error(r#", "retryInitialBackoffMillis": 500, "retryMaxBackoffMillis": 400"#);
    assert_eq!(e.location, "flows[0].retryMaxBackoffMillis");
    assert!(e.message.contains("at least `retryInitialBackoffMillis` (500), found 400"));
    let e = flow_error(r#", "retryInitialBackoffMillis": 20000"#);
    assert!(e.message.contains("(20000), found 10000"), "{}", e.message);
    let flow = one_flow(r#", "retryInitialBackoffMillis": 0, "retryMaxBackoffMillis": 0"#);
    assert_eq!(flow.retry_max_backoff, Duration::ZERO);
}

#[test]
fn loose_booleans() {
    for yes in [r#"true"#, r#""TRUE""#, r#""Yes""#, r#""t""#, r#""Y""#, r#""1""#, "1"] {
        let config = ok(&format!(r#"{{"useHttpGzip": {yes}, "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(config.notices.len(), 1, "{yes}");
        assert!(config.notices[0].contains("useHttpGzip: accepted and ignored"), "{yes}");
    }
    for no in [r#"false"#, r#""False""#, r#""NO""#, r#""f""#, r#""n""#, r#""0""#, "0"] {
        let config = ok(&format!(r#"{{"useHttpGzip": {no}, "flows": [{{{FLOW}}}]}}"#));
        assert!(config.notices.is_empty(), "{no}");
    }
    for bad in [r#""maybe""#, r#""2""#, "2", r#""""#, "[]"] {
        let e = one_error(&format!(r#"{{"useTcpKeepAlive": {bad}, "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(e.location, "useTcpKeepAlive");
        assert!(e.message.starts_with("must be true or false"), "{}", e.message);
    }
}

#[test]
fn enums_are_case_sensitive() {
    let flow = one_flow(r#", "partitionKeyOption": "DETERMINISTIC", "initialPosition": "START_OF_FILE""#);
    assert_eq!(flow.partition_key, PartitionKeyOption::Deterministic);
    assert_eq!(flow.initial_position, InitialPosition::StartOfFile);

    let e = flow_error(r#", "partitionKeyOption": "random""#);
    assert_eq!(e.location, "flows[0].partitionKeyOption");
    assert_eq!(
        e.message,
        r#"must be `RANDOM`, `DETERMINISTIC` or an object, found "random" (values are case-sensitive: write `RANDOM`)"#
    );
    let e = flow_error(r#", "initialPosition": "BEGINNING""#);
    assert_eq!(e.message, r#"must be `START_OF_FILE` or `END_OF_FILE`, found "BEGINNING""#);
    let e = flow_error(r#", "initialPosition": 3"#);
    assert!(e.message.ends_with("found 3"));
}

#[test]
fn null_means_default() {
    let config = ok(&format!(
        r#"{{"checkpointFile": null, "useHttpGzip": null, "nonsense": null,
            "flows": [{{{FLOW}, "maxBufferAgeMillis": null, "deliveryStream": null}}]}}"#
    ));
    assert_eq!(config.checkpoint_file, PathBuf::from(DEFAULT_CHECKPOINT_FILE));
    assert_eq!(config.flows[0].max_buffer_age, Duration::from_secs(60));
    assert_eq!(config.flows[0].destination, Destination::Kinesis { stream: "s".into() });
    assert!(config.notices.is_empty());
}

#[test]
fn unknown_keys_suggest_the_nearest() {
    let e = flow_error(r#", "maxBufferAgeMilis": 1000"#);
    assert_eq!(e.file, PathBuf::from(MAIN));
    assert_eq!(e.location, "flows[0].maxBufferAgeMilis");
    assert_eq!(e.message, "unknown key `maxBufferAgeMilis`; did you mean `maxBufferAgeMillis`?");

    let e = one_error(r#"{"flows": [{"FilePattern": "/a", "filePattern": "/a", "kinesisStream": "s"}]}"#);
    assert!(e.message.ends_with("did you mean `filePattern`?"), "{}", e.message);

    let e = one_error(&format!(r#"{{"kinesis.regoin": "x", "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(e.location, "kinesis.regoin");
    assert!(e.message.ends_with("did you mean `kinesis.region`?"));

    let e = flow_error(r#", "zzzzz": 1"#);
    assert_eq!(e.message, "unknown key `zzzzz`");

    // Close to a key of the other scope only.
    let e = one_error(&format!(r#"{{"maxBufferAgeMilis": 1, "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(
        e.message,
        "unknown key `maxBufferAgeMilis`; did you mean the flow key `maxBufferAgeMillis`? (it goes into each object of `flows`)"
    );
}

#[test]
fn misplaced_keys_say_where_they_belong() {
    let e = one_error(&format!(r#"{{"maxBufferAgeMillis": 5000, "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(e.location, "maxBufferAgeMillis");
    assert_eq!(e.message, "`maxBufferAgeMillis` is a flow key: move it into each object of `flows`");

    let e = flow_error(r#", "sts.endpoint": "http://localhost""#);
    assert_eq!(e.location, "flows[0].sts.endpoint");
    assert_eq!(e.message, "`sts.endpoint` is a global key: move it to the top level of the file");

    // log.emitInternalMetrics exists in both scopes.
    let config =
        ok(&format!(r#"{{"log.emitInternalMetrics": true, "flows": [{{{FLOW}, "log.emitInternalMetrics": "y"}}]}}"#));
    assert_eq!(
        config.notices,
        [format!(
            "{MAIN}: log.emitInternalMetrics (also flows[0]): accepted but not yet supported (internal counters are not logged yet)"
        )]
    );
}

#[test]
fn flow_needs_a_stream_and_a_pattern() {
    let e = one_error(r#"{"flows": [{"filePattern": "/a.log"}]}"#);
    assert_eq!(e.location, "flows[0]");
    assert!(e.message.starts_with("needs `kinesisStream` or `deliveryStream`"));

    let e = one_error(r#"{"flows": [{"kinesisStream": "s"}]}"#);
    assert_eq!(e.location, "flows[0]");
    assert!(e.message.starts_with("needs `filePattern`"));

    let e = one_error(r#"{"flows": [{"kinesisStream": "", "filePattern": "/a"}]}"#);
    assert_eq!((e.location.as_str(), e.message.as_str()), ("flows[0].kinesisStream", "must not be empty"));

    let e = one_error(r#"{"flows": [{"kinesisStream": "s", "filePattern": "/var/log/"}]}"#);
    assert_eq!(e.location, "flows[0].filePattern");
    assert!(e.message.contains("ends with `/`"), "{}", e.message);

    let e = one_error(r#"{"flows": [{"kinesisStream": "s", "filePattern": ""}]}"#);
    assert_eq!(e.message, "must not be empty");

    let e = one_error(r#"{"flows": [{"kinesisStream": "s", "filePattern": {}}]}"#);
    assert_eq!(e.message, "must be a string, found an object");
}

#[test]
fn flows_must_be_there_and_well_formed() {
    let e = one_error(r#"{"checkpointFile": "/tmp/c"}"#);
    assert_eq!((e.location.as_str(), e.message.as_str()), ("", "no flows: add at least one flow to `flows`"));
    let e = one_error(r#"{"flows": []}"#);
    assert_eq!(e.message, "no flows: add at least one flow to `flows`");

    let e = one_error(r#"{"flows": {"filePattern": "/a"}}"#);
    assert_eq!(e.location, "flows");
    assert_eq!(e.message, "must be an array of flow objects, found an object");

    let errors = errors(&format!(r#"{{"flows": [{{{FLOW}}}, "x", 3]}}"#));
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].location, "flows[1]");
    assert_eq!(errors[0].message, "must be a flow object, found a string");
    assert_eq!(errors[1].location, "flows[2]");

    let e = one_error("[1, 2]");
    assert_eq!(e.message, "the top level must be a JSON object, found an array");
    let e = one_error(" \n ");
    assert!(e.message.starts_with("the file is empty"));
}

#[test]
fn all_errors_are_collected() {
    let errors = errors(
        r#"{"foo": 1, "maxBufferAgeMillis": 1,
            "flows": [{"filePattern": "/a", "kinesisStream": "s", "maxBufferSizeRecords": 0},
                      {"filePattern": "/b"},
                      {"kinesisStream": "s", "filePattern": "/c", "initialPosition": "x"}]}"#,
    );
    let mut locations: Vec<_> = errors.iter().map(|e| e.location.as_str()).collect();
    locations.sort();
    assert_eq!(
        locations,
        ["flows[0].maxBufferSizeRecords", "flows[1]", "flows[2].initialPosition", "foo", "maxBufferAgeMillis"]
    );
}

#[test]
fn duplicate_flow_ids_are_errors() {
    let errors = errors(&format!(
        r#"{{"flows": [{{{FLOW}}}, {{{FLOW}, "maxBufferAgeMillis": 5000}},
            {{"filePattern": "/var/log/app.log", "deliveryStream": "s"}}]}}"#
    ));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].location, "flows[1]");
    assert!(errors[0].message.contains("duplicate flow: flows[0] of /etc/aws-kinesis/agent.json"));
    assert!(errors[0].message.contains("`kinesis:s:/var/log/app.log`"));
}

#[test]
fn relative_patterns_start_at_the_working_directory() {
    let flow = one_flow("").clone();
    assert_eq!(flow.file_pattern, "/var/log/app.log");
    let config = ok(r#"{"flows": [{"filePattern": "logs/*.log", "kinesisStream": "s"}]}"#);
    let expected = std::env::current_dir().unwrap().join("logs/*.log");
    let expected = expected.to_str().unwrap();
    assert_eq!(config.flows[0].file_pattern, expected);
    assert_eq!(config.flows[0].id, format!("kinesis:s:{expected}"));
}

#[test]
fn secrets_never_appear_in_messages() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let key_id = "AKIAIOSFODNN7EXAMPLE";
    // Wrong places, wrong types, misspelt neighbours: nothing may print the values.
    let text = format!(
        r#"{{"awsSecretAccessKey": ["{secret}"], "awsAccessKeyId": {{"k": "{key_id}"}},
            "awsSecretAcessKey": "{secret}",
            "flows": [{{{FLOW}, "awsSecretAccessKey": "{secret}", "awsAccessKeyId": "{key_id}"}}]}}"#
    );
    let all = ConfigErrors(errors(&text)).to_string();
    assert!(all.contains("awsSecretAccessKey"), "{all}");
    assert!(!all.contains(secret) && !all.contains("wJalr"), "{all}");
    assert!(!all.contains(key_id), "{all}");

    // A scalar value of the wrong kind for a choice would be shown, but not these.
    assert_eq!(shown("awsSecretAccessKey", &Value::String(secret.into())), "<redacted>");
    assert_eq!(shown("awsAccessKeyId", &Value::from(12)), "<redacted>");

    let e = one_error(&format!(r#"{{"awsSecretAccessKey": "{secret}", "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(e.location, "awsSecretAccessKey");
    assert!(e.message.contains("needs `awsAccessKeyId`"));

    let config =
        ok(&format!(r#"{{"awsSecretAccessKey": "{secret}", "awsAccessKeyId": "{key_id}", "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(config.aws.secret_access_key, Some(Secret(secret.into())));
    assert_eq!(config.aws.access_key_id.as_deref(), Some(key_id));
    assert!(!format!("{config:?}").contains(secret));
}

#[test]
fn aws_settings_are_read() {
    let config = ok(&format!(
        r#"{{"kinesis.endpoint": "http://127.0.0.1:4567", "kinesis.region": "eu-west-1",
            "firehose.endpoint": "", "firehose.region": "eu-west-2", "sts.endpoint": "sts.x",
            "assumeRoleARN": "arn:aws:iam::1:role/r", "assumeRoleExternalId": "ext",
            "userAgent": "  mine  ", "userAgentOverride": "", "connectionTimeoutMillis": 5,
            "socketTimeoutMillis": "6", "flows": [{{{FLOW}}}]}}"#
    ));
    let aws = &config.aws;
    assert_eq!(aws.kinesis_endpoint.as_deref(), Some("http://127.0.0.1:4567"));
    assert_eq!(aws.kinesis_region.as_deref(), Some("eu-west-1"));
    assert_eq!(aws.firehose_endpoint, None);
    assert_eq!(aws.firehose_region.as_deref(), Some("eu-west-2"));
    assert_eq!(aws.sts_endpoint.as_deref(), Some("sts.x"));
    assert_eq!(aws.assume_role_arn.as_deref(), Some("arn:aws:iam::1:role/r"));
    assert_eq!(aws.assume_role_external_id.as_deref(), Some("ext"));
    assert_eq!(aws.user_agent.as_deref(), Some("mine"));
    assert_eq!(aws.user_agent_override.as_deref(), Some(""));
    assert_eq!(aws.connection_timeout, Duration::from_millis(5));
    assert_eq!(aws.socket_timeout, Duration::from_millis(6));
}

#[test]
fn sending_threads() {
    let with = |globals: &str| ok(&format!(r#"{{{globals} "flows": [{{{FLOW}}}]}}"#));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(with(r#""maxSendingThreadsPerCore": 1,"#).max_sending_threads, cpus.max(2));
    assert_eq!(with(r#""maxSendingThreads": 3,"#).max_sending_threads, 3);
    let config = with(r#""maxSendingThreads": 3, "maxSendingThreadsPerCore": 4,"#);
    assert_eq!(config.max_sending_threads, 3);
    assert_eq!(
        config.notices,
        [format!("{MAIN}: maxSendingThreadsPerCore: accepted and ignored: `maxSendingThreads` is set")]
    );
    let e = one_error(&format!(r#"{{"maxSendingThreads": 0, "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(e.message, "must be a whole number from 1 to 2147483647, found 0");
}

#[test]
fn max_in_flight_bytes() {
    let with = |globals: &str| parse(&format!(r#"{{{globals} "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(with("").unwrap().max_in_flight_bytes, 64 * 1024 * 1024);
    assert_eq!(with(r#""maxInFlightBytes": "1048576","#).unwrap().max_in_flight_bytes, 1_048_576);
    assert_eq!(with(r#""maxInFlightBytes": 268435456,"#).unwrap().max_in_flight_bytes, 256 << 20);
    for (bad, found) in [("1048575", "1048575"), ("0", "0"), ("-5", "-5"), ("\"lots\"", "\"lots\"")] {
        let e = with(&format!(r#""maxInFlightBytes": {bad},"#)).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].location, "maxInFlightBytes");
        assert!(e.0[0].message.contains("at least 1048576"), "{}", e.0[0].message);
        assert!(e.0[0].message.ends_with(&format!("found {found}")), "{}", e.0[0].message);
    }
    let e =
        parse(r#"{"flows": [{"filePattern": "/a", "kinesisStream": "s", "maxInFlightBytes": 2000000}]}"#).unwrap_err();
    assert!(e.0[0].message.contains("is a global key"), "{e}");
}

#[test]
fn truncated_record_terminator_must_fit_a_record() {
    assert_eq!(one_flow(r#", "truncatedRecordTerminator": "...\n""#).truncated_record_terminator, b"...\n");
    let long = "x".repeat(KINESIS_MAX_RECORD_BYTES);
    let e = flow_error(&format!(r#", "truncatedRecordTerminator": "{long}""#));
    assert_eq!(e.location, "flows[0].truncatedRecordTerminator");
    assert!(e.message.contains("shorter than 1048576 bytes"), "{}", e.message);
    let long = "x".repeat(FIREHOSE_MAX_RECORD_BYTES);
    let e = one_error(&format!(
        r#"{{"flows": [{{"filePattern": "/a", "deliveryStream": "d", "truncatedRecordTerminator": "{long}"}}]}}"#
    ));
    assert!(e.message.contains("shorter than 1024000 bytes"), "{}", e.message);
}

#[test]
fn regexes_must_compile() {
    let flow = one_flow(r#", "multiLineStartPattern": "^\\d{4}-""#);
    assert_eq!(flow.multi_line_start_pattern.as_ref().map(|p| p.text()), Some(r"^\d{4}-"));
    let e = flow_error(r#", "multiLineStartPattern": "(""#);
    assert_eq!(e.location, "flows[0].multiLineStartPattern");
    assert!(
        e.message.starts_with(r#"must be a regular expression, but "(" is not one: unclosed group"#),
        "{}",
        e.message
    );
    assert!(!e.message.contains('\n'));
    let e = flow_error(r#", "fileFooterPattern": "(?=x)""#);
    assert_eq!(e.location, "flows[0].fileFooterPattern");
    assert!(e.message.contains("look-around"), "{}", e.message);
}

#[test]
fn not_yet_supported_keys_are_noticed_once() {
    let config = ok(&format!(
        r#"{{"flows": [{{{FLOW}, "fileFooterPattern": "^x"}},
            {{"filePattern": "/b", "kinesisStream": "s", "fileFooterPattern": "^y",
              "dataProcessingOptions": [{{"optionName": "SINGLELINE"}}]}},
            {{"filePattern": "/c", "kinesisStream": "s", "fileFooterPattern": "^z"}}]}}"#
    ));
    assert_eq!(
        config.notices,
        [format!(
            "{MAIN}: flows[0].fileFooterPattern (also flows[1], flows[2]): accepted but not yet supported (footer lines are sent like any other line for now)"
        ),]
    );
    assert_eq!(
        config.flows[1].data_processing_options,
        [ProcessingOption::SingleLine { no_trim: false, escape_new_line: false }]
    );
}

#[test]
fn ignored_and_unsupported_global_keys() {
    let config = ok(&format!(
        r#"{{"cloudwatch.emitMetrics": false, "log.emitInternalMetrics": "no",
            "sendingThreadsMaxQueueSize": 100, "useTcpKeepAlive": "false",
            "flows": [{{{FLOW}}}]}}"#
    ));
    assert!(config.notices.is_empty(), "{:?}", config.notices);
    let config = ok(&format!(
        r#"{{"cloudwatch.emitMetrics": true, "cloudwatch.namespace": "N", "log.level": "DEBUG",
            "userDefinedCredentialsProvider.classname": "a.B", "pollPeriodMillis": {{}},
            "checkpoints.queryTimeoutSeconds": "10", "flows": [{{{FLOW},
            "waitOnFullRetryQueueMillis": "whatever", "waitOnEmptyPublishQueueMillis": 2000}}]}}"#
    ));
    let notices = config.notices.join("\n");
    for expected in [
        "userDefinedCredentialsProvider.classname: accepted and ignored: Java credential provider",
        "pollPeriodMillis: accepted and ignored",
        "checkpoints.queryTimeoutSeconds: accepted and ignored",
        "flows[0].waitOnFullRetryQueueMillis: accepted and ignored",
        "flows[0].waitOnEmptyPublishQueueMillis: accepted and ignored",
    ] {
        assert!(notices.contains(expected), "{expected} not in\n{notices}");
    }
    assert_eq!(config.notices.len(), 5, "the cloudwatch keys are supported: {notices}");
    assert_eq!(config.log.level.as_deref(), Some("debug"));
    assert_eq!(config.cloudwatch.emit, Some(true));
    assert_eq!(config.cloudwatch.namespace, "N");
    // Ignored keys are still checked as the Java agent checked them.
    let e = flow_error(r#", "waitOnFullPublishQueueMillis": 10"#);
    assert!(e.message.contains("from 1000 to 900000"), "{}", e.message);
}

#[test]
fn cloudwatch_keys() {
    let c = ok(&flow_with(""));
    assert_eq!(
        c.cloudwatch,
        CloudWatchSettings {
            emit: None,
            namespace: "AWSKinesisAgent".into(),
            tag_instance: false,
            buffer_time: Duration::from_secs(30),
            queue_size: 10_000,
        }
    );
    assert_eq!(c.aws.cloudwatch_endpoint, None);
    let c = ok(&format!(
        r#"{{"cloudwatch.emitMetrics": "false", "cloudwatch.tagInstance": "TRUE", "cloudwatch.namespace": "Mine",
            "cloudwatch.metricsBufferTimeMillis": "10", "cloudwatch.metricsQueueSize": 0,
            "cloudwatch.endpoint": "monitoring.eu-west-1.amazonaws.com",
            "ec2.metadataEndpoint": "http://127.0.0.1:1338", "flows": [{{{FLOW}}}]}}"#
    ));
    assert!(c.notices.is_empty(), "{:?}", c.notices);
    assert_eq!(c.cloudwatch.emit, Some(false));
    assert!(c.cloudwatch.tag_instance);
    assert_eq!(c.cloudwatch.namespace, "Mine");
    assert_eq!(c.cloudwatch.buffer_time, Duration::from_millis(100), "at least 100 ms");
    assert_eq!(c.cloudwatch.queue_size, 1, "at least 1");
    assert_eq!(c.aws.cloudwatch_endpoint.as_deref(), Some("monitoring.eu-west-1.amazonaws.com"));
    assert_eq!(c.aws.ec2_metadata_endpoint.as_deref(), Some("http://127.0.0.1:1338"));
    let e = one_error(&format!(r#"{{"cloudwatch.emitMetrics": "maybe", "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(e.location, "cloudwatch.emitMetrics");
}

#[test]
fn aggregated_record_size_is_for_firehose() {
    let e = flow_error(r#", "aggregatedRecordSizeBytes": 1000"#);
    assert_eq!(e.location, "flows[0].aggregatedRecordSizeBytes");
    assert!(e.message.starts_with("applies to `deliveryStream` (Firehose) flows only"));
    let firehose =
        |extra: &str| parse(&format!(r#"{{"flows": [{{"filePattern": "/a", "deliveryStream": "d"{extra}}}]}}"#));
    let config = firehose(r#", "aggregatedRecordSizeBytes": "262144""#).unwrap();
    assert_eq!(config.flows[0].aggregated_record_size_bytes, 262_144);
    assert!(config.notices.is_empty(), "{:?}", config.notices);
    assert!(firehose(r#", "aggregatedRecordSizeBytes": 0"#).unwrap().notices.is_empty());
    let e = firehose(r#", "aggregatedRecordSizeBytes": 1024001"#).unwrap_err();
    assert!(e.0[0].message.contains("from 0 to 1024000"));
}

#[test]
fn checkpoint_settings() {
    let config = ok(&format!(
        r#"{{"checkpointFile": "/var/lib/x/cp.json", "checkpointTimeToLiveDays": 30,
            "shutdownTimeoutMillis": 0, "flows": [{{{FLOW}}}]}}"#
    ));
    assert_eq!(config.checkpoint_file, PathBuf::from("/var/lib/x/cp.json"));
    assert_eq!(config.checkpoint_ttl_days, 30);
    assert_eq!(config.shutdown_timeout, Duration::ZERO);
    let e = one_error(&format!(r#"{{"checkpointTimeToLiveDays": 0, "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(e.location, "checkpointTimeToLiveDays");
    let e = one_error(&format!(r#"{{"checkpointFile": "", "flows": [{{{FLOW}}}]}}"#));
    assert_eq!(e.message, "must not be empty");
}

#[test]
fn key_table_is_consistent() {
    let mut seen = std::collections::HashSet::new();
    for key in known_keys() {
        assert!(seen.insert((key.name, key.scope)), "{} twice", key.name);
        assert!(!key.doc.is_empty() && !key.doc.contains('\n'), "{}", key.name);
        assert!(key.doc.ends_with('.'), "{}", key.name);
        if let Check::Int { default: Some(default), .. } = key.check {
            let text = key.default.split_whitespace().next().unwrap();
            assert_eq!(text, default.to_string(), "{}", key.name);
        }
        if let KeyStatus::Supported = key.status {
            assert!(!matches!(key.check, Check::Any | Check::Bool), "{}", key.name);
        }
    }
    // The keys the dedicated code reads are all in the table (`info` panics otherwise).
    ok(&flow_with(""));
    ok(r#"{"flows": [{"filePattern": "/a", "deliveryStream": "d"}]}"#);
}

/// Destination settings inside a flow override the top-level ones for that flow; those of the
/// other destination kind are noticed and ignored.
#[test]
fn flows_may_have_their_own_destination_settings() {
    let config = ok(&format!(
        r#"{{"kinesis.region": "us-east-1", "assumeRoleARN": "arn:aws:iam::1:role/top", "flows": [
            {{{FLOW}}},
            {{"filePattern": "/b.log", "kinesisStream": "s", "kinesis.region": "eu-west-1",
              "kinesis.endpoint": "http://127.0.0.1:1", "assumeRoleARN": "arn:aws:iam::2:role/other",
              "assumeRoleExternalId": "x", "firehose.region": "ap-south-1"}},
            {{"filePattern": "/c.log", "deliveryStream": "d", "firehose.region": "us-west-2"}}]}}"#
    ));
    assert!(config.flows[0].aws.is_empty());
    let b = &config.flows[1].aws;
    assert_eq!(b.kinesis_region.as_deref(), Some("eu-west-1"));
    assert_eq!(b.kinesis_endpoint.as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(b.assume_role_arn.as_deref(), Some("arn:aws:iam::2:role/other"));
    assert_eq!(b.assume_role_external_id.as_deref(), Some("x"));
    assert_eq!(b.firehose_region, None);
    assert_eq!(config.flows[2].aws.firehose_region.as_deref(), Some("us-west-2"));
    assert_eq!(
        config.notices,
        [format!("{MAIN}: flows[1].firehose.region: accepted and ignored: this flow sends to Kinesis")]
    );
}
