//! The store's object-storage side against a real S3-protocol server on 127.0.0.1: s3s-fs (a
//! filesystem-backed implementation of the S3 API from the Rust package registry), served
//! over HTTP by the test with SigV4 authentication, spoken to by the `object_store` crate's
//! S3 client exactly as it speaks to AWS, MinIO or Alibaba OSS. No cloud service can be
//! reached from here, so this server stands in for one.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use egresslens::collect::{CollectConfig, Control, collect};
use egresslens::query::{self, CANNED};
use egresslens::source::Input;
use egresslens::store::Store;
use egresslens::store::remote::{Placed, Remote, Uploaded, Writer};
use egresslens::traffic::{GenConfig, generate};
use object_store::aws::AmazonS3Builder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

#[path = "support/s3.rs"]
mod s3_server;

use s3_server::{ACCESS_KEY, BUCKET, S3, SECRET_KEY, start_s3};

fn remote(endpoint: &str, prefix: &str) -> Remote {
    let store = AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .build()
        .unwrap();
    Remote::with_store(&format!("s3://{BUCKET}/{prefix}"), Arc::new(store)).unwrap()
}

fn parquet_file(path: &Path, rows: i64, commit: u64) {
    let column = Arc::new(Int64Array::from_iter_values(0..rows)) as ArrayRef;
    let batch = RecordBatch::try_from_iter([("n", column)]).unwrap();
    let kv = KeyValue::new("egresslens.commit".to_owned(), commit.to_string());
    let props = WriterProperties::builder().set_key_value_metadata(Some(vec![kv])).build();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props))
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Uploads are create-only on the wire (`If-None-Match: *`): a second upload of the same
/// file finds it whole, other contents under the same key are refused, commits are complete
/// once all their files are there, each writer lists only its own keys, and footers are
/// read with two ranged GETs.
#[tokio::test]
async fn uploads_are_create_only_on_an_s3_protocol_server() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = start_s3(&dir.path().join("s3")).endpoint;
    let remote = remote(&endpoint, "egress");
    let writer = Writer::new("prod-hz", "waypoint-6f7c9d-x2x7q").unwrap();
    let other = Writer::new("prod-hz", "waypoint-6f7c9d-k9pzt").unwrap();
    let (small, large) = (dir.path().join("small.parquet"), dir.path().join("large.parquet"));
    parquet_file(&small, 10, 3);
    parquet_file(&large, 100_000, 3);
    let placed = |table: &str, n| Placed {
        table: table.into(),
        date: "2025-08-18".into(),
        hour: "09".into(),
        name: format!("c000000000003-{n}of2.parquet"),
    };

    let first = placed("access_log", 1);
    assert_eq!(remote.upload(&writer, &first, &large).await.unwrap(), Uploaded::Created);
    assert_eq!(remote.upload(&writer, &first, &large).await.unwrap(), Uploaded::AlreadyThere);
    let refused = remote.upload(&writer, &first, &small).await.unwrap_err().to_string();
    assert!(refused.contains("another collector writes under the same"), "{refused}");
    let on_disk = dir.path().join(
        "s3/mesh-logs/egress/access_log/cluster=prod-hz/collector=waypoint-6f7c9d-x2x7q/\
         date=2025-08-18/hour=09/c000000000003-1of2.parquet",
    );
    assert_eq!(std::fs::read(&on_disk).unwrap(), std::fs::read(&large).unwrap());

    let commits = remote.commits(&writer).await.unwrap();
    assert!(!commits[&3].is_complete());
    remote.upload(&writer, &placed("rejects", 2), &small).await.unwrap();
    // The other writer's file of the same name is its own key.
    remote.upload(&other, &first, &small).await.unwrap();
    let commits = remote.commits(&writer).await.unwrap();
    assert!(commits[&3].is_complete(), "{commits:?}");
    let kv = remote.key_values(&commits[&3].files[&1]).await.unwrap();
    assert_eq!(kv["egresslens.commit"], "3");
    assert_eq!(remote.commits(&other).await.unwrap()[&3].files.len(), 1);
    remote.delete(&commits[&3]).await.unwrap();
    assert!(remote.commits(&writer).await.unwrap().is_empty());
    assert!(!remote.commits(&other).await.unwrap().is_empty());
}

