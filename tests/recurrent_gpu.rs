//! The GPU recurrent kernels against the CPU twin: every cell, both directions, variable
//! lengths, both layouts, strided outputs, with and without biases; outputs and gradients
//! poisoned with NaN before each run.

mod common;

use common::{random_vec, rng, to_f64};
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::cpu::precision::f16_storage_value;
use recur::cpu::recurrent::{backward as cpu_backward, forward, Grads, Weights};
use recur::gpu::device::LLVMPIPE_LOOP_BUDGET;
use recur::gpu::gemm::split_k_rule;
use recur::gpu::recurrent::{
    DirectionSpec, GpuGrads, GpuWeights, Precision, RecurrentKernels, RecurrentPair, RecurrentPath,
    RecurrentPlan, StepIndex, StepKernel,
};
use recur::gpu::{DispatchCost, Recorder};
use recur::ops::program::STATE_REGIONS;
use recur::ops::recurrent::{CellKind, RecurrentShape};
use recur::{Gemm, GpuTensor};

const TOL: f64 = 1e-4;

fn random_shape(rng: &mut StdRng, cell: CellKind, big: bool) -> RecurrentShape {
    let (i, h, b, t) = if big {
        (
            rng.random_range(60..140),
            rng.random_range(65..150),
            rng.random_range(5..11),
            rng.random_range(2..6),
        )
    } else {
        (
            rng.random_range(1..9),
            rng.random_range(1..20),
            rng.random_range(1..7),
            rng.random_range(1..7),
        )
    };
    let mut shape = RecurrentShape::new(cell, i, h, b, t)
        .reverse(rng.random_bool(0.5))
        .batch_first(rng.random_bool(0.5));
    if rng.random_bool(0.4) {
        shape = shape.output_columns(2 * h, if rng.random_bool(0.5) { 0 } else { h });
    }
    shape
}

fn check(rng: &mut StdRng, cell: CellKind, big: bool) {
    let Some(gpu) = common::gpu() else { return };
    let shape = random_shape(rng, cell, big);
    check_on(&gpu, rng, shape);
}

/// Runs `shape` forward and backward on `gpu` against the CPU twin in f64; returns the
/// forward's and the backward's recorded dispatches.
fn check_on(
    gpu: &recur::Gpu,
    rng: &mut StdRng,
    shape: RecurrentShape,
) -> (Vec<DispatchCost>, Vec<DispatchCost>) {
    let run = check_stored(gpu, rng, shape, Precision::F32, Reference::AsStored, TOL);
    (run.forward, run.backward)
}

/// What the f64 reference multiplies by.
#[derive(Clone, Copy, PartialEq)]
enum Reference {
    /// W_hh and b_hh as the GPU stores them (f16 storage: rounded by the CPU twin).
    AsStored,
    /// The f32 parameters, whatever the GPU stores.
    F32,
    /// The f32 parameters; the outputs and final states only, not the gradients.
    F32Outputs,
}

/// What one check ran and found.
struct Run {
    forward: Vec<DispatchCost>,
    backward: Vec<DispatchCost>,
    /// The largest relative error among the outputs, states and gradients compared.
    worst: f64,
    /// The bits of the GPU's outputs and gradients, for comparing runs with each other.
    bits: Vec<u32>,
}

/// `check_on` with the recurrent weights stored in `precision`, against `reference`, every
/// relative error below `tol`.
fn check_stored(
    gpu: &recur::Gpu,
    rng: &mut StdRng,
    shape: RecurrentShape,
    precision: Precision,
    reference: Reference,
    tol: f64,
) -> Run {
    let kernels = RecurrentKernels {
        precision: Some(precision),
        ..Default::default()
    };
    check_with(gpu, rng, shape, kernels, reference, tol)
}

