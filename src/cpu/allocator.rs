//! The process allocator, set up for the CPU path's pattern of use: every pass allocates and
//! frees buffers of megabytes (activations, gradients, outputs). With glibc's defaults, a
//! buffer above the mmap threshold is a fresh mapping, and freed memory at the top of the
//! heap beyond the trim threshold goes back to the kernel; either way the next pass touches
//! pages the kernel must fault in and zero again. That cost 3.2 against 1.8-2.2 ms of a
//! 3.5 ms LSTM training pass at 64 x 8 x 100, and 10-15% at 256 x 32 x 100
//! (BENCHMARKS.md).
//!
//! A library must not change its host process's allocator, so this is for programs: the
//! `recur` binary calls it first thing. It is what PyTorch's performance guide does with
//! jemalloc or tcmalloc, within glibc.

/// Most freed memory glibc keeps at the top of its heap instead of returning it.
const TRIM_THRESHOLD: usize = 512 << 20;

/// Requests from this size up get a mapping of their own (glibc's ceiling for the setting):
/// the buffers of a pass stay below it and come from the heap, where freed memory is reused.
const MMAP_THRESHOLD: usize = 32 << 20;

/// Keeps freed memory for reuse (glibc on Linux; elsewhere nothing to do). Returns whether
/// the allocator took the settings.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before other threads
        // exist (the binary's first statement), as glibc's manual asks.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory());
    }
}
