//! A realistic waypoint egress traffic generator with an exact ground truth.
//!
//! Hosts are Zipf-popular (`aliyun.com`, the walkthrough's host, first); a share of hosts has
//! TLS originated at the waypoint (port 80 upstream-mapped to 443); status codes, response
//! flags and latencies vary per host; two waypoint replicas write missing values differently
//! (`null` vs `"-"`), some entries use Istio's untyped all-string JSON, and key order varies.
//! Bad lines of every kind the parser rejects can be mixed in, and with `incidents` what
//! findings are made of (see [`GenConfig::incidents`]). The [`Truth`] counts exactly what a
//! correct reader must find, including the reject reasons and the evidence of each finding
//! kind. Deterministic per seed.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::parse::time::{format_rfc3339_ms, format_rfc3339_ns};
use crate::stats::{STATUS_CLASS_NAMES, status_class};

/// containerd splits longer lines into `P` chunks.
const CRI_CHUNK: usize = 16 * 1024;
/// Size of the oversize line added per started million records when bad lines are on.
const OVERSIZE_PATH: usize = 2 << 20;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GenFormat {
    /// One JSON object per line, as the waypoint writes it.
    Json,
    /// Istio's default TEXT access-log format.
    Text,
    /// CRI log-file lines (`/var/log/pods/...`), JSON inside.
    Cri,
    /// `kubectl logs --timestamps` lines, JSON inside.
    Kubectl,
}

/// Generator settings.
#[derive(Debug, Clone, Serialize)]
pub struct GenConfig {
    pub lines: u64,
    pub seed: u64,
    pub hosts: usize,
    pub format: GenFormat,
    /// Fraction of records that are bad lines.
    pub bad: f64,
    /// Time of the first log write, ns since the epoch.
    pub start_ns: i64,
    /// Mean records per second (Poisson arrivals).
    pub rate: f64,
    /// Fraction of hosts whose port-80 traffic the waypoint sends to 443.
    pub tls_origination: f64,
    /// Fraction of records that are TCP (TLS passthrough to 443) entries.
    pub passthrough: f64,
    /// Fraction of records in Istio's untyped all-string JSON.
    pub untyped: f64,
    /// Vary the key order from line to line.
    pub shuffle_keys: bool,
    /// Mix in incidents: requests to an unregistered host (`PassthroughCluster`) and to a
    /// blocked one (`BlackHoleCluster`); from halfway on, the waypoint stops originating TLS
    /// for the second host (its requests leave on :80) and its TLS handshake with the third
    /// host fails (`503 UF`, certificate verification); and ztunnel connection lines, some
    /// tunnelled to a waypoint, some sent by a batch job straight to the fourth host's address.
    pub incidents: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            lines: 1000,
            seed: 1,
            hosts: 50,
            format: GenFormat::Json,
            bad: 0.0,
            start_ns: 1_755_509_790_000_000_000, // 2025-08-18T09:36:30Z, the walkthrough's day
            rate: 100.0,
            tls_origination: 0.2,
            passthrough: 0.02,
            untyped: 0.1,
            shuffle_keys: true,
            incidents: false,
        }
    }
}

/// What a correct reader of the generated lines must find.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Truth {
    pub generator: &'static str,
    pub config: Option<GenConfig>,
    /// Records written, good and bad.
    pub records: u64,
    /// Lines as a reader counts them (a CRI `P`…`F` run is one line), ztunnel's included.
    pub lines: u64,
    pub physical_lines: u64,
    pub good: u64,
    /// Bad records by the kind of damage.
    pub bad: BTreeMap<&'static str, u64>,
    /// Bad records by the reject reason a reader must give.
    pub rejects: BTreeMap<String, u64>,
    pub hosts: BTreeMap<String, HostTruth>,
    /// ztunnel connection lines (with `incidents`).
    pub ztunnel_connections: u64,
    /// Pieces of evidence per finding kind (summed over hosts and sources).
    pub findings: BTreeMap<&'static str, u64>,
}

/// Exact per-host figures over the good records.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostTruth {
    pub requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub status: BTreeMap<&'static str, u64>,
    pub tls_originated: u64,
    pub duration_ms: DurationTruth,
    #[serde(skip)]
    durations: Vec<u32>,
    /// Requests sent upstream in plaintext on :80: `tls_not_originated` evidence if the host
    /// has TLS-originated requests too.
    #[serde(skip)]
    plain_80: u64,
}

/// Exact duration figures; percentiles are nearest-rank (value at rank ⌈q·n⌉).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DurationTruth {
    pub min: u32,
    pub max: u32,
    pub sum: u64,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
}

/// SplitMix64: small, fast and fully determined by the seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