/// `check_stored` with the plan's kernels as `kernels` asks (precision: the device's where
/// `None`).
fn check_with(
    gpu: &recur::Gpu,
    rng: &mut StdRng,
    shape: RecurrentShape,
    kernels: RecurrentKernels,
    reference: Reference,
    tol: f64,
) -> Run {
    let precision = kernels.precision.unwrap_or(Precision::for_device(gpu));
    let gpu = gpu.clone();
    let cell = shape.cell;
    let (h, bsz, gw, rows) = (shape.hidden, shape.batch, shape.gate_width(), shape.rows());
    let lengths: Option<Vec<usize>> = rng.random_bool(0.6).then(|| {
        (0..bsz)
            .map(|_| rng.random_range(1..=shape.steps))
            .collect()
    });
    let with_bias = rng.random_bool(0.7);
    let x = random_vec(rng, rows * shape.input);
    let w_ih = random_vec(rng, gw * shape.input)
        .iter()
        .map(|v| v * 0.5)
        .collect::<Vec<f32>>();
    // W_hh within PyTorch's initial range (at most 1/sqrt(H)): larger weights make the
    // recurrence expand, and over a long sequence its gradients amplify rounding until f32
    // cannot compute them (seed 1820018591695 with weights up to 0.5: RNN H = 29, T = 123,
    // dh0 off by 1.7e-2 on the CPU in f32 and 7e-4 on the GPU).
    let w_scale = (1.0 / (h as f32).sqrt()).min(0.5);
    let w_hh = random_vec(rng, gw * h)
        .iter()
        .map(|v| v * w_scale)
        .collect::<Vec<f32>>();
    let b_ih = random_vec(rng, gw);
    let b_hh = random_vec(rng, gw);
    let h0 = random_vec(rng, bsz * h);
    let c0 = random_vec(rng, bsz * h);
    let dy = random_vec(rng, rows * shape.out_stride);
    let dh_n = random_vec(rng, bsz * h);
    let dc_n = random_vec(rng, bsz * h);
    // Recurrent dropout: a fixed mask of 0 and 1/keep.
    let rmask: Option<Vec<f32>> = rng.random_bool(0.4).then(|| {
        (0..bsz * h)
            .map(|_| if rng.random_bool(0.3) { 0.0 } else { 1.0 / 0.7 })
            .collect()
    });

    // The reference, in f64 from the same f32 values (W_hh and b_hh as stored).
    let stored = |w: &[f32]| -> Vec<f32> {
        match (precision, reference) {
            (Precision::F16Storage, Reference::AsStored) => {
                w.iter().map(|&v| f16_storage_value(v)).collect()
            }
            _ => w.to_vec(),
        }
    };
    let (x64, wih64, whh64, bih64, bhh64) = (
        to_f64(&x),
        to_f64(&w_ih),
        to_f64(&stored(&w_hh)),
        to_f64(&b_ih),
        to_f64(&stored(&b_hh)),
    );
    let w64 = Weights {
        w_ih: &wih64,
        w_hh: &whh64,
        b_ih: with_bias.then_some(&bih64[..]),
        b_hh: with_bias.then_some(&bhh64[..]),
    };
    let mut y64 = vec![0.0; rows * shape.out_stride];
    let (fin, mut saved) = forward(
        &shape,
        &x64,
        lengths.as_deref(),
        Some(&to_f64(&h0)),
        Some(&to_f64(&c0)),
        &w64,
        rmask.as_deref().map(to_f64).as_deref(),
        &mut y64,
    )
    .unwrap();

    // The CPU twin in f32 on the same values: how far f32 arithmetic itself lands from the
    // f64 reference. A gradient summed over rows can cancel to far below its terms (seed
    // 1795992161292228435: RNN H = 1, dW_hh = -0.00099 from terms of 0.1 to 1, where the twin
    // in f32 is off by 6.7e-5 and the GPU by 2.0e-4, both a few units of f32 rounding of the
    // terms); there the GPU is judged against the twin's own f32 error.
    let (whh32, bhh32) = (stored(&w_hh), stored(&b_hh));
    let w32 = Weights {
        w_ih: &w_ih,
        w_hh: &whh32,
        b_ih: with_bias.then_some(&b_ih[..]),
        b_hh: with_bias.then_some(&bhh32[..]),
    };
    // Only the checks against the values as stored use it.
    let mut saved32 = (reference == Reference::AsStored).then(|| {
        let mut y32 = vec![0.0f32; rows * shape.out_stride];
        forward(
            &shape,
            &x,
            lengths.as_deref(),
            Some(&h0),
            Some(&c0),
            &w32,
            rmask.as_deref(),
            &mut y32,
        )
        .unwrap()
        .1
    });

    // The GPU, outputs poisoned.
    let t = |shape: &[usize], v: &[f32]| GpuTensor::from_slice(&gpu, shape, v).unwrap();
    let nan = |n: usize| GpuTensor::filled(&gpu, &[n], f32::NAN).unwrap();
    let (gx, gwih, gwhh, gbih, gbhh) = (
        t(&[rows, shape.input], &x),
        t(&[gw, shape.input], &w_ih),
        t(&[gw, h], &w_hh),
        t(&[gw], &b_ih),
        t(&[gw], &b_hh),
    );
    let gy = nan(rows * shape.out_stride);
    let gdy = t(&[rows * shape.out_stride], &dy);
    let (gdx, gdwih, gdwhh, gdbih, gdbhh) = (
        nan(rows * shape.input),
        nan(gw * shape.input),
        nan(gw * h),
        nan(gw),
        nan(gw),
    );
    let weights = GpuWeights {
        w_ih: &gwih,
        w_hh: &gwhh,
        b_ih: with_bias.then_some(&gbih),
        b_hh: with_bias.then_some(&gbhh),
    };
    let grads = GpuGrads {
        dx: &gdx,
        accumulate_dx: false,
        dw_ih: &gdwih,
        dw_hh: &gdwhh,
        db_ih: &gdbih,
        db_hh: &gdbhh,
    };
    let state = GpuTensor::zeros(&gpu, &[STATE_REGIONS, shape.batch, h]).unwrap();
    let gmask = rmask.as_ref().map(|m| t(&[shape.batch, h], m));
    let plan = RecurrentPlan::new(
        &gpu,
        kernels,
        shape,
        &gx,
        &gy,
        weights,
        Some((grads, Some(&gdy))),
        &state,
        gmask.as_ref(),
    )
    .unwrap();
    if let Some(asked) = kernels.step_index {
        assert_eq!(plan.step_index(), asked, "{shape:?}");
    }
    plan.set_lengths(lengths.as_deref()).unwrap();
    plan.set_initial_state(Some(&h0), Some(&c0)).unwrap();
    plan.set_final_state_grads(Some(&dh_n), Some(&dc_n))
        .unwrap();
    let mut rec = Recorder::new(&gpu);
    plan.record_forward(&mut rec);
    let forward_dispatches = rec.costs().len();
    let forward_costs = rec.costs().to_vec();
    plan.record_backward(&mut rec).unwrap();
    let backward = rec.costs()[forward_dispatches..].to_vec();
    rec.submit().unwrap();

    let ctx = format!(
        "{shape:?} {precision:?} lengths {lengths:?} bias {with_bias} recurrent mask {}",
        rmask.is_some()
    );
    // With f16 storage, the backward reads most gate activations as the GPU stored them
    // (Precision::is_f16_activation), each rounded to f16 from the GPU's f32 value. Rounding
    // the reference's own values instead would part ways wherever the two sit on either side
    // of an f16 rounding boundary, so: each is checked to be an f16 value within f16's
    // rounding of the reference's, and the reference backward then starts from them.
    if reference == Reference::AsStored && precision.f16_activations(cell) > 0 {
        let stored = plan.saved_activations().unwrap();
        let width = cell.act_width() * h;
        assert_eq!(stored.len(), saved.act.len(), "{ctx}: saved activations");
        let active = |row: usize| {
            let (t, b) = if shape.batch_first {
                (row % shape.steps, row / shape.steps)
            } else {
                (row / bsz, row % bsz)
            };
            lengths.as_ref().is_none_or(|l| t < l[b])
        };
        let in_f16 = |e: usize| precision.is_f16_activation(cell, e % width / h);
        for row in (0..rows).filter(|&row| active(row)) {
            let span = row * width..(row + 1) * width;
            for (e, &got) in span.clone().zip(&stored[span]).filter(|(e, _)| in_f16(*e)) {
                let want = saved.act[e];
                // An f16 value within the two errors f16 storage allows: rounding (2^-11 of
                // the value) and the flush of magnitudes below 2^-14 (2^-14 absolute). The
                // absolute term also covers the f32 arithmetic of the GPU's value, which is
                // absolute where a pre-activation's terms cancel (GRU's W_hn h + b_hn, tanh
                // near 0): e.g. 7.1585e-5 stored for 7.1515e-5, 9.9e-4 relative.
                let off = (got as f64 - want).abs();
                let bound = want.abs() * 2f64.powi(-11) + 2f64.powi(-14);
                assert!(
                    f16_storage_value(got) == got && off <= bound,
                    "{ctx}: saved activation {e} is {got}, the reference's {want}"
                );
                saved.act[e] = got as f64;
                if let Some(s32) = saved32.as_mut() {
                    s32.act[e] = got;
                }
            }
        }
    }
    let g64 = cpu_backward(
        &shape,
        &x64,
        &w64,
        &saved,
        Some(&to_f64(&dy)),
        Some(&to_f64(&dh_n)),
        Some(&to_f64(&dc_n)),
    )
    .unwrap();
    let g32 = saved32.map(|saved32| {
        cpu_backward(
            &shape,
            &x,
            &w32,
            &saved32,
            Some(&dy),
            Some(&dh_n),
            Some(&dc_n),
        )
        .unwrap()
    });
    let y = gy.to_vec().unwrap();
    // The same forward in a plan without a backward, which keeps one row of `saved` per
    // batch entry rather than one per output row: the same bits, and no activations to read.
    let (gy_infer, state_infer) = (
        nan(rows * shape.out_stride),
        GpuTensor::zeros(&gpu, &[STATE_REGIONS, shape.batch, h]).unwrap(),
    );
    let infer = RecurrentPlan::new(
        &gpu,
        kernels,
        shape,
        &gx,
        &gy_infer,
        weights,
        None,
        &state_infer,
        gmask.as_ref(),
    )
    .unwrap();
    infer.set_lengths(lengths.as_deref()).unwrap();
    infer.set_initial_state(Some(&h0), Some(&c0)).unwrap();
    let mut rec = Recorder::new(&gpu);
    infer.record_forward(&mut rec);
    rec.submit().unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let ctx_infer = format!("{shape:?} {precision:?} lengths {lengths:?}: without a backward");
    assert_eq!(
        bits(&gy_infer.to_vec().unwrap()),
        bits(&y),
        "{ctx_infer}: output"
    );
    assert_eq!(
        bits(&infer.h_n().unwrap()),
        bits(&plan.h_n().unwrap()),
        "{ctx_infer}: h_n"
    );
    assert_eq!(
        bits(&infer.c_n().unwrap()),
        bits(&plan.c_n().unwrap()),
        "{ctx_infer}: c_n"
    );
    assert!(
        infer.saved_activations().is_err(),
        "{ctx_infer}: activations"
    );
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for row in 0..rows {
        for col in 0..shape.out_stride {
            let at = row * shape.out_stride + col;
            if (shape.out_offset..shape.out_offset + h).contains(&col) {
                got.push(y[at]);
                want.push(y64[at]);
            } else {
                assert!(
                    y[at].is_nan(),
                    "{ctx}: column {col} outside this direction was written"
                );
            }
        }
    }
    let worst = std::cell::Cell::new(0.0f64);
    let bits = std::cell::RefCell::new(Vec::new());
    let compare_with = |what: &str, got: &[f32], want: &[f64], twin: Option<&[f32]>| {
        let e = rel_error(got, want);
        // Within tol, or (against the f32 values as stored) within 4x the f32 twin's error.
        let twin_error = twin.map_or(0.0, |t| rel_error(t, want));
        assert!(
            e < tol || e < 4.0 * twin_error,
            "{ctx}: {what} rel error {e} (the CPU twin in f32: {twin_error})"
        );
        worst.set(worst.get().max(e));
        bits.borrow_mut().extend(got.iter().map(|v| v.to_bits()));
    };
    let compare = |what: &str, got: &[f32], want: &[f64]| compare_with(what, got, want, None);
    compare("output", &got, &want);
    compare("h_n", &plan.h_n().unwrap(), &fin.h_n);
    if cell.has_cell_state() {
        compare("c_n", &plan.c_n().unwrap(), &fin.c_n);
    }
    if reference == Reference::F32Outputs {
        return Run {
            forward: forward_costs,
            backward,
            worst: worst.get(),
            bits: bits.take(),
        };
    }
    let compare_grad = |what: &str, got: &[f32], want: &[f64], twin: fn(&Grads<f32>) -> &[f32]| {
        compare_with(what, got, want, g32.as_ref().map(twin))
    };
    if cell.has_cell_state() {
        compare_grad("dc0", &plan.dc0().unwrap(), &g64.dc0, |g| &g.dc0);
    }
    compare_grad("dh0", &plan.dh0().unwrap(), &g64.dh0, |g| &g.dh0);
    compare_grad("dx", &gdx.to_vec().unwrap(), &g64.dx, |g| &g.dx);
    compare_grad("dw_ih", &gdwih.to_vec().unwrap(), &g64.dw_ih, |g| &g.dw_ih);
    compare_grad("dw_hh", &gdwhh.to_vec().unwrap(), &g64.dw_hh, |g| &g.dw_hh);
    compare_grad("db_ih", &gdbih.to_vec().unwrap(), &g64.db_ih, |g| &g.db_ih);
    compare_grad("db_hh", &gdbhh.to_vec().unwrap(), &g64.db_hh, |g| &g.db_hh);
    Run {
        forward: forward_costs,
        backward,
        worst: worst.get(),
        bits: bits.take(),
    }
}

