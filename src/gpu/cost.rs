//! What a recorded dispatch costs, counted from the shape of the plan that records it.
//!
//! Every plan computes the [`Cost`] of each of its dispatches when it is built (with a comment
//! beside each kernel stating what one invocation reads and writes), hands it to
//! [`Recorder::dispatch`](super::Recorder::dispatch), and the recorder keeps one
//! [`DispatchCost`] per dispatch with the workgroup count it was given and the invocations per
//! workgroup the shader declares. So a cost table (`recur bench rnn --plan`) is the sum over
//! the recorded plan, not a second, hand-written model of it.
//!
//! These are counts, not measurements. `bytes_read` and `bytes_written` are what the kernel's
//! own loads and stores move between the invocations and global memory (storage buffers),
//! each access counted at its size, before any cache: an element that two workgroups read is
//! counted twice. `unique_read` counts each element read once: the traffic to DRAM when every
//! re-read within the dispatch hits a cache. Uniform buffers are not counted.

use serde::Serialize;

/// Floating-point operations and global-memory bytes of one dispatch (or a sum of them).
/// A multiply-add counts as two operations; transcendental functions count as one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Cost {
    /// Floating-point operations.
    pub flops: f64,
    /// Bytes read from global memory, each access counted (re-reads included).
    pub bytes_read: f64,
    /// Bytes written to global memory.
    pub bytes_written: f64,
    /// Bytes of distinct elements read (at most `bytes_read`).
    pub unique_read: f64,
}

impl Cost {
    /// No work at all: the start of a sum.
    pub const ZERO: Cost = Cost {
        flops: 0.0,
        bytes_read: 0.0,
        bytes_written: 0.0,
        unique_read: 0.0,
    };

    /// `n` times this cost (every count scaled).
    pub fn times(self, n: f64) -> Self {
        Self {
            flops: self.flops * n,
            bytes_read: self.bytes_read * n,
            bytes_written: self.bytes_written * n,
            unique_read: self.unique_read * n,
        }
    }

    /// A cost that reads nothing twice (`unique_read == bytes_read`).
    pub fn new(flops: f64, bytes_read: f64, bytes_written: f64) -> Self {
        Self {
            flops,
            bytes_read,
            bytes_written,
            unique_read: bytes_read,
        }
    }

    /// This cost with `unique` bytes of distinct elements among those it reads.
    pub fn with_unique_read(mut self, unique: f64) -> Self {
        self.unique_read = unique.min(self.bytes_read);
        self
    }

    /// `items` (invocations, elements, rows: whatever the plan counts) that each do `flops`
    /// and read and write the bytes given.
    pub fn per_item(items: usize, flops: f64, bytes_read: f64, bytes_written: f64) -> Self {
        let n = items as f64;
        Self::new(n * flops, n * bytes_read, n * bytes_written)
    }

    /// Bytes read and written as the kernel issues them.
    pub fn bytes(&self) -> f64 {
        self.bytes_read + self.bytes_written
    }

    /// Bytes that reach DRAM when every re-read hits a cache.
    pub fn unique_bytes(&self) -> f64 {
        self.unique_read + self.bytes_written
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            flops: self.flops + o.flops,
            bytes_read: self.bytes_read + o.bytes_read,
            bytes_written: self.bytes_written + o.bytes_written,
            unique_read: self.unique_read + o.unique_read,
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::ZERO, |a, b| a + b)
    }
}

/// Names a kernel in a cost table: its shader family and entry point, and the role the plan
/// gave it where one entry point serves several products (`gemm::main` as `dx`, `dW_ih`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelName {
    /// The shader family (the WGSL module, e.g. `gemm`, `recurrent`).
    pub family: &'static str,
    /// The entry point within the family.
    pub entry: &'static str,
    /// What the dispatch computes in its plan (`dx`, `dW_ih`, ...); empty where the entry point
    /// serves one purpose.
    pub role: &'static str,
}

impl std::fmt::Display for KernelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.family, self.entry)?;
        if !self.role.is_empty() {
            write!(f, " [{}]", self.role)?;
        }
        Ok(())
    }
}

