//! OTLP export of egress metrics and traces to the organisation's OpenTelemetry pipeline.
//!
//! - [`config`]: the `OTEL_*` variables and the command line's overrides
//! - [`metrics`]: the instruments, and a chunk's records aggregated before recording
//! - [`histograms`]: the HTTP histograms, aggregated here rather than in the SDK
//! - [`send`]: the metric exporter, which appends them to the SDK's and sends
//! - [`traces`]: which records get a span, their ids and attributes
//!
//! Nothing here can slow ingest down when the endpoint is down or slow: workers only record
//! into in-memory aggregation and hand spans to a bounded queue (a full queue drops
//! them, counted); the network is the business of the SDK's metric reader thread and of this
//! module's span thread, both waiting on a runtime of their own. [`Exporter::shutdown`]
//! flushes both within a deadline.

pub mod config;
pub mod histograms;
pub mod metrics;
pub mod send;
pub mod traces;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{Instrument, PeriodicReader, SdkMeterProvider, Stream};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::runtime::Handle;

use self::config::{OtlpConfig, Protocol, Signal, SignalConfig};
use self::histograms::{HttpHistograms, Shard};
use self::metrics::{ChunkMetrics, HostCap, Instruments};
use self::send::MetricSender;
use self::traces::TraceRule;
use crate::batch::LineContext;
use crate::findings::Findings;
use crate::parse::ztunnel::Connection;
use crate::parse::{Entry, RejectReason};

/// What to export besides where: the trace rule, the host limit, who the collector is.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub traces: TraceRule,
    /// Hosts exported by name; the rest as `_other`.
    pub max_hosts: usize,
    /// `k8s.cluster.name` of the resource.
    pub cluster: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { traces: TraceRule::default(), max_hosts: 500, cluster: None }
    }
}

/// Series per metric the SDK keeps before folding the rest into an overflow series: well
/// above what the host limit allows, so nothing folds silently.
const CARDINALITY_LIMIT: usize = 100_000;

/// Spans waiting for the exporter, in chunks; a full queue drops a chunk's spans, counted.
const SPAN_QUEUE_CHUNKS: usize = 64;

/// Spans per export request.
const SPAN_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot start the OTLP exporter's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot set up the OTLP {signal} exporter for {endpoint}")]
    Build {
        signal: &'static str,
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot read the OTLP CA certificate {path}")]
    Certificate {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Counts of what export did; read by the self-metrics and by the summary.
#[derive(Debug, Default)]
pub struct ExportCounts {
    pub metric_exports: AtomicU64,
    pub metric_failures: AtomicU64,
    pub spans_exported: AtomicU64,
    pub span_failures: AtomicU64,
    /// Spans that never reached the endpoint: the queue was full, the export failed, or the
    /// shutdown deadline came first.
    pub spans_dropped: AtomicU64,
}

/// What workers use: the instruments and the span queue, each present when its signal is on.
#[derive(Debug)]
pub struct Telemetry {
    metrics: Option<(Instruments, HostCap, Arc<HttpHistograms>)>,
    spans: Option<(Sender<Vec<SpanData>>, TraceRule, InstrumentationScope)>,
    pub counts: Arc<ExportCounts>,
}

impl Telemetry {
    /// A parsing worker's own part of the metrics, kept for the run (present when metrics
    /// are exported).
    pub fn shard(&self) -> Option<Arc<Mutex<Shard>>> {
        self.metrics.as_ref().map(|(.., histograms)| histograms.shard())
    }

    /// The collector of a chunk of `bytes` from `pod` (when a pod's), for its metrics and
    /// spans; the worker's `shard` stays locked until the chunk's telemetry is dropped.
    pub fn chunk<'t>(
        &'t self,
        shard: Option<&'t Mutex<Shard>>,
        bytes: u64,
        pod: Option<&'t str>,
    ) -> ChunkTelemetry<'t> {
        // A worker that panicked left its series whole: they are counts, each update complete.
        let shard = shard.map(|s| s.lock().unwrap_or_else(PoisonError::into_inner));
        let metrics = ChunkMetrics::default();
        ChunkTelemetry { telemetry: self, shard, metrics, spans: Vec::new(), bytes, pod }
    }

    /// Counts a store commit.
    pub fn commit(&self) {
        if let Some((instruments, ..)) = &self.metrics {
            instruments.commit();
        }
    }

    /// Counts the findings rows of a `findings` batch made outside the workers (the mesh
    /// snapshot and probe rounds).
    pub fn findings_rows(&self, batch: &arrow_array::RecordBatch) {
        if let Some((instruments, hosts, _)) = &self.metrics {
            metrics::record_findings_rows(instruments, hosts, batch);
        }
    }

    /// Requests exported as `_other`, past the host limit.
    pub fn hosts_folded(&self) -> u64 {
        self.metrics.as_ref().map_or(0, |(_, hosts, _)| hosts.folded.load(Ordering::Relaxed))
    }
}

