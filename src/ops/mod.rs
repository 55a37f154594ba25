//! The op set: descriptions of operations that have a GPU kernel and a CPU twin.
//! Each description validates its own arguments, so both paths reject bad input the same way.

pub mod gemm;
pub mod word2vec;

pub use gemm::Gemm;
pub use word2vec::CosineTopK;
