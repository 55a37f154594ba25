//! Layers, with parameters named as PyTorch names them.

pub mod params;
pub mod recurrent;

pub use params::{load_safetensors, parse_safetensors, save_safetensors, HostTensor, Tensors};
pub use recurrent::{
    Merge, OutputStage, RecordedStack, Recurrent, RecurrentConfig, RecurrentGrads, RecurrentOutput,
    StackGrads, StackOptions, StackRun,
};
pub mod dense;
pub mod embedding;
pub use dense::{Dense, DenseGrads, DenseRows};
pub use embedding::{Embedding, EmbeddingInit};
