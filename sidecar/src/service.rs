//! The gRPC image service: `Render` (streaming, behind the transcoder), `RenderUnary` (call
//! mode) and `Health`.
//!
//! One render, in order:
//! 1. convert the proto request into the canonical [`RenderRequest`] (pixmesh-core);
//! 2. serve from result storage when the rendition is there, not expired, and (with
//!    `verify_source`) made from the source's (and the watermark's) current ETag, which
//!    concurrent `HEAD`s tell (304 when `If-None-Match` matches); a version never changes, so
//!    renditions of one are not verified;
//! 3. be admitted to the worker pool (two requests per core hold a source at a time, 503 when
//!    the queue of those waiting is full), then read the source (the requested version of it,
//!    when one is; S3 storages only, else 501), from the storage's fallbacks in order when it is
//!    not found (404/403/413/503/504 from the storage);
//! 4. answer 304 when `If-None-Match` matches the rendition's ETag, without rendering (with a
//!    watermark, its ETag, from a `HEAD` before the source is read, is part of the rendition's);
//! 5. render on a blocking worker, at most one per core, once the memory budget holds the
//!    source and what the render will allocate (413 when that alone exceeds the budget); a
//!    watermark comes from the cache of decoded ones ([`crate::watermarks`]) or is read and
//!    decoded first, on a worker and within the budget too;
//! 6. stream the image, and write it to result storage: in the background (failures logged and
//!    counted), or before answering with `report_errors`.
//!
//! Steps 3 and 5–6 are single-flight ([`Flights`]): identical requests arriving together share
//! one source read (per storage and key) and one render and write (per rendition ETag); renders
//! needing one watermark at the same time share its read and decode.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use bytes::Bytes;
use pixmesh_core::keys::SafeChars;
use pixmesh_core::render::{
    RenderRequest, digest_result_key, etag, if_none_match, is_version_id, result_key, varied_etag,
};
use pixmesh_core::role;
use pixmesh_core::transform::{
    Color, CropSpecError, Fit, Format, HAlign, Hundredths, MAX_DIMENSION, MAX_SHARPEN_AMOUNT,
    MAX_SIGMA, OutputFormat, Rotation, Sharpen, Transform, VAlign,
};
use pixmesh_core::vouch::{self, Voucher};
use pixmesh_core::watermark::{Axis, Offset, Watermark, WatermarkImage, parse_opacity, parse_size};
use pixmesh_proto::google::api::HttpBody;
use pixmesh_proto::v1;
use tokio_stream::Stream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use crate::budget::{MemoryBudget, Reservation};
use crate::config::Limits;
use crate::error::RenderError;
use crate::flight::Flights;
use crate::pipeline;
use crate::pipeline::watermark::{DecodedWatermark, Overlay};
use crate::pool::{Admission, WorkerPool};
use crate::storage::{Head, Object, S3Storage, Storage, StorageError, http_date};
use crate::watermarks::WatermarkCache;

/// Size of each streamed `HttpBody` message.
const CHUNK: usize = 64 * 1024;

/// User-metadata names kept with each rendition in result storage: its ETag, and the source's
/// `Last-Modified` and ETag it was made from.
const META_ETAG: &str = "pixmesh-etag";
const META_SOURCE_MODIFIED: &str = "pixmesh-source-last-modified";
const META_SOURCE_ETAG: &str = "pixmesh-source-etag";
/// The ETag of the watermark a rendition was made with (renditions with one only).
const META_WATERMARK_ETAG: &str = "pixmesh-watermark-etag";

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

/// User-metadata names kept with each source copy: the loader storage it was read from (keys
/// of several storages may map onto one copy; a copy of another storage's object is a miss),
/// and the original's ETag and `Last-Modified`, which renditions made from the copy carry.
const META_COPY_STORAGE: &str = "pixmesh-copy-of-storage";
const META_COPY_ETAG: &str = "pixmesh-copy-of-etag";
const META_COPY_MODIFIED: &str = "pixmesh-copy-of-last-modified";
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
    /// The key of the rendition whose canonical request is `canonical`.
    pub fn key(&self, canonical: &str) -> String {
        match &self.keys {
            ResultKeys::Path(safe) => result_key(&self.base_dir, canonical, safe),
            ResultKeys::Digest => digest_result_key(&self.base_dir, canonical),
        }
    }
}

