//! Istio's TEXT access-log format in its three generations, and the proxy container's
//! operational lines (which are not access-log entries at all).
//!
//! After `[START_TIME] "METHOD PATH PROTOCOL" RESPONSE_CODE RESPONSE_FLAGS` the layouts differ:
//! - current (1.9+): `RESPONSE_CODE_DETAILS CONNECTION_TERMINATION_DETAILS "FAILURE_REASON" …`
//! - 1.8: `"FAILURE_REASON" …` (no details fields)
//! - ≤1.7: `"MIXER_STATUS" "FAILURE_REASON" …`
//! - ≈1.0/1.1: straight to `BYTES_RECEIVED …` and no route name at the end.
//!
//! then `BYTES_RECEIVED BYTES_SENT DURATION UPSTREAM_SERVICE_TIME "X_FORWARDED_FOR" "USER_AGENT"
//! "REQUEST_ID" "AUTHORITY" "UPSTREAM_HOST" UPSTREAM_CLUSTER UPSTREAM_LOCAL_ADDRESS
//! DOWNSTREAM_LOCAL_ADDRESS DOWNSTREAM_REMOTE_ADDRESS REQUESTED_SERVER_NAME ROUTE_NAME`
//! (istio.io "Envoy Access Logs" task, and the Istio release notes for 1.8 and 1.9).
//! Trailing fields may be missing: old Envoys ended earlier.

use std::borrow::Cow;

use super::derived::normalize_authority;
use super::time::parse_rfc3339_ns;
use super::{Entry, LogFormat, RejectReason};
use crate::schema::key;

/// How far into a line a log shipper's own prefix may push the Envoy entry.
const MAX_SHIPPER_PREFIX: usize = 512;

/// Finds the `[START_TIME] "` that opens a TEXT entry: at the start of the line, or after a
/// log shipper's prefix such as `INFO <ts> [resource.labels.containerName: istio-proxy] `.
pub fn find_entry(text: &str) -> Option<&str> {
    if entry_start(text) {
        return Some(text);
    }
    let window = &text[..floor_char_boundary(text, MAX_SHIPPER_PREFIX)];
    window.match_indices(" [").map(|(i, _)| &text[i + 1..]).find(|rest| entry_start(rest))
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn entry_start(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('[') else {
        return false;
    };
    let Some((ts, after)) = rest.split_once(']') else {
        return false;
    };
    after.starts_with(" \"") && parse_rfc3339_ns(ts).is_some()
}

/// Lines pilot-agent (`2025-08-18T09:36:30.123Z\tinfo\tEnvoy proxy is ready`) and Envoy
/// (`[2025-08-18 09:36:30.123][15][info][main] …`) write to the same container log.
pub fn is_operational_log(text: &str) -> bool {
    const LEVELS: [&str; 8] =
        ["trace", "debug", "info", "warn", "warning", "error", "critical", "fatal"];
    if let Some(rest) = text.strip_prefix('[') {
        // Envoy's default log format: [%Y-%m-%d %T.%e][%t][%l][%n] %v
        return rest.len() > 24
            && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && rest.get(19..).is_some_and(|r| r.contains("]["));
    }
    let mut fields = text.split(['\t', ' ']).filter(|f| !f.is_empty());
    let (Some(ts), Some(level)) = (fields.next(), fields.next()) else {
        return false;
    };
    parse_rfc3339_ns(ts).is_some() && LEVELS.contains(&level.to_ascii_lowercase().as_str())
}

/// One whitespace-separated field; quoted fields may hold spaces.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    quoted: bool,
}

/// Splits on runs of spaces. A field opening with `"` (or a typographic `“`, seen in published
/// logs) runs to the next closing quote that ends the field.
fn tokenize(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::with_capacity(24);
    let mut rest = text.trim_start_matches(' ');
    while !rest.is_empty() {
        let open = ['"', '“'].into_iter().find(|q| rest.starts_with(*q));
        let (token, after) = match open {
            Some(q) => {
                let body = &rest[q.len_utf8()..];
                match closing_quote(body) {
                    Some((end, close_len)) => {
                        (Token { text: &body[..end], quoted: true }, &body[end + close_len..])
                    }
                    None => (Token { text: body, quoted: true }, ""),
                }
            }
            None => {
                let end = rest.find(' ').unwrap_or(rest.len());
                (Token { text: &rest[..end], quoted: false }, &rest[end..])
            }
        };
        tokens.push(token);
        rest = after.trim_start_matches(' ');
    }
    tokens
}

