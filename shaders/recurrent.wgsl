// recurrent.wgsl: one recurrent layer in one direction, forward and backward through time.
// CPU twin: src/cpu/recurrent.rs. Host side: src/gpu/recurrent.rs. Layout and semantics:
// src/ops/recurrent.rs.
//
// The cell is a pipeline constant (CELL), so each cell compiles to its own pipeline with the
// other cells' code folded away. A dispatch handles one step: each invocation owns four
// consecutive hidden units of one batch entry, computes their gate pre-activations from the
// previous state (its slice of the recurrent product, reading W_hh^T as vec4 straight from
// global memory and the previous state as one address shared by the whole workgroup), then
// the gate nonlinearities and the state update, and writes the output row in place. The step
// index changes per dispatch while the bind group stays the same (`step`, below), so the host
// records every step up front and submits once. forward_sequence and backward_sequence (below) run all steps of a
// layer-direction in one dispatch with the same per-unit code, where the state fits
// workgroup memory. The *_tiled kernels at the end are the step kernels for GPUs: the same
// per-unit code after a batch-tiled product. The directions of a bidirectional layer, or the
// layers of a unidirectional stack, may share one set of buffers and run side by side in one
// dispatch (workgroup z; enter_direction and Config's dir_* fields).

override CELL: u32 = 2u;
const RNN_TANH: u32 = 0u;
const RNN_RELU: u32 = 1u;
const LSTM: u32 = 2u;
const GRU: u32 = 3u;
const GRU_RESET_BEFORE: u32 = 4u;
// 1: the recurrent products see the state times a recurrent dropout mask (binding 9);
// 0: no mask, and no load of one.
override RECURRENT_DROPOUT: u32 = 0u;
// 1: f16 storage (gpu::recurrent::Precision::F16Storage). `wt` (the copies of W_hh and b_hh
// the recurrent products read) and most of the gate activations saved for backward (see
// f16_activations) are stored in f16, rounded to nearest even by f16_storage_bits
// (magnitudes below 2^-14 to zero), two per 32-bit word; every product and update still
// computes in f32. Halves the bytes every step reads of W_hh and the memory of the saved
// activations. unpack2x16float is core WGSL, so this needs no SHADER_F16 and runs on every
// adapter. 0: all f32.
override F16_STORAGE: u32 = 0u;

const STEP_INACTIVE: u32 = 0x80000000u;
const STEP_LAST: u32 = 0x40000000u;
const STEP_TIME_MASK: u32 = 0x3fffffffu;

// A workgroup covers 256 hidden units (64 invocations of 4 consecutive units each) of one
// batch entry. Four units per invocation let the weights be read as vec4; one batch entry
// per workgroup makes the state's reads the same address for every invocation, a broadcast
// on a GPU and a single scalar load on adapters that run invocations as CPU SIMD lanes
// (lavapipe), where per-invocation addresses cost a loop over the lanes.
const WG_QUADS: u32 = 64u;

struct Config {
    batch: u32,
    hidden: u32,
    steps: u32,
    gate_width: u32,     // G * H
    act_width: u32,      // words of a row of act (activation_at; 0 for RNN)
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
    hp: u32,             // H rounded up to a multiple of 4: the padded gate blocks of `wt`
    off_wp: u32,         // start of the padded W_hh copy in `wt` (in vec4s)
    off_dhw: u32,        // GRU: start of dhw in `gate_values`
    // Both directions of a bidirectional layer in one dispatch: the buffers below hold
    // direction d's values from d times these strides (0 where a plan runs one direction),
    // and workgroup z runs direction dir_first + z (see enter_direction).
    dir_first: u32,
    dir_gates: u32,      // gate_values
    dir_wt: u32,         // wt, in 16-byte words; also the words of one direction's copy
    dir_smap: u32,
    dir_saved: u32,
    dir_state: u32,
    dir_rmask: u32,
    dir_out: u32,        // columns of y and dy
    // A layer-wavefront (RecurrentStack in src/gpu/recurrent/stack.rs): the layers of a
    // unidirectional stack share these buffers as directions share them above, y included
    // (layer d's outputs at d * dir_y, then each layer's output gradient at (wave + d) *
    // dir_y; 0 elsewhere). wave is the number of layers (0: no wave). A forward dispatch is
    // wave k: workgroup z runs layer dir_first + z at step k - z (none outside 0 .. steps),
    // and each layer above the first takes its input projection in the step, from the layer
    // below's output row of the same step (written by the wave before), through its own W_ih
    // copies. A backward dispatch is wave k from the top: layer d runs the step that is
    // k - (wave - 1 - d) from the last, and each layer below the top takes its output
    // gradient in the step, from the gate gradients of the layer above at the same step and
    // that layer's W_ih (backward_layer_step, output_grads).
    dir_y: u32,
    wave: u32,
    off_wi: u32,         // the W_ih copies in `wt` (16-byte words), laid out as W_hh's, in f32
    // transpose_weights writes wt_copy 16-byte words from word wt_write (of this direction's
    // part): W_hh's copies at 0, or in a stack W_ih's at off_wi.
    wt_write: u32,
    wt_copy: u32,
    // A wave whose layers above the first see their input through a dropout row mask (one
    // per sequence, [B, H]; PyTorch's `dropout` between layers): where it lies in each
    // layer's part of `rmask`, after the recurrent mask. 0: no such mask, and no load of one.
    off_imask: u32,
    // 1: transpose_weights writes f32 whatever F16_STORAGE says (a stack's copies of W_ih).
    wt_f32: u32,
    // 1: the forward saves what a backward reads, a row of `saved` per output row. 0 (a plan
    // with no backward): it keeps only what the forward reads back itself, one row per batch
    // entry overwritten every step (saved_row): LSTM's cell state, GRU reset-before's z and
    // r * h. No h_prev, no other activations.
    saves: u32,
}

struct Step {
    s: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> cfg: Config;
// The step a dispatch runs: a slot of a buffer of every step's index, bound at a dynamic
// offset, or where the adapter offers immediates, immediate data. WGSL cannot make a
// declaration depend on an override, so the host swaps this line for `var<immediate> step:
// Step;` in that variant (gpu::shaders::ImmediateVariant); keep it on one line, as it is.
@group(0) @binding(1) var<uniform> step: Step;


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
    if (RECURRENT_DROPOUT == 0u) {
        return 1.0;
    }
    return rmask[dr + b * cfg.hidden + j];
}

// The input dropout mask of feature j of batch entry b of a wave's layer `above` layers over
// this one (0: this one; 1: the layer above, whose input this layer's output is); 1 without
// one (cfg.off_imask).
fn imask_at(above: u32, b: u32, j: u32) -> f32 {
    if (cfg.off_imask == 0u) {
        return 1.0;
    }
    return rmask[dr + above * cfg.dir_rmask + cfg.off_imask + b * cfg.hidden + j];
}

fn dsigmoid(y: f32) -> f32 {
    return y * (1.0 - y);
}

// The gate values: the input projections xw [rows, G*H] in forward; backward overwrites them
// with the gate gradients dxw (forward is done with xw by then), and for GRU appends dhw
// [rows, G*H] at off_dhw, the gradients on the recurrent side. One buffer for both keeps
// every step kernel within 8 storage buffers, WebGPU's default limit.
@group(0) @binding(2) var<storage, read_write> gate_values: array<f32>;
// Two padded copies of W_hh, written once per forward by transpose_weights:
// - from 0: W_hh^T with b_hh as row H: [H + 1, G * hp] (gate blocks hp wide), so a step's
//   recurrent product reads four consecutive units of one gate as one vec4;
// - from off_wp: W_hh with rows padded to hp: [G * H, hp], read the same way by backward.
// The step and sequence kernels only read it, and bind it read-only (a GPU may then serve
// the weights through its read-only cache); transpose_weights writes the same buffer
// through wt_out, in a bind group of its own. Every read goes through weight4, which
// decodes the storage F16_STORAGE selects; the words are f32 bits, or two f16 each.
@group(0) @binding(3) var<storage, read> wt: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> smap: array<u32>;        // [T, B] step map
@group(0) @binding(5) var<storage, read_write> y: array<f32>;     // [rows, out_stride]
// hprev | cell | act (rows as saved_row says), as 32-bit words: f32 bits (saved_at,
// save_at), or for the activations of f16 storage two f16 each (save_activation_pair). Words
// rather than f32 so that a pair of halves that reads as an f32 subnormal or NaN is never
// touched by float rules.
@group(0) @binding(6) var<storage, read_write> saved: array<u32>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>; // B*H regions, see Config
@group(0) @binding(8) var<storage, read> dy: array<f32>;          // [rows, out_stride]
@group(0) @binding(9) var<storage, read> rmask: array<f32>;       // [B, H] recurrent dropout
// Used by transpose_weights only, which has a bind group of its own.
@group(0) @binding(10) var<storage, read> w_hh: array<f32>;       // [G*H, H]
@group(0) @binding(11) var<storage, read> b_hh: array<f32>;       // [G*H]
@group(0) @binding(12) var<storage, read_write> wt_out: array<vec4<u32>>;

