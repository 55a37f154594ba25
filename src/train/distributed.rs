//! Data-parallel training across processes: a [`GradientReducer`] that a [`Trainer`]
//! sums its gradients through, the local one ([`LocalReducer`], one process) and, behind
//! the `mpi` cargo feature, `MpiReducer` (processes started by `mpirun` or Slurm's `srun`).
//!
//! With more than one rank, each rank trains on its own share of every global batch
//! ([`shard_range`]) and a training step is: phase 0 of the training program (forward, loss,
//! backward: one submit on the GPU), one readback of every gradient into one flat buffer in
//! update order, an agreement ([`GradientReducer::exchange`]) on each rank's status, loss and
//! counted rows, the sum of the weighted gradients, one upload, and phase 1 (clipping, the
//! optimizer, the state carry). Without a reducer (or with one rank) a step stays one
//! program phase.
//!
//! **The global mean.** A batch's loss is a mean over its counted rows (cross-entropy rows
//! whose target is not the ignore index, every value for mean squared error), and its
//! gradient is the gradient of that mean. Rank `r` with `c_r` counted rows and mean-loss
//! gradient `g_r` contributes `(c_r / C) g_r` with `C = sum c_r`, which sums to the gradient
//! of the mean over the global batch: what one process computes on the whole batch. The
//! counts travel in the agreement, so uneven shares and ignored rows weigh right.
//!
//! **Identical weights.** [`GradientReducer::sum`] adds the ranks' buffers in rank order
//! (0, 1, 2, ...) on rank 0 and broadcasts the result, so every rank applies the same bits
//! and the weights stay identical; [`Trainer::checkpoint`] compares a fingerprint of the
//! weights and optimizer state across ranks and fails naming the step if they differ.
//!
//! **Faults.** Every failure that can happen on one rank only (a bad batch, a device error,
//! a failed readback) is carried into the next agreement, so every rank stops with that
//! rank's message ([`Error::RankFailed`]) instead of waiting in a collective; a non-finite loss is
//! the global loss, seen by every rank at the same step. An error outside a step leaves the
//! other ranks waiting: end the job then (`MpiReducer::abort`, as `recur` does).
//!
//! [`Trainer`]: super::Trainer
//! [`Trainer::checkpoint`]: super::Trainer::checkpoint

use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;

use crate::error::{bail, ensure, Error, Result};

use super::trainer::CarriedState;
use crate::nn::Tensors;

/// Sums gradients across the processes (ranks) of a data-parallel job.
pub trait GradientReducer {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// Processes in the job.
    fn ranks(&self) -> usize;
    /// Every rank's bytes, in rank order, on every rank; if any rank passes an error, every
    /// rank gets [`Error::RankFailed`] naming the lowest such rank and its message. Every rank must
    /// call it at the same point: it is how ranks agree to go on.
    fn exchange(&self, local: Result<Vec<u8>>) -> Result<Vec<Vec<u8>>>;
    /// Replaces `data` on every rank by the sum over ranks, added in rank order, the same
    /// bits on every rank. Every rank passes the same length.
    fn sum(&self, data: &mut [f32]) -> Result<()>;
    /// In words ("1 process", "rank 1 of 4 (MPI)").
    fn describe(&self) -> String;
}

/// The processes a run trains on: this one alone, or the ranks of a data-parallel job.
#[derive(Clone, Default)]
pub struct Ranks(Option<Rc<dyn GradientReducer>>);

impl Ranks {
    /// This process alone.
    pub fn local() -> Self {
        Self(None)
    }

    /// The ranks of `reducer`'s job.
    pub fn new(reducer: Rc<dyn GradientReducer>) -> Self {
        Self(Some(reducer))
    }

    /// This process's rank (0 alone).
    pub fn rank(&self) -> usize {
        self.0.as_ref().map_or(0, |r| r.rank())
    }

    /// Processes in the job (1 alone).
    pub fn count(&self) -> usize {
        self.0.as_ref().map_or(1, |r| r.ranks())
    }

