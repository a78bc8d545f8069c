//! Storages: where sources are read from and renditions written to.
//!
//! [`Storage`] is a closed set of backends (a local directory, an S3-compatible bucket) behind one
//! small interface: `get` an object (or one version of it) with its validators, `head` its
//! validators alone, `put` one with metadata (S3 only, with the configured storage class, ACL and
//! tags). A local directory has no versions: asking it for one is
//! [`StorageError::VersionsUnsupported`] (501).
//!
//! An S3 bucket that turns out to live in another region than configured (S3 answers `301
//! PermanentRedirect`, or `400 AuthorizationHeaderMalformed`, naming its region) is asked again,
//! once, signed for that region, which is remembered: later requests go there directly. A bucket
//! still in the wrong region after that is [`StorageError::WrongRegion`] (502).
//!
//! An S3 storage may escape source keys before reading them (`escape_keys`, imagor's rules:
//! [`pixmesh_core::keys::escape`]), and may take the bucket from each key (`bucket = "*"` or a
//! routing file: [`routing::RoutedS3`]).

pub mod check;
mod request_id;
pub mod routing;

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::types::{ObjectCannedAcl, StorageClass};
use bytes::Bytes;
use pixmesh_core::buckets::RouteError;
use pixmesh_core::keys::{SafeChars, escape};

use crate::config::S3Config;
use routing::RoutedS3;

/// Why a storage operation failed. Messages are safe to show: no credentials, no endpoints.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist (404).
    #[error("object not found")]
    NotFound,
    /// The credentials may not read or write it (403).
    #[error("access to the object was denied by the storage")]
    AccessDenied,
    /// The object is larger than the configured limit (413).
    #[error("source object is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Object size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An object version was asked of a storage that has none, a local directory (501).
    #[error("this storage has no object versions")]
    VersionsUnsupported,
    /// The storage could not be reached (503).
    #[error("storage unreachable")]
    Unavailable(String),
    /// The storage did not answer in time (504).
    #[error("storage timed out")]
    Timeout,
    /// The bucket is not in the region requests were signed for, even after retrying in the
    /// region S3 named (502); the detail (regions, S3's answer) is for logs.
    #[error("storage region mismatch: the bucket is not in the region requests are signed for")]
    WrongRegion(String),
    /// The bucket does not exist: 502 for a configured bucket, a missing object (404) for one
    /// a URL named ([`routing`]).
    #[error("storage error")]
    NoSuchBucket,
    /// The key names no usable bucket of a storage that takes its bucket from the key (400).
    #[error("{0}")]
    Unroutable(RouteError),
    /// Anything else the storage answered (502); the detail is for logs.
    #[error("storage error")]
    Other(String),
}

impl StorageError {
    /// Detail for logs (never sent to clients).
    pub fn detail(&self) -> String {
        match self {
            StorageError::Unavailable(d)
            | StorageError::WrongRegion(d)
            | StorageError::Other(d) => d.clone(),
            StorageError::NoSuchBucket => "the bucket does not exist".to_owned(),
            other => other.to_string(),
        }
    }
}

/// An object and what HTTP validators need of it.
#[derive(Debug, Clone)]
pub struct Object {
    /// The content.
    pub bytes: Bytes,
    /// The storage's ETag (quoted), or a stand-in derived from size and mtime.
    pub etag: String,
    /// Last modification, when the storage knows it.
    pub last_modified: Option<DateTime>,
    /// Content type recorded with the object.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*` without the prefix).
    pub metadata: HashMap<String, String>,
}

/// What a `HEAD` tells about an object: its validators, without the content.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// The storage's ETag (quoted), or the same stand-in [`Object::etag`] has.
    pub etag: String,
    /// Last modification, when the storage knows it.
    pub last_modified: Option<DateTime>,
}

/// One storage backend.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Files under a directory.
    Local(LocalStorage),
    /// An S3-compatible bucket.
    S3(S3Storage),
    /// S3-compatible buckets chosen by the key (`bucket = "*"`, routing files).
    Routed(Arc<RoutedS3>),
}

/// Lets a read through [`Storage::get_gated`].
pub trait Gate<H>: Sync {
    /// Given the size the storage declares for the object (S3's `Content-Length`, a file's
    /// length) before any byte of it is read: what the read holds with the object, or an error
    /// that ends the read.
    fn admit(&self, size: u64) -> impl Future<Output = Result<H, StorageError>> + Send;
}

/// The gate that lets every read through.
pub struct OpenGate;

impl Gate<()> for OpenGate {
    async fn admit(&self, _size: u64) -> Result<(), StorageError> {
        Ok(())
    }
}

impl Storage {
    /// Reads `key` (its `version`, when given), refusing objects larger than `max_bytes`.
    pub async fn get(
        &self,
        key: &str,
        version: Option<&str>,
        max_bytes: u64,
    ) -> Result<Object, StorageError> {
        Ok(self.get_gated(key, version, max_bytes, &OpenGate).await?.0)
    }

    /// [`Storage::get`] through `gate`: called with the object's declared size before its bytes
    /// are read (a body longer than declared is refused), so what it gives (a share of a
    /// memory budget) covers the bytes the read will hold.
    pub async fn get_gated<H>(
        &self,
        key: &str,
        version: Option<&str>,
        max_bytes: u64,
        gate: &impl Gate<H>,
    ) -> Result<(Object, H), StorageError> {
        match self {
            Storage::Local(_) if version.is_some() => Err(StorageError::VersionsUnsupported),
            Storage::Local(l) => l.get(key, max_bytes, gate).await,
            Storage::S3(s) => {
                s.get_gated(&s.source_key(key), version, max_bytes, gate)
                    .await
            }
            Storage::Routed(r) => r.get(key, version, max_bytes, gate).await,
        }
    }

