//! The checkpoint store: one versioned JSON file holding, per flow and file identity, the offset
//! up to which every record was acknowledged. Written atomically (temp file, fsync, rename,
//! directory fsync); the directory is locked so two agents never share it.
//!
//! `checkpointTimeToLiveDays` counts the agent's running time, kept in the file: an entry is
//! dropped only when its file was not found by clean scans for that long while the agent ran, so a
//! host stopped for weeks, or a weekly `--once`, resumes every file where it was.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::checkpoint::Watermark;
use crate::types::identity::FileId;
use crate::types::identity::Sample;

const VERSION: u32 = 1;
/// How often the file is written even when nothing moved, so that the running time and the
/// entries last seen are kept (see `update`).
pub const TOUCH_EVERY: Duration = Duration::from_secs(3600);
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot create the checkpoint directory {path}: {source}{}", dir_hint(source))]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open the lock file {path}: {source}{}", dir_hint(source))]
    Lock { path: PathBuf, source: io::Error },
    #[error(
        "another kinesis-agent already uses the checkpoint file {path} (lock {lock} is held); stop it or give this one its own `checkpointFile`"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot read the checkpoint file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the checkpoint file {path} is not valid: {message}; move it away to start over (files are then read according to `initialPosition`)"
    )]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write the checkpoint file {path}: {source}{}", crate::service::sandbox_hint(source))]
    Write { path: PathBuf, source: io::Error },
}

fn dir_hint(e: &io::Error) -> &'static str {
    match crate::service::sandbox_hint(e) {
        "" => " (set `checkpointFile` to a writable place, or give the agent's user write access)",
        hint => hint,
    }
}

/// One file's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub flow: String,
    /// Where the file was last seen (informational: files are found again by identity).
    pub path: PathBuf,
    /// The path it had when the agent started tailing it, once it has moved (a rotated file):
    /// which live file it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<PathBuf>,
    pub dev: u64,
    pub ino: u64,
    /// Every byte before this offset was delivered.
    pub offset: u64,
    /// Unix milliseconds of the last change (informational).
    pub updated_ms: u64,
    /// The agent's running time (`FileFormat::running_ms`) when the file was last found or tailed,
    /// for `checkpointTimeToLiveDays`. Missing in files written before: taken as now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_run_ms: Option<u64>,
    /// Fingerprint of the file's first bytes: the checkpoint is only trusted for a file that still
    /// starts with them (an inode can be reused by another file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Sample>,
    /// The bytes just before `offset`, checked the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<Sample>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    /// Milliseconds the agent has run with this file, over all its runs.
    #[serde(default)]
    running_ms: u64,
    checkpoints: Vec<Entry>,
}

