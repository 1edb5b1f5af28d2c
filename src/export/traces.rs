//! A CLIENT span per waypoint access-log record, for the records worth a trace.
//!
//! **Which**: every failure (status ≥ 500, or no response where one was expected), every
//! record Envoy flagged, every slow one (`slow` and above), every one that is a finding's
//! evidence; of the rest, a `ratio` of traces chosen by trace id, so the choice is the same in
//! every run and on every collector.
//!
//! **Ids**: the trace id is the logged W3C `traceparent`'s or B3 `x-b3-traceid`'s when the
//! log carries one (extra keys), else Envoy's `x-request-id` when it is a UUID (its 16
//! bytes), else a hash of the request; the span id hashes the trace id with the record's start
//! time and host. A record exported twice (a re-export after a restart) gets the same ids, so
//! a tracing backend keeps one span.
//!
//! Spans go to the exporter's thread over a bounded queue; a full queue drops the chunk's
//! spans, counted.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::metrics::{error_type, ports};
use crate::parse::Entry;
use crate::stats::is_error;

/// Which records get a span.
#[derive(Debug, Clone, Copy)]
pub struct TraceRule {
    /// The share of ordinary records kept, 0 to 1.
    pub ratio: f64,
    /// Records this slow or slower are always kept.
    pub slow: Duration,
}

impl Default for TraceRule {
    fn default() -> Self {
        TraceRule { ratio: 0.01, slow: Duration::from_secs(1) }
    }
}

impl TraceRule {
    /// Whether the record with `trace_id` gets a span; `finding` when it is a finding's
    /// evidence.
    pub fn keep(&self, entry: &Entry<'_>, trace_id: TraceId, finding: bool) -> bool {
        let code = entry.response_code.unwrap_or(0);
        let flagged = entry.response_flags.as_deref().is_some_and(|f| !f.is_empty());
        let slow = entry.duration_ms.is_some_and(|ms| ms >= self.slow.as_secs_f64() * 1000.0);
        finding
            || flagged
            || slow
            || code >= 500
            || is_error(entry)
            || ratio_keeps(self.ratio, trace_id)
    }
}

/// The ratio sampler's rule: the trace id's low 8 bytes, as an unsigned integer, below
/// `ratio` × 2⁶⁴.
pub fn ratio_keeps(ratio: f64, trace_id: TraceId) -> bool {
    let low = u128::from_be_bytes(trace_id.to_bytes()) as u64;
    let threshold = (ratio.clamp(0.0, 1.0) * 18_446_744_073_709_551_616.0) as u128;
    u128::from(low) < threshold
}

/// A record's trace id, and the parent span id when the log carried the caller's.
pub fn trace_ids(entry: &Entry<'_>, ts_ns: i64) -> (TraceId, SpanId) {
    if let Some(ids) = entry.extra.as_deref().and_then(logged_context) {
        return ids;
    }
    if let Some(id) = entry.request_id.as_deref().and_then(uuid) {
        return (TraceId::from(id), SpanId::INVALID);
    }
    // No usable id: a hash of what tells this request from others.
    let mut hash = Fnv::default();
    match entry.request_id.as_deref() {
        Some(id) => hash.write(id.as_bytes()),
        None => {
            hash.write(&ts_ns.to_be_bytes());
            for part in
                [entry.host(), entry.path.as_deref(), entry.downstream_remote_address.as_deref()]
            {
                hash.write(part.unwrap_or("").as_bytes());
                hash.write(&[0x1f]);
            }
        }
    }
    (TraceId::from(nonzero128(hash.finish128())), SpanId::INVALID)
}

/// The span id of a record: its trace id, start time and host, hashed.
pub fn span_id(trace_id: TraceId, ts_ns: i64, host: &str) -> SpanId {
    let mut hash = Fnv::default();
    hash.write(&trace_id.to_bytes());
    hash.write(&ts_ns.to_be_bytes());
    hash.write(host.as_bytes());
    SpanId::from(hash.finish().max(1))
}

