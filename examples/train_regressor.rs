//! The library call of the README: a many-to-one LSTM regressor in five lines, on the
//! fastest backend there is. The task: predict the mean of each sequence's first feature.
//!
//! Run: `cargo run --release --example train_regressor`

use anyhow::Result;
use rand::{Rng, SeedableRng};
use recur::prelude::*;

/// `n` sequences of `steps` steps of 3 features, and the mean of each one's first feature.
fn data(n: usize, steps: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n * steps * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let y = (0..n)
        .map(|s| (0..steps).map(|t| x[(s * steps + t) * 3]).sum::<f32>() / steps as f32)
        .collect();
    Ok((
        Tensor::new(vec![n, steps, 3], x)?,
        Tensor::new(vec![n, 1], y)?,
    ))
}

fn main() -> Result<()> {
    let (x, y) = data(800, 20, 1)?;
    let (x_test, y_test) = data(64, 20, 2)?;

    let backend = Backend::auto();
    let mut model = Model::lstm(3, 32)
        .dense(1)
        .mse()
        .optimizer(Optimizer::adam(1e-2))
        .build(&backend)?;
    let epochs = model.fit(&x, &y, Fit::epochs(4).batch(16))?;
    let y_hat = model.predict(&x_test)?;
    model.save(std::env::temp_dir().join("recur-regressor.safetensors"))?;

    println!(
        "on {}: training mse by epoch {epochs:?}",
        backend.describe()
    );
    let mse = y_hat
        .data
        .iter()
        .zip(&y_test.data)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        / y_test.data.len() as f32;
    println!(
        "test mse {mse:.5} (predicting 0 everywhere: {:.5})",
        y_test.data.iter().map(|v| v * v).sum::<f32>() / y_test.data.len() as f32
    );
    Ok(())
}
