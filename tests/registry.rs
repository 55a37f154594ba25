//! The kernel registry builds only the pipelines `gpu::shaders::FAMILIES` lists, so the Tint
//! check (which compiles every one of them) covers all the host can build.

mod common;

use recur::gpu::KernelKey;

#[test]
fn a_pipeline_outside_the_table_is_refused() {
    let Some(gpu) = common::gpu() else { return };
    let listed = KernelKey::new("gemm", "main_cpu")
        .with("TRANS_A", 1.0)
        .with("TRANS_B", 0.0);
    gpu.kernel(&listed).expect("a listed pipeline builds");
    for (key, says) in [
        (KernelKey::new("gemm", "no_such_entry"), "not listed"),
        (KernelKey::new("no_such_family", "main"), "not listed"),
        (
            KernelKey::new("gemm", "main_cpu")
                .with("TRANS_A", 2.0)
                .with("TRANS_B", 0.0),
            "TRANS_A = 2",
        ),
        (
            KernelKey::new("gemm", "main_cpu").with("TRANS_A", 1.0),
            "sets override TRANS_B 0 times",
        ),
        (
            KernelKey::new("gemm", "reduce_weight_grads").with("TRANS_A", 1.0),
            "TRANS_A = 1 is not listed",
        ),
        (
            KernelKey::new("gemm", "reduce_weight_grads").with_immediates(true),
            "no per-dispatch value to take as immediates",
        ),
        (
            KernelKey::new("recurrent", "transpose_weights")
                .with("CELL", 2.0)
                .with("F16_STORAGE", 0.0)
                .with_immediates(true),
            "no per-dispatch value to take as immediates",
        ),
    ] {
        let err = gpu.kernel(&key).unwrap_err().to_string();
        assert!(err.contains(says), "{key:?}: {err}");
    }
}

/// The recurrent family's immediates variant swaps exactly the step uniform's declaration,
/// and where the device offers immediates, its step kernels build that way.
#[test]
fn the_immediates_variant_swaps_only_the_step_declaration() {
    use recur::gpu::shaders::{family, full_source, immediate_source, FAMILIES};
    for fam in FAMILIES {
        let Some(v) = fam.immediate else {
            assert!(immediate_source(fam).is_none(), "{}", fam.name);
            continue;
        };
        let plain = full_source(fam);
        let swapped = immediate_source(fam).expect("the declaration is in the source once");
        assert_eq!(plain.matches(v.uniform).count(), 1, "{}", fam.name);
        assert!(!swapped.contains(v.uniform), "{}", fam.name);
        assert_eq!(swapped, plain.replacen(v.uniform, v.immediate, 1));
    }
    assert!(family("recurrent").and_then(|f| f.immediate).is_some());
    let Some(gpu) = common::gpu() else { return };
    let key = KernelKey::new("recurrent", "forward_step")
        .with("CELL", 2.0)
        .with("RECURRENT_DROPOUT", 0.0)
        .with("F16_STORAGE", 0.0);
    gpu.kernel(&key)
        .expect("the uniform variant builds everywhere");
    if recur::gpu::recurrent::StepIndex::immediates_possible(&gpu) {
        gpu.kernel(&key.with_immediates(true))
            .expect("the immediates variant builds where the device offers immediates");
    } else {
        common::skipped("the adapter offers no immediates");
    }
}
