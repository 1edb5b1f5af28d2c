//! The metric exporter: at each of the SDK reader's collections, the SDK's instruments and
//! the run's HTTP histograms as OTLP messages, split into requests of at most
//! [`MAX_POINTS`] data points, over gRPC (tonic) or HTTP/protobuf (hyper), gzip when
//! configured; what fails is counted.
//!
//! Splitting keeps each request well under the 4 MiB an OTel Collector's gRPC receiver takes
//! by default (its limit holds after decompression): 50 hosts already make 20 000 points.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry::InstrumentationScope;
use opentelemetry_http::HttpClient as _;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, Metric, ResourceMetrics as ProtoResourceMetrics, ScopeMetrics, Sum, metric,
};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use prost::Message as _;
use tokio::runtime::Handle;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::config::{Protocol, SignalConfig};
use super::histograms::HttpHistograms;
use super::{ExportCounts, ExportError, HttpsConnector};

/// Data points per request: about 1.5 MB of protobuf.
pub const MAX_POINTS: usize = 5_000;

/// Sends each collection of the SDK's reader, with the HTTP histograms appended.
#[derive(Debug)]
pub struct MetricSender {
    transport: Transport,
    histograms: Arc<HttpHistograms>,
    scope: opentelemetry_proto::tonic::common::v1::InstrumentationScope,
    /// Cumulative series start here (the SDK's start too, to the millisecond).
    start_ns: u64,
    handle: Handle,
    counts: Arc<ExportCounts>,
}

#[derive(Debug)]
enum Transport {
    Grpc {
        client: MetricsServiceClient<Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: opentelemetry_http::hyper::HyperClient<HttpsConnector>,
        signal: Box<SignalConfig>,
    },
}

impl MetricSender {
    /// A sender for `signal`, its connections made on `handle`'s runtime.
    pub fn new(
        signal: &SignalConfig,
        (histograms, scope): (Arc<HttpHistograms>, &InstrumentationScope),
        handle: Handle,
        counts: Arc<ExportCounts>,
    ) -> Result<MetricSender, ExportError> {
        let transport = match signal.protocol {
            Protocol::Grpc => {
                let build = |source: tonic::transport::Error| ExportError::Build {
                    signal: "metrics",
                    endpoint: signal.shown_endpoint(),
                    source: source.into(),
                };
                let mut endpoint = Channel::from_shared(signal.endpoint.clone())
                    .map_err(|e| ExportError::Build {
                        signal: "metrics",
                        endpoint: signal.shown_endpoint(),
                        source: e.into(),
                    })?
                    .timeout(signal.timeout)
                    .connect_timeout(signal.timeout);
                if signal.endpoint.starts_with("https:") {
                    endpoint = endpoint.tls_config(super::grpc_tls(signal)?).map_err(build)?;
                }
                let channel = {
                    // The channel's tasks start on the runtime it is made in.
                    let _entered = handle.enter();
                    endpoint.connect_lazy()
                };
                let mut client = MetricsServiceClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX);
                if signal.gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                Transport::Grpc { client, metadata: super::metadata(signal) }
            }
            Protocol::HttpProtobuf => {
                let client = super::http_client(signal)?;
                Transport::Http { client, signal: Box::new(signal.clone()) }
            }
        };
        Ok(MetricSender {
            transport,
            histograms,
            scope: (scope, None).into(),
            start_ns: now_ns(),
            handle,
            counts,
        })
    }

    /// The requests of one collection: the SDK's metrics, then the histograms.
    fn requests(&self, collected: &ResourceMetrics) -> Vec<ExportMetricsServiceRequest> {
        let converted = ExportMetricsServiceRequest::from(collected);
        let (resource, schema_url, mut metrics) =
            match converted.resource_metrics.into_iter().next() {
                Some(r) => {
                    let metrics = r.scope_metrics.into_iter().flat_map(|s| s.metrics).collect();
                    (r.resource, r.schema_url, metrics)
                }
                None => (None, String::new(), Vec::new()),
            };
        metrics.extend(self.histograms.export(self.start_ns, now_ns()));
        split(metrics, MAX_POINTS)
            .into_iter()
            .map(|metrics| ExportMetricsServiceRequest {
                resource_metrics: vec![ProtoResourceMetrics {
                    resource: resource.clone(),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(self.scope.clone()),
                        metrics,
                        schema_url: String::new(),
                    }],
                    schema_url: schema_url.clone(),
                }],
            })
            .collect()
    }

    async fn send(&self, request: ExportMetricsServiceRequest) -> OTelSdkResult {
        let failed = |what: String| Err(OTelSdkError::InternalFailure(what));
        match &self.transport {
            Transport::Grpc { client, metadata } => {
                let request = tonic::Request::from_parts(
                    metadata.clone(),
                    tonic::Extensions::default(),
                    request,
                );
                match client.clone().export(request).await {
                    Ok(_) => Ok(()),
                    Err(status) => failed(format!("gRPC export: {status}")),
                }
            }
            Transport::Http { client, signal } => {
                let body = request.encode_to_vec();
                let mut builder = http::Request::post(&signal.endpoint)
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf");
                for (name, value) in &signal.headers {
                    builder = builder.header(name.as_str(), value.as_str());
                }
                let body = if signal.gzip {
                    builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
                    gzip(&body)
                } else {
                    body
                };
                let request = match builder.body(Bytes::from(body)) {
                    Ok(request) => request,
                    Err(e) => return failed(format!("HTTP export request: {e}")),
                };
                match client.send_bytes(request).await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => failed(format!("HTTP export: status {}", response.status())),
                    Err(e) => failed(format!("HTTP export: {e}")),
                }
            }
        }
    }
}

