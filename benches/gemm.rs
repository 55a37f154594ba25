//! Criterion benches of the GEMM, CPU and GPU, on the shapes `recur bench gemm` reports.
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

criterion_group!(benches, gemm);
criterion_main!(benches);
