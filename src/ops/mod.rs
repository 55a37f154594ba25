//! The op set: descriptions of operations that have a GPU kernel and a CPU twin.
//! Each description validates its own arguments, so both paths reject bad input the same way.

pub mod dropout;
pub mod embedding;
pub mod gemm;
pub mod loss;
pub mod merge;
pub mod optim;
pub mod program;
pub mod recurrent;
pub mod schedule;
pub mod word2vec;
pub mod word2vec_train;

pub use dropout::{Dropout, DropoutKey};
pub use embedding::Embedding;
pub use gemm::{Gemm, RowsFromB3, WeightGrads};
pub use loss::CrossEntropy;
pub use optim::Optimizer;
pub use word2vec::CosineTopK;
