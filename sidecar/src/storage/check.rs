//! `pixmesh-sidecar check`: probes every configured storage the way serving will use it, and
//! says in one line each what works and what does not.
//!
//! - every local storage: the directory can be listed;
//! - every S3 storage: the bucket exists and the credentials may use it (`HeadBucket`), and may
//!   read it (`ListObjectsV2` with `max-keys=1`); for a routing file, every bucket it names; a
//!   wildcard bucket (`*`) has no fixed bucket to probe, which its line says;
//! - the result storage and the source storage: a probe object can be written (with the
//!   configured storage class, ACL and tags) and deleted again.
//!
//! Lines never carry credentials; they may name endpoints and buckets (this is for operators).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pixmesh_core::keys::join;

use super::routing::RoutedS3;
use super::{S3Storage, StorageError};
use crate::config::{Config, S3Config, StorageConfig};

/// Where probe objects are written, under the result storage's base dir.
pub const PROBE_DIR: &str = ".pixmesh-check";

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Whether everything probed worked.
    pub ok: bool,
    /// What was probed: `storage NAME` or `result_storage NAME`.
    pub subject: String,
    /// What worked, or why it failed.
    pub detail: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{verdict} {}: {}", self.subject, self.detail)
    }
}

/// Probes every storage of `config` in name order, then its result storage and source storage.
pub async fn check(config: &Config) -> Vec<Line> {
    let timeout = Duration::from_millis(config.limits.storage_timeout_ms);
    let mut lines = Vec::new();
    for (name, cfg) in &config.storages {
        let subject = format!("storage {name}");
        let outcome = match cfg {
            StorageConfig::Local { root, .. } => std::fs::read_dir(root)
                .map(|_| format!("directory {} can be listed", root.display()))
                .map_err(|e| format!("directory {}: {e}", root.display())),
            StorageConfig::S3(s3) if s3.is_wildcard() => routed_probe(s3, timeout).await,
            StorageConfig::S3(s3) => match S3Storage::new(s3, timeout).await {
                Ok(storage) => read_probe(&storage).await,
                Err(e) => Err(e),
            },
        };
        lines.push(line(subject, outcome));
    }
    let writers = [
        config
            .result_storage
            .as_ref()
            .map(|rs| ("result_storage", &rs.storage, &rs.base_dir)),
        config
            .source_storage
            .as_ref()
            .map(|ss| ("source_storage", &ss.storage, &ss.base_dir)),
    ];
    for (role, name, base_dir) in writers.into_iter().flatten() {
        let subject = format!("{role} {name}");
        let outcome = match config.storages.get(name) {
            Some(StorageConfig::S3(s3)) => match S3Storage::new(s3, timeout).await {
                Ok(storage) => write_probe(&storage, base_dir).await,
                Err(e) => Err(e),
            },
            _ => Err("not an S3 storage".to_owned()),
        };
        lines.push(line(subject, outcome));
    }
    lines
}

fn line(subject: String, outcome: Result<String, String>) -> Line {
    let (ok, detail) = match outcome {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    Line {
        ok,
        subject,
        detail,
    }
}

async fn read_probe(storage: &S3Storage) -> Result<String, String> {
    let bucket = storage.bucket();
    storage
        .head_bucket()
        .await
        .map_err(|e| format!("bucket {bucket}: HeadBucket: {}", reason(&e)))?;
    storage
        .list_one()
        .await
        .map_err(|e| format!("bucket {bucket}: ListObjectsV2: {}", reason(&e)))?;
    Ok(format!("bucket {bucket} is reachable and readable"))
}

/// Probes every bucket a routing file names; a plain wildcard names none.
async fn routed_probe(s3: &S3Config, timeout: Duration) -> Result<String, String> {
    if s3.routing_file.is_none() {
        return Ok("bucket \"*\": each key names its bucket; no fixed bucket to probe".into());
    }
    let routed = RoutedS3::new(s3, timeout).await?;
    let buckets = routed.routing().configured_buckets();
    for bucket in &buckets {
        if let Some(storage) = routed.configured(bucket) {
            read_probe(storage).await?;
        }
    }
    if buckets.is_empty() {
        return Ok("routing file in passthrough mode: each key names its bucket".into());
    }
    Ok(format!(
        "buckets {} are reachable and readable",
        buckets.join(", ")
    ))
}

async fn write_probe(storage: &S3Storage, base_dir: &str) -> Result<String, String> {
    let bucket = storage.bucket();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = join(
        base_dir,
        &format!("{PROBE_DIR}/{stamp:x}-{}", std::process::id()),
    );
    let body = Bytes::from_static(b"pixmesh check probe");
    storage
        .put(&key, body, "text/plain", Default::default())
        .await
        .map_err(|e| format!("bucket {bucket}: PutObject {key}: {}", reason(&e)))?;
    storage
        .delete(&key)
        .await
        .map_err(|e| format!("bucket {bucket}: DeleteObject {key}: {}", reason(&e)))?;
    Ok(format!(
        "bucket {bucket}: wrote and deleted probe object {key}"
    ))
}

/// An operator-facing reason: the public message plus the detail where there is one.
fn reason(e: &StorageError) -> String {
    match e {
        StorageError::NotFound | StorageError::NoSuchBucket => {
            "the bucket does not exist".to_owned()
        }
        StorageError::AccessDenied => {
            "access denied (check the credentials and their rights on the bucket)".to_owned()
        }
        StorageError::Unavailable(d) => format!("unreachable: {d}"),
        StorageError::WrongRegion(d) => format!("region mismatch: {d}"),
        StorageError::Other(d) => format!("storage error: {d}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_storages_are_listed_and_lines_say_ok_or_fail() {
        let dir = std::env::temp_dir();
        let config = Config::from_toml(&format!(
            "[storages.here]\ntype = \"local\"\nroot = {:?}\n",
            dir.display().to_string()
        ))
        .unwrap();
        let lines = check(&config).await;
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ok, "{}", lines[0]);
        assert!(
            lines[0]
                .to_string()
                .starts_with("ok   storage here: directory ")
        );

        let missing = dir.join("pixmesh-check-no-such-dir-7f3a");
        let config = Config::from_toml(&format!(
            "[storages.gone]\ntype = \"local\"\nroot = {:?}\n",
            missing.display().to_string()
        ))
        .unwrap();
        let lines = check(&config).await;
        assert!(!lines[0].ok);
        assert!(
            lines[0]
                .to_string()
                .starts_with("FAIL storage gone: directory "),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn reasons_name_the_cause() {
        assert!(reason(&StorageError::AccessDenied).contains("access denied"));
        assert!(reason(&StorageError::NotFound).contains("does not exist"));
        assert!(
            reason(&StorageError::Unavailable("connection refused".into())).contains("refused")
        );
    }
}
