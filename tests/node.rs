//! Node mode with real files, laid out and rotated the way the kubelet does it: two waypoint
//! pods under a `/var/log/pods`-style root, written in CRI format (long lines as `P` chunks),
//! one of them rotated after every part (older rotated files compressed through a `.gz.tmp`,
//! `0.log` renamed to `0.log.<stamp>`, a new `0.log`), the other restarted (`1.log`), while
//! `collect --node-logs` runs as a child process and is SIGKILLed at pseudo-random moments.
//! The store must equal the generator's truth: exact counts per host and per pod, every
//! reject once, no request stored twice.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use egresslens::traffic::{GenConfig, GenFormat, generate};
use support::query_rows;

const POD_A: &str = "egress_waypoint-6f7c9d-x2x7q_4c1f8e0a-7a7b-4a70-9f55-0d52e1c3a001";
const POD_B: &str = "egress_waypoint-6f7c9d-k9pzt_4c1f8e0a-7a7b-4a70-9f55-0d52e1c3a002";

fn collect(root: &Path, store: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["collect", "--commit-rows", "700", "--commit-every", "100ms", "--node-logs"])
        .arg(root)
        .arg("--store")
        .arg(store)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn gzip(path: &Path) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&fs::read(path).unwrap()).unwrap();
    gz.finish().unwrap()
}

/// Rotates `dir/N.log` as the kubelet does: compresses the rotated files still plain (through
/// `.gz.tmp`), renames the current file to `N.log.<stamp>`, and the runtime opens a new one.
/// With `compress_newest`, the file just rotated is compressed at once too (two rotations in
/// quick succession).
fn rotate(dir: &Path, n: u32, stamp: &str, compress_newest: bool) {
    let plain_rotated = |dir: &Path| -> Vec<PathBuf> {
        let prefix = format!("{n}.log.");
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                name.starts_with(&prefix) && !name.ends_with(".gz") && !name.ends_with(".tmp")
            })
            .collect();
        files.sort();
        files
    };
    let compress = |plain: &Path| {
        let tmp = PathBuf::from(format!("{}.gz.tmp", plain.display()));
        fs::write(&tmp, gzip(plain)).unwrap();
        fs::rename(&tmp, format!("{}.gz", plain.display())).unwrap();
        fs::remove_file(plain).unwrap();
    };
    for plain in plain_rotated(dir) {
        compress(&plain);
    }
    let current = dir.join(format!("{n}.log"));
    let rotated = dir.join(format!("{n}.log.{stamp}"));
    fs::rename(&current, &rotated).unwrap();
    fs::File::create(&current).unwrap();
    if compress_newest {
        std::thread::sleep(Duration::from_millis(30));
        compress(&rotated);
    }
}

/// What was written: requests per host and per pod, and rejects.
#[derive(Debug, Default)]
struct Written {
    hosts: BTreeMap<String, i64>,
    pods: BTreeMap<String, i64>,
    rejects: i64,
}

