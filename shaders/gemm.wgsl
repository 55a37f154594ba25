// gemm.wgsl: C = alpha * op(A) * op(B) + beta * C + bias, batched, row-major; its split-K
// form; and column sums (bias gradients). CPU twins: src/cpu/gemm.rs. Host side:
// src/gpu/gemm.rs (which also states each kernel's bytes per invocation, for cost tables).
//
// `main`, for GPUs. A workgroup of 8 x 16 = 128 invocations computes a 128 x 64 tile of C;
// each invocation owns 8 x 8 of it: rows ty*4 .. +4 and 64 + ty*4 .. +4, columns tx*4 .. +4
// and 32 + tx*4 .. +4, so its reads of the tiles are four vec4 loads per k step that a warp
// serves without conflicts (A: four distinct vec4, broadcast; B: eight consecutive vec4).
// K is walked 8 at a time through two buffers of workgroup memory: while the tile of step k
// is multiplied, the loads of step k + 1 are in flight into registers, then stored into the
// other buffer, so one barrier per step separates them (double buffering).
//
// Loads of A and B are coalesced for either transpose: consecutive invocations read
// consecutive addresses (8 consecutive k of a row, or 32 consecutive rows of a k). The
// tiles are stored k-major, [k][row], each k-row padded by one vec4, so the stores that
// transpose (A not transposed, B transposed; the input projection and dx) land in distinct
// banks: invocation (k = li % 8, row = li / 8) writes word k * 132 + row, bank (4k + row) %
// 32, all 32 distinct across a warp (without the pad, 8 of them would share a bank).
//
// Edges: whether a tile lies wholly inside the matrix is the same for the whole workgroup,
// so interior tiles load and store without bounds checks; only edge tiles test each index
// (loading zeros outside). Workgroup memory: 2 x 8 x (33 + 17) vec4 = 12,800 bytes, within
// WebGPU's default 16 KiB.
//
// Split-K (`main` with SPLIT, then `reduce_splits`): the K range is cut into `splits` chunks
// of k_chunk (a multiple of 8); workgroup (tile, split) writes its raw partial product to
// `partial`; `reduce_splits` adds the partials of each element in split order (fixed, no
// atomics), applies alpha, beta and the bias, and writes C. The host chooses it for
// products with too few tiles to fill a GPU and a long K (weight gradients).
//
// The weight-gradient product (FLAG_JOINED, always with SPLIT, then `reduce_weight_grads`): a layer's weight
// and bias gradients in one dispatch and its reduction. B is [b | b2] side by side (the
// layer's inputs and its previous states; columns from n_b1 on come from b2), and workgroups
// past the product's tiles sum A's columns (op(A)'s rows: the bias gradient) over chunks of
// K, `sum_depth` rows each, into `partial` after the products. `reduce_weight_grads` adds both in
// fixed order and writes the two blocks of C and the sums to their own outputs. With FLAG_A2
// (GRU, whose recurrent gate gradients differ), b2's block pairs with a second A in `a` from
// offset_a2: that block starts at column b2_col, a multiple of the tile width, so every tile
// reads one A (columns n_b1 .. b2_col are a gap of zeros, computed and dropped), and a second
// set of sum workgroups sums A2's columns into `sums2`.
//
// With a gap (GRU reset-before, whose n rows of dW_hh pair with r * h, not h), b2's block
// reads b3 (in `b2`, from offset_b3) from op(A)'s row gap_begin on. So that each tile reads
// one of them, the product's rows gap_begin .. gap_end (the next tile boundary) are zeros,
// computed and dropped, and product row r >= gap_end is op(A)'s row r - (gap_end - gap_begin):
// the product has m = a_cols + gap_end - gap_begin rows.
//
// The grid is one dimension folded into two (65,535 workgroups per dimension): workgroup
// id = wg.y * num_workgroups.x + wg.x, past the last tile it returns (a uniform exit).

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,      // bit 0: A transposed, 1: B transposed, 2: add bias, 3: read C (beta != 0), 4: second sums output, 5: B joined from b and b2 (FLAG_JOINED), 6: b2 pairs with A2 (FLAG_A2)
    lda: u32,
    ldb: u32,
    ldc: u32,
    batch: u32,
    offset_a: u32,
    offset_b: u32,
    offset_c: u32,
    tiles_n: u32,    // main: column tiles of C
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    tiles_m: u32,    // main: row tiles of C
    alpha: f32,
    beta: f32,
    splits: u32,     // chunks of K (split-K); 1 otherwise
    k_chunk: u32,    // the depth of each chunk
    n_b1: u32,       // FLAG_JOINED: the columns of B read from b; the rest from b2
    offset_b2: u32,
    ldb2: u32,
    sum_chunks: u32, // FLAG_JOINED: chunks of K the column sums are split into
    sum_depth: u32,  // FLAG_JOINED: rows per chunk of the column sums
    offset_a2: u32,  // FLAG_A2: where A2 starts in `a` (leading dimension lda)
    b2_col: u32,     // FLAG_JOINED: the column of C where b2's block starts (n_b1 without FLAG_A2)
    a_cols: u32,     // columns of A (op(A)'s rows): m but for a gap
    gap_begin: u32,  // product rows gap_begin .. gap_end are a gap of zeros (u32 max: none)
    gap_end: u32,    // a tile boundary; from it on, b2's block reads b3 (FLAG_JOINED)
    offset_b3: u32,  // where b3 starts in `b2`
    ldb3: u32,
}

