//! Running a `Recurrent` stack on named tensors, as PyTorch writes them: the library side of
//! `recur forward` and `recur vjp`.

use crate::error::{bail, ensure, err, Result};

use crate::backend::Backend;
use crate::exec::Executor;
use crate::nn::params::{HostTensor, Tensors};
use crate::nn::recurrent::{
    Recurrent, RecurrentConfig, RecurrentGrads, RecurrentOutput, StackOptions, StackRun,
};
use crate::ops::recurrent::CellKind;

/// How to read the files: the cell (else inferred from the weights) and the layout.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileOptions {
    /// The cell; `None` infers it from the weights' shapes.
    pub cell: Option<CellKind>,
    /// Sequences are `[B, T, F]` instead of `[T, B, F]`.
    pub batch_first: bool,
}

/// The checked contents of an inputs file.
struct Inputs {
    layer: Recurrent,
    input: Vec<f32>,
    shape: Vec<usize>,
    batch: usize,
    steps: usize,
    lengths: Option<Vec<usize>>,
    h0: Option<Vec<f32>>,
    c0: Option<Vec<f32>>,
}

impl Inputs {
    /// Plans the layer for these inputs on `exec`.
    fn plan(&self, exec: &mut dyn Executor, grads: bool) -> Result<StackRun> {
        let opts = StackOptions {
            grads,
            lengths: self.lengths.is_some(),
            dropout_seed: None,
        };
        self.layer.plan(exec, self.batch, self.steps, opts)
    }

    /// The layer's forward over these inputs.
    fn forward(&self, exec: &mut dyn Executor, run: &StackRun) -> Result<RecurrentOutput<f32>> {
        run.forward(
            exec,
            &self.input,
            self.lengths.as_deref(),
            self.h0.as_deref(),
            self.c0.as_deref(),
            0,
        )
    }
}

fn read_inputs(weights: Tensors, inputs: &Tensors, opts: FileOptions) -> Result<Inputs> {
    let mut config = RecurrentConfig::from_params(&weights, opts.cell)?;
    config.batch_first = opts.batch_first;
    let layer = Recurrent::from_params(config, weights)?;
    if let Some(extra) = inputs
        .keys()
        .find(|k| !["input", "h0", "c0", "lengths"].contains(&k.as_str()))
    {
        bail!(Invalid, "unexpected tensor {extra:?} in the inputs; expected input, and optionally h0, c0, lengths");
    }
    let x = inputs
        .get("input")
        .ok_or_else(|| err!(Invalid, "the inputs have no tensor named \"input\""))?;
    let lengths = match inputs.get("lengths") {
        None => None,
        Some(t) => {
            ensure!(
                t.shape.len() == 1,
                Shape,
                "lengths has shape {:?}, expected [batch]",
                t.shape
            );
            let l = t
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    ensure!(
                        v >= 0.0 && v.fract() == 0.0,
                        Invalid,
                        "lengths[{i}] = {v} is not a whole number"
                    );
                    Ok(v as usize)
                })
                .collect::<Result<Vec<_>>>()?;
            Some(l)
        }
    };
    let h0 = inputs.get("h0").map(|t| t.data.clone());
    let c0 = inputs.get("c0").map(|t| t.data.clone());
    let (batch, steps) = layer.check_input(
        &x.data,
        &x.shape,
        lengths.as_deref(),
        h0.as_deref(),
        c0.as_deref(),
    )?;
    Ok(Inputs {
        layer,
        input: x.data.clone(),
        shape: x.shape.clone(),
        batch,
        steps,
        lengths,
        h0,
        c0,
    })
}

fn output_tensors(inp: &Inputs, out: RecurrentOutput<f32>) -> Result<Tensors> {
    let c = &inp.layer.config;
    let states = vec![c.num_layers * c.directions(), inp.batch, c.hidden_size];
    let mut shape = inp.shape.clone();
    shape[2] = c.output_size();
    let mut t = Tensors::new();
    t.insert("output".into(), HostTensor::new(shape, out.output)?);
    t.insert("h_n".into(), HostTensor::new(states.clone(), out.h_n)?);
    if c.cell.has_cell_state() {
        t.insert("c_n".into(), HostTensor::new(states, out.c_n)?);
    }
    Ok(t)
}

/// `output`, `h_n` and (LSTM) `c_n` for the weights and inputs given.
pub fn forward_tensors(
    weights: Tensors,
    inputs: &Tensors,
    opts: FileOptions,
    backend: &Backend,
) -> Result<Tensors> {
    let inp = read_inputs(weights, inputs, opts)?;
    let mut exec = backend.executor();
    let run = inp.plan(exec.as_mut(), false)?;
    let out = inp.forward(exec.as_mut(), &run)?;
    output_tensors(&inp, out)
}

/// The gradients of `sum(output * G.output) + sum(h_n * G.h_n) + sum(c_n * G.c_n)` with
/// respect to `input`, `h0`, `c0` and every parameter, each under its own name.
pub fn vjp_tensors(
    weights: Tensors,
    inputs: &Tensors,
    grads: &Tensors,
    opts: FileOptions,
    backend: &Backend,
) -> Result<Tensors> {
    let inp = read_inputs(weights, inputs, opts)?;
    let c = inp.layer.config.clone();
    if let Some(extra) = grads
        .keys()
        .find(|k| !["output", "h_n", "c_n"].contains(&k.as_str()))
    {
        bail!(
            Invalid,
            "unexpected tensor {extra:?} in the output gradients; expected output, h_n, c_n"
        );
    }
    let state_len = c.num_layers * c.directions() * inp.batch * c.hidden_size;
    let check = |name: &str, want: usize| -> Result<Option<Vec<f32>>> {
        let Some(t) = grads.get(name) else {
            return Ok(None);
        };
        ensure!(
            t.data.len() == want,
            Shape,
            "gradient of {name} has {} elements (shape {:?}), expected {want}",
            t.data.len(),
            t.shape
        );
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            bail!(
                Numerics,
                "gradient of {name} holds a non-finite value at index {i}"
            );
        }
        Ok(Some(t.data.clone()))
    };
    let d_out = check("output", inp.batch * inp.steps * c.output_size())?;
    let d_hn = check("h_n", state_len)?;
    let d_cn = check("c_n", state_len)?;
    ensure!(
        d_cn.is_none() || c.cell.has_cell_state(),
        Invalid,
        "a gradient of c_n was given but a {} has no cell state",
        c.cell.name()
    );
    let mut exec = backend.executor();
    let run = inp.plan(exec.as_mut(), true)?;
    inp.forward(exec.as_mut(), &run)?;
    let g: RecurrentGrads<f32> = run.backward(
        exec.as_mut(),
        d_out.as_deref(),
        d_hn.as_deref(),
        d_cn.as_deref(),
        0,
    )?;
    let states = vec![c.num_layers * c.directions(), inp.batch, c.hidden_size];
    let mut t = Tensors::new();
    t.insert("input".into(), HostTensor::new(inp.shape.clone(), g.input)?);
    t.insert("h0".into(), HostTensor::new(states.clone(), g.h0)?);
    if c.cell.has_cell_state() {
        t.insert("c0".into(), HostTensor::new(states, g.c0)?);
    }
    for (name, data) in g.params {
        let shape = inp.layer.params()[&name].shape.clone();
        t.insert(name, HostTensor::new(shape, data)?);
    }
    Ok(t)
}
