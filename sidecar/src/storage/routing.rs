//! S3 storages without one fixed bucket: imagor's wildcard bucket (`bucket = "*"`) and its
//! bucket routing file (`routing_file`, YAML, imagor's `S3_LOADER_BUCKET_ROUTER_CONFIG`):
//!
//! ```yaml
//! routing_pattern: "^[a-f0-9]{4}-(?P<bucket>[A-Za-z0-9]+)-"
//! default_bucket:
//!   name: imagor-default
//!   region: us-east-1
//! fallback_buckets:          # at most two, tried in order when an object is not found
//!   - name: imagor-archive
//!     region: us-west-2
//! rules:
//!   - match: SG
//!     bucket:
//!       name: imagor-singapore
//!       region: ap-southeast-1
//!   - match: EU
//!     bucket:
//!       name: imagor-eu
//!       region: eu-west-1
//!       endpoint: https://s3.custom-endpoint.com
//!       access_key_id: AKIAIOSFODNN7EXAMPLE
//!       secret_access_key: example-secret
//! ```
//!
//! Which bucket a key goes to is pure logic ([`pixmesh_core::buckets`]); this module reads the
//! file and keeps one [`S3Storage`] per bucket. A bucket of the file takes the storage's
//! endpoint, region and credentials for what it does not set itself. Without `rules` and
//! `default_bucket` (passthrough) the key names the bucket, as with `*`: such buckets are reached
//! with the storage's own settings, through clients made on first use and kept for at most
//! [`MAX_ON_DEMAND_BUCKETS`] buckets (later ones get a client per request).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pixmesh_core::buckets::BucketRouting;
use pixmesh_core::keys::{SafeChars, escape};

use super::{Head, Object, S3Storage, StorageError};
use crate::config::S3Config;
use crate::config::routing_file::RoutingFile;

/// Buckets named by keys whose clients are kept (each remembers its bucket's region).
pub const MAX_ON_DEMAND_BUCKETS: usize = 256;

/// An S3 storage whose bucket depends on the key.
#[derive(Debug)]
pub struct RoutedS3 {
    routing: BucketRouting,
    /// The buckets the routing file names, with their own settings.
    configured: HashMap<String, S3Storage>,
    /// The storage's own settings (bucket `*`): passthrough buckets are made from it.
    template: S3Storage,
    /// Passthrough buckets met so far, at most [`MAX_ON_DEMAND_BUCKETS`].
    on_demand: Mutex<HashMap<String, S3Storage>>,
    /// How keys are escaped before reading, if they are.
    escape: Option<SafeChars>,
    /// The buckets a key may name (`allowed_buckets`); `None`: any.
    allowed: Option<Vec<String>>,
}

impl RoutedS3 {
    /// The storage `cfg` describes (`bucket = "*"`, with or without a routing file).
    pub async fn new(cfg: &S3Config, timeout: Duration) -> Result<Self, String> {
        let escape = cfg.source_key_escaping()?;
        let template = S3Storage::new(cfg, timeout).await?;
        let mut configured = HashMap::new();
        let routing = match &cfg.routing_file {
            None => BucketRouting::wildcard(),
            Some(path) => {
                let (file, routing) = RoutingFile::load(path).map_err(|e| e.to_string())?;
                for entry in file.entries() {
                    if !configured.contains_key(&entry.name) {
                        let storage = S3Storage::new(&entry.config(cfg), timeout).await?;
                        configured.insert(entry.name.clone(), storage);
                    }
                }
                routing
            }
        };
        let any = cfg
            .allowed_buckets
            .iter()
            .any(|b| b == crate::config::WILDCARD_BUCKET);
        Ok(RoutedS3 {
            routing,
            configured,
            template,
            on_demand: Mutex::new(HashMap::new()),
            escape,
            allowed: (!any).then(|| cfg.allowed_buckets.clone()),
        })
    }

    /// The routing table.
    pub fn routing(&self) -> &BucketRouting {
        &self.routing
    }

    /// The storage of a bucket the routing file names.
    pub fn configured(&self, bucket: &str) -> Option<&S3Storage> {
        self.configured.get(bucket)
    }

    /// The storage of `bucket`: a configured one, or one made from the template.
    fn bucket(&self, bucket: &str) -> S3Storage {
        if let Some(s) = self.configured.get(bucket) {
            return s.clone();
        }
        let mut made = self.on_demand.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = made.get(bucket) {
            return s.clone();
        }
        let storage = self.template.for_bucket(bucket);
        if made.len() < MAX_ON_DEMAND_BUCKETS {
            made.insert(bucket.to_owned(), storage.clone());
        }
        storage
    }

    /// Where `key` is read: the routed bucket then the fallbacks, each with whether a missing
    /// bucket means a missing object (a bucket the URL named), and the object key.
    fn targets(&self, key: &str) -> Result<(Vec<(S3Storage, bool)>, String), StorageError> {
        let routed = self.routing.route(key).map_err(StorageError::Unroutable)?;
        // A bucket the key names must be one this storage may read: a missing object else.
        if routed.passthrough
            && let Some(allowed) = &self.allowed
            && !allowed.contains(&routed.bucket)
        {
            return Err(StorageError::NotFound);
        }
        let mut targets = vec![(self.bucket(&routed.bucket), routed.passthrough)];
        for fallback in self.routing.fallback_buckets() {
            if fallback != &routed.bucket {
                targets.push((self.bucket(fallback), false));
            }
        }
        let key = match &self.escape {
            Some(safe) => escape(&routed.key, safe),
            None => routed.key,
        };
        Ok((targets, key))
    }

    /// Reads `key` (its `version`, when given) from its bucket, then the fallbacks, through
    /// `gate` ([`super::Storage::get_gated`]).
    pub async fn get<H>(
        &self,
        key: &str,
        version: Option<&str>,
        max_bytes: u64,
        gate: &impl super::Gate<H>,
    ) -> Result<(Object, H), StorageError> {
        let (targets, key) = self.targets(key)?;
        for (storage, named_by_url) in &targets {
            let read = storage.get_gated(&key, version, max_bytes, gate).await;
            match missing_bucket_is_missing(read, *named_by_url) {
                Err(StorageError::NotFound) => {}
                other => return other,
            }
        }
        Err(StorageError::NotFound)
    }

    /// The validators of `key` (its `version`, when given), from its bucket or the fallbacks.
    pub async fn head(&self, key: &str, version: Option<&str>) -> Result<Head, StorageError> {
        let (targets, key) = self.targets(key)?;
        for (storage, named_by_url) in &targets {
            match missing_bucket_is_missing(storage.head(&key, version).await, *named_by_url) {
                Err(StorageError::NotFound) => {}
                other => return other,
            }
        }
        Err(StorageError::NotFound)
    }
}

/// A bucket that does not exist is a missing object when the URL named it (404), and a storage
/// error when the configuration did.
fn missing_bucket_is_missing<T>(
    result: Result<T, StorageError>,
    named_by_url: bool,
) -> Result<T, StorageError> {
    match result {
        Err(StorageError::NoSuchBucket) if named_by_url => Err(StorageError::NotFound),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bucket_named_by_the_url_is_a_missing_object() {
        let missing: Result<(), StorageError> = Err(StorageError::NoSuchBucket);
        assert!(matches!(
            missing_bucket_is_missing(missing.clone(), true),
            Err(StorageError::NotFound)
        ));
        assert!(matches!(
            missing_bucket_is_missing(missing, false),
            Err(StorageError::NoSuchBucket)
        ));
    }
}