/// `traceparent` or `x-b3-traceid` (with `x-b3-spanid`) among a record's extra keys.
fn logged_context(extra: &str) -> Option<(TraceId, SpanId)> {
    if !(extra.contains("traceparent") || extra.contains("x-b3-traceid")) {
        return None;
    }
    let keys: serde_json::Map<String, serde_json::Value> = serde_json::from_str(extra).ok()?;
    let text = |key: &str| keys.get(key).and_then(serde_json::Value::as_str);
    if let Some(parent) = text("traceparent") {
        // version-traceid-parentid-flags
        let mut parts = parent.split('-');
        let (_, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
        let trace = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
        let span = SpanId::from_hex(span).unwrap_or(SpanId::INVALID);
        return Some((trace, span));
    }
    let trace = TraceId::from_hex(text("x-b3-traceid")?).ok().filter(|t| *t != TraceId::INVALID)?;
    let span =
        text("x-b3-spanid").and_then(|s| SpanId::from_hex(s).ok()).unwrap_or(SpanId::INVALID);
    Some((trace, span))
}

/// A UUID's 16 bytes (`8-4-4-4-12` hex digits).
fn uuid(text: &str) -> Option<u128> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
        return None;
    }
    let mut id: u128 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            continue;
        }
        id = (id << 4) | u128::from((b as char).to_digit(16)?);
    }
    Some(id).filter(|id| *id != 0)
}

fn nonzero128(n: u128) -> u128 {
    n.max(1)
}

/// FNV-1a: stable across builds and platforms, which ids must be (a `Hasher` with a random
/// or version-dependent seed would give a re-export new ids).
#[derive(Debug, Clone, Copy)]
struct Fnv(u64, u64);

impl Default for Fnv {
    fn default() -> Self {
        // The 64-bit offset basis, and a second lane started elsewhere for 128 bits.
        Fnv(0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142)
    }
}

impl Fnv {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Fnv::PRIME);
            self.1 = (self.1 ^ u64::from(b)).wrapping_mul(Fnv::PRIME).rotate_left(5);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }

    fn finish128(&self) -> u128 {
        (u128::from(self.0) << 64) | u128::from(self.1)
    }
}

