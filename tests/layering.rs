//! The dependency direction between the library's modules, as ARCHITECTURE.md's floors: a
//! module imports those on lower floors only, never its neighbours on its own floor or any
//! floor above, with the one exception the page names. A module naming one it must not (in
//! code, not in a comment) fails here with the file and line.

mod common;

use std::path::Path;

/// ARCHITECTURE.md's floors of `src/`, lowest first.
const FLOORS: &[&[&str]] = &[
    &["ops"],
    &["gpu", "cpu"],
    &["exec"],
    &["nn"],
    &["train", "word2vec"],
    &["apps"],
    &["cli"],
];

/// Imports within a floor that ARCHITECTURE.md allows: (importer, imported).
const ALLOWED: &[(&str, &str)] = &[("word2vec", "train")];

/// The modules `module` must not import: its neighbours and every floor above it.
fn banned(module: &str) -> Vec<&'static str> {
    let floor = FLOORS
        .iter()
        .position(|f| f.contains(&module))
        .expect("a module of FLOORS");
    FLOORS[floor..]
        .iter()
        .flat_map(|f| f.iter().copied())
        .filter(|&m| m != module && !ALLOWED.contains(&(module, m)))
        .collect()
}

/// The code of a line: what precedes a `//` comment (none of the paths checked appears in a
/// string literal).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `text` names after each `crate::`: the path's first segment, or
/// for a group `crate::{a::X, b, c::{..}}` the first segment of each item at its top level.
fn named(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if !rest.starts_with('{') {
            names.push(ident(rest));
            continue;
        }
        let (mut depth, mut item_start) = (0, 1);
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' | ',' if depth == 1 => {
                    names.push(ident(&rest[item_start..i]));
                    item_start = i + 1;
                    if c == '}' {
                        break;
                    }
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
    }
    names
}

/// The places in `src/<module>/` that name a module in `banned`.
fn violations(src: &Path, module: &str, banned: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src.join(module), &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let mut statement = code(line).to_string();
            if statement.contains("crate::{") {
                // A grouped import may span lines: read it to its semicolon.
                for l in &lines[i + 1..] {
                    if statement.contains(';') {
                        break;
                    }
                    statement.push_str(code(l));
                }
            }
            for n in named(&statement) {
                if banned.contains(&n.as_str()) {
                    let (file, line) = (file.display(), line.trim());
                    found.push(format!("{file}:{}: {line} (names {n})", i + 1));
                }
            }
        }
    }
    found
}

#[test]
fn modules_import_only_the_floors_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    for &module in FLOORS.iter().flat_map(|f| f.iter()) {
        assert!(
            src.join(module).is_dir(),
            "src/{module} is gone: update FLOORS"
        );
        all.extend(violations(&src, module, &banned(module)));
    }
    assert!(
        all.is_empty(),
        "imports against the layering:\n{}",
        all.join("\n")
    );
}

/// The floors give each module the list ARCHITECTURE.md states.
#[test]
fn the_floors_ban_neighbours_and_everything_above() {
    assert_eq!(
        banned("cpu"),
        ["gpu", "exec", "nn", "train", "word2vec", "apps", "cli"]
    );
    assert_eq!(banned("word2vec"), ["apps", "cli"]);
    assert_eq!(banned("train"), ["word2vec", "apps", "cli"]);
    assert!(banned("cli").is_empty());
}

/// The check finds what it looks for: planted imports in a scratch tree.
#[test]
fn the_check_sees_a_planted_import() {
    let root = common::tmp_dir("layering");
    std::fs::create_dir_all(root.join("cpu")).unwrap();
    std::fs::write(
        root.join("cpu/a.rs"),
        "// crate::gpu in a comment is fine\nuse crate::gpu::Gpu;\nuse crate::gpus_not_a_module;\n\
         use crate::{\n    ops::Gemm,\n    gpu::{self, Gpu},\n};\nuse crate::{error::Result, gpux};\n",
    )
    .unwrap();
    let found = violations(&root, "cpu", &["gpu"]);
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].ends_with("a.rs:2: use crate::gpu::Gpu; (names gpu)"),
        "{found:?}"
    );
    assert!(
        found[1].ends_with("a.rs:4: use crate::{ (names gpu)"),
        "{found:?}"
    );
}
