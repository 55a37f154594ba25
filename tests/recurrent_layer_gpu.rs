//! The whole stack on the GPU against the CPU twin: stacked, bidirectional, merge modes
//! (the merge kernel), go_backwards, lengths, batch_first; outputs and gradients poisoned.

mod common;

use common::{random_vec, rng, to_f64};
use rand::Rng;
use recur::check::rel_error;
use recur::cpu::precision::f16_storage_value;
use recur::exec::{Executor, GpuExecutor};
use recur::gpu::recurrent::{
    Precision, RecurrentKernels, RecurrentPath, StackSchedule, StepIndex, StepKernel,
};
use recur::nn::recurrent::TrainKey;
use recur::nn::{Merge, Recurrent, RecurrentConfig, StackOptions};
use recur::ops::program::ProgramBuilder;
use recur::ops::recurrent::f16_activations;
use recur::ops::recurrent::CellKind;

#[test]
fn gpu_stack_matches_cpu_stack() {
    let Some(gpu) = common::gpu() else { return };
    check_stacks(
        &gpu,
        "gpu_stack_matches_cpu_stack",
        RecurrentKernels::default(),
    );
}

#[test]
fn gpu_stack_with_separate_directions_matches_cpu_stack() {
    let Some(gpu) = common::gpu() else { return };
    let kernels = RecurrentKernels {
        separate_directions: true,
        ..Default::default()
    };
    check_stacks(
        &gpu,
        "gpu_stack_with_separate_directions_matches_cpu_stack",
        kernels,
    );
}

#[test]
fn gpu_stack_with_the_sequence_kernels_matches_cpu_stack() {
    let Some(gpu) = common::gpu_with(Some(RecurrentPath::Sequence), None) else {
        return;
    };
    check_stacks(
        &gpu,
        "gpu_stack_with_the_sequence_kernels_matches_cpu_stack",
        RecurrentKernels::default(),
    );
}

#[test]
fn gpu_stack_with_tiled_step_kernels_matches_cpu_stack() {
    let Some(gpu) = common::gpu_with(Some(RecurrentPath::Step), Some(StepKernel::Tiled)) else {
        return;
    };
    check_stacks(
        &gpu,
        "gpu_stack_with_tiled_step_kernels_matches_cpu_stack",
        RecurrentKernels::default(),
    );
}

/// Random stacks on `gpu` against the CPU twin in f64, planned with `kernels` (the two
/// directions of a bidirectional layer in one dispatch unless they ask otherwise).
#[test]
fn gpu_stack_as_a_wavefront_matches_cpu_stack() {
    let Some(gpu) = common::gpu() else { return };
    for step in [StepKernel::Entry, StepKernel::Tiled] {
        for step_index in [None, Some(StepIndex::Offset)] {
            let kernels = RecurrentKernels {
                step: Some(step),
                step_index,
                stack: Some(StackSchedule::Wavefront),
                ..Default::default()
            };
            let test =
                format!("gpu_stack_as_a_wavefront_matches_cpu_stack {step:?} {step_index:?}");
            check_stacks(&gpu, &test, kernels);
        }
    }
}

/// The wavefront with f16 storage (W_hh, b_hh and most saved activations; a stack's copies
/// of W_ih stay f32), against the CPU twin given the same rounded W_hh and b_hh and rounding
/// its saved activations, on both step kernels.
#[test]
fn gpu_stack_as_a_wavefront_with_f16_weights_matches_cpu_stack() {
    let Some(gpu) = common::gpu() else { return };
    for step in [StepKernel::Entry, StepKernel::Tiled] {
        let kernels = RecurrentKernels {
            step: Some(step),
            stack: Some(StackSchedule::Wavefront),
            precision: Some(Precision::F16Storage),
            ..Default::default()
        };
        let test = format!("gpu_stack_as_a_wavefront_with_f16_weights_matches_cpu_stack {step:?}");
        check_stacks(&gpu, &test, kernels);
    }
}

