//! Bytes of one log line to exactly one [`Entry`] or one [`RejectReason`].
//!
//! `prefix` strips what Kubernetes and log tools put in front of a line (CRI, `kubectl
//! --timestamps`, `[pod/name/container] `); `envoy_json` and `envoy_text` read the waypoint's
//! access-log entry; `derived` computes the columns Envoy does not print. Nothing here knows
//! where lines come from or where records go.

pub mod derived;
pub mod envoy_json;
pub mod envoy_text;
pub mod json;
pub mod prefix;
pub mod time;
pub mod ztunnel;

use std::borrow::Cow;
use std::fmt;

pub use prefix::{CriTag, Framed, frame};

/// Which fields of an entry a caller needs. Every field is type-checked either way, so the
/// same lines are rejected whatever the projection; only materialising differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    /// Every field, unknown keys in `extra`: for the `access_log` table.
    All,
    /// What per-host stats read; other text fields stay `None` and `extra` is not built.
    Stats,
}

/// Which access-log encoding an entry was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    EnvoyJson,
    EnvoyText,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::EnvoyJson => "envoy_json",
            LogFormat::EnvoyText => "envoy_text",
        }
    }

    /// The format [`LogFormat::as_str`] names.
    pub fn from_name(name: &str) -> Option<LogFormat> {
        [LogFormat::EnvoyJson, LogFormat::EnvoyText].into_iter().find(|f| f.as_str() == name)
    }
}

/// One waypoint access-log entry, borrowed from its line where it can be.
///
/// Missing values (`null`, `"-"`, `""`, an absent key) are `None`. `authority` is the requested
/// host without port, lower-cased, from `authority_for` when present, else `authority`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry<'a> {
    pub format: Option<LogFormat>,
    pub start_time_ns: Option<i64>,
    pub authority: Option<Cow<'a, str>>,
    pub method: Option<Cow<'a, str>>,
    pub path: Option<Cow<'a, str>>,
    pub protocol: Option<Cow<'a, str>>,
    pub response_code: Option<u16>,
    pub response_flags: Option<Cow<'a, str>>,
    pub response_code_details: Option<Cow<'a, str>>,
    pub bytes_received: Option<u64>,
    pub bytes_sent: Option<u64>,
    pub duration_ms: Option<f64>,
    pub upstream_service_time_ms: Option<f64>,
    pub upstream_response_time_ms: Option<f64>,
    pub upstream_cluster: Option<Cow<'a, str>>,
    pub upstream_host: Option<Cow<'a, str>>,
    pub upstream_local_address: Option<Cow<'a, str>>,
    pub downstream_remote_address: Option<Cow<'a, str>>,
    pub downstream_local_address: Option<Cow<'a, str>>,
    pub downstream_peer_uri_san: Option<Cow<'a, str>>,
    pub route_name: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
    pub request_id: Option<Cow<'a, str>>,
    pub x_forwarded_for: Option<Cow<'a, str>>,
    pub requested_server_name: Option<Cow<'a, str>>,
    pub upstream_transport_failure_reason: Option<Cow<'a, str>>,
    pub connection_termination_details: Option<Cow<'a, str>>,
    pub istio_policy_status: Option<Cow<'a, str>>,
    /// Unknown JSON keys as one JSON object, kept verbatim.
    pub extra: Option<String>,
}

impl Entry<'_> {
    /// The external host this entry is counted under: the authority, else the TLS SNI, else
    /// the host of the upstream cluster (TCP entries carry no authority), else the original
    /// destination IP (`PassthroughCluster` traffic to an unregistered address).
    pub fn host(&self) -> Option<&str> {
        self.authority
            .as_deref()
            .or(self.requested_server_name.as_deref())
            .or_else(|| derived::ClusterName::parse(self.upstream_cluster.as_deref()?)?.host)
            .or_else(|| derived::ip_of(self.downstream_local_address.as_deref()?))
    }
}

/// Why a line did not become an [`Entry`]. `as_str` is the `reason` column of `rejects`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// An empty or whitespace-only line.
    Empty,
    /// Control bytes that no text log line carries.
    Binary,
    InvalidUtf8,
    /// Longer than the configured line cap; only the head was kept.
    TooLong,
    /// JSON cut off before the object closed.
    Truncated,
    /// JSON with a syntax error (or nested too deep).
    InvalidJson,
    /// Valid JSON whose field has a type that cannot hold its value.
    WrongType(&'static str),
    /// An Envoy TEXT entry whose fields could not be read.
    BadText,
    /// An operational line of the proxy container (pilot-agent or Envoy): expected noise.
    EnvoyLog,
    /// A ztunnel connection log line (`src.addr=…`), not a waypoint access-log entry (for
    /// readers that keep only access-log entries).
    ZtunnelLog,
    /// A ztunnel connection line whose fields could not be read.
    BadZtunnel,
    /// None of the known formats.
    NotJson,
    /// An access-log entry in the other encoding than the rest of its stream: a second
    /// access-log provider logging the same requests again (TEXT next to JSON).
    MixedEncoding,
}

impl RejectReason {
    /// Noise that a waypoint container is expected to write, reported apart from errors.
    pub fn is_expected_noise(self) -> bool {
        matches!(self, RejectReason::EnvoyLog | RejectReason::Empty)
    }