// Where this workgroup's direction starts in each per-direction buffer, set once by every
// entry point (enter_direction) before any access. Every access below adds its base, so the
// kernels read as if the buffers held one direction.
var<private> dg: u32;     // gate_values
var<private> dw: u32;     // wt and wt_out (16-byte words)
var<private> dm: u32;     // smap
var<private> dsv: u32;    // saved
var<private> dst: u32;    // state
var<private> dr: u32;     // rmask
var<private> dout: u32;   // columns of y and dy
var<private> dyo: u32;    // y (the outputs only, not dy): a stack's layer
var<private> dl: u32;     // this workgroup's direction, or a stack's layer

fn enter_direction(z: u32) {
    let d = cfg.dir_first + z;
    dg = d * cfg.dir_gates;
    dw = d * cfg.dir_wt;
    dm = d * cfg.dir_smap;
    dsv = d * cfg.dir_saved;
    dst = d * cfg.dir_state;
    dr = d * cfg.dir_rmask;
    dout = d * cfg.dir_out;
    dyo = d * cfg.dir_y;
    dl = d;
}

// Element i of this direction's part of `saved` as an f32, and the store of one.
fn saved_at(i: u32) -> f32 {
    return bitcast<f32>(saved[dsv + i]);
}

fn save_at(i: u32, v: f32) {
    saved[dsv + i] = bitcast<u32>(v);
}

// The row of `saved`'s regions where the forward keeps output row `row` of batch entry b: the
// row itself where a backward will read it, else b (Config.saves).
fn saved_row(row: u32, b: u32) -> u32 {
    if (cfg.saves != 0u) {
        return row;
    }
    return b;
}

// Which of the activations a unit saves per step f16 storage keeps in f16, two to a 32-bit
// word: LSTM's i, f, g, o and GRU's r, z, n, W_hn h + b_hn (two pairs, each written by one
// invocation at once), and GRU reset-before's r and n (one word, r written by the step's
// first dispatch, n by its second). Reset-before's z stays f32, since the second dispatch
// reads it to compute h, and so does r * h, an operand of products. None in f32. RNN saves
// none at all: its backward reads the output, which is its activation.
fn f16_activations() -> u32 {
    if (F16_STORAGE == 0u) {
        return 0u;
    }
    switch CELL {
        case 2u, 3u: { return 4u; }
        case 4u: { return 2u; }
        default: { return 0u; }
    }
}

// How many of activations 0 .. a f16 storage keeps in f16 (reset-before: r and n, the even
// ones).
fn f16_below(a: u32) -> u32 {
    if (CELL == GRU_RESET_BEFORE) {
        return min((a + 1u) / 2u, f16_activations());
    }
    return min(a, f16_activations());
}

fn is_f16_activation(a: u32) -> bool {
    return f16_below(a + 1u) > f16_below(a);
}

// Where activation a of unit k lies in the row of act that starts at `act`: a column of H
// words per pair of f16 activations (the first of a pair in the low half), then one per f32
// activation. CPU side: Precision::activation_column.
fn activation_at(act: u32, a: u32, k: u32) -> u32 {
    let below = f16_below(a);
    var column = (f16_activations() + 1u) / 2u + a - below;
    if (is_f16_activation(a)) {
        column = below / 2u;
    }
    return act + column * cfg.hidden + k;
}

// Stores activations a and a + 1 of unit k, both f16 or both f32 (LSTM's and GRU's): one word
// of two f16, or two f32.
fn save_activation_pair(act: u32, a: u32, k: u32, first: f32, second: f32) {
    if (is_f16_activation(a)) {
        saved[dsv + activation_at(act, a, k)] = f16_storage_bits(first) | (f16_storage_bits(second) << 16u);
        return;
    }
    save_at(activation_at(act, a, k), first);
    save_at(activation_at(act, a + 1u, k), second);
}

// Stores activation a of unit k alone: an f32 word, or one half of a word of f16. The low
// half comes first and writes the whole word; the high half, stored later by the same
// invocation (reset-before's n, in the step's second dispatch, after r), keeps it.
fn save_activation(act: u32, a: u32, k: u32, v: f32) {
    let at = activation_at(act, a, k);
    if (is_f16_activation(a)) {
        let bits = f16_storage_bits(v);
        if (f16_below(a) % 2u == 0u) {
            saved[dsv + at] = bits;
        } else {
            saved[dsv + at] = (saved[dsv + at] & 0xffffu) | (bits << 16u);
        }
        return;
    }
    save_at(at, v);
}

fn saved_activation(act: u32, a: u32, k: u32) -> f32 {
    let at = activation_at(act, a, k);
    if (is_f16_activation(a)) {
        let pair = unpack2x16float(saved[dsv + at]);
        return select(pair.y, pair.x, f16_below(a) % 2u == 0u);
    }
    return saved_at(at);
}

fn saved_activations(act: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(saved_activation(act, 0u, k), saved_activation(act, 1u, k), saved_activation(act, 2u, k), saved_activation(act, 3u, k));
}

const NO_STEP: u32 = 0xffffffffu;

// The step that workgroup z's layer runs in this dispatch: the dispatch's step, or in a wave
// that minus z; NO_STEP where the layer has none in this wave. Computed from uniform values
// only (not the private bases), so the tiled kernels may return on it before their
// barriers.
fn layer_step(z: u32) -> u32 {
    let lag = select(0u, z, cfg.wave != 0u);
    if (step.s < lag || step.s - lag >= cfg.steps) {
        return NO_STEP;
    }
    return step.s - lag;
}

// Whether workgroup z's layer takes its input projection in the step: a wave's layers above
// the first. Uniform, as layer_step.
fn in_step_input(z: u32) -> bool {
    return cfg.wave != 0u && cfg.dir_first + z > 0u;
}

// The step that workgroup z's layer runs in this backward dispatch: the dispatch's step, or
// in a wave k from the top, layer d's step steps - 1 - (k - (wave - 1 - d)); NO_STEP where
// it has none. Uniform, as layer_step.
fn backward_layer_step(z: u32) -> u32 {
    if (cfg.wave == 0u) {
        return step.s;
    }
    let lag = cfg.wave - 1u - (cfg.dir_first + z);
    if (step.s < lag || step.s - lag >= cfg.steps) {
        return NO_STEP;
    }
    return cfg.steps - 1u - (step.s - lag);
}

// Whether workgroup z's layer takes its output gradient in the backward step: a wave's layers
// below the top. Uniform, as layer_step.
fn in_step_output_grads(z: u32) -> bool {
    return cfg.wave != 0u && cfg.dir_first + z + 1u < cfg.wave;
}

// Where this direction's (or layer's) output of unit k at row `row` lies in `y`.
fn output_at(row: u32, k: u32) -> u32 {
    return dyo + row * cfg.out_stride + (cfg.out_offset + dout) + k;
}

// Where layer dl's output gradient row at `row` lies in `y` (a wave's layers below the top).
fn wave_dy_row(row: u32) -> u32 {
    return dyo + cfg.wave * cfg.dir_y + row * cfg.out_stride + (cfg.out_offset + dout);
}

// ---------------------------------------------------------------------------------------
// Weights: W_hh^T with b_hh as an extra row, so the recurrent product of a step reads
// consecutive addresses across the units of a workgroup, and the bias rides along as the
// product with a constant 1.

// Element e of `wt` (both copies, padding included; see the binding) as an f32.
fn wt_element(e: u32) -> f32 {
    let h = cfg.hidden;
    let wp = cfg.off_wp * 4u;
    if (e < wp) {
        let row = gates() * cfg.hp;   // elements per row of W_hh^T
        let j = e / row;              // column j of W_hh, or H: the bias
        let g = (e % row) / cfg.hp;
        let u = e % cfg.hp;
        if (u >= h) {
            return 0.0;
        }
        let r = g * h + u;
        if (j < h) {
            return w_hh[r * h + j];
        }
        if (cfg.has_bias_hh != 0u) {
            return b_hh[r];
        }
        return 0.0;
    }
    let r = (e - wp) / cfg.hp;
    let j = (e - wp) % cfg.hp;
    if (r >= cfg.gate_width || j >= h) {
        return 0.0;
    }
    return w_hh[r * h + j];
}

