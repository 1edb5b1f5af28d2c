//! End to end against a real cluster (not run by CI: no cluster runs there). With a kubeconfig
//! pointing at a cluster whose waypoint serves egress traffic:
//!
//! ```text
//! EGRESSLENS_E2E_NAMESPACE=istio-egress cargo test --features e2e --test e2e -- --nocapture
//! ```
//!
//! It follows the waypoints of that namespace into a fresh store for
//! `EGRESSLENS_E2E_SECONDS` (default 60) while something sends requests through them (for
//! example `kubectl exec deploy/sleep -- curl -sI http://aliyun.com` in a loop), then checks
//! that records arrived, each with its waypoint pod, and that none was stored twice.

#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a manual test that reports what it saw

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use egresslens::collect::{CollectConfig, Control, collect_kube};
use egresslens::rounds::Rounds;
use egresslens::source::kube::KubeOptions;
use egresslens::store::Store;

fn count(root: &std::path::Path, sql: &str) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let batches = runtime.block_on(async {
        let ctx = egresslens::query::session(root).await.unwrap();
        egresslens::query::run(&ctx, sql).await.unwrap()
    });
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[test]
fn follows_the_real_waypoints() {
    let namespace =
        std::env::var("EGRESSLENS_E2E_NAMESPACE").unwrap_or_else(|_| "istio-egress".into());
    let seconds: u64 =
        std::env::var("EGRESSLENS_E2E_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let kube_config = runtime.block_on(kube::Config::infer()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let control = Arc::new(Control::default());
    let stopper = control.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds));
        stopper.stop.store(true, Ordering::Relaxed);
    });
    let (mut store, _) = Store::open(&root).unwrap();
    let options = KubeOptions { namespaces: vec![namespace], ..KubeOptions::default() };
    let config = CollectConfig { once: false, ..CollectConfig::default() };
    let summary = collect_kube(
        kube_config,
        (vec![options], Rounds::default()),
        None,
        &mut store,
        &config,
        &control,
    )
    .unwrap();
    println!("{summary:?}");
    assert!(summary.records > 0, "no waypoint records in {seconds} s: is traffic flowing?");
    assert_eq!(count(&root, "SELECT count(*) FROM access_log WHERE pod IS NULL"), 0);
    let dups = "SELECT count(*) - count(DISTINCT request_id) FROM access_log \
                WHERE request_id IS NOT NULL";
    assert_eq!(count(&root, dups), 0);
}
