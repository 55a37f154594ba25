//! Adapter choice, device creation, and what the chosen adapter can do.

use std::sync::{Arc, Mutex};

use crate::error::{bail, err, Result};

use super::registry::KernelRegistry;

/// The most loop iterations in all that plans let one invocation run on llvmpipe
/// ([`Gpu::is_llvmpipe`]), whose shaders stop looping after about 65,535: three quarters of
/// that, for the loops an estimate does not see.
pub const LLVMPIPE_LOOP_BUDGET: usize = 48 << 10;

/// How to get a GPU adapter where there is none, and that the CPU path works without one.
const NO_ADAPTER_HELP: &str = "no GPU adapter with compute shaders was found. \
On Linux without a GPU, install Mesa's software Vulkan driver \
(`apt-get install -y mesa-vulkan-drivers`) or use Mesa's llvmpipe over GL (`WGPU_BACKEND=gl`); \
the CPU backend (`Backend::Cpu`) needs no adapter at all";

/// Optional adapter features recur turns on where the adapter offers them.
const WANTED_FEATURES: [(wgpu::Features, &str); 4] = [
    (wgpu::Features::SHADER_F16, "SHADER_F16"),
    (wgpu::Features::SUBGROUP, "SUBGROUP"),
    (wgpu::Features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
    (wgpu::Features::IMMEDIATES, "IMMEDIATES"),
];

/// Which limits the device asks for: `RECUR_LIMITS=adapter` (the default) or `default`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitsMode {
    /// Everything the adapter offers: compute kernels want the storage-buffer count,
    /// workgroup memory and binding sizes the hardware has.
    Adapter,
    /// Only WebGPU's defaults (`wgpu::Limits::default()`: 8 storage buffers per stage,
    /// 16 KiB of workgroup memory, 256 invocations per workgroup, 128 MiB per storage
    /// binding), as a browser grants them: every kernel must run within them.
    Default,
}

impl LimitsMode {
    /// The mode `RECUR_LIMITS` names (`adapter` when unset).
    pub fn from_env() -> Result<Self> {
        match std::env::var("RECUR_LIMITS") {
            Err(std::env::VarError::NotPresent) => Ok(Self::Adapter),
            Ok(v) if v == "adapter" => Ok(Self::Adapter),
            Ok(v) if v == "default" => Ok(Self::Default),
            Ok(v) => bail!(
                Invalid,
                "RECUR_LIMITS={v:?} is not a limits mode; expected adapter or default"
            ),
            Err(e) => bail!(Invalid, "RECUR_LIMITS is not valid text: {e}"),
        }
    }
}

/// What the device was created with, so kernels can choose a path at run time.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// 16-bit floats in shaders (`SHADER_F16`).
    pub shader_f16: bool,
    /// Subgroup operations in shaders (`SUBGROUP`).
    pub subgroup: bool,
    /// GPU timestamps (`TIMESTAMP_QUERY`), for timing kernels on the device.
    pub timestamp_query: bool,
    /// Immediate data for pipelines (`IMMEDIATES`).
    pub immediates: bool,
    /// Smallest subgroup size the adapter reports.
    pub subgroup_min_size: u32,
    /// Largest subgroup size the adapter reports.
    pub subgroup_max_size: u32,
}

impl Capabilities {
    fn from_features(features: wgpu::Features, info: &wgpu::AdapterInfo) -> Self {
        Self {
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroup: features.contains(wgpu::Features::SUBGROUP),
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            immediates: features.contains(wgpu::Features::IMMEDIATES),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
        }
    }

    /// Names of the optional features that are on.
    pub fn names(&self) -> Vec<&'static str> {
        let on = [
            self.shader_f16,
            self.subgroup,
            self.timestamp_query,
            self.immediates,
        ];
        WANTED_FEATURES
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|((_, name), _)| *name)
            .collect()
    }
}

/// Counters of host-side work, for benchmarks and for the "one submit per sequence" checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkCounters {
    /// Compute dispatches submitted.
    pub dispatches: u64,
    /// Queue submits (a readback's own submit included).
    pub submits: u64,
    /// Buffers read back to the host.
    pub readbacks: u64,
}

/// The GPU: adapter, device, queue, compiled kernels. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

