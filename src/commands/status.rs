//! `kinesis-agent status`: what the checkpoint file says was delivered, checked against the files
//! on disk now. Read-only (no lock, no write), so it runs beside the daemon. `shipped` tells an
//! operator a file may be deleted, so it needs proof: the same (device, inode), the same content
//! fingerprints (`head`, `marker`), and every byte acknowledged.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::{CheckpointError, Entry, read_entries};
use crate::types::identity::{self, Distrust, Mark, OpenFile};

/// What a checkpointed file is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The same file, every byte acknowledged.
    Shipped,
    /// The same file, with bytes not acknowledged yet.
    Behind,
    /// The same inode, shorter than the acknowledged offset: truncated since.
    Truncated,
    /// Another file is there (another inode, or other bytes under the same inode).
    Replaced,
    /// No file at the path (nor under another name in its directory).
    Gone,
    /// The same inode, but the checkpoint has no content fingerprint to prove it the same file.
    Unverified,
    /// It could not be examined (permissions, I/O error).
    Unreadable,
    /// A compressed file (the pattern names it) whose checkpoint is a decompressed offset, short
    /// of its sealed end: being read, read part way when the agent stopped (it is read on), or
    /// damaged (the agent's log says where).
    Partial,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Shipped,
        State::Behind,
        State::Truncated,
        State::Replaced,
        State::Gone,
        State::Unverified,
        State::Unreadable,
        State::Partial,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Shipped => "shipped",
            State::Behind => "behind",
            State::Truncated => "truncated",
            State::Replaced => "replaced",
            State::Gone => "gone",
            State::Unverified => "unverified",
            State::Unreadable => "unreadable",
            State::Partial => "partial",
        }
    }
}

/// What was found for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Nothing at its path.
    Missing,
    /// A file of another (device, inode) at its path.
    Other,
    /// It could not be examined: why.
    Error(String),
    /// Its (device, inode), `size` bytes long, and whether its content still matches the
    /// checkpoint's fingerprints.
    Same { size: u64, trust: Result<(), Distrust> },
    /// The same compressed file (its first bytes), read part way: `size` compressed bytes.
    Partial { size: u64 },
}

/// The state of checkpoint `mark` given what was found, and why when that needs saying.
pub fn decide(mark: &Mark, seen: &Seen) -> (State, Option<String>) {
    match seen {
        Seen::Missing => (State::Gone, None),
        Seen::Other => (State::Replaced, Some("another file is at this path".to_owned())),
        Seen::Error(why) => (State::Unreadable, Some(why.clone())),
        Seen::Partial { .. } => (
            State::Partial,
            Some(format!(
                "decompressed byte {} acknowledged, not read to its end yet: being read, read on at the next start, \
                 or damaged (see the agent's log)",
                mark.offset
            )),
        ),
        Seen::Same { trust: Err(why @ Distrust::Shorter { .. }), .. } => (State::Truncated, Some(why.to_string())),
        Seen::Same { trust: Err(why), .. } => (State::Replaced, Some(why.to_string())),
        // Older agents wrote no fingerprints: an inode alone may have been reused by a new file.
        Seen::Same { .. } if mark.offset > 0 && (mark.head.is_none() || mark.marker.is_none()) => {
            (State::Unverified, Some("the checkpoint has no fingerprint of the file's content to compare".to_owned()))
        }
        Seen::Same { size, .. } if *size == mark.offset => (State::Shipped, None),
        Seen::Same { .. } => (State::Behind, None),
    }
}

/// One checkpointed file, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    pub flow: String,
    /// Where the file is: the checkpoint's path, or the name it was found under in that directory.
    pub path: String,
    /// The path in the checkpoint.
    pub checkpoint_path: String,
    /// Bytes in the file now (`null` when it is not the checkpointed inode, or was not found).
    pub size: Option<u64>,
    /// Every byte before this offset was acknowledged.
    pub acknowledged: u64,
    /// `size - acknowledged` for `shipped` and `behind` files; `null` otherwise.
    pub behind: Option<u64>,
    pub state: State,
    pub shipped: bool,
    /// Why, for states other than `shipped`, `behind` and `gone`.
    pub detail: Option<String>,
    pub updated_ms: u64,
}

