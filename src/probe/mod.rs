//! Did a response come through a proxy of the mesh, or straight from the origin?
//!
//! A waypoint (or sidecar) adds `x-envoy-upstream-service-time` to the responses it forwards
//! and, when it answers itself or rewrites the header, says `server: istio-envoy` (a waypoint)
//! or `server: envoy` (a sidecar). A response without either came from the origin directly:
//! the request bypassed the waypoint (the walkthrough's `Server: Tengine` before its
//! ServiceEntry, `server: envoy` and the header after).
//!
//! [`parse_blocks`] reads saved output: `curl -sI`, the `< ` lines of `curl -v`, raw header
//! blocks, several per file, separated by blank lines or `###` headings (whose text names the
//! target). Header names are matched without regard to case.

pub mod exec;
pub mod http;

use serde::Serialize;

/// What a response says about its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Forwarded (or answered) by a mesh proxy.
    ViaWaypoint,
    /// From the origin, with no mesh proxy on the way: a bypass.
    Direct,
    /// No response: the request failed, or the block holds no status line.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::ViaWaypoint => "via_waypoint",
            Verdict::Direct => "direct",
            Verdict::Error => "error",
        }
    }
}

/// `server` values a mesh proxy answers with.
pub const DEFAULT_PROXY_SERVERS: [&str; 2] = ["envoy", "istio-envoy"];

/// The `server` values given, else [`DEFAULT_PROXY_SERVERS`].
pub fn proxy_servers(given: &[String]) -> Vec<String> {
    if given.is_empty() {
        return DEFAULT_PROXY_SERVERS.map(str::to_owned).to_vec();
    }
    given.to_vec()
}

/// One response classified.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classified {
    /// The `###` heading's text, else the request's `Host`, else `block N`.
    pub target: String,
    pub verdict: Verdict,
    /// The status code of the status line.
    pub status: Option<u16>,
    /// The `server` header.
    pub server: Option<String>,
    pub upstream_service_time_ms: Option<f64>,
    /// Names of the `x-envoy-*` headers, lower-cased.
    pub envoy_headers: Vec<String>,
    /// The block had `...` lines: headers were left out where it was saved, so `direct` may
    /// only mean the proxy's headers are among them.
    pub elided: bool,
    /// What went wrong, for `error`.
    pub error: Option<String>,
    /// From connecting to the end of the headers, for a probe made here.
    pub latency_ms: Option<f64>,
}

impl Classified {
    /// No answer from `target`, for `message`.
    pub fn failed(target: &str, message: String) -> Classified {
        Classified {
            target: target.to_owned(),
            verdict: Verdict::Error,
            status: None,
            server: None,
            upstream_service_time_ms: None,
            envoy_headers: Vec::new(),
            elided: false,
            error: Some(message),
            latency_ms: None,
        }
    }

    /// One line of what the response showed: `HTTP 301, server: Tengine, no x-envoy-* header`.
    pub fn summary(&self) -> String {
        if let Some(error) = &self.error {
            return format!("{}: {error}", self.target);
        }
        let status = self.status.map_or_else(|| "no status".to_owned(), |s| format!("HTTP {s}"));
        let server = self.server.as_deref().unwrap_or("(none)");
        let envoy = match self.envoy_headers.as_slice() {
            [] => "no x-envoy-* header".to_owned(),
            names => names.join(" "),
        };
        format!("{}: {status}, server: {server}, {envoy}", self.target)
    }

    /// The host the target names: `http://` and a path or port left out.
    pub fn host(&self) -> &str {
        let target = self.target.split_whitespace().next().unwrap_or_default();
        let target = target.strip_prefix("http://").unwrap_or(target);
        let target = target.split('/').next().unwrap_or(target);
        crate::parse::derived::host_without_port(target)
    }
}

/// A block of lines under one target, before classification.
#[derive(Debug, Default)]
struct Block {
    status: Option<u16>,
    headers: Vec<(String, String)>,
    elided: bool,
    error: Option<String>,
}

impl Block {
    fn is_empty(&self) -> bool {
        self.status.is_none() && self.headers.is_empty() && self.error.is_none()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn classify(self, target: String, proxy_servers: &[String]) -> Classified {
        let server = self.header("server").map(str::to_owned);
        let upstream = self.header("x-envoy-upstream-service-time");
        let upstream_service_time_ms = upstream.and_then(|v| v.trim().parse().ok());
        let envoy_headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .filter(|n| n.starts_with("x-envoy-"))
            .collect();
        let proxy = server
            .as_deref()
            .is_some_and(|s| proxy_servers.iter().any(|p| p.eq_ignore_ascii_case(s.trim())));
        let verdict = match (self.status, &self.error) {
            (None, _) | (_, Some(_)) => Verdict::Error,
            _ if upstream.is_some() || proxy => Verdict::ViaWaypoint,
            _ => Verdict::Direct,
        };
        let error = match verdict {
            Verdict::Error => Some(self.error.unwrap_or_else(|| "no status line".to_owned())),
            _ => None,
        };
        Classified {
            target,
            verdict,
            status: self.status,
            server,
            upstream_service_time_ms,
            envoy_headers,
            elided: self.elided,
            error,
            latency_ms: None,
        }
    }
}

/// `HTTP/1.1 301 Moved Permanently`, `HTTP/2 200`: the status code.
fn status_line(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("HTTP/")?;
    let mut parts = rest.split_whitespace();
    parts.next()?;
    parts.next()?.parse().ok().filter(|code| (100..1000).contains(code))
}

/// Responses being cut out of saved output.
struct Splitter<'p> {
    proxy_servers: &'p [String],
    out: Vec<Classified>,
    /// The current `###` heading, and how many responses came under it.
    heading: Option<(String, usize)>,
    /// The `Host` of the request `curl -v` showed last.
    host: Option<String>,
    block: Block,
}

