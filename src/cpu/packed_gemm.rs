//! Products whose right-hand matrix is packed once and then used for many products: the
//! recurrent weights, which every step of a pass multiplies by a new state.
//!
//! The `gemm` crate packs or strides through its operands on every call and has no way to
//! keep a packed operand. At the per-step shape of a recurrent layer (a few dozen rows of
//! state against a [H, G*H] weight block) that costs it a third of its speed: at 32 x 512 x
//! 256 in f32 on one core of an AVX2 host without AVX-512 it ran at 45-66 GFLOP/s where this
//! kernel runs at 85-90 and PyTorch's oneDNN at 56-70 (BENCHMARKS.md, "The packed recurrent
//! product"). PyTorch's CPU RNNs rely on the same idea (MKL's packed GEMM).
//!
//! Two kernels ([`PackedKernel`]), chosen by the host's instruction set: AVX2 + FMA, and
//! AVX-512. The packed layout is panels of the kernel's panel width (16 or 32 columns, two
//! vector registers): panel `p` holds `B[kk, p*w + j]` at `kk * w + j`, zero past the last
//! column, each panel 64-byte aligned where possible. A kernel keeps a block of up to its
//! row count x w outputs in registers and walks `k` in order with one fused multiply-add per
//! element, so the two kernels round alike: their results are the same to the bit.
//!
//! Only f32 on x86-64; other types and hosts keep the `gemm` crate.

use crate::error::{ensure, Result};
use crate::ops::Gemm;

use super::Real;

/// A kernel of the packed product, by the instructions it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedKernel {
    /// AVX2 and FMA: 6 rows x 16 columns (two 8-lane registers per row), so the twelve
    /// accumulators leave registers for two weight vectors and a broadcast.
    Avx2,
    /// AVX-512F: 8 rows x 32 columns (two 16-lane registers per row), sixteen accumulators
    /// of the 32 registers. Eight rows divide the usual batch sizes (8, 16, 32, 64).
    Avx512,
}

impl PackedKernel {
    /// Both kernels, the wider last.
    pub const ALL: [PackedKernel; 2] = [PackedKernel::Avx2, PackedKernel::Avx512];

    /// Columns per packed panel.
    pub fn panel(self) -> usize {
        match self {
            PackedKernel::Avx2 => 16,
            PackedKernel::Avx512 => 32,
        }
    }

    /// Rows per block of outputs.
    pub fn rows(self) -> usize {
        match self {
            PackedKernel::Avx2 => 6,
            PackedKernel::Avx512 => 8,
        }
    }

    /// Whether this host runs the kernel.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                PackedKernel::Avx2 => {
                    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
                }
                PackedKernel::Avx512 => std::is_x86_feature_detected!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The widest kernel this host runs, if any.
    pub fn best() -> Option<Self> {
        Self::ALL.into_iter().rev().find(|k| k.available())
    }
}

/// `B` of a [`Gemm`] packed for a kernel, and which `B` it was: products whose spec
/// describes the same `B` (sizes, offset, leading dimension) may use it with any `A` and `C`.
#[derive(Clone, Debug)]
pub struct PackedGemm {
    kernel: PackedKernel,
    k: usize,
    n: usize,
    offset_b: usize,
    ldb: usize,
    data: Vec<f32>,
    /// Index in `data` of the first panel's first element, 64-byte aligned where possible.
    start: usize,
}

impl PackedGemm {
    /// Packs `spec`'s `B` from `b` for the host's widest kernel; `None` where the host has
    /// none, where `T` is not f32, or where `spec` is not a plain single product (`C = A B`:
    /// no transposes, no batch, alpha 1, beta 0).
    pub fn new<T: Real>(spec: &Gemm, b: &[T]) -> Result<Option<Self>> {
        match PackedKernel::best() {
            Some(kernel) => Self::pack(kernel, spec, b),
            None => Ok(None),
        }
    }

