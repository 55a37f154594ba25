//! Data-parallel training through the library, run under MPI (`--features mpi`):
//!
//! ```text
//! mpirun -np 2 target/release/examples/distributed model OUT_DIR
//! ```
//!
//! Each mode trains with an `MpiReducer` and writes what `tests/distributed.rs` compares:
//! - `model DIR RANKS_SEED`: `Model::fit` on a fixed regression set (each rank its share of
//!   every batch); every rank writes its final weights to `DIR/rank<r>.safetensors`.
//! - `lm OPTIONS_JSON TEXT DIR BACKEND KEEP_AT`: the character language model
//!   (`charlm::train_on`); rank 0 writes `DIR/model.safetensors` and keeps a copy of the
//!   checkpoint of step KEEP_AT as `DIR/kept.safetensors`.
//! - `diverge`: ranks start from different weights: every rank prints the error.
//! - `fail DIR`: rank 1 feeds a bad batch at step 3: every rank prints the error it stops with.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use recur::apps::charlm::{self, CharLmOptions};
use recur::nn::HostTensor;
use recur::prelude::*;
use recur::train::distributed::MpiReducer;
use recur::train::{Checkpoint, GradientReducer, Ranks};

fn main() -> Result<()> {
    let mpi = Rc::new(MpiReducer::init()?);
    mpi.abort_on_panic();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reducer: Rc<dyn GradientReducer> = mpi.clone();
    let rank = mpi.rank();
    let result = match args.first().map(String::as_str) {
        Some("model") => model(reducer, Path::new(&args[1])),
        Some("lm") => lm(reducer, &args[1..]),
        Some("diverge") => diverge(reducer),
        Some("fail") => fail(reducer),
        _ => bail!(
            "usage: distributed model DIR | lm OPTIONS TEXT DIR BACKEND KEEP_AT | diverge | fail"
        ),
    };
    if let Err(e) = result {
        // Every mode's errors are agreed by every rank; print them from each.
        println!("rank {rank}: error: {e:#}");
    }
    Ok(())
}

/// A fixed regression set: 13 sequences of 5 steps, 2 features, 1 output.
fn regression_data() -> Result<(HostTensor, HostTensor)> {
    let (n, steps) = (13, 5);
    let x: Vec<f32> = (0..n * steps * 2)
        .map(|i| ((i * 37 % 23) as f32 / 23.0) - 0.5)
        .collect();
    let y: Vec<f32> = (0..n)
        .map(|s| x[s * steps * 2..(s + 1) * steps * 2].iter().sum::<f32>() * 0.3)
        .collect();
    Ok((
        HostTensor::new(vec![n, steps, 2], x)?,
        HostTensor::new(vec![n, 1], y)?,
    ))
}

/// The model and fit of `model` mode (shared with the test's one-process run).
fn build(backend: &Backend) -> Result<Model> {
    Ok(Model::lstm(2, 6).dense(1).mse().seed(3).build(backend)?)
}

fn model(reducer: Rc<dyn GradientReducer>, dir: &Path) -> Result<()> {
    let mut m = build(&Backend::Cpu)?;
    m.trainer().set_reducer(reducer.clone())?;
    let (x, y) = regression_data()?;
    // Batches of 4 over 13 sequences: the last batch has 1, so two of three ranks sit out.
    let losses = m.fit(&x, &y, Fit::epochs(3).batch(4).seed(5))?;
    let params = m.trainer().model()?.named_params();
    let ckpt = Checkpoint {
        spec: m.spec().clone(),
        params,
        optimizer: Default::default(),
        state: Default::default(),
        step: m.trainer().steps_done(),
        meta: [("losses".to_string(), serde_json::to_string(&losses)?)].into(),
    };
    Ok(ckpt.save(&dir.join(format!("rank{}.safetensors", reducer.rank())))?)
}

fn lm(reducer: Rc<dyn GradientReducer>, args: &[String]) -> Result<()> {
    let [opts, text, dir, backend, keep_at] = args else {
        bail!("lm OPTIONS_JSON TEXT DIR BACKEND KEEP_AT");
    };
    let opts: CharLmOptions = serde_json::from_str(&std::fs::read_to_string(opts)?)?;
    let text = std::fs::read_to_string(text)?;
    let backend = match backend.as_str() {
        "gpu" => Backend::gpu()?,
        _ => Backend::Cpu,
    };
    let keep_at: u64 = keep_at.parse().context("KEEP_AT")?;
    let dir = PathBuf::from(dir);
    let path = dir.join("model.safetensors");
    charlm::train_on(
        &text,
        &opts,
        &path,
        &backend,
        None,
        &Ranks::new(reducer),
        |r| {
            if r.step == keep_at {
                std::fs::copy(&path, dir.join("kept.safetensors")).expect("copying");
            }
        },
    )?;
    Ok(())
}

fn diverge(reducer: Rc<dyn GradientReducer>) -> Result<()> {
    let model = Model::lstm(2, 4)
        .dense(1)
        .mse()
        .seed(reducer.rank() as u64)
        .build(&Backend::Cpu)?;
    let mut m = model;
    m.trainer().set_reducer(reducer)?;
    bail!("the ranks' different weights were not noticed")
}

fn fail(reducer: Rc<dyn GradientReducer>) -> Result<()> {
    let rank = reducer.rank();
    let mut m = build(&Backend::Cpu)?;
    m.trainer().set_reducer(reducer)?;
    let (x, _) = regression_data()?;
    let batch = |good: bool| -> Result<recur::train::Batch> {
        let mut values: Vec<f32> = x.data[..2 * 5 * 2].to_vec();
        if !good {
            values[3] = f32::NAN;
        }
        Ok(recur::train::Batch {
            batch: 2,
            steps: 5,
            inputs: recur::train::Inputs::Values(values),
            targets: recur::train::Targets::Values(vec![0.1, 0.2]),
            lengths: None,
        })
    };
    for step in 1..=5 {
        let b = batch(!(rank == 1 && step == 3))?;
        m.trainer().step(&b)?;
    }
    bail!("rank 1's bad batch was not noticed")
}
