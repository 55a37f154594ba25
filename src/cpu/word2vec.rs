//! CPU twin of `shaders/word2vec.wgsl`: unit rows and the top-k cosine scan.

use crate::word2vec::grad::dot;

/// Every `dim`-long row of `data` scaled to unit length; zero rows stay zero.
pub fn normalize_rows(data: &[f32], dim: usize) -> Vec<f32> {
    let mut u = data.to_vec();
    for row in u.chunks_exact_mut(dim) {
        let n = dot(row, row).sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|x| *x /= n);
        }
    }
    u
}

/// The `k` rows of `unit` with the largest dot product with `query`, `exclude` skipped:
/// (row, score) best first, ties to the lower row. Fewer if fewer rows remain.
pub fn top_k_cosine(
    unit: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    exclude: &[usize],
) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = unit
        .chunks_exact(dim)
        .enumerate()
        .filter(|(i, _)| !exclude.contains(i))
        .map(|(i, row)| (i, dot(row, query)))
        .collect();
    let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    if k < scored.len() {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.sort_by(order);
    scored
}
