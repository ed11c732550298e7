//! File discovery: a flow's `filePattern` as a glob over whole paths (globs may appear in
//! directories, `**` crosses them), walked from its literal base directory. Compressed files are
//! skipped unless the pattern's file name asks for their suffix (`*.log.gz`: archives, each read
//! once through its decoder, see `archives.rs`); symlinks are followed. Problems (unreadable
//! directories) are returned, not logged, so the caller can report each once.

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use globset::GlobMatcher;

use crate::types::identity::FileId;

/// Names ending with these (any case) are rotated archives, never tailed (read once, through a
/// decoder, when the pattern names their suffix).
pub const COMPRESSED_SUFFIXES: &[&str] = &[".gz", ".bz2", ".zip", ".xz", ".zst"];
/// `**` walks at most this deep, so a symlink loop cannot hang a scan.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    matcher: GlobMatcher,
    /// The longest leading directory without glob characters: where the walk starts and what is
    /// watched for changes.
    base: PathBuf,
    /// Components below `base` a match can have (None: unlimited, the pattern has `**`).
    depth: Option<usize>,
    /// Compressed suffixes the pattern's file name names (`*.gz`, `app.log.*.{gz,zst}`): files
    /// with them match; other compressed files never do.
    archives: Vec<&'static str>,
}

/// A file the pattern matches.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub id: FileId,
    pub size: u64,
    /// Its size and modification time (whether an archive has stopped changing).
    pub stat: crate::tail::archive::Stat,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

impl Pattern {
    /// A flow's pattern: `text` absolute and `glob` compiled from it (the configuration does both).
    pub fn new(pattern: &str, glob: &globset::Glob) -> Pattern {
        let matcher = glob.compile_matcher();
        let mut base = PathBuf::new();
        let mut rest = 0;
        let mut globbing = false;
        let mut unlimited = false;
        for c in Path::new(pattern).components() {
            let s = c.as_os_str().to_string_lossy();
            if !globbing && !has_glob(&s) {
                base.push(c);
                continue;
            }
            globbing = true;
            rest += 1;
            if s.contains("**") {
                unlimited = true;
            }
        }
        if !globbing {
            // A plain path: the base is its directory.
            let p = Path::new(pattern);
            base = p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
            rest = 1;
        }
        let name = Path::new(pattern).file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        // `.gz` in `*.log.gz`, `gz` in `*.{gz,zst}`.
        let names = |suffix: &str| {
            let ext = &suffix[1..];
            name.match_indices(ext).any(|(i, _)| i > 0 && matches!(name.as_bytes()[i - 1], b'.' | b'{' | b','))
        };
        let archives = crate::tail::archive::SUFFIXES.iter().map(|(s, _)| *s).filter(|s| names(s)).collect();
        Pattern { text: pattern.to_string(), matcher, base, depth: if unlimited { None } else { Some(rest) }, archives }
    }

    /// The pattern of a flow.
    pub fn of(flow: &crate::config::FlowConfig) -> Pattern {
        Pattern::new(&flow.file_pattern, &flow.file_glob)
    }

    /// A pattern from its text (tests).
    #[cfg(test)]
    pub fn parse(pattern: &str) -> Pattern {
        Pattern::new(pattern, &crate::config::compile::file_glob(pattern).unwrap())
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Whether events below the base need a recursive watch.
    pub fn recursive(&self) -> bool {
        self.depth != Some(1)
    }

    /// Whether `path` is one this pattern would tail (ignores whether it exists).
    pub fn matches(&self, path: &Path) -> bool {
        self.matcher.is_match(path) && (!is_compressed(path) || self.names_archive(path))
    }

    /// Whether `path` is a compressed file of a kind the pattern asks for.
    pub fn names_archive(&self, path: &Path) -> bool {
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        self.archives.iter().any(|s| name.ends_with(s))
    }

    /// Whether the pattern asks for compressed files.
    pub fn wants_archives(&self) -> bool {
        !self.archives.is_empty()
    }

    /// Every regular file matching now. `problems` receives (path, error) for directories or
    /// files that could not be examined.
    pub fn scan(&self, problems: &mut Vec<(PathBuf, std::io::Error)>) -> Vec<Found> {
        let mut out = Vec::new();
        let limit = self.depth.unwrap_or(MAX_DEPTH);
        self.walk(&self.base.clone(), 0, limit, &mut out, problems);
        out.sort_by(|a, b| a.path.cmp(&b.path));
        // A file reached by two paths (a symbolic link and its target both match) is one file:
        // keep its first path, so it is tailed once and its path does not flip between scans.
        let mut seen = std::collections::HashSet::new();
        out.retain(|f| seen.insert(f.id));
        out
    }

    fn walk(
        &self,
        dir: &Path,
        depth: usize,
        limit: usize,
        out: &mut Vec<Found>,
        problems: &mut Vec<(PathBuf, std::io::Error)>,
    ) {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && depth == 0 => return,
            Err(e) => {
                problems.push((dir.to_path_buf(), e));
                return;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // Follow symlinks: identity and type are the target's.
            let meta: Metadata = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    problems.push((path, e));
                    continue;
                }
            };
            if meta.is_dir() {
                if depth + 1 < limit {
                    self.walk(&path, depth + 1, limit, out, problems);
                }
            } else if meta.is_file() && self.matches(&path) {
                let (id, stat) = (FileId { dev: meta.dev(), ino: meta.ino() }, crate::tail::archive::Stat::of(&meta));
                out.push(Found { id, size: meta.len(), stat, path });
            }
        }
    }
}

