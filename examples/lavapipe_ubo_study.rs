//! Study: matrix-product layouts on CPU-hosted adapters (lavapipe / llvmpipe), measured
//! against recur's `main_cpu` GEMM in the same run. Not part of the library; the findings are
//! in BENCHMARKS.md ("Uniform loads on lavapipe").
//!
//! `cargo run --release --example lavapipe_ubo_study [reps]`
//! (`ONLY_INFO=1`: limits only; `ONLY_UNROLLED=1`: skip the looped kernels; `PANELS=4`: also
//! time invocations that cover several unrolled panels; beyond 32 columns per invocation
//! llvmpipe's compile of the straight-line code takes minutes.)
//!
//! C[M, N] = A[M, K] * B[K, N]. The probe kernels put invocations (SIMD lanes on llvmpipe)
//! over rows of A, so every lane of a workgroup reads the same element of B. B is packed
//! into column panels ([K, 4 * NV] each, contiguous) and read
//! - in a loop over k, from a uniform buffer (64 KiB windows, one dispatch per window) or
//!   from a storage buffer in the same layout: the offset depends on the loop counter;
//! - or from straight-line code whose offsets are literals (the k loop unrolled in the
//!   generated source), one dispatch per panel (the bind group's offset picks it): Mesa 22.3
//!   then loads each element once and broadcasts it, from uniform and storage buffers alike.

use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use recur::gpu::{GemmPlan, Kernel, KernelKey, Recorder};
use recur::{Gemm, Gpu, GpuTensor};
use wgpu::util::DeviceExt;

const SHADER: &str = r#"
struct P { m: u32, k: u32, lda: u32, ldc: u32, col0: u32, n: u32, panel0: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> bw: array<vec4<f32>, 4096>;
@group(0) @binding(4) var<storage, read> bs: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> au: array<vec4<f32>, 4096>;
@group(0) @binding(6) var<storage, read_write> c: array<f32>;

override NV: u32 = 2u;     // vec4s of columns per invocation
override AMODE: u32 = 1u;  // 0: A scalar from storage, 1: vec4 from storage, 2: vec4 from uniform
override BUBO: bool = true; // B from the uniform window (else storage, same layout)

fn bload(i: u32) -> vec4<f32> {
    if (BUBO) { return bw[i]; }
    return bs[p.panel0 * p.k * NV + i];
}

fn aload4(row: u32, k4: u32) -> vec4<f32> {
    if (AMODE == 2u) { return au[(row * p.lda) / 4u + k4]; }
    if (AMODE == 1u) { return a4[(row * p.lda) / 4u + k4]; }
    let at = row * p.lda + k4 * 4u;
    return vec4<f32>(a[at], a[at + 1u], a[at + 2u], a[at + 3u]);
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row_raw = wg.y * 64u + lid.x;
    let row = min(row_raw, p.m - 1u);
    let pb = wg.x * p.k * NV;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k4 = 0u; k4 < p.k / 4u; k4++) {
        let av = aload4(row, k4);
        for (var e = 0u; e < 4u; e++) {
            let base = pb + (k4 * 4u + e) * NV;
            let x = av[e];
            acc0 += x * bload(base);
            if (NV > 1u) { acc1 += x * bload(base + 1u); }
            if (NV > 2u) { acc2 += x * bload(base + 2u); }
            if (NV > 3u) { acc3 += x * bload(base + 3u); }
        }
    }
    if (row_raw >= p.m) { return; }
    let col = p.col0 + wg.x * NV * 4u;
    let at = row * p.ldc + col;
    for (var j = 0u; j < 4u; j++) {
        c[at + j] = acc0[j];
        if (NV > 1u) { c[at + 4u + j] = acc1[j]; }
        if (NV > 2u) { c[at + 8u + j] = acc2[j]; }
        if (NV > 3u) { c[at + 12u + j] = acc3[j]; }
    }
}
"#;

const WINDOW_VEC4: usize = 4096;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Probe {
    kernel: Kernel,
    groups: Vec<(wgpu::BindGroup, [u32; 3])>,
}