/// One chunk's metrics and spans, gathered by a worker and handed over at [`Self::flush`].
#[derive(Debug)]
pub struct ChunkTelemetry<'t> {
    telemetry: &'t Telemetry,
    shard: Option<MutexGuard<'t, Shard>>,
    metrics: ChunkMetrics,
    spans: Vec<SpanData>,
    bytes: u64,
    pod: Option<&'t str>,
}

impl ChunkTelemetry<'_> {
    /// A record; `finding` when it is a finding's evidence (its span is kept).
    pub fn record(&mut self, entry: &Entry<'_>, ctx: &LineContext<'_>, finding: bool) {
        let ts_ns = ctx.record_ts(entry);
        if let (Some((_, hosts, _)), Some(shard)) = (&self.telemetry.metrics, &mut self.shard) {
            self.metrics.record(entry, ts_ns, (shard, hosts));
        }
        if let Some((_, rule, scope)) = &self.telemetry.spans {
            let ids = traces::trace_ids(entry, ts_ns);
            if rule.keep(entry, ids.0, finding) {
                self.spans.push(traces::span(entry, ts_ns, ids, scope));
            }
        }
    }

    pub fn reject(&mut self, reason: RejectReason) {
        if self.telemetry.metrics.is_some() {
            self.metrics.reject(reason);
        }
    }

    pub fn ztunnel(&mut self, conn: &Connection<'_>) {
        if self.telemetry.metrics.is_some() {
            self.metrics.ztunnel(conn);
        }
    }

    /// Records the chunk's metrics (with the findings it noted) and queues its spans.
    pub fn flush(&mut self, findings: &Findings) {
        if let (Some((instruments, hosts, _)), Some(shard)) = (&self.telemetry.metrics, &self.shard)
        {
            let now = crate::ingest::now_ns();
            let bytes = std::mem::take(&mut self.bytes);
            let into = (instruments, hosts, &**shard);
            self.metrics.record_into(into, findings, (bytes, self.pod, now));
        }
        if let Some((queue, ..)) = &self.telemetry.spans
            && !self.spans.is_empty()
        {
            let spans = std::mem::take(&mut self.spans);
            match queue.try_send(spans) {
                Ok(()) => {}
                Err(TrySendError::Full(spans) | TrySendError::Disconnected(spans)) => {
                    let dropped = &self.telemetry.counts.spans_dropped;
                    dropped.fetch_add(spans.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The running export: its runtime, the metric provider and the span thread.
#[derive(Debug)]
pub struct Exporter {
    provider: Option<SdkMeterProvider>,
    spans: Option<SpanThread>,
    telemetry: Arc<Telemetry>,
    /// Where each signal goes, for the operator.
    pub targets: Vec<String>,
    /// Last: dropped after the provider and the span thread, whose exports run on it.
    runtime: tokio::runtime::Runtime,
}

#[derive(Debug)]
struct SpanThread {
    /// The shutdown deadline goes this way.
    close: Sender<Instant>,
    done: Receiver<()>,
    thread: JoinHandle<()>,
}

/// What [`Exporter::shutdown`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub metric_exports: u64,
    pub metric_failures: u64,
    pub spans_exported: u64,
    pub spans_dropped: u64,
    pub hosts_folded: u64,
    /// The last export failed or did not finish by the deadline.
    pub flush_failed: bool,
}

impl Exporter {
    /// Starts export as `config` says.
    pub fn start(config: &OtlpConfig, options: &ExportOptions) -> Result<Exporter, ExportError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp")
            .enable_all()
            .build()
            .map_err(ExportError::Runtime)?;
        let resource = resource(options);
        let counts = Arc::new(ExportCounts::default());
        let mut targets = Vec::new();
        let scope = InstrumentationScope::builder("egresslens")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let histograms = Arc::new(HttpHistograms::default());
        let provider = match &config.metrics {
            Some(signal) => {
                let handle = runtime.handle().clone();
                let sender = MetricSender::new(
                    signal,
                    (histograms.clone(), &scope),
                    handle,
                    counts.clone(),
                )?;
                let reader =
                    PeriodicReader::builder(sender).with_interval(config.metric_interval).build();
                let provider = SdkMeterProvider::builder()
                    .with_resource(resource.clone())
                    .with_reader(reader)
                    .with_view(view)
                    .build();
                targets.push(format!(
                    "metrics to {} ({})",
                    signal.shown_endpoint(),
                    signal.protocol.as_str()
                ));
                Some(provider)
            }
            None => None,
        };
        let metrics = provider.as_ref().map(|provider| {
            let meter = provider.meter_with_scope(scope.clone());
            register_export_counts(&meter, &counts);
            (Instruments::new(&meter), HostCap::new(options.max_hosts), histograms)
        });
        let spans = match &config.traces {
            Some(signal) => {
                let mut exporter = span_exporter(signal, &runtime)?;
                exporter.set_resource(&resource);
                targets.push(format!(
                    "traces to {} ({})",
                    signal.shown_endpoint(),
                    signal.protocol.as_str()
                ));
                Some(SpanThread::start(exporter, runtime.handle().clone(), counts.clone()))
            }
            None => None,
        };
        let (spans, queue) = match spans {
            Some((thread, queue)) => (Some(thread), Some((queue, options.traces, scope))),
            None => (None, None),
        };
        let telemetry = Arc::new(Telemetry { metrics, spans: queue, counts });
        Ok(Exporter { runtime, provider, spans, telemetry, targets })
    }

    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Exports what is left (spans queued, metrics' last values) and stops, within `deadline`.
    /// Call it from a plain thread, not from async code.
    pub fn shutdown(self, deadline: Duration) -> ExportSummary {
        let until = Instant::now() + deadline;
        let Exporter { runtime, provider, spans, telemetry, .. } = self;
        let mut flush_failed = false;
        if let Some(spans) = spans {
            flush_failed |= !spans.finish(until);
        }
        // The telemetry's queue sender goes with it; workers are done by now.
        let counts = telemetry.counts.clone();
        let hosts_folded = telemetry.hosts_folded();
        drop(telemetry);
        if let Some(provider) = provider {
            let left = until.saturating_duration_since(Instant::now());
            flush_failed |=
                provider.shutdown_with_timeout(left.max(Duration::from_millis(1))).is_err();
        }
        // Every export is over by now; what is left are idle connections.
        runtime.shutdown_background();
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ExportSummary {
            metric_exports: load(&counts.metric_exports),
            metric_failures: load(&counts.metric_failures),
            spans_exported: load(&counts.spans_exported),
            spans_dropped: load(&counts.spans_dropped),
            hosts_folded,
            flush_failed,
        }
    }
}

/// Every instrument's stream with the cardinality limit raised.
fn view(_: &Instrument) -> Option<Stream> {
    Stream::builder().with_cardinality_limit(CARDINALITY_LIMIT).build().ok()
}

/// The resource: egresslens, its version, the cluster, and the collector's own pod and
/// namespace (from the downward API's `POD_NAME` / `POD_NAMESPACE`); `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES` win over these.
fn resource(options: &ExportOptions) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.name", "egresslens"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let named = [
        ("k8s.cluster.name", options.cluster.clone()),
        ("k8s.namespace.name", env("POD_NAMESPACE")),
        ("k8s.pod.name", env("POD_NAME")),
    ];
    for (key, value) in named {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value));
        }
    }
    let mut builder = Resource::builder_empty()
        .with_attributes(attributes)
        .with_detector(Box::new(opentelemetry_sdk::resource::EnvResourceDetector::new()));
    if let Some(name) = env("OTEL_SERVICE_NAME") {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// Export counts as observable counters: they change on the exporter's side.
fn register_export_counts(meter: &opentelemetry::metrics::Meter, counts: &Arc<ExportCounts>) {
    let observed = counts.clone();
    meter
        .u64_observable_counter("egresslens.export.failures")
        .with_unit("{export}")
        .with_description("OTLP exports that failed, by signal")
        .with_callback(move |observer| {
            let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
            observer.observe(
                load(&observed.metric_failures),
                &[KeyValue::new(metrics::attr::SIGNAL, "metrics")],
            );
            observer.observe(
                load(&observed.span_failures),
                &[KeyValue::new(metrics::attr::SIGNAL, "traces")],
            );
        })
        .build();
    let observed = counts.clone();
    meter
        .u64_observable_counter("egresslens.export.dropped")
        .with_unit("{span}")
        .with_description("Spans that never reached the endpoint (queue full, export failed)")
        .with_callback(move |observer| {
            observer.observe(observed.spans_dropped.load(Ordering::Relaxed), &[]);
        })
        .build();
    let observed = counts.clone();
    meter
        .u64_observable_counter("egresslens.export.spans")
        .with_unit("{span}")
        .with_description("Spans exported")
        .with_callback(move |observer| {
            observer.observe(observed.spans_exported.load(Ordering::Relaxed), &[]);
        })
        .build();
}

fn build_error(
    signal: Signal,
    endpoint: &str,
) -> impl FnOnce(opentelemetry_otlp::ExporterBuildError) -> ExportError {
    let endpoint = endpoint.to_owned();
    move |source| ExportError::Build { signal: signal.as_str(), endpoint, source: source.into() }
}

fn span_exporter(
    signal: &SignalConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    use opentelemetry_otlp::SpanExporter;
    let _entered = runtime.enter();
    let built = match signal.protocol {
        Protocol::Grpc => {
            let builder = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&signal.endpoint)
                .with_timeout(signal.timeout)
                .with_metadata(metadata(signal))
                .with_tls_config(grpc_tls(signal)?);
            gzip(builder, signal, WithTonicConfig::with_compression).build()
        }
        Protocol::HttpProtobuf => {
            let builder = SpanExporter::builder()
                .with_http()
                .with_endpoint(&signal.endpoint)
                .with_timeout(signal.timeout)
                .with_headers(signal.headers.iter().cloned().collect())
                .with_http_client(http_client(signal)?);
            gzip(builder, signal, WithHttpConfig::with_compression).build()
        }
    };
    built.map_err(build_error(Signal::Traces, &signal.shown_endpoint()))
}

