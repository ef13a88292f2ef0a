//! No import circles in `src/pipeline`: no file imports a file that imports it, directly or
//! through others, and the shared types sit in leaves (`raw`, `decoded`) that import nothing
//! else from the folder.
//!
//! The check reads the source: every path that names a sibling (`super::x`, `crate::pipeline::x`,
//! a name `mod.rs` re-exports, in `use` trees with braces or written inline) is an edge, test
//! modules included. Comments and string literals are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Files that only hold shared types: they must not import any other pipeline file.
const LEAVES: [&str; 2] = ["raw", "decoded"];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Other,
}

/// Rust source to tokens, without comments, string, char and byte literals.
fn tokens(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\'') or a lifetime ('a), which is skipped as `Other`.
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                out.push(Token::Other);
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            // Raw strings: r"..", r#".."#, br"..".
            if (word == "r" || word == "br") && matches!(c.get(i), Some('"') | Some('#')) {
                let mut hashes = 0;
                while c.get(i) == Some(&'#') {
                    hashes += 1;
                    i += 1;
                }
                if c.get(i) == Some(&'"') {
                    i += 1;
                    loop {
                        if i >= c.len() {
                            break;
                        }
                        if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                            i += 1 + hashes;
                            break;
                        }
                        i += 1;
                    }
                    continue;
                }
            }
            out.push(Token::Ident(word));
        } else {
            out.push(match ch {
                ':' if next == Some(':') => {
                    i += 1;
                    Token::PathSep
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                ';' => Token::Semi,
                c if c.is_whitespace() => {
                    i += 1;
                    continue;
                }
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

/// Expands one `use` tree starting at `toks[*at]` into full paths, e.g.
/// `super::{a::X, b::{Y, Z}}` into `super::a::X`, `super::b::Y`, `super::b::Z`.
fn use_tree(toks: &[Token], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(*at) {
            Some(Token::Ident(word)) => {
                path.push(word.clone());
                *at += 1;
                if let (Some(Token::Ident(kw)), Some(Token::Ident(_))) =
                    (toks.get(*at), toks.get(*at + 1))
                {
                    if kw == "as" {
                        *at += 2;
                    }
                }
            }
            Some(Token::PathSep) => *at += 1,
            Some(Token::Open) => {
                *at += 1;
                loop {
                    use_tree(toks, at, &path, out);
                    match toks.get(*at) {
                        Some(Token::Comma) => *at += 1,
                        Some(Token::Close) => {
                            *at += 1;
                            break;
                        }
                        other => panic!("unexpected {other:?} in a use tree"),
                    }
                    if toks.get(*at) == Some(&Token::Close) {
                        *at += 1;
                        break;
                    }
                }
                return;
            }
            // `*` (a glob) ends the path like `,`, `}` and `;` do.
            Some(Token::Other) => {
                *at += 1;
                out.push(path);
                return;
            }
            _ => {
                out.push(path);
                return;
            }
        }
    }
}

/// Every path in the file: the expanded `use` trees and the paths written inline.
fn paths(src: &str) -> Vec<Vec<String>> {
    let toks = tokens(src);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Token::Ident(word) if word == "use" => {
                i += 1;
                use_tree(&toks, &mut i, &[], &mut out);
            }
            Token::Ident(first) if toks.get(i + 1) == Some(&Token::PathSep) => {
                let mut path = vec![first.clone()];
                i += 1;
                while toks.get(i) == Some(&Token::PathSep) {
                    match toks.get(i + 1) {
                        Some(Token::Ident(word)) => {
                            path.push(word.clone());
                            i += 2;
                        }
                        _ => break,
                    }
                }
                out.push(path);
            }
            _ => i += 1,
        }
    }
    out
}

/// The module a path names in a folder of `modules`, with `reexports` (name -> module) from
/// its `mod.rs`; `None` for paths outside the folder or into the file itself.
fn target(
    path: &[String],
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> Option<String> {
    let rest: &[String] = match path {
        [c, p, rest @ ..] if c == "crate" && p == "pipeline" => rest,
        [s, ..] if s == "super" => {
            let supers = path.iter().take_while(|w| *w == "super").count();
            &path[supers..]
        }
        _ => return None,
    };
    let name = rest.first()?;
    if modules.contains(name) {
        Some(name.clone())
    } else {
        // `crate::pipeline::Batch` is batch's; `super::x` from a test module is the file itself.
        reexports.get(name).cloned()
    }
}

/// The import graph of a folder given as (module name, source) pairs, `mod.rs` included.
fn graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| name != "mod")
        .collect();
    let mut reexports = BTreeMap::new();
    if let Some((_, src)) = files.iter().find(|(name, _)| name == "mod") {
        for path in paths(src) {
            if let [module, .., item] = path.as_slice() {
                if modules.contains(module) && path.len() >= 2 {
                    reexports.insert(item.clone(), module.clone());
                }
            }
        }
    }
    let mut edges = BTreeMap::new();
    for (name, src) in files.iter().filter(|(name, _)| name != "mod") {
        let to: BTreeSet<String> = paths(src)
            .iter()
            .filter_map(|p| target(p, &modules, &reexports))
            .filter(|t| t != name)
            .collect();
        edges.insert(name.clone(), to);
    }
    edges
}

