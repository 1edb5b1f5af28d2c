//! The Parquet store as `collect` writes it and `query` reads it: the generator's truth comes
//! back exactly through SQL, re-runs resume instead of duplicating, interrupted commits are
//! finished or discarded on open, and every canned query runs (on an empty store too).

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use egresslens::collect::{CollectConfig, Control, collect, collect_files};
use egresslens::query::{self, CANNED};
use egresslens::source::Input;
use egresslens::store::Store;
use egresslens::traffic::{GenConfig, GenFormat, Truth, generate};

fn generate_into(path: &Path, config: &GenConfig) -> Truth {
    let mut bytes = Vec::new();
    let truth = generate(config, &mut bytes).unwrap();
    fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(&bytes).unwrap();
    truth
}

fn sql(store: &Path, text: &str) -> Vec<RecordBatch> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let ctx = query::session(store).await.unwrap();
        query::run(&ctx, text).await.unwrap()
    })
}

/// Per-host (requests, bytes_sent, status 2xx, 5xx) from the store.
fn per_host(store: &Path) -> BTreeMap<String, (i64, u64, i64, i64)> {
    let batches = sql(
        store,
        "SELECT authority, count(*), sum(bytes_sent), \
                count(*) FILTER (WHERE response_code BETWEEN 200 AND 299), \
                count(*) FILTER (WHERE response_code >= 500) \
         FROM access_log GROUP BY authority",
    );
    let mut out = BTreeMap::new();
    for b in &batches {
        for row in 0..b.num_rows() {
            out.insert(
                b.column(0).as_string::<i32>().value(row).to_owned(),
                (
                    b.column(1).as_primitive::<Int64Type>().value(row),
                    b.column(2).as_primitive::<UInt64Type>().value(row),
                    b.column(3).as_primitive::<Int64Type>().value(row),
                    b.column(4).as_primitive::<Int64Type>().value(row),
                ),
            );
        }
    }
    out
}

fn expected(truth: &Truth) -> BTreeMap<String, (i64, u64, i64, i64)> {
    truth
        .hosts
        .iter()
        .map(|(host, h)| {
            (
                host.clone(),
                (h.requests as i64, h.bytes_sent, h.status["2xx"] as i64, h.status["5xx"] as i64),
            )
        })
        .collect()
}

fn count(store: &Path, text: &str) -> i64 {
    sql(store, text)[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[test]
fn truth_comes_back_through_sql_and_reruns_only_add_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let (log, root) = (dir.path().join("waypoint.log"), dir.path().join("store"));
    let first = GenConfig {
        lines: 8_000,
        seed: 5,
        bad: 0.02,
        rate: 1.0,
        format: GenFormat::Kubectl,
        ..GenConfig::default()
    };
    let truth = generate_into(&log, &first);
    let config =
        CollectConfig { commit_rows: 1_500, chunk_bytes: 64 * 1024, ..CollectConfig::default() };
    let (mut store, _) = Store::open(&root).unwrap();
    let summary =
        collect(&Input::Path(log.clone()), &mut store, &config, &Control::default()).unwrap();
    assert!(summary.commits >= 5, "{summary:?}");
    assert_eq!(per_host(&root), expected(&truth));
    assert_eq!(
        count(&root, "SELECT count(*) FROM rejects"),
        truth.rejects.values().sum::<u64>() as i64
    );
    // The log spans hours: the partitions are real and prune.
    assert!(count(&root, "SELECT count(DISTINCT hour) FROM access_log") >= 3);
    let hour =
        count(&root, "SELECT count(*) FROM access_log WHERE date = '2025-08-18' AND hour = '10'");
    assert!(hour > 0 && hour < truth.good as i64);

    let again =
        collect(&Input::Path(log.clone()), &mut store, &config, &Control::default()).unwrap();
    assert_eq!(
        (again.records, again.rejects, again.resumed_at),
        (0, 0, fs::metadata(&log).unwrap().len())
    );
    assert_eq!(per_host(&root), expected(&truth));

    // More lines arrive; a new run (a fresh open, as after a restart) adds exactly those.
    let later =
        GenConfig { seed: 6, start_ns: first.start_ns + 5 * 3_600_000_000_000, ..first.clone() };
    let more = generate_into(&log, &later);
    // One writer at a time: the store is locked while open.
    let second = Store::open(&root).unwrap_err();
    assert!(second.to_string().contains("in use by another egresslens process"), "{second}");
    drop(store);
    let (mut store, _) = Store::open(&root).unwrap();
    collect(&Input::Path(log.clone()), &mut store, &config, &Control::default()).unwrap();
    let mut want = expected(&truth);
    for (host, (r, b, s2, s5)) in expected(&more) {
        let e = want.entry(host).or_default();
        *e = (e.0 + r, e.1 + b, e.2 + s2, e.3 + s5);
    }
    assert_eq!(per_host(&root), want);
    let unique =
        "SELECT count(*) - count(DISTINCT request_id) FROM access_log WHERE request_id IS NOT NULL";
    assert_eq!(count(&root, unique), 0, "no request was stored twice");
}

/// A stream's encoding is its first entry's; a line in the other encoding is a second
/// provider's and is rejected. A run resuming from a checkpoint keeps the encoding the stream
/// started with, even when the first line after the checkpoint is the other one: before the
/// checkpoints carried it, that line locked the stream and every later entry was rejected.
#[test]
fn a_resumed_stream_keeps_the_encoding_its_first_entry_decided() {
    let json = |seed| {
        let config = GenConfig { lines: 20, seed, bad: 0.0, ..GenConfig::default() };
        let mut bytes = Vec::new();
        generate(&config, &mut bytes).unwrap();
        bytes
    };
    let text = fs::read_to_string("tests/fixtures/real/envoy-text.log").unwrap();
    let text_line = format!("{}\n", text.lines().next().unwrap());
    for together in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (log, root) = (dir.path().join("waypoint.log"), dir.path().join("store"));
        let run = || {
            let (mut store, _) = Store::open(&root).unwrap();
            let (config, control) = (CollectConfig::default(), Control::default());
            if together {
                collect_files(std::slice::from_ref(&log), &mut store, &config, &control).unwrap()
            } else {
                collect(&Input::Path(log.clone()), &mut store, &config, &control).unwrap()
            }
        };
        fs::write(&log, json(1)).unwrap();
        assert_eq!(run().records, 20);
        let mut file = fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(text_line.as_bytes()).unwrap();
        file.write_all(&json(2)).unwrap();
        drop(file);
        let resumed = run();
        assert_eq!((resumed.records, resumed.rejects), (20, 1), "read together: {together}");
        let reason = "SELECT count(*) FROM rejects WHERE reason = 'mixed_encoding'";
        assert_eq!(count(&root, reason), 1);
        assert_eq!(count(&root, "SELECT count(*) FROM access_log"), 40);
    }
}

