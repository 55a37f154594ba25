//! A roofline model of recorded dispatches on named GPUs, from their published peak figures.
//!
//! The time of one dispatch is
//!
//! ```text
//! launch + max(flops / peak_flops, unique_bytes / dram_bandwidth, bytes / cache_bandwidth) / u
//! ```
//!
//! - `launch`: [`LAUNCH_SECONDS`] per dispatch, the launch and the barrier that orders it
//!   after the previous one in the same compute pass (an assumption: 2-10 us is what
//!   back-to-back dependent dispatches cost on Vulkan, Metal and D3D12 drivers).
//! - `u`, the share of the machine a dispatch can use: `min(1, workgroups / units)` (at most
//!   one busy compute unit per workgroup) times `min(1, invocations per busy unit / lanes)`
//!   (a unit issues at most `lanes` FP32 operations a clock, so a unit holding one workgroup
//!   of 64 invocations runs at 64 / 128 of its peak on an H100 SM). Both FLOP/s and bytes/s
//!   scale with `u`: each busy unit is given its share of the bandwidth.
//! - `bytes` are the kernel's global loads and stores as counted in [`crate::gpu::Cost`],
//!   `unique_bytes` the same with each element read once. Distinct data comes from DRAM;
//!   every access, re-reads included, passes through the last-level cache, assumed to have
//!   [`CACHE_FACTOR`] times the DRAM bandwidth (the working sets here, a few MB, fit the L2
//!   of every GPU listed). NVIDIA publishes A100's L2 read bandwidth as 5,120 bytes per clock
//!   (A100 whitepaper), 7.2 TB/s at 1.41 GHz, 3.5x its DRAM: the factor is a round,
//!   conservative figure, not a measurement.
//!
//! It ignores latency beyond that (a workgroup that waits on its own loads), the tail of the
//! last wave, clock limits and the cost of the first touch of a buffer. It ranks kernels and
//! designs; it is not a prediction to the microsecond.

use crate::error::{bail, Result};
use serde::Serialize;

use crate::gpu::DispatchCost;

/// Launch and barrier cost assumed per dispatch (seconds).
pub const LAUNCH_SECONDS: f64 = 5e-6;

/// Last-level cache bandwidth assumed, as a multiple of DRAM bandwidth.
pub const CACHE_FACTOR: f64 = 2.0;

/// Published peak figures of one GPU.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GpuPeak {
    /// The name `--gpu` takes.
    pub key: &'static str,
    /// The product name, for table headers (e.g. "NVIDIA H100 SXM5").
    pub name: &'static str,
    /// DRAM bandwidth, bytes per second.
    pub bandwidth: f64,
    /// FP32 operations per second (no tensor or matrix units).
    pub flops: f64,
    /// Compute units: SMs (NVIDIA), CUs (AMD), Xe-cores (Intel), GPU cores (Apple).
    pub units: u32,
    /// FP32 lanes per unit (operations issued per clock, a multiply-add as one).
    pub lanes: u32,
    /// Where the figures come from.
    pub source: &'static str,
}

/// The GPUs the model knows, with their sources.
pub const GPUS: &[GpuPeak] = &[
    GpuPeak {
        key: "h100",
        name: "NVIDIA H100 SXM5",
        bandwidth: 3.35e12,
        flops: 67e12,
        units: 132,
        lanes: 128,
        source: "NVIDIA H100 Tensor Core GPU datasheet (FP32 67 TFLOPS, HBM3 3.35 TB/s, SXM); \
                 NVIDIA H100 Tensor Core GPU Architecture whitepaper (132 SMs, 128 FP32 cores per SM)",
    },
    GpuPeak {
        key: "h200",
        name: "NVIDIA H200 SXM",
        bandwidth: 4.8e12,
        flops: 67e12,
        units: 132,
        lanes: 128,
        source: "NVIDIA H200 Tensor Core GPU datasheet (FP32 67 TFLOPS, HBM3e 4.8 TB/s); \
                 the same GH100 die as the H100 SXM5 (132 SMs)",
    },
    GpuPeak {
        key: "a100",
        name: "NVIDIA A100 SXM4 80GB",
        bandwidth: 2.039e12,
        flops: 19.5e12,
        units: 108,
        lanes: 64,
        source: "NVIDIA A100 Tensor Core GPU datasheet (FP32 19.5 TFLOPS, HBM2e 2,039 GB/s); \
                 NVIDIA A100 Tensor Core GPU Architecture whitepaper (108 SMs, 64 FP32 cores per SM)",
    },
    GpuPeak {
        key: "rtx4090",
        name: "NVIDIA GeForce RTX 4090",
        bandwidth: 1.008e12,
        flops: 82.6e12,
        units: 128,
        lanes: 128,
        source: "NVIDIA Ada GPU Architecture whitepaper (128 SMs, 16,384 CUDA cores, \
                 82.6 TFLOPS FP32, 1,008 GB/s GDDR6X)",
    },
    GpuPeak {
        key: "mi300x",
        name: "AMD Instinct MI300X",
        bandwidth: 5.3e12,
        flops: 163.4e12,
        units: 304,
        lanes: 128,
        source: "AMD Instinct MI300X data sheet (304 CUs, 163.4 TFLOPS peak FP32 vector, \
                 HBM3 5.3 TB/s); the FP32 peak counts packed (dual) FP32 issue, 128 lanes a CU",
    },
    GpuPeak {
        key: "m2",
        name: "Apple M2 (10-core GPU)",
        bandwidth: 100e9,
        flops: 3.6e12,
        units: 10,
        lanes: 128,
        source: "Apple newsroom, 'Apple unveils M2', 2022-06-06 (10-core GPU, 3.6 TFLOPS, \
                 100 GB/s unified memory); 128 ALUs per GPU core",
    },
];