impl Splitter<'_> {
    /// Classifies the block in hand, if it holds anything.
    fn flush(&mut self) {
        let block = std::mem::take(&mut self.block);
        if block.is_empty() {
            return;
        }
        let target = match (&mut self.heading, &self.host) {
            (Some((heading, seen)), _) => {
                *seen += 1;
                if *seen > 1 { format!("{heading} #{seen}") } else { heading.clone() }
            }
            (None, Some(host)) => host.clone(),
            (None, None) => format!("block {}", self.out.len() + 1),
        };
        self.out.push(block.classify(target, self.proxy_servers));
    }

    fn line(&mut self, raw: &str) {
        let line = raw.trim();
        if let Some(title) = line.strip_prefix("###") {
            self.flush();
            self.heading = Some((title.trim().to_owned(), 0));
            self.host = None;
            return;
        }
        // `curl -v`: `< ` marks what came back, `> ` what was sent, `* ` curl's own notes.
        if let Some(sent) = line.strip_prefix('>') {
            if let Some((name, value)) = sent.trim().split_once(':')
                && name.eq_ignore_ascii_case("host")
            {
                self.host = Some(value.trim().to_owned());
            }
            return;
        }
        if line == "*" || line.starts_with("* ") {
            return;
        }
        let line = line.strip_prefix('<').map_or(line, str::trim);
        if line.is_empty() {
            self.flush();
            return;
        }
        if let Some(code) = status_line(line) {
            if !self.block.is_empty() {
                self.flush();
            }
            self.block.status = Some(code);
        } else if line.chars().all(|c| c == '.' || c == '…') {
            self.block.elided = true;
        } else if let Some(message) = line.strip_prefix("curl: ") {
            self.block.error = Some(message.to_owned());
        } else if let Some((name, value)) = line.split_once(':')
            && !name.is_empty()
            && !name.contains(char::is_whitespace)
        {
            self.block.headers.push((name.to_owned(), value.trim().to_owned()));
        }
    }
}

/// Splits saved output into responses and classifies each; `proxy_servers` are the `server`
/// values that mark a mesh proxy.
pub fn parse_blocks(text: &str, proxy_servers: &[String]) -> Vec<Classified> {
    let mut splitter = Splitter {
        proxy_servers,
        out: Vec::new(),
        heading: None,
        host: None,
        block: Block::default(),
    };
    for line in text.lines() {
        splitter.line(line);
    }
    splitter.flush();
    splitter.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies() -> Vec<String> {
        proxy_servers(&[])
    }

    fn verdicts(text: &str) -> Vec<(String, &'static str, Option<String>)> {
        parse_blocks(text, &proxies())
            .into_iter()
            .map(|c| (c.target, c.verdict.as_str(), c.server))
            .collect()
    }

    #[test]
    fn the_walkthroughs_before_and_after() {
        // Step 1: straight from the origin. Step 3: through the waypoint.
        let text = "HTTP/1.1 301 Moved Permanently\r\nServer: Tengine\r\nDate: Mon, 18 Aug 2025 09:30:01 GMT\r\nLocation: https://aliyun.com/\r\n\r\n\
                    HTTP/1.1 301 Moved Permanently\nserver: envoy\ndate: Mon, 18 Aug 2025 09:36:30 GMT\nx-envoy-upstream-service-time: 27\n";
        let blocks = parse_blocks(text, &proxies());
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[0].verdict, blocks[0].server.as_deref()),
            (Verdict::Direct, Some("Tengine"))
        );
        assert_eq!(blocks[1].verdict, Verdict::ViaWaypoint);
        assert_eq!(blocks[1].upstream_service_time_ms, Some(27.0));
        assert_eq!(blocks[1].envoy_headers, ["x-envoy-upstream-service-time"]);
        assert_eq!(blocks[0].status, Some(301));
    }

    #[test]
    fn curl_verbose_output_names_its_target_and_errors_are_errors() {
        let text = "* Trying 140.205.135.3:80...\n> HEAD / HTTP/1.1\n> Host: aliyun.com\n> User-Agent: curl/8.5.0\n>\n< HTTP/1.1 301 Moved Permanently\n< SERVER: ISTIO-ENVOY\n<\n\n\
                    ### blocked\ncurl: (56) Recv failure: Connection reset by peer\n";
        let blocks = parse_blocks(text, &proxies());
        assert_eq!(blocks[0].target, "aliyun.com");
        assert_eq!(blocks[0].verdict, Verdict::ViaWaypoint, "names match without case");
        assert_eq!(blocks[1].target, "blocked");
        assert_eq!(blocks[1].verdict, Verdict::Error);
        assert_eq!(blocks[1].error.as_deref(), Some("(56) Recv failure: Connection reset by peer"));
        assert_eq!(verdicts("Server: envoy\n")[0].1, "error", "no status line");
    }

    #[test]
    fn configured_proxy_names_replace_the_defaults() {
        let text = "HTTP/1.1 200 OK\nserver: my-egress-proxy\n";
        assert_eq!(verdicts(text)[0].1, "direct");
        let blocks = parse_blocks(text, &["my-egress-proxy".to_owned()]);
        assert_eq!(blocks[0].verdict, Verdict::ViaWaypoint);
    }
}