/// Whether an object last modified at `modified` is older than `expiration` at `now`: never
/// without an expiration or a `Last-Modified`; a time in the future counts as new.
fn expired(expiration: Option<Duration>, modified: Option<DateTime>, now: SystemTime) -> bool {
    let (Some(max_age), Some(modified)) = (expiration, modified) else {
        return false;
    };
    SystemTime::try_from(modified)
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age > max_age)
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
    fn spawn(&self, write: impl Future<Output = ()> + Send + 'static) -> bool {
        match Arc::clone(&self.0).try_acquire_owned() {
            Ok(slot) => {
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
    sources: Flights<Result<Source, RenderError>>,
    /// Renders (and their result-storage write), by rendition ETag.
    renders: Flights<Result<Rendered, RenderError>>,
    /// Watermark reads and decodes, by watermark cache key (storage, key and ETag).
    watermarks: Flights<Result<Arc<DecodedWatermark>, RenderError>>,
    /// Result-storage lookups, by rendition key.
    results: Flights<Result<Lookup, RenderError>>,
}

/// A source in memory, with the pool admission that lets it be there: released when the last
/// request sharing it is done.
#[derive(Clone)]
struct Source {
    object: Object,
    admission: Arc<Admission>,
}

/// What a render knows of its watermark before reading it: its ETag (`HEAD`), the key of its
/// decoded image in the cache, and what the request asks of it.
#[derive(Clone)]
struct WatermarkHead {
    etag: String,
    cache_key: String,
    spec: Watermark,
}

/// What result storage answered for a rendition, shared by the requests of one flight.
#[derive(Clone)]
enum Lookup {
    /// Serve this stored rendition.
    Hit(Stored),
    /// Render; `watermark` is the watermark's `HEAD` when checking the stored rendition made
    /// one and it succeeded.
    Miss { watermark: Option<WatermarkHead> },
}

/// A rendered image, cheap to share between the requests of one flight.
#[derive(Clone)]
struct Rendered {
    body: Body,
    content_type: String,
    last_modified: Option<String>,
}

/// A rendition read from result storage, with its share of the memory budget.
#[derive(Clone)]
struct Stored {
    object: Object,
    held: Arc<Reservation>,
}

/// Image bytes and the share of the memory budget they hold until the last response sending
/// them is done (a slow client keeps both): responses count against the budget like renders.
#[derive(Clone)]
struct Body {
    bytes: Bytes,
    held: Arc<Reservation>,
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
    /// What renders in progress may allocate together.
    pub budget: MemoryBudget,
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
enum Rendition {
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

impl Renderer {
    /// Rendition writes to result storage that failed so far.
    pub fn result_write_failures(&self) -> u64 {
        self.stats.result_write_failures.load(Ordering::Relaxed)
    }

    /// The storage named `name` followed by its fallbacks; for a `versioned` read only the
    /// fallbacks that have versions (an S3 replica keeps its source's version IDs; a directory
    /// cannot hold the version).
    fn chain(&self, name: &str, versioned: bool) -> Result<Vec<&Storage>, RenderError> {
        let unknown = || RenderError::UnknownStorage(name.to_owned());
        let mut chain = vec![self.storages.get(name).ok_or_else(unknown)?];
        for fallback in self.fallbacks.get(name).into_iter().flatten() {
            let storage = self.storages.get(fallback).ok_or_else(unknown)?;
            if !versioned || storage.has_versions() {
                chain.push(storage);
            }
        }
        Ok(chain)
    }

    async fn render(
        &self,
        mut req: RenderRequest,
        if_none: Option<&str>,
    ) -> Result<Rendition, RenderError> {
        if let Some(w) = &mut req.watermark
            && w.image == WatermarkImage::Default
        {
            let (storage, key) = self
                .default_watermark
                .clone()
                .ok_or(RenderError::NoDefaultWatermark)?;
            w.image = WatermarkImage::Object { storage, key };
        }
        let version = req.version.as_deref();
        let chain = self.chain(&req.storage, version.is_some())?;
        // The pixels never depend on the cache key's values (sources are read with the
        // sidecar's credentials, never the client's headers or cookies): one render and one
        // stored rendition serve them all, so a client cannot mint renders and writes by
        // varying them; only the ETag differs per value ([`varied_etag`]).
        let pixels = RenderRequest {
            cache_key: None,
            ..req.clone()
        };
        let canonical = pixels.canonical();
        let stored = self.results.as_ref().and_then(|rs| {
            // Renditions are named after the source key with the role's prefix stripped.
            let rest = role::strip_prefix(&rs.path_prefix, &req.key)?;
            let named = RenderRequest {
                key: rest.to_owned(),
                ..pixels.clone()
            };
            Some((rs, rs.key(&named.canonical())))
        });
        let cache_key = req.cache_key.as_deref();
        let mut checked = None;
        if let Some((rs, key)) = &stored {
            let lookup = self
                .in_flight
                .results
                .run(key, || self.stored(rs, key, &chain, &req))
                .await?;
            match lookup {
                Lookup::Hit(hit) => return Ok(from_result_storage(hit, cache_key, if_none)),
                Lookup::Miss { watermark } => checked = watermark,
            }
        }
        // The watermark's HEAD, unless checking the stored rendition made it already.
        let watermark = match (&req.watermark, checked) {
            (Some(_), Some(head)) => Some(head),
            (Some(w), None) => Some(self.watermark_head(w).await?),
            (None, _) => None,
        };
        let source = self.read_source(&chain, &req).await?;
        let rendition_tag = match &watermark {
            Some(wm) => etag(&canonical, &format!("{}\0{}", source.object.etag, wm.etag)),
            None => etag(&canonical, &source.object.etag),
        };
        let tag = varied_etag(&rendition_tag, cache_key);
        if if_none.is_some_and(|h| if_none_match(h, &tag)) {
            return Ok(Rendition::NotModified { etag: tag });
        }
        let rendered = self
            .in_flight
            .renders
            .run(&rendition_tag, || {
                self.render_and_store(source, req.transform, watermark, &rendition_tag, stored)
            })
            .await?;
        Ok(Rendition::Image {
            body: rendered.body,
            content_type: rendered.content_type,
            etag: tag,
            last_modified: rendered.last_modified,
        })
    }

    /// The source object, read once for all concurrent requests for it, once the pool admits
    /// it.
    async fn read_source(
        &self,
        chain: &[&Storage],
        req: &RenderRequest,
    ) -> Result<Source, RenderError> {
        let max = self.limits.max_source_bytes;
        let version = req.version.as_deref();
        let flight = format!("{}\0{}\0{}", req.storage, req.key, version.unwrap_or(""));
        // Versions never change and are read as asked, never from a copy.
        let copy = match (&self.sources, version) {
            (Some(ss), None) => {
                role::role_key(&ss.path_prefix, &ss.base_dir, &req.key).map(|key| (ss, key))
            }
            _ => None,
        };
        self.in_flight
            .sources
            .run(&flight, || async {
                let admission = Arc::new(self.workers.admit().await?);
                if let Some((ss, key)) = &copy
                    && let Some(object) = self.read_copy(ss, key, &req.storage).await
                {
                    self.stats.source_copy_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Source { object, admission });
                }
                self.stats.source_reads.fetch_add(1, Ordering::Relaxed);
                let object = first_found(chain, |s| s.get(&req.key, version, max))
                    .await
                    .map_err(RenderError::Source)?;
                if let Some((ss, key)) = copy {
                    self.write_copy(ss, key, &req.storage, &object);
                }
                Ok(Source { object, admission })
            })
            .await
    }

    /// The copy of a source of `storage` at `key` in source storage, unless it is missing,
    /// unreadable, expired or a copy of another storage's object.
    async fn read_copy(&self, ss: &SourceStore, key: &str, storage: &str) -> Option<Object> {
        let mut obj = match ss
            .storage
            .get(key, None, self.limits.max_source_bytes)
            .await
        {
            Ok(obj) => obj,
            Err(StorageError::NotFound) => return None,
            Err(e) => {
                tracing::warn!(key, error = e.detail(), "source storage read failed");
                return None;
            }
        };
        if obj.metadata.get(META_COPY_STORAGE).map(String::as_str) != Some(storage) {
            tracing::debug!(key, "source copy of another storage; reading the source");
            return None;
        }
        if expired(ss.expiration, obj.last_modified, SystemTime::now()) {
            tracing::debug!(key, "source copy expired; reading the source again");
            return None;
        }
        if let Some(etag) = obj.metadata.get(META_COPY_ETAG) {
            obj.etag = etag.clone();
        }
        obj.last_modified = obj
            .metadata
            .get(META_COPY_MODIFIED)
            .and_then(|m| DateTime::from_str(m, DateTimeFormat::HttpDate).ok());
        Some(obj)
    }

    /// Writes a copy of `obj`, read from `storage`, at `key` in source storage, in the
    /// background: a failure is logged and counted, never a failed response.
    fn write_copy(&self, ss: &SourceStore, key: String, storage: &str, obj: &Object) {
        let mut meta = HashMap::from([
            (META_COPY_STORAGE.to_owned(), storage.to_owned()),
            (META_COPY_ETAG.to_owned(), obj.etag.clone()),
        ]);
        if let Some(lm) = obj.last_modified.as_ref().and_then(http_date) {
            meta.insert(META_COPY_MODIFIED.to_owned(), lm);
        }
        let content_type = obj
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let (store, stats, bytes) = (ss.storage.clone(), self.stats.clone(), obj.bytes.clone());
        let started = self.background.spawn(async move {
            if let Err(e) = store.put(&key, bytes, &content_type, meta).await {
                stats
                    .source_copy_write_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key, error = e.detail(), "source storage write failed");
            }
        });
        if !started {
            self.stats.writes_skipped.fetch_add(1, Ordering::Relaxed);
            tracing::info!("source copy skipped: every background write slot is busy");
        }
    }

    /// Renders `source` and writes the rendition to result storage (`stored`: where).
    async fn render_and_store(
        &self,
        Source {
            object: source,
            admission,
        }: Source,
        transform: Transform,
        watermark: Option<WatermarkHead>,
        tag: &str,
        stored: Option<(&ResultStore, String)>,
    ) -> Result<Rendered, RenderError> {
        self.stats.renders.fetch_add(1, Ordering::Relaxed);
        let watermark_etag = watermark.as_ref().map(|wm| wm.etag.clone());
        let overlay = match watermark {
            Some(wm) => Some(self.overlay(&admission, wm).await?),
            None => None,
        };
        let rendered = self
            .run_pipeline(&admission, source.bytes.clone(), transform, overlay)
            .await?;
        let content_type = rendered.format.content_type().to_owned();
        let bytes = Bytes::from(rendered.bytes);
        // Taken while the admission is still held, so requests waiting for it stay bounded.
        let held = Arc::new(self.budget.reserve(bytes.len() as u64).await?);
        let last_modified = source.last_modified.as_ref().and_then(http_date);
        if let Some((rs, key)) = stored {
            let mut meta = HashMap::from([
                (META_ETAG.to_owned(), tag.to_owned()),
                (META_SOURCE_ETAG.to_owned(), source.etag.clone()),
            ]);
            if let Some(lm) = &last_modified {
                meta.insert(META_SOURCE_MODIFIED.to_owned(), lm.clone());
            }
            if let Some(etag) = watermark_etag {
                meta.insert(META_WATERMARK_ETAG.to_owned(), etag);
            }
            let (store, stats) = (rs.storage.clone(), self.stats.clone());
            let (bytes, ct) = (bytes.clone(), content_type.clone());
            let write = async move {
                let result = store.put(&key, bytes, &ct, meta).await;
                if let Err(e) = &result {
                    stats.result_write_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(key, error = e.detail(), "result storage write failed");
                }
                result
            };
            if rs.report_errors {
                write.await.map_err(RenderError::ResultStorage)?;
            } else if !self.background.spawn(async move {
                let _ = write.await;
            }) {
                self.stats.writes_skipped.fetch_add(1, Ordering::Relaxed);
                tracing::info!("result storage write skipped: every background write slot is busy");
            }
        }
        Ok(Rendered {
            body: Body { bytes, held },
            content_type,
            last_modified,
        })
    }

    /// The rendition at `key` in result storage, unless it is missing, unreadable, expired or
    /// (with `verify_source`, and unless `req` names a version, which never changes) made from
    /// another version of the source, or of its watermark, than the current one. Read once for
    /// all concurrent requests for it, once the pool admits it (as a source is), and held within
    /// the memory budget until the last response sending it is done.
    async fn stored(
        &self,
        rs: &ResultStore,
        key: &str,
        chain: &[&Storage],
        req: &RenderRequest,
    ) -> Result<Lookup, RenderError> {
        let _admission = self.workers.admit().await?;
        // Renditions are bounded like sources, so a stray huge object cannot exhaust memory.
        let read = rs.storage.get(key, None, self.limits.max_source_bytes);
        let (read, head, watermark) = if rs.verify_source && req.version.is_none() {
            let head = first_found(chain, |s| s.head(&req.key, None));
            let watermark = async {
                match &req.watermark {
                    Some(w) => Some(self.watermark_head(w).await),
                    None => None,
                }
            };
            let (read, head, watermark) = tokio::join!(read, head, watermark);
            (read, Some(head), watermark)
        } else {
            (read.await, None, None)
        };
        // A miss hands on a successful watermark HEAD, so the render does not repeat it.
        let (watermark, watermark_error) = match watermark {
            Some(Ok(wm)) => (Some(wm), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        let obj = match read {
            Ok(obj) => obj,
            Err(StorageError::NotFound) => return Ok(Lookup::Miss { watermark }),
            Err(e) => {
                tracing::warn!(key, error = e.detail(), "result storage read failed");
                return Ok(Lookup::Miss { watermark });
            }
        };
        if expired(rs.expiration, obj.last_modified, SystemTime::now()) {
            tracing::debug!(key, "stored rendition expired; rendering again");
            return Ok(Lookup::Miss { watermark });
        }
        match head {
            Some(Ok(Head { etag, .. })) if obj.metadata.get(META_SOURCE_ETAG) != Some(&etag) => {
                tracing::debug!(key, "source changed since the rendition; rendering again");
                return Ok(Lookup::Miss { watermark });
            }
            // A deleted source cannot invalidate what was made from it; an unreachable one
            // leaves the stored rendition the best answer.
            Some(Err(e)) if !matches!(e, StorageError::NotFound) => {
                tracing::warn!(
                    key,
                    error = e.detail(),
                    "cannot verify the source; serving the stored rendition"
                );
            }
            _ => {}
        }
        // Likewise the watermark: a changed one renders again, a missing or unreachable one
        // leaves the stored rendition.
        if let Some(wm) = &watermark
            && obj.metadata.get(META_WATERMARK_ETAG) != Some(&wm.etag)
        {
            tracing::debug!(
                key,
                "watermark changed since the rendition; rendering again"
            );
            return Ok(Lookup::Miss { watermark });
        }
        if let Some(e) = watermark_error
            && !matches!(e, RenderError::WatermarkSource(StorageError::NotFound))
        {
            tracing::warn!(
                key,
                error = e.detail(),
                "cannot verify the watermark; serving the stored rendition"
            );
        }
        let held = Arc::new(self.budget.reserve(obj.bytes.len() as u64).await?);
        Ok(Lookup::Hit(Stored { object: obj, held }))
    }

    /// The pipeline's limits, from the configuration.
    fn pipeline_limits(&self) -> pipeline::Limits {
        pipeline::Limits {
            max_source_pixels: self.limits.max_source_pixels,
            max_output_pixels: self.limits.max_output_pixels,
            max_animation_frames: self.limits.max_animation_frames,
            max_avif_output_pixels: self.limits.max_avif_output_pixels,
        }
    }

    /// The storages to read the watermark `w` from (its storage and that one's fallbacks, as
    /// for sources) and its key.
    fn watermark_chain<'a>(
        &self,
        w: &'a Watermark,
    ) -> Result<(Vec<&Storage>, &'a str, &'a str), RenderError> {
        match &w.image {
            WatermarkImage::Object { storage, key } => {
                Ok((self.chain(storage, false)?, storage.as_str(), key.as_str()))
            }
            // The router resolves paths and `render` the default: neither reaches here.
            WatermarkImage::Default | WatermarkImage::Path(_) => Err(RenderError::BadRequest(
                "the watermark names no storage object".into(),
            )),
        }
    }

    /// `HEAD`s the watermark: its ETag, part of the rendition's, and the cache key of its
    /// decoded image.
    async fn watermark_head(&self, w: &Watermark) -> Result<WatermarkHead, RenderError> {
        let (chain, storage, key) = self.watermark_chain(w)?;
        let head = first_found(&chain, |s| s.head(key, None))
            .await
            .map_err(RenderError::WatermarkSource)?;
        Ok(WatermarkHead {
            cache_key: crate::watermarks::cache_key(storage, key, &head.etag),
            etag: head.etag,
            spec: w.clone(),
        })
    }

    /// The decoded watermark, from the cache, or read and decoded on a worker (within the
    /// memory budget) and kept; once for every render needing it at the same time.
    async fn overlay(
        &self,
        admitted: &Admission,
        wm: WatermarkHead,
    ) -> Result<Overlay, RenderError> {
        let image = match self.watermarks.get(&wm.cache_key) {
            Some(image) => image,
            None => {
                self.in_flight
                    .watermarks
                    .run(&wm.cache_key, || self.decode_watermark(admitted, &wm.spec))
                    .await?
            }
        };
        Ok(Overlay {
            image,
            spec: wm.spec,
        })
    }

    /// Reads and decodes the watermark `spec` names, on a worker within the memory budget, and
    /// keeps it in the cache.
    async fn decode_watermark(
        &self,
        admitted: &Admission,
        spec: &Watermark,
    ) -> Result<Arc<DecodedWatermark>, RenderError> {
        self.stats.watermark_decodes.fetch_add(1, Ordering::Relaxed);
        let (chain, storage, key) = self.watermark_chain(spec)?;
        let object = first_found(&chain, |s| s.get(key, None, self.limits.max_source_bytes))
            .await
            .map_err(RenderError::WatermarkSource)?;
        let limits = self.pipeline_limits();
        let needed = pipeline::watermark::decode_memory_needed(&object.bytes, &limits)
            .map_err(RenderError::WatermarkImage)?;
        let reserved = self
            .budget
            .reserve((object.bytes.len() as u64).saturating_add(needed))
            .await?;
        let bytes = object.bytes.clone();
        let image = self
            .workers
            .run(admitted, reserved, move || {
                pipeline::watermark::decode_watermark(&bytes, &limits)
            })
            .await?
            .map_err(RenderError::WatermarkImage)?;
        let image = Arc::new(image);
        // Kept under the ETag of what was read, which a concurrent change may have made newer
        // than the `HEAD`'s.
        let read_key = crate::watermarks::cache_key(storage, key, &object.etag);
        self.watermarks.insert(read_key, Arc::clone(&image));
        Ok(image)
    }

    /// Renders on a worker, once the memory budget holds the source and what the render
    /// allocates (estimated from the header; refused at once when that exceeds the budget).
    async fn run_pipeline(
        &self,
        admitted: &Admission,
        source: Bytes,
        transform: Transform,
        overlay: Option<Overlay>,
    ) -> Result<pipeline::Rendered, RenderError> {
        let limits = self.pipeline_limits();
        let needed =
            pipeline::memory_needed_overlaid(&source, &transform, overlay.as_ref(), &limits)?;
        let reserved = self
            .budget
            .reserve((source.len() as u64).saturating_add(needed))
            .await?;
        let encoding = self.encoding.clone();
        let rendered = self
            .workers
            .run(admitted, reserved, move || {
                pipeline::render_overlaid(&source, &transform, overlay.as_ref(), &limits, &encoding)
            })
            .await??;
        Ok(rendered)
    }

    /// Renders what `voucher` shows the filter asked for, and logs failures; the error is what
    /// the client gets.
    async fn handle(
        &self,
        req: v1::RenderRequest,
        md: &MetadataMap,
        voucher: &Voucher,
    ) -> Result<Rendition, Status> {
        let if_none = md.get("if-none-match").and_then(|v| v.to_str().ok());
        let proof = md.get(vouch::HEADER).and_then(|v| v.to_str().ok());
        let result = match to_core(req) {
            Ok(req) => match voucher.check(&req, proof, SystemTime::now()) {
                Ok(()) => self.render(req, if_none).await,
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            if e.http_status() >= 500 {
                tracing::warn!(
                    status = e.http_status(),
                    detail = e.detail(),
                    "render failed"
                );
            } else {
                tracing::debug!(
                    status = e.http_status(),
                    detail = e.detail(),
                    "render refused"
                );
            }
            e.to_status()
        })
    }

    fn headers(&self, r: &Rendition) -> MetadataMap {
        let mut md = MetadataMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = MetadataValue::try_from(value) {
                md.insert(name, v);
            }
        };
        match r {
            Rendition::NotModified { etag } => {
                put("etag", etag);
                put("x-http-status", "304");
            }
            Rendition::Image {
                etag,
                last_modified,
                ..
            } => {
                put("etag", etag);
                if let Some(lm) = last_modified {
                    put("last-modified", lm);
                }
            }
        }
        md.insert("cache-control", self.cache_control.clone());
        md
    }
}

/// The first success of `op` along `chain`, moving on only when an object is not found; the last
/// error otherwise.
async fn first_found<'a, T, F, Fut>(chain: &[&'a Storage], op: F) -> Result<T, StorageError>
where
    F: Fn(&'a Storage) -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    for storage in chain {
        match op(storage).await {
            Err(StorageError::NotFound) => {}
            other => return other,
        }
    }
    Err(StorageError::NotFound)
}

