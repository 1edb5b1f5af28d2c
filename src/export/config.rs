//! Where and how to export, as the OpenTelemetry specification configures an OTLP exporter:
//! `OTEL_*` environment variables, per-signal variables before the generic ones, and the
//! command line's flags before both.
//!
//! Export is off unless an endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, a per-signal
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` / `…_TRACES_ENDPOINT`, or `--otlp-endpoint`), and
//! off whatever is configured when `OTEL_SDK_DISABLED=true` (the flag still turns it on: it is
//! the more specific request).

use std::fmt;
use std::time::Duration;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub fn parse(value: &str) -> Result<Protocol, ConfigError> {
        match value.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(ConfigError(format!(
                "OTLP protocol {other:?} is not supported: use grpc or http/protobuf"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// A signal egresslens exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Traces,
}

impl Signal {
    /// The signal's part of per-signal variable names (`OTEL_EXPORTER_OTLP_METRICS_…`).
    fn env_part(self) -> &'static str {
        match self {
            Signal::Metrics => "METRICS",
            Signal::Traces => "TRACES",
        }
    }

    /// The path an OTLP/HTTP endpoint gets for this signal when it comes from a base URL.
    fn http_path(self) -> &'static str {
        match self {
            Signal::Metrics => "v1/metrics",
            Signal::Traces => "v1/traces",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
        }
    }
}

/// How one signal is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct SignalConfig {
    /// The full URL: for OTLP/HTTP, with the signal's path.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every export (an API key, a tenant); never printed.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// A PEM file of the CA that signs the endpoint's certificate, instead of the public roots.
    pub certificate: Option<String>,
    /// Gzip request bodies. Off unless `…_COMPRESSION=gzip`, as the spec says: a metrics
    /// export of 50 hosts, 6.7 MB of protobuf in requests of at most 5 000 points, goes out as
    /// a thirtieth of that with it, for about 0.1 s of CPU.
    pub gzip: bool,
}

impl SignalConfig {
    /// The endpoint as it may be printed: a password in it shows as `***`.
    pub fn shown_endpoint(&self) -> String {
        hide_password(&self.endpoint)
    }
}

/// `url` with the password of its user info (`scheme://user:password@host`) as `***`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
    format!("{scheme}://{user}:***@{host}{path}")
}

impl fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("SignalConfig")
            .field("endpoint", &self.shown_endpoint())
            .field("protocol", &self.protocol)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("certificate", &self.certificate)
            .field("gzip", &self.gzip)
            .finish()
    }
}

/// What the command line says; each field, when set, wins over the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// A base endpoint for both signals, like `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub metric_interval: Option<Duration>,
}

/// The export configuration: each signal that is on, and how often metrics go.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    pub metrics: Option<SignalConfig>,
    pub traces: Option<SignalConfig>,
    pub metric_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The specification's defaults.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

impl OtlpConfig {
    /// Reads the process's environment; `None` when export is off.
    pub fn from_env(overrides: &Overrides) -> Result<Option<OtlpConfig>, ConfigError> {
        OtlpConfig::resolve(|name| std::env::var(name).ok(), overrides)
    }

    /// Resolves the configuration from `env` (a variable's value by name) and `overrides`.
    pub fn resolve(
        env: impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Option<OtlpConfig>, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        if disabled && overrides.endpoint.is_none() {
            return Ok(None);
        }
        let signal = |signal: Signal| signal_config(&env, overrides, signal);
        let metrics = signal(Signal::Metrics)?;
        let traces = signal(Signal::Traces)?;
        if metrics.is_none() && traces.is_none() {
            return Ok(None);
        }
        let metric_interval = match overrides.metric_interval {
            Some(interval) => interval,
            None => match env("OTEL_METRIC_EXPORT_INTERVAL") {
                Some(ms) => millis("OTEL_METRIC_EXPORT_INTERVAL", &ms)?,
                None => DEFAULT_INTERVAL,
            },
        };
        if metric_interval.is_zero() {
            return Err(ConfigError("the metric export interval must be above 0".into()));
        }
        Ok(Some(OtlpConfig { metrics, traces, metric_interval }))
    }
}

