//! The sidecar's configuration file (TOML).
//!
//! ```toml
//! listen = "127.0.0.1:50051"
//! metrics_listen = "0.0.0.0:9090"  # /metrics, /livez, /readyz; off when unset
//! cache_control = "public, max-age=31536000"
//!
//! [limits]
//! max_source_bytes = 134217728
//! max_source_pixels = 50000000
//! max_animation_frames = 100    # frames kept of an animated GIF/WebP (GIF/WebP output)
//! max_avif_output_pixels = 16000000  # AVIF outputs (the slowest encode to make) up to 16 MP
//! max_queue = 64                # requests waiting for a render slot; then 503
//! workers = 2                  # renders at a time; default: the cgroup's CPU quota, else the CPUs
//! memory_budget_bytes = 1073741824  # every image held: objects read, renders, caches
//!
//! [encoding]                    # what a URL that names no quality or scan mode gets
//! jpeg_quality = 80
//! webp_quality = 80
//! avif_quality = 70             # ravif's scale
//! jpeg_progressive = true       # default false: baseline JPEGs
//! avif_speed = 8                # rav1e preset: 1 slowest/smallest … 10 fastest
//! avif_bit_depth = 8            # or 10: ~4% smaller at equal quality, twice the encode time
//!
//! [s3]                          # what every S3 storage below uses where it says nothing
//! endpoint = "http://127.0.0.1:3900"   # (credentials fall back as a whole: a storage with its
//! region = "us-east-1"                 # own access_key_id or profile uses none of these keys)
//! # access_key_id = "GK…"  secret_access_key = "…"  session_token, profile, force_path_style,
//! # role_arn, external_id, role_session_name, sts_endpoint
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
//! # profile = "images"                 # default chain only: a profile of ~/.aws/{config,credentials}
//! role_arn = "arn:aws:iam::123456789012:role/pixmesh-reader"   # assumed with the keys above
//! external_id = "pixmesh-42"           # when the role's trust policy asks for one
//! role_session_name = "pixmesh"
//! # sts_endpoint = "https://sts.eu-west-1.amazonaws.com"
//! fallbacks = ["samples"]              # tried in order when an object is not found (at most 2)
//! # On writes to this bucket (result storage), each sent only when set:
//! storage_class = "STANDARD_IA"
//! acl = "private"                      # canned ACL; no ACL header when unset
//! tagging = "source=pixmesh&lifecycle=derived"
//! # Keys: escape_keys = true reads `a+b.jpg` as `a%2Bb.jpg` (imagor's S3 loader, ImageKit's
//! # "encode keys"); safe_chars adds to what stays unescaped (also in result keys here).
//! safe_chars = "[]"
//!
//! [storages.tenants]            # bucket "*": the first key segment names the bucket
//! type = "s3"
//! bucket = "*"                  # endpoint, region, credentials: from [s3]
//! allowed_buckets = ["tenant-a", "tenant-b"]  # the buckets keys may name (["*"]: any at all)
//! # expected_bucket_owner = "111122223333"    # AWS: S3 refuses buckets of other accounts
//! escape_keys = true
//! # routing_file = "/etc/pixmesh/bucket-routing.yaml"  # imagor's bucket routing file instead
//!
//! [result_storage]              # optional: where renditions are kept and served from
//! storage = "photos"
//! base_dir = "renditions"
//! verify_source = true          # HEAD the source (and watermark) on each hit; re-render when an ETag changed
//! expiration_secs = 604800      # older renditions count as missing (never deleted); unset: never
//! report_errors = false         # a failed rendition write fails the response only when true
//! path_style = "default"        # or "digest": keys are SHA-1s of the request, `ab/cd/ef…`
//!                               # (of imagor's name on routes with "result_keys": "imagor")
//! # path_prefix = "uploads"     # only sources under uploads/ (the loader's key); stripped
//!
//! [source_storage]              # optional: keep a copy of each source, read it first
//! storage = "photos"
//! base_dir = "copies"
//! path_prefix = "uploads"       # only sources under uploads/; uploads/a.jpg → copies/a.jpg
//! expiration_secs = 86400       # older copies are read from the loader again; unset: never
//!
//! [watermark]                   # optional
//! storage = "photos"            # imgproxy's `wm:` watermark (IMGPROXY_WATERMARK_PATH): this
//! key = "watermarks/logo.png"   # object; without both, `wm:` is 501
//! cache_bytes = 16777216        # decoded watermarks kept (LRU), taken from memory_budget_bytes
//!
//! [tracing]                     # OpenTelemetry spans over OTLP/gRPC; off when absent
//! otlp_endpoint = "http://127.0.0.1:4317"  # default: OTEL_EXPORTER_OTLP_ENDPOINT, else localhost
//! service_name = "pixmesh-sidecar"
//! sample_ratio = 1.0            # of new traces; a traceparent's sampled flag is followed
//! ```