#[allow(clippy::too_many_arguments)]
fn probe(
    gpu: &Gpu,
    module: &wgpu::ShaderModule,
    (m, n, k): (usize, usize, usize),
    nv: usize,
    amode: u32,
    bubo: bool,
    a: &GpuTensor,
    b_packed: &wgpu::Buffer,
    a_ubo: &wgpu::Buffer,
    c: &GpuTensor,
) -> Result<Probe> {
    let consts = [
        ("NV", nv as f64),
        ("AMODE", amode as f64),
        ("BUBO", bubo as u32 as f64),
    ];
    let pipeline = gpu
        .device()
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("probe"),
            layout: None,
            module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &consts,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
    let layout = pipeline.get_bind_group_layout(0);
    let kernel = Kernel {
        pipeline,
        layout,
        key: KernelKey::new("probe", "main"),
        invocations: None,
    };
    let panel = k * nv; // vec4s per panel
    let panels_per_window = WINDOW_VEC4 / panel;
    let cols_per_window = panels_per_window * nv * 4;
    let windows = n.div_ceil(cols_per_window);
    let mut groups = Vec::new();
    for w in 0..windows {
        let params: [u32; 8] = [
            m as u32,
            k as u32,
            k as u32,
            n as u32,
            (w * cols_per_window) as u32,
            n as u32,
            (w * panels_per_window) as u32,
            0,
        ];
        let ub = gpu
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let window = wgpu::BufferBinding {
            buffer: b_packed,
            offset: (w * panels_per_window * panel * 16) as u64,
            size: std::num::NonZeroU64::new(65536),
        };
        let entries = [
            wgpu::BindGroupEntry {
                binding: 0,
                resource: ub.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: a.buffer().as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: a.buffer().as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: wgpu::BindingResource::Buffer(window),
            },
            wgpu::BindGroupEntry {
                binding: 4,
                resource: b_packed.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 5,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: a_ubo,
                    offset: 0,
                    size: std::num::NonZeroU64::new(65536),
                }),
            },
            wgpu::BindGroupEntry {
                binding: 6,
                resource: c.buffer().as_entire_binding(),
            },
        ];
        // naga derives the layout before override constants fold the unused paths away:
        // every binding stays in it.
        let used = entries;
        let bg = gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &used,
        });
        groups.push((bg, [panels_per_window as u32, m.div_ceil(64) as u32, 1]));
    }
    Ok(Probe { kernel, groups })
}

/// A kernel whose B offsets are compile-time constants (the k loop unrolled in the source):
/// llvmpipe then loads each B element once and broadcasts it. One dispatch per panel of
/// 4 * nv columns; the bind group's offset picks the panel.
fn unrolled_source(k: usize, nv: usize, panels: usize, a_ubo: bool, b_storage: bool) -> String {
    let mut s = String::from(
        "struct P { m: u32, k: u32, lda: u32, ldc: u32, col0: u32, n: u32, panel0: u32, _b: u32 }\n\
         @group(0) @binding(0) var<uniform> p: P;\n\
         @group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;\n\
         @group(0) @binding(3) var<storage, read_write> c: array<f32>;\n\
         @group(0) @binding(5) var<uniform> au: array<vec4<f32>, 4096>;\n",
    );
    if b_storage {
        s += "@group(0) @binding(2) var<storage, read> bw: array<vec4<f32>>;\n";
    } else {
        s += &format!(
            "@group(0) @binding(2) var<uniform> bw: array<vec4<f32>, {}>;\n",
            k * nv * panels
        );
    }
    s += "@compute @workgroup_size(64, 1, 1)\nfn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {\n";
    s += "    let row_raw = wg.y * 64u + lid.x;\n    let row = min(row_raw, p.m - 1u);\n    let ab = row * p.lda / 4u;\n";
    s += "    let at = row * p.ldc + p.col0;\n";
    for pi in 0..panels {
        s += "    {\n";
        for j in 0..nv {
            s += &format!("    var acc{j} = vec4<f32>(0.0);\n");
        }
        for k4 in 0..k / 4 {
            let src = if a_ubo { "au" } else { "a4" };
            s += &format!("    {{ let av = {src}[ab + {k4}u];\n");
            for (e, comp) in ["x", "y", "z", "w"].iter().enumerate() {
                for j in 0..nv {
                    let off = (pi * k + k4 * 4 + e) * nv + j;
                    s += &format!("    acc{j} += av.{comp} * bw[{off}];\n");
                }
            }
            s += "    }\n";
        }
        s += "    if (row_raw < p.m) {\n";
        for j in 0..nv {
            for e in 0..4 {
                s += &format!("    c[at + {}u] = acc{j}[{e}];\n", pi * nv * 4 + j * 4 + e);
            }
        }
        s += "    }\n    }\n";
    }
    s += "}\n";
    s
}