/// One recorded dispatch: which kernel, how many workgroups of how many invocations, and its
/// cost.
#[derive(Clone, Copy, Debug)]
pub struct DispatchCost {
    /// The kernel dispatched.
    pub kernel: KernelName,
    /// Workgroups dispatched, all three dimensions multiplied.
    pub workgroups: u64,
    /// Invocations per workgroup, as the shader's `@workgroup_size` declares them (`None`
    /// where that is not a literal or a module constant).
    pub invocations: Option<u32>,
    /// What the dispatch computes and moves.
    pub cost: Cost,
}

/// Dispatches summed: a row of a cost table (one kernel and role, or a total).
#[derive(Clone, Debug, Serialize)]
pub struct KernelCost {
    /// The row's name: the kernel and role as [`KernelName`] displays them, or a total's label.
    pub kernel: String,
    /// Dispatches summed in the row.
    pub dispatches: u64,
    /// Workgroups of the smallest dispatch in the row.
    pub workgroups_min: u64,
    /// Workgroups of the largest dispatch in the row.
    pub workgroups_max: u64,
    /// Invocations per workgroup, where every dispatch has the same.
    pub invocations: Option<u32>,
    /// The summed cost.
    pub cost: Cost,
}

impl KernelCost {
    /// `dispatches` summed under the name `kernel`.
    pub fn sum<'a>(kernel: String, dispatches: impl IntoIterator<Item = &'a DispatchCost>) -> Self {
        let mut row = KernelCost {
            kernel,
            dispatches: 0,
            workgroups_min: 0,
            workgroups_max: 0,
            invocations: None,
            cost: Cost::ZERO,
        };
        for d in dispatches {
            row.workgroups_min = if row.dispatches == 0 {
                d.workgroups
            } else {
                row.workgroups_min.min(d.workgroups)
            };
            row.workgroups_max = row.workgroups_max.max(d.workgroups);
            row.invocations = match row.dispatches {
                0 => d.invocations,
                _ => row.invocations.filter(|&i| Some(i) == d.invocations),
            };
            row.dispatches += 1;
            row.cost += d.cost;
        }
        row
    }
}

/// The dispatches of each kernel and role: names in the order each first appears.
pub fn group_by_kernel(dispatches: &[DispatchCost]) -> Vec<(KernelName, Vec<&DispatchCost>)> {
    let mut groups: Vec<(KernelName, Vec<&DispatchCost>)> = Vec::new();
    for d in dispatches {
        match groups.iter_mut().find(|(n, _)| *n == d.kernel) {
            Some((_, list)) => list.push(d),
            None => groups.push((d.kernel, vec![d])),
        }
    }
    groups
}

/// Sums `dispatches` per kernel and role, in the order each first appears.
pub fn by_kernel(dispatches: &[DispatchCost]) -> Vec<KernelCost> {
    group_by_kernel(dispatches)
        .into_iter()
        .map(|(name, list)| KernelCost::sum(name.to_string(), list))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(entry: &'static str, role: &'static str, wg: u64, flops: f64) -> DispatchCost {
        DispatchCost {
            kernel: KernelName {
                family: "f",
                entry,
                role,
            },
            workgroups: wg,
            invocations: Some(64),
            cost: Cost::new(flops, 2.0 * flops, flops),
        }
    }

    #[test]
    fn rows_sum_per_kernel_and_role_in_first_seen_order() {
        let rows = by_kernel(&[
            d("a", "", 4, 1.0),
            d("b", "x", 8, 10.0),
            d("a", "", 2, 3.0),
            d("b", "y", 8, 100.0),
        ]);
        let names: Vec<&str> = rows.iter().map(|r| r.kernel.as_str()).collect();
        assert_eq!(names, ["f::a", "f::b [x]", "f::b [y]"]);
        assert_eq!(rows[0].dispatches, 2);
        assert_eq!((rows[0].workgroups_min, rows[0].workgroups_max), (2, 4));
        assert_eq!(rows[0].cost, Cost::new(4.0, 8.0, 4.0));
        assert_eq!(rows[0].invocations, Some(64));
        let shared = Cost::new(1.0, 10.0, 2.0).with_unique_read(4.0) + Cost::new(1.0, 3.0, 0.0);
        assert_eq!((shared.bytes(), shared.unique_bytes()), (15.0, 9.0));
        assert_eq!(rows[2].cost.flops, 100.0);
    }
}
