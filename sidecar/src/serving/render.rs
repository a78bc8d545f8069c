//!
//! The render flow. One render, in order:
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
//! 5. render on a blocking worker, at most one per core, once the memory budget holds what the
//!    render will allocate (413 when that alone exceeds the budget; the source is counted in the
//!    reads share from before its read: [`crate::serving::budget`]); a watermark comes from the
//!    cache of decoded ones ([`crate::serving::watermark_cache`]) or is read and decoded, on a
//!    worker and within the budget too, before the source is read (so no request waits for the
//!    reads share while holding part of it);
//! 6. stream the image, and write it to result storage: in the background (failures logged and
//!    counted), or before answering with `report_errors`.
//!
//! Steps 3 and 5–6 are single-flight ([`Flights`]): identical requests arriving together share
//! one source read (per storage and key) and one render and write (per rendition ETag); renders
//! needing one watermark at the same time share its read and decode.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use pixmesh_core::render::{RenderRequest, etag, if_none_match, varied_etag};
use pixmesh_core::role;
use pixmesh_core::transform::Transform;
use pixmesh_core::vouch::{self, Voucher};
use pixmesh_core::watermark::{Watermark, WatermarkImage};
use pixmesh_proto::v1;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::pipeline;
use crate::pipeline::watermark::{DecodedWatermark, Overlay};
use crate::serving::budget::{MemoryBudget, Reservation};
use crate::serving::pool::Admission;
use crate::serving::status::RenderError;
use crate::storage::first_found;
use crate::storage::{Gate, Storage, StorageError, http_date};
use crate::telemetry::metrics::Step::{QueueWait, ResultLookup};