#[test]
fn gpu_recurrent_matches_cpu_small_shapes() {
    let mut rng = rng("gpu_recurrent_matches_cpu_small_shapes");
    for cell in CellKind::ALL {
        for _ in 0..5 {
            check(&mut rng, cell, false);
        }
    }
}

#[test]
fn gpu_recurrent_matches_cpu_across_workgroups() {
    // Hidden sizes above one workgroup's 64 units, batches above its 4 entries.
    let mut rng = rng("gpu_recurrent_matches_cpu_across_workgroups");
    for cell in CellKind::ALL {
        check(&mut rng, cell, true);
    }
}

#[test]
fn gpu_recurrent_matches_cpu_with_weight_gradients_split_along_k() {
    // Long sequences (steps x batch >= 512 rows) with small layers: the tiled GEMM splits
    // the weight-gradient products along K (the rows), whatever the adapter.
    if common::gpu().is_none() {
        return;
    }
    let gpu = recur::Gpu::new().unwrap();
    gpu.set_gemm_variant(recur::gpu::GemmVariant::Tiled)
        .unwrap();
    let mut rng = rng("gpu_recurrent_matches_cpu_with_weight_gradients_split_along_k");
    for cell in CellKind::ALL {
        let (b, t) = (rng.random_range(5..9), rng.random_range(110..140));
        let shape =
            RecurrentShape::new(cell, rng.random_range(3..30), rng.random_range(3..30), b, t)
                .reverse(rng.random_bool(0.5))
                .batch_first(rng.random_bool(0.5));
        // Every cell has a weight-gradient product over x (dW_ih with db_ih): one tile.
        let dw_ih = Gemm::new(shape.gate_width(), shape.input, shape.rows()).trans_a(true);
        assert!(
            split_k_rule(&dw_ih) > 1,
            "{shape:?}: the rule does not split"
        );
        let (_, backward) = check_on(&gpu, &mut rng, shape);
        assert!(
            backward
                .iter()
                .any(|d| d.kernel.entry == "reduce_weight_grads"
                    && d.kernel.role.starts_with("dW_ih")),
            "{shape:?}: no weight-gradient product"
        );
    }
}