pub(crate) struct GpuInner {
    /// `None` for a device the application made ([`Gpu::from_wgpu`]).
    pub adapter: Option<wgpu::Adapter>,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub limits_mode: LimitsMode,
    pub caps: Capabilities,
    pub kernels: KernelRegistry,
    /// The first device error not yet reported to a caller (wgpu reports them asynchronously).
    pub device_error: Arc<Mutex<Option<String>>>,
    /// Whether device errors are also logged as they arrive: not on a cost-model device,
    /// whose bindings beyond this adapter's limits are expected and reported once.
    pub log_device_errors: Arc<std::sync::atomic::AtomicBool>,
    pub counters: Mutex<WorkCounters>,
    /// A 4-byte storage buffer bound where a kernel's optional input is absent.
    pub dummy: wgpu::Buffer,
    /// The trace being recorded, if any (see `gpu::trace`).
    pub tracer: Mutex<Option<super::trace::Tracer>>,
    /// The GEMM kernel plans use, where set before the first plan (see `gpu/gemm.rs`).
    pub gemm_variant: std::sync::OnceLock<super::gemm::GemmVariant>,
    /// The recurrent path plans take, where set before the first plan (see `gpu/recurrent.rs`).
    pub recurrent_path: std::sync::OnceLock<super::recurrent::RecurrentPath>,
    /// How plans store the recurrent weights, where set before the first plan (see
    /// `gpu/recurrent.rs`).
    pub recurrent_precision: std::sync::OnceLock<super::recurrent::Precision>,
    /// The recurrent step kernels plans use, where set before the first plan (see
    /// `gpu/recurrent.rs`).
    pub step_kernel: std::sync::OnceLock<super::recurrent::StepKernel>,
    /// A device that only records plans for cost tables ([`Gpu::new_for_cost_model`]).
    pub cost_model: bool,
}

/// One adapter as `recur info` reports it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// The adapter's name, vendor, device type and backend.
    pub info: wgpu::AdapterInfo,
    /// Whether the adapter runs compute shaders (recur can use it).
    pub compute: bool,
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter the instance sees (honouring `WGPU_BACKEND`).
pub fn list_adapters() -> Vec<AdapterSummary> {
    let instance = instance();
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters
        .iter()
        .map(|a| AdapterSummary {
            info: a.get_info(),
            compute: supports_compute(a),
        })
        .collect()
}

fn supports_compute(adapter: &wgpu::Adapter) -> bool {
    adapter
        .get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
}

/// Lower is better: discrete, then integrated, then virtual, then software.
fn device_type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Among equal device types, prefer the native compute APIs over GL.
fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    }
}

impl Gpu {
    /// Picks an adapter and creates the device.
    ///
    /// `WGPU_BACKEND` restricts the backends (vulkan, metal, dx12, gl) and `WGPU_ADAPTER_NAME`
    /// picks an adapter by a case-insensitive substring of its name. Otherwise a discrete GPU
    /// is preferred, then an integrated one, then a software adapter. `RECUR_LIMITS=default`
    /// asks for WebGPU's default limits instead of the adapter's ([`LimitsMode`]).
    pub fn new() -> Result<Self> {
        Self::from_adapter(Self::candidates()?.swap_remove(0), LimitsMode::from_env()?)
    }

    /// Adapter `index` modulo the number of adapters of the best kind there is (the
    /// discrete GPUs, if any, on their best API; same rules and variables as [`Self::new`]),
    /// for one process per GPU of a machine. Returns the device, the index taken and the
    /// count of such adapters.
    pub fn nth(index: usize) -> Result<(Self, usize, usize)> {
        let mut all = Self::candidates()?;
        let rank = |a: &wgpu::Adapter| {
            let i = a.get_info();
            (device_type_rank(i.device_type), backend_rank(i.backend))
        };
        let best = rank(&all[0]);
        all.retain(|a| rank(a) == best);
        let (count, pick) = (all.len(), index % all.len());
        let device = Self::from_adapter(all.swap_remove(pick), LimitsMode::from_env()?)?;
        Ok((device, pick, count))
    }

