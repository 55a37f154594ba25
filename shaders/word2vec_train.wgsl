// word2vec_train.wgsl: one batch of word2vec updates. The gradient kernels score every
// item's targets from the weights as they were at the start of the batch and store the
// hidden vector, the output gradients (already times the learning rate), the hidden
// layer's update and the loss; the apply kernels then add the summed contributions to each
// row, one invocation per row element, in the order the host-built index lists them.
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
    loss_slot: u32,      // where sum_loss writes this batch's loss
    row_cap: u32,        // contributions to a row beyond this scale its update down (0: off)
}

@group(0) @binding(0) var<uniform> p: TrainParams;
@group(0) @binding(1) var<storage, read> batch: array<u32>;
@group(0) @binding(2) var<storage, read_write> syn0: array<f32>;
@group(0) @binding(3) var<storage, read_write> syn1: array<f32>;
@group(0) @binding(4) var<storage, read_write> hidden: array<f32>;
@group(0) @binding(5) var<storage, read_write> hidden_grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;
@group(0) @binding(7) var<storage, read_write> item_loss: array<f32>;
@group(0) @binding(8) var<storage, read_write> loss_slots: array<f32>;

const WG: u32 = 64u;

var<workgroup> partial: array<f32, 64>;

// The global invocation index. The gradient kernels give each item one invocation: an
// item's work is a few short loops over the vector, and an invocation that owns its item
// needs no barriers (one workgroup per item with shared reductions took 1.8x as long on
// lavapipe).
fn invocation(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

// ln(sigmoid(x)), stable for both signs (the CPU twin uses the same formula).
fn log_sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return -log(1.0 + exp(-x));
    }
    return x - log(1.0 + exp(x));
}

// Update scale of a row reached by n contributions in this batch.
fn cap_scale(n: u32) -> f32 {
    if (p.row_cap == 0u || n <= p.row_cap) {
        return 1.0;
    }
    return f32(p.row_cap) / f32(n);
}

// hidden[b] = the mean of item b's input rows.
fn write_hidden(b: u32) {
    let in_start = p.at_inputs + batch[4u * b];
    let in_count = batch[4u * b + 1u];
    let inv = 1.0 / f32(in_count);
    let h = b * p.dim;
    for (var j = 0u; j < p.dim; j++) {
        hidden[h + j] = 0.0;
    }
    for (var c = 0u; c < in_count; c++) {
        let r = batch[in_start + c] * p.dim;
        for (var j = 0u; j < p.dim; j++) {
            hidden[h + j] += syn0[r + j];
        }
    }
    for (var j = 0u; j < p.dim; j++) {
        hidden[h + j] *= inv;
    }
}

// hidden[b] . syn1[row]
fn score(b: u32, row: u32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < p.dim; j++) {
        s += hidden[b * p.dim + j] * syn1[row * p.dim + j];
    }
    return s;
}

// hidden_grad[b] += g * syn1[row]
fn add_to_hidden_grad(b: u32, row: u32, g: f32) {
    for (var j = 0u; j < p.dim; j++) {
        hidden_grad[b * p.dim + j] += g * syn1[row * p.dim + j];
    }
}

fn clear_hidden_grad(b: u32) {
    for (var j = 0u; j < p.dim; j++) {
        hidden_grad[b * p.dim + j] = 0.0;
    }
}

// ---- sampled_gradients: negative sampling and hierarchical softmax.
// Target slot s of item b (output row r, label y): f = hidden[b] . syn1[r],
// grads[s] = alpha * (y - sigmoid(f)), loss -ln sigmoid(f) for y = 1, -ln sigmoid(-f) for 0;
// hidden_grad[b] = the sum over its targets of grads[s] * syn1[r].
@compute @workgroup_size(64)
fn sampled_gradients(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = invocation(wg, nwg, lid);
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
        if (label == 1u) {
            loss -= log_sigmoid(f);
        } else {
            loss -= log_sigmoid(-f);
        }
        let g = p.alpha * (f32(label) - sigmoid(f));
        grads[slot] = g;
        add_to_hidden_grad(b, row, g);
    }
    item_loss[b] = loss;
}

// ---- softmax_gradients: the full softmax. Scores of every output row go to
// grads[b * out_rows + r] first, then are replaced by the gradients
// alpha * ([r == word] - softmax_r); loss = ln(sum_r e^{f_r}) - f_word.
@compute @workgroup_size(64)
fn softmax_gradients(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = invocation(wg, nwg, lid);
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
        grads[base + r] = f;
        top = max(top, f);
    }
    var sum = 0.0;
    for (var r = 0u; r < p.out_rows; r++) {
        sum += exp(grads[base + r] - top);
    }
    item_loss[b] = log(sum) - (grads[base + word] - top);
    for (var r = 0u; r < p.out_rows; r++) {
        let q = exp(grads[base + r] - top) / sum;
        let g = p.alpha * (select(0.0, 1.0, r == word) - q);
        grads[base + r] = g;
        add_to_hidden_grad(b, r, g);
    }
}

// ---- apply_output: syn1[row] += sum over the row's index entries (slot, item) of
// grads[slot] * hidden[item], one invocation per element of a distinct row.
@compute @workgroup_size(64)
fn apply_output(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = invocation(wg, nwg, lid);
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
    syn1[at] = syn1[at] + s * cap_scale(end - start);
}

// ---- apply_output_dense (full softmax): syn1[r] += sum over items b in order of
// grads[b * out_rows + r] * hidden[b].
@compute @workgroup_size(64)
fn apply_output_dense(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = invocation(wg, nwg, lid);
    if (i >= p.out_rows * p.dim) {
        return;
    }
    let r = i / p.dim;
    let j = i % p.dim;
    var s = 0.0;
    for (var b = 0u; b < p.items; b++) {
        s += grads[b * p.out_rows + r] * hidden[b * p.dim + j];
    }
    syn1[i] = syn1[i] + s * cap_scale(p.items);
}

// ---- apply_input: syn0[row] += sum over the row's index entries (item) of
// hidden_grad[item]. A CBOW item adds its whole update to every input row, as word2vec.c.
@compute @workgroup_size(64)
fn apply_input(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = invocation(wg, nwg, lid);
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
    syn0[at] = syn0[at] + s * cap_scale(end - start);
}

// ---- sum_loss: loss_slots[loss_slot] = the sum of item_loss over the batch (one
// workgroup: per thread over items lid, lid + WG, ..., then thread 0 in order).
@compute @workgroup_size(64)
fn sum_loss(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var b = lid; b < p.items; b += WG) {
        s += item_loss[b];
    }
    partial[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var t = 0u; t < WG; t++) {
            total += partial[t];
        }
        loss_slots[p.loss_slot] = total;
    }
}
