// word2vec_train.wgsl: one batch of word2vec updates in two dispatches.
//
// 1. A gradient kernel scores every item's targets from the weights as they were at the
//    start of the batch and stores the item's hidden vector, the output gradients (already
//    times the learning rate), the hidden layer's update and the loss.
// 2. An apply kernel adds the summed contributions to each row, one invocation per row
//    element, in the order the host-built index lists them, and sums the batch's loss.
//
// The trainer records many batches into one submit, two dispatches each (the apply of batch
// n must finish before the gradients of batch n + 1 read the weights, so two is the least).
// Each batch has its own slot: its packed words and its parameters are bound at the slot's
// offset, so nothing on the host changes between the dispatches of one submit.
//
// Two gradient kernels compute the same thing:
// - `sampled_gradients` / `softmax_gradients` (GPUs): one item per LANES invocations, which
//   spread a row's dimensions among them, so every row load is coalesced (LANES consecutive
//   floats) and dot products are reduced in workgroup memory;
// - `*_per_item` (adapters that run shaders on the CPU): one invocation per item walking
//   whole rows, no barriers. On lavapipe that shape is the faster one (BENCHMARKS.md).
//
// Cost per dispatch, beside each entry point (d = vector size; n_i, n_in, n_t = items, input
// slots, target slots of the batch; u_out, u_in = distinct output and input rows; V = output
// rows; G = the dispatch's workgroups): FLOPs, and bytes of global memory read and written,
// each address counted once per workgroup (what a workgroup reads twice is assumed to hit
// its cache). The host computes the same figures per batch (`batch_costs` in
// src/gpu/word2vec_train.rs) for `recur bench word2vec`.
//
// Layout of a batch: src/ops/word2vec_train.rs. CPU twins: src/cpu/word2vec.rs. Host side:
// src/gpu/word2vec_train.rs. Why this update rule: src/word2vec/gpu_train.rs.

struct TrainParams {
    items: u32,
    dim: u32,
    out_rows: u32,       // rows of the output matrix
    out_unique: u32,     // distinct output rows in the output index
    in_unique: u32,      // distinct input rows in the input index
    at_inputs: u32,      // section offsets in `batch`, in u32 words
    at_targets: u32,
    at_out_rows: u32,
    at_out_seg: u32,
    at_out_entries: u32,
    at_in_rows: u32,
    at_in_seg: u32,
    at_in_entries: u32,
    alpha: f32,
    loss_slot: u32,      // where the apply kernel writes this batch's loss
    row_cap: u32,        // contributions to a row beyond this scale its update down (0: off)
    out_groups: u32,     // workgroups of the apply kernel's output-row section
    in_groups: u32,      // workgroups of its input-row section (then one for the loss)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: TrainParams;
@group(0) @binding(1) var<storage, read> batch: array<u32>;
// The weights: read-only views for the gradient kernels, writable ones for the apply kernel
// (the same buffers; each entry point binds only the views it uses).
@group(0) @binding(2) var<storage, read> syn0: array<f32>;
@group(0) @binding(3) var<storage, read> syn1: array<f32>;
@group(0) @binding(4) var<storage, read_write> syn0_rw: array<f32>;
@group(0) @binding(5) var<storage, read_write> syn1_rw: array<f32>;
// The gradient kernels' results: written there, read by the apply kernel.
@group(0) @binding(6) var<storage, read_write> hidden_rw: array<f32>;
@group(0) @binding(7) var<storage, read_write> hidden_grad_rw: array<f32>;
@group(0) @binding(8) var<storage, read_write> grads_rw: array<f32>;
@group(0) @binding(9) var<storage, read_write> item_loss_rw: array<f32>;
@group(0) @binding(10) var<storage, read> hidden: array<f32>;
@group(0) @binding(11) var<storage, read> hidden_grad: array<f32>;
@group(0) @binding(12) var<storage, read> grads: array<f32>;
@group(0) @binding(13) var<storage, read> item_loss: array<f32>;
@group(0) @binding(14) var<storage, read_write> loss_slots: array<f32>;

// Invocations per workgroup of the row-parallel and apply kernels.
const WG: u32 = 256u;
// Row-parallel gradient kernels: LANES invocations per item, ITEMS items per workgroup, and
// CHUNK targets scored per reduction. A lane sums its share of CHUNK dot products; then each
// lane adds LANES / 4 partials of one target (one quarter of the lanes), and every lane adds
// the four quarters of every target, so each lane ends with all CHUNK dot products after two
// barriers. LANES = 4 * CHUNK makes that come out even.
const LANES: u32 = 32u;
const ITEMS: u32 = 8u;
const CHUNK: u32 = 8u;
const QUARTER: u32 = 8u; // LANES / 4
// Row stride of `partial`: LANES + 1, so the quarter sums (lane l reads 8 * l + m within its
// item) fall in 32 different banks.
const PAD: u32 = 33u;
// Invocations per workgroup of the per-item kernels.
const WG_ITEM: u32 = 64u;

var<workgroup> partial: array<f32, 2112>; // ITEMS * CHUNK * PAD
var<workgroup> quarter: array<f32, 256>;  // ITEMS * CHUNK * 4; the apply kernel's loss sum

// The workgroup's index in a grid that wraps into y past 65,535 workgroups.
fn group_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}