/// The gradients of a stack with f16 storage against the CPU twin given the same rounded
/// weights and activations rounded by the twin of the GPU's rounding: 4 x 2^-11, where the
/// f32 path is held to 1e-4. The GPU rounds its f32 activations, the twin its f64 ones, and
/// where the two lie on either side of an f16 rounding boundary (about one activation in
/// 10^4) the stored values differ by one f16 ulp, up to 2^-10 of the value. Such a pair moves
/// a gradient by up to that fraction of its share of the gradient's norm: 40 runs here gave
/// 2.3e-4 and 1.8e-4 at worst, and under 7e-5 in the rest. `tests/recurrent_gpu.rs` checks
/// the kernels to 1e-4 against a twin that starts its backward from the GPU's stored values.
const F16_ACTIVATION_TOL: f64 = 4.0 * 4.8828125e-4;

/// Random stacks on the GPU with `kernels` against the CPU twin in f64 (given W_hh and b_hh
/// rounded as the GPU stores them, and rounding its saved activations, where `kernels` ask for
/// f16 storage; gradients then to [`F16_ACTIVATION_TOL`]). Where `kernels` ask for the
/// wavefront, the stacks are the kind it takes: unidirectional, two or three layers (dropout
/// between them, input and recurrent dropout in training).
fn check_stacks(gpu: &recur::Gpu, test: &str, kernels: RecurrentKernels) {
    let mut rng = rng(test);
    let wavefront = kernels.stack == Some(StackSchedule::Wavefront);
    let f16 = kernels.precision == Some(Precision::F16Storage);
    for cell in CellKind::ALL {
        for _ in 0..3 {
            let mut cfg =
                RecurrentConfig::new(cell, rng.random_range(1..7), rng.random_range(1..9));
            cfg.num_layers = rng.random_range(1..4);
            cfg.bidirectional = rng.random_bool(0.6);
            if wavefront {
                cfg.num_layers = rng.random_range(2..4);
                cfg.bidirectional = false;
            }
            cfg.merge = [Merge::Concat, Merge::Sum, Merge::Mul, Merge::Ave][rng.random_range(0..4)];
            cfg.bias = rng.random_bool(0.8);
            cfg.batch_first = rng.random_bool(0.5);
            cfg.go_backwards = !cfg.bidirectional && rng.random_bool(0.4);
            let train = rng.random_bool(0.5).then(|| TrainKey {
                seed: rng.random(),
                step: rng.random_range(0..1000),
            });
            if train.is_some() {
                cfg.dropout = 0.3;
                cfg.input_dropout = 0.2;
                cfg.recurrent_dropout = 0.35;
            }
            let (batch, steps) = (rng.random_range(1..6), rng.random_range(1..6));
            let lengths: Option<Vec<usize>> = (!cfg.go_backwards && rng.random_bool(0.5))
                .then(|| (0..batch).map(|_| rng.random_range(1..=steps)).collect());
            let layer = Recurrent::new(cfg.clone(), rng.random()).unwrap();
            let states = cfg.num_layers * cfg.directions() * batch * cfg.hidden_size;
            let x = random_vec(&mut rng, batch * steps * cfg.input_size);
            let h0 = random_vec(&mut rng, states);
            let c0 = cell.has_cell_state().then(|| random_vec(&mut rng, states));
            let d_out = random_vec(&mut rng, batch * steps * cfg.output_size());
            let d_hn = random_vec(&mut rng, states);
            let d_cn = cell.has_cell_state().then(|| random_vec(&mut rng, states));

            let mut p = layer.params_as::<f64>();
            if f16 {
                for (name, v) in p.iter_mut() {
                    if name.starts_with("weight_hh") || name.starts_with("bias_hh") {
                        for x in v.iter_mut() {
                            *x = f16_storage_value(*x as f32) as f64;
                        }
                    }
                }
            }
            let (want, mut tape) = layer
                .forward_cpu_with(
                    &p,
                    &to_f64(&x),
                    batch,
                    steps,
                    lengths.as_deref(),
                    Some(&to_f64(&h0)),
                    c0.as_deref().map(to_f64).as_deref(),
                    train,
                )
                .unwrap();
            if f16 {
                tape.store_activations_in_f16();
            }
            let want_g = layer
                .backward_cpu(
                    &mut tape,
                    Some(&to_f64(&d_out)),
                    Some(&to_f64(&d_hn)),
                    d_cn.as_deref().map(to_f64).as_deref(),
                )
                .unwrap();

            // The stack planned with a backward (and dropout in training) or without one,
            // outputs poisoned, and its forward.
            let step = train.map_or(0, |k| k.step);
            let forward = |grads: bool| {
                let mut exec = GpuExecutor::new(gpu);
                exec.set_recurrent_kernels(kernels);
                let opts = StackOptions {
                    grads,
                    lengths: lengths.is_some(),
                    dropout_seed: train.filter(|_| grads).map(|k| k.seed),
                };
                let run = layer.plan(&mut exec, batch, steps, opts).unwrap();
                let mut outputs = vec![run.recorded().output];
                if grads {
                    outputs.push(run.input_grad().unwrap());
                    outputs.extend(run.param_grads().unwrap().values());
                }
                for t in outputs {
                    let g = exec.tensor(run.program, t).unwrap();
                    g.write(&vec![f32::NAN; g.len()]).unwrap();
                }
                let got = run
                    .forward(
                        &mut exec,
                        &x,
                        lengths.as_deref(),
                        Some(&h0),
                        c0.as_deref(),
                        step,
                    )
                    .unwrap();
                (exec, run, got)
            };
            let (mut exec, run, got) = forward(true);
            let got_g = run
                .backward(&mut exec, Some(&d_out), Some(&d_hn), d_cn.as_deref(), step)
                .unwrap();
            if train.is_none() {
                // The same forward planned without a backward, whose layers keep one row of
                // `saved` per batch entry rather than one per step: the same bits.
                let (_, _, inferred) = forward(false);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                for (what, a, b) in [
                    ("output", &inferred.output, &got.output),
                    ("h_n", &inferred.h_n, &got.h_n),
                    ("c_n", &inferred.c_n, &got.c_n),
                ] {
                    assert_eq!(
                        bits(a),
                        bits(b),
                        "{cfg:?} {lengths:?}: {what} without a backward"
                    );
                }
            }

            if wavefront {
                // The stack is taken, dropout between its layers included: a wavefront's
                // dispatches; in training, forward a mask and a row mask for the first layer's
                // input and for each layer's above, and each layer's recurrent mask, backward
                // the row mask over the first layer's dx (the waves mask the others'); with
                // go_backwards, the output stage's reversal, one dispatch each way.
                let l = cfg.num_layers as u64;
                let (forward, backward) = wavefront_dispatches(cell, cfg.num_layers, steps);
                let trained = train.is_some() as u64;
                let masks = trained * (2 + 2 * (l - 1) + l);
                let stage = cfg.go_backwards as u64;
                let got = (
                    exec.phase_costs(run.program, 0).unwrap().len() as u64,
                    exec.phase_costs(run.program, 1).unwrap().len() as u64,
                );
                assert_eq!(
                    got,
                    (forward + masks + stage, backward + trained + stage),
                    "{cfg:?}, {steps} steps, train {train:?}: dispatches of a wavefront"
                );
            }
            let ctx =
                format!("{cfg:?} batch {batch} steps {steps} lengths {lengths:?} train {train:?}");
            let cmp = |what: &str, a: &[f32], b: &[f64]| {
                let e = rel_error(a, b);
                assert!(e < 1e-4, "{ctx}: {what} rel error {e}");
            };
            cmp("output", &got.output, &want.output);
            cmp("h_n", &got.h_n, &want.h_n);
            cmp("c_n", &got.c_n, &want.c_n);
            // A gradient element is a sum whose terms may nearly cancel: at H = 1 a bias
            // gradient is one such sum (seed 1796014027681431125: 9.9e-4 from terms of order
            // 1, an f32 error of 2.5e-7, relative 2.5e-4), and so is the input gradient of one
            // step, one entry and one input feature (seed 1796026216728762998, on GL: 1.354e-4,
            // where the same stack's initial-state gradients are 0.03 to 0.9; the GPU's f32
            // error 2.5e-8, relative 1.8e-4, the CPU twin's in f32 1.3e-8, relative 9.3e-5).
            // So each gradient is judged against the larger of its own norm and its share of
            // the norm of its group (the input and initial-state gradients; the parameter
            // gradients): that norm times the root of its share of the group's elements.
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let grad_tol = if f16 && f16_activations(cell) > 0 {
                F16_ACTIVATION_TOL
            } else {
                1e-4
            };
            let judge = |group: &[(&str, &[f32], &[f64])]| {
                let all: Vec<f64> = group.iter().flat_map(|g| g.2).copied().collect();
                for &(name, got, want) in group {
                    assert_eq!(got.len(), want.len(), "{ctx}: {name} length");
                    let share = norm(&all) * (want.len() as f64 / all.len() as f64).sqrt();
                    let diff: Vec<f64> = got.iter().zip(want).map(|(&g, w)| g as f64 - w).collect();
                    // As `rel_error`: the absolute error where the reference is all zeros
                    // (dropout can cut every path to the parameters).
                    let scale = norm(want).max(share);
                    let e = if scale == 0.0 {
                        norm(&diff)
                    } else {
                        norm(&diff) / scale
                    };
                    assert!(
                        e < grad_tol,
                        "{ctx}: {name} error {e} (norm {:e}, share {share:e})",
                        norm(want)
                    );
                }
            };
            judge(&[
                ("d input", &got_g.input, &want_g.input),
                ("d h0", &got_g.h0, &want_g.h0),
                ("d c0", &got_g.c0, &want_g.c0),
            ]);
            let params: Vec<(&str, &[f32], &[f64])> = want_g
                .params
                .iter()
                .map(|(name, want)| (name.as_str(), &got_g.params[name][..], &want[..]))
                .collect();
            judge(&params);
        }
    }
}