    /// The validators of `key` (its `version`, when given): ETag and last modification,
    /// without reading it.
    pub async fn head(&self, key: &str, version: Option<&str>) -> Result<Head, StorageError> {
        match self {
            Storage::Local(_) if version.is_some() => Err(StorageError::VersionsUnsupported),
            Storage::Local(l) => l.head(key).await,
            Storage::S3(s) => s.head(&s.source_key(key), version).await,
            Storage::Routed(r) => r.head(key, version).await,
        }
    }

    /// Whether objects here have versions that can be read (S3; versioning itself is the
    /// bucket's setting).
    pub fn has_versions(&self) -> bool {
        matches!(self, Storage::S3(_) | Storage::Routed(_))
    }
}

/// A read-only directory of source images.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// A storage rooted at `root`, which must exist.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(LocalStorage {
            root: root.canonicalize()?,
        })
    }

    /// The directory this storage reads from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file behind `key` and its metadata, when it is a regular file inside the root.
    async fn file(&self, key: &str) -> Result<(PathBuf, std::fs::Metadata), StorageError> {
        // Keys are normalized by pixmesh-core (no `..`); resolving symlinks and checking the
        // prefix again keeps a link inside the root from pointing outside it.
        let path = tokio::fs::canonicalize(self.root.join(key))
            .await
            .map_err(io_error)?;
        if !path.starts_with(&self.root) {
            return Err(StorageError::NotFound);
        }
        let meta = tokio::fs::metadata(&path).await.map_err(io_error)?;
        if !meta.is_file() {
            return Err(StorageError::NotFound);
        }
        Ok((path, meta))
    }

    async fn get<H>(
        &self,
        key: &str,
        max_bytes: u64,
        gate: &impl Gate<H>,
    ) -> Result<(Object, H), StorageError> {
        let (path, meta) = self.file(key).await?;
        if meta.len() > max_bytes {
            return Err(StorageError::TooLarge {
                size: meta.len(),
                limit: max_bytes,
            });
        }
        let held = gate.admit(meta.len()).await?;
        // No more than the length the gate was told, should the file have grown since.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        let file = tokio::fs::File::open(&path).await.map_err(io_error)?;
        tokio::io::AsyncReadExt::read_to_end(
            &mut tokio::io::AsyncReadExt::take(file, meta.len() + 1),
            &mut bytes,
        )
        .await
        .map_err(io_error)?;
        if bytes.len() as u64 > meta.len() {
            return Err(StorageError::Unavailable(format!(
                "{key} grew while it was read"
            )));
        }
        // The stand-in ETag comes from the metadata read before the content, like `head`'s.
        let Head {
            etag,
            last_modified,
        } = local_head(&meta);
        let object = Object {
            etag,
            bytes: bytes.into(),
            last_modified,
            content_type: None,
            metadata: HashMap::new(),
        };
        Ok((object, held))
    }

    async fn head(&self, key: &str) -> Result<Head, StorageError> {
        Ok(local_head(&self.file(key).await?.1))
    }
}

/// A local file's validators: its mtime and size stand in for an ETag.
fn local_head(meta: &std::fs::Metadata) -> Head {
    let modified = meta.modified().ok().map(DateTime::from);
    let stamp = modified.map_or(0, |m| m.as_nanos());
    Head {
        etag: format!("\"{stamp:x}-{:x}\"", meta.len()),
        last_modified: modified,
    }
}

/// Maps a file-system error onto the storage error model.
fn io_error(e: std::io::Error) -> StorageError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => StorageError::NotFound,
        std::io::ErrorKind::PermissionDenied => StorageError::AccessDenied,
        _ => StorageError::Other(e.to_string()),
    }
}

/// A bucket on an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Storage {
    bucket: String,
    writes: WriteOptions,
    /// How source keys are escaped before reading ([`Storage::get`], [`Storage::head`]), if
    /// they are; keys given to this type's own methods are used as they are.
    escape: Option<SafeChars>,
    /// How long a read may take, headers and body together (`[limits] storage_timeout_ms`).
    /// The SDK's operation timeout ends with the response headers, so [`S3Storage::get`] bounds
    /// the body read itself.
    timeout: Duration,
    /// The account that must own the bucket (`expected_bucket_owner`), sent with every
    /// request: S3 answers 403 when another owns it.
    owner: Option<String>,
    /// Shared by clones, so a region one learns all use.
    clients: Arc<Clients>,
}

/// The clients of one bucket.
#[derive(Debug)]
struct Clients {
    /// What every client is made from; only the region differs between them.
    config: aws_sdk_s3::Config,
    /// The client for the region the bucket is in, as far as is known: the configured region
    /// until S3 names another.
    current: RwLock<Arc<Regional>>,
}

/// A client and the region it signs for.
#[derive(Debug)]
struct Regional {
    region: String,
    client: aws_sdk_s3::Client,
}

/// What every write to a bucket carries besides the object; each is sent only when set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOptions {
    /// `x-amz-storage-class`.
    pub storage_class: Option<StorageClass>,
    /// `x-amz-acl` (a canned ACL).
    pub acl: Option<ObjectCannedAcl>,
    /// `x-amz-tagging`, already in canonical query-string form.
    pub tagging: Option<String>,
}

impl WriteOptions {
    /// The write settings of `cfg`; `Err` names the invalid one (config validation refuses them
    /// first, so a loaded config never fails here).
    pub fn from_config(cfg: &S3Config) -> Result<Self, String> {
        Ok(WriteOptions {
            storage_class: cfg.storage_class()?,
            acl: cfg.acl()?,
            tagging: cfg.tagging()?,
        })
    }
}