// ln(sigmoid(x)), stable for both signs (the CPU twin uses the same formula).
fn log_sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return -log(1.0 + exp(-x));
    }
    return x - log(1.0 + exp(x));
}

// The loss of a target with score f and label 1 or 0.
fn target_loss(f: f32, label: u32) -> f32 {
    if (label == 1u) {
        return -log_sigmoid(f);
    }
    return -log_sigmoid(-f);
}

// Update scale of a row reached by n contributions in this batch.
fn cap_scale(n: u32) -> f32 {
    if (p.row_cap == 0u || n <= p.row_cap) {
        return 1.0;
    }
    return f32(p.row_cap) / f32(n);
}

// ================================================================ row-parallel kernels

// hidden[b] = the mean of item b's input rows; lane l writes elements l, l + LANES, ...
fn write_hidden_lanes(b: u32, l: u32) {
    let in_start = p.at_inputs + batch[4u * b];
    let in_count = batch[4u * b + 1u];
    let inv = 1.0 / f32(in_count);
    for (var j = l; j < p.dim; j += LANES) {
        var s = 0.0;
        for (var c = 0u; c < in_count; c++) {
            s += syn0[batch[in_start + c] * p.dim + j];
        }
        hidden_rw[b * p.dim + j] = s * inv;
    }
}

// hidden[b] . syn1[rows[t]] for t < n, summed over the LANES invocations of item i (slot i
// of the workgroup); every lane of the item gets all of them. The whole workgroup calls it
// in uniform control flow (two barriers); n may differ per item, and an invalid item (past
// the batch) passes n = 0.
fn chunk_dots(i: u32, l: u32, b: u32, rows: array<u32, 8>, n: u32) -> array<f32, 8> {
    var acc: array<f32, 8>;
    if (n > 0u) {
        for (var j = l; j < p.dim; j += LANES) {
            let h = hidden_rw[b * p.dim + j];
            for (var t = 0u; t < CHUNK; t++) {
                if (t < n) {
                    acc[t] += h * syn1[rows[t] * p.dim + j];
                }
            }
        }
    }
    for (var t = 0u; t < CHUNK; t++) {
        partial[(i * CHUNK + t) * PAD + l] = acc[t];
    }
    workgroupBarrier();
    let tq = l / 4u;
    let q = l % 4u;
    var s = 0.0;
    for (var m = 0u; m < QUARTER; m++) {
        s += partial[(i * CHUNK + tq) * PAD + q * QUARTER + m];
    }
    quarter[(i * CHUNK + tq) * 4u + q] = s;
    workgroupBarrier();
    var dots: array<f32, 8>;
    for (var t = 0u; t < CHUNK; t++) {
        let at = (i * CHUNK + t) * 4u;
        dots[t] = (quarter[at] + quarter[at + 1u]) + (quarter[at + 2u] + quarter[at + 3u]);
    }
    return dots;
}

