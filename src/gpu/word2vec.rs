//! Host side of `shaders/word2vec.wgsl`: word vectors normalised once on the GPU, then the
//! top-k cosine scan per query. CPU twin: `src/cpu/word2vec.rs`.

use crate::error::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder};
use crate::ops::CosineTopK;

const ROWS_PER_GROUP: usize = 64;
const CHUNK: usize = 1024;

/// Mirrors `Params` in `shaders/word2vec.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    k: u32,
    flags: u32,
    n_exclude: u32,
    groups_x: u32,
    _pad: [u32; 2],
}

super::uniform_mirror!(UNIFORM_MIRROR: Params in "word2vec" as "Params" {
    rows, dim, k, flags, n_exclude, groups_x,
});

/// `n` workgroups laid out within the adapter's per-dimension limit: (x, y).
fn grid(gpu: &Gpu, n: usize) -> Result<[u32; 3]> {
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let x = n.clamp(1, max);
    let y = n.div_ceil(x);
    ensure!(
        y <= max,
        Limit,
        "{n} workgroups exceed the adapter's {max} x {max} grid"
    );
    Ok([x as u32, y as u32, 1])
}

struct Pass {
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    cost: Cost,
}

/// Unit word vectors on the GPU and everything a top-k query needs, built once: buffers,
/// uniforms, bind groups. A query writes its vector and excluded rows with
/// `queue.write_buffer`, records one scores dispatch and the selection passes, submits once
/// and reads back k pairs.
pub struct CosineIndex {
    gpu: Gpu,
    spec: CosineTopK,
    unit: GpuTensor,
    query: GpuTensor,
    exclude: GpuTensor<u32>,
    exclude_params: wgpu::Buffer,
    scores_kernel: Kernel,
    select_kernel: Kernel,
    scores_pass: Pass,
    select_passes: Vec<Pass>,
    result_score: GpuTensor,
    result_row: GpuTensor<u32>,
    max_exclude: usize,
    /// Buffers the bind groups use, kept with them.
    _scratch: (GpuTensor, Vec<(GpuTensor, GpuTensor<u32>)>),
}

impl CosineIndex {
    /// Uploads `vectors` (`spec.rows x spec.dim`) and normalises them (one submit). Queries
    /// may exclude up to `max_exclude` rows.
    pub fn new(gpu: &Gpu, spec: &CosineTopK, vectors: &[f32], max_exclude: usize) -> Result<Self> {
        spec.validate(vectors)?;
        let (rows, dim, k) = (spec.rows, spec.dim, spec.k);
        let raw = GpuTensor::from_slice(gpu, &[rows, dim], vectors)?;
        // Outputs start as NaN (and rows as u32::MAX) so an element a kernel fails to write shows.
        let unit = GpuTensor::filled(gpu, &[rows, dim], f32::NAN)?;
        let row_groups = grid(gpu, rows.div_ceil(ROWS_PER_GROUP))?;
        let params = |rows: usize, flags: u32, n_exclude: usize, groups: [u32; 3]| Params {
            rows: rows as u32,
            dim: dim as u32,
            k: k as u32,
            flags,
            n_exclude: n_exclude as u32,
            groups_x: groups[0],
            _pad: [0; 2],
        };
        let normalize = gpu.kernel(&KernelKey::new("word2vec", "normalize"))?;
        let bg = gpu.bind(
            &normalize,
            &[
                &gpu.uniform(&params(rows, 0, 0, row_groups)),
                raw.buffer(),
                unit.buffer(),
            ],
        );
        let mut rec = Recorder::new(gpu);
        // normalize, per row: its dim elements read twice (8 bytes each), written once (4),
        // a multiply-add and a division per element.
        let cost = Cost::per_item(rows * dim, 3.0, 8.0, 4.0);
        rec.dispatch(&normalize, &bg, row_groups, cost);
        rec.submit()?;

        let query = GpuTensor::zeros(gpu, &[dim])?;
        let exclude = GpuTensor::<u32>::zeros(gpu, &[max_exclude.max(1)])?;
        let scores = GpuTensor::filled(gpu, &[rows], f32::NAN)?;
        let scores_kernel = gpu.kernel(&KernelKey::new("word2vec", "scores"))?;
        let exclude_params = gpu.uniform(&params(rows, 0, 0, row_groups));
        let scores_pass = Pass {
            bind_group: gpu.bind(
                &scores_kernel,
                &[
                    &exclude_params,
                    unit.buffer(),
                    query.buffer(),
                    exclude.buffer(),
                    scores.buffer(),
                ],
            ),
            groups: row_groups,
            // scores, per row: its dim elements and the query's read (8 bytes per element),
            // a multiply-add each; the score written. Excluded rows are a handful.
            cost: Cost::per_item(rows * dim, 2.0, 8.0, 0.0) + Cost::per_item(rows, 0.0, 0.0, 4.0),
        };

        // Selection passes: each keeps k of every CHUNK candidates, until one chunk is left.
        let select_kernel = gpu.kernel(&KernelKey::new("word2vec", "select_top"))?;
        let mut select_passes = Vec::new();
        let mut buffers: Vec<(GpuTensor, GpuTensor<u32>)> = Vec::new();
        let mut n = rows;
        loop {
            let chunks = n.div_ceil(CHUNK);
            let out = (
                GpuTensor::filled(gpu, &[chunks * k], f32::NAN)?,
                GpuTensor::<u32>::filled(gpu, &[chunks * k], u32::MAX)?,
            );
            let groups = grid(gpu, chunks)?;
            let first = buffers.is_empty();
            let (in_score, in_row) = match buffers.last() {
                Some((s, r)) => (s.buffer(), r.buffer()),
                None => (scores.buffer(), gpu.dummy_buffer()),
            };
            let uniform = gpu.uniform(&params(n, first as u32, 0, groups));
            let bind_group = gpu.bind(
                &select_kernel,
                &[&uniform, in_score, in_row, out.0.buffer(), out.1.buffer()],
            );
            // select_top, per candidate: its score and row read (8 bytes); k rounds of a
            // workgroup-memory tournament; k scores and rows written per chunk.
            let cost = Cost::per_item(n, 0.0, 8.0, 0.0) + Cost::per_item(chunks * k, 0.0, 0.0, 8.0);
            select_passes.push(Pass {
                bind_group,
                groups,
                cost,
            });
            buffers.push(out);
            if chunks == 1 {
                break;
            }
            n = chunks * k;
        }
        let (result_score, result_row) = buffers.pop().expect("at least one pass");
        Ok(Self {
            gpu: gpu.clone(),
            spec: *spec,
            unit,
            query,
            exclude,
            exclude_params,
            scores_kernel,
            select_kernel,
            scores_pass,
            select_passes,
            result_score,
            result_row,
            max_exclude,
            _scratch: (scores, buffers),
        })
    }