impl S3Storage {
    /// Connects (lazily: no request is made here) as `cfg` says. `Err` names an invalid write
    /// setting.
    pub async fn new(cfg: &S3Config, timeout: Duration) -> Result<Self, String> {
        let writes = WriteOptions::from_config(cfg)?;
        let escape = cfg.source_key_escaping()?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.expose(),
                cfg.session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "pixmesh-config",
            ));
        }
        if let Some(profile) = &cfg.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &cfg.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let mut shared = loader.load().await;
        if shared.region().is_none() {
            shared = shared
                .into_builder()
                .region(Region::new("us-east-1"))
                .build();
        }
        if let Some(role) = &cfg.role_arn {
            shared = assume_role(shared, cfg, role).await;
        }
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout.min(Duration::from_secs(3)))
                    .operation_timeout(timeout)
                    .build(),
            )
            // Garage (and other strict servers) reject the SDK's default streaming-trailer
            // checksums; send checksums only where S3 requires them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .interceptor(request_id::RequestId)
            .force_path_style(cfg.force_path_style.unwrap_or(cfg.endpoint.is_some()));
        if let Some(endpoint) = &cfg.endpoint {
            b = b.endpoint_url(endpoint);
        }
        let config = b.build();
        let region = config
            .region()
            .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        let regional = Regional {
            client: aws_sdk_s3::Client::from_conf(config.clone()),
            region,
        };
        Ok(S3Storage {
            bucket: cfg.bucket.clone(),
            writes,
            escape,
            timeout,
            owner: cfg.expected_bucket_owner.clone(),
            clients: Arc::new(Clients {
                config,
                current: RwLock::new(Arc::new(regional)),
            }),
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The same endpoint, credentials and settings for another bucket, which starts in the
    /// configured region and learns its own.
    pub fn for_bucket(&self, bucket: &str) -> S3Storage {
        let config = self.clients.config.clone();
        let region = config
            .region()
            .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        S3Storage {
            bucket: bucket.to_owned(),
            writes: self.writes.clone(),
            escape: self.escape.clone(),
            timeout: self.timeout,
            owner: self.owner.clone(),
            clients: Arc::new(Clients {
                current: RwLock::new(Arc::new(Regional {
                    client: aws_sdk_s3::Client::from_conf(config.clone()),
                    region,
                })),
                config,
            }),
        }
    }

    /// The object key a source `key` is read from: escaped when the storage escapes keys.
    pub fn source_key<'a>(&self, key: &'a str) -> Cow<'a, str> {
        match &self.escape {
            Some(safe) => Cow::Owned(escape(key, safe)),
            None => Cow::Borrowed(key),
        }
    }

    /// The region requests are signed for now: the configured one, or the one S3 named since.
    pub fn region(&self) -> String {
        self.current().region.clone()
    }

    /// The client requests use now.
    fn current(&self) -> Arc<Regional> {
        let current = self.clients.current.read();
        Arc::clone(&current.unwrap_or_else(|e| e.into_inner()))
    }
    /// The client for `region`, which from now on is the one every request uses.
    fn move_to(&self, region: &str) -> Arc<Regional> {
        let mut current = self
            .clients
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if current.region != region {
            tracing::info!(
                bucket = self.bucket,
                from = current.region,
                to = region,
                "the bucket is in another region; sending its requests there from now on"
            );
            let config = self
                .clients
                .config
                .to_builder()
                .region(Region::new(region.to_owned()))
                .build();
            *current = Arc::new(Regional {
                region: region.to_owned(),
                client: aws_sdk_s3::Client::from_conf(config),
            });
        }
        Arc::clone(&current)
    }

    /// Runs `op` with the current region's client. When S3 answers that the bucket is in another
    /// region, moves there ([`S3Storage::move_to`]) and runs `op` once more; a second wrong-region
    /// answer is [`StorageError::WrongRegion`]. Other errors are [`classify`]'d.
    async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, StorageError>
    where
        F: Fn(&aws_sdk_s3::Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.call_with(classify, op).await
    }

    /// [`S3Storage::call`] with another mapping of the errors that are not about the region.
    async fn call_with<T, E, F, Fut>(
        &self,
        classify: impl Fn(SdkError<E, HttpResponse>) -> StorageError,
        op: F,
    ) -> Result<T, StorageError>
    where
        F: Fn(&aws_sdk_s3::Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let first = self.current();
        let err = match op(&first.client).await {
            Ok(out) => return Ok(out),
            Err(err) => err,
        };
        let Some(named) = wrong_region(&err, &first.region) else {
            return Err(classify(err));
        };
        let retry = match named {
            Some(region) if region != first.region => self.move_to(&region),
            _ => return Err(self.mismatch(&first.region, &err)),
        };
        match op(&retry.client).await {
            Ok(out) => Ok(out),
            Err(err) if wrong_region(&err, &retry.region).is_some() => {
                Err(self.mismatch(&retry.region, &err))
            }
            Err(err) => Err(classify(err)),
        }
    }

    /// The error for a wrong-region answer to a request signed for `region`.
    fn mismatch<E: ProvideErrorMetadata>(
        &self,
        region: &str,
        err: &SdkError<E, HttpResponse>,
    ) -> StorageError {
        let status = err.raw_response().map_or(0, |r| r.status().as_u16());
        let named = err.raw_response().and_then(named_region);
        StorageError::WrongRegion(format!(
            "bucket {}: signed for region {region}, S3 answered HTTP {status} {} naming region {}",
            self.bucket,
            err.code().unwrap_or_default(),
            named.as_deref().unwrap_or("(none)"),
        ))
    }

    /// The validators of `key` (its `version`, when given), from a `HEAD`.
    pub async fn head(&self, key: &str, version: Option<&str>) -> Result<Head, StorageError> {
        let out = self
            .call_with(
                |e| classify_read(e, version),
                |c| {
                    c.head_object()
                        .bucket(&self.bucket)
                        .set_expected_bucket_owner(self.owner.clone())
                        .key(key)
                        .set_version_id(version.map(str::to_owned))
                        .send()
                },
            )
            .await?;
        Ok(Head {
            etag: out.e_tag().unwrap_or_default().to_owned(),
            last_modified: out.last_modified().copied(),
        })
    }

    /// Whether the bucket exists and the credentials may use it (`HeadBucket`).
    pub async fn head_bucket(&self) -> Result<(), StorageError> {
        self.call(|c| {
            c.head_bucket()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .send()
        })
        .await?;
        Ok(())
    }

    /// Whether the credentials may list the bucket (`ListObjectsV2` with `max-keys=1`).
    pub async fn list_one(&self) -> Result<(), StorageError> {
        self.call(|c| {
            c.list_objects_v2()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .max_keys(1)
                .send()
        })
        .await?;
        Ok(())
    }

    /// Deletes `key` (no error when it does not exist).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.call(|c| {
            c.delete_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key)
                .send()
        })
        .await?;
        Ok(())
    }

    /// Reads `key` (its `version`, when given), refusing objects larger than `max_bytes`.
    ///
    /// The whole read, from the request to the body's last byte (a wrong-region retry
    /// included), takes at most the storage's timeout, else [`StorageError::Timeout`]: a server
    /// that sends the headers and then stalls (or drips) the body would otherwise hold the
    /// request, and its worker admission, until the client gives up.
    pub async fn get(
        &self,
        key: &str,
        version: Option<&str>,
        max_bytes: u64,
    ) -> Result<Object, StorageError> {
        Ok(self.get_gated(key, version, max_bytes, &OpenGate).await?.0)
    }

    /// [`S3Storage::get`] through `gate` ([`Storage::get_gated`]); the wait at the gate counts
    /// in the storage's timeout.
    pub async fn get_gated<H>(
        &self,
        key: &str,
        version: Option<&str>,
        max_bytes: u64,
        gate: &impl Gate<H>,
    ) -> Result<(Object, H), StorageError> {
        tokio::time::timeout(
            self.timeout,
            self.get_unbounded(key, version, max_bytes, gate),
        )
        .await
        .map_err(|_| StorageError::Timeout)?
    }

    /// [`S3Storage::get_gated`] without its deadline.
    async fn get_unbounded<H>(
        &self,
        key: &str,
        version: Option<&str>,
        max_bytes: u64,
        gate: &impl Gate<H>,
    ) -> Result<(Object, H), StorageError> {
        let out = self
            .call_with(
                |e| classify_read(e, version),
                |c| {
                    c.get_object()
                        .bucket(&self.bucket)
                        .set_expected_bucket_owner(self.owner.clone())
                        .key(key)
                        .set_version_id(version.map(str::to_owned))
                        .send()
                },
            )
            .await?;
        // Without a declared length, the most this read may take.
        let size = out.content_length().map_or(max_bytes, |n| n.max(0) as u64);
        if size > max_bytes {
            return Err(StorageError::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        let held = gate.admit(size).await?;
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let last_modified = out.last_modified().copied();
        let content_type = out.content_type().map(str::to_owned);
        let metadata = out.metadata().cloned().unwrap_or_default();
        // No more than the gate was told: a body longer than its Content-Length is refused.
        let bytes = read_capped(out.body, size).await?;
        let object = Object {
            bytes,
            etag,
            last_modified,
            content_type,
            metadata,
        };
        Ok((object, held))
    }

    /// Writes `bytes` at `key` with a content type, user metadata and the bucket's
    /// [`WriteOptions`].
    pub async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
        metadata: HashMap<String, String>,
    ) -> Result<(), StorageError> {
        let w = &self.writes;
        self.call(|c| {
            c.put_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key)
                .content_type(content_type)
                .set_metadata(Some(metadata.clone()))
                .set_storage_class(w.storage_class.clone())
                .set_acl(w.acl.clone())
                .set_tagging(w.tagging.clone())
                .body(ByteStream::from(bytes.clone()))
                .send()
        })
        .await?;
        Ok(())
    }
}

