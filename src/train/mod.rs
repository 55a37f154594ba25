//! Training: learning-rate schedules (and, beside them, the optimizers' host side in
//! `gpu::optim` / `cpu::optim`).

pub mod schedule;

pub use schedule::Schedule;
pub mod checkpoint;
pub mod footprint;
pub mod model;
pub mod optimizer;
pub mod trainer;
pub use checkpoint::Checkpoint;
pub use model::{
    Batch, DropoutRates, EmbeddingSpec, Head, Inputs, Loss, ModelSpec, SequenceModel, Targets,
};
pub use optimizer::{CpuOptimizer, GpuOptimizer, OptimConfig};
pub use trainer::{CarriedState, CpuTrainer, GpuTrainer, TrainConfig, Trainer};
pub mod charlm;
pub mod fit;
pub mod plot;
pub mod seq2seq;
pub use seq2seq::{
    CpuSeq2SeqTrainer, GpuSeq2SeqTrainer, Seq2Seq, Seq2SeqBatch, Seq2SeqSpec, Seq2SeqTrainConfig,
};
pub mod data;
pub use data::SequenceData;
