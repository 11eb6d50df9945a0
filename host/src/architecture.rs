//! The module graph, read from the source and checked: which module of
//! `host/src` uses which, that every use points down the layers of
//! `docs/architecture.md`, and that no modules use each other in a circle.
//! The generated part of that document is this test's output; to
//! regenerate it after changing imports:
//!
//! ```text
//! CAIRN_WRITE_ARCHITECTURE=1 cargo test -p cairn-host --lib architecture
//! ```
//!
//! A node is a top-level module of the crate, except that a module's HTTP
//! handlers (any `api.rs` under it) are a node of their own, `X::api`, in
//! the HTTP layer: resources never see the app state, only their handlers do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may use modules of lower layers, and modules of
/// its own layer as long as no circle forms.
const LAYERS: &[(&str, &[&str])] = &[
    ("composition root", &["app", "openapi", "server"]),
    (
        "HTTP",
        &[
            "agent::api",
            "schema::api",
            "stash::api",
            "stream::api",
            "task::api",
            "policy::api",
            "ops::api",
            "discover",
            "mcp",
            "state",
            "ui",
        ],
    ),
    ("resources", &["contract", "task", "stash", "stream", "schema", "signal", "agent", "sandboxed"]),
    ("policy engine", &["policy"]),
    (
        "core",
        &["config", "error", "db", "clock", "name", "pagination", "precondition", "serial", "search", "ops", "testing"],
    ),
];

/// Macros exported at the crate root, by the module that defines them.
const MACROS: &[(&str, &str)] = &[
    ("with_db", "db"),
    ("bind_args", "db"),
    ("text_column", "db"),
    ("insert_decisions", "policy"),
    ("bind_signal", "signal"),
    ("append_in_tx", "stream"),
];

/// Items re-exported at the crate root, by the module they come from.
const ROOT_ITEMS: &[(&str, &str)] = &[("App", "state"), ("AppState", "state"), ("router", "app"), ("Config", "config")];

const START: &str = "<!-- module-graph:start -->";
const END: &str = "<!-- module-graph:end -->";

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read host/src").flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The node a file belongs to; None for the crate root and the binaries.
fn node_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    let top = parts.first()?;
    if top == "lib" || top == "main" || top == "bin" || top == "architecture" {
        return None;
    }
    let api = parts.iter().skip(1).any(|p| p == "api");
    Some(if api { format!("{top}::api") } else { top.clone() })
}

/// The code of a file without comments, string contents, and its unit tests.
fn code(text: &str) -> String {
    let cut = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    let mut out = String::with_capacity(cut);
    let b = &text.as_bytes()[..cut];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                out.push('"');
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                out.push('"');
                i += 1;
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

/// The first path segment of every `crate::...` use in `code`, with
/// `crate::{a, b::c}` groups expanded.
fn crate_uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = 0;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = k;
                    break;
                }
            }
            let mut level = 0;
            let mut item = String::new();
            for ch in group[..end].chars().chain(std::iter::once(',')) {
                match ch {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        let first = item.trim().split("::").next().unwrap_or_default().trim().to_string();
                        if !first.is_empty() {
                            found.insert(first);
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(ch);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Every node and the nodes it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src()).expect("under src").to_path_buf();
        let Some(node) = node_of(&rel) else { continue };
        let text = code(&std::fs::read_to_string(&f).expect("read a source file"));
        let top = node.split("::").next().unwrap_or_default().to_string();
        let edges = g.entry(node.clone()).or_default();
        // A module's handlers reach the module itself through `super`.
        if node.ends_with("::api") && text.contains("super::") {
            edges.insert(top.clone());
        }
        for used in crate_uses(&text) {
            let target = MACROS
                .iter()
                .chain(ROOT_ITEMS)
                .find(|(item, _)| *item == used)
                .map(|(_, m)| m.to_string())
                .or_else(|| modules.contains(&used).then_some(used.clone()));
            if let Some(t) = target
                && t != top
            {
                edges.insert(t);
            }
        }
        for (m, module) in MACROS {
            if text.contains(&format!("{m}!")) && *module != top {
                edges.insert(module.to_string());
            }
        }
    }
    g
}

