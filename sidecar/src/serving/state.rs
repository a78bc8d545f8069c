//! The shared render state: [`Renderer`] (storages, result and source storage, limits, the
//! pool, the budget, flights, caches, counters), the background writes, and what flows between
//! the render's steps (sources, lookups, renditions, bodies holding their share of the budget).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use pixmesh_core::keys::SafeChars;
use pixmesh_core::render::{RenderRequest, digest_result_key, result_key};
use pixmesh_core::watermark::Watermark;
use tonic::metadata::MetadataValue;

use crate::config::Limits;
use crate::pipeline;
use crate::pipeline::watermark::DecodedWatermark;
use crate::serving::budget::{MemoryBudget, Reservation};
use crate::serving::flight::Flights;
use crate::serving::pool::{Admission, WorkerPool};
use crate::serving::status::RenderError;
use crate::serving::watermark_cache::WatermarkCache;
use crate::storage::{Object, S3Storage, Storage};

/// Where renditions are kept.
pub struct ResultStore {
    /// The bucket.
    pub storage: S3Storage,
    /// Key prefix of every rendition.
    pub base_dir: String,
    /// Only renditions of sources under this prefix are kept ([`pixmesh_core::role`]).
    pub path_prefix: String,
    /// How rendition keys are named under `base_dir`.
    pub keys: ResultKeys,
    /// Re-render when the source's ETag differs from the one the rendition was made from.
    pub verify_source: bool,
    /// Renditions older than this count as missing.
    pub expiration: Option<Duration>,
    /// A failed write fails the response (else it is logged and counted only).
    pub report_errors: bool,
}

/// Where copies of sources are kept (the storage role) and read before the loader.
pub struct SourceStore {
    /// The bucket.
    pub storage: S3Storage,
    /// Key prefix of every copy.
    pub base_dir: String,
    /// Only sources under this prefix are copied ([`pixmesh_core::role`]).
    pub path_prefix: String,
    /// Copies older than this count as missing.
    pub expiration: Option<Duration>,
}

/// How rendition keys are named (`[result_storage] path_style`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultKeys {
    /// The canonical request escaped with these safe characters (the result storage's
    /// `safe_chars`).
    Path(SafeChars),
    /// The SHA-1 of the canonical request, `ab/cd/ef…`.
    Digest,
}

impl ResultStore {
    /// The key of the rendition `req` asks for: its name ([`RenderRequest::result_path`], set
    /// on routes with imagor's result keys) or else its canonical form, escaped or hashed as
    /// the path style says.
    pub fn key(&self, req: &RenderRequest) -> String {
        let canonical;
        let name = match &req.result_path {
            Some(name) => name,
            None => {
                canonical = req.canonical();
                &canonical
            }
        };
        match &self.keys {
            ResultKeys::Path(safe) => result_key(&self.base_dir, name, safe),
            ResultKeys::Digest => digest_result_key(&self.base_dir, name),
        }
    }
}

/// Counters for operators and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Rendition writes to result storage that failed (they do not fail a response).
    pub result_write_failures: AtomicU64,
    /// Source reads started (one per flight of identical requests).
    pub source_reads: AtomicU64,
    /// Renders started (one per flight of identical requests).
    pub renders: AtomicU64,
    /// Watermarks read and decoded (one per flight of renders needing one not in the cache).
    pub watermark_decodes: AtomicU64,
    /// Sources served from their copy in source storage.
    pub source_copy_hits: AtomicU64,
    /// Source copies that could not be written (they do not fail a response).
    pub source_copy_write_failures: AtomicU64,
    /// Background writes (result storage, source copies) skipped because every slot was busy.
    pub writes_skipped: AtomicU64,
    /// What the render flow records for Prometheus (the counters above are sampled at each
    /// scrape: [`crate::serving::observe`]).
    pub metrics: crate::telemetry::metrics::Metrics,
}

/// Writes made after the response (renditions, source copies), at most so many at once: a
/// burst of misses against a slow store cannot pile up tasks and the bytes they hold. Past the
/// limit a write is skipped (counted, logged): a later request renders or reads again.
#[derive(Debug)]
pub struct BackgroundWrites(Arc<tokio::sync::Semaphore>);

impl BackgroundWrites {
    /// At most `limit` (at least 1) writes at once.
    pub fn new(limit: usize) -> Self {
        BackgroundWrites(Arc::new(tokio::sync::Semaphore::new(limit.max(1))))
    }

    /// Runs `write` in the background when a slot is free; `false` (and `write` dropped) when
    /// none is.
    pub(super) fn spawn(&self, write: impl Future<Output = ()> + Send + 'static) -> bool {
        match Arc::clone(&self.0).try_acquire_owned() {
            Ok(slot) => {
                let write = crate::telemetry::traces::carry(write);
                tokio::spawn(async move {
                    write.await;
                    drop(slot);
                });
                true
            }
            Err(_) => false,
        }
    }
}