/// `shared` with its credentials replaced by those of `role`, assumed through STS with
/// `shared`'s credentials (and the external ID and session name of `cfg`). The provider asks STS
/// on first use and again before the temporary credentials expire; the S3 client caches them.
async fn assume_role(shared: SdkConfig, cfg: &S3Config, role: &str) -> SdkConfig {
    let mut base = shared.to_builder();
    if let Some(endpoint) = &cfg.sts_endpoint {
        base = base.endpoint_url(endpoint);
    }
    let mut builder = AssumeRoleProvider::builder(role)
        .configure(&base.build())
        .session_name(cfg.role_session_name.as_deref().unwrap_or("pixmesh"));
    if let Some(id) = &cfg.external_id {
        builder = builder.external_id(id);
    }
    let provider = builder.build().await;
    shared
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build()
}

/// Collects a body, stopping as soon as it exceeds `max_bytes` (the declared length can lie).
async fn read_capped(mut body: ByteStream, max_bytes: u64) -> Result<Bytes, StorageError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| StorageError::Unavailable(format!("reading body: {e}")))?
    {
        if (buf.len() + chunk.len()) as u64 > max_bytes {
            return Err(StorageError::TooLarge {
                size: (buf.len() + chunk.len()) as u64,
                limit: max_bytes,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Whether `err` says the bucket is in another region than `signed_for`, and which one when S3
/// named it: `None` when the error is about something else. Wrong-region answers are a `301` or
/// `307` redirect, a `400 AuthorizationHeaderMalformed`, or (on `HEAD`, which has no error body)
/// a `400` whose `x-amz-bucket-region` names another region.
fn wrong_region<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
    signed_for: &str,
) -> Option<Option<String>> {
    let raw = err.raw_response()?;
    let named = named_region(raw);
    let regional = match raw.status().as_u16() {
        301 | 307 => true,
        400 => {
            err.code() == Some("AuthorizationHeaderMalformed")
                || named.as_deref().is_some_and(|r| r != signed_for)
        }
        _ => false,
    };
    regional.then_some(named)
}

/// The region an S3 error response names: its `x-amz-bucket-region` header, else the `<Region>`
/// of its XML body. Only well-formed region names count (they end up in endpoint host names).
fn named_region(raw: &HttpResponse) -> Option<String> {
    let from_body = || {
        let body = std::str::from_utf8(raw.body().bytes()?).ok()?;
        let start = body.find("<Region>")? + "<Region>".len();
        let len = body[start..].find("</Region>")?;
        Some(&body[start..start + len])
    };
    let region = raw
        .headers()
        .get("x-amz-bucket-region")
        .or_else(from_body)?
        .trim();
    let well_formed = (1..=64).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    well_formed.then(|| region.to_owned())
}

/// [`classify`] for reads of `version`: a version S3 refuses as malformed (`400
/// InvalidArgument`, a bare `400` on `HEAD`) or as a delete marker (`405`) is not there, like a
/// well-formed unknown one (`404 NoSuchVersion`).
fn classify_read<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: SdkError<E, HttpResponse>,
    version: Option<&str>,
) -> StorageError {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let missing = match status {
        // A HEAD has no error body, so no code either.
        Some(400) => matches!(err.code(), Some("InvalidArgument") | None),
        Some(405) => true,
        _ => false,
    };
    if version.is_some() && missing {
        return StorageError::NotFound;
    }
    classify(err)
}

/// Maps an SDK error onto the storage error model.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: SdkError<E, HttpResponse>,
) -> StorageError {
    match &err {
        SdkError::TimeoutError(_) => StorageError::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => StorageError::Timeout,
        // No request was sent: the credential chain (or STS assume-role) gave no credentials.
        // A configuration or permission problem, not an outage; the detail names the cause.
        SdkError::DispatchFailure(_) if credentials_failed(&err) => {
            StorageError::Other(aws_sdk_s3::error::DisplayErrorContext(&err).to_string())
        }
        SdkError::DispatchFailure(_) => {
            StorageError::Unavailable(aws_sdk_s3::error::DisplayErrorContext(&err).to_string())
        }
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or_default();
            match (s.raw().status().as_u16(), code) {
                (_, "NoSuchBucket") => StorageError::NoSuchBucket,
                (404, _) | (_, "NoSuchKey" | "NotFound") => StorageError::NotFound,
                (403, _) | (_, "AccessDenied") => StorageError::AccessDenied,
                (status, code) => StorageError::Other(format!("HTTP {status} {code}")),
            }
        }
        _ => StorageError::Other(format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err))),
    }
}

