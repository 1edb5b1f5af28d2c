//! Envoy/Istio JSON access-log entries: the waypoint's keys, Istio's 24 default keys and the
//! ≤1.7 untyped variant, in any key order.
//!
//! Envoy writes the same field as a number on one replica and a string on another (Istio ≤1.7
//! prints every value as a string, `"-"` for missing; the walkthrough's waypoint prints
//! `"upstream_service_time": "23"`), so numeric fields accept a JSON number or a numeric string,
//! and `null`, `"-"`, `""` and an absent key all mean missing.

use std::borrow::Cow;
use std::sync::OnceLock;

use super::derived::normalize_authority;
use super::json::{JsonError, JsonStr, KeyTable, MemberKey, Value, for_each_member};
use super::time::parse_rfc3339_ns;
use super::{Entry, LogFormat, Projection, RejectReason};
use crate::schema::key;

/// ztunnel's JSON connection logs carry this key; no Envoy entry does.
const ZTUNNEL_KEY: &str = "src.addr";

/// Known keys, in the order of the slots that hold their values while a line is scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    StartTime,
    Authority,
    AuthorityFor,
    Method,
    Path,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamServiceTime,
    UpstreamResponseTime,
    UpstreamCluster,
    UpstreamHost,
    UpstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamLocalAddress,
    DownstreamPeerUriSan,
    RouteName,
    UserAgent,
    RequestId,
    XForwardedFor,
    RequestedServerName,
    UpstreamTransportFailureReason,
    ConnectionTerminationDetails,
    IstioPolicyStatus,
}

const KEY_COUNT: usize = Key::IstioPolicyStatus as usize + 1;

/// Every known key with its slot, in slot order.
const KEYS: [(&str, Key); KEY_COUNT] = [
    (key::START_TIME, Key::StartTime),
    (key::AUTHORITY, Key::Authority),
    (key::AUTHORITY_FOR, Key::AuthorityFor),
    (key::METHOD, Key::Method),
    (key::PATH, Key::Path),
    (key::PROTOCOL, Key::Protocol),
    (key::RESPONSE_CODE, Key::ResponseCode),
    (key::RESPONSE_FLAGS, Key::ResponseFlags),
    (key::RESPONSE_CODE_DETAILS, Key::ResponseCodeDetails),
    (key::BYTES_RECEIVED, Key::BytesReceived),
    (key::BYTES_SENT, Key::BytesSent),
    (key::DURATION, Key::Duration),
    (key::UPSTREAM_SERVICE_TIME, Key::UpstreamServiceTime),
    (key::UPSTREAM_RESPONSE_TIME, Key::UpstreamResponseTime),
    (key::UPSTREAM_CLUSTER, Key::UpstreamCluster),
    (key::UPSTREAM_HOST, Key::UpstreamHost),
    (key::UPSTREAM_LOCAL_ADDRESS, Key::UpstreamLocalAddress),
    (key::DOWNSTREAM_REMOTE_ADDRESS, Key::DownstreamRemoteAddress),
    (key::DOWNSTREAM_LOCAL_ADDRESS, Key::DownstreamLocalAddress),
    (key::DOWNSTREAM_PEER_URI_SAN, Key::DownstreamPeerUriSan),
    (key::ROUTE_NAME, Key::RouteName),
    (key::USER_AGENT, Key::UserAgent),
    (key::REQUEST_ID, Key::RequestId),
    (key::X_FORWARDED_FOR, Key::XForwardedFor),
    (key::REQUESTED_SERVER_NAME, Key::RequestedServerName),
    (key::UPSTREAM_TRANSPORT_FAILURE_REASON, Key::UpstreamTransportFailureReason),
    (key::CONNECTION_TERMINATION_DETAILS, Key::ConnectionTerminationDetails),
    (key::ISTIO_POLICY_STATUS, Key::IstioPolicyStatus),
];

fn key_table() -> &'static KeyTable {
    static TABLE: OnceLock<KeyTable> = OnceLock::new();
    TABLE.get_or_init(|| KeyTable::new(&KEYS.map(|(name, _)| name)))
}