const KNOWN_HOSTS: &[&str] = &[
    "aliyun.com",
    "api.github.com",
    "oss-cn-hangzhou.aliyuncs.com",
    "dashscope.aliyuncs.com",
    "sts.amazonaws.com",
    "s3.us-east-1.amazonaws.com",
    "storage.googleapis.com",
    "api.stripe.com",
    "hooks.slack.com",
    "api.pagerduty.com",
    "registry.npmjs.org",
    "pypi.org",
    "login.microsoftonline.com",
    "api.mapbox.com",
    "api.weather-feed.io",
    "cdn.jsdelivr.net",
    "api.datadoghq.com",
    "o4504.ingest.sentry.io",
    "api.segment.io",
    "api.twilio.com",
];

const PATHS: &[&str] = &[
    "/",
    "/health",
    "/v1/status",
    "/oauth/token",
    "/api/v2/events",
    "/v1/objects/report.csv",
    "/search?q=egress&page=2",
    "/repos/apache/arrow-rs/pulls?state=open&per_page=100",
    "/styles/v1/acme/streets",
    "/acme-assets/img/logo.png",
];

const USER_AGENTS: &[&str] = &[
    "curl/8.8.0",
    "Go-http-client/1.1",
    "python-requests/2.32.3",
    "okhttp/4.12.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.11)",
    "aws-sdk-java/2.25.60 Linux/6.1.0 OpenJDK_64-Bit_Server_VM/17.0.11+9 Java/17.0.11 vendor/Eclipse_Adoptium io/sync http/Apache cfg/retry-mode/legacy",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
];

const SERVICE_ACCOUNTS: &[&str] = &[
    "spiffe://cluster.local/ns/payments/sa/checkout",
    "spiffe://cluster.local/ns/web/sa/api",
    "spiffe://cluster.local/ns/ops/sa/backup",
    "spiffe://cluster.local/ns/ml/sa/inference",
    "spiffe://cluster.local/ns/ci/sa/runner",
];

const AGENT_LINES: &[&str] = &[
    "info\tEnvoy proxy is ready",
    "info\txdsproxy\tconnected to delta upstream XDS server: istiod.istio-system.svc:15012\tid=3",
    "warning\tenvoy config external/envoy/source/extensions/config_subscription/grpc/grpc_stream.h:193\tStreamAggregatedResources gRPC config stream to xds-grpc closed since 1766s ago: 14, connection error",
    "info\tcache\tgenerated new workload certificate\tlatency=118.203817ms ttl=23h59m59.796183s",
    "info\tads\tADS: new connection for node:waypoint-7d9f8c6b5-x2x9k.istio-egress-1",
];

/// Fixed traits of one external host.
#[derive(Debug, Clone)]
struct HostProfile {
    name: String,
    /// The upstream cluster instead of the host's own (`PassthroughCluster`, …).
    cluster: Option<&'static str>,
    vip: String,
    upstream_ips: Vec<String>,
    tls_originated: bool,
    median_ms: f64,
    /// Multiplies the base failure rates.
    flakiness: f64,
    paths: Vec<&'static str>,
}

/// One generated request, before it is rendered.
#[derive(Debug, Clone)]
struct Request {
    host: usize,
    start_ns: i64,
    write_ns: i64,
    tcp: bool,
    method: &'static str,
    path: String,
    protocol: &'static str,
    outcome: Outcome,
    bytes_received: u64,
    bytes_sent: u64,
    duration: u32,
    upstream_time: Option<u32>,
    upstream_host: Option<String>,
    source: String,
    peer_san: &'static str,
    request_id: String,
    user_agent: &'static str,
    /// Replica "b" writes missing values as `"-"`, replica "a" as `null`.
    dash_replica: bool,
    untyped: bool,
}

/// Damage done to a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    Truncated,
    AgentLog,
    WrongType,
    Empty,
    InvalidUtf8,
    Binary,
    Oversize,
    /// The same request in the other encoding, as a second access-log provider writes it.
    SecondEncoding,
}

impl Damage {
    fn name(self) -> &'static str {
        match self {
            Damage::Truncated => "truncated",
            Damage::AgentLog => "envoy_log",
            Damage::WrongType => "wrong_type",
            Damage::Empty => "empty",
            Damage::InvalidUtf8 => "invalid_utf8",
            Damage::Binary => "binary",
            Damage::Oversize => "oversize",
            Damage::SecondEncoding => "second_encoding",
        }
    }
}

/// The generator's state: host catalogue, popularity and the clock.
struct Generator {
    config: GenConfig,
    rng: Rng,
    hosts: Vec<HostProfile>,
    cdf: Vec<f64>,
    clock_ns: i64,
    sources: Vec<String>,
    /// Requests made so far.
    made: u64,
}

/// The hosts of the incidents: indices for [`host_name`], and the two hosts added.
pub const TLS_DROPPED: usize = 1;
pub const TLS_FAILING: usize = 2;
pub const BYPASSED: usize = 3;
pub const UNREGISTERED_HOST: &str = "api.unlisted-vendor.example";
pub const BLOCKED_HOST: &str = "telemetry.blocked.example";
const TLS_VERIFY_FAILED: &str =
    "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end";