pub struct CheckpointStore {
    path: PathBuf,
    entries: HashMap<(String, FileId), Entry>,
    ttl: Duration,
    /// Running time read from the file, and when it was read.
    running_at_open: u64,
    opened: std::time::Instant,
    /// Flows whose files were scanned without an error in this run: only their entries (and those
    /// of flows no longer configured) can be shown gone.
    scanned: HashSet<String>,
    /// The flows configured now (`None`: not told; every flow counts as configured).
    configured: Option<HashSet<String>>,
    _lock: File,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl CheckpointStore {
    /// Open (creating the directory) and lock the store at `path`. A Java agent SQLite database at
    /// that path is left alone: ours is then kept beside it as `<path>.json`.
    pub fn open(path: &Path, ttl_days: u32) -> Result<(CheckpointStore, Vec<String>), CheckpointError> {
        let mut notes = Vec::new();
        let mut path = path.to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| {
                // create_dir_all says "File exists" when a component is a regular file.
                let source = match dir.ancestors().find(|a| a.is_file()) {
                    Some(file) => io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is a file, not a directory", file.display()),
                    ),
                    None => source,
                };
                CheckpointError::CreateDir { path: dir.to_path_buf(), source }
            })?;
        }
        if is_sqlite(&path) {
            // Under the systemd unit the Java agent's directory is not writable (and not ours).
            let ours = beside_sqlite(&path);
            notes.push(format!(
                "{} is a Java agent (SQLite) checkpoint database; it is left untouched and checkpoints are kept in {}",
                path.display(),
                ours.display()
            ));
            path = ours;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        // Opened read-only when it exists (flock needs no write access), so a lock file left by
        // `sudo kinesis-agent --once` does not keep the service's user out.
        let lock = File::open(&lock_path)
            .or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path),
                _ => Err(e),
            })
            .map_err(|source| CheckpointError::Lock { path: lock_path.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(CheckpointError::Locked { path, lock: lock_path }),
            Err(fs::TryLockError::Error(source)) => return Err(CheckpointError::Lock { path: lock_path, source }),
        }
        let ttl = Duration::from_secs(u64::from(ttl_days) * 86_400);
        let mut store = CheckpointStore {
            path,
            entries: HashMap::new(),
            ttl,
            running_at_open: 0,
            opened: std::time::Instant::now(),
            scanned: HashSet::new(),
            configured: None,
            _lock: lock,
        };
        store.read()?;
        Ok((store, notes))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&mut self) -> Result<(), CheckpointError> {
        let Some(parsed) = load(&self.path)? else { return Ok(()) };
        self.running_at_open = parsed.running_ms;
        self.opened = std::time::Instant::now();
        for mut e in parsed.checkpoints {
            e.seen_run_ms.get_or_insert(parsed.running_ms);
            self.entries.insert((e.flow.clone(), FileId { dev: e.dev, ino: e.ino }), e);
        }
        Ok(())
    }

    /// The agent's running time with this file, in milliseconds.
    fn running_ms(&self) -> u64 {
        self.running_at_open + self.opened.elapsed().as_millis() as u64
    }

    /// The flows configured now: entries of other flows age by running time alone.
    pub fn set_flows<'a>(&mut self, flows: impl IntoIterator<Item = &'a str>) {
        self.configured = Some(flows.into_iter().map(str::to_string).collect());
    }

    /// A scan of `flow` found the files `found`; `clean`: it had no error. Found files are there;
    /// after a scan with an error no entry of the flow can be shown gone, so all count as seen.
    pub fn saw(&mut self, flow: &str, found: impl IntoIterator<Item = FileId>, clean: bool) {
        let now = self.running_ms();
        if !clean {
            for ((f, _), e) in self.entries.iter_mut() {
                if f == flow {
                    e.seen_run_ms = Some(now);
                }
            }
            return;
        }
        let mut key = (flow.to_string(), FileId { dev: 0, ino: 0 });
        for id in found {
            key.1 = id;
            if let Some(e) = self.entries.get_mut(&key) {
                e.seen_run_ms = Some(now);
            }
        }
        self.scanned.insert(key.0);
    }

    /// Drop the entries whose files were not found for `checkpointTimeToLiveDays` of running time
    /// (see `expired`); returns how many.
    fn prune(&mut self) -> usize {
        let running = Duration::from_millis(self.running_ms());
        let before = self.entries.len();
        let (ttl, scanned, configured) = (self.ttl, &self.scanned, &self.configured);
        self.entries.retain(|(flow, _), e| {
            let may_be_gone = scanned.contains(flow) || configured.as_ref().is_some_and(|c| !c.contains(flow));
            let seen = Duration::from_millis(e.seen_run_ms.unwrap_or(0));
            !(may_be_gone && expired(seen, running, ttl))
        });
        before - self.entries.len()
    }

    /// The checkpoint of one file of one flow.
    pub fn get(&self, flow: &str, id: FileId) -> Option<&Entry> {
        self.entries.get(&(flow.to_string(), id))
    }

    /// Whether the flow has any checkpoint (it ran here before).
    pub fn has_flow(&self, flow: &str) -> bool {
        self.entries.keys().any(|(f, _)| f == flow)
    }

    /// Every entry (for `--check-config` and tests).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Fold in the tracker's watermarks; returns whether anything changed.
    pub fn update(&mut self, marks: &[Watermark], forgotten: &[(Arc<str>, FileId)]) -> bool {
        let now = now_ms();
        let running = self.running_ms();
        let mut changed = false;
        // First: a forgotten file's inode may be reused by a file in `marks`, whose entry stays.
        for (flow, id) in forgotten {
            changed |= self.entries.remove(&(flow.to_string(), *id)).is_some();
        }
        for m in marks {
            let key = (m.flow.to_string(), m.id);
            match self.entries.get_mut(&key) {
                Some(e)
                    if e.offset == m.offset
                        && e.path == m.path
                        && (m.was.is_none() || e.was == m.was)
                        && e.head == m.head
                        && e.marker == m.marker =>
                {
                    // A file still tailed is alive however long it has been quiet: not for the
                    // time-to-live to drop (and its lines to be sent again after a restart).
                    let seen = e.seen_run_ms.replace(running).unwrap_or(0);
                    changed |= running.saturating_sub(seen) >= TOUCH_EVERY.as_millis() as u64;
                }
                Some(e) => {
                    e.offset = m.offset;
                    e.path = m.path.clone();
                    if m.was.is_some() {
                        e.was = m.was.clone();
                    }
                    e.head = m.head;
                    e.marker = m.marker;
                    e.updated_ms = now;
                    e.seen_run_ms = Some(running);
                    changed = true;
                }
                None => {
                    self.entries.insert(
                        key,
                        Entry {
                            flow: m.flow.to_string(),
                            path: m.path.clone(),
                            was: m.was.clone(),
                            dev: m.id.dev,
                            ino: m.id.ino,
                            offset: m.offset,
                            updated_ms: now,
                            seen_run_ms: Some(running),
                            head: m.head,
                            marker: m.marker,
                        },
                    );
                    changed = true;
                }
            }
        }
        changed
    }

    /// Write the store atomically: temp file, fsync, rename over the old one, fsync the directory.
    pub fn write(&mut self) -> Result<(), CheckpointError> {
        let pruned = self.prune();
        if pruned > 0 {
            tracing::info!(
                "dropped {pruned} checkpoint(s) of files not found for checkpointTimeToLiveDays ({} day(s)) of the agent's running time",
                self.ttl.as_secs() / 86_400
            );
        }
        let mut checkpoints: Vec<Entry> = self.entries.values().cloned().collect();
        checkpoints.sort_by(|a, b| (&a.flow, &a.path, a.ino).cmp(&(&b.flow, &b.path, b.ino)));
        let format = FileFormat { version: VERSION, running_ms: self.running_ms(), checkpoints };
        let body = serde_json::to_vec_pretty(&format).expect("serializable");
        let err = |source| CheckpointError::Write { path: self.path.clone(), source };
        let tmp = PathBuf::from(format!("{}.tmp", self.path.display()));
        // A leftover of an interrupted write, perhaps by another user (`sudo ... --once`).
        let _ = fs::remove_file(&tmp);
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&body).and_then(|_| f.write_all(b"\n")).and_then(|_| f.sync_all()).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            err(e)
        })?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    }
}

