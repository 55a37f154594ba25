//! The description of word2vec's nearest-neighbour scan, shared by the GPU kernel
//! (`shaders/word2vec.wgsl`) and its CPU twin (`src/cpu/word2vec.rs`): the `k` rows of a
//! `rows x dim` matrix of unit vectors with the largest dot product with a unit query
//! (their cosine), some rows excluded; best first, ties to the lower row.

use crate::error::{bail, ensure, Result};

/// The largest `k` the GPU selection takes (one selection pass keeps `k` of 1024).
pub const MAX_TOP_K: usize = 256;

/// The `k` nearest rows to a unit query by cosine, among `rows` unit vectors of `dim` values
/// (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CosineTopK {
    /// Rows of the matrix (the vocabulary).
    pub rows: usize,
    /// Values per row.
    pub dim: usize,
    /// Rows returned, best first; 1 to [`MAX_TOP_K`].
    pub k: usize,
}

impl CosineTopK {
    /// A scan of `rows x dim` for the best `k`.
    pub fn new(rows: usize, dim: usize, k: usize) -> Self {
        Self { rows, dim, k }
    }

    /// Checks the sizes, the matrix length and that every value is finite.
    pub fn validate(&self, vectors: &[f32]) -> Result<()> {
        ensure!(
            self.rows > 0,
            Shape,
            "an empty vocabulary: expected at least one row"
        );
        ensure!(self.dim > 0, Shape, "vector size 0: expected at least 1");
        ensure!(
            (1..=MAX_TOP_K).contains(&self.k),
            Invalid,
            "top-k of k = {}: expected 1 to {MAX_TOP_K}",
            self.k
        );
        ensure!(
            self.rows.checked_mul(self.dim) == Some(vectors.len()),
            Shape,
            "{} values for {} rows of size {}: expected {}",
            vectors.len(),
            self.rows,
            self.dim,
            self.rows.saturating_mul(self.dim)
        );
        ensure!(
            vectors.len() < u32::MAX as usize,
            Limit,
            "{} values: at most {} can be indexed",
            vectors.len(),
            u32::MAX
        );
        if let Some(i) = vectors.iter().position(|x| !x.is_finite()) {
            bail!(
                Numerics,
                "row {} holds {}: expected finite values",
                i / self.dim,
                vectors[i]
            );
        }
        Ok(())
    }

    /// Checks one query: `dim` finite values and excluded rows inside the matrix, leaving
    /// at least `k` rows.
    pub fn validate_query(&self, query: &[f32], exclude: &[usize]) -> Result<()> {
        ensure!(
            query.len() == self.dim,
            Shape,
            "query of {} values: expected {}",
            query.len(),
            self.dim
        );
        ensure!(
            query.iter().all(|x| x.is_finite()),
            Numerics,
            "the query holds a non-finite value"
        );
        if let Some(&r) = exclude.iter().find(|&&r| r >= self.rows) {
            bail!(Invalid, "excluded row {r}: expected below {}", self.rows);
        }
        let mut distinct = exclude.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        ensure!(
            self.rows - distinct.len() >= self.k,
            Shape,
            "top-{} of {} rows with {} excluded: not enough rows",
            self.k,
            self.rows,
            distinct.len()
        );
        Ok(())
    }
}
