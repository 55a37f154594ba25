//! Host side of `shaders/word2vec_train.wgsl`: the weight matrices and the batch buffers of
//! a word2vec run on the GPU, and the two dispatches of each batch (gradients, then the
//! updates and the loss sum). A plan holds several batch slots, so that many batches are
//! recorded into one submit, each reading its own packed words and parameters. CPU twins:
//! `src/cpu/word2vec.rs`; the batch layout: `src/ops/word2vec_train.rs`.

use crate::error::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::device::LLVMPIPE_LOOP_BUDGET;
use super::launch::grid;
use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder, Recording};
use crate::ops::word2vec_train::{BatchLayout, PackedBatch, TrainOutput, TrainSpec};

/// Invocations per workgroup of the row-parallel gradient kernels and the apply kernels
/// (WGSL `WG`).
const WG: usize = 256;
/// Items per workgroup of the row-parallel gradient kernels (WGSL `ITEMS`), each spread over
/// 32 invocations.
const ITEMS: usize = 8;
/// Invocations (items) per workgroup of the per-item gradient kernels (WGSL `WG_ITEM`).
const WG_ITEM: usize = 64;
/// Most bytes the batch slots of one plan take together; beyond it a plan gets fewer slots.
const SLOT_BUDGET_BYTES: u64 = 64 << 20;

/// Which gradient kernel a plan runs. Both compute the same values (in a different order of
/// summation, so their bits differ slightly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradientKernel {
    /// A row's dimensions spread over 32 invocations: coalesced loads, dot products reduced
    /// in workgroup memory. For GPUs.
    Rows,
    /// One invocation per item walking whole rows, no barriers. For adapters that run
    /// shaders on the CPU (lavapipe, llvmpipe, SwiftShader), where it is the faster one.
    PerItem,
}

impl GradientKernel {
    /// The kernel for `gpu`'s kind of adapter.
    pub fn for_adapter(gpu: &Gpu) -> Self {
        if gpu.info().device_type == wgpu::DeviceType::Cpu {
            GradientKernel::PerItem
        } else {
            GradientKernel::Rows
        }
    }

    /// The kernel for `gpu`'s kind of adapter and a run of `spec`: as [`Self::for_adapter`],
    /// but on llvmpipe [`GradientKernel::Rows`] where the full softmax would make
    /// [`GradientKernel::PerItem`]'s invocations loop past [`LLVMPIPE_LOOP_BUDGET`] (each
    /// walks every output row twice, 2 x dim iterations a row) and the row kernel's would not.
    pub fn for_spec(gpu: &Gpu, spec: &TrainSpec) -> Self {
        let kernel = Self::for_adapter(gpu);
        let fits = |k: Self| k.loops_fit(gpu, spec, 0, 0);
        if kernel == GradientKernel::PerItem && !fits(kernel) && fits(GradientKernel::Rows) {
            GradientKernel::Rows
        } else {
            kernel
        }
    }

    /// An upper estimate of the loop iterations one invocation of this kernel runs for an
    /// item with `inputs` input rows and `targets` targets (with the full softmax, every
    /// output row is a target and `targets` is not used). Per item: the per-item kernel walks
    /// each input row and each target row's dim elements, a target twice (its score, then
    /// its share of the hidden gradient); the row kernel spreads dim over 32 lanes and takes
    /// targets 8 at a time, about 72 iterations a chunk beside its two walks over the row.
    pub fn loop_iterations(self, spec: &TrainSpec, inputs: usize, targets: usize) -> usize {
        let d = spec.dim;
        let softmax = spec.output == TrainOutput::Softmax;
        let targets = if softmax { spec.out_rows } else { targets };
        match self {
            GradientKernel::PerItem => d * (inputs + 3) + targets * (2 * d + 3),
            GradientKernel::Rows => {
                let lanes = d.div_ceil(32);
                let chunks = targets.div_ceil(8).max(1);
                // The full softmax then turns every score into a gradient (a row a lane, 8
                // lanes) and sums the hidden gradient over every row (lanes x V).
                let softmax_tail = if softmax {
                    targets.div_ceil(8) + lanes * targets
                } else {
                    0
                };
                lanes * (inputs + 1) + chunks * (16 * lanes + 72) + softmax_tail
            }
        }
    }

