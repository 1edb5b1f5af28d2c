//! The HTTP client histograms (`http.client.request.duration` and the two body sizes),
//! aggregated here rather than in the SDK: the SDK takes one call, and one lock, per
//! measurement, and at three histograms a request that cost ingest a third of its speed. A
//! worker folds a chunk's requests into per-series [`Dist`]s without locks; the chunk merges
//! into the run's [`HttpHistograms`] under one lock; each export turns the table into OTLP data
//! points, cumulative like the SDK's, with the same names, units and attributes.

use std::collections::HashMap;
use std::sync::Mutex;

use foldhash::fast::RandomState;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, metric,
};

use super::metrics::{DURATION_BUCKETS, attr};

/// Duration buckets: one per bound, and one above the last.
const DURATION_SLOTS: usize = DURATION_BUCKETS.len() + 1;

/// Distinct series kept for the run; past it, requests go to one series marked
/// `otel.metric.overflow=true`, as the SDK does past its cardinality limit.
const MAX_SERIES: usize = 100_000;

/// Distinct `error.type` flag strings kept; Envoy has a few dozen flags, so more means
/// malformed logs, exported as `_OTHER`.
const MAX_FLAGS: usize = 256;

/// One histogram's exact state, as an OTLP data point carries it; `N` buckets for `N - 1`
/// bounds (one bucket, the count, when there are no bounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dist<const N: usize> {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub buckets: [u64; N],
}

impl<const N: usize> Default for Dist<N> {
    fn default() -> Self {
        Dist { count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, buckets: [0; N] }
    }
}

impl<const N: usize> Dist<N> {
    /// Counts `value` in the first bucket whose upper bound is at or above it (OTel's
    /// explicit buckets include their upper bound).
    fn record(&mut self, value: f64, bounds: &[f64]) {
        self.buckets[bounds.partition_point(|b| *b < value)] += 1;
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    fn merge(&mut self, other: &Self) {
        for (ours, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *ours += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    fn point(
        &self,
        attributes: Vec<KeyValue>,
        bounds: &[f64],
        times: (u64, u64),
    ) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes,
            start_time_unix_nano: times.0,
            time_unix_nano: times.1,
            count: self.count,
            sum: Some(self.sum),
            bucket_counts: self.buckets.to_vec(),
            explicit_bounds: bounds.to_vec(),
            exemplars: Vec::new(),
            flags: 0,
            min: Some(self.min),
            max: Some(self.max),
        }
    }
}

/// A series' three histograms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HttpDists {
    pub duration: Dist<DURATION_SLOTS>,
    pub request_size: Dist<1>,
    pub response_size: Dist<1>,
}

impl HttpDists {
    /// One request. A duration is recorded when the log has one (a parsed number is finite).
    pub fn record(&mut self, seconds: Option<f64>, request_size: u64, response_size: u64) {
        if let Some(seconds) = seconds.filter(|s| s.is_finite()) {
            self.duration.record(seconds, &DURATION_BUCKETS);
        }
        self.request_size.record(request_size as f64, &[]);
        self.response_size.record(response_size as f64, &[]);
    }

    /// Requests counted (every request has body sizes, not every one a duration).
    pub fn requests(&self) -> u64 {
        self.request_size.count
    }

    fn merge(&mut self, other: &HttpDists) {
        self.duration.merge(&other.duration);
        self.request_size.merge(&other.request_size);
        self.response_size.merge(&other.response_size);
    }
}

/// `error.type` of a series before it is text: Envoy's response flags (an index into a list
/// of distinct flag strings), or a failing status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKey {
    None,
    Flags(u32),
    Status(u16),
}

/// A series' attributes but the host; `error` indexes the flag list of whoever holds it
/// (a chunk, or the run's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Series {
    pub method: &'static str,
    pub port: Option<u16>,
    pub status: Option<u16>,
    pub error: ErrorKey,
    pub protocol: Option<&'static str>,
}

/// The run's histograms per exported host and series.
#[derive(Debug, Default)]
pub struct HttpHistograms {
    table: Mutex<Table>,
}

#[derive(Debug, Default, Clone)]
struct Table {
    hosts: HashMap<Box<str>, HashMap<Series, HttpDists, RandomState>, RandomState>,
    /// The distinct flag strings, indexed by [`ErrorKey::Flags`].
    flags: Vec<Box<str>>,
    series: usize,
    /// Requests of series past [`MAX_SERIES`].
    overflow: HttpDists,
}

