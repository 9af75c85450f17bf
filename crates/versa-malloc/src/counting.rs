//! [`PeakCounting`]: the system allocator, counting the bytes held and the
//! most held since a mark — for tests that prove a decoder stays within
//! its memory budget (`#[global_allocator]` in a test binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator with byte counts; see [`PeakCounting::mark`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PeakCounting;

impl PeakCounting {
    /// Starts a measurement: the peak is reset to what is held now.
    pub fn mark() {
        PEAK.store(HELD.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// The most bytes held at once since [`PeakCounting::mark`], beyond
    /// what was held at the mark.
    pub fn peak_since_mark(held_at_mark: usize) -> usize {
        PEAK.load(Ordering::SeqCst).saturating_sub(held_at_mark)
    }

    /// Bytes held now.
    pub fn held() -> usize {
        HELD.load(Ordering::SeqCst)
    }

    /// Runs `f` and returns its result with the most bytes it held at once.
    pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let before = Self::held();
        Self::mark();
        let result = f();
        (result, Self::peak_since_mark(before))
    }
}

fn add(n: usize) {
    let now = HELD.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

fn sub(n: usize) {
    HELD.fetch_sub(n, Ordering::SeqCst);
}

// SAFETY: every call is passed on unchanged to the system allocator; the
// counting around it touches only atomics.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for PeakCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a new block held beside the old one until the copy is
        // done: the most a moving realloc holds.
        add(new_size);
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            sub(new_size);
        } else {
            sub(layout.size());
        }
        p
    }
}
