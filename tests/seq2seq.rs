//! The encoder-decoder (two recurrent stacks, the encoder's final states handed to the
//! decoder): its CPU gradient by finite differences in f64 (the encoder's included, which
//! reaches it only through the handoff), GPU training against CPU training, both also with
//! padded sources and targets of different lengths, a reversal task learnt on the GPU with
//! greedy decoding, and bad input.

mod common;

use common::rng;
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::ops::optim::Optimizer;
use recur::train::{
    DropoutRates, OptimConfig, Schedule, Seq2Seq, Seq2SeqBatch, Seq2SeqSpec, TrainConfig, Trainer,
};
use recur::Backend;

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
        cell: cell.parse().unwrap(),
        hidden_size: hidden,
        num_layers: layers,
        ignore_index: None,
        dropout: DropoutRates::default(),
    }
}

/// `spec` with all three dropouts in training.
fn with_dropout(s: Seq2SeqSpec, seed: u64) -> Seq2SeqSpec {
    Seq2SeqSpec {
        dropout: DropoutRates {
            input: 0.2,
            between_layers: 0.3,
            recurrent: 0.25,
            seed,
        },
        ..s
    }
}

/// Random sequences of ids below `vocab`, of the given lengths.
fn random_seqs(rng: &mut StdRng, lengths: &[usize], vocab: u32) -> Vec<Vec<u32>> {
    lengths
        .iter()
        .map(|&n| (0..n).map(|_| rng.random_range(0..vocab)).collect())
        .collect()
}

/// Random sources and targets (the start token is the last target id).
fn random_batch(
    rng: &mut StdRng,
    s: &Seq2SeqSpec,
    batch: usize,
    ts: usize,
    tt: usize,
) -> Seq2SeqBatch {
    let sources = random_seqs(rng, &vec![ts; batch], s.source_vocab as u32);
    let targets = random_seqs(rng, &vec![tt; batch], s.target_vocab as u32);
    Seq2SeqBatch::teacher_forced(&sources, &targets, s.target_vocab as u32 - 1).unwrap()
}

/// The target id that pads (and counts for nothing) in [`ragged_batch`]es.
fn pad_id(s: &Seq2SeqSpec) -> u32 {
    s.target_vocab as u32 - 2
}

/// `spec` with padded targets ignored by the loss (needs a target vocabulary of 3 or more:
/// the ids below the pad, the pad, the start token).
fn ragged_spec(s: Seq2SeqSpec) -> Seq2SeqSpec {
    Seq2SeqSpec {
        ignore_index: Some(pad_id(&s)),
        ..s
    }
}

/// Sources and targets of random lengths (one of each as long as `ts` / `tt`, so the batch
/// has that shape), padded.
fn ragged_batch(
    rng: &mut StdRng,
    s: &Seq2SeqSpec,
    batch: usize,
    ts: usize,
    tt: usize,
) -> Seq2SeqBatch {
    let full = rng.random_range(0..batch);
    let lengths = |rng: &mut StdRng, most: usize| -> Vec<usize> {
        (0..batch)
            .map(|b| {
                if b == full {
                    most
                } else {
                    rng.random_range(1..=most)
                }
            })
            .collect()
    };
    let (ls, lt) = (lengths(rng, ts), lengths(rng, tt));
    let sources = random_seqs(rng, &ls, s.source_vocab as u32);
    let targets = random_seqs(rng, &lt, pad_id(s));
    let start = s.target_vocab as u32 - 1;
    Seq2SeqBatch::padded(&sources, &targets, start, 0, pad_id(s)).unwrap()
}

fn config(optimizer: Optimizer) -> TrainConfig {
    TrainConfig::new(OptimConfig {
        optimizer,
        clip: Some(5.0),
        schedule: Schedule::Constant,
    })
}

