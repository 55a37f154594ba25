//! The WGSL kernels, embedded in the binary at build time.
//!
//! Each family lives in `shaders/<name>.wgsl`; `shaders/common.wgsl` (activations, shared
//! helpers) is prepended to every one of them, after any `enable` directives the family has.

/// Shared helpers prepended to every kernel family.
pub const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// One kernel family: a name (the file's stem) and its WGSL text.
#[derive(Clone, Copy, Debug)]
pub struct ShaderFamily {
    pub name: &'static str,
    pub body: &'static str,
}

/// Every kernel family recur ships.
pub const FAMILIES: &[ShaderFamily] = &[
    ShaderFamily {
        name: "gemm",
        body: include_str!("../../shaders/gemm.wgsl"),
    },
    ShaderFamily {
        name: "merge",
        body: include_str!("../../shaders/merge.wgsl"),
    },
    ShaderFamily {
        name: "recurrent",
        body: include_str!("../../shaders/recurrent.wgsl"),
    },
    ShaderFamily {
        name: "optim",
        body: include_str!("../../shaders/optim.wgsl"),
    },
    ShaderFamily {
        name: "loss",
        body: include_str!("../../shaders/loss.wgsl"),
    },
    ShaderFamily {
        name: "embedding",
        body: include_str!("../../shaders/embedding.wgsl"),
    },
    ShaderFamily {
        name: "dropout",
        body: include_str!("../../shaders/dropout.wgsl"),
    },
    ShaderFamily {
        name: "word2vec",
        body: include_str!("../../shaders/word2vec.wgsl"),
    },
    ShaderFamily {
        name: "word2vec_train",
        body: include_str!("../../shaders/word2vec_train.wgsl"),
    },
];

/// Looks a family up by name.
pub fn family(name: &str) -> Option<&'static ShaderFamily> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// The full source the GPU compiles: the family's `enable` directives, then `common.wgsl`,
/// then the rest of the family (WGSL requires directives before any declaration).
pub fn full_source(family: &ShaderFamily) -> String {
    let mut directives = String::new();
    let mut rest = String::new();
    for line in family.body.lines() {
        if line.trim_start().starts_with("enable ") {
            directives.push_str(line);
            directives.push('\n');
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    format!("{directives}{COMMON}\n{rest}")
}

/// Invocations per workgroup of entry point `entry` in `source`: the product of its
/// `@workgroup_size`, where each size is an integer literal or a module-scope `const`.
/// `None` if the entry point is not found or a size is anything else (an `override`).
pub fn workgroup_invocations(source: &str, entry: &str) -> Option<u32> {
    let fn_at = find_fn(source, entry)?;
    let before = &source[..fn_at];
    let attr = before.rfind("@workgroup_size(")?;
    // The attribute must belong to this function: no other function in between.
    if before[attr..].contains("fn ") {
        return None;
    }
    let args = &before[attr + "@workgroup_size(".len()..];
    let args = &args[..args.find(')')?];
    args.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .try_fold(1u32, |acc, a| acc.checked_mul(size_value(source, a)?))
}

/// Byte offset of `fn <name>(` (or `fn <name> (`) in `source`.
fn find_fn(source: &str, name: &str) -> Option<usize> {
    let pat = format!("fn {name}");
    let mut from = 0;
    while let Some(i) = source[from..].find(&pat) {
        let at = from + i;
        let rest = source[at + pat.len()..].trim_start();
        let word_start = source[..at].ends_with(char::is_whitespace) || at == 0;
        if rest.starts_with('(') && word_start {
            return Some(at);
        }
        from = at + pat.len();
    }
    None
}

/// An integer literal (`64`, `64u`) or the value of `const NAME[: u32] = <literal>;`.
fn size_value(source: &str, token: &str) -> Option<u32> {
    let literal = |t: &str| t.trim().trim_end_matches(['u', 'i']).parse::<u32>().ok();
    if let Some(v) = literal(token) {
        return Some(v);
    }
    source.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix("const ")?;
        let (name, value) = rest.split_once('=')?;
        let name = name.split(':').next()?.trim();
        (name == token).then(|| literal(value.trim().trim_end_matches(';')))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workgroup_sizes_are_read_from_literals_and_constants() {
        let src = "const WG: u32 = 256u;\n\
                   @compute @workgroup_size(16, 16, 1)\nfn main(@builtin(x) a: u32) {}\n\
                   @compute @workgroup_size(WG)\nfn main_cpu() {}\n\
                   override N: u32 = 4u;\n@compute @workgroup_size(N, 2)\nfn other () {}\n";
        assert_eq!(workgroup_invocations(src, "main"), Some(256));
        assert_eq!(workgroup_invocations(src, "main_cpu"), Some(256));
        assert_eq!(workgroup_invocations(src, "other"), None);
        assert_eq!(workgroup_invocations(src, "missing"), None);
    }

    #[test]
    fn every_shipped_entry_point_has_a_readable_workgroup_size() {
        for fam in FAMILIES {
            let src = full_source(fam);
            let mut lines = src.lines().peekable();
            while let Some(line) = lines.next() {
                if line.trim_start().starts_with("@compute") {
                    let decl = if line.contains("fn ") {
                        line
                    } else {
                        lines.next().unwrap_or("")
                    };
                    let name = decl
                        .split("fn ")
                        .nth(1)
                        .and_then(|r| r.split('(').next())
                        .map(str::trim)
                        .unwrap_or("");
                    assert!(
                        workgroup_invocations(&src, name).is_some(),
                        "{}::{name}: workgroup size not readable",
                        fam.name
                    );
                }
            }
        }
    }
}
