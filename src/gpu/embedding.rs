//! Host side of `shaders/embedding.wgsl`: embedding gather and its deterministic
//! scatter-add. CPU twin: `src/cpu/embedding.rs`; layout and semantics:
//! `src/ops/embedding.rs`.

use crate::error::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::device::LLVMPIPE_LOOP_BUDGET;
use super::launch::{ensure_distinct, grid, WG};
use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder};
use crate::ops::embedding::Embedding;

/// Mirrors `EmbeddingParams` in `shaders/embedding.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EmbeddingParams {
    n: u32,
    vocab: u32,
    dim: u32,
    padding: u32,
    has_padding: u32,
    _pad: [u32; 3],
}

super::uniform_mirror!(UNIFORM_MIRROR: EmbeddingParams in "embedding" as "EmbeddingParams" {
    n, vocab, dim, padding, has_padding,
});

/// A batch of `n` ids on the GPU with their inverse index, written together from host data
/// (which is where they are validated).
pub struct EmbeddingIds {
    spec: Embedding,
    ids: GpuTensor<u32>,
    offsets: GpuTensor<u32>,
    positions: GpuTensor<u32>,
}

impl EmbeddingIds {
    /// Room for `n` ids (all zero until [`write`](Self::write)).
    pub fn new(gpu: &Gpu, spec: &Embedding, n: usize) -> Result<Self> {
        spec.validate(
            spec.vocab.saturating_mul(spec.dim),
            n,
            n.saturating_mul(spec.dim),
        )?;
        let mut offsets = vec![0u32; spec.vocab + 1];
        offsets[1..].fill(n as u32);
        Ok(Self {
            spec: *spec,
            ids: GpuTensor::zeros(gpu, &[n])?,
            offsets: GpuTensor::from_slice(gpu, &[spec.vocab + 1], &offsets)?,
            positions: GpuTensor::from_slice(gpu, &[n], &(0..n as u32).collect::<Vec<_>>())?,
        })
    }

    /// Uploads validated `ids` and their inverse index.
    pub fn upload(gpu: &Gpu, spec: &Embedding, ids: &[u32]) -> Result<Self> {
        let this = Self::new(gpu, spec, ids.len())?;
        this.write(ids)?;
        Ok(this)
    }

    /// Validates `ids` (same count as before) and writes them and their inverse index; an
    /// id out of range is an error naming it, its position and the vocabulary size.
    pub fn write(&self, ids: &[u32]) -> Result<()> {
        ensure!(
            ids.len() == self.ids.len(),
            Shape,
            "embedding ids: room for {}, got {}",
            self.ids.len(),
            ids.len()
        );
        let index = self.spec.inverse_index(ids)?;
        // The backward sums an id's positions in one loop per table element, which llvmpipe
        // stops after about 65,535 iterations (Gpu::is_llvmpipe).
        if self.ids.gpu().is_llvmpipe() {
            // The padding row gets no gradient, so its positions are never walked.
            let (id, repeats) = (0..self.spec.vocab)
                .filter(|&v| self.spec.padding_idx != Some(v as u32))
                .map(|v| (v, (index.offsets[v + 1] - index.offsets[v]) as usize))
                .max_by_key(|&(v, n)| (n, std::cmp::Reverse(v)))
                .unwrap_or((0, 0));
            ensure!(
                repeats <= LLVMPIPE_LOOP_BUDGET,
                Limit,
                "embedding ids: id {id} occurs {repeats} times in a batch of {}, but on adapter \
                 {:?} (llvmpipe) the backward sums at most {LLVMPIPE_LOOP_BUDGET} positions of \
                 one id (its loops stop after about 65,535); use smaller batches or the CPU",
                ids.len(),
                self.ids.gpu().info().name
            );
        }
        self.ids.write(ids)?;
        self.offsets.write(&index.offsets)?;
        self.positions.write(&index.positions)
    }

    /// Number of ids (`N`), fixed when the buffers were made.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no ids.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids themselves.
    pub fn ids(&self) -> &GpuTensor<u32> {
        &self.ids
    }
}

