//! The operator's HTTP port (`metrics_listen`): `GET /metrics` (Prometheus text), `/livez`
//! (200 while the process answers) and `/readyz` (200 when ready, else 503 with the reason).
//! HTTP/1.1 over hyper, tonic's own HTTP library; anything else is 404, other methods 405.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::health::Readiness;
use super::metrics;

/// What the port serves.
pub struct Operator {
    /// Encoded at each scrape of `/metrics` (503 until set: starting).
    pub registry: OnceLock<Registry>,
    /// Answers `/readyz`.
    pub readiness: Arc<Readiness>,
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

impl Operator {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        const PLAIN: &str = "text/plain; charset=utf-8";
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
        }
        match req.uri().path() {
            "/metrics" => match self.registry.get() {
                Some(registry) => text(
                    StatusCode::OK,
                    metrics::CONTENT_TYPE,
                    metrics::encode(registry),
                ),
                None => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "starting\n".into()),
            },
            "/livez" => text(StatusCode::OK, PLAIN, "alive\n".into()),
            "/readyz" => {
                let state = self.readiness.state();
                let status = if state.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(status, PLAIN, format!("{}\n", state.name()))
            }
            _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n".into()),
        }
    }
}

/// Serves `operator` on `listener` until dropped (each connection on a task of its own).
pub async fn serve(listener: TcpListener, operator: Arc<Operator>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "metrics port: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let operator = Arc::clone(&operator);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = operator.answer(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics port: connection ended");
            }
        });
    }
}
