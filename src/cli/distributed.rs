//! `--distributed`: joining the MPI job a command was started in (`mpirun -np N recur ...`,
//! Slurm's `srun recur ...`), choosing each rank's adapter, and ending the job on an error.
//! The work is in `train::distributed`.

#[cfg(feature = "mpi")]
use std::rc::Rc;

use anyhow::Result;

use super::BackendArg;
use crate::backend::Backend;
use crate::train::distributed::{is_agreed, local_rank, Ranks};

/// The processes a command runs on: itself, or the ranks of an MPI job.
pub struct Job {
    ranks: Ranks,
    #[cfg(feature = "mpi")]
    mpi: Option<Rc<crate::train::distributed::MpiReducer>>,
}

/// What to do when `--distributed` is given to a build without MPI.
#[cfg(not(feature = "mpi"))]
pub const BUILD_WITH_MPI: &str = "--distributed needs recur built with MPI: install an MPI \
    library (Debian or Ubuntu: `apt-get install openmpi-bin libopenmpi-dev libclang-dev`), build \
    with `cargo build --release --features mpi`, and start the command with \
    `mpirun -np N recur ... --distributed` (or `srun` under Slurm)";

impl Job {
    /// This process alone, or (`distributed`) the MPI job it was started in.
    pub fn join(distributed: bool) -> Result<Self> {
        if !distributed {
            return Ok(Self::local());
        }
        #[cfg(not(feature = "mpi"))]
        anyhow::bail!("{BUILD_WITH_MPI}");
        #[cfg(feature = "mpi")]
        {
            use crate::train::GradientReducer;
            let mpi = Rc::new(crate::train::distributed::MpiReducer::init()?);
            mpi.abort_on_panic();
            if mpi.rank() == 0 {
                eprintln!("data-parallel training on {} ranks (MPI)", mpi.ranks());
            }
            let reducer: Rc<dyn GradientReducer> = mpi.clone();
            Ok(Self {
                ranks: Ranks::new(reducer),
                mpi: Some(mpi),
            })
        }
    }

    fn local() -> Self {
        Self {
            ranks: Ranks::local(),
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// The ranks.
    pub fn ranks(&self) -> &Ranks {
        &self.ranks
    }

    /// Whether this process prints and writes files (rank 0, or alone).
    pub fn is_root(&self) -> bool {
        self.ranks.is_root()
    }

    /// Opens the backend: alone as `arg` says; in a job, each rank on the adapter of its
    /// local rank (modulo the adapters of the best kind), saying which.
    pub fn backend(&self, arg: BackendArg) -> Result<Backend> {
        if !self.is_distributed() {
            return arg.open();
        }
        let rank = self.ranks.rank();
        let (local, from) = local_rank().unwrap_or((0, "no launcher variable: 0"));
        let on_cpu = |why: String| {
            say(&format!(
                "rank {rank}: {why}; running on the CPU ({} threads)",
                crate::cpu::threads()
            ));
            Ok(Backend::Cpu)
        };
        match arg {
            BackendArg::Cpu => on_cpu("--backend cpu".into()),
            BackendArg::Gpu | BackendArg::Auto => match crate::gpu::Gpu::nth(local) {
                Ok((gpu, i, n))
                    if arg == BackendArg::Gpu
                        || gpu.info().device_type != wgpu::DeviceType::Cpu =>
                {
                    say(&format!(
                        "rank {rank} (local rank {local}, from {from}): adapter {i} of {n}: {}",
                        gpu.describe()
                    ));
                    Ok(Backend::Gpu(gpu))
                }
                Ok((gpu, ..)) => on_cpu(format!(
                    "no hardware GPU (only {}, a software adapter; --backend gpu takes it)",
                    gpu.info().name
                )),
                Err(e) if arg == BackendArg::Auto => on_cpu(format!(
                    "no GPU adapter ({})",
                    e.to_string().lines().next().unwrap_or_default()
                )),
                // The library names the CPU backend by its type; the flag is ours.
                Err(e) => Err(e
                    .context("--backend gpu (--backend cpu needs no adapter)")
                    .into()),
            },
        }
    }

    /// Whether this process joined an MPI job (of any size).
    fn is_distributed(&self) -> bool {
        #[cfg(feature = "mpi")]
        return self.mpi.is_some();
        #[cfg(not(feature = "mpi"))]
        false
    }

    /// Ends the command. An error every rank stops with (`is_agreed`) is printed once, by
    /// rank 0, before every rank finalises MPI and exits with status 1; an error of this
    /// rank alone is printed with its rank and ends the whole job (MPI_Abort), so no rank
    /// waits for it in a collective.
    pub fn finish(self, result: Result<()>) -> Result<()> {
        let Err(e) = result else {
            return Ok(());
        };
        let Some(reducer) = self.ranks.reducer() else {
            return Err(e);
        };
        let rank = self.ranks.rank();
        if is_agreed(e.as_ref()) {
            if rank == 0 {
                say(&format!("Error: {e:#}"));
            }
            // No rank exits (which makes mpirun end the job) before rank 0 has printed.
            let _ = reducer.exchange(Ok(Vec::new()));
            drop(reducer);
            drop(self);
            std::process::exit(1);
        }
        say(&format!("rank {rank}: Error: {e:#}"));
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            mpi.abort(1);
        }
        Err(e)
    }
}

/// Prints a line to stderr in one write, so the lines of ranks sharing a terminal do not
/// interleave.
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}