impl Generator {
    fn new(config: &GenConfig) -> Self {
        let mut rng = Rng(config.seed ^ 0x5EED_0FE9_2E55);
        let count = config.hosts.max(1);
        let mut hosts: Vec<HostProfile> =
            (0..count).map(|i| host_profile(i, config, &mut rng)).collect();
        if config.incidents {
            for (name, cluster) in
                [(UNREGISTERED_HOST, "PassthroughCluster"), (BLOCKED_HOST, "BlackHoleCluster")]
            {
                let mut profile = host_profile(hosts.len(), config, &mut rng);
                (profile.name, profile.cluster, profile.tls_originated) =
                    (name.to_owned(), Some(cluster), false);
                hosts.push(profile);
            }
        }
        let mut cdf = Vec::with_capacity(count);
        let mut acc = 0.0;
        for rank in 1..=count {
            acc += 1.0 / (rank as f64).powf(1.1);
            cdf.push(acc);
        }
        let sources =
            (0..48).map(|_| format!("172.16.{}.{}", rng.below(16), 2 + rng.below(250))).collect();
        Generator {
            config: config.clone(),
            rng,
            hosts,
            cdf,
            clock_ns: config.start_ns,
            sources,
            made: 0,
        }
    }

    fn pick_host(&mut self) -> usize {
        let total = *self.cdf.last().expect("at least one host");
        let x = self.rng.unit() * total;
        self.cdf.partition_point(|&c| c < x).min(self.hosts.len() - 1)
    }

    fn request(&mut self) -> Request {
        let gap_s = -self.rng.unit().max(1e-12).ln() / self.config.rate.max(1e-6);
        self.clock_ns += (gap_s * 1e9) as i64;
        let mut host = self.pick_host();
        let second_half = self.made >= self.config.lines / 2;
        self.made += 1;
        if self.config.incidents {
            let x = self.rng.unit();
            let added = self.cdf.len();
            host = if x < 0.01 {
                added
            } else if x < 0.014 {
                added + 1
            } else {
                host
            };
        }
        let profile = self.hosts[host].clone();
        let rng = &mut self.rng;
        let tcp = rng.chance(self.config.passthrough) && profile.cluster.is_none();
        let duration =
            if tcp { rng.lognormal(3000.0, 0.6) } else { rng.lognormal(profile.median_ms, 0.8) }
                .round()
                .clamp(0.0, 120_000.0) as u32;
        let incident = self.config.incidents && second_half && !tcp;
        let outcome = if tcp {
            Outcome::tcp(rng)
        } else if profile.cluster == Some("BlackHoleCluster") {
            Outcome::blackhole()
        } else if incident && host == TLS_FAILING {
            Outcome::tls_failure()
        } else {
            Outcome::http(rng, profile.flakiness)
        };
        let method = if tcp {
            "-"
        } else {
            rng.pick(&["GET", "GET", "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"])
        };
        let dropped = incident && host == TLS_DROPPED;
        let upstream_port = if tcp || (profile.tls_originated && !dropped) { 443 } else { 80 };
        // A refused request (BlackHoleCluster) names no upstream.
        let refused = profile.cluster == Some("BlackHoleCluster");
        let answered = outcome.code != 0 || outcome.reached_upstream;
        let upstream_host = (!outcome.no_route && !refused && answered).then(|| {
            format!(
                "{}:{upstream_port}",
                profile.upstream_ips[rng.below(profile.upstream_ips.len())]
            )
        });
        let bytes_sent = if tcp {
            rng.lognormal(20_000.0, 1.0) as u64
        } else if outcome.code == 0 {
            0
        } else {
            rng.lognormal(2_000.0, 1.2) as u64
        };
        let bytes_received =
            if tcp || method != "GET" { rng.lognormal(800.0, 1.0) as u64 } else { 0 };
        let request_id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            rng.next_u64() as u32,
            rng.next_u64() as u16,
            rng.next_u64() & 0xfff,
            (rng.next_u64() & 0x3fff) | 0x8000,
            rng.next_u64() & 0xffff_ffff_ffff
        );
        Request {
            host,
            start_ns: self.clock_ns - i64::from(duration) * 1_000_000,
            write_ns: self.clock_ns,
            tcp,
            method,
            path: rng.pick(&profile.paths).to_owned(),
            protocol: rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/2"]),
            outcome,
            bytes_received,
            bytes_sent,
            duration,
            upstream_time: (outcome.code != 0 && !tcp && !outcome.no_route)
                .then(|| duration.saturating_sub(1)),
            upstream_host,
            source: format!(
                "{}:{}",
                self.sources[rng.below(self.sources.len())],
                32768 + rng.below(28000)
            ),
            peer_san: rng.pick(SERVICE_ACCOUNTS),
            request_id,
            user_agent: rng.pick(USER_AGENTS),
            dash_replica: rng.chance(0.25),
            untyped: rng.chance(self.config.untyped),
        }
    }
}

