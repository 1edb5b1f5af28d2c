//! Property: any good waypoint JSON line parses to the record it was written from, whatever
//! its key order, whether numbers are JSON numbers or strings (Istio's untyped JSON), and
//! how a missing value is written (no key, `null`, `"-"`, `""`).

#![allow(clippy::unwrap_used)] // tests

use egresslens::parse::time::format_rfc3339_ms;
use egresslens::parse::{Entry, Projection, parse_message};
use proptest::prelude::*;

/// The fields a record is written from; `None` is a missing value.
#[derive(Debug, Clone)]
struct Record {
    start_ms: Option<i64>,
    authority: Option<String>,
    method: Option<String>,
    path: Option<String>,
    response_code: Option<u16>,
    response_flags: Option<String>,
    bytes_received: Option<u64>,
    bytes_sent: Option<u64>,
    duration: Option<u32>,
    upstream_cluster: Option<String>,
    upstream_host: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
}

/// How a missing value is written.
#[derive(Debug, Clone, Copy)]
enum Missing {
    Absent,
    Null,
    Dash,
    Empty,
}

/// How the line is written: numbers as strings or not, missing values, key order.
#[derive(Debug, Clone)]
struct Style {
    numbers_as_strings: bool,
    missing: Missing,
    order: Vec<usize>,
}

fn text(pattern: &'static str) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(pattern)
}

fn record() -> impl Strategy<Value = Record> {
    let when = proptest::option::of(1_500_000_000_000i64..2_000_000_000_000);
    let host = text("[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,6}){1,2}");
    let method = text("GET|POST|PUT|DELETE|HEAD|PATCH");
    // Paths with what JSON must escape: quotes, backslashes, control and non-ASCII characters.
    let path = text("/[a-zA-Z0-9/_.?=&%\"\\\\\t é中-]{0,40}");
    let code = proptest::option::of(100u16..600);
    let flags = text("UF|UH|UT|DC|NR|URX|UF,URX|UO");
    let sizes = (proptest::option::of(0u64..1 << 40), proptest::option::of(0u64..1 << 40));
    let duration = proptest::option::of(0u32..600_000);
    let cluster = text("outbound\\|(80|443)\\|\\|[a-z]{1,10}\\.com|PassthroughCluster");
    let upstream = text("[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}:(80|443)");
    let agent = text("[a-zA-Z]{1,10}/[0-9.]{1,8}( \\([a-z; ]{0,20}\\))?");
    let id = text("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}");
    ((when, host, method, path, code, flags), (sizes, duration, cluster, upstream, agent, id))
        .prop_map(|((when, host, method, path, code, flags), rest)| {
            let ((received, sent), duration, cluster, upstream, agent, id) = rest;
            Record {
                start_ms: when,
                authority: host,
                method,
                path,
                response_code: code,
                response_flags: flags,
                bytes_received: received,
                bytes_sent: sent,
                duration,
                upstream_cluster: cluster,
                upstream_host: upstream,
                user_agent: agent,
                request_id: id,
            }
        })
}

/// Key count of a written record.
const KEYS: usize = 13;

fn style() -> impl Strategy<Value = Style> {
    let missing = prop_oneof![
        Just(Missing::Absent),
        Just(Missing::Null),
        Just(Missing::Dash),
        Just(Missing::Empty)
    ];
    let order = Just((0..KEYS).collect::<Vec<_>>()).prop_shuffle();
    (any::<bool>(), missing, order).prop_map(|(numbers_as_strings, missing, order)| Style {
        numbers_as_strings,
        missing,
        order,
    })
}

/// The record as one JSON line in `style`.
fn write(record: &Record, style: &Style) -> String {
    let quoted = |s: &str| serde_json::to_string(s).unwrap();
    let string = |v: &Option<String>| v.as_deref().map(quoted);
    let number = |v: Option<u64>| {
        v.map(|n| if style.numbers_as_strings { format!("\"{n}\"") } else { n.to_string() })
    };
    let fields: [(&str, Option<String>); KEYS] = [
        ("start_time", record.start_ms.map(|ms| quoted(&format_rfc3339_ms(ms * 1_000_000)))),
        ("authority", string(&record.authority)),
        ("method", string(&record.method)),
        ("path", string(&record.path)),
        ("response_code", number(record.response_code.map(u64::from))),
        ("response_flags", string(&record.response_flags)),
        ("bytes_received", number(record.bytes_received)),
        ("bytes_sent", number(record.bytes_sent)),
        ("duration", number(record.duration.map(u64::from))),
        ("upstream_cluster", string(&record.upstream_cluster)),
        ("upstream_host", string(&record.upstream_host)),
        ("user_agent", string(&record.user_agent)),
        ("request_id", string(&record.request_id)),
    ];
    let mut parts = Vec::new();
    for &i in &style.order {
        let (key, value) = &fields[i];
        let value = match (value, style.missing) {
            (Some(value), _) => value.clone(),
            (None, Missing::Absent) => continue,
            (None, Missing::Null) => "null".to_owned(),
            (None, Missing::Dash) => "\"-\"".to_owned(),
            (None, Missing::Empty) => "\"\"".to_owned(),
        };
        parts.push(format!("\"{key}\":{value}"));
    }
    format!("{{{}}}", parts.join(","))
}

/// What the parser must make of the record.
fn expected(record: &Record) -> Entry<'static> {
    let owned = |v: &Option<String>| v.clone().map(Into::into);
    Entry {
        format: Some(egresslens::parse::LogFormat::EnvoyJson),
        start_time_ns: record.start_ms.map(|ms| ms * 1_000_000),
        authority: owned(&record.authority),
        method: owned(&record.method),
        path: owned(&record.path),
        response_code: record.response_code,
        response_flags: owned(&record.response_flags),
        bytes_received: record.bytes_received,
        bytes_sent: record.bytes_sent,
        duration_ms: record.duration.map(f64::from),
        upstream_cluster: owned(&record.upstream_cluster),
        upstream_host: owned(&record.upstream_host),
        user_agent: owned(&record.user_agent),
        request_id: owned(&record.request_id),
        ..Entry::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_good_line_parses_to_its_record_however_it_is_written(
        record in record(),
        style in style(),
    ) {
        let line = write(&record, &style);
        let parsed = parse_message(line.as_bytes(), Projection::All);
        prop_assert_eq!(parsed, Ok(expected(&record)), "{}", line);
    }
}