    /// [`PackedGemm::new`] for a given kernel: `None` where this host does not run it.
    pub fn pack<T: Real>(kernel: PackedKernel, spec: &Gemm, b: &[T]) -> Result<Option<Self>> {
        let Some(b) = T::as_f32(b) else {
            return Ok(None);
        };
        if !kernel.available() || !plain(spec) {
            return Ok(None);
        }
        let (k, n, ldb, offset_b) = (spec.k, spec.n, spec.ldb(), spec.offset_b);
        ensure!(
            k > 0 && n > 0,
            Shape,
            "packed gemm needs k, n > 0, got k = {k}, n = {n}"
        );
        ensure!(ldb >= n, Shape, "ldb = {ldb} is below n = {n}");
        let last = offset_b + (k - 1) * ldb + n;
        ensure!(
            last <= b.len(),
            Shape,
            "B of {k} x {n} at offset {offset_b}, ldb {ldb} needs {last} elements, got {}",
            b.len()
        );
        let width = kernel.panel();
        let panels = n.div_ceil(width);
        // 16 extra elements leave room to align the first panel to 64 bytes.
        let mut data = vec![0f32; panels * k * width + 16];
        // Aligned for speed only: the kernels do not rely on it.
        let start = data.as_ptr().align_offset(64).min(16);
        for p in 0..panels {
            let cols = (n - p * width).min(width);
            let panel = &mut data[start + p * k * width..][..k * width];
            for (kk, out) in panel.chunks_exact_mut(width).enumerate() {
                let row = &b[offset_b + kk * ldb + p * width..][..cols];
                out[..cols].copy_from_slice(row);
            }
        }
        Ok(Some(Self {
            kernel,
            k,
            n,
            offset_b,
            ldb,
            data,
            start,
        }))
    }

    /// The kernel this copy was packed for.
    pub fn kernel(&self) -> PackedKernel {
        self.kernel
    }

    /// Whether `spec` is a plain product over this `B`.
    pub fn fits(&self, spec: &Gemm) -> bool {
        plain(spec)
            && (spec.k, spec.n, spec.offset_b, spec.ldb())
                == (self.k, self.n, self.offset_b, self.ldb)
    }

    /// `C = A B` with `A` and `C` placed as `spec` says (its `B` must be this one's).
    pub fn run<T: Real>(&self, spec: &Gemm, a: &[T], c: &mut [T]) -> Result<()> {
        ensure!(
            self.fits(spec),
            Invalid,
            "packed gemm of B {} x {} at offset {}, ldb {} given a spec for {spec:?}",
            self.k,
            self.n,
            self.offset_b,
            self.ldb
        );
        let (Some(a), Some(c)) = (T::as_f32(a), T::as_f32_mut(c)) else {
            crate::error::bail!(Invalid, "packed gemm runs on f32 only");
        };
        // B's extent was checked when it was packed; this checks A's and C's.
        let b_len = self.offset_b + (self.k - 1) * self.ldb + self.n;
        spec.validate(a.len(), b_len, c.len(), None)?;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a copy exists only for a kernel `available()` found the instructions of
        // (checked when packing); `validate` checked that every row of A and C these offsets
        // and leading dimensions reach lies inside `a` and `c`.
        unsafe {
            match self.kernel {
                PackedKernel::Avx2 => avx2::multiply(self, spec, a, c),
                PackedKernel::Avx512 => avx512::multiply(self, spec, a, c),
            }
        }
        // Unreachable: `pack` makes no `PackedGemm` off x86-64.
        #[cfg(not(target_arch = "x86_64"))]
        crate::error::bail!(Unsupported, "the packed gemm kernels run on x86-64 only");
        #[cfg(target_arch = "x86_64")]
        Ok(())
    }

    /// The first element of panel `p`.
    #[cfg(target_arch = "x86_64")]
    fn panel(&self, p: usize) -> *const f32 {
        self.data[self.start + p * self.k * self.kernel.panel()..].as_ptr()
    }
}

/// Packed copies of blocks of one matrix that a caller multiplies by again and again (a
/// pass's weights), each block packed the first time a product uses it. The caller keeps the
/// matrix unchanged while it holds the copies, and gives the same matrix every time: a
/// different one (another address or length) is refused, since blocks of two matrices of
/// one shape would be indistinguishable.
#[derive(Clone, Debug, Default)]
pub struct PackedOperands {
    blocks: Vec<PackedGemm>,
    /// Address and length of the matrix the blocks come from.
    source: Option<(usize, usize)>,
}

