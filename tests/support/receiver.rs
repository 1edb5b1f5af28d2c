//! An OTLP receiver in the test (or benchmark) process, built from the protocol's own
//! definitions (`opentelemetry-proto`): gRPC through tonic's generated services, HTTP/protobuf
//! through an axum route that decodes the same messages, both on 127.0.0.1.

#![allow(clippy::unwrap_used, dead_code)] // each includer uses part of it

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// Everything the receiver was sent, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Received {
    /// The latest data point of every series, as a backend keeps cumulative metrics: an
    /// export may come in several requests, each holding part of the series.
    pub(crate) metrics: Arc<Mutex<Series>>,
    pub(crate) traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    /// Bytes on the wire of each OTLP/HTTP metrics request (compressed), and whether gzip.
    pub(crate) metrics_wire: Arc<Mutex<Vec<(usize, bool)>>>,
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().merge(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The series received: per metric, its data points by attributes, the latest kept.
#[derive(Debug, Default)]
pub(crate) struct Series {
    metrics: BTreeMap<String, Metric>,
    /// Where a metric's point with these attributes (encoded) is in its list.
    index: HashMap<(String, Vec<u8>), usize>,
    resource: Option<Resource>,
    /// Data points and bytes of protobuf of each request, in order.
    pub(crate) requests: Vec<(usize, usize)>,
    /// Only count the requests (a benchmark's receiver: a backend's work is not the
    /// exporter's).
    pub(crate) count_only: bool,
}

impl Series {
    fn merge(&mut self, request: ExportMetricsServiceRequest) {
        let (size, points) = (request.encoded_len(), data_points(&request));
        self.requests.push((points, size));
        if self.count_only {
            return;
        }
        for resource_metrics in request.resource_metrics {
            self.resource = resource_metrics.resource.or(self.resource.take());
            for metric in resource_metrics.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                self.merge_metric(metric);
            }
        }
    }

    fn merge_metric(&mut self, mut metric: Metric) {
        let name = metric.name.clone();
        let kept = self.metrics.entry(name.clone()).or_insert_with(|| Metric {
            name: metric.name.clone(),
            description: metric.description.clone(),
            unit: metric.unit.clone(),
            metadata: metric.metadata.clone(),
            data: match &mut metric.data {
                Some(Data::Histogram(h)) => {
                    Some(Data::Histogram(opentelemetry_proto::tonic::metrics::v1::Histogram {
                        data_points: Vec::new(),
                        ..h.clone()
                    }))
                }
                Some(Data::Sum(s)) => {
                    Some(Data::Sum(opentelemetry_proto::tonic::metrics::v1::Sum {
                        data_points: Vec::new(),
                        ..s.clone()
                    }))
                }
                Some(Data::Gauge(_)) => Some(Data::Gauge(Default::default())),
                other => other.take(),
            },
        });
        let index = &mut self.index;
        let place = |attributes: &[KeyValue], len: usize| {
            let key: Vec<u8> = attributes.iter().flat_map(|kv| kv.encode_to_vec()).collect();
            *index.entry((name.clone(), key)).or_insert(len)
        };
        match (&mut kept.data, metric.data) {
            (Some(Data::Histogram(kept)), Some(Data::Histogram(new))) => {
                put_all(&mut kept.data_points, new.data_points, |p| &p.attributes, place);
            }
            (Some(Data::Sum(kept)), Some(Data::Sum(new))) => {
                put_all(&mut kept.data_points, new.data_points, |p| &p.attributes, place);
            }
            (Some(Data::Gauge(kept)), Some(Data::Gauge(new))) => {
                put_all(&mut kept.data_points, new.data_points, |p| &p.attributes, place);
            }
            (kept, new) => panic!("metric {name} changed kind: {kept:?} then {new:?}"),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }
}

/// `new` points into `points`, each replacing the one `place` finds for its attributes.
fn put_all<P>(
    points: &mut Vec<P>,
    new: Vec<P>,
    attributes: fn(&P) -> &[KeyValue],
    mut place: impl FnMut(&[KeyValue], usize) -> usize,
) {
    for point in new {
        match place(attributes(&point), points.len()) {
            at if at == points.len() => points.push(point),
            at => points[at] = point,
        }
    }
}

/// Data points of every metric in an export request.
pub(crate) fn data_points(request: &ExportMetricsServiceRequest) -> usize {
    let metrics =
        request.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics);
    metrics
        .map(|m| match &m.data {
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Gauge(g)) => g.data_points.len(),
            _ => 0,
        })
        .sum()
}