const FLAG_BIAS: u32 = 4u;
const FLAG_READ_C: u32 = 8u;
const FLAG_SECOND: u32 = 16u;
const FLAG_JOINED: u32 = 32u;
const FLAG_A2: u32 = 64u;

// The transposes are fixed per pipeline, so no load branches on them at run time; so is
// whether `main` writes C or (split-K) the partial products.
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override SPLIT: bool = false;

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;  // [batch, splits, m, n]
@group(0) @binding(6) var<storage, read_write> c2: array<f32>;       // FLAG_JOINED: C's second block
@group(0) @binding(7) var<storage, read> b2: array<f32>;              // FLAG_JOINED: B's second block
@group(0) @binding(8) var<storage, read_write> sums: array<f32>;      // FLAG_JOINED: column sums of A
@group(0) @binding(9) var<storage, read_write> sums2: array<f32>;     // FLAG_SECOND: A2's column sums, or A's again

const BM: u32 = 128u;
const BN: u32 = 64u;
const BK: u32 = 8u;
const A_ROW: u32 = 33u;    // vec4s per k-row of a buffer of tile_a: BM / 4 and the pad
const B_ROW: u32 = 17u;    // BN / 4 and the pad
const A_BUF: u32 = 264u;   // BK * A_ROW
const B_BUF: u32 = 136u;   // BK * B_ROW

var<workgroup> tile_a: array<vec4<f32>, 528>;   // 2 buffers of [BK][A_ROW]
var<workgroup> tile_b: array<vec4<f32>, 272>;   // 2 buffers of [BK][B_ROW]

// The tile of C (and the K range) one workgroup computes.
struct Tile {
    batch: u32,
    split: u32,
    row0: u32,
    col0: u32,
    k_begin: u32,
    k_end: u32,
}

fn tile_count() -> u32 {
    return p.tiles_n * p.tiles_m * p.splits * p.batch;
}

fn tile_of(id: u32) -> Tile {
    let tn = id % p.tiles_n;
    var rest = id / p.tiles_n;
    let tm = rest % p.tiles_m;
    rest = rest / p.tiles_m;
    let split = rest % p.splits;
    let k_begin = split * p.k_chunk;
    return Tile(rest / p.splits, split, tm * BM, tn * BN, k_begin, min(k_begin + p.k_chunk, p.k));
}

// Element e (of 8) of A that invocation li loads for a K tile: (row, k) within the tile.
fn a_slot(li: u32, e: u32) -> vec2<u32> {
    if (TRANS_A) {
        return vec2<u32>(li, e);                      // 128 consecutive rows of one k
    }
    return vec2<u32>(li / BK + 16u * e, li % BK);     // 8 consecutive k of 16 rows
}

// Element e (of 4) of B that invocation li loads: (column, k) within the tile.
fn b_slot(li: u32, e: u32) -> vec2<u32> {
    if (TRANS_B) {
        return vec2<u32>(li / BK + 16u * e, li % BK); // 8 consecutive k of 16 columns
    }
    return vec2<u32>(li % BN, li / BN + 2u * e);      // 64 consecutive columns of one k
}

// op(A)'s row that product row `row` reads: past the gap, the gap's width less.
fn a_row(row: u32) -> u32 {
    return select(row, row - (p.gap_end - p.gap_begin), row >= p.gap_end);
}