    /// The adapters with compute shaders that pass `WGPU_ADAPTER_NAME`, best first.
    fn candidates() -> Result<Vec<wgpu::Adapter>> {
        let instance = instance();
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let name_filter = std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .map(|s| s.to_lowercase());
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        let mut candidates: Vec<wgpu::Adapter> = adapters
            .into_iter()
            .filter(supports_compute)
            .filter(|a| match &name_filter {
                Some(f) => a.get_info().name.to_lowercase().contains(f.as_str()),
                None => true,
            })
            .collect();
        if candidates.is_empty() {
            if let Some(f) = &name_filter {
                bail!(
                    Adapter, "WGPU_ADAPTER_NAME={f:?} matches no adapter with compute shaders; adapters seen: [{}]",
                    seen.join(", ")
                );
            }
            bail!(Adapter, "{NO_ADAPTER_HELP}");
        }
        // Stable: adapters of one kind keep the order the instance lists them in.
        candidates.sort_by_key(|a| {
            let i = a.get_info();
            (device_type_rank(i.device_type), backend_rank(i.backend))
        });
        Ok(candidates)
    }

    fn from_adapter(adapter: wgpu::Adapter, limits_mode: LimitsMode) -> Result<Self> {
        let info = adapter.get_info();
        let available = adapter.features();
        let mut features = wgpu::Features::empty();
        for (f, _) in WANTED_FEATURES {
            if available.contains(f) {
                features |= f;
            }
        }
        let limits = match limits_mode {
            LimitsMode::Adapter => adapter.limits(),
            LimitsMode::Default => wgpu::Limits::default(),
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("recur"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| err!(Adapter, "creating a device on adapter {:?}: {e}", info.name))?;
        Ok(Self::assemble(
            Some(adapter),
            device,
            queue,
            info,
            limits,
            limits_mode,
        ))
    }

    /// Wraps a device an application already has, so recur's kernels share it with the
    /// application's own work (a renderer, another compute library). recur uses the device's
    /// own features and limits, and installs its handler for uncaptured device errors (so a
    /// failed kernel is reported by the recur call that caused it; an application that needs
    /// its own handler sets it again afterwards).
    ///
    /// ```no_run
    /// # fn main() -> anyhow::Result<()> {
    /// let instance = wgpu::Instance::default();
    /// let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    /// let (device, queue) = pollster::block_on(adapter.request_device(&Default::default()))?;
    /// let gpu = recur::Gpu::from_wgpu(device, queue, adapter.get_info());
    /// println!("{}", gpu.describe());
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        let limits = device.limits();
        Self::assemble(None, device, queue, info, limits, LimitsMode::Adapter)
    }

