//! `log.file`: the log written to a file that rotates by size (`log.maxFileSize`), keeping
//! `log.maxBackupIndex` old files (`agent.log.1` the newest), as the Java agent's log4j did.
//! A failing write is dropped rather than blocking the agent; the error goes to stderr once.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    backups: u32,
    state: Mutex<State>,
    failed: AtomicBool,
}

struct State {
    file: Option<File>,
    size: u64,
}

impl RotatingFile {
    /// Opens (creating) `path` for appending; the error names the path.
    pub fn open(path: &Path, max_size: u64, backups: u32) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_size: max_size.max(1),
            backups,
            state: Mutex::new(State { file: Some(file), size }),
            failed: AtomicBool::new(false),
        })
    }

    fn backup(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// `agent.log` → `agent.log.1` → … → `agent.log.N` (the oldest is dropped).
    fn rotate(&self, st: &mut State) -> io::Result<()> {
        st.file = None;
        if self.backups == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.backup(self.backups));
            for n in (1..self.backups).rev() {
                let _ = std::fs::rename(self.backup(n), self.backup(n + 1));
            }
            let _ = std::fs::rename(&self.path, self.backup(1));
        }
        st.file = Some(open_append(&self.path)?);
        st.size = 0;
        Ok(())
    }

    fn write_line(&self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.size > 0 && st.size + buf.len() as u64 > self.max_size {
            self.rotate(&mut st)?;
        }
        let file = match st.file.as_mut() {
            Some(f) => f,
            None => {
                st.file = Some(open_append(&self.path)?);
                st.file.as_mut().expect("just opened")
            }
        };
        file.write_all(buf)?;
        st.size += buf.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// What `tracing_subscriber` writes through: each event is one `write` of a whole line.
impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.write_line(buf) {
            Ok(()) => self.failed.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.failed.swap(true, Ordering::Relaxed) {
                    eprintln!("kinesis-agent: cannot write the log file: {e}");
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_the_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let log = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            (&log).write_all(format!("line {i:02} {}\n", "x".repeat(30)).as_bytes()).unwrap();
        }
        // 40 bytes a line, 100 a file: two lines each; the newest in agent.log.
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert!(read(&path).starts_with("line 08"), "{}", read(&path));
        assert!(read(&log.backup(1)).starts_with("line 06"));
        assert!(read(&log.backup(2)).starts_with("line 04"));
        assert!(!log.backup(3).exists(), "only maxBackupIndex backups are kept");
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
    }
}
