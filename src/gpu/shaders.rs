//! The WGSL kernels, embedded in the binary at build time, and the table of every pipeline
//! the host may build from them.
//!
//! Each family lives in `shaders/<name>.wgsl`; `shaders/common.wgsl` (activations, shared
//! helpers) is prepended to every one of them, after any `enable` directives the family has.
//! Each family lists its compute entry points with every value the host may give their
//! `override` constants: the kernel registry refuses a pipeline outside that table, and the
//! Tint check (`tools/tint-check`) compiles every pipeline in it, so the two cannot drift.

/// Shared helpers prepended to every kernel family.
pub const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// One kernel family: a name (the file's stem), its WGSL text and its entry points.
#[derive(Clone, Copy, Debug)]
pub struct ShaderFamily {
    /// The family's name, the stem of `shaders/<name>.wgsl`.
    pub name: &'static str,
    /// The family's WGSL text, without the common helpers.
    pub body: &'static str,
    /// Every compute entry point the host may build a pipeline for.
    pub entry_points: &'static [EntryPoint],
    /// Where the family can take its per-dispatch value ([`BindingKind::PerDispatch`]) as
    /// immediate data: the uniform's declaration and what replaces it. `None`: only as a
    /// uniform.
    pub immediate: Option<ImmediateVariant>,
}

/// How a family's source changes when its pipelines take the per-dispatch value as immediate
/// data (`var<immediate>`, wgpu's `IMMEDIATES`) rather than as a uniform at a dynamic offset.
/// WGSL cannot make a declaration depend on an `override`, so the host swaps one line.
/// WebGPU has no immediates yet; the browser and the Tint check see the uniform variant only.
#[derive(Clone, Copy, Debug)]
pub struct ImmediateVariant {
    /// The uniform's declaration, exactly as the family's source has it, once.
    pub uniform: &'static str,
    /// The declaration that replaces it.
    pub immediate: &'static str,
}

/// A compute entry point: the `override` constants the host sets on it (each with every
/// value it may take; the host sets all of them on every pipeline), and the bind group
/// layout its pipeline uses.
#[derive(Clone, Copy, Debug)]
pub struct EntryPoint {
    /// The entry point's function name in the WGSL.
    pub name: &'static str,
    /// The `override` constants the host sets, each with every value it may take.
    pub overrides: &'static [Override],
    /// A layout shared with other entry points of the family, so one bind group serves them
    /// all; `None`: the layout is derived from what the entry point uses.
    pub layout: Option<&'static SharedLayout>,
}

/// An `override` constant and the values the host gives it.
#[derive(Clone, Copy, Debug)]
pub struct Override {
    /// The constant's name in the WGSL.
    pub name: &'static str,
    /// Every value the host may give it.
    pub values: &'static [f64],
}

/// An explicit bind group layout (group 0) that several entry points share.
#[derive(Clone, Copy, Debug)]
pub struct SharedLayout {
    /// The layout's name, for labels and error messages.
    pub name: &'static str,
    /// Each binding number of group 0 and what it holds.
    pub bindings: &'static [(u32, BindingKind)],
}

/// What a binding of a [`SharedLayout`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    /// A uniform buffer.
    Uniform,
    /// A storage buffer the kernels only read (`var<storage, read>`).
    ReadOnlyStorage,
    /// A storage buffer the kernels write (`var<storage, read_write>`).
    Storage,
    /// 16 bytes that change from one dispatch to the next (a step index), so that one bind
    /// group serves every dispatch: a uniform bound with a dynamic offset, or, in pipelines
    /// built for immediates ([`ImmediateVariant`]), immediate data, and then no binding.
    PerDispatch,
}

/// Bytes of a [`BindingKind::PerDispatch`] value.
pub const PER_DISPATCH_BYTES: u32 = 16;

impl SharedLayout {
    /// Storage buffers the layout binds (what `max_storage_buffers_per_shader_stage` limits).
    pub fn storage_buffers(&self) -> u32 {
        self.bindings
            .iter()
            .filter(|(_, k)| matches!(k, BindingKind::ReadOnlyStorage | BindingKind::Storage))
            .count() as u32
    }

    /// The binding of the layout's per-dispatch value, if it has one.
    pub fn per_dispatch_binding(&self) -> Option<u32> {
        self.bindings
            .iter()
            .find(|(_, k)| *k == BindingKind::PerDispatch)
            .map(|(b, _)| *b)
    }
}

impl EntryPoint {
    const fn plain(name: &'static str) -> Self {
        Self {
            name,
            overrides: &[],
            layout: None,
        }
    }

    const fn with_overrides(mut self, overrides: &'static [Override]) -> Self {
        self.overrides = overrides;
        self
    }

