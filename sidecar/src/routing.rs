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
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use pixmesh_core::buckets::BucketRouting;
use pixmesh_core::keys::{SafeChars, escape};
use serde::Deserialize;

use crate::config::{S3Config, Secret};
use crate::storage::{Head, Object, S3Storage, StorageError};

/// Buckets named by keys whose clients are kept (each remembers its bucket's region).
pub const MAX_ON_DEMAND_BUCKETS: usize = 256;

/// Largest routing file read, in bytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a routing file is refused (the sidecar then refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum RoutingFileError {
    /// The file could not be read, or is over 1 MiB.
    #[error("routing_file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not YAML of the documented shape (unknown fields are refused too).
    #[error("routing_file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The routing file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingFile {
    /// A regular expression with a named group `bucket` (and optionally `path`).
    pub routing_pattern: String,
    /// The bucket of keys no rule matches.
    #[serde(default)]
    pub default_bucket: Option<BucketEntry>,
    /// Buckets tried in order when an object is not in the routed one (at most two).
    #[serde(default)]
    pub fallback_buckets: Vec<BucketEntry>,
    /// Captured values and their buckets.
    #[serde(default)]
    pub rules: Vec<RuleEntry>,
}

/// One bucket of the routing file; unset values are the storage's.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BucketEntry {
    /// Bucket name.
    pub name: String,
    /// Its region.
    #[serde(default)]
    pub region: Option<String>,
    /// Its endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Its access key (with `secret_access_key`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Its secret key.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Its session token.
    #[serde(default)]
    pub session_token: Option<Secret>,
}

/// One rule: keys whose captured `bucket` value equals `match` go to `bucket`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// The captured value.
    #[serde(rename = "match")]
    pub matches: String,
    /// Its bucket.
    pub bucket: BucketEntry,
}

