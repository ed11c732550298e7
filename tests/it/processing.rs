//! End-to-end `dataProcessingOptions` with the real binary and `--once` against the fake
//! endpoint: each flow's records are checked one by one against the Java agent's output for the
//! same lines, dropped lines are counted and still move the checkpoint, and a file whose every
//! line is dropped is checkpointed to its end.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn flow(ws: &Workspace, glob: &str, stream: &str, extra: Value) -> Value {
    let mut f = json!({
        "filePattern": ws.pattern(glob),
        "kinesisStream": stream,
        "initialPosition": "START_OF_FILE",
        "maxBufferAgeMillis": 1000,
    });
    for (k, v) in extra.as_object().expect("object") {
        f[k] = v.clone();
    }
    f
}

fn config(fake: &FakeKinesis, flows: Vec<Value>) -> Value {
    json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "shutdownTimeoutMillis": 5000,
        "flows": flows,
    })
}

/// The records `stream` received, in the order they were accepted, as text.
fn received(fake: &FakeKinesis, stream: &str) -> Vec<String> {
    fake.all_records()
        .into_iter()
        .filter(|r| r.stream == stream)
        .map(|r| String::from_utf8(r.data).expect("converted records are UTF-8"))
        .collect()
}

fn assert_records(fake: &FakeKinesis, stream: &str, expected: &[&str], log: &str) {
    let got = received(fake, stream);
    assert_eq!(got.len(), expected.len(), "{stream}: {got:#?}\n{}", tail(log, 4000));
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g, e, "{stream}: record {i} differs\n{}", tail(log, 4000));
    }
}

#[test]
fn logs_csv_and_multi_line_records_are_converted_as_java_does() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();

    let access = ws.file("access.log");
    let access_text = concat!(
        "192.168.1.10 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326 \"http://www.example.com/start.html\" \"Mozilla/4.08 [en] (Win98; I ;Nav)\"\n",
        "this line is not an access log line\n",
        "2001:db8::7 - - [22/Nov/2026:03:56:26 +0000] \"GET /straße?q=日本 HTTP/1.1\" 404 - \"-\" \"curl/8.5.0\"\r\n",
        "10.0.0.1 - - [22/Nov/2026:03:56:27 +0000] \"GET / HTTP/1.1\" 200 10 \"-\" \"\"\n",
    );
    std::fs::write(&access, access_text).unwrap();

    let csv = ws.file("people.csv");
    std::fs::write(&csv, "1,Zoë,zoe@example.com\n2,,\n3\n\"4\",\"Doe, Jane\",x,extra\n").unwrap();
    let quoted = ws.file("people.tsv");
    std::fs::write(&quoted, "1\t\"Doe\tJane\"\t\n\"2\"\t\"say \"\"hi\"\"\"\n").unwrap();

    let app = ws.file("app.trace");
    std::fs::write(
        &app,
        "2026-11-22 10:00:00 ERROR boom\n\tat a.B.c(B.java:1)\n\tat d.E.f(E.java:2)\n2026-11-22 10:00:01 INFO fine\n",
    )
    .unwrap();

    ws.write_config(config(
        &fake,
        vec![
            flow(
                &ws,
                "access.log",
                "web",
                json!({"dataProcessingOptions": [
                    {"optionName": "LOGTOJSON", "logFormat": "COMBINEDAPACHELOG"},
                    {"optionName": "ADDMETADATA", "metadata": {"env": "prod", "rack": 7, "weight": 0.5}}
                ]}),
            ),
            flow(
                &ws,
                "people.csv",
                "csv",
                json!({"dataProcessingOptions": [
                    {"optionName": "CSVTOJSON", "customFieldNames": ["id", "name", "email"]}
                ]}),
            ),
            flow(
                &ws,
                "people.tsv",
                "tsv",
                json!({"dataProcessingOptions": [
                    {"optionName": "CSVTOJSON", "customFieldNames": ["id", "name", "note"], "csvMode": "RFC4180",
                     "delimiter": "\\t", "jsonFormat": "PRETTYPRINT"}
                ]}),
            ),
            flow(
                &ws,
                "app.trace",
                "app",
                json!({
                    "multiLineStartPattern": "\\d{4}-\\d{2}-\\d{2} ",
                    "dataProcessingOptions": [{"optionName": "SINGLELINE", "parseOptions": ["ESCAPE_NEW_LINE"]}]
                }),
            ),
        ],
    ));
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert!(status.success(), "{}", tail(&log, 4000));

    assert_records(
        &fake,
        "web",
        &[
            "{\"metadata\":{\"env\":\"prod\",\"rack\":7,\"weight\":0.5},\"data\":\"{\\\"host\\\":\\\"192.168.1.10\\\",\\\"ident\\\":null,\\\"authuser\\\":\\\"frank\\\",\\\"datetime\\\":\\\"10/Oct/2000:13:55:36 -0700\\\",\\\"request\\\":\\\"GET /apache_pb.gif HTTP/1.0\\\",\\\"response\\\":\\\"200\\\",\\\"bytes\\\":\\\"2326\\\",\\\"referer\\\":\\\"http://www.example.com/start.html\\\",\\\"agent\\\":\\\"Mozilla/4.08 [en] (Win98; I ;Nav)\\\"}\"}\n",
            // IPv6 and a CRLF ending: converted here (the Java agent drops the line).
            "{\"metadata\":{\"env\":\"prod\",\"rack\":7,\"weight\":0.5},\"data\":\"{\\\"host\\\":\\\"2001:db8::7\\\",\\\"ident\\\":null,\\\"authuser\\\":null,\\\"datetime\\\":\\\"22/Nov/2026:03:56:26 +0000\\\",\\\"request\\\":\\\"GET /straße?q=日本 HTTP/1.1\\\",\\\"response\\\":\\\"404\\\",\\\"bytes\\\":null,\\\"referer\\\":null,\\\"agent\\\":\\\"curl/8.5.0\\\"}\"}\n",
        ],
        &log,
    );
    assert_records(
        &fake,
        "csv",
        &[
            "{\"id\":\"1\",\"name\":\"Zoë\",\"email\":\"zoe@example.com\"}\n",
            "{\"id\":\"2\",\"name\":null,\"email\":null}\n",
            "{\"id\":\"3\",\"name\":null,\"email\":null}\n",
            "{\"id\":\"\\\"4\\\"\",\"name\":\"\\\"Doe\",\"email\":\" Jane\\\"\"}\n",
        ],
        &log,
    );
    assert_records(
        &fake,
        "tsv",
        &[
            "{\n  \"id\" : \"1\",\n  \"name\" : \"Doe\\tJane\",\n  \"note\" : \"\"\n}\n",
            "{\n  \"id\" : \"2\",\n  \"name\" : \"say \\\"hi\\\"\",\n  \"note\" : null\n}\n",
        ],
        &log,
    );
    assert_records(
        &fake,
        "app",
        &[
            "2026-11-22 10:00:00 ERROR boom\\\\nat a.B.c(B.java:1)\\\\nat d.E.f(E.java:2)\n",
            "2026-11-22 10:00:01 INFO fine\n",
        ],
        &log,
    );

    // Dropped lines, the last one included, are behind the checkpoint.
    for f in [&access, &csv, &quoted, &app] {
        assert_eq!(ws.checkpoint_of(f), Some(file_len(f)), "{}\n{}", f.display(), tail(&log, 4000));
    }
    assert!(
        log.contains("dataProcessingOptions dropped 2\n") && !log.contains("conversion errors"),
        "{}",
        tail(&log, 4000)
    );
}