#[allow(clippy::too_many_arguments)]
fn probe_unrolled(
    gpu: &Gpu,
    (m, n, k): (usize, usize, usize),
    nv: usize,
    panels: usize,
    a_ubo: bool,
    b_storage: bool,
    a: &GpuTensor,
    b_packed: &wgpu::Buffer,
    a_ubo_buf: &wgpu::Buffer,
    c: &GpuTensor,
) -> Result<Probe> {
    let t = Instant::now();
    let module = gpu
        .device()
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("unrolled"),
            source: wgpu::ShaderSource::Wgsl(
                unrolled_source(k, nv, panels, a_ubo, b_storage).into(),
            ),
        });
    let pipeline = gpu
        .device()
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("unrolled"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
    let layout = pipeline.get_bind_group_layout(0);
    println!(
        "    (unrolled pipeline built in {:.2} s)",
        t.elapsed().as_secs_f64()
    );
    let kernel = Kernel {
        pipeline,
        layout,
        key: KernelKey::new("probe", "unrolled"),
        invocations: None,
    };
    let pc = 4 * nv;
    let panel_bytes = (k * nv * 16 * panels) as u64;
    let mut groups = Vec::new();
    for pi in 0..n / (pc * panels) {
        let params: [u32; 8] = [
            m as u32,
            k as u32,
            k as u32,
            n as u32,
            (pi * pc * panels) as u32,
            n as u32,
            0,
            0,
        ];
        let ub = gpu
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: ub.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: a.buffer().as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b_packed,
                    offset: pi as u64 * panel_bytes,
                    size: std::num::NonZeroU64::new(panel_bytes),
                }),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: c.buffer().as_entire_binding(),
            },
        ];
        if a_ubo {
            entries.remove(1);
            entries.push(wgpu::BindGroupEntry {
                binding: 5,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: a_ubo_buf,
                    offset: 0,
                    size: std::num::NonZeroU64::new(65536),
                }),
            });
        }
        let bg = gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        groups.push((bg, [1, m.div_ceil(64) as u32, 1]));
    }
    Ok(Probe { kernel, groups })
}

fn time(gpu: &Gpu, reps: usize, mut record: impl FnMut(&mut Recorder)) -> Result<(f64, f64)> {
    let mut wall = Vec::new();
    let mut dev = Vec::new();
    for i in 0..reps + 2 {
        let start = Instant::now();
        let mut rec = Recorder::timed(gpu);
        record(&mut rec);
        let r = rec.submit()?;
        gpu.wait()?;
        if i >= 2 {
            wall.push(start.elapsed().as_secs_f64());
            dev.extend(r.gpu_seconds);
        }
    }
    Ok((
        median(wall),
        if dev.is_empty() {
            f64::NAN
        } else {
            median(dev)
        },
    ))
}