// op(A)[row0 + r, k0 + kk], or zero outside the matrix, the K range or in the gap (checked
// tiles only).
fn load_a(base: u32, t: Tile, k0: u32, li: u32, e: u32, checked: bool) -> f32 {
    let s = a_slot(li, e);
    let product_row = t.row0 + s.x;
    let kg = k0 + s.y;
    if (checked && (product_row >= p.m || kg >= t.k_end
        || (product_row >= p.gap_begin && product_row < p.gap_end))) {
        return 0.0;
    }
    let row = a_row(product_row);
    if (TRANS_A) {
        return a[base + kg * p.lda + row];
    }
    return a[base + row * p.lda + kg];
}

fn load_b(base: u32, t: Tile, k0: u32, li: u32, e: u32, checked: bool) -> f32 {
    let s = b_slot(li, e);
    let col = t.col0 + s.x;
    let kg = k0 + s.y;
    if (checked && (col >= p.n || kg >= t.k_end)) {
        return 0.0;
    }
    if (TRANS_B) {
        return b[base + col * p.ldb + kg];
    }
    if ((p.flags & FLAG_JOINED) != 0u && col >= p.n_b1) {
        if (col < p.b2_col) {
            return 0.0;   // the gap before b2's tile-aligned block (FLAG_A2)
        }
        if (t.row0 >= p.gap_end) {
            return b2[p.offset_b3 + kg * p.ldb3 + col - p.b2_col];   // b3's rows
        }
        return b2[p.offset_b2 + kg * p.ldb2 + col - p.b2_col];
    }
    return b[base + kg * p.ldb + col];
}

fn put_a(buf: u32, li: u32, e: u32, v: f32) {
    let s = a_slot(li, e);
    tile_a[buf * A_BUF + s.y * A_ROW + s.x / 4u][s.x % 4u] = v;
}

fn put_b(buf: u32, li: u32, e: u32, v: f32) {
    let s = b_slot(li, e);
    tile_b[buf * B_BUF + s.y * B_ROW + s.x / 4u][s.x % 4u] = v;
}

// The 12 elements invocation li loads for the K tile at k0 (A: .a0, .a1; B: .b).
struct Staged {
    a0: vec4<f32>,
    a1: vec4<f32>,
    b: vec4<f32>,
}

fn fetch(t: Tile, k0: u32, li: u32) -> Staged {
    var base_a = p.offset_a + t.batch * p.stride_a;
    if ((p.flags & FLAG_A2) != 0u && t.col0 >= p.b2_col) {
        base_a = p.offset_a2;   // b2's block pairs with A2 (weight gradients: one item)
    }
    let base_b = p.offset_b + t.batch * p.stride_b;
    // Uniform across the workgroup: interior tiles skip the bounds tests.
    let full_k = k0 + BK <= t.k_end;
    let gap = t.row0 < p.gap_end && t.row0 + BM > p.gap_begin;
    let ca = !(full_k && t.row0 + BM <= p.m) || gap;
    let cb = !(full_k && t.col0 + BN <= p.n);
    return Staged(
        vec4<f32>(
            load_a(base_a, t, k0, li, 0u, ca),
            load_a(base_a, t, k0, li, 1u, ca),
            load_a(base_a, t, k0, li, 2u, ca),
            load_a(base_a, t, k0, li, 3u, ca),
        ),
        vec4<f32>(
            load_a(base_a, t, k0, li, 4u, ca),
            load_a(base_a, t, k0, li, 5u, ca),
            load_a(base_a, t, k0, li, 6u, ca),
            load_a(base_a, t, k0, li, 7u, ca),
        ),
        vec4<f32>(
            load_b(base_b, t, k0, li, 0u, cb),
            load_b(base_b, t, k0, li, 1u, cb),
            load_b(base_b, t, k0, li, 2u, cb),
            load_b(base_b, t, k0, li, 3u, cb),
        ),
    );
}

fn stage(buf: u32, li: u32, s: Staged) {
    put_a(buf, li, 0u, s.a0.x);
    put_a(buf, li, 1u, s.a0.y);
    put_a(buf, li, 2u, s.a0.z);
    put_a(buf, li, 3u, s.a0.w);
    put_a(buf, li, 4u, s.a1.x);
    put_a(buf, li, 5u, s.a1.y);
    put_a(buf, li, 6u, s.a1.z);
    put_a(buf, li, 7u, s.a1.w);
    put_b(buf, li, 0u, s.b.x);
    put_b(buf, li, 1u, s.b.y);
    put_b(buf, li, 2u, s.b.z);
    put_b(buf, li, 3u, s.b.w);
}