impl Key {
    /// A key the table did not recognise: near the end of a line, escaped
    /// (`"authority\u005ffor"` is legal JSON, so honoured), or unknown.
    fn from_name(name: &str) -> Option<Key> {
        KEYS.iter().find(|(k, _)| *k == name).map(|(_, key)| *key)
    }
}

/// The fields per-host stats read (see `stats::EgressStats::record` and `Entry::host`).
const STATS_FIELDS: u64 = {
    let keys = [
        Key::StartTime,
        Key::Authority,
        Key::AuthorityFor,
        Key::Method,
        Key::Path,
        Key::ResponseCode,
        Key::ResponseFlags,
        Key::BytesReceived,
        Key::BytesSent,
        Key::Duration,
        Key::UpstreamServiceTime,
        Key::UpstreamCluster,
        Key::UpstreamHost,
        Key::DownstreamRemoteAddress,
        Key::DownstreamLocalAddress,
        Key::RequestedServerName,
        Key::UpstreamTransportFailureReason,
    ];
    let mut mask = 0;
    let mut i = 0;
    while i < keys.len() {
        mask |= 1 << keys[i] as u64;
        i += 1;
    }
    mask
};

/// Plain decimal digits without sign, the form nearly every Envoy number takes; a fast path
/// before the general parsers.
fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return text.parse().ok();
    }
    text.bytes().try_fold(0u64, |acc, b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
}

fn is_missing(raw: &str) -> bool {
    raw.is_empty() || raw == "-"
}

/// A string field; numbers and booleans are kept as their text, containers are wrong.
fn text<'a>(value: Value<'a>, name: &'static str) -> Result<Option<Cow<'a, str>>, RejectReason> {
    match value {
        Value::Null => Ok(None),
        Value::Str(s) if is_missing(s.raw()) => Ok(None),
        Value::Str(s) => Ok(Some(s.decode())),
        Value::Number(n) => Ok(Some(Cow::Borrowed(n))),
        Value::Bool(b) => Ok(Some(Cow::Borrowed(if b { "true" } else { "false" }))),
        Value::Object(_) | Value::Array(_) => Err(RejectReason::WrongType(name)),
    }
}

/// The text of a numeric field: a JSON number or a string holding one; `None` if missing.
fn numeric_text<'a>(value: Value<'a>, name: &'static str) -> Result<Option<&'a str>, RejectReason> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(Some(n)),
        Value::Str(s) if is_missing(s.raw()) => Ok(None),
        Value::Str(s) => Ok(Some(s.raw().trim())),
        Value::Bool(_) | Value::Object(_) | Value::Array(_) => Err(RejectReason::WrongType(name)),
    }
}

/// A non-negative integer (byte counts, status codes).
fn unsigned(value: Value<'_>, name: &'static str) -> Result<Option<u64>, RejectReason> {
    match numeric_text(value, name)? {
        None => Ok(None),
        Some(text) => parse_u64(text).map(Some).ok_or(RejectReason::WrongType(name)),
    }
}

/// Milliseconds: finite and not negative; Envoy prints integers, some builds fractions.
fn millis(value: Value<'_>, name: &'static str) -> Result<Option<f64>, RejectReason> {
    let Some(text) = numeric_text(value, name)? else { return Ok(None) };
    let ms = match parse_u64(text) {
        Some(whole) => whole as f64,
        None => text.parse::<f64>().map_err(|_| RejectReason::WrongType(name))?,
    };
    if ms.is_finite() && ms >= 0.0 { Ok(Some(ms)) } else { Err(RejectReason::WrongType(name)) }
}

/// The two authority keys, resolved after the scan: `authority_for` wins in any key order.
#[derive(Default)]
struct Authorities<'a> {
    authority: Option<Cow<'a, str>>,
    authority_for: Option<Cow<'a, str>>,
}

