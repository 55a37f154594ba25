//! Criterion benches of the recurrent stack, CPU and GPU, forward and forward + backward,
//! on the cases `recur bench rnn` reports: the reference shape (I = H = 256, B = 32,
//! T = 100) on the CPU and on a hardware GPU; on a software adapter the GPU side uses T = 10.
//! `cargo bench --bench recurrent`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use recur::apps::bench::recurrent::RecurrentCase;
use recur::exec::{CpuExecutor, Executor, GpuExecutor};
use recur::nn::{Recurrent, RecurrentConfig, StackOptions};
use recur::ops::recurrent::CellKind;
use recur::Gpu;

fn recurrent(c: &mut Criterion) {
    let gpu = Gpu::new().ok();
    let software = gpu
        .as_ref()
        .is_some_and(|g| g.info().device_type == wgpu::DeviceType::Cpu);
    for cell in [CellKind::Lstm, CellKind::Gru, CellKind::RnnTanh] {
        let case = RecurrentCase::new(cell, 256, 32, 100);
        let layer = Recurrent::new(RecurrentConfig::new(cell, 256, 256), 1).unwrap();
        let x: Vec<f32> = (0..case.batch * case.steps * 256)
            .map(|i| ((i % 19) as f32 - 9.0) / 9.0)
            .collect();
        let mut group = c.benchmark_group(format!(
            "{} {}x{}x{}",
            cell.name(),
            case.hidden,
            case.batch,
            case.steps
        ));
        group.sample_size(10);
        group.throughput(Throughput::Elements(case.forward_flops() as u64));
        let mut cpu = CpuExecutor::<f32>::new();
        let infer = layer
            .plan(&mut cpu, case.batch, case.steps, StackOptions::default())
            .unwrap();
        let train = layer
            .plan(&mut cpu, case.batch, case.steps, StackOptions::with_grads())
            .unwrap();
        cpu.write(infer.program, infer.input(), 0, &x).unwrap();
        cpu.write(train.program, train.input(), 0, &x).unwrap();
        group.bench_function("cpu forward", |b| {
            b.iter(|| cpu.run(infer.program, 0, 0).unwrap())
        });
        group.bench_function("cpu forward+backward", |b| {
            b.iter(|| {
                cpu.run(train.program, 0, 0).unwrap();
                cpu.run(train.program, 1, 0).unwrap();
            })
        });
        if let Some(gpu) = &gpu {
            let steps = if software { 10 } else { case.steps };
            let mut exec = GpuExecutor::new(gpu);
            let infer = layer
                .plan(&mut exec, case.batch, steps, StackOptions::default())
                .unwrap();
            let train = layer
                .plan(&mut exec, case.batch, steps, StackOptions::with_grads())
                .unwrap();
            let x = &x[..case.batch * steps * 256];
            exec.write(infer.program, infer.input(), 0, x).unwrap();
            exec.write(train.program, train.input(), 0, x).unwrap();
            group.bench_function(format!("gpu forward (T = {steps})"), |b| {
                b.iter(|| {
                    exec.run(infer.program, 0, 0).unwrap();
                    gpu.wait().unwrap();
                })
            });
            group.bench_function(format!("gpu forward+backward (T = {steps})"), |b| {
                b.iter(|| {
                    exec.run(train.program, 0, 0).unwrap();
                    exec.run(train.program, 1, 0).unwrap();
                    gpu.wait().unwrap();
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, recurrent);
criterion_main!(benches);