// hidden_grad[b] (= if first, += otherwise) sum over t < n of g[t] * syn1[rows[t]], lane l
// owning elements l, l + LANES, ... (no reduction: each element has one owner).
fn add_hidden_grad_lanes(b: u32, l: u32, rows: array<u32, 8>, g: array<f32, 8>, n: u32, first: bool) {
    for (var j = l; j < p.dim; j += LANES) {
        var e = 0.0;
        for (var t = 0u; t < CHUNK; t++) {
            if (t < n) {
                e += g[t] * syn1[rows[t] * p.dim + j];
            }
        }
        let at = b * p.dim + j;
        if (first) {
            hidden_grad_rw[at] = e;
        } else {
            hidden_grad_rw[at] += e;
        }
    }
}

// ---- sampled_gradients: negative sampling and hierarchical softmax.
// Target slot s of item b (output row r, label y): f = hidden[b] . syn1[r],
// grads[s] = alpha * (y - sigmoid(f)), loss -ln sigmoid(f) for y = 1, -ln sigmoid(-f) for 0;
// hidden_grad[b] = the sum over its targets of grads[s] * syn1[r].
// Grid: ceil(n_i / ITEMS) workgroups of WG. FLOPs: d (n_in + n_i) + 4 d n_t. Reads:
// 16 n_i + 4 n_in + 8 n_t + 4 d (n_in + n_t). Writes: 4 (2 d n_i + n_t + n_i).
@compute @workgroup_size(256)
fn sampled_gradients(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = lid / LANES;
    let l = lid % LANES;
    let first = group_index(wg, nwg) * ITEMS;
    let b = first + i;
    var t_start = 0u;
    var t_count = 0u;
    if (b < p.items) {
        write_hidden_lanes(b, l);
        t_start = batch[4u * b + 2u];
        t_count = batch[4u * b + 3u];
    }
    // Enough chunks for the workgroup's longest target list, and at least one so that
    // hidden_grad is written for an item without targets. Uniform: read-only storage at
    // addresses that depend on the workgroup only.
    var chunks = 1u;
    for (var k = 0u; k < ITEMS; k++) {
        if (first + k < p.items) {
            chunks = max(chunks, (batch[4u * (first + k) + 3u] + CHUNK - 1u) / CHUNK);
        }
    }
    var loss = 0.0;
    for (var c = 0u; c < chunks; c++) {
        let at = c * CHUNK;
        var n = 0u;
        if (at < t_count) {
            n = min(CHUNK, t_count - at);
        }
        var rows: array<u32, 8>;
        var labels: array<u32, 8>;
        for (var t = 0u; t < CHUNK; t++) {
            if (t < n) {
                let slot = t_start + at + t;
                rows[t] = batch[p.at_targets + 2u * slot];
                labels[t] = batch[p.at_targets + 2u * slot + 1u];
            }
        }
        let f = chunk_dots(i, l, b, rows, n);
        var g: array<f32, 8>;
        for (var t = 0u; t < CHUNK; t++) {
            if (t < n) {
                g[t] = p.alpha * (f32(labels[t]) - sigmoid(f[t]));
                loss += target_loss(f[t], labels[t]);
                if (l == t) {
                    grads_rw[t_start + at + t] = g[t];
                }
            }
        }
        if (b < p.items && (n > 0u || c == 0u)) {
            add_hidden_grad_lanes(b, l, rows, g, n, c == 0u);
        }
    }
    if (b < p.items && l == 0u) {
        item_loss_rw[b] = loss;
    }
}

