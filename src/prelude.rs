//! The names most programs use: `use recur::prelude::*;`.

pub use crate::backend::Backend;
pub use crate::gpu::Gpu;
pub use crate::nn::{
    Dense, Embedding, HostTensor as Tensor, Merge, Recurrent, RecurrentConfig, Tensors,
};
pub use crate::ops::optim::{OptimConfig, Optimizer};
pub use crate::ops::recurrent::CellKind;
pub use crate::ops::schedule::Schedule;
pub use crate::train::{
    Batch, Checkpoint, DropoutRates, Fit, Head, Inputs, Loss, Model, ModelBuilder, ModelSpec,
    Seq2Seq, Seq2SeqBatch, Seq2SeqSpec, SequenceData, SequenceModel, Targets, TrainConfig, Trainer,
};
