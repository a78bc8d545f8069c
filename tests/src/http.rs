//! A tiny blocking HTTP/1.1 client for tests (plain `http://` only).
//!
//! Every status, including 4xx and 5xx, comes back as a [`Response`]; redirects are not followed
//! and bodies are not decompressed, so tests see exactly what the server sent. Calls are blocking:
//! from async code, use them inside `tokio::task::spawn_blocking` (or accept blocking the runtime).

use std::sync::OnceLock;
use std::time::Duration;

use ureq::Agent;
use ureq::http::Request;

/// Timeout for a whole request, from connect to the last body byte.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Error of a request that got no complete response (connect failure, reset, timeout, truncated
/// body).
pub type Error = ureq::Error;

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in the order received; repeated headers repeat.
    pub headers: Vec<(String, String)>,
    /// The full body (empty for HEAD).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (invalid UTF-8 replaced), for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        // A fresh connection per request: test servers come and go, and a pooled connection to
        // a killed process would turn into a confusing error.
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

fn shared_agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| agent(TIMEOUT))
}

/// Sends a request without a body and reads the whole response.
fn send(
    agent: &Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Response, Error> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(())?;
    let mut response = agent.run(request)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), value)
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `GET url` with extra request headers; `Err` when no complete response arrived.
pub fn try_get(url: &str, headers: &[(&str, &str)]) -> Result<Response, Error> {
    send(shared_agent(), "GET", url, headers)
}

/// `HEAD url` with extra request headers; `Err` when no complete response arrived.
pub fn try_head(url: &str, headers: &[(&str, &str)]) -> Result<Response, Error> {
    send(shared_agent(), "HEAD", url, headers)
}

/// `GET url` with extra request headers. Panics when no complete response arrived.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    try_get(url, headers).unwrap_or_else(|e| panic!("GET {url} failed: {e}"))
}

/// `HEAD url` with extra request headers. Panics when no complete response arrived.
pub fn head(url: &str, headers: &[(&str, &str)]) -> Response {
    try_head(url, headers).unwrap_or_else(|e| panic!("HEAD {url} failed: {e}"))
}

/// `GET url` with a short timeout, for readiness polls.
pub(crate) fn probe(url: &str, timeout: Duration) -> Result<Response, Error> {
    send(&agent(timeout), "GET", url, &[])
}
