//! Exactly-once under SIGKILL: `collect` follows a file as a child process and is killed at
//! pseudo-random moments, 25 times, while a writer thread appends to the file (in slices cut
//! mid-line too) and rotates it once; then a last run catches up and stops on SIGTERM. The store must equal the
//! generator's truth: exact per-host counts, every reject once, no request stored twice.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use egresslens::traffic::{GenConfig, GenFormat, generate};
use support::query_rows;

fn collect(log: &Path, store: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["collect", "--commit-rows", "700", "--commit-every", "100ms", "--file"])
        .arg(log)
        .arg("--store")
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Appends 8 parts of generated traffic (each an hour after the last) to `log` in slices cut
/// anywhere, mid-line included, with pauses between them; rotates the file after the fourth
/// part. Returns the truth: requests per host, and rejects.
fn write_traffic(log: &Path) -> (BTreeMap<String, i64>, i64) {
    let mut requests: BTreeMap<String, i64> = BTreeMap::new();
    let mut rejects = 0i64;
    for part in 0..8u64 {
        if part == 4 {
            fs::rename(log, log.with_extension("log.1")).unwrap();
        }
        let config = GenConfig {
            lines: 3_000,
            seed: part,
            bad: 0.03,
            format: GenFormat::Kubectl,
            start_ns: 1_755_509_790_000_000_000 + part as i64 * 3_600_000_000_000,
            ..GenConfig::default()
        };
        let mut bytes = Vec::new();
        let truth = generate(&config, &mut bytes).unwrap();
        for slice in bytes.chunks(bytes.len() / 16 + 1) {
            let mut file = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
            file.write_all(slice).unwrap();
            std::thread::sleep(Duration::from_millis(60));
        }
        for (host, h) in &truth.hosts {
            *requests.entry(host.clone()).or_default() += h.requests as i64;
        }
        rejects += truth.rejects.values().sum::<u64>() as i64;
    }
    (requests, rejects)
}

#[test]
fn sigkill_at_any_moment_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = (dir.path().join("waypoint.log"), dir.path().join("store"));
    let writer = std::thread::spawn({
        let log = log.clone();
        move || write_traffic(&log)
    });
    let mut interrupted = 0;
    let mut random = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |bound: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % bound
    };
    for _ in 0..25 {
        let mut child = collect(&log, &store);
        // Long enough for a commit or two (a debug build is slow), short enough to land
        // anywhere: while reading, committing, waiting for lines or crossing the rotation.
        std::thread::sleep(Duration::from_millis(100 + next(500)));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
    }
    assert_eq!(interrupted, 25, "a following collector ended by itself");
    let (requests, rejects) = writer.join().unwrap();
    let child = collect(&log, &store);
    let per_host = || -> BTreeMap<String, i64> {
        query_rows(&store, "SELECT authority, count(*) FROM access_log GROUP BY authority")
            .into_iter()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while per_host() != requests && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(child.wait_with_output().unwrap().status.success());

    assert_eq!(per_host(), requests);
    let stored_rejects = query_rows(&store, "SELECT 'all', count(*) FROM rejects");
    assert_eq!(stored_rejects[0].1, rejects);
    let twice = query_rows(
        &store,
        "SELECT request_id, count(*) AS n FROM access_log WHERE request_id IS NOT NULL \
         GROUP BY request_id HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "stored twice: {:?}", &twice[..twice.len().min(5)]);
    assert!(fs::read_dir(store.join(".tmp")).unwrap().next().is_none());
}