/// The target as the graph sees it: handlers are addressed by their module.
fn layer(node: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, members)| members.contains(&node))
}

fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => {
                let from = path.iter().position(|p| p == n).unwrap_or(0);
                let mut c = path[from..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    g.keys().find_map(|n| visit(n, g, &mut state, &mut Vec::new()))
}

/// The generated section of docs/architecture.md.
fn render(g: &BTreeMap<String, BTreeSet<String>>) -> String {
    let mut out = format!("{START}\n<!-- Generated by `host/src/architecture.rs`; do not edit by hand. -->\n\n");
    out.push_str("| layer | module | uses |\n|---|---|---|\n");
    for (name, members) in LAYERS {
        for m in *members {
            let Some(uses) = g.get(*m) else { continue };
            let list: Vec<String> = uses.iter().map(|u| format!("`{u}`")).collect();
            let list = if list.is_empty() { "nothing".to_string() } else { list.join(", ") };
            out.push_str(&format!("| {name} | `{m}` | {list} |\n"));
        }
    }
    out.push_str("\n```mermaid\nflowchart TD\n");
    for (n, uses) in g {
        for u in uses {
            out.push_str(&format!("    {} --> {}\n", n.replace("::", "_"), u.replace("::", "_")));
        }
    }
    out.push_str(&format!("```\n{END}"));
    out
}

#[test]
fn every_use_points_down_and_none_is_circular() {
    let g = graph();
    let mut wrong = Vec::new();
    for (n, uses) in &g {
        let Some(from) = layer(n) else {
            wrong.push(format!("{n} is in no layer: add it to LAYERS and docs/architecture.md"));
            continue;
        };
        for u in uses {
            match layer(u) {
                None => wrong.push(format!("{n} uses {u}, which is in no layer")),
                Some(to) if to < from => {
                    wrong.push(format!("{n} ({}) uses {u} ({}), a layer above it", LAYERS[from].0, LAYERS[to].0))
                }
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(cycle(&g), None, "modules that use each other in a circle");
}

#[test]
fn the_architecture_document_shows_the_graph_as_it_is() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
    let doc = std::fs::read_to_string(&doc_path).expect("read docs/architecture.md");
    let (Some(a), Some(b)) = (doc.find(START), doc.find(END)) else {
        panic!("docs/architecture.md has no {START} ... {END} section");
    };
    let fresh = render(&graph());
    let current = &doc[a..b + END.len()];
    if current != fresh {
        if std::env::var_os("CAIRN_WRITE_ARCHITECTURE").is_some() {
            std::fs::write(&doc_path, format!("{}{fresh}{}", &doc[..a], &doc[b + END.len()..])).expect("write");
        } else {
            panic!(
                "docs/architecture.md's module graph is out of date; regenerate it with\n  \
                 CAIRN_WRITE_ARCHITECTURE=1 cargo test -p cairn-host --lib architecture"
            );
        }
    }
}

#[test]
fn uses_are_read_through_groups_and_comments() {
    let c = code("use crate::{a, b::{c, d}, e::f}; // crate::zzz\nlet s = \"crate::yyy\"; crate::g::h();");
    assert_eq!(crate_uses(&c), ["a", "b", "e", "g"].into_iter().map(String::from).collect());
    assert_eq!(node_of(Path::new("task/tasks/api.rs")).as_deref(), Some("task::api"));
    assert_eq!(node_of(Path::new("policy/view.rs")).as_deref(), Some("policy"));
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a".into(), ["b".into()].into()), ("b".into(), ["a".into()].into())].into();
    assert!(cycle(&g).is_some());
}