// The f16 bits `wt` stores for v (F16_STORAGE = 1): rounded to nearest, ties to even, and
// to a signed zero where |v| < 2^-14, f16's smallest normal number (unpack2x16float may
// flush f16 subnormals, so none is stored); overflow to infinity, NaN to a quiet NaN. By
// integer arithmetic, because WGSL leaves pack2x16float's rounding to the implementation.
// CPU twin: cpu::precision::f16_storage_bits.
fn f16_storage_bits(v: f32) -> u32 {
    let x = bitcast<u32>(v);
    let sign = (x >> 16u) & 0x8000u;
    let a = x & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    if (a >= 0x47800000u) {
        return sign | 0x7c00u;
    }
    if (a < 0x38800000u) {
        return sign;
    }
    // Rebias the exponent (127 -> 15) and keep 10 of the 23 fraction bits; a carry out of
    // the fraction bumps the exponent, up to infinity (0x7c00) from 65520 on.
    var bits = (((a >> 23u) - 112u) << 10u) | ((a >> 13u) & 0x3ffu);
    let rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (bits & 1u) == 1u)) {
        bits += 1u;
    }
    return sign | bits;
}

// Four weights from quad i of `wt` (the vec4 index the f32 layout would have).
fn weight4(i: u32) -> vec4<f32> {
    if (F16_STORAGE == 0u) {
        return bitcast<vec4<f32>>(wt[dw + i]);
    }
    let words = wt[dw + i / 2u];
    let pair = select(words.zw, words.xy, (i & 1u) == 0u);
    return vec4<f32>(unpack2x16float(pair.x), unpack2x16float(pair.y));
}

// Word i of this part of `wt` as four f32: a stack's copies of W_ih (from cfg.off_wi), which
// stay f32 with F16_STORAGE, since the products over all steps read W_ih in f32 as well.
fn input_weight4(i: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(wt[dw + i]);
}

// One 16-byte word of `wt` per invocation: 4 elements in f32, 8 in f16. A 2D grid wraps the
// words past 65535 workgroups into y. Reads W_hh strided by H (once per forward); writes
// coalesced.
@compute @workgroup_size(256, 1, 1)
fn transpose_weights(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    enter_direction(0u);
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= cfg.wt_copy) {
        return;
    }
    var word: vec4<u32>;
    if (F16_STORAGE == 0u || cfg.wt_f32 != 0u) {
        for (var k = 0u; k < 4u; k++) {
            word[k] = bitcast<u32>(wt_element(4u * i + k));
        }
    } else {
        for (var k = 0u; k < 4u; k++) {
            let e = 8u * i + 2u * k;
            word[k] = f16_storage_bits(wt_element(e)) | (f16_storage_bits(wt_element(e + 1u)) << 16u);
        }
    }
    wt_out[dw + cfg.wt_write + i] = word;
}

// ---------------------------------------------------------------------------------------
// Forward.

// The state batch entry b had before step s: h0 at its first step, else its previous output.
fn hprev_value(s: u32, b: u32, j: u32) -> f32 {
    if (s == 0u) {
        return state[dst + b * cfg.hidden + j];
    }
    let code = smap[dm + (s - 1u) * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return 0.0;
    }
    let t = code & STEP_TIME_MASK;
    return y[dyo + row_of(t, b) * cfg.out_stride + (cfg.out_offset + dout) + j];
}

// One term of a recurrent product: acc[g] += hv * (four units of gate g in row j of wt).
fn accumulate(acc: ptr<function, array<vec4<f32>, 4>>, hv: f32, base: u32, gate4: u32, count: u32) {
    (*acc)[0] += hv * weight4(base);
    if (count > 1u) { (*acc)[1] += hv * weight4(base + gate4); }
    if (count > 2u) { (*acc)[2] += hv * weight4(base + 2u * gate4); }
    if (count > 3u) { (*acc)[3] += hv * weight4(base + 3u * gate4); }
}

// The recurrent pre-activations of units k0 .. k0 + 4 for gates first_gate ..
// first_gate + count (one vec4 of units per gate): bias + sum_j source(b, j) *
// W_hh[gate * H + k, j], where source is the previous state times the recurrent dropout
// mask (from_rh = false) or r * h (from_rh = true). Where the source row lives is decided
// once, outside the loop; every invocation of the workgroup reads the same source address.
fn recurrent_product(s: u32, b: u32, k0: u32, first_gate: u32, count: u32, from_rh: bool) -> array<vec4<f32>, 4> {
    let h = cfg.hidden;
    let row4 = gates() * cfg.hp / 4u;   // vec4s per row of wt
    let gate4 = cfg.hp / 4u;            // vec4s per gate block
    let first = first_gate * gate4 + k0 / 4u;
    var acc: array<vec4<f32>, 4>;
    let bias = h * row4 + first;
    for (var g = 0u; g < count; g++) {
        acc[g] = weight4(bias + g * gate4);
    }
    if (from_rh) {
        let code = smap[dm + s * cfg.batch + b];
        if ((code & STEP_INACTIVE) != 0u) {
            return acc;
        }
        let src = activation_at(cfg.off_act + saved_row(row_of(code & STEP_TIME_MASK, b), b) * cfg.act_width, 3u, 0u);
        for (var j = 0u; j < h; j++) {
            accumulate(&acc, saved_at(src + j), j * row4 + first, gate4, count);
        }
        return acc;
    }
    if (s == 0u) {
        for (var j = 0u; j < h; j++) {
            accumulate(&acc, state[dst + b * h + j] * rmask_at(b, j), j * row4 + first, gate4, count);
        }
        return acc;
    }
    let prev = smap[dm + (s - 1u) * cfg.batch + b];
    if ((prev & STEP_INACTIVE) != 0u) {
        return acc;
    }
    let src = dyo + row_of(prev & STEP_TIME_MASK, b) * cfg.out_stride + (cfg.out_offset + dout);
    for (var j = 0u; j < h; j++) {
        accumulate(&acc, y[src + j] * rmask_at(b, j), j * row4 + first, gate4, count);
    }
    return acc;
}

// Unit e of the four: its pre-activations of the four gates.
fn unit_gates(acc: array<vec4<f32>, 4>, e: u32) -> vec4<f32> {
    return vec4<f32>(acc[0][e], acc[1][e], acc[2][e], acc[3][e]);
}

@compute @workgroup_size(64, 1, 1)
fn forward_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let s = layer_step(wg.z);
    let k0 = (wg.x * WG_QUADS + lid.x) * 4u;
    let b = wg.y;
    if (s == NO_STEP || k0 >= cfg.hidden) {
        return;
    }
    if (in_step_input(wg.z)) {
        input_gates(s, b, k0);
    }
    var count = gates();
    if (CELL == GRU_RESET_BEFORE) {
        count = 2u;   // n waits for r * h of every unit: forward_gru_n
    }
    let acc = recurrent_product(s, b, k0, 0u, count, false);
    for (var e = 0u; e < 4u; e++) {
        if (k0 + e < cfg.hidden) {
            _ = forward_unit(s, b, k0 + e, unit_gates(acc, e));
        }
    }
}

// Where the input row of batch entry b at step s starts in `y` (the layer below's output of
// the same time), or NO_SOURCE past its length. In a wave only.
fn input_row(s: u32, b: u32) -> u32 {
    let code = smap[dm + s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return NO_SOURCE;
    }
    return dyo - cfg.dir_y + row_of(code & STEP_TIME_MASK, b) * cfg.out_stride + (cfg.out_offset + dout);
}

// The input side of a wave's layer above the first, units k0 .. k0 + 4 of entry b at step s:
// b_ih + W_ih x for every gate (W_ih^T with b_ih as row H at off_wi, laid out as
// recurrent_product's W_hh^T, in f32), written where the input projection would be, in
// `gate_values`, for forward_unit to read. Each invocation writes and then reads only its
// own units. Past the length nothing is written: forward_unit reads none.
fn input_gates(s: u32, b: u32, k0: u32) {
    let src = input_row(s, b);
    if (src == NO_SOURCE) {
        return;
    }
    let h = cfg.hidden;
    let row4 = gates() * cfg.hp / 4u;
    let gate4 = cfg.hp / 4u;
    let first = cfg.off_wi + k0 / 4u;
    var acc: array<vec4<f32>, 4>;
    for (var g = 0u; g < gates(); g++) {
        acc[g] = input_weight4(h * row4 + first + g * gate4);
    }
    for (var j = 0u; j < h; j++) {
        let xv = y[src + j] * imask_at(0u, b, j);
        for (var g = 0u; g < gates(); g++) {
            acc[g] += xv * input_weight4(j * row4 + first + g * gate4);
        }
    }
    let code = smap[dm + s * cfg.batch + b];
    let at = dg + row_of(code & STEP_TIME_MASK, b) * cfg.gate_width;
    for (var e = 0u; e < 4u; e++) {
        if (k0 + e < h) {
            for (var g = 0u; g < gates(); g++) {
                gate_values[at + g * h + k0 + e] = acc[g][e];
            }
        }
    }
}

