//! The `egresslens` command line: parse arguments, validate them into library configs once,
//! run the command, print the error chain once and map it to an exit code.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use flate2::Compression;
use flate2::write::GzEncoder;

use egresslens::collect::{
    CollectConfig, CollectSummary, Control, collect, collect_files, collect_kube, collect_node,
};
use egresslens::ingest::{self, IngestConfig};
use egresslens::netrange::InternalRanges;
use egresslens::parse::time::parse_rfc3339_ns;
use egresslens::query::{self, CANNED, QueryError, ResultFormat, StoreAt};
use egresslens::report::{OutputFormat, SortKey, sort_hosts, write_findings_table, write_report};
use egresslens::source::Input;
use egresslens::source::kube::KubeOptions;
use egresslens::source::node::NodeOptions;
use egresslens::stats::{StatsConfig, Window};
use egresslens::store::Store;
use egresslens::traffic::{GenConfig, GenFormat, generate};

const EXAMPLES: &str = "\
Examples:
  egresslens demo                                   simulated waypoint traffic, per-host report
  kubectl -n istio-egress logs deploy/waypoint | egresslens stats -
  egresslens stats waypoint.log.gz --sort error_rate --top 20
  egresslens stats /var/log/pods/istio-egress_waypoint-*/istio-proxy/*.log -o json
  egresslens gen --lines 100000 --seed 7 --bad 0.02 --truth truth.json > egress.log
  egresslens collect --file /var/log/waypoint.log --retain 7d   follow it like tail -F
  egresslens collect --once --file egress.log --store ./egresslens-data
  egresslens collect --kube -n istio-egress --ztunnel --cluster prod
  egresslens collect --node-logs /var/log/pods                  on a node (DaemonSet)
  egresslens mesh                                   registered hosts, waypoints, TLS, problems
  egresslens probe aliyun.com                       through the waypoint, or direct (bypass)?
  egresslens probe aliyun.com --from deployment/sleep -n default   curl inside the workload
  kubectl exec deploy/sleep -- curl -sI aliyun.com | egresslens probe --headers -
  egresslens verify aliyun.com --from deployment/sleep -n default  the walkthrough's checks
  egresslens collect --kube --probe-every 5m --probe-from deployment/sleep
  egresslens findings                               bypass, unregistered egress, TLS, evidence
  egresslens query @top-hosts
  egresslens query -o json \"SELECT authority, count(*) FROM access_log WHERE hour = '09' GROUP BY 1\"";

/// Egress observability for Istio ambient mode: what leaves the mesh through the waypoint.
#[derive(Debug, Parser)]
#[command(name = "egresslens", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per-external-host egress stats from waypoint access logs (files, .gz, or - for stdin).
    Stats(StatsArgs),
    /// Write realistic waypoint access-log lines with an exact ground truth.
    Gen(GenArgs),
    /// Run the pipeline on built-in simulated traffic and show the report (no cluster needed).
    Demo(DemoArgs),
    /// Read waypoint logs into the Parquet store, resuming where the store says it left off.
    Collect(Box<CollectArgs>),
    /// Run SQL (or a canned query, @name) over the Parquet store.
    Query(QueryArgs),
    /// What the stored logs show an operator must act on: bypass, unregistered or blocked
    /// egress, TLS not originated or failing; with each finding's first evidence line.
    Findings(FindingsArgs),
    /// Live egress per host, findings and a tail in the terminal, with filters and SQL: over a
    /// running collector (--attach URL) or a file followed here. Without a terminal, prints
    /// one snapshot table.
    Top(TopArgs),
    /// Merge the small files of past hours in the store into one file per hour.
    Compact(CompactArgs),
    /// The egress posture: each registered external host, its ports, TLS origination, the
    /// waypoint that serves it, and the problems that let traffic bypass it.
    Mesh(MeshArgs),
    /// Did the answer come through the waypoint or straight from the origin? Probes hosts
    /// with a plain-HTTP HEAD from here or from inside a workload (--from, through the
    /// Kubernetes exec API), or classifies saved response headers (--headers).
    Probe(ProbeArgs),
    /// The walkthrough for one host as a checklist: registered with a ready waypoint; a probe
    /// from the workload answered through it; the waypoint logged it; TLS originated where
    /// configured. Exit 0 when every check passes, 1 when one fails, 2 when it cannot run.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The external host (as the ServiceEntry lists it).
    host: String,
    /// The workload to send the probe from (`deployment/sleep`, `pod/NAME`); default: from
    /// this process.
    #[arg(long, value_name = "WORKLOAD")]
    from: Option<String>,
    /// The namespace of --from.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The container of --from to run curl in.
    #[arg(long, short = 'c', requires = "from")]
    container: Option<String>,
    /// The path to request.
    #[arg(long, default_value = "/")]
    path: String,
    /// For the probe.
    #[arg(long, value_parser = parse_age, default_value = "5s")]
    timeout: std::time::Duration,
    /// How long to watch the waypoint's log for the probe's request.
    #[arg(long, value_parser = parse_age, default_value = "15s")]
    log_wait: std::time::Duration,
    /// A `server` header value that marks a mesh proxy (repeatable; default: envoy,
    /// istio-envoy).
    #[arg(long = "proxy-server", value_name = "NAME")]
    proxy_servers: Vec<String>,
    /// table or json.
    #[arg(long, short = 'o', default_value = "table", value_parser = ["table", "json"])]
    output: String,
    #[command(flatten)]
    connection: KubeConnection,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// Hosts (or host:port) to send `HEAD http://HOST/` to.
    #[arg(required_unless_present = "headers")]
    hosts: Vec<String>,
    /// Send them from inside this workload instead (`deployment/sleep`, `pod/NAME`): `curl
    /// -sS -I` run in one of its ready pods, so the request takes the workload's path.
    #[arg(long, value_name = "WORKLOAD", conflicts_with = "headers")]
    from: Option<String>,
    /// The namespace of --from.
    #[arg(long, short = 'n', default_value = "default", requires = "from")]
    namespace: String,
    /// The container of --from to run curl in (default: the pod's default container).
    #[arg(long, short = 'c', requires = "from")]
    container: Option<String>,
    #[command(flatten)]
    connection: KubeConnection,
    /// Classify saved headers instead (`curl -sI`, `curl -v` output, raw blocks separated by
    /// blank lines or `###` headings); - for stdin.
    #[arg(long, value_name = "FILE", conflicts_with = "hosts")]
    headers: Option<String>,
    /// A `server` header value that marks a mesh proxy (repeatable; default: envoy,
    /// istio-envoy).
    #[arg(long = "proxy-server", value_name = "NAME")]
    proxy_servers: Vec<String>,
    /// The path to request.
    #[arg(long, default_value = "/")]
    path: String,
    /// For connecting, and for each read and write.
    #[arg(long, value_parser = parse_age, default_value = "5s")]
    timeout: std::time::Duration,
    /// table or json.
    #[arg(long, short = 'o', default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

#[derive(Debug, Args)]
struct MeshArgs {
    #[command(flatten)]
    connection: KubeConnection,
    /// A namespace whose ServiceEntries are shown (repeatable; default: every namespace).
    #[arg(long = "namespace", short = 'n')]
    namespaces: Vec<String>,
    /// table or json.
    #[arg(long, short = 'o', default_value = "table", value_parser = ["table", "json"])]
    output: String,
    /// Keep watching and print the posture again whenever the configuration changes (JSON:
    /// one object per line), until SIGINT or SIGTERM.
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, Args)]
struct KubeConnection {
    /// The kubeconfig file (default: in-cluster service account, else $KUBECONFIG, else
    /// ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    context: Option<String>,
}

#[derive(Debug, Args)]
struct CompactArgs {
    /// The store directory (not while a collector writes to it: that one compacts by itself).
    #[arg(long, default_value = "./egresslens-data")]
    store: PathBuf,
    /// Only hours that ended at least this long ago, e.g. 1h, 0s.
    #[arg(long, value_parser = parse_age, default_value = "1h")]
    older_than: std::time::Duration,
}

#[derive(Debug, Args)]
struct CollectArgs {
    /// A log file (plain or gzip) to read; repeat it to read several at once (each one
    /// followed, and resumed, on its own).
    #[arg(long, conflicts_with_all = ["stdin", "kube"])]
    file: Vec<PathBuf>,
    /// Read standard input (never resumed: a pipe has no position to come back to).
    #[arg(long, conflicts_with = "kube")]
    stdin: bool,
    /// Follow the waypoint pods through the Kubernetes API (the default inside a pod).
    #[arg(long)]
    kube: bool,
    /// Read the CRI log files under this directory (`/var/log/pods` on a node, for a
    /// DaemonSet): every pod's containers named by --container (waypoints and ztunnel run
    /// `istio-proxy`), in the namespaces of -n, rotated and compressed files included.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["file", "stdin", "kube"])]
    node_logs: Option<PathBuf>,
    #[command(flatten)]
    kube_args: KubeArgs,
    /// The store: a directory, or object storage (s3://bucket/prefix, gs://…, az://…,
    /// file:///…), written through the local --spool directory, below
    /// cluster=<--cluster>/collector=<--collector-id>/.
    #[arg(long, default_value = "./egresslens-data")]
    store: String,
    #[command(flatten)]
    spool: SpoolArgs,
    /// Read to the end and exit (batch import). Without it, the file is followed like
    /// `tail -F` (appends, truncation, rotation) until SIGINT or SIGTERM.
    #[arg(long)]
    once: bool,
    /// The longest a parsed line waits before it is committed (and visible to queries).
    #[arg(long, value_parser = parse_age, default_value = "30s")]
    commit_every: std::time::Duration,
    /// While following: how often the small files of hours that ended over an hour ago are
    /// merged (0s: never).
    #[arg(long, value_parser = parse_age, default_value = "10m")]
    compact_every: std::time::Duration,
    /// Rows per commit (and at most per file): what a crash can make the next run read again.
    #[arg(long, default_value_t = 1024 * 1024)]
    commit_rows: usize,
    /// Lines longer than this many bytes are rejected as too_long.
    #[arg(long, default_value_t = egresslens::source::lines::DEFAULT_MAX_LINE)]
    max_line: usize,
    /// Remove hour partitions older than this (by the wall clock), e.g. 7d, 36h, 90m.
    #[arg(long, value_parser = parse_age)]
    retain: Option<std::time::Duration>,
    /// Take these out of every line before it is stored, exported or shown: `query` (of
    /// paths), `user_agent` (hashed), `x_forwarded_for` (dropped), comma-separated.
    #[arg(long, value_name = "FIELDS", value_parser = egresslens::redact::Redaction::parse)]
    redact: Option<egresslens::redact::Redaction>,
    #[command(flatten)]
    internal: InternalArgs,
    #[command(flatten)]
    probes: ProbeRoundArgs,
    #[command(flatten)]
    export: ExportArgs,
    #[command(flatten)]
    listen: ListenArgs,
}

/// Writing to a store on object storage.
#[derive(Debug, Args)]
struct SpoolArgs {
    /// An S3-compatible service's address for s3:// stores (MinIO, Alibaba OSS:
    /// https://oss-cn-hangzhou.aliyuncs.com). Credentials come from the environment
    /// (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, IRSA's web identity, instance metadata).
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// With a store URL: the local directory commits are written to, and wait in until they
    /// are uploaded (on a volume that outlives the container, where it can).
    #[arg(long, value_name = "DIR", default_value = "./egresslens-spool")]
    spool: PathBuf,
    /// With a store URL: the most the spool holds waiting for upload (512M, 4G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1G")]
    spool_max: u64,
    /// When the spool is full: block (commits wait; the sources keep their logs meanwhile)
    /// or drop (the oldest waiting commits are deleted, and their rows counted).
    #[arg(long, value_enum, default_value = "block")]
    spool_full: SpoolFullArg,
    /// This collector's name in the object store's keys, which must outlive its pod (the
    /// Deployment's name; the node's in a DaemonSet). Default outside a pod: the host name.
    /// Two collectors must never share one within a cluster.
    #[arg(long, value_name = "ID")]
    collector_id: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SpoolFullArg {
    Block,
    Drop,
}

/// `512M`, `4G`, `1048576`: bytes, with an optional binary unit (K, M, G, T).
fn parse_size(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} does not start with a number"))?;
    let shift = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: use K, M, G or T, as in 512M")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

/// The id this collector writes its keys under: the flag, else, outside a pod, the host
/// name. A pod's name changes when it is rescheduled, and the id names the checkpoint the
/// collector resumes from, so in a pod it must be given.
fn collector_id(flag: Option<&str>) -> Result<String> {
    if let Some(id) = flag {
        return Ok(id.to_owned());
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        bail!(
            "in a pod, a store URL needs --collector-id: a name that stays when the pod is \
             rescheduled (the Deployment's name; the node's, $(NODE_NAME), in a DaemonSet)"
        );
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|host| host.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|id| !id.is_empty())
        .context("no host name to use as the collector id: give --collector-id")
}

/// The read-only status API: /healthz, /readyz, /api/v1/snapshot, /api/v1/tail.
#[derive(Debug, Args)]
struct ListenArgs {
    /// Where the status API listens, or `off`. Default: 127.0.0.1:9464, unless --once (a
    /// default address already in use is a warning, a given one an error).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A file holding a bearer token that every path but /healthz then requires.
    #[arg(long, value_name = "FILE")]
    listen_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TopArgs {
    /// Waypoint log files to follow (like tail -F), run through the pipeline here.
    #[arg(conflicts_with_all = ["attach", "kube"])]
    files: Vec<PathBuf>,
    /// Follow the waypoint pods through the Kubernetes API, with the pipeline run here (the
    /// options are collect's).
    #[arg(long, conflicts_with = "attach")]
    kube: bool,
    #[command(flatten)]
    kube_args: KubeArgs,
    /// A running collector's status API (http://127.0.0.1:9464; kubectl port-forward for a
    /// pod's).
    #[arg(long, value_name = "URL")]
    attach: Option<String>,
    /// The bearer token of an attached collector's status API, in a file.
    #[arg(long, value_name = "FILE", requires = "attach")]
    token_file: Option<PathBuf>,
    /// Alone: the store whose history to replay (a directory or a store URL). With
    /// --attach: the collector's store, for SQL (`:`). With FILE or --kube: the directory
    /// the records are kept in (default: one of its own, removed at exit).
    #[arg(long, value_name = "DIR|URL")]
    store: Option<String>,
    /// An S3-compatible service's address for s3:// stores, as for collect.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Replay only the store's records of the last AGE (wall clock: 30m, 6h, 2d).
    #[arg(long, value_name = "AGE", value_parser = parse_age, requires = "store")]
    since: Option<std::time::Duration>,
    /// Replay at this many times the recorded pace (default: as fast as it reads).
    #[arg(long, value_name = "TIMES", requires = "store")]
    speed: Option<f64>,
    /// With FILE or --kube: take these out of every line, as collect's --redact does.
    #[arg(long, value_name = "FIELDS", value_parser = egresslens::redact::Redaction::parse)]
    redact: Option<egresslens::redact::Redaction>,
}

/// The status API's address when none is given.
const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

impl ListenArgs {
    /// Starts the status API as asked (`None` when it is off) and gives `control` its live
    /// view to feed.
    fn start(
        &self,
        once: bool,
        internal: InternalRanges,
        control: &std::sync::Arc<Control>,
    ) -> Result<Option<egresslens::serve::StatusServer>> {
        use egresslens::live::Live;
        let (addr, given) = match self.listen.as_deref() {
            Some("off") => return Ok(None),
            Some(addr) => (addr, true),
            None if once => return Ok(None),
            None => (DEFAULT_LISTEN, false),
        };
        let addr: std::net::SocketAddr =
            addr.parse().with_context(|| format!("--listen {addr}: say HOST:PORT or off"))?;
        let token = match &self.listen_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read --listen-token-file {}", path.display())
                })?;
                let token = text.trim().to_owned();
                if token.is_empty() {
                    bail!("--listen-token-file {} is empty", path.display());
                }
                Some(token)
            }
            None => None,
        };
        let stats = StatsConfig { internal, ..StatsConfig::default() };
        let live = std::sync::Arc::new(Live::new(stats));
        // The store is open by now, its writer lock held.
        live.readiness.store.store(true, std::sync::atomic::Ordering::Relaxed);
        match egresslens::serve::StatusServer::start(addr, token, live.clone(), control.clone()) {
            Ok(server) => {
                let _ = writeln!(io::stderr(), "egresslens: status API on http://{}", server.addr);
                let _ = control.live.set(live);
                Ok(Some(server))
            }
            Err(e) if !given => {
                let e = anyhow::Error::from(e);
                let _ = writeln!(io::stderr(), "egresslens: warning: no status API: {e:#}");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// OTLP export; off unless an endpoint is set here or in `OTEL_EXPORTER_OTLP_ENDPOINT` (or a
/// per-signal variable). Flags win over the `OTEL_*` variables.
#[derive(Debug, Args)]
struct ExportArgs {
    /// The OTLP endpoint for metrics and traces, like OTEL_EXPORTER_OTLP_ENDPOINT
    /// (`http://otel-collector:4318`; https:// for TLS).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf).
    #[arg(long, value_name = "PROTOCOL", value_parser = parse_protocol)]
    otlp_protocol: Option<egresslens::export::config::Protocol>,
    /// A header sent with every export, `name=value` (repeatable; never printed).
    #[arg(long = "otlp-header", value_name = "NAME=VALUE", value_parser = egresslens::export::config::parse_header_arg)]
    otlp_headers: Vec<(String, String)>,
    /// How long one export may take (default: OTEL_EXPORTER_OTLP_TIMEOUT, else 10s).
    #[arg(long, value_parser = parse_age)]
    otlp_timeout: Option<std::time::Duration>,
    /// How often metrics are exported (default: OTEL_METRIC_EXPORT_INTERVAL, else 60s).
    #[arg(long, value_parser = parse_age)]
    metric_interval: Option<std::time::Duration>,
    /// The share of ordinary records that get a span (failures, flagged, slow requests and
    /// findings' evidence always do).
    #[arg(long, default_value_t = 0.01)]
    trace_sample: f64,
    /// Requests at least this slow always get a span.
    #[arg(long, value_parser = parse_age, default_value = "1s")]
    trace_slow: std::time::Duration,
    /// Hosts exported under their own name; the rest as server.address="_other" (counted).
    #[arg(long, default_value_t = 500)]
    export_max_hosts: usize,
}

fn parse_protocol(text: &str) -> Result<egresslens::export::config::Protocol, String> {
    egresslens::export::config::Protocol::parse(text).map_err(|e| e.to_string())
}

impl ExportArgs {
    /// The exporter the flags and the environment ask for, started; `None` when export is off.
    fn start(&self, cluster: Option<String>) -> Result<Option<egresslens::export::Exporter>> {
        use egresslens::export::{ExportOptions, Exporter, config, traces::TraceRule};
        let overrides = config::Overrides {
            endpoint: self.otlp_endpoint.clone(),
            protocol: self.otlp_protocol,
            headers: self.otlp_headers.clone(),
            timeout: self.otlp_timeout,
            metric_interval: self.metric_interval,
        };
        let Some(otlp) = config::OtlpConfig::from_env(&overrides)? else {
            return Ok(None);
        };
        if self.export_max_hosts == 0 {
            bail!("--export-max-hosts must be at least 1");
        }
        let traces = TraceRule {
            ratio: fraction("trace-sample", self.trace_sample)?,
            slow: self.trace_slow,
        };
        let options = ExportOptions { traces, max_hosts: self.export_max_hosts, cluster };
        let exporter = Exporter::start(&otlp, &options)?;
        for target in &exporter.targets {
            let _ = writeln!(io::stderr(), "egresslens: exporting {target}");
        }
        Ok(Some(exporter))
    }
}

/// How long the last export may take at exit.
const EXPORT_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// What a Kubernetes collector does on a schedule.
#[derive(Debug, Args)]
struct ProbeRoundArgs {
    /// With --kube: snapshot the mesh's egress posture this often into mesh_hosts (the TLS
    /// intent `findings` reads, waypoints with no ready pod as findings); 0s: never.
    #[arg(long, value_parser = parse_age, default_value = "5m")]
    mesh_every: std::time::Duration,
    /// Probe every registered host this often (e.g. 5m) from --probe-from, into the probes
    /// and findings tables.
    #[arg(long, value_parser = parse_age, requires = "probe_from")]
    probe_every: Option<std::time::Duration>,
    /// The workload the probes are sent from (`deployment/sleep`, `pod/NAME`).
    #[arg(long, value_name = "WORKLOAD", requires = "probe_every")]
    probe_from: Option<String>,
    /// The namespace of --probe-from.
    #[arg(long, default_value = "default")]
    probe_namespace: String,
    /// The container of --probe-from to run curl in.
    #[arg(long)]
    probe_container: Option<String>,
}

impl ProbeRoundArgs {
    fn rounds(&self) -> Result<egresslens::rounds::Rounds> {
        use egresslens::probe::{exec::ExecProbe, exec::Workload, proxy_servers};
        let mesh_every = Some(self.mesh_every).filter(|e| !e.is_zero());
        let (Some(every), Some(from)) = (self.probe_every, &self.probe_from) else {
            return Ok(egresslens::rounds::Rounds { mesh_every, probes: None });
        };
        if every.is_zero() {
            bail!("--probe-every must be above 0");
        }
        let probe = ExecProbe {
            path: "/".to_owned(),
            timeout: std::time::Duration::from_secs(5),
            proxy_servers: proxy_servers(&[]),
        };
        let probes = egresslens::rounds::ProbeRounds {
            every,
            from: Workload::parse(from)?,
            namespace: self.probe_namespace.clone(),
            container: self.probe_container.clone(),
            probe,
        };
        Ok(egresslens::rounds::Rounds { mesh_every, probes: Some(probes) })
    }
}

#[derive(Debug, Args)]
struct KubeArgs {
    #[command(flatten)]
    connection: KubeConnection,
    /// A namespace to watch (repeatable; default: every namespace).
    #[arg(long = "namespace", short = 'n')]
    namespaces: Vec<String>,
    /// Only this waypoint (its Gateway's name).
    #[arg(long)]
    waypoint: Option<String>,
    /// The label selector of waypoint pods.
    #[arg(long, default_value = egresslens::source::kube::WAYPOINT_SELECTOR)]
    selector: String,
    /// The container whose log is followed.
    #[arg(long, default_value = egresslens::source::kube::WAYPOINT_CONTAINER)]
    container: String,
    /// The cluster's name, for the `cluster` column and the checkpoint's name.
    #[arg(long)]
    cluster: Option<String>,
    /// Also follow the ztunnel pods (their connection lines go to the `ztunnel_conn` table).
    #[arg(long)]
    ztunnel: bool,
    /// The namespace of the ztunnel pods.
    #[arg(long, default_value = egresslens::source::kube::ZTUNNEL_NAMESPACE)]
    ztunnel_namespace: String,
    /// The label selector of ztunnel pods.
    #[arg(long, default_value = egresslens::source::kube::ZTUNNEL_SELECTOR)]
    ztunnel_selector: String,
    /// Name the workload and namespace behind each request's source IP (watches every pod).
    #[arg(long)]
    resolve_sources: bool,
    /// Reconnect a stream that sends nothing for this long while its pod runs.
    #[arg(long, value_parser = parse_age, default_value = "5m")]
    stall: std::time::Duration,
}

/// `7d`, `36h`, `90m`, `3600s`, `300ms`.
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} does not start with a number"))?;
    let millis = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        "ms" => 1,
        _ => return Err(format!("{text:?}: use d, h, m, s or ms, as in 7d")),
    };
    Ok(std::time::Duration::from_millis(n.saturating_mul(millis)))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ResultFormatArg {
    Table,
    Csv,
    Json,
    Ndjson,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// SQL over the tables access_log and rejects, or @name for a canned query.
    #[arg(required_unless_present = "list")]
    sql: Option<String>,
    /// The store: a directory, or object storage (s3://bucket/prefix, gs://…, az://…,
    /// file:///…), where every collector's keys make one table.
    #[arg(long, default_value = "./egresslens-data")]
    store: String,
    /// An S3-compatible service's address for s3:// stores, as for collect.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Run the query on a Ballista cluster, its scheduler at df://HOST:PORT (50050 by
    /// default): its executors scan the store (a URL they can read, with their own
    /// credentials).
    #[arg(long, value_name = "URL")]
    ballista: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: ResultFormatArg,
    /// List the canned queries and what each answers.
    #[arg(long)]
    list: bool,
    /// A value for a canned query's parameter, as NAME=VALUE (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct FindingsArgs {
    /// The store directory.
    #[arg(long, default_value = "./egresslens-data")]
    store: PathBuf,
    /// table or json.
    #[arg(long, short = 'o', default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Log files (plain or gzip) or - for stdin; stdin when none is given.
    inputs: Vec<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: FormatArg,
    /// Order of hosts: requests, host, errors, error_rate, bytes, p50, p99, tls.
    #[arg(long, default_value = "requests")]
    sort: String,
    /// Time window by the log's own clock, ending at the newest entry: 1m, 5m, 1h or all.
    #[arg(long, default_value = "all")]
    window: String,
    /// Show only the first N hosts (table and CSV).
    #[arg(long)]
    top: Option<usize>,
    #[command(flatten)]
    ingest: IngestArgs,
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// Lines longer than this many bytes are rejected as too_long.
    #[arg(long, default_value_t = egresslens::source::lines::DEFAULT_MAX_LINE)]
    max_line: usize,
    /// Parsing threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Distinct hosts tracked; the rest are counted under _other.
    #[arg(long, default_value_t = 20_000)]
    max_hosts: usize,
    #[command(flatten)]
    internal: InternalArgs,
}

#[derive(Debug, Args)]
struct InternalArgs {
    /// A CIDR block inside the cluster (repeatable, at most 32; replaces the default private,
    /// CGNAT, loopback, link-local and Istio VIP ranges): ztunnel connections straight to
    /// anything else bypassed the waypoints.
    #[arg(long = "internal-cidr", value_name = "CIDR")]
    internal_cidrs: Vec<egresslens::netrange::Cidr>,
}

impl InternalArgs {
    fn ranges(&self) -> Result<InternalRanges> {
        if self.internal_cidrs.is_empty() {
            return Ok(InternalRanges::default());
        }
        InternalRanges::new(self.internal_cidrs.clone())
            .map_err(|e| anyhow::anyhow!("--internal-cidr: {e}"))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GenFormatArg {
    Json,
    Text,
    Cri,
    Kubectl,
}

#[derive(Debug, Args)]
struct GenArgs {
    /// Records to write (good and bad).
    #[arg(long, default_value_t = 1000)]
    lines: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of malformed records (0..1).
    #[arg(long, default_value_t = 0.0)]
    bad: f64,
    #[arg(long, value_enum, default_value = "json")]
    format: GenFormatArg,
    /// Write the exact per-host ground truth (JSON) here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Output file (gzip when it ends in .gz); stdout when absent.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Distinct external hosts.
    #[arg(long, default_value_t = 50)]
    hosts: usize,
    /// Mean records per second of log time.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// RFC 3339 time of the first record.
    #[arg(long, default_value = "2025-08-18T09:36:30Z")]
    start: String,
    /// Fraction of hosts whose port-80 traffic the waypoint sends to 443.
    #[arg(long, default_value_t = 0.2)]
    tls_origination: f64,
    /// Fraction of TCP (TLS passthrough) entries.
    #[arg(long, default_value_t = 0.02)]
    passthrough: f64,
    /// Fraction of entries in Istio's untyped all-string JSON.
    #[arg(long, default_value_t = 0.1)]
    untyped: f64,
    /// Keep keys in one fixed order instead of varying it per line.
    #[arg(long)]
    fixed_key_order: bool,
    /// Mix in what findings are made of: an unregistered and a blocked host, TLS origination
    /// dropped and failing from halfway on, ztunnel lines that bypass the waypoint (the truth
    /// counts each finding kind's evidence).
    #[arg(long)]
    incidents: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Simulated records.
    #[arg(long, default_value_t = 200_000)]
    lines: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Host rows to show.
    #[arg(long, default_value_t = 15)]
    top: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stats(args) => run_stats(args),
        Command::Gen(args) => run_gen(args),
        Command::Demo(args) => run_demo(args),
        Command::Collect(args) => run_collect(*args),
        Command::Query(args) => run_query(args),
        Command::Findings(args) => run_findings(args),
        Command::Top(args) => run_top(args),
        Command::Compact(args) => run_compact(args),
        Command::Mesh(args) => run_mesh(args),
        Command::Probe(args) => run_probe(args),
        Command::Verify(args) => return run_verify(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if is_usage_error(&err) => {
            let _ = writeln!(io::stderr(), "egresslens: {}", error_chain(&err));
            ExitCode::from(2)
        }
        Err(err) => {
            let _ = writeln!(io::stderr(), "egresslens: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated; a cause whose text the message before it already
/// ends with (libraries that print their source and also return it) is said once.
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Bad SQL, unknown canned queries and unknown workload kinds are the user's to fix, like bad
/// arguments: exit 2.
fn is_usage_error(err: &anyhow::Error) -> bool {
    use egresslens::probe::exec::ExecError;
    err.chain().any(|cause| {
        matches!(cause.downcast_ref::<ExecError>(), Some(ExecError::BadWorkload(_)))
            || matches!(
                cause.downcast_ref::<QueryError>(),
                Some(
                    QueryError::Sql(_)
                        | QueryError::UnknownCanned(_)
                        | QueryError::MissingParam { .. }
                )
            )
    })
}

/// `egresslens stats … | head` closing the pipe early is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let broken = Some(io::ErrorKind::BrokenPipe);
    err.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().map(io::Error::kind) == broken
            || cause.downcast_ref::<serde_json::Error>().and_then(|e| e.io_error_kind()) == broken
    })
}

fn fraction(name: &str, value: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&value) {
        bail!("--{name} must be between 0 and 1, got {value}");
    }
    Ok(value)
}

impl IngestArgs {
    fn config(&self) -> Result<IngestConfig> {
        if self.max_line < 1024 {
            bail!("--max-line must be at least 1024 bytes, got {}", self.max_line);
        }
        if self.threads == Some(0) || self.max_hosts == 0 {
            bail!("--threads and --max-hosts must be at least 1");
        }
        let mut config = IngestConfig { max_line: self.max_line, ..IngestConfig::default() };
        if let Some(threads) = self.threads {
            config.workers = threads;
        }
        config.stats.max_hosts = self.max_hosts;
        config.stats.internal = self.internal.ranges()?;
        Ok(config)
    }
}

fn run_stats(args: StatsArgs) -> Result<()> {
    let mut config = args.ingest.config()?;
    let sort = SortKey::parse(&args.sort).with_context(|| {
        format!("unknown --sort {:?}; one of {}", args.sort, SortKey::NAMES.join(", "))
    })?;
    let window = Window::parse(&args.window)
        .with_context(|| format!("unknown --window {:?}; one of 1m, 5m, 1h, all", args.window))?;
    let inputs: Vec<Input> = if args.inputs.is_empty() {
        vec![Input::Stdin]
    } else {
        args.inputs.iter().map(|a| Input::from_arg(a)).collect()
    };
    config.stats.track_windows = window != Window::All;
    let stats = ingest::stats(&inputs, &config)?;
    let mut report = stats.report(window, None);
    sort_hosts(&mut report.hosts, sort);
    let format = match args.output {
        FormatArg::Table => OutputFormat::Table,
        FormatArg::Json => OutputFormat::Json,
        FormatArg::Csv => OutputFormat::Csv,
    };
    let mut out = BufWriter::new(io::stdout().lock());
    write_report(&mut out, &report, format, args.top)?;
    out.flush()?;
    Ok(())
}

impl GenArgs {
    fn config(&self) -> Result<GenConfig> {
        if self.hosts == 0 || !self.rate.is_finite() || self.rate <= 0.0 {
            bail!("--hosts and --rate must be positive");
        }
        Ok(GenConfig {
            lines: self.lines,
            seed: self.seed,
            hosts: self.hosts,
            format: match self.format {
                GenFormatArg::Json => GenFormat::Json,
                GenFormatArg::Text => GenFormat::Text,
                GenFormatArg::Cri => GenFormat::Cri,
                GenFormatArg::Kubectl => GenFormat::Kubectl,
            },
            bad: fraction("bad", self.bad)?,
            start_ns: parse_rfc3339_ns(&self.start)
                .with_context(|| format!("--start {:?} is not an RFC 3339 time", self.start))?,
            rate: self.rate,
            tls_origination: fraction("tls-origination", self.tls_origination)?,
            passthrough: fraction("passthrough", self.passthrough)?,
            untyped: fraction("untyped", self.untyped)?,
            shuffle_keys: !self.fixed_key_order,
            incidents: self.incidents,
        })
    }
}

fn run_gen(args: GenArgs) -> Result<()> {
    let config = args.config()?;
    let truth = match &args.out {
        None => {
            let mut out = BufWriter::new(io::stdout().lock());
            let truth = generate(&config, &mut out)?;
            out.flush()?;
            truth
        }
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let mut out = BufWriter::new(file);
            let truth = if path.extension().is_some_and(|e| e == "gz") {
                let mut gz = GzEncoder::new(out, Compression::fast());
                let truth = generate(&config, &mut gz)?;
                out = gz.finish()?;
                truth
            } else {
                generate(&config, &mut out)?
            };
            out.flush().with_context(|| format!("cannot write {}", path.display()))?;
            truth
        }
    };
    if let Some(path) = &args.truth {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        serde_json::to_writer_pretty(BufWriter::new(file), &truth)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn run_demo(args: DemoArgs) -> Result<()> {
    let demo = egresslens::demo::run(args.lines, args.seed)?;
    let mut report = demo.stats.report(Window::All, None);
    sort_hosts(&mut report.hosts, SortKey::Requests);
    let mut out = BufWriter::new(io::stdout().lock());
    writeln!(
        out,
        "egresslens demo: {} simulated waypoint access-log lines from {} external hosts and {} \
         ztunnel connections (seed {}), with 1% damaged lines and incidents mixed in: an \
         unregistered and a blocked host, TLS origination dropped and failing halfway, a \
         waypoint with no ready pod, traffic around it.\n",
        demo.truth.records,
        demo.truth.hosts.len(),
        demo.truth.ztunnel_connections,
        args.seed
    )?;
    write_report(&mut out, &report, OutputFormat::Table, Some(args.top))?;
    writeln!(out)?;
    writeln!(
        out,
        "Probes from {} (simulated `curl -sI http://HOST`):",
        egresslens::demo::PROBE_SOURCE
    )?;
    for probe in &demo.probes {
        writeln!(out, "  {:<13} {}", probe.verdict.as_str(), probe.summary())?;
    }
    writeln!(out, "Mesh problems (egresslens mesh shows the full posture):")?;
    for host in &demo.posture {
        for problem in &host.problems {
            writeln!(out, "  {:<20} {}", problem.kind.as_str(), problem.message)?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "On your own logs: kubectl -n istio-egress logs deploy/waypoint | egresslens stats -"
    )?;
    out.flush()?;
    Ok(())
}

fn run_collect(args: CollectArgs) -> Result<()> {
    if args.max_line < 1024 || args.commit_rows == 0 || args.commit_every.is_zero() {
        bail!("--max-line must be at least 1024, --commit-rows and --commit-every above 0");
    }
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let source = match (args.file.as_slice(), args.stdin) {
        ([path], _) => CollectSource::Input(Input::Path(path.clone())),
        ([_, _, ..], _) => CollectSource::Files(distinct_files(&args.file)?),
        ([], true) => CollectSource::Input(Input::Stdin),
        ([], false) if args.node_logs.is_some() => CollectSource::Node(NodeOptions {
            root: args.node_logs.clone().expect("checked by the guard"),
            namespaces: args.kube_args.namespaces.clone(),
            containers: vec![args.kube_args.container.clone()],
            rescan: std::time::Duration::from_secs(1),
        }),
        ([], false) if args.kube || in_pod => {
            if args.once {
                bail!("--once reads a file to its end; a Kubernetes collector runs until stopped");
            }
            let (config, options) = kube_source(&args.kube_args)?;
            CollectSource::Kube(Box::new(config), options, args.probes.rounds()?)
        }
        ([], false) => {
            bail!("say what to collect: --file PATH, --stdin, --kube or --node-logs DIR")
        }
    };
    let (store_dir, remote) = match StoreAt::parse(&args.store, args.spool.s3_endpoint.as_deref())?
    {
        StoreAt::Dir(dir) => (dir, None),
        StoreAt::Remote(remote) => {
            if args.retain.is_some() {
                bail!(
                    "--retain removes local partitions: expire a store URL's objects with the \
                     bucket's lifecycle rules"
                );
            }
            let Some(cluster) = args.kube_args.cluster.as_deref() else {
                bail!("a store URL needs --cluster NAME: keys go below cluster=NAME/collector=ID/");
            };
            let id = collector_id(args.spool.collector_id.as_deref())?;
            let writer = egresslens::store::remote::Writer::new(cluster, &id)?;
            (args.spool.spool.clone(), Some((remote, writer)))
        }
    };
    let config = CollectConfig {
        max_line: args.max_line,
        commit_rows: args.commit_rows,
        commit_every: args.commit_every,
        once: args.once,
        retain: args.retain,
        // Compaction would give uploaded rows new files: a store URL gets none.
        compact_every: Some(args.compact_every)
            .filter(|e| !args.once && !e.is_zero() && remote.is_none()),
        internal: args.internal.ranges()?,
        redact: args.redact.unwrap_or_default(),
        ..CollectConfig::default()
    };
    let (mut store, recovery) = Store::open(&store_dir)?;
    if recovery.rolled_forward + recovery.discarded > 0 {
        let _ = writeln!(
            io::stderr(),
            "egresslens: finished an interrupted commit ({} files), discarded {} unfinished files",
            recovery.rolled_forward,
            recovery.discarded
        );
    }
    let upload = match remote {
        Some((remote, writer)) => Some(Upload::start(remote, writer, &mut store, &args.spool)?),
        None => None,
    };
    let exporter = args.export.start(args.kube_args.cluster.clone())?;
    let telemetry = exporter.as_ref().map(egresslens::export::Exporter::telemetry);
    let spool = upload.as_ref().map(|u| u.spool.clone());
    let control = std::sync::Arc::new(Control { telemetry, spool, ..Control::default() });
    let _status = args.listen.start(args.once, config.internal, &control)?;
    // The first SIGINT or SIGTERM asks for a clean stop; a second one ends the process.
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
        let control = control.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            control.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let total = match &source {
        CollectSource::Input(Input::Path(path)) if args.once => {
            std::fs::metadata(path).ok().map(|m| m.len())
        }
        CollectSource::Files(paths) if args.once => {
            paths.iter().map(|p| std::fs::metadata(p).ok().map(|m| m.len())).sum()
        }
        _ => None,
    };
    let name = match &source {
        CollectSource::Input(input) => input.name(),
        CollectSource::Files(paths) => format!("{} files", paths.len()),
        CollectSource::Kube(..) => "the Kubernetes API".to_owned(),
        CollectSource::Node(node) => node.root.display().to_string(),
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let summary = std::thread::scope(|scope| {
        if io::IsTerminal::is_terminal(&io::stderr()) {
            scope.spawn(|| progress::show(&control, &done, total));
        }
        let summary = match source {
            CollectSource::Input(input) => collect(&input, &mut store, &config, &control),
            CollectSource::Files(paths) => collect_files(&paths, &mut store, &config, &control),
            CollectSource::Kube(kube_config, options, probes) => {
                let cluster = args.kube_args.cluster.clone();
                let sources = (options, probes);
                collect_kube(*kube_config, sources, cluster, &mut store, &config, &control)
            }
            CollectSource::Node(node) => {
                let cluster = args.kube_args.cluster.clone();
                collect_node(node, cluster, &mut store, &config, &control)
            }
        };
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        summary
    });
    // What was parsed is exported, even when the run ends in an error.
    if let Some(exporter) = exporter {
        report_export(&exporter.shutdown(EXPORT_FLUSH));
    }
    // An upload error is the one to show: the collector stopped because of it.
    let left = upload.map(|upload| upload.finish(&store_dir)).transpose()?;
    report_collect(&summary?, &name, &args.store);
    if let Some(left) = left
        && left.commits > 0
    {
        let waiting = format!(
            "{} commits ({} MB) wait in the spool {} for upload: the next run uploads them",
            left.commits,
            left.bytes / 1_000_000,
            store_dir.display()
        );
        if args.once {
            bail!("{waiting}");
        }
        let _ = writeln!(io::stderr(), "egresslens: warning: {waiting}");
    }
    Ok(())
}

/// How long uploading goes on at the end of a run while the object store does not answer.
const UPLOAD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// The spool's uploader of a collector writing to object storage.
struct Upload {
    url: String,
    spool: std::sync::Arc<egresslens::store::upload::Spool>,
    uploader: egresslens::store::upload::Uploader,
}

impl Upload {
    /// Starts the spool from the object store when it is empty, then its uploader.
    fn start(
        remote: egresslens::store::remote::Remote,
        writer: egresslens::store::remote::Writer,
        store: &mut Store,
        args: &SpoolArgs,
    ) -> Result<Upload> {
        use egresslens::store::upload::{Spool, SpoolFull, SpoolLimit, Uploader, restore};
        let url = remote.url().to_owned();
        let restored = restore(&remote, &writer, store)?;
        if let Some((commit, files)) = restored.commit {
            let _ = writeln!(
                io::stderr(),
                "egresslens: the spool was empty: resuming from commit {commit} ({files} files) \
                 of {url}"
            );
        }
        if !restored.deleted.is_empty() {
            let _ = writeln!(
                io::stderr(),
                "egresslens: deleted the incomplete commits {:?} of this collector from {url}: \
                 their rows are read again",
                restored.deleted
            );
        }
        let full = match args.spool_full {
            SpoolFullArg::Block => SpoolFull::Block,
            SpoolFullArg::Drop => SpoolFull::Drop,
        };
        let limit = SpoolLimit { max_bytes: args.spool_max, full };
        let spool = std::sync::Arc::new(Spool::new(store.root(), limit));
        let uploader = Uploader::start(remote, writer, spool.clone())?;
        Ok(Upload { url, spool, uploader })
    }

    /// Uploads what is left (while the object store answers) and reports what was done.
    fn finish(self, spool_dir: &std::path::Path) -> Result<egresslens::store::upload::Left> {
        use std::sync::atomic::Ordering::Relaxed;
        let left = self.uploader.finish(UPLOAD_PATIENCE);
        let counters = &self.spool.counters;
        let mut err = io::stderr().lock();
        let _ = writeln!(
            err,
            "egresslens: uploaded {} files ({} MB) from {} to {} ({} there already, {} failed \
             rounds)",
            counters.uploaded_files.load(Relaxed),
            counters.uploaded_bytes.load(Relaxed) / 1_000_000,
            spool_dir.display(),
            self.url,
            counters.already_there.load(Relaxed),
            counters.failures.load(Relaxed),
        );
        let dropped = counters.dropped_commits.load(Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                err,
                "egresslens: warning: {dropped} commits ({} rows) dropped: the spool was full",
                counters.dropped_rows.load(Relaxed)
            );
        }
        Ok(left?)
    }
}

/// `paths`, refused when two name the same file: its lines would be read twice.
fn distinct_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        // A file not there yet is known by the name it will have.
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        if !seen.insert(key) {
            bail!("{} is given twice: its lines would be read twice", path.display());
        }
    }
    Ok(paths.to_vec())
}

fn run_top(args: TopArgs) -> Result<()> {
    use egresslens::tui::feed::Pipeline;
    use egresslens::tui::{self, TopOptions, feed::Feed};
    let replay = args.since.is_some() || args.speed.is_some();
    let in_process = args.kube || !args.files.is_empty();
    if replay && (args.attach.is_some() || in_process) {
        bail!("--since and --speed replay a store: use them with --store DIR alone");
    }
    if args.redact.is_some() && !in_process {
        bail!("--redact works where the lines are read: with top FILE… or top --kube");
    }
    let mut scratch = None;
    let pipeline = if args.kube {
        let (config, pods) = kube_source(&args.kube_args)?;
        let cluster = args.kube_args.cluster.clone();
        Some(Pipeline::Kube { config: Box::new(config), pods, cluster })
    } else if args.files.is_empty() {
        None
    } else {
        Some(Pipeline::Files(distinct_files(&args.files)?))
    };
    let feed = match (&args.attach, pipeline) {
        (Some(url), _) => {
            let token = match &args.token_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read --token-file {}", path.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            Feed::attach(url, token)?
        }
        (None, Some(source)) => {
            let store = match &args.store {
                Some(text) if text.contains("://") => bail!(
                    "with FILE or --kube, --store is the directory the records are kept in, not \
                     a URL"
                ),
                Some(dir) => PathBuf::from(dir),
                None => {
                    let dir =
                        std::env::temp_dir().join(format!("egresslens-top-{}", std::process::id()));
                    scratch = Some(dir.clone());
                    dir
                }
            };
            Feed::Pipeline { source, store, redact: args.redact.unwrap_or_default() }
        }
        (None, None) => match &args.store {
            Some(store) => {
                if args.speed.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
                    bail!("--speed must be above 0");
                }
                let store = StoreAt::parse(store, args.s3_endpoint.as_deref())?;
                Feed::Store(tui::history::History { store, since: args.since, speed: args.speed })
            }
            None => bail!(
                "say what to show: top FILE…, top --kube, top --attach http://HOST:PORT, or top \
                 --store DIR"
            ),
        },
    };
    let sql_store = match (&args.attach, &args.store) {
        (Some(_), Some(store)) => Some(StoreAt::parse(store, args.s3_endpoint.as_deref())?),
        _ => None,
    };
    let result = tui::run(feed, TopOptions { sql_store });
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(result?)
}

fn report_export(summary: &egresslens::export::ExportSummary) {
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "egresslens: exported metrics {} times ({} failed), {} spans ({} dropped)",
        summary.metric_exports,
        summary.metric_failures,
        summary.spans_exported,
        summary.spans_dropped
    );
    if summary.hosts_folded > 0 {
        let _ = writeln!(
            err,
            "egresslens: {} requests exported as server.address=\"_other\" (past --export-max-hosts)",
            summary.hosts_folded
        );
    }
    if summary.flush_failed {
        let _ =
            writeln!(err, "egresslens: warning: the last export failed or did not finish in time");
    }
}

/// What `collect` reads.
enum CollectSource {
    Input(Input),
    /// Several files, read together.
    Files(Vec<PathBuf>),
    Kube(Box<kube::Config>, Vec<KubeOptions>, egresslens::rounds::Rounds),
    Node(NodeOptions),
}

fn run_probe(args: ProbeArgs) -> Result<()> {
    use egresslens::probe::{http::HttpProbe, parse_blocks};
    let proxy_servers = egresslens::probe::proxy_servers(&args.proxy_servers);
    let answers = match &args.headers {
        Some(name) => {
            let mut text = String::new();
            Input::from_arg(name)
                .open()
                .and_then(|mut input| input.read_to_string(&mut text))
                .with_context(|| format!("cannot read {name}"))?;
            parse_blocks(&text, &proxy_servers)
        }
        None => match &args.from {
            Some(from) => probe_from(&args, from, proxy_servers)?,
            None => {
                let (path, timeout) = (args.path.clone(), args.timeout);
                let probe = HttpProbe { path, timeout, proxy_servers };
                args.hosts.iter().map(|host| probe.probe(host)).collect()
            }
        },
    };
    let mut out = io::stdout().lock();
    if args.output == "json" {
        serde_json::to_writer_pretty(&mut out, &answers)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<13} {:>6} {:<20} {:>11} {:>10}  TARGET",
        "VERDICT", "STATUS", "SERVER", "UPSTREAM_MS", "LATENCY_MS"
    )?;
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    for a in &answers {
        let status = a.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let mut note = a.error.clone().unwrap_or_default();
        if a.elided {
            note.push_str("headers were elided where this was saved");
        }
        writeln!(
            out,
            "{:<13} {:>6} {:<20} {:>11} {:>10}  {}{}",
            a.verdict.as_str(),
            status,
            a.server.as_deref().unwrap_or("-").chars().take(20).collect::<String>(),
            ms(a.upstream_service_time_ms),
            ms(a.latency_ms),
            a.target,
            if note.is_empty() { String::new() } else { format!("  ({note})") }
        )?;
    }
    Ok(())
}

/// The exit code says how verification went: 0 passed, 1 a check failed, 2 it could not run.
fn run_verify(args: VerifyArgs) -> ExitCode {
    match verify_host(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(io::stderr(), "egresslens: {}", error_chain(&err));
            ExitCode::from(2)
        }
    }
}

/// Runs the checks and prints them; whether all passed.
fn verify_host(args: &VerifyArgs) -> Result<bool> {
    use egresslens::probe::exec::Workload;
    use egresslens::verify::{VerifyOptions, verify};
    let proxy_servers = egresslens::probe::proxy_servers(&args.proxy_servers);
    let options = VerifyOptions {
        host: args.host.clone(),
        from: args.from.as_deref().map(Workload::parse).transpose()?,
        namespace: args.namespace.clone(),
        container: args.container.clone(),
        path: args.path.clone(),
        timeout: args.timeout,
        log_wait: args.log_wait,
        proxy_servers,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let verification = runtime.block_on(async {
        let config = kube_config(&args.connection).await?;
        let client = kube::Client::try_from(config)?;
        anyhow::Ok(verify(&client, &options).await?)
    })?;
    let mut out = io::stdout().lock();
    if args.output == "json" {
        serde_json::to_writer_pretty(&mut out, &verification)?;
        writeln!(out)?;
    } else {
        writeln!(out, "verify {} (probe from {})", verification.host, verification.from)?;
        for check in &verification.checks {
            writeln!(out, "[{}] {}. {}", check.status.as_str(), check.step, check.check)?;
            writeln!(out, "       {}", check.evidence)?;
        }
        let verdict = if verification.passed { "passed" } else { "FAILED" };
        writeln!(out, "{verdict}")?;
    }
    out.flush()?;
    Ok(verification.passed)
}

/// Probes `args.hosts` from inside the workload `from`.
fn probe_from(
    args: &ProbeArgs,
    from: &str,
    proxy_servers: Vec<String>,
) -> Result<Vec<egresslens::probe::Classified>> {
    use egresslens::probe::exec::{ExecProbe, Workload, resolve};
    let workload = Workload::parse(from)?;
    let probe = ExecProbe { path: args.path.clone(), timeout: args.timeout, proxy_servers };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async {
        let config = kube_config(&args.connection).await?;
        let client = kube::Client::try_from(config)?;
        let target =
            resolve(&client, &args.namespace, &workload, args.container.as_deref()).await?;
        let mut answers = Vec::new();
        for host in &args.hosts {
            answers.push(probe.probe(&client, &target, host).await);
        }
        Ok(answers)
    })
}

/// The Kubernetes client configuration like kubectl finds it.
async fn kube_config(args: &KubeConnection) -> Result<kube::Config> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?)
        }
        None if args.context.is_some() => Ok(kube::Config::from_kubeconfig(&options).await?),
        None => kube::Config::infer().await.context("no Kubernetes configuration found"),
    }
}

fn run_mesh(args: MeshArgs) -> Result<()> {
    use egresslens::mesh::{MeshConfig, posture, watch::watch_mesh, write_table};
    let print = |mesh: &MeshConfig| -> Result<()> {
        let hosts = posture(mesh);
        let mut out = io::stdout().lock();
        if args.output == "json" {
            let json = serde_json::json!({"hosts": hosts, "warnings": mesh.warnings});
            if args.watch {
                serde_json::to_writer(&mut out, &json)?;
            } else {
                serde_json::to_writer_pretty(&mut out, &json)?;
            }
            writeln!(out)?;
        } else {
            if args.watch {
                let now = egresslens::parse::time::format_rfc3339_ms(egresslens::ingest::now_ns());
                writeln!(out, "--- {now}")?;
            }
            write_table(&hosts, mesh, &mut out)?;
        }
        out.flush()?;
        Ok(())
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let config = kube_config(&args.connection).await?;
        let client = kube::Client::try_from(config)?;
        if !args.watch {
            return print(&egresslens::mesh::fetch::fetch(&client, &args.namespaces).await?);
        }
        let (views, mut view) = tokio::sync::watch::channel(MeshConfig::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let watching = tokio::spawn(watch_mesh(client, args.namespaces.clone(), views, stopped));
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                changed = view.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let mesh = view.borrow_and_update().clone();
                    print(&mesh)?;
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
            }
        }
        stop.send_replace(true);
        watching.await??;
        Ok(())
    })
}

/// The Kubernetes client configuration (like kubectl: in-cluster, $KUBECONFIG, ~/.kube/config,
/// or the file and context given) and what to follow.
fn kube_source(args: &KubeArgs) -> Result<(kube::Config, Vec<KubeOptions>)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let config = runtime.block_on(kube_config(&args.connection))?;
    let waypoints = KubeOptions {
        namespaces: args.namespaces.clone(),
        selector: args.selector.clone(),
        container: args.container.clone(),
        gateway: args.waypoint.clone(),
        resolve_sources: args.resolve_sources,
        stall: args.stall,
        ..KubeOptions::default()
    };
    let mut pods = vec![waypoints.clone()];
    if args.ztunnel {
        pods.push(KubeOptions {
            namespaces: vec![args.ztunnel_namespace.clone()],
            selector: args.ztunnel_selector.clone(),
            gateway: None,
            resolve_sources: false,
            ..waypoints
        });
    }
    Ok((config, pods))
}

fn report_collect(summary: &CollectSummary, name: &str, store: &str) {
    let mut err = io::stderr().lock();
    for warning in &summary.warnings {
        let _ = writeln!(err, "egresslens: warning: {warning}");
    }
    if let Some(rotated) = &summary.finished_rotated {
        let _ = writeln!(err, "egresslens: finished {} (rotated) first", rotated.display());
    }
    if summary.compacted > 0 {
        let _ = writeln!(err, "egresslens: merged {} small files", summary.compacted);
    }
    if summary.expired > 0 {
        let _ = writeln!(err, "egresslens: removed {} expired hour partitions", summary.expired);
    }
    let [(mesh_rounds, mesh_dropped), (probe_rounds, probe_dropped)] = summary.rounds;
    if mesh_rounds > 0 {
        let _ = writeln!(
            err,
            "egresslens: {mesh_rounds} mesh snapshots, {} host rows stored ({mesh_dropped} \
             dropped: the store was behind)",
            summary.mesh_hosts
        );
    }
    if probe_rounds > 0 {
        let _ = writeln!(
            err,
            "egresslens: {probe_rounds} probe rounds, {} answers stored ({probe_dropped} \
             dropped: the store was behind)",
            summary.probes
        );
    }
    let resumed = match summary.resumed_at {
        0 => String::new(),
        offset => format!(" (resumed at byte {offset})"),
    };
    let _ = writeln!(
        err,
        "egresslens: {} records, {} ztunnel connections and {} rejects from {} in {} commits \
         to {}{resumed}",
        summary.records, summary.ztunnel, summary.rejects, name, summary.commits, store,
    );
}

/// A one-line progress display on a terminal: lines, bytes, rates, share of the file.
mod progress {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use egresslens::collect::Control;

    pub(super) fn show(control: &Control, done: &AtomicBool, total: Option<u64>) {
        let started = Instant::now();
        let mut shown = false;
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let seconds = started.elapsed().as_secs_f64().max(1e-3);
            let lines = control.lines.load(Ordering::Relaxed);
            let bytes = control.bytes.load(Ordering::Relaxed);
            let share = total
                .filter(|t| *t > 0)
                .map(|t| format!(" {:>3.0}%", bytes as f64 * 100.0 / t as f64))
                .unwrap_or_default();
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[K{share} {lines} lines  {:.1} MB  {:.0} lines/s  {:.1} MB/s  {} committed",
                bytes as f64 / 1e6,
                lines as f64 / seconds,
                bytes as f64 / 1e6 / seconds,
                control.committed.load(Ordering::Relaxed),
            );
            shown = true;
        }
        if shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

fn run_compact(args: CompactArgs) -> Result<()> {
    let (mut store, _) = Store::open(&args.store)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let before = now.saturating_sub(args.older_than).as_nanos() as i64;
    let summary = store.compact(before)?;
    let _ = writeln!(
        io::stderr(),
        "egresslens: merged {} files ({} rows) into {} in {}",
        summary.files_replaced,
        summary.rows,
        summary.partitions,
        args.store.display()
    );
    Ok(())
}

fn run_query(args: QueryArgs) -> Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    if args.list {
        for (name, sql) in CANNED {
            writeln!(out, "@{name:<20} {}", query::describe(sql))?;
        }
        out.flush()?;
        return Ok(());
    }
    let text = args.sql.unwrap_or_default();
    let sql = match text.strip_prefix('@') {
        Some(name) => query::canned(name, &args.params)?,
        None => text,
    };
    let format = match args.output {
        ResultFormatArg::Table => ResultFormat::Table,
        ResultFormatArg::Csv => ResultFormat::Csv,
        ResultFormatArg::Json => ResultFormat::Json,
        ResultFormatArg::Ndjson => ResultFormat::Ndjson,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let store = StoreAt::parse(&args.store, args.s3_endpoint.as_deref())?;
    let ballista = match (&args.ballista, &store) {
        (Some(scheduler), StoreAt::Remote(remote)) => Some((scheduler, remote)),
        (Some(_), StoreAt::Dir(_)) => bail!(
            "--ballista needs a store URL its executors can read (s3://…, gs://…, file:///… on \
             a shared volume), not a directory here"
        ),
        (None, _) => None,
    };
    let batches = runtime.block_on(async {
        let ctx = match ballista {
            Some((scheduler, remote)) => {
                query::ballista_session(scheduler, remote, args.s3_endpoint.as_deref()).await?
            }
            None => store.session().await?,
        };
        query::run(&ctx, &sql).await
    })?;
    query::write_results(&mut out, &batches, format)?;
    out.flush()?;
    Ok(())
}

fn run_findings(args: FindingsArgs) -> Result<()> {
    if !args.store.is_dir() {
        bail!("no store at {} (collect writes one; --store names it)", args.store.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let findings = runtime.block_on(async {
        let ctx = query::session(&args.store).await?;
        query::findings(&ctx).await
    })?;
    let mut out = BufWriter::new(io::stdout().lock());
    match args.output.as_str() {
        "json" => {
            serde_json::to_writer_pretty(&mut out, &findings)?;
            writeln!(out)?;
        }
        _ => write_findings_table(&mut out, &findings)?,
    }
    out.flush()?;
    Ok(())
}
