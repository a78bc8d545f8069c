//! Serving: the image service and the standard `grpc.health.v1` service on the gRPC listener,
//! the operator's port (`/metrics`, `/livez`, `/readyz`) when configured, and readiness from
//! start-up to drain.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use pixmesh_proto::v1::image_service_server::ImageServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::config::{Config, ConfigError};
use crate::telemetry::health::{self, Phase, Readiness};
use crate::telemetry::http::Operator;
use crate::telemetry::traces::Settings;
use crate::telemetry::{Task, http};

use super::grpc::ImageService;
use super::{ServeError, observe, renderer};

/// Serves the image service on `listener` until `shutdown` completes, and the operator's port
/// on the configuration's `metrics_listen` when it has one; spans go to the configuration's
/// OTLP collector when it has `[tracing]`.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::MetricsListen { addr, source })?,
        ),
        None => None,
    };
    serve_with(config, listener, metrics, shutdown).await
}

/// [`serve`], with the operator's port on `metrics` (already bound) instead of the
/// configuration's.
///
/// Readiness: starting until the storages are set up, then ready unless the render queue is
/// full, and draining once `shutdown` completes (the in-flight requests then finish; `/readyz`
/// answers 503 meanwhile).
pub async fn serve_with(
    config: &Config,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let readiness = Arc::new(Readiness::new(Phase::Starting));
    let operator = Arc::new(Operator {
        registry: OnceLock::new(),
        readiness: Arc::clone(&readiness),
    });
    let _operator = metrics.map(|l| Task::spawn(http::serve(l, Arc::clone(&operator))));
    let voucher = config.voucher()?;
    let renderer = Arc::new(renderer(config).await?);
    let traces = renderer.stats.metrics.traces.clone();
    if let Some(t) = &config.tracing {
        let settings = Settings {
            endpoint: t.otlp_endpoint.clone(),
            service_name: t.service_name.clone(),
            sample_ratio: t.sample_ratio,
        };
        (traces.start(&settings)).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }
    let sampler = observe::sampler(Arc::clone(&renderer), Arc::clone(&readiness));
    let _ = operator
        .registry
        .set(renderer.stats.metrics.registry(sampler));
    let pool = Arc::clone(&renderer);
    readiness.watch_queue(move || pool.workers.saturated());
    let (reporter, health_service) = tonic_health::server::health_reporter();
    for service in health::SERVICES {
        (reporter.set_service_status(service, tonic_health::ServingStatus::NotServing)).await;
    }
    let _reporting = Task::spawn(health::report(Arc::clone(&readiness), reporter));
    // tonic leaves Nagle on by default: 40 ms stalls per response without this.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let draining = Arc::clone(&readiness);
    let shutdown = async move {
        shutdown.await;
        draining.set(Phase::Draining);
        tracing::info!("draining: finishing the requests in flight");
    };
    readiness.set(Phase::Serving);
    let served = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(ImageServiceServer::new(
            ImageService::new(renderer, voucher).with_readiness(readiness),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    // The spans of the last requests leave before the sidecar does.
    traces.shutdown().await;
    Ok(served?)
}
