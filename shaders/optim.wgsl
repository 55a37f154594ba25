// optim.wgsl: optimizer updates (SGD, RMSprop, Adam/AdamW) over a flat parameter buffer,
// and gradient clipping by global norm. CPU twin: src/cpu/optim.rs. Host side:
// src/gpu/optim.rs. Formulas and the state layout: src/ops/optim.rs.
//
// Clipping is two deterministic stages: `clip_partial` (one dispatch per gradient buffer)
// writes one sum of squares per workgroup, each summed in a fixed order; `clip_final` (one
// workgroup) sums those partials in a fixed order into clip = [norm, scale]. The optimizer
// entry points read clip[1] on the GPU, so clipping and the update need no host round trip.

const WG: u32 = 256u;
// Elements each clip_partial workgroup sums (16 per invocation).
const CLIP_CHUNK: u32 = 4096u;
const FLAG_NESTEROV: u32 = 1u;
const FLAG_CENTERED: u32 = 2u;
const FLAG_DECOUPLED: u32 = 4u;
const FLAG_CLIP: u32 = 8u;
const FLAG_MOMENTUM: u32 = 16u;
const FLAG_WEIGHT_DECAY: u32 = 32u;

// Written by the host with queue.write_buffer before each step.
struct OptimParams {
    n: u32,
    step: u32,
    flags: u32,
    _pad0: u32,
    lr: f32,
    weight_decay: f32,
    momentum: f32,     // SGD, RMSprop
    dampening: f32,    // SGD
    alpha: f32,        // RMSprop
    eps: f32,          // RMSprop, Adam
    beta1: f32,        // Adam
    beta2: f32,        // Adam
    bias1: f32,        // Adam: 1 - beta1^step (computed on the host in f64)
    bias2: f32,        // Adam: 1 - beta2^step
    _pad1: u32,
    _pad2: u32,
}

struct ClipParams {
    n: u32,          // clip_partial: elements of this gradient; clip_final: partials in all
    offset: u32,     // clip_partial: where this gradient's partials start
    _pad0: u32,
    _pad1: u32,
    max_norm: f32,
    _pad2: u32,
    _pad3: u32,
    _pad4: u32,
}

@group(0) @binding(0) var<uniform> p: OptimParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read> clip: array<f32>;

@group(0) @binding(5) var<uniform> cp: ClipParams;
@group(0) @binding(6) var<storage, read_write> partials: array<f32>;
@group(0) @binding(7) var<storage, read_write> clip_out: array<f32>;

var<workgroup> sums: array<f32, 256>;

fn element(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

// The gradient element as the optimizer sees it: scaled by the clip factor when clipping.
fn scaled_grad(i: u32) -> f32 {
    var g = grad[i];
    if ((p.flags & FLAG_CLIP) != 0u) {
        g = g * clip[1];
    }
    return g;
}

@compute @workgroup_size(256, 1, 1)
fn sgd(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(wg, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let x = param[i];
    var g = scaled_grad(i);
    if ((p.flags & FLAG_WEIGHT_DECAY) != 0u) {
        g = g + p.weight_decay * x;
    }
    if ((p.flags & FLAG_MOMENTUM) != 0u) {
        var b = g;
        if (p.step > 1u) {
            b = p.momentum * state[i] + (1.0 - p.dampening) * g;
        }
        state[i] = b;
        if ((p.flags & FLAG_NESTEROV) != 0u) {
            g = g + p.momentum * b;
        } else {
            g = b;
        }
    }
    param[i] = x - p.lr * g;
}

@compute @workgroup_size(256, 1, 1)
fn rmsprop(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(wg, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let x = param[i];
    var g = scaled_grad(i);
    if ((p.flags & FLAG_WEIGHT_DECAY) != 0u) {
        g = g + p.weight_decay * x;
    }
    let sq = p.alpha * state[i] + (1.0 - p.alpha) * g * g;
    state[i] = sq;
    var v = sq;
    let has_momentum = (p.flags & FLAG_MOMENTUM) != 0u;
    if ((p.flags & FLAG_CENTERED) != 0u) {
        // grad_avg is the plane after square_avg and momentum_buffer (if any).
        let at = select(1u, 2u, has_momentum) * p.n + i;
        let avg = p.alpha * state[at] + (1.0 - p.alpha) * g;
        state[at] = avg;
        v = v - avg * avg;
    }
    let denom = sqrt(v) + p.eps;
    if (has_momentum) {
        let b = p.momentum * state[p.n + i] + g / denom;
        state[p.n + i] = b;
        param[i] = x - p.lr * b;
    } else {
        param[i] = x - p.lr * g / denom;
    }
}

@compute @workgroup_size(256, 1, 1)
fn adam(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(wg, nwg, lid);
    if (i >= p.n) {
        return;
    }
    var x = param[i];
    var g = scaled_grad(i);
    if ((p.flags & FLAG_WEIGHT_DECAY) != 0u) {
        if ((p.flags & FLAG_DECOUPLED) != 0u) {
            x = x * (1.0 - p.lr * p.weight_decay);
        } else {
            g = g + p.weight_decay * x;
        }
    }
    let m = p.beta1 * state[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * state[p.n + i] + (1.0 - p.beta2) * g * g;
    state[i] = m;
    state[p.n + i] = v;
    let m_hat = m / p.bias1;
    let v_hat = v / p.bias2;
    param[i] = x - p.lr * m_hat / (sqrt(v_hat) + p.eps);
}

// Sums sums[0..256] into sums[0] as a fixed tree (the same order on every run).
fn tree_sum(lid: u32) {
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lid < stride) {
            sums[lid] = sums[lid] + sums[lid + stride];
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256, 1, 1)
fn clip_partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = wg.y * nwg.x + wg.x;
    let base = group * CLIP_CHUNK;
    var s = 0.0;
    for (var k = 0u; k < CLIP_CHUNK / WG; k++) {
        let i = base + k * WG + lid;
        if (i < cp.n) {
            let g = grad[i];
            s = s + g * g;
        }
    }
    sums[lid] = s;
    tree_sum(lid);
    if (lid == 0u && base < cp.n) {
        partials[cp.offset + group] = sums[0];
    }
}

@compute @workgroup_size(256, 1, 1)
fn clip_final(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < cp.n; i += WG) {
        s = s + partials[i];
    }
    sums[lid] = s;
    tree_sum(lid);
    if (lid == 0u) {
        let norm = sqrt(sums[0]);
        clip_out[0] = norm;
        clip_out[1] = min(1.0, cp.max_norm / (norm + 1e-6));
    }
}