#[test]
fn a_file_whose_every_line_is_dropped_is_checkpointed_to_its_end() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let file = ws.file("sys.log");
    let mut text = String::new();
    for i in 0..2000 {
        text.push_str(&format!("not syslog {i}\n"));
    }
    std::fs::write(&file, &text).unwrap();
    ws.write_config(config(
        &fake,
        vec![flow(
            &ws,
            "sys.log",
            "sys",
            json!({"dataProcessingOptions": [{"optionName": "LOGTOJSON", "logFormat": "SYSLOG"}]}),
        )],
    ));
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert!(status.success(), "{}", tail(&log, 4000));
    assert_eq!(fake.record_count(), 0);
    assert_eq!(ws.checkpoint_of(&file), Some(file_len(&file)), "{}", tail(&log, 4000));
    assert!(log.contains("dataProcessingOptions dropped 2000"), "{}", tail(&log, 4000));

    // Lines added later are converted from where the checkpoint stands.
    append_bytes(&file, b"Nov 22 03:56:26 host sshd[7]: ok\nnope\n");
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert!(status.success(), "{}", tail(&log, 4000));
    assert_records(
        &fake,
        "sys",
        &[
            "{\"timestamp\":\"Nov 22 03:56:26\",\"hostname\":\"host\",\"program\":\"sshd\",\"processid\":\"7\",\"message\":\"ok\"}\n",
        ],
        &log,
    );
    assert_eq!(ws.checkpoint_of(&file), Some(file_len(&file)));
}

