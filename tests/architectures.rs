//! Every sequence architecture of the issue, trained on the GPU to a stated accuracy:
//! many-to-many aligned (a tagger), bidirectional many-to-many, many-to-one, one-to-many,
//! and an encoder-decoder whose output is longer than its input (here read, then write, in
//! one stack, the reading steps' targets ignored; `tests/seq2seq.rs` trains the two-stack
//! encoder-decoder, the encoder's state handed to the decoder).

mod common;

use rand::rngs::StdRng;
use rand::Rng;
use recur::ops::optim::Optimizer;
use recur::train::{
    Batch, EmbeddingSpec, Head, Inputs, Loss, ModelSpec, OptimConfig, Schedule, SequenceModel,
    Targets, TrainConfig, Trainer,
};
use recur::Backend;

const IGNORE: u32 = 1000;

fn spec(
    vocab: Option<usize>,
    input: usize,
    outputs: usize,
    head: Head,
    bidirectional: bool,
) -> ModelSpec {
    ModelSpec {
        embedding: vocab.map(|v| EmbeddingSpec {
            input_dim: v,
            output_dim: 8,
            padding: None,
            trainable: true,
            init: Default::default(),
        }),
        input_size: input,
        cell: recur::ops::recurrent::CellKind::Lstm,
        hidden_size: 32,
        num_layers: 1,
        bidirectional,
        outputs,
        head,
        loss: Loss::CrossEntropy {
            ignore_index: Some(IGNORE),
        },
        dropout: Default::default(),
    }
}

/// Trains `steps` steps on fresh batches from `make`, then returns the accuracy of the
/// argmax over the non-ignored rows of a fresh batch.
fn train_and_score(
    name: &str,
    spec: ModelSpec,
    train_steps: usize,
    make: impl Fn(&mut StdRng) -> Batch,
) -> Option<f32> {
    let gpu = common::gpu()?;
    let mut rng = common::rng(name);
    let model = SequenceModel::new(spec, rng.random()).unwrap();
    let cfg = TrainConfig {
        optim: OptimConfig {
            optimizer: Optimizer::adam(0.02),
            clip: Some(5.0),
            schedule: Schedule::Constant,
        },
        stateful: false,
    };
    let mut t = Trainer::new(&Backend::Gpu(gpu.clone()), model, cfg).unwrap();
    for _ in 0..train_steps {
        t.step(&make(&mut rng)).unwrap();
    }
    let test = make(&mut rng);
    let y = t.predict(&test).unwrap();
    let Targets::Classes(targets) = &test.targets else {
        unreachable!()
    };
    let width = y.len() / targets.len();
    let (mut right, mut counted) = (0, 0);
    for (row, &want) in targets.iter().enumerate() {
        if want == IGNORE {
            continue;
        }
        let r = &y[row * width..][..width];
        let best = (0..width).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
        right += (best as u32 == want) as usize;
        counted += 1;
    }
    let acc = right as f32 / counted as f32;
    eprintln!("{name}: accuracy {acc}");
    Some(acc)
}

/// Time-major ids [steps, batch] with per-sequence targets from `tag`.
fn id_batch(
    rng: &mut StdRng,
    batch: usize,
    steps: usize,
    vocab: u32,
    tag: impl Fn(&[u32], usize) -> u32,
    rows: usize,
) -> Batch {
    let seqs: Vec<Vec<u32>> = (0..batch)
        .map(|_| (0..steps).map(|_| rng.random_range(0..vocab)).collect())
        .collect();
    let mut ids = vec![0; steps * batch];
    for (b, s) in seqs.iter().enumerate() {
        for (t, &x) in s.iter().enumerate() {
            ids[t * batch + b] = x;
        }
    }
    // `rows` = steps for a tagger (row t * batch + b), 1 for a sequence label (row b).
    let mut targets = vec![0; rows * batch];
    for (b, s) in seqs.iter().enumerate() {
        for t in 0..rows {
            targets[t * batch + b] = tag(s, t);
        }
    }
    Batch {
        batch,
        steps,
        inputs: Inputs::Ids(ids),
        targets: Targets::Classes(targets),
        lengths: None,
    }
}

#[test]
fn many_to_many_tagger() {
    // Tag = (token + previous token) mod 3: needs the state, aligned with the input.
    let tag = |s: &[u32], t: usize| (s[t] + if t > 0 { s[t - 1] } else { 0 }) % 3;
    let acc = train_and_score(
        "many_to_many_tagger",
        spec(Some(6), 0, 3, Head::EveryStep, false),
        200,
        |rng| id_batch(rng, 16, 8, 6, tag, 8),
    );
    if let Some(acc) = acc {
        assert!(acc >= 0.95, "tagger accuracy {acc}");
    }
}