    pub fn as_str(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            RejectReason::Empty => "empty",
            RejectReason::Binary => "binary",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::TooLong => "too_long",
            RejectReason::Truncated => "truncated",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::WrongType(field) => return Cow::Owned(format!("wrong_type:{field}")),
            RejectReason::BadText => "bad_text",
            RejectReason::EnvoyLog => "envoy_log",
            RejectReason::ZtunnelLog => "ztunnel_log",
            RejectReason::BadZtunnel => "bad_ztunnel",
            RejectReason::NotJson => "not_json",
            RejectReason::MixedEncoding => "mixed_encoding",
        })
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// Parses the message of a framed line (prefixes already stripped).
pub fn parse_message(msg: &[u8], projection: Projection) -> Result<Entry<'_>, RejectReason> {
    let first = msg.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(RejectReason::Empty);
    };
    let text = match std::str::from_utf8(msg) {
        Ok(text) => text,
        Err(_) if looks_binary(msg) => return Err(RejectReason::Binary),
        Err(_) => return Err(RejectReason::InvalidUtf8),
    };
    let result = if msg[first] == b'{' {
        envoy_json::parse(text, projection)
    } else if let Some(entry) = envoy_text::find_entry(text) {
        envoy_text::parse(entry)
    } else if is_ztunnel_text(text) {
        Err(RejectReason::ZtunnelLog)
    } else if envoy_text::is_operational_log(text) {
        Err(RejectReason::EnvoyLog)
    } else {
        Err(RejectReason::NotJson)
    };
    // Garbage can happen to be valid UTF-8; name it for what it is.
    result.map_err(|reason| match reason {
        RejectReason::NotJson | RejectReason::InvalidJson if looks_binary(msg) => {
            RejectReason::Binary
        }
        other => other,
    })
}

/// ztunnel's text access lines carry `src.addr=` fields (`… info access connection complete
/// src.addr=…`, or the bare fields as Kiali shows them).
fn is_ztunnel_text(text: &str) -> bool {
    text.starts_with("src.addr=") || text.contains(" src.addr=")
}

/// The access-log encoding a framed message is in, judged by its first bytes only; `None`
/// for anything that is not an access-log entry.
pub fn sniff_encoding(msg: &[u8]) -> Option<LogFormat> {
    let start = msg.iter().position(|b| !b.is_ascii_whitespace())?;
    if msg[start] == b'{' {
        return Some(LogFormat::EnvoyJson);
    }
    let head = &msg[..msg.len().min(1024)];
    let text = std::str::from_utf8(head)
        .unwrap_or_else(|e| std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default());
    envoy_text::find_entry(text).map(|_| LogFormat::EnvoyText)
}

/// Bytes no text line holds: NUL and the C0 controls other than tab, CR and ESC (colour codes).
fn looks_binary(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n' | 0x1b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_bad_message_gets_its_reason() {
        let cases: [(&[u8], &str); 12] = [
            (b"", "empty"),
            (b"   \t", "empty"),
            (b"\x00\x01\x02\xff\xfe", "binary"),
            (b"{\"a\":\"caf\xe9\"}", "invalid_utf8"),
            (br#"{"authority":"a.com","bytes_sent":12"#, "truncated"),
            (br#"{"authority":"a.com",,}"#, "invalid_json"),
            (br#"{"authority":"a.com","bytes_sent":"12kB"}"#, "wrong_type:bytes_sent"),
            (b"2025-08-18T09:36:30.123Z\tinfo\tEnvoy proxy is ready", "envoy_log"),
            (b"hello world", "not_json"),
            (
                b"2024-05-04T09:59:05Z info access connection complete src.addr=1.2.3.4:5",
                "ztunnel_log",
            ),
            (b"\x01\x02garbage\x03", "binary"),
            (br#"{"scope":"access","src.addr":"10.1.0.8:46322","duration":"73ms"}"#, "ztunnel_log"),
        ];
        for (msg, want) in cases {
            let got = parse_message(msg, Projection::All).map(|_| ()).unwrap_err();
            assert_eq!(got.as_str(), want, "{:?}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn encodings_are_sniffed_from_the_first_bytes() {
        assert_eq!(sniff_encoding(b"  {\"a\""), Some(LogFormat::EnvoyJson));
        let text = br#"[2020-11-25T21:26:18.409Z] "GET / HTTP/1.1" 200"#;
        assert_eq!(sniff_encoding(text), Some(LogFormat::EnvoyText));
        assert_eq!(sniff_encoding(b"2025-08-18T09:36:30Z\tinfo\tready"), None);
        assert_eq!(sniff_encoding(b""), None);
    }

    #[test]
    fn host_falls_back_to_sni_then_cluster() {
        let mut entry = Entry {
            upstream_cluster: Some("inbound-vip|443|tcp|sts.amazonaws.com;".into()),
            ..Entry::default()
        };
        assert_eq!(entry.host(), Some("sts.amazonaws.com"));
        entry.requested_server_name = Some("sni.example".into());
        assert_eq!(entry.host(), Some("sni.example"));
        entry.authority = Some("aliyun.com".into());
        assert_eq!(entry.host(), Some("aliyun.com"));
        let passthrough = Entry {
            upstream_cluster: Some("PassthroughCluster".into()),
            downstream_local_address: Some("100.77.28.132:1521".into()),
            ..Entry::default()
        };
        assert_eq!(passthrough.host(), Some("100.77.28.132"));
    }
}
