//! A trace of what the host asks of the device, so the same work can be replayed elsewhere:
//! the browser harness (`tests/browser.rs`) replays the selftest's traces through a web
//! page's WebGPU and compares with the CPU twins there.
//!
//! While a trace is on ([`Gpu::start_trace`]) it records, in order:
//! - each submit of a [`super::Recorder`]: its dispatches (the pipeline's [`KernelKey`], the
//!   bind group's buffer ranges, the workgroup counts), copies and clears;
//! - what the host wrote into a buffer before a submit or a readback;
//! - each readback (the buffer range and the bytes read): a `read_buffer` or a recorder's
//!   copy into a MAP_READ buffer;
//! - each check the caller declares ([`Gpu::trace_check`]): what a readback should hold by
//!   the CPU twin, located in the readbacks by the bytes the device returned.
//!
//! Host writes are not hooked where they happen (buffer creation, `queue.write_buffer` in a
//! plan): before each submit the trace reads back every buffer the submit uses and compares
//! it with what the buffer held after the last traced work (a buffer new to the trace is
//! written whole, zeros included). So a write cannot bypass the trace, and a replay that
//! fills every buffer with NaN and then applies the recorded writes in order sees exactly
//! what the device saw, while a byte no one wrote stays NaN. That costs two readbacks per
//! buffer per submit: tracing is for tests.

use std::collections::HashMap;

use crate::error::{err, Result};

use super::readback::map_and_copy;
use super::recorder::PerDispatch;
use super::{shaders, Gpu, KernelKey};

/// The binding of `kernel`'s per-dispatch value, from its entry point's shared layout.
fn per_dispatch_binding(kernel: &KernelKey) -> Option<u32> {
    shaders::family(kernel.family)?
        .entry_point(kernel.entry)?
        .layout?
        .per_dispatch_binding()
}

/// Everything traced between [`Gpu::start_trace`] and [`Gpu::finish_trace`].
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Every buffer the traced work touched; a buffer's id is its index here.
    pub buffers: Vec<TracedBuffer>,
    /// What the host did, in order.
    pub events: Vec<TraceEvent>,
    /// What the readbacks should hold, by the CPU twins.
    pub checks: Vec<TracedCheck>,
}

/// One comparison: the parts together (one vector) against the CPU twin's values, by
/// relative error.
#[derive(Clone, Debug)]
pub struct TracedCheck {
    /// The name the caller gave the check ([`Gpu::trace_check`]).
    pub name: String,
    /// The spans that, concatenated, form the vector compared.
    pub parts: Vec<TracedPart>,
    /// The relative error the comparison passes under.
    pub tolerance: f64,
}

/// A span of one readback and the values the CPU twin gives it (f32 elements).
#[derive(Clone, Debug)]
pub struct TracedPart {
    /// The readback's position among the trace's readbacks.
    pub readback: usize,
    /// The span's first byte within the readback.
    pub offset: usize,
    /// The CPU twin's values for the span, one per f32 element.
    pub want: Vec<f64>,
}

/// A buffer as the replay must create it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedBuffer {
    /// Size in bytes.
    pub size: u64,
    /// Whether the buffer is bound as a uniform buffer.
    pub uniform: bool,
    /// Whether the buffer is bound as a storage buffer.
    pub storage: bool,
}

/// One thing the host did, in the order it did them.
#[derive(Clone, Debug)]
pub enum TraceEvent {
    /// The host wrote `data` at byte `offset` of `buffer` (the span that changed).
    Write {
        /// Id of the buffer written (its index in [`Trace::buffers`]).
        buffer: usize,
        /// Byte offset of the first byte written.
        offset: u64,
        /// The bytes written.
        data: Vec<u8>,
    },
    /// One submit: its commands in the order recorded.
    Submit(Vec<TracedCommand>),
    /// The host read `data` back from byte `offset` of `buffer`.
    Readback {
        /// Id of the buffer read (its index in [`Trace::buffers`]).
        buffer: usize,
        /// Byte offset of the first byte read.
        offset: u64,
        /// The bytes the device returned.
        data: Vec<u8>,
    },
}

/// One command of a submit.
#[derive(Clone, Debug)]
pub enum TracedCommand {
    /// A compute dispatch.
    Dispatch {
        /// The pipeline dispatched.
        kernel: KernelKey,
        /// The bind group's entries.
        bindings: Vec<TracedBinding>,
        /// Workgroup counts in x, y and z.
        groups: [u32; 3],
    },
    /// A buffer-to-buffer copy.
    Copy {
        /// Id of the source buffer.
        src: usize,
        /// Byte offset in the source.
        src_offset: u64,
        /// Id of the destination buffer.
        dst: usize,
        /// Byte offset in the destination.
        dst_offset: u64,
        /// Bytes copied.
        bytes: u64,
    },
    /// The whole buffer set to zeros.
    Clear {
        /// Id of the buffer cleared.
        buffer: usize,
    },
}

