//! The HTTP client histograms (`http.client.request.duration` and the two body sizes),
//! aggregated here rather than in the SDK: the SDK takes one call, and one lock, per
//! measurement, and at three histograms a request that cost ingest a third of its speed.
//!
//! Each parsing worker keeps its own [`Shard`] for the run: its hosts and flags interned,
//! per-series [`Dist`]s updated in place, locked once per chunk (and by an export, to copy
//! it). An export merges the shards by host name and series into OTLP data points, cumulative
//! like the SDK's, with the same names, units and attributes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use foldhash::fast::RandomState;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, metric,
};

use super::metrics::{DURATION_BUCKETS, HostCap, attr};
use crate::stats::OVERFLOW_HOST;

/// Duration buckets: one per bound, and one above the last.
const DURATION_SLOTS: usize = DURATION_BUCKETS.len() + 1;

/// Distinct series kept for the run (and by each worker); past it, requests go to one series
/// marked `otel.metric.overflow=true`, as the SDK does past its cardinality limit.
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

/// The run's histograms: every worker's shard.
#[derive(Debug, Default)]
pub struct HttpHistograms {
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
}

/// One worker's series for the run. Its hosts are the exported names only (the host limit's
/// first hosts, and `_other`), so it holds no more than the limit allows.
#[derive(Debug, Default)]
pub struct Shard {
    hosts: HashMap<Box<str>, u32, RandomState>,
    names: Vec<Box<str>>,
    flags: Vec<Box<str>>,
    series: HashMap<(u32, Series), HttpDists, RandomState>,
    /// Requests of series past [`MAX_SERIES`].
    overflow: HttpDists,
}

impl Shard {
    /// The index of `host` as exported: its own name while the host limit has room for it,
    /// else `_other` (true when it is).
    pub fn host(&mut self, host: &str, cap: &HostCap) -> (u32, bool) {
        if let Some(id) = self.hosts.get(host) {
            return (*id, false);
        }
        let name = cap.name(host);
        let folded = name == OVERFLOW_HOST;
        if let Some(id) = self.hosts.get(name) {
            return (*id, folded);
        }
        let id = self.names.len() as u32;
        self.hosts.insert(name.into(), id);
        self.names.push(name.into());
        (id, folded)
    }

    /// The exported name of a host index.
    pub fn name(&self, host: u32) -> &str {
        &self.names[host as usize]
    }

    /// `error.type` for Envoy's response `flags`.
    pub fn flags(&mut self, flags: &str) -> ErrorKey {
        if let Some(i) = self.flags.iter().position(|f| f.as_ref() == flags) {
            return ErrorKey::Flags(i as u32);
        }
        if self.flags.len() >= MAX_FLAGS {
            return ErrorKey::Flags(OTHER_FLAGS);
        }
        self.flags.push(flags.into());
        ErrorKey::Flags(self.flags.len() as u32 - 1)
    }

    /// Every series with its host's name, for tests.
    #[cfg(test)]
    pub(crate) fn dists(&self) -> Vec<(&str, Series, HttpDists)> {
        let mut all: Vec<_> =
            self.series.iter().map(|((h, series), d)| (self.name(*h), *series, *d)).collect();
        all.sort_by_key(|(host, series, _)| (host.to_string(), series.method));
        all
    }

    /// One request of `host` (an index from [`Self::host`]) in `series`.
    pub fn record(&mut self, host: u32, series: Series, request: (Option<f64>, u64, u64)) {
        let (seconds, request_size, response_size) = request;
        let full = self.series.len() >= MAX_SERIES;
        let dists = match self.series.get_mut(&(host, series)) {
            Some(dists) => dists,
            None if full => &mut self.overflow,
            None => self.series.entry((host, series)).or_default(),
        };
        dists.record(seconds, request_size, response_size);
    }
}

/// The shards merged by host name and series, for an export.
#[derive(Debug, Default)]
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
    /// A new worker's shard, kept for the run.
    pub fn shard(&self) -> Arc<Mutex<Shard>> {
        let shard = Arc::new(Mutex::new(Shard::default()));
        if let Ok(mut shards) = self.shards.lock() {
            shards.push(shard.clone());
        }
        shard
    }

    /// The shards merged: each locked in turn, so workers wait for one copy at most.
    fn table(&self) -> Table {
        let shards = self.shards.lock().map(|s| s.clone()).unwrap_or_default();
        let mut table = Table::default();
        for shard in shards {
            if let Ok(shard) = shard.lock() {
                table.absorb(&shard);
            }
        }
        table
    }

    /// The three metrics as OTLP, cumulative from `start_ns` to `now_ns`; a histogram without
    /// data points is left out.
    pub fn export(&self, start_ns: u64, now_ns: u64) -> Vec<Metric> {
        let table = self.table();
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
    fn absorb(&mut self, shard: &Shard) {
        let flags: Vec<u32> = shard.flags.iter().map(|f| self.flag(f)).collect();
        for ((host, key), dists) in &shard.series {
            let mut key = *key;
            if let ErrorKey::Flags(i) = key.error {
                key.error = ErrorKey::Flags(flags.get(i as usize).copied().unwrap_or(OTHER_FLAGS));
            }
            self.merge(shard.name(*host), key, dists);
        }
        self.overflow.merge(&shard.overflow);
    }

    /// The table's index of a flag string.
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
    fn shards_merge_by_host_name_and_flags_text() {
        let histograms = HttpHistograms::default();
        let cap = HostCap::new(10);
        // Two workers that met the same hosts and flags in different orders.
        for order in [["NR", "UF"], ["UF", "NR"]] {
            let shard = histograms.shard();
            let mut shard = shard.lock().unwrap();
            let (b, _) = shard.host("b.com", &cap);
            let (a, _) = shard.host("a.com", &cap);
            for flags in order {
                let error = shard.flags(flags);
                shard.record(a, series(error), (Some(0.1), 1, 2));
            }
            shard.record(b, series(ErrorKey::None), (None, 1, 2));
        }
        let metrics = histograms.export(1, 2);
        assert_eq!(metrics.len(), 3);
        let Some(metric::Data::Histogram(duration)) = &metrics[0].data else {
            panic!("a histogram")
        };
        // b.com had no durations: only a.com's two series have duration points.
        assert_eq!(duration.data_points.len(), 2);
        for point in &duration.data_points {
            assert_eq!((point.count, point.start_time_unix_nano, point.time_unix_nano), (2, 1, 2));
        }
        let Some(metric::Data::Histogram(size)) = &metrics[1].data else { panic!("a histogram") };
        assert_eq!(size.data_points.len(), 3);
    }

    #[test]
    fn hosts_past_the_limit_share_the_other_series() {
        let cap = HostCap::new(1);
        let mut shard = Shard::default();
        assert_eq!(shard.host("a.com", &cap), (0, false));
        assert_eq!(shard.host("b.com", &cap), (1, true));
        assert_eq!(shard.host("c.com", &cap), (1, true));
        assert_eq!((shard.name(0), shard.name(1)), ("a.com", OVERFLOW_HOST));
        // Only exported names are kept.
        assert_eq!(shard.hosts.len(), 2);
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
