//! The sidecar's Prometheus metrics, served as Prometheus text (version 0.0.4) on `/metrics`.
//!
//! [`Metrics`] holds what the render flow records as it goes (requests, durations, source
//! reads, result-storage lookups and writes, bytes); what the sidecar already counts or can
//! read at any time (its `Stats`, the queue, the workers, the memory budget) is sampled at
//! scrape time through a [`Snapshot`], never counted twice. Names follow Prometheus'
//! conventions: a `pixmesh_` prefix, base units (`_seconds`, `_bytes`), `_total` on counters.
//!
//! Label values are bounded: RPC names, configured storage names (a request naming another
//! storage is counted as `storage="unknown"`), HTTP statuses and fixed outcome names.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::traces::Traces;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the duration histograms' buckets, in seconds: 1 ms to 30 s.
const SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The RPC a request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// The streaming `Render` (through Envoy's transcoder).
    Render,
    /// `RenderCall` (the filter's call mode).
    RenderCall,
    /// `RenderUnary`.
    RenderUnary,
}

impl Rpc {
    /// Its name, as in the proto.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Render => "Render",
            Rpc::RenderCall => "RenderCall",
            Rpc::RenderUnary => "RenderUnary",
        }
    }
}

/// A step of the render flow whose duration is recorded in `pixmesh_step_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Waiting for the pool's admission (the render queue).
    QueueWait,
    /// Looking the rendition up in result storage (with `verify_source`, the source's `HEAD`).
    ResultLookup,
    /// Reading the source from its storage (fallbacks included).
    SourceRead,
    /// Decode, resize, effects and encode on a worker, with the wait for the memory budget
    /// and a free worker.
    Render,
    /// Writing the rendition to result storage.
    ResultWrite,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::QueueWait => "queue_wait",
            Step::ResultLookup => "result_lookup",
            Step::SourceRead => "source_read",
            Step::Render => "render",
            Step::ResultWrite => "result_write",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    rpc: &'static str,
    storage: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    storage: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StorageLabels {
    storage: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    Histogram::new(SECONDS)
}

/// What the render flow records. Cheap to clone (every metric is shared); one per
/// [`Renderer`](crate::serving::state::Renderer), so sidecars in one process count apart.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RpcLabels>,
    response_bytes: Family<RpcLabels, Counter>,
    steps: Histograms<StepLabels>,
    phases: Histograms<PhaseLabels>,
    source_reads: Family<SourceLabels, Counter>,
    source_bytes: Family<StorageLabels, Counter>,
    result_lookups: Family<OutcomeLabels, Counter>,
    result_writes: Counter,
    result_bytes: Counter,
    renders_in_progress: Gauge,
    /// The spans of the same steps (off unless started).
    pub traces: Traces,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(seconds),
            response_bytes: Family::default(),
            steps: Family::new_with_constructor(seconds),
            phases: Family::new_with_constructor(seconds),
            source_reads: Family::default(),
            source_bytes: Family::default(),
            result_lookups: Family::default(),
            result_writes: Counter::default(),
            result_bytes: Counter::default(),
            renders_in_progress: Gauge::default(),
            traces: Traces::default(),
        }
    }
}