impl PushMetricExporter for MetricSender {
    async fn export(&self, collected: &ResourceMetrics) -> OTelSdkResult {
        let requests = self.requests(collected);
        // The reader's thread is not the runtime's: block it, not a runtime worker. A failed
        // request ends the export: the next carries every series again (cumulative).
        let result = self.handle.block_on(async {
            for request in requests {
                self.send(request).await?;
            }
            Ok(())
        });
        let counts = &self.counts;
        let counter = if result.is_ok() { &counts.metric_exports } else { &counts.metric_failures };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// `metrics` in groups of at most `max` data points, a metric with more split into several
/// of the same name (a receiver merges them by name and attributes).
fn split(metrics: Vec<Metric>, max: usize) -> Vec<Vec<Metric>> {
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut room = max;
    for mut metric in metrics {
        while points(&metric) > room {
            // A kind never split (none the exporter makes) goes whole.
            let Some(head) = split_off(&mut metric, room) else { break };
            if points(&head) > 0 {
                group.push(head);
            }
            groups.push(std::mem::take(&mut group));
            room = max;
        }
        room = room.saturating_sub(points(&metric));
        group.push(metric);
    }
    groups.push(group);
    groups.retain(|g| !g.is_empty());
    groups
}

fn points(metric: &Metric) -> usize {
    match &metric.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// The first `at` data points of `metric` as a metric of their own; `metric` keeps the rest.
fn split_off(metric: &mut Metric, at: usize) -> Option<Metric> {
    let data = match &mut metric.data {
        Some(metric::Data::Gauge(g)) => {
            let rest = g.data_points.split_off(at);
            metric::Data::Gauge(Gauge { data_points: std::mem::replace(&mut g.data_points, rest) })
        }
        Some(metric::Data::Sum(s)) => {
            let rest = s.data_points.split_off(at);
            metric::Data::Sum(Sum {
                data_points: std::mem::replace(&mut s.data_points, rest),
                ..*s
            })
        }
        Some(metric::Data::Histogram(h)) => {
            let rest = h.data_points.split_off(at);
            metric::Data::Histogram(Histogram {
                data_points: std::mem::replace(&mut h.data_points, rest),
                ..*h
            })
        }
        _ => return None,
    };
    Some(Metric {
        name: metric.name.clone(),
        description: metric.description.clone(),
        unit: metric.unit.clone(),
        metadata: metric.metadata.clone(),
        data: Some(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::NumberDataPoint;

    fn sum(name: &str, n: usize) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: (0..n)
                    .map(|i| NumberDataPoint { time_unix_nano: i as u64, ..Default::default() })
                    .collect(),
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn requests_hold_at_most_the_limit_and_lose_no_point() {
        let groups = split(vec![sum("a", 3), sum("b", 12), sum("c", 1)], 5);
        let sizes: Vec<Vec<(String, usize)>> = groups
            .iter()
            .map(|g| g.iter().map(|m| (m.name.clone(), points(m))).collect())
            .collect();
        let named = |n: &str, p| (n.to_owned(), p);
        assert_eq!(
            sizes,
            [
                vec![named("a", 3), named("b", 2)],
                vec![named("b", 5)],
                vec![named("b", 5)],
                vec![named("c", 1)],
            ]
        );
        // The pieces keep their order and their kind's fields.
        let Some(metric::Data::Sum(second)) = &groups[1][0].data else { panic!("a sum") };
        assert!(second.is_monotonic);
        assert_eq!(second.data_points[0].time_unix_nano, 2);
    }

    #[test]
    fn an_export_that_fits_is_one_request() {
        assert_eq!(split(vec![sum("a", 3), sum("b", 2)], 5).len(), 1);
        assert!(split(Vec::new(), 5).is_empty());
    }
}
