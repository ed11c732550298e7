//! The .deb and .rpm of the test build (`packaging/build --dev`), for the packaging test and the
//! boot test. `packaging/build` empties `target/packages/` before it writes there, so builds
//! are serialized (a mutex in this process, a `flock` across processes) and each caller gets its
//! own copies.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::repo_dir;

static BUILDING: Mutex<()> = Mutex::new(());

/// Root can run dpkg, debootstrap and systemd-nspawn.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Builds the packages of the test build, as `version` (default: the crate's), and copies them
/// into `keep`; returns (deb, rpm) there.
pub fn build_packages(version: Option<&str>, keep: &Path) -> (PathBuf, PathBuf) {
    let mut kept = build_and_keep(version, keep, &["deb", "rpm"]).into_iter();
    (kept.next().unwrap(), kept.next().unwrap())
}

/// Only the .deb of the test build, copied into `keep` (the .rpm is ten times its size).
pub fn build_deb(keep: &Path) -> PathBuf {
    build_and_keep(None, keep, &["deb"]).remove(0)
}

fn build_and_keep(version: Option<&str>, keep: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(repo_dir().join("target")).unwrap();
    let lock = std::fs::File::create(repo_dir().join("target/packages.lock")).unwrap();
    // SAFETY: a valid descriptor; the lock goes with the file at the end of this function.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "flock target/packages.lock");
    let mut build = Command::new(repo_dir().join("packaging/build"));
    build.arg("--dev").current_dir(repo_dir());
    if let Some(v) = version {
        build.env("PACKAGE_VERSION", v);
    }
    let out = build.output().unwrap_or_else(|e| panic!("packaging/build: {e}"));
    assert!(
        out.status.success(),
        "packaging/build --dev failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = repo_dir().join("target/packages");
    std::fs::create_dir_all(keep).unwrap();
    let find = |ext: &str| {
        let built = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == ext))
            .unwrap_or_else(|| panic!("no .{ext} in {}", dir.display()));
        let kept = keep.join(built.file_name().unwrap());
        if kept != built {
            std::fs::copy(&built, &kept).unwrap();
        }
        kept
    };
    exts.iter().map(|ext| find(ext)).collect()
}
