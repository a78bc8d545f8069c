//! The sidecar's configuration file (TOML).
//!
//! ```toml
//! listen = "127.0.0.1:50051"
//! cache_control = "public, max-age=31536000"
//!
//! [limits]
//! max_source_bytes = 134217728
//! max_source_pixels = 50000000
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
//!
//! [result_storage]              # optional: where renditions are kept and served from
//! storage = "photos"
//! base_dir = "renditions"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
        assert_eq!(cfg.result_storage.unwrap().base_dir, "renditions");
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
}