#[test]
fn interrupted_commits_are_finished_or_discarded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (log, root) = (dir.path().join("waypoint.log"), dir.path().join("store"));
    let truth = generate_into(
        &log,
        &GenConfig { lines: 2_000, seed: 7, rate: 1.0, ..GenConfig::default() },
    );
    let (mut store, _) = Store::open(&root).unwrap();
    collect(&Input::Path(log.clone()), &mut store, &CollectConfig::default(), &Control::default())
        .unwrap();
    drop(store);
    let committed: Vec<_> = walk(&root.join("access_log"));
    assert!(committed.len() >= 2, "the log spans hours: {committed:?}");

    // A crash between the renames of one commit: its first file is in place, the second
    // still staged. And a crash before any rename of another: only staged files.
    let staged_dir = root.join(".tmp");
    let (first, second) = (&committed[0], &committed[1]);
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
    let hour_of = |p: &Path| {
        let hour = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
        hour.trim_start_matches("hour=").to_owned()
    };
    let interrupted = "c000000000100";
    fs::copy(first, first.with_file_name(format!("{interrupted}-1of2.parquet"))).unwrap();
    let staged = format!("access_log.2025-08-18.{}.{interrupted}-2of2.parquet", hour_of(second));
    fs::copy(second, staged_dir.join(&staged)).unwrap();
    let never_renamed =
        format!("access_log.2025-08-18.{}.c000000000101-1of1.parquet", hour_of(second));
    fs::copy(second, staged_dir.join(&never_renamed)).unwrap();
    fs::write(staged_dir.join("garbage.parquet"), b"not parquet").unwrap();

    let (_, recovery) = Store::open(&root).unwrap();
    assert_eq!((recovery.rolled_forward, recovery.discarded), (1, 2), "{}", name(second));
    assert_eq!(fs::read_dir(&staged_dir).unwrap().count(), 0);
    assert!(
        root.join("access_log/date=2025-08-18")
            .join(format!("hour={}", hour_of(second)))
            .join(format!("{interrupted}-2of2.parquet"))
            .exists()
    );
    // The copies double the rows they copied: proof that the rolled-forward file is visible.
    let rows = count(&root, "SELECT count(*) FROM access_log") as u64;
    assert!(rows > truth.good, "{rows} vs {}", truth.good);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn run_canned(store: &Path, name: &str) -> Vec<RecordBatch> {
    let params = [("host".to_owned(), "aliyun.com".to_owned())];
    sql(store, &query::canned(name, &params).unwrap())
}

#[test]
fn every_canned_query_runs_on_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in CANNED {
        let rows: usize = run_canned(&dir.path().join("no-store-yet"), name)
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 0, "@{name}");
    }
}

#[test]
fn canned_query_results_on_a_fixture_store() {
    let dir = tempfile::tempdir().unwrap();
    let (log, root) = (dir.path().join("waypoint.log"), dir.path().join("store"));
    let config = GenConfig {
        lines: 3_000,
        seed: 9,
        hosts: 8,
        bad: 0.02,
        rate: 1.0,
        passthrough: 0.05,
        format: GenFormat::Kubectl,
        ..GenConfig::default()
    };
    generate_into(&log, &config);
    let (mut store, _) = Store::open(&root).unwrap();
    collect(&Input::Path(log), &mut store, &CollectConfig::default(), &Control::default()).unwrap();
    for (name, _) in CANNED {
        let table =
            datafusion::arrow::util::pretty::pretty_format_batches(&run_canned(&root, name))
                .unwrap();
        // Findings name the file their evidence came from: a temporary one.
        let table = table.to_string().replace(dir.path().to_str().unwrap(), "[dir]");
        insta::assert_snapshot!(format!("canned_{name}"), table);
    }
}