// ---- softmax_gradients: the full softmax. Scores of every output row go to
// grads[b * V + r] first, then are replaced by the gradients
// alpha * ([r == word] - softmax_r); loss = ln(sum_r e^{f_r}) - f_word. The maximum and the
// sum of exponentials are kept as they go (each chunk rescales the sum to the new maximum).
// Grid: ceil(n_i / ITEMS) workgroups of WG. FLOPs: d (n_in + n_i) + 4 d n_i V. Reads:
// 24 n_i + 4 n_in + 4 d n_in + 4 d V G + 4 n_i V. Writes: 4 (2 d n_i + n_i V + n_i).
@compute @workgroup_size(256)
fn softmax_gradients(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = lid / LANES;
    let l = lid % LANES;
    let b = group_index(wg, nwg) * ITEMS + i;
    let valid = b < p.items;
    var word = 0u;
    if (valid) {
        write_hidden_lanes(b, l);
        word = batch[p.at_targets + 2u * batch[4u * b + 2u]];
    }
    let v = p.out_rows;
    let base = b * v;
    let chunks = (v + CHUNK - 1u) / CHUNK;
    var top = -3.4e38;
    var sum = 0.0;
    var f_word = 0.0;
    for (var c = 0u; c < chunks; c++) {
        let at = c * CHUNK;
        let n = min(CHUNK, v - at);
        var rows: array<u32, 8>;
        for (var t = 0u; t < CHUNK; t++) {
            rows[t] = at + t;
        }
        let f = chunk_dots(i, l, b, rows, select(0u, n, valid));
        var m = top;
        for (var t = 0u; t < n; t++) {
            m = max(m, f[t]);
        }
        sum *= exp(top - m);
        for (var t = 0u; t < n; t++) {
            sum += exp(f[t] - m);
            if (at + t == word) {
                f_word = f[t];
            }
            if (valid && l == t) {
                grads_rw[base + at + t] = f[t];
            }
        }
        top = m;
    }
    // Lane t < CHUNK stored the scores of rows t, t + CHUNK, ...: it turns them into
    // gradients, then every lane sums its elements of hidden_grad over all rows in order.
    if (valid && l < CHUNK) {
        for (var r = l; r < v; r += CHUNK) {
            let q = exp(grads_rw[base + r] - top) / sum;
            grads_rw[base + r] = p.alpha * (select(0.0, 1.0, r == word) - q);
        }
    }
    storageBarrier();
    if (valid) {
        for (var j = l; j < p.dim; j += LANES) {
            var e = 0.0;
            for (var r = 0u; r < v; r++) {
                e += grads_rw[base + r] * syn1[r * p.dim + j];
            }
            hidden_grad_rw[b * p.dim + j] = e;
        }
    }
    if (valid && l == 0u) {
        item_loss_rw[b] = log(sum) - (f_word - top);
    }
}

// ================================================================ per-item kernels

// hidden[b] = the mean of item b's input rows, walked by one invocation.
fn write_hidden(b: u32) {
    let in_start = p.at_inputs + batch[4u * b];
    let in_count = batch[4u * b + 1u];
    let inv = 1.0 / f32(in_count);
    let h = b * p.dim;
    for (var j = 0u; j < p.dim; j++) {
        hidden_rw[h + j] = 0.0;
    }
    for (var c = 0u; c < in_count; c++) {
        let r = batch[in_start + c] * p.dim;
        for (var j = 0u; j < p.dim; j++) {
            hidden_rw[h + j] += syn0[r + j];
        }
    }
    for (var j = 0u; j < p.dim; j++) {
        hidden_rw[h + j] *= inv;
    }
}

// hidden[b] . syn1[row]
fn score(b: u32, row: u32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < p.dim; j++) {
        s += hidden_rw[b * p.dim + j] * syn1[row * p.dim + j];
    }
    return s;
}

// hidden_grad[b] += g * syn1[row]
fn add_to_hidden_grad(b: u32, row: u32, g: f32) {
    for (var j = 0u; j < p.dim; j++) {
        hidden_grad_rw[b * p.dim + j] += g * syn1[row * p.dim + j];
    }
}