impl RoutingFile {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<(Self, BucketRouting), RoutingFileError> {
        let read = |reason: String| RoutingFileError::Read {
            path: path.to_owned(),
            reason,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| read(e.to_string()))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(read(format!("{size} bytes; at most {MAX_FILE_BYTES}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        Self::parse(&text).map_err(|reason| RoutingFileError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and validates YAML text; the error says what is wrong (never a secret).
    pub fn parse(text: &str) -> Result<(Self, BucketRouting), String> {
        let file: RoutingFile = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        let routing = BucketRouting::new(
            &file.routing_pattern,
            file.rules
                .iter()
                .map(|r| (r.matches.clone(), r.bucket.name.clone()))
                .collect(),
            file.default_bucket.as_ref().map(|b| b.name.clone()),
            file.fallback_buckets
                .iter()
                .map(|b| b.name.clone())
                .collect(),
        )
        .map_err(|e| e.to_string())?;
        let mut seen: HashMap<&str, &BucketEntry> = HashMap::new();
        for entry in file.entries() {
            if entry.access_key_id.is_some() != entry.secret_access_key.is_some() {
                return Err(format!(
                    "bucket {}: set both access_key_id and secret_access_key, or neither",
                    entry.name
                ));
            }
            if seen.insert(&entry.name, entry).is_some_and(|e| e != entry) {
                return Err(format!(
                    "bucket {} is configured twice with different settings",
                    entry.name
                ));
            }
        }
        Ok((file, routing))
    }

    /// Every bucket entry: rules, default, fallbacks.
    fn entries(&self) -> impl Iterator<Item = &BucketEntry> {
        self.rules
            .iter()
            .map(|r| &r.bucket)
            .chain(&self.default_bucket)
            .chain(&self.fallback_buckets)
    }
}

impl BucketEntry {
    /// `base` (the storage's settings) for this bucket, with what the entry sets itself.
    fn config(&self, base: &S3Config) -> S3Config {
        let mut cfg = base.clone();
        cfg.bucket = self.name.clone();
        cfg.routing_file = None;
        if self.region.is_some() {
            cfg.region = self.region.clone();
        }
        if self.endpoint.is_some() {
            cfg.endpoint = self.endpoint.clone();
        }
        if self.access_key_id.is_some() {
            cfg.access_key_id = self.access_key_id.clone();
            cfg.secret_access_key = self.secret_access_key.clone();
            cfg.session_token = self.session_token.clone();
        }
        cfg
    }
}

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

    /// Reads `key` (its `version`, when given) from its bucket, then the fallbacks.
    pub async fn get(
        &self,
        key: &str,
        version: Option<&str>,
        max_bytes: u64,
    ) -> Result<Object, StorageError> {
        let (targets, key) = self.targets(key)?;
        for (storage, named_by_url) in &targets {
            let read = storage.get(&key, version, max_bytes).await;
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

    /// The seed's example file, as printed there (its indentation restored).
    const SEED: &str = r#"
# Regex pattern with named capture group (?P<bucket>...)
routing_pattern: "^[a-f0-9]{4}-(?P<bucket>[A-Za-z0-9]+)-"
default_bucket:
  name: imagor-default
  region: us-east-1
fallback_buckets:
  - name: imagor-archive
    region: us-west-2
rules:
  - match: SG
    bucket:
      name: imagor-singapore
      region: ap-southeast-1
  - match: US
    bucket:
      name: imagor-us
      region: us-east-1
  - match: EU
    bucket:
      name: imagor-eu
      region: eu-west-1
      endpoint: https://s3.custom-endpoint.com
      access_key_id: AKIAIOSFODNN7EXAMPLE
      secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
"#;

    #[test]
    fn parses_the_seed_example() {
        let (file, routing) = RoutingFile::parse(SEED).unwrap();
        assert_eq!(file.rules.len(), 3);
        assert_eq!(routing.route("f7a3-EU-x.jpg").unwrap().bucket, "imagor-eu");
        assert_eq!(routing.route("zzzz.jpg").unwrap().bucket, "imagor-default");
        assert_eq!(routing.fallback_buckets(), ["imagor-archive"]);
        let base: S3Config = toml::from_str(
            "bucket = \"*\"\nregion = \"us-east-1\"\naccess_key_id = \"GLOBAL\"\n\
             secret_access_key = \"global-secret\"",
        )
        .unwrap();
        let eu = file.rules[2].bucket.config(&base);
        assert_eq!(eu.bucket, "imagor-eu");
        assert_eq!(eu.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            eu.endpoint.as_deref(),
            Some("https://s3.custom-endpoint.com")
        );
        assert_eq!(eu.access_key_id.as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
        let sg = file.rules[0].bucket.config(&base);
        assert_eq!(
            sg.access_key_id.as_deref(),
            Some("GLOBAL"),
            "global credentials"
        );
        assert_eq!(sg.region.as_deref(), Some("ap-southeast-1"));
        let debug = format!("{file:?}");
        assert!(!debug.contains("wJalrXUtnFEMI"), "{debug}");
    }

    #[test]
    fn refuses_bad_files_without_echoing_secrets() {
        for (bad, why) in [
            ("routing_pattern: \"(\"", "regular expression"),
            ("routing_pattern: \"x\"", "(?P<bucket>"),
            ("rules: []", "routing_pattern"),
            ("routing_pattern: \"(?P<bucket>x)\"\ntypo: 1", "typo"),
            (
                "routing_pattern: \"(?P<bucket>x)\"\nfallback_buckets: [{name: aaa}, {name: bbb}, {name: ccc}]",
                "at most 2",
            ),
            (
                "routing_pattern: \"(?P<bucket>x)\"\ndefault_bucket: {name: Not_A_Bucket}",
                "Not_A_Bucket",
            ),
            (
                "routing_pattern: \"(?P<bucket>x)\"\ndefault_bucket: {name: aaa, access_key_id: K}",
                "both access_key_id and secret_access_key",
            ),
            (
                "routing_pattern: \"(?P<bucket>x)\"\ndefault_bucket: {name: aaa, region: a}\n\
                 fallback_buckets: [{name: aaa, region: b}]",
                "configured twice",
            ),
            (
                "routing_pattern: \"(?P<bucket>x)\"\ndefault_bucket: {name: aaa, secret_access_key: hush-hush}",
                "both",
            ),
        ] {
            let err = RoutingFile::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("hush-hush"), "{err}");
        }
    }

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