#[test]
fn one_submit_per_forward_and_per_backward_with_the_planned_dispatch_counts() {
    if common::gpu().is_none() {
        return;
    }
    for path in [RecurrentPath::Step, RecurrentPath::Sequence] {
        for kernel in [StepKernel::Entry, StepKernel::Tiled] {
            // A device of its own: the counters are per device.
            let gpu = common::gpu_with(Some(path), Some(kernel)).unwrap();
            check_dispatch_counts(&gpu, path);
        }
    }
}

/// On the sequence path the stack rule weighs one sequence kernel per layer, run in turn,
/// against the wavefront's launches: the wavefront from `WAVEFRONT_MIN_SEQUENCE_WEIGHT_BYTES`
/// of the layers' W_hh per wave dispatch. Both sides of that boundary, by the rule and by the
/// dispatches the executor records.
#[test]
fn the_stack_rule_takes_the_wavefront_on_the_sequence_path_from_the_weight_threshold() {
    use recur::gpu::recurrent::WAVEFRONT_MIN_SEQUENCE_WEIGHT_BYTES;
    use recur::ops::recurrent::RecurrentShape;
    if common::gpu().is_none() {
        return;
    }
    assert_eq!(WAVEFRONT_MIN_SEQUENCE_WEIGHT_BYTES, 80 * 1024);
    let gpu = common::gpu_with(Some(RecurrentPath::Sequence), Some(StepKernel::Tiled)).unwrap();
    let entry = common::gpu_with(Some(RecurrentPath::Sequence), Some(StepKernel::Entry)).unwrap();
    let (batch, steps) = (3, 7);
    // W_hh bytes per layer: LSTM 32 units 16 KiB; GRU reset-before 64 units 48 KiB, over the
    // two dispatches each of its waves takes per step; RNN 16 units 1 KiB.
    for (cell, hidden, layers, want) in [
        (CellKind::Lstm, 32, 4, StackSchedule::Layers),
        (CellKind::Lstm, 32, 5, StackSchedule::Wavefront),
        (CellKind::GruResetBefore, 64, 3, StackSchedule::Layers),
        (CellKind::GruResetBefore, 64, 4, StackSchedule::Wavefront),
        (CellKind::RnnTanh, 16, 8, StackSchedule::Layers),
    ] {
        let ctx = format!("{cell:?}, {hidden} units, {layers} layers");
        let shape = RecurrentShape::new(cell, hidden, hidden, batch, steps);
        assert!(
            RecurrentPath::sequence_tile(&gpu, &shape).is_some(),
            "{ctx}: the shape takes the sequence path"
        );
        let kernels = RecurrentKernels::default();
        for grads in [false, true] {
            let got = StackSchedule::by_rule(&gpu, kernels, &shape, grads, layers);
            assert_eq!(got, want, "{ctx}, grads {grads}");
            // Entry kernels (CPU adapters') never take it.
            let got = StackSchedule::by_rule(&entry, kernels, &shape, grads, layers);
            assert_eq!(got, StackSchedule::Layers, "{ctx}, entry kernels");
            // W_hh stored in f16 streams half the bytes: under the threshold at these layer
            // counts, and at twice as many layers the same bytes and choice as in f32.
            let f16 = RecurrentKernels {
                precision: Some(Precision::F16Storage),
                ..kernels
            };
            let got = StackSchedule::by_rule(&gpu, f16, &shape, grads, layers);
            assert_eq!(got, StackSchedule::Layers, "{ctx}, f16");
            let got = StackSchedule::by_rule(&gpu, f16, &shape, grads, 2 * layers);
            assert_eq!(got, want, "{ctx}, f16, {} layers", 2 * layers);
        }
        if cell != CellKind::Lstm {
            continue;
        }
        // The executor asks the rule with the stack's layer count. Layer by layer on the
        // sequence path: 3 forward and 4 backward dispatches per layer.
        let mut cfg = RecurrentConfig::new(cell, hidden, hidden);
        cfg.num_layers = layers;
        let layer = Recurrent::new(cfg, 1).unwrap();
        let x = vec![0.1f32; batch * steps * hidden];
        let got = dispatches(&gpu, &layer, kernels, (batch, steps), &x, &ctx);
        let planned = match want {
            StackSchedule::Wavefront => wavefront_dispatches(cell, layers, steps),
            StackSchedule::Layers => (3 * layers as u64, 4 * layers as u64),
        };
        assert_eq!(got, planned, "{ctx}: forward and backward dispatches");
    }
}