/// The name of the `i`th most popular host.
pub fn host_name(i: usize) -> String {
    KNOWN_HOSTS.get(i).map_or_else(|| format!("api.partner-{i}.example"), |h| (*h).to_owned())
}

fn host_profile(i: usize, config: &GenConfig, rng: &mut Rng) -> HostProfile {
    let name = host_name(i);
    // The walkthrough's Step 4 originates TLS for aliyun.com.
    let incident_tls = config.incidents && (i == TLS_DROPPED || i == TLS_FAILING);
    let tls_originated = i == 0 || incident_tls || rng.chance(config.tls_origination);
    let upstream_ips = (0..1 + rng.below(3))
        .map(|_| {
            format!(
                "{}.{}.{}.{}",
                20 + rng.below(200),
                rng.below(256),
                rng.below(256),
                1 + rng.below(254)
            )
        })
        .collect();
    let mut paths: Vec<&'static str> = (0..3 + rng.below(4)).map(|_| rng.pick(PATHS)).collect();
    paths.dedup();
    HostProfile {
        name,
        cluster: None,
        vip: format!("240.240.{}.{}:80", i / 250, 1 + i % 250),
        upstream_ips,
        tls_originated,
        median_ms: 10.0 + rng.unit() * 290.0,
        flakiness: if rng.chance(0.1) { 6.0 } else { 1.0 },
        paths,
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    code: u16,
    flags: Option<&'static str>,
    details: Option<&'static str>,
    failure: Option<&'static str>,
    reached_upstream: bool,
    /// No route matched: Envoy answers itself and names no upstream cluster.
    no_route: bool,
}

impl Outcome {
    fn http(rng: &mut Rng, flakiness: f64) -> Outcome {
        let x = rng.unit();
        let (no_response, server_error, client_error, redirect) =
            (0.01 * flakiness, 0.03 * flakiness, 0.05, 0.05);
        let ok = |code| Outcome {
            code,
            flags: None,
            details: Some("via_upstream"),
            failure: None,
            reached_upstream: true,
            no_route: false,
        };
        if x < 0.003 {
            return Outcome {
                code: 404,
                flags: Some("NR"),
                details: Some("route_not_found"),
                failure: None,
                reached_upstream: false,
                no_route: true,
            };
        }
        if x < no_response {
            let (flags, details) = rng.pick(&[
                ("UF", "upstream_reset_before_response_started{remote_connection_failure}"),
                ("UH", "no_healthy_upstream"),
                ("DC", "downstream_remote_disconnect"),
            ]);
            Outcome {
                code: 0,
                flags: Some(flags),
                details: Some(details),
                failure: None,
                reached_upstream: false,
                no_route: false,
            }
        } else if x < no_response + server_error {
            match rng.below(4) {
                0 => Outcome {
                    code: 503,
                    flags: Some("UF,URX"),
                    details: Some(
                        "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
                    ),
                    failure: Some("delayed_connect_error:_Connection_refused"),
                    reached_upstream: true,
                    no_route: false,
                },
                1 => Outcome {
                    code: 504,
                    flags: Some("UT"),
                    details: Some("response_timeout"),
                    failure: None,
                    reached_upstream: true,
                    no_route: false,
                },
                2 => Outcome {
                    code: 503,
                    flags: Some("UO"),
                    details: Some("upstream_reset_before_response_started{overflow}"),
                    failure: None,
                    reached_upstream: false,
                    no_route: false,
                },
                _ => ok(rng.pick(&[500, 502])),
            }
        } else if x < no_response + server_error + client_error {
            ok(rng.pick(&[400, 401, 403, 404, 404, 429]))
        } else if x < no_response + server_error + client_error + redirect {
            ok(rng.pick(&[301, 302, 304]))
        } else {
            ok(rng.pick(&[200, 200, 200, 200, 201, 204]))
        }
    }

    /// The waypoint refuses a host no ServiceEntry registers (`REGISTRY_ONLY`).
    fn blackhole() -> Outcome {
        Outcome {
            code: 502,
            flags: None,
            details: None,
            failure: None,
            reached_upstream: false,
            no_route: false,
        }
    }

    /// The origin's certificate does not verify.
    fn tls_failure() -> Outcome {
        Outcome {
            code: 503,
            flags: Some("UF"),
            details: Some("upstream_reset_before_response_started{remote_connection_failure}"),
            failure: Some(TLS_VERIFY_FAILED),
            reached_upstream: true,
            no_route: false,
        }
    }

    fn tcp(rng: &mut Rng) -> Outcome {
        let failed = rng.chance(0.02);
        Outcome {
            code: 0,
            flags: failed.then_some("UF"),
            details: None,
            failure: failed.then_some("delayed_connect_error:_Connection_refused"),
            reached_upstream: !failed,
            no_route: false,
        }
    }
}

/// One JSON value as a line will carry it.
enum Json<'a> {
    Str(&'a str),
    Num(u64),
    Missing,
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Renders the waypoint's JSON line for a request.
fn render_json(g: &mut Generator, r: &Request, wrong: Option<(&str, &str)>) -> String {
    let profile = g.hosts[r.host].clone();
    let start = format_rfc3339_ms(r.start_ns);
    let cluster = match profile.cluster {
        Some(cluster) => cluster.to_owned(),
        None if r.tcp => format!("inbound-vip|443|tcp|{};", profile.name),
        None => format!("inbound-vip|80|http|{};", profile.name),
    };
    let vip = if r.tcp { profile.vip.replace(":80", ":443") } else { profile.vip.clone() };
    let text = |s: Option<&'static str>| s.map_or(Json::Missing, Json::Str);
    let http = |s: &'static str| if r.tcp { Json::Missing } else { Json::Str(s) };
    let path = if r.tcp { Json::Missing } else { Json::Str(&r.path) };
    let upstream_time = r.upstream_time.map(|t| t.to_string());
    let mut fields: Vec<(&str, Json<'_>)> = vec![
        ("authority", if r.tcp { Json::Missing } else { Json::Str(&profile.name) }),
        ("authority_for", Json::Str(&profile.name)),
        ("bytes_received", Json::Num(r.bytes_received)),
        ("bytes_sent", Json::Num(r.bytes_sent)),
        ("connection_termination_details", Json::Missing),
        ("downstream_local_address", Json::Str(&vip)),
        ("downstream_remote_address", Json::Str(&r.source)),
        ("duration", Json::Num(u64::from(r.duration))),
        ("method", http(r.method)),
        ("path", path),
        ("protocol", http(r.protocol)),
        ("request_id", if r.tcp { Json::Missing } else { Json::Str(&r.request_id) }),
        ("requested_server_name", if r.tcp { Json::Str(&profile.name) } else { Json::Missing }),
        ("response_code", Json::Num(u64::from(r.outcome.code))),
        ("response_code_details", text(r.outcome.details)),
        ("response_flags", Json::Str(r.outcome.flags.unwrap_or("-"))),
        ("route_name", if r.tcp { Json::Missing } else { Json::Str("default") }),
        ("start_time", Json::Str(&start)),
        ("upstream_cluster", if r.outcome.no_route { Json::Missing } else { Json::Str(&cluster) }),
        ("upstream_host", r.upstream_host.as_deref().map_or(Json::Missing, Json::Str)),
        ("upstream_local_address", Json::Missing),
        ("upstream_response_time", upstream_time.as_deref().map_or(Json::Missing, Json::Str)),
        ("upstream_service_time", upstream_time.as_deref().map_or(Json::Missing, Json::Str)),
        ("upstream_transport_failure_reason", text(r.outcome.failure)),
        ("user_agent", if r.tcp { Json::Missing } else { Json::Str(r.user_agent) }),
        ("x_forwarded_for", Json::Missing),
    ];
    if !r.dash_replica {
        fields.push(("downstream_peer_uri_san", Json::Str(r.peer_san)));
    }
    if g.config.shuffle_keys {
        for i in (1..fields.len()).rev() {
            fields.swap(i, g.rng.below(i + 1));
        }
    }
    let mut out = String::with_capacity(1024);
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, key);
        out.push(':');
        if let Some((_, raw)) = wrong.filter(|(k, _)| k == key) {
            out.push_str(raw);
            continue;
        }
        match value {
            Json::Str(s) => push_json_str(&mut out, s),
            Json::Num(n) if r.untyped => push_json_str(&mut out, &n.to_string()),
            Json::Num(n) => out.push_str(&n.to_string()),
            Json::Missing if r.untyped || r.dash_replica => out.push_str("\"-\""),
            Json::Missing => out.push_str("null"),
        }
    }
    out.push('}');
    out
}

