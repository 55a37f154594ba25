//! The description of one (batched) matrix product, shared by the GPU kernel and its CPU twin.
//!
//! `C = alpha * op(A) * op(B) + beta * C + bias`, row-major, where `op(A)` is `m x k` and
//! `op(B)` is `k x n`. A transposed operand is stored the other way round (`A` as `k x m`,
//! `B` as `n x k`). `bias`, when given, has `n` entries and is added to every row. With
//! `beta == 0` the old contents of `C` are never read, so an uninitialised (even NaN) `C`
//! is simply overwritten.

use crate::error::{bail, ensure, err, Result};

/// One matrix product. Build it with [`Gemm::new`] and the setters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    /// Rows of `op(A)` and of `C`.
    pub m: usize,
    /// Columns of `op(B)` and of `C`.
    pub n: usize,
    /// Columns of `op(A)`, rows of `op(B)`: the summed dimension.
    pub k: usize,
    /// `A` is stored transposed (`k x m`).
    pub trans_a: bool,
    /// `B` is stored transposed (`n x k`).
    pub trans_b: bool,
    /// Scale of the product `op(A) * op(B)`.
    pub alpha: f32,
    /// Scale of the old `C`; 0 overwrites `C` without reading it.
    pub beta: f32,
    /// Number of products computed at once (a batch of independent matrices).
    pub batch: usize,
    /// Leading dimension of `A` (elements between consecutive stored rows); `None` means
    /// packed.
    pub lda: Option<usize>,
    /// Leading dimension of `B`; `None` means packed.
    pub ldb: Option<usize>,
    /// Leading dimension of `C`; `None` means packed (`n`).
    pub ldc: Option<usize>,
    /// Element offset of the first `A` inside its buffer.
    pub offset_a: usize,
    /// Element offset of the first `B` inside its buffer.
    pub offset_b: usize,
    /// Element offset of the first `C` inside its buffer.
    pub offset_c: usize,
    /// Elements between consecutive batch items of `A`; `None` means packed. 0 shares one
    /// matrix across the batch (allowed for `A` and `B`, not for `C`).
    pub stride_a: Option<usize>,
    /// Elements between consecutive batch items of `B`; `None` means packed, 0 shares one `B`.
    pub stride_b: Option<usize>,
    /// Elements between consecutive batch items of `C`; `None` means packed. Must not be 0.
    pub stride_c: Option<usize>,
}

/// The largest element index a GPU kernel can address (indices are 32-bit in WGSL).
const MAX_INDEX: usize = u32::MAX as usize;