    /// Whether an item with `inputs` input rows and `targets` targets runs right on `gpu`:
    /// on llvmpipe ([`Gpu::is_llvmpipe`]) only within [`LLVMPIPE_LOOP_BUDGET`].
    pub fn loops_fit(self, gpu: &Gpu, spec: &TrainSpec, inputs: usize, targets: usize) -> bool {
        !gpu.is_llvmpipe() || self.loop_iterations(spec, inputs, targets) <= LLVMPIPE_LOOP_BUDGET
    }

    fn entry_point(self, output: TrainOutput) -> &'static str {
        match (self, output) {
            (GradientKernel::Rows, TrainOutput::Sampled) => "sampled_gradients",
            (GradientKernel::Rows, TrainOutput::Softmax) => "softmax_gradients",
            (GradientKernel::PerItem, TrainOutput::Sampled) => "sampled_gradients_per_item",
            (GradientKernel::PerItem, TrainOutput::Softmax) => "softmax_gradients_per_item",
        }
    }

    fn workgroups(self, items: usize) -> usize {
        match self {
            GradientKernel::Rows => items.div_ceil(ITEMS),
            GradientKernel::PerItem => items.div_ceil(WG_ITEM),
        }
    }
}

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
    out_groups: u32,
    in_groups: u32,
    _pad: [u32; 2],
}

super::uniform_mirror!(UNIFORM_MIRROR: TrainParams in "word2vec_train" as "TrainParams" {
    items, dim, out_rows, out_unique, in_unique, at_inputs, at_targets, at_out_rows, at_out_seg, at_out_entries, at_in_rows, at_in_seg, at_in_entries, alpha, loss_slot, row_cap, out_groups, in_groups,
});

impl TrainParams {
    fn new(spec: &TrainSpec, l: &BatchLayout, alpha: f32, loss_slot: u32) -> Self {
        let [out_groups, in_groups] = apply_sections(spec, l);
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
            out_groups: out_groups as u32,
            in_groups: in_groups as u32,
            _pad: [0; 2],
        }
    }
}

/// Workgroups of the apply kernel's output-row and input-row sections (the loss sum takes
/// one more).
fn apply_sections(spec: &TrainSpec, l: &BatchLayout) -> [usize; 2] {
    let out_rows = match spec.output {
        TrainOutput::Sampled => l.out_unique as usize,
        TrainOutput::Softmax => spec.out_rows,
    };
    [
        (out_rows * spec.dim).div_ceil(WG),
        (l.in_unique as usize * spec.dim).div_ceil(WG),
    ]
}

/// The work of one dispatch, for the cost table of `recur bench word2vec`: FLOPs, and bytes
/// of global memory read and written, each address counted once per workgroup (what a
/// workgroup reads twice is assumed to hit its cache).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DispatchCost {
    /// The kernel's entry point in `shaders/word2vec_train.wgsl`.
    pub kernel: &'static str,
    /// Workgroups dispatched.
    pub workgroups: u64,
    /// Invocations per workgroup.
    pub invocations: u32,
    /// Floating-point operations.
    pub flops: u64,
    /// Bytes of global memory read.
    pub bytes_read: u64,
    /// Bytes of global memory written.
    pub bytes_written: u64,
}