/// The checkpoint file at `path` as it is on disk (`None`: there is none yet). The daemon replaces
/// it by rename, so one plain read sees a whole file.
fn load(path: &Path) -> Result<Option<FileFormat>, CheckpointError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Read { path: path.to_path_buf(), source }),
    };
    let parsed: FileFormat = serde_json::from_slice(&text)
        .map_err(|e| CheckpointError::Invalid { path: path.to_path_buf(), message: e.to_string() })?;
    if parsed.version != VERSION {
        return Err(CheckpointError::Invalid {
            path: path.to_path_buf(),
            message: format!("version {} is not supported (this agent writes version {VERSION})", parsed.version),
        });
    }
    Ok(Some(parsed))
}

/// The entries of the checkpoint file at `path`, read without the lock and without writing
/// anything (for `kinesis-agent status`, beside a running daemon). `None`: there is no file yet.
pub fn read_entries(path: &Path) -> Result<Option<Vec<Entry>>, CheckpointError> {
    Ok(load(path)?.map(|f| f.checkpoints))
}

/// Where the agent keeps its checkpoints when `configured` is a Java agent SQLite database (which
/// it leaves alone): in the service's state directory under the systemd unit, else beside it.
fn beside_sqlite(configured: &Path) -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        Some(dir) => Path::new(&dir).join("checkpoints.json"),
        None => PathBuf::from(format!("{}.json", configured.display())),
    }
}

