//! Per-external-host egress statistics: exact counters, mergeable latency sketches (DDSketch's
//! log buckets, 1 % relative error), bounded top paths and sources, and recent-time windows.
//!
//! Everything merges, so each worker thread keeps its own [`EgressStats`] and the results are
//! combined at the end. Time comes from the records and the caller (`now`), never the wall
//! clock, so tests and replays are exact.

pub mod sketch;
pub mod topk;
pub mod window;
pub mod ztunnel;

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};

use crate::findings::{FindingReport, Findings, sort_report};
use crate::netrange::InternalRanges;
use crate::parse::derived::{ClusterName, host_of_address, port_of, split_at_byte, tls_originated};
use crate::parse::time::format_rfc3339_ms;
use crate::parse::{Entry, RejectReason};
pub use sketch::LatencySketch;
use topk::TopK;
pub use window::Window;
use window::{WindowCell, Windows};
use ztunnel::{ZtunnelDestinationReport, ZtunnelStats};

/// `0` (no response), `1xx` … `5xx`.
pub const STATUS_CLASSES: usize = 6;
pub const STATUS_CLASS_NAMES: [&str; STATUS_CLASSES] = ["0", "1xx", "2xx", "3xx", "4xx", "5xx"];
/// The host every host past [`StatsConfig::max_hosts`] is counted under.
pub const OVERFLOW_HOST: &str = "_other";
/// Relative accuracy of every latency sketch.
pub const SKETCH_RELATIVE_ACCURACY: f64 = sketch::RELATIVE_ACCURACY;

/// Status class index of a response code; codes outside 100–599 count as class `0` below
/// and `5xx` above (Envoy prints 0 when there was no response).
pub fn status_class(code: Option<u16>) -> usize {
    usize::from(code.unwrap_or(0) / 100).min(STATUS_CLASSES - 1)
}

/// The facts of one record that counters and windows use.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub ts_ns: i64,
    pub response_code: Option<u16>,
    pub error: bool,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub tls_originated: bool,
    pub duration_ms: Option<f64>,
}

/// The counters every view of a host keeps, since start or in a window slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub status: [u64; STATUS_CLASSES],
    pub tls_originated: u64,
}

impl Counters {
    pub fn add(&mut self, obs: &Observation) {
        self.requests += 1;
        self.errors += u64::from(obs.error);
        self.bytes_sent += obs.bytes_sent;
        self.bytes_received += obs.bytes_received;
        self.status[status_class(obs.response_code)] += 1;
        self.tls_originated += u64::from(obs.tls_originated);
    }

    pub fn merge(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        self.tls_originated += other.tls_originated;
    }
}

/// Limits that keep memory bounded whatever the input.
#[derive(Debug, Clone, Copy)]
pub struct StatsConfig {
    /// Distinct hosts tracked; the rest are counted under [`OVERFLOW_HOST`].
    pub max_hosts: usize,
    /// Paths and source IPs tracked per host (Space-Saving capacity).
    pub top_k_capacity: usize,
    /// Distinct response flags tracked per host; the rest count as `_other`.
    pub max_flags: usize,
    /// Keep the 1 m / 5 m / 1 h windows. They cost a tenth of the parse time and much cache;
    /// a one-shot report over all time does without.
    pub track_windows: bool,
    /// What counts as inside the cluster: a ztunnel connection direct to anything else went
    /// around every waypoint.
    pub internal: InternalRanges,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            max_hosts: 20_000,
            top_k_capacity: 64,
            max_flags: 32,
            track_windows: true,
            internal: InternalRanges::default(),
        }
    }
}

/// Everything known about one external host since start.
#[derive(Debug, Clone)]
pub struct HostStats {
    pub counters: Counters,
    pub response_flags: HashMap<Box<str>, u64, RandomState>,
    pub duration: LatencySketch,
    pub upstream_service_time: LatencySketch,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    pub paths: TopK,
    pub sources: TopK,
}