fn main() -> Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let gpu = Gpu::new()?;
    let l = gpu.limits();
    println!("adapter: {}", gpu.describe());
    println!(
        "max_uniform_buffers_per_shader_stage {}, max_uniform_buffer_binding_size {}, min_uniform_buffer_offset_alignment {}, max_dynamic_uniform_buffers_per_pipeline_layout {}",
        l.max_uniform_buffers_per_shader_stage,
        l.max_uniform_buffer_binding_size,
        l.min_uniform_buffer_offset_alignment,
        l.max_dynamic_uniform_buffers_per_pipeline_layout
    );
    let f = gpu.device().features();
    println!(
        "BUFFER_BINDING_ARRAY {}, STORAGE_RESOURCE_BINDING_ARRAY {}, max_binding_array_elements_per_shader_stage {}",
        f.contains(wgpu::Features::BUFFER_BINDING_ARRAY),
        f.contains(wgpu::Features::STORAGE_RESOURCE_BINDING_ARRAY),
        gpu.device().limits().max_binding_array_elements_per_shader_stage
    );
    if std::env::var("ONLY_INFO").is_ok() {
        return Ok(());
    }
    let module = gpu
        .device()
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("probe"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
    let shapes = [(32usize, 1024usize, 256usize), (3200, 1024, 256)];
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for (m, n, k) in shapes {
        let flops = 2.0 * (m * n * k) as f64;
        let av: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let bv: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let ga = GpuTensor::from_slice(&gpu, &[m, k], &av)?;
        let gb = GpuTensor::from_slice(&gpu, &[k, n], &bv)?;
        let gc = GpuTensor::zeros(&gpu, &[m, n])?;
        let mut want = vec![0.0f32; m * n];
        recur::cpu::gemm(&Gemm::new(m, n, k), &av, &bv, None, &mut want)?;
        let base = GemmPlan::new(&gpu, &Gemm::new(m, n, k), &ga, &gb, None, &gc)?;
        let (w, d) = time(&gpu, reps, |r| base.record(r))?;
        println!(
            "{m}x{n}x{k} main_cpu (storage): wall {:.2} ms {:.2} GFLOP/s, device {:.2} GFLOP/s",
            w * 1e3,
            flops / w / 1e9,
            flops / d / 1e9
        );
        let a_ubo_data: Vec<f32> = {
            let mut v = av.clone();
            v.resize(16384.max(v.len()), 0.0);
            v
        };
        let a_ubo = gpu
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(&a_ubo_data),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        for nv in [1usize, 2, 3, 4] {
            // Pack B into panels of 4 * nv columns: panel p, row kk, column j at
            // (p * k + kk) * 4nv + j. Panels that do not fit a window start the next one.
            let pc = 4 * nv;
            let panel = k * nv;
            let ppw = WINDOW_VEC4 / panel;
            let cpw = ppw * pc;
            let windows = n.div_ceil(cpw);
            let mut packed = vec![0.0f32; windows * WINDOW_VEC4 * 4];
            let npanels = n.div_ceil(pc);
            for p in 0..npanels {
                let (w, pi) = (p / ppw, p % ppw);
                for kk in 0..k {
                    for j in 0..pc {
                        let col = p * pc + j;
                        if col < n {
                            packed[w * WINDOW_VEC4 * 4 + (pi * k + kk) * pc + j] = bv[kk * n + col];
                        }
                    }
                }
            }
            let bp = gpu
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: bytemuck::cast_slice(&packed),
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::STORAGE,
                });
            if !n.is_multiple_of(cpw) || !WINDOW_VEC4.is_multiple_of(panel) {
                println!("  nv {nv}: {n} columns do not fill whole windows of {cpw}; skipped");
                continue;
            }
            let mut modes = vec![(1u32, true), (0, true), (1, false)];
            if m * k <= 16384 {
                modes.push((2, true));
            }
            let only_unrolled = std::env::var("ONLY_UNROLLED").is_ok();
            if only_unrolled {
                modes.clear();
            }
            for (use_au, b_storage) in [(false, false), (true, false), (false, true)] {
                if use_au && m * k > 16384 {
                    continue;
                }
                if nv == 1 {
                    continue;
                }
                let pr = probe_unrolled(
                    &gpu,
                    (m, n, k),
                    nv,
                    1,
                    use_au,
                    b_storage,
                    &ga,
                    &bp,
                    &a_ubo,
                    &gc,
                )?;
                gc.write(&vec![f32::NAN; m * n])?;
                let mut rec = Recorder::new(&gpu);
                for (bg, g) in &pr.groups {
                    rec.dispatch(&pr.kernel, bg, *g, recur::gpu::Cost::ZERO);
                }
                rec.submit()?;
                let got = gc.to_vec()?;
                let err = recur::check::rel_error(&got, &want);
                let (w, d) = time(&gpu, reps, |r| {
                    for (bg, g) in &pr.groups {
                        r.dispatch(&pr.kernel, bg, *g, recur::gpu::Cost::ZERO);
                    }
                })?;
                println!(
                    "  {} cols/inv, UNROLLED const B offsets, B {}, A vec4 {}: {} dispatches, wall {:.2} ms {:.2} GFLOP/s, device {:.2} GFLOP/s, rel err {err:.1e}",
                    4 * nv,
                    if b_storage { "storage" } else { "uniform" },
                    if use_au { "uniform" } else { "storage" },
                    pr.groups.len(),
                    w * 1e3,
                    flops / w / 1e9,
                    flops / d / 1e9
                );
            }
            let sweep: Vec<usize> = std::env::var("PANELS")
                .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
                .unwrap_or_default();
            for &panels in sweep.iter().filter(|_| nv == 4 || nv == 2) {
                if !n.is_multiple_of(4 * nv * panels) {
                    continue;
                }
                let pr = probe_unrolled(
                    &gpu,
                    (m, n, k),
                    nv,
                    panels,
                    false,
                    true,
                    &ga,
                    &bp,
                    &a_ubo,
                    &gc,
                )?;
                gc.write(&vec![f32::NAN; m * n])?;
                let mut rec = Recorder::new(&gpu);
                for (bg, g) in &pr.groups {
                    rec.dispatch(&pr.kernel, bg, *g, recur::gpu::Cost::ZERO);
                }
                rec.submit()?;
                let err = recur::check::rel_error(&gc.to_vec()?, &want);
                let (w, d) = time(&gpu, reps, |r| {
                    for (bg, g) in &pr.groups {
                        r.dispatch(&pr.kernel, bg, *g, recur::gpu::Cost::ZERO);
                    }
                })?;
                println!(
                    "  {} cols/inv in {panels} unrolled panels, const B offsets, B storage, A vec4 storage: {} dispatches, wall {:.2} ms {:.2} GFLOP/s, device {:.2} GFLOP/s, rel err {err:.1e}",
                    4 * nv * panels,
                    pr.groups.len(),
                    w * 1e3,
                    flops / w / 1e9,
                    flops / d / 1e9
                );
            }
            for (amode, bubo) in modes {
                let pr = probe(
                    &gpu,
                    &module,
                    (m, n, k),
                    nv,
                    amode,
                    bubo,
                    &ga,
                    &bp,
                    &a_ubo,
                    &gc,
                )?;
                gc.write(&vec![f32::NAN; m * n])?;
                let mut rec = Recorder::new(&gpu);
                for (bg, g) in &pr.groups {
                    rec.dispatch(&pr.kernel, bg, *g, recur::gpu::Cost::ZERO);
                }
                rec.submit()?;
                let got = gc.to_vec()?;
                let err = recur::check::rel_error(&got, &want);
                let (w, d) = time(&gpu, reps, |r| {
                    for (bg, g) in &pr.groups {
                        r.dispatch(&pr.kernel, bg, *g, recur::gpu::Cost::ZERO);
                    }
                })?;
                let aname =
                    ["A scalar storage", "A vec4 storage", "A vec4 uniform"][amode as usize];
                let bname = if bubo { "B uniform" } else { "B storage" };
                println!(
                    "  {} cols/inv, {aname}, {bname}: {} dispatches, wall {:.2} ms {:.2} GFLOP/s, device {:.2} GFLOP/s, rel err {err:.1e}",
                    4 * nv,
                    pr.groups.len(),
                    w * 1e3,
                    flops / w / 1e9,
                    flops / d / 1e9
                );
            }
        }
    }
    Ok(())
}
