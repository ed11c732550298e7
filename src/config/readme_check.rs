//! Keeps the README's configuration tables in step with the key table: every key of `known_keys()` must
//! have a row `| `key` | type | default | status | meaning |` in the table of its scope, with the
//! table's own texts, and every row must be a known key.
//!
//! To regenerate the two tables after changing the key table:
//! `cargo test --lib readme_check -- --ignored --nocapture print_key_tables`.

use std::collections::HashMap;

use super::{KeyInfo, KeyStatus, Scope, known_keys};

const DOC: &str = "README.md";
/// The headings the two tables sit under.
const GLOBAL_HEADING: &str = "### Global keys";
const FLOW_HEADING: &str = "### Flow keys";

fn status_text(status: KeyStatus) -> String {
    match status {
        KeyStatus::Supported => "supported".to_owned(),
        KeyStatus::NotYetSupported(why) => format!("not yet supported: {why}"),
        KeyStatus::Ignored(why) => format!("accepted and ignored: {why}"),
    }
}

/// A table cell: `|` escaped so it cannot end the cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The cells of a key's row, as the doc must show them.
fn expected_cells(key: &KeyInfo) -> [String; 5] {
    [format!("`{}`", key.name), cell(key.ty), cell(key.default), cell(&status_text(key.status)), cell(key.doc)]
}

fn row(key: &KeyInfo) -> String {
    format!("| {} |", expected_cells(key).join(" | "))
}

fn print_table(scope: Scope) {
    println!("| key | type | default | status | meaning |");
    println!("|---|---|---|---|---|");
    for key in known_keys().iter().filter(|k| k.scope == scope) {
        println!("{}", row(key));
    }
}

/// Splits a table row into trimmed cells, on `|` not preceded by a backslash.
fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().strip_prefix('|').and_then(|l| l.strip_suffix('|')).unwrap_or(line);
    let mut cells = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in inner.chars() {
        if c == '|' && !escaped {
            cells.push(current.trim().to_owned());
            current.clear();
        } else {
            current.push(c);
        }
        escaped = c == '\\';
    }
    cells.push(current.trim().to_owned());
    cells
}

/// The key rows (`| `name` | ...`) under `heading`, up to the next heading, by key name.
fn key_rows(doc: &str, heading: &str) -> HashMap<String, Vec<Vec<String>>> {
    let start =
        doc.lines().position(|l| l.trim() == heading).unwrap_or_else(|| panic!("{DOC} has no `{heading}` heading"));
    let mut rows: HashMap<String, Vec<Vec<String>>> = HashMap::new();
    for line in doc.lines().skip(start + 1).take_while(|l| !l.starts_with('#')) {
        if !line.trim_start().starts_with("| `") {
            continue;
        }
        let cells = split_row(line);
        let name = cells[0].trim_matches('`').to_owned();
        rows.entry(name).or_default().push(cells);
    }
    rows
}

fn read_doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn every_key_is_documented_with_its_default() {
    let doc = read_doc();
    let mut problems = Vec::new();
    for (scope, heading) in [(Scope::Global, GLOBAL_HEADING), (Scope::Flow, FLOW_HEADING)] {
        let mut rows = key_rows(&doc, heading);
        for key in known_keys().iter().filter(|k| k.scope == scope) {
            let expected = expected_cells(key);
            match rows.remove(key.name).as_deref() {
                None => problems.push(format!("`{}` has no row under `{heading}`; expected:\n{}", key.name, row(key))),
                Some([cells]) if cells[..] == expected[..] => {}
                Some([cells]) => {
                    let labels = ["key", "type", "default", "status", "meaning"];
                    let diffs: Vec<String> = labels
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| cells.get(i) != Some(&expected[i]))
                        .map(|(i, label)| {
                            format!("  {label}: doc has {:?}, the key table says {:?}", cells.get(i), expected[i])
                        })
                        .collect();
                    let diffs = if diffs.is_empty() { format!("  {} cells", cells.len()) } else { diffs.join("\n") };
                    problems.push(format!("`{}` under `{heading}` differs:\n{diffs}", key.name));
                }
                Some(many) => problems.push(format!("`{}` has {} rows under `{heading}`", key.name, many.len())),
            }
        }
        for name in rows.keys() {
            problems.push(format!("`{name}` is documented under `{heading}` but is not a known key of that scope"));
        }
    }
    // The defaults in particular (also covered above): each key's row holds its default.
    for key in known_keys() {
        let wanted = format!("| `{}` | {} | {} |", key.name, cell(key.ty), cell(key.default));
        if !doc.contains(&wanted) {
            problems.push(format!("no row starts with {wanted}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{DOC} is out of date with `known_keys()` (regenerate the tables with `cargo test --lib readme_check -- \
         --ignored --nocapture print_key_tables`):\n{}",
        problems.join("\n")
    );
}

/// The complete example (the first `jsonc` block under its heading) is a valid configuration
/// that uses only supported keys.
#[test]
fn the_complete_example_is_valid() {
    let doc = read_doc();
    let start = doc.find("### Complete example").unwrap_or_else(|| panic!("{DOC} has no `### Complete example`"));
    let block = doc[start..].split("```jsonc\n").nth(1).unwrap_or_else(|| panic!("no ```jsonc block in the example"));
    let text = block.split("\n```").next().unwrap_or_default();
    let config = super::load_str(std::path::Path::new("/etc/aws-kinesis/agent.json"), text)
        .unwrap_or_else(|e| panic!("the example in {DOC} is not valid:\n{e}"));
    assert_eq!(config.flows.len(), 2);
    assert!(config.notices.is_empty(), "the example uses keys that are not supported: {:?}", config.notices);
}

#[test]
fn split_row_keeps_escaped_bars() {
    assert_eq!(split_row("| `a` | x \\| y | z |"), ["`a`", "x \\| y", "z"]);
}

/// Prints the two tables of the doc, generated from the key table.
#[test]
#[ignore = "generator: run with --ignored --nocapture to print the tables"]
fn print_key_tables() {
    println!("{GLOBAL_HEADING}\n");
    print_table(Scope::Global);
    println!("\n{FLOW_HEADING}\n");
    print_table(Scope::Flow);
}