fn from_result_storage(
    Stored { object: obj, held }: Stored,
    cache_key: Option<&str>,
    if_none: Option<&str>,
) -> Rendition {
    let stored_tag = obj.metadata.get(META_ETAG).cloned().unwrap_or(obj.etag);
    let etag = varied_etag(&stored_tag, cache_key);
    if if_none.is_some_and(|h| if_none_match(h, &etag)) {
        return Rendition::NotModified { etag };
    }
    Rendition::Image {
        content_type: obj
            .content_type
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        last_modified: obj.metadata.get(META_SOURCE_MODIFIED).cloned(),
        body: Body {
            bytes: obj.bytes,
            held,
        },
        etag,
    }
}

/// Converts the wire request into the canonical model, rejecting values the filter never sends.
pub fn to_core(r: v1::RenderRequest) -> Result<RenderRequest, RenderError> {
    let bad = |m: String| RenderError::BadRequest(m);
    let watermark = watermark_from_wire(&r)?;
    if r.storage.is_empty() || r.key.is_empty() {
        return Err(bad("storage and key are required".into()));
    }
    if r.width > MAX_DIMENSION || r.height > MAX_DIMENSION {
        return Err(bad(format!("dimensions are limited to {MAX_DIMENSION}")));
    }
    let fit = match v1::Fit::try_from(r.fit) {
        Ok(v1::Fit::Unspecified | v1::Fit::Fill) => Fit::Fill,
        Ok(v1::Fit::FitIn) => Fit::FitIn,
        Ok(v1::Fit::Stretch) => Fit::Stretch,
        Err(_) => return Err(bad(format!("unknown fit {}", r.fit))),
    };
    let h_align = match v1::HAlign::try_from(r.h_align) {
        Ok(v1::HAlign::Unspecified | v1::HAlign::Center) => HAlign::Center,
        Ok(v1::HAlign::Left) => HAlign::Left,
        Ok(v1::HAlign::Right) => HAlign::Right,
        Err(_) => return Err(bad(format!("unknown h_align {}", r.h_align))),
    };
    let v_align = match v1::VAlign::try_from(r.v_align) {
        Ok(v1::VAlign::Unspecified | v1::VAlign::Middle) => VAlign::Middle,
        Ok(v1::VAlign::Top) => VAlign::Top,
        Ok(v1::VAlign::Bottom) => VAlign::Bottom,
        Err(_) => return Err(bad(format!("unknown v_align {}", r.v_align))),
    };
    let format = match v1::Format::try_from(r.format) {
        Ok(v1::Format::Unspecified) => OutputFormat::Source,
        Ok(v1::Format::Jpeg) => OutputFormat::Fixed(Format::Jpeg),
        Ok(v1::Format::Png) => OutputFormat::Fixed(Format::Png),
        Ok(v1::Format::Webp) => OutputFormat::Fixed(Format::Webp),
        Ok(v1::Format::Gif) => OutputFormat::Fixed(Format::Gif),
        Ok(v1::Format::Compatible) => OutputFormat::Compatible,
        Ok(v1::Format::Avif) => OutputFormat::Fixed(Format::Avif),
        Err(_) => return Err(bad(format!("unknown format {}", r.format))),
    };
    let quality = match r.quality {
        0 => None,
        q @ 1..=100 => Some(q as u8),
        q => return Err(bad(format!("quality {q} is not between 1 and 100"))),
    };
    let rotation = Rotation::from_degrees(i64::from(r.rotate))
        .filter(|rot| u32::from(rot.degrees()) == r.rotate)
        .ok_or_else(|| bad(format!("rotate {} is not 0, 90, 180 or 270", r.rotate)))?;
    let hundredths =
        |v: u32, max: Hundredths, what: &str| -> Result<Option<Hundredths>, RenderError> {
            match u16::try_from(v).ok().map(Hundredths) {
                _ if v == 0 => Ok(None),
                Some(h) if h <= max => Ok(Some(h)),
                _ => Err(bad(format!("{what} {v} is over {}", max.0))),
            }
        };
    let blur = hundredths(r.blur_sigma_x100, MAX_SIGMA, "blur_sigma_x100")?;
    let sharpen = match (
        hundredths(r.sharpen_sigma_x100, MAX_SIGMA, "sharpen_sigma_x100")?,
        hundredths(
            r.sharpen_amount_x100,
            MAX_SHARPEN_AMOUNT,
            "sharpen_amount_x100",
        )?,
    ) {
        (Some(sigma), Some(amount)) => Some(Sharpen { sigma, amount }),
        (None, None) => None,
        _ => return Err(bad("sharpen needs both a sigma and an amount".into())),
    };
    let background = Color::from_rgba_u32(r.background_rgba).visible();
    let crop = match r.crop.as_str() {
        "" => None,
        c => Some(c.parse().map_err(|e: CropSpecError| bad(e.to_string()))?),
    };
    let focus = match r.focus.as_str() {
        "" => None,
        f => Some(f.parse().map_err(|e: CropSpecError| bad(e.to_string()))?),
    };
    let trim = match r.trim.as_str() {
        "" => None,
        t => Some(t.parse().map_err(|e: CropSpecError| bad(e.to_string()))?),
    };
    let progressive = match v1::Progressive::try_from(r.progressive) {
        Ok(v1::Progressive::Unspecified) => None,
        Ok(v1::Progressive::On) => Some(true),
        Ok(v1::Progressive::Off) => Some(false),
        Err(_) => return Err(bad(format!("unknown progressive {}", r.progressive))),
    };
    let version = match r.version_id {
        v if v.is_empty() => None,
        v if is_version_id(&v) => Some(v),
        _ => {
            return Err(bad(
                "version_id is not 1 to 1024 visible ASCII characters".into()
            ));
        }
    };
    let cache_key = match r.cache_key {
        k if k.is_empty() => None,
        k if pixmesh_core::cachekey::is_digest(&k) => Some(k),
        _ => return Err(bad("cache_key is not a digest".into())),
    };

    Ok(RenderRequest {
        storage: r.storage,
        key: r.key,
        version,
        cache_key,
        watermark,
        transform: Transform {
            width: r.width,
            height: r.height,
            fit,
            upscale: r.upscale,
            flip_h: r.flip_h,
            flip_v: r.flip_v,
            h_align,
            v_align,
            format,
            quality,
            rotation,
            grayscale: r.grayscale,
            blur,
            sharpen,
            pad: r.pad,
            background,
            crop,
            focus,
            progressive,
            max_bytes: (r.max_bytes > 0).then_some(r.max_bytes),
            trim,
            smart: r.smart_crop,
            keep_icc: r.keep_icc,
        },
    })
}