pub mod cpus;
pub mod imagor_env;
pub mod imgproxy_env;
pub mod routing_file;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aws_sdk_s3::types::{ObjectCannedAcl, StorageClass};
use pixmesh_core::keys::SafeChars;
use pixmesh_core::tagging;
use pixmesh_core::vouch::Voucher;
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
    /// The secret itself, for the credential provider and the voucher only.
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
    /// The operator's HTTP port: `/metrics` (Prometheus), `/livez`, `/readyz`. Off when unset;
    /// in a pod, `0.0.0.0:9090` (Prometheus and the kubelet reach the pod's IP, not its
    /// loopback).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// `Cache-Control` sent with every rendition.
    #[serde(default = "default_cache_control")]
    pub cache_control: String,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Encoder defaults for requests that name no quality or scan mode.
    #[serde(default)]
    pub encoding: EncodingConfig,
    /// Named storages; the filter's routes refer to them by name.
    pub storages: BTreeMap<String, StorageConfig>,
    /// Where renditions are written and served from; none when unset.
    #[serde(default)]
    pub result_storage: Option<ResultStorageConfig>,
    /// Where copies of sources are kept and read first (imagor's storage role); none when unset.
    #[serde(default)]
    pub source_storage: Option<SourceStorageConfig>,
    /// Connection and credential settings every S3 storage falls back to where it sets none
    /// of its own (imagor's global `S3_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, …).
    /// Already applied to [`Config::storages`] once loaded.
    #[serde(default)]
    pub s3: S3Defaults,
    /// Watermarks: imgproxy's default one and the decoded-watermark cache.
    #[serde(default)]
    pub watermark: WatermarkConfig,
    /// The key the filter vouches for render requests with (its `render_key`; see
    /// [`pixmesh_core::vouch`]), at least 32 bytes. [`Config::load`] takes it from the
    /// environment variable `PIXMESH_RENDER_KEY` when the file has none; the service refuses
    /// to start without one.
    #[serde(default)]
    pub render_key: Option<Secret>,
    /// OpenTelemetry traces ([`crate::telemetry::traces`]); off when absent.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
}

/// The `[tracing]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector (`http://HOST:PORT`); unset: the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://localhost:4317`.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The resource's `service.name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of new traces kept, 0 to 1 (requests with a `traceparent` follow its flag).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

fn default_service_name() -> String {
    "pixmesh-sidecar".into()
}

fn default_sample_ratio() -> f64 {
    1.0
}

impl TracingConfig {
    fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "tracing: sample_ratio {} is not between 0 and 1",
                self.sample_ratio
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://")
                && endpoint.parse::<tonic::transport::Uri>().is_ok())
        {
            return Err(format!(
                "tracing: otlp_endpoint {endpoint:?} is not an http://HOST:PORT URL (TLS to the \
                 collector is not supported: use a local collector)"
            ));
        }
        if self.service_name.is_empty() {
            return Err("tracing: service_name is empty".into());
        }
        Ok(())
    }
}

/// The `[s3]` table: what an S3 storage uses when it does not say (the loader, storage and
/// result roles each fall back to it). Settings fall back one by one, except credentials,
/// which fall back as a whole so they never mix: a storage with its own `access_key_id` or
/// `profile` uses none of the global keys, token or profile, and one with its own `role_arn`
/// none of the global role settings (`external_id`, `role_session_name`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Defaults {
    /// See [`S3Config::endpoint`].
    #[serde(default)]
    pub endpoint: Option<String>,
    /// See [`S3Config::region`].
    #[serde(default)]
    pub region: Option<String>,
    /// See [`S3Config::force_path_style`].
    #[serde(default)]
    pub force_path_style: Option<bool>,
    /// See [`S3Config::access_key_id`].
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// See [`S3Config::secret_access_key`].
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// See [`S3Config::session_token`].
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// See [`S3Config::profile`].
    #[serde(default)]
    pub profile: Option<String>,
    /// See [`S3Config::role_arn`].
    #[serde(default)]
    pub role_arn: Option<String>,
    /// See [`S3Config::external_id`].
    #[serde(default)]
    pub external_id: Option<String>,
    /// See [`S3Config::role_session_name`].
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// See [`S3Config::sts_endpoint`].
    #[serde(default)]
    pub sts_endpoint: Option<String>,
}

impl S3Defaults {
    /// Fills what `s3` leaves unset (credentials as a whole, see [`S3Defaults`]).
    fn fill(&self, s3: &mut S3Config) {
        let fill = |own: &mut Option<String>, global: &Option<String>| {
            if own.is_none() {
                own.clone_from(global);
            }
        };
        fill(&mut s3.endpoint, &self.endpoint);
        fill(&mut s3.region, &self.region);
        fill(&mut s3.sts_endpoint, &self.sts_endpoint);
        if s3.force_path_style.is_none() {
            s3.force_path_style = self.force_path_style;
        }
        let own_credentials = s3.access_key_id.is_some()
            || s3.secret_access_key.is_some()
            || s3.session_token.is_some()
            || s3.profile.is_some();
        if !own_credentials {
            s3.access_key_id.clone_from(&self.access_key_id);
            s3.secret_access_key.clone_from(&self.secret_access_key);
            s3.session_token.clone_from(&self.session_token);
            s3.profile.clone_from(&self.profile);
        }
        let own_role =
            s3.role_arn.is_some() || s3.external_id.is_some() || s3.role_session_name.is_some();
        if !own_role {
            s3.role_arn.clone_from(&self.role_arn);
            s3.external_id.clone_from(&self.external_id);
            s3.role_session_name.clone_from(&self.role_session_name);
        }
    }

    /// Refuses global settings that contradict each other, as a storage's would be.
    fn validate(&self) -> Result<(), String> {
        let mut alone = S3Config::default();
        self.fill(&mut alone);
        alone.credential_settings()
    }
}

/// Default size of the decoded-watermark cache: 16 MiB, a thousand 64×64 logos or one
/// 2000×2000 RGBA image.
pub const DEFAULT_WATERMARK_CACHE_BYTES: u64 = 16 << 20;

/// `[watermark]`: the watermark imgproxy URLs (`wm:…`) put on the result, which imgproxy reads
/// from `IMGPROXY_WATERMARK_PATH`, and the cache of decoded watermarks (every grammar's).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// The storage holding the default watermark (with `key`).
    #[serde(default)]
    pub storage: Option<String>,
    /// Its key, read as is (the storage's `escape_keys` applies), without `..` or a leading
    /// `/`.
    #[serde(default)]
    pub key: Option<String>,
    /// Bytes of decoded watermarks (RGBA) kept, least recently used dropped first; 0: none.
    /// Taken from `limits.memory_budget_bytes`, so renders reserve from what is left.
    #[serde(default = "default_watermark_cache_bytes")]
    pub cache_bytes: u64,
}

