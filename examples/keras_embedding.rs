//! The Keras embedding snippet, on the GPU:
//!
//! ```python
//! model = keras.Sequential([keras.layers.Embedding(input_dim=1000, output_dim=64, input_length=10)])
//! input_array = np.random.randint(1000, size=(32, 10))
//! model.compile("rmsprop", "mse")
//! output_array = model.predict(input_array)   # shape (32, 10, 64)
//! ```
//!
//! and then a few RMSprop steps on the mean squared error towards random targets, each
//! step (lookup, loss, scatter-add gradient, update) in one submit.
//!
//! Run: `cargo run --release --example keras_embedding`

use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use recur::gpu::{MsePlan, Recorder};
use recur::nn::{Embedding, GpuEmbedding};
use recur::ops::optim::Optimizer;
use recur::train::{GpuOptimizer, OptimConfig, Schedule};
use recur::{Gpu, GpuTensor};

fn main() -> Result<()> {
    let gpu = Gpu::new()?;
    let (batch, input_length, input_dim, output_dim) = (32, 10, 1000, 64);
    let layer = Embedding::new(input_dim, output_dim, 0)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let ids: Vec<u32> = (0..batch * input_length)
        .map(|_| rng.random_range(0..input_dim as u32))
        .collect();

    let output = layer.forward_gpu(&gpu, &ids, batch, input_length)?;
    ensure!(output.len() == batch * input_length * output_dim);
    println!(
        "Embedding(input_dim={input_dim}, output_dim={output_dim}, input_length={input_length}) \
         on a ({batch}, {input_length}) batch -> ({batch}, {input_length}, {output_dim})"
    );

    // compile("rmsprop", "mse") and fit towards random targets.
    let n = batch * input_length;
    let out = GpuTensor::zeros(&gpu, &[n, output_dim])?;
    let d_out = GpuTensor::zeros(&gpu, &[n, output_dim])?;
    let emb = GpuEmbedding::new(&gpu, &layer, n, &out, Some(&d_out))?;
    emb.write_ids(&ids)?;
    let targets: Vec<f32> = (0..n * output_dim)
        .map(|_| rng.random_range(-0.1..0.1))
        .collect();
    let target = GpuTensor::from_slice(&gpu, &[n, output_dim], &targets)?;
    let mse = MsePlan::new(&gpu, &out, &target, &d_out)?;
    let table_grad = emb.table_grad().expect("a trainable table has a gradient");
    let mut rmsprop = GpuOptimizer::new(
        &gpu,
        OptimConfig {
            optimizer: Optimizer::rmsprop(0.001),
            clip: None,
            schedule: Schedule::Constant,
        },
        &[("embedding.weight".into(), emb.table(), table_grad)],
    )?;
    for epoch in 1..=5 {
        let mut rec = Recorder::new(&gpu);
        emb.record_forward(&mut rec);
        mse.record(&mut rec);
        emb.record_backward(&mut rec);
        rmsprop.record(&mut rec)?;
        rec.submit()?;
        println!("epoch {epoch}: mse {:.6}", mse.loss()?);
    }
    Ok(())
}