use super::results::{
    META_ETAG, META_SOURCE_ETAG, META_SOURCE_MODIFIED, META_WATERMARK_ETAG, from_result_storage,
};
use super::state::{
    Body, Lookup, Rendered, Renderer, Rendition, ResultStore, Source, WatermarkHead,
};
use super::wire::to_core;

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
            Some((rs, rs.key(&named)))
        });
        let cache_key = req.cache_key.as_deref();
        let mut checked = None;
        if let Some((rs, key)) = &stored {
            let lookup = self
                .in_flight
                .results
                .run(key, || {
                    self.stats
                        .metrics
                        .timed(ResultLookup, self.stored(rs, key, &chain, &req))
                })
                .await?;
            self.looked_up(matches!(lookup, Lookup::Hit(_)));
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
        // Decoded before the source is read: a request waits for the reads budget holding none
        // of it, so those waits cannot deadlock.
        let overlay = match &watermark {
            Some(wm) => Some(self.overlay(wm.clone()).await?),
            None => None,
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
                let watermark_etag = watermark.map(|wm| wm.etag);
                self.render_and_store(
                    source,
                    req.transform,
                    overlay,
                    watermark_etag,
                    &rendition_tag,
                    stored,
                )
            })
            .await?;
        Ok(Rendition::Image {
            body: rendered.body,
            content_type: rendered.content_type,
            etag: tag,
            last_modified: rendered.last_modified,
        })
    }

    /// The gate of every storage read ([`crate::storage::Gate`]): the object's declared size
    /// reserved from the reads budget before its bytes are read; the reservation goes with the
    /// bytes. (The configuration keeps the reads budget at least `max_source_bytes`, the
    /// largest size a read passes to the gate.)
    pub(super) fn read_gate(&self) -> ReadsGate<'_> {
        ReadsGate {
            reads: &self.reads,
            max: self.limits.max_source_bytes,
        }
    }

    /// The source object, read once for all concurrent requests for it, once the pool admits
    /// it, within the reads budget ([`Renderer::read_gate`]).
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
                let admission = Arc::new(
                    self.stats
                        .metrics
                        .timed(QueueWait, self.workers.admit())
                        .await?,
                );
                if let Some((ss, key)) = &copy
                    && let Some((object, reserved)) = self.read_copy(ss, key, &req.storage).await
                {
                    self.stats.source_copy_hits.fetch_add(1, Ordering::Relaxed);
                    crate::telemetry::logging::note_source("copy");
                    let held = Arc::new(reserved);
                    return Ok(Source {
                        object,
                        admission,
                        held,
                    });
                }
                let gate = self.read_gate();
                let (object, reserved) = self
                    .observed_read(
                        &req.storage,
                        first_found(chain, |s| s.get_gated(&req.key, version, max, &gate)),
                    )
                    .await
                    .map_err(RenderError::Source)?;
                let held = Arc::new(reserved);
                if let Some((ss, key)) = copy {
                    self.write_copy(ss, key, &req.storage, &object, Arc::clone(&held));
                }
                Ok(Source {
                    object,
                    admission,
                    held,
                })
            })
            .await
    }

    /// Renders `source` (with `overlay`, the watermark whose ETag is `watermark_etag`) and
    /// writes the rendition to result storage (`stored`: where).
    async fn render_and_store(
        &self,
        Source {
            object: source,
            admission,
            held: source_held,
        }: Source,
        transform: Transform,
        overlay: Option<Overlay>,
        watermark_etag: Option<String>,
        tag: &str,
        stored: Option<(&ResultStore, String)>,
    ) -> Result<Rendered, RenderError> {
        self.stats.renders.fetch_add(1, Ordering::Relaxed);
        let rendered = self
            .stats
            .metrics
            .rendering(self.run_pipeline(
                &admission,
                (source.bytes.clone(), source_held),
                transform,
                overlay,
            ))
            .await?;
        let content_type = rendered.format.content_type().to_owned();
        let bytes = Bytes::from(rendered.bytes);
        // Taken while the admission is still held, so requests waiting for it stay bounded;
        // kept by the response and by the background write, as they keep the bytes.
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
            let (bytes, ct, held) = (bytes.clone(), content_type.clone(), Arc::clone(&held));
            let write = async move {
                let _held = held;
                let result = stats
                    .metrics
                    .result_write(bytes.len(), store.put(&key, bytes, &ct, meta))
                    .await;
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
    pub(super) async fn watermark_head(&self, w: &Watermark) -> Result<WatermarkHead, RenderError> {
        let (chain, storage, key) = self.watermark_chain(w)?;
        let head = first_found(&chain, |s| s.head(key, None))
            .await
            .map_err(RenderError::WatermarkSource)?;
        Ok(WatermarkHead {
            cache_key: crate::serving::watermark_cache::cache_key(storage, key, &head.etag),
            etag: head.etag,
            spec: w.clone(),
        })
    }

    /// The decoded watermark, from the cache, or read and decoded on a worker (within the
    /// memory budget) and kept; once for every render needing it at the same time.
    async fn overlay(&self, wm: WatermarkHead) -> Result<Overlay, RenderError> {
        let image = match self.watermarks.get(&wm.cache_key) {
            Some(image) => image,
            None => {
                self.in_flight
                    .watermarks
                    .run(&wm.cache_key, || self.decode_watermark(&wm.spec))
                    .await?
            }
        };
        Ok(Overlay {
            image,
            spec: wm.spec,
        })
    }

    /// Reads and decodes the watermark `spec` names, on its own admission, the object within
    /// the reads budget and the decode within the render budget, and keeps it in the cache.
    async fn decode_watermark(
        &self,
        spec: &Watermark,
    ) -> Result<Arc<DecodedWatermark>, RenderError> {
        self.stats.watermark_decodes.fetch_add(1, Ordering::Relaxed);
        let (chain, storage, key) = self.watermark_chain(spec)?;
        let admitted = (self.stats.metrics)
            .timed(QueueWait, self.workers.admit())
            .await?;
        let max = self.limits.max_source_bytes;
        let gate = self.read_gate();
        let (object, read) = first_found(&chain, |s| s.get_gated(key, None, max, &gate))
            .await
            .map_err(RenderError::WatermarkSource)?;
        let limits = self.pipeline_limits();
        let needed = pipeline::watermark_decode_memory_needed(&object.bytes, &limits)
            .map_err(RenderError::WatermarkImage)?;
        let reserved = self.budget.reserve(needed).await?;
        let bytes = object.bytes.clone();
        let image = self
            .workers
            .run(&admitted, reserved, move || {
                // The object's share of the reads budget goes with its bytes.
                let _read = read;
                pipeline::watermark::decode_watermark(&bytes, &limits)
            })
            .await?
            .map_err(RenderError::WatermarkImage)?;
        let image = Arc::new(image);
        // Kept under the ETag of what was read, which a concurrent change may have made newer
        // than the `HEAD`'s.
        let read_key = crate::serving::watermark_cache::cache_key(storage, key, &object.etag);
        self.watermarks.insert(read_key, Arc::clone(&image));
        Ok(image)
    }

    /// Renders on a worker, once the memory budget holds what the render allocates (estimated
    /// from the header; refused at once when that exceeds the budget). The source comes with
    /// its share of the reads budget, which the job keeps as long as it keeps the bytes.
    async fn run_pipeline(
        &self,
        admitted: &Admission,
        (source, source_held): (Bytes, Arc<Reservation>),
        transform: Transform,
        overlay: Option<Overlay>,
    ) -> Result<pipeline::Rendered, RenderError> {
        let limits = self.pipeline_limits();
        let needed =
            pipeline::memory_needed_overlaid(&source, &transform, overlay.as_ref(), &limits)?;
        let reserved = self.budget.reserve(needed).await?;
        let encoding = self.encoding.clone();
        let (rendered, phases) = self
            .workers
            .run(admitted, reserved, move || {
                let _source_held = source_held;
                pipeline::phases::collect(|| {
                    pipeline::render_overlaid(
                        &source,
                        &transform,
                        overlay.as_ref(),
                        &limits,
                        &encoding,
                    )
                })
            })
            .await?;
        self.stats.metrics.render_phases(&phases);
        Ok(rendered?)
    }

    /// Renders what `voucher` shows the filter asked for, and logs failures; the error is what
    /// the client gets.
    pub(super) async fn handle(
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
}

/// The reads budget as the gate of storage reads ([`Renderer::read_gate`]).
pub(super) struct ReadsGate<'a> {
    reads: &'a MemoryBudget,
    /// The largest size a read passes to the gate.
    max: u64,
}

impl Gate<Reservation> for ReadsGate<'_> {
    async fn admit(&self, size: u64) -> Result<Reservation, StorageError> {
        self.reads
            .reserve(size)
            .await
            .map_err(|_| StorageError::TooLarge {
                size,
                limit: self.max,
            })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use pixmesh_core::watermark::{Axis, Offset, parse_opacity};
    use tonic::metadata::MetadataValue;

    use super::*;
    use crate::config::Limits;
    use crate::serving::budget::MemoryBudget;
    use crate::serving::flight::Flights;
    use crate::serving::pool::WorkerPool;
    use crate::serving::state::{BackgroundWrites, InFlight, SourceStore};
    use crate::serving::watermark_cache::WatermarkCache;
    use crate::storage::{LocalStorage, S3Storage, StorageError};
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
            reads: MemoryBudget::new(Limits::default().max_source_bytes),
            in_flight: InFlight::default(),
            watermarks: WatermarkCache::new(0),
            background: BackgroundWrites::new(8),
            default_watermark: None,
        })
    }

    /// A job holding a worker until its sender sends.
    type HeldJob = tokio::task::JoinHandle<
        Result<Result<(), std::sync::mpsc::RecvError>, crate::serving::pool::PoolError>,
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
        let source = flower_webp().leak();
        let (open_storage, storage_gate) = watch::channel(false);
        let (endpoint, gets) = gated_s3(source, storage_gate).await;
        let renderer = renderer_over(&endpoint).await;
        let mut request = flower(64);
        request.transform.height = 64;

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
            result_path: None,
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

    /// Result storage of `renderer` in the S3 bucket at `endpoint` (no source verification).
    async fn with_results(renderer: Arc<Renderer>, endpoint: &str) -> Arc<Renderer> {
        let cfg: crate::config::S3Config = toml::from_str(&format!(
            "bucket = \"results\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"AKIDTEST\"\nsecret_access_key = \"results-secret\"\n"
        ))
        .unwrap();
        let mut renderer = Arc::into_inner(renderer).expect("not shared yet");
        renderer.results = Some(crate::serving::state::ResultStore {
            storage: S3Storage::new(&cfg, Duration::from_secs(30)).await.unwrap(),
            base_dir: String::new(),
            path_prefix: String::new(),
            keys: crate::serving::state::ResultKeys::Digest,
            verify_source: false,
            expiration: None,
            report_errors: false,
        });
        Arc::new(renderer)
    }

    /// `samples/flower.webp`.
    fn flower_webp() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../samples/flower.webp"
        ))
        .unwrap()
    }

    /// `flower.webp` of storage `photos`, `width` wide.
    fn flower(width: u32) -> RenderRequest {
        RenderRequest {
            storage: "photos".into(),
            key: "flower.webp".into(),
            version: None,
            watermark: None,
            cache_key: None,
            transform: Transform {
                width,
                ..Transform::default()
            },
            result_path: None,
        }
    }

    /// A read reserves what the storage declares it will send, not `max_source_bytes`: with a
    /// reads budget of one `max_source_bytes` (as small as the configuration allows), reads of
    /// small objects still run at once. (Reserving `max_source_bytes` up front let one read in
    /// flight at a time here.)
    #[tokio::test]
    async fn reads_reserve_what_the_storage_declares_so_small_ones_run_at_once() {
        let (open, gate) = watch::channel(false);
        let (endpoint, gets) = gated_s3(b"small", gate).await;
        let renderer = renderer_over(&endpoint).await;
        assert_eq!(
            renderer.reads.available_kib(),
            Limits::default().max_source_bytes / 1024
        );
        let reads: Vec<_> = ["a.webp", "b.webp"]
            .into_iter()
            .map(|key| {
                let renderer = renderer.clone();
                tokio::spawn(async move {
                    let storage = &renderer.storages["photos"];
                    storage
                        .get_gated(
                            key,
                            None,
                            Limits::default().max_source_bytes,
                            &renderer.read_gate(),
                        )
                        .await
                        .map(|(object, held)| (object.bytes.len(), held.bytes()))
                })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while gets.load(Ordering::SeqCst) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the second read waited for the first"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        open.send(true).unwrap();
        for read in reads {
            assert_eq!(
                read.await.unwrap().unwrap(),
                (5, 1024),
                "its size, in whole KiB"
            );
        }
        assert_eq!(
            renderer.reads.available_kib(),
            Limits::default().max_source_bytes / 1024,
            "all returned"
        );
    }

    #[tokio::test]
    async fn identical_concurrent_hits_read_result_storage_once() {
        let (open_results, gate) = watch::channel(false);
        let (endpoint, gets) = gated_s3(b"a stored rendition", gate).await;
        let renderer = with_results(renderer_over("http://127.0.0.1:9").await, &endpoint).await;
        let request = flower(64);
        let key = renderer.results.as_ref().unwrap().key(&request);
        let requests: Vec<_> = (0..8)
            .map(|_| {
                let (renderer, request) = (renderer.clone(), request.clone());
                tokio::spawn(async move { renderer.render(request, None).await })
            })
            .collect();
        // All eight wait on one lookup, which result storage has not answered yet.
        until_waiting(&renderer.in_flight.results, &key, 8).await;
        open_results.send(true).unwrap();
        for request in requests {
            match request.await.unwrap() {
                Ok(Rendition::Image { body, .. }) => {
                    assert_eq!(&body.bytes[..], b"a stored rendition")
                }
                Ok(Rendition::NotModified { .. }) => panic!("no request was conditional"),
                Err(e) => panic!("hit failed: {}", e.detail()),
            }
        }
        assert_eq!(gets.load(Ordering::SeqCst), 1, "one GET of the rendition");
        assert_eq!(renderer.stats.source_reads.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn result_writes_past_the_background_limit_are_skipped_and_counted() {
        let source = flower_webp();
        let s3 = crate::testing::fake_s3::FakeS3::start(move |seen| match seen.method.as_str() {
            "GET" if seen.target.starts_with("/b/") => {
                crate::testing::fake_s3::Reply::new("200 OK", source.clone())
                    .header("etag", "\"v1\"")
                    .header("content-type", "image/webp")
            }
            "PUT" => crate::testing::fake_s3::Reply::new("200 OK", "").header("etag", "\"r\""),
            _ => crate::testing::fake_s3::Reply::new(
                "404 Not Found",
                "<Error><Code>NoSuchKey</Code></Error>",
            ),
        })
        .await;
        let renderer = renderer_over(&s3.endpoint).await;
        let mut renderer = Arc::into_inner(with_results(renderer, &s3.endpoint).await).unwrap();
        renderer.background = BackgroundWrites::new(1);
        let renderer = Arc::new(renderer);
        // The one background slot is busy with a write that never ends.
        assert!(renderer.background.spawn(std::future::pending()));

        let rendition = renderer.render(flower(32), None).await;
        assert!(matches!(rendition, Ok(Rendition::Image { .. })));
        assert_eq!(renderer.stats.writes_skipped.load(Ordering::SeqCst), 1);
        assert!(
            s3.seen().iter().all(|seen| seen.method != "PUT"),
            "nothing written: {:?}",
            s3.seen()
        );

        // With a free slot the rendition is written.
        let mut free = Arc::into_inner(renderer).unwrap();
        free.background = BackgroundWrites::new(1);
        let renderer = Arc::new(free);
        assert!(renderer.render(flower(33), None).await.is_ok());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !s3.seen().iter().any(|seen| seen.method == "PUT") {
            assert!(tokio::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(renderer.stats.writes_skipped.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_holds_its_share_of_the_budget_until_it_is_dropped() {
        const FLOWER: &[u8] = include_bytes!("../../../samples/flower.webp");
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
        use crate::testing::fake_s3::{FakeS3, Reply};
        const FLOWER: &[u8] = include_bytes!("../../../samples/flower.webp");
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
        let renderer = crate::serving::renderer(&config).await.unwrap();
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
            result_path: None,
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
        let renderer = crate::serving::renderer(&config).await.unwrap();
        let versioned = |storage: &str| RenderRequest {
            storage: storage.into(),
            key: "a.txt".into(),
            version: Some("v1".into()),
            watermark: None,
            cache_key: None,
            transform: Transform::default(),
            result_path: None,
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
        use crate::testing::fake_s3::{FakeS3, Reply};
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
            reads: MemoryBudget::new(Limits::default().max_source_bytes),
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
            result_path: None,
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
        let renderer = crate::serving::renderer(&config("")).await.unwrap();
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
            result_path: None,
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
        let configured = crate::serving::renderer(&config(
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
}