/// Look at what is at `path` now for checkpoint `e`.
fn examine(path: &Path, e: &Entry) -> Seen {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(err) if err.kind() == io::ErrorKind::NotFound || err.kind() == io::ErrorKind::NotADirectory => {
            return Seen::Missing;
        }
        Err(err) => return Seen::Error(format!("cannot stat it: {err}")),
    };
    if (meta.dev(), meta.ino()) != (e.dev, e.ino) {
        return Seen::Other;
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(err) => return Seen::Error(format!("cannot open it: {err}")),
    };
    // Measured through the open file, the one whose content is checked (the path may have been
    // replaced since the stat).
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(err) => return Seen::Error(format!("cannot stat it: {err}")),
    };
    if (meta.dev(), meta.ino()) != (e.dev, e.ino) {
        return Seen::Other;
    }
    let content = OpenFile { file: &file, size: meta.len() };
    if crate::tail::archive::Kind::of(path).is_some() && e.offset > 0 && e.marker.is_none() {
        // An archive read part way: its offset counts decompressed bytes, so only its first bytes
        // can prove it the same file.
        let head_only = Mark { offset: 0, head: e.head, marker: None };
        return match identity::checkpoint_trust(&head_only, &content) {
            Ok(()) if e.head.is_some() => Seen::Partial { size: content.size },
            Ok(()) => Seen::Same { size: content.size, trust: Ok(()) },
            Err(why) => Seen::Same { size: content.size, trust: Err(why) },
        };
    }
    let mark = Mark { offset: e.offset, head: e.head, marker: e.marker };
    Seen::Same { size: content.size, trust: identity::checkpoint_trust(&mark, &content) }
}

/// Regular files of each directory looked in, by (device, inode): a file rotated by rename while
/// no agent followed it is found under its new name.
#[derive(Default)]
struct Directories(HashMap<PathBuf, HashMap<(u64, u64), PathBuf>>);

impl Directories {
    fn find(&mut self, path: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
        let files = self.0.entry(dir.to_path_buf()).or_insert_with(|| {
            let Ok(list) = fs::read_dir(dir) else { return HashMap::new() };
            list.filter_map(|d| {
                let p = d.ok()?.path();
                let m = fs::metadata(&p).ok().filter(|m| m.is_file())?;
                Some(((m.dev(), m.ino()), p))
            })
            .collect()
        });
        files.get(&(dev, ino)).cloned()
    }
}

fn status_of(e: &Entry, dirs: &mut Directories) -> FileStatus {
    let mut seen = examine(&e.path, e);
    let mut path = e.path.clone();
    if matches!(seen, Seen::Missing | Seen::Other)
        && let Some(moved) = dirs.find(&e.path, e.dev, e.ino)
    {
        // Only a name holding the checkpointed bytes: the inode may be reused by another file.
        let there = examine(&moved, e);
        if matches!(there, Seen::Same { trust: Ok(()), .. }) {
            (seen, path) = (there, moved);
        }
    }
    let mark = Mark { offset: e.offset, head: e.head, marker: e.marker };
    let (state, detail) = decide(&mark, &seen);
    let size = match seen {
        Seen::Same { size, .. } | Seen::Partial { size } => Some(size),
        _ => None,
    };
    let shipped_or_behind = matches!(state, State::Shipped | State::Behind);
    FileStatus {
        flow: e.flow.clone(),
        path: path.display().to_string(),
        checkpoint_path: e.path.display().to_string(),
        size,
        acknowledged: e.offset,
        behind: size.filter(|_| shipped_or_behind).map(|s| s - e.offset),
        state,
        shipped: state == State::Shipped,
        detail,
        updated_ms: e.updated_ms,
    }
}

/// Every checkpoint of the file at `checkpoint_file`, by flow and path; `None`: no file yet.
pub fn collect(checkpoint_file: &Path) -> Result<Option<Vec<FileStatus>>, CheckpointError> {
    let Some(mut entries) = read_entries(checkpoint_file)? else { return Ok(None) };
    entries.sort_by(|a, b| (&a.flow, &a.path, a.ino).cmp(&(&b.flow, &b.path, b.ino)));
    let mut dirs = Directories::default();
    Ok(Some(entries.iter().map(|e| status_of(e, &mut dirs)).collect()))
}