/// The watermark of a wire request: none without `watermark_key` or `watermark_default`.
fn watermark_from_wire(r: &v1::RenderRequest) -> Result<Option<Watermark>, RenderError> {
    let bad = |m: String| RenderError::BadRequest(m);
    let image = match (r.watermark_default, r.watermark_key.is_empty()) {
        (false, true) => {
            let rest = [
                &r.watermark_storage,
                &r.watermark_x,
                &r.watermark_y,
                &r.watermark_opacity,
                &r.watermark_width,
                &r.watermark_height,
            ];
            if rest.iter().any(|f| !f.is_empty()) {
                return Err(bad("watermark fields without a watermark".into()));
            }
            return Ok(None);
        }
        (true, true) if r.watermark_storage.is_empty() => WatermarkImage::Default,
        (true, _) => {
            return Err(bad(
                "watermark_default with a watermark storage or key".into()
            ));
        }
        (false, false) => {
            let key = &r.watermark_key;
            if r.watermark_storage.is_empty()
                || pixmesh_core::keys::normalize(key).as_deref() != Ok(key.as_str())
            {
                return Err(bad(
                    "watermark_storage and a normalized watermark_key are required".into(),
                ));
            }
            WatermarkImage::Object {
                storage: r.watermark_storage.clone(),
                key: key.clone(),
            }
        }
    };
    let axis = |text: &str| -> Result<Axis, RenderError> {
        match text {
            "" => Ok(Axis::Start(Offset::ZERO)),
            t => t
                .parse()
                .map_err(|e: pixmesh_core::watermark::WatermarkSpecError| bad(e.to_string())),
        }
    };
    let size = |text: &str| match text {
        "" => Ok(None),
        t => parse_size(t).map(Some).map_err(|e| bad(e.to_string())),
    };
    Ok(Some(Watermark {
        image,
        x: axis(&r.watermark_x)?,
        y: axis(&r.watermark_y)?,
        opacity: parse_opacity(&r.watermark_opacity).map_err(|e| bad(e.to_string()))?,
        width: size(&r.watermark_width)?,
        height: size(&r.watermark_height)?,
    }))
}

