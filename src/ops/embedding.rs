//! Embedding lookup: the description shared by `shaders/embedding.wgsl` and
//! `src/cpu/embedding.rs`.
//!
//! Forward gathers rows: `out[n, :] = table[ids[n], :]` for u32 `ids[N]`, `table[V, D]` and
//! `out[N, D]`, all row-major. Backward writes the whole `dtable[V, D]`: row `v` is the sum
//! of `dout[n, :]` over the positions `n` where `ids[n] == v`, in increasing `n`; rows that
//! occur nowhere, and the padding row (PyTorch's `padding_idx`), are zero. It overwrites
//! rather than accumulates, so `dtable` needs no clearing and every element is written.
//!
//! The scatter-add needs no float atomics: the ids come from host data, so the host builds
//! an inverse index (CSR: `offsets[V + 1]`, and `positions[N]` grouped by id, each group in
//! increasing position) and each GPU invocation sums one `dtable` element in that fixed
//! order. The ids are validated in the same pass.

use crate::error::{ensure, err, Result};

/// The largest element index a GPU kernel can address (indices are 32-bit in WGSL).
const MAX_INDEX: usize = u32::MAX as usize;

/// One embedding table of `vocab` rows of `dim` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedding {
    /// Rows of the table (`V`), the number of distinct ids.
    pub vocab: usize,
    /// Values per row (`D`).
    pub dim: usize,
    /// A row that gets no gradient (its lookups still return the row).
    pub padding_idx: Option<u32>,
}

/// Where each id occurs: positions `positions[offsets[v]..offsets[v + 1]]` hold id `v`, in
/// increasing order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InverseIndex {
    /// `V + 1` bounds: the positions of id `v` are `positions[offsets[v]..offsets[v + 1]]`.
    pub offsets: Vec<u32>,
    /// The `N` positions, grouped by id, each group increasing.
    pub positions: Vec<u32>,
}

impl Embedding {
    /// A table of `vocab` rows of `dim` values, without a padding row.
    pub fn new(vocab: usize, dim: usize) -> Self {
        Self {
            vocab,
            dim,
            padding_idx: None,
        }
    }

    /// Sets the padding row (PyTorch's `padding_idx`), which gets no gradient.
    pub fn padding_idx(mut self, idx: u32) -> Self {
        self.padding_idx = Some(idx);
        self
    }

    /// Checks the sizes against the table length and the number of ids and output elements.
    pub fn validate(&self, table: usize, ids: usize, out: usize) -> Result<()> {
        let (v, d) = (self.vocab, self.dim);
        ensure!(
            v > 0 && d > 0,
            Invalid,
            "embedding needs vocab > 0 and dim > 0, got vocab = {v}, dim = {d}"
        );
        ensure!(ids > 0, Shape, "embedding lookup of no ids");
        if let Some(p) = self.padding_idx {
            ensure!(
                (p as usize) < v,
                Invalid,
                "embedding padding_idx = {p} is out of range: the table has {v} rows"
            );
        }
        let too_big = |what: &str, rows: usize| {
            rows.checked_mul(d)
                .filter(|&e| e <= MAX_INDEX)
                .ok_or_else(|| {
                    err!(
                        Limit,
                        "embedding {what} [{rows}, {d}] is too large to address"
                    )
                })
        };
        let want_table = too_big("table", v)?;
        let want_out = too_big("output", ids)?;
        ensure!(
            table == want_table,
            Shape,
            "embedding table [{v}, {d}] needs {want_table} elements, got {table}"
        );
        ensure!(
            out == want_out,
            Shape,
            "embedding of {ids} ids x {d} values needs {want_out} output elements, got {out}"
        );
        Ok(())
    }

    /// Checks every id against the vocabulary.
    pub fn validate_ids(&self, ids: &[u32]) -> Result<()> {
        for (pos, &id) in ids.iter().enumerate() {
            ensure!(
                (id as usize) < self.vocab,
                Invalid,
                "embedding id {id} at position {pos} is out of range: the table has {} rows",
                self.vocab
            );
        }
        Ok(())
    }

    /// Validates `ids` and builds their inverse index (a counting sort, stable by position).
    pub fn inverse_index(&self, ids: &[u32]) -> Result<InverseIndex> {
        self.validate_ids(ids)?;
        ensure!(
            ids.len() <= MAX_INDEX,
            Limit,
            "embedding: {} ids are too many",
            ids.len()
        );
        let mut offsets = vec![0u32; self.vocab + 1];
        for &id in ids {
            offsets[id as usize + 1] += 1;
        }
        for v in 0..self.vocab {
            offsets[v + 1] += offsets[v];
        }
        let mut next = offsets.clone();
        let mut positions = vec![0u32; ids.len()];
        for (pos, &id) in ids.iter().enumerate() {
            let slot = &mut next[id as usize];
            positions[*slot as usize] = pos as u32;
            *slot += 1;
        }
        Ok(InverseIndex { offsets, positions })
    }
}
