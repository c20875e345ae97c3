//! The code map of `src/lib.rs`, held by the real code: every `crate::`
//! path under `src/` against the map's order of modules, and the
//! invariants about what certain modules never name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn lib_rs() -> String {
    std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs is readable")
}

/// The modules of the code map, bottom to top: its "- [`name`]" lines.
fn code_map() -> Vec<String> {
    lib_rs()
        .lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split_once("`]"))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The modules `lib.rs` declares.
fn declared_modules() -> BTreeSet<String> {
    lib_rs()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect()
}

/// A source file of the library, with the top-level module it belongs to
/// and how deep below the crate root its own module sits.
struct Source {
    path: PathBuf,
    module: String,
    depth: usize,
    text: String,
}

/// Every `.rs` file under `src/` but `lib.rs` and the binaries.
fn sources() -> Vec<Source> {
    let root = src();
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable").flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(&root).unwrap().to_owned();
            if path.is_dir() {
                if rel != Path::new("bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") || rel == Path::new("lib.rs") {
                continue;
            }
            let parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let depth = parts.len() - usize::from(parts.last().unwrap() == "mod");
            out.push(Source {
                module: parts[0].clone(),
                depth,
                text: std::fs::read_to_string(&path).unwrap(),
                path,
            });
        }
    }
    assert!(out.len() > 20, "the library's sources were not found");
    out
}

/// The text without `//` comments, so prose naming a module is no import.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first identifier of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The names right after each `prefix` in `code` (`prefix::{a, b::c}`
/// gives `a` and `b`), where `prefix` starts a path.
fn names_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => out.extend(group_heads(group)),
            None => out.push(ident(rest).to_owned()),
        }
    }
    out
}

/// The first name of each item of a `{…}` group, given the text after `{`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && (c.is_alphanumeric() || c == '_') => {
                heads.push(ident(&group[i..]).to_owned());
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules a file names through `crate::` paths, and through
/// `super::` paths that climb to the crate root.
fn modules_used(source: &Source, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code_of(&source.text);
    let mut used: BTreeSet<String> = names_after(&code, "crate::").into_iter().collect();
    let to_root = "super::".repeat(source.depth);
    used.extend(
        names_after(&code, &to_root)
            .into_iter()
            .filter(|name| modules.contains(name)),
    );
    used.remove("self");
    used.remove(&source.module);
    used
}

#[test]
fn the_code_map_names_every_module_once() {
    let map = code_map();
    let listed: BTreeSet<String> = map.iter().cloned().collect();
    assert_eq!(listed.len(), map.len(), "a module is listed twice: {map:?}");
    assert_eq!(
        listed,
        declared_modules(),
        "the code map in src/lib.rs and its `pub mod` lines disagree"
    );
}

#[test]
fn each_module_uses_only_those_below_it_in_the_code_map() {
    let map = code_map();
    let modules = declared_modules();
    let mut violations = Vec::new();
    for source in sources() {
        let Some(own) = map.iter().position(|m| *m == source.module) else {
            violations.push(format!(
                "{}: module `{}` is not in the code map",
                source.path.display(),
                source.module
            ));
            continue;
        };
        for used in modules_used(&source, &modules) {
            match map.iter().position(|m| *m == used) {
                None => violations.push(format!(
                    "{}: `crate::{used}` is no module of the code map",
                    source.path.display()
                )),
                Some(at) if at > own => violations.push(format!(
                    "{}: `{}` uses `{used}`, which the code map lists above it",
                    source.path.display(),
                    source.module
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the code in src/ breaks the layer order of src/lib.rs's code map \
         (move the import, or the module in the map if the map is wrong):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_client_never_reaches_into_the_server_stack() {
    let modules = declared_modules();
    let server_stack = ["db", "auth", "routing", "config", "link", "server"];
    for source in sources().iter().filter(|s| s.module == "client") {
        let used = modules_used(source, &modules);
        for m in server_stack {
            assert!(
                !used.contains(m),
                "{} uses `{m}`: the two stacks meet only in the modules below them",
                source.path.display()
            );
        }
    }
}

/// Text that no file of `module` may contain, even in a comment.
fn assert_never_names(module: &str, forbidden: &[&str], why: &str) {
    let files: Vec<Source> = sources()
        .into_iter()
        .filter(|s| s.module == module)
        .collect();
    assert!(!files.is_empty(), "no sources found for {module}");
    for source in files {
        for f in forbidden {
            assert!(
                !source.text.contains(f),
                "{} names `{f}`: {why}",
                source.path.display()
            );
        }
    }
}

#[test]
fn storage_and_routing_never_open_envelopes_or_hold_private_keys() {
    for module in ["db", "routing"] {
        assert_never_names(
            module,
            &[
                "crypto::open",
                "crypto::{open",
                "Identity",
                "envelope::open",
            ],
            "storage and routing see opaque bytes only",
        );
    }
}

#[test]
fn only_storage_names_a_database_backend() {
    for module in ["auth", "routing", "server", "link", "config", "bench"] {
        assert_never_names(
            module,
            &[
                "sqlx",
                "SqlitePool",
                "SqliteConnection",
                "PgPool",
                "PgConnection",
            ],
            "the server calls Store methods, whichever backend is behind it",
        );
    }
}

#[test]
fn protocol_knows_no_sockets_storage_or_keys() {
    assert_never_names(
        "protocol",
        &["TcpStream", "rustls", "sqlx", "crate::crypto", "crate::db"],
        "the wire layer is pure",
    );
}

#[test]
fn import_paths_are_read_as_the_compiler_reads_them() {
    let source = Source {
        path: "src/x/y.rs".into(),
        module: "x".into(),
        depth: 2,
        text: "use crate::{a::B, b, c::{d, e}};\n\
               use crate::x::Z; // crate::f in a comment\n\
               let v = crate::g::h();\n\
               use super::super::i::J;\n\
               use super::k;\n\
               $crate::l\n"
            .into(),
    };
    let modules: BTreeSet<String> = ["a", "b", "c", "g", "i", "k", "x"]
        .into_iter()
        .map(String::from)
        .collect();
    let used: Vec<String> = modules_used(&source, &modules).into_iter().collect();
    assert_eq!(used, ["a", "b", "c", "g", "i"]);
}
