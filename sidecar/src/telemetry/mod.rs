//! What an operator sees of a running sidecar: Prometheus metrics ([`metrics`]), readiness
//! and liveness with the standard `grpc.health.v1` service ([`health`]), the HTTP server of
//! `/metrics`, `/livez` and `/readyz` ([`http`]), and the logs: their format and the one line
//! each render request leaves ([`logging`]), and OpenTelemetry spans of the render requests
//! and their steps, exported over OTLP when configured ([`traces`]).
//!
//! This folder imports no other folder of the sidecar: `serving` records into it and gives it
//! what it samples at scrape time ([`metrics::Snapshot`]).

pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod traces;

/// A background task of the server's, stopped when dropped.
#[derive(Debug)]
pub struct Task(tokio::task::JoinHandle<()>);

impl Task {
    /// Runs `work` until it ends or this is dropped.
    pub fn spawn(work: impl std::future::Future<Output = ()> + Send + 'static) -> Task {
        Task(tokio::spawn(work))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}