/// The tonic service: renders what the filter vouched for ([`pixmesh_core::vouch`]).
#[derive(Clone)]
pub struct ImageService {
    renderer: Arc<Renderer>,
    voucher: Voucher,
}

impl ImageService {
    /// The service of `renderer`, rendering only requests `voucher` accepts.
    pub fn new(renderer: Arc<Renderer>, voucher: Voucher) -> Self {
        ImageService { renderer, voucher }
    }
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<HttpBody, Status>> + Send>>;

#[tonic::async_trait]
impl v1::image_service_server::ImageService for ImageService {
    type RenderStream = BodyStream;

    async fn render(
        &self,
        request: Request<v1::RenderRequest>,
    ) -> Result<Response<Self::RenderStream>, Status> {
        let (md, _, req) = request.into_parts();
        let rendition = self.renderer.handle(req, &md, &self.voucher).await?;
        let headers = self.renderer.headers(&rendition);
        let (messages, held): (Vec<Result<HttpBody, Status>>, _) = match rendition {
            Rendition::NotModified { .. } => (Vec::new(), None),
            Rendition::Image {
                body: Body { bytes, held },
                content_type,
                ..
            } => {
                let messages = (0..bytes.len())
                    .step_by(CHUNK)
                    .map(|start| {
                        Ok(HttpBody {
                            content_type: if start == 0 {
                                content_type.clone()
                            } else {
                                String::new()
                            },
                            data: bytes.slice(start..(start + CHUNK).min(bytes.len())),
                            extensions: Vec::new(),
                        })
                    })
                    .collect();
                (messages, Some(held))
            }
        };
        // The stream keeps the body's share of the budget until it is sent or dropped.
        let stream = tokio_stream::StreamExt::map(tokio_stream::iter(messages), move |m| {
            let _ = &held;
            m
        });
        let mut response = Response::new(Box::pin(stream) as BodyStream);
        *response.metadata_mut() = headers;
        Ok(response)
    }

    async fn render_unary(
        &self,
        request: Request<v1::RenderRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let (md, _, req) = request.into_parts();
        let rendition = self.renderer.handle(req, &md, &self.voucher).await?;
        let headers = self.renderer.headers(&rendition);
        let body = match rendition {
            Rendition::NotModified { .. } => HttpBody::default(),
            Rendition::Image {
                body, content_type, ..
            } => HttpBody {
                content_type,
                data: body.bytes,
                extensions: Vec::new(),
            },
        };
        let mut response = Response::new(body);
        *response.metadata_mut() = headers;
        Ok(response)
    }

    async fn health(
        &self,
        _request: Request<v1::HealthRequest>,
    ) -> Result<Response<v1::HealthResponse>, Status> {
        Ok(Response::new(v1::HealthResponse {
            status: v1::health_response::Status::Serving.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    use super::*;
    use crate::storage::LocalStorage;
    use pixmesh_core::transform::{Crop, CropAt, Focus, Fraction, Span, Trim, TrimColor};

    /// A fake S3 endpoint on 127.0.0.1 that answers every GET with `body` (ETag `"v1"`), but
    /// only once `open` turns true; returns the endpoint and a counter of requests received.
    async fn gated_s3(
        body: &'static [u8],
        open: watch::Receiver<bool>,
    ) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let (counter, mut open) = (counter.clone(), open.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = open.wait_for(|open| *open).await;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Type: image/webp\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                    let _ = conn.write_all(body).await;
                });
            }
        });
        (endpoint, requests)
    }

    /// A renderer over one S3 storage named `photos`, with a single render worker.
    async fn renderer_over(endpoint: &str) -> Arc<Renderer> {
        let cfg: crate::config::S3Config = toml::from_str(&format!(
            "bucket = \"b\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"AKIDTEST\"\nsecret_access_key = \"flight-secret\"\n"
        ))
        .unwrap();
        let storage = S3Storage::new(&cfg, Duration::from_secs(30)).await.unwrap();
        Arc::new(Renderer {
            storages: HashMap::from([("photos".to_owned(), Storage::S3(storage))]),
            fallbacks: HashMap::new(),
            results: None,
            sources: None,
            stats: Arc::default(),
            limits: Limits::default(),
            encoding: pipeline::Encoding::default(),
            cache_control: MetadataValue::from_static("public"),
            workers: WorkerPool::new(1, 64),
            budget: MemoryBudget::new(Limits::default().memory_budget_bytes),
            in_flight: InFlight::default(),
            watermarks: WatermarkCache::new(0),
            background: BackgroundWrites::new(8),
            default_watermark: None,
        })
    }

    /// A job holding a worker until its sender sends.
    type HeldJob = tokio::task::JoinHandle<
        Result<Result<(), std::sync::mpsc::RecvError>, crate::pool::PoolError>,
    >;

    /// Render workers kept busy by jobs that wait until released.
    struct HeldWorkers {
        held: Vec<(std::sync::mpsc::Sender<()>, HeldJob)>,
    }

    impl HeldWorkers {
        /// Occupies `n` of `renderer`'s workers (each with an admission of its own), returning
        /// once every job runs.
        async fn hold(renderer: &Arc<Renderer>, n: usize) -> HeldWorkers {
            let mut held = Vec::new();
            for _ in 0..n {
                let (release, gate) = std::sync::mpsc::channel::<()>();
                let (running, started) = tokio::sync::oneshot::channel();
                let renderer = renderer.clone();
                let job = tokio::spawn(async move {
                    let admitted = renderer.workers.admit().await.unwrap();
                    let wait = move || {
                        running.send(()).unwrap();
                        gate.recv()
                    };
                    let reserved = renderer.budget.reserve(1024).await.unwrap();
                    renderer.workers.run(&admitted, reserved, wait).await
                });
                started.await.unwrap();
                held.push((release, job));
            }
            HeldWorkers { held }
        }

        /// Lets every job finish.
        async fn release(self) {
            for (release, job) in self.held {
                release.send(()).unwrap();
                job.await.unwrap().unwrap().unwrap();
            }
        }
    }

