//! CPU twin of `shaders/embedding.wgsl`: row gather and its deterministic scatter-add.
//! Layout and semantics: `src/ops/embedding.rs`.

use crate::error::Result;

use super::Real;
use crate::ops::embedding::Embedding;

/// `out[n, :] = table[ids[n], :]`.
pub fn forward<T: Real>(spec: &Embedding, table: &[T], ids: &[u32], out: &mut [T]) -> Result<()> {
    spec.validate(table.len(), ids.len(), out.len())?;
    spec.validate_ids(ids)?;
    let d = spec.dim;
    for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
        row.copy_from_slice(&table[id as usize * d..][..d]);
    }
    Ok(())
}

/// Overwrites `dtable` with the gradient: each row the sum of `dout` rows where its id
/// occurs, in increasing position, and zero for the padding row and unused rows.
pub fn backward<T: Real>(
    spec: &Embedding,
    ids: &[u32],
    dout: &[T],
    dtable: &mut [T],
) -> Result<()> {
    spec.validate(dtable.len(), ids.len(), dout.len())?;
    let index = spec.inverse_index(ids)?;
    let d = spec.dim;
    for (v, row) in dtable.chunks_exact_mut(d).enumerate() {
        row.fill(T::zero());
        if spec.padding_idx == Some(v as u32) {
            continue;
        }
        let (a, b) = (index.offsets[v] as usize, index.offsets[v + 1] as usize);
        for &pos in &index.positions[a..b] {
            for (x, &g) in row.iter_mut().zip(&dout[pos as usize * d..][..d]) {
                *x = *x + g;
            }
        }
    }
    Ok(())
}