impl HostStats {
    fn new(config: &StatsConfig) -> Self {
        HostStats {
            counters: Counters::default(),
            response_flags: HashMap::default(),
            duration: LatencySketch::default(),
            upstream_service_time: LatencySketch::default(),
            first_seen_ns: i64::MAX,
            last_seen_ns: i64::MIN,
            paths: TopK::new(config.top_k_capacity),
            sources: TopK::new(config.top_k_capacity),
        }
    }

    fn add_flag(&mut self, flag: &str, n: u64, max_flags: usize) {
        if let Some(count) = self.response_flags.get_mut(flag) {
            *count += n;
        } else if self.response_flags.len() < max_flags {
            self.response_flags.insert(flag.into(), n);
        } else {
            *self.response_flags.entry(OVERFLOW_HOST.into()).or_default() += n;
        }
    }

    fn merge(&mut self, other: &HostStats, config: &StatsConfig) {
        self.counters.merge(&other.counters);
        for (flag, n) in &other.response_flags {
            self.add_flag(flag, *n, config.max_flags);
        }
        self.duration.merge(&other.duration);
        self.upstream_service_time.merge(&other.upstream_service_time);
        self.first_seen_ns = self.first_seen_ns.min(other.first_seen_ns);
        self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
        self.paths.merge(&other.paths);
        self.sources.merge(&other.sources);
    }
}

/// Whether an entry counts as a failed request: a 5xx, or no response at all where one was
/// expected (an HTTP request, or a connection Envoy flagged). A TCP passthrough entry has code
/// 0 by nature and is not an error unless flagged.
pub fn is_error(entry: &Entry<'_>) -> bool {
    match entry.response_code.unwrap_or(0) {
        0 => entry.method.is_some() || entry.response_flags.is_some(),
        code => code >= 500,
    }
}

/// Stats of a whole run: lines, records, rejects and hosts.
#[derive(Debug, Clone)]
pub struct EgressStats {
    config: StatsConfig,
    pub lines: u64,
    pub records: u64,
    /// ztunnel connection lines (not waypoint requests: summarised per destination apart).
    pub ztunnel_connections: u64,
    ztunnel: ZtunnelStats,
    /// Bypass, unregistered and blocked egress, failing TLS origination.
    pub findings: Findings,
    /// Requests sent upstream in plaintext on port 80: `tls_not_originated` for the hosts
    /// whose TLS the waypoint originates (see [`EgressStats::originates_tls`]). Kept apart, so
    /// that plain HTTP egress, which is most, never crowds the other findings out.
    pub plaintext: Findings,
    pub rejects: HashMap<RejectReason, u64, RandomState>,
    /// Hosts that were counted under [`OVERFLOW_HOST`] because the host table was full.
    pub overflowed_records: u64,
    index: HashMap<Box<str>, u32, RandomState>,
    names: Vec<Box<str>>,
    hosts: Vec<HostStats>,
    /// `None` unless `config.track_windows`.
    windows: Option<Windows>,
    /// The newest record time seen: the log's own clock.
    pub latest_ns: Option<i64>,
}

impl Default for EgressStats {
    fn default() -> Self {
        EgressStats::new(StatsConfig::default())
    }
}