/// The span of a record at `ts_ns`, with the ids [`trace_ids`] gives.
pub fn span(
    entry: &Entry<'_>,
    ts_ns: i64,
    (trace_id, parent): (TraceId, SpanId),
    scope: &InstrumentationScope,
) -> SpanData {
    let host = entry.host().unwrap_or("-");
    let method = entry.method.as_deref();
    let known = super::metrics::known_method(method);
    let (service_port, _) = ports(entry);
    let mut attributes = vec![
        KeyValue::new("server.address", host.to_owned()),
        KeyValue::new("http.request.method", known),
    ];
    if known == "_OTHER"
        && let Some(method) = method
    {
        attributes.push(KeyValue::new("http.request.method_original", method.to_owned()));
    }
    if let Some(port) = service_port {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    if let Some(path) = entry.path.as_deref() {
        let port = match service_port {
            Some(80) | None => String::new(),
            Some(port) => format!(":{port}"),
        };
        attributes.push(KeyValue::new("url.full", format!("http://{host}{port}{path}")));
    }
    if let Some(code) = entry.response_code.filter(|c| *c != 0) {
        attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
    }
    if let Some(upstream) = entry.upstream_host.as_deref() {
        let address = crate::parse::derived::host_of_address(upstream);
        attributes.push(KeyValue::new("network.peer.address", address.to_owned()));
    }
    let text = [
        ("user_agent.original", entry.user_agent.as_deref()),
        ("istio.upstream_cluster", entry.upstream_cluster.as_deref()),
        ("istio.response_flags", entry.response_flags.as_deref()),
    ];
    for (key, value) in text {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value.to_owned()));
        }
    }
    let code = entry.response_code.unwrap_or(0);
    let status = match error_type(entry) {
        Some(error) if code >= 400 || is_error(entry) => {
            attributes.push(KeyValue::new("error.type", error.clone()));
            Status::Error { description: Cow::Owned(error) }
        }
        _ => Status::Unset,
    };
    let start = UNIX_EPOCH + Duration::from_nanos(ts_ns.max(0) as u64);
    let took = Duration::from_secs_f64(entry.duration_ms.unwrap_or(0.0).max(0.0) / 1000.0);
    let span_id = span_id(trace_id, ts_ns, host);
    let name = if known == "_OTHER" { "HTTP" } else { known };
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: parent != SpanId::INVALID,
        span_kind: SpanKind::Client,
        name: Cow::Borrowed(name),
        start_time: start,
        end_time: start + took,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn unix_nanos(time: SystemTime) -> u128 {
        time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    }

    fn get(request_id: &str) -> Entry<'static> {
        Entry {
            authority: Some("aliyun.com".into()),
            method: Some("GET".into()),
            path: Some("/index.html?a=1".into()),
            response_code: Some(200),
            duration_ms: Some(12.0),
            upstream_cluster: Some("outbound|80||aliyun.com".into()),
            upstream_host: Some("106.11.248.146:443".into()),
            request_id: Some(request_id.to_owned().into()),
            ..Entry::default()
        }
    }

    #[test]
    fn a_uuid_request_id_is_the_trace_id_and_ids_are_stable() {
        let entry = get("0b9c3f0e-6a4f-4f8e-9d2e-7a1f3c5b9e01");
        let (trace, parent) = trace_ids(&entry, 1);
        assert_eq!(trace.to_string(), "0b9c3f0e6a4f4f8e9d2e7a1f3c5b9e01");
        assert_eq!(parent, SpanId::INVALID);
        assert_eq!(span_id(trace, 1, "aliyun.com"), span_id(trace, 1, "aliyun.com"));
        assert_ne!(span_id(trace, 1, "aliyun.com"), span_id(trace, 2, "aliyun.com"));
        // Not a UUID: hashed, the same every time.
        let other = get("req-42");
        assert_eq!(trace_ids(&other, 1), trace_ids(&other, 9));
        assert_ne!(trace_ids(&other, 1).0, TraceId::INVALID);
    }

    #[test]
    fn a_logged_traceparent_wins_and_names_the_parent() {
        let entry = Entry {
            extra: Some(
                r#"{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#
                    .into(),
            ),
            ..get("0b9c3f0e-6a4f-4f8e-9d2e-7a1f3c5b9e01")
        };
        let (trace, parent) = trace_ids(&entry, 1);
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn failures_flags_slow_and_findings_are_always_kept() {
        let rule = TraceRule { ratio: 0.0, slow: Duration::from_millis(500) };
        let id = trace_ids(&get("x"), 0).0;
        let ok = get("x");
        assert!(!rule.keep(&ok, id, false));
        assert!(rule.keep(&ok, id, true));
        assert!(rule.keep(&Entry { response_code: Some(503), ..ok.clone() }, id, false));
        assert!(rule.keep(&Entry { response_flags: Some("UF".into()), ..ok.clone() }, id, false));
        assert!(rule.keep(&Entry { duration_ms: Some(500.0), ..ok.clone() }, id, false));
        assert!(TraceRule { ratio: 1.0, ..rule }.keep(&ok, id, false));
    }

    #[test]
    fn the_ratio_keeps_its_share_of_trace_ids() {
        let kept = (0..100_000u64)
            .filter(|i| {
                let mut hash = Fnv::default();
                hash.write(&i.to_be_bytes());
                ratio_keeps(0.1, TraceId::from(hash.finish128()))
            })
            .count();
        assert!((9_000..11_000).contains(&kept), "{kept}");
    }

    #[test]
    fn a_span_carries_the_conventions_attributes_and_an_error_status() {
        let scope = InstrumentationScope::builder("egresslens").build();
        let entry =
            Entry { response_code: Some(503), response_flags: Some("UF".into()), ..get("x") };
        let span = span(&entry, 1_000_000_000, trace_ids(&entry, 0), &scope);
        let attribute = |key: &str| {
            span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
        };
        assert_eq!(span.name, "GET");
        assert_eq!(span.span_kind, SpanKind::Client);
        assert_eq!(attribute("url.full").as_deref(), Some("http://aliyun.com/index.html?a=1"));
        assert_eq!(attribute("network.peer.address").as_deref(), Some("106.11.248.146"));
        assert_eq!(attribute("error.type").as_deref(), Some("UF"));
        assert_eq!(unix_nanos(span.end_time) - unix_nanos(span.start_time), 12_000_000);
        assert!(matches!(span.status, Status::Error { .. }));
    }
}
