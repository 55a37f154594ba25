// recurrent.wgsl: one recurrent layer in one direction, forward and backward through time.
// CPU twin: src/cpu/recurrent.rs. Host side: src/gpu/recurrent.rs. Layout and semantics:
// src/ops/recurrent.rs.
//
// The cell is a pipeline constant (CELL), so each cell compiles to its own pipeline with the
// other cells' code folded away. A dispatch handles one step: each invocation owns one
// (hidden unit k, batch entry b) pair, computes that unit's gate pre-activations from the
// previous state (a slice of the recurrent product, staged through workgroup memory), then
// the gate nonlinearities and the state update, and writes the output row in place. The step
// index arrives through a small per-step uniform, so the host records every step up front and
// submits once.

override CELL: u32 = 2u;
const RNN_TANH: u32 = 0u;
const RNN_RELU: u32 = 1u;
const LSTM: u32 = 2u;
const GRU: u32 = 3u;
const GRU_RESET_BEFORE: u32 = 4u;

const STEP_INACTIVE: u32 = 0x80000000u;
const STEP_LAST: u32 = 0x40000000u;
const STEP_TIME_MASK: u32 = 0x3fffffffu;

// A workgroup covers 64 hidden units of 4 batch entries.
const WG_UNITS: u32 = 64u;
const WG_BATCH: u32 = 4u;

