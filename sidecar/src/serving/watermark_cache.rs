//! Decoded watermarks, kept in a bounded cache keyed by storage, key and ETag.
//!
//! A render with a watermark `HEAD`s it (its ETag is part of the rendition's ETag, so a
//! replaced watermark changes every ETag), then takes the decoded image from this cache, or
//! reads, decodes (on a render worker, within the memory budget) and keeps it. The cache holds
//! at most its capacity in decoded bytes (`[watermark] cache_bytes`, taken from the memory
//! budget at start-up), dropping the least recently used first; an image larger than the
//! capacity is used and not kept. Entries of a replaced watermark (another ETag) are never
//! read again and age out.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::pipeline::watermark::DecodedWatermark;

/// Bytes counted per entry on top of its pixels (key, bookkeeping), so that tiny watermarks
/// still bound the number of entries.
const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// A least-recently-used cache of decoded watermarks, bounded in bytes.
pub struct WatermarkCache {
    capacity: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bytes held, overhead included.
    used: u64,
    /// Last use, increasing.
    tick: u64,
    entries: HashMap<String, (u64, Arc<DecodedWatermark>)>,
    /// Keys by last use, oldest first.
    order: BTreeMap<u64, String>,
}

/// The cache key of a watermark object (keys never hold control characters: see
/// `pixmesh_core::keys::normalize`).
pub fn cache_key(storage: &str, key: &str, etag: &str) -> String {
    format!("{storage}\0{key}\0{etag}")
}

fn cost(image: &DecodedWatermark) -> u64 {
    image.bytes().saturating_add(ENTRY_OVERHEAD_BYTES)
}

impl WatermarkCache {
    /// A cache holding at most `capacity` bytes (0: nothing is kept).
    pub fn new(capacity: u64) -> WatermarkCache {
        WatermarkCache {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data: every update
        // below completes before the guard drops.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The image kept under `key`, marked as just used.
    pub fn get(&self, key: &str) -> Option<Arc<DecodedWatermark>> {
        let mut s = self.state();
        s.tick += 1;
        let tick = s.tick;
        let (last, image) = s.entries.get_mut(key)?;
        let previous = std::mem::replace(last, tick);
        let image = Arc::clone(image);
        s.order.remove(&previous);
        s.order.insert(tick, key.to_owned());
        Some(image)
    }

    /// Keeps `image` under `key`, dropping the least recently used entries until it fits; an
    /// image larger than the whole capacity is not kept.
    pub fn insert(&self, key: String, image: Arc<DecodedWatermark>) {
        let size = cost(&image);
        if size > self.capacity {
            return;
        }
        let mut s = self.state();
        if let Some((last, old)) = s.entries.remove(&key) {
            s.order.remove(&last);
            s.used = s.used.saturating_sub(cost(&old));
        }
        while s.used.saturating_add(size) > self.capacity {
            let Some((_, oldest)) = s.order.pop_first() else {
                break;
            };
            if let Some((_, old)) = s.entries.remove(&oldest) {
                s.used = s.used.saturating_sub(cost(&old));
            }
        }
        s.tick += 1;
        let tick = s.tick;
        s.used += size;
        s.order.insert(tick, key.clone());
        s.entries.insert(key, (tick, image));
    }

    /// Bytes held (pixels plus a fixed overhead per entry): never over the capacity.
    pub fn used(&self) -> u64 {
        self.state().used
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(side: u32) -> Arc<DecodedWatermark> {
        let bytes = vec![0; (side * side * 4) as usize];
        Arc::new(DecodedWatermark::from_rgba(side, side, bytes).unwrap())
    }

    #[test]
    fn holds_at_most_its_capacity_dropping_the_least_recently_used() {
        // 16×16 RGBA = 1024 bytes + 256 overhead = 1280 per entry: three fit in 4000.
        let cache = WatermarkCache::new(4000);
        for k in ["a", "b", "c"] {
            cache.insert(k.into(), image(16));
        }
        assert_eq!((cache.len(), cache.used()), (3, 3840));
        assert!(cache.get("a").is_some(), "a is now the most recent");
        cache.insert("d".into(), image(16));
        assert_eq!(cache.len(), 3);
        assert!(cache.get("b").is_none(), "b was the least recently used");
        for k in ["a", "c", "d"] {
            assert!(cache.get(k).is_some(), "{k}");
        }
        // A larger image evicts as many as it needs.
        cache.insert("big".into(), image(28)); // 3136 + 256
        assert!(cache.used() <= 4000, "{}", cache.used());
        assert_eq!(cache.len(), 1);
        assert!(cache.get("big").is_some());
        // Larger than everything: used by the caller, never kept.
        cache.insert("huge".into(), image(64));
        assert!(cache.get("huge").is_none());
        assert!(cache.get("big").is_some(), "nothing was evicted for it");
        // Replacing a key does not count it twice.
        cache.insert("big".into(), image(28));
        assert_eq!(cache.used(), 3136 + 256);
    }

    #[test]
    fn a_zero_capacity_keeps_nothing_and_keys_tell_etags_apart() {
        let cache = WatermarkCache::new(0);
        cache.insert("a".into(), image(1));
        assert!(cache.is_empty());
        assert_ne!(cache_key("s", "k", "\"1\""), cache_key("s", "k", "\"2\""));
        assert_ne!(cache_key("s", "k", "\"1\""), cache_key("t", "k", "\"1\""));
    }
}
