//! The GPU recurrent kernels against the CPU twin: every cell, both directions, variable
//! lengths, both layouts, strided outputs, with and without biases; outputs and gradients
//! poisoned with NaN before each run.

mod common;

use common::{random_vec, rng, to_f64};
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::cpu::recurrent::{backward, forward, Weights};
use recur::gpu::recurrent::{GpuGrads, GpuWeights, RecurrentPath, RecurrentPlan, StepKernel};
use recur::gpu::{DispatchCost, Recorder};
use recur::ops::program::STATE_REGIONS;
use recur::ops::recurrent::{CellKind, RecurrentShape};
use recur::GpuTensor;

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

    // The reference, in f64 from the same f32 values.
    let (x64, wih64, whh64, bih64, bhh64) = (
        to_f64(&x),
        to_f64(&w_ih),
        to_f64(&w_hh),
        to_f64(&b_ih),
        to_f64(&b_hh),
    );
    let w64 = Weights {
        w_ih: &wih64,
        w_hh: &whh64,
        b_ih: with_bias.then_some(&bih64[..]),
        b_hh: with_bias.then_some(&bhh64[..]),
    };
    let mut y64 = vec![0.0; rows * shape.out_stride];
    let (fin, saved) = forward(
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
    let g64 = backward(
        &shape,
        &x64,
        &w64,
        &saved,
        Some(&to_f64(&dy)),
        Some(&to_f64(&dh_n)),
        Some(&to_f64(&dc_n)),
    )
    .unwrap();

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
        Default::default(),
        shape,
        &gx,
        &gy,
        weights,
        Some((grads, Some(&gdy))),
        &state,
        gmask.as_ref(),
    )
    .unwrap();
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
        "{shape:?} lengths {lengths:?} bias {with_bias} recurrent mask {}",
        rmask.is_some()
    );
    let y = gy.to_vec().unwrap();
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
    let compare = |what: &str, got: &[f32], want: &[f64]| {
        let e = rel_error(got, want);
        assert!(e < TOL, "{ctx}: {what} rel error {e}");
    };
    compare("output", &got, &want);
    compare("h_n", &plan.h_n().unwrap(), &fin.h_n);
    if cell.has_cell_state() {
        compare("c_n", &plan.c_n().unwrap(), &fin.c_n);
        compare("dc0", &plan.dc0().unwrap(), &g64.dc0);
    }
    compare("dh0", &plan.dh0().unwrap(), &g64.dh0);
    compare("dx", &gdx.to_vec().unwrap(), &g64.dx);
    compare("dw_ih", &gdwih.to_vec().unwrap(), &g64.dw_ih);
    compare("dw_hh", &gdwhh.to_vec().unwrap(), &g64.dw_hh);
    compare("db_ih", &gdbih.to_vec().unwrap(), &g64.db_ih);
    compare("db_hh", &gdbhh.to_vec().unwrap(), &g64.db_hh);
    (forward_costs, backward)
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
        let (_, backward) = check_on(&gpu, &mut rng, shape);
        assert!(
            backward
                .iter()
                .any(|d| d.kernel.entry == "reduce_splits" && d.kernel.role.starts_with("dW")),
            "{shape:?}: no product was split"
        );
        assert!(backward.iter().any(|d| d.kernel.entry == "column_sum"));
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
                    // Every path shape's gate gradients fit: the backward sequence kernel,
                    // the dispatch for dh0, then the products (dx, dW_ih, dW_hh, two for GRU
                    // reset-before), each split in two at most, and the bias column sums
                    // (two for GRU).
                    assert_eq!(count(&backward, "backward_sequence"), 1, "{shape:?}");
                    assert_eq!(count(&backward, backward_step), 0, "{shape:?}");
                    assert_eq!(count(&backward, finish), 1, "{shape:?}");
                    assert!(
                        backward.len() <= 2 + 2 * 4 + 2,
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
    // backward the sequence kernel at H = 1024 and the step kernels at 1025. (H = 1024, T = 3
    // is also where llvmpipe got dh0 wrong when the sequence kernel computed it itself; see
    // backward_sequence in recurrent.wgsl.)
    let mut rng = rng("the_backward_sequence_kernel_applies_while_a_steps_gate_gradients_fit");
    for (h, entry) in [(1024, "backward_sequence"), (1025, "backward_step")] {
        let shape = RecurrentShape::new(CellKind::Lstm, 3, h, 2, 3).reverse(true);
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
    let Some(gpu) = common::gpu_with(None, Some(kernel)) else {
        return;
    };
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
    // G x H x H x 4 bytes <= 96 KiB.
    check_rule_boundary(
        StepKernel::Tiled,
        [
            (CellKind::Lstm, 78),
            (CellKind::Gru, 90),
            (CellKind::GruResetBefore, 90),
            (CellKind::RnnTanh, 156),
        ],
    );
}