fn default_watermark_cache_bytes() -> u64 {
    DEFAULT_WATERMARK_CACHE_BYTES
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        WatermarkConfig {
            storage: None,
            key: None,
            cache_bytes: DEFAULT_WATERMARK_CACHE_BYTES,
        }
    }
}

impl WatermarkConfig {
    /// The default watermark's storage and key, when configured.
    pub fn default_image(&self) -> Option<(String, String)> {
        Some((self.storage.clone()?, self.key.clone()?))
    }
}

/// The storage role (imagor's `S3_STORAGE_*`): a copy of every source read, kept in an S3
/// storage and read before the loader. The storage's own `storage_class`, `acl` and `tagging`
/// apply to the copies. Reads of an object version bypass it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceStorageConfig {
    /// Name of an S3 storage in `[storages]`.
    pub storage: String,
    /// Key prefix of every copy.
    #[serde(default)]
    pub base_dir: String,
    /// Only sources whose key (the key the loader reads) is under this prefix, by whole
    /// segments, are copied; the prefix is stripped and the rest joined under `base_dir`. Empty:
    /// every source.
    #[serde(default)]
    pub path_prefix: String,
    /// Copies older than this many seconds (by their `Last-Modified`) count as missing: the
    /// source is read from the loader again and the copy overwritten. Unset: never.
    #[serde(default)]
    pub expiration_secs: Option<u64>,
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
    /// Largest AVIF output, in pixels (413 beyond, from the header): AVIF encoding takes about
    /// 0.6 s of CPU per megapixel, so this bounds what one URL can cost.
    pub max_avif_output_pixels: u64,
    /// Time allowed for one storage operation, in milliseconds (504 beyond).
    pub storage_timeout_ms: u64,
    /// Requests allowed to wait for a render slot (for one of the two per worker that may hold
    /// a source: [`crate::serving::pool`]); beyond, 503 at once. Waiting requests hold no image
    /// memory.
    pub max_queue: usize,
    /// Memory for images, in bytes: the decoded-watermark cache, the freed blocks kept for
    /// reuse, the objects read from storage (a quarter of what is left, at least
    /// `max_source_bytes`: each read reserves the object's declared size before its bytes are
    /// read) and renders (the rest: each reserves an upper bound of what
    /// decoding, resizing and encoding it allocates before it starts, and waits while that does
    /// not fit; 413 when it alone exceeds the renders' share): [`crate::serving::budget::Shares`].
    /// Besides this, only the sidecar's own ~50 MB, whatever the worker count. At least twice
    /// `max_source_bytes` beside the watermark cache.
    pub memory_budget_bytes: u64,
    /// Renders at a time (each on a thread of its own). Unset: the CPU quota of the container's
    /// cgroup, rounded up, else the CPUs this process may use ([`cpus::default_workers`]).
    pub workers: Option<usize>,
}

impl Limits {
    /// Renders at a time: [`Limits::workers`], else [`cpus::default_workers`].
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(cpus::default_workers)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_source_bytes: 128 << 20,
            max_source_pixels: 50_000_000,
            max_output_pixels: 50_000_000,
            max_animation_frames: crate::pipeline::DEFAULT_MAX_ANIMATION_FRAMES,
            max_avif_output_pixels: crate::pipeline::DEFAULT_MAX_AVIF_OUTPUT_PIXELS,
            storage_timeout_ms: 10_000,
            max_queue: 64,
            memory_budget_bytes: 1 << 30,
            workers: None,
        }
    }
}

/// Encoder defaults (`[encoding]`), like imgproxy's `IMGPROXY_FORMAT_QUALITY` and
/// `IMGPROXY_JPEG_PROGRESSIVE` or thumbor's `QUALITY`, `WEBP_QUALITY`, `AVIF_QUALITY` and
/// `PROGRESSIVE_JPEG`. They are not part of a rendition's ETag or result key: after changing
/// them, a new result-storage `base_dir` makes every rendition new.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncodingConfig {
    /// JPEG quality, 1–100, when the URL names none.
    pub jpeg_quality: u8,
    /// WebP quality, 1–100, when the URL names none.
    pub webp_quality: u8,
    /// AVIF quality, 1–100 (ravif's scale), when the URL names none.
    pub avif_quality: u8,
    /// Progressive JPEGs unless the URL asks for baseline (default false: baseline).
    pub jpeg_progressive: bool,
    /// rav1e speed preset for AVIF, 1 (slowest, smallest files) to 10 (fastest).
    pub avif_speed: u8,
    /// AVIF bits per sample, 8 or 10 (default 8: 10 is ~4% smaller at equal SSIM and takes
    /// about twice as long).
    pub avif_bit_depth: u8,
}

impl Default for EncodingConfig {
    fn default() -> Self {
        let e = crate::pipeline::Encoding::default();
        EncodingConfig {
            jpeg_quality: e.jpeg_quality,
            webp_quality: e.webp_quality,
            avif_quality: e.avif_quality,
            jpeg_progressive: e.jpeg_progressive,
            avif_speed: e.avif_speed,
            avif_bit_depth: e.avif_bit_depth,
        }
    }
}

impl EncodingConfig {
    /// The pipeline's encoder settings.
    pub fn to_pipeline(&self) -> crate::pipeline::Encoding {
        crate::pipeline::Encoding {
            jpeg_quality: self.jpeg_quality,
            webp_quality: self.webp_quality,
            avif_quality: self.avif_quality,
            jpeg_progressive: self.jpeg_progressive,
            avif_speed: self.avif_speed,
            avif_bit_depth: self.avif_bit_depth,
        }
    }

    fn validate(&self) -> Result<(), String> {
        for (name, q) in [
            ("jpeg_quality", self.jpeg_quality),
            ("webp_quality", self.webp_quality),
            ("avif_quality", self.avif_quality),
        ] {
            if !(1..=100).contains(&q) {
                return Err(format!("encoding: {name} {q} is not between 1 and 100"));
            }
        }
        if !(1..=10).contains(&self.avif_speed) {
            return Err(format!(
                "encoding: avif_speed {} is not between 1 and 10",
                self.avif_speed
            ));
        }
        if !matches!(self.avif_bit_depth, 8 | 10) {
            return Err(format!(
                "encoding: avif_bit_depth {} is neither 8 nor 10",
                self.avif_bit_depth
            ));
        }
        Ok(())
    }
}