impl EgressStats {
    pub fn new(config: StatsConfig) -> Self {
        EgressStats {
            config,
            lines: 0,
            records: 0,
            ztunnel_connections: 0,
            ztunnel: ZtunnelStats::new(config.max_hosts, config.top_k_capacity, config.internal),
            findings: Findings::default(),
            plaintext: Findings::default(),
            rejects: HashMap::default(),
            overflowed_records: 0,
            index: HashMap::default(),
            names: Vec::new(),
            hosts: Vec::new(),
            windows: config.track_windows.then(Windows::default),
            latest_ns: None,
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> StatsConfig {
        self.config
    }

    fn host_id(&mut self, host: &str) -> u32 {
        if let Some(id) = self.index.get(host) {
            return *id;
        }
        let overflow = self.hosts.len() >= self.config.max_hosts;
        let name = if overflow { OVERFLOW_HOST } else { host };
        if let Some(id) = self.index.get(name) {
            return *id;
        }
        let id = self.hosts.len() as u32;
        self.index.insert(name.into(), id);
        self.names.push(name.into());
        self.hosts.push(HostStats::new(&self.config));
        id
    }

    /// What counts as inside the cluster.
    pub fn internal(&self) -> InternalRanges {
        self.config.internal
    }

    pub fn record_reject(&mut self, reason: RejectReason) {
        self.lines += 1;
        *self.rejects.entry(reason).or_default() += 1;
    }

    pub fn record_ztunnel(&mut self, conn: &crate::parse::ztunnel::Connection<'_>) {
        self.lines += 1;
        self.ztunnel_connections += 1;
        self.ztunnel.record(conn);
    }

    /// Counts one record at time `ts_ns` (see `LineContext::record_ts`).
    pub fn record(&mut self, entry: &Entry<'_>, ts_ns: i64) {
        self.lines += 1;
        self.records += 1;
        self.latest_ns = Some(self.latest_ns.map_or(ts_ns, |t| t.max(ts_ns)));
        let id = self.host_id(entry.host().unwrap_or("-"));
        if self.names[id as usize].as_ref() == OVERFLOW_HOST {
            self.overflowed_records += 1;
        }
        let service_port =
            entry.upstream_cluster.as_deref().and_then(ClusterName::parse).and_then(|c| c.port);
        let upstream_port = entry.upstream_host.as_deref().and_then(port_of);
        let obs = Observation {
            ts_ns,
            response_code: entry.response_code,
            error: is_error(entry),
            bytes_sent: entry.bytes_sent.unwrap_or(0),
            bytes_received: entry.bytes_received.unwrap_or(0),
            tls_originated: tls_originated(service_port, upstream_port),
            duration_ms: entry.duration_ms,
        };
        if let Some(windows) = self.windows.as_mut() {
            windows.record(id, &obs, entry.response_flags.as_deref());
        }
        let max_flags = self.config.max_flags;
        let host = &mut self.hosts[id as usize];
        host.counters.add(&obs);
        if let Some(flags) = entry.response_flags.as_deref() {
            for flag in flags.split(',').filter(|f| !f.is_empty()) {
                host.add_flag(flag, 1, max_flags);
            }
        }
        if let Some(ms) = obs.duration_ms {
            host.duration.add(ms);
        }
        if let Some(ms) = entry.upstream_service_time_ms {
            host.upstream_service_time.add(ms);
        }
        host.first_seen_ns = host.first_seen_ns.min(ts_ns);
        host.last_seen_ns = host.last_seen_ns.max(ts_ns);
        if let Some(path) = entry.path.as_deref() {
            // Query strings make every path unique; group by the path alone.
            host.paths.add(split_at_byte(path, b'?').map_or(path, |(p, _)| p), 1);
        }
        if let Some(address) = entry.downstream_remote_address.as_deref() {
            host.sources.add(host_of_address(address), 1);
        }
    }

    /// Every finding, `tls_not_originated` of the hosts whose TLS the waypoint originates.
    fn findings_report(&self) -> Vec<FindingReport> {
        let mut report = self.findings.report(|_| true);
        report.extend(self.plaintext.report(|host| self.originates_tls(host)));
        sort_report(&mut report);
        report
    }

    /// Whether the waypoint originated TLS for any of `host`'s requests: its intent, read from
    /// the traffic when no mesh view tells it.
    pub fn originates_tls(&self, host: &str) -> bool {
        self.index.get(host).is_some_and(|id| self.hosts[*id as usize].counters.tls_originated > 0)
    }

    /// Adds another run's stats (another worker's share of the same input).
    pub fn merge(&mut self, other: &EgressStats) {
        self.lines += other.lines;
        self.records += other.records;
        self.ztunnel_connections += other.ztunnel_connections;
        self.ztunnel.merge(&other.ztunnel);
        self.findings.merge(&other.findings);
        self.plaintext.merge(&other.plaintext);
        self.overflowed_records += other.overflowed_records;
        for (reason, n) in &other.rejects {
            *self.rejects.entry(*reason).or_default() += n;
        }
        let remap: Vec<u32> = other.names.iter().map(|name| self.host_id(name)).collect();
        for ((theirs, ours), name) in other.hosts.iter().zip(&remap).zip(&other.names) {
            if self.names[*ours as usize].as_ref() == OVERFLOW_HOST
                && name.as_ref() != OVERFLOW_HOST
            {
                // Full here though not there: these records go under the overflow host now.
                self.overflowed_records += theirs.counters.requests;
            }
            self.hosts[*ours as usize].merge(theirs, &self.config);
        }
        if let (Some(ours), Some(theirs)) = (self.windows.as_mut(), other.windows.as_ref()) {
            ours.merge(theirs, &remap);
        }
        self.latest_ns = match (self.latest_ns, other.latest_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// `host` over `window` (the last hour's series for `all`), ending at `now_ns` on the log's
    /// clock (default: the newest record seen); `None` for a host not tracked.
    pub fn host_detail(
        &self,
        host: &str,
        window: Window,
        now_ns: Option<i64>,
    ) -> Option<HostDetail> {
        let id = *self.index.get(host)?;
        let now = now_ns.or(self.latest_ns).unwrap_or(0);
        let seconds = window.seconds().unwrap_or(3600);
        let (slot_seconds, requests) =
            self.windows.as_ref().map_or((seconds, Vec::new()), |w| w.series(id, now, seconds));
        let sketch = match window.seconds() {
            None => self.hosts[id as usize].duration.clone(),
            Some(seconds) => {
                let cells = self.windows.as_ref().map(|w| w.collect(now, seconds));
                cells.and_then(|mut c| c.remove(&id)).map(|c| c.duration).unwrap_or_default()
            }
        };
        let mut latency_ms: Vec<(f64, f64)> =
            PROFILE.iter().filter_map(|q| Some((*q, sketch.quantile(*q)?))).collect();
        if let Some(max) = sketch.max() {
            latency_ms.push((1.0, max));
        }
        Some(HostDetail {
            host: host.to_owned(),
            window: window.as_str().to_owned(),
            slot_seconds,
            requests,
            latency_ms,
            upstreams: Vec::new(),
        })
    }

    /// The report over `window`, ending at `now_ns` on the log's clock (default: the newest
    /// record seen). A windowed report of a table that does not track windows lists no hosts.
    pub fn report(&self, window: Window, now_ns: Option<i64>) -> StatsReport {
        self.report_with(window, now_ns, |all| {
            let mut hosts: Vec<HostReport> = all.collect();
            hosts.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.host.cmp(&b.host)));
            hosts
        })
    }

    /// [`Self::report`] with the hosts `choose` takes, in its order, of every host's report
    /// made one at a time (so a choice of a few holds only a few).
    pub fn report_with(
        &self,
        window: Window,
        now_ns: Option<i64>,
        choose: impl FnOnce(&mut dyn Iterator<Item = HostReport>) -> Vec<HostReport>,
    ) -> StatsReport {
        let windowed = window.seconds().map(|seconds| {
            let now = now_ns.or(self.latest_ns).unwrap_or(0);
            (seconds, self.windows.as_ref().map(|w| w.collect(now, seconds)).unwrap_or_default())
        });
        let hosts = match &windowed {
            None => choose(
                &mut self.hosts.iter().zip(&self.names).map(|(h, n)| HostReport::since_start(n, h)),
            ),
            Some((seconds, cells)) => {
                choose(&mut cells.iter().map(|(id, cell)| {
                    HostReport::windowed(&self.names[*id as usize], cell, *seconds)
                }))
            }
        };
        let mut rejects = BTreeMap::new();
        for (reason, n) in &self.rejects {
            *rejects.entry(reason.as_str().into_owned()).or_default() += n;
        }
        let expected_noise = self
            .rejects
            .iter()
            .filter(|(reason, _)| reason.is_expected_noise())
            .map(|(_, n)| n)
            .sum();
        StatsReport {
            window: window.as_str().to_owned(),
            lines: self.lines,
            records: self.records,
            ztunnel_connections: self.ztunnel_connections,
            // ztunnel connections are not kept in time windows: all time only.
            ztunnel_destinations: match window.seconds() {
                None => self.ztunnel.report(),
                Some(_) => Vec::new(),
            },
            findings: self.findings_report(),
            findings_dropped: self.findings.dropped + self.plaintext.dropped,
            rejects,
            expected_noise,
            overflowed_records: self.overflowed_records,
            hosts,
        }
    }
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(sketch: &LatencySketch) -> Option<Percentiles> {
        Some(Percentiles {
            p50: sketch.quantile(0.50)?,
            p90: sketch.quantile(0.90)?,
            p99: sketch.quantile(0.99)?,
            max: sketch.max()?,
        })
    }
}

/// One value of a top-k list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopEntry {
    pub value: String,
    pub count: u64,
}

/// One host's line of a report; the key names are the `stats -o json` contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub host: String,
    pub requests: u64,
    pub requests_per_second: Option<f64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub status: BTreeMap<String, u64>,
    pub errors: u64,
    pub error_rate: f64,
    pub response_flags: BTreeMap<String, u64>,
    pub duration_ms: Option<Percentiles>,
    pub upstream_service_time_ms: Option<Percentiles>,
    pub tls_originated: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub top_paths: Vec<TopEntry>,
    pub top_sources: Vec<TopEntry>,
    /// Whether the top lists are exact counts: false once more distinct values came than
    /// the bounded tracker holds (its counts are then upper bounds).
    pub top_exact: bool,
}

