// common.wgsl: helpers shared by every kernel family (the host prepends this file).

// The largest finite f32. WGSL makes a const-expression whose value an f32 cannot hold a
// shader-creation error (Tint enforces it; naga rounds), and 3.4028235e38 is just above it.
const F32_MAX: f32 = 0x1.fffffep+127f;

// A quiet NaN, made at run time: a const-expression that evaluates to NaN is a
// shader-creation error too. Kernels write it where an input was invalid, so the damage shows.
fn quiet_nan() -> f32 {
    var bits = 0x7fc00000u;
    return bitcast<f32>(bits);
}

// Logistic sigmoid, written so that exp never overflows for large |x|.
fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// tanh through exp of a non-positive argument: some drivers' built-in tanh returns NaN
// for large |x|.
fn tanh_stable(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(-t, t, x >= 0.0);
}

// Ceiling division for dispatch-size arithmetic inside kernels.
fn div_ceil(a: u32, b: u32) -> u32 {
    return (a + b - 1u) / b;
}

// Philox4x32-10 (Salmon, Moraes, Dror and Shaw, SC 2011), the counter-based generator of
// cuRAND and Random123: 10 rounds of 32 x 32 -> 64-bit multiplies over a 128-bit counter
// under a 64-bit key. Counter-based, so element i of step s needs no state and every
// invocation draws independently. Rust twin: src/cpu/philox.rs (same bits).
// WGSL has no 64-bit integers, so the high word of each product is built from 16-bit halves.
fn philox_mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r++) {
        if (r > 0u) {
            k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let p0 = philox_mulhilo(0xD2511F53u, c.x);
        let p1 = philox_mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}