/// One named storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
// Parsed once at start-up and never moved around in bulk: the S3 variant's size is harmless.
#[allow(clippy::large_enum_variant)]
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

/// Connection to one S3-compatible bucket, or to many (`bucket = "*"`). After loading, the
/// settings a storage leaves unset have been filled from [`Config::s3`] ([`S3Defaults`]).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name. [`WILDCARD_BUCKET`] (`*`, imagor's wildcard bucket): each key's first
    /// segment names the bucket and the rest is the object key, or, with `routing_file`, that
    /// file routes keys to buckets; every such bucket is reached with this storage's endpoint,
    /// region and credentials unless the file gives a bucket its own.
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
    /// Profile of the shared config and credentials files (`~/.aws/credentials`,
    /// `AWS_SHARED_CREDENTIALS_FILE`) the default chain reads; `AWS_PROFILE` or `default` when
    /// unset. Only without static keys.
    #[serde(default)]
    pub profile: Option<String>,
    /// Role assumed with STS `AssumeRole` before using the bucket, signed with this storage's
    /// base credentials (the static keys, else the default chain). Temporary credentials are
    /// renewed before they expire.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// External ID the role's trust policy requires (only with `role_arn`).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Session name of the assumed role (only with `role_arn`); `pixmesh` when unset.
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// STS endpoint used to assume `role_arn` (only with it); AWS's (or
    /// `AWS_ENDPOINT_URL_STS`) when unset.
    #[serde(default)]
    pub sts_endpoint: Option<String>,
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
    /// Percent-escape source keys before reading them here, as imagor's S3 loader does (and
    /// ImageKit's "encode keys" switch): every byte of the UTF-8 key except alphanumerics,
    /// `/-_.~`, `!"()*` and `safe_chars` becomes `%XX`, so `image+example.jpg` reads the object
    /// `image%2Bexample.jpg`. Off by default: keys are read as they are.
    #[serde(default)]
    pub escape_keys: bool,
    /// More characters kept unescaped (imagor's `S3_SAFE_CHARS`: ASCII punctuation, e.g. `[]`
    /// for an object `images/aa[1].gif`), or `--` for no escaping at all. Applies to source keys
    /// with `escape_keys`, and to rendition keys when this is the result storage.
    #[serde(default)]
    pub safe_chars: Option<String>,
    /// imagor's bucket routing file (`S3_LOADER_BUCKET_ROUTER_CONFIG`, YAML; see
    /// [`crate::storage::routing`]); needs `bucket = "*"`.
    #[serde(default)]
    pub routing_file: Option<PathBuf>,
    /// The buckets a key may name, where keys name buckets (`bucket = "*"`, or a routing file
    /// in passthrough mode); required there. A key naming another bucket reads as a missing
    /// object (404). `["*"]` lets keys name any bucket, as imagor does: every bucket these
    /// credentials (or anonymous access) reach, an attacker's own included, so the sidecar
    /// would read hostile images from it and sign requests to it with your credentials.
    #[serde(default)]
    pub allowed_buckets: Vec<String>,
    /// The AWS account ID (12 digits) that must own every bucket this storage reaches, sent
    /// with each request as `x-amz-expected-bucket-owner` (S3 answers 403 otherwise): with
    /// `bucket = "*"`, keys naming a bucket of another account, an attacker's included, are
    /// refused by S3 itself. S3-compatible servers other than AWS mostly ignore it.
    #[serde(default)]
    pub expected_bucket_owner: Option<String>,
}

/// The bucket name that makes an S3 storage take its bucket from each key.
pub const WILDCARD_BUCKET: &str = "*";

/// Where renditions are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultStorageConfig {
    /// Name of an S3 storage in `[storages]`.
    pub storage: String,
    /// Key prefix of every rendition.
    #[serde(default)]
    pub base_dir: String,
    /// Only renditions of sources whose key (the key the loader reads) is under this prefix, by
    /// whole segments, are kept; the prefix is stripped from the key in the rendition's name.
    /// Empty: every source.
    #[serde(default)]
    pub path_prefix: String,
    /// On a hit, compare the ETag the rendition was made from with the source's current one
    /// (one HEAD on the source, and one on its watermark, concurrent with the result read) and
    /// re-render when either changed.
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
    /// How rendition keys are named.
    #[serde(default)]
    pub path_style: PathStyle,
}

/// How rendition keys are named in result storage (imagor's `IMAGOR_RESULT_STORAGE_PATH_STYLE`).
/// What is named is the canonical request, or imagor's name of the rendition where the route
/// sends one (`"result_keys": "imagor"`, [`pixmesh_core::imagor_key`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathStyle {
    /// The name, escaped: `photos/fit-in/300x/filters%3Aformat(webp)/-/a.jpg`
    /// ([`pixmesh_core::render::result_key`]); imagor's unset style.
    #[default]
    Default,
    /// The SHA-1 of the name in hex, `ab/cd/ef…`
    /// ([`pixmesh_core::render::digest_result_key`]); imagor's `digest`.
    Digest,
}

