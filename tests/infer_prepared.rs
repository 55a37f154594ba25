//! Recurrent weights prepared once for many CPU inference passes
//! (`cpu::recurrent::InferWeights`), and the CPU executor's copies of them: the same bits as
//! preparing them at every pass, and never stale after the weights change.

mod common;

use common::{random_vec, rng};
use rand::Rng;
use recur::cpu::recurrent::{infer, infer_prepared, InferWeights, Weights};
use recur::exec::{CpuExecutor, HostData};
use recur::nn::{HostTensor, Recurrent, RecurrentConfig, StackOptions};
use recur::ops::recurrent::{CellKind, RecurrentShape};
use recur::prelude::{Backend, Fit, Model};

/// Passes that differ in steps, direction, layout, lengths, input and states, all with one
/// `InferWeights`: each gives exactly what `infer` gives. Hidden sizes up to 96 at batch 16
/// split each step between the threads (from 64^3 multiply-adds), so the prepared parts are
/// reused by parts running on other threads too.
#[test]
fn prepared_weights_give_the_bits_of_infer_pass_after_pass() {
    let mut rng = rng("prepared_weights_give_the_bits_of_infer_pass_after_pass");
    for cell in CellKind::ALL {
        for _ in 0..2 {
            let (i, h) = (rng.random_range(1..20), rng.random_range(1..97));
            let batch = [1, 3, 16][rng.random_range(0..3)];
            let g = cell.gates();
            let (w_ih, w_hh) = (
                random_vec(&mut rng, g * h * i),
                random_vec(&mut rng, g * h * h),
            );
            let (b_ih, b_hh) = (random_vec(&mut rng, g * h), random_vec(&mut rng, g * h));
            let bias = rng.random_bool(0.7);
            let w = Weights {
                w_ih: &w_ih,
                w_hh: &w_hh,
                b_ih: bias.then_some(&b_ih[..]),
                b_hh: bias.then_some(&b_hh[..]),
            };
            let base = RecurrentShape::new(cell, i, h, batch, 1);
            let mut prepared = InferWeights::new(&base, &w).unwrap();
            for pass in 0..3 {
                let mut shape = base;
                shape.steps = rng.random_range(1..12);
                shape.reverse = rng.random_bool(0.5);
                shape.batch_first = rng.random_bool(0.5);
                let lengths: Option<Vec<usize>> = rng.random_bool(0.5).then(|| {
                    (0..batch)
                        .map(|_| rng.random_range(1..=shape.steps))
                        .collect()
                });
                let x = random_vec(&mut rng, shape.rows() * i);
                let (h0, c0) = (
                    random_vec(&mut rng, batch * h),
                    random_vec(&mut rng, batch * h),
                );
                let c0 = cell.has_cell_state().then_some(&c0[..]);
                let mut want = vec![f32::NAN; shape.rows() * h];
                let mut got = vec![f32::NAN; shape.rows() * h];
                let a =
                    infer(&shape, &x, lengths.as_deref(), Some(&h0), c0, &w, &mut want).unwrap();
                let b = infer_prepared(
                    &shape,
                    &x,
                    lengths.as_deref(),
                    Some(&h0),
                    c0,
                    &mut prepared,
                    &mut got,
                )
                .unwrap();
                let case = format!("{cell:?} I {i} H {h} B {batch}, pass {pass}: {shape:?}");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(want.iter().all(|v| v.is_finite()), "{case}");
                assert_eq!(bits(&got), bits(&want), "output, {case}");
                assert_eq!(bits(&b.h_n), bits(&a.h_n), "h_n, {case}");
                assert_eq!(bits(&b.c_n), bits(&a.c_n), "c_n, {case}");
            }
            assert!(prepared.bytes() >= (4 * g * h * (h + i)) as u64);
        }
    }
}