fn check_dispatch_counts(gpu: &recur::Gpu, path: RecurrentPath) {
    for (cell, per_step) in [
        (CellKind::Lstm, 1),
        (CellKind::Gru, 1),
        (CellKind::RnnTanh, 1),
        (CellKind::GruResetBefore, 2),
    ] {
        let (batch, steps) = (3, 7);
        let layer = Recurrent::new(RecurrentConfig::new(cell, 5, 6), 1).unwrap();
        let mut exec = GpuExecutor::new(gpu);
        let run = layer
            .plan(&mut exec, batch, steps, StackOptions::with_grads())
            .unwrap();
        let x = vec![0.1f32; batch * steps * 5];
        exec.write(run.program, run.input(), 0, &x).unwrap();
        let compiled = gpu.compiled_kernels();
        let before = gpu.counters();
        exec.run(run.program, 0, 0).unwrap();
        let mid = gpu.counters();
        exec.run(run.program, 1, 0).unwrap();
        let after = gpu.counters();
        assert_eq!(mid.submits - before.submits, 1);
        assert_eq!(after.submits - mid.submits, 1);
        // Forward: transpose + input GEMM + per-step, or + the sequence kernel. Backward:
        // per-step + finish (dh0), or the sequence kernel with dh0 in it; then dx + the
        // weight and bias gradients as one product and its reduction (every cell). At these
        // sizes dx is not split along K.
        let (forward_recurrence, backward_recurrence) = match path {
            RecurrentPath::Step => (per_step * steps as u64, per_step * steps as u64 + 1),
            RecurrentPath::Sequence => (1, 1),
        };
        assert_eq!(
            mid.dispatches - before.dispatches,
            2 + forward_recurrence,
            "{cell:?} forward on the {path:?} path"
        );
        assert_eq!(
            after.dispatches - mid.dispatches,
            backward_recurrence + 3,
            "{cell:?} backward on the {path:?} path"
        );
        // Running again compiles nothing new.
        run.forward(&mut exec, &x, None, None, None, 0).unwrap();
        assert_eq!(gpu.compiled_kernels(), compiled);

        // Three layers as a wavefront (on the step path, which the stack takes on either),
        // with f32 or f16 weights. Layer by layer: three times a layer's.
        let mut cfg = RecurrentConfig::new(cell, 5, 6);
        cfg.num_layers = 3;
        let layer = Recurrent::new(cfg, 1).unwrap();
        for (asked, precision, schedule) in [
            (StackSchedule::Wavefront, None, StackSchedule::Wavefront),
            (StackSchedule::Layers, None, StackSchedule::Layers),
            (
                StackSchedule::Wavefront,
                Some(Precision::F16Storage),
                StackSchedule::Wavefront,
            ),
        ] {
            let kernels = RecurrentKernels {
                stack: Some(asked),
                precision,
                ..Default::default()
            };
            let ctx = format!("{cell:?}, 3 layers on the {path:?} path, {asked:?} {precision:?}");
            let got = dispatches(gpu, &layer, kernels, (batch, steps), &x, &ctx);
            let want = match schedule {
                StackSchedule::Wavefront => wavefront_dispatches(cell, 3, steps),
                StackSchedule::Layers => {
                    (3 * (2 + forward_recurrence), 3 * (backward_recurrence + 3))
                }
            };
            assert_eq!(got, want, "{ctx}: forward and backward dispatches");
        }

        // A bidirectional layer: each direction's transpose, projection and products, and
        // the recurrence once for both (each step one dispatch); with separate directions,
        // twice.
        let mut cfg = RecurrentConfig::new(cell, 5, 6);
        cfg.bidirectional = true;
        let layer = Recurrent::new(cfg, 1).unwrap();
        for separate in [false, true] {
            let kernels = RecurrentKernels {
                separate_directions: separate,
                ..Default::default()
            };
            let recurrences = if separate { 2 } else { 1 };
            let ctx = format!("{cell:?} bidirectional on the {path:?} path, separate {separate}");
            let got = dispatches(gpu, &layer, kernels, (batch, steps), &x, &ctx);
            let want = (
                2 * 2 + recurrences * forward_recurrence,
                recurrences * backward_recurrence + 2 * 3,
            );
            assert_eq!(got, want, "{ctx}: forward and backward dispatches");
        }
    }
}

