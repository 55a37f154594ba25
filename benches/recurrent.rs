//! Criterion benches of the recurrent stack, CPU and GPU, forward and forward + backward,
//! on the cases `recur bench rnn` reports: the reference shape (I = H = 256, B = 32,
//! T = 100) on the CPU and on a hardware GPU; on a software adapter the GPU side uses T = 10.
//! And one CPU inference step of batch 1 (`recur generate`'s shape: an LSTM of 192 units over
//! a 32-wide embedding) with the weights prepared at every pass and once for all passes.
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

/// One inference step at a time, as a language model samples: preparing the weights (split
/// among threads, transposed, packed) costs more than the step itself.
fn one_step(c: &mut Criterion) {
    use recur::cpu::recurrent::{infer, infer_prepared, InferWeights, Weights};
    use recur::ops::recurrent::RecurrentShape;
    let (i, h) = (32, 192);
    let shape = RecurrentShape::new(CellKind::Lstm, i, h, 1, 1);
    let value =
        |n: usize| -> Vec<f32> { (0..n).map(|k| ((k % 23) as f32 - 11.0) / 110.0).collect() };
    let (w_ih, w_hh, b) = (value(4 * h * i), value(4 * h * h), value(4 * h));
    let w = Weights {
        w_ih: &w_ih,
        w_hh: &w_hh,
        b_ih: Some(&b),
        b_hh: Some(&b),
    };
    let (x, h0, c0) = (value(i), value(h), value(h));
    let mut y = vec![0.0f32; h];
    let mut group = c.benchmark_group("lstm 192x1x1 one step");
    group.bench_function("cpu infer, weights prepared every pass", |bench| {
        bench.iter(|| infer(&shape, &x, None, Some(&h0), Some(&c0), &w, &mut y).unwrap())
    });
    let mut prepared = InferWeights::new(&shape, &w).unwrap();
    group.bench_function("cpu infer, weights prepared once", |bench| {
        bench.iter(|| {
            infer_prepared(
                &shape,
                &x,
                None,
                Some(&h0),
                Some(&c0),
                &mut prepared,
                &mut y,
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, recurrent, one_step);
criterion_main!(benches);