#[test]
fn gradient_matches_finite_differences() {
    let mut rng = rng("seq2seq_gradient_matches_finite_differences");
    // (cell, ragged batch, a training step's dropout masks)
    let cases = [
        ("lstm", false, None),
        ("gru", false, None),
        ("lstm", true, None),
        ("gru", true, None),
        ("lstm", true, Some(3)),
        ("gru", false, Some(5)),
    ];
    for (cell, ragged, train_step) in cases {
        let s = spec(cell, 5, 4, 3, 2);
        let s = if ragged { ragged_spec(s) } else { s };
        let s = match train_step {
            Some(_) => with_dropout(s, rng.random()),
            None => s,
        };
        let model = Seq2Seq::new(s.clone(), rng.random()).unwrap();
        // Source and target lengths differ; ragged: also from sequence to sequence.
        let b = if ragged {
            ragged_batch(&mut rng, &s, 3, 4, 3)
        } else {
            random_batch(&mut rng, &s, 2, 3, 2)
        };
        model.check_batch(&b).unwrap();
        let p = model.params_as::<f64>();
        let grads = model
            .pass_cpu_with(&p, &b, true, train_step)
            .unwrap()
            .grads
            .unwrap();
        if train_step.is_some() {
            let with = model.pass_cpu_with(&p, &b, false, train_step).unwrap().loss;
            let without = model.pass_cpu(&p, &b, false).unwrap().loss;
            assert_ne!(with, without, "{cell}: the dropout masks changed nothing");
        }
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
                            model.pass_cpu_with(&q, &b, false, train_step).unwrap().loss
                        },
                        common::DERIVATIVE_STEP,
                    )
                    .unwrap_or(f64::NAN)
                })
                .collect();
            let e = rel_error(g, &numeric);
            assert!(e < 1e-6, "{cell} {name}: gradient rel error {e}");
            // Without dropout the loss always reaches the encoder's recurrence (the longest
            // source has 3 or 4 steps). With it, the masks may rightly cut every path: seed
            // 1796007084677840518 (LSTM, ragged, dropout) gave an all-zero gradient for
            // weight_hh_l0, and its finite differences, checked above, were zero too.
            if train_step.is_none() && name.starts_with("encoder.rnn.weight_hh") {
                assert!(
                    g.iter().any(|&v| v != 0.0),
                    "{cell}, ragged {ragged}, dropout step {train_step:?}: {name}: no gradient reached the encoder"
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
        for (ragged, dropout) in [(false, false), (true, false), (true, true)] {
            gpu_and_cpu_agree_on(&gpu, &mut rng, cell, ragged, dropout);
        }
    }
}