    /// Whether this is rank 0, the one that prints and writes files.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// The reducer of a job of more than one rank.
    pub fn reducer(&self) -> Option<Rc<dyn GradientReducer>> {
        self.0.clone().filter(|r| r.ranks() > 1)
    }

    /// This rank's part of `total` items (see [`shard_range`]).
    pub fn share(&self, total: usize) -> Range<usize> {
        shard_range(total, self.count(), self.rank())
    }

    /// Hands `trainer` the reducer of a job of more than one rank.
    pub fn attach<M: super::Learner>(&self, trainer: &mut super::Trainer<M>) -> Result<()> {
        match self.reducer() {
            Some(r) => trainer.set_reducer(r),
            None => Ok(()),
        }
    }
}

/// One process: nothing to reduce.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalReducer;

impl GradientReducer for LocalReducer {
    fn rank(&self) -> usize {
        0
    }
    fn ranks(&self) -> usize {
        1
    }
    fn exchange(&self, local: Result<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        local.map(|b| vec![b])
    }
    fn sum(&self, _data: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "1 process".into()
    }
}

/// Whether `e` (or an error in its chain of sources) is an error every rank of the job
/// stops with ([`Error::RankFailed`] or [`Error::EveryRank`]), so rank 0 alone need report
/// it, and no rank is left waiting. An `anyhow::Error` passes as `e.as_ref()`.
pub fn is_agreed(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |c| c.source()).any(|c| {
        matches!(
            c.downcast_ref::<Error>(),
            Some(Error::RankFailed { .. } | Error::EveryRank(_))
        )
    })
}

/// `cond`, or an [`Error::EveryRank`] holding an error of `kind` with `message`.
fn agreed(cond: bool, kind: fn(String) -> Error, message: impl FnOnce() -> String) -> Result<()> {
    match cond {
        true => Ok(()),
        false => Err(Error::EveryRank(Box::new(kind(message())))),
    }
}

/// A status and payload as [`GradientReducer::exchange`] sends it: `0` and the payload, or
/// `1` and the error's message (with its causes).
pub fn encode_status(local: Result<Vec<u8>>) -> Vec<u8> {
    match local {
        Ok(mut b) => {
            b.insert(0, 0);
            b
        }
        Err(e) => {
            // A RankFailed is already agreed: pass its own message on, not a rank prefix.
            let text = match e {
                Error::RankFailed { message, .. } => message,
                e => e.full_message(),
            };
            let mut b = vec![1];
            b.extend(text.into_bytes());
            b
        }
    }
}

/// The payloads of every rank (encoded by [`encode_status`]), or the first rank's error.
pub fn decode_statuses(parts: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
    for (rank, p) in parts.iter().enumerate() {
        match p.first() {
            Some(0) => {}
            Some(1) => {
                return Err(Error::RankFailed {
                    rank,
                    message: String::from_utf8_lossy(&p[1..]).into_owned(),
                })
            }
            _ => bail!(
                Format,
                "rank {rank} sent a malformed status ({} bytes)",
                p.len()
            ),
        }
    }
    Ok(parts.into_iter().map(|mut p| p.split_off(1)).collect())
}

/// The part of `total` items (streams, sequences of a batch) that rank `rank` of `ranks`
/// takes: contiguous, in rank order, sizes differing by at most one (the first ranks
/// take fewer when `total` does not divide).
pub fn shard_range(total: usize, ranks: usize, rank: usize) -> Range<usize> {
    let at = |r: usize| (total as u128 * r as u128 / ranks.max(1) as u128) as usize;
    at(rank)..at(rank + 1)
}

/// Checks that `total` `what` split among `ranks` give every rank at least one.
pub fn check_shards(what: &str, total: usize, ranks: usize) -> Result<()> {
    ensure!(ranks > 0, Invalid, "a job needs at least one rank");
    agreed(total >= ranks, Error::Invalid, || {
        format!(
            "{total} {what} cannot be split among {ranks} ranks: every rank needs at least one \
             (run at most {total} ranks, or give more {what})"
        )
    })
}

