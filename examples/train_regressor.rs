//! The library call of the README: a many-to-one LSTM regressor trained on the GPU in a few
//! lines. The task: predict the mean of each sequence's first feature.
//!
//! Run: `cargo run --release --example train_regressor`

use anyhow::Result;
use rand::{Rng, SeedableRng};
use recur::ops::optim::Optimizer;
use recur::train::{
    Batch, GpuTrainer, Head, Inputs, Loss, ModelSpec, OptimConfig, Schedule, SequenceModel,
    Targets, TrainConfig, Trainer,
};

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
    let optim = OptimConfig {
        optimizer: Optimizer::adam(1e-2),
        clip: Some(1.0),
        schedule: Schedule::Constant,
    };
    let cfg = TrainConfig {
        batch,
        steps,
        optim,
        stateful: false,
    };
    let mut trainer = GpuTrainer::new(&gpu, model, cfg)?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut make = || {
        // Time-major: step t of sequence b is row t * batch + b.
        let x: Vec<f32> = (0..steps * batch * features)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let y = (0..batch)
            .map(|b| {
                (0..steps)
                    .map(|t| x[(t * batch + b) * features])
                    .sum::<f32>()
                    / steps as f32
            })
            .collect();
        Batch {
            batch,
            steps,
            inputs: Inputs::Values(x),
            targets: Targets::Values(y),
            lengths: None,
        }
    };
    let test = make();
    println!("before: test mse {:.5}", trainer.evaluate(&test)?);
    for step in 1..=200 {
        let loss = trainer.step(&make())?; // one submit, one readback
        if step % 50 == 0 {
            println!("step {step}: training mse {loss:.5}");
        }
    }
    println!("after:  test mse {:.5}", trainer.evaluate(&test)?);
    let path = std::env::temp_dir().join("recur-regressor.safetensors");
    trainer.checkpoint()?.save(&path)?;
    println!("checkpoint: {}", path.display());
    Ok(())
}
