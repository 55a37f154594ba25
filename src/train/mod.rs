//! Training: learning-rate schedules (and, beside them, the optimizers' host side in
//! `gpu::optim` / `cpu::optim`).

pub mod schedule;

pub use schedule::Schedule;