/// The ranks' agreement on a step: the global mean loss and this rank's gradient weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct StepShares {
    /// The mean loss over the global batch.
    pub loss: f32,
    /// This rank's counted rows over the global count (0 when nothing is counted).
    pub weight: f32,
}

/// Exchanges each rank's counted rows and mean loss for the step (or its error).
pub(crate) fn agree_step(
    r: &dyn GradientReducer,
    local: Result<(usize, f32)>,
    step: u64,
) -> Result<StepShares> {
    let payload = local.map(|(count, loss)| {
        let mut b = (count as u64).to_le_bytes().to_vec();
        b.extend((loss as f64).to_le_bytes());
        b
    });
    let parts = r.exchange(payload)?;
    let mut counts = Vec::with_capacity(parts.len());
    let (mut total, mut weighted) = (0.0f64, 0.0f64);
    for (rank, p) in parts.iter().enumerate() {
        ensure!(
            p.len() == 16,
            Format,
            "step {step}: rank {rank} sent {} bytes, expected 16",
            p.len()
        );
        let count = u64::from_le_bytes(p[..8].try_into().expect("8 bytes")) as f64;
        let loss = f64::from_le_bytes(p[8..].try_into().expect("8 bytes"));
        counts.push(count);
        total += count;
        weighted += count * loss;
    }
    if total == 0.0 {
        return Ok(StepShares {
            loss: 0.0,
            weight: 0.0,
        });
    }
    Ok(StepShares {
        loss: (weighted / total) as f32,
        weight: (counts[r.rank()] / total) as f32,
    })
}

/// A fingerprint of a model's parameters and optimizer state (FNV-1a over the names and
/// the bits of every value, in name order).
pub fn fingerprint<'a>(tensors: impl IntoIterator<Item = (&'a String, &'a [f32])>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, data) in tensors {
        eat(name.as_bytes());
        eat(&(data.len() as u64).to_le_bytes());
        for v in data {
            eat(&v.to_bits().to_le_bytes());
        }
    }
    h
}

/// Fails naming `step` unless every rank's `local` fingerprint is the same.
pub(crate) fn verify_identical(
    r: &dyn GradientReducer,
    local: Result<u64>,
    step: u64,
) -> Result<()> {
    let parts = r.exchange(local.map(|h| h.to_le_bytes().to_vec()))?;
    let hashes: Vec<String> = parts
        .iter()
        .map(|p| match <[u8; 8]>::try_from(p.as_slice()) {
            Ok(b) => format!("{:016x}", u64::from_le_bytes(b)),
            Err(_) => format!("<{} bytes>", p.len()),
        })
        .collect();
    agreed(
        hashes.iter().all(|h| *h == hashes[0]),
        Error::Numerics,
        || {
            format!(
            "the ranks' weights differ at step {step} (fingerprints by rank: {}): the replicas \
             diverged; the checkpoint is not written",
            hashes.join(", ")
        )
        },
    )
}

/// The fingerprint of a checkpoint's parameters and optimizer state.
pub(crate) fn checkpoint_fingerprint(params: &Tensors, optimizer: &Tensors) -> u64 {
    fingerprint(
        params
            .iter()
            .chain(optimizer)
            .map(|(k, v)| (k, v.data.as_slice())),
    )
}