/// The dispatches of one forward and one backward of `layer` planned with `kernels` on a new
/// executor, after checking that each is one submit.
/// Forward and backward dispatches of a wavefront over `layers` layers of `cell` and `steps`
/// steps, without dropout or an output stage. Forward: each layer's weight copies (W_ih's
/// too above the first: 2L - 1), one input projection, steps + L - 1 waves. Backward: as
/// many waves, one dh0 dispatch for all, each layer's weight-gradient product and reduction,
/// and the first layer's dx product. GRU reset-before takes two dispatches a wave.
fn wavefront_dispatches(cell: CellKind, layers: usize, steps: usize) -> (u64, u64) {
    let per_step = if cell == CellKind::GruResetBefore {
        2
    } else {
        1
    };
    let (l, waves) = (layers as u64, per_step * (steps + layers - 1) as u64);
    (2 * l + waves, waves + 2 * l + 2)
}

fn dispatches(
    gpu: &recur::Gpu,
    layer: &Recurrent,
    kernels: RecurrentKernels,
    (batch, steps): (usize, usize),
    x: &[f32],
    ctx: &str,
) -> (u64, u64) {
    let mut exec = GpuExecutor::new(gpu);
    exec.set_recurrent_kernels(kernels);
    let run = layer
        .plan(&mut exec, batch, steps, StackOptions::with_grads())
        .unwrap();
    exec.write(run.program, run.input(), 0, x).unwrap();
    let before = gpu.counters();
    exec.run(run.program, 0, 0).unwrap();
    let mid = gpu.counters();
    exec.run(run.program, 1, 0).unwrap();
    let after = gpu.counters();
    assert_eq!(mid.submits - before.submits, 1, "{ctx}: forward submits");
    assert_eq!(after.submits - mid.submits, 1, "{ctx}: backward submits");
    (
        mid.dispatches - before.dispatches,
        after.dispatches - mid.dispatches,
    )
}