/// One signal's configuration, `None` when no endpoint applies to it.
fn signal_config(
    env: &impl Fn(&str) -> Option<String>,
    overrides: &Overrides,
    signal: Signal,
) -> Result<Option<SignalConfig>, ConfigError> {
    let var = |name: &str| format!("OTEL_EXPORTER_OTLP_{}_{name}", signal.env_part());
    let either = |name: &str| {
        let specific = var(name);
        let generic = format!("OTEL_EXPORTER_OTLP_{name}");
        env(&specific).map(|v| (specific, v)).or_else(|| env(&generic).map(|v| (generic, v)))
    };
    let protocol = match overrides.protocol {
        Some(protocol) => protocol,
        None => match either("PROTOCOL") {
            Some((_, value)) => Protocol::parse(&value)?,
            None => Protocol::HttpProtobuf,
        },
    };
    // A per-signal endpoint is the URL itself; a base one gets the signal's path (OTLP/HTTP).
    let endpoint = match (&overrides.endpoint, env(&var("ENDPOINT"))) {
        (Some(base), _) => with_signal_path(base, protocol, signal),
        (None, Some(url)) => url.trim().to_owned(),
        (None, None) => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(base) => with_signal_path(&base, protocol, signal),
            None => return Ok(None),
        },
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(ConfigError(format!(
            "OTLP endpoint {endpoint:?} must be an http:// or https:// URL"
        )));
    }
    let mut headers = match either("HEADERS") {
        Some((name, value)) => parse_headers(&name, &value)?,
        None => Vec::new(),
    };
    for (name, value) in &overrides.headers {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.clone(), value.clone()));
    }
    let timeout = match overrides.timeout {
        Some(timeout) => timeout,
        None => match either("TIMEOUT") {
            Some((name, ms)) => millis(&name, &ms)?,
            None => DEFAULT_TIMEOUT,
        },
    };
    let certificate = either("CERTIFICATE").map(|(_, path)| path);
    let gzip = match either("COMPRESSION") {
        Some((name, value)) => match value.trim() {
            "gzip" => true,
            "none" => false,
            other => return Err(ConfigError(format!("{name}: use gzip or none, not {other:?}"))),
        },
        None => false,
    };
    Ok(Some(SignalConfig { endpoint, protocol, headers, timeout, certificate, gzip }))
}

fn with_signal_path(base: &str, protocol: Protocol, signal: Signal) -> String {
    let base = base.trim();
    match protocol {
        Protocol::Grpc => base.to_owned(),
        Protocol::HttpProtobuf => {
            format!("{}/{}", base.trim_end_matches('/'), signal.http_path())
        }
    }
}