/// `N file(s): M shipped, K behind (B bytes), ...` (states with no file left out, but `shipped`).
pub fn summary(files: &[FileStatus]) -> String {
    let mut parts = Vec::new();
    for state in State::ALL {
        let n = files.iter().filter(|f| f.state == state).count();
        if n == 0 && state != State::Shipped {
            continue;
        }
        let mut part = format!("{n} {}", state.as_str());
        if state == State::Behind {
            part += &format!(" ({} bytes)", files.iter().filter_map(|f| f.behind).sum::<u64>());
        }
        parts.push(part);
    }
    format!("{} file(s): {}", files.len(), parts.join(", "))
}

/// The table for people: per flow, a line per file.
pub fn render_text(checkpoint_file: &Path, files: &[FileStatus]) -> String {
    let num = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows: Vec<[String; 5]> = files
        .iter()
        .map(|f| {
            let path = match f.path == f.checkpoint_path {
                true => f.path.clone(),
                false => format!("{} (was {})", f.path, f.checkpoint_path),
            };
            let state = match &f.detail {
                Some(why) => format!("{}: {why}", f.state.as_str()),
                None => f.state.as_str().to_owned(),
            };
            [path, num(f.size), f.acknowledged.to_string(), num(f.behind), state]
        })
        .collect();
    let header = ["path", "size", "acknowledged", "behind", "state"].map(str::to_owned);
    let mut width = [0usize; 4];
    for r in rows.iter().chain([&header]) {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |r: &[String; 5]| {
        let [w0, w1, w2, w3] = width;
        format!("  {:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {}\n", r[0], r[1], r[2], r[3], r[4])
    };
    let mut out = format!("checkpoint file: {}\n", checkpoint_file.display());
    let mut flow: Option<&str> = None;
    for (f, r) in files.iter().zip(&rows) {
        if flow != Some(&f.flow) {
            flow = Some(&f.flow);
            out += &format!("\nflow {}\n{}", f.flow, line(&header));
        }
        out += &line(r);
    }
    if !files.is_empty() {
        out.push('\n');
    }
    out + &summary(files) + "\n"
}

#[derive(Serialize)]
struct Document<'a> {
    checkpoint_file: String,
    files: &'a [FileStatus],
    /// Files per state, every state present.
    summary: serde_json::Map<String, serde_json::Value>,
}

/// The document for scripts (its schema is in the README).
pub fn render_json(checkpoint_file: &Path, files: &[FileStatus]) -> String {
    let mut summary = serde_json::Map::new();
    summary.insert("files".into(), files.len().into());
    for state in State::ALL {
        summary.insert(state.as_str().into(), files.iter().filter(|f| f.state == state).count().into());
    }
    summary.insert("bytes_behind".into(), files.iter().filter_map(|f| f.behind).sum::<u64>().into());
    let doc = Document { checkpoint_file: checkpoint_file.display().to_string(), files, summary };
    serde_json::to_string_pretty(&doc).expect("serializable") + "\n"
}