/// The index [`ErrorKey::Flags`] takes for flags past [`MAX_FLAGS`].
const OTHER_FLAGS: u32 = u32::MAX;

impl HttpHistograms {
    /// Merges a chunk's series: each with its host as exported (a name or `_other`), its
    /// error flags as the chunk's list names them.
    pub fn merge<'c>(
        &self,
        series: impl Iterator<Item = (&'c str, Series, &'c HttpDists)>,
        chunk_flags: &[Box<str>],
    ) {
        let Ok(mut table) = self.table.lock() else { return };
        let flags: Vec<u32> = chunk_flags.iter().map(|f| table.flag(f)).collect();
        for (host, mut key, dists) in series {
            if let ErrorKey::Flags(i) = key.error {
                key.error = ErrorKey::Flags(flags[i as usize]);
            }
            table.merge(host, key, dists);
        }
    }

    /// The three metrics as OTLP, cumulative from `start_ns` to `now_ns`; a histogram without
    /// data points is left out.
    pub fn export(&self, start_ns: u64, now_ns: u64) -> Vec<Metric> {
        // A copy, so that workers merging never wait for the encoding.
        let Ok(table) = self.table.lock().map(|t| t.clone()) else { return Vec::new() };
        let times = (start_ns, now_ns);
        let mut duration = Vec::new();
        let mut request_size = Vec::new();
        let mut response_size = Vec::new();
        let overflow = (table.overflow.requests() > 0).then(|| {
            let flag = kv("otel.metric.overflow", any_value::Value::BoolValue(true));
            (vec![flag], &table.overflow)
        });
        let series = table.hosts.iter().flat_map(|(host, series)| {
            series.iter().map(|(key, dists)| (table.attributes(host, key), dists))
        });
        for (attributes, dists) in series.chain(overflow) {
            if dists.duration.count > 0 {
                duration.push(dists.duration.point(attributes.clone(), &DURATION_BUCKETS, times));
            }
            request_size.push(dists.request_size.point(attributes.clone(), &[], times));
            response_size.push(dists.response_size.point(attributes, &[], times));
        }
        [
            (
                "http.client.request.duration",
                "s",
                "Duration of egress requests through the waypoint",
                duration,
            ),
            (
                "http.client.request.body.size",
                "By",
                "Bytes the waypoint received from the caller (request body)",
                request_size,
            ),
            (
                "http.client.response.body.size",
                "By",
                "Bytes the waypoint sent back to the caller (response body)",
                response_size,
            ),
        ]
        .into_iter()
        .filter(|(.., points)| !points.is_empty())
        .map(|(name, unit, description, data_points)| Metric {
            name: name.into(),
            description: description.into(),
            unit: unit.into(),
            metadata: Vec::new(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
        })
        .collect()
    }
}

impl Table {
    /// The run's index of a flag string.
    fn flag(&mut self, flags: &str) -> u32 {
        if let Some(i) = self.flags.iter().position(|f| f.as_ref() == flags) {
            return i as u32;
        }
        if self.flags.len() >= MAX_FLAGS {
            return OTHER_FLAGS;
        }
        self.flags.push(flags.into());
        self.flags.len() as u32 - 1
    }

    fn merge(&mut self, host: &str, key: Series, dists: &HttpDists) {
        if let Some(known) = self.hosts.get_mut(host).and_then(|series| series.get_mut(&key)) {
            known.merge(dists);
            return;
        }
        if self.series >= MAX_SERIES {
            self.overflow.merge(dists);
            return;
        }
        self.series += 1;
        let series = match self.hosts.get_mut(host) {
            Some(series) => series,
            None => self.hosts.entry(host.into()).or_default(),
        };
        series.insert(key, *dists);
    }