struct Config {
    batch: u32,
    hidden: u32,
    steps: u32,
    gate_width: u32,     // G * H
    act_width: u32,      // A * H
    out_stride: u32,
    out_offset: u32,
    batch_first: u32,
    // Regions of `saved`: hprev at 0, then the LSTM cell states, then the activations.
    off_cell: u32,
    off_act: u32,
    has_dy: u32,
    has_bias_hh: u32,
    // Regions of `state`, each B * H: h0 at 0.
    off_c0: u32,
    off_hn: u32,
    off_cn: u32,
    off_dhn: u32,
    off_dcn: u32,
    off_dh: u32,         // dh carried to the previous step
    off_dc: u32,         // dc carried to the previous step; dc0 at the end
    off_dh0: u32,
    has_rmask: u32,      // recurrent dropout: the product sees the state times rmask[b, j]
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Step {
    s: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> cfg: Config;
@group(0) @binding(1) var<uniform> step: Step;

var<workgroup> tile: array<array<f32, 64>, 4>;

fn gates() -> u32 {
    switch CELL {
        case 2u: { return 4u; }
        case 3u, 4u: { return 3u; }
        default: { return 1u; }
    }
}

fn row_of(t: u32, b: u32) -> u32 {
    if (cfg.batch_first != 0u) {
        return b * cfg.steps + t;
    }
    return t * cfg.batch + b;
}

// The recurrent dropout mask (0 or 1/keep) of unit j of batch entry b; 1 without one.
fn rmask_at(b: u32, j: u32) -> f32 {
    if (cfg.has_rmask == 0u) {
        return 1.0;
    }
    return rmask[b * cfg.hidden + j];
}

fn dsigmoid(y: f32) -> f32 {
    return y * (1.0 - y);
}

@group(0) @binding(2) var<storage, read> xw: array<f32>;          // [rows, G*H]
@group(0) @binding(3) var<storage, read_write> wt: array<f32>;    // [H + 1, G*H]: W_hh^T, then b_hh
@group(0) @binding(4) var<storage, read> smap: array<u32>;        // [T, B] step map
@group(0) @binding(5) var<storage, read_write> y: array<f32>;     // [rows, out_stride]
@group(0) @binding(6) var<storage, read_write> saved: array<f32>; // hprev | cell | act
@group(0) @binding(7) var<storage, read_write> state: array<f32>; // B*H regions, see Config
@group(0) @binding(8) var<storage, read> dy: array<f32>;          // [rows, out_stride]
@group(0) @binding(9) var<storage, read> w_hh: array<f32>;        // [G*H, H]
@group(0) @binding(10) var<storage, read_write> dxw: array<f32>;  // [rows, G*H]
@group(0) @binding(11) var<storage, read_write> dhw: array<f32>;  // [rows, G*H] (GRU only)
@group(0) @binding(12) var<storage, read> b_hh: array<f32>;       // [G*H]
@group(0) @binding(13) var<storage, read> rmask: array<f32>;      // [B, H] recurrent dropout

// ---------------------------------------------------------------------------------------
// Weights: W_hh^T with b_hh as an extra row, so the recurrent product of a step reads
// consecutive addresses across the units of a workgroup, and the bias rides along as the
// product with a constant 1.

@compute @workgroup_size(64, 4, 1)
fn transpose_weights(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;   // row of W_hh: gate * H + unit
    let j = gid.y;   // column of W_hh, or H for the bias row
    if (r >= cfg.gate_width || j > cfg.hidden) {
        return;
    }
    if (j == cfg.hidden) {
        var bias = 0.0;
        if (cfg.has_bias_hh != 0u) {
            bias = b_hh[r];
        }
        wt[j * cfg.gate_width + r] = bias;
    } else {
        wt[j * cfg.gate_width + r] = w_hh[r * cfg.hidden + j];
    }
}

// ---------------------------------------------------------------------------------------
// Forward.

// The state batch entry b had before step s: h0 at its first step, else its previous output.
fn hprev_value(s: u32, b: u32, j: u32) -> f32 {
    if (s == 0u) {
        return state[b * cfg.hidden + j];
    }
    let code = smap[(s - 1u) * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return 0.0;
    }
    let t = code & STEP_TIME_MASK;
    return y[row_of(t, b) * cfg.out_stride + cfg.out_offset + j];
}

// GRU reset-before: the r * h of unit j saved by this step's first dispatch.
fn rh_value(s: u32, b: u32, j: u32) -> f32 {
    let code = smap[s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return 0.0;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    return saved[cfg.off_act + row * cfg.act_width + 3u * cfg.hidden + j];
}

// The recurrent pre-activations of unit k for gates first_gate .. first_gate + count:
// bias + sum_j source(b, j) * W_hh[gate * H + k, j], where source is the previous state
// (from_rh = false) or r * h (from_rh = true). Every invocation of the workgroup must call
// this (it holds barriers); those outside the layer pass k >= H or b >= B.
fn recurrent_product(s: u32, b: u32, k: u32, lx: u32, ly: u32, first_gate: u32, count: u32, from_rh: bool) -> vec4<f32> {
    let h = cfg.hidden;
    let gw = cfg.gate_width;
    var acc = vec4<f32>(0.0);
    let inside = b < cfg.batch && k < h;
    if (inside) {
        let bias_row = h * gw + first_gate * h + k;
        acc.x = wt[bias_row];
        if (count > 1u) { acc.y = wt[bias_row + h]; }
        if (count > 2u) { acc.z = wt[bias_row + 2u * h]; }
        if (count > 3u) { acc.w = wt[bias_row + 3u * h]; }
    }
    for (var j0 = 0u; j0 < h; j0 += WG_UNITS) {
        let j = j0 + lx;
        var v = 0.0;
        if (b < cfg.batch && j < h) {
            if (from_rh) {
                v = rh_value(s, b, j);
            } else {
                v = hprev_value(s, b, j) * rmask_at(b, j);
            }
        }
        tile[ly][lx] = v;
        workgroupBarrier();
        if (inside) {
            let chunk = min(WG_UNITS, h - j0);
            for (var jj = 0u; jj < chunk; jj++) {
                let hv = tile[ly][jj];
                let base = (j0 + jj) * gw + first_gate * h + k;
                acc.x += hv * wt[base];
                if (count > 1u) { acc.y += hv * wt[base + h]; }
                if (count > 2u) { acc.z += hv * wt[base + 2u * h]; }
                if (count > 3u) { acc.w += hv * wt[base + 3u * h]; }
            }
        }
        workgroupBarrier();
    }
    return acc;
}

@compute @workgroup_size(64, 4, 1)
fn forward_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let k = wg.x * WG_UNITS + lid.x;
    let b = wg.y * WG_BATCH + lid.y;
    let s = step.s;
    let h = cfg.hidden;
    var count = gates();
    if (CELL == GRU_RESET_BEFORE) {
        count = 2u;   // n waits for r * h of every unit: forward_gru_n
    }
    let hw = recurrent_product(s, b, k, lid.x, lid.y, 0u, count, false);
    if (b >= cfg.batch || k >= h) {
        return;
    }
    let code = smap[s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        // Steps past a length map one to one onto the times past it (t = s): zero that
        // output row, and what the weight gradients will read from it.
        let dead = row_of(s, b);
        y[dead * cfg.out_stride + cfg.out_offset + k] = 0.0;
        saved[dead * h + k] = 0.0;
        if (CELL == GRU_RESET_BEFORE) {
            saved[cfg.off_act + dead * cfg.act_width + 3u * h + k] = 0.0;
        }
        return;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    let gw = cfg.gate_width;
    let xr = row * gw;
    let act = cfg.off_act + row * cfg.act_width;
    // hp is the state itself; the recurrent products (and so the weight gradients) see it
    // through the recurrent dropout mask.
    let hp = hprev_value(s, b, k);
    let hm = hp * rmask_at(b, k);
    saved[row * h + k] = hm;

    var new_h = 0.0;
    switch CELL {
        case 0u, 1u: {
            let pre = xw[xr + k] + hw.x;
            if (CELL == RNN_TANH) {
                new_h = tanh_stable(pre);
            } else {
                new_h = max(pre, 0.0);
            }
            saved[act + k] = new_h;
        }
        case 2u: {
            let ig = sigmoid(xw[xr + k] + hw.x);
            let fg = sigmoid(xw[xr + h + k] + hw.y);
            let gg = tanh_stable(xw[xr + 2u * h + k] + hw.z);
            let og = sigmoid(xw[xr + 3u * h + k] + hw.w);
            var cp = state[cfg.off_c0 + b * h + k];
            if (s > 0u) {
                let prev = smap[(s - 1u) * cfg.batch + b];
                cp = saved[cfg.off_cell + row_of(prev & STEP_TIME_MASK, b) * h + k];
            }
            let c = fg * cp + ig * gg;
            saved[cfg.off_cell + row * h + k] = c;
            saved[act + k] = ig;
            saved[act + h + k] = fg;
            saved[act + 2u * h + k] = gg;
            saved[act + 3u * h + k] = og;
            new_h = og * tanh_stable(c);
            if ((code & STEP_LAST) != 0u) {
                state[cfg.off_cn + b * h + k] = c;
            }
        }
        case 3u: {
            let r = sigmoid(xw[xr + k] + hw.x);
            let z = sigmoid(xw[xr + h + k] + hw.y);
            let n = tanh_stable(xw[xr + 2u * h + k] + r * hw.z);
            saved[act + k] = r;
            saved[act + h + k] = z;
            saved[act + 2u * h + k] = n;
            saved[act + 3u * h + k] = hw.z;
            new_h = (1.0 - z) * n + z * hp;
        }
        default: {
            // GRU reset-before, first half: r, z and r * h.
            let r = sigmoid(xw[xr + k] + hw.x);
            let z = sigmoid(xw[xr + h + k] + hw.y);
            saved[act + k] = r;
            saved[act + h + k] = z;
            saved[act + 3u * h + k] = r * hm;
            return;
        }
    }
    y[row * cfg.out_stride + cfg.out_offset + k] = new_h;
    if ((code & STEP_LAST) != 0u) {
        state[cfg.off_hn + b * h + k] = new_h;
    }
}

// GRU reset-before, second half of a step: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).
@compute @workgroup_size(64, 4, 1)
fn forward_gru_n(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let k = wg.x * WG_UNITS + lid.x;
    let b = wg.y * WG_BATCH + lid.y;
    let s = step.s;
    let h = cfg.hidden;
    let hw = recurrent_product(s, b, k, lid.x, lid.y, 2u, 1u, true);
    if (b >= cfg.batch || k >= h) {
        return;
    }
    let code = smap[s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    let act = cfg.off_act + row * cfg.act_width;
    let n = tanh_stable(xw[row * cfg.gate_width + 2u * h + k] + hw.x);
    let z = saved[act + h + k];
    let hp = hprev_value(s, b, k);
    saved[act + 2u * h + k] = n;
    let new_h = (1.0 - z) * n + z * hp;
    y[row * cfg.out_stride + cfg.out_offset + k] = new_h;
    if ((code & STEP_LAST) != 0u) {
        state[cfg.off_hn + b * h + k] = new_h;
    }
}

// ---------------------------------------------------------------------------------------
// Backward, steps in reverse order.

// The gradient row that flows into the state through W_hh from the step processed after s
// (dhw for GRU, whose n gate differs between input and recurrent side; dxw otherwise).
fn next_grad(s: u32, b: u32, r: u32) -> f32 {
    if (s + 1u >= cfg.steps) {
        return 0.0;
    }
    let code = smap[(s + 1u) * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return 0.0;
    }
    let at = row_of(code & STEP_TIME_MASK, b) * cfg.gate_width + r;
    if (CELL == GRU) {
        return dhw[at];
    }
    return dxw[at];
}

// dn_pre of unit j at this step (GRU reset-before, second half).
fn dn_value(s: u32, b: u32, j: u32) -> f32 {
    let code = smap[s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return 0.0;
    }
    return dxw[row_of(code & STEP_TIME_MASK, b) * cfg.gate_width + 2u * cfg.hidden + j];
}

// sum over rows r of source(b, r) * W_hh[first_row + r, k], for r < count: the gradient of
// unit k's input state. source is the next step's gate gradients (use_dn = false, s is the
// current step, s_next = s + 1 handled by next_grad) or this step's dn_pre (use_dn = true).
// Every invocation must call it (it holds barriers).
fn transposed_product(s: u32, b: u32, k: u32, lx: u32, ly: u32, first_row: u32, count: u32, use_dn: bool) -> f32 {
    let h = cfg.hidden;
    var acc = 0.0;
    let inside = b < cfg.batch && k < h;
    for (var r0 = 0u; r0 < count; r0 += WG_UNITS) {
        let r = r0 + lx;
        var v = 0.0;
        if (b < cfg.batch && r < count) {
            if (use_dn) {
                v = dn_value(s, b, r);
            } else {
                v = next_grad(s, b, first_row + r);
            }
        }
        tile[ly][lx] = v;
        workgroupBarrier();
        if (inside) {
            let chunk = min(WG_UNITS, count - r0);
            for (var rr = 0u; rr < chunk; rr++) {
                acc += tile[ly][rr] * w_hh[(first_row + r0 + rr) * h + k];
            }
        }
        workgroupBarrier();
    }
    return acc;
}

// Rows of W_hh through which the state's gradient flows directly (GRU reset-before: r and
// z only; n reaches h through r * h, handled by backward_gru_n).
fn direct_rows() -> u32 {
    if (CELL == GRU_RESET_BEFORE) {
        return 2u * cfg.hidden;
    }
    return cfg.gate_width;
}

@compute @workgroup_size(64, 4, 1)
fn backward_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let k = wg.x * WG_UNITS + lid.x;
    let b = wg.y * WG_BATCH + lid.y;
    let s = step.s;
    let h = cfg.hidden;
    let rec = transposed_product(s, b, k, lid.x, lid.y, 0u, direct_rows(), false);
    if (b >= cfg.batch || k >= h) {
        return;
    }
    let at = b * h + k;
    // The carried gradients start, at the last step, from those of the final state.
    var carry_dh = state[cfg.off_dh + at];
    var carry_dc = state[cfg.off_dc + at];
    if (s + 1u == cfg.steps) {
        carry_dh = state[cfg.off_dhn + at];
        carry_dc = state[cfg.off_dcn + at];
    }
    let code = smap[s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        // Past this entry's length nothing happened: the gradients pass through unchanged,
        // and the gate gradients of the time past the length (t = s) are zero.
        state[cfg.off_dh + at] = carry_dh;
        state[cfg.off_dc + at] = carry_dc;
        let dead = row_of(s, b) * cfg.gate_width;
        for (var gi = 0u; gi < gates(); gi++) {
            dxw[dead + gi * h + k] = 0.0;
            if (CELL == GRU) {
                dhw[dead + gi * h + k] = 0.0;
            }
        }
        return;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    let gw = cfg.gate_width;
    let g = row * gw;
    let act = cfg.off_act + row * cfg.act_width;
    var dyv = 0.0;
    if (cfg.has_dy != 0u) {
        dyv = dy[row * cfg.out_stride + cfg.out_offset + k];
    }
    let dht = carry_dh + rec * rmask_at(b, k) + dyv;
    var new_dh = 0.0;
    switch CELL {
        case 0u: {
            let v = saved[act + k];
            dxw[g + k] = dht * (1.0 - v * v);
        }
        case 1u: {
            dxw[g + k] = select(0.0, dht, saved[act + k] > 0.0);
        }
        case 2u: {
            let ig = saved[act + k];
            let fg = saved[act + h + k];
            let gg = saved[act + 2u * h + k];
            let og = saved[act + 3u * h + k];
            let c = saved[cfg.off_cell + row * h + k];
            var cp = state[cfg.off_c0 + at];
            if (s > 0u) {
                let prev = smap[(s - 1u) * cfg.batch + b];
                cp = saved[cfg.off_cell + row_of(prev & STEP_TIME_MASK, b) * h + k];
            }
            let tc = tanh_stable(c);
            let dct = carry_dc + dht * og * (1.0 - tc * tc);
            dxw[g + k] = dct * gg * dsigmoid(ig);
            dxw[g + h + k] = dct * cp * dsigmoid(fg);
            dxw[g + 2u * h + k] = dct * ig * (1.0 - gg * gg);
            dxw[g + 3u * h + k] = dht * tc * dsigmoid(og);
            state[cfg.off_dc + at] = dct * fg;
        }
        case 3u: {
            let r = saved[act + k];
            let z = saved[act + h + k];
            let n = saved[act + 2u * h + k];
            let hn = saved[act + 3u * h + k];
            let hp = hprev_value(s, b, k);
            let dnp = dht * (1.0 - z) * (1.0 - n * n);
            let drp = dnp * hn * dsigmoid(r);
            let dzp = dht * (hp - n) * dsigmoid(z);
            dxw[g + k] = drp;
            dxw[g + h + k] = dzp;
            dxw[g + 2u * h + k] = dnp;
            dhw[g + k] = drp;
            dhw[g + h + k] = dzp;
            dhw[g + 2u * h + k] = dnp * r;
            new_dh = dht * z;
        }
        default: {
            // GRU reset-before, first half: z and n; r waits for d(r * h) (backward_gru_n).
            let z = saved[act + h + k];
            let n = saved[act + 2u * h + k];
            let hp = hprev_value(s, b, k);
            dxw[g + h + k] = dht * (hp - n) * dsigmoid(z);
            dxw[g + 2u * h + k] = dht * (1.0 - z) * (1.0 - n * n);
            new_dh = dht * z;
        }
    }
    state[cfg.off_dh + at] = new_dh;
}

// GRU reset-before, second half of a backward step: d(r * h) = dn_pre W_hn gives r's gradient
// and the rest of the state's.
@compute @workgroup_size(64, 4, 1)
fn backward_gru_n(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let k = wg.x * WG_UNITS + lid.x;
    let b = wg.y * WG_BATCH + lid.y;
    let s = step.s;
    let h = cfg.hidden;
    let drh = transposed_product(s, b, k, lid.x, lid.y, 2u * h, h, true);
    if (b >= cfg.batch || k >= h) {
        return;
    }
    let code = smap[s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    let r = saved[cfg.off_act + row * cfg.act_width + k];
    let hm = saved[row * h + k];   // the masked state r multiplied
    dxw[row * cfg.gate_width + k] = drh * hm * dsigmoid(r);
    let at = b * h + k;
    state[cfg.off_dh + at] = state[cfg.off_dh + at] + drh * r * rmask_at(b, k);
}

// After step 0: the gradient of h0 (dc0 is the carried dc as it stands).
@compute @workgroup_size(64, 4, 1)
fn backward_finish(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let k = wg.x * WG_UNITS + lid.x;
    let b = wg.y * WG_BATCH + lid.y;
    let h = cfg.hidden;
    // "The step after step -1" is step 0: next_grad(s) reads step s + 1, so pass s = -1 as
    // the wrapped value; next_grad's bound check uses s + 1.
    let rec = transposed_product(0xffffffffu, b, k, lid.x, lid.y, 0u, direct_rows(), false);
    if (b >= cfg.batch || k >= h) {
        return;
    }
    let at = b * h + k;
    state[cfg.off_dh0 + at] = state[cfg.off_dh + at] + rec * rmask_at(b, k);
}
