//! Test harness for pixmesh's end-to-end tests and demo.
//!
//! It locates the external tools installed by `scripts/setup` ([`tools`]), runs real processes
//! with bounded start-up waits and orphan-free shutdown ([`Garage`] for S3, [`Moto`] for the S3
//! features Garage lacks, [`Envoy`] for the proxy), and offers a tiny blocking HTTP client
//! ([`http`]) for talking to them.
//!
//! A missing tool makes the harness panic with a message that says how to install it: tests that
//! need a component fail, they never skip.

pub mod chart;
pub mod control_plane;
pub mod demo;
pub mod envoy;
pub mod fake_aws;
pub mod foreign;
pub mod garage;
pub mod http;
pub mod load;
pub mod moto;
pub mod otlp;
pub mod ports;
pub mod s3;
pub mod stack;
pub mod tools;
mod util;
pub mod vouch;

pub use envoy::Envoy;
pub use garage::Garage;
pub use moto::Moto;
pub use stack::{Sidecar, Stack};

/// Waits until `check` holds, polling every 50 ms; panics with `what` after 10 s. For effects
/// that happen in the background (result-storage writes after a response).
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