/// Rows of a two-column (text, count) query.
async fn pairs(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<(String, i64)> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let mut rows = Vec::new();
    for batch in query::run(ctx, sql).await.unwrap() {
        let names =
            datafusion::arrow::compute::cast(batch.column(0), &arrow_schema::DataType::Utf8);
        let names = names.unwrap();
        let counts = batch.column(1).as_primitive::<Int64Type>();
        for i in 0..names.len() {
            rows.push((names.as_string::<i32>().value(i).to_owned(), counts.value(i)));
        }
    }
    rows.sort();
    rows
}

/// A store that `collect` wrote from 20 000 generated lines into `dir/spool`, uploaded file by
/// file to the bucket as collector `prod-hz/collector-0`; with its commits.
async fn uploaded_store(dir: &Path, endpoint: &str) -> (PathBuf, Remote, usize, usize) {
    let local = dir.join("spool");
    let config = GenConfig { lines: 20_000, seed: 9, bad: 0.02, ..GenConfig::default() };
    let mut bytes = Vec::new();
    generate(&config, &mut bytes).unwrap();
    let input = Input::Memory { name: "gen".into(), bytes: bytes.into() };
    let (mut store, _) = Store::open(&local).unwrap();
    let collect_config = CollectConfig { commit_rows: 3_000, ..CollectConfig::default() };
    let summary = tokio::task::block_in_place(|| {
        collect(&input, &mut store, &collect_config, &Control::default()).unwrap()
    });
    assert!(summary.commits >= 5, "{summary:?}");
    let remote = remote(endpoint, "egress");
    let writer = Writer::new("prod-hz", "collector-0").unwrap();
    for (placed, path) in &store.committed().unwrap() {
        assert_eq!(remote.upload(&writer, placed, path).await.unwrap(), Uploaded::Created);
    }
    (local, remote, summary.commits, summary.records)
}

