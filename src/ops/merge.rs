//! The output stage of a recurrent stack: how the two directions of a bidirectional layer
//! are combined (Keras `merge_mode`) and, for Keras `go_backwards`, the time reversal of the
//! output. The description shared by `shaders/merge.wgsl` and its CPU twin
//! `src/cpu/merge.rs`.

use crate::error::{bail, Result};
use serde::{Deserialize, Serialize};

/// How the two directions of a bidirectional stack are combined in its output (Keras
/// `merge_mode`). Between stacked layers the directions are always concatenated, as PyTorch
/// does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Merge {
    /// The two directions side by side: `2 * hidden` features (PyTorch's only mode).
    #[default]
    Concat,
    /// Their sum.
    Sum,
    /// Their product.
    Mul,
    /// Their mean.
    Ave,
}

impl Merge {
    /// Parses Keras's names: "concat", "sum", "mul", "ave".
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "concat" => Merge::Concat,
            "sum" => Merge::Sum,
            "mul" => Merge::Mul,
            "ave" => Merge::Ave,
            _ => bail!(
                Invalid,
                "unknown merge mode {s:?}; expected concat, sum, mul or ave"
            ),
        })
    }
}

/// The last step of a recurrent stack's forward: combine the directions (merge mode) and,
/// for `go_backwards`, put the outputs in processing order (time reversed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputStage {
    /// How the directions combine.
    pub merge: Merge,
    /// 1 or 2 directions.
    pub dirs: usize,
    /// Units per direction.
    pub hidden: usize,
    /// Reverse the time order of the output (Keras `go_backwards`).
    pub flip: bool,
    /// Steps per sequence.
    pub steps: usize,
    /// Sequences.
    pub batch: usize,
    /// Rows are `[B, T]` instead of `[T, B]`.
    pub batch_first: bool,
}

impl OutputStage {
    /// Rows of the output (`steps * batch`).
    pub fn rows(&self) -> usize {
        self.steps * self.batch
    }

    /// Whether the output differs from the concatenated directions at all.
    pub fn is_identity(&self) -> bool {
        !self.flip && (self.dirs == 1 || self.merge == Merge::Concat)
    }

    /// Output features per row.
    pub fn width(&self) -> usize {
        if self.dirs == 2 && self.merge == Merge::Concat {
            2 * self.hidden
        } else {
            self.hidden
        }
    }

    /// The concatenated row that output row `row` comes from.
    pub fn source_row(&self, row: usize) -> usize {
        if !self.flip {
            return row;
        }
        let (t, b) = if self.batch_first {
            (row % self.steps, row / self.steps)
        } else {
            (row / self.batch, row % self.batch)
        };
        let t = self.steps - 1 - t;
        if self.batch_first {
            b * self.steps + t
        } else {
            t * self.batch + b
        }
    }
}