#[test]
fn bidirectional_many_to_many() {
    // Tag = the next token mod 3: only a backward direction sees it.
    let tag = |s: &[u32], t: usize| s.get(t + 1).map_or(0, |&x| x % 3);
    let acc = train_and_score(
        "bidirectional_many_to_many",
        spec(Some(6), 0, 3, Head::EveryStep, true),
        200,
        |rng| id_batch(rng, 16, 8, 6, tag, 8),
    );
    if let Some(acc) = acc {
        assert!(acc >= 0.95, "bidirectional tagger accuracy {acc}");
    }
}

#[test]
fn many_to_one_classifier() {
    // The class is the largest token of the sequence, read from the final state only. The
    // class is drawn first (uniform), then tokens up to it with the class at least once, so
    // always answering one class scores about 25%.
    let (batch, steps) = (32, 8);
    let make = |rng: &mut StdRng| {
        let mut ids = vec![0u32; steps * batch];
        let mut targets = vec![0u32; batch];
        for (b, target) in targets.iter_mut().enumerate() {
            let c = rng.random_range(0..4u32);
            let at = rng.random_range(0..steps);
            for t in 0..steps {
                ids[t * batch + b] = if t == at { c } else { rng.random_range(0..=c) };
            }
            *target = c;
        }
        Batch {
            batch,
            steps,
            inputs: Inputs::Ids(ids),
            targets: Targets::Classes(targets),
            lengths: None,
        }
    };
    let acc = train_and_score(
        "many_to_one_classifier",
        spec(Some(4), 0, 4, Head::LastStep, false),
        200,
        make,
    );
    if let Some(acc) = acc {
        assert!(acc >= 0.9, "classifier accuracy {acc}");
    }
}

#[test]
fn one_to_many_generator() {
    // One input vector (a one-hot class c at step 0, zeros after) generates the sequence
    // c, c + 1, c + 2, ... mod 4.
    let (batch, steps, classes) = (16, 6, 4u32);
    let make = |rng: &mut StdRng| {
        let c: Vec<u32> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
        let mut x = vec![0.0f32; steps * batch * classes as usize];
        let mut targets = vec![0; steps * batch];
        for (b, &cb) in c.iter().enumerate() {
            x[b * classes as usize + cb as usize] = 1.0;
            for t in 0..steps {
                targets[t * batch + b] = (cb + t as u32) % classes;
            }
        }
        Batch {
            batch,
            steps,
            inputs: Inputs::Values(x),
            targets: Targets::Classes(targets),
            lengths: None,
        }
    };
    let acc = train_and_score(
        "one_to_many_generator",
        spec(
            None,
            classes as usize,
            classes as usize,
            Head::EveryStep,
            false,
        ),
        200,
        make,
    );
    if let Some(acc) = acc {
        assert!(acc >= 0.95, "generator accuracy {acc}");
    }
}

#[test]
fn encoder_decoder_reverses_with_an_end_marker() {
    // Input: 4 digits (0..4), then 5 blanks (id 4). Output: nothing while reading, then the
    // digits reversed and an end marker (class 4): 5 outputs for 4 inputs.
    let (batch, n, out) = (32, 4, 5);
    let steps = n + out;
    let make = |rng: &mut StdRng| {
        let mut ids = vec![4u32; steps * batch];
        let mut targets = vec![IGNORE; steps * batch];
        for b in 0..batch {
            let digits: Vec<u32> = (0..n).map(|_| rng.random_range(0..4)).collect();
            for (t, &d) in digits.iter().enumerate() {
                ids[t * batch + b] = d;
            }
            for k in 0..out {
                let want = if k < n { digits[n - 1 - k] } else { 4 };
                targets[(n + k) * batch + b] = want;
            }
        }
        Batch {
            batch,
            steps,
            inputs: Inputs::Ids(ids),
            targets: Targets::Classes(targets),
            lengths: None,
        }
    };
    let acc = train_and_score(
        "encoder_decoder_reverses_with_an_end_marker",
        spec(Some(5), 0, 5, Head::EveryStep, false),
        400,
        make,
    );
    if let Some(acc) = acc {
        assert!(acc >= 0.9, "encoder-decoder token accuracy {acc}");
    }
}
