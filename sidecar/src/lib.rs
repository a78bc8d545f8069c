//! pixmesh's sidecar: the gRPC image service behind Envoy's gRPC-JSON transcoder.
//!
//! - [`serving`]: the gRPC service, the render flow, result storage, and what bounds the work
//!   (worker pool and admission, memory budget, block cache, single-flight, statuses).
//! - [`storage`]: local-directory and S3 storages, bucket routing, `pixmesh-sidecar check`.
//! - [`config`]: the TOML configuration, its validation, imagor's environment mapped onto it.
//! - [`pipeline`]: the render as a list of named steps, each step a file.
//! - [`envoy_config`]: pixmesh's Envoy configuration from the filter's (`pixmesh-sidecar envoy`):
//!   a whole bootstrap, or the fragment for an existing Envoy.
//! - [`telemetry`]: Prometheus metrics, readiness (`grpc.health.v1`, `/readyz`), log lines.

pub mod config;
pub mod envoy_config;
pub mod pipeline;
pub mod serving;
pub mod storage;
pub mod telemetry;

#[cfg(test)]
mod testing;