/// The GPU named `key` (case-insensitive), or an error listing the known ones.
pub fn find(key: &str) -> Result<&'static GpuPeak> {
    match GPUS.iter().find(|g| g.key.eq_ignore_ascii_case(key)) {
        Some(g) => Ok(g),
        None => bail!(
            Invalid,
            "unknown GPU {key:?} for the roofline model; known: {}",
            GPUS.iter().map(|g| g.key).collect::<Vec<_>>().join(", ")
        ),
    }
}

impl GpuPeak {
    /// The share of this GPU a dispatch of `workgroups` x `invocations` can keep busy.
    pub fn utilisation(&self, workgroups: u64, invocations: Option<u32>) -> f64 {
        if workgroups == 0 {
            return 0.0;
        }
        let units = self.units as f64;
        let busy = (workgroups as f64).min(units);
        let lanes = match invocations {
            Some(inv) => (inv as f64 * workgroups as f64 / busy / self.lanes as f64).min(1.0),
            None => 1.0,
        };
        busy / units * lanes
    }

    /// Modelled seconds of one dispatch (see the module documentation).
    pub fn dispatch_seconds(&self, d: &DispatchCost) -> f64 {
        let u = self.utilisation(d.workgroups, d.invocations);
        if u == 0.0 {
            return LAUNCH_SECONDS;
        }
        LAUNCH_SECONDS + (self.compute_seconds(d).max(self.memory_seconds(d))) / u
    }

    fn compute_seconds(&self, d: &DispatchCost) -> f64 {
        d.cost.flops / self.flops
    }

    fn memory_seconds(&self, d: &DispatchCost) -> f64 {
        let dram = d.cost.unique_bytes() / self.bandwidth;
        let cache = d.cost.bytes() / (CACHE_FACTOR * self.bandwidth);
        dram.max(cache)
    }

    /// Whether a dispatch is limited by memory (true) or by arithmetic (false) in the model.
    pub fn memory_bound(&self, d: &DispatchCost) -> bool {
        self.memory_seconds(d) >= self.compute_seconds(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{Cost, KernelName};

    fn dispatch(workgroups: u64, invocations: u32, cost: Cost) -> DispatchCost {
        DispatchCost {
            kernel: KernelName {
                family: "t",
                entry: "t",
                role: "",
            },
            workgroups,
            invocations: Some(invocations),
            cost,
        }
    }

    #[test]
    fn a_full_machine_runs_at_peak_plus_the_launch() {
        let h100 = find("H100").unwrap();
        // 1 GFLOP over 1000 workgroups of 256: compute-bound, 1e9 / 67e12 s.
        let d = dispatch(1000, 256, Cost::new(1e9, 1e6, 0.0));
        let want = LAUNCH_SECONDS + 1e9 / 67e12;
        assert!((h100.dispatch_seconds(&d) - want).abs() < 1e-12);
        assert!(!h100.memory_bound(&d));
    }

    #[test]
    fn few_small_workgroups_use_a_fraction_of_the_machine() {
        let h100 = find("h100").unwrap();
        // 32 workgroups of 64 invocations: 32 / 132 SMs, each at 64 / 128 of its lanes.
        let u = h100.utilisation(32, Some(64));
        assert!((u - 32.0 / 132.0 * 0.5).abs() < 1e-12, "{u}");
        // 33 MB issued, 1 MB of it distinct: the cache term decides.
        let d = dispatch(32, 64, Cost::new(0.0, 33.0e6, 0.0).with_unique_read(1.0e6));
        let want = LAUNCH_SECONDS + 33.0e6 / (CACHE_FACTOR * 3.35e12 * u);
        assert!((h100.dispatch_seconds(&d) - want).abs() < 1e-12);
        assert!(h100.memory_bound(&d));
        // Nothing re-read: DRAM decides.
        let d = dispatch(32, 64, Cost::new(0.0, 33.0e6, 0.0));
        let want = LAUNCH_SECONDS + 33.0e6 / (3.35e12 * u);
        assert!((h100.dispatch_seconds(&d) - want).abs() < 1e-12);
        // Twice the units' worth of workgroups: the machine is full.
        assert_eq!(h100.utilisation(264, Some(64)), 1.0);
    }

    #[test]
    fn unknown_gpus_are_an_error_naming_the_known_ones() {
        let err = find("gtx480").unwrap_err().to_string();
        assert!(err.contains("gtx480") && err.contains("h100"), "{err}");
    }
}
