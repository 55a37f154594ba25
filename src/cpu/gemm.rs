//! CPU twins of `shaders/gemm.wgsl`: a batched, strided matrix product on the `gemm` crate,
//! on all cores through rayon (the twin of `main`, split or not, and of `main_cpu` alike: a
//! split changes only the order of the additions), and the weight-gradient product.

use crate::error::Result;

use super::Real;
use crate::ops::{Gemm, WeightGrads};

/// Multiply-adds (m * n * k) below which a product runs on the calling thread.
pub(crate) const PARALLEL_WORK: f64 = 96.0 * 96.0 * 96.0;

/// `C = alpha * op(A) * op(B) + beta * C + bias` as described by `spec`.
pub fn gemm<T: Real>(spec: &Gemm, a: &[T], b: &[T], bias: Option<&[T]>, c: &mut [T]) -> Result<()> {
    let work = spec.m as f64 * spec.n as f64 * spec.k as f64;
    gemm_with(spec, a, b, bias, c, work >= PARALLEL_WORK)
}

/// [`gemm()`] on the calling thread alone, for callers that split their work across threads
/// themselves.
pub fn gemm_on_this_thread<T: Real>(
    spec: &Gemm,
    a: &[T],
    b: &[T],
    bias: Option<&[T]>,
    c: &mut [T],
) -> Result<()> {
    gemm_with(spec, a, b, bias, c, false)
}

fn gemm_with<T: Real>(
    spec: &Gemm,
    a: &[T],
    b: &[T],
    bias: Option<&[T]>,
    c: &mut [T],
    parallel: bool,
) -> Result<()> {
    spec.validate(a.len(), b.len(), c.len(), bias.map(|x| x.len()))?;
    let (lda, ldb, ldc) = (
        spec.lda() as isize,
        spec.ldb() as isize,
        spec.ldc() as isize,
    );
    // (row stride, column stride) of op(A) and op(B).
    let (rsa, csa) = if spec.trans_a { (1, lda) } else { (lda, 1) };
    let (rsb, csb) = if spec.trans_b { (1, ldb) } else { (ldb, 1) };
    let alpha = T::from(spec.alpha).unwrap_or_else(T::zero);
    let beta = T::from(spec.beta).unwrap_or_else(T::zero);
    // Small products finish before the thread pool would wake up: they run on this thread.
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    for item in 0..spec.batch {
        let oa = spec.offset_a + item * spec.stride_a();
        let ob = spec.offset_b + item * spec.stride_b();
        let oc = spec.offset_c + item * spec.stride_c();
        // SAFETY: `validate` checked that every element these offsets, leading dimensions
        // and batch strides reach lies inside `a`, `b` and `c`; `c` is a distinct `&mut`.
        // The crate computes dst = beta' * dst + alpha' * lhs * rhs with its own names
        // swapped (its `alpha` scales dst), and never reads dst when `read_dst` is false.
        unsafe {
            gemm::gemm(
                spec.m,
                spec.n,
                spec.k,
                c.as_mut_ptr().add(oc),
                1,
                ldc,
                spec.beta != 0.0,
                a.as_ptr().add(oa),
                csa,
                rsa,
                b.as_ptr().add(ob),
                csb,
                rsb,
                beta,
                alpha,
                false,
                false,
                false,
                parallelism,
            );
        }
        if let Some(bias) = bias {
            for r in 0..spec.m {
                let row = &mut c[oc + r * spec.ldc()..][..spec.n];
                for (x, &bv) in row.iter_mut().zip(bias) {
                    *x = *x + bv;
                }
            }
        }
    }
    Ok(())
}

/// The outputs of [`weight_grads`], each overwritten.
pub struct WeightGradOutputs<'a, T> {
    /// `A^T B1`, `m x n1` packed.
    pub out1: &'a mut [T],
    /// `A^T B2` (or `A2^T B2`), `m x n2` packed: given exactly where the spec has a `B2`.
    pub out2: Option<&'a mut [T]>,
    /// `A`'s column sums, `m` entries.
    pub sums: &'a mut [T],
    /// `A2`'s column sums, or a copy of `sums` without an `A2`; where wanted.
    pub sums2: Option<&'a mut [T]>,
}

/// The weight-gradient product `spec` (twin of `main` with FLAG_JOINED and
/// `reduce_weight_grads`): `out1 = A^T B1`, `out2 = A^T B2` (`A2^T B2` where `spec` has an
/// `A2`; its rows from `B3`'s on with `B3` where it has one), `sums` = `A`'s column sums
/// (rows added in order), and `sums2` where given: `A2`'s column sums, or a copy of `sums`
/// without an `A2`.
pub fn weight_grads<T: Real>(
    spec: &WeightGrads,
    a: &[T],
    b1: &[T],
    b2: Option<&[T]>,
    out: WeightGradOutputs<'_, T>,
) -> Result<()> {
    let WeightGradOutputs {
        out1,
        out2,
        sums,
        sums2,
    } = out;
    spec.validate(
        a.len(),
        b1.len(),
        b2.map(|b| b.len()),
        out1.len(),
        out2.as_ref().map(|o| o.len()),
        sums.len(),
    )?;
    spec.validate_sums2(sums2.as_ref().map(|s| s.len()))?;
    gemm(&spec.first(), a, b1, None, out1)?;
    if let (Some(g), Some(b2), Some(out2)) = (spec.second(), b2, out2) {
        gemm(&g, a, b2, None, out2)?;
        if let Some(g) = spec.third() {
            gemm(&g, a, b2, None, out2)?;
        }
    }
    let column_sums = |offset: usize, sums: &mut [T]| {
        let m = spec.m;
        sums[..m].iter_mut().for_each(|s| *s = T::zero());
        for r in 0..spec.rows {
            let row = &a[offset + r * spec.lda..][..m];
            for (s, &x) in sums.iter_mut().zip(row) {
                *s = *s + x;
            }
        }
    };
    column_sums(spec.offset_a, sums);
    if let Some(sums2) = sums2 {
        match spec.offset_a2 {
            Some(offset) => column_sums(offset, sums2),
            None => sums2[..spec.m].copy_from_slice(&sums[..spec.m]),
        }
    }
    Ok(())
}
