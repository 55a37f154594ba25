//! The dependency direction between the library's modules (ARCHITECTURE.md): the op set and
//! the CPU twins below the device layer, the executors above both, then the layers, the
//! models and trainer, word2vec, and last the applications and the command line. A module
//! naming one above it in code (not in a comment) fails here with the file and line.

use std::path::Path;

/// Each module and those it must not import.
const RULES: &[(&str, &[&str])] = &[
    (
        "ops",
        &[
            "cpu", "gpu", "exec", "nn", "train", "word2vec", "apps", "cli",
        ],
    ),
    (
        "cpu",
        &["gpu", "exec", "nn", "train", "word2vec", "apps", "cli"],
    ),
    (
        "gpu",
        &["cpu", "exec", "nn", "train", "word2vec", "apps", "cli"],
    ),
    ("exec", &["nn", "train", "word2vec", "apps", "cli"]),
    ("nn", &["train", "word2vec", "apps", "cli"]),
    ("train", &["word2vec", "apps", "cli"]),
    ("word2vec", &["apps", "cli"]),
    ("apps", &["cli"]),
];

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

/// The modules a grouped import `use crate::{a::X, b, c::{..}};` names: the first segment of
/// each item at the top level of its braces.
fn grouped(statement: &str) -> Vec<String> {
    let Some(start) = statement.find("crate::{") else {
        return Vec::new();
    };
    let (mut depth, mut item, mut names) = (0, String::new(), Vec::new());
    for c in statement[start + "crate::".len()..].chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 1 => names.push(std::mem::take(&mut item)),
            _ if depth == 1 => item.push(c),
            _ => {}
        }
        if depth == 0 {
            break;
        }
    }
    names.push(item);
    names
        .iter()
        .map(|i| i.trim().split("::").next().unwrap_or("").to_string())
        .collect()
}

/// The places in module `module` that name a module it must not import, as `crate::name`
/// or inside a grouped `use crate::{..}` (which may span lines).
fn violations(src: &Path, module: &str, banned: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src.join(module), &mut files);
    let single = src.join(format!("{module}.rs"));
    if single.exists() {
        files.push(single);
    }
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = code(line);
            let mut names: Vec<String> = Vec::new();
            for b in banned {
                let path = format!("crate::{b}");
                if code.match_indices(&path).any(|(at, _)| {
                    let next = code[at + path.len()..].chars().next();
                    !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                }) {
                    names.push(b.to_string());
                }
            }
            if code.contains("crate::{") {
                // The statement runs to its semicolon.
                let mut statement = String::new();
                for l in &lines[i..] {
                    statement.push_str(self::code(l));
                    if statement.contains(';') {
                        break;
                    }
                }
                names.extend(
                    grouped(&statement)
                        .into_iter()
                        .filter(|n| banned.contains(&n.as_str())),
                );
            }
            for n in names {
                found.push(format!(
                    "{}:{}: {} (names {n})",
                    file.display(),
                    i + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

#[test]
fn modules_import_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    for (module, banned) in RULES {
        assert!(
            src.join(module).is_dir(),
            "src/{module} is gone: update RULES"
        );
        all.extend(violations(&src, module, banned));
    }
    assert!(
        all.is_empty(),
        "imports against the layering:\n{}",
        all.join("\n")
    );
}

/// The check finds what it looks for: a planted import in a scratch tree.
#[test]
fn the_check_sees_a_planted_import() {
    let root = std::env::temp_dir().join(format!("recur-layering-{}", std::process::id()));
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