/// Writes 10 parts of generated CRI traffic, alternating between the pods, in slices with
/// pauses between them. Pod A is rotated after each of its parts; pod B's container restarts
/// (its lines go to `1.log`) from its third part on.
fn write_traffic(root: &Path) -> Written {
    let (a, b) = (root.join(POD_A).join("istio-proxy"), root.join(POD_B).join("istio-proxy"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    // A compression the kubelet never finished: never read.
    fs::write(a.join("0.log.20251101-000000.gz.tmp"), b"\x1f\x8b broken").unwrap();
    let mut written = Written::default();
    for part in 0..10u32 {
        let (dir, pod, log) = match part % 2 {
            0 => (&a, "waypoint-6f7c9d-x2x7q", "0.log"),
            _ if part < 5 => (&b, "waypoint-6f7c9d-k9pzt", "0.log"),
            _ => (&b, "waypoint-6f7c9d-k9pzt", "1.log"),
        };
        let config = GenConfig {
            lines: 2_000,
            seed: u64::from(part),
            bad: 0.03,
            format: GenFormat::Cri,
            start_ns: 1_764_194_400_000_000_000 + i64::from(part) * 3_600_000_000_000,
            ..GenConfig::default()
        };
        let mut bytes = Vec::new();
        let truth = generate(&config, &mut bytes).unwrap();
        for slice in bytes.chunks(bytes.len() / 12 + 1) {
            let mut file =
                fs::OpenOptions::new().create(true).append(true).open(dir.join(log)).unwrap();
            file.write_all(slice).unwrap();
            drop(file);
            std::thread::sleep(Duration::from_millis(40));
        }
        if part % 2 == 0 {
            rotate(&a, 0, &format!("20251126-{:02}0000", part), part % 4 == 2);
        }
        for (host, h) in &truth.hosts {
            *written.hosts.entry(host.clone()).or_default() += h.requests as i64;
            *written.pods.entry(pod.to_owned()).or_default() += h.requests as i64;
        }
        written.rejects += truth.rejects.values().sum::<u64>() as i64;
    }
    written
}

fn sigterm(child: std::process::Child) -> String {
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// The store holds what was written; `log` (the last collector's stderr) is shown if not.
fn assert_store_equals(store: &Path, written: &Written, log: &str) {
    let per_host: BTreeMap<String, i64> =
        query_rows(store, "SELECT authority, count(*) FROM access_log GROUP BY authority")
            .into_iter()
            .collect();
    if per_host != written.hosts {
        let files = Command::new("find").arg(store.parent().unwrap().join("pods")).output();
        let files = files.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        panic!(
            "stored {} of {} records\nthe last collector said:\n{log}\nfiles:\n{}",
            per_host.values().sum::<i64>(),
            written.hosts.values().sum::<i64>(),
            files.unwrap_or_default()
        );
    }
    let per_pod: BTreeMap<String, i64> =
        query_rows(store, "SELECT pod, count(*) FROM access_log GROUP BY pod")
            .into_iter()
            .collect();
    assert_eq!(per_pod, written.pods);
    let namespaces = query_rows(store, "SELECT namespace, count(*) FROM access_log GROUP BY 1");
    assert_eq!(namespaces.len(), 1);
    assert_eq!(namespaces[0].0, "egress");
    let rejects = query_rows(store, "SELECT 'all', count(*) FROM rejects");
    assert_eq!(rejects[0].1, written.rejects);
    let twice = query_rows(
        store,
        "SELECT request_id, count(*) AS n FROM access_log WHERE request_id IS NOT NULL \
         GROUP BY request_id HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "stored twice: {:?}", &twice[..twice.len().min(5)]);
}

#[test]
fn rotation_compression_and_restarts_under_sigkill_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (root, store) = (dir.path().join("pods"), dir.path().join("store"));
    fs::create_dir_all(&root).unwrap();
    let writer = std::thread::spawn({
        let root = root.clone();
        move || write_traffic(&root)
    });
    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |bound: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % bound
    };
    let mut kills = 0;
    while !writer.is_finished() {
        let mut child = collect(&root, &store, &[]);
        std::thread::sleep(Duration::from_millis(150 + next(500)));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        // Now and then nothing runs for a while: rotations and compressions happen unseen.
        if next(3) == 0 {
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    assert!(kills >= 5, "only {kills} collectors were killed mid-run");
    let written = writer.join().unwrap();
    let child = collect(&root, &store, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = || query_rows(&store, "SELECT 'all', count(*) FROM access_log")[0].1;
    let total: i64 = written.hosts.values().sum();
    while stored() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = sigterm(child);
    assert_store_equals(&store, &written, &log);
    assert!(fs::read_dir(store.join(".tmp")).unwrap().next().is_none());
}

#[test]
fn once_backfills_compressed_rotated_and_current_files_and_a_rerun_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (root, store) = (dir.path().join("pods"), dir.path().join("store"));
    fs::create_dir_all(&root).unwrap();
    let written = write_traffic(&root);
    // Another container of the same pod, and a pod in a namespace not asked for: not read.
    let sidecar = root.join(POD_A).join("discovery");
    fs::create_dir_all(&sidecar).unwrap();
    fs::write(sidecar.join("0.log"), "2026-11-26T22:00:00Z stdout F not a waypoint\n").unwrap();
    let other = root.join("payments_api-0_9a9a/istio-proxy");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("0.log"), "2026-11-26T22:00:00Z stdout F from another namespace\n")
        .unwrap();
    let run = |expect_records: bool| {
        let output =
            collect(&root, &store, &["--once", "-n", "egress"]).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        assert_eq!(stderr.contains(" 0 records"), !expect_records, "{stderr}");
        stderr
    };
    let log = run(true);
    assert_store_equals(&store, &written, &log);
    let log = run(false);
    assert_store_equals(&store, &written, &log);
}

#[test]
fn a_checkpointed_file_compressed_while_stopped_is_resumed_inside_the_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (root, store) = (dir.path().join("pods"), dir.path().join("store"));
    let log = root.join(POD_A).join("istio-proxy");
    fs::create_dir_all(&log).unwrap();
    let mut written = Written::default();
    let mut part = |seed: u64| {
        let config = GenConfig {
            lines: 1_500,
            seed,
            format: GenFormat::Cri,
            start_ns: 1_764_194_400_000_000_000 + seed as i64 * 3_600_000_000_000,
            ..GenConfig::default()
        };
        let mut bytes = Vec::new();
        let truth = generate(&config, &mut bytes).unwrap();
        let mut file =
            fs::OpenOptions::new().create(true).append(true).open(log.join("0.log")).unwrap();
        file.write_all(&bytes).unwrap();
        for (host, h) in &truth.hosts {
            *written.hosts.entry(host.clone()).or_default() += h.requests as i64;
            *written.pods.entry("waypoint-6f7c9d-x2x7q".into()).or_default() += h.requests as i64;
        }
        written.rejects += truth.rejects.values().sum::<u64>() as i64;
    };
    part(1);
    let child = collect(&root, &store, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = || query_rows(&store, "SELECT 'all', count(*) FROM access_log")[0].1;
    while stored() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(child);
    // While no collector runs: more lines, two rotations, and the checkpointed file compressed.
    part(2);
    rotate(&log, 0, "20261126-220000", false);
    part(3);
    rotate(&log, 0, "20261126-230000", false);
    part(4);
    assert!(log.join("0.log.20261126-220000.gz").exists());
    let output = collect(&root, &store, &["--once"]).wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert_store_equals(&store, &written, &log);
}

#[test]
fn once_leaves_a_line_still_being_written_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (root, store) = (dir.path().join("pods"), dir.path().join("store"));
    let log = root.join(POD_A).join("istio-proxy");
    fs::create_dir_all(&log).unwrap();
    let config = GenConfig { lines: 50, format: GenFormat::Cri, ..GenConfig::default() };
    let mut bytes = Vec::new();
    generate(&config, &mut bytes).unwrap();
    // The runtime is in the middle of writing the last line.
    let cut = bytes.len() - 40;
    fs::write(log.join("0.log"), &bytes[..cut]).unwrap();
    let run = || {
        let output = collect(&root, &store, &["--once"]).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    let first = run();
    assert!(
        first.contains("egresslens: 49 records, 0 ztunnel connections and 0 rejects"),
        "{first}"
    );
    fs::OpenOptions::new()
        .append(true)
        .open(log.join("0.log"))
        .unwrap()
        .write_all(&bytes[cut..])
        .unwrap();
    let second = run();
    assert!(
        second.contains("egresslens: 1 records, 0 ztunnel connections and 0 rejects"),
        "{second}"
    );
    let stored = query_rows(&store, "SELECT 'all', count(*) FROM access_log")[0].1;
    assert_eq!(stored, 50);
}

/// A container's stream keeps the access-log encoding of its first entry across a restart
/// of the collector, even when the first line after its cursor is in the other encoding (a
/// second provider's): the cursor carries the encoding.
#[test]
fn a_resumed_container_keeps_the_encoding_its_first_entry_decided() {
    let dir = tempfile::tempdir().unwrap();
    let (root, store) = (dir.path().join("pods"), dir.path().join("store"));
    let log = root.join(POD_A).join("istio-proxy");
    fs::create_dir_all(&log).unwrap();
    let cri = |seed| {
        let config =
            GenConfig { lines: 20, seed, bad: 0.0, format: GenFormat::Cri, ..GenConfig::default() };
        let mut bytes = Vec::new();
        generate(&config, &mut bytes).unwrap();
        bytes
    };
    let text = fs::read_to_string("tests/fixtures/real/envoy-text.log").unwrap();
    let text_line =
        format!("2025-11-26T22:00:00.000000001Z stdout F {}\n", text.lines().next().unwrap());
    let run = || {
        let output = collect(&root, &store, &["--once"]).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    fs::write(log.join("0.log"), cri(1)).unwrap();
    let first = run();
    assert!(
        first.contains("egresslens: 20 records, 0 ztunnel connections and 0 rejects"),
        "{first}"
    );
    let mut file = fs::OpenOptions::new().append(true).open(log.join("0.log")).unwrap();
    file.write_all(text_line.as_bytes()).unwrap();
    file.write_all(&cri(2)).unwrap();
    drop(file);
    let second = run();
    assert!(
        second.contains("egresslens: 20 records, 0 ztunnel connections and 1 rejects"),
        "{second}"
    );
    let mixed = query_rows(&store, "SELECT reason, count(*) FROM rejects GROUP BY reason");
    assert_eq!(mixed, [("mixed_encoding".to_owned(), 1)]);
}
