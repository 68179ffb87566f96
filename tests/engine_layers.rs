//! The modules of `src/engine/` import each other one way only: this test reads their paths
//! (`use` lines and paths in code) and fails on a cycle, naming it.
//!
//! A node is a file directly in `src/engine/` or a folder there (`set/`, `testing/`). The files
//! that are the `Engine` itself (its impl blocks, split by job) are one node, `engine`: they
//! may refer to each other and to everything below them. Test modules inside a file
//! (`#[cfg(test)] mod tests`) are not read: they may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The files of the `Engine` layer.
const ENGINE_LAYER: &[&str] = &[
    "mod",
    "enable",
    "restore",
    "opener",
    "overflows",
    "groups",
    "exports",
];

/// A file's code without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each entry of the brace group at the start of `s` ("{a, b::c}").
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                start = depth == 1;
                continue;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                start = true;
                continue;
            }
            _ => {}
        }
        if start && depth == 1 && !c.is_whitespace() {
            heads.push(ident_at(&s[i..]).to_string());
            start = false;
        }
    }
    heads
}

/// The engine-level names a file refers to through `prefix` ("super::", "super::super::",
/// "crate::engine::").
fn names_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = code[at..].find(prefix) {
        let pos = at + i;
        at = pos + prefix.len();
        // `super::super::x` is not a `super::x`.
        if code[..pos].ends_with("super::") || code[at..].starts_with("super::") {
            continue;
        }
        let rest = &code[at..];
        if rest.starts_with('{') {
            out.extend(group_heads(rest));
        } else {
            out.push(ident_at(rest).to_string());
        }
    }
    out
}

/// Identifiers that name a module of `modules`, used as a path head (`name::`, not `x::name::`).
fn bare_module_paths(code: &str, modules: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(i) = code[at..].find("::") {
        let pos = at + i;
        at = pos + 2;
        let mut start = pos;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        if start == pos || code[..start].ends_with("::") {
            continue;
        }
        let name = &code[start..pos];
        if modules.contains(name) {
            out.push(name.to_string());
        }
    }
    out
}

#[test]
fn the_engine_modules_import_each_other_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let node_of = |name: &str| -> String {
        if ENGINE_LAYER.contains(&name) {
            "engine".to_string()
        } else {
            name.to_string()
        }
    };
    // Engine-level module names, and the files of each node with their depth.
    let mut modules = BTreeSet::new();
    let mut files: Vec<(String, bool, Vec<String>, String)> = Vec::new();
    for entry in fs::read_dir(&root).expect("src/engine") {
        let path = entry.expect("entry").path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            modules.insert(stem.clone());
            let mut children = Vec::new();
            let mut texts = Vec::new();
            for sub in fs::read_dir(&path).expect("folder") {
                let sub = sub.expect("entry").path();
                if sub.extension().is_some_and(|e| e == "rs") {
                    let name = sub.file_stem().unwrap().to_string_lossy().to_string();
                    children.push(name.clone());
                    texts.push((name, code(&fs::read_to_string(&sub).expect("read"))));
                }
            }
            for (name, text) in texts {
                files.push((node_of(&stem), name == "mod", children.clone(), text));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            modules.insert(stem.clone());
            let text = code(&fs::read_to_string(&path).expect("read"));
            files.push((node_of(&stem), true, Vec::new(), text));
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (node, top, children, text) in &files {
        // Files directly under the node's own module see engine-level names through `super::`;
        // files of a folder see them through `super::super::`.
        let mut names = names_after(text, "crate::engine::");
        names.extend(names_after(
            text,
            if *top { "super::" } else { "super::super::" },
        ));
        for name in names {
            // `self` in a group, or an item of the engine's root module (`super::Engine`).
            let target = if modules.contains(&name) {
                node_of(&name)
            } else {
                "engine".to_string()
            };
            edges.entry(node.clone()).or_default().insert(target);
        }
        for name in bare_module_paths(text, &modules) {
            if !children.contains(&name) {
                edges
                    .entry(node.clone())
                    .or_default()
                    .insert(node_of(&name));
            }
        }
    }
    for (node, targets) in edges.iter_mut() {
        targets.remove(node);
    }
    // Kahn's algorithm: what is left once every node without an unsorted dependency is
    // removed lies on a cycle.
    let mut nodes: BTreeSet<String> = modules.iter().map(|m| node_of(m)).collect();
    let mut order = Vec::new();
    loop {
        let ready: Vec<String> = nodes
            .iter()
            .filter(|n| {
                edges
                    .get(*n)
                    .is_none_or(|t| t.iter().all(|d| !nodes.contains(d)))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            break;
        }
        for n in ready {
            nodes.remove(&n);
            order.push(n);
        }
    }
    let left: Vec<String> = nodes
        .iter()
        .map(|n| {
            let deps: Vec<&String> = edges[n].iter().filter(|d| nodes.contains(*d)).collect();
            format!("{n} -> {deps:?}")
        })
        .collect();
    assert!(
        left.is_empty(),
        "the imports of src/engine/ have a cycle among: {left:#?}\n(sorted so far: {order:?})"
    );
    // The reading finds the imports it must (a parser that finds none would pass any tree).
    for (from, to) in [("copier", "set"), ("set", "master"), ("master", "stripe")] {
        assert!(
            edges.get(from).is_some_and(|t| t.contains(to)),
            "{from} should import {to}: {edges:#?}"
        );
    }
    println!("engine layers, bottom up: {order:?}");
}