/// Shapes for the path tests: random small and large ones, B = 1, T = 1, H not a multiple
/// of 4 and bidirectional-style output columns among them (random_shape draws those).
fn path_shapes(rng: &mut StdRng, cell: CellKind) -> Vec<RecurrentShape> {
    let mut shapes = vec![
        random_shape(rng, cell, false),
        random_shape(rng, cell, true),
    ];
    let h = 4 * rng.random_range(1..20) + rng.random_range(1..4);
    shapes.push(RecurrentShape::new(
        cell,
        rng.random_range(1..9),
        h,
        1,
        rng.random_range(2..7),
    ));
    shapes.push(
        RecurrentShape::new(cell, rng.random_range(1..9), h, rng.random_range(2..12), 1)
            .reverse(true),
    );
    // More batch entries than the largest tile (8 for the sequence kernel, 16 for the tiled
    // step kernels): several workgroups, a ragged last one.
    shapes.push(
        RecurrentShape::new(cell, rng.random_range(1..9), rng.random_range(1..40), 19, 4)
            .batch_first(true)
            .output_columns(2 * 40, 40),
    );
    shapes
}

fn check_path(test: &str, path: RecurrentPath, kernel: StepKernel) {
    let Some(gpu) = common::gpu_with(Some(path), Some(kernel)) else {
        return;
    };
    let mut rng = rng(test);
    let (forward_step, backward_step, finish) = match kernel {
        StepKernel::Entry => ("forward_step", "backward_step", "backward_finish"),
        StepKernel::Tiled => (
            "forward_step_tiled",
            "backward_step_tiled",
            "backward_finish_tiled",
        ),
    };
    for cell in CellKind::ALL {
        for shape in path_shapes(&mut rng, cell) {
            let (forward, backward) = check_on(&gpu, &mut rng, shape);
            let count = |dispatches: &[DispatchCost], entry: &str| {
                dispatches
                    .iter()
                    .filter(|d| d.kernel.entry == entry)
                    .count()
            };
            let sequence = count(&forward, "forward_sequence");
            match path {
                RecurrentPath::Sequence => {
                    // Transpose, projection GEMM (one dispatch, or two when split), sequence.
                    assert_eq!(sequence, 1, "{shape:?}");
                    assert!(
                        forward.len() <= 4,
                        "{shape:?}: {} dispatches",
                        forward.len()
                    );
                    assert_eq!(count(&forward, forward_step), 0, "{shape:?}");
                    // Every path shape's gate gradients fit: the backward sequence kernel
                    // with dh0 in it, then dx (split in two at most) and the weight and
                    // bias gradients: one product and its reduction (every cell).
                    assert_eq!(count(&backward, "backward_sequence"), 1, "{shape:?}");
                    assert_eq!(count(&backward, backward_step), 0, "{shape:?}");
                    assert_eq!(count(&backward, finish), 0, "{shape:?}");
                    assert!(
                        backward.len() <= 1 + 2 + 2,
                        "{shape:?}: {} dispatches",
                        backward.len()
                    );
                }
                RecurrentPath::Step => {
                    assert_eq!(sequence, 0, "{shape:?}");
                    assert_eq!(count(&forward, forward_step), shape.steps, "{shape:?}");
                    assert_eq!(count(&backward, "backward_sequence"), 0, "{shape:?}");
                    assert_eq!(count(&backward, backward_step), shape.steps, "{shape:?}");
                    assert_eq!(count(&backward, finish), 1, "{shape:?}");
                }
            }
        }
    }
}

#[test]
fn gpu_recurrent_sequence_kernel_matches_cpu() {
    check_path(
        "gpu_recurrent_sequence_kernel_matches_cpu",
        RecurrentPath::Sequence,
        StepKernel::Entry,
    );
}

#[test]
fn gpu_recurrent_step_kernels_match_cpu() {
    check_path(
        "gpu_recurrent_step_kernels_match_cpu",
        RecurrentPath::Step,
        StepKernel::Entry,
    );
}

#[test]
fn gpu_recurrent_tiled_step_kernels_match_cpu() {
    check_path(
        "gpu_recurrent_tiled_step_kernels_match_cpu",
        RecurrentPath::Step,
        StepKernel::Tiled,
    );
}

/// The step index reaches the step kernels both ways (immediates, where the adapter offers
/// them, and a dynamic uniform offset): each against the CPU twin, per-step path, both kinds
/// of step kernel, every cell, and the same inputs give the same bits either way.
#[test]
fn both_ways_of_passing_the_step_index_match_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut ways = vec![StepIndex::Offset];
    if StepIndex::immediates_possible(&gpu) {
        ways.push(StepIndex::Immediate);
    } else {
        common::skipped("the adapter offers no immediates: the dynamic offset only");
    }
    let mut rng = rng("both_ways_of_passing_the_step_index_match_cpu");
    for cell in CellKind::ALL {
        for step in [StepKernel::Entry, StepKernel::Tiled] {
            let shape = random_shape(&mut rng, cell, false);
            let seed: u64 = rng.random();
            let mut outputs = Vec::new();
            for &way in &ways {
                let kernels = RecurrentKernels {
                    path: Some(RecurrentPath::Step),
                    step: Some(step),
                    step_index: Some(way),
                    ..Default::default()
                };
                let mut case_rng = <StdRng as rand::SeedableRng>::seed_from_u64(seed);
                let run = check_with(
                    &gpu,
                    &mut case_rng,
                    shape,
                    kernels,
                    Reference::AsStored,
                    TOL,
                );
                assert_eq!(
                    run.forward
                        .iter()
                        .filter(|d| d.kernel.entry.starts_with("forward_step"))
                        .count(),
                    shape.steps,
                    "{shape:?} {way:?}: one forward step dispatch per step"
                );
                outputs.push(run.bits);
            }
            assert!(
                outputs.windows(2).all(|w| w[0] == w[1]),
                "{shape:?} {step:?}: the ways gave different bits"
            );
        }
    }
}