/// One entry of a dispatch's bind group: a range of a buffer (to its end when `size` is
/// `None`) at a binding number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedBinding {
    /// The binding number in the shader's group.
    pub binding: u32,
    /// Id of the buffer bound (its index in [`Trace::buffers`]).
    pub buffer: usize,
    /// Byte offset of the range bound.
    pub offset: u64,
    /// Bytes bound; `None` binds to the buffer's end.
    pub size: Option<u64>,
}

impl Trace {
    /// The readbacks in the order they were made, with their data.
    pub fn readbacks(&self) -> impl Iterator<Item = &[u8]> {
        self.events.iter().filter_map(|e| match e {
            TraceEvent::Readback { data, .. } => Some(data.as_slice()),
            _ => None,
        })
    }

    /// Where `got` (whole 4-byte words) lies in the readbacks, as (readback, byte offset,
    /// bytes) spans that together hold it in order: in one span where one readback holds
    /// all of it (the latest such), else in the longest runs any readback holds (a value
    /// the host assembles from several readbacks, such as a final state gathered per
    /// sequence length). `None` if some word is in no readback.
    fn locate(&self, got: &[u8]) -> Option<Vec<(usize, usize, usize)>> {
        let readbacks: Vec<&[u8]> = self.readbacks().collect();
        let whole = readbacks.iter().enumerate().rev().find_map(|(i, data)| {
            let last = data.len().checked_sub(got.len())?;
            (0..=last)
                .step_by(4)
                .find(|&at| &data[at..at + got.len()] == got)
                .map(|at| (i, at, got.len()))
        });
        if let Some(span) = whole {
            return Some(vec![span]);
        }
        let mut spans = Vec::new();
        let mut from = 0;
        while from < got.len() {
            let rest = &got[from..];
            let mut best = (0, 0, 0);
            for (i, data) in readbacks.iter().enumerate().rev() {
                for at in (0..data.len().saturating_sub(3)).step_by(4) {
                    let run = data[at..]
                        .chunks_exact(4)
                        .zip(rest.chunks_exact(4))
                        .take_while(|(a, b)| a == b)
                        .count()
                        * 4;
                    if run > best.2 {
                        best = (i, at, run);
                    }
                }
            }
            if best.2 == 0 {
                return None;
            }
            spans.push(best);
            from += best.2;
        }
        Some(spans)
    }
}

/// A command as a [`super::Recorder`] holds it until the submit, with the wgpu objects
/// (resolved to buffer ids under the tracer's lock).
pub(crate) enum PendingCommand {
    Dispatch {
        kernel: KernelKey,
        group: wgpu::BindGroup,
        value: PerDispatch,
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    },
    Clear {
        buffer: wgpu::Buffer,
    },
    /// A copy into a MAP_READ buffer: the host reads `bytes` of `src` after the submit.
    Readback {
        src: wgpu::Buffer,
        offset: u64,
        bytes: u64,
    },
}

type BindEntry = (u32, wgpu::Buffer, u64, Option<u64>);

/// The trace being built, kept in the [`Gpu`].
#[derive(Default)]
pub(crate) struct Tracer {
    trace: Trace,
    /// The traced buffers (held, so an id is never reused) and their ids.
    handles: Vec<wgpu::Buffer>,
    ids: HashMap<wgpu::Buffer, usize>,
    /// Each buffer's contents as the traced work last left them (`None` until first seen).
    known: Vec<Option<Vec<u8>>>,
    /// The entries of every bind group created while tracing.
    bind_groups: HashMap<wgpu::BindGroup, Vec<BindEntry>>,
    /// The first thing the trace could not record (reported by [`Gpu::finish_trace`]).
    problem: Option<String>,
}

impl Tracer {
    fn id(&mut self, buffer: &wgpu::Buffer) -> usize {
        if let Some(&id) = self.ids.get(buffer) {
            return id;
        }
        let usage = buffer.usage();
        let id = self.handles.len();
        self.trace.buffers.push(TracedBuffer {
            size: buffer.size(),
            uniform: usage.contains(wgpu::BufferUsages::UNIFORM),
            storage: usage.contains(wgpu::BufferUsages::STORAGE),
        });
        self.handles.push(buffer.clone());
        self.ids.insert(buffer.clone(), id);
        self.known.push(None);
        id
    }

