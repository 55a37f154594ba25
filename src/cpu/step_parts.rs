//! Splitting one timestep of a recurrent layer among threads by hidden units.
//!
//! A step's work (the recurrent product of every gate, then the gate work) is independent
//! across hidden units once the previous state is known, so each thread takes a contiguous
//! run of units (a part) and does all of it for those units. The parts write their units'
//! columns of buffers laid out by rows (`Shared`); a step is one parallel section, and the
//! next one starts when every part has finished.

use std::marker::PhantomData;
use std::ops::Range;

use crate::error::Result;
use rayon::prelude::*;

/// Multiply-adds of a step's recurrent product (`batch * gate_width * hidden`) from which the
/// threads share a step. Lower than a lone product's threshold (`gemm::PARALLEL_WORK`, 96^3),
/// because a layer's steps run back to back on threads that stay awake: at 64^3 an LSTM
/// of 64 units and batch 16 ran its forward in 0.69x the time on one thread, one of 128
/// units and batch 32 its RNN forward + backward in 0.72x (2 cores, BENCHMARKS.md). At 32^3
/// some shapes gained and others lost (a GRU of 32 units and batch 32: 1.29x the forward's
/// time).
const STEP_PARALLEL_WORK: f64 = 64.0 * 64.0 * 64.0;

/// Hidden units per block when splitting: parts of whole blocks keep the rows of each part's
/// product in whole SIMD vectors.
const UNIT_BLOCK: usize = 16;

/// The runs of hidden units the threads take at each step: one run for a step whose recurrent
/// product (`batch * gate_width * hidden` multiply-adds) is too small to share, else one per
/// thread, never more than there are blocks of units.
pub fn unit_parts(batch: usize, gate_width: usize, hidden: usize) -> Vec<Range<usize>> {
    let work = batch as f64 * gate_width as f64 * hidden as f64;
    let threads = if work < STEP_PARALLEL_WORK {
        1
    } else {
        super::threads()
    };
    let blocks = hidden.div_ceil(UNIT_BLOCK);
    let n = threads.clamp(1, blocks.max(1));
    let edge = |p: usize| (p * blocks / n * UNIT_BLOCK).min(hidden);
    (0..n).map(|p| edge(p)..edge(p + 1)).collect()
}

/// Runs `f` on every part, on the thread pool when there are several.
pub fn for_each_part<P: Send>(
    parts: &mut [P],
    f: impl Fn(&mut P) -> Result<()> + Sync + Send,
) -> Result<()> {
    match parts {
        [one] => f(one),
        _ => parts.par_iter_mut().try_for_each(f),
    }
}

/// Runs `steps`, a loop of parallel sections over `parts` parts, on a thread of the pool when
/// there are several parts. Started from a thread outside the pool, every section would hand
/// its work to the pool and put the caller to sleep until it is done (two futex round trips a
/// step); from inside, the thread takes one part itself and the others are stolen.
pub fn on_pool<R: Send>(parts: usize, steps: impl FnOnce() -> R + Send) -> R {
    if parts > 1 && rayon::current_thread_index().is_none() {
        rayon::scope(|_| steps())
    } else {
        steps()
    }
}

/// A buffer that the parts of a step write at the same time, each in the columns of its own
/// units. Borrows cannot say "these columns of every row", so the parts take slices through
/// this type and keep to their own units.
pub(crate) struct Shared<'a, T> {
    ptr: *mut T,
    len: usize,
    _buffer: PhantomData<&'a mut [T]>,
}

// SAFETY: `Shared` hands out `&mut [T]` to several threads; that is sound for `T: Send` as
// long as the slices do not overlap, which is the contract of `slice`.
unsafe impl<T: Send> Send for Shared<'_, T> {}
unsafe impl<T: Send> Sync for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    /// Shares `buffer` for the step; the parts take their slices with [`Self::slice`].
    pub(crate) fn new(buffer: &'a mut [T]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// `len` elements from `start` (bounds are checked).
    ///
    /// # Safety
    /// No other slice of this buffer that overlaps this one may be alive at the same time.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(
            start <= self.len && len <= self.len - start,
            "slice {start}+{len} outside a buffer of {}",
            self.len
        );
        // SAFETY: in bounds (checked above), the buffer is borrowed mutably for 'a, and the
        // caller guarantees that no overlapping slice is alive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Writes the rows of `src` ([rows, cols]) as columns of `dst` (leading dimension `ld`):
/// `dst[k * ld + j] = src[j * cols + k]`. Sixteen rows at a time, so each write fills a
/// cache line's run of `dst` while reading sixteen streams of `src`.
pub fn transpose_rows_into<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T], ld: usize) {
    for j0 in (0..rows).step_by(16) {
        let n = (rows - j0).min(16);
        let block = &src[j0 * cols..][..n * cols];
        for k in 0..cols {
            let out = &mut dst[k * ld + j0..][..n];
            for (j, o) in out.iter_mut().enumerate() {
                *o = block[j * cols + k];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_units_in_order_without_gaps() {
        for hidden in [1, 5, 16, 17, 100, 256, 1000] {
            for batch in [1, 8, 64] {
                let parts = unit_parts(batch, 4 * hidden, hidden);
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts.last().unwrap().end, hidden);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                assert!(parts.iter().all(|p| !p.is_empty()));
            }
        }
    }

    #[test]
    fn transpose_writes_rows_as_columns() {
        let (rows, cols, ld) = (37, 5, 41);
        let src: Vec<u32> = (0..rows * cols).map(|i| i as u32).collect();
        let mut dst = vec![u32::MAX; cols * ld];
        transpose_rows_into(&src, rows, cols, &mut dst, ld);
        for k in 0..cols {
            for j in 0..rows {
                assert_eq!(dst[k * ld + j], src[j * cols + k]);
            }
            assert!(dst[k * ld + rows..(k + 1) * ld]
                .iter()
                .all(|&v| v == u32::MAX));
        }
    }
}
