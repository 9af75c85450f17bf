//! Process-wide care of the C allocator. Every Rust allocation in
//! versa-server goes through glibc's malloc, whose defaults suit short-lived
//! buffers, not a server that loads and unloads 10–100 MB models.
//!
//! glibc raises its mmap threshold each time a large block is freed (up to
//! 32 MiB), so after a first model load the large buffers of loads,
//! warm-ups and inference come from the heap, and freed heap memory stays
//! resident: without help, the memory of an unloaded version or of a
//! load's transient buffers is never given back. Fixing the threshold low
//! (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…`) would return it, but
//! makes tract map and fault in every large activation on every run (≈50%
//! slower on a MobileNet-sized CNN, measured). So the server instead hands
//! free memory back at the moments it knows much was freed: after a load and
//! after an unload.
//!
//! A load's own peak is the other half: parsing and optimising allocate
//! and free buffers as large as the model several times over, and from the
//! heap those frees are not reused well. [`LargeBlocksMapped`] gives such
//! blocks their own mappings while it is held — for a load whose peak must
//! stay low, at the price of slower large allocations meanwhile.
//!
//! The only `unsafe` in the workspace is here: calls of `malloc_trim` and
//! `mallopt`, and [`PeakCounting`], the counting allocator of tests.

mod counting;
pub use counting::PeakCounting;

use std::sync::Mutex;

/// Returns the allocator's free memory to the kernel (every arena, including
/// free pages inside the heap, not only at its top). Costs a walk of the
/// heap — milliseconds for a few hundred MiB — so call it after large frees,
/// not per request. Returns whether any memory was released (always `false`
/// off glibc).
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free pages the allocator owns,
        // under its own locks; any thread may call it at any time, and it
        // touches no live allocation.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// While one is held: blocks of 64 KiB and more get their own mappings,
/// unmapped as soon as they are freed. When the last one is dropped the
/// threshold goes to 32 MiB, the most glibc's own moving threshold reaches,
/// so large blocks come from the heap again. Does nothing off glibc.
#[derive(Debug)]
pub struct LargeBlocksMapped(());

/// Guards held now.
static HELD: Mutex<usize> = Mutex::new(0);

const MAPPED_FROM: usize = 64 * 1024;
const HEAP_BELOW: usize = 32 * 1024 * 1024;

fn set_mmap_threshold(bytes: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(value) = libc::c_int::try_from(bytes) else {
            return false;
        };
        // SAFETY: mallopt only changes allocator parameters, under the
        // allocator's own lock; any thread may call it at any time.
        #[allow(unsafe_code)]
        let accepted = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) };
        accepted == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = bytes;
        false
    }
}

impl LargeBlocksMapped {
    pub fn hold() -> Self {
        let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *held == 0 {
            set_mmap_threshold(MAPPED_FROM);
        }
        *held += 1;
        Self(())
    }
}

impl Drop for LargeBlocksMapped {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *held = held.saturating_sub(1);
        if *held == 0 {
            set_mmap_threshold(HEAP_BELOW);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident set size from /proc.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_heap_memory_goes_back_to_the_kernel() {
        // 32 MiB in 16 KiB blocks (heap, not mmap), each followed by a small
        // block that stays: freeing the large ones leaves holes the heap
        // cannot shrink past, so they stay resident until trimmed.
        let mut large = Vec::new();
        let mut pins = Vec::new();
        for i in 0..2048u32 {
            large.push(vec![i as u8 | 1; 16 * 1024]);
            pins.push(Box::new(i));
        }
        let filled = rss_kib();
        drop(large);
        let freed = rss_kib();
        assert!(freed + 16 * 1024 > filled, "glibc kept the holes: {filled} → {freed} KiB");
        assert!(release_free_memory());
        let trimmed = rss_kib();
        assert!(trimmed + 16 * 1024 < freed, "RSS {freed} → {trimmed} KiB after the trim");
        std::hint::black_box(&pins);
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn large_blocks_are_unmapped_when_freed_while_held() {
        // Each round frees a 4 MiB block, then allocates a 64 KiB pin that
        // lands above it in the heap, so a block freed on the heap stays.
        let round = |pins: &mut Vec<Vec<u8>>| {
            let block = vec![1u8; 4 << 20];
            std::hint::black_box(&block);
            drop(block);
            pins.push(vec![1u8; 60 * 1024]);
        };
        let mut pins = Vec::new();
        {
            let _held = LargeBlocksMapped::hold();
            let before = rss_kib();
            for _ in 0..8 {
                round(&mut pins);
            }
            let after = rss_kib();
            assert!(after < before + 2048, "held: RSS {before} → {after} KiB");
        }
        assert!(set_mmap_threshold(HEAP_BELOW));
        assert!(!set_mmap_threshold(1 << 40), "beyond what glibc takes");
        std::hint::black_box(&pins);
    }
}