/// Decrements a gauge when dropped (a render cancelled mid-way counts out too).
struct InProgress<'a>(&'a Gauge);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// A request answered with HTTP `status` after `elapsed`, sending `bytes` of image.
    pub fn request(&self, rpc: Rpc, storage: &str, status: u16, elapsed: Duration, bytes: u64) {
        self.requests
            .get_or_create(&RequestLabels {
                rpc: rpc.name(),
                storage: storage.to_owned(),
                status,
            })
            .inc();
        let rpc = RpcLabels { rpc: rpc.name() };
        self.request_seconds
            .get_or_create(&rpc)
            .observe(elapsed.as_secs_f64());
        self.response_bytes.get_or_create(&rpc).inc_by(bytes);
    }

    /// Records how long `step` took.
    pub fn step(&self, step: Step, elapsed: Duration) {
        self.steps
            .get_or_create(&StepLabels { step: step.name() })
            .observe(elapsed.as_secs_f64());
        self.traces.step(step.name(), elapsed);
    }

    /// A render's time per phase of the pipeline (`decode`, `resize`, `effects`, `encode`).
    pub fn render_phases(&self, phases: &[(&'static str, Duration)]) {
        for (phase, spent) in phases {
            self.phases
                .get_or_create(&PhaseLabels { phase })
                .observe(spent.as_secs_f64());
        }
        self.traces.phases(phases);
    }

    /// Runs `work`, recording its duration as `step`'s.
    pub async fn timed<T>(&self, step: Step, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = work.await;
        self.step(step, started.elapsed());
        out
    }

    /// Runs a render (`work`): counted in progress while it runs, its duration recorded.
    pub async fn rendering<T>(&self, work: impl Future<Output = T>) -> T {
        self.renders_in_progress.inc();
        let _counted = InProgress(&self.renders_in_progress);
        self.timed(Step::Render, work).await
    }

    /// A source read from `storage` ended with `outcome` (`ok` or an error's name), after
    /// `elapsed`, with `bytes` read.
    pub fn source_read(&self, storage: &str, outcome: &'static str, elapsed: Duration, bytes: u64) {
        self.source_reads
            .get_or_create(&SourceLabels {
                storage: storage.to_owned(),
                outcome,
            })
            .inc();
        self.source_bytes
            .get_or_create(&StorageLabels {
                storage: storage.to_owned(),
            })
            .inc_by(bytes);
        self.step(Step::SourceRead, elapsed);
    }

    /// A request found its rendition in result storage (`hit`) or not.
    pub fn result_lookup(&self, hit: bool) {
        let outcome = if hit { "hit" } else { "miss" };
        self.result_lookups
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Runs a result-storage write of `bytes`, counting it when it succeeds (failures are the
    /// sidecar's `Stats`) and recording its duration.
    pub async fn result_write<T, E>(
        &self,
        bytes: usize,
        write: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let out = self.timed(Step::ResultWrite, write).await;
        if out.is_ok() {
            self.result_writes.inc();
            self.result_bytes.inc_by(bytes as u64);
        }
        out
    }

    /// A registry of these metrics, the build's, and what `sample` reads at each scrape.
    pub fn registry(&self, sample: Sampler) -> Registry {
        let mut r = Registry::with_prefix("pixmesh");
        r.register(
            "requests",
            "Render requests answered, by RPC, storage and HTTP status",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer a render request (until its body starts streaming), by RPC",
            self.request_seconds.clone(),
        );
        r.register(
            "response_bytes",
            "Image bytes answered, by RPC",
            self.response_bytes.clone(),
        );
        r.register(
            "step_duration_seconds",
            "Time spent in each step of the render flow: queue_wait (admission), \
             result_lookup, source_read, render (decode, resize, effects, encode on a worker, \
             with the wait for memory and a worker), result_write",
            self.steps.clone(),
        );
        r.register(
            "render_phase_duration_seconds",
            "Time a render spent in each phase of the pipeline on its worker: decode, resize, \
             effects (colour, flips, blur, sharpen, padding, rotation, watermark), encode \
             (animations: resize and effects, summed over their frames)",
            self.phases.clone(),
        );
        r.register(
            "source_reads",
            "Source reads, by storage and outcome (ok, or the storage error: not_found, \
             access_denied, timeout, unavailable, too_large, no_such_bucket, wrong_region, \
             unroutable, versions_unsupported, other)",
            self.source_reads.clone(),
        );
        r.register(
            "source_read_bytes",
            "Source bytes read, by storage",
            self.source_bytes.clone(),
        );
        r.register(
            "result_storage_lookups",
            "Result-storage lookups by outcome (hit, miss), one per request that looked",
            self.result_lookups.clone(),
        );
        r.register(
            "result_storage_writes",
            "Renditions written to result storage",
            self.result_writes.clone(),
        );
        r.register(
            "result_storage_written_bytes",
            "Rendition bytes written to result storage",
            self.result_bytes.clone(),
        );
        r.register(
            "renders_in_progress",
            "Renders under way (waiting for memory or a worker, or running)",
            self.renders_in_progress.clone(),
        );
        r.register_collector(Box::new(Sampled(sample)));
        r
    }
}

/// What is read from the sidecar's state at each scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Renders started (one per flight of identical requests).
    pub renders: u64,
    /// Watermarks read and decoded.
    pub watermark_decodes: u64,
    /// Sources served from their copy in source storage.
    pub source_copy_hits: u64,
    /// Source copies that could not be written.
    pub source_copy_write_failures: u64,
    /// Result-storage writes that failed.
    pub result_write_failures: u64,
    /// Background writes skipped because every slot was busy.
    pub writes_skipped: u64,
    /// Requests that joined a flight already under way, by flight (`source`, `render`,
    /// `watermark`, `result_lookup`).
    pub flight_joins: Vec<(&'static str, u64)>,
    /// Requests waiting for an admission.
    pub queue_depth: u64,
    /// Requests that may wait before one is refused (`max_queue`).
    pub queue_capacity: u64,
    /// Render workers.
    pub workers: u64,
    /// Render workers running a job.
    pub workers_busy: u64,
    /// The renders' memory budget.
    pub memory_budget_bytes: u64,
    /// What renders and responses hold of it now.
    pub memory_reserved_bytes: u64,
    /// Whether the sidecar is ready (`/readyz`, `grpc.health.v1`).
    pub ready: bool,
}

/// Reads a [`Snapshot`].
pub type Sampler = Arc<dyn Fn() -> Snapshot + Send + Sync>;

struct Sampled(Sampler);

impl fmt::Debug for Sampled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sampled")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// The resident set size of this process, from `/proc/self/statm` (Linux), if readable.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

impl Collector for Sampled {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = (self.0)();
        let info =
            prometheus_client::metrics::info::Info::new([("version", env!("CARGO_PKG_VERSION"))]);
        info.encode(e.encode_descriptor(
            "build",
            "The sidecar's version",
            None,
            info.metric_type(),
        )?)?;
        counter(
            &mut e,
            "renders",
            "Renders started (one per flight of identical requests)",
            s.renders,
        )?;
        counter(
            &mut e,
            "watermark_decodes",
            "Watermarks read and decoded",
            s.watermark_decodes,
        )?;
        counter(
            &mut e,
            "source_copy_hits",
            "Sources served from their copy in source storage",
            s.source_copy_hits,
        )?;
        counter(
            &mut e,
            "source_copy_write_failures",
            "Source copies that could not be written",
            s.source_copy_write_failures,
        )?;
        counter(
            &mut e,
            "result_storage_write_failures",
            "Rendition writes to result storage that failed",
            s.result_write_failures,
        )?;
        counter(
            &mut e,
            "background_writes_skipped",
            "Result-storage and source-copy writes skipped: every background write slot was busy",
            s.writes_skipped,
        )?;
        {
            let family = e.encode_descriptor(
                "flight_joins",
                "Requests that joined identical work already under way, by flight",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            let mut family = family;
            for (flight, n) in &s.flight_joins {
                let labels = [("flight", *flight)];
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut e,
            "queue_depth",
            "Requests waiting for an admission to the render pool",
            s.queue_depth,
        )?;
        gauge(
            &mut e,
            "queue_capacity",
            "Requests that may wait before the next one is refused (max_queue)",
            s.queue_capacity,
        )?;
        gauge(
            &mut e,
            "workers",
            "Render workers (one per core)",
            s.workers,
        )?;
        gauge(
            &mut e,
            "workers_busy",
            "Render workers running a job",
            s.workers_busy,
        )?;
        gauge(
            &mut e,
            "memory_budget_bytes",
            "The memory budget of renders and responses",
            s.memory_budget_bytes,
        )?;
        gauge(
            &mut e,
            "memory_reserved_bytes",
            "What renders and responses hold of the memory budget now",
            s.memory_reserved_bytes,
        )?;
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut e,
                "resident_memory_bytes",
                "Resident set size of the sidecar process",
                rss,
            )?;
        }
        gauge(
            &mut e,
            "ready",
            "1 when the sidecar is ready to serve (/readyz, grpc.health.v1), else 0",
            u64::from(s.ready),
        )?;
        Ok(())
    }
}

/// `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String does not fail; a metric's own encoding error would leave a
    // partial scrape, which Prometheus reports.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrape_names_follow_prometheus_conventions_and_counts_add_up() {
        let m = Metrics::default();
        m.request(Rpc::Render, "photos", 200, Duration::from_millis(3), 100);
        m.request(Rpc::Render, "photos", 404, Duration::from_millis(1), 0);
        m.source_read("photos", "not_found", Duration::from_millis(1), 0);
        m.result_lookup(true);
        let sample: Sampler = Arc::new(|| Snapshot {
            renders: 7,
            flight_joins: vec![("render", 2)],
            queue_capacity: 64,
            ready: true,
            ..Snapshot::default()
        });
        let text = encode(&m.registry(sample));
        for line in [
            "pixmesh_requests_total{rpc=\"Render\",storage=\"photos\",status=\"200\"} 1",
            "pixmesh_requests_total{rpc=\"Render\",storage=\"photos\",status=\"404\"} 1",
            "pixmesh_request_duration_seconds_count{rpc=\"Render\"} 2",
            "pixmesh_response_bytes_total{rpc=\"Render\"} 100",
            "pixmesh_source_reads_total{storage=\"photos\",outcome=\"not_found\"} 1",
            "pixmesh_step_duration_seconds_count{step=\"source_read\"} 1",
            "pixmesh_result_storage_lookups_total{outcome=\"hit\"} 1",
            "pixmesh_renders_total 7",
            "pixmesh_flight_joins_total{flight=\"render\"} 2",
            "pixmesh_queue_capacity 64",
            "pixmesh_ready 1",
            "# TYPE pixmesh_request_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(
            text.contains("pixmesh_build_info{version=\""),
            "build info in\n{text}"
        );
    }
}
