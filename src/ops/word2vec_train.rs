//! The description of a batch of word2vec updates, shared by the GPU kernels
//! (`shaders/word2vec_train.wgsl`) and their CPU twins (`src/cpu/word2vec.rs`).
//!
//! A batch is a list of work items. An item is one prediction: its hidden vector is the mean
//! of its input rows (one context word in skip-gram, the whole window in CBOW) and it
//! predicts a list of targets, each an output row with a label (negative sampling: the word
//! with label 1 and its negatives with label 0; hierarchical softmax: the inner nodes of the
//! word's Huffman path, label `1 - code`). With the full softmax an item names only the word;
//! every output row is a target.
//!
//! The batch travels to the GPU as one array of u32 in sections ([`BatchLayout`]): items,
//! inputs, targets, and two inverse indexes built here on the host. Each index lists the
//! distinct rows the batch touches and, per row, the contributions to it in increasing slot
//! order, so a kernel thread that owns a row element sums its contributions in a fixed order
//! without atomics.

use crate::error::{bail, ensure, err, Result};

/// How the output layer lists an item's targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainOutput {
    /// The targets are listed (negative sampling, hierarchical softmax).
    Sampled,
    /// Every output row is a target (full softmax); an item lists only its word.
    Softmax,
}

/// Sizes fixed for a training run: the matrices and the largest batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainSpec {
    /// Rows of the input matrix (the vocabulary).
    pub in_rows: usize,
    /// Rows of the output matrix (the vocabulary, or the Huffman tree's inner nodes).
    pub out_rows: usize,
    /// Length of a word vector (columns of both matrices).
    pub dim: usize,
    /// How the output layer lists an item's targets.
    pub output: TrainOutput,
    /// Most items in one batch.
    pub max_items: usize,
    /// Most input slots (summed over the items) in one batch.
    pub max_inputs: usize,
    /// Most target slots (summed over the items) in one batch.
    pub max_targets: usize,
    /// A row's summed update is scaled by `row_cap / n` when `n > row_cap` contributions
    /// reach it in one batch (0: never scaled). See `src/word2vec/gpu_train.rs` for why.
    pub row_cap: u32,
}

impl TrainSpec {
    /// Elements of the per-target gradient buffer: one per target slot, or with the full
    /// softmax one per (item, output row).
    pub fn grad_len(&self) -> Result<usize> {
        match self.output {
            TrainOutput::Sampled => Ok(self.max_targets),
            TrainOutput::Softmax => self.max_items.checked_mul(self.out_rows).ok_or_else(|| {
                err!(
                    Limit,
                    "{} items x {} output rows overflow",
                    self.max_items,
                    self.out_rows
                )
            }),
        }
    }

    /// u32 words of the packed batch at its largest.
    pub fn batch_words(&self) -> usize {
        let touched_out = match self.output {
            TrainOutput::Sampled => self.max_targets,
            TrainOutput::Softmax => 0,
        };
        4 * self.max_items
            + self.max_inputs
            + 2 * self.max_targets
            + (2 * touched_out + 1) // out rows, segment bounds
            + 2 * touched_out // out entries
            + (2 * self.max_inputs + 1) // in rows, segment bounds
            + self.max_inputs // in entries
    }

    /// Rejects sizes the kernels cannot index (u32 element offsets), naming the value.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.in_rows > 0,
            Shape,
            "an empty vocabulary: expected at least one word"
        );
        ensure!(self.out_rows > 0, Shape, "an output layer of 0 rows");
        ensure!(self.dim > 0, Shape, "vector size 0: expected at least 1");
        ensure!(self.max_items > 0, Shape, "a batch of 0 items");
        let limit = u32::MAX as usize;
        for (what, rows) in [("input", self.in_rows), ("output", self.out_rows)] {
            let n = rows.checked_mul(self.dim).filter(|&n| n < limit);
            ensure!(
                n.is_some(),
                Limit,
                "{what} matrix of {rows} rows x size {}: more than {limit} values cannot be \
                 indexed on the GPU",
                self.dim
            );
        }
        let hidden = self.max_items.checked_mul(self.dim).filter(|&n| n < limit);
        ensure!(
            hidden.is_some(),
            Limit,
            "{} items x size {}: more than {limit} hidden values",
            self.max_items,
            self.dim
        );
        ensure!(
            self.grad_len()? < limit && self.batch_words() < limit,
            Limit,
            "a batch of {} items is too large to index",
            self.max_items
        );
        Ok(())
    }
}