/// How many top paths and sources a report lists.
const REPORT_TOP: usize = 5;

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn top_list(top: &TopK) -> Vec<TopEntry> {
    top.top(REPORT_TOP)
        .into_iter()
        .map(|(value, count)| TopEntry { value: value.to_owned(), count })
        .collect()
}

impl HostReport {
    /// The fields both kinds of report take from counters.
    fn from_counters(name: &str, c: &Counters, requests_per_second: Option<f64>) -> HostReport {
        HostReport {
            host: name.to_owned(),
            requests: c.requests,
            requests_per_second,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            status: STATUS_CLASS_NAMES.iter().map(|c| c.to_string()).zip(c.status).collect(),
            errors: c.errors,
            error_rate: rate(c.errors, c.requests),
            response_flags: BTreeMap::new(),
            duration_ms: None,
            upstream_service_time_ms: None,
            tls_originated: c.tls_originated,
            first_seen: None,
            last_seen: None,
            top_paths: Vec::new(),
            top_sources: Vec::new(),
            top_exact: true,
        }
    }

    fn since_start(name: &str, h: &HostStats) -> HostReport {
        let c = &h.counters;
        let span_s = (h.last_seen_ns - h.first_seen_ns) as f64 / 1e9;
        let rps = (span_s >= 1.0).then(|| c.requests as f64 / span_s);
        HostReport {
            response_flags: h.response_flags.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            duration_ms: Percentiles::of(&h.duration),
            upstream_service_time_ms: Percentiles::of(&h.upstream_service_time),
            first_seen: (c.requests > 0).then(|| format_rfc3339_ms(h.first_seen_ns)),
            last_seen: (c.requests > 0).then(|| format_rfc3339_ms(h.last_seen_ns)),
            top_paths: top_list(&h.paths),
            top_sources: top_list(&h.sources),
            top_exact: h.paths.is_exact() && h.sources.is_exact(),
            ..HostReport::from_counters(name, c, rps)
        }
    }

