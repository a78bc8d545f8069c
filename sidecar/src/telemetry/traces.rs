//! Traces: OpenTelemetry spans exported over OTLP/gRPC, off unless configured
//! (`[tracing]`). Each render RPC is a server span that continues the W3C `traceparent`
//! (and `tracestate`) of its request when it has one (Envoy passes request headers on as gRPC
//! metadata; the filter's call mode forwards them), else starts a trace; the steps of the
//! render flow are its children: `queue_wait`, `result_lookup`, `source_read`, `render` (the
//! wait for the memory budget and a worker, and the pipeline), `decode`, `resize`, `effects`,
//! `encode` and `result_write`. The S3 requests made for it carry its context on
//! (`traceparent`, [`outgoing`]).
//!
//! Steps are recorded when they end, from their durations ([`Traces::step`]): a step's span
//! starts its duration before it is recorded. The pipeline's phases run on a worker thread and
//! are summed per phase there (frames of an animation add up), so their spans are laid end to
//! end, the last ending when the render came back ([`Traces::phases`]). A step belongs to the
//! request whose task ran it ([`RequestSpan::scope`]), or that spawned it ([`carry`]: a
//! result-storage write after the response); a request that joined identical work under way
//! has no span for what it did not do itself.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

/// The instrumentation scope of the sidecar's spans.
const SCOPE: &str = "pixmesh-sidecar";

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; `None`: the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), else
    /// `http://localhost:4317`.
    pub endpoint: Option<String>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// The share of new traces kept (0 to 1); a request that continues a trace follows its
    /// parent's sampling decision.
    pub sample_ratio: f64,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("tracing: {0}")]
pub struct TracingError(String);

struct Exporting {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// The spans of one sidecar's requests: nothing until [`Traces::start`].
#[derive(Clone, Default)]
pub struct Traces(Arc<OnceLock<Exporting>>);

impl fmt::Debug for Traces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traces")
            .field("exporting", &self.0.get().is_some())
            .finish()
    }
}

tokio::task_local! {
    /// The context of the request span the current task works for.
    static CURRENT: Context;
}

/// Reads W3C trace context from gRPC metadata.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

impl Traces {
    /// Starts exporting spans as `settings` say (a batch at a time, in the background of the
    /// current Tokio runtime). Once: a second call is an error.
    pub fn start(&self, settings: &Settings) -> Result<(), TracingError> {
        use opentelemetry_otlp::WithExportConfig;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = &settings.endpoint {
            exporter = exporter.with_endpoint(endpoint);
        }
        let exporter = exporter.build().map_err(|e| TracingError(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer(SCOPE);
        self.0
            .set(Exporting { provider, tracer })
            .map_err(|_| TracingError("already started".into()))
    }

    /// Exports the spans still buffered and stops (waiting off the runtime's threads).
    pub async fn shutdown(&self) {
        let Some(exporting) = self.0.get() else {
            return;
        };
        let provider = exporting.provider.clone();
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "tracing: the last spans were not exported"),
            Err(e) => tracing::warn!(error = %e, "tracing: shutdown failed"),
        }
    }

    /// The server span of a request arriving by `rpc` with `metadata`: a child of the
    /// `traceparent` there, else the root of a new trace. Disabled tracing: a span that
    /// records nothing.
    pub fn request(
        &self,
        rpc: &'static str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> RequestSpan {
        let Some(Exporting { tracer, .. }) = self.0.get() else {
            return RequestSpan(None);
        };
        let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
        let span = tracer
            .span_builder(rpc)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", "pixmesh.v1.ImageService"),
                KeyValue::new("rpc.method", rpc),
            ])
            .start_with_context(tracer, &parent);
        RequestSpan(Some(parent.with_span(span)))
    }

    /// A step of the current request's render flow, `name`, that just ended after `spent`.
    pub fn step(&self, name: &'static str, spent: Duration) {
        let end = SystemTime::now();
        self.child(name, end.checked_sub(spent).unwrap_or(end), end);
    }

    /// The pipeline's phases of the current request's render, which just came back: laid end
    /// to end in their order, the last ending now.
    pub fn phases(&self, phases: &[(&'static str, Duration)]) {
        let now = SystemTime::now();
        let total: Duration = phases.iter().map(|(_, spent)| *spent).sum();
        let mut start = now.checked_sub(total).unwrap_or(now);
        for (name, spent) in phases {
            let end = start + *spent;
            self.child(name, start, end);
            start = end;
        }
    }

    fn child(&self, name: &'static str, start: SystemTime, end: SystemTime) {
        let Some(Exporting { tracer, .. }) = self.0.get() else {
            return;
        };
        let _ = CURRENT.try_with(|cx| {
            if cx.span().span_context().is_sampled() {
                let span = tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Internal)
                    .with_start_time(start)
                    .start_with_context(tracer, cx);
                Context::current_with_span(span)
                    .span()
                    .end_with_timestamp(end);
            }
        });
    }
}

/// `work`, spawned by the current request to run after it (a result-storage write), with the
/// steps it records still the children of the request's span.
pub fn carry<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let cx = CURRENT.try_with(Clone::clone).ok();
    async move {
        match cx {
            Some(cx) => CURRENT.scope(cx, work).await,
            None => work.await,
        }
    }
}

/// The W3C trace context headers (`traceparent`, and `tracestate` when the client sent one)
/// naming the current request's span as the parent, for the requests it makes (S3); none
/// outside a traced request.
pub fn outgoing() -> Vec<(String, String)> {
    CURRENT
        .try_with(|cx| {
            let mut headers = std::collections::HashMap::new();
            TraceContextPropagator::new().inject_context(cx, &mut headers);
            headers.into_iter().collect()
        })
        .unwrap_or_default()
}

/// A request's server span (nothing when tracing is off).
#[derive(Debug)]
pub struct RequestSpan(Option<Context>);

impl RequestSpan {
    /// Runs `request`, the work of this span's request: the steps it records are this span's
    /// children.
    pub async fn scope<T>(&self, request: impl Future<Output = T>) -> T {
        match &self.0 {
            Some(cx) => CURRENT.scope(cx.clone(), request).await,
            None => request.await,
        }
    }

    /// Ends the span with `attributes`; `failed` (a 5xx answer) marks it an error.
    pub fn end(self, attributes: Vec<KeyValue>, failed: bool) {
        let Some(cx) = self.0 else {
            return;
        };
        let span = cx.span();
        span.set_attributes(attributes);
        if failed {
            span.set_status(Status::error("server error"));
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn off_records_nothing_and_runs_the_request() {
        let traces = Traces::default();
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        let span = traces.request("Render", &md);
        assert!(span.0.is_none());
        assert_eq!(span.scope(async { 7 }).await, 7);
        traces.step("queue_wait", Duration::from_millis(1));
        span.end(Vec::new(), false);
        traces.shutdown().await;
    }

    #[test]
    fn the_traceparent_is_read_from_metadata() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        let cx = TraceContextPropagator::new().extract(&Metadata(&md));
        let parent = cx.span().span_context().clone();
        assert_eq!(
            parent.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(parent.span_id().to_string(), "b7ad6b7169203331");
        assert!(parent.is_remote() && parent.is_sampled());
        let none = TraceContextPropagator::new().extract(&Metadata(&Default::default()));
        assert!(!none.span().span_context().is_valid());
    }
}