/// A store written by `collect` and uploaded file by file reads back through SQL over the
/// bucket as it does locally, with the writer's `cluster` and `collector` as columns, and
/// every canned query runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_store_reads_back_through_sql_over_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = start_s3(&dir.path().join("s3")).endpoint;
    let (local, remote, commits, records) = uploaded_store(dir.path(), &endpoint).await;
    let writer = Writer::new("prod-hz", "collector-0").unwrap();
    let listed = remote.commits(&writer).await.unwrap();
    assert_eq!(listed.len(), commits);
    assert!(listed.values().all(|c| c.is_complete()));

    let here = query::session(&local).await.unwrap();
    let there = query::remote_session(&remote).await.unwrap();
    let per_host = "SELECT authority, count(*) FROM access_log GROUP BY authority";
    assert_eq!(pairs(&there, per_host).await, pairs(&here, per_host).await);
    let rejects = "SELECT reason, count(*) FROM rejects GROUP BY reason";
    assert_eq!(pairs(&there, rejects).await, pairs(&here, rejects).await);
    let writers = "SELECT cluster || '/' || collector, count(*) FROM access_log GROUP BY 1";
    assert_eq!(pairs(&there, writers).await, [("prod-hz/collector-0".to_owned(), records as i64)]);
    let pruned =
        "SELECT 'hour', count(*) FROM access_log WHERE date = '2025-08-18' AND hour = '10'";
    assert_eq!(pairs(&there, pruned).await, pairs(&here, pruned).await);
    for (name, _) in CANNED {
        let params = [("host".to_owned(), "aliyun.com".to_owned())];
        let sql = query::canned(name, &params).unwrap();
        query::run(&there, &sql).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A result as printed, its rows sorted: engines may return equal rows in another order.
async fn printed(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<String> {
    let batches = query::run(ctx, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap();
    let mut rows: Vec<String> = table.to_string().lines().map(str::to_owned).collect();
    rows.sort();
    rows
}

/// Ballista in standalone mode (its scheduler and one executor in this process, reading the
/// bucket through the same S3 client) runs the canned queries over the uploaded store and
/// finds what `egresslens query` finds in the local one (all but one: see below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ballista_runs_every_canned_query_over_the_bucket_as_egresslens_does_locally() {
    use ballista::prelude::SessionContextExt;
    use datafusion::prelude::SessionContext;

    let dir = tempfile::tempdir().unwrap();
    let endpoint = start_s3(&dir.path().join("s3")).endpoint;
    let (local, remote, _, _) = uploaded_store(dir.path(), &endpoint).await;
    let state = s3_server::ballista_state(remote.object_store());
    let cluster = SessionContext::standalone_with_state(state).await.unwrap();
    query::register_remote_tables(&cluster, &remote).unwrap();
    // The plan here only hands the query over to the scheduler.
    let plan = cluster.sql("SELECT count(*) FROM access_log").await.unwrap();
    let plan = plan.create_physical_plan().await.unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(false).to_string();
    assert!(shown.starts_with("DistributedQueryExec"), "{shown}");
    let here = query::session(&local).await.unwrap();
    // Left out: @findings. Ballista 55.0.0 never answers a correlated NOT EXISTS over a table
    // with no files (`SELECT count(*) FROM access_log WHERE NOT EXISTS (SELECT 1 FROM
    // mesh_hosts m WHERE m.host = access_log.authority)`, mesh_hosts empty, as here).
    for (name, _) in CANNED.iter().filter(|(name, _)| *name != "findings") {
        let params = [("host".to_owned(), "aliyun.com".to_owned())];
        let sql = query::canned(name, &params).unwrap();
        let ours = printed(&here, &sql).await;
        assert!(ours.len() > 4, "@{name} found nothing to compare: {ours:?}");
        let theirs = tokio::time::timeout(Duration::from_secs(120), printed(&cluster, &sql));
        let theirs = theirs.await.unwrap_or_else(|_| panic!("@{name}: no answer in 2 minutes"));
        assert_eq!(theirs, ours, "@{name}");
    }
}

/// A collector writing to the bucket as a child process, its credentials in the environment
/// as a pod gets them, its stderr appended to `<spool>.stderr`.
fn collector(s3: &S3, id: &str, log: &Path, spool: &Path, spool_max: &str) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spool.with_extension("stderr"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["collect", "--commit-rows", "400", "--commit-every", "100ms", "--listen", "off"])
        .args(["--store", &format!("s3://{BUCKET}/egress"), "--s3-endpoint", &s3.endpoint])
        .args(["--cluster", "prod-hz", "--collector-id", id, "--spool-max", spool_max])
        .arg("--spool")
        .arg(spool)
        .arg("--file")
        .arg(log)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Appends `parts` parts of generated traffic (each an hour after the last) to `log` in
/// slices cut anywhere, with pauses. Returns the truth: requests per host, and rejects.
fn write_traffic(log: &Path, seed: u64, parts: u64) -> (BTreeMap<String, i64>, i64) {
    use std::io::Write;
    let mut requests: BTreeMap<String, i64> = BTreeMap::new();
    let mut rejects = 0i64;
    for part in 0..parts {
        let config = GenConfig {
            lines: 2_000,
            seed: seed * 100 + part,
            bad: 0.02,
            start_ns: 1_755_509_790_000_000_000 + part as i64 * 3_600_000_000_000,
            ..GenConfig::default()
        };
        let mut bytes = Vec::new();
        let truth = generate(&config, &mut bytes).unwrap();
        for slice in bytes.chunks(bytes.len() / 16 + 1) {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
            file.write_all(slice).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        for (host, h) in &truth.hosts {
            *requests.entry(host.clone()).or_default() += h.requests as i64;
        }
        rejects += truth.rejects.values().sum::<u64>() as i64;
    }
    (requests, rejects)
}

/// The committed files under a spool directory (its `.tmp/` left out), with their sizes.
fn spool_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != ".tmp") {
            out.extend(spool_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push((path, entry.metadata().map_or(0, |m| m.len())));
        }
    }
    out
}

fn stop(mut child: Child) {
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success(), "a collector failed on SIGTERM");
}

const SPOOL_MAX: u64 = 64 * 1024;