fn clear_hidden_grad(b: u32) {
    for (var j = 0u; j < p.dim; j++) {
        hidden_grad_rw[b * p.dim + j] = 0.0;
    }
}

// ---- sampled_gradients_per_item: `sampled_gradients`, one invocation per item.
// Grid: ceil(n_i / WG_ITEM) workgroups of WG_ITEM. FLOPs and bytes as `sampled_gradients`,
// but each invocation walks its rows alone (one load instruction of a warp touches 32
// different rows) and sums hidden and hidden_grad in global memory, so its time on a GPU
// follows its load instructions and their latency, not these bytes.
@compute @workgroup_size(64)
fn sampled_gradients_per_item(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = group_index(wg, nwg) * WG_ITEM + lid;
    if (b >= p.items) {
        return;
    }
    write_hidden(b);
    clear_hidden_grad(b);
    let t_start = batch[4u * b + 2u];
    let t_count = batch[4u * b + 3u];
    var loss = 0.0;
    for (var k = 0u; k < t_count; k++) {
        let slot = t_start + k;
        let row = batch[p.at_targets + 2u * slot];
        let label = batch[p.at_targets + 2u * slot + 1u];
        let f = score(b, row);
        loss += target_loss(f, label);
        let g = p.alpha * (f32(label) - sigmoid(f));
        grads_rw[slot] = g;
        add_to_hidden_grad(b, row, g);
    }
    item_loss_rw[b] = loss;
}

// ---- softmax_gradients_per_item: `softmax_gradients`, one invocation per item (the
// maximum found first, then the sum, as the CPU twin).
// Grid: ceil(n_i / WG_ITEM) workgroups of WG_ITEM. FLOPs and bytes as `softmax_gradients`
// (with its own G), uncoalesced as `sampled_gradients_per_item`.
@compute @workgroup_size(64)
fn softmax_gradients_per_item(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = group_index(wg, nwg) * WG_ITEM + lid;
    if (b >= p.items) {
        return;
    }
    write_hidden(b);
    clear_hidden_grad(b);
    let base = b * p.out_rows;
    let word = batch[p.at_targets + 2u * batch[4u * b + 2u]];
    var top = -3.4e38;
    for (var r = 0u; r < p.out_rows; r++) {
        let f = score(b, r);
        grads_rw[base + r] = f;
        top = max(top, f);
    }
    var sum = 0.0;
    for (var r = 0u; r < p.out_rows; r++) {
        sum += exp(grads_rw[base + r] - top);
    }
    item_loss_rw[b] = log(sum) - (grads_rw[base + word] - top);
    for (var r = 0u; r < p.out_rows; r++) {
        let q = exp(grads_rw[base + r] - top) / sum;
        let g = p.alpha * (select(0.0, 1.0, r == word) - q);
        grads_rw[base + r] = g;
        add_to_hidden_grad(b, r, g);
    }
}

// ================================================================ apply kernels

// syn1[row] += sum over the row's index entries (slot, item) of grads[slot] * hidden[item]
// for element i of the distinct output rows (u = i / d, j = i % d).
fn apply_output_element(i: u32) {
    if (i >= p.out_unique * p.dim) {
        return;
    }
    let u = i / p.dim;
    let j = i % p.dim;
    let start = batch[p.at_out_seg + u];
    let end = batch[p.at_out_seg + u + 1u];
    var s = 0.0;
    for (var e = start; e < end; e++) {
        let slot = batch[p.at_out_entries + 2u * e];
        let item = batch[p.at_out_entries + 2u * e + 1u];
        s += grads[slot] * hidden[item * p.dim + j];
    }
    let at = batch[p.at_out_rows + u] * p.dim + j;
    syn1_rw[at] = syn1_rw[at] + s * cap_scale(end - start);
}