// acc[2i] holds row i's columns tx*4 .. +4, acc[2i + 1] its columns 32 + tx*4 .. +4, for
// rows i = 0..3 (ty*4 + i) and 4..7 (64 + ty*4 + i - 4). Every index is a constant, so the
// array lives in registers.
fn multiply(buf: u32, tx: u32, ty: u32, acc: ptr<function, array<vec4<f32>, 16>>) {
    for (var kk = 0u; kk < BK; kk++) {
        let ra = buf * A_BUF + kk * A_ROW;
        let rb = buf * B_BUF + kk * B_ROW;
        let a0 = tile_a[ra + ty];
        let a1 = tile_a[ra + 16u + ty];
        let b0 = tile_b[rb + tx];
        let b1 = tile_b[rb + 8u + tx];
        (*acc)[0] += a0.x * b0;
        (*acc)[1] += a0.x * b1;
        (*acc)[2] += a0.y * b0;
        (*acc)[3] += a0.y * b1;
        (*acc)[4] += a0.z * b0;
        (*acc)[5] += a0.z * b1;
        (*acc)[6] += a0.w * b0;
        (*acc)[7] += a0.w * b1;
        (*acc)[8] += a1.x * b0;
        (*acc)[9] += a1.x * b1;
        (*acc)[10] += a1.y * b0;
        (*acc)[11] += a1.y * b1;
        (*acc)[12] += a1.z * b0;
        (*acc)[13] += a1.z * b1;
        (*acc)[14] += a1.w * b0;
        (*acc)[15] += a1.w * b1;
    }
}

// The tile's product over its K range. Every invocation of the workgroup calls it (it has
// barriers); the loop bound is the same for all of them.
fn tile_product(t: Tile, tx: u32, ty: u32, li: u32) -> array<vec4<f32>, 16> {
    var acc: array<vec4<f32>, 16>;
    let steps = div_ceil(t.k_end - t.k_begin, BK);
    if (steps == 0u) {
        return acc;
    }
    stage(0u, li, fetch(t, t.k_begin, li));
    workgroupBarrier();
    for (var s = 0u; s < steps; s++) {
        let buf = s & 1u;
        let more = s + 1u < steps;
        var next: Staged;
        if (more) {
            next = fetch(t, t.k_begin + (s + 1u) * BK, li);
        }
        multiply(buf, tx, ty, &acc);
        if (more) {
            stage(1u - buf, li, next);
        }
        workgroupBarrier();
    }
    return acc;
}

// Row r of the tile (0..8) as the invocation numbers them: ty*4 + r, then 64 + ty*4 + r - 4.
fn tile_row(ty: u32, r: u32) -> u32 {
    return select(64u + ty * 4u + r - 4u, ty * 4u + r, r < 4u);
}

// Writes four consecutive elements of the tile at (row0 + r, col0 + col): to C with alpha,
// beta and the bias, or (SPLIT) the raw sums to this tile's split of `partial`.
fn store4(t: Tile, r: u32, col: u32, v: vec4<f32>, checked: bool) {
    let row = t.row0 + r;
    let cg = t.col0 + col;
    if (checked && row >= p.m) {
        return;
    }
    let at = p.offset_c + t.batch * p.stride_c + row * p.ldc + cg;
    let at_partial = ((t.batch * p.splits + t.split) * p.m + row) * p.n + cg;
    for (var j = 0u; j < 4u; j++) {
        if (checked && cg + j >= p.n) {
            return;
        }
        if (SPLIT) {
            partial[at_partial + j] = v[j];
            continue;
        }
        var x = p.alpha * v[j];
        // With beta == 0, C is not read, so whatever it held (even NaN) is overwritten.
        if ((p.flags & FLAG_READ_C) != 0u) {
            x += p.beta * c[at + j];
        }
        if ((p.flags & FLAG_BIAS) != 0u) {
            x += bias[cg + j];
        }
        c[at + j] = x;
    }
}

// Whether the tile reaches past the matrix (then its loads and stores test each index).
fn is_edge(t: Tile) -> bool {
    return t.row0 + BM > p.m || t.col0 + BN > p.n;
}

