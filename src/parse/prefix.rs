//! Line framing: what Kubernetes and log tools put in front of the proxy's own text.
//!
//! Detected per line, in this order, so mixed input works:
//! - `[pod/NAME/CONTAINER] ` or `[NAME CONTAINER] ` (`kubectl logs --prefix`, stern);
//! - CRI log-file lines `<RFC3339Nano> stdout|stderr F|P <msg>` (containerd splits lines longer
//!   than 16 KiB into `P` chunks ended by an `F` chunk; `source::lines` joins them);
//! - the `kubectl logs --timestamps` prefix `<RFC3339Nano> ` (one space; pilot-agent's own lines
//!   start with a timestamp too, but follow it with a tab).

use super::time::parse_rfc3339_ns;

/// Longest `[…] ` pod prefix looked for: pod names are ≤ 253 bytes, container names ≤ 63.
const MAX_POD_PREFIX: usize = 330;
/// `2025-08-18T09:36:30.001392687+05:30` is 35 bytes.
const MAX_TIMESTAMP: usize = 36;

/// The CRI tag of a log-file line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriTag {
    /// The line is complete (or ends a run of partial chunks).
    Full,
    /// A chunk of a longer line; the rest follows in later lines.
    Partial,
}

/// A line with its prefixes taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed<'a> {
    /// What the proxy wrote.
    pub msg: &'a [u8],
    /// The kubelet's or kubectl's timestamp, if the line had one.
    pub ts_ns: Option<i64>,
    pub pod: Option<&'a str>,
    pub container: Option<&'a str>,
    /// `stdout` or `stderr` of a CRI line.
    pub stream: Option<&'a str>,
    pub cri: Option<CriTag>,
}

/// Splits a line (without its newline) into prefixes and message.
pub fn frame(line: &[u8]) -> Framed<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut framed =
        Framed { msg: line, ts_ns: None, pod: None, container: None, stream: None, cri: None };
    if let Some((pod, container, rest)) = pod_prefix(line) {
        framed.pod = Some(pod);
        framed.container = container;
        framed.msg = rest;
    }
    let Some((ts_ns, sep, rest)) = leading_timestamp(framed.msg) else {
        return framed;
    };
    if sep != b' ' {
        return framed;
    }
    framed.ts_ns = Some(ts_ns);
    framed.msg = rest;
    if let Some((stream, tag, msg)) = cri_fields(rest) {
        framed.stream = Some(stream);
        framed.cri = Some(tag);
        framed.msg = msg;
    }
    framed
}

/// `[pod/NAME/CONTAINER] `, `[NAME/CONTAINER] `, `[NAME CONTAINER] ` or `[NAME] `.
fn pod_prefix(line: &[u8]) -> Option<(&str, Option<&str>, &[u8])> {
    let body = line.strip_prefix(b"[")?;
    let window = &body[..body.len().min(MAX_POD_PREFIX)];
    let close = memchr::memchr(b']', window)?;
    if body.get(close + 1) != Some(&b' ') {
        return None;
    }
    let inside = std::str::from_utf8(&body[..close]).ok()?;
    // Pod and container names hold no `:`, which keeps Envoy's `[2020-11-25T21:26:18.409Z] `
    // and `[2025-08-18 09:36:30.123][…` from being taken for a pod.
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | ' ');
    if inside.is_empty() || !inside.chars().all(allowed) {
        return None;
    }
    let rest = &body[close + 2..];
    let inside = inside.strip_prefix("pod/").unwrap_or(inside);
    let (pod, container) = match inside.split_once(['/', ' ']) {
        Some((pod, container)) => (pod, Some(container)),
        None => (inside, None),
    };
    Some((pod, container.filter(|c| !c.is_empty()), rest))
}

/// An RFC 3339 timestamp at the start of the line, the byte after it, and what follows that.
fn leading_timestamp(line: &[u8]) -> Option<(i64, u8, &[u8])> {
    if !line.first()?.is_ascii_digit() {
        return None;
    }
    let window = &line[..line.len().min(MAX_TIMESTAMP)];
    let end = window.iter().position(|&b| b == b' ' || b == b'\t')?;
    let ts = std::str::from_utf8(&line[..end]).ok()?;
    Some((parse_rfc3339_ns(ts)?, line[end], &line[end + 1..]))
}

