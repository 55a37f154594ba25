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
