//! The output stage of a recurrent stack on the GPU (`shaders/merge.wgsl`) against its CPU
//! twin (`OutputStage`), including more rows than one grid dimension holds.

mod common;

use rand::Rng;
use recur::check::rel_error;
use recur::gpu::merge::MergePlan;
use recur::gpu::{Gpu, GpuTensor, Recorder};
use recur::nn::{Merge, OutputStage};

/// Forward and backward of `stage` on random inputs, outputs poisoned with NaN first.
fn check(gpu: &Gpu, rng: &mut rand::rngs::StdRng, stage: &OutputStage) {
    let rows = stage.steps * stage.batch;
    let cat = common::random_vec(rng, rows * stage.dirs * stage.hidden);
    let d_out = common::random_vec(rng, rows * stage.width());
    let cat64 = common::to_f64(&cat);
    let mut want = vec![0.0f64; rows * stage.width()];
    recur::cpu::merge::forward(stage, &cat64, &mut want);
    let mut want_d = vec![0.0f64; cat.len()];
    recur::cpu::merge::backward(stage, &cat64, &common::to_f64(&d_out), &mut want_d);

    let g_cat = GpuTensor::from_slice(gpu, &[cat.len()], &cat).unwrap();
    let g_dout = GpuTensor::from_slice(gpu, &[d_out.len()], &d_out).unwrap();
    let g_out = GpuTensor::filled(gpu, &[want.len()], f32::NAN).unwrap();
    let g_dcat = GpuTensor::filled(gpu, &[cat.len()], f32::NAN).unwrap();
    let fwd = MergePlan::forward(gpu, stage, &g_cat, &g_out).unwrap();
    let bwd = MergePlan::backward(gpu, stage, &g_cat, &g_dout, &g_dcat).unwrap();
    let mut rec = Recorder::new(gpu);
    fwd.record(&mut rec);
    bwd.record(&mut rec);
    rec.submit().unwrap();
    let (e, ed) = (
        rel_error(&g_out.to_vec().unwrap(), &want),
        rel_error(&g_dcat.to_vec().unwrap(), &want_d),
    );
    assert!(
        e < 1e-6 && ed < 1e-6,
        "{stage:?}: forward {e:e}, backward {ed:e}"
    );
}

fn random_stage(rng: &mut rand::rngs::StdRng, steps: usize, batch: usize) -> OutputStage {
    let merges = [Merge::Concat, Merge::Sum, Merge::Mul, Merge::Ave];
    OutputStage {
        merge: merges[rng.random_range(0..4)],
        dirs: rng.random_range(1..=2),
        hidden: rng.random_range(1..90),
        flip: rng.random_bool(0.5),
        steps,
        batch,
        batch_first: rng.random_bool(0.5),
    }
}

#[test]
fn merge_matches_the_cpu_twin() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("merge_matches_the_cpu_twin");
    for _ in 0..6 {
        let (steps, batch) = (rng.random_range(1..20), rng.random_range(1..9));
        let stage = random_stage(&mut rng, steps, batch);
        check(&gpu, &mut rng, &stage);
    }
}

/// 4 rows per workgroup: above 65,535 * 4 = 262,140 rows the row groups wrap into z.
#[test]
fn merge_covers_more_rows_than_one_grid_dimension() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("merge_covers_more_rows_than_one_grid_dimension");
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let batch = rng.random_range(2..6);
    let steps = (max * 4 + rng.random_range(1..5000)).div_ceil(batch);
    let mut stage = random_stage(&mut rng, steps, batch);
    (stage.dirs, stage.merge, stage.hidden) = (2, Merge::Mul, rng.random_range(1..4));
    check(&gpu, &mut rng, &stage);
}
