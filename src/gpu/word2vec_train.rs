//! Host side of `shaders/word2vec_train.wgsl`: the weight matrices and the batch buffers of
//! a word2vec run on the GPU, and the four dispatches of one batch (gradients, output
//! update, input update, loss sum). CPU twins: `src/cpu/word2vec.rs`; the batch layout:
//! `src/ops/word2vec_train.rs`.

use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::launch::grid;
use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder};
use crate::ops::word2vec_train::{BatchLayout, PackedBatch, TrainOutput, TrainSpec};

/// Invocations per workgroup (WGSL `WG`).
const WG: usize = 64;

/// Mirrors `TrainParams` in `shaders/word2vec_train.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TrainParams {
    items: u32,
    dim: u32,
    out_rows: u32,
    out_unique: u32,
    in_unique: u32,
    at_inputs: u32,
    at_targets: u32,
    at_out_rows: u32,
    at_out_seg: u32,
    at_out_entries: u32,
    at_in_rows: u32,
    at_in_seg: u32,
    at_in_entries: u32,
    alpha: f32,
    loss_slot: u32,
    row_cap: u32,
}

impl TrainParams {
    fn new(spec: &TrainSpec, l: &BatchLayout, alpha: f32, loss_slot: u32) -> Self {
        Self {
            items: l.items,
            dim: spec.dim as u32,
            out_rows: spec.out_rows as u32,
            out_unique: l.out_unique,
            in_unique: l.in_unique,
            at_inputs: l.at_inputs,
            at_targets: l.at_targets,
            at_out_rows: l.at_out_rows,
            at_out_seg: l.at_out_seg,
            at_out_entries: l.at_out_entries,
            at_in_rows: l.at_in_rows,
            at_in_seg: l.at_in_seg,
            at_in_entries: l.at_in_entries,
            alpha,
            loss_slot,
            row_cap: spec.row_cap,
        }
    }
}

struct Step {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
}

/// A word2vec run's state on the GPU: the input (`syn0`) and output (`syn1`) matrices, room
/// for the largest batch, and `loss_slots` per-batch loss sums the host reads back now and
/// then. [`write_batch`](Self::write_batch) uploads a batch (one buffer write and the
/// parameters); [`record`](Self::record) records its four dispatches.
pub struct TrainPlan {
    gpu: Gpu,
    spec: TrainSpec,
    params: wgpu::Buffer,
    batch: GpuTensor<u32>,
    syn0: GpuTensor,
    syn1: GpuTensor,
    hidden: GpuTensor,
    hidden_grad: GpuTensor,
    grads: GpuTensor,
    item_loss: GpuTensor,
    loss_slots: GpuTensor,
    gradients: Step,
    apply_output: Step,
    apply_input: Step,
    sum_loss: Step,
    layout: BatchLayout,
}

impl TrainPlan {
    /// Checks that every buffer of a run with `spec` fits the adapter's binding limit,
    /// before anything is allocated; the error names the buffer and the sizes.
    pub fn check_limits(gpu: &Gpu, spec: &TrainSpec) -> Result<()> {
        spec.validate()?;
        let max = gpu.max_binding_bytes();
        let buffers = [
            ("input matrix (vocabulary x size)", spec.in_rows * spec.dim),
            ("output matrix", spec.out_rows * spec.dim),
            (
                "hidden vectors (batch items x size)",
                spec.max_items * spec.dim,
            ),
            ("output gradients", spec.grad_len()?),
            ("packed batch", spec.batch_words()),
        ];
        for (what, elements) in buffers {
            let bytes = elements as u64 * 4;
            ensure!(
                bytes <= max,
                "word2vec on the GPU: the {what} needs {elements} values ({bytes} bytes), but \
                 adapter {:?} binds at most {max} bytes per storage buffer (vocabulary {}, \
                 size {}, batch of {} items)",
                gpu.info().name,
                spec.in_rows,
                spec.dim,
                spec.max_items
            );
        }
        Ok(())
    }

