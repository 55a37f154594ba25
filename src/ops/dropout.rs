//! Dropout masks: the description shared by `shaders/dropout.wgsl` and
//! `src/cpu/dropout.rs`.
//!
//! A mask over a `[rows, cols]` shape (row-major) keeps each element with probability
//! `keep` and holds `1 / keep` where kept and 0 where dropped (inverted scaling, so nothing
//! changes at inference). Element `i` keeps iff the top 24 bits of Philox4x32-10 draw
//! `(seed, step, stream, i)` (see `src/cpu/philox.rs`) are below `round(keep * 2^24)`: an
//! integer comparison, so the CPU and GPU masks agree bit for bit. `stream` tells apart the
//! masks one step needs (e.g. a layer's input and recurrent masks).
//!
//! Applying a mask multiplies elementwise, `y[i] = x[i] * mask[i % mask_len]`: the same
//! kernel serves forward (`x`) and backward (`dy`), and a `[B, F]` mask applies to every
//! timestep of a `[T, B, F]` sequence, as Keras reuses one mask per sequence.

use crate::error::{ensure, Result};

/// A dropout mask shape and keep probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Rows of the mask (batch entries, for a `[B, F]` mask).
    pub rows: usize,
    /// Columns of the mask (features).
    pub cols: usize,
    /// Probability of keeping an element (PyTorch's `1 - p`).
    pub keep: f32,
}

/// Which mask: the run's seed, the training step, and a stream number within the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropoutKey {
    /// The run's seed (Philox key).
    pub seed: u64,
    /// The training step, so each step draws a fresh mask.
    pub step: u64,
    /// Which of the step's masks (a layer's input or recurrent mask, ...).
    pub stream: u32,
}

impl Dropout {
    /// A `[rows, cols]` mask keeping each element with probability `keep`.
    pub fn new(rows: usize, cols: usize, keep: f32) -> Self {
        Self { rows, cols, keep }
    }

    /// Elements of the mask.
    pub fn len(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }

    /// Whether the mask has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks `keep` (in `(0, 1]`), the shape, and that a mask buffer of `mask` elements
    /// matches it.
    pub fn validate(&self, mask: usize) -> Result<()> {
        ensure!(
            self.keep.is_finite() && self.keep > 0.0 && self.keep <= 1.0,
            Invalid,
            "dropout keep probability = {} is invalid: expected 0 < keep <= 1",
            self.keep
        );
        ensure!(
            self.rows > 0 && self.cols > 0,
            Shape,
            "dropout mask needs rows > 0 and cols > 0, got [{}, {}]",
            self.rows,
            self.cols
        );
        ensure!(
            self.len() <= u32::MAX as usize,
            Limit,
            "dropout mask [{}, {}] is too large to address",
            self.rows,
            self.cols
        );
        ensure!(
            mask == self.len(),
            Shape,
            "dropout mask [{}, {}] needs {} elements, got {mask}",
            self.rows,
            self.cols,
            self.len()
        );
        Ok(())
    }

    /// A draw's top 24 bits keep the element iff they are below this.
    pub fn threshold(&self) -> u32 {
        (self.keep as f64 * (1u32 << 24) as f64).round() as u32
    }

    /// The value of a kept element, `1 / keep`, rounded to f32 once (on the host).
    pub fn scale(&self) -> f32 {
        1.0 / self.keep
    }
}

/// Checks the lengths of `y = x * mask` (broadcast: `mask` length divides `x` length).
pub fn validate_apply(x: usize, mask: usize, y: usize) -> Result<()> {
    ensure!(mask > 0, Shape, "dropout: the mask is empty");
    ensure!(
        x > 0 && x.is_multiple_of(mask),
        Shape,
        "dropout: {x} input elements are not a whole number of masks of {mask}"
    );
    ensure!(
        x <= u32::MAX as usize,
        Limit,
        "dropout: {x} elements are too many to address"
    );
    ensure!(
        y == x,
        Shape,
        "dropout: the output has {y} elements, the input {x}"
    );
    Ok(())
}

/// Checks a per-sequence mask of `batch x features` against a sequence tensor of `len`
/// elements and `steps` steps.
pub fn validate_rows(len: usize, batch: usize, steps: usize, features: usize) -> Result<()> {
    ensure!(
        batch > 0 && steps > 0 && features > 0,
        Shape, "sequence dropout needs a [batch, features] mask and steps > 0, got batch {batch}, features {features}, steps {steps}"
    );
    ensure!(
        len == batch * steps * features,
        Shape, "sequence tensor has {len} elements, expected steps x batch x features = {steps} x {batch} x {features}"
    );
    Ok(())
}
