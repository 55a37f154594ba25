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
            KernelKey::new("gemm", "column_sum").with("TRANS_A", 1.0),
            "TRANS_A = 1 is not listed",
        ),
    ] {
        let err = gpu.kernel(&key).unwrap_err().to_string();
        assert!(err.contains(says), "{key:?}: {err}");
    }
}
