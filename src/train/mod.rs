//! Training, written once for both executors: the sequence model ([`SequenceModel`], its
//! spec and batches), the encoder-decoder ([`Seq2Seq`]), the Keras-style [`Model`] builder
//! with [`Fit`], the one [`Trainer`] that records forward, backward and update, checkpoints,
//! data-parallel gradient reduction ([`GradientReducer`]), memory footprints, learning-rate
//! schedules, and sequence data. The applications built on it (the character language
//! model, `recur fit`) live in [`crate::apps`].

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
pub mod seq2seq;
pub mod sequential;
pub use seq2seq::{Seq2Seq, Seq2SeqBatch, Seq2SeqInputs, Seq2SeqSpec};
pub use sequential::{Fit, Model, ModelBuilder};
pub mod data;
pub use data::SequenceData;