    fn note_problem(&mut self, what: String) {
        self.problem.get_or_insert(what);
    }

    /// Records a host write for whatever part of `buffer` from `offset` differs between what
    /// the trace knew and `now`, and makes `now` the known contents. A buffer seen for the
    /// first time is written whole (`now` must then be all of it).
    fn observe(&mut self, buffer: usize, offset: u64, now: &[u8]) {
        let at = offset as usize;
        let Some(known) = &self.known[buffer] else {
            self.trace.events.push(TraceEvent::Write {
                buffer,
                offset: 0,
                data: now.to_vec(),
            });
            self.known[buffer] = Some(now.to_vec());
            return;
        };
        let before = &known[at..at + now.len()];
        let first = before.iter().zip(now).position(|(a, b)| a != b);
        if let Some(first) = first {
            let last = before
                .iter()
                .zip(now)
                .rposition(|(a, b)| a != b)
                .unwrap_or(first);
            // Whole 4-byte words: WebGPU writes buffers in multiples of 4 bytes.
            let (start, end) = (first / 4 * 4, ((last / 4) + 1) * 4);
            let end = end.min(now.len());
            self.trace.events.push(TraceEvent::Write {
                buffer,
                offset: offset + start as u64,
                data: now[start..end].to_vec(),
            });
            if let Some(known) = &mut self.known[buffer] {
                known[at + start..at + end].copy_from_slice(&now[start..end]);
            }
        }
    }

    /// The commands with buffer ids, and the readbacks (buffer, offset, bytes) they end in.
    fn resolve(&mut self, commands: &[PendingCommand]) -> (Vec<TracedCommand>, Vec<ReadSpan>) {
        let mut out = Vec::with_capacity(commands.len());
        let mut reads = Vec::new();
        for c in commands {
            out.push(match c {
                PendingCommand::Dispatch {
                    kernel,
                    group,
                    value,
                    groups,
                } => {
                    let Some(entries) = self.bind_groups.get(group).cloned() else {
                        self.note_problem(format!(
                            "a dispatch of {}::{} uses a bind group made before the trace \
                             started; start the trace before building the plan",
                            kernel.family, kernel.entry
                        ));
                        continue;
                    };
                    // A dynamic offset is traced as a range of its own, so a replay binds it
                    // as a plain uniform; immediates have no binding to put them in.
                    let dynamic = match value {
                        PerDispatch::None => None,
                        PerDispatch::Offset(offset) => match per_dispatch_binding(kernel) {
                            Some(binding) => Some((binding, *offset as u64)),
                            None => {
                                self.note_problem(format!(
                                    "a dispatch of {}::{} has a dynamic offset but its layout \
                                     no per-dispatch binding",
                                    kernel.family, kernel.entry
                                ));
                                continue;
                            }
                        },
                        PerDispatch::Immediate(_) => {
                            self.note_problem(format!(
                                "a dispatch of {}::{} takes immediates, which a trace cannot \
                                 replay; plans built while tracing use dynamic offsets",
                                kernel.family, kernel.entry
                            ));
                            continue;
                        }
                    };
                    let bindings = entries
                        .iter()
                        .map(|(binding, buffer, offset, size)| TracedBinding {
                            binding: *binding,
                            buffer: self.id(buffer),
                            offset: offset
                                + dynamic.filter(|(b, _)| b == binding).map_or(0, |(_, o)| o),
                            size: *size,
                        })
                        .collect();
                    TracedCommand::Dispatch {
                        kernel: kernel.clone(),
                        bindings,
                        groups: *groups,
                    }
                }
                PendingCommand::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    bytes,
                } => TracedCommand::Copy {
                    src: self.id(src),
                    src_offset: *src_offset,
                    dst: self.id(dst),
                    dst_offset: *dst_offset,
                    bytes: *bytes,
                },
                PendingCommand::Clear { buffer } => TracedCommand::Clear {
                    buffer: self.id(buffer),
                },
                PendingCommand::Readback { src, offset, bytes } => {
                    reads.push((self.id(src), *offset, *bytes));
                    continue;
                }
            });
        }
        (out, reads)
    }
}

/// A range of a buffer the host reads: buffer id, byte offset, bytes.
type ReadSpan = (usize, u64, u64);

/// Every buffer `commands` touch and `reads` read, each once, in the order first seen.
fn touched(commands: &[TracedCommand], reads: &[ReadSpan]) -> Vec<usize> {
    let mut ids = Vec::new();
    let mut add = |id: usize| {
        if !ids.contains(&id) {
            ids.push(id);
        }
    };
    for c in commands {
        match c {
            TracedCommand::Dispatch { bindings, .. } => {
                bindings.iter().for_each(|b| add(b.buffer));
            }
            TracedCommand::Copy { src, dst, .. } => {
                add(*src);
                add(*dst);
            }
            TracedCommand::Clear { buffer } => add(*buffer),
        }
    }
    reads.iter().for_each(|r| add(r.0));
    ids
}