/// Checks one known field's type and, when `wanted`, stores it in the entry.
fn set_field<'a>(
    entry: &mut Entry<'a>,
    hosts: &mut Authorities<'a>,
    key: Key,
    value: Value<'a>,
    wanted: bool,
) -> Result<(), RejectReason> {
    let name = KEYS[key as usize].0;
    if !wanted {
        return match key {
            Key::ResponseCode | Key::BytesReceived | Key::BytesSent => {
                unsigned(value, name).map(drop)
            }
            Key::Duration | Key::UpstreamServiceTime | Key::UpstreamResponseTime => {
                millis(value, name).map(drop)
            }
            _ => text(value, name).map(drop),
        };
    }
    match key {
        Key::StartTime => {
            entry.start_time_ns = match text(value, name)? {
                None => None,
                Some(t) => Some(parse_rfc3339_ns(&t).ok_or(RejectReason::WrongType(name))?),
            }
        }
        Key::Authority => hosts.authority = text(value, name)?,
        Key::AuthorityFor => hosts.authority_for = text(value, name)?,
        Key::Method => entry.method = text(value, name)?,
        Key::Path => entry.path = text(value, name)?,
        Key::Protocol => entry.protocol = text(value, name)?,
        Key::ResponseCode => {
            entry.response_code = match unsigned(value, name)? {
                Some(code @ 0..=999) => Some(code as u16),
                Some(_) => return Err(RejectReason::WrongType(name)),
                None => None,
            }
        }
        Key::ResponseFlags => entry.response_flags = text(value, name)?,
        Key::ResponseCodeDetails => entry.response_code_details = text(value, name)?,
        Key::BytesReceived => entry.bytes_received = unsigned(value, name)?,
        Key::BytesSent => entry.bytes_sent = unsigned(value, name)?,
        Key::Duration => entry.duration_ms = millis(value, name)?,
        Key::UpstreamServiceTime => entry.upstream_service_time_ms = millis(value, name)?,
        Key::UpstreamResponseTime => entry.upstream_response_time_ms = millis(value, name)?,
        Key::UpstreamCluster => entry.upstream_cluster = text(value, name)?.map(strip_semicolon),
        Key::UpstreamHost => entry.upstream_host = text(value, name)?,
        Key::UpstreamLocalAddress => entry.upstream_local_address = text(value, name)?,
        Key::DownstreamRemoteAddress => entry.downstream_remote_address = text(value, name)?,
        Key::DownstreamLocalAddress => entry.downstream_local_address = text(value, name)?,
        Key::DownstreamPeerUriSan => entry.downstream_peer_uri_san = text(value, name)?,
        Key::RouteName => entry.route_name = text(value, name)?,
        Key::UserAgent => entry.user_agent = text(value, name)?,
        Key::RequestId => entry.request_id = text(value, name)?,
        Key::XForwardedFor => entry.x_forwarded_for = text(value, name)?,
        Key::RequestedServerName => entry.requested_server_name = text(value, name)?,
        Key::UpstreamTransportFailureReason => {
            entry.upstream_transport_failure_reason = text(value, name)?;
        }
        Key::ConnectionTerminationDetails => {
            entry.connection_termination_details = text(value, name)?;
        }
        Key::IstioPolicyStatus => entry.istio_policy_status = text(value, name)?,
    }
    Ok(())
}

/// Parses one JSON access-log line (already valid UTF-8, prefixes stripped) in one pass:
/// each known field is type-checked and stored as it is scanned. A syntax error wins over a
/// type error; of several type errors the first in the line is reported.
pub fn parse(text_line: &str, projection: Projection) -> Result<Entry<'_>, RejectReason> {
    let wanted = match projection {
        Projection::All => u64::MAX,
        Projection::Stats => STATS_FIELDS,
    };
    let keep_extra = projection == Projection::All;
    let mut entry = Entry { format: Some(LogFormat::EnvoyJson), ..Entry::default() };
    let mut hosts = Authorities::default();
    let mut type_error = None;
    let mut extra: Option<String> = None;
    let mut ztunnel = false;
    for_each_member(text_line, key_table(), |member, value| {
        let key = match member {
            MemberKey::Known(slot) => KEYS[slot].1,
            MemberKey::Other(name) => match Key::from_name(&name.decode()) {
                Some(key) => key,
                None => {
                    ztunnel |= name.raw() == ZTUNNEL_KEY;
                    if keep_extra {
                        push_extra(&mut extra, name, value);
                    }
                    return;
                }
            },
        };
        let is_wanted = wanted & (1 << key as u64) != 0;
        if let Err(reason) = set_field(&mut entry, &mut hosts, key, value, is_wanted) {
            type_error.get_or_insert(reason);
        }
    })
    .map_err(json_reason)?;
    if ztunnel {
        return Err(RejectReason::ZtunnelLog);
    }
    if let Some(reason) = type_error {
        return Err(reason);
    }
    entry.authority = hosts.authority_for.or(hosts.authority).and_then(normalize_authority);
    entry.extra = extra.map(|mut e| {
        e.push('}');
        e
    });
    Ok(entry)
}

