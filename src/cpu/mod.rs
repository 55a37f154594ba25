//! The CPU reference path: the same operations as the GPU kernels, in f32 and f64 (f64 for
//! gradient checks). Files are named as the kernel families in `shaders/`.

pub mod activation;
pub mod dropout;
pub mod embedding;
pub mod gemm;
pub mod loss;
pub mod optim;
pub mod philox;
pub mod recurrent;
pub mod word2vec;

pub use gemm::gemm;

/// The float types the CPU path computes in (f32, and f64 for gradient checks).
pub trait Real:
    num_traits::Float
    + activation::Activation
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::iter::Sum
    + 'static
{
}

impl Real for f32 {}
impl Real for f64 {}

/// Threads the CPU path uses (rayon's pool: all cores unless `RAYON_NUM_THREADS` says less).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
