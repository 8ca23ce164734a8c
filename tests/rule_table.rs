//! doc/reply-rules.md stays true: it has a row for every reason word the daemon writes, and every
//! test it cites exists.

use helpdesk_milter::policy::Reason;
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn table() -> String {
    fs::read_to_string(Path::new(ROOT).join("doc/reply-rules.md")).expect("doc/reply-rules.md")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The names of the functions of `src/` and `tests/`.
fn function_names() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    rust_files(&Path::new(ROOT).join("tests"), &mut files);
    let mut names = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for part in text.split("fn ").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            names.push(name);
        }
    }
    names
}

#[test]
fn every_reason_has_a_row() {
    let table = table();
    for r in Reason::ALL {
        assert!(table.contains(&format!("| `{}` |", r.as_str())), "doc/reply-rules.md has no row for {r}");
    }
    assert!(table.contains("| `queued (new-topic)` |"));
}

#[test]
fn every_cited_test_exists() {
    let names = function_names();
    let table = table();
    let mut cited = 0;
    // The last column of every table row names the tests, as `name` or `module::tests::name`.
    let test_cells = table
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.trim_end_matches('|').rsplit('|').next());
    for cell in test_cells {
        for quoted in cell.split('`').skip(1).step_by(2) {
            let name = quoted.rsplit("::").next().unwrap_or(quoted);
            if name.contains('_')
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                cited += 1;
                assert!(
                    names.iter().any(|n| n == name),
                    "doc/reply-rules.md cites `{quoted}`, which does not exist"
                );
            }
        }
    }
    assert!(cited > 30, "only {cited} tests cited: is the table still read right?");
}
