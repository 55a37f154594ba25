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
use recur::exec::read_all;
use recur::nn::Embedding;
use recur::ops::optim::{OptimConfig, Optimizer};
use recur::ops::program::{Op, ProgramBuilder};
use recur::Backend;

fn main() -> Result<()> {
    let backend = Backend::auto();
    println!("on {}", backend.describe());
    let (batch, input_length, input_dim, output_dim) = (32, 10, 1000, 64);
    let layer = Embedding::new(input_dim, output_dim, 0)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let ids: Vec<u32> = (0..batch * input_length)
        .map(|_| rng.random_range(0..input_dim as u32))
        .collect();
    let mut exec = backend.executor();
    let (output, _) = layer.run(
        exec.as_mut(),
        &layer.weight.data,
        &ids,
        (batch, input_length),
        None,
    )?;
    ensure!(output.len() == batch * input_length * output_dim);
    println!(
        "Embedding(input_dim={input_dim}, output_dim={output_dim}, input_length={input_length}) \
         on a ({batch}, {input_length}) batch -> ({batch}, {input_length}, {output_dim})"
    );

    // compile("rmsprop", "mse") and fit towards random targets: lookup, loss, scatter-add
    // gradient and update recorded once, each step one run (one submit on a GPU).
    let n = batch * input_length;
    let mut b = ProgramBuilder::new();
    let id_t = b.ids("ids", layer.op(), n);
    let out = layer.record_forward(&mut b, "embedding.", id_t)?;
    let target = b.input("targets", &[n, output_dim]);
    let d_out = b.tensor("d out", &[n, output_dim]);
    let loss = b.tensor("loss", &[1]);
    b.op(Op::Mse {
        pred: out,
        target,
        d_pred: d_out,
        loss,
    });
    let grad = layer
        .record_backward(&mut b, "embedding.", id_t, d_out)
        .expect("a trainable table has a gradient");
    let table = b.param("embedding.weight", &layer.shape())?;
    b.op(Op::Optimize {
        config: OptimConfig::new(Optimizer::rmsprop(0.001)),
        params: vec![("embedding.weight".into(), table, grad)],
    });
    b.read_back(loss);
    let mut exec = backend.executor();
    exec.set_param("embedding.weight", &layer.shape(), &layer.weight.data)?;
    let step = exec.load(b.finish())?;
    let targets: Vec<f32> = (0..n * output_dim)
        .map(|_| rng.random_range(-0.1..0.1))
        .collect();
    exec.write_u32(step, id_t, &ids)?;
    exec.write(step, target, 0, &targets)?;
    for epoch in 1..=5 {
        exec.run(step, 0, epoch - 1)?;
        println!(
            "epoch {epoch}: mse {:.6}",
            read_all(exec.as_mut(), step, loss)?[0]
        );
    }
    Ok(())
}
