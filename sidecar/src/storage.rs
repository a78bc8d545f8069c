//! Storages: where sources are read from and renditions written to.
//!
//! [`Storage`] is a closed set of backends (a local directory, an S3-compatible bucket) behind one
//! small interface: `get` an object with its validators, `put` one with metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use bytes::Bytes;

use crate::config::S3Config;

/// Why a storage operation failed. Messages are safe to show: no credentials, no endpoints.
#[derive(Debug, thiserror::Error)]
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
    /// The storage could not be reached (503).
    #[error("storage unreachable")]
    Unavailable(String),
    /// The storage did not answer in time (504).
    #[error("storage timed out")]
    Timeout,
    /// Anything else the storage answered (502); the detail is for logs.
    #[error("storage error")]
    Other(String),
}

impl StorageError {
    /// Detail for logs (never sent to clients).
    pub fn detail(&self) -> String {
        match self {
            StorageError::Unavailable(d) | StorageError::Other(d) => d.clone(),
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

/// One storage backend.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Files under a directory.
    Local(LocalStorage),
    /// An S3-compatible bucket.
    S3(S3Storage),
}

impl Storage {
    /// Reads `key`, refusing objects larger than `max_bytes`.
    pub async fn get(&self, key: &str, max_bytes: u64) -> Result<Object, StorageError> {
        match self {
            Storage::Local(l) => l.get(key, max_bytes).await,
            Storage::S3(s) => s.get(key, max_bytes).await,
        }
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

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Object, StorageError> {
        let not_found = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                StorageError::NotFound
            }
            std::io::ErrorKind::PermissionDenied => StorageError::AccessDenied,
            _ => StorageError::Other(e.to_string()),
        };
        // Keys are normalized by pixmesh-core (no `..`); resolving symlinks and checking the
        // prefix again keeps a link inside the root from pointing outside it.
        let path = tokio::fs::canonicalize(self.root.join(key))
            .await
            .map_err(not_found)?;
        if !path.starts_with(&self.root) {
            return Err(StorageError::NotFound);
        }
        let meta = tokio::fs::metadata(&path).await.map_err(not_found)?;
        if !meta.is_file() {
            return Err(StorageError::NotFound);
        }
        if meta.len() > max_bytes {
            return Err(StorageError::TooLarge {
                size: meta.len(),
                limit: max_bytes,
            });
        }
        let bytes = tokio::fs::read(&path).await.map_err(not_found)?;
        let modified = meta.modified().ok().map(DateTime::from);
        let stamp = modified.map_or(0, |m| m.as_nanos());
        Ok(Object {
            etag: format!("\"{stamp:x}-{:x}\"", bytes.len()),
            bytes: bytes.into(),
            last_modified: modified,
            content_type: None,
            metadata: HashMap::new(),
        })
    }
}

/// A bucket on an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Storage {
    /// Connects (lazily: no request is made here) as `cfg` says.
    pub async fn new(cfg: &S3Config, timeout: Duration) -> Self {
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
        if let Some(region) = &cfg.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
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
            .force_path_style(cfg.force_path_style.unwrap_or(cfg.endpoint.is_some()));
        if shared.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(endpoint) = &cfg.endpoint {
            b = b.endpoint_url(endpoint);
        }
        S3Storage {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
        }
    }

    /// Reads `key`, refusing objects larger than `max_bytes`.
    pub async fn get(&self, key: &str, max_bytes: u64) -> Result<Object, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(classify)?;
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        if size > max_bytes {
            return Err(StorageError::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let last_modified = out.last_modified().copied();
        let content_type = out.content_type().map(str::to_owned);
        let metadata = out.metadata().cloned().unwrap_or_default();
        let bytes = read_capped(out.body, max_bytes).await?;
        Ok(Object {
            bytes,
            etag,
            last_modified,
            content_type,
            metadata,
        })
    }

    /// Writes `bytes` at `key` with a content type and user metadata.
    pub async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
        metadata: HashMap<String, String>,
    ) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_metadata(Some(metadata))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
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

/// Maps an SDK error onto the storage error model.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError {
    match &err {
        SdkError::TimeoutError(_) => StorageError::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => StorageError::Timeout,
        SdkError::DispatchFailure(d) => StorageError::Unavailable(format!("{:?}", d)),
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or_default();
            match (s.raw().status().as_u16(), code) {
                (_, "NoSuchBucket") => StorageError::Other("the bucket does not exist".into()),
                (404, _) | (_, "NoSuchKey" | "NotFound") => StorageError::NotFound,
                (403, _) | (_, "AccessDenied") => StorageError::AccessDenied,
                (status, code) => StorageError::Other(format!("HTTP {status} {code}")),
            }
        }
        _ => StorageError::Other(format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err))),
    }
}

/// Formats a timestamp as an HTTP date (`Last-Modified`).
pub fn http_date(t: &DateTime) -> Option<String> {
    t.fmt(DateTimeFormat::HttpDate).ok()
}
