//! What a Kubernetes collector does on a schedule beside reading logs. Every `mesh_every`
//! (5 min by default) it snapshots the mesh's egress posture into `mesh_hosts` (one row per
//! registered host: waypoint and its readiness, whether TLS is originated for port 80, the
//! problems) and notes a host whose waypoint has no ready pod as a `waypoint_not_ready`
//! finding; `egresslens findings` reads the TLS intent from these rows. With probe rounds
//! (`--probe-every 5m --probe-from deployment/sleep`) it probes every registered host from
//! that workload into `probes`, a direct answer as a `bypass_direct_response` finding.
//!
//! The rows go to the committer over a bounded channel and into its next commit; a round that
//! finds the channel full is dropped and counted, and one that cannot run (the mesh unreadable,
//! no pod to probe from) is counted with its reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::watch;

use crate::batch::{findings_batch, mesh_hosts_batch, probes_batch};
use crate::findings::{self, Findings};
use crate::ingest::{TableBatch, now_ns};
use crate::mesh::{HostPosture, fetch::fetch, posture};
use crate::probe::Classified;
use crate::probe::exec::{ExecProbe, Workload, api_reason, resolve};

/// Most hosts probed in one round; the rest are left out (counted).
pub const MAX_HOSTS_PER_ROUND: usize = 200;

/// The collector's schedule.
#[derive(Debug, Clone, Default)]
pub struct Rounds {
    /// How often the mesh is snapshot (`None`: never).
    pub mesh_every: Option<Duration>,
    pub probes: Option<ProbeRounds>,
}

/// Probe rounds: from where, how often.
#[derive(Debug, Clone)]
pub struct ProbeRounds {
    pub every: Duration,
    pub from: Workload,
    pub namespace: String,
    pub container: Option<String>,
    pub probe: ExecProbe,
}

/// How one kind of round went, shared with the caller.
#[derive(Debug, Default)]
pub struct RoundCounts {
    pub rounds: AtomicU64,
    /// Rows made (hosts snapshot, probes sent).
    pub rows: AtomicU64,
    /// Rounds that could not run.
    pub failed: AtomicU64,
    /// Why the last of them could not.
    pub last_failure: std::sync::Mutex<Option<String>>,
    /// Rounds whose rows found the committer's channel full.
    pub dropped: AtomicU64,
    /// Hosts left out past [`MAX_HOSTS_PER_ROUND`].
    pub skipped_hosts: AtomicU64,
}

impl RoundCounts {
    /// What went wrong, for the operator: rounds that could not run, hosts left out.
    pub fn warnings(&self, what: &str) -> Vec<String> {
        let mut warnings = Vec::new();
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let last = self.last_failure.lock().ok().and_then(|l| l.clone()).unwrap_or_default();
            warnings.push(format!("{failed} {what} rounds could not run; the last: {last}"));
        }
        let skipped = self.skipped_hosts.load(Ordering::Relaxed);
        if skipped > 0 {
            warnings.push(format!(
                "{skipped} hosts were left out of {what} rounds (at most {MAX_HOSTS_PER_ROUND} a round)"
            ));
        }
        warnings
    }
}

/// Both kinds of rounds' counts.
#[derive(Debug, Default)]
pub struct Counts {
    pub mesh: RoundCounts,
    pub probes: RoundCounts,
}

/// One probe's answer, as a `probes` row.
#[derive(Debug, Clone)]
pub struct ProbeRow {
    pub ts_ns: i64,
    pub host: String,
    /// `namespace/pod` the probe was sent from.
    pub source: String,
    pub answer: Classified,
}

/// Runs the rounds `rounds` asks for until `stop`, each kind's first at once.
pub async fn run_rounds(
    client: kube::Client,
    rounds: Rounds,
    out: Sender<TableBatch>,
    counts: Arc<Counts>,
    stop: watch::Receiver<bool>,
) {
    let mesh = rounds.mesh_every.map(|every| {
        let (client, out, counts) = (client.clone(), out.clone(), counts.clone());
        let round = move || {
            let client = client.clone();
            async move { mesh_round(&client).await }
        };
        schedule(every, round, out, (counts, of_mesh), stop.clone())
    });
    let probes = rounds.probes.map(|probes| {
        let every = probes.every;
        let (client, probes) = (client.clone(), Arc::new(probes));
        let counts_for_round = counts.clone();
        let round = move || {
            let (client, probes, counts) =
                (client.clone(), probes.clone(), counts_for_round.clone());
            async move { probe_round(&client, &probes, &counts.probes).await }
        };
        schedule(every, round, out, (counts, of_probes), stop.clone())
    });
    let mesh = async {
        if let Some(mesh) = mesh {
            mesh.await;
        }
    };
    let probes = async {
        if let Some(probes) = probes {
            probes.await;
        }
    };
    tokio::join!(mesh, probes);
}