/// The checkpoint file a reader of `configured` should read: `configured`, or where the agent
/// keeps ours when it is a Java agent database (the note says so). Outside the unit's environment
/// the unit's state directory is tried too, so an operator's shell finds the service's file.
pub fn file_to_read(configured: &Path) -> (PathBuf, Option<String>) {
    if !is_sqlite(configured) {
        return (configured.to_path_buf(), None);
    }
    let beside = beside_sqlite(configured);
    // The unit's `StateDirectory=kinesis-agent` holds the default file.
    let unit = Path::new(crate::config::DEFAULT_CHECKPOINT_FILE);
    let ours = if !beside.exists() && unit.exists() { unit.to_path_buf() } else { beside };
    let note = format!(
        "{} is a Java agent (SQLite) checkpoint database; reading this agent's checkpoints at {}",
        configured.display(),
        ours.display()
    );
    (ours, Some(note))
}

/// Whether a checkpoint may be dropped: its file was not found by a clean scan for `ttl` of the
/// agent's running time (`last_seen` and `running` are running time; time the agent was stopped
/// does not count).
pub fn expired(last_seen: Duration, running: Duration, ttl: Duration) -> bool {
    running.saturating_sub(last_seen) >= ttl
}

fn is_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == SQLITE_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(flow: &str, ino: u64, offset: u64) -> Watermark {
        Watermark {
            was: None,
            flow: flow.into(),
            path: format!("/f{ino}").into(),
            id: FileId { dev: 1, ino },
            offset,
            head: Some(Sample { len: 3, hash: 7 }),
            marker: None,
        }
    }

    #[test]
    fn round_trip_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/checkpoints.json");
        {
            let (mut s, _) = CheckpointStore::open(&path, 7).unwrap();
            assert!(s.update(&[mark("a", 5, 42)], &[]));
            assert!(!s.update(&[mark("a", 5, 42)], &[]));
            s.write().unwrap();
            match CheckpointStore::open(&path, 7) {
                Err(CheckpointError::Locked { .. }) => {}
                other => panic!("expected Locked, got {:?}", other.map(|_| ())),
            }
        }
        let (s, _) = CheckpointStore::open(&path, 7).unwrap();
        assert_eq!(s.get("a", FileId { dev: 1, ino: 5 }).unwrap().offset, 42);
        assert!(s.has_flow("a"));
        assert!(!s.has_flow("b"));
    }

    /// A deleted file forgotten in the same snapshot as a new file on its reused inode: the new
    /// file's entry stays.
    #[test]
    fn a_reused_inode_keeps_the_new_files_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = CheckpointStore::open(&dir.path().join("c.json"), 7).unwrap();
        s.update(&[mark("a", 5, 42)], &[]);
        s.update(&[mark("a", 5, 7)], &[("a".into(), FileId { dev: 1, ino: 5 })]);
        assert_eq!(s.get("a", FileId { dev: 1, ino: 5 }).map(|e| e.offset), Some(7));
    }

    /// A file tailed but quiet for longer than the time-to-live keeps its checkpoint.
    #[test]
    fn quiet_files_still_tailed_are_not_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let (mut s, _) = CheckpointStore::open(&path, 1).unwrap();
        s.saw("a", [], true);
        assert!(s.update(&[mark("a", 5, 42)], &[]));
        s.running_at_open += 2 * 86_400_000;
        // Unchanged, but seen: touched, so the write does not prune it.
        assert!(s.update(&[mark("a", 5, 42)], &[]));
        s.write().unwrap();
        drop(s);
        let (s, notes) = CheckpointStore::open(&path, 1).unwrap();
        assert_eq!(s.get("a", FileId { dev: 1, ino: 5 }).map(|e| e.offset), Some(42), "{notes:?}");
    }

    fn entry(flow: &str, ino: u64, seen_run_ms: Option<u64>) -> Entry {
        Entry {
            was: None,
            flow: flow.into(),
            path: format!("/f{ino}").into(),
            dev: 1,
            ino,
            offset: 1,
            updated_ms: 1_000,
            seen_run_ms,
            head: None,
            marker: None,
        }
    }

    /// Only running time counts, and only entries of files a clean scan did not find (or of flows
    /// no longer configured) are dropped.
    #[test]
    fn the_time_to_live_is_running_time_and_needs_clean_scans() {
        let day = 86_400_000u64;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let file = FileFormat {
            version: 1,
            running_ms: 10 * day,
            checkpoints: vec![
                entry("a", 1, Some(day)),     // gone for 9 days of running time
                entry("a", 2, Some(day)),     // found by the scan below
                entry("a", 3, Some(9 * day)), // gone for 1 day
                entry("b", 4, Some(day)),     // its flow's scan failed
                entry("c", 5, Some(day)),     // its flow is no longer configured
                entry("a", 6, None),          // written by an older agent: seen now
            ],
        };
        fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        // Opened weeks later (wall clock): nothing is dropped for that.
        let (mut s, notes) = CheckpointStore::open(&path, 7).unwrap();
        assert!(notes.is_empty());
        assert_eq!(s.entries().count(), 6);
        s.write().unwrap();
        assert_eq!(s.entries().count(), 6, "no scan yet: nothing can be shown gone");
        s.set_flows(["a", "b"]);
        s.saw("a", [FileId { dev: 1, ino: 2 }], true);
        s.saw("b", [], false);
        s.write().unwrap();
        let mut left: Vec<u64> = s.entries().map(|e| e.ino).collect();
        left.sort();
        assert_eq!(left, vec![2, 3, 4, 6]);
        // The running time goes on in the file.
        drop(s);
        let (s, _) = CheckpointStore::open(&path, 7).unwrap();
        assert!(s.running_at_open >= 10 * day);
    }

    #[test]
    fn forgotten_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let (mut s, _) = CheckpointStore::open(&path, 7).unwrap();
        s.update(&[mark("a", 5, 42)], &[]);
        assert!(s.update(&[], &[("a".into(), FileId { dev: 1, ino: 5 })]));
        assert_eq!(s.entries().count(), 0);
    }

    #[test]
    fn invalid_and_future_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        fs::write(&path, b"{not json").unwrap();
        let e = CheckpointStore::open(&path, 7).err().unwrap().to_string();
        assert!(e.contains("c.json") && e.contains("not valid"), "{e}");
        fs::write(&path, br#"{"version":9,"checkpoints":[]}"#).unwrap();
        let e = CheckpointStore::open(&path, 7).err().unwrap().to_string();
        assert!(e.contains("version 9"), "{e}");
    }

    #[test]
    fn java_sqlite_database_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        fs::write(&path, b"SQLite format 3\0rest").unwrap();
        let (mut s, notes) = CheckpointStore::open(&path, 7).unwrap();
        assert!(notes[0].contains("SQLite"));
        s.update(&[mark("a", 1, 1)], &[]);
        s.write().unwrap();
        assert!(dir.path().join("checkpoints.json").exists());
        assert!(fs::read(&path).unwrap().starts_with(SQLITE_MAGIC));
        // `status` reads ours, and says why.
        let (read, note) = file_to_read(&path);
        assert_eq!(read, dir.path().join("checkpoints.json"));
        assert!(note.unwrap().contains("SQLite"));
        assert_eq!(file_to_read(&read), (read.clone(), None));
    }

    #[cfg(unix)]
    #[test]
    fn unwritable_directory_is_a_clear_error() {
        use std::os::unix::fs::PermissionsExt;
        if unsafe { libc::geteuid() } == 0 {
            return; // root ignores permissions
        }
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        let e = CheckpointStore::open(&ro.join("x/c.json"), 7).err().unwrap().to_string();
        assert!(e.contains("ro/x"), "{e}");
    }
}