/// Whether `err` comes from loading credentials rather than from the request itself.
fn credentials_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Formats a timestamp as an HTTP date (`Last-Modified`).
pub fn http_date(t: &DateTime) -> Option<String> {
    t.fmt(DateTimeFormat::HttpDate).ok()
}

/// The first success of `op` along `chain`, moving on only when an object is not found; the last
/// error otherwise.
pub async fn first_found<'a, T, F, Fut>(chain: &[&'a Storage], op: F) -> Result<T, StorageError>
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-request HTTP server on 127.0.0.1: answers `200` with an ETag and hands back the
    /// request head (request line and headers, names lower-cased by the client or not).
    async fn capture_one() -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before the request head ended");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + length {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before the body ended");
                buf.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            head
        });
        (endpoint, task)
    }

    fn s3_config(endpoint: &str, extra: &str) -> S3Config {
        let toml = format!(
            "bucket = \"b\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"AKIDTEST\"\nsecret_access_key = \"capture-secret\"\n{extra}"
        );
        toml::from_str(&toml).unwrap()
    }

    /// The header lines of a captured PUT, lower-cased.
    async fn put_headers(extra: &str) -> String {
        let (endpoint, server) = capture_one().await;
        let storage = S3Storage::new(&s3_config(&endpoint, extra), Duration::from_secs(5))
            .await
            .unwrap();
        let meta = HashMap::from([("pixmesh-etag".to_owned(), "\"r\"".to_owned())]);
        storage
            .put("a/b.jpg", Bytes::from_static(b"img"), "image/jpeg", meta)
            .await
            .unwrap();
        server.await.unwrap().to_ascii_lowercase()
    }

    #[tokio::test]
    async fn writes_send_storage_class_acl_and_tagging_only_when_configured() {
        let head = put_headers(
            "storage_class = \"STANDARD_IA\"\nacl = \"bucket-owner-full-control\"\n\
             tagging = \"source=pixmesh&team=a b\"",
        )
        .await;
        assert!(head.starts_with("put /b/a/b.jpg?"), "{head}");
        assert!(
            head.contains("\r\nx-amz-storage-class: standard_ia\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nx-amz-acl: bucket-owner-full-control\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nx-amz-tagging: source=pixmesh&team=a%20b\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nx-amz-meta-pixmesh-etag: \"r\"\r\n"),
            "{head}"
        );
        assert!(!head.contains("capture-secret"), "{head}");

        let head = put_headers("").await;
        assert!(head.starts_with("put /b/a/b.jpg?"), "{head}");
        for absent in ["x-amz-storage-class", "x-amz-acl", "x-amz-tagging"] {
            assert!(!head.contains(absent), "{absent} sent unconfigured: {head}");
        }
    }

    #[tokio::test]
    async fn head_reads_validators_without_the_body() {
        let (endpoint, server) = capture_one().await;
        let storage = S3Storage::new(&s3_config(&endpoint, ""), Duration::from_secs(5))
            .await
            .unwrap();
        let head = storage.head("x.jpg", None).await.unwrap();
        assert_eq!(head.etag, "\"e\"");
        assert!(server.await.unwrap().starts_with("HEAD /b/x.jpg"));
    }

    /// The bucket of [`regional_bucket`] is in this region; storages are configured for
    /// `us-east-1`.
    const HOME: &str = "eu-west-1";

    /// S3's answer to a request signed for another region than [`HOME`].
    #[derive(Clone, Copy)]
    enum Redirect {
        /// `301 PermanentRedirect` with `x-amz-bucket-region` (and no region in the body).
        Permanent,
        /// `400 AuthorizationHeaderMalformed` naming the region in its body only.
        MalformedAuthorization,
    }

    /// A bucket in [`HOME`]: requests signed for it get `200` with an ETag and `img`, others get
    /// `redirect`.
    async fn regional_bucket(redirect: Redirect) -> crate::testing::fake_s3::FakeS3 {
        use crate::testing::fake_s3::Reply;
        crate::testing::fake_s3::FakeS3::start(move |req| {
            if req.region == HOME {
                return Reply::new("200 OK", "img").header("etag", "\"e\"");
            }
            match redirect {
                Redirect::Permanent => Reply::new(
                    "301 Moved Permanently",
                    "<Error><Code>PermanentRedirect</Code><Message>The bucket you are \
                     attempting to access must be addressed using the specified endpoint.\
                     </Message><Bucket>b</Bucket></Error>",
                )
                .header("x-amz-bucket-region", HOME)
                .header("content-type", "application/xml"),
                Redirect::MalformedAuthorization => Reply::new(
                    "400 Bad Request",
                    format!(
                        "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The \
                         authorization header is malformed; the region '{}' is wrong; \
                         expecting '{HOME}'</Message><Region>{HOME}</Region></Error>",
                        req.region
                    ),
                )
                .header("content-type", "application/xml"),
            }
        })
        .await
    }

    async fn storage_at(endpoint: &str) -> S3Storage {
        S3Storage::new(&s3_config(endpoint, ""), Duration::from_secs(5))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_bucket_in_another_region_is_asked_again_there_and_remembered() {
        let s3 = regional_bucket(Redirect::Permanent).await;
        let storage = storage_at(&s3.endpoint).await;

        let obj = storage
            .get("a.jpg", None, 100)
            .await
            .expect("found after the retry");
        assert_eq!(&obj.bytes[..], b"img");
        assert_eq!(
            s3.regions(),
            ["us-east-1", HOME],
            "retried, signed for {HOME}"
        );
        let retry = &s3.seen()[1];
        assert!(retry.target.starts_with("/b/a.jpg"), "{retry:?}");
        assert!(
            retry
                .authorization
                .contains(&format!("/{HOME}/s3/aws4_request")),
            "{retry:?}"
        );
        assert_eq!(storage.region(), HOME);

        // Later requests, and clones made before the move, go straight to the bucket's region.
        let clone = storage.clone();
        storage.get("a.jpg", None, 100).await.expect("second read");
        clone.head("a.jpg", None).await.expect("head");
        assert_eq!(s3.regions(), ["us-east-1", HOME, HOME, HOME]);
    }

    #[tokio::test]
    async fn a_head_learns_the_region_from_the_header_alone() {
        let s3 = regional_bucket(Redirect::Permanent).await;
        let storage = storage_at(&s3.endpoint).await;
        let head = storage
            .head("a.jpg", None)
            .await
            .expect("found after the retry");
        assert_eq!(head.etag, "\"e\"");
        assert_eq!(s3.regions(), ["us-east-1", HOME]);
        assert!(s3.seen().iter().all(|r| r.method == "HEAD"));
    }

    #[tokio::test]
    async fn the_region_an_authorization_error_names_is_learned_too() {
        let s3 = regional_bucket(Redirect::MalformedAuthorization).await;
        let storage = storage_at(&s3.endpoint).await;
        storage
            .get("a.jpg", None, 100)
            .await
            .expect("found after the retry");
        storage
            .put(
                "r.jpg",
                Bytes::from_static(b"r"),
                "image/jpeg",
                HashMap::new(),
            )
            .await
            .expect("writes follow too");
        assert_eq!(s3.regions(), ["us-east-1", HOME, HOME]);
    }

    #[tokio::test]
    async fn every_request_names_the_expected_bucket_owner_when_one_is_set() {
        use crate::testing::fake_s3::{FakeS3, Reply};
        let s3 = FakeS3::start(|_| Reply::new("200 OK", "img").header("etag", "\"e\"")).await;
        let owned = S3Storage::new(
            &s3_config(&s3.endpoint, "expected_bucket_owner = \"111122223333\""),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        owned.get("a.jpg", None, 100).await.unwrap();
        owned.head("a.jpg", None).await.unwrap();
        owned
            .put(
                "r.jpg",
                Bytes::from_static(b"x"),
                "image/jpeg",
                HashMap::new(),
            )
            .await
            .unwrap();
        owned
            .for_bucket("tenant")
            .head("a.jpg", None)
            .await
            .unwrap();
        let plain = storage_at(&s3.endpoint).await;
        plain.get("a.jpg", None, 100).await.unwrap();
        let owners: Vec<Option<String>> = s3.seen().into_iter().map(|r| r.expected_owner).collect();
        let owner = Some("111122223333".to_owned());
        assert_eq!(
            owners,
            [owner.clone(), owner.clone(), owner.clone(), owner, None]
        );
    }

    #[tokio::test]
    async fn a_bucket_still_in_the_wrong_region_after_the_retry_is_a_502_without_detail() {
        use crate::serving::status::RenderError;
        // The bucket names a region, then refuses requests signed for it as well.
        let s3 = crate::testing::fake_s3::FakeS3::start(|_| {
            crate::testing::fake_s3::Reply::new("301 Moved Permanently", "")
                .header("x-amz-bucket-region", HOME)
        })
        .await;
        let storage = storage_at(&s3.endpoint).await;
        let err = storage
            .get("a.jpg", None, 100)
            .await
            .expect_err("wrong region twice");
        assert!(matches!(err, StorageError::WrongRegion(_)), "{err:?}");
        assert_eq!(s3.regions(), ["us-east-1", HOME], "retried once only");

        let err = RenderError::Source(err);
        assert_eq!(err.http_status(), 502);
        let public = err.to_status().message().to_owned();
        assert!(public.contains("region mismatch"), "{public}");
        for detail in [HOME, "us-east-1", "127.0.0.1", "AKIDTEST", "capture-secret"] {
            assert!(!public.contains(detail), "{detail} in {public}");
        }
        let logged = err.detail();
        assert!(logged.contains(HOME) && logged.contains("301"), "{logged}");
        assert!(!logged.contains("capture-secret"), "{logged}");

        // A redirect naming the region already used is not retried at all.
        let err = storage
            .get("a.jpg", None, 100)
            .await
            .expect_err("still wrong");
        assert!(matches!(err, StorageError::WrongRegion(_)), "{err:?}");
        assert_eq!(s3.regions(), ["us-east-1", HOME, HOME]);
    }

    #[tokio::test]
    async fn a_version_s3_refuses_as_malformed_or_deleted_is_not_found() {
        use crate::testing::fake_s3::{FakeS3, Reply};
        let s3 = FakeS3::start(|req| {
            if req.target.contains("versionId=deleted") {
                Reply::new(
                    "405 Method Not Allowed",
                    "<Error><Code>MethodNotAllowed</Code></Error>",
                )
                .header("x-amz-delete-marker", "true")
            } else {
                Reply::new(
                    "400 Bad Request",
                    "<Error><Code>InvalidArgument</Code><Message>Invalid version id specified\
                     </Message></Error>",
                )
            }
        })
        .await;
        let storage = storage_at(&s3.endpoint).await;
        for version in ["malformed", "deleted"] {
            let err = storage
                .get("a.jpg", Some(version), 100)
                .await
                .expect_err(version);
            assert!(matches!(err, StorageError::NotFound), "{version}: {err:?}");
        }
        let err = storage
            .head("a.jpg", Some("malformed"))
            .await
            .expect_err("head");
        assert!(matches!(err, StorageError::NotFound), "{err:?}");
        let err = storage
            .get("a.jpg", None, 100)
            .await
            .expect_err("no version");
        assert!(
            matches!(err, StorageError::Other(_)),
            "without a version a 400 is a storage error: {err:?}"
        );
        let targets: Vec<String> = s3.seen().into_iter().map(|r| r.target).collect();
        assert!(targets[0].contains("versionId=malformed"), "{targets:?}");
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let s3 = crate::testing::fake_s3::FakeS3::start(|_| {
            crate::testing::fake_s3::Reply::new(
                "403 Forbidden",
                "<Error><Code>AccessDenied</Code></Error>",
            )
            .header("x-amz-bucket-region", "us-east-1")
        })
        .await;
        let storage = storage_at(&s3.endpoint).await;
        let err = storage.get("a.jpg", None, 100).await.expect_err("denied");
        assert!(matches!(err, StorageError::AccessDenied), "{err:?}");
        assert_eq!(s3.regions(), ["us-east-1"]);
    }

    /// An HTTP server on 127.0.0.1 that answers every request with `200`, `Content-Length:
    /// 1000` and the first few bytes of the body, then sends nothing more and keeps the
    /// connection open (until the test's runtime ends). Returns the endpoint and the number of
    /// requests answered so far.
    async fn stalling_body() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let answered = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&answered);
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                conn.write_all(
                    b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Type: image/jpeg\r\n\
                      Content-Length: 1000\r\n\r\n\xff\xd8\xff\xe0",
                )
                .await
                .unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                held.push(conn);
            }
        });
        (endpoint, answered)
    }

    #[tokio::test]
    async fn a_body_that_stalls_after_the_headers_times_out_within_the_storage_timeout() {
        use crate::serving::status::RenderError;
        use std::sync::atomic::Ordering;
        let (endpoint, answered) = stalling_body().await;
        let storage = S3Storage::new(&s3_config(&endpoint, ""), Duration::from_millis(300))
            .await
            .unwrap();
        // Without a deadline on the body this never returns: the server never closes.
        let guard = Duration::from_secs(10);
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(guard, storage.get("a.jpg", None, 10_000))
            .await
            .unwrap_or_else(|_| panic!("get still waiting for the body after {guard:?}"));
        let elapsed = started.elapsed();
        let err = read.expect_err("the body never completes");
        assert!(matches!(err, StorageError::Timeout), "{err:?}");
        assert!(
            answered.load(Ordering::SeqCst) >= 1,
            "the headers came, so the operation timeout alone would not have fired"
        );
        eprintln!("stalled body gave up after {elapsed:?}");
        assert_eq!(RenderError::Source(err.clone()).http_status(), 504);
        assert_eq!(RenderError::ResultStorage(err).http_status(), 504);
    }

    /// STS's answer to `AssumeRole`: temporary credentials `ASIATEMPORARY` / `temp-secret`.
    const ASSUMED: &str = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
        <AssumeRoleResult><Credentials><AccessKeyId>ASIATEMPORARY</AccessKeyId>\
        <SecretAccessKey>temp-secret</SecretAccessKey><SessionToken>temp-token</SessionToken>\
        <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials><AssumedRoleUser>\
        <Arn>arn:aws:sts::123456789012:assumed-role/reader/pixmesh</Arn>\
        <AssumedRoleId>AROAEXAMPLE:pixmesh</AssumedRoleId></AssumedRoleUser></AssumeRoleResult>\
        <ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></AssumeRoleResponse>";

    /// The access key ID of a SigV4 `Authorization` header and its service.
    fn signer(authorization: &str) -> (String, String) {
        let scope = authorization
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split([',', ' ']).next())
            .unwrap_or_default();
        let parts: Vec<&str> = scope.split('/').collect();
        (
            parts.first().copied().unwrap_or_default().to_owned(),
            parts.get(3).copied().unwrap_or_default().to_owned(),
        )
    }

    const ROLE_OPTIONS: &str = "role_arn = \"arn:aws:iam::123456789012:role/reader\"\n\
                                external_id = \"ext-42\"\n";

    #[tokio::test]
    async fn an_assumed_role_signs_s3_requests_with_the_credentials_sts_returned() {
        use crate::testing::fake_s3::{FakeS3, Reply};
        // One fake for both services: STS is a form POST to `/`.
        let fake = FakeS3::start(|req| {
            if req.method == "POST" && req.target == "/" {
                Reply::new("200 OK", ASSUMED).header("content-type", "text/xml")
            } else {
                Reply::new("200 OK", "img").header("etag", "\"e\"")
            }
        })
        .await;
        let extra = format!("{ROLE_OPTIONS}sts_endpoint = \"{}\"\n", fake.endpoint);
        let storage = S3Storage::new(&s3_config(&fake.endpoint, &extra), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(fake.seen(), [], "nothing is asked before the first use");
        storage.get("a.jpg", None, 100).await.expect("read");
        storage.head("a.jpg", None).await.expect("head");

        let seen = fake.seen();
        assert_eq!(seen.len(), 3, "one AssumeRole, then S3: {seen:#?}");
        let sts = &seen[0];
        assert_eq!((sts.method.as_str(), sts.target.as_str()), ("POST", "/"));
        for param in [
            "Action=AssumeRole",
            "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Freader",
            "ExternalId=ext-42",
            "RoleSessionName=pixmesh",
        ] {
            assert!(sts.body.split('&').any(|p| p == param), "{param}: {sts:?}");
        }
        assert_eq!(
            signer(&sts.authorization),
            ("AKIDTEST".to_owned(), "sts".to_owned()),
            "the role is assumed with the storage's own keys"
        );
        for s3 in &seen[1..] {
            assert!(s3.target.starts_with("/b/a.jpg"), "{s3:?}");
            assert_eq!(
                signer(&s3.authorization),
                ("ASIATEMPORARY".to_owned(), "s3".to_owned()),
                "S3 is signed with the temporary key"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_assume_role_fails_the_read_without_showing_credentials() {
        use crate::testing::fake_s3::{FakeS3, Reply};
        let fake = FakeS3::start(|req| {
            if req.method == "POST" {
                Reply::new(
                    "403 Forbidden",
                    "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                     <Message>not authorized to perform sts:AssumeRole</Message></Error>\
                     <RequestId>r2</RequestId></ErrorResponse>",
                )
                .header("content-type", "text/xml")
            } else {
                Reply::new("200 OK", "img")
            }
        })
        .await;
        let extra = format!(
            "{ROLE_OPTIONS}role_session_name = \"render-1\"\nsts_endpoint = \"{}\"\n",
            fake.endpoint
        );
        let storage = S3Storage::new(&s3_config(&fake.endpoint, &extra), Duration::from_secs(5))
            .await
            .unwrap();
        let err = storage.get("a.jpg", None, 100).await.expect_err("refused");
        let seen = fake.seen();
        assert!(
            seen.iter().all(|r| r.method == "POST"),
            "no S3 request: {seen:#?}"
        );
        assert!(
            seen[0].body.contains("RoleSessionName=render-1"),
            "{seen:?}"
        );
        let shown = format!("{err} {}", err.detail());
        assert!(!shown.contains("capture-secret"), "{shown}");
        assert!(
            matches!(err, StorageError::Other(_)),
            "not an outage: {err:?}"
        );
        assert!(err.detail().contains("loading credentials"), "{err:?}");
    }

    #[tokio::test]
    async fn local_head_matches_get() {
        let dir = std::env::temp_dir().join(format!("pixmesh-storage-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.bin"), b"12345").unwrap();
        let storage = Storage::Local(LocalStorage::new(&dir).unwrap());
        let head = storage.head("a.bin", None).await.unwrap();
        let obj = storage.get("a.bin", None, 100).await.unwrap();
        assert_eq!(head.etag, obj.etag);
        assert_eq!(head.last_modified, obj.last_modified);
        assert!(matches!(
            storage.head("nope", None).await,
            Err(StorageError::NotFound)
        ));
        for refused in [
            storage.get("a.bin", Some("v1"), 100).await.map(|_| ()),
            storage.head("a.bin", Some("v1")).await.map(|_| ()),
        ] {
            assert!(
                matches!(refused, Err(StorageError::VersionsUnsupported)),
                "a directory has no versions: {refused:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
