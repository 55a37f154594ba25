//! Training: the whole model's CPU gradient by finite differences (f64), GPU training
//! against CPU training from the same seed, loss falling, checkpoints, resume, bad input.

mod common;

use common::{comparable, random_vec, rng};
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::ops::optim::Optimizer;
use recur::train::Schedule;
use recur::train::{
    Batch, Checkpoint, EmbeddingSpec, Head, Inputs, Loss, ModelSpec, OptimConfig, SequenceModel,
    Targets, TrainConfig, Trainer,
};
use recur::Backend;

fn lm_spec(vocab: usize, cell: &str, hidden: usize, layers: usize) -> ModelSpec {
    ModelSpec {
        embedding: Some(EmbeddingSpec {
            input_dim: vocab,
            output_dim: 5,
            padding: None,
            trainable: true,
            init: Default::default(),
        }),
        input_size: 0,
        cell: cell.parse().unwrap(),
        hidden_size: hidden,
        num_layers: layers,
        bidirectional: false,
        outputs: vocab,
        head: Head::EveryStep,
        loss: Loss::CrossEntropy { ignore_index: None },
        dropout: Default::default(),
    }
}

fn regression_spec(input: usize, hidden: usize, bidirectional: bool) -> ModelSpec {
    ModelSpec {
        embedding: None,
        input_size: input,
        cell: recur::ops::recurrent::CellKind::Gru,
        hidden_size: hidden,
        num_layers: 1,
        bidirectional,
        outputs: 2,
        head: Head::LastStep,
        loss: Loss::MeanSquaredError,
        dropout: Default::default(),
    }
}

fn lm_batch(rng: &mut StdRng, vocab: usize, batch: usize, steps: usize) -> Batch {
    let n = batch * steps;
    Batch {
        batch,
        steps,
        inputs: Inputs::Ids((0..n).map(|_| rng.random_range(0..vocab as u32)).collect()),
        targets: Targets::Classes((0..n).map(|_| rng.random_range(0..vocab as u32)).collect()),
        lengths: None,
    }
}

fn regression_batch(rng: &mut StdRng, input: usize, batch: usize, steps: usize) -> Batch {
    Batch {
        batch,
        steps,
        inputs: Inputs::Values(random_vec(rng, batch * steps * input)),
        targets: Targets::Values(random_vec(rng, batch * 2)),
        lengths: None,
    }
}

/// Random lengths in 1..=steps, at least one of them `steps`.
fn random_lengths(rng: &mut StdRng, batch: usize, steps: usize) -> Vec<usize> {
    let mut l: Vec<usize> = (0..batch).map(|_| rng.random_range(1..=steps)).collect();
    l[rng.random_range(0..batch)] = steps;
    l
}

fn config(optimizer: Optimizer, stateful: bool) -> TrainConfig {
    TrainConfig {
        optim: OptimConfig {
            optimizer,
            clip: Some(1.0),
            schedule: Schedule::Constant,
        },
        stateful,
    }
}

