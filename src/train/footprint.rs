//! What a model takes in memory, worked out from its spec and batch shape alone, so that a
//! size from an option or a checkpoint is refused before any buffer is allocated for it
//! (the budgets and the arithmetic are in [`crate::memory`]).
//!
//! The figures are lower bounds: the parameters (and, for training, their gradients and
//! Adam's two moments), and the values a training pass must keep for one batch (inputs,
//! gate activations, states and outputs of every layer and direction, the head's outputs
//! and their gradients). Workspace beyond that is not counted, so a model refused here
//! could never have run, and one accepted may still be near the limit.

use crate::error::{ensure, Result};

use super::model::{Head, ModelSpec};
use crate::memory::{bytes_of, product, sum, Budget};
use crate::nn::RecurrentConfig;
use crate::ops::recurrent::CellKind;

const F32: usize = std::mem::size_of::<f32>();

/// One parameter tensor: its PyTorch name, shape, and the fields its size comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSize {
    /// The PyTorch name, e.g. `rnn.weight_hh_l0` or `fc.weight`.
    pub name: String,
    /// `[rows, columns]` (`usize::MAX` where a dimension overflows).
    pub shape: [usize; 2],
    /// Elements, `None` where the count overflows.
    pub elements: Option<u64>,
    /// The spec fields behind the size, e.g. `hidden_size 100000`.
    pub cause: String,
}

/// A recurrent stack's sizes: the part of a model that the spec's hidden size, layers and
/// directions set (also what `recur forward` runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackShape {
    /// The cell (its gate count sets the weight rows).
    pub cell: CellKind,
    /// Features per step of the first layer's input.
    pub input_size: usize,
    /// Hidden units per layer and direction.
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// 1, or 2 for a bidirectional stack.
    pub directions: usize,
}

impl StackShape {
    /// The sizes of a stack built from `config`.
    pub fn of(config: &RecurrentConfig) -> Self {
        Self {
            cell: config.cell,
            input_size: config.input_size,
            hidden_size: config.hidden_size,
            num_layers: config.num_layers,
            directions: config.directions(),
        }
    }

    /// Rows of the gate matrices, `gates x hidden`.
    fn gate_rows(&self) -> Option<u64> {
        (self.cell.gates() as u64).checked_mul(self.hidden_size as u64)
    }

    /// Features of the stack's output, `directions x hidden`.
    fn output_size(&self) -> Option<u64> {
        (self.directions as u64).checked_mul(self.hidden_size as u64)
    }

    /// The largest weight matrices (layer 0's input and recurrent weights, and layer 1's
    /// input weights where there is a layer 1).
    fn largest_params(&self) -> Vec<ParamSize> {
        let (h, gw) = (self.hidden_size, self.gate_rows());
        let gw_usize = gw
            .and_then(|g| usize::try_from(g).ok())
            .unwrap_or(usize::MAX);
        let matrix = |name: &str, cols: usize, cause: String| ParamSize {
            name: name.to_string(),
            shape: [gw_usize, cols],
            elements: gw.and_then(|g| g.checked_mul(cols as u64)),
            cause,
        };
        let mut out = vec![
            matrix("weight_hh_l0", h, format!("hidden_size {h}")),
            matrix(
                "weight_ih_l0",
                self.input_size,
                format!("hidden_size {h} with input size {}", self.input_size),
            ),
        ];
        if self.num_layers > 1 {
            let cols = self.directions.saturating_mul(h);
            out.push(matrix("weight_ih_l1", cols, format!("hidden_size {h}")));
        }
        out
    }

    /// Every parameter value of the stack (weights and both biases).
    pub fn params(&self) -> Option<u64> {
        let gw = self.gate_rows()?;
        let h = self.hidden_size as u64;
        let per_dir = |input: u64| gw.checked_mul(input.checked_add(h)?.checked_add(2)?);
        let first = per_dir(self.input_size as u64)?;
        let above = per_dir(self.output_size()?)?;
        let dirs = self.directions as u64;
        let layers_above = (self.num_layers as u64).checked_sub(1)?;
        sum([
            first.checked_mul(dirs),
            above.checked_mul(dirs)?.checked_mul(layers_above),
        ])
    }

