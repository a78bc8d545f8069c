//! Serving renders: the gRPC service ([`grpc`]) over the render flow ([`render`]) and its
//! shared state ([`state`]), the wire request ([`wire`]), result and source storage
//! ([`results`]), what bounds the work ([`pool`], [`budget`], [`block_cache`], [`flight`],
//! [`watermark_cache`]) and the statuses failures become ([`status`]); here, start-up: the
//! storages, the [`Renderer`](state::Renderer), and [`serve`].

pub mod block_cache;
pub mod budget;
pub mod flight;
pub mod grpc;
pub mod observe;
pub mod pool;
pub mod render;
pub mod results;
mod server;
pub mod state;
pub mod status;
pub mod watermark_cache;
pub mod wire;

pub use server::{serve, serve_with};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;

use crate::config::{self, Config, PathStyle, StorageConfig};
use crate::storage::routing::RoutedS3;
use crate::storage::{LocalStorage, S3Storage, Storage};
use budget::MemoryBudget;
use pool::WorkerPool;
use state::{BackgroundWrites, Renderer, ResultKeys, ResultStore, SourceStore, Stats};

/// Why the sidecar could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A storage could not be set up.
    #[error("storage {name}: {reason}")]
    Storage {
        /// The storage's name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The configuration cannot serve (no render key).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The operator's port (`metrics_listen`) could not be bound.
    #[error("metrics_listen {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Connects every configured storage (lazily: no request is made).
pub async fn storages(config: &Config) -> Result<HashMap<String, Storage>, ServeError> {
    let timeout = Duration::from_millis(config.limits.storage_timeout_ms);
    let mut storages = HashMap::new();
    for (name, cfg) in &config.storages {
        let failed = |reason: String| ServeError::Storage {
            name: name.clone(),
            reason,
        };
        let storage = match cfg {
            StorageConfig::Local { root, .. } => Storage::Local(
                LocalStorage::new(root).map_err(|e| failed(format!("{}: {e}", root.display())))?,
            ),
            StorageConfig::S3(s3) if s3.is_wildcard() => {
                Storage::Routed(Arc::new(RoutedS3::new(s3, timeout).await.map_err(failed)?))
            }
            StorageConfig::S3(s3) => {
                Storage::S3(S3Storage::new(s3, timeout).await.map_err(failed)?)
            }
        };
        storages.insert(name.clone(), storage);
    }
    Ok(storages)
}

/// Result-storage and source-copy writes in flight after their responses, per worker.
const BACKGROUND_WRITES_PER_WORKER: usize = 8;

/// Builds the shared render state from a validated config.
pub async fn renderer(config: &Config) -> Result<Renderer, ServeError> {
    let storages = storages(config).await?;
    let shares = budget::Shares::of(
        config.limits.memory_budget_bytes,
        config.watermark.cache_bytes,
        config.limits.max_source_bytes,
    );
    // Effective where `block_cache::BlockCache` is the allocator (the binaries).
    block_cache::set_capacity(usize::try_from(shares.blocks).unwrap_or(usize::MAX));
    let results = match &config.result_storage {
        Some(rs) => match (storages.get(&rs.storage), config.storages.get(&rs.storage)) {
            (Some(Storage::S3(s3)), Some(StorageConfig::S3(cfg))) => Some(ResultStore {
                storage: s3.clone(),
                base_dir: rs.base_dir.clone(),
                path_prefix: rs.path_prefix.clone(),
                keys: match rs.path_style {
                    PathStyle::Default => ResultKeys::Path(cfg.safe_chars().map_err(|reason| {
                        ServeError::Storage {
                            name: rs.storage.clone(),
                            reason,
                        }
                    })?),
                    PathStyle::Digest => ResultKeys::Digest,
                },
                verify_source: rs.verify_source,
                expiration: rs.expiration_secs.map(Duration::from_secs),
                report_errors: rs.report_errors,
            }),
            _ => {
                return Err(ServeError::Storage {
                    name: rs.storage.clone(),
                    reason: "result storage must be an S3 storage".into(),
                });
            }
        },
        None => None,
    };
    let sources = match &config.source_storage {
        Some(ss) => match storages.get(&ss.storage) {
            Some(Storage::S3(s3)) => Some(SourceStore {
                storage: s3.clone(),
                base_dir: ss.base_dir.clone(),
                path_prefix: ss.path_prefix.clone(),
                expiration: ss.expiration_secs.map(Duration::from_secs),
            }),
            _ => {
                return Err(ServeError::Storage {
                    name: ss.storage.clone(),
                    reason: "source storage must be an S3 storage".into(),
                });
            }
        },
        None => None,
    };
    let fallbacks = config
        .storages
        .iter()
        .map(|(name, cfg)| (name.clone(), cfg.fallbacks().to_vec()))
        .collect();
    // Workers follow the pod's CPU quota; what their requests' sources hold, the budget's reads
    // share.
    let workers = config.limits.workers();
    Ok(Renderer {
        storages,
        fallbacks,
        results,
        sources,
        stats: Arc::new(Stats::default()),
        limits: config.limits.clone(),
        encoding: config.encoding.to_pipeline(),
        cache_control: MetadataValue::try_from(config.cache_control.as_str()).map_err(|_| {
            ServeError::Storage {
                name: "cache_control".into(),
                reason: "must be visible ASCII".into(),
            }
        })?,
        workers: WorkerPool::new(workers, config.limits.max_queue),
        budget: MemoryBudget::new(shares.renders),
        reads: MemoryBudget::new(shares.sources),
        in_flight: Default::default(),
        watermarks: watermark_cache::WatermarkCache::new(config.watermark.cache_bytes),
        background: BackgroundWrites::new(BACKGROUND_WRITES_PER_WORKER * workers),
        default_watermark: config.watermark.default_image(),
    })
}