#[test]
fn prepared_weights_refuse_a_pass_of_other_sizes_and_bad_weights() {
    let (i, h, b) = (3, 5, 2);
    let w_ih = vec![0.1f32; 4 * h * i];
    let w_hh = vec![0.1f32; 4 * h * h];
    let w = Weights {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: None,
        b_hh: None,
    };
    let shape = RecurrentShape::new(CellKind::Lstm, i, h, b, 4);
    let mut prepared = InferWeights::new(&shape, &w).unwrap();
    let other = RecurrentShape::new(CellKind::Lstm, i, h, b + 1, 4);
    let x = vec![0.0f32; other.rows() * i];
    let mut y = vec![0.0f32; other.rows() * h];
    let err = infer_prepared(&other, &x, None, None, None, &mut prepared, &mut y).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("B = 2") && text.contains("B = 3"),
        "the error names both batches: {text}"
    );
    let gru = RecurrentShape::new(CellKind::Gru, i, h, b, 4);
    assert!(!prepared.fits(&gru));
    // Weights of the wrong size are refused when preparing, naming the sizes.
    let short = Weights {
        w_hh: &w_hh[1..],
        ..w
    };
    let err = InferWeights::new(&shape, &short).err().expect("refused");
    assert!(
        err.to_string()
            .contains("weight_hh has 99 elements, expected 100"),
        "{err}"
    );
}

/// The CPU executor keeps its prepared copies between runs: a stack planned once and run
/// again after its parameters were set anew gives what a fresh executor gives with the new
/// parameters, and differs from the first run.
#[test]
fn a_planned_stack_run_after_new_parameters_uses_them() {
    let mut rng = rng("a_planned_stack_run_after_new_parameters_uses_them");
    let mut config = RecurrentConfig::new(CellKind::Lstm, 6, 80);
    config.num_layers = 2;
    let layer = Recurrent::new(config, 7).unwrap();
    let (batch, steps) = (16, 5);
    let opts = StackOptions::default();
    let x = random_vec(&mut rng, batch * steps * 6);
    let first = layer.params_as::<f32>();
    let second: std::collections::BTreeMap<String, Vec<f32>> = first
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|w| w * 0.5 - 0.01).collect()))
        .collect();

    let mut exec = CpuExecutor::<f32>::new();
    let run = layer
        .plan_with(&mut exec, &first, batch, steps, opts)
        .unwrap();
    let a = run.forward(&mut exec, &x, None, None, None, 0).unwrap();
    let again = run.forward(&mut exec, &x, None, None, None, 0).unwrap();
    assert_eq!(a.output, again.output, "a second run with the same weights");
    for (name, t) in layer.params() {
        exec.set_param_values(name, &t.shape, &second[name])
            .unwrap();
    }
    let b = run.forward(&mut exec, &x, None, None, None, 0).unwrap();

    let mut fresh = CpuExecutor::<f32>::new();
    let run2 = layer
        .plan_with(&mut fresh, &second, batch, steps, opts)
        .unwrap();
    let want = run2.forward(&mut fresh, &x, None, None, None, 0).unwrap();
    assert_eq!(b.output, want.output);
    assert_eq!(b.h_n, want.h_n);
    assert_ne!(a.output, b.output);
}

/// Predictions after training use the trained weights: `fit` updates the parameters through
/// the optimizer inside the executor, and the next `predict` equals that of a model loaded
/// from the saved weights.
#[test]
fn predictions_after_fit_use_the_trained_weights() {
    let mut rng = rng("predictions_after_fit_use_the_trained_weights");
    let (n, steps) = (24, 6);
    let x = HostTensor::new(vec![n, steps, 3], random_vec(&mut rng, n * steps * 3)).unwrap();
    let y = HostTensor::new(vec![n, 1], random_vec(&mut rng, n)).unwrap();
    let mut model = Model::lstm(3, 72)
        .dense(1)
        .mse()
        .seed(3)
        .build(&Backend::Cpu)
        .unwrap();
    let before = model.predict(&x).unwrap();
    model.fit(&x, &y, Fit::epochs(1).batch(8)).unwrap();
    let after = model.predict(&x).unwrap();
    assert_ne!(before.data, after.data, "training changed the weights");

    let path = std::env::temp_dir().join(format!(
        "recur-infer-prepared-{}.safetensors",
        std::process::id()
    ));
    model.save(&path).unwrap();
    let mut loaded = Model::load(&path, &Backend::Cpu).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(loaded.predict(&x).unwrap().data, after.data);
}
