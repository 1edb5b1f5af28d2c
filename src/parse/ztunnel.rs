//! ztunnel's access lines: one per finished connection, in text or JSON.
//!
//! Text (`LOG_FORMAT` unset), with tabs or, as docs render it, runs of spaces:
//! `2024-05-04T09:59:05.028709Z info access connection complete src.addr=10.244.1.12:60059
//! src.workload="curl-…" … dst.hbone_addr="10.244.1.10:9080" … duration="1ms"`; before Istio
//! 1.22 the scope was written `access:`; log viewers may show the fields alone. Values are
//! bare or double-quoted (`dst.hbone_addr` was quoted before ztunnel PR 946, bare after).
//!
//! JSON (`LOG_FORMAT=json`): `{"level":"info","time":"…","scope":"access","message":
//! "connection complete","src.addr":"…",…,"bytes_sent":800,"duration":"73ms"}`.
//!
//! Absent keys are `None`; unknown keys are ignored.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::derived::{host_of_address, ip_of};
use super::time::parse_rfc3339_ns;
use crate::netrange::InternalRanges;

/// One ztunnel connection record, borrowed from its line where it can be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connection<'a> {
    pub ts_ns: Option<i64>,
    pub level: Option<Cow<'a, str>>,
    /// `connection complete`, or what else ztunnel said.
    pub message: Option<Cow<'a, str>>,
    pub src_addr: Option<Cow<'a, str>>,
    pub src_workload: Option<Cow<'a, str>>,
    pub src_namespace: Option<Cow<'a, str>>,
    pub src_identity: Option<Cow<'a, str>>,
    pub dst_addr: Option<Cow<'a, str>>,
    pub dst_hbone_addr: Option<Cow<'a, str>>,
    pub dst_service: Option<Cow<'a, str>>,
    pub dst_workload: Option<Cow<'a, str>>,
    pub dst_namespace: Option<Cow<'a, str>>,
    pub dst_identity: Option<Cow<'a, str>>,
    pub direction: Option<Cow<'a, str>>,
    pub bytes_sent: Option<u64>,
    pub bytes_recv: Option<u64>,
    pub duration_ms: Option<f64>,
    pub error: Option<Cow<'a, str>>,
}

impl Connection<'_> {
    /// An outbound connection's `connection complete` line: what summaries and findings
    /// count. (A `connection opened` line, written at debug level, has its complete line
    /// later; an inbound line is the far end of a mesh connection its source logged.)
    pub fn is_outbound_complete(&self) -> bool {
        self.direction.as_deref() != Some("inbound")
            && !self.message.as_deref().is_some_and(|m| m.contains("opened"))
    }

    /// Not tunnelled, to an address outside `internal`: around every waypoint.
    pub fn bypasses(&self, internal: &InternalRanges) -> bool {
        self.dst_hbone_addr.is_none()
            && self.dst_addr.as_deref().and_then(ip_of).and_then(|ip| internal.is_external(ip))
                == Some(true)
    }

    /// `namespace/workload` when ztunnel named the source, else its IP.
    pub fn source(&self) -> Cow<'_, str> {
        match (self.src_namespace.as_deref(), self.src_workload.as_deref()) {
            (Some(ns), Some(workload)) => Cow::Owned(format!("{ns}/{workload}")),
            (None, Some(workload)) => Cow::Borrowed(workload),
            _ => Cow::Borrowed(self.src_addr.as_deref().map_or("-", host_of_address)),
        }
    }
}

impl<'a> Connection<'a> {
    /// Sets the field `key` names from its text; false for a key ztunnel does not write
    /// (ignored) or a number that does not parse (the line is then not trusted).
    fn set(&mut self, key: &str, value: Cow<'a, str>) -> bool {
        let value = Some(value).filter(|v| !v.is_empty());
        match key {
            "src.addr" => self.src_addr = value,
            "src.workload" => self.src_workload = value,
            "src.namespace" => self.src_namespace = value,
            "src.identity" => self.src_identity = value,
            "dst.addr" => self.dst_addr = value,
            "dst.hbone_addr" => self.dst_hbone_addr = value,
            "dst.service" => self.dst_service = value,
            "dst.workload" => self.dst_workload = value,
            "dst.namespace" => self.dst_namespace = value,
            "dst.identity" => self.dst_identity = value,
            "direction" => self.direction = value,
            "error" => self.error = value,
            "bytes_sent" | "bytes_recv" => {
                let Some(n) = value.map(|v| v.parse::<u64>()).transpose().ok() else {
                    return false;
                };
                if key == "bytes_sent" { self.bytes_sent = n } else { self.bytes_recv = n }
            }
            "duration" => match value {
                None => self.duration_ms = None,
                Some(v) => match duration_ms(&v) {
                    Some(ms) => self.duration_ms = Some(ms),
                    None => return false,
                },
            },
            _ => {}
        }
        true
    }
}

