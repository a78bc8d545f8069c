//! The sidecar's configuration file (TOML).
//!
//! ```toml
//! listen = "127.0.0.1:50051"
//! cache_control = "public, max-age=31536000"
//!
//! [limits]
//! max_source_bytes = 134217728
//! max_source_pixels = 50000000
//! max_animation_frames = 100    # frames kept of an animated GIF/WebP (GIF/WebP output)
//! max_queue = 64                # renders waiting for a worker (one per core); then 503
//!
//! [storages.samples]            # a local directory (the demo's default)
//! type = "local"
//! root = "/srv/images"
//!
//! [storages.photos]             # an S3-compatible bucket
//! type = "s3"
//! bucket = "photos"
//! endpoint = "http://127.0.0.1:3900"   # omit for AWS
//! region = "us-east-1"
//! force_path_style = true              # default: true with a custom endpoint
//! access_key_id = "GK…"                # omit both keys for the default credential chain
//! secret_access_key = "example-secret"
//! fallbacks = ["samples"]              # tried in order when an object is not found (at most 2)
//! # On writes to this bucket (result storage), each sent only when set:
//! storage_class = "STANDARD_IA"
//! acl = "private"                      # canned ACL; no ACL header when unset
//! tagging = "source=pixmesh&lifecycle=derived"
//!
//! [result_storage]              # optional: where renditions are kept and served from
//! storage = "photos"
//! base_dir = "renditions"
//! verify_source = true          # HEAD the source on each hit; re-render when its ETag changed
//! expiration_secs = 604800      # older renditions count as missing (never deleted); unset: never
//! report_errors = false         # a failed rendition write fails the response only when true
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aws_sdk_s3::types::{ObjectCannedAcl, StorageClass};
use pixmesh_core::tagging;
use serde::Deserialize;

/// Why the configuration was refused. The sidecar exits instead of starting half-configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// Values contradict each other.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the credential provider only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// The whole sidecar configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `Cache-Control` sent with every rendition.
    #[serde(default = "default_cache_control")]
    pub cache_control: String,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Named storages; the filter's routes refer to them by name.
    pub storages: BTreeMap<String, StorageConfig>,
    /// Where renditions are written and served from; none when unset.
    #[serde(default)]
    pub result_storage: Option<ResultStorageConfig>,
}

/// Resource limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest source object read, in bytes (413 beyond).
    pub max_source_bytes: u64,
    /// Largest source image, in pixels, checked from the header before decoding (413 beyond).
    pub max_source_pixels: u64,
    /// Largest output image, in pixels (413 beyond).
    pub max_output_pixels: u64,
    /// Frames of an animated GIF/WebP source kept when the output is GIF or WebP (the first
    /// ones, as imgproxy's `IMGPROXY_MAX_ANIMATION_FRAMES`); at least 1, and 1 renders every
    /// animation as its first frame. Frames × pixels count against the pixel limits (413).
    pub max_animation_frames: u32,
    /// Time allowed for one storage operation, in milliseconds (504 beyond).
    pub storage_timeout_ms: u64,
    /// Renders allowed to wait for a free worker (one worker per core); beyond, 503 at once.
    pub max_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_source_bytes: 128 << 20,
            max_source_pixels: 50_000_000,
            max_output_pixels: 50_000_000,
            max_animation_frames: crate::pipeline::DEFAULT_MAX_ANIMATION_FRAMES,
            storage_timeout_ms: 10_000,
            max_queue: 64,
        }
    }
}

/// One named storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    /// Files under a local directory (read-only).
    Local {
        /// The directory.
        root: PathBuf,
        /// Storages tried in order when an object is not here (see [`S3Config::fallbacks`]).
        #[serde(default)]
        fallbacks: Vec<String>,
    },
    /// An S3-compatible bucket.
    S3(S3Config),
}

/// Connection to one S3-compatible bucket.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Custom endpoint (MinIO, R2, Garage, …); AWS when unset.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region; the default chain's region when unset, `us-east-1` as a last resort.
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style addressing; defaults to true with a custom endpoint, false on AWS.
    #[serde(default)]
    pub force_path_style: Option<bool>,
    /// Static access key; the default credential chain is used when unset.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Static secret key.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Session token for temporary static credentials.
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// Other storages tried in order, at most [`MAX_FALLBACKS`], when an object is not found
    /// here. Only the requested storage's own list is followed (fallbacks are not transitive).
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Storage class of objects written here (`STANDARD_IA`, …); the bucket's default when unset.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Canned ACL of objects written here (`private`, `public-read`, …); no ACL header is sent
    /// when unset.
    #[serde(default)]
    pub acl: Option<String>,
    /// Tags of objects written here, as a query string (`source=pixmesh&lifecycle=derived`);
    /// none when unset. On AWS the writer also needs `s3:PutObjectTagging`.
    #[serde(default)]
    pub tagging: Option<String>,
}