/// One import circle (`a -> b -> a`), if there is any.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut done, &mut Vec::new()))
}

fn pipeline_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pipeline");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn files(sources: &[(&str, &str)]) -> Vec<(String, String)> {
    sources
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

#[test]
fn no_pipeline_file_imports_a_file_that_imports_it() {
    let edges = graph(&pipeline_files());
    assert!(edges.len() > 10, "read only {:?}", edges.keys());
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import circle in src/pipeline: {}", cycle.join(" -> "));
    }
}

#[test]
fn shared_type_files_are_leaves() {
    let edges = graph(&pipeline_files());
    for leaf in LEAVES {
        let imports = edges
            .get(leaf)
            .unwrap_or_else(|| panic!("src/pipeline/{leaf}.rs is missing"));
        assert!(imports.is_empty(), "{leaf} imports {imports:?}");
    }
    // The sources take their types from the leaf, not from `source`, which names them all.
    for user in ["shards", "table", "folder", "synthetic"] {
        assert!(edges[user].contains("raw"), "{user}: {:?}", edges[user]);
        assert!(!edges[user].contains("source"), "{user}: {:?}", edges[user]);
    }
}

#[test]
fn the_check_finds_circles_however_they_are_written() {
    let case = |a: &str| {
        let sources = [
            ("mod", "pub mod a; pub mod b; pub mod c;\npub use c::Thing;"),
            ("a", a),
            ("b", "use super::c::Y;"),
            ("c", "// use super::a::X;\nconst S: &str = \"super::a::X\";"),
        ];
        find_cycle(&graph(&files(&sources)))
    };
    assert_eq!(case("fn f() {}"), None);
    // b imports c; a cycle needs c to import a, which only its comment and string do.
    assert_eq!(case("use super::b::X;"), None);
    let with_c_to_a = |a: &str| {
        let sources = [
            ("mod", "pub mod a; pub mod b; pub mod c;\npub use a::Thing;"),
            ("a", a),
            ("b", "use super::c::Y;"),
            (
                "c",
                "#[cfg(test)]\nmod tests { use crate::pipeline::Thing; }",
            ),
        ];
        find_cycle(&graph(&files(&sources)))
    };
    assert_eq!(with_c_to_a("fn f() {}"), None);
    for a in [
        "use super::b::X;",
        "pub(crate) use super::{b::X as Y, other::Z};",
        "use crate::pipeline::{self, b::{X, W}};",
        "fn f() -> u8 { let _ = '\"'; super::b::make() }",
        "mod tests { use super::super::b::*; }",
    ] {
        let cycle = with_c_to_a(a).unwrap_or_else(|| panic!("no circle found with a = {a:?}"));
        assert_eq!(cycle.first(), cycle.last(), "{cycle:?}");
        assert_eq!(cycle.len(), 4, "{cycle:?}");
    }
}