/// Renders Istio's default TEXT line for a request.
fn render_text(g: &Generator, r: &Request, bytes_sent: Option<&str>) -> String {
    let profile = &g.hosts[r.host];
    let dash = |s: Option<&str>| s.unwrap_or("-").to_owned();
    let request_line =
        if r.tcp { "- - -".to_owned() } else { format!("{} {} {}", r.method, r.path, r.protocol) };
    let cluster = if r.outcome.no_route {
        "-".to_owned()
    } else if let Some(cluster) = profile.cluster {
        cluster.to_owned()
    } else if r.tcp {
        format!("inbound-vip|443|tcp|{}", profile.name)
    } else {
        format!("inbound-vip|80|http|{}", profile.name)
    };
    let sent = bytes_sent.map_or_else(|| r.bytes_sent.to_string(), str::to_owned);
    format!(
        "[{}] \"{request_line}\" {} {} {} - \"{}\" {} {sent} {} {} \"-\" \"{}\" \"{}\" \"{}\" \"{}\" {cluster} - {} {} {} default",
        format_rfc3339_ms(r.start_ns),
        r.outcome.code,
        dash(r.outcome.flags),
        dash(r.outcome.details),
        dash(r.outcome.failure),
        r.bytes_received,
        r.duration,
        r.upstream_time.map_or_else(|| "-".to_owned(), |t| t.to_string()),
        if r.tcp { "-" } else { r.user_agent },
        if r.tcp { "-" } else { &r.request_id },
        if r.tcp { "-" } else { &profile.name },
        dash(r.upstream_host.as_deref()),
        profile.vip,
        r.source,
        if r.tcp { profile.name.as_str() } else { "-" },
    )
}