/// The two dispatches of a batch laid out as `layout`, with the gradient kernel `kernel`:
/// the formulas beside the kernels in `shaders/word2vec_train.wgsl`.
pub fn batch_costs(
    spec: &TrainSpec,
    layout: &BatchLayout,
    kernel: GradientKernel,
) -> [DispatchCost; 2] {
    let d = spec.dim as u64;
    let v = spec.out_rows as u64;
    let (ni, nin, nt) = (
        layout.items as u64,
        layout.input_slots() as u64,
        layout.target_slots() as u64,
    );
    let (uo, ui) = (layout.out_unique as u64, layout.in_unique as u64);
    let groups = kernel.workgroups(ni as usize) as u64;
    // Item headers, input ids and input rows.
    let inputs_read = 16 * ni + 4 * nin + 4 * d * nin;
    let hidden_flops = d * (nin + ni);
    let gradients = match spec.output {
        TrainOutput::Sampled => DispatchCost {
            flops: hidden_flops + 4 * d * nt,
            bytes_read: inputs_read + 8 * nt + 4 * d * nt,
            bytes_written: 4 * (2 * d * ni + nt + ni),
            ..Default::default()
        },
        TrainOutput::Softmax => DispatchCost {
            flops: hidden_flops + 4 * d * ni * v,
            bytes_read: inputs_read + 8 * ni + 4 * d * v * groups + 4 * ni * v,
            bytes_written: 4 * (2 * d * ni + ni * v + ni),
            ..Default::default()
        },
    };
    let gradients = DispatchCost {
        kernel: kernel.entry_point(spec.output),
        workgroups: groups,
        invocations: match kernel {
            GradientKernel::Rows => WG as u32,
            GradientKernel::PerItem => WG_ITEM as u32,
        },
        ..gradients
    };
    let [out_groups, in_groups] = apply_sections(spec, layout);
    let (out_groups, in_groups) = (out_groups as u64, in_groups as u64);
    // The input section (index entries, hidden-layer updates, bounds, row ids, the rows)
    // and the loss sum are the same for both outputs.
    let input_read = 4 * nin + 4 * d * nin + 12 * ui + 4 * d * ui + 4 * ni;
    let input_flops = d * nin + 2 * d * ui + ni;
    let apply = match spec.output {
        TrainOutput::Sampled => DispatchCost {
            kernel: "apply_sparse",
            flops: 2 * d * nt + 2 * d * uo + input_flops,
            bytes_read: 12 * nt + 4 * d * nt + 12 * uo + 4 * d * uo + input_read,
            bytes_written: 4 * d * (uo + ui) + 4,
            ..Default::default()
        },
        TrainOutput::Softmax => DispatchCost {
            kernel: "apply_dense",
            flops: 2 * d * v * ni + 2 * d * v + input_flops,
            bytes_read: 4 * d * ni * out_groups + 4 * ni * v + 4 * d * v + input_read,
            bytes_written: 4 * d * (v + ui) + 4,
            ..Default::default()
        },
    };
    let apply = DispatchCost {
        workgroups: out_groups + in_groups + 1,
        invocations: WG as u32,
        ..apply
    };
    [gradients, apply]
}

/// How a plan is built beyond its sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// The gradient kernel the plan runs.
    pub gradient_kernel: GradientKernel,
    /// Batches that can be written and recorded before a submit (each has its own slot of
    /// packed words and parameters). Fewer if they would take more than 64 MiB.
    pub batch_slots: usize,
    /// Per-batch loss sums the GPU holds until the host reads them.
    pub loss_slots: usize,
}

impl PlanOptions {
    /// The adapter's gradient kernel, one batch slot and one loss slot.
    pub fn for_adapter(gpu: &Gpu) -> Self {
        Self {
            gradient_kernel: GradientKernel::for_adapter(gpu),
            batch_slots: 1,
            loss_slots: 1,
        }
    }
}

/// One batch slot: its bind groups (the slot's words and parameters bound at its offset),
/// the layout of the batch last written there, and the recording that last used it.
struct Slot {
    gradients: wgpu::BindGroup,
    apply: wgpu::BindGroup,
    layout: BatchLayout,
    recorded: Option<Recording>,
}

/// A word2vec run's state on the GPU: the input (`syn0`) and output (`syn1`) matrices, the
/// batch slots, the scratch buffers of the batch being computed, and `loss_slots` per-batch
/// loss sums the host reads back now and then. [`write_batch`](Self::write_batch) uploads a
/// batch into a slot (one buffer write and its parameters); [`record`](Self::record) records
/// its two dispatches. Batches recorded one after another into one recorder run in that
/// order, each seeing the updates of the ones before.
pub struct TrainPlan {
    gpu: Gpu,
    spec: TrainSpec,
    options: PlanOptions,
    params: wgpu::Buffer,
    param_stride: u64,
    batch: GpuTensor<u32>,
    slot_words: usize,
    syn0: GpuTensor,
    syn1: GpuTensor,
    hidden: GpuTensor,
    hidden_grad: GpuTensor,
    grads: GpuTensor,
    item_loss: GpuTensor,
    loss_slots: GpuTensor,
    gradients: Kernel,
    apply: Kernel,
    slots: Vec<Slot>,
}

/// `n` rounded up to a multiple of `align`.
fn round_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