/// Three collectors (three waypoints of one cluster) follow their logs into one bucket at
/// once. One is SIGKILLed at pseudo-random moments ten times, uploads in flight among them,
/// and once loses its spool (a rescheduled pod: it starts again from its newest complete
/// commit in the bucket). For four seconds the bucket is unreachable: the collector with a
/// small spool stays within it (and is held back), and everything is uploaded once the
/// bucket is back. Then the bucket holds exactly the generator's truth per host, per
/// collector and in rejects, no request twice, only complete commits of whole Parquet files,
/// and each spool only its checkpoint.
#[test]
fn three_collectors_share_a_bucket_through_kills_and_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = start_s3(&dir.path().join("s3"));
    let ids = ["wp-a", "wp-b", "wp-c"];
    let logs = ids.map(|id| dir.path().join(format!("{id}.log")));
    let spools = ids.map(|id| dir.path().join(format!("{id}.spool")));
    let writers: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            let log = log.clone();
            std::thread::spawn(move || write_traffic(&log, i as u64, 6))
        })
        .collect();
    let b = collector(&s3, ids[1], &logs[1], &spools[1], &SPOOL_MAX.to_string());
    let c = collector(&s3, ids[2], &logs[2], &spools[2], "1G");

    let mut random = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |bound: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % bound
    };
    let mut outage = None;
    for round in 0..10 {
        if round == 3 {
            // The bucket goes away while B keeps committing: B's spool is watched.
            s3.down.store(true, Ordering::Relaxed);
            let (spool, watching) = (spools[1].clone(), s3.down.clone());
            outage = Some(std::thread::spawn(move || {
                let mut peak = 0;
                while watching.load(Ordering::Relaxed) {
                    peak = peak.max(spool_files(&spool).iter().map(|(_, n)| n).sum::<u64>());
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            }));
        }
        if round == 8 {
            // A's pod is rescheduled: its spool is gone.
            std::fs::remove_dir_all(&spools[0]).unwrap();
        }
        let mut a = collector(&s3, ids[0], &logs[0], &spools[0], "1G");
        std::thread::sleep(Duration::from_millis(300 + next(700)));
        assert!(a.try_wait().unwrap().is_none(), "collector A ended by itself (round {round})");
        a.kill().unwrap();
        a.wait().unwrap();
        if round == 6 {
            s3.down.store(false, Ordering::Relaxed);
        }
    }
    let peak = outage.unwrap().join().unwrap();
    let truths: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let a = collector(&s3, ids[0], &logs[0], &spools[0], "1G");

    let remote = remote(&s3.endpoint, "egress");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let rows = |sql: &str| {
        runtime.block_on(async {
            let ctx = query::remote_session(&remote).await.unwrap();
            pairs(&ctx, sql).await
        })
    };
    let mut requests: BTreeMap<String, i64> = BTreeMap::new();
    for (hosts, _) in &truths {
        for (host, n) in hosts {
            *requests.entry(host.clone()).or_default() += n;
        }
    }
    let per_host = "SELECT authority, count(*) FROM access_log GROUP BY authority";
    let deadline = Instant::now() + Duration::from_secs(120);
    while rows(per_host).into_iter().collect::<BTreeMap<_, _>>() != requests
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(300));
    }
    for child in [a, b, c] {
        stop(child);
    }
    let said = |i: usize| std::fs::read_to_string(spools[i].with_extension("stderr")).unwrap();

    assert_eq!(rows(per_host).into_iter().collect::<BTreeMap<_, _>>(), requests, "{}", said(0));
    let per_collector = "SELECT collector, count(*) FROM access_log GROUP BY collector";
    let expected: Vec<(String, i64)> = ids
        .iter()
        .zip(&truths)
        .map(|(id, (hosts, _))| (id.to_string(), hosts.values().sum()))
        .collect();
    assert_eq!(rows(per_collector), expected);
    let rejects = "SELECT collector, count(*) FROM rejects GROUP BY collector";
    let expected: Vec<(String, i64)> =
        ids.iter().zip(&truths).map(|(id, (_, rejects))| (id.to_string(), *rejects)).collect();
    assert_eq!(rows(rejects), expected);
    let twice = rows(
        "SELECT request_id, count(*) FROM access_log WHERE request_id IS NOT NULL \
         GROUP BY request_id HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "stored twice: {:?}", &twice[..twice.len().min(5)]);

    let mut largest_commit_of_b = 0;
    for (i, id) in ids.iter().enumerate() {
        let writer = Writer::new("prod-hz", id).unwrap();
        let commits = runtime.block_on(remote.commits(&writer)).unwrap();
        for (number, commit) in &commits {
            assert!(commit.is_complete(), "{id}: commit {number} is partial: {commit:?}");
            for file in commit.files.values() {
                let kv = runtime.block_on(remote.key_values(file)).unwrap();
                assert_eq!(kv["egresslens.commit"], number.to_string());
            }
            if i == 1 {
                largest_commit_of_b =
                    largest_commit_of_b.max(commit.files.values().map(|f| f.size).sum::<u64>());
            }
        }
        // The spool keeps its newest commit only, as the checkpoint.
        let left: std::collections::BTreeSet<String> = spool_files(&spools[i])
            .iter()
            .map(|(path, _)| path.file_name().unwrap().to_string_lossy()[..14].to_owned())
            .collect();
        assert_eq!(left.len(), 1, "{id}: the spool holds {left:?}");
    }
    // The command line reads the bucket the same way, credentials from the environment.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_egresslens"))
            .args(args)
            .args(["--store", &format!("s3://{BUCKET}/egress"), "--s3-endpoint", &s3.endpoint])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let total: i64 = requests.values().sum();
    let counted = cli(&["query", "-o", "csv", "SELECT count(*) AS n FROM access_log"]);
    assert_eq!(counted, format!("n\n{total}\n"));
    // `top` without a terminal prints one table of the replayed store.
    let (busiest, n) = requests.iter().max_by_key(|(_, n)| **n).unwrap();
    let table = cli(&["top"]);
    let row = table.lines().find(|l| l.split_whitespace().next() == Some(busiest.as_str()));
    let row = row.unwrap_or_else(|| panic!("no {busiest} in {table}"));
    assert!(row.split_whitespace().any(|cell| cell == n.to_string()), "{row}");

    assert!(said(0).contains("the spool was empty: resuming from commit"), "{}", said(0));
    assert!(said(1).contains("go through again after"), "{}", said(1));
    // B was held back by its full spool, and stayed within it but for the commit made
    // last and the checkpoint.
    assert!(peak >= SPOOL_MAX, "the spool never filled: {peak} bytes");
    assert!(peak <= SPOOL_MAX + 2 * largest_commit_of_b, "{peak} bytes in the spool");
}