fn json_reason(error: JsonError) -> RejectReason {
    match error {
        JsonError::Truncated => RejectReason::Truncated,
        JsonError::Syntax(_) | JsonError::TooDeep => RejectReason::InvalidJson,
    }
}

/// Appends an unknown member to the `extra` JSON object, verbatim (the scanner validated it).
fn push_extra(extra: &mut Option<String>, name: JsonStr<'_>, value: Value<'_>) {
    let out = extra.get_or_insert_with(|| String::from("{"));
    if out.len() > 1 {
        out.push(',');
    }
    out.push('"');
    out.push_str(name.raw());
    out.push_str("\":");
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Value::Number(raw) | Value::Object(raw) | Value::Array(raw) => out.push_str(raw),
        Value::Str(s) => {
            out.push('"');
            out.push_str(s.raw());
            out.push('"');
        }
    }
}

/// Istio 1.23–1.24 and ASM print `inbound-vip|80|http|aliyun.com;`: one trailing `;` goes.
fn strip_semicolon(cluster: Cow<'_, str>) -> Cow<'_, str> {
    match cluster {
        Cow::Borrowed(s) => Cow::Borrowed(s.strip_suffix(';').unwrap_or(s)),
        Cow::Owned(mut s) => {
            if s.ends_with(';') {
                s.pop();
            }
            Cow::Owned(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walkthrough's Step 3 entry, as `kubectl logs deployments/waypoint` prints it.
    const WALKTHROUGH: &str = r#"{"authority_for":"aliyun.com","bytes_received":0,"bytes_sent":239,"downstream_local_address":"240.240.0.7:80","downstream_remote_address":"172.16.5.26:33356","duration":24,"method":"GET","path":"/","protocol":"HTTP/1.1","response_code":301,"route_name":"default","upstream_cluster":"inbound-vip|80|http|aliyun.com;","upstream_host":"140.205.135.3:80","upstream_response_time":"23","upstream_service_time":"23","user_agent":"curl/8.8.0"}"#;

    #[test]
    fn walkthrough_entry_reads_every_field() {
        let e = parse(WALKTHROUGH, Projection::All).unwrap();
        assert_eq!(e.authority.as_deref(), Some("aliyun.com"));
        assert_eq!(e.response_code, Some(301));
        assert_eq!(e.bytes_sent, Some(239));
        assert_eq!(e.bytes_received, Some(0));
        assert_eq!(e.duration_ms, Some(24.0));
        assert_eq!(e.upstream_service_time_ms, Some(23.0));
        assert_eq!(e.upstream_response_time_ms, Some(23.0));
        assert_eq!(e.upstream_cluster.as_deref(), Some("inbound-vip|80|http|aliyun.com"));
        assert_eq!(e.upstream_host.as_deref(), Some("140.205.135.3:80"));
        assert_eq!(e.user_agent.as_deref(), Some("curl/8.8.0"));
        assert_eq!(e.start_time_ns, None);
        assert_eq!(e.extra, None);
    }

    #[test]
    fn dash_null_empty_and_absent_all_mean_missing() {
        for line in [
            r#"{"authority":"a.com","bytes_sent":null,"method":null}"#,
            r#"{"authority":"a.com","bytes_sent":"-","method":"-"}"#,
            r#"{"authority":"a.com","bytes_sent":"","method":""}"#,
            r#"{"authority":"a.com"}"#,
        ] {
            let e = parse(line, Projection::All).unwrap();
            assert_eq!((e.bytes_sent, e.method), (None, None), "{line}");
        }
    }

    #[test]
    fn numbers_as_json_numbers_or_numeric_strings() {
        let typed =
            parse(r#"{"response_code":503,"bytes_sent":19,"duration":11959.5}"#, Projection::All)
                .unwrap();
        let untyped = parse(
            r#"{"response_code":"503","bytes_sent":"19","duration":"11959.5"}"#,
            Projection::All,
        )
        .unwrap();
        assert_eq!(typed, untyped);
        assert_eq!(typed.duration_ms, Some(11959.5));
    }

    #[test]
    fn wrong_types_name_their_field() {
        for (line, field) in [
            (r#"{"bytes_sent":"12kB"}"#, "bytes_sent"),
            (r#"{"bytes_received":[1]}"#, "bytes_received"),
            (r#"{"response_code":true}"#, "response_code"),
            (r#"{"response_code":1000}"#, "response_code"),
            (r#"{"duration":{"ms":3}}"#, "duration"),
            (r#"{"duration":-1}"#, "duration"),
            (r#"{"bytes_sent":-5}"#, "bytes_sent"),
            (r#"{"authority_for":["a.com"]}"#, "authority_for"),
            (r#"{"start_time":"yesterday"}"#, "start_time"),
        ] {
            assert_eq!(
                parse(line, Projection::All).unwrap_err(),
                RejectReason::WrongType(field),
                "{line}"
            );
        }
    }

    #[test]
    fn authority_for_wins_and_loses_its_port() {
        let e =
            parse(r#"{"authority":"other:80","authority_for":"Aliyun.COM:80"}"#, Projection::All)
                .unwrap();
        assert_eq!(e.authority.as_deref(), Some("aliyun.com"));
        let e =
            parse(r#"{"authority":"httpbin:8000","authority_for":"-"}"#, Projection::All).unwrap();
        assert_eq!(e.authority.as_deref(), Some("httpbin"));
    }

    #[test]
    fn unknown_keys_are_kept_verbatim_in_extra() {
        let e = parse(
            r#"{"x":{"a":[1,"b"]},"authority":"a.com","y":"q\"z","z":null}"#,
            Projection::All,
        )
        .unwrap();
        let extra = e.extra.unwrap();
        assert_eq!(extra, r#"{"x":{"a":[1,"b"]},"y":"q\"z","z":null}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&extra).is_ok());
    }

    #[test]
    fn key_order_does_not_matter() {
        let a = parse(r#"{"authority":"a.com","response_code":200,"path":"/x"}"#, Projection::All)
            .unwrap();
        let b = parse(r#"{"path":"/x","response_code":200,"authority":"a.com"}"#, Projection::All)
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn stats_projection_skips_text_but_still_checks_types() {
        let line = r#"{"authority":"a.com","user_agent":"curl","zz":1,"bytes_sent":"7"}"#;
        let e = parse(line, Projection::Stats).unwrap();
        assert_eq!((e.authority.as_deref(), e.bytes_sent), (Some("a.com"), Some(7)));
        assert_eq!((e.user_agent, e.extra), (None, None));
        let bad = r#"{"authority":"a.com","user_agent":["x"]}"#;
        assert_eq!(parse(bad, Projection::Stats), Err(RejectReason::WrongType("user_agent")));
        let bad = r#"{"authority":"a.com","upstream_response_time":"soon"}"#;
        assert_eq!(
            parse(bad, Projection::Stats).unwrap_err(),
            RejectReason::WrongType("upstream_response_time")
        );
    }

    #[test]
    fn escaped_keys_spelling_known_ones_count() {
        let e = parse(r#"{"authority\u005ffor":"a.com","bytes\u005fsent":"5"}"#, Projection::All)
            .unwrap();
        assert_eq!((e.authority.as_deref(), e.bytes_sent), (Some("a.com"), Some(5)));
    }

    #[test]
    fn escaped_strings_decode() {
        let e = parse(r#"{"path":"/a\u0020b","user_agent":"x\"y"}"#, Projection::All).unwrap();
        assert_eq!(e.path.as_deref(), Some("/a b"));
        assert_eq!(e.user_agent.as_deref(), Some("x\"y"));
    }
}
