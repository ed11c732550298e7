//! Bad input, end to end: the real binary with broken configurations, unusable checkpoint
//! stores, unreadable files and globs that match nothing. Every case checks the exit code and
//! that the message names the file, the key (or location) and what is allowed.
//!
//! Exit codes (src/main.rs): `--check-config` 2 on problems, 0 when valid; a normal start
//! (daemon or `--once`) with an invalid configuration or an unusable checkpoint store 1.
//!
//! Tests marked `#[ignore = "agent bug: ..."]` fail against the current agent on purpose.

use crate::common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A temp dir (canonical path) holding `agent.json`.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new(config_text: &str) -> Setup {
        let tmp = tempfile::Builder::new().prefix("bad-input-").tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical tempdir");
        let config = root.join("agent.json");
        fs::write(&config, config_text).expect("write agent.json");
        Setup { _tmp: tmp, root, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn config_str(&self) -> String {
        self.config.display().to_string()
    }

    /// Runs the agent to its end with `-c agent.json` plus `args`.
    fn run(&self, args: &[&str]) -> Run {
        let mut all: Vec<OsString> = vec!["-c".into(), self.config.clone().into()];
        all.extend(args.iter().map(OsString::from));
        run_agent(&self.root, &all)
    }

    fn check_config(&self) -> Run {
        self.run(&["--check-config"])
    }
}

/// What one run of the agent printed, stdout and stderr apart.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The `error: ...` lines of stderr (what a config problem prints, in order).
    fn error_lines(&self) -> Vec<String> {
        self.stderr.lines().filter(|l| l.starts_with("error: ")).map(str::to_owned).collect()
    }

    fn describe(&self) -> String {
        format!("exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs the agent binary in `dir` (HOME and cwd) with the harness environment, stdout and
/// stderr captured apart, and waits for its end (killed and panics after `EXIT_TIMEOUT`).
fn run_agent(dir: &Path, args: &[OsString]) -> Run {
    let n = (0..).find(|n| !dir.join(format!("run-{n}.out")).exists()).expect("free name");
    let (out_path, err_path) = (dir.join(format!("run-{n}.out")), dir.join(format!("run-{n}.err")));
    let mut cmd = Command::new(agent_bin());
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"));
    for (k, v) in agent_env(dir) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn agent");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "agent {args:?} did not exit within {EXIT_TIMEOUT:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&fs::read(&out_path).unwrap_or_default()),
                String::from_utf8_lossy(&fs::read(&err_path).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&fs::read(&out_path).expect("read stdout")).into_owned(),
        stderr: String::from_utf8_lossy(&fs::read(&err_path).expect("read stderr")).into_owned(),
    }
}

fn assert_has(text: &str, needle: &str, run: &Run) {
    assert!(text.contains(needle), "expected {needle:?} in the output\n{}", run.describe());
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// Checks a configuration that must be rejected: `--check-config` exits 2 with every needle on
/// stderr (plus the file's path, and nothing on stdout); a normal start, `--once` and daemon,
/// exits 1 with the same `error:` lines. Returns the `--check-config` run.
fn assert_rejected(config_text: &str, needles: &[&str]) -> Run {
    let s = Setup::new(config_text);
    assert_rejected_in(&s, &[], needles)
}

/// `assert_rejected` for a prepared setup; `extra` goes to every run (e.g. `--config-dir`).
fn assert_rejected_in(s: &Setup, extra: &[&str], needles: &[&str]) -> Run {
    fn with<'a>(first: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [first, extra].concat()
    }
    let check = s.run(&with(&["--check-config"], extra));
    assert_eq!(check.code, Some(2), "--check-config must exit 2\n{}", check.describe());
    assert!(check.stdout.trim().is_empty(), "nothing on stdout when invalid\n{}", check.describe());
    for needle in needles {
        assert_has(&check.stderr, needle, &check);
    }
    let errors = check.error_lines();
    assert!(!errors.is_empty(), "no `error:` line\n{}", check.describe());
    // Every error names a configuration file (the main file, or the drop-in at fault).
    for e in &errors {
        assert!(e.contains(&s.root.display().to_string()), "error without a file name: {e}");
    }
    assert_has(&check.stderr, &format!("{} problem(s) in the configuration", errors.len()), &check);

    // `--once` exits 1; the daemon 78 (EX_CONFIG), which the systemd unit does not restart. A
    // daemon without flows waits for some instead (see `a_daemon_without_flows_waits_for_them`).
    let modes: &[(&[&str], i32)] = if errors.iter().all(|e| e.contains(": no flows:")) {
        &[(&["--once"], 1)]
    } else {
        &[(&["--once"], 1), (&[], 78)]
    };
    for &(mode, code) in modes {
        let start = s.run(&with(mode, extra));
        assert_eq!(start.code, Some(code), "a normal start {mode:?} must exit {code}\n{}", start.describe());
        assert_eq!(start.error_lines(), errors, "same messages at a normal start {mode:?}\n{}", start.describe());
        assert!(!start.stderr.contains('\u{1b}'), "terminal escapes in a redirected stderr\n{}", start.describe());
    }
    check
}

/// The character at 1-based `line` and byte `column` of `text`.
fn char_at(text: &str, line: usize, column: usize) -> char {
    let l = text.split('\n').nth(line - 1).unwrap_or_else(|| panic!("no line {line}"));
    l[column - 1..].chars().next().unwrap_or_else(|| panic!("no column {column} in line {line}: {l:?}"))
}

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETzz01";
const FLOW: &str = r#""filePattern": "/var/log/app/*.log", "kinesisStream": "app-stream""#;

fn with_flow(globals: &str, flow_extra: &str) -> String {
    format!(r#"{{{globals} "flows": [{{{FLOW}{flow_extra}}}]}}"#)
}

/// A workspace for runs against the fake endpoint: `logs/`, a config pointing at `fake`,
/// checkpoints in `state/`.
fn fake_config(s: &Setup, fake: &FakeKinesis, flows: &str) {
    let text = format!(
        r#"{{"kinesis.endpoint": "{}", "firehose.endpoint": "{}", "checkpointFile": "{}", "flows": [{flows}]}}"#,
        fake.endpoint(),
        fake.endpoint(),
        s.path("state/checkpoints.json").display()
    );
    fs::write(&s.config, text).expect("write config");
}

// ---------------------------------------------------------------------------------------------
// Malformed JSON
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_json_names_the_file_line_and_column() {
    // (text, line, column, the character found there, words of the message)
    let cases: &[(&str, usize, usize, char, &str)] = &[
        // A missing comma: serde stops at the next key's opening quote.
        (
            "{\n  \"flows\": [\n    {\"filePattern\": \"/tmp/x.log\" \"kinesisStream\": \"s\"}\n  ]\n}\n",
            3,
            34,
            '"',
            "expected `,` or `}`",
        ),
        // A trailing comma: reported at the closing brace.
        (
            "{\n  \"flows\": [\n    {\"filePattern\": \"/tmp/x.log\", \"kinesisStream\": \"s\",}\n  ]\n}\n",
            3,
            56,
            '}',
            "trailing comma",
        ),
        // A `/` that starts no comment, found by the comment stripper (its own line/column code).
        ("{\n  \"checkpointFile\": \"/x\", / \"flows\": []\n}\n", 2, 27, '/', "a `/` that does not start a comment"),
        // Text after the object.
        ("{\"flows\": []}\n\n  extra\n", 3, 3, 'e', "trailing characters"),
        // Comments before the error do not shift the position (block comments spanning lines).
        ("/* one\n two */ {\n // three\n \"flows\": [,]\n}\n", 4, 12, ',', "expected value"),
    ];
    for &(text, line, column, found, what) in cases {
        assert_eq!(char_at(text, line, column), found, "the expected position is wrong for {text:?}");
        let check = assert_rejected(text, &[what, &format!("line {line}, column {column}")]);
        let errors = check.error_lines();
        assert_eq!(errors.len(), 1, "{}", check.describe());
        assert!(errors[0].contains("agent.json: invalid JSON at line"), "{}", check.describe());
    }
}

#[test]
fn unterminated_comment_empty_file_and_wrong_top_level() {
    let check = assert_rejected("{\n  \"flows\": [] /* oops\n}\n", &["invalid JSON", "`/* */` comment"]);
    // The position given is the end of the file, not where the comment starts (reported).
    assert_has(&check.stderr, "agent.json: ", &check);
    assert_rejected("  \n", &["agent.json: the file is empty", "{\"flows\": [...]}"]);
    assert_rejected("[{\"flows\": []}]", &["agent.json: the top level must be a JSON object, found an array"]);
    assert_rejected(
        "{\"flows\": {\"filePattern\": \"/x\"}}",
        &["agent.json: flows: must be an array of flow objects, found an object"],
    );
    assert_rejected("{\"flows\": [1]}", &["agent.json: flows[0]: must be a flow object, found a number"]);
}

#[test]
fn missing_or_unreadable_configuration_file() {
    let s = Setup::new("{}");
    for (path, why) in [(s.path("nope.json"), "No such file"), (s.root.clone(), "Is a directory")] {
        let p = path.display().to_string();
        for (args, code) in [(&["--check-config"][..], 2), (&["--once"][..], 1)] {
            let mut all: Vec<OsString> = vec!["-c".into(), p.clone().into()];
            all.extend(args.iter().map(OsString::from));
            let run = run_agent(&s.root, &all);
            assert_eq!(run.code, Some(code), "{}", run.describe());
            assert_has(&run.stderr, &format!("{p}: cannot read the configuration file: {why}"), &run);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown and misplaced keys
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_flow_key_names_the_location_and_suggests_the_key() {
    let check = assert_rejected(
        &with_flow("", r#", "maxBufferAgeMilis": 5000"#),
        &[
            "agent.json: flows[0].maxBufferAgeMilis: unknown key `maxBufferAgeMilis`; did you mean `maxBufferAgeMillis`?",
        ],
    );
    assert_eq!(check.error_lines().len(), 1, "{}", check.describe());
    // In the second flow, the index follows.
    assert_rejected(
        &format!(
            r#"{{"flows": [{{{FLOW}}}, {{"filePattern": "/b/*.log", "deliveryStream": "d", "initalPosition": "END_OF_FILE"}}]}}"#
        ),
        &["flows[1].initalPosition: unknown key `initalPosition`; did you mean `initialPosition`?"],
    );
}

#[test]
fn unknown_top_level_key_names_it_and_suggests_the_key() {
    assert_rejected(
        &with_flow(r#""checkpointFiel": "/tmp/cp.json","#, ""),
        &["agent.json: checkpointFiel: unknown key `checkpointFiel`; did you mean `checkpointFile`?"],
    );
    assert_rejected(&with_flow(r#""kinesis.regoin": "eu-west-1","#, ""), &["did you mean `kinesis.region`?"]);
    // Nothing close: just unknown.
    assert_rejected(&with_flow(r#""frobnicate": 1,"#, ""), &["agent.json: frobnicate: unknown key `frobnicate`"]);
    // Close to a key of the other scope: says which and where it goes.
    assert_rejected(
        &with_flow(r#""maxBufferSizeRecord": 10,"#, ""),
        &["maxBufferSizeRecord: unknown key", "the flow key `maxBufferSizeRecords`", "each object of `flows`"],
    );
}

#[test]
fn misplaced_keys_say_where_they_belong() {
    assert_rejected(
        &with_flow(r#""maxBufferAgeMillis": 5000,"#, ""),
        &["agent.json: maxBufferAgeMillis: `maxBufferAgeMillis` is a flow key: move it into each object of `flows`"],
    );
    assert_rejected(
        &with_flow("", r#", "sts.endpoint": "https://sts.eu-west-1.amazonaws.com""#),
        &["agent.json: flows[0].sts.endpoint: `sts.endpoint` is a global key: move it to the top level of the file"],
    );
    // Both at once are both reported.
    let check = assert_rejected(
        &with_flow(r#""filePattern": "/x/*.log","#, r#", "checkpointFile": "/tmp/cp.json""#),
        &[
            "agent.json: filePattern: `filePattern` is a flow key",
            "flows[0].checkpointFile: `checkpointFile` is a global key",
        ],
    );
    assert_eq!(check.error_lines().len(), 2, "{}", check.describe());
}

// ---------------------------------------------------------------------------------------------
// Types and ranges
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_types_name_the_key_and_what_is_allowed() {
    let check = assert_rejected(
        &with_flow(
            "",
            r#", "maxBufferSizeRecords": "lots", "initialPosition": "random-ish", "partitionKeyOption": "random""#,
        ),
        &[
            r#"agent.json: flows[0].maxBufferSizeRecords: must be a whole number from 1 to 500, found "lots""#,
            r#"agent.json: flows[0].initialPosition: must be `START_OF_FILE` or `END_OF_FILE`, found "random-ish""#,
            r#"agent.json: flows[0].partitionKeyOption: must be `RANDOM`, `DETERMINISTIC` or an object, found "random" (values are case-sensitive: write `RANDOM`)"#,
        ],
    );
    // All problems of a load come together.
    assert_eq!(check.error_lines().len(), 3, "{}", check.describe());
    assert_rejected(
        &with_flow("", r#", "initialPosition": "start_of_file""#),
        &["found \"start_of_file\" (values are case-sensitive: write `START_OF_FILE`)"],
    );
    assert_rejected(
        &with_flow(r#""useHttpGzip": "maybe","#, ""),
        &[r#"agent.json: useHttpGzip: must be true or false (also "yes"/"no""#, r#"found "maybe""#],
    );
    assert_rejected(
        &with_flow("", r#", "maxBufferSizeRecords": 1.5"#),
        &["flows[0].maxBufferSizeRecords: must be a whole number from 1 to 500, found 1.5"],
    );
    assert_rejected(&with_flow("", r#", "skipHeaderLines": [1]"#), &["flows[0].skipHeaderLines", "found an array"]);
}

#[test]
fn out_of_range_values_name_the_key_and_the_range() {
    let check = assert_rejected(
        &with_flow("", r#", "maxBufferAgeMillis": 10, "maxBufferSizeRecords": 501"#),
        &[
            "agent.json: flows[0].maxBufferAgeMillis: must be a whole number from 1000 to 900000, found 10",
            "agent.json: flows[0].maxBufferSizeRecords: must be a whole number from 1 to 500, found 501",
        ],
    );
    assert_eq!(check.error_lines().len(), 2, "{}", check.describe());
    assert_rejected(
        &with_flow("", r#", "maxBufferSizeBytes": 5242881"#),
        &["flows[0].maxBufferSizeBytes: must be a whole number from 1 to 5242880, found 5242881"],
    );
    assert_rejected(
        &with_flow(r#""checkpointTimeToLiveDays": 0,"#, ""),
        &["agent.json: checkpointTimeToLiveDays: must be a whole number from 1 to 2147483647, found 0"],
    );
    assert_rejected(
        &with_flow("", r#", "retryInitialBackoffMillis": 500, "retryMaxBackoffMillis": 100"#),
        &["flows[0].retryMaxBackoffMillis: must be at least `retryInitialBackoffMillis` (500), found 100"],
    );
}

// ---------------------------------------------------------------------------------------------
// Missing pieces
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_destination_flows_or_pattern() {
    assert_rejected(
        r#"{"flows": [{"filePattern": "/var/log/app/*.log"}]}"#,
        &["agent.json: flows[0]: needs `kinesisStream` or `deliveryStream`: where to send the records"],
    );
    assert_rejected(
        r#"{"flows": [{"filePattern": "/var/log/app/*.log", "kinesisStream": ""}]}"#,
        &["agent.json: flows[0].kinesisStream: must not be empty"],
    );
    assert_rejected(
        r#"{"flows": [{"kinesisStream": "s"}]}"#,
        &["agent.json: flows[0]: needs `filePattern`: the files to tail, e.g. \"/var/log/app/*.log\""],
    );
    for text in ["{}", r#"{"flows": []}"#, r#"{"flows": null}"#] {
        let check = assert_rejected(text, &["agent.json: no flows: add at least one flow to `flows`"]);
        // Says where else flows may come from.
        assert_has(&check.stderr, "agent.d", &check);
    }
    assert_rejected(
        r#"{"flows": [{"filePattern": "/var/log/", "kinesisStream": "s"}]}"#,
        &["flows[0].filePattern: must name files, not a directory", "ends with `/`"],
    );
    assert_rejected(
        &format!(r#"{{"flows": [{{{FLOW}}}, {{{FLOW}}}]}}"#),
        &["agent.json: flows[1]: duplicate flow: flows[0] of", "kinesis:app-stream:/var/log/app/*.log"],
    );
}

/// One broken config, started the three ways, gives the same messages (also checked by every
/// `assert_rejected`): exit 2 for `--check-config`, 1 for `--once` and for a daemon start.
#[test]
fn invalid_config_at_a_normal_start_exits_1_with_the_same_messages() {
    let text = r#"{
        "maxBufferAgeMillis": 1000,
        "flows": [
            {"filePattern": "/var/log/a.log", "kinesisStream": "a", "maxBufferAgeMilis": 1000},
            {"filePattern": "/var/log/b.log", "maxBufferSizeRecords": 501}
        ]
    }"#;
    let check = assert_rejected(
        text,
        &[
            "maxBufferAgeMillis: `maxBufferAgeMillis` is a flow key",
            "flows[0].maxBufferAgeMilis: unknown key",
            "flows[1]: needs `kinesisStream` or `deliveryStream`",
            "flows[1].maxBufferSizeRecords: must be a whole number from 1 to 500, found 501",
        ],
    );
    assert_eq!(check.error_lines().len(), 4, "{}", check.describe());
}

// ---------------------------------------------------------------------------------------------
// A valid configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn check_config_on_a_valid_config_prints_the_flows_and_each_notice_once() {
    let s = Setup::new("");
    let text = format!(
        r#"{{
            "checkpointFile": "{cp}",
            "flows": [
                {{"filePattern": "/var/log/app/*.log", "kinesisStream": "app-stream",
                  "partitionKeyOption": "DETERMINISTIC", "fileFooterPattern": "^END$"}},
                {{"filePattern": "/var/log/web/**/access.log", "deliveryStream": "web-delivery",
                  "initialPosition": "START_OF_FILE", "fileFooterPattern": "^EOF"}}
            ]
        }}"#,
        cp = s.path("cp.json").display()
    );
    fs::write(&s.config, text).unwrap();
    let run = s.check_config();
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let out = &run.stdout;
    for needle in [
        format!("configuration: {}", s.config_str()),
        format!("checkpoints: {} (kept 7 days)", s.path("cp.json").display()),
        "flows[0] from".to_owned(),
        "filePattern /var/log/app/*.log".to_owned(),
        "kinesisStream app-stream".to_owned(),
        "flows[1] from".to_owned(),
        "filePattern /var/log/web/**/access.log".to_owned(),
        "deliveryStream web-delivery".to_owned(),
    ] {
        assert_has(out, &needle, &run);
    }
    // Enum values are shown as they are written in agent.json.
    assert_has(out, "partitionKeyOption DETERMINISTIC", &run);
    assert_has(out, "initialPosition START_OF_FILE", &run);
    assert_has(out, "initialPosition END_OF_FILE", &run);
    // One notice for the not-yet-supported key, naming both flows.
    assert_eq!(count(out, "fileFooterPattern"), 1, "{}", run.describe());
    assert_has(out, "flows[0].fileFooterPattern (also flows[1]): accepted but not yet supported", &run);
    assert!(run.error_lines().is_empty(), "{}", run.describe());
    // Nothing was created: --check-config does not touch the checkpoint file.
    assert!(!s.path("cp.json").exists());
}

/// Comments of both kinds are accepted, and a `//` or `/*` inside a string is not a comment:
/// the endpoint URL and the glob survive, and records arrive. The notice for the
/// not-yet-supported key is logged once at a normal start too.
#[test]
fn comments_are_accepted_and_notices_are_logged_once() {
    let fake = FakeKinesis::start();
    let s = Setup::new("");
    fs::create_dir(s.path("logs")).unwrap();
    write_lines(&s.path("logs/a.log"), 0..50, "a");
    write_lines(&s.path("logs/b.log"), 0..30, "b");
    let text = format!(
        r#"// agent.json with comments
{{
    /* the fake endpoint:
       a URL holds `//` */
    "kinesis.endpoint": "{ep}", // trailing comment
    "checkpointFile": "{cp}",
    "flows": [
        {{ "filePattern": "{logs}/*a.log", /* a glob holding `/*` */ "kinesisStream": "s1",
           "fileFooterPattern": "^END a$" }},
        // second flow
        {{ "filePattern": "{logs}/b.log", "kinesisStream": "s2", "fileFooterPattern": "^END b$" }}
    ]
}}
"#,
        ep = fake.endpoint(),
        cp = s.path("state/cp.json").display(),
        logs = s.path("logs").display()
    );
    fs::write(&s.config, text).unwrap();
    let check = s.check_config();
    assert_eq!(check.code, Some(0), "{}", check.describe());
    assert_has(&check.stdout, &format!("filePattern {}/*a.log", s.path("logs").display()), &check);

    let run = s.run(&["--once"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let mut expected: Vec<String> = expected_lines(0..50, "a").collect();
    expected.extend(expected_lines(0..30, "b"));
    assert_exactly_once(expected, &split_lines(&fake.record_data()));
    let streams: std::collections::BTreeSet<String> = fake.all_records().into_iter().map(|r| r.stream).collect();
    assert_eq!(streams.into_iter().collect::<Vec<_>>(), ["s1", "s2"]);
    assert_eq!(count(&run.stderr, "fileFooterPattern"), 1, "{}", run.describe());
    assert_has(&run.stderr, "flows[0].fileFooterPattern (also flows[1]): accepted but not yet supported", &run);
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[test]
fn the_secret_key_is_never_printed() {
    let pair = format!(r#""awsAccessKeyId": "AKIAEXAMPLEKEYID0001", "awsSecretAccessKey": "{SECRET}","#);
    let cases = [
        // An error elsewhere.
        with_flow(&pair, r#", "maxBufferAgeMillis": 1"#),
        // The secret of the wrong type.
        with_flow(&format!(r#""awsAccessKeyId": "AKIA1", "awsSecretAccessKey": {{"value": "{SECRET}"}},"#), ""),
        with_flow(&format!(r#""awsAccessKeyId": "AKIA1", "awsSecretAccessKey": ["{SECRET}"],"#), ""),
        // Only half of the pair.
        with_flow(&format!(r#""awsSecretAccessKey": "{SECRET}","#), ""),
        // Misspelled key.
        with_flow(&format!(r#""awsAccessKeyId": "AKIA1", "awsSecretAccesKey": "{SECRET}","#), ""),
        // Misplaced into a flow.
        with_flow(r#""awsAccessKeyId": "AKIA1","#, &format!(r#", "awsSecretAccessKey": "{SECRET}""#)),
        // Invalid JSON right after it, and a raw control character inside it.
        format!(r#"{{"awsAccessKeyId": "AKIA1", "awsSecretAccessKey": "{SECRET}" "flows": []}}"#),
        format!("{{\"awsAccessKeyId\": \"AKIA1\", \"awsSecretAccessKey\": \"{SECRET}\t\", \"flows\": []}}"),
    ];
    for text in &cases {
        let check = assert_rejected(text, &[]);
        let s = Setup::new(text);
        for run in [check, s.run(&["--once"]), s.run(&["--once", "-L", "trace"])] {
            assert!(!run.both().contains(SECRET), "the secret was printed for {text}\n{}", run.describe());
            assert!(!run.both().contains("SECRETzz"), "part of the secret was printed\n{}", run.describe());
        }
    }

    // In a drop-in file (where it is ignored) next to an error.
    let s = Setup::new(&with_flow("", ""));
    fs::create_dir(s.path("agent.d")).unwrap();
    fs::write(
        s.path("agent.d/creds.json"),
        format!(r#"{{"awsAccessKeyId": "AKIA1", "awsSecretAccessKey": "{SECRET}", "flows": [{{"filePattern": 1}}]}}"#),
    )
    .unwrap();
    let check = assert_rejected_in(&s, &[], &["creds.json: flows[0]: needs `kinesisStream` or `deliveryStream`"]);
    assert!(!check.both().contains(SECRET), "{}", check.describe());

    // A valid configuration, checked and run with every log level on.
    let fake = FakeKinesis::start();
    let s = Setup::new("");
    fs::create_dir(s.path("logs")).unwrap();
    write_lines(&s.path("logs/a.log"), 0..10, "a");
    let text = format!(
        r#"{{{pair} "kinesis.endpoint": "{}", "checkpointFile": "{}",
            "flows": [{{"filePattern": "{}/*.log", "kinesisStream": "s"}}]}}"#,
        fake.endpoint(),
        s.path("state/cp.json").display(),
        s.path("logs").display()
    );
    fs::write(&s.config, text).unwrap();
    let check = s.check_config();
    assert_eq!(check.code, Some(0), "{}", check.describe());
    let run = s.run(&["--once", "-L", "trace"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(fake.record_count(), 10);
    for r in [check, run] {
        assert!(!r.both().contains(SECRET), "the secret was printed\n{}", tail(&r.both(), 8000));
        assert!(!r.both().contains("SECRETzz"), "part of the secret was printed\n{}", tail(&r.both(), 8000));
    }
}

// ---------------------------------------------------------------------------------------------
// Drop-in files
// ---------------------------------------------------------------------------------------------

#[test]
fn dropin_directory_adds_flows() {
    let s = Setup::new(&with_flow("", ""));
    let dir = s.path("conf.d");
    fs::create_dir(&dir).unwrap();
    let extra = dir.join("10-extra.json");
    fs::write(
        &extra,
        r#"// more flows
        {"flows": [{"filePattern": "/var/log/x/*.log", "kinesisStream": "x-stream"},
                   {"filePattern": "/var/log/y.log", "deliveryStream": "y-delivery"}]}"#,
    )
    .unwrap();
    fs::write(dir.join("README.txt"), "not json, not read").unwrap();
    fs::write(dir.join("old.json.bak"), "{ broken").unwrap();
    let dir_arg = dir.display().to_string();
    let run = s.run(&["--check-config", "--config-dir", &dir_arg]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_has(&run.stdout, &format!("configuration: {}, {}", s.config_str(), extra.display()), &run);
    assert_has(&run.stdout, &format!("flows[1] from {}", extra.display()), &run);
    assert_has(&run.stdout, "filePattern /var/log/x/*.log", &run);
    assert_has(&run.stdout, "kinesisStream x-stream", &run);
    assert_has(&run.stdout, &format!("flows[2] from {}", extra.display()), &run);
    assert_has(&run.stdout, "deliveryStream y-delivery", &run);

    // Without --config-dir, `agent.d` beside the main file is read.
    fs::rename(&dir, s.path("agent.d")).unwrap();
    let run = s.check_config();
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_has(&run.stdout, &format!("flows[2] from {}", s.path("agent.d/10-extra.json").display()), &run);

    // A main file without flows is fine when a drop-in has some.
    fs::write(&s.config, "{}").unwrap();
    let run = s.check_config();
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_has(&run.stdout, "flows[0] from", &run);

    // A missing drop-in directory is fine.
    fs::write(&s.config, with_flow("", "")).unwrap();
    let run = s.run(&["--check-config", "--config-dir", "/nonexistent/kinesis-agent.d"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
}

#[test]
fn broken_dropin_is_an_error_naming_that_file() {
    let s = Setup::new(&with_flow("", ""));
    let dir = s.path("conf.d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("10-good.json"), r#"{"flows": [{"filePattern": "/g.log", "kinesisStream": "g"}]}"#).unwrap();
    let broken = dir.join("20-broken.json");
    let text = "{\"flows\": [\n  {\"filePattern\": \"/b.log\",\n}";
    assert_eq!(char_at(text, 3, 1), '}');
    fs::write(&broken, text).unwrap();
    let dir_arg = dir.display().to_string();
    let check = assert_rejected_in(
        &s,
        &["--config-dir", &dir_arg],
        &[&format!("{}: invalid JSON at line 3, column 1", broken.display())],
    );
    assert_eq!(check.error_lines().len(), 1, "only the drop-in is blamed\n{}", check.describe());

    // Bad keys in a drop-in name the drop-in, and a global key says where it must go.
    fs::write(
        &broken,
        r#"{"flows": [{"filePattern": "/b.log", "kinesisStream": "b", "maxBufferAgeMilis": 1000, "sts.endpoint": "x"}]}"#,
    )
    .unwrap();
    assert_rejected_in(
        &s,
        &["--config-dir", &dir_arg],
        &[
            &format!("{}: flows[0].maxBufferAgeMilis: unknown key", broken.display()),
            &format!("{}: flows[0].sts.endpoint: `sts.endpoint` is a global key", broken.display()),
            &format!("top level of {}", s.config_str()),
        ],
    );

    // A --config-dir that is a regular file.
    let file_arg = s.config_str();
    assert_rejected_in(
        &s,
        &["--config-dir", &file_arg],
        &[&format!("{}: cannot read the drop-in directory", s.config_str())],
    );
}

// ---------------------------------------------------------------------------------------------
// Unusable checkpoint store
// ---------------------------------------------------------------------------------------------

#[test]
fn checkpoint_file_under_a_regular_file_is_fatal() {
    let fake = FakeKinesis::start();
    let s = Setup::new("");
    fs::create_dir(s.path("logs")).unwrap();
    write_lines(&s.path("logs/a.log"), 0..5, "a");
    fs::write(s.path("plain-file"), "not a directory").unwrap();
    for checkpoint in [s.path("plain-file/checkpoints.json"), s.path("plain-file/sub/checkpoints.json")] {
        let text = format!(
            r#"{{"kinesis.endpoint": "{}", "checkpointFile": "{}",
                "flows": [{{"filePattern": "{}/*.log", "kinesisStream": "s"}}]}}"#,
            fake.endpoint(),
            checkpoint.display(),
            s.path("logs").display()
        );
        fs::write(&s.config, text).unwrap();
        // The configuration itself is valid.
        let check = s.check_config();
        assert_eq!(check.code, Some(0), "{}", check.describe());
        let run = s.run(&["--once"]);
        assert_eq!(run.code, Some(1), "{}", run.describe());
        let parent = checkpoint.parent().unwrap().display().to_string();
        assert_has(&run.stderr, &format!("cannot create the checkpoint directory {parent}"), &run);
        assert_has(&run.stderr, "`checkpointFile`", &run);
        assert_eq!(fake.record_count(), 0, "nothing is sent without a checkpoint store");
    }
}

/// `checkpointFile` whose parent is a regular file: the message should say that the path is not
/// a directory. Today it is "cannot create the checkpoint directory <path>: File exists (os error
/// 17)", which reads as if the directory already existed and all was well.
#[test]
fn checkpoint_parent_that_is_a_file_says_not_a_directory() {
    let s = Setup::new("");
    fs::write(s.path("plain-file"), "x").unwrap();
    let text = format!(
        r#"{{"kinesis.endpoint": "http://127.0.0.1:9", "checkpointFile": "{}",
            "flows": [{{"filePattern": "{}/*.log", "kinesisStream": "s"}}]}}"#,
        s.path("plain-file/checkpoints.json").display(),
        s.root.display()
    );
    fs::write(&s.config, text).unwrap();
    let run = s.run(&["--once"]);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert_has(&run.stderr, "not a directory", &run);
    assert!(!run.stderr.contains("File exists"), "{}", run.describe());
}

#[test]
fn a_second_agent_on_the_same_checkpoint_file_exits_1() {
    let fake = FakeKinesis::start();
    let s = Setup::new("");
    fs::create_dir(s.path("logs")).unwrap();
    fake_config(
        &s,
        &fake,
        &format!(r#"{{"filePattern": "{}/*.log", "kinesisStream": "s"}}"#, s.path("logs").display()),
    );
    let home = s.path("first");
    fs::create_dir(&home).unwrap();
    let config = s.config_str();
    let mut first = AgentProcess::spawn_in(&home, ["-c", config.as_str()], &[]);
    // The store is opened (and locked) before discovery, which warns about the empty glob.
    assert!(
        first.wait_for_log("no file matches", Duration::from_secs(30)),
        "first agent not running:\n{}",
        first.log()
    );
    assert!(first.is_running());

    let checkpoint = s.path("state/checkpoints.json");
    for mode in [&["--once"][..], &[][..]] {
        let run = s.run(mode);
        assert_eq!(run.code, Some(1), "{mode:?}\n{}", run.describe());
        assert_has(
            &run.stderr,
            &format!("another kinesis-agent already uses the checkpoint file {}", checkpoint.display()),
            &run,
        );
        assert_has(&run.stderr, "give this one its own `checkpointFile`", &run);
    }
    // The first one is unaffected.
    assert!(first.is_running(), "{}", first.log());
    first.sigterm();
    let status = first.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", first.log());
    // Once it is gone, the lock is free again.
    let run = s.run(&["--once"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
}

// ---------------------------------------------------------------------------------------------
// Unreadable files
// ---------------------------------------------------------------------------------------------

/// When the tests run as root (which ignores file modes), the agent runs as nobody.
fn unprivileged() -> Option<(u32, u32)> {
    // SAFETY: plain getter syscall.
    (unsafe { libc::geteuid() } == 0).then_some((65534, 65534))
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A setup that nobody can use: dirs 0777, files 0644; `logs/a.log` readable (100 lines) and
/// `logs/b.log` not (0000, 40 lines).
fn unreadable_setup(fake: &FakeKinesis, extra: &str) -> (Setup, PathBuf, PathBuf) {
    let s = Setup::new("");
    let logs = s.path("logs");
    fs::create_dir(&logs).unwrap();
    let (a, b) = (logs.join("a.log"), logs.join("b.log"));
    write_lines(&a, 0..100, "a");
    write_lines(&b, 0..40, "b");
    fake_config(&s, fake, &format!(r#"{{"filePattern": "{}/*.log", "kinesisStream": "s"{extra}}}"#, logs.display()));
    chmod(&s.root, 0o777);
    chmod(&logs, 0o777);
    chmod(&s.config, 0o644);
    chmod(&a, 0o644);
    chmod(&b, 0o000);
    (s, a, b)
}

#[test]
fn an_unreadable_file_is_reported_once_and_makes_once_incomplete() {
    let fake = FakeKinesis::start();
    let (s, _a, b) = unreadable_setup(&fake, "");
    let config = s.config_str();
    let mut agent = AgentProcess::spawn_in_as(&s.root, ["-c", config.as_str(), "--once"], &[], unprivileged());
    let status = agent.wait_exit(EXIT_TIMEOUT);
    let log = agent.log();
    // The other files are shipped; the exit code says the backfill is incomplete.
    assert_eq!(status.code(), Some(2), "an unreadable file makes --once incomplete\n{log}");
    assert_exactly_once(expected_lines(0..100, "a"), &split_lines(&fake.record_data()));
    let needle = format!("cannot open {}", b.display());
    assert_eq!(count(&log, &needle), 1, "`{needle}` once\n{log}");
    assert!(log.contains("Permission denied"), "{log}");
    // The checkpoint store was written by the unprivileged agent.
    assert!(s.path("state/checkpoints.json").exists(), "{log}");
}

/// A daemon keeps retrying the unreadable file (reporting it once) and ships it when it
/// becomes readable.
#[test]
fn an_unreadable_file_is_picked_up_once_readable() {
    let fake = FakeKinesis::start();
    let (s, _a, b) = unreadable_setup(&fake, r#", "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000"#);
    let config = s.config_str();
    let mut agent = AgentProcess::spawn_in_as(&s.root, ["-c", config.as_str()], &[], unprivileged());
    let needle = format!("cannot open {}", b.display());
    assert!(agent.wait_for_log(&needle, Duration::from_secs(30)), "{}", agent.log());
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.record_count() < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several rescans (every second) later, still reported once.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(agent.is_running(), "{}", agent.log());
    assert_eq!(count(&agent.log(), &needle), 1, "{}", agent.log());
    assert_exactly_once(expected_lines(0..100, "a"), &split_lines(&fake.record_data()));

    chmod(&b, 0o644);
    assert!(agent.wait_for_log("is readable now", Duration::from_secs(30)), "{}", agent.log());
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.record_count() < 140 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    let mut expected: Vec<String> = expected_lines(0..100, "a").collect();
    expected.extend(expected_lines(0..40, "b"));
    assert_exactly_once(expected, &split_lines(&fake.record_data()));
    assert_eq!(count(&agent.log(), &needle), 1, "{}", agent.log());
}

// ---------------------------------------------------------------------------------------------
// Globs that match nothing
// ---------------------------------------------------------------------------------------------

#[test]
fn a_glob_matching_nothing_is_warned_about_once_by_a_daemon() {
    let fake = FakeKinesis::start();
    let s = Setup::new("");
    fs::create_dir(s.path("logs")).unwrap();
    let pattern = format!("{}/*.log", s.path("logs").display());
    fake_config(&s, &fake, &format!(r#"{{"filePattern": "{pattern}", "kinesisStream": "s"}}"#));
    let config = s.config_str();
    let home = s.path("home");
    fs::create_dir(&home).unwrap();
    let mut agent = AgentProcess::spawn_in(&home, ["-c", config.as_str()], &[]);
    let needle = format!("no file matches {pattern}");
    assert!(agent.wait_for_log(&needle, Duration::from_secs(30)), "{}", agent.log());
    // The re-glob runs every second: still one warning after several.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(agent.is_running(), "{}", agent.log());
    assert_eq!(count(&agent.log(), &needle), 1, "{}", agent.log());
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(30)).code(), Some(0), "{}", agent.log());
    assert_eq!(fake.record_count(), 0);
}

#[test]
fn a_glob_matching_nothing_with_once_exits_0_and_sends_nothing() {
    let fake = FakeKinesis::start();
    let s = Setup::new("");
    fs::create_dir(s.path("logs")).unwrap();
    fs::write(s.path("logs/other.txt"), "not matched\n").unwrap();
    // Also a pattern whose directory does not exist.
    let patterns = [format!("{}/*.log", s.path("logs").display()), format!("{}/*.log", s.path("missing").display())];
    fake_config(
        &s,
        &fake,
        &format!(
            r#"{{"filePattern": "{}", "kinesisStream": "s"}}, {{"filePattern": "{}", "kinesisStream": "s"}}"#,
            patterns[0], patterns[1]
        ),
    );
    let run = s.run(&["--once"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(fake.record_count(), 0);
    // (The check at start describes the stream; nothing is put.)
    assert_eq!(fake.requests().iter().filter(|r| r.target.ends_with("PutRecords")).count(), 0);
    for p in &patterns {
        assert_eq!(count(&run.stderr, &format!("no file matches {p}")), 1, "{}", run.describe());
    }
    assert_has(&run.stderr, "0 record(s) read, 0 sent", &run);
}

// ---------------------------------------------------------------------------------------------
// Known agent bugs (fail today)
// ---------------------------------------------------------------------------------------------

/// `--check-config` accepts a `filePattern` that is not a valid glob; a normal start then fails
/// with a message that names neither the configuration file nor what is allowed. The pattern
/// is only compiled in `agent::run` (src/agent.rs, `Pattern::new`), not validated by
/// `parse_pattern` (src/config/parse.rs).
#[test]
fn an_invalid_glob_is_rejected_by_check_config() {
    assert_rejected(
        r#"{"flows": [{"filePattern": "/var/log/[app.log", "kinesisStream": "s"}]}"#,
        &["agent.json: flows[0].filePattern", "/var/log/[app.log", "unclosed character class"],
    );
}

/// `sudo kinesis-agent --once` leaves root-owned 0644 lock, checkpoint and (when interrupted)
/// temp files in the service's state directory: the service's own user still starts there, and
/// carries on from the checkpoint.
#[test]
fn files_left_by_root_in_the_state_directory_do_not_keep_the_service_user_out() {
    let Some(user) = unprivileged() else { return };
    let fake = FakeKinesis::start();
    let (s, a, b) = unreadable_setup(&fake, "");
    chmod(&b, 0o644);
    let run = s.run(&["--once"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let state = s.path("state");
    chmod(&state, 0o777);
    fs::write(state.join("checkpoints.json.tmp"), "partial").unwrap();
    for f in ["checkpoints.json", "checkpoints.json.lock", "checkpoints.json.tmp"] {
        chmod(&state.join(f), 0o644);
    }
    write_lines(&a, 100..150, "a");
    let config = s.config_str();
    let mut agent = AgentProcess::spawn_in_as(&s.root, ["-c", config.as_str(), "--once"], &[], Some(user));
    let status = agent.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    let mut expected: Vec<String> = expected_lines(0..150, "a").collect();
    expected.extend(expected_lines(0..40, "b"));
    assert_exactly_once(expected, &split_lines(&fake.record_data()));
}

/// A `checkpointFile` that is the Java agent's SQLite database is left untouched; under the
/// systemd unit (`STATE_DIRECTORY` set) ours goes to the state directory, since the Java agent's
/// directory is neither ours nor writable there; elsewhere beside it, as `<path>.json`.
#[test]
fn a_java_sqlite_checkpoint_is_left_alone() {
    let fake = FakeKinesis::start();
    let s = Setup::new("");
    fs::create_dir(s.path("logs")).unwrap();
    fs::create_dir(s.path("java")).unwrap();
    fs::create_dir(s.path("state")).unwrap();
    write_lines(&s.path("logs/a.log"), 0..10, "a");
    let sqlite = s.path("java/checkpoints");
    let db = b"SQLite format 3\0 the Java agent's database".to_vec();
    fs::write(&sqlite, &db).unwrap();
    let text = format!(
        r#"{{"kinesis.endpoint": "{}", "checkpointFile": "{}",
            "flows": [{{"filePattern": "{}/*.log", "kinesisStream": "s"}}]}}"#,
        fake.endpoint(),
        sqlite.display(),
        s.path("logs").display()
    );
    fs::write(&s.config, text).unwrap();
    let config = s.config_str();
    let state = s.path("state").display().to_string();
    let mut agent =
        AgentProcess::spawn_in(&s.root, ["-c", config.as_str(), "--once"], &[("STATE_DIRECTORY", state.as_str())]);
    let status = agent.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert!(agent.log().contains("is a Java agent (SQLite) checkpoint database"), "{}", agent.log());
    assert_eq!(fs::read(&sqlite).unwrap(), db, "the Java agent's database is untouched");
    assert!(s.path("state/checkpoints.json").exists(), "{}", agent.log());
    assert!(!s.path("java/checkpoints.json").exists());
    // Without the unit's state directory: beside it.
    write_lines(&s.path("logs/a.log"), 10..20, "a");
    let run = s.run(&["--once"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(s.path("java/checkpoints.json").exists(), "{}", run.describe());
    assert_eq!(fs::read(&sqlite).unwrap(), db);
}

/// The packages' agent.json has no flows. A daemon started with it does not fail (an enabled
/// unit would fail at every boot): it waits, says why once, and starts the flows a SIGHUP brings;
/// SIGTERM while waiting is a clean stop.
#[test]
fn a_daemon_without_flows_waits_for_them() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let base = serde_json::json!({ "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION, "flows": [] });
    ws.write_config(base.clone());
    let mut idle = ws.spawn(false, &[]);
    assert!(idle.wait_for_log("waiting for one", Duration::from_secs(10)), "{}", idle.log());
    idle.sigterm();
    assert_eq!(idle.wait_exit(Duration::from_secs(10)).code(), Some(0), "{}", idle.log());

    let mut agent = ws.spawn(false, &[]);
    assert!(agent.wait_for_log("waiting for one", Duration::from_secs(10)), "{}", agent.log());
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.is_running(), "{}", agent.log());
    write_lines(&ws.file("a.log"), 0..50, "W");
    let mut cfg = base;
    cfg["flows"] = serde_json::json!([{ "filePattern": ws.pattern("*.log"), "kinesisStream": "s",
                            "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000 }]);
    ws.write_config(cfg);
    agent.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fake.record_count() < 50 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_exactly_once(expected_lines(0..50, "W"), &fake.record_data());
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", agent.log());
}