impl Gemm {
    /// `C[m, n] = A[m, k] * B[k, n]`, packed, no batch.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            batch: 1,
            lda: None,
            ldb: None,
            ldc: None,
            offset_a: 0,
            offset_b: 0,
            offset_c: 0,
            stride_a: None,
            stride_b: None,
            stride_c: None,
        }
    }

    /// Sets whether `A` is stored transposed.
    pub fn trans_a(mut self, t: bool) -> Self {
        self.trans_a = t;
        self
    }

    /// Sets whether `B` is stored transposed.
    pub fn trans_b(mut self, t: bool) -> Self {
        self.trans_b = t;
        self
    }

    /// Sets the scale of the product.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// Sets the scale of the old `C` (0: overwrite).
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }

    /// Sets the number of independent products computed at once.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Sets the leading dimensions of `A`, `B` and `C` (elements between stored rows).
    pub fn leading_dims(mut self, lda: usize, ldb: usize, ldc: usize) -> Self {
        self.lda = Some(lda);
        self.ldb = Some(ldb);
        self.ldc = Some(ldc);
        self
    }

    /// Sets the element offsets of the first `A`, `B` and `C` inside their buffers.
    pub fn offsets(mut self, a: usize, b: usize, c: usize) -> Self {
        self.offset_a = a;
        self.offset_b = b;
        self.offset_c = c;
        self
    }

    /// Sets the elements between consecutive batch items of `A`, `B` and `C` (0 shares one
    /// matrix across the batch, allowed for `A` and `B` only).
    pub fn strides(mut self, a: usize, b: usize, c: usize) -> Self {
        self.stride_a = Some(a);
        self.stride_b = Some(b);
        self.stride_c = Some(c);
        self
    }

    /// Stored rows and columns of A (before `op`).
    pub fn stored_a(&self) -> (usize, usize) {
        if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        }
    }

    /// Stored rows and columns of B (before `op`).
    pub fn stored_b(&self) -> (usize, usize) {
        if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        }
    }

    /// Leading dimension of `A` in effect: the given one, or the stored columns when packed.
    pub fn lda(&self) -> usize {
        self.lda.unwrap_or(self.stored_a().1)
    }

    /// Leading dimension of `B` in effect: the given one, or the stored columns when packed.
    pub fn ldb(&self) -> usize {
        self.ldb.unwrap_or(self.stored_b().1)
    }

    /// Leading dimension of `C` in effect: the given one, or `n` when packed.
    pub fn ldc(&self) -> usize {
        self.ldc.unwrap_or(self.n)
    }

    /// Batch stride of `A` in effect: the given one, or one stored matrix when packed.
    pub fn stride_a(&self) -> usize {
        self.stride_a.unwrap_or(self.stored_a().0 * self.lda())
    }

    /// Batch stride of `B` in effect: the given one, or one stored matrix when packed.
    pub fn stride_b(&self) -> usize {
        self.stride_b.unwrap_or(self.stored_b().0 * self.ldb())
    }

    /// Batch stride of `C` in effect: the given one, or `m * ldc` when packed.
    pub fn stride_c(&self) -> usize {
        self.stride_c.unwrap_or(self.m * self.ldc())
    }

    /// Floating-point operations of the whole product (multiply and add counted apart).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64 * self.batch as f64
    }

    /// Elements a buffer must hold for an operand stored as `rows x cols` with leading
    /// dimension `ld`, starting at `offset`, `batch` times `stride` apart.
    fn extent(
        rows: usize,
        cols: usize,
        ld: usize,
        offset: usize,
        stride: usize,
        batch: usize,
    ) -> Option<usize> {
        let last_item = (batch - 1).checked_mul(stride)?;
        let last_row = (rows - 1).checked_mul(ld)?;
        offset
            .checked_add(last_item)?
            .checked_add(last_row)?
            .checked_add(cols)
    }

    /// Checks the product against the lengths (in elements) of the buffers it will use.
    pub fn validate(
        &self,
        len_a: usize,
        len_b: usize,
        len_c: usize,
        len_bias: Option<usize>,
    ) -> Result<()> {
        let (m, n, k) = (self.m, self.n, self.k);
        if m == 0 || n == 0 || k == 0 || self.batch == 0 {
            bail!(
                Shape,
                "gemm needs non-zero sizes, got m = {m}, n = {n}, k = {k}, batch = {}",
                self.batch
            );
        }
        ensure!(
            self.alpha.is_finite() && self.beta.is_finite(),
            Invalid,
            "gemm alpha and beta must be finite, got alpha = {}, beta = {}",
            self.alpha,
            self.beta
        );
        let (ra, ca) = self.stored_a();
        let (rb, cb) = self.stored_b();
        for (name, ld, cols) in [
            ("lda", self.lda(), ca),
            ("ldb", self.ldb(), cb),
            ("ldc", self.ldc(), n),
        ] {
            ensure!(
                ld >= cols,
                Shape,
                "gemm {name} = {ld} is smaller than the {cols} columns stored per row"
            );
        }
        if self.batch > 1 {
            let c_span = (m - 1) * self.ldc() + n;
            ensure!(
                self.stride_c() >= c_span,
                Shape,
                "gemm batch items of C overlap: stride_c = {} but one item spans {c_span} elements",
                self.stride_c()
            );
        }
        let need = |what: &str, rows, cols, ld, off, stride, have: usize| -> Result<usize> {
            let need = Self::extent(rows, cols, ld, off, stride, self.batch)
                .filter(|&e| e <= MAX_INDEX)
                .ok_or_else(|| err!(Limit, "gemm operand {what} is too large to address"))?;
            ensure!(
                have >= need,
                Shape, "gemm operand {what} ({rows} x {cols}, ld {ld}, offset {off}, batch {} x stride {stride}) \
                 needs {need} elements, the buffer has {have} (m = {m}, n = {n}, k = {k}, trans_a = {}, trans_b = {})",
                self.batch,
                self.trans_a,
                self.trans_b
            );
            Ok(need)
        };
        need(
            "A",
            ra,
            ca,
            self.lda(),
            self.offset_a,
            self.stride_a(),
            len_a,
        )?;
        need(
            "B",
            rb,
            cb,
            self.ldb(),
            self.offset_b,
            self.stride_b(),
            len_b,
        )?;
        need("C", m, n, self.ldc(), self.offset_c, self.stride_c(), len_c)?;
        if let Some(len) = len_bias {
            ensure!(
                len >= n,
                Shape,
                "gemm bias needs {n} elements (one per column of C), it has {len}"
            );
        }
        Ok(())
    }
}