/// Immediates asked of a device that cannot take them (here: one that traces, for a replay in
/// a browser) are refused with the reason, not built.
#[test]
fn immediates_are_refused_where_the_device_cannot_take_them() {
    let Some(gpu) = common::gpu() else { return };
    let shape = RecurrentShape::new(CellKind::Lstm, 3, 5, 2, 4);
    let t = |n: usize| GpuTensor::zeros(&gpu, &[n]).unwrap();
    let (x, y) = (t(shape.rows() * 3), t(shape.rows() * 5));
    let (w_ih, w_hh) = (t(shape.gate_width() * 3), t(shape.gate_width() * 5));
    let state = t(STATE_REGIONS * 2 * 5);
    let weights = GpuWeights {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: None,
        b_hh: None,
    };
    let kernels = RecurrentKernels {
        step_index: Some(StepIndex::Immediate),
        ..Default::default()
    };
    gpu.start_trace();
    let built = RecurrentPlan::new(&gpu, kernels, shape, &x, &y, weights, None, &state, None);
    gpu.finish_trace().unwrap();
    let err = built
        .err()
        .expect("immediates while tracing are refused")
        .to_string();
    assert!(
        err.contains("cannot take the step index as immediates") && err.contains("tracing"),
        "{err}"
    );
}

#[test]
fn gpu_recurrent_sequence_kernel_with_tiled_backward_matches_cpu() {
    check_path(
        "gpu_recurrent_sequence_kernel_with_tiled_backward_matches_cpu",
        RecurrentPath::Sequence,
        StepKernel::Tiled,
    );
}

#[test]
fn the_sequence_kernel_applies_while_the_state_fits_workgroup_memory() {
    let Some(gpu) = common::gpu_with(Some(RecurrentPath::Sequence), Some(StepKernel::Entry)) else {
        return;
    };
    let tile = |h: usize, b: usize| {
        RecurrentPath::sequence_tile(&gpu, &RecurrentShape::new(CellKind::Lstm, 3, h, b, 2))
    };
    // 2 x tile x H floats within 4096, the tile at most the batch rounded up to a power of 2.
    assert_eq!(tile(256, 32), Some(8));
    assert_eq!(tile(257, 32), Some(4));
    assert_eq!(tile(256, 3), Some(4));
    assert_eq!(tile(256, 1), Some(1));
    assert_eq!(tile(1024, 64), Some(2));
    assert_eq!(tile(2048, 5), Some(1));
    assert_eq!(tile(2049, 5), None);
    // Each side of the boundary, run: the largest H that fits takes the sequence kernel, one
    // more unit the step kernels, even when the sequence path is asked for.
    let mut rng = rng("the_sequence_kernel_applies_while_the_state_fits_workgroup_memory");
    for (h, entry) in [(2048, "forward_sequence"), (2049, "forward_step")] {
        let shape = RecurrentShape::new(CellKind::RnnTanh, 3, h, 2, 2).reverse(true);
        assert_eq!(
            RecurrentPath::choose(&gpu, &shape),
            if h == 2048 {
                RecurrentPath::Sequence
            } else {
                RecurrentPath::Step
            }
        );
        let (forward, _) = check_on(&gpu, &mut rng, shape);
        assert!(forward.iter().any(|d| d.kernel.entry == entry), "H = {h}");
    }
}

#[test]
fn the_backward_sequence_kernel_applies_while_a_steps_gate_gradients_fit() {
    let Some(gpu) = common::gpu_with(Some(RecurrentPath::Sequence), Some(StepKernel::Entry)) else {
        return;
    };
    let tile = |cell: CellKind, h: usize, b: usize| {
        RecurrentPath::backward_sequence_tile(&gpu, &RecurrentShape::new(cell, 3, h, b, 2))
    };
    // tile x (rows of W_hh the state's gradient flows through) within 4096 floats.
    assert_eq!(tile(CellKind::Lstm, 256, 32), Some(4));
    assert_eq!(tile(CellKind::Lstm, 257, 32), Some(2));
    assert_eq!(tile(CellKind::Lstm, 256, 3), Some(4));
    assert_eq!(tile(CellKind::Lstm, 256, 1), Some(1));
    assert_eq!(tile(CellKind::Lstm, 1024, 5), Some(1));
    assert_eq!(tile(CellKind::Lstm, 1025, 5), None);
    assert_eq!(tile(CellKind::Gru, 1365, 5), Some(1));
    assert_eq!(tile(CellKind::Gru, 1366, 5), None);
    assert_eq!(tile(CellKind::GruResetBefore, 2048, 5), Some(1));
    assert_eq!(tile(CellKind::RnnTanh, 2048, 5), Some(2));
    // Beyond the forward's state: no sequence path at all.
    assert_eq!(tile(CellKind::RnnTanh, 2049, 5), None);
    // Each side of the LSTM boundary, run: the forward takes the sequence kernel on both, the
    // backward the sequence kernel at H = 1024 and the step kernels at 1025. One step, so
    // that llvmpipe's invocations stay within its loop budget: each pass over the 4,096 rows
    // of W_hh is 4 x 4,096 iterations for the 4 quads an invocation owns, and the step and
    // dh0 take one each. (At T = 3 they were about 66,000, past the 65,535 at which
    // llvmpipe stops: the wrong dh0 of the last quad that once kept dh0 out of this kernel.)
    let mut rng = rng("the_backward_sequence_kernel_applies_while_a_steps_gate_gradients_fit");
    for (h, entry) in [(1024, "backward_sequence"), (1025, "backward_step")] {
        let shape = RecurrentShape::new(CellKind::Lstm, 3, h, 2, 1).reverse(true);
        let (forward, backward) = check_on(&gpu, &mut rng, shape);
        assert!(
            forward.iter().any(|d| d.kernel.entry == "forward_sequence"),
            "H = {h}"
        );
        assert!(backward.iter().any(|d| d.kernel.entry == entry), "H = {h}");
    }
}

/// Checks that with `kernel`'s step kernels the rule takes the sequence kernel up to the
/// largest H of each cell in `largest` and the step kernels one unit above (B = 32, T = 100).
fn check_rule_boundary(kernel: StepKernel, largest: [(CellKind, usize); 4]) {
    check_rule_boundary_in(kernel, Precision::F32, largest);
}

fn check_rule_boundary_in(
    kernel: StepKernel,
    precision: Precision,
    largest: [(CellKind, usize); 4],
) {
    let Some(gpu) = common::gpu_with(None, Some(kernel)) else {
        return;
    };
    gpu.set_recurrent_precision(precision).unwrap();
    let rule = |cell: CellKind, h: usize| {
        RecurrentPath::by_rule(&gpu, &RecurrentShape::new(cell, 3, h, 32, 100))
    };
    for (cell, h) in largest {
        assert_eq!(rule(cell, h), RecurrentPath::Sequence, "{cell:?} H = {h}");
        let above = h + 1;
        assert_eq!(
            rule(cell, above),
            RecurrentPath::Step,
            "{cell:?} H = {above}"
        );
    }
    assert_eq!(rule(CellKind::Lstm, 1), RecurrentPath::Sequence);
}