    fn attributes(&self, host: &str, key: &Series) -> Vec<KeyValue> {
        let mut attributes =
            vec![text(attr::SERVER_ADDRESS, host), text(attr::HTTP_REQUEST_METHOD, key.method)];
        if let Some(port) = key.port {
            attributes.push(int(attr::SERVER_PORT, port));
        }
        if let Some(status) = key.status {
            attributes.push(int(attr::HTTP_RESPONSE_STATUS_CODE, status));
        }
        match key.error {
            ErrorKey::None => {}
            ErrorKey::Flags(i) => {
                let flags = self.flags.get(i as usize).map_or("_OTHER", |f| f.as_ref());
                attributes.push(text(attr::ERROR_TYPE, flags));
            }
            ErrorKey::Status(code) => attributes.push(text(attr::ERROR_TYPE, &code.to_string())),
        }
        if let Some(version) = key.protocol {
            attributes.push(text(attr::NETWORK_PROTOCOL_VERSION, version));
        }
        attributes
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: u16) -> KeyValue {
    kv(key, any_value::Value::IntValue(i64::from(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_bound_counts_in_that_bound_s_bucket() {
        let mut dist = Dist::<DURATION_SLOTS>::default();
        for value in [0.0, 0.005, 0.0051, 10.0, 10.5] {
            dist.record(value, &DURATION_BUCKETS);
        }
        let mut expected = [0; DURATION_SLOTS];
        expected[0] = 2;
        expected[1] = 1;
        expected[DURATION_SLOTS - 2] = 1;
        expected[DURATION_SLOTS - 1] = 1;
        assert_eq!(dist.buckets, expected);
        assert_eq!((dist.count, dist.min, dist.max), (5, 0.0, 10.5));
        assert!((dist.sum - 20.5101).abs() < 1e-9);
    }

    #[test]
    fn merged_chunks_equal_one_pass() {
        let values = [0.2, 3.0, 0.001, 7.7, 0.05];
        let mut whole = HttpDists::default();
        let (mut first, mut second) = (HttpDists::default(), HttpDists::default());
        for (i, v) in values.into_iter().enumerate() {
            whole.record(Some(v), i as u64, 10 * i as u64);
            let half = if i < 2 { &mut first } else { &mut second };
            half.record(Some(v), i as u64, 10 * i as u64);
        }
        first.merge(&second);
        assert_eq!(first.duration.buckets, whole.duration.buckets);
        assert_eq!((first.duration.min, first.duration.max), (0.001, 7.7));
        assert_eq!((first.requests(), first.response_size.sum), (5, 100.0));
    }

    fn series(error: ErrorKey) -> Series {
        Series { method: "GET", port: Some(80), status: Some(503), error, protocol: Some("1.1") }
    }

    #[test]
    fn chunks_flag_lists_become_the_run_s_and_export_as_text() {
        let table = HttpHistograms::default();
        let mut one = HttpDists::default();
        one.record(Some(0.1), 1, 2);
        // Two chunks that list the same flags in different orders.
        table.merge(
            [("a.com", series(ErrorKey::Flags(1)), &one)].into_iter(),
            &["NR".into(), "UF".into()],
        );
        table.merge([("a.com", series(ErrorKey::Flags(0)), &one)].into_iter(), &["UF".into()]);
        let metrics = table.export(1, 2);
        assert_eq!(metrics.len(), 3);
        let Some(metric::Data::Histogram(duration)) = &metrics[0].data else {
            panic!("a histogram")
        };
        assert_eq!(duration.data_points.len(), 1);
        let point = &duration.data_points[0];
        assert_eq!((point.count, point.start_time_unix_nano, point.time_unix_nano), (2, 1, 2));
        let error = point.attributes.iter().find(|kv| kv.key == attr::ERROR_TYPE);
        let text = error.and_then(|kv| kv.value.clone()).and_then(|v| v.value);
        assert_eq!(text, Some(any_value::Value::StringValue("UF".into())));
    }

    #[test]
    fn series_past_the_limit_go_to_the_overflow_series() {
        let mut table = Table::default();
        let mut one = HttpDists::default();
        one.record(None, 1, 2);
        for status in 0..=u16::try_from(MAX_SERIES / 2).unwrap_or(u16::MAX) {
            for host in ["a.com", "b.com"] {
                let key = Series { status: Some(status), ..series(ErrorKey::None) };
                table.merge(host, key, &one);
            }
        }
        assert_eq!(table.series, MAX_SERIES);
        assert_eq!(table.overflow.requests(), 2);
        // A series already known still takes its own requests.
        table.merge("a.com", Series { status: Some(0), ..series(ErrorKey::None) }, &one);
        assert_eq!(table.overflow.requests(), 2);
    }
}