/// Work in flight, shared by identical concurrent requests.
#[derive(Default)]
pub struct InFlight {
    /// Source reads, by storage and key.
    pub(super) sources: Flights<Result<Source, RenderError>>,
    /// Renders (and their result-storage write), by rendition ETag.
    pub(super) renders: Flights<Result<Rendered, RenderError>>,
    /// Watermark reads and decodes, by watermark cache key (storage, key and ETag).
    pub(super) watermarks: Flights<Result<Arc<DecodedWatermark>, RenderError>>,
    /// Result-storage lookups, by rendition key.
    pub(super) results: Flights<Result<Lookup, RenderError>>,
}

/// A source in memory, with the pool admission that lets it be there and its bytes' share of
/// the reads budget ([`Renderer::reads`]): both released when the last request sharing it (and
/// its copy's background write) is done.
#[derive(Clone)]
pub(super) struct Source {
    pub(super) object: Object,
    pub(super) admission: Arc<Admission>,
    pub(super) held: Arc<Reservation>,
}

/// What a render knows of its watermark before reading it: its ETag (`HEAD`), the key of its
/// decoded image in the cache, and what the request asks of it.
#[derive(Clone)]
pub(super) struct WatermarkHead {
    pub(super) etag: String,
    pub(super) cache_key: String,
    pub(super) spec: Watermark,
}

/// What result storage answered for a rendition, shared by the requests of one flight.
#[derive(Clone)]
pub(super) enum Lookup {
    /// Serve this stored rendition.
    Hit(Stored),
    /// Render; `watermark` is the watermark's `HEAD` when checking the stored rendition made
    /// one and it succeeded.
    Miss { watermark: Option<WatermarkHead> },
}

/// A rendered image, cheap to share between the requests of one flight.
#[derive(Clone)]
pub(super) struct Rendered {
    pub(super) body: Body,
    pub(super) content_type: String,
    pub(super) last_modified: Option<String>,
}

/// A rendition read from result storage, with its share of the reads budget (the reservation
/// its read took: its size).
#[derive(Clone)]
pub(super) struct Stored {
    pub(super) object: Object,
    pub(super) held: Arc<Reservation>,
}

/// Image bytes and the share of the memory budget they hold until the last response sending
/// them is done (a slow client keeps both): responses count against the budget like renders.
#[derive(Clone)]
pub(super) struct Body {
    pub(super) bytes: Bytes,
    pub(super) held: Arc<Reservation>,
}

/// Everything a render needs, shared by all requests.
pub struct Renderer {
    /// Named source storages.
    pub storages: HashMap<String, Storage>,
    /// Each storage's fallbacks, tried in order when an object is not found in it.
    pub fallbacks: HashMap<String, Vec<String>>,
    /// Result storage, if configured.
    pub results: Option<ResultStore>,
    /// Source storage (copies of sources), if configured.
    pub sources: Option<SourceStore>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Resource limits.
    pub limits: Limits,
    /// Encoder defaults for requests that name no quality or scan mode.
    pub encoding: pipeline::Encoding,
    /// `Cache-Control` of every rendition.
    pub cache_control: MetadataValue<tonic::metadata::Ascii>,
    /// Renders run here: one per core, with a bounded queue.
    pub workers: WorkerPool,
    /// What renders in progress, and rendered responses, may allocate together
    /// ([`crate::serving::budget::Shares::renders`]).
    pub budget: MemoryBudget,
    /// What objects read from storage may hold from their read until their last holder drops
    /// them: sources, source copies, result-storage hits, watermark objects
    /// ([`crate::serving::budget::Shares::sources`]).
    pub reads: MemoryBudget,
    /// Source reads and renders in flight.
    pub in_flight: InFlight,
    /// Decoded watermarks.
    pub watermarks: WatermarkCache,
    /// Writes made after the response.
    pub background: BackgroundWrites,
    /// The watermark URLs asking for the default one get (`[watermark]` storage and key).
    pub default_watermark: Option<(String, String)>,
}

/// The outcome of a successful render.
pub(super) enum Rendition {
    /// The client's copy is current.
    NotModified { etag: String },
    /// The image.
    Image {
        body: Body,
        content_type: String,
        etag: String,
        last_modified: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    #[tokio::test]
    async fn background_writes_past_the_limit_are_skipped_not_queued() {
        let writes = BackgroundWrites::new(2);
        let (release, gate) = tokio::sync::watch::channel(false);
        let hold = |mut gate: watch::Receiver<bool>| async move {
            let _ = gate.wait_for(|open| *open).await;
        };
        assert!(writes.spawn(hold(gate.clone())));
        assert!(writes.spawn(hold(gate.clone())));
        assert!(!writes.spawn(hold(gate.clone())), "both slots are busy");
        release.send(true).unwrap();
        while writes.0.available_permits() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(writes.spawn(async {}), "a slot is free again");
    }
}