    fn windowed(name: &str, cell: &WindowCell, seconds: i64) -> HostReport {
        let rps = Some(cell.counters.requests as f64 / seconds as f64);
        HostReport {
            duration_ms: Percentiles::of(&cell.duration),
            response_flags: cell.flags.iter().collect(),
            ..HostReport::from_counters(name, &cell.counters, rps)
        }
    }

    /// The most frequent response flag, for one-line summaries.
    pub fn top_flag(&self) -> Option<(&str, u64)> {
        self.response_flags
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(k, v)| (k.as_str(), *v))
    }
}

/// One host over a window, for a closer look: its requests over time and its latency
/// profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostDetail {
    pub host: String,
    pub window: String,
    /// The length of each `requests` slot, in seconds.
    pub slot_seconds: i64,
    /// Requests per slot, oldest first, up to the newest record (the last hour for `all`).
    pub requests: Vec<u64>,
    /// `(quantile, ms)`: p10 … p99.9, then the maximum (quantile 1).
    pub latency_ms: Vec<(f64, f64)>,
    /// The upstream addresses (IP:port) it went to, most first, since the start; kept by the
    /// collector's live view only (empty elsewhere).
    #[serde(default)]
    pub upstreams: Vec<TopEntry>,
}

/// The quantiles of [`HostDetail::latency_ms`].
const PROFILE: [f64; 8] = [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999];

