//! A bounded cache of large freed blocks, in front of the system allocator.
//!
//! The sidecar gives every buffer of 1 MiB or more its own mapping ([`crate::serving::budget`]), so
//! resident memory follows what renders hold; but then each render faults in every page of its
//! decode and resize buffers afresh, which costs up to a third of a render's CPU on a virtual
//! machine. [`BlockCache`] keeps a few freed large blocks (at most [`set_capacity`] bytes, taken
//! from the memory budget at start-up) and hands them to the next allocation of a similar size:
//! the pages stay mapped and warm.
//!
//! Invariants: a cached block is a live allocation of the system allocator (glibc `malloc`)
//! that nothing else references; it is handed out only for a request it holds at most 25%
//! more than, with no stricter alignment than `malloc`'s; it is given back to the system when
//! it does not fit. Only `BlockCache`'s own binaries install it (`#[global_allocator]`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Blocks at least this large are cached (the sidecar's mapping threshold).
pub const MIN_BLOCK_BYTES: usize = 1 << 20;
/// Largest alignment a cached block serves: what glibc's `malloc` guarantees.
const MAX_ALIGN: usize = 16;
/// Cached blocks at most.
const SLOTS: usize = 16;

/// The system allocator with a bounded cache of large freed blocks; see the module docs.
pub struct BlockCache;

static CAPACITY: AtomicUsize = AtomicUsize::new(0);
/// `(address, usable bytes)` of each cached block; address 0 is an empty slot.
static CACHE: Mutex<Cache> = Mutex::new(Cache {
    slots: [(0, 0); SLOTS],
    bytes: 0,
});

struct Cache {
    slots: [(usize, usize); SLOTS],
    bytes: usize,
}

/// Sets how many bytes of freed blocks may be kept (0, the default, keeps none). Blocks
/// already cached beyond it are given back as they are taken or replaced.
pub fn set_capacity(bytes: usize) {
    CAPACITY.store(bytes, Ordering::Relaxed);
}

/// Bytes held in cached blocks now.
#[cfg(test)]
fn cached_bytes() -> usize {
    lock().bytes
}

fn lock() -> std::sync::MutexGuard<'static, Cache> {
    // Nothing panics while the lock is held: a poisoned lock is still consistent.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

fn cacheable(layout: Layout) -> bool {
    layout.size() >= MIN_BLOCK_BYTES && layout.align() <= MAX_ALIGN
}

/// A cached block for `size` bytes: the smallest holding it with at most 25% to spare.
fn take(size: usize) -> Option<*mut u8> {
    let mut cache = lock();
    let limit = size.saturating_add(size / 4);
    let best = (0..SLOTS)
        .filter(|&i| {
            let (addr, usable) = cache.slots[i];
            addr != 0 && usable >= size && usable <= limit
        })
        .min_by_key(|&i| cache.slots[i].1)?;
    let (addr, usable) = std::mem::take(&mut cache.slots[best]);
    cache.bytes -= usable;
    Some(addr as *mut u8)
}

/// Keeps `ptr` (`usable` bytes) when it fits in the capacity; `false` when the caller must
/// free it.
fn keep(ptr: *mut u8, usable: usize) -> bool {
    let mut cache = lock();
    if cache.bytes + usable > CAPACITY.load(Ordering::Relaxed) {
        return false;
    }
    let Some(slot) = cache.slots.iter_mut().find(|s| s.0 == 0) else {
        return false;
    };
    *slot = (ptr as usize, usable);
    cache.bytes += usable;
    true
}

/// The bytes `malloc` actually gave `ptr`.
fn usable_size(ptr: *mut u8) -> usize {
    // SAFETY: `ptr` is a live block of the system allocator (glibc `malloc`).
    unsafe { libc::malloc_usable_size(ptr.cast()) }
}

// SAFETY: every block handed out is either fresh from `System` or a cached `System` block no
// one references, at least as large as asked and `malloc`-aligned (checked by `cacheable`);
// blocks are freed to `System` exactly once, when not kept.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if cacheable(layout)
            && let Some(ptr) = take(layout.size())
        {
            return ptr;
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if cacheable(layout)
            && let Some(ptr) = take(layout.size())
        {
            // SAFETY: the block holds at least `layout.size()` bytes.
            unsafe { ptr.write_bytes(0, layout.size()) };
            return ptr;
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if cacheable(layout) && keep(ptr, usable_size(ptr)) {
            return;
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Every block, cached before or not, is the system allocator's: it resizes it.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the cache is process-wide.
    #[test]
    fn freed_large_blocks_are_reused_within_the_capacity() {
        let cache = BlockCache;
        let big = Layout::from_size_align(4 << 20, 8).unwrap();
        set_capacity(6 << 20);
        unsafe {
            let a = cache.alloc(big);
            a.write_bytes(7, big.size());
            cache.dealloc(a, big);
            assert!(cached_bytes() >= 4 << 20, "kept");
            // A similar size gets the same block, zeroed when asked.
            let smaller = Layout::from_size_align(7 << 19, 8).unwrap();
            let b = cache.alloc_zeroed(smaller);
            assert_eq!(b, a, "reused");
            assert_eq!(cached_bytes(), 0);
            assert!(
                std::slice::from_raw_parts(b, smaller.size())
                    .iter()
                    .all(|&x| x == 0)
            );
            // Much smaller requests do not take it (at most 25% to spare).
            cache.dealloc(b, smaller);
            let small = Layout::from_size_align(2 << 20, 8).unwrap();
            let c = cache.alloc(small);
            assert_ne!(c, a);
            // Over the capacity: given back.
            let d = cache.alloc(big);
            cache.dealloc(d, big);
            assert!(cached_bytes() <= 6 << 20);
            cache.dealloc(c, small);
            // Stricter alignments and small blocks are never cached.
            let aligned = Layout::from_size_align(4 << 20, 4096).unwrap();
            let e = cache.alloc(aligned);
            let before = cached_bytes();
            cache.dealloc(e, aligned);
            assert_eq!(cached_bytes(), before);
            set_capacity(0);
            // With no capacity, what is taken is not kept again.
            let f = cache.alloc(big);
            cache.dealloc(f, big);
            assert!(cached_bytes() <= before);
        }
    }
}
