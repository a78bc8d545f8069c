//! The filter's counters, in Envoy's stats (proxy-wasm `define_metric`): Envoy keeps wasm
//! metrics in its `wasmcustom` namespace, which `/stats/prometheus` prints without Envoy's
//! `envoy_` prefix, so `pixmesh_filter_rendered` is scraped under that very name.
//!
//! - `pixmesh_filter_rendered`: image requests handed to the sidecar;
//! - `pixmesh_filter_passed`: requests that are no image URL, passed on untouched;
//! - `pixmesh_filter_refused_<status>`: requests answered here with `status` (400, 403, 404,
//!   405, 414, 501, …);
//! - `pixmesh_filter_signature_refused_<grammar>`: 403s (missing, unconfigured or wrong
//!   signatures) by the route's grammar;
//! - `pixmesh_filter_call_errors`: call mode's calls that failed (not sent, a gRPC error, an
//!   unreadable answer).
//!
//! Each name is defined once per VM (the first time it is needed; the handful of names is
//! bounded by the statuses and grammars there are) and its id kept. A host that refuses to
//! define or increment a metric costs the metric, never the request.
//!
//! What the filter decided is also left in the request's filter state for the access log:
//! `wasm.pixmesh_decision` (`rendered`, `refused`) and `wasm.pixmesh_path` (the client's
//! method and path, before the rewrite).

use std::cell::RefCell;
use std::collections::HashMap;

use pixmesh_core::config::Grammar;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

thread_local! {
    /// Metric ids by name: a VM runs on one thread.
    static IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

/// Adds 1 to the counter `name`, defining it first if needed.
fn count(name: &str) {
    let id = IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        if let Some(id) = ids.get(name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(MetricType::Counter, name).ok()?;
        ids.insert(name.to_owned(), id);
        Some(id)
    });
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

/// Defines the counters every deployment has, so they read 0 before the first request.
pub fn define() {
    for name in [
        "pixmesh_filter_rendered",
        "pixmesh_filter_passed",
        "pixmesh_filter_call_errors",
    ] {
        IDS.with(|ids| {
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, name) {
                ids.borrow_mut().insert(name.to_owned(), id);
            }
        });
    }
}

/// An image request handed to the sidecar.
pub fn rendered() {
    count("pixmesh_filter_rendered");
    decision("rendered");
}

/// A request that is not an image URL.
pub fn passed() {
    count("pixmesh_filter_passed");
}

/// A request answered here with `status`, on a route of `grammar` (when the path has a
/// route).
pub fn refused(status: u16, grammar: Option<Grammar>) {
    count(&format!("pixmesh_filter_refused_{status}"));
    if let (403, Some(g)) = (status, grammar) {
        count(&format!("pixmesh_filter_signature_refused_{}", g.name()));
    }
    decision("refused");
}

/// A call to the sidecar that failed (call mode).
pub fn call_error() {
    count("pixmesh_filter_call_errors");
}

/// Leaves what the filter decided in the request's filter state.
fn decision(what: &str) {
    let _ = hostcalls::set_property(vec!["pixmesh_decision"], Some(what.as_bytes()));
}

/// Leaves the client's `method` and `path` in the request's filter state (the access log
/// prints them; the rewrite changes `:path`).
pub fn original(method: &str, path: &str) {
    let line = format!("{method} {path}");
    let _ = hostcalls::set_property(vec!["pixmesh_path"], Some(line.as_bytes()));
}