fn gpu_and_cpu_agree_on(
    gpu: &recur::Gpu,
    rng: &mut StdRng,
    cell: &str,
    ragged: bool,
    dropout: bool,
) {
    {
        let s = spec(
            cell,
            rng.random_range(2..9),
            rng.random_range(3..9),
            rng.random_range(2..10),
            rng.random_range(1..3),
        );
        let s = if ragged { ragged_spec(s) } else { s };
        let s = if dropout {
            with_dropout(s, rng.random())
        } else {
            s
        };
        let model = Seq2Seq::new(s.clone(), rng.random()).unwrap();
        let (batch, ts, tt) = (
            rng.random_range(1..5),
            rng.random_range(1..6),
            rng.random_range(1..6),
        );
        let batches: Vec<Seq2SeqBatch> = (0..4)
            .map(|_| {
                if ragged {
                    ragged_batch(rng, &s, batch, ts, tt)
                } else {
                    random_batch(rng, &s, batch, ts, tt)
                }
            })
            .collect();
        let cfg = config(common::comparable(Optimizer::adam(0.01)));
        let mut g = Trainer::new(&Backend::Gpu(gpu.clone()), model.clone(), cfg).unwrap();
        let mut c = Trainer::new(&Backend::Cpu, model, cfg).unwrap();
        let lg: Vec<f32> = batches.iter().map(|b| g.step(b).unwrap()).collect();
        let lc: Vec<f32> = batches.iter().map(|b| c.step(b).unwrap()).collect();
        let e = rel_error(&lg, &lc);
        let case = format!("{cell} ragged {ragged} dropout {dropout}");
        assert!(e < 1e-5, "{case}: losses differ: {lg:?} vs {lc:?}");
        // Evaluation runs without dropout on both.
        let (eg, ec) = (
            g.evaluate(&batches[0]).unwrap(),
            c.evaluate(&batches[0]).unwrap(),
        );
        assert!(
            ((eg - ec) / ec).abs() < 1e-5,
            "{case}: evaluation {eg} vs {ec}"
        );
        let (pg, pc) = (
            g.model().unwrap().named_params(),
            c.model().unwrap().named_params(),
        );
        for (name, t) in &pg {
            let e = rel_error(&t.data, &pc[name].data);
            assert!(
                e < 1e-4,
                "{case} {name}: GPU and CPU parameters differ by {e}"
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
    let mut t = Trainer::new(&Backend::Gpu(gpu), model, config(Optimizer::adam(0.02))).unwrap();
    let before = t.evaluate(&first).unwrap();
    // 600 steps: most seeds are right on every sequence by 400 (24 of 24 tried, loss 0.002 to
    // 0.03), but seed 1796005789426191730 was still at loss 0.11 and 25 of 32 there; at 600
    // it reaches 0.0024 and 32 of 32.
    for _ in 0..600 {
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
fn a_padded_source_gives_what_it_gives_alone() {
    let mut rng = rng("seq2seq_a_padded_source_gives_what_it_gives_alone");
    for cell in ["lstm", "gru", "rnn-relu"] {
        let s = ragged_spec(spec(cell, 6, 7, 5, 2));
        let model = Seq2Seq::new(s.clone(), rng.random()).unwrap();
        let p = model.params_as::<f64>();
        let b = ragged_batch(&mut rng, &s, 4, 5, 4);
        let all = model.pass_cpu(&p, &b, false).unwrap().output;
        let lengths = b.source_lengths.clone().unwrap_or(vec![5; 4]);
        let width = s.target_vocab;
        for (k, &len) in lengths.iter().enumerate() {
            // Sequence k alone, source and target unpadded: the same outputs at its target's
            // steps (past them the batch's decoder reads padding).
            let source: Vec<u32> = (0..len).map(|i| b.source[i * 4 + k]).collect();
            let target: Vec<u32> = (0..b.target_steps)
                .map(|i| b.targets[i * 4 + k])
                .take_while(|&id| id != pad_id(&s))
                .collect();
            let start = s.target_vocab as u32 - 1;
            let one = Seq2SeqBatch::padded(
                &[source],
                std::slice::from_ref(&target),
                start,
                0,
                pad_id(&s),
            );
            let alone = model.pass_cpu(&p, &one.unwrap(), false).unwrap().output;
            let in_batch: Vec<f64> = (0..target.len())
                .flat_map(|t| all[(t * 4 + k) * width..][..width].to_vec())
                .collect();
            let e = rel_error(&in_batch, &alone);
            assert!(
                e < 1e-12,
                "{cell} sequence {k} (source length {len}): rel error {e}"
            );
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let mut rng = rng("seq2seq_bad_input_is_an_error");
    let s = spec("gru", 4, 5, 3, 1);
    let model = Seq2Seq::new(s.clone(), 1).unwrap();
    let good = random_batch(&mut rng, &s, 2, 3, 2);
    let mut c = Trainer::new(&Backend::Cpu, model.clone(), config(Optimizer::sgd(0.1))).unwrap();
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
    // Another shape: planned anew (a program per batch shape), not refused.
    let other = random_batch(&mut rng, &s, 2, 4, 2);
    assert!(c.step(&other).unwrap().is_finite());
    // Ragged sequences where equal lengths are asked for; an empty one where padding is.
    let err = Seq2SeqBatch::teacher_forced(&[vec![1, 2], vec![1]], &[vec![0], vec![0]], 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sequence 1"), "{err}");
    let err = Seq2SeqBatch::padded(&[vec![1, 2], vec![]], &[vec![0], vec![0]], 4, 0, 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sequence 1") && err.contains("at least one"),
        "{err}"
    );
    // Source lengths outside 1..=steps, or not one per sequence.
    for lengths in [vec![0, 3], vec![3, 4], vec![3]] {
        let mut bad = good.clone();
        bad.source_lengths = Some(lengths.clone());
        let err = format!("{:#}", c.step(&bad).unwrap_err());
        assert!(err.contains("source lengths"), "{lengths:?}: {err}");
    }
    // An unknown cell; a dropout rate outside [0, 1).
    assert!("tree".parse::<recur::ops::recurrent::CellKind>().is_err());
    let mut s = with_dropout(spec("lstm", 4, 5, 3, 1), 0);
    s.dropout.recurrent = 1.0;
    let err = format!("{:#}", Seq2Seq::new(s, 0).unwrap_err());
    assert!(
        err.contains("recurrent_dropout") && err.contains('1'),
        "{err}"
    );
}
