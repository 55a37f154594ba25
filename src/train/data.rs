//! Data as Keras and PyTorch (`batch_first`) users hold it, sequence-major: inputs
//! `[n, steps, features]` (or ids `[n, steps]`) and targets per sequence (`[n, outputs]` or
//! classes `[n]` for a last-step head; `[n, steps, outputs]` or `[n, steps]` for a head at
//! every step), cut into the time-major [`Batch`]es a trainer takes; and
//! [`Trainer::fit`](super::Trainer::fit) runs epochs over them.

use crate::error::{ensure, Result};

use super::distributed::Ranks;
use super::model::{Batch, Head, Inputs, SequenceModel, Targets};

/// `n` sequences of `steps` steps, sequence-major.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceData {
    /// Sequences.
    pub n: usize,
    /// Time steps per sequence (the longest, where `lengths` differ).
    pub steps: usize,
    /// Features `[n, steps, features]` or ids `[n, steps]`.
    pub inputs: Inputs,
    /// Per sequence: `rows` rows (1 for a last-step head, `steps` for every step) of
    /// `outputs` values, or one class per row.
    pub targets: Targets,
    /// Per-sequence lengths (padding past them), if they differ.
    pub lengths: Option<Vec<usize>>,
}

impl SequenceData {
    /// Cuts the data into time-major batches of `batch` sequences for `model`, in order;
    /// the last `n % batch` sequences are left out (every batch the same shape, as stateful
    /// training needs; [`Self::epoch`] keeps them). Sizes are checked against the model: features (or ids), and per sequence one
    /// target row (last-step head) or `steps` (every step) of `outputs` values or one class.
    pub fn batches(&self, model: &SequenceModel, batch: usize) -> Result<Vec<Batch>> {
        let widths = self.check(model, batch)?;
        let order: Vec<usize> = (0..self.n).collect();
        let whole = self.n - self.n % batch;
        self.batches_of(&order[..whole], batch, widths)
    }

    /// Every sequence in batches of `batch` in the order `order` (a permutation, e.g. a
    /// shuffle), the last batch holding what is left: the batches of a Keras epoch.
    pub fn epoch(
        &self,
        model: &SequenceModel,
        batch: usize,
        order: &[usize],
    ) -> Result<Vec<Batch>> {
        let widths = self.check(model, batch.min(self.n))?;
        ensure!(
            order.len() == self.n && order.iter().all(|&i| i < self.n),
            Invalid,
            "an epoch's order must index each of the {} sequences",
            self.n
        );
        self.batches_of(order, batch, widths)
    }

    /// The batches of [`Self::epoch`], each cut to this rank's share of its sequences
    /// ([`Ranks::share`]) for data-parallel training; `None` where a short last batch
    /// leaves this rank nothing.
    pub fn epoch_share(
        &self,
        model: &SequenceModel,
        batch: usize,
        order: &[usize],
        ranks: &Ranks,
    ) -> Result<Vec<Option<Batch>>> {
        let widths = self.check(model, batch.min(self.n))?;
        ensure!(
            order.len() == self.n && order.iter().all(|&i| i < self.n),
            Invalid,
            "an epoch's order must index each of the {} sequences",
            self.n
        );
        let mut out = Vec::new();
        for chunk in order.chunks(batch) {
            let mine = &chunk[ranks.share(chunk.len())];
            out.push(match mine.is_empty() {
                true => None,
                false => self.batches_of(mine, mine.len(), widths)?.pop(),
            });
        }
        Ok(out)
    }

    /// Checks the sizes against the model and a batch size; returns the widths of an input
    /// step, the target rows per sequence and a target row.
    fn check(&self, model: &SequenceModel, batch: usize) -> Result<(usize, usize, usize)> {
        let (n, steps) = (self.n, self.steps);
        ensure!(
            batch > 0 && steps > 0 && n > 0,
            Shape,
            "batch size, sequences and steps must be > 0, got {batch}, {n} and {steps}"
        );
        ensure!(
            n >= batch,
            Shape,
            "{n} sequences are fewer than one batch of {batch}: use a smaller batch size"
        );
        let features = match &self.inputs {
            Inputs::Values(_) => model.spec.input_size,
            Inputs::Ids(_) => 1,
        };
        let rows = match model.spec.head {
            Head::EveryStep => steps,
            Head::LastStep => 1,
        };
        let outputs = match &self.targets {
            Targets::Values(_) => model.spec.outputs,
            Targets::Classes(_) => 1,
        };
        let (inputs_len, targets_len) = match (&self.inputs, &self.targets) {
            (Inputs::Values(x), Targets::Values(y)) => (x.len(), y.len()),
            (Inputs::Values(x), Targets::Classes(y)) => (x.len(), y.len()),
            (Inputs::Ids(x), Targets::Values(y)) => (x.len(), y.len()),
            (Inputs::Ids(x), Targets::Classes(y)) => (x.len(), y.len()),
        };
        ensure!(
            inputs_len == n * steps * features,
            Shape,
            "inputs: {n} sequences x {steps} steps x {features} need {} values, got {inputs_len}",
            n * steps * features
        );
        ensure!(
            targets_len == n * rows * outputs,
            Shape,
            "targets: {n} sequences x {rows} rows x {outputs} need {} values, got {targets_len}",
            n * rows * outputs
        );
        if let Some(l) = &self.lengths {
            ensure!(l.len() == n, Shape, "{} lengths for {n} sequences", l.len());
        }
        Ok((features, rows, outputs))
    }

    fn batches_of(
        &self,
        order: &[usize],
        batch: usize,
        (features, rows, outputs): (usize, usize, usize),
    ) -> Result<Vec<Batch>> {
        let steps = self.steps;
        let mut out = Vec::with_capacity(order.len().div_ceil(batch));
        for seqs in order.chunks(batch) {
            let batch = seqs.len();
            let inputs = match &self.inputs {
                Inputs::Values(v) => Inputs::Values(time_major(v, seqs, steps, features)),
                Inputs::Ids(v) => Inputs::Ids(time_major(v, seqs, steps, 1)),
            };
            let targets = match &self.targets {
                Targets::Values(v) => Targets::Values(time_major(v, seqs, rows, outputs)),
                Targets::Classes(v) => Targets::Classes(time_major(v, seqs, rows, 1)),
            };
            out.push(Batch {
                batch,
                steps,
                inputs,
                targets,
                lengths: self
                    .lengths
                    .as_ref()
                    .map(|l| seqs.iter().map(|&s| l[s]).collect()),
            });
        }
        Ok(out)
    }
}

/// Sequences `seqs` of sequence-major `data` ([n, rows, width]) as a time-major block: row
/// `t` of the `b`-th of them goes to row `t * seqs.len() + b`.
fn time_major<T: Copy + Default>(data: &[T], seqs: &[usize], rows: usize, width: usize) -> Vec<T> {
    let batch = seqs.len();
    let mut v = vec![T::default(); rows * batch * width];
    for (b, &s) in seqs.iter().enumerate() {
        for t in 0..rows {
            let src = &data[(s * rows + t) * width..][..width];
            v[(t * batch + b) * width..][..width].copy_from_slice(src);
        }
    }
    v
}
