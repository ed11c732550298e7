//! Drop-in files (`--config-dir`): flows added in name order, errors naming the drop-in.

use super::*;
use crate::config::load;
use crate::config::parse::tests::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn dropins_add_flows_in_name_order() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "agent.json", &flow_with(""));
    let dir = tmp.path().join("agent.d");
    fs::create_dir(&dir).unwrap();
    let b = write(&dir, "b.json", r#"{"flows": [{"filePattern": "/b", "deliveryStream": "d"}]}"#);
    let a = write(
        &dir,
        "a.json",
        r#"// comment
        {"kinesis.region": "x", "flows": [{"filePattern": "/a1", "kinesisStream": "s"},
                                          {"filePattern": "/a2", "kinesisStream": "s"}]}"#,
    );
    write(&dir, "notes.txt", "not json");
    write(&dir, "c.json.bak", "not json");
    fs::create_dir(dir.join("sub.json")).unwrap();
    let empty = write(&dir, "d.json", "{}");

    let config = load(&main, Some(&dir)).unwrap();
    assert_eq!(config.sources, [main.clone(), a.clone(), b.clone(), empty]);
    let summary: Vec<_> = config.flows.iter().map(|f| (f.index, f.source.clone(), f.file_pattern.as_str())).collect();
    assert_eq!(
        summary,
        [(0, main.clone(), "/var/log/app.log"), (1, a.clone(), "/a1"), (2, a.clone(), "/a2"), (3, b, "/b")]
    );
    assert_eq!(
        config.notices,
        [format!(
            "{}: kinesis.region: ignored in drop-in files (as in the Java agent); set it in {}",
            a.display(),
            main.display()
        )]
    );
    // The drop-in's region is not used.
    assert_eq!(config.aws.kinesis_region, None);
}

#[test]
fn dropin_errors_name_the_dropin() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "agent.json", r#"{"kinesis.region": "r"}"#);
    let dir = tmp.path().join("agent.d");
    fs::create_dir(&dir).unwrap();
    let a = write(
        &dir,
        "a.json",
        r#"{"flow": [], "maxBufferAgeMillis": 1, "flows": [{"filePattern": "/a", "kinesisStream": "s", "sts.endpoint": "x"}, {"filePattern": "/b", "kinesisStream": "s", "maxBufferSizeRecord": 1}]}"#,
    );
    let broken = write(&dir, "b.json", "{\"flows\": [\n}");
    let errors = load(&main, Some(&dir)).unwrap_err().0;
    let seen: Vec<_> = errors.iter().map(|e| (e.file.clone(), e.location.as_str())).collect();
    assert!(seen.contains(&(a.clone(), "flow")), "{errors:#?}");
    assert!(seen.contains(&(a.clone(), "maxBufferAgeMillis")), "{errors:#?}");
    assert!(seen.contains(&(a.clone(), "flows[0].sts.endpoint")), "{errors:#?}");
    assert!(seen.contains(&(a.clone(), "flows[1].maxBufferSizeRecord")), "{errors:#?}");
    assert!(seen.contains(&(broken.clone(), "")), "{errors:#?}");
    assert_eq!(errors.len(), 5, "{errors:#?}");
    let flow_key = errors.iter().find(|e| e.location == "flow").unwrap();
    assert!(flow_key.message.ends_with("did you mean `flows`?"));
    let sts = errors.iter().find(|e| e.location == "flows[0].sts.endpoint").unwrap();
    assert!(sts.message.contains(&format!("top level of {}", main.display())), "{}", sts.message);
    let parse = errors.iter().find(|e| e.file == broken).unwrap();
    assert!(parse.message.starts_with("invalid JSON at line 2, column 1"), "{}", parse.message);
}

#[test]
fn main_without_flows_is_fine_with_dropin_flows() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "agent.json", r#"{"checkpointFile": "/x"}"#);
    let dir = tmp.path().join("agent.d");
    fs::create_dir(&dir).unwrap();
    write(&dir, "one.json", r#"{"flows": [{"filePattern": "/a", "kinesisStream": "s"}]}"#);
    let config = load(&main, Some(&dir)).unwrap();
    assert_eq!(config.flows.len(), 1);
    assert_eq!(config.checkpoint_file, PathBuf::from("/x"));

    // A missing drop-in directory is fine, but then there are no flows at all.
    let e = load(&main, Some(&tmp.path().join("nope"))).unwrap_err().0;
    assert_eq!(e.len(), 1);
    assert!(e[0].message.starts_with("no flows: add at least one flow to `flows` (in this file or"));
}

#[test]
fn duplicate_ids_across_files() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "agent.json", &flow_with(""));
    let dir = tmp.path().join("agent.d");
    fs::create_dir(&dir).unwrap();
    let dropin = write(&dir, "x.json", &flow_with(""));
    let e = load(&main, Some(&dir)).unwrap_err().0;
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].file.clone(), e[0].location.as_str()), (dropin, "flows[0]"));
    assert!(e[0].message.contains(&format!("flows[0] of {}", main.display())));
}

#[test]
fn unreadable_main_file_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let main = tmp.path().join("missing.json");
    let e = load(&main, None).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].file, main);
    assert!(e.0[0].message.starts_with("cannot read the configuration file: "));
    assert!(e.to_string().contains("missing.json"));
}

/// `status` reads `checkpointFile` whatever the flows say, as the daemon does.
#[test]
fn the_checkpoint_file_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "agent.json", r#"{"checkpointFile": "/x", /* none */ "flows": 3}"#);
    assert_eq!(checkpoint_file(&main).unwrap(), PathBuf::from("/x"));
    write(tmp.path(), "agent.json", "{}");
    assert_eq!(checkpoint_file(&main).unwrap(), PathBuf::from(DEFAULT_CHECKPOINT_FILE));
    write(tmp.path(), "agent.json", r#"{"checkpointFile": ""}"#);
    assert!(checkpoint_file(&main).unwrap_err().0[0].location.contains("checkpointFile"));
    let e = checkpoint_file(&tmp.path().join("nope.json")).unwrap_err().0;
    assert!(e[0].message.contains("cannot read"), "{}", e[0]);
}

/// A main file holding the secret key that every user can read is said, with the fix.
#[test]
fn a_readable_secret_is_noticed() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(r#"{{"awsAccessKeyId": "AKIAX", "awsSecretAccessKey": "s3cr3t-value", "flows": [{{{FLOW}}}]}}"#);
    let main = write(tmp.path(), "agent.json", &text);
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o644)).unwrap();
    let notices = load(&main, None).unwrap().notices;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("every user can read it (mode 644): `chmod 640"), "{notices:?}");
    assert!(!notices[0].contains("s3cr3t"), "{notices:?}");
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(load(&main, None).unwrap().notices.is_empty());
}