    /// Values a training pass keeps for `rows` (steps x batch) input rows: per layer and
    /// direction the gate activations, the state, the cell state and the output.
    pub fn activations(&self, rows: u64) -> Option<u64> {
        let per_row = self
            .gate_rows()?
            .checked_add((self.hidden_size as u64).checked_mul(3)?)?;
        let per_stack = per_row
            .checked_mul(self.directions as u64)?
            .checked_mul(self.num_layers as u64)?;
        sum([
            rows.checked_mul(per_stack),
            rows.checked_mul(self.input_size as u64),
        ])
    }

    /// The largest single activation buffer for `rows` input rows: one layer-direction's gate
    /// activations, or the stack's output.
    pub fn largest_activation(&self, rows: u64) -> Option<u64> {
        let gates = rows.checked_mul(self.gate_rows()?)?;
        let output = rows.checked_mul(self.output_size()?)?;
        Some(gates.max(output))
    }

    fn describe(&self) -> String {
        format!(
            "{} stack (hidden_size {}, num_layers {}, {} direction{}, input size {})",
            self.cell.name(),
            self.hidden_size,
            self.num_layers,
            self.directions,
            if self.directions == 1 { "" } else { "s" },
            self.input_size
        )
    }
}

/// The batch a model runs: `batch` sequences of `steps` steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunShape {
    /// Sequences per batch.
    pub batch: usize,
    /// Time steps per sequence.
    pub steps: usize,
}

impl RunShape {
    fn rows(&self) -> Option<u64> {
        (self.batch as u64).checked_mul(self.steps as u64)
    }
}

/// A model's sizes, from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Footprint {
    spec: ModelSpec,
    stack: StackShape,
}

impl Footprint {
    /// The sizes of the model `spec` describes (its cell must be known).
    pub fn of(spec: &ModelSpec) -> Result<Self> {
        let input_size = match &spec.embedding {
            Some(e) => e.output_dim,
            None => spec.input_size,
        };
        let stack = StackShape {
            cell: spec.cell,
            input_size,
            hidden_size: spec.hidden_size,
            num_layers: spec.num_layers,
            directions: if spec.bidirectional { 2 } else { 1 },
        };
        ensure!(
            stack.num_layers > 0,
            Invalid,
            "num_layers {}: expected at least 1",
            stack.num_layers
        );
        Ok(Self {
            spec: spec.clone(),
            stack,
        })
    }

    /// The embedding table, the stack's largest matrices and the head's weight.
    fn largest_params(&self) -> Vec<ParamSize> {
        let mut out: Vec<ParamSize> = self
            .stack
            .largest_params()
            .into_iter()
            .map(|p| ParamSize {
                name: format!("rnn.{}", p.name),
                ..p
            })
            .collect();
        if let Some(e) = &self.spec.embedding {
            out.push(ParamSize {
                name: "embedding.weight".into(),
                shape: [e.input_dim, e.output_dim],
                elements: product(&[e.input_dim, e.output_dim]),
                cause: format!(
                    "embedding input_dim {} x output_dim {}",
                    e.input_dim, e.output_dim
                ),
            });
        }
        let features = self.stack.output_size();
        out.push(ParamSize {
            name: "fc.weight".into(),
            shape: [
                self.spec.outputs,
                features
                    .and_then(|f| usize::try_from(f).ok())
                    .unwrap_or(usize::MAX),
            ],
            elements: features.and_then(|f| f.checked_mul(self.spec.outputs as u64)),
            cause: format!(
                "outputs {} with hidden_size {}",
                self.spec.outputs, self.spec.hidden_size
            ),
        });
        out
    }

    /// The largest parameter tensor.
    pub fn largest(&self) -> ParamSize {
        self.largest_params()
            .into_iter()
            .max_by_key(|p| p.elements.unwrap_or(u64::MAX))
            .expect("a model has parameters")
    }

    /// Every parameter value: the embedding, the stack and the head.
    pub fn params(&self) -> Option<u64> {
        let embedding = match &self.spec.embedding {
            Some(e) => product(&[e.input_dim, e.output_dim]),
            None => Some(0),
        };
        let outputs = self.spec.outputs as u64;
        let head = self
            .stack
            .output_size()
            .and_then(|f| f.checked_add(1)?.checked_mul(outputs));
        sum([embedding, self.stack.params(), head])
    }

