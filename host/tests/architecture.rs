//! The layering ARCHITECTURE.md promises, checked on the sources: the run
//! flows one way (config → plan → run → journal → report), no module
//! imports one that imports it back, the lower layers import nothing from
//! `execution` or `cli`, and `cli/` holds no journal or plan logic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code lines of a file, without comments and without its test module
/// (tests may reach anywhere).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module a file is: `transport/ssh.rs` → (`transport`, `ssh`).
fn module_of(src: &Path, file: &Path) -> (String, String) {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let top = parts[0].clone();
    let sub = parts.get(1).cloned().unwrap_or_else(|| "mod".to_string());
    (top, sub)
}

const TOP: &[&str] = &[
    "capabilities",
    "cli",
    "config",
    "distribution",
    "events",
    "execution",
    "harness",
    "journal",
    "loading",
    "planning",
    "report",
    "runtime",
    "terminal",
    "transport",
];

/// The names a file uses of `crate::X` (top-level modules).
fn uses_of(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in TOP {
        for pat in [
            format!("crate::{m}::"),
            format!("crate::{m};"),
            format!("crate::{m}}}"),
        ] {
            if code.contains(&pat) {
                out.insert(m.to_string());
            }
        }
        // `use crate::{a, b::c}` groups.
        for (i, _) in code.match_indices("crate::{") {
            let end = code[i..].find("};").map(|e| i + e).unwrap_or(code.len());
            let group = &code[i..end];
            if group
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == *m)
            {
                out.insert(m.to_string());
            }
        }
    }
    out
}

/// Sibling submodules a file uses: `super::x::` / `super::x;` / `super::{x`.
fn sibling_uses(code: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    siblings
        .iter()
        .filter(|s| {
            code.contains(&format!("super::{s}::"))
                || code.contains(&format!("super::{s};"))
                || code.contains(&format!("super::{{{s}"))
        })
        .cloned()
        .collect()
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
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
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

struct Tree {
    /// Top-level module → modules it imports.
    top: BTreeMap<String, BTreeSet<String>>,
    /// (module, submodule) → sibling submodules it imports.
    sub: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// File → its code.
    files: Vec<(PathBuf, String)>,
}

fn tree() -> Tree {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut subs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut coded = Vec::new();
    for f in &files {
        let (m, s) = module_of(&src, f);
        subs.entry(m.clone()).or_default().insert(s);
        coded.push((f.clone(), code(f)));
    }
    let mut sub: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (f, c) in &coded {
        let (m, s) = module_of(&src, f);
        let mut u = uses_of(c);
        u.remove(&m);
        top.entry(m.clone()).or_default().extend(u);
        let mut sib = sibling_uses(c, &subs[&m]);
        // `crate::m::x` from inside m is a sibling use too.
        for other in &subs[&m] {
            if c.contains(&format!("crate::{m}::{other}::")) {
                sib.insert(other.clone());
            }
        }
        sib.remove(&s);
        sub.entry(m).or_default().entry(s).or_default().extend(sib);
    }
    Tree {
        top,
        sub,
        files: coded,
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let t = tree();
    assert!(
        t.top.contains_key("execution") && t.top.contains_key("cli"),
        "the walk found the modules: {:?}",
        t.top.keys()
    );
    if let Some(c) = find_cycle(&t.top) {
        panic!("modules import each other: {}", c.join(" -> "));
    }
    for (m, g) in &t.sub {
        // A parent's `mod.rs` declares its children; children using the
        // parent's items are not a circle of siblings.
        let g: BTreeMap<String, BTreeSet<String>> = g
            .iter()
            .filter(|(s, _)| s.as_str() != "mod")
            .map(|(s, u)| {
                let mut u = u.clone();
                u.remove("mod");
                (s.clone(), u)
            })
            .collect();
        if let Some(c) = find_cycle(&g) {
            panic!("submodules of {m} import each other: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_lower_layers_import_nothing_from_above() {
    let t = tree();
    for low in [
        "config",
        "loading",
        "journal",
        "planning",
        "events",
        "transport",
    ] {
        let up: Vec<&String> = t.top[low]
            .iter()
            .filter(|m| ["execution", "cli", "harness", "report"].contains(&m.as_str()))
            .collect();
        assert!(up.is_empty(), "{low} imports {up:?}");
    }
    // The seam between the run and the sandbox: config knows no runtime.
    assert!(!t.top["config"].contains("runtime"));
}

#[test]
fn the_command_line_holds_no_journal_or_plan_logic() {
    let t = tree();
    let mut found = Vec::new();
    for (f, c) in &t.files {
        if !f.components().any(|x| x.as_os_str() == "cli") {
            continue;
        }
        for (i, line) in c.lines().enumerate() {
            let calls_journal = [
                "journal::",
                "Journal::",
                "planning::plan",
                "steps_of",
                "replay",
            ]
            .iter()
            .any(|w| line.contains(w))
                && !line.contains("journal::Observer");
            if calls_journal {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "cli/ reads journals or plans itself (move it to execution/):\n{}",
        found.join("\n")
    );
}