#[test]
fn model_gradient_matches_finite_differences() {
    let mut rng = rng("model_gradient_matches_finite_differences");
    for (spec, batch) in [
        (lm_spec(4, "lstm", 3, 2), lm_batch(&mut rng, 4, 2, 3)),
        (
            regression_spec(2, 3, true),
            regression_batch(&mut rng, 2, 2, 3),
        ),
        // A last-step head over sequences of lengths 2 and 4, one and two directions.
        (
            regression_spec(2, 3, false),
            Batch {
                lengths: Some(vec![2, 4]),
                ..regression_batch(&mut rng, 2, 2, 4)
            },
        ),
        (
            regression_spec(2, 3, true),
            Batch {
                lengths: Some(vec![4, 1]),
                ..regression_batch(&mut rng, 2, 2, 4)
            },
        ),
    ] {
        let model = SequenceModel::new(spec, rng.random()).unwrap();
        model.check_batch(&batch).unwrap();
        let p = model.params_as::<f64>();
        let h0: Vec<f64> = (0..model.state_len(batch.batch))
            .map(|_| rng.random_range(-0.5..0.5))
            .collect();
        let c0 = model.rnn.config.cell.has_cell_state().then(|| h0.clone());
        let pass = model
            .pass_cpu(&p, &batch, Some(&h0), c0.as_deref(), true)
            .unwrap();
        let grads = pass.grads.unwrap();
        // Small inputs (embeddings within ±0.05) make some gradients tiny, so the differences
        // are Richardson-extrapolated from large steps (rounding ~ ulp(loss) / step).
        for (name, g) in &grads {
            // These cells are smooth: every coordinate has a derivative estimate.
            let numeric: Vec<f64> = (0..g.len())
                .map(|i| {
                    let mut q = p.clone();
                    let orig = q[name][i];
                    common::derivative(
                        |step| {
                            q.get_mut(name).unwrap()[i] = orig + step;
                            let pass = model.pass_cpu(&q, &batch, Some(&h0), c0.as_deref(), false);
                            pass.unwrap().loss
                        },
                        common::DERIVATIVE_STEP,
                    )
                    .unwrap_or(f64::NAN)
                })
                .collect();
            let e = rel_error(g, &numeric);
            assert!(e < 1e-6, "{name}: gradient rel error {e}");
        }
    }
}

/// Trains both backends `n` steps on the same batches; returns the losses and final
/// parameters of each.
fn run_both(
    gpu: &recur::Gpu,
    model: &SequenceModel,
    cfg: TrainConfig,
    batches: &[Batch],
) -> (Vec<f32>, Vec<f32>, SequenceModel, SequenceModel) {
    let mut g = Trainer::new(&Backend::Gpu(gpu.clone()), model.clone(), cfg).unwrap();
    let mut c = Trainer::new(&Backend::Cpu, model.clone(), cfg).unwrap();
    let lg = batches.iter().map(|b| g.step(b).unwrap()).collect();
    let lc = batches.iter().map(|b| c.step(b).unwrap()).collect();
    (lg, lc, g.model().unwrap(), c.model().unwrap())
}

fn assert_same_params(a: &SequenceModel, b: &SequenceModel, tol: f64) {
    let (pa, pb) = (a.named_params(), b.named_params());
    for (name, t) in &pa {
        let e = rel_error(&t.data, &pb[name].data);
        assert!(
            e < tol,
            "{name}: GPU and CPU parameters differ, rel error {e}"
        );
    }
}

#[test]
fn gpu_and_cpu_training_agree() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_and_cpu_training_agree");
    // A stateful LSTM language model with Adam, and a bidirectional GRU regressor with
    // RMSprop reading the last step.
    let vocab = rng.random_range(3..12);
    let (batch, steps) = (rng.random_range(1..5), rng.random_range(2..6));
    let lm = SequenceModel::new(
        lm_spec(vocab, "lstm", rng.random_range(2..10), 2),
        rng.random(),
    )
    .unwrap();
    let batches: Vec<Batch> = (0..4)
        .map(|_| lm_batch(&mut rng, vocab, batch, steps))
        .collect();
    let cfg = config(comparable(Optimizer::adam(0.01)), true);
    let (lg, lc, mg, mc) = run_both(&gpu, &lm, cfg, &batches);
    let e = rel_error(&lg, &lc);
    assert!(e < 1e-5, "language model losses differ: {lg:?} vs {lc:?}");
    assert_same_params(&mg, &mc, 1e-4);

    let input = rng.random_range(1..5);
    let reg = SequenceModel::new(
        regression_spec(input, rng.random_range(2..8), true),
        rng.random(),
    )
    .unwrap();
    let batches: Vec<Batch> = (0..4)
        .map(|_| regression_batch(&mut rng, input, batch, steps))
        .collect();
    let cfg = config(comparable(Optimizer::rmsprop(0.005)), false);
    let (lg, lc, mg, mc) = run_both(&gpu, &reg, cfg, &batches);
    let e = rel_error(&lg, &lc);
    assert!(e < 1e-5, "regressor losses differ: {lg:?} vs {lc:?}");
    assert_same_params(&mg, &mc, 1e-4);
}