    /// Uploads the starting matrices (`syn0`: `in_rows x dim`, `syn1`: `out_rows x dim`).
    pub fn new(
        gpu: &Gpu,
        spec: &TrainSpec,
        syn0: &[f32],
        syn1: &[f32],
        loss_slots: usize,
    ) -> Result<Self> {
        Self::check_limits(gpu, spec)?;
        ensure!(loss_slots > 0, "0 loss slots: expected at least 1");
        let d = spec.dim;
        let syn0 = GpuTensor::from_slice(gpu, &[spec.in_rows, d], syn0)?;
        let syn1 = GpuTensor::from_slice(gpu, &[spec.out_rows, d], syn1)?;
        // Written-only buffers start as NaN, so an element a kernel fails to write shows.
        let hidden = GpuTensor::filled(gpu, &[spec.max_items, d], f32::NAN)?;
        let hidden_grad = GpuTensor::filled(gpu, &[spec.max_items, d], f32::NAN)?;
        let grads = GpuTensor::filled(gpu, &[spec.grad_len()?], f32::NAN)?;
        let item_loss = GpuTensor::filled(gpu, &[spec.max_items], f32::NAN)?;
        let loss_slots = GpuTensor::filled(gpu, &[loss_slots], f32::NAN)?;
        let batch = GpuTensor::<u32>::zeros(gpu, &[spec.batch_words()])?;
        let layout = BatchLayout::default();
        let params = gpu.uniform(&TrainParams::new(spec, &layout, 0.0, 0));
        let step = |entry: &'static str, bindings: &[(u32, &wgpu::Buffer)]| -> Result<Step> {
            let kernel = gpu.kernel(&KernelKey::new("word2vec_train", entry))?;
            let bind_group = gpu.bind_at(&kernel, bindings);
            Ok(Step { kernel, bind_group })
        };
        let all = [
            (0, &params),
            (1, batch.buffer()),
            (2, syn0.buffer()),
            (3, syn1.buffer()),
            (4, hidden.buffer()),
            (5, hidden_grad.buffer()),
            (6, grads.buffer()),
            (7, item_loss.buffer()),
            (8, loss_slots.buffer()),
        ];
        let pick = |bindings: &[u32]| -> Vec<(u32, &wgpu::Buffer)> {
            bindings.iter().map(|&b| all[b as usize]).collect()
        };
        let (gradients, apply_output) = match spec.output {
            TrainOutput::Sampled => (
                step("sampled_gradients", &pick(&[0, 1, 2, 3, 4, 5, 6, 7]))?,
                step("apply_output", &pick(&[0, 1, 3, 4, 6]))?,
            ),
            TrainOutput::Softmax => (
                step("softmax_gradients", &pick(&[0, 1, 2, 3, 4, 5, 6, 7]))?,
                step("apply_output_dense", &pick(&[0, 3, 4, 6]))?,
            ),
        };
        let apply_input = step("apply_input", &pick(&[0, 1, 2, 5]))?;
        let sum_loss = step("sum_loss", &pick(&[0, 7, 8]))?;
        Ok(Self {
            gpu: gpu.clone(),
            spec: *spec,
            params,
            batch,
            syn0,
            syn1,
            hidden,
            hidden_grad,
            grads,
            item_loss,
            loss_slots,
            gradients,
            apply_output,
            apply_input,
            sum_loss,
            layout,
        })
    }

    pub fn spec(&self) -> &TrainSpec {
        &self.spec
    }

    /// Uploads a packed batch (built for this plan's spec), its learning rate, and the loss
    /// slot its sum goes to. Ordered after the work already submitted and before the next
    /// submit, so one set of buffers serves every batch.
    pub fn write_batch(&mut self, batch: &PackedBatch, alpha: f32, loss_slot: usize) -> Result<()> {
        ensure!(
            loss_slot < self.loss_slots.len(),
            "loss slot {loss_slot}: the plan has {}",
            self.loss_slots.len()
        );
        ensure!(
            batch.layout.items as usize <= self.spec.max_items
                && batch.words.len() <= self.batch.len(),
            "a batch of {} items in {} words: the plan holds {} items in {} words",
            batch.layout.items,
            batch.words.len(),
            self.spec.max_items,
            self.batch.len()
        );
        ensure!(
            alpha.is_finite(),
            "learning rate {alpha}: expected a finite number"
        );
        self.batch.write_range(0, &batch.words)?;
        let params = TrainParams::new(&self.spec, &batch.layout, alpha, loss_slot as u32);
        self.gpu
            .queue()
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        self.layout = batch.layout;
        Ok(())
    }

    /// Records the gradient kernel of the batch last written.
    pub fn record_gradients(&self, rec: &mut Recorder) -> Result<()> {
        let items = self.layout.items as usize;
        let groups = grid(&self.gpu, items.div_ceil(WG), "word2vec gradients")?;
        rec.dispatch(
            &self.gradients.kernel,
            &self.gradients.bind_group,
            groups,
            self.costs()[0],
        );
        Ok(())
    }

    /// Records the output-matrix update (after [`record_gradients`](Self::record_gradients)).
    pub fn record_apply_output(&self, rec: &mut Recorder) -> Result<()> {
        let elements = match self.spec.output {
            TrainOutput::Sampled => self.layout.out_unique as usize * self.spec.dim,
            TrainOutput::Softmax => self.spec.out_rows * self.spec.dim,
        };
        let groups = grid(&self.gpu, elements.div_ceil(WG), "word2vec output update")?;
        rec.dispatch(
            &self.apply_output.kernel,
            &self.apply_output.bind_group,
            groups,
            self.costs()[1],
        );
        Ok(())
    }

    /// Records the input-matrix update (after [`record_gradients`](Self::record_gradients)).
    pub fn record_apply_input(&self, rec: &mut Recorder) -> Result<()> {
        let elements = self.layout.in_unique as usize * self.spec.dim;
        let groups = grid(&self.gpu, elements.div_ceil(WG), "word2vec input update")?;
        rec.dispatch(
            &self.apply_input.kernel,
            &self.apply_input.bind_group,
            groups,
            self.costs()[2],
        );
        Ok(())
    }

    /// Records the batch's loss sum into its slot.
    pub fn record_sum_loss(&self, rec: &mut Recorder) {
        rec.dispatch(
            &self.sum_loss.kernel,
            &self.sum_loss.bind_group,
            [1, 1, 1],
            self.costs()[3],
        );
    }

    /// Records the whole batch: gradients, both updates, the loss sum. Nothing for an empty
    /// batch.
    pub fn record(&self, rec: &mut Recorder) -> Result<()> {
        if self.layout.items == 0 {
            return Ok(());
        }
        self.record_gradients(rec)?;
        self.record_apply_output(rec)?;
        self.record_apply_input(rec)?;
        self.record_sum_loss(rec);
        Ok(())
    }

    /// The input vectors (the word vectors).
    pub fn syn0(&self) -> &GpuTensor {
        &self.syn0
    }

    pub fn syn1(&self) -> &GpuTensor {
        &self.syn1
    }

    pub fn hidden(&self) -> &GpuTensor {
        &self.hidden
    }

    pub fn hidden_grad(&self) -> &GpuTensor {
        &self.hidden_grad
    }

    pub fn grads(&self) -> &GpuTensor {
        &self.grads
    }

    pub fn item_loss(&self) -> &GpuTensor {
        &self.item_loss
    }

    pub fn loss_slots(&self) -> &GpuTensor {
        &self.loss_slots
    }
}

