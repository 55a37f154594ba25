//! Keras-style sequence-major data cut into time-major batches, and `Trainer::fit` over them.

mod common;

use recur::ops::optim::Optimizer;
use recur::train::{
    EmbeddingSpec, Head, Inputs, Loss, ModelSpec, OptimConfig, Schedule, SequenceData,
    SequenceModel, Targets, TrainConfig, Trainer,
};
use recur::Backend;

fn spec(
    head: Head,
    embedding: Option<usize>,
    input: usize,
    outputs: usize,
    loss: Loss,
) -> ModelSpec {
    ModelSpec {
        embedding: embedding.map(|v| EmbeddingSpec {
            input_dim: v,
            output_dim: 3,
            padding: None,
            trainable: true,
            init: Default::default(),
        }),
        input_size: input,
        cell: recur::ops::recurrent::CellKind::Gru,
        hidden_size: 4,
        num_layers: 1,
        bidirectional: false,
        outputs,
        head,
        loss,
        dropout: Default::default(),
    }
}

#[test]
fn batches_are_time_major_slices_of_the_sequences() {
    // 5 sequences of 3 steps of 2 features; value x = 100 s + 10 t + f.
    let (n, steps, f) = (5, 3, 2);
    let x: Vec<f32> = (0..n * steps * f)
        .map(|i| {
            let (s, t, k) = (i / (steps * f), i / f % steps, i % f);
            (100 * s + 10 * t + k) as f32
        })
        .collect();
    let y: Vec<f32> = (0..n).map(|s| s as f32).collect();
    let data = SequenceData {
        n,
        steps,
        inputs: Inputs::Values(x),
        targets: Targets::Values(y),
        lengths: Some(vec![3, 2, 1, 3, 3]),
    };
    let model =
        SequenceModel::new(spec(Head::LastStep, None, f, 1, Loss::MeanSquaredError), 0).unwrap();
    let batches = data.batches(&model, 2).unwrap();
    assert_eq!(batches.len(), 2, "the fifth sequence is left out");
    let b = &batches[1]; // sequences 2 and 3
    let Inputs::Values(v) = &b.inputs else {
        unreachable!()
    };
    for t in 0..steps {
        for j in 0..2 {
            for k in 0..f {
                let want = (100 * (2 + j) + 10 * t + k) as f32;
                assert_eq!(
                    v[(t * 2 + j) * f + k],
                    want,
                    "step {t}, sequence {j}, feature {k}"
                );
            }
        }
    }
    assert_eq!(b.targets, Targets::Values(vec![2.0, 3.0]));
    assert_eq!(b.lengths, Some(vec![1, 3]));
    for b in &batches {
        model.check_batch(b).unwrap();
    }

    // Ids with a class per step (a tagger): targets follow the same layout.
    let tagger = SequenceModel::new(
        spec(
            Head::EveryStep,
            Some(9),
            0,
            9,
            Loss::CrossEntropy { ignore_index: None },
        ),
        0,
    )
    .unwrap();
    let ids: Vec<u32> = (0..4 * 2).map(|i| i as u32).collect(); // [4, 2]
    let data = SequenceData {
        n: 4,
        steps: 2,
        inputs: Inputs::Ids(ids.clone()),
        targets: Targets::Classes(ids.iter().map(|i| i + 1).collect()),
        lengths: None,
    };
    let batches = data.batches(&tagger, 4).unwrap();
    assert_eq!(batches[0].inputs, Inputs::Ids(vec![0, 2, 4, 6, 1, 3, 5, 7]));
    assert_eq!(
        batches[0].targets,
        Targets::Classes(vec![1, 3, 5, 7, 2, 4, 6, 8])
    );

    // Wrong sizes name what was expected.
    let bad = SequenceData {
        targets: Targets::Classes(vec![0; 7]),
        ..data.clone()
    };
    let err = bad.batches(&tagger, 2).unwrap_err().to_string();
    assert!(err.contains("need 8 values, got 7"), "{err}");
    let err = data.batches(&tagger, 5).unwrap_err().to_string();
    assert!(err.contains("fewer than one batch"), "{err}");
}

#[test]
fn fit_runs_epochs_and_lowers_the_loss() {
    // Predict the first feature of the last step.
    let (n, steps) = (64, 4);
    let x: Vec<f32> = (0..n * steps)
        .map(|i| ((i * 37 % 17) as f32 / 17.0) - 0.5)
        .collect();
    let y: Vec<f32> = (0..n).map(|s| x[s * steps + steps - 1]).collect();
    let data = SequenceData {
        n,
        steps,
        inputs: Inputs::Values(x),
        targets: Targets::Values(y),
        lengths: None,
    };
    let model =
        SequenceModel::new(spec(Head::LastStep, None, 1, 1, Loss::MeanSquaredError), 3).unwrap();
    let batches = data.batches(&model, 16).unwrap();
    let cfg = TrainConfig {
        optim: OptimConfig {
            optimizer: Optimizer::adam(0.02),
            clip: None,
            schedule: Schedule::Constant,
        },
        stateful: false,
    };
    let mut t = Trainer::new(&Backend::Cpu, model, cfg).unwrap();
    let mut seen = Vec::new();
    let means = t.fit(&batches, 30, |e, l| seen.push((e, l))).unwrap();
    assert_eq!(means.len(), 30);
    assert_eq!(seen.len(), 30);
    assert_eq!(seen[29], (30, means[29]));
    assert_eq!(t.steps_done(), 30 * 4);
    assert!(
        means[29] < 0.2 * means[0],
        "the epoch loss did not fall: {} -> {}",
        means[0],
        means[29]
    );
    assert!(t.fit(&[], 1, |_, _| {}).is_err());
}