/// `OTEL_…_HEADERS`: `name=value` pairs, comma-separated, values percent-encoded.
fn parse_headers(var: &str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                ConfigError(format!("{var}: {:?} is not name=value", pair.trim()))
            })?;
            Ok((name.trim().to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

/// A header pair from the command line (`--otlp-header name=value`).
pub fn parse_header_arg(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{arg:?} is not name=value")),
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied()) {
            (b'%', Some(high), Some(low)) if hex(low).is_some() => {
                out.push((high * 16 + hex(low).unwrap_or(0)) as u8);
                i += 3;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn millis(var: &str, value: &str) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| ConfigError(format!("{var} must be milliseconds, got {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(vars: &[(&str, &str)], overrides: &Overrides) -> Option<OtlpConfig> {
        let env = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
        OtlpConfig::resolve(env, overrides).expect("valid configuration")
    }

    #[test]
    fn off_unless_an_endpoint_is_configured() {
        assert_eq!(
            resolve(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], &Overrides::default()),
            None
        );
    }

    #[test]
    fn a_base_endpoint_gets_each_signals_path_over_http_and_none_over_grpc() {
        let http =
            resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318/")], &Overrides::default())
                .expect("on");
        assert_eq!(http.metrics.expect("metrics").endpoint, "http://otel:4318/v1/metrics");
        assert_eq!(http.traces.expect("traces").endpoint, "http://otel:4318/v1/traces");
        let grpc = resolve(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            &Overrides::default(),
        )
        .expect("on");
        let metrics = grpc.metrics.expect("metrics");
        assert_eq!(
            (metrics.endpoint.as_str(), metrics.protocol),
            ("http://otel:4317", Protocol::Grpc)
        );
    }

    #[test]
    fn per_signal_variables_win_over_generic_ones_and_flags_over_both() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/otlp"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "700"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret,tenant=a"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "15000"),
        ];
        let config = resolve(&vars, &Overrides::default()).expect("on");
        let (metrics, traces) = (config.metrics.expect("metrics"), config.traces.expect("traces"));
        assert_eq!(traces.endpoint, "https://traces.example/otlp");
        assert_eq!((metrics.gzip, traces.gzip), (true, false));
        assert_eq!(
            (metrics.timeout, traces.timeout),
            (Duration::from_millis(700), Duration::from_millis(2500))
        );
        assert_eq!(
            metrics.headers,
            [("api-key".into(), "s=cret".into()), ("tenant".into(), "a".into())]
        );
        assert_eq!(config.metric_interval, Duration::from_secs(15));

        let flags = Overrides {
            endpoint: Some("http://flag:4317".into()),
            protocol: Some(Protocol::Grpc),
            headers: vec![("tenant".into(), "b".into())],
            timeout: Some(Duration::from_secs(1)),
            metric_interval: Some(Duration::from_secs(5)),
        };
        let config = resolve(&vars, &flags).expect("on");
        let traces = config.traces.expect("traces");
        assert_eq!(
            (traces.endpoint.as_str(), traces.timeout),
            ("http://flag:4317", Duration::from_secs(1))
        );
        assert_eq!(
            traces.headers,
            [("api-key".into(), "s=cret".into()), ("tenant".into(), "b".into())]
        );
        assert_eq!(config.metric_interval, Duration::from_secs(5));
    }

    #[test]
    fn sdk_disabled_turns_the_environment_off_but_not_the_flag() {
        let vars =
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"), ("OTEL_SDK_DISABLED", "true")];
        assert_eq!(resolve(&vars, &Overrides::default()), None);
        let flags = Overrides { endpoint: Some("http://flag:4318".into()), ..Overrides::default() };
        assert!(resolve(&vars, &flags).is_some());
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "otel:4317")], "must be an http:// or https:// URL"),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://o"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ],
                "http/json",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://o"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
                ],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://o"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
                ],
                "novalue",
            ),
        ];
        for (vars, expected) in cases {
            let err = OtlpConfig::resolve(env(vars), &Overrides::default()).expect_err("invalid");
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn a_password_in_the_endpoint_is_never_shown() {
        let shown = |url: &str| hide_password(url);
        assert_eq!(
            shown("https://u:s3cret@otlp.example:4318/v1/metrics"),
            "https://u:***@otlp.example:4318/v1/metrics"
        );
        assert_eq!(shown("http://token@h:4317"), "http://token:***@h:4317");
        assert_eq!(shown("http://h:4317/a@b"), "http://h:4317/a@b");
        assert_eq!(shown("http://127.0.0.1:4317"), "http://127.0.0.1:4317");
    }

    #[test]
    fn headers_never_show_their_values_in_debug_output() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://o"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret"),
        ];
        let config = resolve(&vars, &Overrides::default()).expect("on");
        let shown = format!("{config:?}");
        assert!(shown.contains("authorization") && !shown.contains("s3cret"), "{shown}");
    }
}
