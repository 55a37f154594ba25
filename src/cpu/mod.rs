//! The CPU reference path: the same operations as the GPU kernels, in f32 and f64 (f64 for
//! gradient checks). Files are named as the kernel families in `shaders/`.

/// Defines `$name`, which runs the `#[inline(always)]` function `$generic` compiled for the
/// widest vectors the CPU has: AVX-512 (sixteen f32 lanes) or AVX2 (eight), each with fused
/// multiply-adds, and the baseline elsewhere (four lanes on x86-64). The gate work (exp,
/// divisions) is most of a recurrent step's time besides the products; on AVX-512 it ran in
/// about half the time of AVX2 without fused multiply-adds. `$generic` takes the const
/// parameter `FUSED` of [`activation`] after its type parameter: results differ between
/// CPUs in the last bit, and on one CPU are always the same.
macro_rules! with_simd {
    (fn $name:ident = $generic:ident <$t:ident> ($($arg:ident : $ty:ty),* $(,)?)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name<$t: Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512<$t: Real>($($arg: $ty),*) {
                    $generic::<$t, true>($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$t: Real>($($arg: $ty),*) {
                    $generic::<$t, true>($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has these features.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has these features.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic::<$t, { $crate::cpu::activation::BASELINE_FUSED }>($($arg),*)
        }
    };
}

pub mod activation;
pub mod allocator;
pub mod dropout;
pub mod embedding;
pub mod gemm;
pub mod loss;
pub mod merge;
pub mod optim;
pub mod packed_gemm;
pub mod philox;
pub mod precision;
pub mod recurrent;
pub mod step_parts;
pub mod word2vec;

pub use gemm::{gemm, weight_grads, WeightGradOutputs};

/// The float types the CPU path computes in (f32, and f64 for gradient checks).
pub trait Real:
    num_traits::Float
    + activation::Activation
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::iter::Sum
    + 'static
{
    /// The slice as f32 where `Self` is f32 (kernels written for f32 alone use it).
    fn as_f32(_s: &[Self]) -> Option<&[f32]> {
        None
    }

    /// [`Real::as_f32`] for a mutable slice.
    fn as_f32_mut(_s: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}

impl Real for f32 {
    fn as_f32(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }

    fn as_f32_mut(s: &mut [f32]) -> Option<&mut [f32]> {
        Some(s)
    }
}
impl Real for f64 {}

/// Threads the CPU path uses (rayon's pool: all cores unless `RAYON_NUM_THREADS` says less).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