/// Where renditions are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultStorageConfig {
    /// Name of an S3 storage in `[storages]`.
    pub storage: String,
    /// Key prefix of every rendition.
    #[serde(default)]
    pub base_dir: String,
    /// On a hit, compare the ETag the rendition was made from with the source's current one
    /// (one HEAD on the source, concurrent with the result read) and re-render when it changed.
    /// Costs one source request per hit (and per miss); turn off when sources never change.
    #[serde(default = "default_true")]
    pub verify_source: bool,
    /// Renditions older than this many seconds (by their `Last-Modified`) count as missing:
    /// they are re-rendered and overwritten, never deleted. Unset: they never expire.
    #[serde(default)]
    pub expiration_secs: Option<u64>,
    /// Fail the response when writing the rendition fails. When false (the default) the write
    /// happens after the response and a failure is only logged and counted.
    #[serde(default)]
    pub report_errors: bool,
}

impl ResultStorageConfig {
    /// A result storage in `storage` under `base_dir`, with every other setting at its default.
    pub fn new(storage: &str, base_dir: &str) -> Self {
        ResultStorageConfig {
            storage: storage.to_owned(),
            base_dir: base_dir.to_owned(),
            verify_source: true,
            expiration_secs: None,
            report_errors: false,
        }
    }
}

/// Most fallbacks one storage may list.
pub const MAX_FALLBACKS: usize = 2;

impl StorageConfig {
    /// The storages tried, in order, when an object is not found in this one.
    pub fn fallbacks(&self) -> &[String] {
        match self {
            StorageConfig::Local { fallbacks, .. } => fallbacks,
            StorageConfig::S3(s3) => &s3.fallbacks,
        }
    }
}

impl S3Config {
    /// The configured storage class, refused unless S3 knows it.
    pub fn storage_class(&self) -> Result<Option<StorageClass>, String> {
        known(
            self.storage_class.as_deref(),
            StorageClass::values(),
            "storage_class",
        )
        .map(|v| v.map(StorageClass::from))
    }

    /// The configured canned ACL, refused unless S3 knows it.
    pub fn acl(&self) -> Result<Option<ObjectCannedAcl>, String> {
        known(self.acl.as_deref(), ObjectCannedAcl::values(), "acl")
            .map(|v| v.map(ObjectCannedAcl::from))
    }

    /// The configured tagging in its canonical header form.
    pub fn tagging(&self) -> Result<Option<String>, String> {
        self.tagging
            .as_deref()
            .map(|t| tagging::normalize(t).map_err(|e| format!("tagging: {e}")))
            .transpose()
    }
}

/// `value` when it is one of `allowed`, else an error naming `what` and the allowed values.
fn known<'a>(
    value: Option<&'a str>,
    allowed: &[&str],
    what: &str,
) -> Result<Option<&'a str>, String> {
    match value {
        Some(v) if !allowed.contains(&v) => {
            Err(format!("{what} {v:?} is not one of {}", allowed.join(", ")))
        }
        v => Ok(v),
    }
}

