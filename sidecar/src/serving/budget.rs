//! The memory budget, in two parts, so that everything image-sized the process holds is
//! inside `memory_budget_bytes`:
//! - **reads** ([`Shares::sources`]): a storage read (a source, its copy in source storage, a
//!   result-storage hit, a watermark object) reserves the object's declared size once the
//!   storage has answered and before any byte is read, waiting in arrival order
//!   ([`crate::storage::Gate`], [`crate::serving::render`]'s `ReadsGate`); a body longer than
//!   declared is refused. The object keeps it until its last holder (the render, the response,
//!   a background write) drops it;
//! - **renders** ([`Shares::renders`]): every render reserves, before it starts, an upper bound
//!   of what it will allocate ([`crate::pipeline::memory_needed`]; its source is already counted
//!   in the reads share), and waits while the reservations of the renders already running leave
//!   too little. A render that alone needs more than the whole share is refused (413) instead
//!   of waiting forever. A rendered response holds its bytes' share of it until it is sent.
//!
//! Reservations are counted in KiB (rounded up), so budgets up to terabytes fit the semaphore.
//! Waiting never deadlocks: a request waits for the reads share holding nothing of either
//! share (one read at a time: the watermark is read and decoded before the source), and for the
//! renders share holding at most its objects' part of the reads share, which nothing holding
//! the renders share ever waits for (running renders and responses being sent release theirs
//! without waiting for anything).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The render alone needs more than the whole budget (HTTP 413).
    #[error(
        "rendering this image needs about {needed_mib} MiB, more than the memory budget of {budget_mib} MiB"
    )]
    TooLarge {
        /// What the render needs, in MiB.
        needed_mib: u64,
        /// The whole budget, in MiB.
        budget_mib: u64,
    },
}

/// A byte budget shared by all renders.
#[derive(Debug)]
pub struct MemoryBudget {
    kib: Arc<Semaphore>,
    total_kib: u64,
}

/// Memory reserved for one render or one object read; returned to the budget on drop.
#[derive(Debug)]
pub struct Reservation(OwnedSemaphorePermit);

impl Reservation {
    /// Bytes reserved (a multiple of 1 KiB).
    pub fn bytes(&self) -> u64 {
        self.0.num_permits() as u64 * 1024
    }
}

impl MemoryBudget {
    /// A budget of `bytes` (at least 1 KiB).
    pub fn new(bytes: u64) -> Self {
        // One acquisition takes at most `u32::MAX` permits: budgets up to 4 TiB.
        let total_kib = (bytes / 1024).clamp(1, u64::from(u32::MAX));
        MemoryBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// KiB not reserved now.
    pub fn available_kib(&self) -> u64 {
        self.kib.available_permits() as u64
    }

    /// Reserves `bytes`, waiting (in arrival order) until enough is free.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, BudgetError> {
        let kib = bytes.div_ceil(1024).max(1);
        if kib > self.total_kib {
            return Err(BudgetError::TooLarge {
                needed_mib: kib.div_ceil(1024),
                budget_mib: self.total_kib / 1024,
            });
        }
        // `kib` ≤ `total_kib` ≤ `u32::MAX`, and the budget is never closed.
        let permit = Arc::clone(&self.kib)
            .acquire_many_owned(kib as u32)
            .await
            .expect("the memory budget is never closed");
        Ok(Reservation(permit))
    }
}

/// How `memory_budget_bytes` is shared out: the watermark cache's capacity first, then the
/// freed large blocks kept for reuse ([`crate::serving::block_cache`]: an eighth of the rest, at
/// most 64 MiB, never leaving less than twice the largest source), then the objects read
/// outside renders' reservations (a quarter of the rest, at least `max_source_bytes`); renders
/// reserve from what remains. The configuration checks that the watermark cache leaves twice
/// `max_source_bytes`, so renders get at least `max_source_bytes` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// What renders (and rendered responses) reserve from.
    pub renders: u64,
    /// The large-block cache's capacity.
    pub blocks: u64,
    /// What objects read from storage (sources, source copies, result-storage hits, watermark
    /// objects) reserve from, from their read until their last holder drops them.
    pub sources: u64,
}

impl Shares {
    /// The shares of `memory_budget_bytes` beside a watermark cache of `watermark_cache_bytes`.
    pub fn of(memory_budget_bytes: u64, watermark_cache_bytes: u64, max_source_bytes: u64) -> Self {
        let rest = memory_budget_bytes.saturating_sub(watermark_cache_bytes);
        let blocks = (rest / 8)
            .min(64 << 20)
            .min(rest.saturating_sub(max_source_bytes.saturating_mul(2)));
        // Whole KiB, so a read of `max_source_bytes` always fits the share.
        let sources = (rest / 4)
            .max(max_source_bytes.div_ceil(1024).saturating_mul(1024))
            .min(rest - blocks);
        Shares {
            renders: rest - blocks - sources,
            blocks,
            sources,
        }
    }
}