/// Joins every rank's carried state (`[blocks, rows_r, width]` each, the rows of rank `r`'s
/// streams) into the global state `[blocks, sum rows_r, width]`, in rank order.
pub(crate) fn gather_state(
    r: &dyn GradientReducer,
    local: Result<CarriedState>,
    blocks: usize,
) -> Result<CarriedState> {
    let payload = local.map(|s| {
        let mut b = (s.h.len() as u64).to_le_bytes().to_vec();
        b.extend(s.h.iter().chain(&s.c).flat_map(|v| v.to_le_bytes()));
        b
    });
    let parts = r.exchange(payload)?;
    let mut hs = Vec::with_capacity(parts.len());
    let mut cs = Vec::with_capacity(parts.len());
    for (rank, p) in parts.iter().enumerate() {
        ensure!(p.len() >= 8, Format, "rank {rank} sent a truncated state");
        let nh = u64::from_le_bytes(p[..8].try_into().expect("8 bytes")) as usize;
        let values: Vec<f32> = p[8..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        ensure!(
            nh <= values.len() && nh.is_multiple_of(blocks.max(1)),
            Shape,
            "rank {rank} sent a state of {nh} values, not a multiple of {blocks} blocks"
        );
        cs.push(values[nh..].to_vec());
        hs.push(values[..nh].to_vec());
    }
    Ok(CarriedState {
        h: concat_blocks(&hs, blocks),
        c: concat_blocks(&cs, blocks),
    })
}

/// The `u64` a rank sent as its 8 bytes.
pub(crate) fn u64_of(p: &Vec<u8>) -> Result<u64> {
    match <[u8; 8]>::try_from(p.as_slice()) {
        Ok(b) => Ok(u64::from_le_bytes(b)),
        Err(_) => bail!(
            Format,
            "a rank sent {} bytes, expected one 8-byte count",
            p.len()
        ),
    }
}

/// `[blocks, n_i, ...]` parts joined along their second dimension.
fn concat_blocks(parts: &[Vec<f32>], blocks: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for b in 0..blocks {
        for p in parts {
            let n = p.len() / blocks;
            out.extend_from_slice(&p[b * n..(b + 1) * n]);
        }
    }
    out
}

/// This rank's streams of a global carried state `[blocks, B, width]` (a checkpoint's),
/// where `local_batch` is the rank's batch: the rows [`shard_range`] gives it.
pub(crate) fn slice_state(
    global: &CarriedState,
    (blocks, width): (usize, usize),
    (rank, ranks): (usize, usize),
    local_batch: usize,
) -> Result<CarriedState> {
    let per_block = blocks * width;
    ensure!(
        per_block > 0 && global.h.len().is_multiple_of(per_block),
        Shape,
        "a carried state of {} values is not [{blocks}, batch, {width}]",
        global.h.len()
    );
    let batch = global.h.len() / per_block;
    let range = shard_range(batch, ranks, rank);
    ensure!(
        range.len() == local_batch,
        Shape,
        "the checkpoint carries the state of {batch} streams; split among {ranks} ranks, rank \
         {rank} takes streams {range:?} ({} of them) but trains a batch of {local_batch}: \
         resume with the same global batch",
        range.len()
    );
    let take = |v: &[f32]| -> Vec<f32> {
        if v.is_empty() {
            return Vec::new();
        }
        (0..blocks)
            .flat_map(|b| {
                let start = (b * batch + range.start) * width;
                v[start..start + range.len() * width].iter().copied()
            })
            .collect()
    };
    Ok(CarriedState {
        h: take(&global.h),
        c: take(&global.c),
    })
}

/// Whether any rank of `parts` (every rank's count) differs from rank 0's, as an error
/// naming them; for loops whose length every rank must share.
pub(crate) fn check_same_count(r: &dyn GradientReducer, what: &str, count: usize) -> Result<()> {
    let parts = r.exchange(Ok((count as u64).to_le_bytes().to_vec()))?;
    let counts: Vec<u64> = parts.iter().map(u64_of).collect::<Result<_>>()?;
    agreed(
        counts.iter().all(|&c| c == counts[0]),
        Error::Invalid,
        || {
            format!(
                "the ranks have different numbers of {what} ({}): every rank must take as many \
             steps",
                counts
                    .iter()
                    .enumerate()
                    .map(|(r, c)| format!("rank {r}: {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    )
}

/// Averages `data` over the ranks (sum in rank order, then a division): the same bits on
/// every rank. For periodic model averaging (word2vec).
pub fn average(r: &dyn GradientReducer, data: &mut [f32]) -> Result<()> {
    if r.ranks() == 1 {
        return Ok(());
    }
    r.sum(data)?;
    let inv = 1.0 / r.ranks() as f32;
    data.iter_mut().for_each(|v| *v *= inv);
    Ok(())
}

/// This process's rank among the processes of its machine, from the launcher's
/// environment (Open MPI's `OMPI_COMM_WORLD_LOCAL_RANK`, Slurm's `SLURM_LOCALID`, MPICH's
/// `MPI_LOCALRANKID`), and the variable it came from.
pub fn local_rank() -> Option<(usize, &'static str)> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "SLURM_LOCALID",
        "MPI_LOCALRANKID",
    ]
    .into_iter()
    .find_map(|var| {
        let v = std::env::var(var).ok()?;
        v.trim().parse().ok().map(|n| (n, var))
    })
}

/// Sums `parts` (equal lengths) into `acc` in order: the reduction order every rank agrees
/// on.
pub fn sum_in_order<'a>(acc: &mut [f32], parts: impl IntoIterator<Item = &'a [f32]>) {
    for p in parts {
        for (a, v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
}

/// Statistics of a batch split: which rank takes how much, for messages.
pub fn describe_split(what: &str, total: usize, ranks: usize) -> String {
    let sizes: BTreeMap<usize, usize> = (0..ranks).fold(BTreeMap::new(), |mut m, r| {
        *m.entry(shard_range(total, ranks, r).len()).or_default() += 1;
        m
    });
    let parts: Vec<String> = sizes
        .iter()
        .rev()
        .map(|(size, n)| format!("{n} x {size}"))
        .collect();
    format!("{total} {what} over {ranks} ranks: {}", parts.join(" + "))
}

#[cfg(feature = "mpi")]
pub use self::mpi_reducer::MpiReducer;

#[cfg(feature = "mpi")]
mod mpi_reducer {
    use crate::error::{ensure, err, Result};
    use mpi::collective::{CommunicatorCollectives, Root};
    use mpi::datatype::PartitionMut;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};

    use super::{decode_statuses, encode_status, sum_in_order, GradientReducer};

    /// Values summed per collective: bounds rank 0's receive buffer to `ranks` x this.
    const CHUNK: usize = 1 << 22;

    /// Bytes of an exchange's first collective: a length and the bytes that fit.
    const RECORD: usize = 64;

    /// The ranks of an MPI job (`mpirun -np N`, `srun`): MPI is initialised when it is
    /// made and finalised when it is dropped.
    pub struct MpiReducer {
        world: SimpleCommunicator,
        _universe: Universe,
    }

    impl MpiReducer {
        /// Initialises MPI (once per process). A process not started by a launcher is a
        /// job of one rank.
        pub fn init() -> Result<Self> {
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
                .ok_or_else(|| err!(Invalid, "MPI was already initialised in this process"))?;
            let world = universe.world();
            Ok(Self {
                world,
                _universe: universe,
            })
        }

        /// Ends every rank of the job with `code` (MPI_Abort), after this rank's message
        /// was printed: a rank that fails outside a collective must not leave the others
        /// waiting in one.
        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }

        /// Makes a panic on this rank end the whole job (MPI_Abort) once the panic message
        /// is printed, rather than leave the other ranks waiting.
        pub fn abort_on_panic(&self) {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                previous(info);
                SimpleCommunicator::world().abort(101);
            }));
        }
    }

    impl GradientReducer for MpiReducer {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn ranks(&self) -> usize {
            self.world.size() as usize
        }

        fn exchange(&self, local: Result<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
            let mine = encode_status(local);
            ensure!(
                mine.len() <= i32::MAX as usize,
                Limit,
                "{} bytes are too many for one exchange",
                mine.len()
            );
            let n = self.ranks();
            // One collective when every rank's bytes fit a fixed record (a step's agreement
            // does), a second for the rest otherwise.
            let mut record = [0u8; RECORD];
            record[..4].copy_from_slice(&(mine.len() as u32).to_le_bytes());
            let inline = mine.len().min(RECORD - 4);
            record[4..4 + inline].copy_from_slice(&mine[..inline]);
            let mut records = vec![0u8; n * RECORD];
            self.world.all_gather_into(&record[..], &mut records[..]);
            let lens: Vec<usize> = records
                .chunks_exact(RECORD)
                .map(|r| u32::from_le_bytes(r[..4].try_into().expect("4 bytes")) as usize)
                .collect();
            if lens.iter().all(|&l| l <= RECORD - 4) {
                let parts = records
                    .chunks_exact(RECORD)
                    .zip(&lens)
                    .map(|(r, &l)| r[4..4 + l].to_vec())
                    .collect();
                return decode_statuses(parts);
            }
            let total: usize = lens.iter().sum();
            ensure!(
                total <= i32::MAX as usize,
                Limit,
                "{total} bytes are too many for one exchange"
            );
            let counts: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
            let displs: Vec<i32> = counts
                .iter()
                .scan(0i32, |at, &l| {
                    let d = *at;
                    *at += l;
                    Some(d)
                })
                .collect();
            let mut all = vec![0u8; total];
            {
                let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
                self.world.all_gather_varcount_into(&mine[..], &mut part);
            }
            let parts = displs
                .iter()
                .zip(&lens)
                .map(|(&d, &l)| all[d as usize..d as usize + l].to_vec())
                .collect();
            decode_statuses(parts)
        }

        fn sum(&self, data: &mut [f32]) -> Result<()> {
            let n = self.ranks();
            if n == 1 {
                return Ok(());
            }
            let root = self.world.process_at_rank(0);
            let mut gathered = if self.rank() == 0 {
                vec![0.0f32; n * CHUNK.min(data.len())]
            } else {
                Vec::new()
            };
            for chunk in data.chunks_mut(CHUNK) {
                let len = chunk.len();
                if self.rank() == 0 {
                    let buf = &mut gathered[..n * len];
                    root.gather_into_root(&chunk[..], buf);
                    let (first, rest) = buf.split_at(len);
                    chunk.copy_from_slice(first);
                    sum_in_order(chunk, rest.chunks_exact(len));
                } else {
                    root.gather_into(&chunk[..]);
                }
                root.broadcast_into(chunk);
            }
            Ok(())
        }

        fn describe(&self) -> String {
            format!("rank {} of {} (MPI)", self.rank(), self.ranks())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::err;

    #[test]
    fn shards_cover_in_order_and_differ_by_at_most_one() {
        for total in 1..40 {
            for ranks in 1..=total {
                let ranges: Vec<_> = (0..ranks).map(|r| shard_range(total, ranks, r)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[ranks - 1].end, total);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (lo, hi) = (
                    ranges.iter().map(|r| r.len()).min().unwrap(),
                    ranges.iter().map(|r| r.len()).max().unwrap(),
                );
                assert!(lo >= 1 && hi - lo <= 1, "{total} over {ranks}: {ranges:?}");
            }
        }
        assert_eq!(
            describe_split("streams", 8, 3),
            "8 streams over 3 ranks: 2 x 3 + 1 x 2"
        );
    }

    #[test]
    fn more_ranks_than_items_is_an_error_naming_both() {
        let e = check_shards("streams", 2, 3).unwrap_err().to_string();
        assert!(e.contains("2 streams") && e.contains("3 ranks"), "{e}");
        check_shards("streams", 3, 3).unwrap();
    }

    #[test]
    fn a_failed_rank_reaches_every_rank_with_its_message() {
        let parts = vec![
            encode_status(Ok(vec![7, 8])),
            encode_status(Err(err!(Format, "bad shard").context("reading part 1"))),
            encode_status(Err(err!(Invalid, "later"))),
        ];
        let e = decode_statuses(parts).unwrap_err();
        assert!(is_agreed(&e));
        let Error::RankFailed { rank, message } = e else {
            panic!("expected a RankFailed, got {e:?}")
        };
        assert_eq!(rank, 1);
        assert_eq!(message, "reading part 1: bad shard");
        let ok = decode_statuses(vec![encode_status(Ok(vec![1])), encode_status(Ok(vec![]))]);
        assert_eq!(ok.unwrap(), vec![vec![1], vec![]]);
    }

    #[test]
    fn states_split_and_join_back() {
        // 2 blocks (layers), 5 streams, width 3.
        let (blocks, batch, width) = (2, 5, 3);
        let h: Vec<f32> = (0..blocks * batch * width).map(|v| v as f32).collect();
        let c: Vec<f32> = h.iter().map(|v| -v).collect();
        let global = CarriedState { h, c };
        let ranks = 2;
        let parts: Vec<CarriedState> = (0..ranks)
            .map(|r| {
                let b = shard_range(batch, ranks, r).len();
                slice_state(&global, (blocks, width), (r, ranks), b).unwrap()
            })
            .collect();
        // Rank 0 takes streams 0..2: block 0 rows 0, 1 and block 1 rows 0, 1.
        assert_eq!(parts[0].h[..6], [0., 1., 2., 3., 4., 5.]);
        assert_eq!(parts[0].h[6..9], [15., 16., 17.]);
        let hs: Vec<Vec<f32>> = parts.iter().map(|p| p.h.clone()).collect();
        let cs: Vec<Vec<f32>> = parts.iter().map(|p| p.c.clone()).collect();
        assert_eq!(concat_blocks(&hs, blocks), global.h);
        assert_eq!(concat_blocks(&cs, blocks), global.c);
        let e = slice_state(&global, (blocks, width), (0, 2), 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("5 streams") && e.contains("batch of 3"), "{e}");
    }

    #[test]
    fn step_shares_weigh_by_counted_rows() {
        struct Fixed(Vec<(usize, f32)>, usize);
        impl GradientReducer for Fixed {
            fn rank(&self) -> usize {
                self.1
            }
            fn ranks(&self) -> usize {
                self.0.len()
            }
            fn exchange(&self, _local: Result<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
                Ok(self
                    .0
                    .iter()
                    .map(|&(c, l)| {
                        let mut b = (c as u64).to_le_bytes().to_vec();
                        b.extend((l as f64).to_le_bytes());
                        b
                    })
                    .collect())
            }
            fn sum(&self, _data: &mut [f32]) -> Result<()> {
                Ok(())
            }
            fn describe(&self) -> String {
                String::new()
            }
        }
        // Rank 0: 3 rows of mean 1.0; rank 1: 1 row of loss 5.0 -> global mean 2.0.
        let r = Fixed(vec![(3, 1.0), (1, 5.0)], 1);
        let s = agree_step(&r, Ok((1, 5.0)), 1).unwrap();
        assert_eq!(s.loss, 2.0);
        assert_eq!(s.weight, 0.25);
        let none = Fixed(vec![(0, 0.0), (0, 0.0)], 0);
        assert_eq!(agree_step(&none, Ok((0, 0.0)), 1).unwrap().weight, 0.0);
    }

    #[test]
    fn fingerprints_see_one_bit() {
        let (a, b) = ("w".to_string(), vec![1.0f32, 2.0]);
        let mut c = b.clone();
        c[1] = f32::from_bits(c[1].to_bits() ^ 1);
        assert_ne!(
            fingerprint([(&a, b.as_slice())]),
            fingerprint([(&a, c.as_slice())])
        );
        assert_eq!(
            fingerprint([(&a, b.as_slice())]),
            fingerprint([(&a, b.clone().as_slice())])
        );
    }
}
