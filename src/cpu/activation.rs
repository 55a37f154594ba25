//! The cells' nonlinearities on the CPU. f64 (the gradient checks) uses the standard library;
//! f32 uses an exp that the compiler can vectorize, since the standard library's scalar
//! `expf`/`tanhf` calls dominated the CPU recurrent layers' time.
//!
//! `FUSED` says whether the caller is compiled where a fused multiply-add is one instruction
//! (see `with_simd!` in the module above): there the polynomial runs on `mul_add`, which
//! roughly halved the gate work on AVX-512; elsewhere `mul_add` would be a library call per
//! operation, so it multiplies and adds apart. The two differ in the last bit, not more.

/// Whether the baseline target (no run-time detection) has a fused multiply-add instruction.
pub const BASELINE_FUSED: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// `a * b + c`, in one rounding where `FUSED`.
#[inline(always)]
fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `exp(x)` for f32 in a form that vectorizes: `2^n * p(r)` with `x = n ln 2 + r`,
/// |r| <= ln2 / 2, and a degree-6 polynomial for `e^r`. Relative error below 2e-7 over
/// [-87, 88]; inputs are clamped to that range (below it e^x is under f32's smallest normal
/// number; the sigmoid and tanh below saturate long before either end).
#[inline(always)]
pub fn exp_f32<const FUSED: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = madd::<FUSED>(x, LOG2E, ROUND);
    let n = shifted - ROUND;
    let r = madd::<FUSED>(n, -LN2_LO, madd::<FUSED>(n, -LN2_HI, x));
    let mut p = madd::<FUSED>(r, 1.388_6e-3, 8.333_452e-3);
    for c in [4.166_579_6e-2, 1.666_666_7e-1, 0.5, 1.0, 1.0] {
        p = madd::<FUSED>(p, r, c);
    }
    // n sits in the low mantissa bits of `shifted` (its unit in the last place is 1), so the
    // integer comes from the bits: `n as i32` would be a saturating conversion that does not
    // vectorize.
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    p * scale
}

/// The activations the cells use, per float type.
pub trait Activation: Copy {
    /// The logistic sigmoid `1 / (1 + e^-x)`; `FUSED` as in the module doc (f64 ignores it).
    fn sigmoid<const FUSED: bool>(self) -> Self;
    /// The hyperbolic tangent (named apart from the inherent `tanh`); `FUSED` as for `sigmoid`.
    fn tanh_act<const FUSED: bool>(self) -> Self;
}

impl Activation for f64 {
    #[inline(always)]
    fn sigmoid<const FUSED: bool>(self) -> f64 {
        1.0 / (1.0 + (-self).exp())
    }

    #[inline(always)]
    fn tanh_act<const FUSED: bool>(self) -> f64 {
        self.tanh()
    }
}

impl Activation for f32 {
    #[inline(always)]
    fn sigmoid<const FUSED: bool>(self) -> f32 {
        1.0 / (1.0 + exp_f32::<FUSED>(-self))
    }

    /// tanh through e^{-2|x|} (no overflow), with the sign put back.
    #[inline(always)]
    fn tanh_act<const FUSED: bool>(self) -> f32 {
        let e = exp_f32::<FUSED>(-2.0 * self.abs());
        ((1.0 - e) / (1.0 + e)).copysign(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worst_errors<const FUSED: bool>() -> (f64, f64, f64) {
        let mut worst = (0.0f64, 0.0f64, 0.0f64);
        for i in -197_000..=200_000 {
            let x = i as f32 * 4.4e-4; // -86.7 .. 88
            let e = exp_f32::<FUSED>(x) as f64;
            let want = (x as f64).exp();
            worst.0 = worst.0.max(((e - want) / want).abs());
            let s = x.sigmoid::<FUSED>() as f64;
            worst.1 = worst.1.max((s - (x as f64).sigmoid::<false>()).abs());
            let t = x.tanh_act::<FUSED>() as f64;
            worst.2 = worst.2.max((t - (x as f64).tanh()).abs());
        }
        worst
    }

    #[test]
    fn fast_f32_activations_match_f64_to_float_rounding() {
        for worst in [worst_errors::<false>(), worst_errors::<true>()] {
            assert!(worst.0 < 3e-7, "exp relative error {}", worst.0);
            assert!(worst.1 < 2e-7, "sigmoid absolute error {}", worst.1);
            assert!(worst.2 < 3e-7, "tanh absolute error {}", worst.2);
        }
    }
}
