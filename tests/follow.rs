//! `collect` following a file like `tail -F`, as a child process: appends, rotation by rename,
//! truncation in place, a half-written last line at a stop, a rotation while no collector
//! runs, and SIGTERM ending it cleanly with everything committed.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use egresslens::query;
use egresslens::traffic::{GenConfig, GenFormat, generate};

/// Starts a following collector that commits at least every 300 ms.
fn follow(log: &Path, store: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["collect", "--commit-every", "300ms", "--file"])
        .arg(log)
        .arg("--store")
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM, then the exit status and what it said.
fn terminate(child: Child) -> (bool, String) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn count(store: &Path, sql: &str) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let batches = runtime.block_on(async {
        let ctx = query::session(store).await.unwrap();
        query::run(&ctx, sql).await.unwrap()
    });
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Waits until the store holds `rows` access-log rows (or fails after 30 s).
fn wait_for(store: &Path, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = count(store, "SELECT count(*) FROM access_log");
        if got == rows {
            return;
        }
        assert!(Instant::now() < deadline, "store has {got} rows, want {rows}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Generated traffic: the bytes and how many good records they hold.
fn traffic(seed: u64, lines: u64, hour: i64) -> (Vec<u8>, i64) {
    let config = GenConfig {
        lines,
        seed,
        format: GenFormat::Json,
        start_ns: 1_755_509_790_000_000_000 + hour * 3_600_000_000_000,
        ..GenConfig::default()
    };
    let mut bytes = Vec::new();
    let truth = generate(&config, &mut bytes).unwrap();
    (bytes, truth.good as i64)
}

fn append(path: &Path, bytes: &[u8]) {
    fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
}

fn no_duplicates(store: &Path) {
    let dups = "SELECT count(*) - count(DISTINCT request_id) FROM access_log \
                WHERE request_id IS NOT NULL";
    assert_eq!(count(store, dups), 0, "a request was stored twice");
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("waypoint.log"), dir.join("store"))
}

#[test]
fn appends_rotation_and_truncation_are_followed_and_sigterm_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = paths(dir.path());
    let mut want = 0;
    let mut add = |seed, hour| {
        let (bytes, good) = traffic(seed, 1_500, hour);
        want += good;
        (bytes, want)
    };
    // The file does not exist yet: the collector waits for it.
    let child = follow(&log, &store);
    let (bytes, total) = add(1, 0);
    append(&log, &bytes);
    wait_for(&store, total);
    let (bytes, total) = add(2, 1);
    append(&log, &bytes);
    wait_for(&store, total);

    // Rotation: the writer's last lines go to the old file just before it moves on.
    let (bytes, _) = add(3, 2);
    append(&log, &bytes);
    fs::rename(&log, log.with_extension("log.1")).unwrap();
    let (bytes, total) = add(4, 3);
    append(&log, &bytes);
    wait_for(&store, total);

    // Truncation in place (copytruncate), then new lines from the start.
    fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    let (bytes, total) = add(5, 4);
    append(&log, &bytes);
    wait_for(&store, total);

    let (ok, stderr) = terminate(child);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    no_duplicates(&store);
    assert_eq!(count(&store, "SELECT count(*) FROM rejects"), 0);
}

#[test]
fn a_half_written_line_waits_for_its_end_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = paths(dir.path());
    let (bytes, good) = traffic(7, 300, 0);
    let text = String::from_utf8(bytes).unwrap();
    let last_start = text.trim_end().rfind('\n').unwrap() + 1;
    let cut = last_start + (text.len() - last_start) / 2;
    append(&log, &text.as_bytes()[..cut]);
    let child = follow(&log, &store);
    wait_for(&store, good - 1);
    let (ok, stderr) = terminate(child);
    assert!(ok, "{stderr}");
    // The rest of the line arrives while no collector runs.
    append(&log, &text.as_bytes()[cut..]);
    let child = follow(&log, &store);
    wait_for(&store, good);
    let (ok, stderr) = terminate(child);
    assert!(ok, "{stderr}");
    assert_eq!(count(&store, "SELECT count(*) FROM rejects"), 0);
    no_duplicates(&store);
}

#[test]
fn a_file_rotated_while_stopped_is_finished_before_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = paths(dir.path());
    let (first, good_first) = traffic(11, 800, 0);
    append(&log, &first);
    let child = follow(&log, &store);
    wait_for(&store, good_first);
    let (ok, stderr) = terminate(child);
    assert!(ok, "{stderr}");

    // While it is down: more lines, a rotation to a dated name, a new file.
    let (late, good_late) = traffic(12, 500, 1);
    append(&log, &late);
    fs::rename(&log, dir.path().join("waypoint.log.20250818-1000")).unwrap();
    let (fresh, good_fresh) = traffic(13, 700, 2);
    append(&log, &fresh);

    let child = follow(&log, &store);
    wait_for(&store, good_first + good_late + good_fresh);
    let (ok, stderr) = terminate(child);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("waypoint.log.20250818-1000 (rotated) first"), "{stderr}");
    no_duplicates(&store);
    let per_hour: BTreeMap<String, i64> =
        [("09", good_first), ("10", good_late), ("11", good_fresh)]
            .into_iter()
            .map(|(h, n)| (h.to_owned(), n))
            .collect();
    for (hour, n) in per_hour {
        let sql = format!("SELECT count(*) FROM access_log WHERE hour = '{hour}'");
        assert_eq!(count(&store, &sql), n, "hour {hour}");
    }
}

/// `collect --once` over `files` into `store`; its stderr.
fn once(files: &[&Path], store: &Path) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_egresslens"));
    command.args(["collect", "--once", "--store"]).arg(store);
    for file in files {
        command.arg("--file").arg(file);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn several_files_are_followed_together_and_each_resumes_alone_or_together() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, store) = (dir.path().join("a.log"), dir.path().join("b.log"), dir.path().join("s"));
    let mut want = 0;
    let mut add = |path: &Path, seed, hour| {
        let (bytes, good) = traffic(seed, 300, hour);
        append(path, &bytes);
        want += good;
        want
    };
    add(&a, 21, 0);
    let total = add(&b, 22, 1);
    let child = Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["collect", "--commit-every", "300ms", "--file"])
        .arg(&a)
        .arg("--file")
        .arg(&b)
        .arg("--store")
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&store, total);
    add(&b, 23, 2);
    let total = add(&a, 24, 3);
    wait_for(&store, total);
    let (ok, stderr) = terminate(child);
    assert!(ok, "{stderr}");

    // One of them alone, resumed from where they were read together; then both again.
    let total = add(&a, 25, 4);
    once(&[&a], &store);
    assert_eq!(count(&store, "SELECT count(*) FROM access_log"), total);
    add(&a, 26, 5);
    let total = add(&b, 27, 6);
    once(&[&a, &b], &store);
    assert_eq!(count(&store, "SELECT count(*) FROM access_log"), total);
    no_duplicates(&store);
    assert_eq!(count(&store, "SELECT count(*) FROM rejects"), 0);
}
