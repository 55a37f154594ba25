// embedding.wgsl: row gather (forward) and its deterministic scatter-add (backward).
// CPU twin: src/cpu/embedding.rs. Host side: src/gpu/embedding.rs. Description and why
// the backward pass reads a host-built inverse index: src/ops/embedding.rs.

const WG: u32 = 256u;

struct EmbeddingParams {
    n: u32,            // ids
    vocab: u32,
    dim: u32,
    padding: u32,
    has_padding: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: EmbeddingParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> offsets: array<u32>;
@group(0) @binding(5) var<storage, read> positions: array<u32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;
@group(0) @binding(7) var<storage, read_write> dtable: array<f32>;

// One invocation per output element: out[i] = table[ids[i / dim] * dim + i % dim].
@compute @workgroup_size(256, 1, 1)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * WG + lid;
    if (i >= p.n * p.dim) {
        return;
    }
    let id = ids[i / p.dim];
    // The host validates ids; one written past that check gives NaN, never a stray read.
    var v = quiet_nan();
    if (id < p.vocab) {
        v = table[id * p.dim + i % p.dim];
    }
    out[i] = v;
}

// One invocation per dtable element: the sum of dout over the positions of its id, in the
// order the inverse index lists them (increasing position).
@compute @workgroup_size(256, 1, 1)
fn backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * WG + lid;
    if (i >= p.vocab * p.dim) {
        return;
    }
    let v = i / p.dim;
    let d = i % p.dim;
    var s = 0.0;
    if (p.has_padding == 0u || v != p.padding) {
        let end = min(offsets[v + 1u], p.n);
        for (var k = offsets[v]; k < end; k++) {
            let pos = positions[k];
            if (pos < p.n) {
                s = s + dout[pos * p.dim + d];
            }
        }
    }
    dtable[i] = s;
}
