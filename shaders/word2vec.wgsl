// word2vec.wgsl: the nearest-neighbour scan of word vectors. `normalize` scales every row
// to unit length once; per query, `scores` takes each row's dot product with the unit query
// (its cosine), and `select_top` passes keep the best k of every 1024 candidates until one
// chunk is left. Ties go to the lower row, so the answer does not depend on scheduling.
// CPU twin: src/cpu/word2vec.rs.

struct Params {
    rows: u32,      // rows (normalize, scores) or candidates (select_top) in the input
    dim: u32,
    k: u32,
    flags: u32,     // select_top: 1 = the input's indices are its positions (first pass)
    n_exclude: u32,
    groups_x: u32,  // workgroups along x (large dispatches use y as well)
    _pad0: u32,
    _pad1: u32,
}

const ROWS_PER_GROUP: u32 = 64u;
// Below any cosine: a row excluded from the answer, or padding past the last candidate.
const EXCLUDED: f32 = -3.0e38;
// Below EXCLUDED: a candidate already taken in this pass.
const TAKEN: f32 = -3.4e38;
const NO_ROW: u32 = 0xffffffffu;

// ---- normalize: unit[r] = vectors[r] / |vectors[r]| (zero rows stay zero)
@group(0) @binding(0) var<uniform> np: Params;
@group(0) @binding(1) var<storage, read> n_vectors: array<f32>;
@group(0) @binding(2) var<storage, read_write> n_unit: array<f32>;

@compute @workgroup_size(64)
fn normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = (wid.x + wid.y * np.groups_x) * ROWS_PER_GROUP + lid;
    if (r >= np.rows) {
        return;
    }
    let base = r * np.dim;
    var s = 0.0;
    for (var j = 0u; j < np.dim; j++) {
        let x = n_vectors[base + j];
        s += x * x;
    }
    let n = sqrt(s);
    for (var j = 0u; j < np.dim; j++) {
        n_unit[base + j] = select(0.0, n_vectors[base + j] / n, n > 0.0);
    }
}

// ---- scores: scores[r] = unit[r] . query, EXCLUDED for the excluded rows
@group(0) @binding(0) var<uniform> sp: Params;
@group(0) @binding(1) var<storage, read> s_unit: array<f32>;
@group(0) @binding(2) var<storage, read> s_query: array<f32>;
@group(0) @binding(3) var<storage, read> s_exclude: array<u32>;
@group(0) @binding(4) var<storage, read_write> s_scores: array<f32>;

@compute @workgroup_size(64)
fn scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = (wid.x + wid.y * sp.groups_x) * ROWS_PER_GROUP + lid;
    if (r >= sp.rows) {
        return;
    }
    let base = r * sp.dim;
    var s = 0.0;
    for (var j = 0u; j < sp.dim; j++) {
        s += s_unit[base + j] * s_query[j];
    }
    for (var e = 0u; e < sp.n_exclude; e++) {
        if (s_exclude[e] == r) {
            s = EXCLUDED;
        }
    }
    s_scores[r] = s;
}

// ---- select_top: the best k of each chunk of 1024 candidates, best first
const WG: u32 = 256u;
const PER_THREAD: u32 = 4u;
const CHUNK: u32 = 1024u;

@group(0) @binding(0) var<uniform> tp: Params;
@group(0) @binding(1) var<storage, read> t_in_score: array<f32>;
@group(0) @binding(2) var<storage, read> t_in_row: array<u32>;
@group(0) @binding(3) var<storage, read_write> t_out_score: array<f32>;
@group(0) @binding(4) var<storage, read_write> t_out_row: array<u32>;

var<workgroup> cand_score: array<f32, 1024>;
var<workgroup> cand_row: array<u32, 1024>;
var<workgroup> best_pos: array<u32, 256>;

// Whether candidate a ranks before candidate b.
fn before(a: u32, b: u32) -> bool {
    let sa = cand_score[a];
    let sb = cand_score[b];
    return sa > sb || (sa == sb && cand_row[a] < cand_row[b]);
}

@compute @workgroup_size(256)
fn select_top(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = wid.x + wid.y * tp.groups_x;
    let base = chunk * CHUNK;
    // `chunk` is the same for the whole workgroup, so this return is uniform.
    if (base >= tp.rows) {
        return;
    }
    for (var q = 0u; q < PER_THREAD; q++) {
        let pos = lid + q * WG;
        let g = base + pos;
        if (g < tp.rows) {
            cand_score[pos] = t_in_score[g];
            if ((tp.flags & 1u) != 0u) {
                cand_row[pos] = g;
            } else {
                cand_row[pos] = t_in_row[g];
            }
        } else {
            cand_score[pos] = EXCLUDED;
            cand_row[pos] = NO_ROW;
        }
    }
    workgroupBarrier();
    for (var round = 0u; round < tp.k; round++) {
        var mine = lid;
        for (var q = 1u; q < PER_THREAD; q++) {
            let pos = lid + q * WG;
            if (before(pos, mine)) {
                mine = pos;
            }
        }
        best_pos[lid] = mine;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
            if (lid < stride) {
                let other = best_pos[lid + stride];
                if (before(other, best_pos[lid])) {
                    best_pos[lid] = other;
                }
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            let p = best_pos[0];
            t_out_score[chunk * tp.k + round] = cand_score[p];
            t_out_row[chunk * tp.k + round] = cand_row[p];
            cand_score[p] = TAKEN;
        }
        workgroupBarrier();
    }
}
