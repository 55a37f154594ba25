//! Losses: the description shared by `shaders/loss.wgsl` and `src/cpu/loss.rs`.
//!
//! Softmax cross-entropy over logits `[rows, classes]` (row-major) with one u32 target per
//! row, as `torch.nn.CrossEntropyLoss(reduction="mean", ignore_index=...)`: the row loss is
//! `logsumexp(x) - x[t]` (computed from the row maximum, so it never overflows), the loss is
//! the mean over rows whose target is not the ignore index, and the gradient is
//! `(softmax(x) - onehot(t)) / count` (zero on ignored rows). Where every row is ignored the
//! loss and gradient are 0 (PyTorch gives NaN): an all-padding batch should not poison
//! training.
//!
//! Mean squared error over `n` elements, as `torch.nn.MSELoss(reduction="mean")`: loss
//! `mean((x - y)^2)`, gradient `2 (x - y) / n`.

use crate::error::{ensure, err, Result};

/// The largest element index a GPU kernel can address (indices are 32-bit in WGSL).
const MAX_INDEX: usize = u32::MAX as usize;

/// One softmax cross-entropy over `rows` rows of `classes` logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropy {
    /// Rows, one target each.
    pub rows: usize,
    /// Logits per row.
    pub classes: usize,
    /// Rows whose target equals this contribute neither loss nor gradient.
    pub ignore_index: Option<u32>,
}

impl CrossEntropy {
    /// Cross-entropy over `[rows, classes]` logits, no ignore index.
    pub fn new(rows: usize, classes: usize) -> Self {
        Self {
            rows,
            classes,
            ignore_index: None,
        }
    }

    /// Sets the target value whose rows are ignored (PyTorch's `ignore_index`).
    pub fn ignore_index(mut self, index: u32) -> Self {
        self.ignore_index = Some(index);
        self
    }

    /// Checks the sizes against the lengths of the logits, targets, row-loss and gradient
    /// buffers.
    pub fn validate(
        &self,
        logits: usize,
        targets: usize,
        row_loss: usize,
        dlogits: usize,
    ) -> Result<()> {
        let (rows, classes) = (self.rows, self.classes);
        ensure!(
            rows > 0 && classes > 0,
            Shape,
            "cross-entropy needs rows > 0 and classes > 0, got rows = {rows}, classes = {classes}"
        );
        let n = rows
            .checked_mul(classes)
            .filter(|&n| n <= MAX_INDEX)
            .ok_or_else(|| {
                err!(
                    Limit,
                    "cross-entropy logits [{rows}, {classes}] are too large to address"
                )
            })?;
        ensure!(
            classes <= u32::MAX as usize,
            Limit,
            "cross-entropy: {classes} classes are too many"
        );
        for (what, have, want) in [
            ("logits", logits, n),
            ("targets", targets, rows),
            ("row losses", row_loss, rows),
            ("logit gradients", dlogits, n),
        ] {
            ensure!(
                have == want,
                Shape,
                "cross-entropy over [{rows}, {classes}]: {what} need {want} elements, got {have}"
            );
        }
        Ok(())
    }

    /// Checks every target (each below `classes` or the ignore index) and returns the count
    /// of rows that are not ignored.
    pub fn validate_targets(&self, targets: &[u32]) -> Result<usize> {
        ensure!(
            targets.len() == self.rows,
            Shape,
            "cross-entropy over {} rows got {} targets",
            self.rows,
            targets.len()
        );
        let mut count = 0;
        for (row, &t) in targets.iter().enumerate() {
            if Some(t) == self.ignore_index {
                continue;
            }
            ensure!(
                (t as usize) < self.classes,
                Invalid, "cross-entropy target {t} at row {row} is out of range: expected a class below {}{}",
                self.classes,
                match self.ignore_index {
                    Some(i) => format!(" or the ignore index {i}"),
                    None => String::new(),
                }
            );
            count += 1;
        }
        Ok(count)
    }
}

/// Checks a mean squared error over buffers of `pred`, `target` and `grad` elements.
pub fn validate_mse(pred: usize, target: usize, grad: usize) -> Result<()> {
    ensure!(
        pred > 0,
        Shape,
        "mean squared error needs at least one element"
    );
    ensure!(
        pred <= MAX_INDEX,
        Limit,
        "mean squared error over {pred} elements is too large to address"
    );
    ensure!(
        target == pred && grad == pred,
        Shape,
        "mean squared error: predictions have {pred} elements, targets {target}, gradient {grad}"
    );
    Ok(())
}