/// DuckDB reads the bucket as the README says (its httpfs extension, an S3 secret for the
/// endpoint, `read_parquet` with `hive_partitioning`) and finds the per-host and
/// per-collector counts `egresslens query` finds there. DuckDB is a Python package, so this
/// runs from tests/interop.sh, which installs it and names its interpreter in
/// `EGRESSLENS_DUCKDB_PYTHON`: `cargo test --test s3 -- --ignored duckdb`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs DuckDB with httpfs: run by tests/interop.sh"]
async fn duckdb_reads_the_bucket_as_egresslens_does() {
    let python = std::env::var("EGRESSLENS_DUCKDB_PYTHON")
        .expect("EGRESSLENS_DUCKDB_PYTHON names a Python with duckdb and its httpfs extension");
    let dir = tempfile::tempdir().unwrap();
    let endpoint = start_s3(&dir.path().join("s3")).endpoint;
    let (_, remote, _, _) = uploaded_store(dir.path(), &endpoint).await;
    let script = format!(
        r#"
import json, duckdb, duckdb_extensions
con = duckdb.connect()
duckdb_extensions.import_extension("httpfs", con=con)
con.sql("LOAD httpfs")
con.sql("""CREATE SECRET bucket (TYPE s3, KEY_ID '{ACCESS_KEY}', SECRET '{SECRET_KEY}',
    REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)""")
access_log = "read_parquet('s3://{BUCKET}/egress/access_log/*/*/*/*/*.parquet', hive_partitioning = true)"
rows = con.sql(f"SELECT authority, count(*) FROM {{access_log}} WHERE authority IS NOT NULL GROUP BY 1").fetchall()
rows += con.sql(f"SELECT cluster || '/' || collector, count(*) FROM {{access_log}} GROUP BY 1").fetchall()
print(json.dumps([[str(name), n] for name, n in rows]))
"#,
        host = endpoint.trim_start_matches("http://"),
    );
    let run = || Command::new(&python).args(["-c", &script]).output().unwrap();
    let out = tokio::task::block_in_place(run);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<(String, i64)> = serde_json::from_slice(&out.stdout).unwrap();
    let mut theirs: Vec<_> = theirs.into_iter().collect();
    theirs.sort();
    let there = query::remote_session(&remote).await.unwrap();
    let per_host =
        "SELECT authority, count(*) FROM access_log WHERE authority IS NOT NULL GROUP BY 1";
    let mut ours = pairs(&there, per_host).await;
    ours.extend(
        pairs(&there, "SELECT cluster || '/' || collector, count(*) FROM access_log GROUP BY 1")
            .await,
    );
    ours.sort();
    assert!(ours.len() > 2, "{ours:?}");
    assert_eq!(theirs, ours);
}
