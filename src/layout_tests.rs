//! The layout rules of `lib.rs`, checked on the source tree so that they cannot drift: imports
//! point down the pipeline, `config` and `types` depend on no stage, nothing but `agent` (and
//! the binary) imports `agent`, and no file grows past the size where it holds two ideas.

use std::path::{Path, PathBuf};

/// The pipeline, in order. A stage may import a later stage, never an earlier one.
const STAGES: &[&str] = &["discovery", "tail", "record", "sink", "ack", "checkpoint"];
/// Longest a source file may be; `agent/mod.rs` has a lower bound of its own.
const MAX_LINES: usize = 700;
const MAX_AGENT_LINES: usize = 400;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("layout_tests.rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`src/sink/batcher.rs` → `sink`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a file names with `crate::`.
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            out.push((n + 1, name));
        }
    }
    out
}

/// Every rule broken in the tree under `src`, one line each.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let here = module_of(src, f);
        let shown = f.strip_prefix(src).unwrap().display();
        let lines = text.lines().count();
        let limit = if shown.to_string() == "agent/mod.rs" { MAX_AGENT_LINES } else { MAX_LINES };
        if lines > limit {
            bad.push(format!("{shown}: {lines} lines (at most {limit}: split it)"));
        }
        let rank = STAGES.iter().position(|s| *s == here);
        for (line, to) in imports(&text) {
            if to == here {
                continue;
            }
            let why = if to == "agent" && here != "main" {
                Some("only main imports agent")
            } else if here == "config" || here == "types" {
                (here == "config" || to != "config").then_some("config and types import no stage")
            } else {
                match (rank, STAGES.iter().position(|s| *s == to)) {
                    (Some(a), Some(b)) if b < a => Some("an earlier stage of the pipeline"),
                    _ => None,
                }
            };
            if let Some(why) = why {
                bad.push(format!("{shown}:{line}: imports crate::{to}: {why}"));
            }
        }
    }
    bad
}

#[test]
fn the_tree_keeps_its_layout() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(bad.is_empty(), "layout rules broken (see the top of src/lib.rs):\n{}", bad.join("\n"));
}

#[test]
fn the_check_sees_a_backward_import() {
    let dir = tempfile::tempdir().unwrap();
    let write = |p: &str, text: &str| {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("sink/mod.rs", "use crate::record::Record;\nuse crate::ack::AckTracker;\n");
    write("config/mod.rs", "use crate::types::key::RecordKey;\n");
    write("types/key.rs", "use crate::config::PartitionKeyOption;\n");
    write("ack.rs", "use crate::agent::Mode;\n");
    let bad = violations(dir.path());
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(bad[0].starts_with("ack.rs:1: imports crate::agent"), "{bad:#?}");
    assert!(bad[1].starts_with("config/mod.rs:1: imports crate::types"), "{bad:#?}");
    assert!(bad[2].starts_with("sink/mod.rs:1: imports crate::record"), "{bad:#?}");
}
