//! Criterion benches of the GEMM, CPU and GPU, on the shapes `recur bench gemm` reports, and
//! of one thread's per-step recurrent product on the CPU: the `gemm` crate against the kernel
//! that reads a packed copy of the weights (`cpu::packed_gemm`).
//! `cargo bench --bench gemm`; the GPU side is skipped where there is no adapter.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use recur::apps::bench::gemm::DEFAULT_SHAPES;
use recur::gpu::{GemmPlan, Recorder};
use recur::{cpu, Gemm, Gpu, GpuTensor};

fn gemm(c: &mut Criterion) {
    let gpu = Gpu::new().ok();
    for (m, n, k) in DEFAULT_SHAPES {
        let spec = Gemm::new(m, n, k);
        let mut group = c.benchmark_group(format!("gemm {m}x{n}x{k}"));
        group.throughput(Throughput::Elements(spec.flops() as u64));
        group.sample_size(10);
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
        let mut out = vec![0.0f32; m * n];
        group.bench_function("cpu", |bench| {
            bench.iter(|| cpu::gemm(&spec, &a, &b, None, &mut out).unwrap())
        });
        if let Some(gpu) = &gpu {
            let ga = GpuTensor::from_slice(gpu, &[m, k], &a).unwrap();
            let gb = GpuTensor::from_slice(gpu, &[k, n], &b).unwrap();
            let gc = GpuTensor::zeros(gpu, &[m, n]).unwrap();
            let plan = GemmPlan::new(gpu, &spec, &ga, &gb, None, &gc).unwrap();
            group.bench_function("gpu", |bench| {
                bench.iter(|| {
                    let mut rec = Recorder::new(gpu);
                    plan.record(&mut rec);
                    rec.submit().unwrap();
                    gpu.wait().unwrap();
                })
            });
        }
        group.finish();
    }
}

/// The recurrent product of one step, `[B, H] x [H, N]`, on one thread on both sides: N = 512
/// is one of two threads' share of an LSTM at H = 256 (4 gates x 128 units), N = 1024 all of
/// it.
fn step_product(c: &mut Criterion) {
    for (m, n, k) in [(32, 512, 256), (32, 1024, 256), (8, 256, 64)] {
        let spec = Gemm::new(m, n, k);
        let mut group = c.benchmark_group(format!("step product {m}x{n}x{k}"));
        group.throughput(Throughput::Elements(spec.flops() as u64));
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
        let mut out = vec![0.0f32; m * n];
        group.bench_function("gemm crate", |bench| {
            bench.iter(|| cpu::gemm::gemm_on_this_thread(&spec, &a, &b, None, &mut out).unwrap())
        });
        for kernel in cpu::packed_gemm::PackedKernel::ALL {
            match cpu::packed_gemm::PackedGemm::pack(kernel, &spec, &b).unwrap() {
                Some(packed) => {
                    group.bench_function(format!("packed weights ({kernel:?})"), |bench| {
                        bench.iter(|| packed.run(&spec, &a, &mut out).unwrap())
                    });
                }
                None => eprintln!("step product: no {kernel:?} packed kernel on this host"),
            }
        }
        group.finish();
    }
}

criterion_group!(benches, gemm, step_product);
criterion_main!(benches);