/// `kinesis-agent status` on `checkpoint_file`: the report on standard output. A missing file is
/// no error (the agent has not checkpointed anything yet); an unreadable or invalid one is.
pub fn run(checkpoint_file: &Path, json: bool) -> Result<(), CheckpointError> {
    let files = collect(checkpoint_file)?;
    let none_yet = format!("no checkpoints yet at {}\n", checkpoint_file.display());
    let text = match (files, json) {
        (Some(files), false) => render_text(checkpoint_file, &files),
        (Some(files), true) => render_json(checkpoint_file, &files),
        (None, false) => none_yet,
        // Scripts get a document all the same; people see the reason.
        (None, true) => {
            eprint!("{none_yet}");
            render_json(checkpoint_file, &[])
        }
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointStore;
    use crate::checkpoint::Watermark;
    use crate::types::identity::FileId;
    use crate::types::identity::Sample;

    const S: Sample = Sample { len: 3, hash: 7 };

    fn mark(offset: u64) -> Mark {
        Mark { offset, head: Some(S), marker: Some(S) }
    }

    fn same(size: u64) -> Seen {
        Seen::Same { size, trust: Ok(()) }
    }

    #[test]
    fn shipped_needs_the_same_file_with_every_byte_acknowledged() {
        let state = |m: Mark, seen: Seen| decide(&m, &seen).0;
        assert_eq!(state(mark(100), same(100)), State::Shipped);
        assert_eq!(state(mark(60), same(100)), State::Behind);
        assert_eq!(state(mark(100), Seen::Missing), State::Gone);
        assert_eq!(state(mark(100), Seen::Other), State::Replaced);
        assert_eq!(state(mark(100), Seen::Error("EACCES".into())), State::Unreadable);
        let shorter = Seen::Same { size: 10, trust: Err(Distrust::Shorter { offset: 100, size: 10 }) };
        assert_eq!(state(mark(100), shorter), State::Truncated);
        for why in [Distrust::Head, Distrust::Marker { offset: 100 }] {
            assert_eq!(state(mark(100), Seen::Same { size: 100, trust: Err(why) }), State::Replaced);
        }
        // Without fingerprints, (device, inode) alone proves nothing: the inode may be reused.
        for m in [Mark { head: None, ..mark(100) }, Mark { marker: None, ..mark(100) }] {
            assert_eq!(state(m, same(100)), State::Unverified);
            assert_eq!(state(m, same(150)), State::Unverified);
        }
        // Nothing acknowledged of an empty file: nothing to ship.
        assert_eq!(state(Mark { offset: 0, head: None, marker: None }, same(0)), State::Shipped);
        assert_eq!(state(Mark { offset: 0, head: None, marker: None }, same(5)), State::Behind);
    }

    #[test]
    fn the_reason_is_given_when_not_plain() {
        let (_, why) = decide(&mark(1), &Seen::Error("cannot stat it: Permission denied".into()));
        assert_eq!(why.as_deref(), Some("cannot stat it: Permission denied"));
        let (_, why) = decide(&mark(9), &Seen::Same { size: 1, trust: Err(Distrust::Shorter { offset: 9, size: 1 }) });
        assert!(why.unwrap().contains("holds 1"));
        assert_eq!(decide(&mark(1), &same(1)).1, None);
    }

    /// A watermark of `path` as the tracker makes it: fingerprints of the file's bytes.
    fn watermark(path: &Path, offset: u64) -> Watermark {
        let f = File::open(path).unwrap();
        let m = f.metadata().unwrap();
        Watermark {
            was: None,
            flow: "kinesis:s:/logs/*".into(),
            path: path.to_path_buf(),
            id: FileId { dev: m.dev(), ino: m.ino() },
            offset,
            head: identity::head(&f, m.len()),
            marker: identity::marker(&f, offset),
        }
    }

    /// A compressed file read part way: its checkpoint (a decompressed offset past the compressed
    /// size, no end fingerprint) is `partial` while its first bytes match, `replaced` otherwise.
    #[test]
    fn an_archive_read_part_way_is_partial() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("app.log.1.gz");
        let body: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        fs::write(&gz, &body).unwrap();
        let mut w = watermark(&gz, 0);
        (w.offset, w.marker) = (40_000, None);
        let cp = dir.path().join("checkpoints.json");
        let (mut store, _) = CheckpointStore::open(&cp, 7).unwrap();
        store.update(&[w], &[]);
        store.write().unwrap();
        let row = || collect(&cp).unwrap().unwrap().remove(0);
        let r = row();
        assert_eq!((r.state, r.size, r.behind, r.shipped), (State::Partial, Some(1500), None, false));
        assert!(r.detail.unwrap().contains("decompressed byte 40000"));
        // Other first bytes under the same inode: not the archive that was being read.
        File::options().write(true).open(&gz).unwrap().write_all(b"other").unwrap();
        assert_eq!(row().state, State::Replaced);
    }

    /// Real files in each state, read while the store's lock is held (as beside the daemon).
    #[test]
    fn every_state_on_real_files_beside_a_locked_store() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let body: Vec<u8> = (0..2000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for n in ["shipped", "behind", "gone", "replaced", "truncated", "rotated", "loop"] {
            fs::write(p(n), &body[..1500]).unwrap();
        }
        let mut marks: Vec<Watermark> = ["shipped", "gone", "replaced", "truncated", "rotated", "loop"]
            .iter()
            .map(|n| watermark(&p(n), 1500))
            .collect();
        marks.push(watermark(&p("behind"), 1000));
        let cp = p("checkpoints.json");
        let (mut store, _) = CheckpointStore::open(&cp, 7).unwrap();
        store.update(&marks, &[]);
        store.write().unwrap();
        let written = fs::read(&cp).unwrap();

        fs::remove_file(p("gone")).unwrap();
        fs::remove_file(p("replaced")).unwrap();
        fs::write(p("replaced"), &body[500..]).unwrap();
        File::options().write(true).open(p("truncated")).unwrap().set_len(100).unwrap();
        fs::rename(p("rotated"), p("rotated.1")).unwrap();
        fs::remove_file(p("loop")).unwrap();
        std::os::unix::fs::symlink(p("loop"), p("loop")).unwrap();

        let files = collect(&cp).unwrap().unwrap();
        let by_name = |n: &str| files.iter().find(|f| f.checkpoint_path == p(n).display().to_string()).unwrap();
        let row = |n: &str| {
            let f = by_name(n);
            (f.state, f.size, f.behind, f.shipped)
        };
        assert_eq!(row("shipped"), (State::Shipped, Some(1500), Some(0), true));
        assert_eq!(row("behind"), (State::Behind, Some(1500), Some(500), false));
        assert_eq!(row("gone"), (State::Gone, None, None, false));
        assert_eq!(row("replaced").0, State::Replaced);
        assert_eq!(row("truncated"), (State::Truncated, Some(100), None, false));
        assert_eq!(row("rotated"), (State::Shipped, Some(1500), Some(0), true));
        assert_eq!(by_name("rotated").path, p("rotated.1").display().to_string());
        let looped = by_name("loop");
        assert_eq!(looped.state, State::Unreadable);
        assert!(looped.detail.as_deref().unwrap().contains("cannot stat it"), "{looped:?}");

        let text = render_text(&cp, &files);
        assert!(text.contains("flow kinesis:s:/logs/*"), "{text}");
        assert!(text.contains("(was "), "{text}");
        assert!(
            text.ends_with(
                "7 file(s): 2 shipped, 1 behind (500 bytes), 1 truncated, 1 replaced, 1 gone, 1 unreadable\n"
            ),
            "{text}"
        );
        let doc: serde_json::Value = serde_json::from_str(&render_json(&cp, &files)).unwrap();
        assert_eq!(doc["summary"]["shipped"], 2);
        assert_eq!(doc["files"].as_array().unwrap().len(), 7);
        // Read only: the file is as the store wrote it, and the store can still write.
        assert_eq!(fs::read(&cp).unwrap(), written);
        store.write().unwrap();
    }

    /// The README names every state and every field of the JSON document.
    #[test]
    fn the_readme_documents_the_states_and_fields() {
        let readme = include_str!("../../README.md");
        for state in State::ALL {
            assert!(readme.contains(&format!("| `{}` |", state.as_str())), "README.md: no row for {state:?}");
        }
        let file = FileStatus {
            flow: String::new(),
            path: String::new(),
            checkpoint_path: String::new(),
            size: None,
            acknowledged: 0,
            behind: None,
            state: State::Gone,
            shipped: false,
            detail: None,
            updated_ms: 0,
        };
        let doc: serde_json::Value = serde_json::from_str(&render_json(Path::new("c"), &[file])).unwrap();
        let fields = doc.as_object().unwrap().keys().chain(doc["files"][0].as_object().unwrap().keys());
        for field in fields.chain(doc["summary"].as_object().unwrap().keys()) {
            assert!(readme.contains(&format!("`{field}`")), "README.md does not document `{field}`");
        }
    }

    #[test]
    fn no_file_is_none_and_an_invalid_one_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let cp = dir.path().join("c.json");
        assert!(collect(&cp).unwrap().is_none());
        fs::write(&cp, b"{").unwrap();
        let e = collect(&cp).unwrap_err().to_string();
        assert!(e.contains("c.json") && e.contains("not valid"), "{e}");
        assert!(!dir.path().join("c.json.lock").exists(), "no lock file is made");
    }
}
