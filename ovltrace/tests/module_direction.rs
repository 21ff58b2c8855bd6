//! Dependencies in ovltrace/src run one way: a top-level module uses only the
//! modules listed before it in `LAYERS` (the order of lib.rs's module map).
//! Test code (`#[cfg(test)]` modules) is exempt: a renderer's fixture may be
//! built by the report model's tests.

use std::{collections::BTreeSet, fs, path::Path};

/// Lowest first.
const LAYERS: &[&str] = &[
    "sys",
    "text",
    "units",
    "hdr",
    "bpf",
    "catalog",
    "attribute",
    "aggregate",
    "report",
    "render",
    "exporter",
    "trace",
    "cli",
    "commands",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

/// The source without its `#[cfg(test)]` items (a module or a function,
/// up to the matching closing brace).
fn without_tests(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find(['{', ';']) else {
            break;
        };
        if after.as_bytes()[open] == b';' {
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Top-level modules a file refers to through `crate::`, including the
/// first names of a `use crate::{a::.., b, ..}` group.
fn references(src: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in src.match_indices("crate::") {
        let after = &src[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && !c.is_whitespace() => {
                        found.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(after));
        }
    }
    found
}

fn top_module(src_dir: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src_dir).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_only_use_modules_below_them() {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src_dir, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut seen_modules = BTreeSet::new();
    for file in &files {
        let module = top_module(&src_dir, file);
        if module == "lib" || module == "main" {
            continue;
        }
        // A file under a `tests` folder is test code as a whole.
        if file.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        seen_modules.insert(module.clone());
        let Some(own) = rank(&module) else {
            wrong.push(format!("{module}: not in LAYERS (add it where it belongs)"));
            continue;
        };
        let src = fs::read_to_string(file).expect("readable source");
        for used in references(&without_tests(&src)) {
            if used == module || used == "self" || used.is_empty() {
                continue;
            }
            match rank(&used) {
                Some(r) if r < own => {}
                _ => wrong.push(format!(
                    "{}: `{module}` uses `crate::{used}`, which is not below it",
                    file.strip_prefix(&src_dir).unwrap().display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward or unknown imports:\n{}",
        wrong.join("\n")
    );
    // The list and the tree agree: no stale entries either.
    let listed: BTreeSet<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    assert_eq!(listed, seen_modules, "LAYERS and ovltrace/src differ");
}

#[test]
fn the_scanner_finds_upward_imports() {
    let src = "use crate::{sys::mounts, cli::RunArgs};\nfn f() { crate::commands::run::main(); }\n\
               #[cfg(test)]\nmod tests { use crate::render::terminal; }\n";
    let refs = references(&without_tests(src));
    assert_eq!(
        refs,
        BTreeSet::from(["cli".to_string(), "commands".to_string(), "sys".to_string()])
    );
}