#[test]
fn with_entry_step_kernels_the_rule_takes_the_sequence_kernel_up_to_a_mebibyte_of_w_hh() {
    // G x H x H x 4 bytes <= 1 MiB.
    check_rule_boundary(
        StepKernel::Entry,
        [
            (CellKind::Lstm, 256),
            (CellKind::Gru, 295),
            (CellKind::GruResetBefore, 295),
            (CellKind::RnnTanh, 512),
        ],
    );
}

#[test]
fn with_tiled_step_kernels_the_rule_takes_the_sequence_kernel_up_to_96_kib_of_w_hh() {
    // G x H x H x 4 bytes <= 96 KiB, and <= 192 KiB for GRU reset-before, whose step path
    // launches two dispatches a step.
    check_rule_boundary(
        StepKernel::Tiled,
        [
            (CellKind::Lstm, 78),
            (CellKind::Gru, 90),
            (CellKind::GruResetBefore, 128),
            (CellKind::RnnTanh, 156),
        ],
    );
}

/// f16 storage of W_hh and b_hh on every path and step kernel: the GPU against the f64 CPU
/// twin given the weights as the GPU stores them (rounded by the twin of its rounding), to
/// the f32 path's tolerance; the backward from the activations as the GPU stored them, each
/// checked against the twin's (see check_with). Any other difference (a weight
/// decoded from the wrong half, a wrong rounding, a mis-sized buffer) is off by far more.
#[test]
fn f16_weight_storage_matches_cpu_on_the_stored_weights() {
    let mut rng = rng("f16_weight_storage_matches_cpu_on_the_stored_weights");
    for (path, kernel) in [
        (RecurrentPath::Sequence, StepKernel::Entry),
        (RecurrentPath::Step, StepKernel::Entry),
        (RecurrentPath::Step, StepKernel::Tiled),
        (RecurrentPath::Sequence, StepKernel::Tiled),
    ] {
        let Some(gpu) = common::gpu_with(Some(path), Some(kernel)) else {
            return;
        };
        for cell in CellKind::ALL {
            let shapes = path_shapes(&mut rng, cell);
            // The small random shape, the one of B = 1 and the ragged 19 entries.
            for shape in [shapes[0], shapes[2], shapes[4]] {
                let run = check_stored(
                    &gpu,
                    &mut rng,
                    shape,
                    Precision::F16Storage,
                    Reference::AsStored,
                    TOL,
                );
                assert!(run.worst.is_finite());
            }
        }
    }
}

/// The tolerance of f16 storage against the f32 parameters, at layer sizes as used (H 65 to
/// 149, B 5 to 10, I 60 to 139): 4 x 2^-11 (f16's unit roundoff) relative, on outputs,
/// final states and every gradient. Each stored weight, and each of the f16 saved
/// activations the backward reads, is within 2^-11 of itself (or below 2^-14 in magnitude),
/// independently of the others. With W_hh within PyTorch's initial range the recurrence
/// contracts, so the steps do not amplify the perturbation, and across H weights a unit's
/// perturbations partly cancel: the errors measured are 2.5e-4 to 2.9e-4 with W_hh alone in
/// f16 and 4.7e-4 to 6.1e-4 with the activations too, 32 seeds (BENCHMARKS.md, "f16 weight
/// storage" and "f16 storage of the saved activations"). On degenerate shapes (H = 1, a
/// handful of elements, sums that cancel) the relative error of a tiny vector can reach
/// 2^-11 and more; the comparison against the stored weights above is the kernels' test
/// there.
///
/// ReLU RNN: outputs and final states only. Its derivative jumps at 0, so a unit whose
/// pre-activation lies within the rounding of 0 gets a gradient of 0 on one side and the
/// full one on the other: no bound of rounding size holds for its gradients (seed
/// 45355900239593, H = 85, B = 7, T = 2: dh0 2.4e-2 from the f32 parameters' result, and
/// within 1e-4 of the stored weights'). Its gradients are checked against the stored
/// weights above.
const F16_TOL: f64 = 4.0 * 4.8828125e-4;

#[test]
fn f16_weight_storage_stays_within_its_tolerance_of_the_f32_parameters() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("f16_weight_storage_stays_within_its_tolerance_of_the_f32_parameters");
    let mut worst = 0.0f64;
    for cell in CellKind::ALL {
        for _ in 0..3 {
            let shape = random_shape(&mut rng, cell, true);
            let reference = match cell {
                CellKind::RnnRelu => Reference::F32Outputs,
                _ => Reference::F32,
            };
            let run = check_stored(
                &gpu,
                &mut rng,
                shape,
                Precision::F16Storage,
                reference,
                F16_TOL,
            );
            worst = worst.max(run.worst);
        }
    }
    eprintln!("f16 storage against f32 parameters: largest relative error {worst:.2e}");
}