@compute @workgroup_size(8, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let id = wg.y * nwg.x + wg.x;
    let tiles = tile_count();
    if (id >= tiles) {
        if (id - tiles < div_ceil(p.a_cols, 64u) * p.sum_chunks * sum_sets()) {
            weight_grad_sums(id - tiles, li);
        }
        return;
    }
    let t = tile_of(id);
    let acc = tile_product(t, lid.x, lid.y, li);
    let edge = is_edge(t);
    let c0 = lid.x * 4u;
    let c1 = 32u + lid.x * 4u;
    let ty = lid.y;
    store4(t, tile_row(ty, 0u), c0, acc[0], edge);
    store4(t, tile_row(ty, 0u), c1, acc[1], edge);
    store4(t, tile_row(ty, 1u), c0, acc[2], edge);
    store4(t, tile_row(ty, 1u), c1, acc[3], edge);
    store4(t, tile_row(ty, 2u), c0, acc[4], edge);
    store4(t, tile_row(ty, 2u), c1, acc[5], edge);
    store4(t, tile_row(ty, 3u), c0, acc[6], edge);
    store4(t, tile_row(ty, 3u), c1, acc[7], edge);
    store4(t, tile_row(ty, 4u), c0, acc[8], edge);
    store4(t, tile_row(ty, 4u), c1, acc[9], edge);
    store4(t, tile_row(ty, 5u), c0, acc[10], edge);
    store4(t, tile_row(ty, 5u), c1, acc[11], edge);
    store4(t, tile_row(ty, 6u), c0, acc[12], edge);
    store4(t, tile_row(ty, 6u), c1, acc[13], edge);
    store4(t, tile_row(ty, 7u), c0, acc[14], edge);
    store4(t, tile_row(ty, 7u), c1, acc[15], edge);
}

// One invocation per element of C: the sum of its partials in split order, then alpha,
// beta and the bias; written to C.
@compute @workgroup_size(256, 1, 1)
fn reduce_splits(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    let per_item = p.m * p.n;
    if (i >= per_item * p.batch) {
        return;
    }
    let item = i / per_item;
    let e = i % per_item;
    let row = e / p.n;
    let col = e % p.n;
    var s = 0.0;
    for (var q = 0u; q < p.splits; q++) {
        s += partial[(item * p.splits + q) * per_item + e];
    }
    let at = p.offset_c + item * p.stride_c + row * p.ldc + col;
    var x = p.alpha * s;
    if ((p.flags & FLAG_READ_C) != 0u) {
        x += p.beta * c[at];
    }
    if ((p.flags & FLAG_BIAS) != 0u) {
        x += bias[col];
    }
    c[at] = x;
}

var<workgroup> lane_sums: array<f32, 128>;

// The matrices whose columns a weight-gradient product sums: A, and A2 with FLAG_A2.
fn sum_sets() -> u32 {
    return select(1u, 2u, (p.flags & FLAG_A2) != 0u);
}

// Workgroup g of a weight-gradient product's column sums: A's columns col0 .. col0 + 64 (A is stored
// transposed, [k, m]: these are rows of op(A)) over rows chunk * sum_depth .. + sum_depth.
// Invocation li adds column li % 64 over every other row from li / 64, coalesced along the
// row; the two lanes are then added in a fixed order into the chunk's partial. The groups
// of the second set (FLAG_A2) do the same for A2, their chunk partials after A's.
fn weight_grad_sums(g: u32, li: u32) {
    let groups_m = div_ceil(p.a_cols, 64u);
    let which = g / (groups_m * p.sum_chunks);
    let h = g % (groups_m * p.sum_chunks);
    let base = select(p.offset_a, p.offset_a2, which == 1u);
    let col = (h % groups_m) * 64u + li % 64u;
    let chunk = h / groups_m;
    let r0 = chunk * p.sum_depth;
    let r1 = min(r0 + p.sum_depth, p.k);
    var s = 0.0;
    if (col < p.a_cols) {
        for (var r = r0 + li / 64u; r < r1; r += 2u) {
            s += a[base + r * p.lda + col];
        }
    }
    lane_sums[li] = s;
    workgroupBarrier();
    if (li < 64u && col < p.a_cols) {
        let at = p.splits * p.m * p.n + (which * p.sum_chunks + chunk) * p.a_cols + col;
        partial[at] = lane_sums[li] + lane_sums[li + 64u];
    }
}