// The full softmax: syn1[r] += sum over items b in order of grads[b * V + r] * hidden[b],
// for element i = r * d + j.
fn apply_output_dense_element(i: u32) {
    if (i >= p.out_rows * p.dim) {
        return;
    }
    let r = i / p.dim;
    let j = i % p.dim;
    var s = 0.0;
    for (var b = 0u; b < p.items; b++) {
        s += grads[b * p.out_rows + r] * hidden[b * p.dim + j];
    }
    syn1_rw[i] = syn1_rw[i] + s * cap_scale(p.items);
}

// syn0[row] += sum over the row's index entries (item) of hidden_grad[item], for element i of
// the distinct input rows. A CBOW item adds its whole update to every input row, as
// word2vec.c.
fn apply_input_element(i: u32) {
    if (i >= p.in_unique * p.dim) {
        return;
    }
    let u = i / p.dim;
    let j = i % p.dim;
    let start = batch[p.at_in_seg + u];
    let end = batch[p.at_in_seg + u + 1u];
    var s = 0.0;
    for (var e = start; e < end; e++) {
        s += hidden_grad[batch[p.at_in_entries + e] * p.dim + j];
    }
    let at = batch[p.at_in_rows + u] * p.dim + j;
    syn0_rw[at] = syn0_rw[at] + s * cap_scale(end - start);
}

// loss_slots[loss_slot] = the sum of item_loss over the batch: per invocation over items
// lid, lid + WG, ..., then a tree in workgroup memory (a fixed order). One workgroup.
fn sum_loss(lid: u32) {
    var s = 0.0;
    for (var b = lid; b < p.items; b += WG) {
        s += item_loss[b];
    }
    quarter[lid] = s;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            quarter[lid] += quarter[lid + stride];
        }
    }
    if (lid == 0u) {
        loss_slots[p.loss_slot] = quarter[0];
    }
}

// ---- apply_sparse: negative sampling and hierarchical softmax. Workgroups
// [0, out_groups) update output-row elements, the next in_groups input-row elements, the
// last one sums the loss (the sections share a dispatch: they read the gradient kernel's
// results and write different matrices).
// Grid: ceil(u_out d / WG) + ceil(u_in d / WG) + 1 workgroups of WG. FLOPs: 2 d n_t + d n_in
// + 2 d (u_out + u_in) + n_i. Reads: 12 n_t + 4 d n_t + 12 u_out + 4 d u_out (output index
// entries, gradients, hidden rows, bounds, row ids, the rows) + 4 n_in + 4 d n_in + 12 u_in
// + 4 d u_in (the same for the inputs) + 4 n_i. Writes: 4 d (u_out + u_in) + 4.
@compute @workgroup_size(256)
fn apply_sparse(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = group_index(wg, nwg);
    if (g < p.out_groups) {
        apply_output_element(g * WG + lid);
    } else if (g < p.out_groups + p.in_groups) {
        apply_input_element((g - p.out_groups) * WG + lid);
    } else if (g == p.out_groups + p.in_groups) {
        sum_loss(lid);
    }
}

// ---- apply_dense: the full softmax. As apply_sparse with every output row updated.
// Grid: G = ceil(V d / WG) + ceil(u_in d / WG) + 1 workgroups of WG. FLOPs: 2 d V n_i +
// d n_in + 2 d (V + u_in) + n_i. Reads: 4 d n_i ceil(V d / WG) (every output workgroup reads
// every hidden vector) + 4 n_i V + 4 d V + the input section's and the loss's as apply_sparse.
// Writes: 4 d (V + u_in) + 4.
@compute @workgroup_size(256)
fn apply_dense(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = group_index(wg, nwg);
    if (g < p.out_groups) {
        apply_output_dense_element(g * WG + lid);
    } else if (g < p.out_groups + p.in_groups) {
        apply_input_element((g - p.out_groups) * WG + lid);
    } else if (g == p.out_groups + p.in_groups) {
        sum_loss(lid);
    }
}