#[test]
fn last_step_head_reads_each_sequence_at_its_length() {
    // A sequence of length L in a batch of T > L steps gives the output it gives alone
    // in a batch of L steps: the head reads step L - 1, not T - 1.
    let mut rng = rng("last_step_head_reads_each_sequence_at_its_length");
    for bidirectional in [false, true] {
        let input = rng.random_range(1..4);
        let (batch, steps) = (rng.random_range(2..5), rng.random_range(3..7));
        let model = SequenceModel::new(
            regression_spec(input, rng.random_range(2..6), bidirectional),
            rng.random(),
        )
        .unwrap();
        let lengths = random_lengths(&mut rng, batch, steps);
        let full = Batch {
            lengths: Some(lengths.clone()),
            ..regression_batch(&mut rng, input, batch, steps)
        };
        model.check_batch(&full).unwrap();
        let p = model.params_as::<f64>();
        let out = model.pass_cpu(&p, &full, None, None, false).unwrap().output;
        let Inputs::Values(x) = &full.inputs else {
            unreachable!()
        };
        for (s, &len) in lengths.iter().enumerate() {
            let alone: Vec<f32> = (0..len)
                .flat_map(|t| x[(t * batch + s) * input..][..input].to_vec())
                .collect();
            let one = Batch {
                batch: 1,
                steps: len,
                inputs: Inputs::Values(alone),
                targets: Targets::Values(vec![0.0; 2]),
                lengths: None,
            };
            let want = model.pass_cpu(&p, &one, None, None, false).unwrap().output;
            let e = rel_error(&out[s * 2..][..2], &want);
            assert!(
                e < 1e-12,
                "sequence {s} (length {len} of {steps}, bidirectional {bidirectional}): \
                 {e}"
            );
        }
    }
}

#[test]
fn gpu_and_cpu_training_agree_on_a_last_step_head_with_lengths() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_and_cpu_training_agree_on_a_last_step_head_with_lengths");
    for bidirectional in [false, true] {
        let input = rng.random_range(1..5);
        let (batch, steps) = (rng.random_range(2..6), rng.random_range(2..7));
        let model = SequenceModel::new(
            regression_spec(input, rng.random_range(2..8), bidirectional),
            rng.random(),
        )
        .unwrap();
        let batches: Vec<Batch> = (0..4)
            .map(|_| Batch {
                lengths: Some(random_lengths(&mut rng, batch, steps)),
                ..regression_batch(&mut rng, input, batch, steps)
            })
            .collect();
        let cfg = config(comparable(Optimizer::adam(0.01)), false);
        let (lg, lc, mg, mc) = run_both(&gpu, &model, cfg, &batches);
        let e = rel_error(&lg, &lc);
        assert!(e < 1e-5, "losses differ: {lg:?} vs {lc:?}");
        assert_same_params(&mg, &mc, 1e-4);
        // Predictions too (the forward alone).
        let mut g = Trainer::new(&Backend::Gpu(gpu.clone()), mg.clone(), cfg).unwrap();
        let mut c = Trainer::new(&Backend::Cpu, mg, cfg).unwrap();
        let (pg, pc) = (
            g.predict(&batches[0]).unwrap(),
            c.predict(&batches[0]).unwrap(),
        );
        let e = rel_error(&pg, &pc);
        assert!(e < 1e-5, "predictions differ by {e}");
    }
}

#[test]
fn one_gpu_step_is_one_submit_and_one_readback() {
    if common::gpu().is_none() {
        return;
    }
    // A device of its own: the shared one counts the work of tests running beside this one.
    let gpu = recur::Gpu::new().unwrap();
    let mut rng = rng("one_gpu_step_is_one_submit_and_one_readback");
    let model = SequenceModel::new(lm_spec(5, "lstm", 4, 1), 1).unwrap();
    let mut t = Trainer::new(
        &Backend::Gpu(gpu.clone()),
        model,
        config(Optimizer::adam(0.01), true),
    )
    .unwrap();
    let b = lm_batch(&mut rng, 5, 2, 3);
    t.step(&b).unwrap();
    let before = gpu.counters();
    t.step(&b).unwrap();
    let after = gpu.counters();
    assert_eq!(
        after.submits - before.submits,
        1,
        "a step is one submit (the loss copy included)"
    );
    assert_eq!(after.readbacks - before.readbacks, 1);
}