    /// The unit vectors (for checks).
    pub fn unit(&self) -> &GpuTensor {
        &self.unit
    }

    /// The scan's sizes and `k`.
    pub fn spec(&self) -> &CosineTopK {
        &self.spec
    }

    /// Records the scan for the query last written: one scores dispatch and the selection
    /// passes.
    pub fn record(&self, rec: &mut Recorder) {
        rec.dispatch(
            &self.scores_kernel,
            &self.scores_pass.bind_group,
            self.scores_pass.groups,
            self.scores_pass.cost,
        );
        for p in &self.select_passes {
            rec.dispatch(&self.select_kernel, &p.bind_group, p.groups, p.cost);
        }
    }

    /// The k rows closest to `query` (a unit vector) by cosine, `exclude` skipped: (row,
    /// cosine), best first, ties to the lower row.
    pub fn top_k(&self, query: &[f32], exclude: &[usize]) -> Result<Vec<(usize, f32)>> {
        ensure!(
            exclude.len() <= self.max_exclude,
            Shape,
            "{} excluded rows: this index takes at most {}",
            exclude.len(),
            self.max_exclude
        );
        self.spec.validate_query(query, exclude)?;
        self.query.write(query)?;
        let mut ex: Vec<u32> = exclude.iter().map(|&r| r as u32).collect();
        ex.resize(self.max_exclude.max(1), u32::MAX);
        self.exclude.write(&ex)?;
        let row_groups = self.scores_pass.groups;
        let params = Params {
            rows: self.spec.rows as u32,
            dim: self.spec.dim as u32,
            k: self.spec.k as u32,
            flags: 0,
            n_exclude: exclude.len() as u32,
            groups_x: row_groups[0],
            _pad: [0; 2],
        };
        self.gpu
            .queue()
            .write_buffer(&self.exclude_params, 0, bytemuck::bytes_of(&params));
        let mut rec = Recorder::new(&self.gpu);
        self.record(&mut rec);
        rec.submit()?;
        let scores = self.result_score.to_vec()?;
        let rows = self.result_row.to_vec()?;
        Ok(rows
            .into_iter()
            .zip(scores)
            .take(self.spec.k)
            .map(|(r, s)| (r as usize, s))
            .collect())
    }
}