/// Where each section starts in a packed batch (offsets in u32 words) and how many rows
/// each index holds. Mirrors the section fields of `TrainParams` in the shader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchLayout {
    /// Items in the batch; the items section starts at word 0, 4 words per item.
    pub items: u32,
    /// Distinct output rows in the output index (0 with the full softmax).
    pub out_unique: u32,
    /// Distinct input rows in the input index.
    pub in_unique: u32,
    /// Start of the inputs section: one input row per input slot.
    pub at_inputs: u32,
    /// Start of the targets section: (output row, label) per target slot.
    pub at_targets: u32,
    /// Start of the output index's distinct rows.
    pub at_out_rows: u32,
    /// Start of the output index's segment bounds (`out_unique + 1` words).
    pub at_out_seg: u32,
    /// Start of the output index's entries: (target slot, item) each.
    pub at_out_entries: u32,
    /// Start of the input index's distinct rows.
    pub at_in_rows: u32,
    /// Start of the input index's segment bounds (`in_unique + 1` words).
    pub at_in_seg: u32,
    /// Start of the input index's entries: one item each.
    pub at_in_entries: u32,
}

impl BatchLayout {
    /// Input slots (summed over the items).
    pub fn input_slots(&self) -> usize {
        (self.at_targets - self.at_inputs) as usize
    }

    /// Target slots (summed over the items; one per item with the full softmax).
    pub fn target_slots(&self) -> usize {
        (self.at_out_rows - self.at_targets) as usize / 2
    }
}

/// Items as the host builds them, before packing.
#[derive(Clone, Debug, Default)]
pub struct TrainBatch {
    /// Per item: first input slot, input count, first target slot, target count.
    items: Vec<[u32; 4]>,
    inputs: Vec<u32>,
    /// Per target slot: output row and label (0 or 1).
    targets: Vec<[u32; 2]>,
}

impl TrainBatch {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.items.clear();
        self.inputs.clear();
        self.targets.clear();
    }

    /// Items so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch has no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Input slots so far (summed over the items).
    pub fn input_slots(&self) -> usize {
        self.inputs.len()
    }

    /// Target slots so far (summed over the items).
    pub fn target_slots(&self) -> usize {
        self.targets.len()
    }

    /// Adds an item: its input rows and its targets as (output row, label).
    pub fn push(&mut self, inputs: &[u32], targets: impl IntoIterator<Item = (u32, bool)>) {
        let (in_at, t_at) = (self.inputs.len() as u32, self.targets.len() as u32);
        self.inputs.extend_from_slice(inputs);
        self.targets
            .extend(targets.into_iter().map(|(r, l)| [r, l as u32]));
        self.items.push([
            in_at,
            inputs.len() as u32,
            t_at,
            self.targets.len() as u32 - t_at,
        ]);
    }
}

/// A batch laid out as the kernels read it.
#[derive(Clone, Debug, Default)]
pub struct PackedBatch {
    /// Where each section starts in `words`.
    pub layout: BatchLayout,
    /// The packed batch, the u32 array the kernels read.
    pub words: Vec<u32>,
}

/// One row of an inverse index: the row and the range of its entries.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    /// The matrix row.
    pub row: u32,
    /// Index of the row's first entry.
    pub start: usize,
    /// One past the index of the row's last entry.
    pub end: usize,
}