#[test]
fn gpu_training_lowers_the_loss_of_a_copy_task() {
    let Some(gpu) = common::gpu() else { return };
    // Predict the previous token: learnable only through the recurrent state.
    let mut rng = rng("gpu_training_lowers_the_loss_of_a_copy_task");
    let (vocab, batch, steps) = (4, 8, 6);
    let model = SequenceModel::new(lm_spec(vocab, "lstm", 16, 1), rng.random()).unwrap();
    let mut t = Trainer::new(
        &Backend::Gpu(gpu.clone()),
        model,
        config(Optimizer::adam(0.03), false),
    )
    .unwrap();
    let make = |rng: &mut StdRng| {
        let ids: Vec<u32> = (0..batch * steps)
            .map(|_| rng.random_range(0..vocab as u32))
            .collect();
        let targets = (0..batch * steps)
            .map(|i| if i < batch { 0 } else { ids[i - batch] })
            .collect();
        Batch {
            batch,
            steps,
            inputs: Inputs::Ids(ids),
            targets: Targets::Classes(targets),
            lengths: None,
        }
    };
    let test = make(&mut rng);
    let first = t.evaluate(&test).unwrap();
    for _ in 0..150 {
        let b = make(&mut rng);
        t.step(&b).unwrap();
    }
    let last = t.evaluate(&test).unwrap();
    assert!(
        last < 0.3 * first,
        "loss did not fall enough: {first} -> {last}"
    );
}