/// Writes `config.lines` records to `out` and returns the ground truth.
pub fn generate(config: &GenConfig, out: &mut impl Write) -> io::Result<Truth> {
    let mut g = Generator::new(config);
    let mut truth =
        Truth { generator: "egresslens gen", config: Some(config.clone()), ..Truth::default() };
    let mut writer = LineWriter { format: config.format, out, physical: 0 };
    for n in 0..config.lines {
        let r = g.request();
        let oversize = config.bad > 0.0 && n % 1_000_000 == 500;
        let damage = if oversize {
            Some(Damage::Oversize)
        } else if g.rng.chance(config.bad) {
            // The stream's encoding is that of its first entry, so that one stays intact.
            Some(pick_damage(&mut g.rng, config.format))
                .filter(|d| n > 0 || *d != Damage::SecondEncoding)
        } else {
            None
        };
        truth.records += 1;
        match damage {
            None => {
                let line = render(&mut g, &r, None);
                writer.write(r.write_ns, line.as_bytes(), false)?;
                count_good(&mut truth, &g, &r);
                if config.incidents && g.rng.chance(0.004) {
                    let line = ztunnel_line(&mut g, &mut truth, r.write_ns);
                    writer.write(r.write_ns, line.as_bytes(), false)?;
                }
            }
            Some(damage) => {
                let reason = write_bad(&mut g, &r, damage, &mut writer)?;
                *truth.bad.entry(damage.name()).or_default() += 1;
                *truth.rejects.entry(reason).or_default() += 1;
            }
        }
    }
    truth.lines = truth.records + truth.ztunnel_connections;
    truth.physical_lines = writer.physical;
    truth.good = truth.records - truth.bad.values().sum::<u64>();
    for host in truth.hosts.values_mut() {
        finish_durations(host);
        if host.tls_originated > 0 && host.plain_80 > 0 {
            *truth.findings.entry("tls_not_originated").or_default() += host.plain_80;
        }
    }
    Ok(truth)
}

/// A ztunnel connection line: a pod's connection tunnelled to a waypoint, or a batch job's
/// sent straight to a registered host's address (bypass).
fn ztunnel_line(g: &mut Generator, truth: &mut Truth, ts_ns: i64) -> String {
    truth.ztunnel_connections += 1;
    let rng = &mut g.rng;
    let source = &g.sources[rng.below(g.sources.len())];
    let port = 32768 + rng.below(28000);
    let (sent, recv) = (rng.lognormal(900.0, 1.0) as u64, rng.lognormal(20_000.0, 1.0) as u64);
    let ms = rng.lognormal(150.0, 0.8).round().max(1.0);
    let time = format_rfc3339_ns(ts_ns);
    let common = format!("bytes_sent={sent} bytes_recv={recv} duration=\"{ms}ms\"");
    if rng.chance(0.5) {
        let host = &g.hosts[0];
        return format!(
            "{time}\tinfo\taccess\tconnection complete\tsrc.addr={source}:{port} \
             src.workload=\"checkout\" src.namespace=\"shop\" \
             src.identity=\"spiffe://cluster.local/ns/shop/sa/checkout\" \
             dst.addr=10.244.3.9:15008 dst.hbone_addr={} dst.service=\"{}\" \
             direction=\"outbound\" {common}",
            host.vip, host.name
        );
    }
    *truth.findings.entry("bypass_ztunnel_direct").or_default() += 1;
    let host = &g.hosts[BYPASSED.min(g.hosts.len() - 1)];
    format!(
        "{time}\tinfo\taccess\tconnection complete\tsrc.addr={source}:{port} \
         src.workload=\"legacy-batch\" src.namespace=\"jobs\" \
         src.identity=\"spiffe://cluster.local/ns/jobs/sa/legacy-batch\" dst.addr={}:80 \
         dst.service=\"{}\" direction=\"outbound\" {common}",
        host.upstream_ips[0], host.name
    )
}

