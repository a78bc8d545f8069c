//! Result storage and source storage: the metadata renditions and source copies carry, expiry,
//! the lookup of a stored rendition (re-verified against the source's and the watermark's
//! current ETags with `verify_source`; one stored by imagor against the source's modification
//! time, as imagor does), and source copies read before the loader and written after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use pixmesh_core::render::{RenderRequest, if_none_match, varied_etag};

use crate::serving::budget::Reservation;
use crate::serving::status::RenderError;
use crate::storage::first_found;
use crate::storage::{Head, Object, Storage, StorageError, http_date};

use super::state::{Body, Lookup, Renderer, Rendition, ResultStore, SourceStore, Stored};

/// User-metadata names kept with each rendition in result storage: its ETag, and the source's
/// `Last-Modified` and ETag it was made from.
pub(super) const META_ETAG: &str = "pixmesh-etag";
pub(super) const META_SOURCE_MODIFIED: &str = "pixmesh-source-last-modified";
pub(super) const META_SOURCE_ETAG: &str = "pixmesh-source-etag";
/// The ETag of the watermark a rendition was made with (renditions with one only).
pub(super) const META_WATERMARK_ETAG: &str = "pixmesh-watermark-etag";

/// User-metadata names kept with each source copy: the loader storage it was read from (keys
/// of several storages may map onto one copy; a copy of another storage's object is a miss),
/// and the original's ETag and `Last-Modified`, which renditions made from the copy carry.
const META_COPY_STORAGE: &str = "pixmesh-copy-of-storage";
const META_COPY_ETAG: &str = "pixmesh-copy-of-etag";
const META_COPY_MODIFIED: &str = "pixmesh-copy-of-last-modified";

/// Whether a rendition was stored by another server (imagor, before a migration with
/// imagor's result keys): it has none of the metadata pixmesh writes.
fn foreign(rendition: &Object) -> bool {
    !rendition.metadata.contains_key(META_SOURCE_ETAG)
}

/// Whether `rendition` was made from the source whose HEAD answered `etag` and `modified`.
/// pixmesh records the source's ETag with each rendition; a [`foreign`] one counts as made from
/// the current source unless it is older than the source, the check imagor itself makes
/// (`IMAGOR_MODIFIED_TIME_CHECK`), and, as imagor does, when either time is unknown.
fn made_from(rendition: &Object, etag: &str, modified: Option<DateTime>) -> bool {
    match rendition.metadata.get(META_SOURCE_ETAG) {
        Some(recorded) => recorded == etag,
        None => match (rendition.last_modified, modified) {
            (Some(made), Some(changed)) => made.secs() >= changed.secs(),
            _ => true,
        },
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

impl Renderer {
    /// The copy of a source of `storage` at `key` in source storage, with its share of the
    /// reads budget, unless it is missing, unreadable, expired or a copy of another storage's
    /// object.
    pub(super) async fn read_copy(
        &self,
        ss: &SourceStore,
        key: &str,
        storage: &str,
    ) -> Option<(Object, Reservation)> {
        let gate = self.read_gate();
        let (mut obj, held) = match ss
            .storage
            .get_gated(key, None, self.limits.max_source_bytes, &gate)
            .await
        {
            Ok(read) => read,
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
        Some((obj, held))
    }

    /// Writes a copy of `obj`, read from `storage`, at `key` in source storage, in the
    /// background: a failure is logged and counted, never a failed response. The write keeps
    /// `held` (the object's share of the reads budget) until it ends, as it keeps the bytes.
    pub(super) fn write_copy(
        &self,
        ss: &SourceStore,
        key: String,
        storage: &str,
        obj: &Object,
        held: Arc<Reservation>,
    ) {
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
            let _held = held;
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

    /// The rendition at `key` in result storage, unless it is missing, unreadable, expired or
    /// (with `verify_source`, and unless `req` names a version, which never changes) made from
    /// another version of the source, or of its watermark, than the current one. Read once for
    /// all concurrent requests for it, once the pool admits it (as a source is), within the
    /// reads budget ([`Renderer::read_gate`]); a hit keeps that reservation until the last
    /// response sending it is done.
    pub(super) async fn stored(
        &self,
        rs: &ResultStore,
        key: &str,
        chain: &[&Storage],
        req: &RenderRequest,
    ) -> Result<Lookup, RenderError> {
        let _admission = (self.stats.metrics)
            .timed(
                crate::telemetry::metrics::Step::QueueWait,
                self.workers.admit(),
            )
            .await?;
        // Renditions are bounded like sources, so a stray huge object cannot exhaust memory.
        let gate = self.read_gate();
        let read = rs
            .storage
            .get_gated(key, None, self.limits.max_source_bytes, &gate);
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
        let (obj, reserved) = match read {
            Ok(read) => read,
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
            Some(Ok(Head {
                etag,
                last_modified,
            })) if !made_from(&obj, &etag, last_modified) => {
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
            && !foreign(&obj)
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
        Ok(Lookup::Hit(Stored {
            object: obj,
            held: Arc::new(reserved),
        }))
    }
}

pub(super) fn from_result_storage(
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

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

    #[test]
    fn renditions_imagor_stored_are_current_unless_older_than_the_source() {
        let at = |secs: i64| Some(DateTime::from_secs(secs));
        let rendition = |made: Option<DateTime>, source_etag: Option<&str>| Object {
            bytes: Bytes::new(),
            etag: "\"r\"".into(),
            last_modified: made,
            content_type: None,
            metadata: source_etag
                .map(|e| HashMap::from([(META_SOURCE_ETAG.to_owned(), e.to_owned())]))
                .unwrap_or_default(),
        };
        // pixmesh's own: the recorded ETag decides, whatever the times say.
        let own = rendition(at(100), Some("\"a\""));
        assert!(made_from(&own, "\"a\"", at(200)));
        assert!(!made_from(&own, "\"b\"", at(50)));
        assert!(!foreign(&own));
        // imagor's: not older than the source, as IMAGOR_MODIFIED_TIME_CHECK decides.
        let imagor = rendition(at(100), None);
        assert!(foreign(&imagor));
        assert!(made_from(&imagor, "\"a\"", at(100)));
        assert!(made_from(&imagor, "\"a\"", at(50)));
        assert!(!made_from(&imagor, "\"a\"", at(101)));
        assert!(made_from(&imagor, "\"a\"", None));
        assert!(made_from(&rendition(None, None), "\"a\"", at(101)));
    }
}