fn uniform(gpu: &Gpu, spec: &Embedding, n: usize) -> wgpu::Buffer {
    gpu.uniform(&EmbeddingParams {
        n: n as u32,
        vocab: spec.vocab as u32,
        dim: spec.dim as u32,
        padding: spec.padding_idx.unwrap_or(0),
        has_padding: spec.padding_idx.is_some() as u32,
        _pad: [0; 3],
    })
}

/// `out[n, :] = table[ids[n], :]`: one dispatch.
pub struct EmbeddingForwardPlan {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    cost: Cost,
}

impl EmbeddingForwardPlan {
    /// Plans the lookup of `ids` in `table` (`[V, D]`) into `out` (`[N, D]`); `table` and `out`
    /// must be distinct buffers.
    pub fn new(
        gpu: &Gpu,
        spec: &Embedding,
        table: &GpuTensor,
        ids: &EmbeddingIds,
        out: &GpuTensor,
    ) -> Result<Self> {
        spec.validate(table.len(), ids.len(), out.len())?;
        ensure!(
            ids.spec == *spec,
            Invalid,
            "embedding ids were prepared for {:?}, the plan is for {spec:?}",
            ids.spec
        );
        ensure_distinct(
            "embedding",
            &[("table", table.buffer()), ("output", out.buffer())],
        )?;
        let kernel = gpu.kernel(&KernelKey::new("embedding", "forward"))?;
        let u = uniform(gpu, spec, ids.len());
        let bind_group = gpu.bind_at(
            &kernel,
            &[
                (0, &u),
                (1, ids.ids.buffer()),
                (2, table.buffer()),
                (3, out.buffer()),
            ],
        );
        Ok(Self {
            kernel,
            bind_group,
            groups: grid(gpu, out.len().div_ceil(WG), "embedding forward")?,
            // forward, per output element: its id and a table element read (8 bytes), one
            // element written (4).
            cost: Cost::per_item(out.len(), 0.0, 8.0, 4.0),
        })
    }

    /// Records the dispatch, which reads the ids as last [written](EmbeddingIds::write).
    pub fn record(&self, rec: &mut Recorder) {
        rec.dispatch(&self.kernel, &self.bind_group, self.groups, self.cost);
    }
}

/// Writes all of `dtable` from `dout` (see `src/ops/embedding.rs`): one dispatch.
pub struct EmbeddingBackwardPlan {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    cost: Cost,
}

impl EmbeddingBackwardPlan {
    /// Plans the gradient of `table` from `dout` (`[N, D]`) into `dtable` (`[V, D]`, overwritten
    /// whole); the two must be distinct buffers.
    pub fn new(
        gpu: &Gpu,
        spec: &Embedding,
        ids: &EmbeddingIds,
        dout: &GpuTensor,
        dtable: &GpuTensor,
    ) -> Result<Self> {
        spec.validate(dtable.len(), ids.len(), dout.len())?;
        ensure!(
            ids.spec == *spec,
            Invalid,
            "embedding ids were prepared for {:?}, the plan is for {spec:?}",
            ids.spec
        );
        ensure_distinct(
            "embedding backward",
            &[
                ("output gradient", dout.buffer()),
                ("table gradient", dtable.buffer()),
            ],
        )?;
        let kernel = gpu.kernel(&KernelKey::new("embedding", "backward"))?;
        let u = uniform(gpu, spec, ids.len());
        let bind_group = gpu.bind_at(
            &kernel,
            &[
                (0, &u),
                (4, ids.offsets.buffer()),
                (5, ids.positions.buffer()),
                (6, dout.buffer()),
                (7, dtable.buffer()),
            ],
        );
        Ok(Self {
            kernel,
            bind_group,
            groups: grid(gpu, dtable.len().div_ceil(WG), "embedding backward")?,
            // backward, per table-gradient element: the id's two offsets (8 bytes), then for
            // each of the n positions in all a position and a gradient element (8 bytes per
            // position and dimension), one element written (4).
            cost: Cost::per_item(dtable.len(), 0.0, 8.0, 4.0)
                + Cost::per_item(ids.len() * spec.dim, 1.0, 8.0, 0.0),
        })
    }

    /// Records the dispatch, which reads the ids as last [written](EmbeddingIds::write).
    pub fn record(&self, rec: &mut Recorder) {
        rec.dispatch(&self.kernel, &self.bind_group, self.groups, self.cost);
    }
}