/// `stdout F msg` after a CRI timestamp.
fn cri_fields(rest: &[u8]) -> Option<(&str, CriTag, &[u8])> {
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        ("stdout", r)
    } else {
        ("stderr", rest.strip_prefix(b"stderr ")?)
    };
    let (tag, rest) = match rest {
        [b'F', b' ', msg @ ..] => (CriTag::Full, msg),
        [b'P', b' ', msg @ ..] => (CriTag::Partial, msg),
        [b'F'] => (CriTag::Full, &[][..]),
        [b'P'] => (CriTag::Partial, &[][..]),
        _ => return None,
    };
    Some((stream, tag, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: i64 = 1_755_509_790_001_392_687; // 2025-08-18T09:36:30.001392687Z

    #[test]
    fn raw_json_has_no_prefix() {
        let f = frame(br#"{"a":1}"#);
        assert_eq!(f.msg, br#"{"a":1}"#);
        assert_eq!((f.ts_ns, f.pod, f.cri), (None, None, None));
    }

    #[test]
    fn kubectl_timestamps_prefix() {
        let f = frame(br#"2025-08-18T09:36:30.001392687Z {"a":1}"#);
        assert_eq!((f.ts_ns, f.msg), (Some(TS), &br#"{"a":1}"#[..]));
    }

    #[test]
    fn cri_full_and_partial_lines() {
        let f = frame(b"2025-08-18T09:36:30.001392687Z stdout F {\"a\":1}");
        assert_eq!((f.ts_ns, f.stream, f.cri), (Some(TS), Some("stdout"), Some(CriTag::Full)));
        assert_eq!(f.msg, b"{\"a\":1}");
        let f = frame(b"2025-08-18T11:36:30.001392687+02:00 stderr P {\"a\"");
        assert_eq!((f.ts_ns, f.stream, f.cri), (Some(TS), Some("stderr"), Some(CriTag::Partial)));
        assert_eq!(f.msg, b"{\"a\"");
        let f = frame(b"2025-08-18T09:36:30.001392687Z stdout F");
        assert_eq!((f.cri, f.msg), (Some(CriTag::Full), &b""[..]));
    }

    #[test]
    fn pod_prefixes_of_kubectl_and_stern() {
        let f = frame(b"[pod/waypoint-7d9f8c6b5-x2x9k/istio-proxy] {\"a\":1}");
        assert_eq!((f.pod, f.container), (Some("waypoint-7d9f8c6b5-x2x9k"), Some("istio-proxy")));
        assert_eq!(f.msg, b"{\"a\":1}");
        let f = frame(b"[ubuntu istio-proxy] {\"a\":1}");
        assert_eq!((f.pod, f.container), (Some("ubuntu"), Some("istio-proxy")));
        let f = frame(b"[ztunnel-b8dqs] src.addr=1");
        assert_eq!((f.pod, f.container, f.msg), (Some("ztunnel-b8dqs"), None, &b"src.addr=1"[..]));
        let f = frame(b"[pod/w-1/istio-proxy] 2025-08-18T09:36:30.001392687Z {}");
        assert_eq!((f.pod, f.ts_ns, f.msg), (Some("w-1"), Some(TS), &b"{}"[..]));
    }

    #[test]
    fn envoy_lines_are_not_mistaken_for_prefixes() {
        let text = br#"[2020-11-25T21:26:18.409Z] "GET / HTTP/1.1" 200"#;
        assert_eq!(frame(text).msg, text);
        let native = b"[2025-08-18 09:36:30.123][15][info][main] ready";
        assert_eq!(frame(native).msg, native);
        let agent = b"2025-08-18T09:36:30.123Z\tinfo\tEnvoy proxy is ready";
        let f = frame(agent);
        assert_eq!((f.msg, f.ts_ns), (&agent[..], None));
    }

    #[test]
    fn carriage_return_is_dropped() {
        assert_eq!(frame(b"{}\r").msg, b"{}");
    }
}