/// The copies the products read hold exactly the CPU twin's rounding of every weight
/// (f32 storage: the weights themselves), values picked to hit ties, the edge of f16's
/// normal range, overflow and signed zeros, besides random ones.
#[test]
fn stored_weights_are_the_cpu_twins_rounding() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("stored_weights_are_the_cpu_twins_rounding");
    let special = |rng: &mut StdRng| -> f32 {
        let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        match rng.random_range(0..8) {
            // A tie: f16 keeps 10 fraction bits, f32 has 23; the 13 dropped are 0x1000.
            0 => {
                let e = rng.random_range(-14..15);
                let frac = rng.random_range(0..1024u32);
                let bits = (((e + 127) as u32) << 23) | (frac << 13) | 0x1000;
                sign * f32::from_bits(bits)
            }
            1 => sign * 2f32.powi(-14) * rng.random_range(0.5..1.5),
            2 => sign * rng.random_range(65000.0..70000.0),
            3 => sign * 0.0,
            _ => sign * rng.random_range(-4.0f32..4.0).exp2() * rng.random_range(0.0..1.0),
        }
    };
    for precision in [Precision::F32, Precision::F16Storage] {
        for cell in CellKind::ALL {
            let h = rng.random_range(1..23);
            let shape = RecurrentShape::new(cell, 2, h, 1, 1);
            let gw = shape.gate_width();
            let w_hh: Vec<f32> = (0..gw * h).map(|_| special(&mut rng)).collect();
            let b_hh: Vec<f32> = (0..gw).map(|_| special(&mut rng)).collect();
            let t = |shape: &[usize], v: &[f32]| GpuTensor::from_slice(&gpu, shape, v).unwrap();
            let (x, w_ih, b_ih) = (
                t(&[1, 2], &[0.0; 2]),
                t(&[gw, 2], &vec![0.0; gw * 2]),
                t(&[gw], &vec![0.0; gw]),
            );
            let (gwhh, gbhh) = (t(&[gw, h], &w_hh), t(&[gw], &b_hh));
            let y = GpuTensor::zeros(&gpu, &[1, h]).unwrap();
            let state = GpuTensor::zeros(&gpu, &[STATE_REGIONS, 1, h]).unwrap();
            let weights = GpuWeights {
                w_ih: &w_ih,
                w_hh: &gwhh,
                b_ih: Some(&b_ih),
                b_hh: Some(&gbhh),
            };
            let kernels = RecurrentKernels {
                precision: Some(precision),
                ..Default::default()
            };
            let plan =
                RecurrentPlan::new(&gpu, kernels, shape, &x, &y, weights, None, &state, None)
                    .unwrap();
            assert_eq!(plan.precision(), precision);
            let mut rec = Recorder::new(&gpu);
            plan.record_forward(&mut rec);
            rec.submit().unwrap();
            let got = plan.stored_recurrent_weights().unwrap();
            // The decoded f16 values are exact in f32, so their f32 bits are compared.
            let bits = |v: &[f32]| -> Vec<u32> { v.iter().map(|v| v.to_bits()).collect() };
            let stored = |v: &[f32]| -> Vec<u32> {
                v.iter()
                    .map(|&v| match precision {
                        Precision::F32 => v.to_bits(),
                        Precision::F16Storage => f16_storage_value(v).to_bits(),
                    })
                    .collect()
            };
            let ctx = format!("{cell:?} H = {h} {precision:?}");
            assert_eq!(bits(&got.w_hh), stored(&w_hh), "{ctx}: W_hh^T copy");
            assert_eq!(
                bits(&got.w_hh_padded),
                stored(&w_hh),
                "{ctx}: padded W_hh copy"
            );
            assert_eq!(bits(&got.b_hh), stored(&b_hh), "{ctx}: b_hh");
        }
    }
}

#[test]
fn with_f16_weight_storage_the_rule_counts_the_bytes_stored() {
    // G x H x H x 2 bytes <= 1 MiB, and <= 96 KiB (192 KiB for GRU reset-before).
    check_rule_boundary_in(
        StepKernel::Entry,
        Precision::F16Storage,
        [
            (CellKind::Lstm, 362),
            (CellKind::Gru, 418),
            (CellKind::GruResetBefore, 418),
            (CellKind::RnnTanh, 724),
        ],
    );
    check_rule_boundary_in(
        StepKernel::Tiled,
        Precision::F16Storage,
        [
            (CellKind::Lstm, 110),
            (CellKind::Gru, 128),
            (CellKind::GruResetBefore, 181),
            (CellKind::RnnTanh, 221),
        ],
    );
}

#[test]
fn the_devices_choice_of_path_matches_cpu_over_a_hundred_steps() {
    // The rule takes the sequence kernels for this LSTM (W_hh of 1 MiB) on adapters that
    // run shaders on the CPU. On llvmpipe they go wrong over long dispatches (from about 70
    // steps at H = 256, B = 1: gradients off by more than 100%), so there the device
    // chooses the step kernels; SwiftShader runs the sequence kernels, and must be right.
    let Some(gpu) = common::gpu_with(None, None) else {
        return;
    };
    let shape = RecurrentShape::new(CellKind::Lstm, 5, 256, 1, 100);
    let chosen = RecurrentPath::choose(&gpu, &shape);
    if gpu.is_llvmpipe() {
        assert_eq!(chosen, RecurrentPath::Step);
        assert_eq!(
            RecurrentPath::by_rule(&gpu, &shape),
            RecurrentPath::Sequence
        );
    } else {
        assert_eq!(chosen, RecurrentPath::by_rule(&gpu, &shape));
    }
    let mut rng = rng("the_devices_choice_of_path_matches_cpu_over_a_hundred_steps");
    let (forward, _) = check_on(&gpu, &mut rng, shape);
    let sequence = forward.iter().any(|d| d.kernel.entry == "forward_sequence");
    assert_eq!(sequence, chosen == RecurrentPath::Sequence, "{chosen:?}");
}

#[test]
fn forced_sequence_kernels_stay_within_llvmpipes_loop_budget() {
    // Every LSTM forward measured stopping early on lavapipe (after 65,535 / (H + 11) steps,
    // one quad of units per invocation) is past the budget by the estimate.
    for h in [64, 128, 256] {
        let stopped = RecurrentShape::new(CellKind::Lstm, 3, h, 1, 65_535 / (h + 11) + 1);
        let iterations = RecurrentPath::forward_sequence_iterations(&stopped, 1);
        assert!(iterations > LLVMPIPE_LOOP_BUDGET, "H = {h}: {iterations}");
    }
    let Some(gpu) = common::gpu_with(Some(RecurrentPath::Sequence), None) else {
        return;
    };
    let llvmpipe = gpu.is_llvmpipe();
    // Forced, a forward too long for llvmpipe takes the step kernels there.
    let long = RecurrentShape::new(CellKind::Lstm, 3, 256, 1, 250);
    assert_eq!(
        RecurrentPath::choose(&gpu, &long),
        if llvmpipe {
            RecurrentPath::Step
        } else {
            RecurrentPath::Sequence
        }
    );
    // H = 64, T = 260: the forward loops about 260 x 75 = 19,500 times an invocation, within
    // the budget; the backward about 260 x 271 = 70,460 times, past where llvmpipe stops. So
    // there the forward takes the sequence kernel and the backward the step kernels, and
    // both must match the CPU.
    let shape = RecurrentShape::new(CellKind::Lstm, 3, 64, 2, 260);
    let tile = RecurrentPath::sequence_tile(&gpu, &shape).expect("the forward's tile fits");
    assert!(RecurrentPath::forward_sequence_iterations(&shape, tile) <= LLVMPIPE_LOOP_BUDGET);
    let tile = RecurrentPath::backward_sequence_tile(&gpu, &shape).expect("its gradients fit");
    assert!(RecurrentPath::backward_sequence_iterations(&shape, tile) > LLVMPIPE_LOOP_BUDGET);
    let mut rng = rng("forced_sequence_kernels_stay_within_llvmpipes_loop_budget");
    let (forward, backward) = check_on(&gpu, &mut rng, shape);
    let runs = |dispatches: &[DispatchCost], entry: &str| {
        dispatches.iter().any(|d| d.kernel.entry == entry)
    };
    assert!(runs(&forward, "forward_sequence"));
    assert_eq!(runs(&backward, "backward_sequence"), !llvmpipe);
}