impl PackedOperands {
    /// No copies yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of the packed copies made so far.
    pub fn bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|p| p.data.len() * std::mem::size_of::<f32>())
            .sum()
    }

    /// `spec` on the calling thread: with the packed copy of its `B` (made now the first
    /// time), or with the `gemm` crate on `b` where the packed kernel does not apply.
    pub fn gemm<T: Real>(&mut self, spec: &Gemm, a: &[T], b: &[T], c: &mut [T]) -> Result<()> {
        let source = (b.as_ptr() as usize, b.len());
        ensure!(
            *self.source.get_or_insert(source) == source,
            Invalid,
            "packed operands of a matrix of {} elements given another of {}",
            self.source.map_or(0, |s| s.1),
            b.len()
        );
        if let Some(p) = self.blocks.iter().find(|p| p.fits(spec)) {
            return p.run(spec, a, c);
        }
        match PackedGemm::new(spec, b)? {
            Some(p) => {
                p.run(spec, a, c)?;
                self.blocks.push(p);
                Ok(())
            }
            None => super::gemm::gemm_on_this_thread(spec, a, b, None, c),
        }
    }
}

/// `C = A B` with nothing transposed, one product, alpha 1 and beta 0.
fn plain(spec: &Gemm) -> bool {
    !spec.trans_a && !spec.trans_b && spec.batch == 1 && spec.alpha == 1.0 && spec.beta == 0.0
}

/// One block of outputs for a kernel: `rows` rows of `A` from `a` (leading dimension `lda`)
/// against the panel at `panel` over `k`, into `c` (leading dimension `ldc`), the first
/// `cols` of the panel's columns stored.
#[cfg(target_arch = "x86_64")]
struct Block {
    rows: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    panel: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
}