    const fn with_layout(mut self, layout: &'static SharedLayout) -> Self {
        self.layout = Some(layout);
        self
    }

    /// Every assignment of the override values this table allows, each as (name, value)
    /// pairs in the order the overrides are listed.
    pub fn override_combinations(&self) -> Vec<Vec<(&'static str, f64)>> {
        let mut combos = vec![Vec::new()];
        for o in self.overrides {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    o.values.iter().map(move |&v| {
                        let mut next = c.clone();
                        next.push((o.name, v));
                        next
                    })
                })
                .collect();
        }
        combos
    }
}

const fn plain(name: &'static str) -> EntryPoint {
    EntryPoint::plain(name)
}

const BOOL: &[f64] = &[0.0, 1.0];
const TRANS_A: Override = Override {
    name: "TRANS_A",
    values: BOOL,
};
const TRANS_B: Override = Override {
    name: "TRANS_B",
    values: BOOL,
};
const GEMM_TRANSPOSES: &[Override] = &[TRANS_A, TRANS_B];
const GEMM_TILED: &[Override] = &[
    TRANS_A,
    TRANS_B,
    Override {
        name: "SPLIT",
        values: BOOL,
    },
];
/// `CellKind::code` of every cell.
const CELL: Override = Override {
    name: "CELL",
    values: &[0.0, 1.0, 2.0, 3.0, 4.0],
};
/// Whether the recurrent weights and saved activations are stored in f16
/// (`gpu::recurrent::Precision`).
const F16_STORAGE: Override = Override {
    name: "F16_STORAGE",
    values: BOOL,
};
/// The cell and the weights' storage.
const CELLS: &[Override] = &[CELL, F16_STORAGE];
/// The cell, whether a recurrent dropout mask is read (`RECURRENT_DROPOUT`) and the
/// weights' storage.
const CELLS_AND_MASK: &[Override] = &[
    CELL,
    Override {
        name: "RECURRENT_DROPOUT",
        values: BOOL,
    },
    F16_STORAGE,
];
/// The sequence kernels' overrides: those of the step kernels and the batch tile
/// (`gpu::recurrent::SEQUENCE_TILES`).
const SEQUENCE_OVERRIDES: &[Override] = &[
    CELLS_AND_MASK[0],
    CELLS_AND_MASK[1],
    CELLS_AND_MASK[2],
    Override {
        name: "TILE",
        values: &[1.0, 2.0, 4.0, 8.0],
    },
];
const fn recurrent_step(name: &'static str) -> EntryPoint {
    plain(name)
        .with_overrides(CELLS_AND_MASK)
        .with_layout(&super::recurrent::STEP_LAYOUT)
}

/// The recurrent step kernels' step index (`step` in `recurrent.wgsl`).
const RECURRENT_IMMEDIATE: ImmediateVariant = ImmediateVariant {
    uniform: "@group(0) @binding(1) var<uniform> step: Step;",
    immediate: "var<immediate> step: Step;",
};

