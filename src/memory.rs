//! Memory budgets: every size that comes from a file header, a tensor shape or an option is
//! checked here before anything is allocated for it, against the bytes the data holds and a
//! stated budget: the machine's physical memory for host buffers, the adapter's largest
//! buffer for device buffers.
//!
//! Sizes are computed with checked arithmetic (`None` where they overflow `u64`), and a size
//! over its budget is a [`LimitError`] naming the value, the bytes it needs and the limit.
//! Callers describe the value in their own terms (a field such as `hidden_size 100000`, a
//! header such as `header "1 999999999999"`); the command line adds its option names.

use std::fmt;
use std::sync::OnceLock;

/// What recur assumes a machine has where its memory cannot be read (not Linux, no /proc).
pub const ASSUMED_HOST_BYTES: u64 = 16 << 30;

/// A size over its budget; it converts into [`crate::Error::Limit`] with its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitError {
    /// The value and where it comes from, e.g. `hidden_size 100000 (rnn.weight_hh_l0 alone)`.
    pub what: String,
    /// Bytes needed, or `None` where the count overflows 64 bits.
    pub needed: Option<u64>,
    /// The budget it was checked against.
    pub budget: Budget,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.needed {
            Some(n) => write!(f, "{} needs {} ({n} bytes)", self.what, human(n))?,
            None => write!(f, "{} needs more than 2^64 bytes", self.what)?,
        }
        write!(f, "; {}", self.budget)
    }
}

impl std::error::Error for LimitError {}

/// Whether `e` or any error in its chain of sources is a size over a limit (a
/// [`crate::Error::Limit`] or a [`LimitError`]), so the command line can add the options
/// behind it. An `anyhow::Error` passes as `e.as_ref()`.
pub fn is_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |c| c.source()).any(|c| {
        c.is::<LimitError>()
            || matches!(
                c.downcast_ref::<crate::Error>().map(crate::Error::kind),
                Some(crate::Error::Limit(_))
            )
    })
}

/// Where a budget comes from, for the message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// /proc/meminfo's MemTotal.
    Physical,
    /// A cgroup's memory limit, below the physical memory.
    Cgroup,
    /// Unknown memory: [`ASSUMED_HOST_BYTES`].
    Assumed,
    /// The adapter's largest buffer (the smaller of `max_buffer_size` and
    /// `max_storage_buffer_binding_size`).
    DeviceBuffer { adapter: String },
    /// Given by the caller (tests, embedders with their own limit).
    Stated { what: String },
}

/// A number of bytes that buffers of one kind may take, and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    bytes: u64,
    source: Source,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = human(self.bytes);
        match &self.source {
            Source::Physical => write!(f, "this machine has {b} of memory"),
            Source::Cgroup => write!(f, "this process may use {b} (its cgroup's memory limit)"),
            Source::Assumed => write!(
                f,
                "this machine's memory could not be read, and recur assumes {b}"
            ),
            Source::DeviceBuffer { adapter } => write!(
                f,
                "adapter {adapter:?} allows at most {b} per buffer (max_buffer_size, \
                 max_storage_buffer_binding_size)"
            ),
            Source::Stated { what } => write!(f, "{what} allows {b}"),
        }
    }
}

impl Budget {
    /// Host memory: the physical memory (or a cgroup's lower limit), read once.
    pub fn host() -> Budget {
        static HOST: OnceLock<Budget> = OnceLock::new();
        HOST.get_or_init(|| {
            let physical = meminfo_total();
            let cgroup = cgroup_limit();
            match (physical, cgroup) {
                (Some(p), Some(c)) if c < p => Budget {
                    bytes: c,
                    source: Source::Cgroup,
                },
                (Some(p), _) => Budget {
                    bytes: p,
                    source: Source::Physical,
                },
                (None, Some(c)) => Budget {
                    bytes: c,
                    source: Source::Cgroup,
                },
                (None, None) => Budget {
                    bytes: ASSUMED_HOST_BYTES,
                    source: Source::Assumed,
                },
            }
        })
        .clone()
    }

    /// One device buffer on `gpu`: what the adapter lets a kernel bind.
    pub fn device_buffer(gpu: &crate::gpu::Gpu) -> Budget {
        Budget {
            bytes: gpu.max_binding_bytes(),
            source: Source::DeviceBuffer {
                adapter: gpu.info().name.clone(),
            },
        }
    }

    /// A budget of `bytes` stated by the caller; `what` names it in messages ("the test's
    /// budget allows 1.0 MiB").
    pub fn stated(bytes: u64, what: impl Into<String>) -> Budget {
        Budget {
            bytes,
            source: Source::Stated { what: what.into() },
        }
    }

