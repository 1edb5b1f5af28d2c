//! SQL over a store on object storage, three engines in one run: egresslens's own DataFusion
//! session in this process, Ballista (a scheduler and two executors of one core each, in this
//! process), and DuckDB with its httpfs extension (a Python process, timed inside it, so its
//! start is not counted). The store (a directory `collect` wrote) is first uploaded to an
//! S3-protocol server on 127.0.0.1 (s3s-fs, as in tests/s3.rs); every engine then reads the
//! bucket through it, so the server's work is in every figure alike. Each canned query runs
//! `RUNS` times per engine, the engines in turn; prints medians and ratios to egresslens.
//!
//! `cargo bench --bench remote -- STORE PYTHON [RUNS]`, PYTHON having duckdb 1.5.5 and
//! duckdb-extension-httpfs (`benches/run-all` makes both).

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a benchmark

#[path = "../tests/support/s3.rs"]
mod s3_server;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use ballista::prelude::SessionContextExt;
use datafusion::prelude::SessionContext;
use egresslens::query;
use egresslens::store::Store;
use egresslens::store::remote::{Remote, Writer};
use object_store::aws::AmazonS3Builder;
use s3_server::{ACCESS_KEY, BUCKET, SECRET_KEY, start_s3};

/// The canned queries timed: a scan-and-group, a filter on errors, exact percentiles.
const QUERIES: [&str; 3] = ["top-hosts", "errors-by-host", "latency-by-host"];

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// DuckDB, kept running: reads one query per line on stdin, answers with its seconds.
const DUCKDB: &str = r#"
import sys, time, duckdb, duckdb_extensions
endpoint, access_key, secret_key, bucket = sys.argv[1:5]
con = duckdb.connect()
duckdb_extensions.import_extension("httpfs", con=con)
con.sql("LOAD httpfs")
con.sql(f"""CREATE SECRET (TYPE s3, KEY_ID '{access_key}', SECRET '{secret_key}',
    REGION 'us-east-1', ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)""")
con.sql(f"""CREATE VIEW access_log AS SELECT * FROM read_parquet(
    's3://{bucket}/egress/access_log/*/*/*/*/*.parquet', hive_partitioning = true)""")
for line in sys.stdin:
    start = time.perf_counter()
    rows = con.sql(line).fetchall()
    print(f"{time.perf_counter() - start} {len(rows)}", flush=True)
"#;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (Some(store), Some(python)) = (args.next(), args.next()) else {
        eprintln!("usage: cargo bench --bench remote -- STORE PYTHON [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().map_or(5, |r| r.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s3 = start_s3(dir.path());

    let client = AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .build()
        .unwrap();
    let remote = Remote::with_store(&format!("s3://{BUCKET}/egress"), Arc::new(client)).unwrap();
    let (local, _) = Store::open(std::path::Path::new(&store)).unwrap();
    let writer = Writer::new("bench", "collector-0").unwrap();
    let files = local.committed().unwrap();
    runtime.block_on(async {
        for (placed, path) in &files {
            remote.upload(&writer, placed, path).await.unwrap();
        }
    });
    drop(local);

    let ours = runtime.block_on(query::remote_session(&remote)).unwrap();
    let rows: i64 = {
        let sql = "SELECT count(*) FROM access_log";
        let batches = runtime.block_on(query::run(&ours, sql)).unwrap();
        let counts = batches[0].column(0).as_any().downcast_ref::<arrow_array::Int64Array>();
        counts.unwrap().value(0)
    };
    println!(
        "store: {rows} access_log rows in {} files, uploaded to s3s-fs on 127.0.0.1",
        files.len()
    );

    let cluster = runtime.block_on(ballista_with_two_executors(&remote));

    let endpoint = s3.endpoint.trim_start_matches("http://");
    let mut duckdb = Command::new(&python)
        .args(["-c", DUCKDB, endpoint, ACCESS_KEY, SECRET_KEY, BUCKET])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_duckdb = duckdb.stdin.take().unwrap();
    let mut from_duckdb = BufReader::new(duckdb.stdout.take().unwrap()).lines();
    let mut ask_duckdb = |sql: &str| -> (f64, usize) {
        writeln!(to_duckdb, "{}", sql.split_whitespace().collect::<Vec<_>>().join(" ")).unwrap();
        let answer = from_duckdb.next().unwrap().unwrap();
        let (seconds, rows) = answer.split_once(' ').unwrap();
        (seconds.parse().unwrap(), rows.parse().unwrap())
    };
    let timed = |ctx: &SessionContext, sql: &str| -> (f64, usize) {
        let start = Instant::now();
        let batches = runtime.block_on(query::run(ctx, sql)).unwrap();
        (start.elapsed().as_secs_f64(), batches.iter().map(|b| b.num_rows()).sum())
    };

    println!(
        "{:<18} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "query", "egresslens", "Ballista", "DuckDB", "B/e", "D/e"
    );
    for name in QUERIES {
        let sql = query::canned(name, &[]).unwrap();
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (seconds, ours_rows) = timed(&ours, &sql);
            a.push(seconds);
            let (seconds, ballista_rows) = timed(&cluster, &sql);
            b.push(seconds);
            let (seconds, duckdb_rows) = ask_duckdb(&sql);
            c.push(seconds);
            assert!(ours_rows == ballista_rows && ours_rows == duckdb_rows, "@{name}: row counts");
        }
        let (a, b, c) = (median(a), median(b), median(c));
        println!("{name:<18} {a:>10.3} s {b:>10.3} s {c:>10.3} s {:>10.2} {:>10.2}", b / a, c / a);
    }
    println!("medians of {runs} runs per engine, taken in turn; B/e and D/e: ratio to egresslens");
    drop(to_duckdb);
    duckdb.wait().unwrap();
}

/// A Ballista scheduler and two executors of one core each in this process, reading the
/// bucket through `remote`'s client; a session that sends its queries to them.
async fn ballista_with_two_executors(remote: &Remote) -> SessionContext {
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
    let state = s3_server::ballista_state(remote.object_store());
    let addr =
        ballista_scheduler::standalone::new_standalone_scheduler_from_state(&state).await.unwrap();
    let url = format!("http://localhost:{}", addr.port());
    let scheduler = loop {
        match SchedulerGrpcClient::connect(url.clone()).await {
            Ok(client) => break client,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    };
    for _ in 0..2 {
        ballista_executor::new_standalone_executor_from_state(scheduler.clone(), 1, &state)
            .await
            .unwrap();
    }
    let scheduler_url = format!("df://localhost:{}", addr.port());
    let ctx = SessionContext::remote_with_state(&scheduler_url, state).await.unwrap();
    query::register_remote_tables(&ctx, remote).unwrap();
    ctx
}
