//! The library call of the README: a many-to-one LSTM regressor trained on the GPU in a few
//! lines. The task: predict the mean of each sequence's first feature.
//!
//! Run: `cargo run --release --example train_regressor`

use anyhow::Result;
use rand::{Rng, SeedableRng};
use recur::ops::optim::Optimizer;
use recur::train::{
    Head, Inputs, Loss, ModelSpec, OptimConfig, Schedule, SequenceData, SequenceModel, Targets,
    TrainConfig, Trainer,
};
use recur::Backend;

fn main() -> Result<()> {
    let (batch, steps, features) = (16, 20, 3);
    let spec = ModelSpec {
        embedding: None,
        input_size: features,
        cell: "lstm".into(),
        hidden_size: 32,
        num_layers: 1,
        bidirectional: false,
        outputs: 1,
        head: Head::LastStep,
        loss: Loss::MeanSquaredError,
        dropout: Default::default(),
    };
    let gpu = recur::Gpu::new()?;
    let model = SequenceModel::new(spec, 0)?;

    // Keras-style arrays: x [n, steps, features], y [n, 1] (the mean of the first feature).
    let data = |n: usize, seed: u64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let x: Vec<f32> = (0..n * steps * features)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let y = (0..n)
            .map(|s| {
                (0..steps)
                    .map(|t| x[(s * steps + t) * features])
                    .sum::<f32>()
                    / steps as f32
            })
            .collect();
        SequenceData {
            n,
            steps,
            inputs: Inputs::Values(x),
            targets: Targets::Values(y),
            lengths: None,
        }
    };
    let train = data(800, 1).batches(&model, batch)?;
    let test = data(batch, 2).batches(&model, batch)?;

    let optim = OptimConfig {
        optimizer: Optimizer::adam(1e-2),
        clip: Some(1.0),
        schedule: Schedule::Constant,
    };
    let cfg = TrainConfig {
        optim,
        stateful: false,
    };
    let mut trainer = Trainer::new(&Backend::Gpu(gpu.clone()), model, cfg)?;
    println!("before: test mse {:.5}", trainer.evaluate(&test[0])?);
    // One submit and one readback per batch.
    trainer.fit(&train, 4, |epoch, mse| {
        println!("epoch {epoch}: training mse {mse:.5}")
    })?;
    println!("after:  test mse {:.5}", trainer.evaluate(&test[0])?);
    let path = std::env::temp_dir().join("recur-regressor.safetensors");
    trainer.checkpoint()?.save(&path)?;
    println!("checkpoint: {}", path.display());
    Ok(())
}