/// Buffers at least this large get their own mapping from the allocator, returned to the OS
/// when freed (glibc only).
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;
/// glibc malloc arenas (it defaults to eight per core).
const ARENA_MAX: i32 = 2;

/// Makes the process's resident memory follow what renders hold, so the budget bounds it:
/// image-sized buffers are mapped and unmapped on their own instead of fragmenting the heap
/// (glibc's default raises the mapping threshold to the largest buffer freed so far, up to
/// 32 MiB), and at most [`ARENA_MAX`] arenas each keep freed memory. Measured on 64 concurrent
/// 16-megapixel renders (sidecar/tests/memory_budget.rs): twice the peak without it. The same
/// advice libvips gives for imgproxy (`MALLOC_ARENA_MAX=2`). Call once, before serving;
/// `MALLOC_*` environment variables set by an operator win. No-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| std::env::var_os(name).is_none();
        // SAFETY: `mallopt` only sets allocator parameters; both are valid for glibc.
        unsafe {
            if unset("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            }
            if unset("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_out_watermarks_blocks_sources_then_renders() {
        const MIB: u64 = 1 << 20;
        let parts = |s: Shares| (s.renders, s.blocks, s.sources);
        // An eighth of what the watermark cache leaves for blocks, at most 64 MiB; a quarter
        // for sources, at least the largest one.
        assert_eq!(
            parts(Shares::of(100 * MIB, 16 * MIB, 16 * MIB)),
            (84 * MIB - 84 * MIB / 8 - 21 * MIB, 84 * MIB / 8, 21 * MIB)
        );
        assert_eq!(
            parts(Shares::of(100 * MIB, 16 * MIB, 32 * MIB)),
            (84 * MIB - 84 * MIB / 8 - 32 * MIB, 84 * MIB / 8, 32 * MIB)
        );
        assert_eq!(
            parts(Shares::of(1024 * MIB, 16 * MIB, 128 * MIB)),
            (1008 * MIB - 64 * MIB - 252 * MIB, 64 * MIB, 252 * MIB)
        );
        // Blocks never leave less than the largest source to each of sources and renders.
        assert_eq!(
            parts(Shares::of(80 * MIB, 0, 38 * MIB)),
            (38 * MIB, 4 * MIB, 38 * MIB)
        );
        // Sources in whole KiB: a read of the largest always fits.
        let s = Shares::of(8000, 0, 3000);
        assert_eq!(
            (s.sources, MemoryBudget::new(s.sources).total_kib),
            (3072, 3)
        );
        // Every byte is in one share; none is left when the watermark cache takes it all.
        for (budget, wm, max) in [(100, 16, 32), (1024, 16, 128), (300, 0, 150), (64, 0, 8)] {
            let s = Shares::of(budget * MIB, wm * MIB, max * MIB);
            assert_eq!(s.renders + s.blocks + s.sources, (budget - wm) * MIB);
            assert!(s.sources >= max * MIB && s.renders >= max * MIB, "{s:?}");
        }
        assert_eq!(parts(Shares::of(10 * MIB, 16 * MIB, MIB)), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_reservation_counts_whole_kib_and_returns_them_on_drop() {
        let budget = MemoryBudget::new(10 << 20);
        let read = budget.reserve(1500).await.unwrap();
        assert_eq!(read.bytes(), 2048, "rounded up to a KiB");
        assert_eq!(budget.available_kib(), (10 << 10) - 2);
        drop(read);
        assert_eq!(budget.available_kib(), 10 << 10, "all returned");
    }

    #[tokio::test]
    async fn reservations_wait_for_memory_and_return_it() {
        let budget = Arc::new(MemoryBudget::new(10 << 20));
        let first = budget.reserve(6 << 20).await.unwrap();
        assert_eq!(budget.available_kib(), 4 << 10);
        let second = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.reserve(6 << 20).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "6 MiB do not fit in the 4 left");
        drop(first);
        second.await.unwrap().unwrap();
        assert_eq!(budget.available_kib(), 10 << 10, "all returned");
    }

    #[tokio::test]
    async fn a_render_larger_than_the_budget_is_refused_not_queued() {
        let budget = MemoryBudget::new(64 << 20);
        let err = budget.reserve(65 << 20).await.unwrap_err();
        assert_eq!(
            err,
            BudgetError::TooLarge {
                needed_mib: 65,
                budget_mib: 64
            }
        );
        assert_eq!(
            err.to_string(),
            "rendering this image needs about 65 MiB, more than the memory budget of 64 MiB"
        );
        budget
            .reserve(64 << 20)
            .await
            .expect("exactly the budget fits");
    }
}