/// A layer's weight and bias gradients as one product (the weight-gradient product of
/// `shaders/gemm.wgsl`, one dispatch and its reduction on the GPU). With `A` the gate
/// gradients, `rows x m` stored row-major (leading dimension `lda`, from `offset_a`), `B1`
/// the layer's inputs, `rows x n1` (`ldb1`, `offset_b1`), and `B2` its previous states,
/// `rows x n2` (`ldb2`, `offset_b2`; `n2 = 0`: no `B2`):
/// - `out1 = A^T B1`, `m x n1` packed (`dW_ih`);
/// - `out2 = A^T B2`, `m x n2` packed (`dW_hh`);
/// - `sums = A^T 1`, `m` entries: `A`'s column sums (the bias gradient).
///
/// Where the recurrent side's gate gradients differ from the input side's (GRU), `B2` pairs
/// with a second `A2` in `A`'s buffer ([`Self::a2_at`]): then `out2 = A2^T B2`, and the
/// second sums output, where one is asked for, is `A2`'s column sums (`db_hh`).
///
/// Where some rows of `out2` pair with other previous values (GRU reset-before, whose n
/// rows pair with `r * h`, not `h`), `out2`'s rows from a given row on read `B3` instead of
/// `B2` ([`Self::b3_from`]).
///
/// Every output is overwritten, never read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightGrads {
    /// Rows summed over: steps times batch entries.
    pub rows: usize,
    /// Columns of `A`: rows of every output (the gate width).
    pub m: usize,
    /// Elements between consecutive stored rows of `A`.
    pub lda: usize,
    /// Element offset of `A` inside its buffer.
    pub offset_a: usize,
    /// Columns of `B1` (the layer's input size).
    pub n1: usize,
    /// Elements between consecutive stored rows of `B1`.
    pub ldb1: usize,
    /// Element offset of `B1` inside its buffer.
    pub offset_b1: usize,
    /// Columns of `B2` (the hidden size); 0 for none.
    pub n2: usize,
    /// Elements between consecutive stored rows of `B2`.
    pub ldb2: usize,
    /// Element offset of `B2` inside its buffer.
    pub offset_b2: usize,
    /// Element offset of `A2` inside `A`'s buffer (leading dimension `lda`), where `B2`
    /// pairs with `A2` rather than `A`; `None`: with `A`.
    pub offset_a2: Option<usize>,
    /// Where `out2`'s later rows pair with `B3` rather than `B2`; `None`: none do.
    pub b3: Option<RowsFromB3>,
}

/// `out2`'s rows from `row` on pair with `B3`, `rows x n2` stored in `B2`'s buffer with
/// leading dimension `ld` from `offset` (see [`WeightGrads::b3_from`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowsFromB3 {
    /// The first row of `out2` (a column of `A` or `A2`) that pairs with `B3`.
    pub row: usize,
    /// Elements between consecutive stored rows of `B3`.
    pub ld: usize,
    /// Element offset of `B3` inside `B2`'s buffer.
    pub offset: usize,
}

impl WeightGrads {
    /// The gradients for packed operands at offset 0: `A` `[rows, m]`, `B1` `[rows, n1]`,
    /// `B2` `[rows, n2]` (`n2 = 0`: none).
    pub fn new(rows: usize, m: usize, n1: usize, n2: usize) -> Self {
        Self {
            rows,
            m,
            lda: m,
            offset_a: 0,
            n1,
            ldb1: n1,
            offset_b1: 0,
            n2,
            ldb2: n2,
            offset_b2: 0,
            offset_a2: None,
            b3: None,
        }
    }

    /// Pairs `out2`'s rows from `row` on with `B3` (stored in `B2`'s buffer with leading
    /// dimension `ld`, from `offset`) instead of `B2`; `0 < row < m`.
    pub fn b3_from(mut self, row: usize, ld: usize, offset: usize) -> Self {
        self.b3 = Some(RowsFromB3 { row, ld, offset });
        self
    }

