//! Training: learning-rate schedules (and, beside them, the optimizers' host side in
//! `gpu::optim` / `cpu::optim`).

pub use crate::ops::schedule::{self, Schedule};
pub mod checkpoint;
pub mod distributed;
pub mod footprint;
pub mod model;
pub mod trainer;
pub use crate::ops::optim::OptimConfig;
pub use checkpoint::Checkpoint;
pub use distributed::{GradientReducer, LocalReducer, Ranks};
pub use model::{
    Batch, DropoutRates, EmbeddingSpec, Head, Inputs, Loss, ModelSpec, Pass, Recorded, SeqInputs,
    SequenceModel, Targets,
};
pub use trainer::{CarriedState, Learner, TrainConfig, Trainer};
pub mod charlm;
pub mod fit;
#[cfg(feature = "cli")]
pub mod plot;
pub mod seq2seq;
pub mod sequential;
pub use seq2seq::{Seq2Seq, Seq2SeqBatch, Seq2SeqInputs, Seq2SeqSpec};
pub use sequential::{Fit, Model, ModelBuilder};
pub mod data;
pub use data::SequenceData;
