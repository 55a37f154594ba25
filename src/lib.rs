//! recur: recurrent neural networks (RNN, LSTM, GRU) on any GPU through wgpu compute
//! shaders, with a CPU reference path that every kernel is checked against.
//!
//! Layout (see DESIGN.md): `shaders/` holds the WGSL kernels, [`gpu`] the device layer and
//! the host side of each kernel, [`cpu`] the reference twins, [`ops`] the descriptions both
//! share.

pub mod bench;
pub mod check;
pub mod cli;
pub mod cpu;
pub mod gpu;
pub mod io;
pub mod memory;
pub mod nn;
pub mod ops;
pub mod selftest;
pub mod train;
pub mod word2vec;

pub use gpu::{Gpu, GpuTensor};
pub use ops::Gemm;