/// Why a line that looks like ztunnel's is not a connection record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A value that does not close, or a field without `=`.
    Fields,
    /// `bytes_*` or `duration` that are not numbers.
    Number,
    /// JSON that does not parse.
    Json,
}

/// Whether a framed message is a ztunnel access line: JSON with a `"src.addr"` key, or text
/// whose `src.addr=` field comes after an unquoted header (an Envoy TEXT entry quotes its
/// request line first, so `?src.addr=` in a waypoint's path does not count). Runs on every
/// line, so the searchers are built once.
pub fn detect(msg: &[u8]) -> bool {
    static KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"src.addr"));
    let Some(at) = KEY.find(msg) else { return false };
    if msg.first() == Some(&b'{') {
        return msg[..at].ends_with(b"\"") && msg[at + KEY.needle().len()..].starts_with(b"\":");
    }
    let starts_field = at == 0 || msg[at - 1].is_ascii_whitespace();
    starts_field && msg[at + KEY.needle().len()..].starts_with(b"=") && !msg[..at].contains(&b'"')
}

/// Reads a message [`detect`] accepted.
pub fn parse(text: &str) -> Result<Connection<'_>, Malformed> {
    if text.trim_start().starts_with('{') { parse_json(text) } else { parse_text(text) }
}

fn parse_text(text: &str) -> Result<Connection<'_>, Malformed> {
    let start = text.find("src.addr=").ok_or(Malformed::Fields)?;
    let (header, mut fields) = text.split_at(start);
    let mut conn = Connection::default();
    // `<ts> <level> access[:] <message…>`, any of it missing.
    let mut words = header.split_whitespace().peekable();
    if let Some(ts) = words.peek().and_then(|w| parse_rfc3339_ns(w)) {
        conn.ts_ns = Some(ts);
        words.next();
    }
    let rest: Vec<&str> = words.collect();
    if let [level, scope, message @ ..] = rest.as_slice()
        && scope.trim_end_matches(':') == "access"
    {
        conn.level = Some(Cow::Borrowed(level));
        if !message.is_empty() {
            conn.message = Some(Cow::Owned(message.join(" ")));
        }
    }
    loop {
        fields = fields.trim_start();
        if fields.is_empty() {
            return Ok(conn);
        }
        let eq = fields.find('=').ok_or(Malformed::Fields)?;
        let key = &fields[..eq];
        if key.contains(char::is_whitespace) {
            return Err(Malformed::Fields);
        }
        let after = &fields[eq + 1..];
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            let end = closing_quote(quoted).ok_or(Malformed::Fields)?;
            (unescape(&quoted[..end]), &quoted[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (Cow::Borrowed(&after[..end]), &after[end..])
        };
        if !conn.set(key, value) {
            return Err(Malformed::Number);
        }
        fields = rest;
    }
}

/// The index of the quote that ends a quoted value (a backslash escapes the next byte).
fn closing_quote(quoted: &str) -> Option<usize> {
    let bytes = quoted.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn unescape(value: &str) -> Cow<'_, str> {
    if !value.contains('\\') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn parse_json(text: &str) -> Result<Connection<'_>, Malformed> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| Malformed::Json)?;
    let mut conn = Connection::default();
    for (key, value) in object {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        match key.as_str() {
            "time" => conn.ts_ns = parse_rfc3339_ns(&text),
            "level" => conn.level = Some(Cow::Owned(text)),
            "message" => conn.message = Some(Cow::Owned(text)),
            key => {
                if !conn.set(key, Cow::Owned(text)) {
                    return Err(Malformed::Number);
                }
            }
        }
    }
    Ok(conn)
}

