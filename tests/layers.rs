//! The module graph of every crate of the workspace: no import cycle, and the tandem crate's layer rule.
//!
//! Why a test of our own rather than `cargo modules dependencies --acyclic`: it runs in the ordinary
//! `cargo test` (no extra tool to install in CI, no rust-analyzer version to keep in step with the
//! toolchain), it reads only what a person reads — `crate::` and `super::` paths in the source — and it
//! checks the layer rule written in the crate doc of `src/lib.rs`, which a generic cycle finder cannot.
//!
//! What counts as an edge: a path `crate::a::b…` (or `super::…`, resolved against the file's module) in the
//! code of module `m`, comments left out. An edge from `m` to `t` is an edge between the two children of
//! their deepest common ancestor that contain them (`crate::node::api::x` used in `node/boot/http.rs` is the
//! edge `api ← boot` inside `node`); a module using its own parent or its own descendants is no edge. Every
//! such graph — the top-level modules of each crate, and the children of each module — must be acyclic.
//!
//! `cargo test --test layers -- --nocapture` prints the top-level graph of each crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside a crate, without `crate`: `["node", "api"]`.
type ModPath = Vec<String>;

/// The modules of one crate and the `crate::`/`super::` references of each.
#[derive(Debug, Default)]
struct Crate {
    modules: BTreeSet<ModPath>,
    /// (from, to): `to` is the longest known module prefix of the referenced path.
    references: Vec<(ModPath, ModPath)>,
}

/// The source files of a crate: `(module path, text)`; `lib.rs` and `main.rs` are the root.
fn read_crate(src: &Path) -> Vec<(ModPath, String)> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((module_of(src, &path), text));
            }
        }
    }
    files.sort();
    files
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> =
        relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments (line comments, doc comments, block comments) and string literals.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            while i < bytes.len() && !bytes[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if bytes[i] == b'"' && (i == 0 || bytes[i - 1] != b'\'') {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

/// Every path that starts at `start` in `code`, with `use` groups expanded: `a::{b, c::d}` → `a::b`, `a::c::d`.
fn paths_after(code: &str, start: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(start) {
        let position = from + at;
        from = position + start.len();
        let before = code[..position].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut rest = &code[from..];
        for path in parse_tree(&mut rest) {
            found.push((position, path));
        }
    }
    found
}

/// Parses `ident(::ident)*(::{tree, tree})?`; returns the paths it names.
fn parse_tree(rest: &mut &str) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    loop {
        *rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('{') {
            *rest = after;
            let mut paths = Vec::new();
            loop {
                *rest = rest.trim_start();
                if let Some(after) = rest.strip_prefix('}') {
                    *rest = after;
                    break;
                }
                if let Some(after) = rest.strip_prefix(',') {
                    *rest = after;
                    continue;
                }
                let before = rest.len();
                for tail in parse_tree(rest) {
                    paths.push([prefix.clone(), tail].concat());
                }
                if rest.len() == before {
                    // Not a path (`*`, `as x`): skip one character.
                    *rest = &rest[rest.chars().next().map_or(0, char::len_utf8)..];
                }
            }
            return paths;
        }
        let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if ident.is_empty() {
            return if prefix.is_empty() { Vec::new() } else { vec![prefix] };
        }
        *rest = &rest[ident.len()..];
        prefix.push(ident);
        match rest.strip_prefix("::") {
            Some(after) => *rest = after,
            None => return vec![prefix],
        }
    }
}

/// The modules and references of the crate whose sources are in `src`.
fn scan(src: &Path) -> Crate {
    let files = read_crate(src);
    let mut krate = Crate::default();
    for (module, text) in &files {
        krate.modules.insert(module.clone());
        let code = strip_comments(text);
        // Inline modules (`mod tests { … }`) are modules too; `super::` inside one is one level closer.
        let inline_start = code
            .find("\nmod ")
            .or_else(|| code.find(" mod "))
            .filter(|&at| code[at..].lines().next().is_some_and(|line| line.trim_end().ends_with('{')));
        for (_, path) in paths_after(&code, "crate::") {
            krate.references.push((module.clone(), path));
        }
        for (position, path) in paths_after(&code, "super::") {
            let inline = inline_start.is_some_and(|start| position > start);
            let mut base = module.clone();
            let mut path = path;
            let mut ups = if inline { 0 } else { 1 };
            while path.first().is_some_and(|p| p == "super") {
                path.remove(0);
                ups += 1;
            }
            for _ in 0..ups {
                base.pop();
            }
            krate.references.push((module.clone(), [base, path].concat()));
        }
    }
    let modules = krate.modules.clone();
    for (_, to) in &mut krate.references {
        while !to.is_empty() && !modules.contains(to) {
            to.pop();
        }
    }
    krate
}

/// The edges between sibling modules, by parent: `parent → {(from child, to child)}`.
fn sibling_edges(krate: &Crate) -> BTreeMap<ModPath, BTreeSet<(String, String)>> {
    let mut edges: BTreeMap<ModPath, BTreeSet<(String, String)>> = BTreeMap::new();
    for (from, to) in &krate.references {
        let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            continue;
        }
        edges.entry(from[..common].to_vec()).or_default().insert((from[common].clone(), to[common].clone()));
    }
    edges
}