/// `builder` compressing with gzip when the signal asks for it.
fn gzip<B>(
    builder: B,
    signal: &SignalConfig,
    with: fn(B, opentelemetry_otlp::Compression) -> B,
) -> B {
    if signal.gzip { with(builder, opentelemetry_otlp::Compression::Gzip) } else { builder }
}

fn metadata(signal: &SignalConfig) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in &signal.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name.to_ascii_lowercase()),
            http::HeaderValue::try_from(value),
        ) {
            map.insert(name, value);
        }
    }
    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map)
}

fn read_certificate(signal: &SignalConfig) -> Result<Option<Vec<u8>>, ExportError> {
    let Some(path) = &signal.certificate else { return Ok(None) };
    std::fs::read(path)
        .map(Some)
        .map_err(|source| ExportError::Certificate { path: path.clone(), source })
}

/// TLS for gRPC: the public roots, or the configured CA.
fn grpc_tls(
    signal: &SignalConfig,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, ExportError> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let config = ClientTlsConfig::new();
    Ok(match read_certificate(signal)? {
        Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
        None => config.with_webpki_roots(),
    })
}

/// The HTTP client of OTLP/HTTP: hyper over rustls, public roots or the configured CA.
fn http_client(
    signal: &SignalConfig,
) -> Result<opentelemetry_http::hyper::HyperClient<HttpsConnector>, ExportError> {
    let mut roots = rustls::RootCertStore::empty();
    match read_certificate(signal)? {
        Some(pem) => {
            let path = signal.certificate.clone().unwrap_or_default();
            for cert in rustls_pemfile_certs(&pem) {
                roots.add(cert).map_err(|e| ExportError::Certificate {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ExportError::Build {
        signal: "http",
        endpoint: signal.shown_endpoint(),
        source: e.into(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(opentelemetry_http::hyper::HyperClient::new(connector, signal.timeout, None))
}

type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

impl SpanThread {
    fn start(
        exporter: opentelemetry_otlp::SpanExporter,
        handle: Handle,
        counts: Arc<ExportCounts>,
    ) -> (SpanThread, Sender<Vec<SpanData>>) {
        let (queue, chunks) = bounded::<Vec<SpanData>>(SPAN_QUEUE_CHUNKS);
        let (close, closed) = bounded::<Instant>(1);
        let (done_tx, done) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("otlp-spans".into())
            .spawn(move || {
                export_spans((&chunks, &closed), &exporter, &handle, &counts);
                let _ = exporter.shutdown_with_timeout(Duration::from_secs(1));
                let _ = done_tx.send(());
            })
            .expect("a thread can be spawned");
        (SpanThread { close, done, thread }, queue)
    }

    /// Exports what is queued and stops, by `until`; true when it was done in time.
    fn finish(self, until: Instant) -> bool {
        let _ = self.close.send(until);
        let finished = match self.done.recv_deadline(until) {
            Ok(()) => true,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => false,
        };
        if finished {
            let _ = self.thread.join();
        }
        finished
    }
}

/// The span thread: queued chunks into export requests of up to [`SPAN_BATCH`] spans, until
/// a deadline comes on `closed`; then what is queued is exported (the workers are done) and
/// the rest, past the deadline, dropped and counted.
fn export_spans(
    (chunks, closed): (&Receiver<Vec<SpanData>>, &Receiver<Instant>),
    exporter: &opentelemetry_otlp::SpanExporter,
    handle: &Handle,
    counts: &ExportCounts,
) {
    let mut batch: Vec<SpanData> = Vec::new();
    let mut deadline: Option<Instant> = None;
    // At shutdown, an endpoint that just failed is not waited for again.
    let mut failing = false;
    loop {
        if deadline.is_none() {
            crossbeam_channel::select! {
                recv(chunks) -> chunk => match chunk {
                    Ok(chunk) => batch.extend(chunk),
                    Err(_) => return,
                },
                recv(closed) -> until => deadline = Some(until.unwrap_or_else(|_| Instant::now())),
            }
        }
        while batch.len() < SPAN_BATCH {
            match chunks.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if batch.is_empty() && deadline.is_some() {
            return;
        }
        while !batch.is_empty() {
            let take = batch.len().min(SPAN_BATCH);
            let spans: Vec<SpanData> = batch.drain(..take).collect();
            let n = spans.len() as u64;
            let give_up = deadline.is_some_and(|d| failing || Instant::now() >= d);
            if give_up {
                counts.spans_dropped.fetch_add(n, Ordering::Relaxed);
                continue;
            }
            match handle.block_on(exporter.export(spans)) {
                Ok(()) => {
                    failing = false;
                    counts.spans_exported.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => {
                    failing = true;
                    counts.span_failures.fetch_add(1, Ordering::Relaxed);
                    counts.spans_dropped.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
    }
}