#[test]
fn carrying_the_state_on_the_device_continues_the_sequence() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("carrying_the_state_on_the_device_continues_the_sequence");
    let (batch, half) = (3, 4);
    let mut cfg = RecurrentConfig::new(CellKind::Lstm, 4, 5);
    cfg.num_layers = 2;
    let layer = Recurrent::new(cfg.clone(), 2).unwrap();
    let x = random_vec(&mut rng, 2 * half * batch * 4);
    let mut exec = GpuExecutor::new(&gpu);
    let whole = layer
        .plan(&mut exec, batch, 2 * half, StackOptions::default())
        .unwrap();
    let want = whole.forward(&mut exec, &x, None, None, None, 0).unwrap();

    // Half the sequence at a time, the final states carried into the next run on the device.
    let mut b = ProgramBuilder::new();
    let input = b.input("input", &[half * batch, 4]);
    let rec = layer
        .record_forward(&mut b, "", input, batch, half, None, None)
        .unwrap();
    rec.record_carry(&mut b);
    let part = exec.load(b.finish()).unwrap();
    let mut got = Vec::new();
    for chunk in x.chunks(half * batch * 4) {
        exec.write(part, input, 0, chunk).unwrap();
        exec.run(part, 0, 0).unwrap();
        got.extend(recur::exec::read_all(&mut exec, part, rec.output).unwrap());
    }
    let e = rel_error(&got, &to_f64(&want.output));
    assert!(e < 1e-6, "continued output differs by {e}");
}

