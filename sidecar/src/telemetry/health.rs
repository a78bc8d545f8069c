//! Readiness: whether the sidecar should be sent requests now. Not ready while it is starting,
//! while it is draining (after SIGTERM), and while its render queue is full (the next request
//! would be refused with 503). Liveness is the process answering at all (`/livez`).
//!
//! [`Readiness`] is what `/readyz`, the custom `Health` RPC and the standard
//! `grpc.health.v1.Health` service ([`report`], through `tonic-health`) all answer from.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often [`report`] looks at the queue between changes of phase.
const POLL: Duration = Duration::from_millis(100);

/// Where the sidecar is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Storages being set up; not serving yet.
    Starting = 0,
    /// Serving.
    Serving = 1,
    /// Told to stop: finishing the requests it has, taking no new ones.
    Draining = 2,
}

/// The answer to "send me requests?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Yes.
    Ready,
    /// Not yet.
    Starting,
    /// No longer.
    Draining,
    /// Not now: the render queue is full.
    Saturated,
}

impl State {
    /// Whether requests are welcome.
    pub fn is_ready(self) -> bool {
        self == State::Ready
    }

    /// A word for `/readyz` and logs.
    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Starting => "starting",
            State::Draining => "draining",
            State::Saturated => "saturated",
        }
    }
}

type Saturated = Box<dyn Fn() -> bool + Send + Sync>;

/// The phase, and how to tell whether the queue is full.
pub struct Readiness {
    phase: AtomicU8,
    saturated: OnceLock<Saturated>,
    changed: tokio::sync::Notify,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("state", &self.state())
            .finish()
    }
}

impl Readiness {
    /// Readiness in `phase`, never saturated until [`Readiness::watch_queue`].
    pub fn new(phase: Phase) -> Self {
        Readiness {
            phase: AtomicU8::new(phase as u8),
            saturated: OnceLock::new(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Counts the sidecar saturated whenever `full` says so (set once; later calls are
    /// ignored).
    pub fn watch_queue(&self, full: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.saturated.set(Box::new(full));
    }

    /// The state now.
    pub fn state(&self) -> State {
        match self.phase.load(Ordering::SeqCst) {
            0 => State::Starting,
            2 => State::Draining,
            _ if self.saturated.get().is_some_and(|full| full()) => State::Saturated,
            _ => State::Ready,
        }
    }
}

/// The `grpc.health.v1` service names the sidecar answers for: the server as a whole (`""`)
/// and its image service.
pub const SERVICES: [&str; 2] = ["", "pixmesh.v1.ImageService"];

/// Keeps `reporter` (the `grpc.health.v1` service's state) equal to `readiness`: at once on a
/// change of phase, within [`POLL`] on a change of the queue. Runs until dropped.
pub async fn report(readiness: Arc<Readiness>, reporter: HealthReporter) {
    let mut last = None;
    loop {
        let changed = readiness.changed.notified();
        let state = readiness.state();
        if last != Some(state) {
            let status = if state.is_ready() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in SERVICES {
                reporter.set_service_status(service, status).await;
            }
            if last.is_some() {
                tracing::info!(state = state.name(), "readiness changed");
            }
            last = Some(state);
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Why `pixmesh-sidecar health` says no.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the timeout.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// Where.
        addr: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The address is not a URI tonic connects to.
    #[error("{addr}: {reason}")]
    Address {
        /// What was given.
        addr: String,
        /// Why it is not an address.
        reason: String,
    },
    /// Connecting or the call failed.
    #[error("{addr}: {reason}")]
    Unreachable {
        /// Where.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// It answered, not serving.
    #[error("not serving ({0})")]
    NotServing(String),
}

/// The gRPC address (`http://HOST:PORT`) to probe a sidecar listening on `listen` at: its
/// loopback when it listens on every address.
pub fn probe_address(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
}

/// Asks `grpc.health.v1.Health/Check` at `addr` (the server as a whole), within `timeout`.
pub async fn probe(addr: &str, timeout: Duration) -> Result<(), ProbeError> {
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .map_err(|e| ProbeError::Address {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(timeout)
        .timeout(timeout);
    let check = async {
        let channel = endpoint.connect().await?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| Box::new(status) as Box<dyn std::error::Error + Send + Sync>)
    };
    let answer = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| ProbeError::Timeout {
            addr: addr.to_owned(),
            timeout,
        })?
        .map_err(|e| ProbeError::Unreachable {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
    match answer.into_inner().status() {
        Status::Serving => Ok(()),
        other => Err(ProbeError::NotServing(other.as_str_name().to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn ready_only_while_serving_with_room_in_the_queue() {
        let r = Readiness::new(Phase::Starting);
        assert_eq!(r.state(), State::Starting);
        let full = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&full);
        r.watch_queue(move || seen.load(Ordering::SeqCst));
        r.set(Phase::Serving);
        assert_eq!(r.state(), State::Ready);
        full.store(true, Ordering::SeqCst);
        assert_eq!(r.state(), State::Saturated);
        full.store(false, Ordering::SeqCst);
        assert!(r.state().is_ready());
        r.set(Phase::Draining);
        assert_eq!(r.state(), State::Draining);
    }
}