impl TrainPlan {
    /// Bytes of the parameters written with each batch.
    pub const PARAM_BYTES: u64 = std::mem::size_of::<TrainParams>() as u64;

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
                Limit,
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

    /// On llvmpipe, an error where `kernel`'s invocations would loop past
    /// [`LLVMPIPE_LOOP_BUDGET`] for an item with `inputs` input rows and `targets` targets
    /// (`item`: its index in the batch; `None`: the full softmax, known from `spec` alone).
    fn check_loops(
        gpu: &Gpu,
        spec: &TrainSpec,
        kernel: GradientKernel,
        item: Option<usize>,
        inputs: usize,
        targets: usize,
    ) -> Result<()> {
        if kernel.loops_fit(gpu, spec, inputs, targets)
            || (item.is_none() && spec.output != TrainOutput::Softmax)
        {
            return Ok(());
        }
        let what = match item {
            None => format!("the full softmax over {} output rows", spec.out_rows),
            Some(b) => format!("item {b} ({inputs} input rows, {targets} targets)"),
        };
        bail!(
            Limit,
            "word2vec on the GPU: {what} at vector size {} makes the {kernel:?} gradient \
             kernel loop about {} times an invocation, but adapter {:?} (llvmpipe) stops \
             loops after about 65,535 (recur keeps to {LLVMPIPE_LOOP_BUDGET}); use a smaller \
             vocabulary or size, negative sampling or hierarchical softmax, or the CPU",
            spec.dim,
            kernel.loop_iterations(spec, inputs, targets),
            gpu.info().name
        )
    }

    /// The bytes between batch slots in the packed-words buffer (a slot's binding starts at
    /// a multiple of the adapter's storage offset alignment).
    fn slot_bytes(gpu: &Gpu, spec: &TrainSpec) -> u64 {
        let align = gpu.limits().min_storage_buffer_offset_alignment.max(4) as u64;
        round_up(spec.batch_words() as u64 * 4, align)
    }

    /// How many of `wanted` batch slots a plan for `spec` gets: at least one, and no more
    /// than fit in 64 MiB and in one binding.
    pub fn batch_slots_for(gpu: &Gpu, spec: &TrainSpec, wanted: usize) -> usize {
        let budget = SLOT_BUDGET_BYTES.min(gpu.max_binding_bytes());
        let fit = (budget / Self::slot_bytes(gpu, spec)).max(1);
        wanted.clamp(1, fit.min(usize::MAX as u64) as usize)
    }