/// Every panel of `packed` against every block of at most its kernel's rows of `A`, each by
/// `block`. A panel (k x 16 or 32 columns) stays in L1 while all rows pass over it; `A`, a
/// few dozen rows, stays in L2.
///
/// # Safety
/// `packed` fits `spec`, and `a` and `c` hold every element `spec` places in them.
#[cfg(target_arch = "x86_64")]
unsafe fn for_each_block(
    packed: &PackedGemm,
    spec: &Gemm,
    a: &[f32],
    c: &mut [f32],
    mut block: impl FnMut(Block),
) {
    let (m, k, lda, ldc) = (spec.m, spec.k, spec.lda(), spec.ldc());
    let (width, most) = (packed.kernel.panel(), packed.kernel.rows());
    for p in 0..packed.n.div_ceil(width) {
        let mut r = 0;
        while r < m {
            let rows = (m - r).min(most);
            block(Block {
                rows,
                k,
                a: a.as_ptr().add(spec.offset_a + r * lda),
                lda,
                panel: packed.panel(p),
                c: c.as_mut_ptr().add(spec.offset_c + r * ldc + p * width),
                ldc,
                cols: (packed.n - p * width).min(width),
            });
            r += rows;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Block, PackedGemm};
    use crate::ops::Gemm;

    const PANEL: usize = 16;

    /// `C = A B` over `packed` (see [`super::for_each_block`]), in blocks of up to 6 rows.
    ///
    /// # Safety
    /// AVX2 and FMA are present; `packed` was packed for this kernel, `spec` fits it, and `a`
    /// and `c` hold every element `spec` places in them.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn multiply(packed: &PackedGemm, spec: &Gemm, a: &[f32], c: &mut [f32]) {
        super::for_each_block(packed, spec, a, c, |b| match b.rows {
            6 => block::<6>(&b),
            5 => block::<5>(&b),
            4 => block::<4>(&b),
            3 => block::<3>(&b),
            2 => block::<2>(&b),
            _ => block::<1>(&b),
        });
    }

    /// `R` rows x `cols` (at most 16) outputs: `c[r][j] = sum_kk a[r][kk] * panel[kk][j]`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const R: usize>(b: &Block) {
        let Block {
            k,
            a,
            lda,
            panel,
            c,
            ldc,
            cols,
            ..
        } = *b;
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for kk in 0..k {
            // Unaligned loads: `align_offset` may decline to align, and on aligned data they
            // cost the same as aligned ones.
            let b0 = _mm256_loadu_ps(panel.add(kk * PANEL));
            let b1 = _mm256_loadu_ps(panel.add(kk * PANEL + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r * lda + kk));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = c.add(r * ldc);
            if cols == PANEL {
                _mm256_storeu_ps(row, acc[0]);
                _mm256_storeu_ps(row.add(8), acc[1]);
            } else {
                // The last panel's padding columns are computed but not stored.
                let mut out = [0f32; PANEL];
                _mm256_storeu_ps(out.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(out.as_mut_ptr().add(8), acc[1]);
                std::ptr::copy_nonoverlapping(out.as_ptr(), row, cols);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Block, PackedGemm};
    use crate::ops::Gemm;

    const PANEL: usize = 32;

    /// As `avx2::multiply`, with panels of 32 columns and blocks of up to 8 rows.
    ///
    /// # Safety
    /// AVX-512F is present; `packed` was packed for this kernel, `spec` fits it, and `a`
    /// and `c` hold every element `spec` places in them.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn multiply(packed: &PackedGemm, spec: &Gemm, a: &[f32], c: &mut [f32]) {
        super::for_each_block(packed, spec, a, c, |b| match b.rows {
            8 => block::<8>(&b),
            7 => block::<7>(&b),
            6 => block::<6>(&b),
            5 => block::<5>(&b),
            4 => block::<4>(&b),
            3 => block::<3>(&b),
            2 => block::<2>(&b),
            _ => block::<1>(&b),
        });
    }

    /// `R` rows x `cols` (at most 32) outputs: `c[r][j] = sum_kk a[r][kk] * panel[kk][j]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const R: usize>(b: &Block) {
        let Block {
            k,
            a,
            lda,
            panel,
            c,
            ldc,
            cols,
            ..
        } = *b;
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for kk in 0..k {
            let b0 = _mm512_loadu_ps(panel.add(kk * PANEL));
            let b1 = _mm512_loadu_ps(panel.add(kk * PANEL + 16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * lda + kk));
                acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
            }
        }
        // The last panel's padding columns are computed but not stored: masked stores write
        // only the columns of C.
        let mask = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
        for (r, acc) in acc.iter().enumerate() {
            let row = c.add(r * ldc);
            if cols == PANEL {
                _mm512_storeu_ps(row, acc[0]);
                _mm512_storeu_ps(row.add(16), acc[1]);
            } else {
                _mm512_mask_storeu_ps(row, mask(cols), acc[0]);
                if cols > 16 {
                    _mm512_mask_storeu_ps(row.add(16), mask(cols - 16), acc[1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Fresh sizes, offsets, leading dimensions and values each run (seed printed; set
    /// `RECUR_TEST_SEED` to repeat one), with `C` poisoned with NaN first and the elements it
    /// must not touch left as they were. Each kernel the host runs walks k in order with one
    /// fused multiply-add per element, so each element must be, to the bit, a scalar loop of
    /// `f32::mul_add` over k; and within the forward error bound of a dot product of k terms
    /// (Higham: gamma_k x sum |a b|, gamma_k = k u / (1 - k u), u = 2^-24) of the f64 sum.
    /// (A relative error against a fixed tolerance is no criterion for one element: a sum
    /// that cancels, 38 terms of +-1 summing to 0.04, is off by 2.2e-6 relative when exact
    /// to the last f32 rounding.)
    #[test]
    fn packed_product_matches_f64_reference() {
        let kernels: Vec<PackedKernel> = PackedKernel::ALL
            .into_iter()
            .filter(|k| k.available())
            .collect();
        for k in PackedKernel::ALL.iter().filter(|k| !kernels.contains(k)) {
            eprintln!("packed_product_matches_f64_reference: {k:?} skipped, not on this host");
        }
        if kernels.is_empty() {
            return;
        }
        let mut rng = crate::check::test_rng("packed_product_matches_f64_reference");
        for case in 0..60 {
            // Rows across every block remainder, columns across panel edges (two whole
            // 32-column panels and more), k from 1.
            let (m, n, k) = (
                rng.random_range(1..=20),
                rng.random_range(1..=80),
                rng.random_range(1..=70),
            );
            let (lda, ldb, ldc) = (
                k + rng.random_range(0..3),
                n + rng.random_range(0..3),
                n + rng.random_range(0..3),
            );
            let (oa, ob, oc) = (
                rng.random_range(0..5),
                rng.random_range(0..5),
                rng.random_range(0..5),
            );
            let spec = Gemm::new(m, n, k)
                .leading_dims(lda, ldb, ldc)
                .offsets(oa, ob, oc);
            let a: Vec<f32> = (0..oa + m * lda)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let b: Vec<f32> = (0..ob + k * ldb)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let mut outputs = Vec::new();
            for &kernel in &kernels {
                let mut c = vec![f32::NAN; oc + m * ldc + 3];
                let packed = PackedGemm::pack(kernel, &spec, &b)
                    .unwrap()
                    .expect("f32 packs for an available kernel");
                assert_eq!(packed.kernel(), kernel);
                packed.run(&spec, &a, &mut c).unwrap();
                let u = 0.5f64.powi(24); // f32's unit roundoff
                let gamma = k as f64 * u / (1.0 - k as f64 * u);
                for (at, v) in c.iter().enumerate() {
                    let (r, j) = (at.wrapping_sub(oc) / ldc, at.wrapping_sub(oc) % ldc);
                    if at < oc || r >= m || j >= n {
                        assert!(
                            v.is_nan(),
                            "case {case}, {kernel:?}: element {at} outside C was written"
                        );
                        continue;
                    }
                    let terms = (0..k).map(|kk| (a[oa + r * lda + kk], b[ob + kk * ldb + j]));
                    let fused = terms.clone().fold(0f32, |acc, (x, y)| x.mul_add(y, acc));
                    let want: f64 = terms.clone().map(|(x, y)| x as f64 * y as f64).sum();
                    let scale: f64 = terms.map(|(x, y)| (x as f64 * y as f64).abs()).sum();
                    let ctx = format!("case {case}, {kernel:?} ({m} x {n} x {k}), C[{r}][{j}]");
                    assert_eq!(
                        v.to_bits(),
                        fused.to_bits(),
                        "{ctx}: {v:e} against {fused:e}"
                    );
                    let err = (*v as f64 - want).abs();
                    assert!(
                        err <= gamma * scale,
                        "{ctx}: off by {err:e}, beyond the bound {:e}",
                        gamma * scale
                    );
                }
                outputs.push(c.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            // Both walk k in order with one fused multiply-add per element.
            assert!(
                outputs.windows(2).all(|w| w[0] == w[1]),
                "case {case} ({m} x {n} x {k}): the kernels differ"
            );
        }
    }

    /// Two matrices of one shape have blocks no spec tells apart (an RNN's `W_ih` and
    /// `W_hh` when I = H), so one set of copies serves one matrix only.
    #[test]
    fn operands_of_another_matrix_are_refused() {
        let (b1, b2) = (vec![1f32; 16], vec![2f32; 16]);
        let spec = Gemm::new(2, 4, 4);
        let a = vec![1f32; 8];
        let mut c = vec![f32::NAN; 8];
        let mut ops = PackedOperands::new();
        ops.gemm(&spec, &a, &b1, &mut c).unwrap();
        assert_eq!(c, vec![4.0; 8]);
        let err = ops.gemm(&spec, &a, &b2, &mut c).unwrap_err().to_string();
        assert!(err.contains("given another of 16"), "{err}");
        PackedOperands::new().gemm(&spec, &a, &b2, &mut c).unwrap();
        assert_eq!(c, vec![8.0; 8]);
    }

    #[test]
    fn specs_it_cannot_run_are_not_packed() {
        let b = vec![1f32; 64];
        for kernel in PackedKernel::ALL {
            let transposed = Gemm::new(4, 4, 4).trans_b(true);
            assert!(PackedGemm::pack(kernel, &transposed, &b).unwrap().is_none());
            let scaled = Gemm::new(4, 4, 4).alpha(2.0);
            assert!(PackedGemm::pack(kernel, &scaled, &b).unwrap().is_none());
            let b64 = vec![1f64; 64];
            assert!(PackedGemm::pack(kernel, &Gemm::new(4, 4, 4), &b64)
                .unwrap()
                .is_none());
            if kernel.available() {
                let short = PackedGemm::pack(kernel, &Gemm::new(4, 4, 4), &b[..10]);
                let err = short.unwrap_err().to_string();
                assert!(err.contains("needs 16 elements, got 10"), "{err}");
                let p = PackedGemm::pack(kernel, &Gemm::new(4, 4, 4), &b)
                    .unwrap()
                    .unwrap();
                assert!(!p.fits(&Gemm::new(4, 5, 4)));
                assert!(p.fits(&Gemm::new(9, 4, 4)));
            } else {
                let p = PackedGemm::pack(kernel, &Gemm::new(4, 4, 4), &b).unwrap();
                assert!(p.is_none(), "{kernel:?} packed on a host without it");
            }
        }
    }
}