    /// Rows the head reads for a batch.
    fn head_rows(&self, run: RunShape) -> Option<u64> {
        match self.spec.head {
            Head::EveryStep => run.rows(),
            Head::LastStep => Some(run.batch as u64),
        }
    }

    /// Values a training pass keeps for one batch: the stack's and the head's outputs and
    /// their gradients.
    pub fn activations(&self, run: RunShape) -> Option<u64> {
        let head = self
            .head_rows(run)?
            .checked_mul(self.spec.outputs as u64)?
            .checked_mul(2)?;
        sum([self.stack.activations(run.rows()?), Some(head)])
    }

    /// Host bytes a model needs at least: its parameters (four copies when `training`:
    /// values, gradients and Adam's two moments) and, for a run, one batch's activations.
    pub fn host_bytes(&self, run: Option<RunShape>, training: bool) -> Option<u64> {
        let copies = if training { 4 } else { 1 };
        let params = self.params()?.checked_mul(copies)?;
        let acts = match run {
            Some(r) => self.activations(r)?,
            None => 0,
        };
        bytes_of(params.checked_add(acts)?, F32)
    }

    fn describe(&self, run: Option<RunShape>) -> String {
        let mut s = format!(
            "the model ({}, outputs {}",
            self.stack.describe(),
            self.spec.outputs
        );
        if let Some(e) = &self.spec.embedding {
            s += &format!(", embedding {} x {}", e.input_dim, e.output_dim);
        }
        s.push(')');
        if let Some(r) = run {
            s += &format!(" with batches of {} x {} steps", r.batch, r.steps);
        }
        s
    }

    /// Checks the model against a host budget: its largest tensor alone, then the whole
    /// (see [`Self::host_bytes`]). The error names the spec fields behind the size.
    pub fn check_host(&self, run: Option<RunShape>, training: bool, budget: &Budget) -> Result<()> {
        let big = self.largest();
        budget.check(
            format_args!("{} ({} {:?} alone)", big.cause, big.name, big.shape),
            big.elements.and_then(|n| bytes_of(n, F32)),
        )?;
        let params = self
            .params()
            .map_or("more than 2^64".into(), |p| p.to_string());
        let what = if training {
            format!("training: 4 x {params} values for its parameters, their gradients and Adam's two moments")
        } else {
            format!("{params} parameter values")
        };
        let acts = if run.is_some() {
            ", and one batch's activations"
        } else {
            ""
        };
        budget.check(
            format_args!("{} ({what}{acts})", self.describe(run)),
            self.host_bytes(run, training),
        )?;
        Ok(())
    }

    /// Checks that every parameter tensor and the largest activation buffer of a run fit
    /// one device buffer.
    pub fn check_device(&self, run: RunShape, budget: &Budget) -> Result<()> {
        let big = self.largest();
        budget.check(
            format_args!(
                "{} ({} {:?} alone, on the device)",
                big.cause, big.name, big.shape
            ),
            big.elements.and_then(|n| bytes_of(n, F32)),
        )?;
        let head = self
            .head_rows(run)
            .and_then(|r| r.checked_mul(self.spec.outputs as u64));
        let largest = run
            .rows()
            .and_then(|rows| self.stack.largest_activation(rows))
            .and_then(|a| Some(a.max(head?)));
        budget.check(
            format_args!("{}'s largest activation buffer", self.describe(Some(run))),
            largest.and_then(|n| bytes_of(n, F32)),
        )?;
        Ok(())
    }
}

/// Checks that a recurrent stack run on `rows` input rows (steps x batch) fits a host
/// budget: its parameters and the values a pass keeps (`tape`: for a backward too).
pub fn check_stack_run(stack: &StackShape, rows: u64, tape: bool, budget: &Budget) -> Result<()> {
    let acts = if tape {
        stack.activations(rows)
    } else {
        // Without a tape a pass keeps the output and one layer's gates at a time.
        stack
            .largest_activation(rows)
            .and_then(|a| a.checked_mul(2))
    };
    let needed = sum([stack.params(), acts]).and_then(|n| bytes_of(n, F32));
    budget.check(
        format_args!(
            "the {} run on {rows} rows (steps x batch){}",
            stack.describe(),
            if tape { " with its backward" } else { "" }
        ),
        needed,
    )?;
    Ok(())
}