pub fn is_compressed(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    COMPRESSED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Make `pattern` absolute against the working directory (without resolving symlinks).
pub fn absolute(pattern: &str) -> String {
    let p = Path::new(pattern);
    if p.is_absolute() {
        return pattern.to_string();
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut out = cwd;
    for c in p.components() {
        match c {
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x\n").unwrap();
    }

    #[test]
    fn base_and_depth() {
        let p = Pattern::parse("/var/log/app/*.log");
        assert_eq!(p.base(), Path::new("/var/log/app"));
        assert!(!p.recursive());
        let p = Pattern::parse("/var/log/*/x.log");
        assert_eq!(p.base(), Path::new("/var/log"));
        assert!(p.recursive());
        let p = Pattern::parse("/var/log/app.log");
        assert_eq!(p.base(), Path::new("/var/log"));
    }

    #[test]
    fn scans_globs_in_directories_and_double_star() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in ["a/x.log", "b/x.log", "b/y.txt", "a/deep/er/x.log", "a/x.log.gz", "c.log", "a/X.LOG.ZST"] {
            touch(&r.join(f));
        }
        let mut probs = Vec::new();
        let names = |p: &Pattern, probs: &mut Vec<_>| -> Vec<String> {
            p.scan(probs).into_iter().map(|f| f.path.strip_prefix(r).unwrap().to_string_lossy().into_owned()).collect()
        };
        let p = Pattern::parse(&format!("{}/*/x.log", r.display()));
        assert_eq!(names(&p, &mut probs), vec!["a/x.log", "b/x.log"]);
        let p = Pattern::parse(&format!("{}/**/x.log", r.display()));
        assert_eq!(names(&p, &mut probs), vec!["a/deep/er/x.log", "a/x.log", "b/x.log"]);
        let p = Pattern::parse(&format!("{}/a/x.log*", r.display()));
        assert_eq!(names(&p, &mut probs), vec!["a/x.log"]);
        let p = Pattern::parse(&format!("{}/{{c,b/y}}.*", r.display()));
        assert_eq!(names(&p, &mut probs), vec!["b/y.txt", "c.log"]);
        let p = Pattern::parse(&format!("{}/c.log", r.display()));
        assert_eq!(names(&p, &mut probs), vec!["c.log"]);
        // Compressed files only when the pattern's name asks for their suffix.
        let p = Pattern::parse(&format!("{}/a/*.gz", r.display()));
        assert_eq!(names(&p, &mut probs), vec!["a/x.log.gz"]);
        assert!(p.wants_archives());
        let p = Pattern::parse(&format!("{}/a/*.{{gz,zst}}", r.display()));
        assert_eq!(names(&p, &mut probs), vec!["a/x.log.gz"], "the glob is case-sensitive, as always");
        let p = Pattern::parse(&format!("{}/a/*", r.display()));
        assert_eq!(names(&p, &mut probs), vec!["a/x.log"]);
        assert!(!p.wants_archives());
        assert!(probs.is_empty());
    }

    #[test]
    fn missing_base_is_not_a_problem() {
        let mut probs = Vec::new();
        let p = Pattern::parse("/nonexistent-dir-for-test/*.log");
        assert!(p.scan(&mut probs).is_empty());
        assert!(probs.is_empty());
    }

    #[test]
    fn relative_patterns_become_absolute() {
        let a = absolute("./logs/*.log");
        assert!(Path::new(&a).is_absolute());
        assert!(a.ends_with("logs/*.log"));
        assert_eq!(absolute("/x/*.log"), "/x/*.log");
    }
}