impl Received {
    /// Every series so far, each at its latest data point (cumulative, so its total).
    pub(crate) fn last_metrics(&self) -> BTreeMap<String, Metric> {
        let series = self.metrics.lock().unwrap();
        assert!(!series.is_empty(), "at least one metrics export");
        series.metrics.clone()
    }

    pub(crate) fn resource(&self) -> BTreeMap<String, String> {
        let series = self.metrics.lock().unwrap();
        let resource = series.resource.clone().unwrap();
        resource.attributes.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect()
    }

    pub(crate) fn spans(&self) -> Vec<Span> {
        let requests = self.traces.lock().unwrap();
        requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }
}

pub(crate) fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).map(|kv| text(kv.value.as_ref()))
}

/// The receiver's runtime, with gRPC and HTTP/protobuf listeners.
pub(crate) struct Receiver {
    runtime: tokio::runtime::Runtime,
    pub(crate) received: Received,
}

impl Receiver {
    pub(crate) fn new() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Receiver { runtime, received: Received::default() }
    }

    /// gRPC on `addr` (port 0: any).
    pub(crate) fn grpc(&self, addr: SocketAddr) -> SocketAddr {
        self.grpc_over(addr, None)
    }

    /// gRPC over TLS with `identity` (certificate and key, PEM).
    pub(crate) fn grpc_tls(&self, addr: SocketAddr, identity: (&str, &str)) -> SocketAddr {
        self.grpc_over(addr, Some(identity))
    }

    fn grpc_over(&self, addr: SocketAddr, identity: Option<(&str, &str)>) -> SocketAddr {
        let listener = self.runtime.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
        let bound = listener.local_addr().unwrap();
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key)) = identity {
            let identity = tonic::transport::Identity::from_pem(cert, key);
            let tls = tonic::transport::ServerTlsConfig::new().identity(identity);
            builder = builder.tls_config(tls).unwrap();
        }
        let server = builder
            .add_service(
                MetricsServiceServer::new(self.received.clone())
                    .accept_compressed(GZIP)
                    // A collector's default: 4 MiB, after decompression.
                    .max_decoding_message_size(4 << 20),
            )
            .add_service(TraceServiceServer::new(self.received.clone()).accept_compressed(GZIP))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        self.runtime.spawn(server);
        bound
    }

    /// OTLP/HTTP with protobuf bodies on `addr` (port 0: any).
    pub(crate) fn http(&self, addr: SocketAddr) -> SocketAddr {
        let listener = self.runtime.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
        let bound = listener.local_addr().unwrap();
        let app = self.http_routes();
        self.runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        bound
    }

    /// OTLP/HTTP over TLS with `identity` (certificate and key, PEM).
    pub(crate) fn http_tls(&self, addr: SocketAddr, (cert, key): (&str, &str)) -> SocketAddr {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tcp = self.runtime.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
        let bound = tcp.local_addr().unwrap();
        let certs = CertificateDer::pem_slice_iter(cert.as_bytes()).map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let app = self.http_routes();
        let listener = TlsListener { tcp, acceptor };
        self.runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        bound
    }

    fn http_routes(&self) -> axum::Router {
        use axum::routing::post;
        let (metrics, traces) = (self.received.metrics.clone(), self.received.traces.clone());
        let wire = self.received.metrics_wire.clone();
        // A collector takes large requests (the OTel Collector's limit is 20 MiB and more).
        axum::Router::new()
            .route(
                "/v1/metrics",
                post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                    let gzipped = headers.get("content-encoding").is_some_and(|v| v == "gzip");
                    wire.lock().unwrap().push((body.len(), gzipped));
                    let request =
                        ExportMetricsServiceRequest::decode(body_of(&headers, &body)).unwrap();
                    metrics.lock().unwrap().merge(request);
                    protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
                }),
            )
            .route(
                "/v1/traces",
                post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                    let request =
                        ExportTraceServiceRequest::decode(body_of(&headers, &body)).unwrap();
                    traces.lock().unwrap().push(request);
                    protobuf(ExportTraceServiceResponse::default().encode_to_vec())
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
    }
}

/// TLS connections for axum: the TCP ones that complete a handshake.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

const GZIP: tonic::codec::CompressionEncoding = tonic::codec::CompressionEncoding::Gzip;

/// A request body, gunzipped when its Content-Encoding says gzip.
fn body_of(headers: &axum::http::HeaderMap, body: &[u8]) -> axum::body::Bytes {
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut plain).unwrap();
        plain.into()
    } else {
        axum::body::Bytes::copy_from_slice(body)
    }
}

fn protobuf(body: Vec<u8>) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/x-protobuf")], body)
}