/// A pair of directions that cannot share a dispatch is refused with what differs.
#[test]
fn a_pair_refuses_directions_that_differ() {
    let Some(gpu) = common::gpu() else { return };
    let (i, b, t) = (3, 2, 4);
    let z = |n: usize| GpuTensor::zeros(&gpu, &[n]).unwrap();
    let try_pair = |a: RecurrentShape, c: RecurrentShape, mask: bool| {
        let (x, y) = (z(a.rows() * i), z(a.rows() * a.out_stride));
        let weights = |s: &RecurrentShape| (z(s.gate_width() * i), z(s.gate_width() * s.hidden));
        let ((wa_ih, wa_hh), (wc_ih, wc_hh)) = (weights(&a), weights(&c));
        let (sa, sc) = (
            z(STATE_REGIONS * b * a.hidden),
            z(STATE_REGIONS * b * c.hidden),
        );
        let m = z(b * a.hidden);
        let direction = |shape, w_ih, w_hh, state, recurrent_mask| DirectionSpec {
            shape,
            weights: GpuWeights {
                w_ih,
                w_hh,
                b_ih: None,
                b_hh: None,
            },
            grads: None,
            state,
            recurrent_mask,
        };
        RecurrentPair::new(
            &gpu,
            RecurrentKernels::default(),
            &x,
            &y,
            [
                direction(a, &wa_ih, &wa_hh, &sa, None),
                direction(c, &wc_ih, &wc_hh, &sc, mask.then_some(&m)),
            ],
        )
        .err()
        .map(|e| e.to_string())
    };
    let bi = |h: usize, reverse: bool| {
        let mut s = RecurrentShape::new(CellKind::Gru, i, h, b, t).reverse(reverse);
        s.out_stride = 2 * h;
        s.out_offset = if reverse { h } else { 0 };
        s
    };
    assert_eq!(try_pair(bi(5, false), bi(5, true), false), None);
    let e = try_pair(bi(5, false), bi(6, true), false).expect("hidden sizes differ");
    assert!(
        e.contains("same cell, sizes") && e.contains("hidden: 6"),
        "{e}"
    );
    let e = try_pair(bi(5, true), bi(5, false), false).expect("columns out of order");
    assert!(e.contains("columns after the first's"), "{e}");
    let e = try_pair(bi(5, false), bi(5, true), true).expect("one mask");
    assert!(e.contains("recurrent mask"), "{e}");
}

/// A pair binds buffers twice a direction's: it applies while they stay within the
/// adapter's binding limit (else the executor runs the directions one after the other).
#[test]
fn a_pair_fits_while_its_shared_buffers_stay_within_the_binding_limit() {
    let Some(gpu) = common::gpu() else { return };
    let max = gpu.max_binding_bytes() as f64;
    // An LSTM of batch 1 saves 6 x H floats a step (h_prev, c, 4 activations): its largest
    // buffer.
    let h = 64;
    let steps = |share: f64| (max * share / (4 * 6 * h) as f64) as usize;
    let fits = |t| {
        let shape = RecurrentShape::new(CellKind::Lstm, h, h, 1, t);
        RecurrentPair::fits(&gpu, RecurrentKernels::default(), &shape, true)
    };
    assert!(fits(steps(0.4)), "two directions of 0.4 x the limit each");
    assert!(!fits(steps(0.6)), "two directions of 0.6 x the limit each");
    // Without a backward an LSTM keeps one row of c per batch entry, so its largest buffer
    // is the gate values, 4 x H floats a step: two directions at 0.6 x 4/6 of the limit.
    let shape = RecurrentShape::new(CellKind::Lstm, h, h, 1, steps(0.6));
    assert!(
        RecurrentPair::fits(&gpu, RecurrentKernels::default(), &shape, false),
        "two forward-only directions"
    );
}

/// A plan without a backward keeps, instead of a row of `saved` per output row (h_prev, the
/// cell states and activations the backward reads), one per batch entry of what its forward
/// reads back (LSTM's c, GRU reset-before's activations), and GRU's gate values without the
/// room for dhw.
#[test]
fn a_plan_without_a_backward_keeps_a_row_per_batch_entry() {
    let Some(gpu) = common::gpu() else { return };
    for cell in CellKind::ALL {
        for precision in [Precision::F32, Precision::F16Storage] {
            let shape = RecurrentShape::new(cell, 5, 7, 3, 11);
            let (i, h, b, gw, rows) = (5, 7, 3, shape.gate_width(), shape.rows());
            let t = |n: usize| GpuTensor::zeros(&gpu, &[n]).unwrap();
            let (x, y, w_ih, w_hh) = (t(rows * i), t(rows * h), t(gw * i), t(gw * h));
            let (dx, dw_ih, dw_hh, db_ih, db_hh) =
                (t(rows * i), t(gw * i), t(gw * h), t(gw), t(gw));
            let state = t(STATE_REGIONS * b * h);
            let plan = |grads: bool| {
                let weights = GpuWeights {
                    w_ih: &w_ih,
                    w_hh: &w_hh,
                    b_ih: None,
                    b_hh: None,
                };
                let g = GpuGrads {
                    dx: &dx,
                    accumulate_dx: false,
                    dw_ih: &dw_ih,
                    dw_hh: &dw_hh,
                    db_ih: &db_ih,
                    db_hh: &db_hh,
                };
                let kernels = RecurrentKernels {
                    precision: Some(precision),
                    ..Default::default()
                };
                RecurrentPlan::new(
                    &gpu,
                    kernels,
                    shape,
                    &x,
                    &y,
                    weights,
                    grads.then_some((g, None)),
                    &state,
                    None,
                )
                .unwrap()
                .workspace_bytes()
            };
            // 32-bit words of `saved` per unit: of an output row with a backward (h_prev,
            // LSTM's c, the activations: two f16 to a word for LSTM's and GRU's four and
            // reset-before's r and n), of a batch entry without one.
            let f16 = precision == Precision::F16Storage;
            let (with, without) = match cell {
                CellKind::Lstm if f16 => (4, 1),
                CellKind::Lstm => (6, 1),
                CellKind::Gru if f16 => (3, 0),
                CellKind::Gru => (5, 0),
                CellKind::GruResetBefore if f16 => (4, 3),
                CellKind::GruResetBefore => (5, 4),
                _ => (1, 0),
            };
            let dhw = if cell == CellKind::Gru { rows * gw } else { 0 };
            let fewer = 4 * (with * rows * h - (without * b * h).max(1) + dhw) as u64;
            assert_eq!(
                plan(true) - plan(false),
                fewer,
                "{cell:?} {precision:?}: bytes a forward-only plan does not hold"
            );
        }
    }
}