/// `1ms`, `6000ms`, `1.5s`, `250µs`/`250us`, `42ns` in milliseconds; a bare number is
/// milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let per_ms = match unit {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "us" | "µs" => 0.001,
        "ns" => 0.000_001,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(n * per_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = include_str!("../../tests/fixtures/real/ztunnel.log");

    #[test]
    fn every_real_line_reads() {
        for line in FIXTURES.lines() {
            let msg = crate::parse::frame(line.as_bytes()).msg;
            assert!(detect(msg), "{line}");
            let conn = parse(std::str::from_utf8(msg).expect("utf-8")).expect(line);
            assert!(conn.src_addr.is_some() && conn.dst_addr.is_some(), "{line}");
        }
    }

    #[test]
    fn text_fields_quoted_and_bare() {
        let line = "2024-05-04T09:59:05.028709Z\tinfo\taccess\tconnection complete\t\
            src.addr=10.244.1.12:60059 src.workload=\"curl-7656cf8794-r7zb9\" \
            dst.addr=10.244.1.10:15008 dst.hbone_addr=10.244.1.10:9080 direction=\"outbound\" \
            bytes_sent=80 bytes_recv=175 duration=\"1ms\" error=\"connection \\\"refused\\\"\"";
        let conn = parse(line).expect("a connection");
        assert_eq!(conn.ts_ns, parse_rfc3339_ns("2024-05-04T09:59:05.028709Z"));
        assert_eq!(conn.level.as_deref(), Some("info"));
        assert_eq!(conn.message.as_deref(), Some("connection complete"));
        assert_eq!(conn.src_workload.as_deref(), Some("curl-7656cf8794-r7zb9"));
        assert_eq!(conn.dst_hbone_addr.as_deref(), Some("10.244.1.10:9080"));
        assert_eq!(
            (conn.bytes_sent, conn.bytes_recv, conn.duration_ms),
            (Some(80), Some(175), Some(1.0))
        );
        assert_eq!(conn.error.as_deref(), Some("connection \"refused\""));
    }

    #[test]
    fn the_pre_1_22_scope_and_json() {
        let old = "2023-11-02T10:00:00.000000Z  INFO access: connection complete \
            src.addr=10.0.0.1:1 dst.addr=1.2.3.4:443 direction=\"outbound\" duration=\"1.5s\"";
        let conn = parse(old).expect("a connection");
        assert_eq!((conn.level.as_deref(), conn.duration_ms), (Some("INFO"), Some(1500.0)));
        let json = r#"{"level":"info","time":"2025-11-13T17:22:58.026256Z","scope":"access","message":"connection complete","src.addr":"10.1.0.8:46322","dst.addr":"142.250.191.142:443","bytes_sent":800,"duration":"73ms"}"#;
        let conn = parse(json).expect("a connection");
        assert_eq!((conn.bytes_sent, conn.duration_ms), (Some(800), Some(73.0)));
        assert_eq!(conn.dst_hbone_addr, None);
    }

    #[test]
    fn waypoint_lines_that_mention_src_addr_are_not_ztunnel() {
        let text = r#"[2025-08-18T09:36:30.123Z] "GET /q?src.addr=1 HTTP/1.1" 200 - via_upstream - "-" 0 5 3 2 "-" "curl" "id" "aliyun.com" "1.2.3.4:443" outbound|80||aliyun.com - - - -"#;
        assert!(!detect(text.as_bytes()));
        assert!(!detect(br#"{"path":"/q?src.addr=1","authority":"aliyun.com"}"#));
        assert!(detect(br#"{"level":"info","src.addr":"10.0.0.1:1"}"#));
        assert!(detect(b"src.addr=10.0.0.1:1 dst.addr=1.2.3.4:443"));
    }

    #[test]
    fn broken_lines_are_malformed_not_guessed() {
        assert_eq!(parse("src.addr=\"10.0.0.1:1 dst.addr=x"), Err(Malformed::Fields));
        assert_eq!(parse("src.addr=1 bytes_sent=lots"), Err(Malformed::Number));
        assert_eq!(parse("src.addr=1 duration=\"soon\""), Err(Malformed::Number));
        assert_eq!(parse(r#"{"src.addr": "#), Err(Malformed::Json));
    }
}