fn default_true() -> bool {
    true
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_cache_control() -> String {
    "public, max-age=31536000".to_owned()
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates config text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.storages.is_empty() {
            return invalid("no [storages] configured".into());
        }
        if self.limits.max_animation_frames == 0 {
            return invalid("limits.max_animation_frames must be at least 1".into());
        }
        for (name, s) in &self.storages {
            if name.is_empty() || name.contains('/') {
                return invalid(format!("storage name {name:?} must be non-empty without /"));
            }
            if let StorageConfig::S3(s3) = s {
                if s3.bucket.is_empty() {
                    return invalid(format!("storage {name}: bucket is empty"));
                }
                if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                    return invalid(format!(
                        "storage {name}: set both access_key_id and secret_access_key, or neither"
                    ));
                }
                let settings = [s3.storage_class().err(), s3.acl().err(), s3.tagging().err()];
                if let Some(e) = settings.into_iter().flatten().next() {
                    return invalid(format!("storage {name}: {e}"));
                }
            }
            let fallbacks = s.fallbacks();
            if fallbacks.len() > MAX_FALLBACKS {
                return invalid(format!(
                    "storage {name}: at most {MAX_FALLBACKS} fallbacks, not {}",
                    fallbacks.len()
                ));
            }
            for (i, fallback) in fallbacks.iter().enumerate() {
                if fallback == name || fallbacks[..i].contains(fallback) {
                    return invalid(format!(
                        "storage {name}: fallback {fallback} is itself or listed twice"
                    ));
                }
                if !self.storages.contains_key(fallback) {
                    return invalid(format!(
                        "storage {name}: no fallback storage named {fallback}"
                    ));
                }
            }
        }
        if let Some(rs) = &self.result_storage {
            match self.storages.get(&rs.storage) {
                Some(StorageConfig::S3(_)) => {}
                Some(StorageConfig::Local { .. }) => {
                    return invalid(format!(
                        "result_storage: storage {} is local; result storage must be S3",
                        rs.storage
                    ));
                }
                None => {
                    return invalid(format!("result_storage: no storage named {}", rs.storage));
                }
            }
            if rs.expiration_secs == Some(0) {
                return invalid(
                    "result_storage: expiration_secs must be at least 1 (omit it for none)".into(),
                );
            }
        }
        if self.cache_control.bytes().any(|b| b.is_ascii_control()) {
            return invalid("cache_control contains a control character".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let doc = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = Config::from_toml(&doc).unwrap();
        assert_eq!(cfg.storages.len(), 2);
        let rs = cfg.result_storage.clone().unwrap();
        assert_eq!(rs.base_dir, "renditions");
        assert!(rs.verify_source);
        assert_eq!(rs.expiration_secs, Some(604800));
        assert!(!rs.report_errors);
        assert_eq!(cfg.storages["photos"].fallbacks(), ["samples"]);
        let StorageConfig::S3(s3) = &cfg.storages["photos"] else {
            panic!("photos is S3")
        };
        assert_eq!(s3.storage_class(), Ok(Some(StorageClass::StandardIa)));
        assert_eq!(s3.acl(), Ok(Some(ObjectCannedAcl::Private)));
        assert_eq!(
            s3.tagging(),
            Ok(Some("source=pixmesh&lifecycle=derived".to_owned()))
        );
        let debug = format!("{:?}", cfg.storages["photos"]);
        assert!(!debug.contains("example-secret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn refuses_contradictions() {
        for bad in [
            "",
            "[storages]",
            "[storages.a]\ntype = \"s3\"\nbucket = \"\"",
            "[storages.a]\ntype = \"s3\"\nbucket = \"b\"\naccess_key_id = \"x\"",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[result_storage]\nstorage = \"a\"",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[result_storage]\nstorage = \"b\"",
            "[storages.a]\ntype = \"ftp\"",
            "typo = 1\n[storages.a]\ntype = \"local\"\nroot = \"/\"",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
    }

    const TWO: &str = "[storages.a]\ntype = \"s3\"\nbucket = \"a\"\n\
                       [storages.b]\ntype = \"local\"\nroot = \"/\"\n";

    #[test]
    fn max_animation_frames_is_read_and_at_least_one() {
        let cfg = Config::from_toml(&format!("[limits]\nmax_animation_frames = 7\n{TWO}")).unwrap();
        assert_eq!(cfg.limits.max_animation_frames, 7);
        let default = Config::from_toml(TWO).unwrap().limits.max_animation_frames;
        assert_eq!(default, crate::pipeline::DEFAULT_MAX_ANIMATION_FRAMES);
        let err =
            Config::from_toml(&format!("[limits]\nmax_animation_frames = 0\n{TWO}")).unwrap_err();
        assert!(err.to_string().contains("max_animation_frames"), "{err}");
    }

    #[test]
    fn new_settings_default_to_what_existing_configs_meant() {
        let cfg = Config::from_toml(&format!("{TWO}[result_storage]\nstorage = \"a\"")).unwrap();
        let rs = cfg.result_storage.unwrap();
        assert!(rs.verify_source && !rs.report_errors && rs.expiration_secs.is_none());
        assert!(cfg.storages["a"].fallbacks().is_empty());
        let StorageConfig::S3(s3) = &cfg.storages["a"] else {
            panic!("a is S3")
        };
        assert_eq!(s3.storage_class(), Ok(None));
        assert_eq!(s3.acl(), Ok(None), "no ACL header unless configured");
        assert_eq!(s3.tagging(), Ok(None));
    }

    #[test]
    fn refuses_bad_write_settings_fallbacks_and_expiration() {
        let with_a = |extra: &str| {
            format!(
                "[storages.a]\ntype = \"s3\"\nbucket = \"a\"\n{extra}\n[storages.b]\ntype = \"local\"\nroot = \"/\"\n[storages.c]\ntype = \"local\"\nroot = \"/\"\n[storages.d]\ntype = \"local\"\nroot = \"/\"\n"
            )
        };
        for (extra, why) in [
            ("storage_class = \"FAST\"", "storage_class"),
            ("acl = \"public\"", "acl"),
            ("tagging = \"a=1&a=2\"", "tagging"),
            ("fallbacks = [\"x\"]", "no fallback storage named x"),
            ("fallbacks = [\"a\"]", "itself"),
            ("fallbacks = [\"b\", \"b\"]", "twice"),
            ("fallbacks = [\"b\", \"c\", \"d\"]", "at most 2"),
        ] {
            let err = Config::from_toml(&with_a(extra)).unwrap_err().to_string();
            assert!(err.contains(why), "{extra}: {err}");
        }
        assert!(Config::from_toml(&with_a("fallbacks = [\"b\", \"c\"]")).is_ok());
        let err = Config::from_toml(&format!(
            "{TWO}[result_storage]\nstorage = \"a\"\nexpiration_secs = 0"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("expiration_secs"), "{err}");
    }
}
