//! Layers, with parameters named as PyTorch names them.

pub mod gpu_recurrent;
pub mod interop;
pub mod params;
pub mod recurrent;

pub use gpu_recurrent::GpuRecurrent;
pub use params::{load_safetensors, parse_safetensors, save_safetensors, HostTensor, Tensors};
pub use recurrent::{
    Merge, OutputStage, Recurrent, RecurrentConfig, RecurrentGrads, RecurrentOutput,
};
pub mod dense;
pub mod embedding;
pub use dense::{Dense, DenseGrads, DenseRows, GpuDense};
pub use embedding::{Embedding, GpuEmbedding};