impl ResultStorageConfig {
    /// A result storage in `storage` under `base_dir`, with every other setting at its default.
    pub fn new(storage: &str, base_dir: &str) -> Self {
        ResultStorageConfig {
            storage: storage.to_owned(),
            base_dir: base_dir.to_owned(),
            path_prefix: String::new(),
            verify_source: true,
            expiration_secs: None,
            report_errors: false,
            path_style: PathStyle::Default,
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
    /// Whether this storage takes its bucket from each key ([`WILDCARD_BUCKET`]).
    pub fn is_wildcard(&self) -> bool {
        self.bucket == WILDCARD_BUCKET
    }

    /// The configured safe characters, imagor's S3 default when unset.
    pub fn safe_chars(&self) -> Result<SafeChars, String> {
        match &self.safe_chars {
            None => Ok(SafeChars::default()),
            Some(s) => SafeChars::from_setting(s).map_err(|e| format!("safe_chars: {e}")),
        }
    }

    /// How source keys are escaped before reading: `None` when they are read as they are.
    pub fn source_key_escaping(&self) -> Result<Option<SafeChars>, String> {
        Ok(if self.escape_keys {
            Some(self.safe_chars()?)
        } else {
            None
        })
    }

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

    /// Refuses credential settings that contradict each other: a profile with static keys,
    /// role options without `role_arn`, a malformed session name.
    pub fn credential_settings(&self) -> Result<(), String> {
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err("set both access_key_id and secret_access_key, or neither".into());
        }
        if self.profile.is_some() && self.access_key_id.is_some() {
            return Err("profile is for the default chain; not with access_key_id".into());
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return Err("session_token needs access_key_id and secret_access_key".into());
        }
        if self.role_arn.is_none() {
            let role_only = [
                ("external_id", self.external_id.is_some()),
                ("role_session_name", self.role_session_name.is_some()),
                ("sts_endpoint", self.sts_endpoint.is_some()),
            ];
            if let Some((what, _)) = role_only.iter().find(|(_, set)| *set) {
                return Err(format!("{what} needs role_arn"));
            }
        }
        if self
            .role_arn
            .as_deref()
            .is_some_and(|a| !a.starts_with("arn:"))
        {
            return Err("role_arn must be an ARN (arn:…:iam::ACCOUNT:role/NAME)".into());
        }
        // STS: 2 to 64 of [\w+=,.@-].
        if let Some(name) = &self.role_session_name {
            let valid = (2..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
            if !valid {
                return Err("role_session_name must be 2 to 64 of A-Z a-z 0-9 _+=,.@-".into());
            }
        }
        // STS: 2 to 1224 of [\w+=,.@:/-].
        if let Some(id) = &self.external_id {
            let valid = (2..=1224).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b));
            if !valid {
                return Err("external_id must be 2 to 1224 of A-Z a-z 0-9 _+=,.@:/-".into());
            }
        }
        Ok(())
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
        let mut cfg = Self::from_toml(&text)?;
        if cfg.render_key.is_none()
            && let Ok(key) = std::env::var(pixmesh_core::config::RENDER_KEY_ENV)
        {
            cfg.render_key = Some(Secret(key));
            cfg.voucher()?;
        }
        Ok(cfg)
    }