    /// Polls until `n` requests wait in the flight `key` of `flights`.
    async fn until_waiting<T: Clone>(flights: &Flights<T>, key: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while flights.callers(key) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "requests never joined {key:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn identical_concurrent_misses_read_the_source_once_and_render_once() {
        let source = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../samples/flower.webp"
        ))
        .unwrap()
        .leak();
        let (open_storage, storage_gate) = watch::channel(false);
        let (endpoint, gets) = gated_s3(source, storage_gate).await;
        let renderer = renderer_over(&endpoint).await;
        let request = RenderRequest {
            storage: "photos".into(),
            key: "flower.webp".into(),
            version: None,
            watermark: None,
            cache_key: None,
            transform: Transform {
                width: 64,
                height: 64,
                ..Transform::default()
            },
        };

        // Hold the only render worker, so renders queue up behind it.
        let held = HeldWorkers::hold(&renderer, 1).await;

        let requests: Vec<_> = (0..8)
            .map(|_| {
                let (renderer, request) = (renderer.clone(), request.clone());
                tokio::spawn(async move { renderer.render(request, None).await })
            })
            .collect();

        // All eight wait on one source read, which the storage has not answered yet …
        until_waiting(&renderer.in_flight.sources, "photos\0flower.webp\0", 8).await;
        open_storage.send(true).unwrap();
        // … then on one render, queued behind the held worker.
        let tag = etag(&request.canonical(), "\"v1\"");
        until_waiting(&renderer.in_flight.renders, &tag, 8).await;
        held.release().await;

        let mut images = Vec::new();
        for request in requests {
            match request.await.unwrap() {
                Ok(Rendition::Image { body, etag, .. }) => images.push((body.bytes, etag)),
                Ok(Rendition::NotModified { .. }) => panic!("no request was conditional"),
                Err(e) => panic!("render failed: {}", e.detail()),
            }
        }
        assert!(
            images.iter().all(|image| image == &images[0]),
            "all share one rendition"
        );
        assert_eq!(images[0].1, tag);
        assert_eq!(
            gets.load(Ordering::SeqCst),
            1,
            "one GET reached the storage"
        );
        assert_eq!(renderer.stats.source_reads.load(Ordering::SeqCst), 1);
        assert_eq!(renderer.stats.renders.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn renders_needing_one_watermark_at_once_decode_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/flower.webp");
        std::fs::copy(sample, dir.path().join("flower.webp")).unwrap();
        std::fs::copy(sample, dir.path().join("logo.webp")).unwrap();
        let local = crate::storage::LocalStorage::new(dir.path()).unwrap();
        // As many workers as requests, so each could read the source on its own admission
        // (a request arriving after the first read ended reads it again).
        const WORKERS: usize = 4;
        let renderer = Arc::new(Renderer {
            storages: HashMap::from([("photos".to_owned(), Storage::Local(local))]),
            workers: WorkerPool::new(WORKERS, 64),
            ..Arc::into_inner(renderer_over("http://127.0.0.1:9").await).unwrap()
        });
        let spec = Watermark {
            image: WatermarkImage::Object {
                storage: "photos".into(),
                key: "logo.webp".into(),
            },
            x: Axis::Start(Offset::ZERO),
            y: Axis::Start(Offset::ZERO),
            opacity: parse_opacity("0.5").unwrap(),
            width: None,
            height: None,
        };
        // Renditions of one source at several widths, with one watermark.
        let request = |width| RenderRequest {
            storage: "photos".into(),
            key: "flower.webp".into(),
            version: None,
            watermark: Some(spec.clone()),
            cache_key: None,
            transform: Transform {
                width,
                ..Transform::default()
            },
        };

        // Hold every render worker, so the watermark's decode waits for one.
        let held = HeldWorkers::hold(&renderer, WORKERS).await;
        let requests: Vec<_> = (0..WORKERS as u32)
            .map(|i| {
                let (renderer, request) = (renderer.clone(), request(100 + i));
                tokio::spawn(async move { renderer.render(request, None).await })
            })
            .collect();
        let head = renderer.watermark_head(&spec).await.unwrap();
        until_waiting(&renderer.in_flight.watermarks, &head.cache_key, WORKERS).await;
        held.release().await;
        for request in requests {
            match request.await.unwrap() {
                Ok(Rendition::Image { .. }) => {}
                Ok(Rendition::NotModified { .. }) => panic!("no request was conditional"),
                Err(e) => panic!("render failed: {}", e.detail()),
            }
        }
        assert_eq!(
            renderer.stats.renders.load(Ordering::SeqCst),
            WORKERS as u64
        );
        assert_eq!(renderer.stats.watermark_decodes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn expiration_counts_from_last_modified() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs_ago: u64| Some(DateTime::from(now - Duration::from_secs(secs_ago)));
        let hour = Some(Duration::from_secs(3600));
        assert!(
            !expired(hour, at(3600), now),
            "exactly the age is not older"
        );
        assert!(expired(hour, at(3601), now));
        assert!(!expired(hour, at(0), now));
        assert!(
            !expired(None, at(1_000_000), now),
            "no expiration configured"
        );
        assert!(!expired(hour, None, now), "no Last-Modified");
        let future = Some(DateTime::from(now + Duration::from_secs(60)));
        assert!(!expired(hour, future, now), "clock skew");
    }

    /// A fresh directory holding `files`, removed by the caller.
    fn dir_with(name: &str, files: &[(&str, &[u8])]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pixmesh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, bytes) in files {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        dir
    }

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

    #[tokio::test]
    async fn a_response_holds_its_share_of_the_budget_until_it_is_dropped() {
        const FLOWER: &[u8] = include_bytes!("../../samples/flower.webp");
        let dir = dir_with("held", &[("flower.webp", FLOWER)]);
        let mut renderer = Arc::into_inner(renderer_over("http://127.0.0.1:9").await).unwrap();
        renderer.storages = HashMap::from([(
            "photos".to_owned(),
            Storage::Local(LocalStorage::new(&dir).unwrap()),
        )]);
        let idle = renderer.budget.available_kib();
        let request = to_core(v1::RenderRequest {
            storage: "photos".into(),
            key: "flower.webp".into(),
            format: v1::Format::Png.into(),
            ..Default::default()
        })
        .unwrap();
        let rendition = renderer.render(request, None).await.unwrap();
        let Rendition::Image { body, .. } = &rendition else {
            panic!("an image");
        };
        let size_kib = (body.bytes.len() as u64).div_ceil(1024);
        assert_eq!(
            renderer.budget.available_kib(),
            idle - size_kib,
            "the bytes are held, and counted, while a response may still send them"
        );
        drop(rendition);
        assert_eq!(renderer.budget.available_kib(), idle);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn fallbacks_are_tried_in_order_on_not_found_only() {
        let first = dir_with("fb-first", &[("both.txt", b"first")]);
        let second = dir_with("fb-second", &[("both.txt", b"second"), ("only.txt", b"2")]);
        let storages = [&first, &second].map(|d| Storage::Local(LocalStorage::new(d).unwrap()));
        let chain: Vec<&Storage> = storages.iter().collect();
        let get = |key: &'static str| first_found(&chain, move |s| s.get(key, None, 100));
        assert_eq!(&get("both.txt").await.unwrap().bytes[..], b"first");
        assert_eq!(&get("only.txt").await.unwrap().bytes[..], b"2");
        assert!(matches!(get("none.txt").await, Err(StorageError::NotFound)));
        let small = first_found(&chain, |s| s.get("both.txt", None, 2)).await;
        assert!(
            matches!(small, Err(StorageError::TooLarge { .. })),
            "errors other than not-found are final"
        );
        let head = first_found(&chain, |s| s.head("only.txt", None))
            .await
            .unwrap();
        assert_eq!(
            head.etag,
            storages[1].head("only.txt", None).await.unwrap().etag
        );
        for d in [first, second] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[tokio::test]
    async fn renders_from_a_bucket_in_another_region_go_there_after_the_first() {
        use crate::fake_s3::{FakeS3, Reply};
        const FLOWER: &[u8] = include_bytes!("../../samples/flower.webp");
        let s3 = FakeS3::start(|req| match req.region.as_str() {
            "ap-southeast-2" => Reply::new("200 OK", FLOWER).header("etag", "\"f\""),
            _ => Reply::new("301 Moved Permanently", "")
                .header("x-amz-bucket-region", "ap-southeast-2"),
        })
        .await;
        let config = crate::config::Config::from_toml(&format!(
            "[storages.photos]\ntype = \"s3\"\nbucket = \"b\"\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"AKIDTEST\"\nsecret_access_key = \"s\"\n",
            s3.endpoint
        ))
        .unwrap();
        let renderer = crate::renderer(&config).await.unwrap();
        let request = || RenderRequest {
            storage: "photos".into(),
            key: "flower.webp".into(),
            version: None,
            watermark: None,
            cache_key: None,
            transform: Transform {
                width: 100,
                ..Transform::default()
            },
        };
        for _ in 0..2 {
            let Ok(Rendition::Image { content_type, .. }) = renderer.render(request(), None).await
            else {
                panic!("rendered")
            };
            assert_eq!(content_type, "image/webp");
        }
        assert_eq!(
            s3.regions(),
            ["us-east-1", "ap-southeast-2", "ap-southeast-2"],
            "only the first render asked the configured region"
        );
    }

    #[tokio::test]
    async fn a_local_storage_refuses_versions_and_is_no_fallback_for_them() {
        let dir = dir_with("versions", &[("a.txt", b"a")]);
        let root = dir.display().to_string();
        let config = crate::config::Config::from_toml(&format!(
            "[storages.here]\ntype = \"local\"\nroot = {root:?}\n\
             [storages.s3]\ntype = \"s3\"\nbucket = \"b\"\nfallbacks = [\"here\"]\n\
             endpoint = \"http://127.0.0.1:9\"\nregion = \"us-east-1\"\n\
             access_key_id = \"AKIDTEST\"\nsecret_access_key = \"s\"\n"
        ))
        .unwrap();
        let renderer = crate::renderer(&config).await.unwrap();
        let versioned = |storage: &str| RenderRequest {
            storage: storage.into(),
            key: "a.txt".into(),
            version: Some("v1".into()),
            watermark: None,
            cache_key: None,
            transform: Transform::default(),
        };
        let Err(err) = renderer.render(versioned("here"), None).await else {
            panic!("a directory has no versions")
        };
        assert_eq!(err.http_status(), 501, "{err:?}");
        assert_eq!(err.to_status().code(), tonic::Code::Unimplemented);
        assert_eq!(
            err.to_status().message(),
            "source: this storage has no object versions"
        );
        let chain = renderer.chain("s3", true).unwrap();
        assert_eq!(chain.len(), 1, "the local fallback is left out");
        assert_eq!(renderer.chain("s3", false).unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn source_copies_are_read_first_written_after_a_miss_and_never_used_for_versions() {
        use crate::fake_s3::{FakeS3, Reply};
        // Copies live under `copies/` of the same bucket; none exists yet.
        let s3 = FakeS3::start(|req| {
            if req.method == "GET" && req.target.starts_with("/b/copies/") {
                Reply::new("404 Not Found", "<Error><Code>NoSuchKey</Code></Error>")
            } else {
                Reply::new("200 OK", "src").header("etag", "\"o\"")
            }
        })
        .await;
        let base = renderer_over(&s3.endpoint).await;
        let Storage::S3(bucket) = &base.storages["photos"] else {
            panic!("photos is S3")
        };
        let renderer = Renderer {
            storages: base.storages.clone(),
            fallbacks: HashMap::new(),
            results: None,
            sources: Some(SourceStore {
                storage: bucket.clone(),
                base_dir: "copies".into(),
                path_prefix: "up".into(),
                expiration: None,
            }),
            stats: Arc::default(),
            limits: Limits::default(),
            cache_control: MetadataValue::from_static("public"),
            workers: WorkerPool::new(1, 64),
            budget: MemoryBudget::new(Limits::default().memory_budget_bytes),
            encoding: pipeline::Encoding::default(),
            in_flight: InFlight::default(),
            watermarks: WatermarkCache::new(0),
            background: BackgroundWrites::new(8),
            default_watermark: None,
        };
        let request = |key: &str, version: Option<&str>| RenderRequest {
            storage: "photos".into(),
            key: key.into(),
            version: version.map(str::to_owned),
            watermark: None,
            cache_key: None,
            transform: Transform::default(),
        };
        let chain = renderer.chain("photos", true).unwrap();
        let versioned = renderer
            .read_source(&chain, &request("up/v.jpg", Some("v1")))
            .await
            .unwrap();
        assert_eq!(&versioned.object.bytes[..], b"src");
        // A source in memory holds one of the pool's two admissions until it is dropped.
        drop(versioned);
        let outside = renderer
            .read_source(&chain, &request("down/o.jpg", None))
            .await
            .unwrap();
        assert_eq!(outside.object.etag, "\"o\"");
        drop(outside);
        let chain = renderer.chain("photos", false).unwrap();
        renderer
            .read_source(&chain, &request("up/a.jpg", None))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !s3.seen().iter().any(|r| r.method == "PUT") {
            assert!(tokio::time::Instant::now() < deadline, "no copy written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen: Vec<String> = s3
            .seen()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.target.split('?').next().unwrap()))
            .collect();
        assert_eq!(
            seen,
            [
                "GET /b/up/v.jpg",
                "GET /b/down/o.jpg",
                "GET /b/copies/a.jpg",
                "GET /b/up/a.jpg",
                "PUT /b/copies/a.jpg",
            ],
            "versions and keys outside the prefix bypass the copies"
        );
        assert!(s3.seen()[0].target.contains("versionId=v1"));
        assert_eq!(renderer.stats.source_reads.load(Ordering::Relaxed), 3);
        assert_eq!(renderer.stats.source_copy_hits.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn wire_request_maps_onto_the_canonical_model() {
        let wire = v1::RenderRequest {
            storage: "photos".into(),
            key: "a/b.jpg".into(),
            width: 300,
            height: 200,
            fit: v1::Fit::FitIn.into(),
            upscale: true,
            flip_h: true,
            flip_v: false,
            h_align: v1::HAlign::Left.into(),
            v_align: v1::VAlign::Bottom.into(),
            format: v1::Format::Webp.into(),
            quality: 80,
            version_id: "v+1".into(),
            ..Default::default()
        };
        let req = to_core(wire.clone()).unwrap();
        assert_eq!(
            req.canonical(),
            "photos/fit-in/-300x200/left/bottom/filters:format(webp):quality(80):upscale()\
             /versionId=v+1/-/a/b.jpg"
        );
        let effects = v1::RenderRequest {
            rotate: 90,
            grayscale: true,
            blur_sigma_x100: 250,
            sharpen_sigma_x100: 50,
            sharpen_amount_x100: 200,
            pad: true,
            background_rgba: 0xff00_0080,
            ..wire
        };
        let t = to_core(effects).unwrap().transform;
        assert_eq!(t.rotation, Rotation::Cw90);
        assert!(t.grayscale && t.pad);
        assert_eq!(t.blur, Some(Hundredths(250)));
        assert_eq!(
            t.sharpen,
            Some(Sharpen {
                sigma: Hundredths(50),
                amount: Hundredths(200)
            })
        );
        assert_eq!(t.background.map(Color::hex).as_deref(), Some("ff000080"));
    }

    /// The filter's query encoding, read back the way the transcoder reads it (each parameter
    /// onto the field of its name), gives the same transform.
    #[test]
    fn query_encoding_round_trips_through_the_wire() {
        let t = Transform {
            width: 300,
            height: 200,
            fit: Fit::Stretch,
            upscale: true,
            flip_h: true,
            flip_v: true,
            h_align: HAlign::Right,
            v_align: VAlign::Top,
            format: OutputFormat::Fixed(Format::Png),
            quality: Some(55),
            rotation: Rotation::Cw270,
            grayscale: true,
            blur: Some(Hundredths(10_000)),
            sharpen: Some(Sharpen {
                sigma: Hundredths(1),
                amount: Hundredths(1_000),
            }),
            pad: true,
            background: Some(Color::rgb(1, 2, 3)),
            progressive: Some(false),
            max_bytes: Some(u32::MAX),
            crop: Some(Crop {
                width: Span::Pixels(65_535),
                height: Span::Fraction(Fraction(1)),
                at: CropAt::Offset(Span::Fraction(Fraction::ONE), Span::Pixels(0)),
            }),
            focus: Some(Focus {
                left: Span::Pixels(1),
                top: Span::Pixels(2),
                right: Span::Pixels(3),
                bottom: Span::Pixels(65_535),
            }),
            trim: Some(Trim {
                threshold: 255,
                color: TrimColor::Color(Color::rgb(0, 10, 255)),
                equal_hor: true,
                equal_ver: true,
            }),
            smart: true,
            keep_icc: true,
        };
        let anchored = Crop {
            width: Span::FULL,
            height: Span::Pixels(7),
            at: CropAt::Anchor(HAlign::Right, VAlign::Top),
        };
        let formats = [
            OutputFormat::Source,
            OutputFormat::Fixed(Format::Jpeg),
            OutputFormat::Fixed(Format::Png),
            OutputFormat::Fixed(Format::Webp),
            OutputFormat::Fixed(Format::Gif),
            OutputFormat::Compatible,
            OutputFormat::Fixed(Format::Avif),
        ];
        for (i, format) in formats.into_iter().enumerate() {
            let req = RenderRequest {
                storage: "s".into(),
                key: "k".into(),
                version: None,
                watermark: None,
                cache_key: (i % 2 == 1).then(|| "0123456789abcdef".repeat(2)),
                transform: Transform { format, ..t },
            };
            assert_eq!(to_core(wire_from_query(&req.to_query())).unwrap(), req);
            let req = RenderRequest {
                transform: Transform {
                    format,
                    crop: Some(anchored),
                    ..t
                },
                ..req.clone()
            };
            assert_eq!(to_core(wire_from_query(&req.to_query())).unwrap(), req);
            let progressive = RenderRequest {
                transform: Transform {
                    progressive: Some(true),
                    max_bytes: None,
                    ..req.transform
                },
                ..req.clone()
            };
            assert_eq!(
                to_core(wire_from_query(&progressive.to_query())).unwrap(),
                progressive
            );
        }
    }

    /// The wire request the transcoder makes of a render query.
    fn wire_from_query(query: &str) -> v1::RenderRequest {
        let mut wire = v1::RenderRequest::default();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap();
            let num = || value.parse::<u32>().unwrap();
            let yes = || value == "true";
            match name {
                "storage" => wire.storage = value.into(),
                "key" => wire.key = value.into(),
                "width" => wire.width = num(),
                "height" => wire.height = num(),
                "fit" => wire.fit = v1::Fit::from_str_name(value).unwrap().into(),
                "upscale" => wire.upscale = yes(),
                "flip_h" => wire.flip_h = yes(),
                "flip_v" => wire.flip_v = yes(),
                "h_align" => wire.h_align = v1::HAlign::from_str_name(value).unwrap().into(),
                "v_align" => wire.v_align = v1::VAlign::from_str_name(value).unwrap().into(),
                "format" => wire.format = v1::Format::from_str_name(value).unwrap().into(),
                "quality" => wire.quality = num(),
                "rotate" => wire.rotate = num(),
                "grayscale" => wire.grayscale = yes(),
                "blur_sigma_x100" => wire.blur_sigma_x100 = num(),
                "sharpen_sigma_x100" => wire.sharpen_sigma_x100 = num(),
                "sharpen_amount_x100" => wire.sharpen_amount_x100 = num(),
                "pad" => wire.pad = yes(),
                "background_rgba" => wire.background_rgba = num(),
                "version_id" => wire.version_id = value.into(),
                "cache_key" => wire.cache_key = value.into(),
                "crop" => wire.crop = value.replace("%2C", ","),
                "focus" => wire.focus = value.replace("%2C", ","),
                "progressive" => {
                    wire.progressive = v1::Progressive::from_str_name(value).unwrap().into()
                }
                "max_bytes" => wire.max_bytes = num(),
                "trim" => wire.trim = value.replace("%2C", ","),
                "smart_crop" => wire.smart_crop = yes(),
                "keep_icc" => wire.keep_icc = yes(),
                "watermark_storage" => wire.watermark_storage = unescape(value),
                "watermark_key" => wire.watermark_key = unescape(value),
                "watermark_default" => wire.watermark_default = yes(),
                "watermark_x" => wire.watermark_x = unescape(value),
                "watermark_y" => wire.watermark_y = unescape(value),
                "watermark_opacity" => wire.watermark_opacity = unescape(value),
                "watermark_width" => wire.watermark_width = unescape(value),
                "watermark_height" => wire.watermark_height = unescape(value),
                other => panic!("{other} is not a RenderRequest field"),
            }
        }
        wire
    }

    /// The few escapes the watermark fields of these tests hold.
    fn unescape(value: &str) -> String {
        value
            .replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%2C", ",")
            .replace("%20", " ")
    }

    #[test]
    fn watermarks_round_trip_through_the_wire_and_malformed_ones_are_refused() {
        let object = WatermarkImage::Object {
            storage: "s".into(),
            key: "wm/a b.png".into(),
        };
        let mut tiled = Watermark::new(object.clone());
        (tiled.x, tiled.y) = (Axis::Repeat(12), Axis::End(Offset::Percent(5)));
        tiled.opacity = Fraction(2500);
        tiled.width = Some(Span::Pixels(40));
        tiled.height = Some(Span::Fraction(Fraction(5000)));
        let mut centred = Watermark::new(WatermarkImage::Default);
        (centred.x, centred.y) = (Axis::Center(Offset::Pixels(-3)), Axis::Start(Offset::ZERO));
        for w in [Watermark::new(object), tiled, centred] {
            let req = RenderRequest {
                storage: "s".into(),
                key: "k".into(),
                version: None,
                cache_key: None,
                transform: Transform::default(),
                watermark: Some(w),
            };
            assert_eq!(to_core(wire_from_query(&req.to_query())).unwrap(), req);
        }
        let base = v1::RenderRequest {
            storage: "s".into(),
            key: "k".into(),
            watermark_storage: "s".into(),
            watermark_key: "wm.png".into(),
            watermark_opacity: "1.0".into(),
            ..Default::default()
        };
        assert!(to_core(base.clone()).unwrap().watermark.is_some());
        for bad in [
            v1::RenderRequest {
                watermark_key: String::new(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_storage: String::new(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_key: "../wm.png".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_key: "/wm.png".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_default: true,
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_opacity: "1".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_x: "left".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_width: "0".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                storage: "s".into(),
                key: "k".into(),
                watermark_x: "center".into(),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(to_core(bad.clone()), Err(RenderError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    /// A PNG of `w`×`h` pixels of one RGBA colour.
    fn png(w: u32, h: u32, rgba: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(w, h, image::Rgba(rgba)))
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[tokio::test]
    async fn watermarks_are_read_cached_and_part_of_the_etag() {
        let dir = dir_with(
            "wm",
            &[
                ("a.png", &png(40, 20, [0, 0, 255, 255])),
                ("wm.png", &png(8, 4, [255, 0, 0, 255])),
                ("other.png", &png(8, 4, [0, 255, 0, 255])),
                ("text.png", b"not an image"),
            ],
        );
        let config = |default: &str| {
            crate::config::Config::from_toml(&format!(
                "[storages.photos]\ntype = \"local\"\nroot = \"{}\"\n{default}",
                dir.display()
            ))
            .unwrap()
        };
        let renderer = crate::renderer(&config("")).await.unwrap();
        let request = |key: Option<&str>| RenderRequest {
            storage: "photos".into(),
            key: "a.png".into(),
            version: None,
            cache_key: None,
            transform: Transform::default(),
            watermark: key.map(|k| {
                let mut w = Watermark::new(WatermarkImage::Object {
                    storage: "photos".into(),
                    key: k.into(),
                });
                (w.x, w.y) = (Axis::End(Offset::ZERO), Axis::End(Offset::ZERO));
                w
            }),
        };
        let image = |r: Rendition| match r {
            Rendition::Image { body, etag, .. } => (
                image::load_from_memory(&body.bytes).unwrap().to_rgba8(),
                etag,
            ),
            Rendition::NotModified { .. } => panic!("not modified"),
        };
        let (plain, plain_tag) = image(renderer.render(request(None), None).await.unwrap());
        let (marked, tag) = image(
            renderer
                .render(request(Some("wm.png")), None)
                .await
                .unwrap(),
        );
        assert_eq!(plain.get_pixel(39, 19).0, [0, 0, 255, 255]);
        assert_eq!(
            marked.get_pixel(39, 19).0,
            [255, 0, 0, 255],
            "bottom-right corner"
        );
        assert_eq!(
            marked.get_pixel(31, 15).0,
            [0, 0, 255, 255],
            "outside the watermark"
        );
        assert_eq!(renderer.watermarks.len(), 1, "decoded once, kept");
        let (_, again) = image(
            renderer
                .render(request(Some("wm.png")), None)
                .await
                .unwrap(),
        );
        assert_eq!((again, renderer.watermarks.len()), (tag.clone(), 1));
        let (other, other_tag) = image(
            renderer
                .render(request(Some("other.png")), None)
                .await
                .unwrap(),
        );
        assert_eq!(other.get_pixel(39, 19).0, [0, 255, 0, 255]);
        assert!(plain_tag != tag && tag != other_tag && plain_tag != other_tag);
        // A replaced watermark changes the ETag.
        std::fs::write(dir.join("wm.png"), png(6, 4, [255, 0, 0, 255])).unwrap();
        let (_, replaced) = image(
            renderer
                .render(request(Some("wm.png")), None)
                .await
                .unwrap(),
        );
        assert_ne!(replaced, tag);
        let status = |r: Result<Rendition, RenderError>| r.err().map(|e| e.http_status());
        assert_eq!(
            status(renderer.render(request(Some("none.png")), None).await),
            Some(404)
        );
        assert_eq!(
            status(renderer.render(request(Some("text.png")), None).await),
            Some(422)
        );
        let default = RenderRequest {
            watermark: Some(Watermark::new(WatermarkImage::Default)),
            ..request(None)
        };
        assert_eq!(
            status(renderer.render(default.clone(), None).await),
            Some(501)
        );
        let configured = crate::renderer(&config(
            "[watermark]\nstorage = \"photos\"\nkey = \"other.png\"\n",
        ))
        .await
        .unwrap();
        let (img, default_tag) = image(configured.render(default, None).await.unwrap());
        assert_eq!(
            img.get_pixel(0, 0).0,
            [0, 255, 0, 255],
            "the default sits top-left"
        );
        assert_ne!(default_tag, plain_tag);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_what_the_filter_never_sends() {
        let base = v1::RenderRequest {
            storage: "s".into(),
            key: "k".into(),
            ..Default::default()
        };
        for bad in [
            v1::RenderRequest {
                storage: String::new(),
                ..base.clone()
            },
            v1::RenderRequest {
                quality: 101,
                ..base.clone()
            },
            v1::RenderRequest {
                fit: 99,
                ..base.clone()
            },
            v1::RenderRequest {
                width: MAX_DIMENSION + 1,
                ..base.clone()
            },
            v1::RenderRequest {
                rotate: 45,
                ..base.clone()
            },
            v1::RenderRequest {
                rotate: 450,
                ..base.clone()
            },
            v1::RenderRequest {
                blur_sigma_x100: 10_001,
                ..base.clone()
            },
            v1::RenderRequest {
                sharpen_sigma_x100: 100,
                ..base.clone()
            },
            v1::RenderRequest {
                sharpen_sigma_x100: 100,
                sharpen_amount_x100: 1_001,
                ..base.clone()
            },
            v1::RenderRequest {
                version_id: "v 1".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                cache_key: "mobile".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                crop: "0,5,1,1".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                crop: "5,5,up-left".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                crop: "1.5,5,0,0".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                focus: "0.5,0.5,0.4,0.6".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                focus: "0.5,1,0.5,1".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                trim: "300,top-left".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                trim: "10,left".into(),
                ..base.clone()
            },
        ] {
            assert!(matches!(to_core(bad), Err(RenderError::BadRequest(_))));
        }
        assert!(to_core(base).is_ok());
    }
}
