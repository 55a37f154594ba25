//! The CPU reference path: the same operations as the GPU kernels, in f32 and f64 (f64 for
//! gradient checks). Files are named as the kernel families in `shaders/`.

/// Defines `$name`, which runs the `#[inline(always)]` function `$generic` compiled for AVX2
/// where the CPU has it, and as it is elsewhere: the f32 gate work (exp, divisions) then runs
/// eight lanes wide instead of the baseline's four. The operations are the same, so are the
/// results.
macro_rules! with_avx2 {
    (fn $name:ident = $generic:ident <$t:ident> ($($arg:ident : $ty:ty),* $(,)?)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name<$t: Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2")]
                unsafe fn wide<$t: Real>($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { wide($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

pub mod activation;
pub mod dropout;
pub mod embedding;
pub mod gemm;
pub mod loss;
pub mod optim;
pub mod philox;
pub mod recurrent;
pub mod step_parts;
pub mod word2vec;

pub use gemm::gemm;

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
}

impl Real for f32 {}
impl Real for f64 {}

/// Threads the CPU path uses (rayon's pool: all cores unless `RAYON_NUM_THREADS` says less).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
