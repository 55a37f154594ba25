// common.wgsl: helpers shared by every kernel family (the host prepends this file).

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