fn pick_damage(rng: &mut Rng, format: GenFormat) -> Damage {
    // A cut TEXT line is still a valid entry with trailing fields missing, so TEXT has no
    // truncated lines.
    let kinds: &[Damage] = if format == GenFormat::Text {
        &[Damage::AgentLog, Damage::WrongType, Damage::Empty, Damage::InvalidUtf8, Damage::Binary]
    } else {
        &[
            Damage::Truncated,
            Damage::AgentLog,
            Damage::WrongType,
            Damage::Empty,
            Damage::InvalidUtf8,
            Damage::Binary,
            Damage::SecondEncoding,
        ]
    };
    rng.pick(kinds)
}

fn render(g: &mut Generator, r: &Request, wrong: Option<(&str, &str)>) -> String {
    if g.config.format == GenFormat::Text {
        render_text(g, r, wrong.map(|(_, raw)| raw))
    } else {
        render_json(g, r, wrong)
    }
}

/// Writes one bad record; returns the reject reason a reader must give.
fn write_bad(
    g: &mut Generator,
    r: &Request,
    damage: Damage,
    writer: &mut LineWriter<'_, impl Write>,
) -> io::Result<String> {
    let ts = r.write_ns;
    let reason = match damage {
        Damage::Truncated => {
            let line = render(g, r, None);
            let cut = 1 + g.rng.below(line.len() - 1);
            writer.write(ts, &line.as_bytes()[..cut], false)?;
            "truncated".to_owned()
        }
        Damage::AgentLog => {
            let text = format!("{}\t{}", format_rfc3339_ns(ts), g.rng.pick(AGENT_LINES));
            writer.write(ts, text.as_bytes(), true)?;
            "envoy_log".to_owned()
        }
        Damage::WrongType => {
            let text_format = g.config.format == GenFormat::Text;
            let (field, raw) = if text_format {
                ("bytes_sent", "12kB")
            } else {
                g.rng.pick(&[
                    ("bytes_sent", "\"12kB\""),
                    ("bytes_received", "[1]"),
                    ("response_code", "true"),
                    ("duration", "{\"ms\":3}"),
                    ("authority_for", "[\"aliyun.com\"]"),
                ])
            };
            let line = render(g, r, Some((field, raw)));
            writer.write(ts, line.as_bytes(), false)?;
            format!("wrong_type:{field}")
        }
        Damage::Empty => {
            writer.write(ts, b"", false)?;
            "empty".to_owned()
        }
        Damage::InvalidUtf8 => {
            let line = render(g, r, None);
            let at = line.find(r.user_agent).filter(|_| !r.tcp).unwrap_or(line.len() / 2);
            let mut bytes = line.into_bytes();
            bytes.splice(at..at, [0xff, 0xfe, b'x', 0xc3]);
            writer.write(ts, &bytes, false)?;
            "invalid_utf8".to_owned()
        }
        Damage::Binary => {
            let mut bytes: Vec<u8> =
                (0..16 + g.rng.below(200)).map(|_| g.rng.next_u64() as u8).collect();
            bytes.retain(|&b| b != b'\n' && b != b'\r');
            bytes.insert(0, 0);
            writer.write(ts, &bytes, false)?;
            "binary".to_owned()
        }
        Damage::SecondEncoding => {
            let line = render_text(g, r, None);
            writer.write(ts, line.as_bytes(), false)?;
            "mixed_encoding".to_owned()
        }
        Damage::Oversize => {
            let mut big = r.clone();
            // A TCP entry has no path to write: the long path makes an HTTP one.
            big.tcp = false;
            big.path = format!("/{}", "a".repeat(OVERSIZE_PATH));
            let line = render(g, &big, None);
            writer.write(ts, line.as_bytes(), false)?;
            "too_long".to_owned()
        }
    };
    Ok(reason)
}

fn count_good(truth: &mut Truth, g: &Generator, r: &Request) {
    let profile = &g.hosts[r.host];
    let host = truth.hosts.entry(profile.name.clone()).or_default();
    host.requests += 1;
    host.bytes_sent += r.bytes_sent;
    host.bytes_received += r.bytes_received;
    *host.status.entry(STATUS_CLASS_NAMES[status_class(Some(r.outcome.code))]).or_default() += 1;
    let upstream_443 = r.upstream_host.as_deref().is_some_and(|h| h.ends_with(":443"));
    let upstream_80 = r.upstream_host.as_deref().is_some_and(|h| h.ends_with(":80"));
    host.tls_originated += u64::from(!r.tcp && upstream_443);
    host.durations.push(r.duration);
    let evidence = match profile.cluster {
        Some("PassthroughCluster") => Some("unregistered_egress"),
        Some(_) => Some("blocked_egress"),
        None if r.outcome.no_route => Some("unregistered_egress"),
        None if r.outcome.failure == Some(TLS_VERIFY_FAILED) => Some("tls_origination_failing"),
        None => {
            // Counted at the end, for hosts with TLS-originated requests.
            host.plain_80 += u64::from(!r.tcp && upstream_80);
            None
        }
    };
    if let Some(kind) = evidence {
        *truth.findings.entry(kind).or_default() += 1;
    }
}