/// A whole report; serialises to the `stats -o json` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    pub window: String,
    pub lines: u64,
    pub records: u64,
    /// ztunnel connection lines seen (stored by `collect` in `ztunnel_conn`).
    pub ztunnel_connections: u64,
    /// Outbound ztunnel connections per destination, most first (window `all` only).
    pub ztunnel_destinations: Vec<ZtunnelDestinationReport>,
    /// What to act on, most severe first (all time, whatever the window).
    pub findings: Vec<FindingReport>,
    /// Evidence of findings past the limit kept.
    pub findings_dropped: u64,
    pub rejects: BTreeMap<String, u64>,
    /// Rejects that a proxy container is expected to write (`envoy_log`, `empty`).
    pub expected_noise: u64,
    pub overflowed_records: u64,
    pub hosts: Vec<HostReport>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Projection, parse_message};

    const T0: i64 = 1_755_509_790_000_000_000;

    fn entry(line: &str) -> Entry<'_> {
        parse_message(line.as_bytes(), Projection::Stats).unwrap()
    }

    #[test]
    fn counts_bytes_status_flags_and_tls_per_host() {
        let mut stats = EgressStats::default();
        let lines = [
            r#"{"authority_for":"aliyun.com","response_code":301,"bytes_sent":239,"bytes_received":5,"duration":24,"method":"GET","path":"/?a=1","upstream_cluster":"inbound-vip|80|http|aliyun.com;","upstream_host":"140.205.135.3:443","downstream_remote_address":"172.16.5.26:1"}"#,
            r#"{"authority_for":"aliyun.com","response_code":503,"response_flags":"UF,URX","bytes_sent":19,"duration":3,"method":"GET","path":"/"}"#,
            r#"{"authority":"api.github.com","response_code":0,"response_flags":"UH","method":"GET"}"#,
            r#"{"authority_for":"sts.amazonaws.com","response_code":0,"bytes_sent":100}"#,
        ];
        for (i, line) in lines.iter().enumerate() {
            stats.record(&entry(line), T0 + i as i64);
        }
        stats.record_reject(RejectReason::EnvoyLog);
        let report = stats.report(Window::All, None);
        assert_eq!((report.lines, report.records, report.expected_noise), (5, 4, 1));
        let host = |name: &str| report.hosts.iter().find(|h| h.host == name).unwrap();
        let aliyun = host("aliyun.com");
        assert_eq!((aliyun.requests, aliyun.bytes_sent, aliyun.bytes_received), (2, 258, 5));
        assert_eq!((aliyun.status["3xx"], aliyun.status["5xx"], aliyun.errors), (1, 1, 1));
        assert_eq!(aliyun.response_flags, BTreeMap::from([("UF".into(), 1), ("URX".into(), 1)]));
        assert_eq!(aliyun.tls_originated, 1);
        assert_eq!(aliyun.top_paths, [TopEntry { value: "/".into(), count: 2 }]);
        assert_eq!(aliyun.top_sources[0].value, "172.16.5.26");
        assert_eq!((host("api.github.com").status["0"], host("api.github.com").errors), (1, 1));
        assert_eq!(host("sts.amazonaws.com").errors, 0, "plain TCP passthrough is not an error");
    }

    #[test]
    fn a_host_detail_counts_requests_per_slot_up_to_the_newest() {
        let mut stats = EgressStats::default();
        let line =
            r#"{"authority_for":"aliyun.com","response_code":200,"duration":10,"method":"GET"}"#;
        // Two requests in the newest 10 s slot, one two slots before, none between.
        for offset_s in [0, 20, 20] {
            stats.record(&entry(line), T0 + offset_s * 1_000_000_000);
        }
        let detail = stats.host_detail("aliyun.com", Window::OneMinute, None).expect("tracked");
        assert_eq!(detail.slot_seconds, 10);
        assert_eq!(detail.requests.iter().rev().take(3).collect::<Vec<_>>(), [&2, &0, &1]);
        assert_eq!(detail.requests.iter().sum::<u64>(), 3);
        assert_eq!(detail.latency_ms.last().map(|(q, _)| *q), Some(1.0));
        assert!(stats.host_detail("nowhere.example", Window::All, None).is_none());
    }

    #[test]
    fn merged_workers_equal_one_worker() {
        let lines: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    r#"{{"authority":"h{}.com","response_code":{},"bytes_sent":{},"duration":{},"path":"/p{}"}}"#,
                    i % 7,
                    [200, 404, 503][i % 3],
                    i,
                    i % 50,
                    i % 4
                )
            })
            .collect();
        let mut one = EgressStats::default();
        let mut parts = [EgressStats::default(), EgressStats::default()];
        for (i, line) in lines.iter().enumerate() {
            let ts = T0 + i as i64 * 1_000_000_000;
            one.record(&entry(line), ts);
            parts[i % 2].record(&entry(line), ts);
        }
        let [mut a, b] = parts;
        a.merge(&b);
        assert_eq!(one.report(Window::All, None), a.report(Window::All, None));
        assert_eq!(one.report(Window::OneMinute, None), a.report(Window::OneMinute, None));
    }

    #[test]
    fn hosts_past_the_cap_fold_into_other_and_are_counted() {
        let config = StatsConfig { max_hosts: 2, ..StatsConfig::default() };
        let mut stats = EgressStats::new(config);
        for host in ["a.com", "b.com", "c.com", "d.com", "a.com"] {
            stats.record(&entry(&format!(r#"{{"authority":"{host}"}}"#)), T0);
        }
        let report = stats.report(Window::All, None);
        let names: Vec<_> = report.hosts.iter().map(|h| (h.host.as_str(), h.requests)).collect();
        assert_eq!(names, [("_other", 2), ("a.com", 2), ("b.com", 1)]);
        assert_eq!(report.overflowed_records, 2);
    }

    #[test]
    fn windows_can_be_left_out() {
        let config = StatsConfig { track_windows: false, ..StatsConfig::default() };
        let mut stats = EgressStats::new(config);
        stats.record(&entry(r#"{"authority":"a.com"}"#), T0);
        assert_eq!(stats.report(Window::All, None).hosts.len(), 1);
        assert!(stats.report(Window::OneMinute, None).hosts.is_empty());
    }

    #[test]
    fn windows_follow_the_log_clock() {
        let mut stats = EgressStats::default();
        let e = entry(r#"{"authority":"a.com","response_code":200,"duration":5}"#);
        for age_s in [0, 10, 100, 1000] {
            stats.record(&e, T0 - age_s * 1_000_000_000);
        }
        let requests = |w| stats.report(w, Some(T0)).hosts.first().map_or(0, |h| h.requests);
        assert_eq!(requests(Window::OneMinute), 2);
        assert_eq!(requests(Window::FiveMinutes), 3);
        assert_eq!(requests(Window::OneHour), 4);
        assert_eq!(requests(Window::All), 4);
    }
}