// A weight-gradient product's outputs: one invocation per element of C = [C1 | C2] (C1 the
// first n_b1 columns, packed into c; C2 the columns from b2_col, packed into c2; the columns
// between and the rows of a gap dropped), the sum of its split partials; then one per column
// sum, the sum of its chunk partials, into `sums`, and with FLAG_SECOND into `sums2` (A2's
// sums with FLAG_A2, else A's again). Both in fixed order.
@compute @workgroup_size(256, 1, 1)
fn reduce_weight_grads(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    let elements = p.m * p.n;
    if (i < elements) {
        let product_row = i / p.n;
        if (product_row >= p.gap_begin && product_row < p.gap_end) {
            return;
        }
        var s = 0.0;
        for (var q = 0u; q < p.splits; q++) {
            s += partial[q * elements + i];
        }
        let row = a_row(product_row);
        let col = i % p.n;
        if (col < p.n_b1) {
            c[row * p.n_b1 + col] = s;
        } else if (col >= p.b2_col) {
            c2[row * (p.n - p.b2_col) + col - p.b2_col] = s;
        }
        return;
    }
    let g = i - elements;
    if (g >= p.a_cols * sum_sets()) {
        return;
    }
    let which = g / p.a_cols;
    let col = g % p.a_cols;
    var s = 0.0;
    for (var q = 0u; q < p.sum_chunks; q++) {
        s += partial[p.splits * elements + (which * p.sum_chunks + q) * p.a_cols + col];
    }
    let second = (p.flags & FLAG_SECOND) != 0u;
    if (which == 1u) {
        if (second) {
            sums2[col] = s;
        }
        return;
    }
    sums[col] = s;
    if (second && (p.flags & FLAG_A2) == 0u) {
        sums2[col] = s;
    }
}

// ---------------------------------------------------------------------------------------
// The variant for adapters that run shaders on the CPU (lavapipe, llvmpipe; chosen by the
// host from the adapter's device type). There, workgroup memory is ordinary memory, barriers
// cost a context switch, and every branch or address that differs between invocations turns
// into a loop over SIMD lanes: so no tiles, the transposes fixed per pipeline (TRANS_A,
// TRANS_B), and row and column indices clamped into the matrix instead of tested (the clamped
// rows and columns compute values that store_row then drops). Each invocation computes a
// 4 x 4 block; a workgroup of 8 x 8 covers 32 x 32 of C. Measured on lavapipe at 512^3: 2.5
// GFLOP/s against 1.5 for the tiled kernel of the time (64 x 64 tiles, 4 x 4 per invocation).

// Writes up to four consecutive elements of one row of C, with alpha, beta and bias applied.
fn store_row(base_c: u32, row: u32, col: u32, v: vec4<f32>) {
    if (row >= p.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (col + j >= p.n) {
            return;
        }
        let at = base_c + row * p.ldc + col + j;
        var x = p.alpha * v[j];
        // With beta == 0, C is not read, so whatever it held (even NaN) is overwritten.
        if ((p.flags & FLAG_READ_C) != 0u) {
            x += p.beta * c[at];
        }
        if ((p.flags & FLAG_BIAS) != 0u) {
            x += bias[col + j];
        }
        c[at] = x;
    }
}

fn op_a(base: u32, row: u32, kk: u32) -> f32 {
    if (TRANS_A) {
        return a[base + kk * p.lda + row];
    }
    return a[base + row * p.lda + kk];
}

fn op_b(base: u32, kk: u32, col: u32) -> f32 {
    if (TRANS_B) {
        return b[base + col * p.ldb + kk];
    }
    return b[base + kk * p.ldb + col];
}

@compute @workgroup_size(8, 8, 1)
fn main_cpu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * 4u;
    let col = gid.x * 4u;
    if (row >= p.m || col >= p.n) {
        return;
    }
    let batch = gid.z;
    let base_a = p.offset_a + batch * p.stride_a;
    let base_b = p.offset_b + batch * p.stride_b;
    let r0 = row;
    let r1 = min(row + 1u, p.m - 1u);
    let r2 = min(row + 2u, p.m - 1u);
    let r3 = min(row + 3u, p.m - 1u);
    let c0 = col;
    let c1 = min(col + 1u, p.n - 1u);
    let c2 = min(col + 2u, p.n - 1u);
    let c3 = min(col + 3u, p.n - 1u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let bv = vec4<f32>(op_b(base_b, kk, c0), op_b(base_b, kk, c1), op_b(base_b, kk, c2), op_b(base_b, kk, c3));
        acc0 += op_a(base_a, r0, kk) * bv;
        acc1 += op_a(base_a, r1, kk) * bv;
        acc2 += op_a(base_a, r2, kk) * bv;
        acc3 += op_a(base_a, r3, kk) * bv;
    }
    let base_c = p.offset_c + batch * p.stride_c;
    store_row(base_c, row, col, acc0);
    store_row(base_c, row + 1u, col, acc1);
    store_row(base_c, row + 2u, col, acc2);
    store_row(base_c, row + 3u, col, acc3);
}