#[test]
fn checkpoint_round_trip_and_resume_equals_uninterrupted() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("checkpoint_round_trip_and_resume_equals_uninterrupted");
    let dir = std::env::temp_dir().join(format!("recur-train-{}", rng.random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.safetensors");
    let model = SequenceModel::new(lm_spec(6, "gru", 5, 1), rng.random()).unwrap();
    let cfg = config(Optimizer::adamw(0.01), true);
    let batches: Vec<Batch> = (0..6).map(|_| lm_batch(&mut rng, 6, 3, 4)).collect();

    let mut a = Trainer::new(&Backend::Gpu(gpu.clone()), model.clone(), cfg).unwrap();
    for b in &batches[..3] {
        a.step(b).unwrap();
    }
    // Evaluation runs from zero states and leaves the carried state alone.
    let carried = a.carried_state().unwrap();
    assert!(carried.h.iter().any(|&v| v != 0.0), "no state was carried");
    a.evaluate(&batches[5]).unwrap();
    assert_eq!(a.carried_state().unwrap(), carried);
    let mut ckpt = a.checkpoint().unwrap();
    ckpt.meta.insert("vocab".into(), "abcdef".into());
    ckpt.save(&path).unwrap();
    let rest: Vec<f32> = batches[3..].iter().map(|b| a.step(b).unwrap()).collect();

    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded, ckpt, "checkpoint round trip");
    assert_eq!(loaded.step, 3);
    assert_eq!(
        loaded.state["state.h"].data, carried.h,
        "carried state saved"
    );
    let mut resumed: Trainer = Trainer::resume(&Backend::Gpu(gpu.clone()), &loaded, cfg).unwrap();
    assert_eq!(resumed.carried_state().unwrap(), carried);
    let again: Vec<f32> = batches[3..]
        .iter()
        .map(|b| resumed.step(b).unwrap())
        .collect();
    assert_eq!(rest, again, "resumed losses differ from uninterrupted ones");
    assert_eq!(
        a.model().unwrap().named_params(),
        resumed.model().unwrap().named_params()
    );

    // The CPU trainer resumes the same way.
    let mut c = Trainer::new(&Backend::Cpu, model, cfg).unwrap();
    for b in &batches[..3] {
        c.step(b).unwrap();
    }
    let carried = c.carried_state().unwrap();
    c.evaluate(&batches[5]).unwrap();
    assert_eq!(c.carried_state().unwrap(), carried);
    let cc = c.checkpoint().unwrap();
    cc.save(&path).unwrap();
    let rest: Vec<f32> = batches[3..].iter().map(|b| c.step(b).unwrap()).collect();
    let mut cr: Trainer =
        Trainer::resume(&Backend::Cpu, &Checkpoint::load(&path).unwrap(), cfg).unwrap();
    let again: Vec<f32> = batches[3..].iter().map(|b| cr.step(b).unwrap()).collect();
    assert_eq!(rest, again);

    // A state of the wrong size is an error naming the sizes.
    let mut bad = carried.clone();
    bad.h.pop();
    let err = format!("{:#}", cr.set_carried_state(&bad).unwrap_err());
    assert!(err.contains("expected 15"), "{err}");

    // A corrupt file is an error, not a panic.
    std::fs::write(&path, b"not a checkpoint").unwrap();
    assert!(Checkpoint::load(&path).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn divergence_stops_with_the_step_and_keeps_the_checkpoint() {
    let mut rng = rng("divergence_stops_with_the_step_and_keeps_the_checkpoint");
    let model = SequenceModel::new(regression_spec(2, 4, false), 3).unwrap();
    let mut cfg = config(Optimizer::sgd(1e30), false);
    cfg.optim.clip = None;
    let mut t = Trainer::new(&Backend::Cpu, model, cfg).unwrap();
    let dir = std::env::temp_dir().join(format!("recur-nan-{}", rng.random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("good.safetensors");
    t.checkpoint().unwrap().save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut err = None;
    for _ in 0..10 {
        let b = regression_batch(&mut rng, 2, 2, 3);
        if let Err(e) = t.step(&b) {
            err = Some(e);
            break;
        }
    }
    let err = format!("{:#}", err.expect("a learning rate of 1e30 must diverge"));
    assert!(err.contains("at step"), "{err}");
    // Saving the spoiled parameters is refused; the good file stays.
    assert!(t.checkpoint().and_then(|c| c.save(&path)).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), good);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_training_input_is_an_error() {
    let model = SequenceModel::new(lm_spec(5, "lstm", 3, 1), 1).unwrap();
    for lr in [0.0, f32::NAN, -1.0] {
        let err = Trainer::new(
            &Backend::Cpu,
            model.clone(),
            config(Optimizer::adam(lr), false),
        )
        .err()
        .expect("a bad learning rate is an error");
        assert!(format!("{err:#}").contains("lr"), "{err:#}");
    }
    let mut t = Trainer::new(&Backend::Cpu, model, config(Optimizer::adam(0.1), false)).unwrap();
    let mut rng = rng("bad_training_input_is_an_error");
    let mut b = lm_batch(&mut rng, 5, 2, 3);
    b.targets = Targets::Classes(vec![0, 1, 2, 3, 4, 5]);
    let err = t.step(&b).unwrap_err();
    assert!(format!("{err:#}").contains("target 5"), "{err:#}");
    // Another batch shape is planned anew; stateful training, which carries the state of
    // one shape, refuses it naming both.
    let other = lm_batch(&mut rng, 5, 3, 3);
    assert!(t.step(&other).unwrap().is_finite());
    let model = SequenceModel::new(lm_spec(5, "lstm", 3, 1), 1).unwrap();
    let mut s = Trainer::new(&Backend::Cpu, model, config(Optimizer::adam(0.1), true)).unwrap();
    s.step(&lm_batch(&mut rng, 5, 2, 3)).unwrap();
    let err = s.step(&other).unwrap_err();
    assert!(
        format!("{err:#}").contains("[2, 3]") && format!("{err:#}").contains("[3, 3]"),
        "{err:#}"
    );
}

#[test]
fn mask_zero_masks_the_recurrent_layer() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("mask_zero_masks_the_recurrent_layer");
    let (vocab, batch, steps) = (6, 3, 5);
    let mut spec = lm_spec(vocab, "lstm", 4, 1);
    spec.embedding.as_mut().unwrap().padding = Some(0);
    spec.loss = Loss::CrossEntropy {
        ignore_index: Some(99),
    };
    let model = SequenceModel::new(spec, rng.random()).unwrap();
    // Sequences of lengths 5, 2 and 3, padded with id 0 (targets ignored there).
    let lengths = [5usize, 2, 3];
    let mut ids = vec![0u32; steps * batch];
    let mut targets = vec![99u32; steps * batch];
    for (b, &len) in lengths.iter().enumerate() {
        for t in 0..len {
            ids[t * batch + b] = rng.random_range(1..vocab as u32);
            targets[t * batch + b] = rng.random_range(0..vocab as u32);
        }
    }
    let masked = Batch {
        batch,
        steps,
        inputs: Inputs::Ids(ids),
        targets: Targets::Classes(targets),
        lengths: None,
    };
    assert_eq!(model.lengths(&masked).unwrap(), Some(lengths.to_vec()));
    let explicit = Batch {
        lengths: Some(lengths.to_vec()),
        ..masked.clone()
    };
    let cfg = config(comparable(Optimizer::adam(0.01)), false);
    let mut g = Trainer::new(&Backend::Gpu(gpu.clone()), model.clone(), cfg).unwrap();
    let mut c = Trainer::new(&Backend::Cpu, model.clone(), cfg).unwrap();
    for _ in 0..3 {
        let (lg, lc) = (g.step(&masked).unwrap(), c.step(&explicit).unwrap());
        assert!((lg - lc).abs() < 1e-5 * lc.abs(), "{lg} vs {lc}");
    }
    assert_same_params(&g.model().unwrap(), &c.model().unwrap(), 1e-4);
    // Padding in the middle of a sequence is an error.
    let mut bad = masked.clone();
    if let Inputs::Ids(ids) = &mut bad.inputs {
        ids[batch + 1] = 0; // sequence 1, step 1: already padding
        ids[2 * batch + 1] = 3; // then a token after it
    }
    let err = g.step(&bad).unwrap_err();
    assert!(format!("{err:#}").contains("after padding"), "{err:#}");
}

#[test]
fn gpu_and_cpu_training_agree_with_dropout() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_and_cpu_training_agree_with_dropout");
    let vocab = rng.random_range(3..12);
    let (batch, steps) = (rng.random_range(2..5), rng.random_range(2..6));
    let plain = SequenceModel::new(
        lm_spec(vocab, "gru", rng.random_range(3..10), 2),
        rng.random(),
    )
    .unwrap();
    let mut dropped = plain.clone();
    dropped
        .set_dropout(recur::train::DropoutRates {
            input: 0.2,
            between_layers: 0.3,
            recurrent: 0.25,
            seed: rng.random(),
        })
        .unwrap();
    let batches: Vec<Batch> = (0..4)
        .map(|_| lm_batch(&mut rng, vocab, batch, steps))
        .collect();
    let cfg = config(comparable(Optimizer::adam(0.01)), true);
    // The same masks on both sides: the same losses and parameters.
    let (lg, lc, mg, mc) = run_both(&gpu, &dropped, cfg, &batches);
    let e = rel_error(&lg, &lc);
    assert!(e < 1e-5, "losses with dropout differ: {lg:?} vs {lc:?}");
    assert_same_params(&mg, &mc, 1e-4);
    // The masks do apply in training, and not in evaluation.
    let (lp, _, _, _) = run_both(&gpu, &plain, cfg, &batches[..1]);
    assert_ne!(lp[0], lg[0], "dropout changed nothing");
    let mut g = Trainer::new(&Backend::Gpu(gpu.clone()), dropped.clone(), cfg).unwrap();
    let mut p = Trainer::new(&Backend::Gpu(gpu.clone()), plain.clone(), cfg).unwrap();
    let (eg, ep) = (
        g.evaluate(&batches[0]).unwrap(),
        p.evaluate(&batches[0]).unwrap(),
    );
    assert!(
        (eg - ep).abs() <= 1e-6 * ep.abs(),
        "evaluation used dropout: {eg} vs {ep}"
    );
    // Rates outside [0, 1) are refused.
    let mut bad = plain.clone();
    let err = bad
        .set_dropout(recur::train::DropoutRates {
            recurrent: 1.0,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("recurrent_dropout"), "{err}");
}
