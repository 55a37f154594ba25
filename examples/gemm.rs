//! A matrix product on the GPU, checked against the CPU path: the smallest use of recur's
//! device layer. `cargo run --release --example gemm`

use recur::check::rel_error;
use recur::gpu::gemm;
use recur::{cpu, Gemm, Gpu, GpuTensor};

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.describe());
    let (m, n, k) = (300, 200, 100);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.2).collect();
    let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();

    // C = A * B + bias on the GPU ...
    let spec = Gemm::new(m, n, k);
    let (ga, gb, gbias) = (
        GpuTensor::from_slice(&gpu, &[m, k], &a)?,
        GpuTensor::from_slice(&gpu, &[k, n], &b)?,
        GpuTensor::from_slice(&gpu, &[n], &bias)?,
    );
    let gc = GpuTensor::zeros(&gpu, &[m, n])?;
    gemm(&gpu, &spec, &ga, &gb, Some(&gbias), &gc)?;
    let on_gpu = gc.to_vec()?;

    // ... and on the CPU.
    let mut on_cpu = vec![0.0f32; m * n];
    cpu::gemm(&spec, &a, &b, Some(&bias), &mut on_cpu)?;
    println!("C[0, 0..4] = {:?}", &on_gpu[..4]);
    println!(
        "relative difference GPU vs CPU: {:.2e}",
        rel_error(&on_gpu, &on_cpu)
    );
    Ok(())
}