    /// The budget's limit in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `Ok` if `needed` bytes (`None`: more than can be counted) fit this budget; else an
    /// error naming `what`, the bytes and the limit.
    pub fn check(&self, what: impl fmt::Display, needed: Option<u64>) -> Result<(), LimitError> {
        match needed {
            Some(n) if n <= self.bytes => Ok(()),
            _ => Err(LimitError {
                what: what.to_string(),
                needed,
                budget: self.clone(),
            }),
        }
    }
}

/// Bytes as a person reads them: `149.0 GiB`, `512.0 MiB`, `12.0 KiB`, `100 bytes`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The product of `dims`, or `None` where it overflows 64 bits.
pub fn product(dims: &[usize]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

/// Bytes of `count` values of `width` bytes each, or `None` where that overflows.
pub fn bytes_of(count: u64, width: usize) -> Option<u64> {
    count.checked_mul(width as u64)
}

/// The sum of sizes, `None` if any is `None` or the sum overflows.
pub fn sum(sizes: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    sizes
        .into_iter()
        .try_fold(0u64, |acc, s| acc.checked_add(s?))
}

/// An empty vector with room for `len` values, after checking their bytes against
/// `budget`; the reservation itself is fallible, so a failure is an error, never an abort.
pub fn vec_with_capacity<T>(
    len: usize,
    what: impl fmt::Display,
    budget: &Budget,
) -> crate::Result<Vec<T>> {
    let bytes = bytes_of(len as u64, std::mem::size_of::<T>());
    budget.check(&what, bytes)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| LimitError {
        what: format!("{what} (the allocator refused)"),
        needed: bytes,
        budget: budget.clone(),
    })?;
    Ok(v)
}

/// MemTotal from /proc/meminfo, in bytes.
fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of this process's cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`),
/// if one is set.
fn cgroup_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .and_then(|p| {
            std::fs::read_to_string(format!(
                "/sys/fs/cgroup{}/memory.max",
                p.trim_end_matches('/')
            ))
            .ok()
        });
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    // "max" (v2) or a near-2^63 value (v1) mean no limit.
    text.trim().parse::<u64>().ok().filter(|&b| b < 1 << 60)
}

/// Resident memory of this process (VmRSS in /proc/self/status), in bytes, where readable.
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Device memory wgpu holds for buffers on `gpu` (its backend's own accounting), where the
/// backend keeps one (Vulkan, DX12); `None` elsewhere (GL, Metal).
pub fn device_buffer_bytes(gpu: &crate::gpu::Gpu) -> Option<u64> {
    let c = gpu.device().get_internal_counters();
    let bytes = c.hal.buffer_memory.read();
    // Backends that keep no account leave the counter at 0; every live device holds buffers.
    (bytes > 0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(100), "100 bytes");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(160_000_000_000), "149.0 GiB");
    }

    #[test]
    fn checked_sizes() {
        assert_eq!(product(&[2, 3, 4]), Some(24));
        assert_eq!(product(&[usize::MAX, 2]), None);
        assert_eq!(product(&[]), Some(1));
        assert_eq!(bytes_of(u64::MAX / 2, 4), None);
        assert_eq!(sum([Some(1), Some(2)]), Some(3));
        assert_eq!(sum([Some(1), None]), None);
        assert_eq!(sum([Some(u64::MAX), Some(1)]), None);
    }

    #[test]
    fn a_size_over_its_budget_names_the_value_the_bytes_and_the_limit() {
        let b = Budget::stated(1 << 20, "the test's budget");
        assert!(b.check("x", Some(1 << 20)).is_ok());
        let e = b.check("hidden_size 100000", Some(2 << 20)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "hidden_size 100000 needs 2.0 MiB (2097152 bytes); the test's budget allows 1.0 MiB"
        );
        let e = b.check("shape [2^40, 2^40]", None).unwrap_err();
        assert!(e.to_string().contains("more than 2^64 bytes"), "{e}");
        let wrapped = crate::Error::from(e).context("loading");
        assert!(is_limit(&wrapped));
        assert!(matches!(&wrapped, crate::Error::Limit(m) if m.starts_with("loading: shape")));
        assert!(!is_limit(&crate::Error::Invalid("other".into())));
    }

    #[test]
    fn the_host_budget_is_the_machines_memory() {
        let b = Budget::host();
        assert!(b.bytes() >= 64 << 20, "{b}");
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(meminfo_total().is_some());
            assert!(b.bytes() <= meminfo_total().unwrap());
        }
    }

    #[test]
    fn an_oversized_vector_is_an_error_not_an_abort() {
        let e = vec_with_capacity::<f32>(usize::MAX / 2, "values", &Budget::host()).unwrap_err();
        assert!(is_limit(&e), "{e:#}");
        let v = vec_with_capacity::<f32>(10, "values", &Budget::host()).unwrap();
        assert!(v.capacity() >= 10);
    }
}