impl PackedBatch {
    /// Items in the batch.
    pub fn items(&self) -> usize {
        self.layout.items as usize
    }

    /// Item `b`'s input rows.
    pub fn inputs(&self, b: usize) -> &[u32] {
        let [start, count, ..] = self.item(b);
        let at = self.layout.at_inputs as usize + start as usize;
        &self.words[at..at + count as usize]
    }

    /// Item `b`'s targets as (slot, output row, label).
    pub fn targets(&self, b: usize) -> impl Iterator<Item = (usize, u32, u32)> + '_ {
        let [_, _, start, count] = self.item(b);
        let at = self.layout.at_targets as usize;
        (start as usize..(start + count) as usize)
            .map(move |s| (s, self.words[at + 2 * s], self.words[at + 2 * s + 1]))
    }

    fn item(&self, b: usize) -> [u32; 4] {
        let w = &self.words[4 * b..4 * b + 4];
        [w[0], w[1], w[2], w[3]]
    }

    /// The output index: per distinct output row, entries (target slot, item).
    pub fn out_segments(&self) -> impl Iterator<Item = Segment> + '_ {
        let l = &self.layout;
        self.segments(l.out_unique, l.at_out_rows, l.at_out_seg)
    }

    /// Output-index entry `e`: (target slot, item).
    pub fn out_entry(&self, e: usize) -> (usize, usize) {
        let at = self.layout.at_out_entries as usize + 2 * e;
        (self.words[at] as usize, self.words[at + 1] as usize)
    }

    /// The input index: per distinct input row, entries (item).
    pub fn in_segments(&self) -> impl Iterator<Item = Segment> + '_ {
        let l = &self.layout;
        self.segments(l.in_unique, l.at_in_rows, l.at_in_seg)
    }

    /// Input-index entry `e`: the item.
    pub fn in_entry(&self, e: usize) -> usize {
        self.words[self.layout.at_in_entries as usize + e] as usize
    }

    fn segments(&self, n: u32, rows: u32, seg: u32) -> impl Iterator<Item = Segment> + '_ {
        (0..n as usize).map(move |u| Segment {
            row: self.words[rows as usize + u],
            start: self.words[seg as usize + u] as usize,
            end: self.words[seg as usize + u + 1] as usize,
        })
    }
}

/// Builds the inverse indexes; keeps its scratch space between batches.
#[derive(Clone, Debug, Default)]
pub struct BatchPacker {
    /// Per matrix row: its position among the distinct rows of the index being built, or
    /// `u32::MAX`. Reset after each index, touching only the rows used.
    position: Vec<u32>,
    rows: Vec<u32>,
    counts: Vec<u32>,
}