/// A submit between [`Gpu::trace_before_submit`] and [`Gpu::trace_after_submit`]: its
/// commands and the buffers they touch.
pub(crate) struct TracedSubmit {
    commands: Vec<TracedCommand>,
    reads: Vec<ReadSpan>,
    ids: Vec<usize>,
    handles: Vec<wgpu::Buffer>,
}

/// The whole contents of each buffer (which need COPY_SRC): one copy each, one submit.
fn snapshot(gpu: &Gpu, buffers: &[wgpu::Buffer]) -> Result<Vec<Vec<u8>>> {
    if let Some(b) = buffers
        .iter()
        .find(|b| !b.usage().contains(wgpu::BufferUsages::COPY_SRC))
    {
        return Err(err!(
            Invalid,
            "a traced buffer of {} bytes ({:?}) lacks COPY_SRC, so the trace cannot read it",
            b.size(),
            b.usage()
        ));
    }
    let total: u64 = buffers.iter().map(|b| b.size()).sum();
    if total == 0 {
        return Ok(buffers.iter().map(|_| Vec::new()).collect());
    }
    let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("recur.trace.snapshot"),
        size: total,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("recur.trace.snapshot"),
        });
    let mut at = 0;
    for b in buffers {
        encoder.copy_buffer_to_buffer(b, 0, &staging, at, b.size());
        at += b.size();
    }
    gpu.queue().submit([encoder.finish()]);
    let all = map_and_copy(gpu, &staging)?;
    let mut out = Vec::with_capacity(buffers.len());
    let mut at = 0;
    for b in buffers {
        out.push(all[at..at + b.size() as usize].to_vec());
        at += b.size() as usize;
    }
    Ok(out)
}