fn of_mesh(counts: &Counts) -> &RoundCounts {
    &counts.mesh
}

fn of_probes(counts: &Counts) -> &RoundCounts {
    &counts.probes
}

/// Runs `round` every `every` until `stop`, sending its batches to `out`.
async fn schedule<R, F>(
    every: Duration,
    round: R,
    out: Sender<TableBatch>,
    (counts, which): (Arc<Counts>, fn(&Counts) -> &RoundCounts),
    mut stop: watch::Receiver<bool>,
) where
    R: Fn() -> F,
    F: Future<Output = Result<(Vec<TableBatch>, u64), String>>,
{
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let done = tokio::select! {
            done = round() => done,
            _ = stop.wait_for(|s| *s) => return,
        };
        let counts = which(&counts);
        counts.rounds.fetch_add(1, Ordering::Relaxed);
        let batches = match done {
            Ok((batches, rows)) => {
                counts.rows.fetch_add(rows, Ordering::Relaxed);
                batches
            }
            Err(why) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = counts.last_failure.lock() {
                    *last = Some(why);
                }
                continue;
            }
        };
        for batch in batches {
            match out.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// An error and its causes, `: `-separated; the API server's own message for an API error
/// (kube's text of one carries a debug dump of the `Status`).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        if let Some(api @ kube::Error::Api(_)) = e.downcast_ref::<kube::Error>() {
            return format!("{text}: {}", api_reason(api));
        }
        text = format!("{text}: {e}");
        cause = e.source();
    }
    text
}

/// The mesh's registered hosts now.
async fn registered(client: &kube::Client) -> Result<Vec<HostPosture>, String> {
    let mesh = fetch(client, &[]).await.map_err(|e| chain(&e))?;
    Ok(posture(&mesh))
}

/// A snapshot of every registered host's posture, and the not-ready waypoints as findings.
async fn mesh_round(client: &kube::Client) -> Result<(Vec<TableBatch>, u64), String> {
    let hosts = registered(client).await?;
    let now = now_ns();
    let mut findings = Findings::default();
    for host in &hosts {
        if let Some(evidence) = findings::from_posture(host, now) {
            findings.note(evidence, "mesh");
        }
    }
    let mut batches = Vec::new();
    if let Some(batch) = mesh_hosts_batch(now, &hosts) {
        batches.push(TableBatch::MeshHosts(batch));
    }
    if let Some(batch) = findings_batch(&findings) {
        batches.push(TableBatch::Findings(batch));
    }
    Ok((batches, hosts.len() as u64))
}

/// Every registered host probed from the workload; a direct answer is a finding.
async fn probe_round(
    client: &kube::Client,
    rounds: &ProbeRounds,
    counts: &RoundCounts,
) -> Result<(Vec<TableBatch>, u64), String> {
    let hosts = registered(client).await?;
    let target = resolve(client, &rounds.namespace, &rounds.from, rounds.container.as_deref())
        .await
        .map_err(|e| chain(&e))?;
    let source = format!("{}/{}", target.namespace, target.pod);
    let mut findings = Findings::default();
    let mut rows = Vec::new();
    // Wildcard hosts name no one host to ask.
    let probed: Vec<_> = hosts.iter().filter(|h| !h.host.starts_with('*')).collect();
    let skipped = probed.len().saturating_sub(MAX_HOSTS_PER_ROUND);
    counts.skipped_hosts.fetch_add(skipped as u64, Ordering::Relaxed);
    for host in probed.into_iter().take(MAX_HOSTS_PER_ROUND) {
        let ts_ns = now_ns();
        let answer = rounds.probe.probe(client, &target, &host.host).await;
        let summary = answer.summary();
        if let Some(evidence) = findings::from_probe(&answer, &source, ts_ns, summary.as_bytes()) {
            findings.note(evidence, "probe");
        }
        rows.push(ProbeRow { ts_ns, host: host.host.clone(), source: source.clone(), answer });
    }
    let mut batches = Vec::new();
    if let Some(batch) = probes_batch(&rows) {
        batches.push(TableBatch::Probes(batch));
    }
    if let Some(batch) = findings_batch(&findings) {
        batches.push(TableBatch::Findings(batch));
    }
    Ok((batches, rows.len() as u64))
}