impl BatchPacker {
    /// Validates `batch` against `spec` (row ids in range, sizes within the spec) and
    /// writes its packed form into `out`.
    pub fn pack(
        &mut self,
        spec: &TrainSpec,
        batch: &TrainBatch,
        out: &mut PackedBatch,
    ) -> Result<()> {
        let n = batch.items.len();
        ensure!(
            n <= spec.max_items
                && batch.inputs.len() <= spec.max_inputs
                && batch.targets.len() <= spec.max_targets,
            Shape,
            "a batch of {n} items, {} inputs, {} targets: the plan holds at most {}, {}, {}",
            batch.inputs.len(),
            batch.targets.len(),
            spec.max_items,
            spec.max_inputs,
            spec.max_targets
        );
        if let Some(&r) = batch.inputs.iter().find(|&&r| r as usize >= spec.in_rows) {
            bail!(Invalid, "input row {r}: expected below {}", spec.in_rows);
        }
        if let Some(t) = batch
            .targets
            .iter()
            .find(|t| t[0] as usize >= spec.out_rows)
        {
            bail!(
                Invalid,
                "output row {}: expected below {}",
                t[0],
                spec.out_rows
            );
        }
        for (b, it) in batch.items.iter().enumerate() {
            ensure!(it[1] > 0, Shape, "item {b} has no input rows");
            if spec.output == TrainOutput::Softmax {
                ensure!(
                    it[3] == 1,
                    Invalid,
                    "item {b}: a full-softmax item names exactly one word"
                );
            }
        }
        let words = &mut out.words;
        words.clear();
        for it in &batch.items {
            words.extend_from_slice(it);
        }
        let mut l = BatchLayout {
            items: n as u32,
            at_inputs: words.len() as u32,
            ..Default::default()
        };
        words.extend_from_slice(&batch.inputs);
        l.at_targets = words.len() as u32;
        words.extend(batch.targets.iter().flatten());
        // Output index: every target slot, entries (slot, item).
        l.at_out_rows = words.len() as u32;
        if spec.output == TrainOutput::Sampled {
            let slots = batch.items.iter().enumerate().flat_map(|(b, it)| {
                (it[2]..it[2] + it[3]).map(move |s| (batch.targets[s as usize][0], [s, b as u32]))
            });
            let (unique, seg_at, entries_at) =
                self.build(spec.out_rows, batch.targets.len(), slots, words, 2);
            (l.out_unique, l.at_out_seg, l.at_out_entries) = (unique, seg_at, entries_at);
        } else {
            words.push(0);
            (l.at_out_seg, l.at_out_entries) = (l.at_out_rows, words.len() as u32);
        }
        // Input index: every input slot, entries (item).
        l.at_in_rows = words.len() as u32;
        let slots = batch.items.iter().enumerate().flat_map(|(b, it)| {
            (it[0]..it[0] + it[1]).map(move |s| (batch.inputs[s as usize], [b as u32, 0]))
        });
        let (unique, seg_at, entries_at) =
            self.build(spec.in_rows, batch.inputs.len(), slots, words, 1);
        (l.in_unique, l.at_in_seg, l.at_in_entries) = (unique, seg_at, entries_at);
        out.layout = l;
        Ok(())
    }

    /// Appends an inverse index of `n` slots given as (row, entry): the distinct rows in
    /// order of first appearance, the segment bounds, then the entries (`width` words each)
    /// grouped by row, in the order given within a row. Returns the distinct rows and where
    /// the bounds and the entries start.
    fn build(
        &mut self,
        rows: usize,
        n: usize,
        slots: impl Iterator<Item = (u32, [u32; 2])> + Clone,
        words: &mut Vec<u32>,
        width: usize,
    ) -> (u32, u32, u32) {
        if self.position.len() < rows {
            self.position.resize(rows, u32::MAX);
        }
        self.rows.clear();
        self.counts.clear();
        for (r, _) in slots.clone() {
            let p = &mut self.position[r as usize];
            if *p == u32::MAX {
                *p = self.rows.len() as u32;
                self.rows.push(r);
                self.counts.push(0);
            }
            self.counts[*p as usize] += 1;
        }
        words.extend_from_slice(&self.rows);
        let seg_at = words.len();
        // Segment bounds: exclusive prefix sums of the counts, then the total.
        let mut total = 0u32;
        for c in &mut self.counts {
            words.push(total);
            let start = total;
            total += *c;
            *c = start; // from here on: the next free entry of this row
        }
        words.push(total);
        debug_assert_eq!(total as usize, n);
        let entries_at = words.len();
        words.resize(entries_at + width * n, 0);
        for (r, e) in slots {
            let u = self.position[r as usize] as usize;
            let at = entries_at + width * self.counts[u] as usize;
            words[at..at + width].copy_from_slice(&e[..width]);
            self.counts[u] += 1;
        }
        for &r in &self.rows {
            self.position[r as usize] = u32::MAX;
        }
        (self.rows.len() as u32, seg_at as u32, entries_at as u32)
    }
}