impl Gpu {
    fn tracer(&self) -> std::sync::MutexGuard<'_, Option<Tracer>> {
        self.inner.tracer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracing everything done on this device, from every thread (see
    /// [`super::trace`]); a trace already running is discarded. Plans must be built after
    /// this: a trace knows only the bind groups made while it runs.
    pub fn start_trace(&self) {
        *self.tracer() = Some(Tracer::default());
    }

    /// Stops tracing and returns the trace, or an error if something could not be traced.
    pub fn finish_trace(&self) -> Result<Trace> {
        let tracer = self
            .tracer()
            .take()
            .ok_or_else(|| err!(Invalid, "no trace was started on this device"))?;
        match tracer.problem {
            Some(p) => Err(err!(Invalid, "the trace is incomplete: {p}")),
            None => Ok(tracer.trace),
        }
    }

    /// Whether a trace is running.
    pub fn is_tracing(&self) -> bool {
        self.tracer().is_some()
    }

    /// Notes a new bind group's entries, when tracing.
    pub(crate) fn trace_bind_group(
        &self,
        group: &wgpu::BindGroup,
        entries: &[(u32, wgpu::BindingResource)],
    ) {
        let mut guard = self.tracer();
        let Some(tracer) = guard.as_mut() else {
            return;
        };
        let mut traced = Vec::with_capacity(entries.len());
        for (binding, resource) in entries {
            match resource {
                wgpu::BindingResource::Buffer(b) => traced.push((
                    *binding,
                    b.buffer.clone(),
                    b.offset,
                    b.size.map(|s| s.get()),
                )),
                other => tracer.note_problem(format!(
                    "binding {binding} holds a resource the trace does not record: {other:?}"
                )),
            }
        }
        tracer.bind_groups.insert(group.clone(), traced);
    }

    /// Before a traced submit: records what the host wrote into the buffers it uses.
    pub(crate) fn trace_before_submit(
        &self,
        commands: &[PendingCommand],
    ) -> Result<Option<TracedSubmit>> {
        let submit = {
            let mut guard = self.tracer();
            let Some(tracer) = guard.as_mut() else {
                return Ok(None);
            };
            let (commands, reads) = tracer.resolve(commands);
            let ids = touched(&commands, &reads);
            let handles = ids.iter().map(|&i| tracer.handles[i].clone()).collect();
            TracedSubmit {
                commands,
                reads,
                ids,
                handles,
            }
        };
        let now = snapshot(self, &submit.handles)?;
        if let Some(tracer) = self.tracer().as_mut() {
            for (&id, data) in submit.ids.iter().zip(&now) {
                tracer.observe(id, 0, data);
            }
        }
        Ok(Some(submit))
    }

    /// After a traced submit: records it, and what it left in the buffers it used.
    pub(crate) fn trace_after_submit(&self, submit: TracedSubmit) -> Result<()> {
        let after = snapshot(self, &submit.handles)?;
        if let Some(tracer) = self.tracer().as_mut() {
            tracer
                .trace
                .events
                .push(TraceEvent::Submit(submit.commands));
            for (buffer, offset, bytes) in submit.reads {
                let Some(i) = submit.ids.iter().position(|&id| id == buffer) else {
                    continue;
                };
                let (start, end) = (offset as usize, (offset + bytes) as usize);
                tracer.trace.events.push(TraceEvent::Readback {
                    buffer,
                    offset,
                    data: after[i][start..end].to_vec(),
                });
            }
            for (id, data) in submit.ids.into_iter().zip(after) {
                tracer.known[id] = Some(data);
            }
        }
        Ok(())
    }

    /// Records a readback (after any host write to that range it reveals). A buffer new to
    /// the trace is read whole first, so the replay can write all of it.
    pub(crate) fn trace_readback(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) {
        let unseen = self
            .tracer()
            .as_mut()
            .is_some_and(|t| !t.ids.contains_key(buffer));
        let whole = match unseen {
            true => snapshot(self, std::slice::from_ref(buffer)),
            false => Ok(Vec::new()),
        };
        if let Some(tracer) = self.tracer().as_mut() {
            let id = tracer.id(buffer);
            match whole {
                Ok(whole) if unseen => tracer.observe(id, 0, &whole[0]),
                Ok(_) => {}
                Err(e) => tracer.note_problem(e.full_message()),
            }
            tracer.observe(id, offset, data);
            tracer.trace.events.push(TraceEvent::Readback {
                buffer: id,
                offset,
                data: data.to_vec(),
            });
        }
    }
}

impl Gpu {
    /// Declares a check while tracing (nothing otherwise): `parts` pairs what the device
    /// returned (each a slice of one readback, as read) with the CPU twin's values. The
    /// replay compares the same spans of its own readbacks with the CPU twin's values, to
    /// a relative error under `tolerance`.
    pub fn trace_check(&self, name: &str, parts: &[(&[f32], &[f64])], tolerance: f64) {
        let mut guard = self.tracer();
        let Some(tracer) = guard.as_mut() else {
            return;
        };
        let mut traced = Vec::with_capacity(parts.len());
        for (got, want) in parts.iter().filter(|(got, _)| !got.is_empty()) {
            if got.len() != want.len() {
                tracer.note_problem(format!(
                    "check {name:?}: {} values against {} of the CPU twin",
                    got.len(),
                    want.len()
                ));
                continue;
            }
            let bytes: &[u8] = bytemuck::cast_slice(got);
            match tracer.trace.locate(bytes) {
                Some(spans) => {
                    let mut at = 0;
                    for (readback, offset, bytes) in spans {
                        traced.push(TracedPart {
                            readback,
                            offset,
                            want: want[at..at + bytes / 4].to_vec(),
                        });
                        at += bytes / 4;
                    }
                }
                _ => tracer.note_problem(format!(
                    "check {name:?}: {} values that no traced readback holds",
                    got.len()
                )),
            }
        }
        tracer.trace.checks.push(TracedCheck {
            name: name.to_string(),
            parts: traced,
            tolerance,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readbacks(data: &[&[f32]]) -> Trace {
        let events = data
            .iter()
            .map(|d| TraceEvent::Readback {
                buffer: 0,
                offset: 0,
                data: bytemuck::cast_slice(d).to_vec(),
            })
            .collect();
        Trace {
            events,
            ..Trace::default()
        }
    }

    /// A value held whole by a readback is one span (the latest readback holding it); one
    /// the host assembled from several readbacks is the longest runs, in order; a value no
    /// readback holds is not found.
    #[test]
    fn locate_finds_whole_spans_then_runs() {
        let t = readbacks(&[&[1.0, 2.0, 3.0], &[9.0, 1.0, 2.0, 3.0], &[7.0, 8.0]]);
        let b = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
        assert_eq!(t.locate(&b(&[1.0, 2.0])), Some(vec![(1, 4, 8)]));
        assert_eq!(
            t.locate(&b(&[2.0, 3.0, 7.0, 8.0, 9.0])),
            Some(vec![(1, 8, 8), (2, 0, 8), (1, 0, 4)])
        );
        assert_eq!(t.locate(&b(&[2.0, 5.0])), None);
    }
}
