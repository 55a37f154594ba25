//! recur: recurrent neural networks (RNN, LSTM, GRU) on any GPU through wgpu compute
//! shaders, with a CPU reference path that every kernel is checked against.
//!
//! Layout (see ARCHITECTURE.md in the repository): `shaders/` holds the WGSL kernels,
//! [`gpu`] the device layer and the host side of each kernel, [`cpu`] the reference twins,
//! [`ops`] the descriptions both share and the vocabulary of a recorded program, [`exec`]
//! the two executors that run a program, [`nn`] the layers and [`train`] the models and the
//! trainer, each written once as recordings; [`apps`] the applications built on them (the
//! language model, `fit`, PyTorch interop, benchmarks, selftest), which the core does not
//! import.
#![warn(missing_docs)]

pub mod apps;
pub mod backend;
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cpu;
pub mod error;
pub mod exec;
pub mod gpu;
pub mod io;
pub mod memory;
pub mod nn;
pub mod ops;
pub mod prelude;
pub mod train;
pub mod word2vec;

pub use backend::Backend;
pub use error::{Error, Result};
pub use gpu::{Gpu, GpuTensor};
pub use ops::Gemm;

/// README's library snippets, compiled and run by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
