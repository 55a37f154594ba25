// dropout.wgsl: dropout masks drawn from Philox4x32-10 (common.wgsl) keyed by
// (seed, step, stream, element), and their elementwise application (forward and backward).
// CPU twin: src/cpu/dropout.rs. Host side: src/gpu/dropout.rs. Semantics: src/ops/dropout.rs.

const WG: u32 = 256u;

struct DropoutParams {
    n: u32,            // mask elements (mask) or input elements (apply)
    threshold: u32,    // keep iff the draw's top 24 bits are below this
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
    stream: u32,
    scale: f32,        // 1 / keep, computed on the host
    mask_len: u32,     // apply: the mask repeats every mask_len elements
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: DropoutParams;
@group(0) @binding(1) var<storage, read_write> mask: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> mask_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn element(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

@compute @workgroup_size(256, 1, 1)
fn make_mask(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(wg, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let r = philox4x32_10(
        vec4<u32>(i, p.stream, p.step_lo, p.step_hi),
        vec2<u32>(p.seed_lo, p.seed_hi),
    );
    mask[i] = select(0.0, p.scale, (r.x >> 8u) < p.threshold);
}

@compute @workgroup_size(256, 1, 1)
fn apply(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(wg, nwg, lid);
    if (i >= p.n) {
        return;
    }
    y[i] = x[i] * mask_in[i % p.mask_len];
}

// One mask per sequence over a sequence tensor, in place: every row (t, b) of a
// [rows, features] tensor times mask[b] ([batch, features]); rows are t * batch + b, or
// b * steps + t when batch_first. Forward (the inputs) and backward (their gradient) alike.
struct RowMaskParams {
    rows: u32,
    features: u32,
    batch: u32,
    steps: u32,
    batch_first: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(5) var<uniform> rp: RowMaskParams;
@group(0) @binding(6) var<storage, read> row_mask: array<f32>;
@group(0) @binding(7) var<storage, read_write> rows_data: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn apply_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(wg, nwg, lid);
    if (i >= rp.rows * rp.features) {
        return;
    }
    let row = i / rp.features;
    let f = i % rp.features;
    var b = row % rp.batch;
    if (rp.batch_first != 0u) {
        b = row / rp.steps;
    }
    rows_data[i] = rows_data[i] * row_mask[b * rp.features + f];
}