/// A line just under the record limit whose converted form is over it: cut to the limit and ended
/// with the terminator, as the Java agent does (it used to go out unconverted); with
/// `oversizedRecordAction: DROP`, dropped. The lines around it go out converted.
#[test]
fn a_record_too_big_once_converted_is_cut_to_the_limit() {
    // 1 MiB minus the room kept for a partition key.
    const LIMIT: usize = 1_048_576 - 256;
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let big = "x".repeat(LIMIT - 20);
    for name in ["cut.log", "drop.log"] {
        std::fs::write(ws.file(name), format!("small\n{big}\nafter\n")).unwrap();
    }
    let meta = json!({"dataProcessingOptions": [{"optionName": "ADDMETADATA", "metadata": {"host": "h"}}]});
    let mut drop = meta.clone();
    drop["oversizedRecordAction"] = json!("DROP");
    ws.write_config(config(&fake, vec![flow(&ws, "cut.log", "cut", meta), flow(&ws, "drop.log", "drop", drop)]));
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert!(status.success(), "{}", tail(&log, 4000));
    let cut = received(&fake, "cut");
    assert_eq!(cut.len(), 3, "{}", tail(&log, 4000));
    assert_eq!(cut[0], "{\"metadata\":{\"host\":\"h\"},\"data\":\"small\"}\n");
    assert_eq!(cut[1].len(), LIMIT, "{:?} … {:?}", &cut[1][..60], &cut[1][cut[1].len() - 60..]);
    assert!(cut[1].starts_with("{\"metadata\":{\"host\":\"h\"},\"data\":\"xxx") && cut[1].ends_with("xxx\n"));
    assert_eq!(cut[2], "{\"metadata\":{\"host\":\"h\"},\"data\":\"after\"}\n");
    let dropped = received(&fake, "drop");
    assert_eq!(dropped.len(), 2, "{}", tail(&log, 4000));
    assert!(log.contains("were truncated") && log.contains("were dropped"), "{}", tail(&log, 4000));
}

/// ADDSOURCEMETADATA: each record says which file it came from, on which host, and when it was
/// read: as fields of the JSON records LOGTOJSON makes, and around plain lines with WRAP.
#[test]
fn source_metadata_says_where_and_when_each_record_was_read() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    std::fs::write(ws.file("app.log"), "WARN: disk\nINFO: ok\n").unwrap();
    std::fs::write(ws.file("plain.txt"), "line \"one\"\n").unwrap();
    ws.write_config(config(
        &fake,
        vec![
            flow(
                &ws,
                "*.log",
                "fields",
                json!({"dataProcessingOptions": [
                    {"optionName": "LOGTOJSON", "matchPattern": "(\\w+): (.*)", "customFieldNames": ["level", "message"]},
                    {"optionName": "ADDSOURCEMETADATA"}
                ]}),
            ),
            flow(
                &ws,
                "*.txt",
                "wrapped",
                json!({"dataProcessingOptions": [
                    {"optionName": "ADDSOURCEMETADATA", "fields": ["sourceFile", "readTime"], "mode": "WRAP"}
                ]}),
            ),
        ],
    ));
    let minute = || {
        let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let before = minute();
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    let after = minute();
    assert!(status.success(), "{}", tail(&log, 4000));
    let host = String::from_utf8(std::process::Command::new("hostname").output().unwrap().stdout).unwrap();
    let host = host.trim();
    let app = ws.file("app.log").display().to_string();
    let records = received(&fake, "fields");
    assert_eq!(records.len(), 2, "{records:?}");
    for (r, (level, message)) in records.iter().zip([("WARN", "disk"), ("INFO", "ok")]) {
        let v: Value = serde_json::from_str(r).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["level", "message", "sourceFile", "hostname", "readTime"], "{r}");
        assert_eq!((v["level"].as_str(), v["message"].as_str()), (Some(level), Some(message)));
        assert_eq!(v["sourceFile"].as_str(), Some(app.as_str()));
        assert_eq!(v["hostname"].as_str(), Some(host));
        let t = v["readTime"].as_str().unwrap();
        assert!(t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        // Read during this run (UTC, to the minute).
        assert!(before.as_str() <= &t[..16] && &t[..16] <= after.as_str(), "{t} not in {before}..{after}");
        assert!(r.ends_with("}\n"), "{r:?}");
    }
    let wrapped = received(&fake, "wrapped");
    let txt = ws.file("plain.txt").display().to_string();
    assert_eq!(wrapped.len(), 1);
    let v: Value = serde_json::from_str(&wrapped[0]).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["sourceFile", "readTime", "data"]);
    assert_eq!(v["sourceFile"].as_str(), Some(txt.as_str()));
    assert_eq!(v["data"].as_str(), Some("line \"one\""));
}