// The gate work and state update of unit k of batch entry b at step s, given the unit's
// recurrent pre-activations hw (one per gate). Returns what the next recurrent product reads
// of this unit: the new state times the recurrent dropout mask, or for GRU reset-before's
// first half r * (masked state), the source of the n gate's product (0 past the length).
fn forward_unit(s: u32, b: u32, k: u32, hw: vec4<f32>) -> f32 {
    let h = cfg.hidden;
    let code = smap[dm + s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        // Steps past a length map one to one onto the times past it (t = s): zero that
        // output row, and what the weight gradients will read from it.
        let dead = row_of(s, b);
        y[output_at(dead, k)] = 0.0;
        if (cfg.saves != 0u) {
            save_at(dead * h + k, 0.0);
            if (CELL == GRU_RESET_BEFORE) {
                save_activation(cfg.off_act + dead * cfg.act_width, 3u, k, 0.0);
            }
        }
        return 0.0;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    let gw = cfg.gate_width;
    let xr = row * gw;
    let kept = saved_row(row, b);
    let act = cfg.off_act + kept * cfg.act_width;
    // hp is the state itself; the recurrent products (and so the weight gradients) see it
    // through the recurrent dropout mask.
    let hp = hprev_value(s, b, k);
    let hm = hp * rmask_at(b, k);
    if (cfg.saves != 0u) {
        save_at(row * h + k, hm);
    }

    var new_h = 0.0;
    switch CELL {
        case 0u, 1u: {
            let pre = gate_values[dg + xr + k] + hw.x;
            if (CELL == RNN_TANH) {
                new_h = tanh_stable(pre);
            } else {
                new_h = max(pre, 0.0);
            }
        }
        case 2u: {
            let ig = sigmoid(gate_values[dg + xr + k] + hw.x);
            let fg = sigmoid(gate_values[dg + xr + h + k] + hw.y);
            let gg = tanh_stable(gate_values[dg + xr + 2u * h + k] + hw.z);
            let og = sigmoid(gate_values[dg + xr + 3u * h + k] + hw.w);
            var cp = state[dst + cfg.off_c0 + b * h + k];
            if (s > 0u) {
                let prev = smap[dm + (s - 1u) * cfg.batch + b];
                cp = saved_at(cfg.off_cell + saved_row(row_of(prev & STEP_TIME_MASK, b), b) * h + k);
            }
            let c = fg * cp + ig * gg;
            save_at(cfg.off_cell + kept * h + k, c);
            if (cfg.saves != 0u) {
                save_activation_pair(act, 0u, k, ig, fg);
                save_activation_pair(act, 2u, k, gg, og);
            }
            new_h = og * tanh_stable(c);
            if ((code & STEP_LAST) != 0u) {
                state[dst + cfg.off_cn + b * h + k] = c;
            }
        }
        case 3u: {
            let r = sigmoid(gate_values[dg + xr + k] + hw.x);
            let z = sigmoid(gate_values[dg + xr + h + k] + hw.y);
            let n = tanh_stable(gate_values[dg + xr + 2u * h + k] + r * hw.z);
            if (cfg.saves != 0u) {
                save_activation_pair(act, 0u, k, r, z);
                save_activation_pair(act, 2u, k, n, hw.z);
            }
            new_h = (1.0 - z) * n + z * hp;
        }
        default: {
            // GRU reset-before, first half: r, z and r * h (z and r * h read back by the
            // second half).
            let r = sigmoid(gate_values[dg + xr + k] + hw.x);
            let z = sigmoid(gate_values[dg + xr + h + k] + hw.y);
            if (cfg.saves != 0u) {
                save_activation(act, 0u, k, r);
            }
            save_activation(act, 1u, k, z);
            save_activation(act, 3u, k, r * hm);
            return r * hm;
        }
    }
    y[output_at(row, k)] = new_h;
    if ((code & STEP_LAST) != 0u) {
        state[dst + cfg.off_hn + b * h + k] = new_h;
    }
    return new_h * rmask_at(b, k);
}

// GRU reset-before, second half of a step: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).
@compute @workgroup_size(64, 1, 1)
fn forward_gru_n(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let s = layer_step(wg.z);
    let k0 = (wg.x * WG_QUADS + lid.x) * 4u;
    let b = wg.y;
    if (s == NO_STEP || k0 >= cfg.hidden) {
        return;
    }
    let acc = recurrent_product(s, b, k0, 2u, 1u, true);
    for (var e = 0u; e < 4u; e++) {
        if (k0 + e < cfg.hidden) {
            _ = forward_gru_n_unit(s, b, k0 + e, acc[0][e]);
        }
    }
}

fn forward_gru_n_unit(s: u32, b: u32, k: u32, hwn: f32) -> f32 {
    let h = cfg.hidden;
    let code = smap[dm + s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return 0.0;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    let act = cfg.off_act + saved_row(row, b) * cfg.act_width;
    let n = tanh_stable(gate_values[dg + row * cfg.gate_width + 2u * h + k] + hwn);
    let z = saved_activation(act, 1u, k);
    let hp = hprev_value(s, b, k);
    if (cfg.saves != 0u) {
        save_activation(act, 2u, k, n);
    }
    let new_h = (1.0 - z) * n + z * hp;
    y[output_at(row, k)] = new_h;
    if ((code & STEP_LAST) != 0u) {
        state[dst + cfg.off_hn + b * h + k] = new_h;
    }
    return new_h * rmask_at(b, k);
}

// ---------------------------------------------------------------------------------------
// Forward, all steps in one dispatch (forward_sequence): the same per-unit cell code
// (forward_unit, forward_gru_n_unit), so the same saved activations and the step path's
// backward runs unchanged after it. The host chooses between this and the per-step
// dispatches (RecurrentPath in src/gpu/recurrent.rs).
//
// Each workgroup owns TILE consecutive batch entries and runs every step for them. Batch
// entries are independent, so no workgroup ever waits on another (WGSL has no grid barrier
// and no forward-progress guarantee between workgroups). The state of the tile lives in
// workgroup memory, twice (the previous step's and the one being written); a
// workgroupBarrier() separates the steps. Each invocation owns quads of four hidden units
// (quad q for q = lid, lid + 64, ...) of all TILE entries; its product reads four units of
// one gate of W_hh^T as one vec4 from `wt` and applies it to all TILE entries, so within a
// step each element of W_hh is loaded once per workgroup and serves every entry of the tile.
// The per-unit state the cell code reads back from global memory (the previous output, the
// previous cell state) was written by this same invocation at the step before, because a
// unit of a batch entry belongs to one invocation for the whole sequence.

// Batch entries per workgroup (1, 2, 4 or 8): the host picks the largest the state fits.
override TILE: u32 = 1u;
const SEQ_QUADS: u32 = 64u;
// The tile's state, two copies of TILE * H: 4096 floats, WebGPU's default 16 KiB.
const TILE_STATE: u32 = 4096u;
const MAX_TILE: u32 = 8u;
var<workgroup> tile_state: array<f32, TILE_STATE>;

// The recurrent pre-activations of units k0 .. k0 + 4 of gates first_gate .. first_gate +
// count for all TILE entries, at acc[g * TILE + bb]: bias + sum_j source[bb][j] *
// W_hh[gate * H + k, j], source being tile_state from `src` (TILE rows of H).
fn tile_product(src: u32, k0: u32, first_gate: u32, count: u32) -> array<vec4<f32>, 32> {
    let h = cfg.hidden;
    let row4 = gates() * cfg.hp / 4u;   // vec4s per row of wt
    let gate4 = cfg.hp / 4u;            // vec4s per gate block
    let first = first_gate * gate4 + k0 / 4u;
    var acc: array<vec4<f32>, 32>;
    let bias = h * row4 + first;
    for (var g = 0u; g < count; g++) {
        let w = weight4(bias + g * gate4);
        for (var bb = 0u; bb < TILE; bb++) {
            acc[g * TILE + bb] = w;
        }
    }
    var hv: array<f32, MAX_TILE>;
    for (var j = 0u; j < h; j++) {
        for (var bb = 0u; bb < TILE; bb++) {
            hv[bb] = tile_state[src + bb * h + j];
        }
        let base = j * row4 + first;
        for (var g = 0u; g < count; g++) {
            let w = weight4(base + g * gate4);
            for (var bb = 0u; bb < TILE; bb++) {
                acc[g * TILE + bb] += hv[bb] * w;
            }
        }
    }
    return acc;
}

// Unit e of the four, batch entry bb of the tile: its pre-activations of the four gates.
fn tile_unit_gates(acc: array<vec4<f32>, 32>, bb: u32, e: u32) -> vec4<f32> {
    return vec4<f32>(acc[bb][e], acc[TILE + bb][e], acc[2u * TILE + bb][e], acc[3u * TILE + bb][e]);
}

// Bytes per invocation and step (4 bytes an element; TILE entries, G gates, q quads owned):
// reads q * (H + 1) * G vec4 of W (16 bytes each) and, per unit and entry, what the step
// kernel's forward_unit reads (recurrent.rs: step_cost's table); writes what it writes. The
// tile's state moves through workgroup memory only.
@compute @workgroup_size(64, 1, 1)
fn forward_sequence(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let h = cfg.hidden;
    let b0 = wg.x * TILE;
    let tile_h = TILE * h;
    // The initial state as the first product sees it: h0 times the recurrent mask.
    for (var i = lid.x; i < tile_h; i += SEQ_QUADS) {
        let b = b0 + i / h;
        var v = 0.0;
        if (b < cfg.batch) {
            v = state[dst + b * h + i % h] * rmask_at(b, i % h);
        }
        tile_state[i] = v;
    }
    workgroupBarrier();
    var count = gates();
    if (CELL == GRU_RESET_BEFORE) {
        count = 2u;   // n waits for r * h of every unit: the second half below
    }
    var cur = 0u;
    for (var s = 0u; s < cfg.steps; s++) {
        let next = tile_h - cur;
        for (var k0 = lid.x * 4u; k0 < h; k0 += 4u * SEQ_QUADS) {
            let acc = tile_product(cur, k0, 0u, count);
            for (var bb = 0u; bb < TILE; bb++) {
                let b = b0 + bb;
                for (var e = 0u; e < 4u; e++) {
                    if (b < cfg.batch && k0 + e < h) {
                        tile_state[next + bb * h + k0 + e] =
                            forward_unit(s, b, k0 + e, tile_unit_gates(acc, bb, e));
                    }
                }
            }
        }
        workgroupBarrier();
        if (CELL == GRU_RESET_BEFORE) {
            // `next` holds r * h; the new state goes back into `cur`, which no one reads now.
            for (var k0 = lid.x * 4u; k0 < h; k0 += 4u * SEQ_QUADS) {
                let acc = tile_product(next, k0, 2u, 1u);
                for (var bb = 0u; bb < TILE; bb++) {
                    let b = b0 + bb;
                    for (var e = 0u; e < 4u; e++) {
                        if (b < cfg.batch && k0 + e < h) {
                            tile_state[cur + bb * h + k0 + e] =
                                forward_gru_n_unit(s, b, k0 + e, acc[bb][e]);
                        }
                    }
                }
            }
            workgroupBarrier();
        } else {
            cur = next;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Backward, steps in reverse order.

// For units k0 .. k0 + 4: sum over rows r < count of source(b, r) * W_hh[first_row + r, k],
// the gradient reaching unit k's input state. source is the gate gradients of step s + 1
// (use_dn = false: dhw for GRU, whose n gate differs between input and recurrent side,
// dxw otherwise), or this step's dn_pre (use_dn = true, GRU reset-before).
fn transposed_product(s: u32, b: u32, k0: u32, first_row: u32, count: u32, use_dn: bool) -> vec4<f32> {
    let row4 = cfg.hp / 4u;   // vec4s per padded row of W_hh
    var acc = vec4<f32>(0.0);
    let base = cfg.off_wp + first_row * row4 + k0 / 4u;
    // The source row: this step's dn_pre, or the next step's gate gradients.
    var src_step = s + 1u;
    var src_col = first_row;
    if (use_dn) {
        src_step = s;
        src_col = 2u * cfg.hidden;
    } else if (src_step >= cfg.steps) {
        return acc;
    }
    let code = smap[dm + src_step * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return acc;
    }
    let src = row_of(code & STEP_TIME_MASK, b) * cfg.gate_width + src_col;
    if (CELL == GRU && !use_dn) {
        for (var r = 0u; r < count; r++) {
            acc += gate_values[dg + cfg.off_dhw + src + r] * weight4(base + r * row4);
        }
    } else {
        for (var r = 0u; r < count; r++) {
            acc += gate_values[dg + src + r] * weight4(base + r * row4);
        }
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

@compute @workgroup_size(64, 1, 1)
fn backward_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let s = backward_layer_step(wg.z);
    let k0 = (wg.x * WG_QUADS + lid.x) * 4u;
    let b = wg.y;
    if (s == NO_STEP || k0 >= cfg.hidden) {
        return;
    }
    if (in_step_output_grads(wg.z)) {
        output_grads(s, b, k0);
    }
    let rec = transposed_product(s, b, k0, 0u, direct_rows(), false);
    for (var e = 0u; e < 4u; e++) {
        if (k0 + e < cfg.hidden) {
            backward_unit(s, b, k0 + e, rec[e]);
        }
    }
}

// The output gradient of a wave's layer below the top, units k0 .. k0 + 4 of entry b at step
// s: the input gradient of the layer above at the same step, dxw W_ih over all its gate rows
// (that layer's gate gradients, written by the wave before, and its padded W_ih copy, one
// part further on in `gate_values` and `wt`), times the layer above's input dropout mask
// where it has one, written to this layer's output-gradient row in `y` for backward_unit to
// read. Each invocation writes and then reads only its own units. Past the length the row is
// zero (nothing flows there), as the layer above's input gradient is, which the host copies
// these rows to (masked, as the program's row mask leaves that gradient).
fn output_grads(s: u32, b: u32, k0: u32) {
    let code = smap[dm + s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        let dead = wave_dy_row(row_of(s, b)) + k0;
        for (var e = 0u; e < 4u; e++) {
            if (k0 + e < cfg.hidden) {
                y[dead + e] = 0.0;
            }
        }
        return;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    let row4 = cfg.hp / 4u;
    let base = cfg.dir_wt + cfg.off_wi + cfg.off_wp + k0 / 4u;
    let src = dg + cfg.dir_gates + row * cfg.gate_width;
    var acc = vec4<f32>(0.0);
    for (var r = 0u; r < cfg.gate_width; r++) {
        acc += gate_values[src + r] * input_weight4(base + r * row4);
    }
    let at = wave_dy_row(row) + k0;
    for (var e = 0u; e < 4u; e++) {
        if (k0 + e < cfg.hidden) {
            y[at + e] = acc[e] * imask_at(1u, b, k0 + e);
        }
    }
}

// The gate gradients of unit k of batch entry b at step s, given what flows into its state
// through W_hh from the next step (rec).
fn backward_unit(s: u32, b: u32, k: u32, rec: f32) {
    let h = cfg.hidden;
    let at = b * h + k;
    // The carried gradients start, at the last step, from those of the final state.
    var carry_dh = state[dst + cfg.off_dh + at];
    var carry_dc = state[dst + cfg.off_dc + at];
    if (s + 1u == cfg.steps) {
        carry_dh = state[dst + cfg.off_dhn + at];
        carry_dc = state[dst + cfg.off_dcn + at];
    }
    let code = smap[dm + s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        // Past this entry's length nothing happened: the gradients pass through unchanged,
        // and the gate gradients of the time past the length (t = s) are zero.
        state[dst + cfg.off_dh + at] = carry_dh;
        state[dst + cfg.off_dc + at] = carry_dc;
        let dead = row_of(s, b) * cfg.gate_width;
        for (var gi = 0u; gi < gates(); gi++) {
            gate_values[dg + dead + gi * h + k] = 0.0;
            if (CELL == GRU) {
                gate_values[dg + cfg.off_dhw + dead + gi * h + k] = 0.0;
            }
        }
        return;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    let gw = cfg.gate_width;
    let g = row * gw;
    let act = cfg.off_act + row * cfg.act_width;
    var dyv = 0.0;
    if (cfg.wave != 0u && dl + 1u < cfg.wave) {
        dyv = y[wave_dy_row(row) + k];
    } else if (cfg.has_dy != 0u) {
        dyv = dy[row * cfg.out_stride + (cfg.out_offset + dout) + k];
    }
    let dht = carry_dh + rec * rmask_at(b, k) + dyv;
    var new_dh = 0.0;
    switch CELL {
        case 0u, 1u: {
            // RNN's activation is its output, which forward_unit writes and does not save.
            let v = y[output_at(row, k)];
            if (CELL == RNN_TANH) {
                gate_values[dg + g + k] = dht * (1.0 - v * v);
            } else {
                gate_values[dg + g + k] = select(0.0, dht, v > 0.0);
            }
        }
        case 2u: {
            let a = saved_activations(act, k);
            let ig = a.x;
            let fg = a.y;
            let gg = a.z;
            let og = a.w;
            let c = saved_at(cfg.off_cell + row * h + k);
            var cp = state[dst + cfg.off_c0 + at];
            if (s > 0u) {
                let prev = smap[dm + (s - 1u) * cfg.batch + b];
                cp = saved_at(cfg.off_cell + row_of(prev & STEP_TIME_MASK, b) * h + k);
            }
            let tc = tanh_stable(c);
            let dct = carry_dc + dht * og * (1.0 - tc * tc);
            gate_values[dg + g + k] = dct * gg * dsigmoid(ig);
            gate_values[dg + g + h + k] = dct * cp * dsigmoid(fg);
            gate_values[dg + g + 2u * h + k] = dct * ig * (1.0 - gg * gg);
            gate_values[dg + g + 3u * h + k] = dht * tc * dsigmoid(og);
            state[dst + cfg.off_dc + at] = dct * fg;
        }
        case 3u: {
            let a = saved_activations(act, k);
            let r = a.x;
            let z = a.y;
            let n = a.z;
            let hn = a.w;
            let hp = hprev_value(s, b, k);
            let dnp = dht * (1.0 - z) * (1.0 - n * n);
            let drp = dnp * hn * dsigmoid(r);
            let dzp = dht * (hp - n) * dsigmoid(z);
            gate_values[dg + g + k] = drp;
            gate_values[dg + g + h + k] = dzp;
            gate_values[dg + g + 2u * h + k] = dnp;
            gate_values[dg + cfg.off_dhw + g + k] = drp;
            gate_values[dg + cfg.off_dhw + g + h + k] = dzp;
            gate_values[dg + cfg.off_dhw + g + 2u * h + k] = dnp * r;
            new_dh = dht * z;
        }
        default: {
            // GRU reset-before, first half: z and n; r waits for d(r * h) (backward_gru_n).
            let z = saved_activation(act, 1u, k);
            let n = saved_activation(act, 2u, k);
            let hp = hprev_value(s, b, k);
            gate_values[dg + g + h + k] = dht * (hp - n) * dsigmoid(z);
            gate_values[dg + g + 2u * h + k] = dht * (1.0 - z) * (1.0 - n * n);
            new_dh = dht * z;
        }
    }
    state[dst + cfg.off_dh + at] = new_dh;
}

// GRU reset-before, second half of a backward step: d(r * h) = dn_pre W_hn gives r's gradient
// and the rest of the state's.
@compute @workgroup_size(64, 1, 1)
fn backward_gru_n(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let s = backward_layer_step(wg.z);
    let k0 = (wg.x * WG_QUADS + lid.x) * 4u;
    let b = wg.y;
    if (s == NO_STEP || k0 >= cfg.hidden) {
        return;
    }
    let drh = transposed_product(s, b, k0, 2u * cfg.hidden, cfg.hidden, true);
    for (var e = 0u; e < 4u; e++) {
        if (k0 + e < cfg.hidden) {
            backward_gru_n_unit(s, b, k0 + e, drh[e]);
        }
    }
}

fn backward_gru_n_unit(s: u32, b: u32, k: u32, drh: f32) {
    let h = cfg.hidden;
    let code = smap[dm + s * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    let r = saved_activation(cfg.off_act + row * cfg.act_width, 0u, k);
    let hm = saved_at(row * h + k);   // the masked state r multiplied
    gate_values[dg + row * cfg.gate_width + k] = drh * hm * dsigmoid(r);
    let at = b * h + k;
    state[dst + cfg.off_dh + at] = state[dst + cfg.off_dh + at] + drh * r * rmask_at(b, k);
}

// After step 0: the gradient of h0 (dc0 is the carried dc as it stands).
@compute @workgroup_size(64, 1, 1)
fn backward_finish(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let k0 = (wg.x * WG_QUADS + lid.x) * 4u;
    let b = wg.y;
    if (k0 >= cfg.hidden) {
        return;
    }
    let h = cfg.hidden;
    // "The step after step -1" is step 0: transposed_product reads step s + 1, so pass
    // s = -1 as the wrapped value.
    let rec = transposed_product(0xffffffffu, b, k0, 0u, direct_rows(), false);
    for (var e = 0u; e < 4u; e++) {
        if (k0 + e < h) {
            finish_unit(b, k0 + e, rec[e]);
        }
    }
}

// dh0 of unit k of batch entry b, given what flows into h0 through W_hh from step 0 (rec).
fn finish_unit(b: u32, k: u32, rec: f32) {
    let at = b * cfg.hidden + k;
    state[dst + cfg.off_dh0 + at] = state[dst + cfg.off_dh + at] + rec * rmask_at(b, k);
}

// ---------------------------------------------------------------------------------------
// Backward, all steps in one dispatch (backward_sequence): the step kernels' per-unit code
// (backward_unit, backward_gru_n_unit), so the same results, with the recurrent products
// read from workgroup memory. The host takes it where the forward took forward_sequence and
// a tile's staged gradients fit (RecurrentPath in src/gpu/recurrent.rs); after the step
// loop it computes dh0 from step 0's staged gate gradients, as backward_finish does.
//
// Each workgroup owns TILE consecutive batch entries and walks the steps from last to first.
// A unit of an entry belongs to one invocation for the whole sequence (quads as in
// forward_sequence), so the carried dh and dc it keeps in `state` are its own. What crosses
// invocations is the gate gradients of the step just done, which every unit's product of the
// step before needs: after a step the workgroup copies them from `gate_values` (written by
// its own invocations; storageBarrier makes them visible) into tile_state, TILE rows of
// direct_rows() floats, and the product reads them from there. So each element of W_hh is
// loaded once per workgroup and step (ceil(B / TILE) times a step across the dispatch) and
// serves TILE entries; backward_step loads it B times a step.

// Copies gate-gradient columns col .. col + width of step s (dhw for GRU where from_dhw, the
// gate gradients otherwise) of the tile's entries into tile_state, rows of `width`; zeros for
// entries past the batch and inactive steps.
fn stage_step_grads(s: u32, b0: u32, lid: u32, col: u32, width: u32, from_dhw: bool) {
    for (var i = lid; i < TILE * width; i += SEQ_QUADS) {
        let b = b0 + i / width;
        var v = 0.0;
        if (b < cfg.batch) {
            let code = smap[dm + s * cfg.batch + b];
            if ((code & STEP_INACTIVE) == 0u) {
                var at = row_of(code & STEP_TIME_MASK, b) * cfg.gate_width + col + i % width;
                if (CELL == GRU && from_dhw) {
                    at += cfg.off_dhw;
                }
                v = gate_values[dg + at];
            }
        }
        tile_state[i] = v;
    }
}

// For units k0 .. k0 + 4 and every entry bb of the tile, at acc[bb]: sum over r < width of
// tile_state[bb * width + r] * W_hh[first_row + r, k] (the padded W_hh copy in `wt`).
fn staged_transposed_product(k0: u32, first_row: u32, width: u32) -> array<vec4<f32>, 8> {
    let row4 = cfg.hp / 4u;
    let base = cfg.off_wp + first_row * row4 + k0 / 4u;
    var acc: array<vec4<f32>, 8>;
    for (var r = 0u; r < width; r++) {
        let w = weight4(base + r * row4);
        for (var bb = 0u; bb < TILE; bb++) {
            acc[bb] += tile_state[bb * width + r] * w;
        }
    }
    return acc;
}

// What sequence_units runs per unit and entry with the staged product.
const UNITS_STEP: u32 = 0u;     // backward_unit: step s
const UNITS_GRU_N: u32 = 1u;    // backward_gru_n_unit: the second half of a GRU reset-before step
const UNITS_FINISH: u32 = 2u;   // finish_unit: dh0, after step 0

// The units this invocation owns, for every entry of the tile, given the staged product over
// rows first_row .. first_row + width of W_hh: the work `what` names (above) at step s.
fn sequence_units(s: u32, b0: u32, lid: u32, first_row: u32, width: u32, what: u32) {
    for (var k0 = lid * 4u; k0 < cfg.hidden; k0 += 4u * SEQ_QUADS) {
        let acc = staged_transposed_product(k0, first_row, width);
        for (var bb = 0u; bb < TILE; bb++) {
            for (var e = 0u; e < 4u; e++) {
                if (b0 + bb < cfg.batch && k0 + e < cfg.hidden) {
                    let b = b0 + bb;
                    let k = k0 + e;
                    if (what == UNITS_GRU_N) {
                        backward_gru_n_unit(s, b, k, acc[bb][e]);
                    } else if (what == UNITS_FINISH) {
                        finish_unit(b, k, acc[bb][e]);
                    } else {
                        backward_unit(s, b, k, acc[bb][e]);
                    }
                }
            }
        }
    }
}

// Bytes per invocation and step (TILE entries, q quads owned, R = direct_rows()): reads
// q * R vec4 of W (16 bytes each; GRU reset-before another q * H for the n gate) and, per
// unit and entry, what backward_step's backward_unit reads (recurrent.rs: step_cost's
// table); writes what it writes. Staging reads TILE * R gate gradients per workgroup and step.
@compute @workgroup_size(64, 1, 1)
fn backward_sequence(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let h = cfg.hidden;
    let b0 = wg.x * TILE;
    let rows = direct_rows();
    for (var n = 0u; n < cfg.steps; n++) {
        let s = cfg.steps - 1u - n;
        // Nothing flows back from after the last step: a product over no rows, zero.
        sequence_units(s, b0, lid.x, 0u, select(rows, 0u, n == 0u), UNITS_STEP);
        // This step's gate gradients reach every invocation; tile_state is free again.
        storageBarrier();
        workgroupBarrier();
        if (CELL == GRU_RESET_BEFORE) {
            // d(r * h) = dn_pre W_hn, from this step's dn_pre (column 2H).
            stage_step_grads(s, b0, lid.x, 2u * h, h, false);
            workgroupBarrier();
            sequence_units(s, b0, lid.x, 2u * h, h, UNITS_GRU_N);
            storageBarrier();
            workgroupBarrier();
        }
        // The step before reads this step's gate gradients; after step 0, dh0 does.
        stage_step_grads(s, b0, lid.x, 0u, rows, true);
        workgroupBarrier();
    }
    sequence_units(0u, b0, lid.x, 0u, rows, UNITS_FINISH);
}

// ---------------------------------------------------------------------------------------
// Batch-tiled step kernels, for GPUs (`StepKernel::Tiled` in src/gpu/recurrent.rs; adapters
// that run shaders on the CPU keep the kernels above). The same steps, the same per-unit cell
// code (forward_unit, forward_gru_n_unit, backward_unit, backward_gru_n_unit) and so the same
// results; only the recurrent product is shaped differently.
//
// The product of a step is a small GEMM: [B x K] sources times K x (outputs of each unit),
// K = H in forward (W_hh^T's rows), G * hp in backward (W_hh's rows, in padded gate blocks).
// A workgroup owns `units` consecutive hidden units (every gate of each, so the cell update
// stays inside one invocation) for a tile of `tile` batch entries, and walks K in chunks of
// TK: its 128 invocations stage the tile's sources (tile x TK) and the weights of its units
// (outputs x TK x units) in workgroup memory, then each invocation (one unit, one entry, one
// half of the chunk) sums its half; the halves meet in workgroup memory at the end. So in a
// step each weight is loaded from global memory once per batch tile (ceil(B / tile) times)
// and each source element once per block of units (ceil(H / units) times), instead of B
// times and once per 4 units as above.
//
// Shapes: forward units 4, tile 16 (its weight rows are G per unit, so it favours a wide
// tile); backward units 8, tile 8 (one output per unit over G * hp rows). Both give 128
// invocations and, at H = 256, B = 32, 128 workgroups.

const TK: u32 = 64u;                 // K chunk staged per pass
const TK_HALF: u32 = 32u;
const TILED_INVOCATIONS: u32 = 128u;
// Source rows are padded to TK + 1 floats, so the entries of a warp read different banks.
const TS_STRIDE: u32 = 65u;
const FT_UNITS: u32 = 4u;
const FT_TILE: u32 = 16u;
const BT_UNITS: u32 = 8u;
const BT_TILE: u32 = 8u;
const NO_SOURCE: u32 = 0xffffffffu;
// What a tiled product multiplies W_hh with.
const SRC_PREV: u32 = 0u;        // the previous state (h0 at step 0) times the recurrent mask
const SRC_RH: u32 = 1u;          // r * h of this step (GRU reset-before's n gate)
const SRC_NEXT_GRADS: u32 = 2u;  // the next step's gate gradients (dhw for GRU)
const SRC_DN: u32 = 3u;          // this step's dn_pre (GRU reset-before's backward_gru_n)
const SRC_INPUT: u32 = 4u;       // a wave's layer input: the layer below's output (input_row), masked
const SRC_UPPER_GRADS: u32 = 5u; // a wave's layer output gradient: the layer above's gate gradients

var<workgroup> ts_src: array<f32, 1040>;        // [tile][TS_STRIDE]
var<workgroup> ts_w: array<f32, 1024>;          // [output][TK][units], units fastest
var<workgroup> ts_red: array<vec4<f32>, 64>;    // second halves' sums, per (unit, entry)
var<workgroup> ts_base: array<u32, 16>;         // per entry: where its source row starts

// Where batch entry b's source row starts in its buffer, or NO_SOURCE (a zero row).
fn tiled_source_base(kind: u32, s: u32, b: u32) -> u32 {
    if (b >= cfg.batch) {
        return NO_SOURCE;
    }
    var at = s;
    switch kind {
        case 0u: {
            if (s == 0u) {
                return b * cfg.hidden;
            }
            at = s - 1u;
        }
        case 2u: {
            at = s + 1u;
        }
        default: {}
    }
    if (at >= cfg.steps) {
        return NO_SOURCE;   // the last step has no next one
    }
    let code = smap[dm + at * cfg.batch + b];
    if ((code & STEP_INACTIVE) != 0u) {
        return NO_SOURCE;
    }
    let row = row_of(code & STEP_TIME_MASK, b);
    switch kind {
        case 0u: {
            return dyo + row * cfg.out_stride + (cfg.out_offset + dout);
        }
        case 1u: {
            return activation_at(cfg.off_act + saved_row(row, b) * cfg.act_width, 3u, 0u);
        }
        case 4u: {
            return dyo - cfg.dir_y + row * cfg.out_stride + (cfg.out_offset + dout);
        }
        case 5u: {
            return cfg.dir_gates + row * cfg.gate_width;
        }
        case 2u: {
            if (CELL == GRU) {
                return cfg.off_dhw + row * cfg.gate_width;
            }
            return row * cfg.gate_width;
        }
        default: {
            return row * cfg.gate_width;
        }
    }
}

// Element c of K of batch entry b's source row (starting at base). Forward: state unit c.
// Backward: padded column c of gate first_gate + c / hp, zero in the padding.
fn tiled_source(kind: u32, s: u32, b: u32, base: u32, c: u32, first_gate: u32) -> f32 {
    let h = cfg.hidden;
    switch kind {
        case 0u: {
            if (c >= h) {
                return 0.0;
            }
            if (s == 0u) {
                return state[dst + base + c] * rmask_at(b, c);
            }
            return y[base + c] * rmask_at(b, c);
        }
        case 1u: {
            if (c >= h) {
                return 0.0;
            }
            return saved_at(base + c);
        }
        case 4u: {
            if (c >= h) {
                return 0.0;
            }
            return y[base + c] * imask_at(0u, b, c);
        }
        default: {
            let u = c % cfg.hp;
            if (u >= h) {
                return 0.0;
            }
            return gate_values[dg + base + (first_gate + c / cfg.hp) * h + u];
        }
    }
}

// vec4 c4 of K in the weight row of output o of unit k. Forward: the padded W_hh copy, row
// (first_gate + o) * H + k (SRC_INPUT: the padded W_ih copy's). Backward: W_hh^T's row k,
// from gate block first_gate on.
fn tiled_weights(kind: u32, o: u32, k: u32, c4: u32, first_gate: u32) -> vec4<f32> {
    let gate4 = cfg.hp / 4u;
    if (kind == SRC_INPUT) {
        return input_weight4(cfg.off_wi + cfg.off_wp + ((first_gate + o) * cfg.hidden + k) * gate4 + c4);
    }
    if (kind == SRC_UPPER_GRADS) {
        // The layer above's W_ih^T, row k (one part further on in `wt`).
        return input_weight4(cfg.dir_wt + cfg.off_wi + k * gates() * gate4 + first_gate * gate4 + c4);
    }
    if (kind < 2u) {
        return weight4(cfg.off_wp + ((first_gate + o) * cfg.hidden + k) * gate4 + c4);
    }
    return weight4(k * gates() * gate4 + first_gate * gate4 + c4);
}

// This invocation's share of the product for outputs 0 .. outs of unit k0 + (lid / tile) %
// units and entry b0 + lid % tile, over K = 0 .. depth (a multiple of 4): complete for the
// first half of the invocations (lid < units * tile), which run the cell code after. Every
// invocation of the workgroup calls it with the same arguments but lid (it has barriers).
fn tiled_product(kind: u32, s: u32, b0: u32, k0: u32, units: u32, tile: u32, outs: u32, first_gate: u32, depth: u32, lid: u32) -> vec4<f32> {
    if (lid < tile) {
        ts_base[lid] = tiled_source_base(kind, s, b0 + lid);
    }
    let bb = lid % tile;
    let u = (lid / tile) % units;
    let half = lid / (tile * units);
    var acc = vec4<f32>(0.0);
    for (var c0 = 0u; c0 < depth; c0 += TK) {
        // The previous chunk's reads (and ts_base's writes) are done.
        workgroupBarrier();
        for (var i = lid; i < tile * TK; i += TILED_INVOCATIONS) {
            let e = i / TK;
            let jj = i % TK;
            let base = ts_base[e];
            var v = 0.0;
            if (base != NO_SOURCE && c0 + jj < depth) {
                v = tiled_source(kind, s, b0 + e, base, c0 + jj, first_gate);
            }
            ts_src[e * TS_STRIDE + jj] = v;
        }
        for (var i = lid; i < outs * units * (TK / 4u); i += TILED_INVOCATIONS) {
            let o = i / (units * (TK / 4u));
            let wu = (i / (TK / 4u)) % units;
            let c4 = i % (TK / 4u);
            var w = vec4<f32>(0.0);
            if (k0 + wu < cfg.hidden && c0 + 4u * c4 < depth) {
                w = tiled_weights(kind, o, k0 + wu, c0 / 4u + c4, first_gate);
            }
            for (var e = 0u; e < 4u; e++) {
                ts_w[(o * TK + 4u * c4 + e) * units + wu] = w[e];
            }
        }
        workgroupBarrier();
        for (var jj = half * TK_HALF; jj < (half + 1u) * TK_HALF; jj++) {
            let v = ts_src[bb * TS_STRIDE + jj];
            for (var o = 0u; o < outs; o++) {
                acc[o] += ts_w[(o * TK + jj) * units + u] * v;
            }
        }
    }
    if (half == 1u) {
        ts_red[lid - tile * units] = acc;
    }
    workgroupBarrier();
    if (half == 0u) {
        acc += ts_red[lid];
    }
    return acc;
}

// The vec4 of W^T's bias row (row H) that holds unit k of gate g.
fn bias_vec4(k: u32, g: u32) -> u32 {
    let gate4 = cfg.hp / 4u;
    return cfg.hidden * gates() * gate4 + g * gate4 + k / 4u;
}

// b_hh of gates first_gate .. first_gate + count of unit k (W_hh^T's row H).
fn tiled_bias(k: u32, first_gate: u32, count: u32) -> vec4<f32> {
    var bias = vec4<f32>(0.0);
    for (var g = 0u; g < count; g++) {
        bias[g] = weight4(bias_vec4(k, first_gate + g))[k % 4u];
    }
    return bias;
}

// b_ih of every gate of unit k (a stack's copy of W_ih^T, row H).
fn tiled_input_bias(k: u32) -> vec4<f32> {
    var bias = vec4<f32>(0.0);
    for (var g = 0u; g < gates(); g++) {
        bias[g] = input_weight4(cfg.off_wi + bias_vec4(k, g))[k % 4u];
    }
    return bias;
}

// The unit (x) and batch entry (y) whose cell code invocation lid of workgroup wg runs after
// tiled_product; x is NO_SOURCE where it runs none (the second halves, and the units and
// entries past the ends).
fn tiled_owner(wg: vec3<u32>, lid: u32, units: u32, tile: u32) -> vec2<u32> {
    let k = wg.x * units + (lid / tile) % units;
    let b = wg.y * tile + lid % tile;
    if (lid >= units * tile || k >= cfg.hidden || b >= cfg.batch) {
        return vec2<u32>(NO_SOURCE, 0u);
    }
    return vec2<u32>(k, b);
}

// Bytes per invocation and step (4 bytes an element): per chunk of TK, the staging loads
// tile * TK / 128 source elements (the mask with each in forward, where there is one) and
// outs * units * TK / 4 / 128 weight vec4s; the cell code after it (half of the invocations)
// reads and writes what the kernels above do per unit (recurrent.rs: step_cost's table).
// Each element of W_hh is loaded ceil(B / 16) times a step, each state element
// ceil(H / 4) times. In a wave, a layer above the first runs the same product over W_ih's
// padded copy and the layer below's output first (SRC_INPUT), all gates: as much again.
@compute @workgroup_size(128, 1, 1)
fn forward_step_tiled(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let s = layer_step(wg.z);
    if (s == NO_STEP) {
        return;
    }
    let kb = tiled_owner(wg, lid.x, FT_UNITS, FT_TILE);
    if (in_step_input(wg.z)) {
        // All gates' b_ih + W_ih x into gate_values, where forward_unit reads the input
        // projection; the owner of a unit and entry writes it and reads it back.
        let xa = tiled_product(SRC_INPUT, s, wg.y * FT_TILE, wg.x * FT_UNITS, FT_UNITS, FT_TILE, gates(), 0u, cfg.hp, lid.x);
        if (kb.x != NO_SOURCE) {
            let code = smap[dm + s * cfg.batch + kb.y];
            if ((code & STEP_INACTIVE) == 0u) {
                let at = dg + row_of(code & STEP_TIME_MASK, kb.y) * cfg.gate_width + kb.x;
                let v = xa + tiled_input_bias(kb.x);
                for (var g = 0u; g < gates(); g++) {
                    gate_values[at + g * cfg.hidden] = v[g];
                }
            }
        }
    }
    var count = gates();
    if (CELL == GRU_RESET_BEFORE) {
        count = 2u;   // n waits for r * h of every unit: forward_gru_n_tiled
    }
    let acc = tiled_product(SRC_PREV, s, wg.y * FT_TILE, wg.x * FT_UNITS, FT_UNITS, FT_TILE, count, 0u, cfg.hp, lid.x);
    if (kb.x != NO_SOURCE) {
        _ = forward_unit(s, kb.y, kb.x, acc + tiled_bias(kb.x, 0u, count));
    }
}

// As forward_step_tiled, the n gate from r * h: one output per unit.
@compute @workgroup_size(128, 1, 1)
fn forward_gru_n_tiled(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let s = layer_step(wg.z);
    if (s == NO_STEP) {
        return;
    }
    let acc = tiled_product(SRC_RH, s, wg.y * FT_TILE, wg.x * FT_UNITS, FT_UNITS, FT_TILE, 1u, 2u, cfg.hp, lid.x);
    let kb = tiled_owner(wg, lid.x, FT_UNITS, FT_TILE);
    if (kb.x != NO_SOURCE) {
        _ = forward_gru_n_unit(s, kb.y, kb.x, acc.x + tiled_bias(kb.x, 2u, 1u).x);
    }
}

// Bytes per invocation and step: as forward_step_tiled with tile 8, units 8, one output per
// unit, K = direct_rows() / H * hp (no product at the last step, which has no next one).
// Each element of W_hh is loaded ceil(B / 8) times a step, each gate gradient ceil(H / 8)
// times.
@compute @workgroup_size(128, 1, 1)
fn backward_step_tiled(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let s = backward_layer_step(wg.z);
    if (s == NO_STEP) {
        return;
    }
    let kb = tiled_owner(wg, lid.x, BT_UNITS, BT_TILE);
    if (in_step_output_grads(wg.z)) {
        // The layer above's input gradient at this step, over all its gate rows, into this
        // layer's output-gradient row, where backward_unit reads it (output_grads).
        let depth = gates() * cfg.hp;
        let g = tiled_product(SRC_UPPER_GRADS, s, wg.y * BT_TILE, wg.x * BT_UNITS, BT_UNITS, BT_TILE, 1u, 0u, depth, lid.x);
        if (kb.x != NO_SOURCE) {
            let code = smap[dm + s * cfg.batch + kb.y];
            if ((code & STEP_INACTIVE) == 0u) {
                let dy = g.x * imask_at(1u, kb.y, kb.x);
                y[wave_dy_row(row_of(code & STEP_TIME_MASK, kb.y)) + kb.x] = dy;
            } else {
                y[wave_dy_row(row_of(s, kb.y)) + kb.x] = 0.0;
            }
        }
    }
    var depth = direct_rows() / cfg.hidden * cfg.hp;
    if (s + 1u >= cfg.steps) {
        depth = 0u;
    }
    let acc = tiled_product(SRC_NEXT_GRADS, s, wg.y * BT_TILE, wg.x * BT_UNITS, BT_UNITS, BT_TILE, 1u, 0u, depth, lid.x);
    if (kb.x != NO_SOURCE) {
        backward_unit(s, kb.y, kb.x, acc.x);
    }
}

// As backward_step_tiled, after step 0: the gradient of h0 (backward_finish). Step -1 is
// passed as its wrapped value, so the product reads step 0's gate gradients.
@compute @workgroup_size(128, 1, 1)
fn backward_finish_tiled(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let depth = direct_rows() / cfg.hidden * cfg.hp;
    let acc = tiled_product(SRC_NEXT_GRADS, 0xffffffffu, wg.y * BT_TILE, wg.x * BT_UNITS, BT_UNITS, BT_TILE, 1u, 0u, depth, lid.x);
    let kb = tiled_owner(wg, lid.x, BT_UNITS, BT_TILE);
    if (kb.x != NO_SOURCE) {
        finish_unit(kb.y, kb.x, acc.x);
    }
}

// As backward_step_tiled, d(r * h) = dn_pre W_hn over the H rows of the n gate.
@compute @workgroup_size(128, 1, 1)
fn backward_gru_n_tiled(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    enter_direction(wg.z);
    let s = backward_layer_step(wg.z);
    if (s == NO_STEP) {
        return;
    }
    let acc = tiled_product(SRC_DN, s, wg.y * BT_TILE, wg.x * BT_UNITS, BT_UNITS, BT_TILE, 1u, 2u, cfg.hp, lid.x);
    let kb = tiled_owner(wg, lid.x, BT_UNITS, BT_TILE);
    if (kb.x != NO_SOURCE) {
        backward_gru_n_unit(s, kb.y, kb.x, acc.x);
    }
}
