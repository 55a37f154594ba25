// loss.wgsl: softmax cross-entropy over logits [rows, classes] with u32 targets and an
// optional ignore index, and mean squared error; each writes its loss and its gradient.
// CPU twin: src/cpu/loss.rs. Host side: src/gpu/loss.rs. Description: src/ops/loss.rs.
//
// Cross-entropy is three dispatches: `ce_count` (one workgroup) counts the rows that are
// not ignored into stats[1]; `ce_rows` (one workgroup per row) writes the row's loss
// `logsumexp(x) - x[t]` and its gradient `(softmax(x) - onehot(t)) / count` in one pass;
// `ce_reduce` (one workgroup) sums the row losses in a fixed order into stats[0]. The count
// is made on the GPU so the targets can come from any buffer without a host round trip.
// MSE is `mse_partial` (fixed-order partial sums per workgroup, and the gradient) then
// `mse_reduce` (one workgroup sums the partials in order).

const WG: u32 = 256u;
const ROW_WG: u32 = 64u;
// Elements each mse_partial workgroup handles (16 per invocation).
const MSE_CHUNK: u32 = 4096u;

struct LossParams {
    rows: u32,       // cross-entropy rows, or MSE elements
    classes: u32,
    ignore: u32,
    has_ignore: u32,
    partials: u32,   // MSE: partial sums written by mse_partial
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: LossParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;     // MSE: predictions
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;  // [loss, count]
@group(0) @binding(6) var<storage, read> mse_target: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

var<workgroup> red: array<f32, 256>;
var<workgroup> cnt: array<u32, 256>;

fn ignored(t: u32) -> bool {
    return p.has_ignore != 0u && t == p.ignore;
}

// Fixed-tree sum of red[0..n] into red[0] (n a power of two, all invocations call it).
fn tree_sum(lid: u32, n: u32) {
    for (var stride = n / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lid < stride) {
            red[lid] = red[lid] + red[lid + stride];
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256, 1, 1)
fn ce_count(@builtin(local_invocation_index) lid: u32) {
    var c = 0u;
    for (var r = lid; r < p.rows; r += WG) {
        c += select(1u, 0u, ignored(targets[r]));
    }
    cnt[lid] = c;
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lid < stride) {
            cnt[lid] = cnt[lid] + cnt[lid + stride];
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        stats[1] = f32(cnt[0]);
    }
}

@compute @workgroup_size(64, 1, 1)
fn ce_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y * nwg.x + wg.x;
    // Uniform control flow: the whole workgroup leaves together.
    if (row >= p.rows) {
        return;
    }
    let c = p.classes;
    let base = row * c;
    let t = targets[row];
    if (ignored(t)) {
        for (var j = lid; j < c; j += ROW_WG) {
            grad[base + j] = 0.0;
        }
        if (lid == 0u) {
            row_loss[row] = 0.0;
        }
        return;
    }
    // The row maximum, for a softmax that never overflows.
    var m = -F32_MAX;
    for (var j = lid; j < c; j += ROW_WG) {
        m = max(m, logits[base + j]);
    }
    red[lid] = m;
    for (var stride = ROW_WG / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lid < stride) {
            red[lid] = max(red[lid], red[lid + stride]);
        }
    }
    workgroupBarrier();
    m = red[0];
    workgroupBarrier();
    var s = 0.0;
    for (var j = lid; j < c; j += ROW_WG) {
        s = s + exp(logits[base + j] - m);
    }
    red[lid] = s;
    tree_sum(lid, ROW_WG);
    s = red[0];
    let count = stats[1];
    let inv = select(0.0, 1.0 / count, count > 0.0);
    let valid = t < c;
    for (var j = lid; j < c; j += ROW_WG) {
        let soft = exp(logits[base + j] - m) / s;
        let d = (soft - select(0.0, 1.0, j == t)) * inv;
        // An out-of-range target (the host validates targets, so only a buffer written
        // behind its back) poisons the row instead of reading out of bounds.
        grad[base + j] = select(quiet_nan(), d, valid);
    }
    if (lid == 0u) {
        var loss = quiet_nan();
        if (valid) {
            loss = m + log(s) - logits[base + t];
        }
        row_loss[row] = loss;
    }
}

@compute @workgroup_size(256, 1, 1)
fn ce_reduce(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        s = s + row_loss[r];
    }
    red[lid] = s;
    tree_sum(lid, WG);
    if (lid == 0u) {
        let count = stats[1];
        stats[0] = select(0.0, red[0] / count, count > 0.0);
    }
}

@compute @workgroup_size(256, 1, 1)
fn mse_partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = wg.y * nwg.x + wg.x;
    let base = group * MSE_CHUNK;
    let scale = 2.0 / f32(p.rows);
    var s = 0.0;
    for (var k = 0u; k < MSE_CHUNK / WG; k++) {
        let i = base + k * WG + lid;
        if (i < p.rows) {
            let d = logits[i] - mse_target[i];
            grad[i] = scale * d;
            s = s + d * d;
        }
    }
    red[lid] = s;
    tree_sum(lid, WG);
    if (lid == 0u && group < p.partials) {
        partials[group] = red[0];
    }
}

@compute @workgroup_size(256, 1, 1)
fn mse_reduce(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < p.partials; i += WG) {
        s = s + partials[i];
    }
    red[lid] = s;
    tree_sum(lid, WG);
    if (lid == 0u) {
        stats[0] = red[0] / f32(p.rows);
    }
}