    /// Pairs `B2` with `A2`, stored in `A`'s buffer from `offset` with `A`'s leading
    /// dimension (see [`WeightGrads`]).
    pub fn a2_at(mut self, offset: usize) -> Self {
        self.offset_a2 = Some(offset);
        self
    }

    /// Sets `A`'s leading dimension and offset.
    pub fn a_at(mut self, ld: usize, offset: usize) -> Self {
        (self.lda, self.offset_a) = (ld, offset);
        self
    }

    /// Sets `B1`'s leading dimension and offset.
    pub fn b1_at(mut self, ld: usize, offset: usize) -> Self {
        (self.ldb1, self.offset_b1) = (ld, offset);
        self
    }

    /// Sets `B2`'s leading dimension and offset.
    pub fn b2_at(mut self, ld: usize, offset: usize) -> Self {
        (self.ldb2, self.offset_b2) = (ld, offset);
        self
    }

    /// The product with `B1` alone (`out1`).
    pub fn first(&self) -> Gemm {
        Gemm::new(self.m, self.n1, self.rows)
            .trans_a(true)
            .leading_dims(self.lda, self.ldb1, self.n1)
            .offsets(self.offset_a, self.offset_b1, 0)
    }

    /// The product with `B2` alone (`out2`, from `A2` where set; its rows before `B3`'s
    /// where there is one), where there is a `B2`.
    pub fn second(&self) -> Option<Gemm> {
        (self.n2 > 0).then(|| {
            Gemm::new(self.b3.map_or(self.m, |b3| b3.row), self.n2, self.rows)
                .trans_a(true)
                .leading_dims(self.lda, self.ldb2, self.n2)
                .offsets(self.offset_a2.unwrap_or(self.offset_a), self.offset_b2, 0)
        })
    }

    /// The product with `B3` alone: `out2`'s rows from [`RowsFromB3::row`] on, where there
    /// is a `B3`.
    pub fn third(&self) -> Option<Gemm> {
        self.b3.map(|b3| {
            Gemm::new(self.m - b3.row, self.n2, self.rows)
                .trans_a(true)
                .leading_dims(self.lda, b3.ld, self.n2)
                .offsets(
                    self.offset_a2.unwrap_or(self.offset_a) + b3.row,
                    b3.offset,
                    b3.row * self.n2,
                )
        })
    }

    /// Checks the gradients against the lengths (in elements) of the operands and outputs;
    /// `B2` and `out2` are given exactly where `n2 > 0`.
    pub fn validate(
        &self,
        len_a: usize,
        len_b1: usize,
        len_b2: Option<usize>,
        len_out1: usize,
        len_out2: Option<usize>,
        len_sums: usize,
    ) -> Result<()> {
        ensure!(
            self.n1 > 0,
            Shape,
            "weight gradients need at least one input column, got n1 = 0"
        );
        ensure!(
            self.offset_a2.is_none() || self.n2 > 0,
            Shape,
            "weight gradients with an A2 need a B2 to pair it with, got n2 = 0"
        );
        if let Some(b3) = self.b3 {
            ensure!(
                self.n2 > 0 && 0 < b3.row && b3.row < self.m,
                Shape,
                "weight gradients with a B3 from row {} need a B2 (n2 = {}) and 0 < row < m = {}",
                b3.row,
                self.n2,
                self.m
            );
        }
        self.first().validate(len_a, len_b1, len_out1, None)?;
        match (self.second(), len_b2, len_out2) {
            (Some(g), Some(b2), Some(out2)) => {
                g.validate(len_a, b2, out2, None)?;
                if let Some(g) = self.third() {
                    g.validate(len_a, b2, out2, None)?;
                }
            }
            (None, None, None) => {}
            (_, b2, out2) => bail!(
                Shape,
                "weight gradients with n2 = {} need B2 and out2 given exactly when n2 > 0, \
                 got B2: {}, out2: {}",
                self.n2,
                b2.is_some(),
                out2.is_some()
            ),
        }
        ensure!(
            len_sums >= self.m,
            Shape,
            "weight gradients need a sums output of {} elements, it has {len_sums}",
            self.m
        );
        Ok(())
    }

    /// Checks the second sums output's length (in elements), where there is one.
    pub fn validate_sums2(&self, len_sums2: Option<usize>) -> Result<()> {
        if let Some(len) = len_sums2 {
            ensure!(
                len >= self.m,
                Shape,
                "weight gradients need a second sums output of {} elements, it has {len}",
                self.m
            );
        }
        Ok(())
    }
}