/// A stack built by hand: layers that do not stack, a backward whose output gradients are not
/// the input gradients of the layer above, and the wrong dropout masks between the layers are
/// refused with errors that say which layer and why; f16 storage is built.
#[test]
fn a_stack_refuses_layers_that_do_not_chain() {
    use recur::gpu::recurrent::StackLayer;
    use recur::gpu::recurrent::{DirectionSpec, GpuGrads, GpuWeights, Precision, RecurrentStack};
    use recur::ops::recurrent::RecurrentShape;
    use recur::GpuTensor;
    let Some(gpu) = common::gpu() else { return };
    let (i, h, b, t) = (3, 4, 2, 3);
    let z = |n: usize| GpuTensor::zeros(&gpu, &[n]).unwrap();
    let shape = |input| RecurrentShape::new(CellKind::Lstm, input, h, b, t);
    let x = z(b * t * i);
    // Per layer: W_ih, W_hh, state, y, dx, dW_ih, dW_hh, db_ih, db_hh (4 gates).
    let tensors: Vec<Vec<GpuTensor>> = [i, h, h]
        .iter()
        .map(|&input| {
            vec![
                z(4 * h * input),
                z(4 * h * h),
                z(9 * b * h),
                z(b * t * h),
                z(b * t * input),
                z(4 * h * input),
                z(4 * h * h),
                z(4 * h),
                z(4 * h),
            ]
        })
        .collect();
    let other_dy = z(b * t * h);
    let layer = |l: usize, input: usize, dy: Option<&'static str>| -> StackLayer {
        let v = &tensors[l];
        let dy = match dy {
            Some("above") => Some(&tensors[l + 1][4]),
            Some(_) => Some(&other_dy),
            None => None,
        };
        StackLayer {
            direction: DirectionSpec {
                shape: shape(input),
                weights: GpuWeights {
                    w_ih: &v[0],
                    w_hh: &v[1],
                    b_ih: None,
                    b_hh: None,
                },
                grads: Some((
                    GpuGrads {
                        dx: &v[4],
                        accumulate_dx: false,
                        dw_ih: &v[5],
                        dw_hh: &v[6],
                        db_ih: &v[7],
                        db_hh: &v[8],
                    },
                    dy,
                )),
                state: &v[2],
                recurrent_mask: None,
            },
            y: &v[3],
            input_mask: None,
        }
    };
    let kernels = RecurrentKernels::default();
    let err = |layers: &[StackLayer], kernels| {
        RecurrentStack::new(&gpu, kernels, &x, layers)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    // The layers chain: built.
    let good = [layer(0, i, Some("above")), layer(1, h, None)];
    assert!(RecurrentStack::new(&gpu, kernels, &x, &good).is_ok());
    // Layer 1 reads 3 inputs, not H = 4.
    let e = err(&[layer(0, i, Some("above")), layer(1, i, None)], kernels);
    assert!(e.contains("layer 1") && e.contains("H = 4"), "{e}");
    // Layer 0's output gradient is not layer 1's input gradient.
    let e = err(&[layer(0, i, Some("other")), layer(1, h, None)], kernels);
    assert!(e.contains("layer 0") && e.contains("input gradient"), "{e}");
    // f16 weights: built (W_ih's copies stay f32).
    let f16 = RecurrentKernels {
        precision: Some(Precision::F16Storage),
        ..kernels
    };
    assert!(RecurrentStack::new(&gpu, f16, &x, &good).is_ok());
    // Dropout between the layers: a mask of B x H and a masked input of rows x H, on every
    // layer above the first or none.
    use recur::gpu::recurrent::InputMask;
    let (mask, masked, short) = (z(b * h), z(b * t * h), z(b * h - 1));
    let masks = |mask| {
        Some(InputMask {
            mask,
            masked: &masked,
        })
    };
    let above = StackLayer {
        input_mask: masks(&mask),
        ..layer(1, h, None)
    };
    assert!(RecurrentStack::new(&gpu, kernels, &x, &[layer(0, i, Some("above")), above]).is_ok());
    let first = StackLayer {
        input_mask: masks(&mask),
        ..layer(0, i, Some("above"))
    };
    let e = err(&[first, layer(1, h, None)], kernels);
    assert!(e.contains("first layer"), "{e}");
    let wrong = StackLayer {
        input_mask: masks(&short),
        ..layer(1, h, None)
    };
    let e = err(&[layer(0, i, Some("above")), wrong], kernels);
    assert!(
        e.contains("layer 1") && e.contains(&format!("{}", b * h - 1)),
        "{e}"
    );
    let middle = StackLayer {
        input_mask: masks(&mask),
        ..layer(1, h, Some("above"))
    };
    let e = err(
        &[layer(0, i, Some("above")), middle, layer(2, h, None)],
        kernels,
    );
    assert!(e.contains("or none") && e.contains("layer 2"), "{e}");
    // More layers than a wave has workgroup rows (z): refused before anything is allocated.
    let rows = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let many = vec![layer(1, h, None); rows + 1];
    let e = err(&many, kernels);
    assert!(
        e.contains(&format!("{} layers", rows + 1)) && e.contains(&rows.to_string()),
        "{e}"
    );
    let shape = RecurrentShape::new(CellKind::Lstm, h, h, b, t);
    assert!(!RecurrentStack::fits(&gpu, kernels, &shape, true, rows + 1));
    assert!(RecurrentStack::fits(&gpu, kernels, &shape, true, 3));
}