/// Index and length of the quote that closes a quoted field: one followed by a space or the end.
fn closing_quote(body: &str) -> Option<(usize, usize)> {
    body.char_indices().find_map(|(i, c)| {
        let after = &body[i + c.len_utf8()..];
        (matches!(c, '"' | '”') && (after.is_empty() || after.starts_with(' ')))
            .then_some((i, c.len_utf8()))
    })
}

/// Which generation of the TEXT format a line is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Current,
    Istio18,
    Istio17,
    Legacy,
}

fn detect_layout(after_flags: &[Token<'_>]) -> Layout {
    match after_flags {
        [a, b, ..] if a.quoted && b.quoted => Layout::Istio17,
        [a, ..] if a.quoted => Layout::Istio18,
        [a, ..] if a.text.bytes().all(|b| b.is_ascii_digit()) => Layout::Legacy,
        _ => Layout::Current,
    }
}

/// Parses a TEXT entry that starts at `[START_TIME]` (see [`find_entry`]).
pub fn parse(text: &str) -> Result<Entry<'_>, RejectReason> {
    let rest = text.strip_prefix('[').ok_or(RejectReason::BadText)?;
    let (ts, rest) = rest.split_once(']').ok_or(RejectReason::BadText)?;
    let start_time_ns = parse_rfc3339_ns(ts).ok_or(RejectReason::BadText)?;
    let tokens = tokenize(rest);
    let [request, code, flags, after_flags @ ..] = tokens.as_slice() else {
        return Err(RejectReason::BadText);
    };
    if !request.quoted {
        return Err(RejectReason::BadText);
    }
    let layout = detect_layout(after_flags);
    let mut fields = after_flags.iter().map(|t| t.text);
    let mut next = || fields.next().filter(|f| !f.is_empty() && *f != "-");
    let (details, termination, mixer, failure) = match layout {
        Layout::Current => (next(), next(), None, next()),
        Layout::Istio18 => (None, None, None, next()),
        Layout::Istio17 => (None, None, next(), next()),
        Layout::Legacy => (None, None, None, None),
    };
    let (method, path, protocol) = split_request_line(request.text);
    let mut entry = Entry {
        format: Some(LogFormat::EnvoyText),
        start_time_ns: Some(start_time_ns),
        method: method.map(Cow::Borrowed),
        path: path.map(Cow::Borrowed),
        protocol: protocol.map(Cow::Borrowed),
        response_code: number(missing(code.text), key::RESPONSE_CODE)?,
        response_flags: missing(flags.text).map(Cow::Borrowed),
        response_code_details: details.map(Cow::Borrowed),
        connection_termination_details: termination.map(Cow::Borrowed),
        istio_policy_status: mixer.map(Cow::Borrowed),
        upstream_transport_failure_reason: failure.map(Cow::Borrowed),
        ..Entry::default()
    };
    entry.bytes_received = number(next(), key::BYTES_RECEIVED)?;
    entry.bytes_sent = number(next(), key::BYTES_SENT)?;
    entry.duration_ms = number(next(), key::DURATION)?;
    entry.upstream_service_time_ms = number(next(), key::UPSTREAM_SERVICE_TIME)?;
    let mut text_field = || next().map(Cow::Borrowed);
    entry.x_forwarded_for = text_field();
    entry.user_agent = text_field();
    entry.request_id = text_field();
    entry.authority = text_field().and_then(normalize_authority);
    entry.upstream_host = text_field();
    entry.upstream_cluster = text_field();
    entry.upstream_local_address = text_field();
    entry.downstream_local_address = text_field();
    entry.downstream_remote_address = text_field();
    entry.requested_server_name = text_field();
    entry.route_name = text_field();
    if response_code_out_of_range(entry.response_code) {
        return Err(RejectReason::WrongType(key::RESPONSE_CODE));
    }
    Ok(entry)
}

fn response_code_out_of_range(code: Option<u16>) -> bool {
    code.is_some_and(|c| c > 999)
}