fn finish_durations(host: &mut HostTruth) {
    for class in STATUS_CLASS_NAMES {
        host.status.entry(class).or_default();
    }
    let d = &mut host.durations;
    d.sort_unstable();
    let rank = |q: f64| d[((q * d.len() as f64).ceil() as usize).clamp(1, d.len()) - 1];
    host.duration_ms = DurationTruth {
        min: d[0],
        max: d[d.len() - 1],
        sum: d.iter().map(|&x| u64::from(x)).sum(),
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
    };
    d.clear();
    d.shrink_to_fit();
}

/// Frames lines for the chosen format.
struct LineWriter<'w, W: Write> {
    format: GenFormat,
    out: &'w mut W,
    physical: u64,
}

impl<W: Write> LineWriter<'_, W> {
    fn write(&mut self, ts_ns: i64, line: &[u8], stderr: bool) -> io::Result<()> {
        match self.format {
            GenFormat::Json | GenFormat::Text => self.physical_line(&[], line),
            GenFormat::Kubectl => {
                let prefix = format!("{} ", format_rfc3339_ns(ts_ns));
                self.physical_line(prefix.as_bytes(), line)
            }
            GenFormat::Cri => {
                let stream = if stderr { "stderr" } else { "stdout" };
                let ts = format_rfc3339_ns(ts_ns);
                let mut chunks = line.chunks(CRI_CHUNK).peekable();
                if chunks.peek().is_none() {
                    return self.physical_line(format!("{ts} {stream} F ").as_bytes(), b"");
                }
                while let Some(chunk) = chunks.next() {
                    let tag = if chunks.peek().is_some() { 'P' } else { 'F' };
                    self.physical_line(format!("{ts} {stream} {tag} ").as_bytes(), chunk)?;
                }
                Ok(())
            }
        }
    }

    fn physical_line(&mut self, prefix: &[u8], line: &[u8]) -> io::Result<()> {
        self.physical += 1;
        self.out.write_all(prefix)?;
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &GenConfig) -> (Vec<u8>, Truth) {
        let mut out = Vec::new();
        let truth = generate(config, &mut out).unwrap();
        (out, truth)
    }

    #[test]
    fn the_oversize_line_is_over_the_cap_whatever_request_it_was() {
        // Seed 3's request 500 is a TCP entry, which has no path to make long.
        for seed in 0..8 {
            let config = GenConfig { lines: 501, seed, bad: 0.02, ..GenConfig::default() };
            let (out, truth) = run(&config);
            let longest = out.split(|b| *b == b'\n').map(<[u8]>::len).max().unwrap_or(0);
            assert!(longest > OVERSIZE_PATH, "seed {seed}: {longest}");
            assert_eq!(truth.rejects["too_long"], 1);
        }
    }

    #[test]
    fn same_seed_same_bytes() {
        let config = GenConfig { lines: 500, bad: 0.05, ..GenConfig::default() };
        assert_eq!(run(&config).0, run(&config).0);
        let other = GenConfig { seed: 2, ..config.clone() };
        assert_ne!(run(&config).0, run(&other).0);
    }

    #[test]
    fn truth_adds_up() {
        let config = GenConfig { lines: 5_000, bad: 0.1, ..GenConfig::default() };
        let (_, truth) = run(&config);
        let requests: u64 = truth.hosts.values().map(|h| h.requests).sum();
        assert_eq!(requests, truth.good);
        assert_eq!(truth.good + truth.bad.values().sum::<u64>(), 5_000);
        assert_eq!(truth.rejects.values().sum::<u64>(), truth.bad.values().sum::<u64>());
        assert!(truth.hosts.contains_key("aliyun.com"));
        assert!(truth.hosts["aliyun.com"].tls_originated > 0);
        let top = truth.hosts.iter().max_by_key(|(_, h)| h.requests).unwrap().0;
        assert_eq!(top, "aliyun.com", "the walkthrough's host is the most popular");
    }

    #[test]
    fn cri_splits_long_lines_into_partial_chunks() {
        let config =
            GenConfig { lines: 600, bad: 0.01, format: GenFormat::Cri, ..GenConfig::default() };
        let (out, truth) = run(&config);
        let partials =
            out.split(|&b| b == b'\n').filter(|l| l.windows(3).any(|w| w == b" P ")).count();
        assert!(partials >= OVERSIZE_PATH / CRI_CHUNK, "{partials}");
        assert_eq!(truth.physical_lines, truth.lines + partials as u64);
    }
}
