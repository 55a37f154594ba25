//! The encoder-decoder (two recurrent stacks, the encoder's final states handed to the
//! decoder): its CPU gradient by finite differences in f64 (the encoder's included, which
//! reaches it only through the handoff), GPU training against CPU training, a reversal task
//! learnt on the GPU with greedy decoding, and bad input.

mod common;

use common::rng;
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::ops::optim::Optimizer;
use recur::train::{
    CpuSeq2SeqTrainer, GpuSeq2SeqTrainer, OptimConfig, Schedule, Seq2Seq, Seq2SeqBatch,
    Seq2SeqSpec, Seq2SeqTrainConfig,
};

fn spec(
    cell: &str,
    source_vocab: usize,
    target_vocab: usize,
    hidden: usize,
    layers: usize,
) -> Seq2SeqSpec {
    Seq2SeqSpec {
        source_vocab,
        target_vocab,
        embed: 4,
        cell: cell.into(),
        hidden_size: hidden,
        num_layers: layers,
        ignore_index: None,
    }
}

/// Random sources and targets (the start token is the last target id).
fn random_batch(
    rng: &mut StdRng,
    s: &Seq2SeqSpec,
    batch: usize,
    ts: usize,
    tt: usize,
) -> Seq2SeqBatch {
    let sources: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..ts)
                .map(|_| rng.random_range(0..s.source_vocab as u32))
                .collect()
        })
        .collect();
    let targets: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..tt)
                .map(|_| rng.random_range(0..s.target_vocab as u32))
                .collect()
        })
        .collect();
    Seq2SeqBatch::teacher_forced(&sources, &targets, s.target_vocab as u32 - 1).unwrap()
}

fn config(b: &Seq2SeqBatch, optimizer: Optimizer) -> Seq2SeqTrainConfig {
    Seq2SeqTrainConfig {
        batch: b.batch,
        source_steps: b.source_steps,
        target_steps: b.target_steps,
        optim: OptimConfig {
            optimizer,
            clip: Some(5.0),
            schedule: Schedule::Constant,
        },
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let mut rng = rng("seq2seq_gradient_matches_finite_differences");
    for cell in ["lstm", "gru"] {
        let s = spec(cell, 5, 4, 3, 2);
        let model = Seq2Seq::new(s.clone(), rng.random()).unwrap();
        // Source and target lengths differ.
        let b = random_batch(&mut rng, &s, 2, 3, 2);
        model.check_batch(&b).unwrap();
        let p = model.params_as::<f64>();
        let grads = model.pass_cpu(&p, &b, true).unwrap().grads.unwrap();
        assert_eq!(grads.len(), p.len(), "a gradient for every parameter");
        for (name, g) in &grads {
            // These cells are smooth: every coordinate has a derivative estimate.
            let numeric: Vec<f64> = (0..g.len())
                .map(|i| {
                    let mut q = p.clone();
                    let orig = q[name][i];
                    common::derivative(
                        |step| {
                            q.get_mut(name).unwrap()[i] = orig + step;
                            model.pass_cpu(&q, &b, false).unwrap().loss
                        },
                        common::DERIVATIVE_STEP,
                    )
                    .unwrap_or(f64::NAN)
                })
                .collect();
            let e = rel_error(g, &numeric);
            assert!(e < 1e-6, "{cell} {name}: gradient rel error {e}");
            if name.starts_with("encoder.rnn.weight_hh") {
                assert!(
                    g.iter().any(|&v| v != 0.0),
                    "{name}: no gradient reached the encoder"
                );
            }
        }
    }
}

#[test]
fn gpu_and_cpu_training_agree() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("seq2seq_gpu_and_cpu_training_agree");
    for cell in ["lstm", "gru", "rnn-tanh"] {
        let s = spec(
            cell,
            rng.random_range(2..9),
            rng.random_range(2..9),
            rng.random_range(2..10),
            rng.random_range(1..3),
        );
        let model = Seq2Seq::new(s.clone(), rng.random()).unwrap();
        let (batch, ts, tt) = (
            rng.random_range(1..5),
            rng.random_range(1..6),
            rng.random_range(1..6),
        );
        let batches: Vec<Seq2SeqBatch> = (0..4)
            .map(|_| random_batch(&mut rng, &s, batch, ts, tt))
            .collect();
        let cfg = config(&batches[0], Optimizer::adam(0.01));
        let mut g = GpuSeq2SeqTrainer::new(&gpu, model.clone(), cfg).unwrap();
        let mut c = CpuSeq2SeqTrainer::new(model, cfg).unwrap();
        let lg: Vec<f32> = batches.iter().map(|b| g.step(b).unwrap()).collect();
        let lc: Vec<f32> = batches.iter().map(|b| c.step(b).unwrap()).collect();
        let e = rel_error(&lg, &lc);
        assert!(e < 1e-5, "{cell}: losses differ: {lg:?} vs {lc:?}");
        let (pg, pc) = (
            g.model().unwrap().named_params(),
            c.model().unwrap().named_params(),
        );
        for (name, t) in &pg {
            let e = rel_error(&t.data, &pc[name].data);
            assert!(
                e < 1e-4,
                "{cell} {name}: GPU and CPU parameters differ by {e}"
            );
        }
    }
}

