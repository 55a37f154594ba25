// merge.wgsl: the output stage of a recurrent stack: combine the two directions (Keras merge
// modes sum, mul, ave; concat is a copy) and, for go_backwards, reverse the time order.
// CPU twin: OutputStage in src/nn/recurrent.rs. Host side: src/gpu/merge.rs.

struct MergeParams {
    rows: u32,
    hidden: u32,
    dirs: u32,
    mode: u32,        // 0 concat, 1 sum, 2 mul, 3 ave
    flip: u32,
    steps: u32,
    batch: u32,
    batch_first: u32,
}

@group(0) @binding(0) var<uniform> p: MergeParams;
@group(0) @binding(1) var<storage, read> cat: array<f32>;      // [rows, dirs * hidden]
@group(0) @binding(2) var<storage, read> upstream: array<f32>; // backward: d_out [rows, width]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn width() -> u32 {
    if (p.dirs == 2u && p.mode == 0u) {
        return 2u * p.hidden;
    }
    return p.hidden;
}

// The concatenated row that output row `row` comes from.
fn source_row(row: u32) -> u32 {
    if (p.flip == 0u) {
        return row;
    }
    if (p.batch_first != 0u) {
        let t = row % p.steps;
        let b = row / p.steps;
        return b * p.steps + (p.steps - 1u - t);
    }
    let t = row / p.batch;
    let b = row % p.batch;
    return (p.steps - 1u - t) * p.batch + b;
}

struct Invocation {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
}

// The (column, output row) an invocation covers. A workgroup covers 64 columns of 4 rows;
// row groups past the grid's y limit wrap into z.
fn position(i: Invocation) -> vec2<u32> {
    return vec2<u32>(i.wg.x * 64u + i.lid.x, (i.wg.z * i.nwg.y + i.wg.y) * 4u + i.lid.y);
}

@compute @workgroup_size(64, 4, 1)
fn merge_forward(i: Invocation) {
    let k = position(i).x;
    let row = position(i).y;
    let w = width();
    if (k >= w || row >= p.rows) {
        return;
    }
    let cw = p.dirs * p.hidden;
    let src = source_row(row) * cw;
    var v = cat[src + k];
    if (w != cw) {
        let b = cat[src + p.hidden + k];
        switch p.mode {
            case 1u: { v = v + b; }
            case 2u: { v = v * b; }
            default: { v = 0.5 * (v + b); }
        }
    }
    out[row * w + k] = v;
}

// Writes the gradient of the concatenated rows; `out` is [rows, dirs * hidden].
@compute @workgroup_size(64, 4, 1)
fn merge_backward(i: Invocation) {
    let k = position(i).x;
    let row = position(i).y;
    let w = width();
    if (k >= w || row >= p.rows) {
        return;
    }
    let cw = p.dirs * p.hidden;
    let src = source_row(row) * cw;
    let g = upstream[row * w + k];
    if (w == cw) {
        out[src + k] = g;
        return;
    }
    let a = cat[src + k];
    let b = cat[src + p.hidden + k];
    var da = g;
    var db = g;
    switch p.mode {
        case 2u: { da = g * b; db = g * a; }
        case 3u: { da = 0.5 * g; db = 0.5 * g; }
        default: {}
    }
    out[src + k] = da;
    out[src + p.hidden + k] = db;
}
