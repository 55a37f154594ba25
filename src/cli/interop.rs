//! `recur forward` and `recur vjp`: run a recurrent stack on PyTorch-style safetensors files.

use std::path::PathBuf;

use anyhow::Result;

use super::BackendArg;
use crate::apps::interop::{forward_tensors, vjp_tensors, FileOptions};
use crate::memory::Budget;
use crate::nn::{load_safetensors, save_safetensors, RecurrentConfig, Tensors};
use crate::ops::recurrent::CellKind;
use crate::train::footprint::{check_stack_run, StackShape};

#[derive(clap::Args)]
pub struct Args {
    /// The weights: a PyTorch RNN/LSTM/GRU state_dict saved with safetensors.
    #[arg(long)]
    weights: PathBuf,
    /// `input` ([T, B, I], or [B, T, I] with --batch-first), optionally `h0`, `c0`, `lengths`.
    #[arg(long)]
    input: PathBuf,
    /// Where to write the results (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// The cell; without it, read from the weights (4H rows: lstm, 3H: gru, H: rnn-tanh).
    #[arg(long, value_parser = parse_cell)]
    cell: Option<CellKind>,
    /// The input is [B, T, I] (PyTorch's `batch_first=True`), not [T, B, I].
    #[arg(long)]
    batch_first: bool,
    /// Where to run: auto (a hardware GPU if there is one, else the CPU), gpu (any GPU
    /// adapter, software ones included) or cpu.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
}

#[derive(clap::Args)]
pub struct VjpArgs {
    #[command(flatten)]
    common: Args,
    /// Gradients of a loss with respect to `output` (and optionally `h_n`, `c_n`).
    #[arg(long)]
    grad_output: PathBuf,
}

fn parse_cell(s: &str) -> Result<CellKind> {
    Ok(CellKind::parse(s)?)
}

fn options(a: &Args) -> FileOptions {
    FileOptions {
        cell: a.cell,
        batch_first: a.batch_first,
    }
}

/// The stack the weights describe, run over the input's steps x batch rows, must fit in
/// memory (the files themselves are checked as they are read).
fn check_run(a: &Args, weights: &Tensors, inputs: &Tensors, tape: bool) -> Result<()> {
    let (Ok(config), Some(x)) = (
        RecurrentConfig::from_params(weights, a.cell),
        inputs.get("input"),
    ) else {
        // Missing or malformed tensors: the library reports them.
        return Ok(());
    };
    let rows = match x.shape[..] {
        [t, b, _] => (t as u64).saturating_mul(b as u64),
        _ => return Ok(()),
    };
    check_stack_run(&StackShape::of(&config), rows, tape, &Budget::host()).map_err(|e| {
        super::name_options(e, || {
            format!(
                "--weights {} with --input {}",
                a.weights.display(),
                a.input.display()
            )
        })
    })
}

pub fn forward(a: Args) -> Result<()> {
    let weights = load_safetensors(&a.weights)?;
    let inputs = load_safetensors(&a.input)?;
    check_run(&a, &weights, &inputs, false)?;
    let out = forward_tensors(weights, &inputs, options(&a), &a.backend.open()?)?;
    save_safetensors(&a.out, &out)?;
    for (name, t) in &out {
        println!("{name} {:?}", t.shape);
    }
    println!("wrote {}", a.out.display());
    Ok(())
}

pub fn vjp(v: VjpArgs) -> Result<()> {
    let a = &v.common;
    let weights = load_safetensors(&a.weights)?;
    let inputs = load_safetensors(&a.input)?;
    let grads = load_safetensors(&v.grad_output)?;
    check_run(a, &weights, &inputs, true)?;
    let out = vjp_tensors(weights, &inputs, &grads, options(a), &a.backend.open()?)?;
    save_safetensors(&a.out, &out)?;
    for (name, t) in &out {
        println!("d {name} {:?}", t.shape);
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