fn missing(field: &str) -> Option<&str> {
    (!field.is_empty() && field != "-").then_some(field)
}

fn number<T: std::str::FromStr>(
    field: Option<&str>,
    name: &'static str,
) -> Result<Option<T>, RejectReason> {
    field.map(|f| f.parse().map_err(|_| RejectReason::WrongType(name))).transpose()
}

/// `GET /path HTTP/1.1` → parts; `- - -` (TCP) → nothing. Envoy 2018 glued an empty path to
/// the protocol (`GET /HTTP/1.1`), which is split back apart here.
fn split_request_line(line: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let method = parts.next().and_then(missing);
    let rest: Vec<&str> = parts.collect();
    let (path, protocol) = match rest.as_slice() {
        [] => (None, None),
        [one] => match one.find("HTTP/") {
            Some(i) if i > 0 => (Some(&one[..i]), Some(&one[i..])),
            _ => (missing(one), None),
        },
        [path @ .., protocol] => {
            // A path with spaces cannot happen in Envoy's output; keep the first word.
            (missing(path[0]), missing(protocol))
        }
    };
    (method, path, protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Entry<'_> {
        parse(find_entry(line).unwrap()).unwrap()
    }

    #[test]
    fn current_layout_reads_every_field() {
        let e = parse_line(
            r#"[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default"#,
        );
        assert_eq!(e.method.as_deref(), Some("GET"));
        assert_eq!(e.path.as_deref(), Some("/status/418"));
        assert_eq!(e.protocol.as_deref(), Some("HTTP/1.1"));
        assert_eq!(e.response_code, Some(418));
        assert_eq!(e.response_code_details.as_deref(), Some("via_upstream"));
        assert_eq!((e.bytes_received, e.bytes_sent), (Some(0), Some(135)));
        assert_eq!((e.duration_ms, e.upstream_service_time_ms), (Some(4.0), Some(4.0)));
        assert_eq!(e.user_agent.as_deref(), Some("curl/7.73.0-DEV"));
        assert_eq!(e.authority.as_deref(), Some("httpbin"));
        assert_eq!(e.upstream_host.as_deref(), Some("10.44.1.27:80"));
        assert_eq!(
            e.upstream_cluster.as_deref(),
            Some("outbound|8000||httpbin.foo.svc.cluster.local")
        );
        assert_eq!(e.downstream_remote_address.as_deref(), Some("10.44.1.23:46520"));
        assert_eq!(e.requested_server_name, None);
        assert_eq!(e.route_name.as_deref(), Some("default"));
    }

    #[test]
    fn each_layout_finds_bytes_and_authority() {
        // (line, layout, bytes_received, bytes_sent, authority, route)
        let cases = [
            (
                r#"[2020-10-29T21:51:57.945Z] "GET /status/418 HTTP/1.1" 418 - "-" 0 135 2 2 "-" "curl/7.69.1" "f65c" "httpbin:8000" "127.0.0.1:80" inbound|8000|| 127.0.0.1:52328 10.244.0.14:80 10.244.0.13:43430 outbound_.8000_._.httpbin.default.svc.cluster.local default"#,
                Layout::Istio18,
                0,
                135,
                Some("httpbin"),
                Some("default"),
            ),
            (
                r#"[2019-09-03T20:57:49.103Z] "GET /politics HTTP/2" 301 - "-" "-" 0 0 90 89 "10.244.2.10" "curl/7.64.0" "ea37" "edition.cnn.com" "151.101.65.67:80" outbound|80||edition.cnn.com - 10.244.1.5:80 10.244.2.10:50482 edition.cnn.com -"#,
                Layout::Istio17,
                0,
                0,
                Some("edition.cnn.com"),
                None,
            ),
            (
                r#"[2019-01-24T12:48:54.977Z] "- - -" 0 - 601 17766 1289 - "-" "-" "-" "-" "172.217.161.36:443" outbound|443||www.google.com 172.30.109.82:59480 172.217.161.36:443 172.30.109.82:59478 www.google.com"#,
                Layout::Legacy,
                601,
                17766,
                None,
                None,
            ),
        ];
        for (line, layout, received, sent, authority, route) in cases {
            let tokens = tokenize(line.split_once(']').unwrap().1);
            assert_eq!(detect_layout(&tokens[3..]), layout, "{line}");
            let e = parse_line(line);
            assert_eq!((e.bytes_received, e.bytes_sent), (Some(received), Some(sent)), "{line}");
            assert_eq!(e.authority.as_deref(), authority, "{line}");
            assert_eq!(e.route_name.as_deref(), route, "{line}");
        }
    }

    #[test]
    fn mixer_status_is_kept_for_17_lines() {
        let e = parse_line(
            r#"[2019-09-03T20:57:49.103Z] "GET / HTTP/2" 301 - "ok" "-" 0 0 90 89 "-" "-" "-" "a" "-""#,
        );
        assert_eq!(e.istio_policy_status.as_deref(), Some("ok"));
    }

    #[test]
    fn quoted_fields_keep_spaces_and_trailing_fields_may_be_missing() {
        let e = parse_line(
            r#"[2018-08-16T06:44:41.143Z] "GET /apis HTTP/1.1" 503 NR 0 0 0 - "10.132.0.8" "FxVersion/4.7 OSName/Windows7" "3cbd" "mns.example" "-""#,
        );
        assert_eq!(e.user_agent.as_deref(), Some("FxVersion/4.7 OSName/Windows7"));
        assert_eq!(e.authority.as_deref(), Some("mns.example"));
        assert_eq!(e.response_flags.as_deref(), Some("NR"));
        assert_eq!(e.upstream_cluster, None);
    }

    #[test]
    fn typographic_quotes_and_glued_protocol() {
        let e = parse_line(
            r#"[2020-07-27T18:10:57.205Z] "GET /products/xxx HTTP/1.1" 200 - "-" "-" 0 5754 11 11 "-" “xxx-1.5.0” "a76e" “externalservice.com:30445" “x.x.x.x:443" outbound|443|http--calls|externalservice.com - x.x.x.x:30445 x.x.x.x:59772 - -"#,
        );
        assert_eq!(e.user_agent.as_deref(), Some("xxx-1.5.0"));
        assert_eq!(e.authority.as_deref(), Some("externalservice.com"));
        let e = parse_line(
            r#"[2018-12-17T07:32:46.204Z] "GET /HTTP/1.1" 503 UH 0 19 0 - "-" "curl/7.52.1" "9026" "test.xxx.com" "-" - - 123.125.115.110:80 10.40.190.180:59570"#,
        );
        assert_eq!((e.path.as_deref(), e.protocol.as_deref()), (Some("/"), Some("HTTP/1.1")));
    }

    #[test]
    fn entry_after_a_shipper_prefix_is_found() {
        let line = r#"INFO 2024-03-25T08:56:41.897522475Z [resource.labels.containerName: istio-proxy] [2024-03-25T08:56:41.328Z] "- - -" 0 UH - - "-" 0 0 0 - "-" "-" "-" "-" "-" outbound|443||xxx.segment.xxx - xxxxx:8443 xxxxx:38532 xxxx.segment.xxx -"#;
        let e = parse_line(line);
        assert_eq!(e.response_flags.as_deref(), Some("UH"));
        assert_eq!(e.requested_server_name.as_deref(), Some("xxxx.segment.xxx"));
    }

    #[test]
    fn non_numeric_counters_are_wrong_types() {
        let line = r#"[2020-11-25T21:26:18.409Z] "GET / HTTP/1.1" 200 - via_upstream - "-" 0 12kB 4 4 "-""#;
        assert_eq!(parse(line).unwrap_err(), RejectReason::WrongType("bytes_sent"));
    }

    #[test]
    fn operational_lines_are_recognised() {
        for line in [
            "2025-08-18T09:36:30.123Z\tinfo\tEnvoy proxy is ready",
            "2025-08-18T09:36:30.200988059Z\twarning\tenvoy config\tStreamAggregatedResources",
            "[2025-08-18 09:36:30.123][15][info][main] [source/server/server.cc:936] starting",
        ] {
            assert!(is_operational_log(line), "{line}");
        }
        assert!(!is_operational_log("hello world"));
        assert!(!is_operational_log("2025-08-18T09:36:30Z something"));
    }
}
