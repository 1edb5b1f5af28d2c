//! The store's disk fails under the collector: it fills up, or turns read-only. `collect`
//! must stop with an error naming the file and the cause, leave nothing partial where
//! queries look, and — once space or write access returns — resume where its last commit
//! left off, so the store ends equal to the generator's truth.
//!
//! Run as root where mount(8) is allowed (CI), the store is a real tmpfs: 600 KiB that fill
//! after a few commits, then remounted bigger; or remounted read-only and back. Elsewhere the
//! full disk is a file-size limit (RLIMIT_FSIZE: writes fail with EFBIG, as with ENOSPC) and
//! the read-only case is left out, saying so.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there
#![allow(clippy::print_stderr)] // says which stand-in for a failing disk was used

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use egresslens::traffic::{GenConfig, Truth, generate};
use support::query_rows;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts `size` (mount(8)'s syntax) at `dir`; `None` where mounting is not allowed.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status();
        status.is_ok_and(|s| s.success()).then(|| Tmpfs(dir.to_owned()))
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn traffic(lines: u64, seed: u64) -> (Vec<u8>, Truth) {
    let config = GenConfig { lines, seed, bad: 0.02, ..GenConfig::default() };
    let mut bytes = Vec::new();
    let truth = generate(&config, &mut bytes).unwrap();
    (bytes, truth)
}

/// `collect --once` over `log` into `store`, committing every 2 000 rows; with a file-size
/// limit of `fsize_kib` if given (SIGXFSZ ignored, so writes fail with EFBIG instead).
fn collect(log: &Path, store: &Path, fsize_kib: Option<u64>) -> Output {
    let bin = env!("CARGO_BIN_EXE_egresslens");
    let mut command = match fsize_kib {
        Some(kib) => {
            let mut sh = Command::new("bash");
            sh.arg("-c")
                .arg(format!(r#"trap "" XFSZ; ulimit -S -f {kib}; exec "$0" "$@""#))
                .arg(bin);
            sh
        }
        None => Command::new(bin),
    };
    command.args(["collect", "--once", "--commit-rows", "2000", "--file"]).arg(log);
    command.arg("--store").arg(store).output().unwrap()
}

fn per_host(store: &Path) -> BTreeMap<String, i64> {
    query_rows(store, "SELECT authority, count(*) FROM access_log GROUP BY authority")
        .into_iter()
        .collect()
}

fn expected(truths: &[&Truth]) -> (BTreeMap<String, i64>, i64) {
    let mut hosts: BTreeMap<String, i64> = BTreeMap::new();
    let mut rejects = 0;
    for truth in truths {
        for (host, h) in &truth.hosts {
            *hosts.entry(host.clone()).or_default() += h.requests as i64;
        }
        rejects += truth.rejects.values().sum::<u64>() as i64;
    }
    (hosts, rejects)
}

fn rejects(store: &Path) -> i64 {
    query_rows(store, "SELECT 'all', count(*) FROM rejects")[0].1
}

/// What a failed run left: an error naming a store file and `cause`, and a store whose every
/// visible file reads (a partial Parquet file would fail the query) and holds less than all.
fn assert_failed_cleanly(output: &Output, store: &Path, causes: &[&str], all: i64) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the run should fail: {stderr}");
    assert!(stderr.contains(&store.display().to_string()), "names the store: {stderr}");
    assert!(causes.iter().any(|c| stderr.contains(c)), "says why ({causes:?}): {stderr}");
    let stored: i64 = per_host(store).values().sum();
    assert!(stored < all, "{stored} of {all} rows visible");
}

#[test]
fn a_full_store_fails_clearly_and_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = (dir.path().join("waypoint.log"), dir.path().join("store"));
    let (bytes, truth) = traffic(30_000, 3);
    fs::write(&log, &bytes).unwrap();
    let (want, want_rejects) = expected(&[&truth]);
    let all: i64 = want.values().sum();

    let tmpfs = Tmpfs::mount(&store, "600k");
    let failed = collect(&log, &store, tmpfs.is_none().then_some(64));
    assert_failed_cleanly(&failed, &store, &["No space left on device", "File too large"], all);
    if tmpfs.is_some() {
        let committed = fs::read_dir(store.join("access_log")).unwrap().count();
        assert!(committed > 0, "some commits fit before the disk filled");
    }

    match &tmpfs {
        Some(tmpfs) => tmpfs.remount("size=64m"),
        None => eprintln!("faults: no tmpfs here (mount not allowed): a file-size limit stood in"),
    }
    let resumed = collect(&log, &store, None);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(per_host(&store), want);
    assert_eq!(rejects(&store), want_rejects);
}

#[test]
fn a_read_only_store_fails_clearly_and_resumes_when_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = (dir.path().join("waypoint.log"), dir.path().join("store"));
    let Some(tmpfs) = Tmpfs::mount(&store, "64m") else {
        eprintln!("faults: read-only store not tried (mount not allowed here)");
        return;
    };
    let (first, first_truth) = traffic(6_000, 4);
    let (second, second_truth) = traffic(6_000, 5);
    fs::write(&log, &first).unwrap();
    assert!(collect(&log, &store, None).status.success());
    let (want_first, _) = expected(&[&first_truth]);
    assert_eq!(per_host(&store), want_first);

    tmpfs.remount("ro");
    fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(&second).unwrap();
    let (want, want_rejects) = expected(&[&first_truth, &second_truth]);
    let all: i64 = want.values().sum();
    let failed = collect(&log, &store, None);
    assert_failed_cleanly(&failed, &store, &["Read-only file system"], all);
    // Queries read a read-only store as it was.
    assert_eq!(per_host(&store), want_first);

    tmpfs.remount("rw");
    let resumed = collect(&log, &store, None);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(per_host(&store), want);
    assert_eq!(rejects(&store), want_rejects);
}
