//! The two executors of a recorded [`Program`]: [`GpuExecutor`]
//! lowers each op to a plan of the device layer and runs a phase as one submit;
//! [`CpuExecutor`] runs each op's CPU twin, in f32 or (for finite-difference checks) f64.
//!
//! Both keep the parameters under their names, shared by every program they load, and the
//! optimizer state beside them. A program's own tensors are allocated when it is loaded and
//! kept between runs; nothing is allocated or compiled per run.

mod check;
mod cpu;
mod gpu;

use std::collections::BTreeMap;

use crate::error::Result;

pub use cpu::CpuExecutor;
pub use gpu::{GpuExecutor, OpCosts, RecurrentOpCosts};

use crate::ops::program::{Program, TensorId};

/// A program loaded into an executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProgramId(pub(crate) usize);

/// What an executor does: load programs, move host data in and out, run phases.
pub trait Executor {
    /// Which executor and device, in words ("cpu", or the adapter's name).
    fn describe(&self) -> String;

    /// Checks a program (sizes of every op's tensors) and allocates its tensors and plans.
    fn load(&mut self, program: Program) -> Result<ProgramId>;

    /// The program as loaded.
    fn program(&self, p: ProgramId) -> &Program;

    /// Writes `data` into a float tensor of `p` from element `offset` on.
    fn write(&mut self, p: ProgramId, t: TensorId, offset: usize, data: &[f32]) -> Result<()>;

    /// Writes a whole u32 tensor of `p` (targets, ids, lengths; ids and lengths are
    /// validated here).
    fn write_u32(&mut self, p: ProgramId, t: TensorId, data: &[u32]) -> Result<()>;

    /// Runs phase `phase` of `p` after `step` training steps: `step` keys the dropout
    /// masks, and an optimizer op applies update number `step + 1`.
    fn run(&mut self, p: ProgramId, phase: usize, step: u64) -> Result<()>;

    /// Reads `len` elements of a float tensor of `p` from `offset` (a tensor the last run's
    /// phase read back is served without another round trip).
    fn read(&mut self, p: ProgramId, t: TensorId, offset: usize, len: usize) -> Result<Vec<f32>>;

    /// Sets a parameter's values (creating it if no program has declared it yet).
    fn set_param(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()>;

    /// A parameter's values.
    fn param(&mut self, name: &str) -> Result<Vec<f32>>;

    /// The optimizer state of each parameter an optimizer has updated (its planes, see
    /// `ops::optim`), by parameter name.
    fn optimizer_state(&mut self) -> Result<BTreeMap<String, Vec<f32>>>;

    /// Sets the optimizer state of parameters (as [`Self::optimizer_state`] gives it).
    fn set_optimizer_state(&mut self, state: &BTreeMap<String, Vec<f32>>) -> Result<()>;

    /// Bytes of memory the executor holds for parameters, programs and their workspace.
    fn memory_bytes(&self) -> u64;

    /// What the last run did (the GPU executor counts dispatches and, with timing on,
    /// device time).
    fn last_run(&self) -> RunReport {
        RunReport::default()
    }

    /// Measures device time per run where the device can (GPU timestamps), for benchmarks.
    fn set_timing(&mut self, _on: bool) {}
}

/// What one run did, where the executor knows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunReport {
    /// Kernel dispatches recorded.
    pub dispatches: u64,
    /// Submits to the device queue.
    pub submits: u64,
    /// Seconds the device spent in the recorded passes (timing on).
    pub device_seconds: Option<f64>,
    /// Host seconds spent recording and submitting (not waiting).
    pub encode_seconds: f64,
}

/// Reads a whole float tensor.
pub fn read_all(exec: &mut dyn Executor, p: ProgramId, t: TensorId) -> Result<Vec<f32>> {
    let len = exec.program(p).tensor(t).len();
    exec.read(p, t, 0, len)
}

/// Host values of type `T` in and out of an executor: f32 for every executor, and f64 for
/// the CPU executor in f64 (finite-difference checks run whole programs that way).
pub trait HostData<T>: Executor {
    /// Writes `data` into a float tensor from element `offset` on.
    fn write_values(&mut self, p: ProgramId, t: TensorId, offset: usize, data: &[T]) -> Result<()>;
    /// A whole float tensor.
    fn read_values(&mut self, p: ProgramId, t: TensorId) -> Result<Vec<T>>;
    /// Sets a parameter.
    fn set_param_values(&mut self, name: &str, shape: &[usize], data: &[T]) -> Result<()>;
    /// A parameter's values.
    fn param_values(&mut self, name: &str) -> Result<Vec<T>>;
}

/// `HostData<f32>` through the f32 interface every executor has.
macro_rules! host_data_f32 {
    ($ty:ty) => {
        impl HostData<f32> for $ty {
            fn write_values(
                &mut self,
                p: ProgramId,
                t: TensorId,
                offset: usize,
                data: &[f32],
            ) -> Result<()> {
                self.write(p, t, offset, data)
            }
            fn read_values(&mut self, p: ProgramId, t: TensorId) -> Result<Vec<f32>> {
                read_all(self, p, t)
            }
            fn set_param_values(
                &mut self,
                name: &str,
                shape: &[usize],
                data: &[f32],
            ) -> Result<()> {
                self.set_param(name, shape, data)
            }
            fn param_values(&mut self, name: &str) -> Result<Vec<f32>> {
                self.param(name)
            }
        }
    };
}

host_data_f32!(GpuExecutor);
host_data_f32!(dyn Executor + '_);

impl<T: crate::cpu::Real> HostData<T> for CpuExecutor<T> {
    fn write_values(&mut self, p: ProgramId, t: TensorId, offset: usize, data: &[T]) -> Result<()> {
        self.write_real(p, t, offset, data)
    }
    fn read_values(&mut self, p: ProgramId, t: TensorId) -> Result<Vec<T>> {
        self.read_real(p, t)
    }
    fn set_param_values(&mut self, name: &str, shape: &[usize], data: &[T]) -> Result<()> {
        self.set_param_real(name, shape, data)
    }
    fn param_values(&mut self, name: &str) -> Result<Vec<T>> {
        self.param_real(name)
    }
}
