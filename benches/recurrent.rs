//! Criterion benches of the recurrent stack, CPU and GPU, forward and forward + backward,
//! on the cases `recur bench rnn` reports: the reference shape (I = H = 256, B = 32,
//! T = 100) on the CPU and on a hardware GPU; on a software adapter the GPU side uses T = 10.
//! `cargo bench --bench recurrent`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use recur::bench::recurrent::RecurrentCase;
use recur::gpu::Recorder;
use recur::nn::{GpuRecurrent, Recurrent, RecurrentConfig};
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
        let p = layer.params_as::<f32>();
        let mut group = c.benchmark_group(format!(
            "{} {}x{}x{}",
            cell.name(),
            case.hidden,
            case.batch,
            case.steps
        ));
        group.sample_size(10);
        group.throughput(Throughput::Elements(case.forward_flops() as u64));
        group.bench_function("cpu forward", |b| {
            b.iter(|| {
                layer
                    .forward_cpu(&p, &x, case.batch, case.steps, None, None, None)
                    .unwrap()
            })
        });
        group.bench_function("cpu forward+backward", |b| {
            b.iter(|| {
                let (out, tape) = layer
                    .forward_cpu(&p, &x, case.batch, case.steps, None, None, None)
                    .unwrap();
                layer
                    .backward_cpu(&p, &tape, Some(&out.output), None, None)
                    .unwrap()
            })
        });
        if let Some(gpu) = &gpu {
            let steps = if software { 10 } else { case.steps };
            let stack = GpuRecurrent::new(gpu, &layer, case.batch, steps, true).unwrap();
            stack.input().write(&x[..case.batch * steps * 256]).unwrap();
            group.bench_function(format!("gpu forward (T = {steps})"), |b| {
                b.iter(|| {
                    let mut rec = Recorder::new(gpu);
                    stack.record_forward(&mut rec).unwrap();
                    rec.submit().unwrap();
                    gpu.wait().unwrap();
                })
            });
            group.bench_function(format!("gpu forward+backward (T = {steps})"), |b| {
                b.iter(|| {
                    let mut rec = Recorder::new(gpu);
                    stack.record_forward(&mut rec).unwrap();
                    stack.record_backward(&mut rec).unwrap();
                    rec.submit().unwrap();
                    gpu.wait().unwrap();
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, recurrent);
criterion_main!(benches);