impl TrainPlan {
    /// The costs of the four dispatches of the batch last written (gradients, output update,
    /// input update, loss sum), from its layout. d is the vector size; 4 bytes an element.
    fn costs(&self) -> [Cost; 4] {
        let l = &self.layout;
        let d = self.spec.dim as f64;
        let items = l.items as usize;
        let inputs = (l.at_targets - l.at_inputs) as usize;
        let targets = (l.at_out_rows - l.at_targets) as usize / 2;
        let hidden = |n: usize| {
            // write_hidden and clear_hidden_grad, per item: the 16-byte item header read,
            // hidden zeroed, scaled (read and written) and hidden_grad zeroed (4d bytes
            // each), the loss written; per input: its row id and a syn0 row read and
            // hidden read and written (4 + 8d bytes in, 4d out, d additions).
            Cost::per_item(n, d, 16.0 + 4.0 * d, 12.0 * d + 4.0)
                + Cost::per_item(inputs, d, 4.0 + 8.0 * d, 4.0 * d)
        };
        let (gradients, apply_output) = match self.spec.output {
            // sampled_gradients, per target: its row and label (8 bytes), the score
            // (hidden and a syn1 row, 8d bytes, 2d operations), the gradient written (4),
            // hidden_grad += g * row (syn1 row and hidden_grad read, 8d bytes, hidden_grad
            // written, 4d, 2d operations).
            // apply_output, per element of a distinct row: its segment bounds and row id
            // (12 bytes) and syn1 read and written (4 + 4); per (target, dimension): the
            // entry (8 bytes), a gradient and a hidden element (8), a multiply-add.
            TrainOutput::Sampled => (
                hidden(items)
                    + Cost::per_item(targets, 4.0 * d + 10.0, 8.0 + 16.0 * d, 4.0 + 4.0 * d),
                Cost::per_item(l.out_unique as usize * self.spec.dim, 1.0, 16.0, 4.0)
                    + Cost::per_item(targets * self.spec.dim, 2.0, 16.0, 0.0),
            ),
            // softmax_gradients, per (item, output row): the score (8d bytes, 2d operations)
            // written and read back twice (12 bytes), the gradient and hidden_grad update as
            // above (8d bytes in, 4d + 4 out).
            // apply_output_dense, per element of syn1: per item a gradient and a hidden
            // element (8 bytes, a multiply-add); syn1 read and written.
            TrainOutput::Softmax => {
                let pairs = items * self.spec.out_rows;
                (
                    hidden(items)
                        + Cost::per_item(pairs, 4.0 * d + 12.0, 12.0 + 16.0 * d, 8.0 + 4.0 * d),
                    Cost::per_item(
                        self.spec.out_rows * self.spec.dim,
                        2.0 * items as f64,
                        4.0 + 8.0 * items as f64,
                        4.0,
                    ),
                )
            }
        };
        // apply_input, per element of a distinct row: bounds and row id (12 bytes), syn0 read
        // and written; per (input, dimension): the entry and a hidden_grad element (8 bytes).
        let apply_input = Cost::per_item(l.in_unique as usize * self.spec.dim, 1.0, 16.0, 4.0)
            + Cost::per_item(inputs * self.spec.dim, 1.0, 8.0, 0.0);
        // sum_loss: every item's loss read, one slot written.
        let sum_loss = Cost::new(items as f64, 4.0 * items as f64, 4.0);
        [gradients, apply_output, apply_input, sum_loss]
    }
}
