//! The shape of the source tree, checked on every `cargo test` (ARCHITECTURE.md says why):
//!
//! - no import cycle between the crate's top-level modules, nor between the files of one folder;
//! - no source file of `src/` over 600 lines, tests beside the code included;
//! - no function of `src/` over 80 lines.
//!
//! The module graph is read from the text: every `crate::NAME` (in `use` lines, grouped imports
//! and paths) from a file of module A is an edge A -> NAME; inside a folder, every `super::NAME`
//! from one file to a sibling file is an edge between them (a folder's `mod.rs` declares its
//! files, and its files may use what it defines: that is not a cycle).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The text without comments and string contents, so that a path in a doc comment or a message
/// is no edge.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The first names after each `PREFIX::` in `code`: `crate::a::b` gives a; `crate::{a, b::c}`
/// gives a and b.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let pat = format!("{prefix}::");
    let mut rest = code;
    while let Some(p) = rest.find(&pat) {
        // `self::super::x`, `foo_crate::x`: only the keyword itself counts.
        let before = rest[..p].chars().next_back();
        rest = &rest[p + pat.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        let name = ident_at(&group[i..]);
                        if !name.is_empty() {
                            out.insert(name.to_string());
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// A cycle in `graph`, if any, as the list of its nodes.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// The top-level module a file of `src/` belongs to (`src/config/raw.rs` -> config).
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(SRC).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in rust_files(Path::new(SRC)) {
        let m = top_module(&f);
        if m == "main" || m == "lib" {
            continue;
        }
        let deps = names_after(&code(&fs::read_to_string(&f).unwrap()), "crate");
        graph.entry(m.clone()).or_default().extend(deps.into_iter().filter(|d| *d != m));
    }
    graph
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = module_graph();
    assert!(graph.len() > 10, "the modules were not found: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn no_import_cycle_between_the_files_of_a_folder() {
    let mut folders: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in rust_files(Path::new(SRC)) {
        let (Some(dir), Some(stem)) = (f.parent(), f.file_stem()) else { continue };
        let stem = stem.to_string_lossy().to_string();
        if dir == Path::new(SRC) || stem == "mod" {
            continue;
        }
        let deps = names_after(&code(&fs::read_to_string(&f).unwrap()), "super");
        folders.entry(dir.to_path_buf()).or_default().entry(stem).or_default().extend(deps);
    }
    for (dir, mut graph) in folders {
        let siblings: BTreeSet<String> = graph.keys().cloned().collect();
        for deps in graph.values_mut() {
            deps.retain(|d| siblings.contains(d));
        }
        if let Some(cycle) = find_cycle(&graph) {
            panic!("import cycle in {}: {}", dir.display(), cycle.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_finds_cycles() {
    let code =
        "use crate::{a::X, b};\nuse crate::c::{self, D};\nlet x = crate::d::f(); // crate::e\n\"crate::f\"";
    let names: Vec<String> = names_after(&self::code(code), "crate").into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap().len(), 4);
}

#[test]
fn no_source_file_is_over_600_lines() {
    let long: Vec<String> = rust_files(Path::new(SRC))
        .into_iter()
        .map(|f| (fs::read_to_string(&f).unwrap().lines().count(), f))
        .filter(|(n, _)| *n > MAX_FILE_LINES)
        .map(|(n, f)| format!("{} ({n} lines)", f.display()))
        .collect();
    assert!(long.is_empty(), "split these files (ARCHITECTURE.md): {long:?}");
}

/// Functions are found as rustfmt writes them: a line that starts a `fn` and ends with `{`, up
/// to the line that closes it at the same indentation.
#[test]
fn no_function_is_over_80_lines() {
    let mut long = Vec::new();
    for f in rust_files(Path::new(SRC)) {
        let text = fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            let starts_fn =
                ["fn ", "pub fn ", "async fn ", "pub async fn ", "pub(super) fn ", "pub(crate) fn "]
                    .iter()
                    .any(|p| trimmed.starts_with(p) || trimmed.starts_with(&format!("pub(super) async {p}")));
            if !starts_fn || trimmed.ends_with(';') || trimmed.ends_with('}') {
                continue;
            }
            let close = format!("{indent}}}");
            let end = lines[i + 1..].iter().position(|l| *l == close || l.starts_with(&format!("{close} ")));
            if let Some(n) = end.map(|e| e + 2).filter(|n| *n > MAX_FN_LINES) {
                long.push(format!("{}:{} ({n} lines)", f.display(), i + 1));
            }
        }
    }
    assert!(long.is_empty(), "split these functions (ARCHITECTURE.md): {long:?}");
}