    fn assemble(
        adapter: Option<wgpu::Adapter>,
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        limits: wgpu::Limits,
        limits_mode: LimitsMode,
    ) -> Self {
        let features = device.features();
        let device_error = Arc::new(Mutex::new(None::<String>));
        let sink = device_error.clone();
        let log_device_errors = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let logging = log_device_errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let text = error_chain(&e);
            if logging.load(std::sync::atomic::Ordering::Relaxed) {
                log::error!("wgpu device error: {text}");
            }
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(text);
            }
        }));

        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("recur.dummy"),
            size: 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let caps = Capabilities::from_features(features, &info);
        let kernels = KernelRegistry::new(device.clone());
        Self {
            inner: Arc::new(GpuInner {
                adapter,
                device,
                queue,
                info,
                limits,
                limits_mode,
                caps,
                kernels,
                device_error,
                log_device_errors,
                counters: Mutex::new(WorkCounters::default()),
                dummy,
                tracer: Mutex::new(None),
                gemm_variant: std::sync::OnceLock::new(),
                recurrent_path: std::sync::OnceLock::new(),
                recurrent_precision: std::sync::OnceLock::new(),
                step_kernel: std::sync::OnceLock::new(),
                cost_model: false,
            }),
        }
    }

    /// A device on which plans are built and recorded for cost tables (`recur bench rnn
    /// --plan`), never run: plans use the GEMM and recurrent step kernels GPUs run (the tiled
    /// ones), tensors may
    /// be as large as a buffer may be (not only as large as the adapter binds, since the GPU
    /// being modelled binds more; such bindings are device errors here, not logged, which
    /// [`Self::take_device_error`] reports and clears), and a submit is an error.
    pub fn new_for_cost_model() -> Result<Self> {
        let gpu = Self::new()?;
        let inner = Arc::into_inner(gpu.inner).expect("a new device is not shared");
        inner
            .log_device_errors
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let gpu = Self {
            inner: Arc::new(GpuInner {
                cost_model: true,
                ..inner
            }),
        };
        gpu.set_gemm_variant(super::gemm::GemmVariant::Tiled)?;
        gpu.set_step_kernel(super::recurrent::StepKernel::Tiled)?;
        Ok(gpu)
    }

    /// A kernel variant: `set` (the device's setting) if made, else the one the environment
    /// variable `var` names among `named`, else `on_cpu` on adapters of type CPU (lavapipe,
    /// llvmpipe, SwiftShader) and `elsewhere` on the others.
    pub(crate) fn variant<T: Copy>(
        &self,
        set: Option<&T>,
        var: &str,
        named: &[(&str, T)],
        on_cpu: T,
        elsewhere: T,
    ) -> T {
        if let Some(v) = set {
            return *v;
        }
        let wanted = std::env::var(var).ok();
        match named
            .iter()
            .find(|(name, _)| wanted.as_deref() == Some(*name))
        {
            Some((_, v)) => *v,
            None if self.info().device_type == wgpu::DeviceType::Cpu => on_cpu,
            None => elsewhere,
        }
    }

    /// Whether this device only records plans for cost tables.
    pub fn is_cost_model(&self) -> bool {
        self.inner.cost_model
    }

    /// Whether the adapter is Mesa's llvmpipe (lavapipe on Vulkan, or llvmpipe on GL). Its
    /// shaders (Mesa 22.3.6 here) stop an invocation's loops after about 65,535 iterations
    /// in all, leaving its outputs unwritten or partly computed, so plans keep every loop
    /// below that there ([`LLVMPIPE_LOOP_BUDGET`]: products deeper than
    /// [`super::gemm::LLVMPIPE_MAX_DEPTH`] split along K; the recurrent step kernels rather
    /// than the sequence kernels by default, and never sequence kernels that would loop more,
    /// see [`super::recurrent::RecurrentPath::loops_fit`]).
    /// A cost-model device ([`Self::new_for_cost_model`]) plans what a GPU would run, so it
    /// is never llvmpipe whatever adapter it was made on.
    pub fn is_llvmpipe(&self) -> bool {
        !self.inner.cost_model && self.info().name.contains("llvmpipe")
    }

    /// The adapter's name, vendor, device type and backend.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The limits the device was created with (see [`LimitsMode`]).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The optional features the device was created with.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    /// The underlying wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The underlying wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter recur opened the device on; `None` for [`Gpu::from_wgpu`].
    pub fn adapter(&self) -> Option<&wgpu::Adapter> {
        self.inner.adapter.as_ref()
    }

    /// Which limits the device was created with.
    pub fn limits_mode(&self) -> LimitsMode {
        self.inner.limits_mode
    }

    /// A one-line description: name, backend, device type, and the limits when they are
    /// WebGPU's defaults rather than the adapter's.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        let limits = match self.inner.limits_mode {
            LimitsMode::Adapter => "",
            LimitsMode::Default => ", WebGPU default limits",
        };
        format!("{} ({:?}, {:?}{limits})", i.name, i.backend, i.device_type)
    }

    /// Host-side work done so far on this device.
    pub fn counters(&self) -> WorkCounters {
        *self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut WorkCounters)) {
        f(&mut self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner()));
    }

    /// Returns (and clears) a device error that wgpu reported since the last check.
    pub fn take_device_error(&self) -> Result<()> {
        let mut slot = self
            .inner
            .device_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(e) => Err(err!(Adapter, "GPU device error: {e}")),
            None => Ok(()),
        }
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| err!(Adapter, "waiting for the GPU: {e}"))?;
        self.take_device_error()
    }

    /// Largest storage buffer one kernel may bind, in bytes (on a cost-model device, the
    /// largest buffer).
    pub fn max_binding_bytes(&self) -> u64 {
        let l = &self.inner.limits;
        if self.inner.cost_model {
            return l.max_buffer_size;
        }
        l.max_storage_buffer_binding_size.min(l.max_buffer_size)
    }
}

/// A wgpu error with the chain of its sources on one line (its `Display` alone says only
/// "Validation Error").
pub(crate) fn error_chain(e: &wgpu::Error) -> String {
    let (kind, source): (&str, &(dyn std::error::Error + 'static)) = match e {
        wgpu::Error::Validation { source, .. } => ("validation error", source.as_ref()),
        wgpu::Error::OutOfMemory { source } => ("out of device memory", source.as_ref()),
        wgpu::Error::Internal { source, .. } => ("internal error", source.as_ref()),
    };
    let mut text = kind.to_string();
    let mut next = Some(source);
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(s.to_string().trim());
        next = s.source();
    }
    text
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.describe())
    }
}
