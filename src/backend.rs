//! Where the numbers are computed: the CPU, or a GPU through wgpu.

use crate::error::Result;

use crate::exec::{CpuExecutor, Executor, GpuExecutor};
use crate::gpu::Gpu;

/// The device a model runs on.
#[derive(Clone)]
pub enum Backend {
    /// The CPU path (multithreaded; every kernel's twin).
    Cpu,
    /// A GPU (or a software adapter standing in for one).
    Gpu(Gpu),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

/// A backend chosen by [`Backend::auto`], and why.
#[derive(Clone, Debug)]
pub struct Choice {
    /// The backend.
    pub backend: Backend,
    /// Why, in a sentence for the user.
    pub reason: String,
}

impl Backend {
    /// A hardware GPU if there is one, else the CPU (a software adapter such as lavapipe
    /// or llvmpipe is slower than the CPU path; ask for it with `Backend::Gpu(Gpu::new()?)`).
    pub fn auto() -> Self {
        Self::choose().backend
    }

    /// [`Self::auto`] with the reason for the choice.
    pub fn choose() -> Choice {
        match Gpu::new() {
            Ok(gpu) if gpu.info().device_type != wgpu::DeviceType::Cpu => Choice {
                reason: format!("hardware GPU found: {}", gpu.describe()),
                backend: Backend::Gpu(gpu),
            },
            Ok(gpu) => Choice {
                reason: format!(
                    "no hardware GPU found (only {}, a software adapter); running on the CPU",
                    gpu.info().name
                ),
                backend: Backend::Cpu,
            },
            Err(e) => Choice {
                reason: format!("no GPU adapter ({}); running on the CPU", first_line(&e)),
                backend: Backend::Cpu,
            },
        }
    }

    /// The GPU backend on the best adapter there is, software ones included.
    pub fn gpu() -> Result<Self> {
        Ok(Backend::Gpu(Gpu::new()?))
    }

    /// A fresh executor on this backend (f32).
    pub fn executor(&self) -> Box<dyn Executor> {
        match self {
            Backend::Cpu => Box::new(CpuExecutor::<f32>::new()),
            Backend::Gpu(gpu) => Box::new(GpuExecutor::new(gpu)),
        }
    }

    /// The GPU, if this is the GPU backend.
    pub fn as_gpu(&self) -> Option<&Gpu> {
        match self {
            Backend::Gpu(g) => Some(g),
            Backend::Cpu => None,
        }
    }

    /// Which backend, in words.
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu => format!("CPU ({} threads)", crate::cpu::threads()),
            Backend::Gpu(g) => format!("GPU {}", g.describe()),
        }
    }

    /// "cpu" or "gpu".
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Gpu(_) => "gpu",
        }
    }
}

fn first_line(e: &crate::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
