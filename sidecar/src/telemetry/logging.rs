//! Logs: text or JSON lines (`--log-format`, `PIXMESH_LOG_FORMAT`), levels from `RUST_LOG`
//! (default `info`), and one line per render request (target `pixmesh::request`) with its
//! request id, RPC, storage, key, status, duration, what result storage and the source read
//! did for it, and the bytes answered.
//!
//! What a request's steps did is noted as they happen ([`note_result`], [`note_source`]) into
//! the request's own task-local [`Notes`] ([`scope`]); a request that joined identical work
//! under way notes only what it did itself.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line (fields at the top level).
    Json,
}

/// Installs the global subscriber: `format`, levels from `RUST_LOG` (default `info`), to
/// standard error (standard output is the commands' own).
pub fn init(format: LogFormat) {
    init_to(format, std::io::stderr);
}

/// [`init`], writing each line to a writer `make` returns (tests capture the logs so).
pub fn init_to<W>(format: LogFormat, make: impl Fn() -> W + Send + Sync + 'static)
where
    W: std::io::Write,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// The longest request id passed on to storages (Envoy's are 36 characters).
const MAX_REQUEST_ID: usize = 128;

/// What a request's steps did, for its log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// `hit` or `miss` when result storage was looked in.
    pub result: Option<&'static str>,
    /// `read` (from its storage) or `copy` (from source storage) when this request read the
    /// source.
    pub source: Option<&'static str>,
}

tokio::task_local! {
    static NOTES: RefCell<Notes>;
    static REQUEST_ID: Option<String>;
}

/// Runs `request` (with `request_id`, Envoy's, when it has one), returning its outcome and what
/// its steps noted.
pub async fn scope<T>(request_id: Option<&str>, request: impl Future<Output = T>) -> (T, Notes) {
    let id = request_id
        .filter(|id| id.len() <= MAX_REQUEST_ID)
        .map(str::to_owned);
    REQUEST_ID
        .scope(
            id,
            NOTES.scope(RefCell::new(Notes::default()), async move {
                let out = request.await;
                let notes = NOTES.with(|n| n.borrow().clone());
                (out, notes)
            }),
        )
        .await
}

/// The request id of the request this task serves, if any: storages send it on
/// (`x-request-id`), so a storage's logs can be matched with pixmesh's.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok().flatten()
}

fn note(f: impl FnOnce(&mut Notes)) {
    // Outside a request's scope (tests calling the flow directly) there is nothing to note.
    let _ = NOTES.try_with(|n| f(&mut n.borrow_mut()));
}

/// Result storage had the rendition (`hit`) or not.
pub fn note_result(hit: bool) {
    note(|n| n.result = Some(if hit { "hit" } else { "miss" }));
}

/// This request read the source: from its storage (`read`) or its copy (`copy`).
pub fn note_source(how: &'static str) {
    note(|n| n.source = Some(how));
}

/// One render request, for its log line.
#[derive(Debug)]
pub struct RequestLine<'a> {
    /// Envoy's `x-request-id`, when the request has one.
    pub request_id: Option<&'a str>,
    /// The RPC.
    pub rpc: &'static str,
    /// The grammar of the route the request came by, when the filter said.
    pub grammar: Option<&'static str>,
    /// The storage the request named.
    pub storage: &'a str,
    /// The source key.
    pub key: &'a str,
    /// The HTTP status answered.
    pub status: u16,
    /// Time to answer.
    pub elapsed: Duration,
    /// Image bytes answered.
    pub bytes: u64,
    /// What its steps did.
    pub notes: &'a Notes,
}

impl RequestLine<'_> {
    /// Logs the line at `info` (target `pixmesh::request`).
    pub fn log(&self) {
        tracing::info!(
            target: "pixmesh::request",
            request_id = self.request_id.unwrap_or("-"),
            rpc = self.rpc,
            grammar = self.grammar.unwrap_or("-"),
            storage = self.storage,
            key = self.key,
            status = self.status,
            duration_ms = self.elapsed.as_secs_f64() * 1000.0,
            result_storage = self.notes.result.unwrap_or("-"),
            source = self.notes.source.unwrap_or("-"),
            bytes = self.bytes,
            "render request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_belong_to_the_request_that_made_them() {
        let (out, notes) = scope(Some("id-1"), async {
            assert_eq!(request_id().as_deref(), Some("id-1"));
            note_result(false);
            note_source("read");
            7
        })
        .await;
        assert_eq!(out, 7);
        assert_eq!(
            notes,
            Notes {
                result: Some("miss"),
                source: Some("read")
            }
        );
        let (_, other) = scope(None, async { assert_eq!(request_id(), None) }).await;
        assert_eq!(other, Notes::default());
        assert_eq!(request_id(), None);
        note_result(true); // outside any request: ignored
    }
}