    /// The voucher of `render_key`: an error when it is unset or too short.
    pub fn voucher(&self) -> Result<Voucher, ConfigError> {
        let key = self.render_key.as_ref().ok_or_else(|| {
            ConfigError::Invalid(format!(
                "render_key is not set, nor is {}: set the key the filter vouches for render \
                 requests with (at least 32 bytes, e.g. `openssl rand -hex 32`)",
                pixmesh_core::config::RENDER_KEY_ENV
            ))
        })?;
        Voucher::new(key.expose().as_bytes()).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Parses and validates config text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text)?;
        cfg.s3
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[s3]: {e}")))?;
        for storage in cfg.storages.values_mut() {
            if let StorageConfig::S3(s3) = storage {
                cfg.s3.fill(s3);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.storages.is_empty() {
            return invalid("no [storages] configured".into());
        }
        if self.render_key.is_some() {
            self.voucher()?;
        }
        if let Some(tracing) = &self.tracing {
            tracing.validate().map_err(ConfigError::Invalid)?;
        }
        let limits = &self.limits;
        if limits.memory_budget_bytes / 2 < limits.max_source_bytes {
            return invalid(format!(
                "limits: memory_budget_bytes ({}) is below twice max_source_bytes ({}): the \
                 largest sources could never be read and rendered",
                limits.memory_budget_bytes, limits.max_source_bytes
            ));
        }
        if limits.workers == Some(0) {
            return invalid(
                "limits.workers must be at least 1 (leave it out for the CPU quota)".into(),
            );
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
                if !s3.is_wildcard()
                    && let Err(e) = pixmesh_core::buckets::check_configured_bucket(&s3.bucket)
                {
                    return invalid(format!("storage {name}: bucket {e}"));
                }
                if let Err(e) = s3.credential_settings() {
                    return invalid(format!("storage {name}: {e}"));
                }
                let settings = [
                    s3.storage_class().err(),
                    s3.acl().err(),
                    s3.tagging().err(),
                    s3.safe_chars().err(),
                ];
                if let Some(e) = settings.into_iter().flatten().next() {
                    return invalid(format!("storage {name}: {e}"));
                }
                let results_here = self
                    .result_storage
                    .as_ref()
                    .is_some_and(|rs| &rs.storage == name);
                if s3.safe_chars.is_some() && !s3.escape_keys && !results_here {
                    return invalid(format!(
                        "storage {name}: safe_chars needs escape_keys = true (or this storage \
                         holding the result storage)"
                    ));
                }
                let mut keys_name_buckets = s3.is_wildcard();
                if let Some(file) = &s3.routing_file {
                    if !s3.is_wildcard() {
                        return invalid(format!(
                            "storage {name}: routing_file needs bucket = \"*\""
                        ));
                    }
                    let (_, routing) = routing_file::RoutingFile::load(file)
                        .map_err(|e| ConfigError::Invalid(format!("storage {name}: {e}")))?;
                    keys_name_buckets = routing.is_passthrough();
                }
                if keys_name_buckets && s3.allowed_buckets.is_empty() {
                    return invalid(format!(
                        "storage {name}: keys name the bucket here, so list the buckets they \
                         may name in allowed_buckets ([\"*\"] for any bucket at all, which \
                         includes buckets of anybody's)"
                    ));
                }
                if !keys_name_buckets && !s3.allowed_buckets.is_empty() {
                    return invalid(format!(
                        "storage {name}: allowed_buckets is for storages whose keys name the \
                         bucket (bucket = \"*\")"
                    ));
                }
                if let Some(owner) = &s3.expected_bucket_owner
                    && !(owner.len() == 12 && owner.bytes().all(|b| b.is_ascii_digit()))
                {
                    return invalid(format!(
                        "storage {name}: expected_bucket_owner must be a 12-digit AWS account ID"
                    ));
                }
                for bucket in &s3.allowed_buckets {
                    if bucket != WILDCARD_BUCKET && !pixmesh_core::buckets::is_bucket_name(bucket) {
                        return invalid(format!(
                            "storage {name}: allowed_buckets: {bucket:?} is not a bucket name"
                        ));
                    }
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
                Some(StorageConfig::S3(s3)) if s3.is_wildcard() => {
                    return invalid(format!(
                        "result_storage: storage {} has no fixed bucket (bucket = \"*\")",
                        rs.storage
                    ));
                }
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
        if let Some(ss) = &self.source_storage {
            match self.storages.get(&ss.storage) {
                Some(StorageConfig::S3(_)) => {}
                Some(StorageConfig::Local { .. }) => {
                    return invalid(format!(
                        "source_storage: storage {} is local; source storage must be S3",
                        ss.storage
                    ));
                }
                None => {
                    return invalid(format!("source_storage: no storage named {}", ss.storage));
                }
            }
            if ss.expiration_secs == Some(0) {
                return invalid(
                    "source_storage: expiration_secs must be at least 1 (omit it for none)".into(),
                );
            }
        }
        let prefixes = [
            (
                "result_storage",
                self.result_storage.as_ref().map(|r| &r.path_prefix),
            ),
            (
                "source_storage",
                self.source_storage.as_ref().map(|s| &s.path_prefix),
            ),
        ];
        for (role, prefix) in prefixes {
            if let Some(p) = prefix
                && !p.trim_matches('/').is_empty()
                && pixmesh_core::keys::normalize(p).as_deref() != Ok(p.trim_matches('/'))
            {
                return invalid(format!(
                    "{role}: path_prefix {p:?} must be plain segments (no `.`, `..`, `//` or control characters)"
                ));
            }
        }
        let wm = &self.watermark;
        match (&wm.storage, &wm.key) {
            (None, None) => {}
            (Some(storage), Some(key)) => {
                if !self.storages.contains_key(storage) {
                    return invalid(format!("watermark: no storage named {storage}"));
                }
                if pixmesh_core::keys::normalize(key).as_deref() != Ok(key.as_str()) {
                    return invalid(format!(
                        "watermark: key {key:?} must be plain segments (no `.`, `..`, `//`, \
                         leading `/` or control characters)"
                    ));
                }
            }
            _ => return invalid("watermark: set both storage and key, or neither".into()),
        }
        if limits.memory_budget_bytes.saturating_sub(wm.cache_bytes) / 2 < limits.max_source_bytes {
            return invalid(format!(
                "watermark: cache_bytes ({}) leaves less than twice max_source_bytes ({}) of \
                 memory_budget_bytes ({}) to reads and renders",
                wm.cache_bytes, limits.max_source_bytes, limits.memory_budget_bytes
            ));
        }
        if self.cache_control.bytes().any(|b| b.is_ascii_control()) {
            return invalid("cache_control contains a control character".into());
        }
        self.encoding.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let doc = include_str!("mod.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = Config::from_toml(&doc).unwrap();
        assert_eq!(cfg.storages.len(), 3);
        assert_eq!(cfg.tracing.as_ref().map(|t| t.sample_ratio), Some(1.0));
        assert!(cfg.encoding.jpeg_progressive);
        assert_eq!(cfg.encoding.avif_quality, 70);
        let rs = cfg.result_storage.clone().unwrap();
        assert_eq!(rs.path_style, PathStyle::Default);
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
        assert_eq!(
            cfg.watermark.default_image(),
            Some(("photos".to_owned(), "watermarks/logo.png".to_owned()))
        );
        assert_eq!(cfg.watermark.cache_bytes, DEFAULT_WATERMARK_CACHE_BYTES);
        let debug = format!("{:?}", cfg.storages["photos"]);
        assert!(!debug.contains("example-secret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let StorageConfig::S3(tenants) = &cfg.storages["tenants"] else {
            panic!("tenants is S3")
        };
        assert_eq!(tenants.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(tenants.region.as_deref(), Some("us-east-1"));
    }

    /// The S3 storage `name` of a config.
    fn s3_of<'a>(cfg: &'a Config, name: &str) -> &'a S3Config {
        match &cfg.storages[name] {
            StorageConfig::S3(s3) => s3,
            StorageConfig::Local { .. } => panic!("{name} is local"),
        }
    }

    #[test]
    fn unset_storage_settings_fall_back_to_the_s3_table() {
        let cfg = Config::from_toml(
            "[s3]
endpoint = \"http://minio:9000\"
region = \"eu-west-1\"
\
             force_path_style = false
access_key_id = \"GLOBAL\"
\
             secret_access_key = \"global-secret\"
session_token = \"global-token\"
\
             role_arn = \"arn:aws:iam::1:role/global\"
external_id = \"ext-global\"
\
             sts_endpoint = \"http://sts:1\"
\
             [storages.plain]
type = \"s3\"
bucket = \"a\"
\
             [storages.own]
type = \"s3\"
bucket = \"b\"
endpoint = \"http://r2:1\"
\
             region = \"auto\"
force_path_style = true
access_key_id = \"OWN\"
\
             secret_access_key = \"own-secret\"
role_arn = \"arn:aws:iam::1:role/own\"
\
             [storages.chain]
type = \"s3\"
bucket = \"c\"
profile = \"images\"
\
             [storages.disk]
type = \"local\"
root = \"/srv\"
",
        )
        .unwrap();
        let plain = s3_of(&cfg, "plain");
        assert_eq!(plain.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(plain.region.as_deref(), Some("eu-west-1"));
        assert_eq!(plain.force_path_style, Some(false));
        assert_eq!(plain.access_key_id.as_deref(), Some("GLOBAL"));
        assert_eq!(plain.secret_access_key, Some("global-secret".into()));
        assert_eq!(plain.session_token, Some("global-token".into()));
        assert_eq!(
            plain.role_arn.as_deref(),
            Some("arn:aws:iam::1:role/global")
        );
        assert_eq!(plain.external_id.as_deref(), Some("ext-global"));
        assert_eq!(plain.sts_endpoint.as_deref(), Some("http://sts:1"));

        // Its own settings win; credentials and the role never mix with the global ones.
        let own = s3_of(&cfg, "own");
        assert_eq!(own.endpoint.as_deref(), Some("http://r2:1"));
        assert_eq!(own.region.as_deref(), Some("auto"));
        assert_eq!(own.force_path_style, Some(true));
        assert_eq!(own.access_key_id.as_deref(), Some("OWN"));
        assert_eq!(own.session_token, None, "not the global key's token");
        assert_eq!(own.role_arn.as_deref(), Some("arn:aws:iam::1:role/own"));
        assert_eq!(own.external_id, None, "not the global role's external id");

        // A profile is its own credentials: the global keys would contradict it.
        let chain = s3_of(&cfg, "chain");
        assert_eq!(chain.profile.as_deref(), Some("images"));
        assert_eq!(chain.access_key_id, None);
        assert_eq!(chain.endpoint.as_deref(), Some("http://minio:9000"));

        // Without [s3], nothing is filled in.
        let bare = Config::from_toml("[storages.a]\ntype = \"s3\"\nbucket = \"a\"\n").unwrap();
        assert_eq!(
            s3_of(&bare, "a"),
            &S3Config {
                bucket: "a".into(),
                ..S3Config::default()
            }
        );
    }

    #[test]
    fn the_s3_table_is_checked_like_a_storage() {
        const LOCAL: &str = "[storages.a]\ntype = \"local\"\nroot = \"/\"\n";
        for (s3, why) in [
            (
                "access_key_id = \"x\"",
                "both access_key_id and secret_access_key",
            ),
            (
                "access_key_id = \"x\"\nsecret_access_key = \"y\"\nprofile = \"p\"",
                "profile is for the default chain",
            ),
            ("external_id = \"ext-1\"", "external_id needs role_arn"),
            ("role_arn = \"pixmesh\"", "role_arn must be an ARN"),
            ("bucket = \"b\"", "unknown field `bucket`"),
        ] {
            let err = Config::from_toml(&format!("[s3]\n{s3}\n{LOCAL}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{s3}: {err}");
        }
    }

    #[test]
    fn refuses_contradictions() {
        for bad in [
            "",
            "[storages]",
            "[storages.a]\ntype = \"s3\"\nbucket = \"\"",
            "[storages.a]\ntype = \"s3\"\nbucket = \"photos/public\"",
            "[storages.a]\ntype = \"s3\"\nbucket = \"ph otos\"",
            "[storages.a]\ntype = \"s3\"\nbucket = \"b\"\naccess_key_id = \"x\"",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[result_storage]\nstorage = \"a\"",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[result_storage]\nstorage = \"b\"",
            "[storages.a]\ntype = \"ftp\"",
            "typo = 1\n[storages.a]\ntype = \"local\"\nroot = \"/\"",
            "[limits]\nmemory_budget_bytes = 1000\n[storages.a]\ntype = \"local\"\nroot = \"/\"",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[watermark]\nstorage = \"a\"",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[watermark]\nstorage = \"b\"\nkey = \"w.png\"",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[watermark]\nstorage = \"a\"\nkey = \"../w.png\"",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[watermark]\nstorage = \"a\"\nkey = \"/w.png\"",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[watermark]\ncache_bytes = 1073741824",
            "[storages.a]\ntype = \"local\"\nroot = \"/\"\n[watermark]\ncolour = 1",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tracing_is_off_unless_configured_and_checked() {
        let local = "[storages.a]\ntype = \"local\"\nroot = \"/\"\n";
        assert_eq!(Config::from_toml(local).unwrap().tracing, None);
        let on = Config::from_toml(&format!("{local}[tracing]\n")).unwrap();
        assert_eq!(
            on.tracing,
            Some(TracingConfig {
                otlp_endpoint: None,
                service_name: "pixmesh-sidecar".into(),
                sample_ratio: 1.0
            })
        );
        for bad in [
            "sample_ratio = 1.5",
            "sample_ratio = -0.1",
            "otlp_endpoint = \"127.0.0.1:4317\"",
            "otlp_endpoint = \"https://collector:4317\"",
            "service_name = \"\"",
            "endpoint = \"http://127.0.0.1:4317\"",
        ] {
            let toml = format!("{local}[tracing]\n{bad}\n");
            assert!(Config::from_toml(&toml).is_err(), "{bad}");
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
    fn credential_settings_are_checked_at_load() {
        let s3 = |extra: &str| format!("[storages.a]\ntype = \"s3\"\nbucket = \"a\"\n{extra}\n");
        const KEYS: &str = "access_key_id = \"AK\"\nsecret_access_key = \"s3cr3t\"\n";
        const ROLE: &str = "role_arn = \"arn:aws:iam::123456789012:role/r\"\n";
        for (extra, why) in [
            (format!("{KEYS}profile = \"p\""), "profile"),
            ("session_token = \"t\"".to_owned(), "session_token"),
            (
                "external_id = \"x-1\"".to_owned(),
                "external_id needs role_arn",
            ),
            (
                "sts_endpoint = \"http://h\"".to_owned(),
                "sts_endpoint needs role_arn",
            ),
            (
                "role_session_name = \"n1\"".to_owned(),
                "role_session_name needs role_arn",
            ),
            ("role_arn = \"reader\"".to_owned(), "must be an ARN"),
            (
                format!("{ROLE}role_session_name = \"a b\""),
                "role_session_name",
            ),
            (
                format!("{ROLE}role_session_name = \"a\""),
                "role_session_name",
            ),
            (format!("{ROLE}external_id = \"a\\nb\""), "external_id"),
        ] {
            let err = Config::from_toml(&s3(&extra)).unwrap_err().to_string();
            assert!(err.contains(why), "{extra}: {err}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
        for good in [
            "profile = \"reader\"".to_owned(),
            format!("{KEYS}{ROLE}external_id = \"ext-42\"\nrole_session_name = \"pixmesh\""),
            format!("{ROLE}sts_endpoint = \"http://127.0.0.1:1\""),
        ] {
            let cfg = Config::from_toml(&s3(&good)).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert!(!format!("{cfg:?}").contains("s3cr3t"));
        }
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

    #[test]
    fn key_escaping_wildcard_buckets_and_path_styles() {
        let cfg = Config::from_toml(
            "[storages.a]\ntype = \"s3\"\nbucket = \"a\"\nescape_keys = true\n\
             safe_chars = \"[]\"\n[storages.w]\ntype = \"s3\"\nbucket = \"*\"\n\
             allowed_buckets = [\"tenant-1\"]\n\
             [storages.r]\ntype = \"s3\"\nbucket = \"r\"\nsafe_chars = \"--\"\n\
             [result_storage]\nstorage = \"r\"\npath_style = \"digest\"",
        )
        .unwrap();
        let s3 = |name: &str| match &cfg.storages[name] {
            StorageConfig::S3(s3) => s3.clone(),
            StorageConfig::Local { .. } => panic!("{name} is S3"),
        };
        assert_eq!(
            s3("a").source_key_escaping(),
            Ok(Some(SafeChars::from_setting("[]").unwrap()))
        );
        assert_eq!(s3("w").source_key_escaping(), Ok(None), "off by default");
        assert!(s3("w").is_wildcard() && !s3("a").is_wildcard());
        assert_eq!(s3("r").safe_chars(), Ok(SafeChars::All));
        assert_eq!(cfg.result_storage.unwrap().path_style, PathStyle::Digest);

        for (bad, why) in [
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"a\"\nsafe_chars = \"[]\"",
                "safe_chars needs escape_keys",
            ),
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"a\"\nescape_keys = true\nsafe_chars = \"ab\"",
                "safe_chars",
            ),
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"a\"\nrouting_file = \"/r.yaml\"",
                "routing_file needs bucket",
            ),
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"*\"\nrouting_file = \"/nonexistent/r.yaml\"",
                "/nonexistent/r.yaml",
            ),
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"*\"\nallowed_buckets = [\"*\"]\n\
                 [result_storage]\nstorage = \"a\"",
                "no fixed bucket",
            ),
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"*\"",
                "list the buckets they may name in allowed_buckets",
            ),
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"a\"\nallowed_buckets = [\"b\"]",
                "allowed_buckets is for storages whose keys name the bucket",
            ),
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"*\"\nallowed_buckets = [\"Not_A_Bucket\"]",
                "is not a bucket name",
            ),
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"a\"\nexpected_bucket_owner = \"me\"",
                "12-digit AWS account ID",
            ),
            (
                "[storages.a]\ntype = \"s3\"\nbucket = \"a\"\n[result_storage]\nstorage = \"a\"\npath_style = \"hash\"",
                "path_style",
            ),
        ] {
            let err = Config::from_toml(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn encoding_defaults_are_the_pipeline_defaults_and_are_checked() {
        let cfg = Config::from_toml(TWO).unwrap();
        assert_eq!(
            cfg.encoding.to_pipeline(),
            crate::pipeline::Encoding::default()
        );
        let cfg = Config::from_toml(&format!(
            "{TWO}[encoding]\njpeg_quality = 90\nwebp_quality = 60\navif_quality = 40\n\
             jpeg_progressive = true\navif_speed = 10\navif_bit_depth = 10"
        ))
        .unwrap();
        let e = cfg.encoding.to_pipeline();
        assert_eq!(
            (
                e.jpeg_quality,
                e.webp_quality,
                e.avif_quality,
                e.avif_speed,
                e.avif_bit_depth
            ),
            (90, 60, 40, 10, 10)
        );
        assert!(e.jpeg_progressive);
        for (bad, why) in [
            ("jpeg_quality = 0", "jpeg_quality"),
            ("webp_quality = 101", "webp_quality"),
            ("avif_quality = 0", "avif_quality"),
            ("avif_speed = 0", "avif_speed"),
            ("avif_speed = 11", "avif_speed"),
            ("avif_bit_depth = 12", "avif_bit_depth"),
            ("png_quality = 5", "png_quality"),
            ("jpeg_quality = 300", "jpeg_quality"),
        ] {
            let err = Config::from_toml(&format!("{TWO}[encoding]\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_budget_holds_the_largest_source_twice_beside_the_watermark_cache() {
        let local = "[storages.a]\ntype = \"local\"\nroot = \"/\"\n";
        let with = |limits: &str| Config::from_toml(&format!("[limits]\n{limits}\n{local}"));
        // Once for its read, once for the renders' share.
        let err = with("memory_budget_bytes = 268435455")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("below twice max_source_bytes (134217728)"),
            "{err}"
        );
        with("memory_budget_bytes = 268435456\n[watermark]\ncache_bytes = 0").unwrap();
        let err = with("memory_budget_bytes = 268435456")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache_bytes (16777216) leaves less than twice max_source_bytes"),
            "{err}"
        );
        with("memory_budget_bytes = 100000000\nmax_source_bytes = 41000000").unwrap();
    }
}