#[test]
fn learns_to_reverse_digits_with_an_end_marker() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("seq2seq_learns_to_reverse_digits");
    // Five digits in, the six tokens out: the digits reversed, then an end marker.
    let (digits, n, batch) = (6u32, 5, 32);
    let (end, start) = (digits, digits + 1);
    let s = Seq2SeqSpec {
        embed: 8,
        ..spec("lstm", digits as usize, digits as usize + 2, 48, 1)
    };
    let make = |rng: &mut StdRng| {
        let sources: Vec<Vec<u32>> = (0..batch)
            .map(|_| (0..n).map(|_| rng.random_range(0..digits)).collect())
            .collect();
        let targets: Vec<Vec<u32>> = sources
            .iter()
            .map(|s| s.iter().rev().copied().chain([end]).collect())
            .collect();
        Seq2SeqBatch::teacher_forced(&sources, &targets, start).unwrap()
    };
    let model = Seq2Seq::new(s, rng.random()).unwrap();
    let first = make(&mut rng);
    let mut t = GpuSeq2SeqTrainer::new(&gpu, model, config(&first, Optimizer::adam(0.02))).unwrap();
    let before = t.evaluate(&first).unwrap();
    for _ in 0..400 {
        t.step(&make(&mut rng)).unwrap();
    }
    let test = make(&mut rng);
    let after = t.evaluate(&test).unwrap();
    assert!(after < 0.1 * before, "loss {before} -> {after}");
    // Greedy decoding from the source alone (the decoder reads its own predictions).
    let model = t.model().unwrap();
    let mut right = 0;
    for b in 0..batch {
        let source: Vec<u32> = (0..n).map(|i| test.source[i * batch + b]).collect();
        let want: Vec<u32> = source.iter().rev().copied().chain([end]).collect();
        let got = model.translate_cpu(&source, start, n + 1).unwrap();
        right += (got == want) as usize;
    }
    let exact = right as f32 / batch as f32;
    eprintln!("reversal: loss {before} -> {after}, greedy exact match {exact}");
    assert!(
        exact >= 0.8,
        "greedy decoding got {right} of {batch} sequences right"
    );
}

#[test]
fn bad_input_is_an_error() {
    let mut rng = rng("seq2seq_bad_input_is_an_error");
    let s = spec("gru", 4, 5, 3, 1);
    let model = Seq2Seq::new(s.clone(), 1).unwrap();
    let good = random_batch(&mut rng, &s, 2, 3, 2);
    let mut c = CpuSeq2SeqTrainer::new(model.clone(), config(&good, Optimizer::sgd(0.1))).unwrap();
    c.step(&good).unwrap();
    // A source id outside the source vocabulary.
    let mut bad = good.clone();
    bad.source[1] = 4;
    let err = format!("{:#}", c.step(&bad).unwrap_err());
    assert!(err.contains('4'), "{err}");
    // A target outside the target vocabulary.
    let mut bad = good.clone();
    bad.targets[0] = 9;
    assert!(c.step(&bad).is_err());
    // Another shape than planned.
    let other = random_batch(&mut rng, &s, 2, 4, 2);
    let err = format!("{:#}", c.step(&other).unwrap_err());
    assert!(err.contains("planned"), "{err}");
    // Ragged sequences.
    let err = Seq2SeqBatch::teacher_forced(&[vec![1, 2], vec![1]], &[vec![0], vec![0]], 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sequence 1"), "{err}");
    // An unknown cell.
    assert!(Seq2Seq::new(spec("tree", 4, 5, 3, 1), 0).is_err());
}
