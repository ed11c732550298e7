//! The packages `packaging/build --dev` makes from the test build: the .deb is installed with
//! `dpkg -i` on this machine (then purged): files, the system user in group adm, the conffile kept
//! across a reinstall and a remove, `kinesis-agent --version`; the .rpm is inspected with `rpm -qp`
//! (Debian's `rpm` package). Needs root for dpkg; skipped with a message otherwise.

use crate::common;

use std::process::{Command, Output};

use common::*;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

#[test]
fn deb_installs_and_rpm_holds_the_same() {
    if !is_root() || Command::new("dpkg").arg("--version").output().is_err() {
        skip_without("root and dpkg");
        return;
    }
    let kept = tempfile::tempdir().unwrap();
    let (deb, rpm) = build_packages(None, &kept.path().join("now"));
    let (deb2, rpm2) = build_packages(Some("0.99.0"), &kept.path().join("newer"));

    // --- .deb, installed for real.
    let _ = Command::new("dpkg").args(["--purge", "kinesis-agent"]).output();
    let installed = run(Command::new("dpkg").arg("-i").arg(&deb));
    let purge = Purge;
    let said = String::from_utf8_lossy(&installed.stderr).to_string() + &String::from_utf8_lossy(&installed.stdout);
    assert!(!said.contains("can't be accessed"), "the install warns:\n{said}");
    for f in [
        "/usr/bin/kinesis-agent",
        "/etc/aws-kinesis/agent.json",
        "/etc/aws-kinesis/agent.d/README",
        "/usr/share/doc/kinesis-agent/README.md",
        "/usr/share/doc/kinesis-agent/examples/agent.json",
    ] {
        assert!(std::path::Path::new(f).exists(), "{f} is installed");
    }
    let unit = stdout(Command::new("dpkg").args(["-L", "kinesis-agent"]));
    assert!(unit.contains("/kinesis-agent.service"), "the unit is installed:\n{unit}");
    let version = stdout(Command::new("/usr/bin/kinesis-agent").arg("--version"));
    assert!(version.starts_with("kinesis-agent "), "{version}");
    let user = stdout(Command::new("id").arg("kinesis-agent"));
    assert!(user.contains("(adm)"), "the service user reads logs through adm: {user}");
    // HTTPS needs CA certificates, which minimal images lack (the agent cannot start without).
    let depends = stdout(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Depends"));
    assert!(depends.contains("ca-certificates"), "Depends: {depends}");
    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "kinesis-agent"]));
    assert!(conffiles.contains("/etc/aws-kinesis/agent.json"), "agent.json is a conffile: {conffiles}");
    let meta = std::fs::metadata("/etc/aws-kinesis/agent.json").unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o640, "agent.json may hold credentials");
    assert_ne!(meta.gid(), 0, "agent.json is readable by the service's group");
    // The shipped configuration has no flows: --check-config says what to do.
    let check = Command::new("/usr/bin/kinesis-agent").args(["--check-config"]).output().unwrap();
    assert!(String::from_utf8_lossy(&check.stderr).contains("no flows"), "{check:?}");
    // Started that way, the daemon waits for flows (an enabled unit must not fail at boot), and
    // stops cleanly on SIGTERM.
    let mut idle = Command::new("/usr/bin/kinesis-agent").stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(idle.try_wait().unwrap().is_none(), "the daemon without flows exited");
    unsafe { libc::kill(idle.id() as i32, libc::SIGTERM) };
    let out = idle.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting for one"), "{out:?}");
    let unit = std::fs::read_to_string("/lib/systemd/system/kinesis-agent.service")
        .or_else(|_| std::fs::read_to_string("/usr/lib/systemd/system/kinesis-agent.service"))
        .expect("the unit file");
    assert!(unit.contains("RestartPreventExitStatus=78"), "{unit}");
    assert!(unit.contains("LimitNOFILE=65536"), "{unit}");

    // An edited agent.json (a Java agent's, say) survives a reinstall and a remove.
    let edited = "{ \"flows\": [ { \"filePattern\": \"/var/log/app/*.log\", \"kinesisStream\": \"s\" } ] }\n";
    std::fs::write("/etc/aws-kinesis/agent.json", edited).unwrap();
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(std::fs::read_to_string("/etc/aws-kinesis/agent.json").unwrap(), edited, "kept on reinstall");
    run(Command::new("/usr/bin/kinesis-agent").arg("--check-config"));
    // An upgrade to a rebuilt higher version keeps it too.
    run(Command::new("dpkg").arg("-i").arg(&deb2));
    assert_eq!(stdout(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "kinesis-agent"])), "0.99.0");
    assert_eq!(std::fs::read_to_string("/etc/aws-kinesis/agent.json").unwrap(), edited, "kept on upgrade");
    run(Command::new("dpkg").args(["-r", "kinesis-agent"]));
    assert!(!std::path::Path::new("/usr/bin/kinesis-agent").exists());
    assert_eq!(std::fs::read_to_string("/etc/aws-kinesis/agent.json").unwrap(), edited, "kept on remove");
    drop(purge);
    assert!(!std::path::Path::new("/etc/aws-kinesis/agent.json").exists(), "purged");
    assert!(Command::new("id").arg("kinesis-agent").output().is_ok_and(|o| !o.status.success()), "user removed");

    // --- .rpm, inspected.
    if Command::new("rpm").arg("--version").output().is_err() {
        skip_without("Debian's rpm package (for the .rpm checks)");
        return;
    }
    let files = stdout(Command::new("rpm").arg("-qlp").arg(&rpm));
    for f in [
        "/usr/bin/kinesis-agent",
        "/etc/aws-kinesis/agent.json",
        "/usr/lib/systemd/system/kinesis-agent.service",
        "/usr/share/doc/kinesis-agent/README.md",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} in the rpm:\n{files}");
    }
    let config = stdout(Command::new("rpm").arg("-qcp").arg(&rpm));
    assert!(config.contains("/etc/aws-kinesis/agent.json"), "agent.json is %config: {config}");
    let scripts = stdout(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    for needle in ["useradd -r", "usermod -a -G adm", "systemctl enable", "try-restart", "disable --now"] {
        assert!(scripts.contains(needle), "{needle:?} in the rpm scripts:\n{scripts}");
    }
    let requires = stdout(Command::new("rpm").args(["-qp", "--requires"]).arg(&rpm));
    assert!(requires.lines().any(|l| l.trim() == "ca-certificates"), "Requires:\n{requires}");
    // Installing over the Java agent's package fails with a clear conflict, not a file clash.
    let conflicts = stdout(Command::new("rpm").args(["-qp", "--conflicts"]).arg(&rpm));
    assert!(conflicts.contains("aws-kinesis-agent"), "{conflicts}");
    let listing = stdout(Command::new("rpm").arg("-qlvp").arg(&rpm));
    let json = listing.lines().find(|l| l.ends_with(" /etc/aws-kinesis/agent.json")).expect("agent.json listed");
    assert!(
        json.starts_with("-rw-r-----") && json.contains("kinesis-"),
        "agent.json 0640, group kinesis-agent: {json}"
    );

    // --- .rpm, installed for real into a scratch root (its own database; the scripts need a
    // system with useradd and systemd, so they are inspected above, not run), then upgraded.
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    run(Command::new("rpm").args(["--root", r, "--initdb"]));
    run(Command::new("rpm").args(["--root", r, "-i", "--nodeps", "--noscripts"]).arg(&rpm));
    let owners = stdout(Command::new("rpm").args([
        "--root",
        r,
        "-q",
        "--qf",
        "[%{FILENAMES} %{FILEMODES:octal} %{FILEUSERNAME} %{FILEGROUPNAME}\n]",
        "kinesis-agent",
    ]));
    for want in [
        "/usr/bin/kinesis-agent 100755 root root",
        "/etc/aws-kinesis/agent.json 100640 root kinesis-agent",
        "/usr/lib/systemd/system/kinesis-agent.service 100644 root root",
    ] {
        assert!(owners.lines().any(|l| l == want), "{want:?} in:\n{owners}");
    }
    let installed = root.path().join("etc/aws-kinesis/agent.json");
    assert_eq!(std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(root.path().join("usr/bin/kinesis-agent").exists());
    std::fs::write(&installed, edited).unwrap();
    run(Command::new("rpm").args(["--root", r, "-U", "--nodeps", "--noscripts"]).arg(&rpm2));
    assert_eq!(stdout(Command::new("rpm").args(["--root", r, "-q", "--qf", "%{VERSION}", "kinesis-agent"])), "0.99.0");
    assert_eq!(std::fs::read_to_string(&installed).unwrap(), edited, "an edited agent.json survives the rpm upgrade");
}

/// Purges the package when the test ends, however it ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "kinesis-agent"]).output();
    }
}