/// A cycle of the directed graph, if it has one.
fn find_cycle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    // 0: unvisited, 1: on the current path, 2: done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(node, 1);
        path.push(node);
        for &to in next.get(node).into_iter().flatten() {
            match state.get(to).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|n| *n == to).unwrap();
                    let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(to.to_string());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(to, next, state, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node, 2);
        None
    }
    let nodes: Vec<&str> = next.keys().copied().collect();
    for node in nodes {
        if state.get(node).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(node, &next, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const CRATES: [&str; 3] = ["src", "storage/src", "cluster/src"];

/// The modules of `edges` that lie on a cycle, grouped by strongly connected component.
fn tangles(edges: &BTreeSet<(String, String)>) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(node) = todo.pop() {
            for (a, b) in edges {
                if *a == node && seen.insert(b.clone()) {
                    todo.push(b.clone());
                }
            }
        }
        seen
    };
    let mut groups: Vec<BTreeSet<String>> = Vec::new();
    for (node, _) in edges {
        if groups.iter().any(|group| group.contains(node)) {
            continue;
        }
        let group: BTreeSet<String> =
            reach(node).into_iter().filter(|other| reach(other).contains(node)).collect();
        if !group.is_empty() {
            groups.push(group);
        }
    }
    groups
}

/// Every cycle between sibling modules of every crate: `crate: parent: a → b → a (modules on a cycle: …)`.
fn cycles() -> Vec<String> {
    let mut found = Vec::new();
    for src in CRATES {
        let krate = scan(&workspace().join(src));
        for (parent, edges) in sibling_edges(&krate) {
            if let Some(cycle) = find_cycle(&edges) {
                let tangled: Vec<String> = tangles(&edges)
                    .iter()
                    .map(|group| group.iter().cloned().collect::<Vec<_>>().join(" "))
                    .collect();
                found.push(format!(
                    "{src}: crate::{}: {} (modules on a cycle: {})",
                    parent.join("::"),
                    cycle.join(" → "),
                    tangled.join(" | ")
                ));
            }
        }
    }
    found
}

#[test]
fn no_crate_has_an_import_cycle_between_modules() {
    for src in CRATES {
        let krate = scan(&workspace().join(src));
        println!("{src}: {} modules", krate.modules.len());
        for (parent, edges) in sibling_edges(&krate) {
            let scope = if parent.is_empty() {
                "top level".to_string()
            } else {
                format!("in crate::{}", parent.join("::"))
            };
            let edges: Vec<String> = edges.iter().map(|(from, to)| format!("{from} → {to}")).collect();
            println!("  {scope}: {}", edges.join(", "));
        }
    }
    let cycles = cycles();
    assert!(cycles.is_empty(), "import cycles between modules:\n{}", cycles.join("\n"));
}

/// The layer rule of the tandem crate (see the crate doc of `src/lib.rs`).
#[test]
fn the_tandem_crate_keeps_its_layer_rule() {
    let krate = scan(&workspace().join("src"));
    let mut broken = Vec::new();
    let leaves = ["http", "auth", "config", "limits"];
    for (from, to) in &krate.references {
        let (Some(a), Some(b)) = (from.first(), to.first()) else { continue };
        if a == b {
            continue;
        }
        let edge = format!("{} → {}", from.join("::"), to.join("::"));
        if b == "cmd" {
            broken.push(format!("{edge}: nothing imports cmd"));
        }
        if a == "client" && b == "node" {
            broken.push(format!("{edge}: client never imports node"));
        }
        // The node may use the admin API's transport (a follower proxies to the leader), never a flow.
        if a == "node" && b == "client" && to.get(1).map(String::as_str) != Some("api") {
            broken.push(format!("{edge}: node imports only client::api, never client's command flows"));
        }
        if leaves.contains(&a.as_str()) && !leaves.contains(&b.as_str()) {
            broken.push(format!(
                "{edge}: the shared leaves (http, auth, config, limits) import only each other"
            ));
        }
        if b == "bench" && a != "cmd" {
            broken.push(format!("{edge}: only cmd (`tandem bench`, feature `bench`) imports the benchmarks"));
        }
    }
    broken.sort();
    broken.dedup();
    assert!(broken.is_empty(), "the layer rule is broken:\n{}", broken.join("\n"));
}

// The checker checks itself: on a tiny crate with a cycle it must find it.

#[test]
fn the_checker_finds_a_cycle_and_accepts_a_dag() {
    let edges = |list: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    let cycle = find_cycle(&edges(&[("cli", "backup"), ("backup", "api"), ("api", "cli"), ("x", "cli")]));
    assert_eq!(cycle.unwrap().len(), 4, "cli → backup → api → cli");
    assert_eq!(find_cycle(&edges(&[("a", "a")])), Some(vec!["a".into(), "a".into()]));
    assert_eq!(
        find_cycle(&edges(&[("cmd", "client"), ("cmd", "node"), ("node", "http"), ("client", "http")])),
        None
    );
}

#[test]
fn the_checker_reads_use_groups_super_and_skips_comments() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod cli;\npub mod api;\npub mod backup;\n");
    write("cli.rs", "use crate::{api::serve, backup::{self, run}};\n// crate::nothing\n");
    write("api/mod.rs", "mod inner;\n/// [`crate::cli`] in a doc comment is no edge\nfn f() {}\n");
    write("api/inner.rs", "use super::super::backup::State;\n");
    write(
        "backup/mod.rs",
        "fn f() -> u8 { crate::cli::EXIT }\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    );
    let krate = scan(dir.path());
    let top = sibling_edges(&krate).remove(&Vec::new()).unwrap();
    let expected: BTreeSet<(String, String)> =
        [("cli", "api"), ("cli", "backup"), ("api", "backup"), ("backup", "cli")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(top, expected);
    assert!(find_cycle(&top).is_some(), "cli → backup → cli");
}