/// Every kernel family recur ships.
pub const FAMILIES: &[ShaderFamily] = &[
    ShaderFamily {
        name: "gemm",
        body: include_str!("../../shaders/gemm.wgsl"),
        immediate: None,
        entry_points: &[
            plain("main").with_overrides(GEMM_TILED),
            plain("main_cpu").with_overrides(GEMM_TRANSPOSES),
            plain("reduce_splits"),
            plain("reduce_weight_grads"),
        ],
    },
    ShaderFamily {
        name: "merge",
        body: include_str!("../../shaders/merge.wgsl"),
        immediate: None,
        entry_points: &[plain("merge_forward"), plain("merge_backward")],
    },
    ShaderFamily {
        name: "recurrent",
        body: include_str!("../../shaders/recurrent.wgsl"),
        immediate: Some(RECURRENT_IMMEDIATE),
        entry_points: &[
            plain("transpose_weights").with_overrides(CELLS),
            recurrent_step("forward_step"),
            recurrent_step("forward_gru_n"),
            recurrent_step("backward_step"),
            recurrent_step("backward_gru_n"),
            recurrent_step("backward_finish"),
            recurrent_step("forward_step_tiled"),
            recurrent_step("forward_gru_n_tiled"),
            recurrent_step("backward_step_tiled"),
            recurrent_step("backward_gru_n_tiled"),
            recurrent_step("backward_finish_tiled"),
            plain("forward_sequence")
                .with_overrides(SEQUENCE_OVERRIDES)
                .with_layout(&super::recurrent::STEP_LAYOUT),
            plain("backward_sequence")
                .with_overrides(SEQUENCE_OVERRIDES)
                .with_layout(&super::recurrent::STEP_LAYOUT),
        ],
    },
    ShaderFamily {
        name: "optim",
        body: include_str!("../../shaders/optim.wgsl"),
        immediate: None,
        entry_points: &[
            plain("sgd"),
            plain("rmsprop"),
            plain("adam"),
            plain("clip_partial"),
            plain("clip_final"),
        ],
    },
    ShaderFamily {
        name: "loss",
        body: include_str!("../../shaders/loss.wgsl"),
        immediate: None,
        entry_points: &[
            plain("ce_count"),
            plain("ce_rows"),
            plain("ce_reduce"),
            plain("mse_partial"),
            plain("mse_reduce"),
        ],
    },
    ShaderFamily {
        name: "embedding",
        body: include_str!("../../shaders/embedding.wgsl"),
        immediate: None,
        entry_points: &[plain("forward"), plain("backward")],
    },
    ShaderFamily {
        name: "dropout",
        body: include_str!("../../shaders/dropout.wgsl"),
        immediate: None,
        entry_points: &[plain("make_mask"), plain("apply"), plain("apply_rows")],
    },
    ShaderFamily {
        name: "word2vec",
        body: include_str!("../../shaders/word2vec.wgsl"),
        immediate: None,
        entry_points: &[plain("normalize"), plain("scores"), plain("select_top")],
    },
    ShaderFamily {
        name: "word2vec_train",
        body: include_str!("../../shaders/word2vec_train.wgsl"),
        immediate: None,
        entry_points: &[
            plain("sampled_gradients"),
            plain("softmax_gradients"),
            plain("sampled_gradients_per_item"),
            plain("softmax_gradients_per_item"),
            plain("apply_sparse"),
            plain("apply_dense"),
        ],
    },
];

/// Looks a family up by name.
pub fn family(name: &str) -> Option<&'static ShaderFamily> {
    FAMILIES.iter().find(|f| f.name == name)
}

impl ShaderFamily {
    /// Looks an entry point up by name.
    pub fn entry_point(&self, name: &str) -> Option<&'static EntryPoint> {
        self.entry_points.iter().find(|e| e.name == name)
    }
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

/// [`full_source`] with the per-dispatch uniform declared as immediate data instead
/// ([`ImmediateVariant`]); `None` where the family has no such variant or its source does not
/// hold the uniform's declaration exactly once.
pub fn immediate_source(family: &ShaderFamily) -> Option<String> {
    let v = family.immediate?;
    let source = full_source(family);
    (source.matches(v.uniform).count() == 1).then(|| source.replace(v.uniform, v.immediate))
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

    /// Every Rust mirror of a WGSL uniform struct has the struct's layout as naga lays it
    /// out: each named member at the same offset, and the size rounded up to 16 bytes (a
    /// uniform buffer binding's granularity).
    #[test]
    fn uniform_mirrors_match_the_wgsl_layouts() {
        let mirrors = [
            crate::gpu::optim::OPTIM_MIRROR,
            crate::gpu::optim::CLIP_MIRROR,
            crate::gpu::word2vec_train::UNIFORM_MIRROR,
            crate::gpu::embedding::UNIFORM_MIRROR,
            crate::gpu::gemm::UNIFORM_MIRROR,
            crate::gpu::merge::UNIFORM_MIRROR,
            crate::gpu::word2vec::UNIFORM_MIRROR,
            crate::gpu::dropout::DROPOUT_MIRROR,
            crate::gpu::dropout::ROW_MASK_MIRROR,
            crate::gpu::recurrent::UNIFORM_MIRROR,
            crate::gpu::loss::UNIFORM_MIRROR,
        ];
        for m in mirrors {
            let fam = family(m.family).expect("family");
            let module = naga::front::wgsl::parse_str(&full_source(fam))
                .unwrap_or_else(|e| panic!("{}: {e}", m.family));
            let (members, span) = module
                .types
                .iter()
                .find_map(|(_, t)| match &t.inner {
                    naga::TypeInner::Struct { members, span }
                        if t.name.as_deref() == Some(m.wgsl) =>
                    {
                        Some((members.clone(), *span as usize))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{}: no struct {}", m.family, m.wgsl));
            assert_eq!(
                m.size,
                span.next_multiple_of(16),
                "{}: size of {}",
                m.family,
                m.wgsl
            );
            let wgsl: Vec<(&str, usize)> = members
                .iter()
                .filter_map(|x| Some((x.name.as_deref()?, x.offset as usize)))
                .filter(|(n, _)| !n.starts_with('_'))
                .collect();
            assert_eq!(m.fields, &wgsl[..], "{}: members of {}", m.family, m.wgsl);
        }
    }
}