    /// Uploads the starting matrices (`syn0`: `in_rows x dim`, `syn1`: `out_rows x dim`).
    pub fn new(
        gpu: &Gpu,
        spec: &TrainSpec,
        syn0: &[f32],
        syn1: &[f32],
        options: &PlanOptions,
    ) -> Result<Self> {
        Self::check_limits(gpu, spec)?;
        Self::check_loops(gpu, spec, options.gradient_kernel, None, 0, 0)?;
        ensure!(
            options.loss_slots > 0,
            Invalid,
            "0 loss slots: expected at least 1"
        );
        let slots = Self::batch_slots_for(gpu, spec, options.batch_slots);
        let options = PlanOptions {
            batch_slots: slots,
            ..*options
        };
        let d = spec.dim;
        let syn0 = GpuTensor::from_slice(gpu, &[spec.in_rows, d], syn0)?;
        let syn1 = GpuTensor::from_slice(gpu, &[spec.out_rows, d], syn1)?;
        // Written-only buffers start as NaN, so an element a kernel fails to write shows.
        let hidden = GpuTensor::filled(gpu, &[spec.max_items, d], f32::NAN)?;
        let hidden_grad = GpuTensor::filled(gpu, &[spec.max_items, d], f32::NAN)?;
        let grads = GpuTensor::filled(gpu, &[spec.grad_len()?], f32::NAN)?;
        let item_loss = GpuTensor::filled(gpu, &[spec.max_items], f32::NAN)?;
        let loss_slots = GpuTensor::filled(gpu, &[options.loss_slots], f32::NAN)?;
        let slot_bytes = Self::slot_bytes(gpu, spec);
        let slot_words = (slot_bytes / 4) as usize;
        let batch = GpuTensor::<u32>::zeros(gpu, &[slots * slot_words])?;
        let param_align = gpu.limits().min_uniform_buffer_offset_alignment.max(16) as u64;
        let param_size = Self::PARAM_BYTES;
        let param_stride = round_up(param_size, param_align);
        let params = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("recur.word2vec_train.params"),
            size: param_stride * slots as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let gradients = gpu.kernel(&KernelKey::new(
            "word2vec_train",
            options.gradient_kernel.entry_point(spec.output),
        ))?;
        let apply = gpu.kernel(&KernelKey::new(
            "word2vec_train",
            match spec.output {
                TrainOutput::Sampled => "apply_sparse",
                TrainOutput::Softmax => "apply_dense",
            },
        ))?;
        fn whole(t: &GpuTensor) -> wgpu::BindingResource<'_> {
            t.buffer().as_entire_binding()
        }
        let slots = (0..slots as u64)
            .map(|s| {
                let params_at = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params,
                    offset: s * param_stride,
                    size: wgpu::BufferSize::new(param_size),
                });
                let batch_at = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: batch.buffer(),
                    offset: s * slot_bytes,
                    size: wgpu::BufferSize::new(slot_bytes),
                });
                // Binding numbers as in the shader.
                let gradients_bg = gpu.bind_resources(
                    &gradients,
                    &[
                        (0, params_at.clone()),
                        (1, batch_at.clone()),
                        (2, whole(&syn0)),
                        (3, whole(&syn1)),
                        (6, whole(&hidden)),
                        (7, whole(&hidden_grad)),
                        (8, whole(&grads)),
                        (9, whole(&item_loss)),
                    ],
                );
                let apply_bg = gpu.bind_resources(
                    &apply,
                    &[
                        (0, params_at),
                        (1, batch_at),
                        (4, whole(&syn0)),
                        (5, whole(&syn1)),
                        (10, whole(&hidden)),
                        (11, whole(&hidden_grad)),
                        (12, whole(&grads)),
                        (13, whole(&item_loss)),
                        (14, whole(&loss_slots)),
                    ],
                );
                Slot {
                    gradients: gradients_bg,
                    apply: apply_bg,
                    layout: BatchLayout::default(),
                    recorded: None,
                }
            })
            .collect();
        Ok(Self {
            gpu: gpu.clone(),
            spec: *spec,
            options,
            params,
            param_stride,
            batch,
            slot_words,
            syn0,
            syn1,
            hidden,
            hidden_grad,
            grads,
            item_loss,
            loss_slots,
            gradients,
            apply,
            slots,
        })
    }

    /// The sizes the plan was built for.
    pub fn spec(&self) -> &TrainSpec {
        &self.spec
    }

    /// The options the plan was built with, `batch_slots` as granted.
    pub fn options(&self) -> &PlanOptions {
        &self.options
    }

    /// Uploads a packed batch (built for this plan's spec) into batch slot `slot`, with its
    /// learning rate and the loss slot its sum goes to. Ordered after the work already
    /// submitted and before the next submit. A slot recorded into work not yet submitted
    /// cannot be written again (that work would read the new batch).
    pub fn write_batch(
        &mut self,
        slot: usize,
        batch: &PackedBatch,
        alpha: f32,
        loss_slot: usize,
    ) -> Result<()> {
        ensure!(
            slot < self.slots.len(),
            Invalid,
            "batch slot {slot}: the plan has {}",
            self.slots.len()
        );
        ensure!(
            !self.slots[slot]
                .recorded
                .as_ref()
                .is_some_and(|r| r.is_open()),
            Invalid,
            "batch slot {slot} is recorded in work not yet submitted"
        );
        ensure!(
            loss_slot < self.loss_slots.len(),
            Invalid,
            "loss slot {loss_slot}: the plan has {}",
            self.loss_slots.len()
        );
        ensure!(
            batch.layout.items as usize <= self.spec.max_items
                && batch.words.len() <= self.slot_words,
            Shape,
            "a batch of {} items in {} words: the plan holds {} items in {} words",
            batch.layout.items,
            batch.words.len(),
            self.spec.max_items,
            self.slot_words
        );
        ensure!(
            alpha.is_finite(),
            Invalid,
            "learning rate {alpha}: expected a finite number"
        );
        if self.gpu.is_llvmpipe() {
            for b in 0..batch.items() {
                let (inputs, targets) = (batch.inputs(b).len(), batch.targets(b).count());
                let kernel = self.options.gradient_kernel;
                Self::check_loops(&self.gpu, &self.spec, kernel, Some(b), inputs, targets)?;
            }
        }
        self.batch
            .write_range(slot * self.slot_words, &batch.words)?;
        let params = TrainParams::new(&self.spec, &batch.layout, alpha, loss_slot as u32);
        self.gpu.queue().write_buffer(
            &self.params,
            slot as u64 * self.param_stride,
            bytemuck::bytes_of(&params),
        );
        self.slots[slot].layout = batch.layout;
        Ok(())
    }

    /// Slot `slot`, marked as used by `rec`'s work.
    fn mark_recorded(&mut self, slot: usize, rec: &Recorder) -> Result<&Slot> {
        ensure!(
            slot < self.slots.len(),
            Invalid,
            "batch slot {slot}: the plan has {}",
            self.slots.len()
        );
        self.slots[slot].recorded = Some(rec.recording());
        Ok(&self.slots[slot])
    }

    /// The costs of the two dispatches of the batch in `slot` ([`batch_costs`]), for the
    /// recorder's cost table.
    fn costs(&self, slot: usize) -> [Cost; 2] {
        batch_costs(
            &self.spec,
            &self.slots[slot].layout,
            self.options.gradient_kernel,
        )
        .map(|c| Cost::new(c.flops as f64, c.bytes_read as f64, c.bytes_written as f64))
    }

    /// Records the gradient kernel of the batch in `slot`.
    pub fn record_gradients(&mut self, slot: usize, rec: &mut Recorder) -> Result<()> {
        let items = self.mark_recorded(slot, rec)?.layout.items as usize;
        let groups = self.options.gradient_kernel.workgroups(items);
        let groups = grid(&self.gpu, groups, "word2vec gradients")?;
        let [cost, _] = self.costs(slot);
        rec.dispatch(&self.gradients, &self.slots[slot].gradients, groups, cost);
        Ok(())
    }

    /// Records the updates of both matrices and the loss sum of the batch in `slot` (after
    /// [`record_gradients`](Self::record_gradients)).
    pub fn record_apply(&mut self, slot: usize, rec: &mut Recorder) -> Result<()> {
        let layout = self.mark_recorded(slot, rec)?.layout;
        let [out_groups, in_groups] = apply_sections(&self.spec, &layout);
        let groups = grid(&self.gpu, out_groups + in_groups + 1, "word2vec updates")?;
        let [_, cost] = self.costs(slot);
        rec.dispatch(&self.apply, &self.slots[slot].apply, groups, cost);
        Ok(())
    }

    /// Records the whole batch in `slot`: gradients, then updates and loss. Nothing for an
    /// empty batch.
    pub fn record(&mut self, slot: usize, rec: &mut Recorder) -> Result<()> {
        ensure!(
            slot < self.slots.len(),
            Invalid,
            "batch slot {slot}: the plan has {}",
            self.slots.len()
        );
        if self.slots[slot].layout.items == 0 {
            return Ok(());
        }
        self.record_gradients(slot, rec)?;
        self.record_apply(slot, rec)
    }

    /// The input vectors (the word vectors).
    pub fn syn0(&self) -> &GpuTensor {
        &self.syn0
    }

    /// The output vectors: `[out_rows, dim]` (output words, or Huffman inner nodes).
    pub fn syn1(&self) -> &GpuTensor {
        &self.syn1
    }

    /// Scratch: each item's hidden vector (the mean of its input rows), `[max_items, dim]`.
    pub fn hidden(&self) -> &GpuTensor {
        &self.hidden
    }

    /// Scratch: the gradient of each item's hidden vector, `[max_items, dim]`.
    pub fn hidden_grad(&self) -> &GpuTensor {
        &self.hidden_grad
    }

    /// Scratch: the gradient per target slot (with the full softmax per item and output row);
    /// [`TrainSpec::grad_len`] elements.
    pub fn grads(&self) -> &GpuTensor {
        &self.grads
    }

    /// Scratch: each item's loss, `[max_items]`.
    pub fn item_loss(&self) -> &GpuTensor {
        &self.item_loss
    }

    /// The per-batch loss sums, one per loss slot, until the host reads them.
    pub fn loss_slots(&self) -> &GpuTensor {
        &self.loss_slots
    }
}
