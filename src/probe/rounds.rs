//! Probes on a schedule, for the collector: every `every`, the mesh's registered hosts are
//! probed from one workload (`--probe-every 5m --probe-from deployment/sleep`), and each
//! answer becomes a `probes` row; a direct answer, and a host whose waypoint has no ready pod,
//! become `findings` rows. The rows go to the committer over a bounded channel and into its
//! next commit; a round that finds the channel full is dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::watch;

use super::Classified;
use super::exec::{ExecProbe, Workload, resolve};
use crate::batch::{findings_batch, probes_batch};
use crate::findings::{self, Findings};
use crate::ingest::{TableBatch, now_ns};
use crate::mesh::{fetch::fetch, posture};

/// Most hosts probed in one round; the rest wait for a later one (counted).
pub const MAX_HOSTS_PER_ROUND: usize = 200;

/// The collector's probe schedule.
#[derive(Debug, Clone)]
pub struct ProbeRounds {
    pub every: Duration,
    pub from: Workload,
    pub namespace: String,
    pub container: Option<String>,
    pub probe: ExecProbe,
}

/// How the rounds went, shared with the caller.
#[derive(Debug, Default)]
pub struct RoundCounts {
    pub rounds: AtomicU64,
    pub probes: AtomicU64,
    /// Rounds that could not run (mesh unreadable, no pod to probe from).
    pub failed: AtomicU64,
    /// Why the last of them could not.
    pub last_failure: std::sync::Mutex<Option<String>>,
    /// Rounds whose rows found the committer's channel full.
    pub dropped: AtomicU64,
    /// Hosts left out past [`MAX_HOSTS_PER_ROUND`].
    pub skipped_hosts: AtomicU64,
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

/// Runs rounds until `stop`; the first one at once.
pub async fn run_rounds(
    client: kube::Client,
    rounds: ProbeRounds,
    out: Sender<TableBatch>,
    counts: Arc<RoundCounts>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(rounds.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let batches = tokio::select! {
            batches = round(&client, &rounds, &counts) => batches,
            _ = stop.wait_for(|s| *s) => return,
        };
        counts.rounds.fetch_add(1, Ordering::Relaxed);
        let batches = match batches {
            Ok(batches) => batches,
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
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
            return format!("{text}: {} (HTTP {})", status.message, status.code);
        }
        text = format!("{text}: {e}");
        cause = e.source();
    }
    text
}

/// One round: the batches of its rows, or why it could not run.
async fn round(
    client: &kube::Client,
    rounds: &ProbeRounds,
    counts: &RoundCounts,
) -> Result<Vec<TableBatch>, String> {
    let mesh = fetch(client, &[]).await.map_err(|e| chain(&e))?;
    let hosts = posture(&mesh);
    let target = resolve(client, &rounds.namespace, &rounds.from, rounds.container.as_deref())
        .await
        .map_err(|e| chain(&e))?;
    let source = format!("{}/{}", target.namespace, target.pod);
    let mut findings = Findings::default();
    let mut rows = Vec::new();
    let now = now_ns();
    // Wildcard hosts name no one host to ask.
    let probed: Vec<_> = hosts.iter().filter(|h| !h.host.starts_with('*')).collect();
    let skipped = probed.len().saturating_sub(MAX_HOSTS_PER_ROUND);
    counts.skipped_hosts.fetch_add(skipped as u64, Ordering::Relaxed);
    for host in &hosts {
        if let Some(evidence) = findings::from_posture(host, now) {
            findings.note(evidence, "mesh");
        }
    }
    for host in probed.into_iter().take(MAX_HOSTS_PER_ROUND) {
        let ts_ns = now_ns();
        let answer = rounds.probe.probe(client, &target, &host.host).await;
        counts.probes.fetch_add(1, Ordering::Relaxed);
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
    Ok(batches)
}
