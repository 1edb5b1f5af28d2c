//! The store's object-storage side against a real S3-protocol server on 127.0.0.1: s3s-fs (a
//! filesystem-backed implementation of the S3 API from the Rust package registry), served
//! over HTTP by the test with SigV4 authentication, spoken to by the `object_store` crate's
//! S3 client exactly as it speaks to AWS, MinIO or Alibaba OSS. No cloud service can be
//! reached from here, so this server stands in for one.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use egresslens::collect::{CollectConfig, Control, collect};
use egresslens::query::{self, CANNED};
use egresslens::source::Input;
use egresslens::store::Store;
use egresslens::store::remote::{Placed, Remote, Uploaded, Writer};
use egresslens::traffic::{GenConfig, generate};
use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::aws::AmazonS3Builder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

const ACCESS_KEY: &str = "egresslens-test";
const SECRET_KEY: &str = "egresslens-test-secret";
const BUCKET: &str = "mesh-logs";

/// Serves the S3 API over `root` (a bucket is a directory) on an ephemeral port of
/// 127.0.0.1, on a thread of its own, for as long as the test runs; returns its endpoint.
fn start_s3(root: &Path) -> String {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let connection =
                    server.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(connection);
            }
        });
    });
    endpoint
}

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
    std::fs::create_dir_all(dir.path().join("s3").join(BUCKET)).unwrap();
    let endpoint = start_s3(&dir.path().join("s3"));
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

/// A store written by `collect` and uploaded file by file reads back through SQL over the
/// bucket as it does locally, with the writer's `cluster` and `collector` as columns, and
/// every canned query runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_store_reads_back_through_sql_over_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s3").join(BUCKET)).unwrap();
    let endpoint = start_s3(&dir.path().join("s3"));
    let local = dir.path().join("spool");
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

    let remote = remote(&endpoint, "egress");
    let writer = Writer::new("prod-hz", "collector-0").unwrap();
    let files = store.committed().unwrap();
    for (placed, path) in &files {
        assert_eq!(remote.upload(&writer, placed, path).await.unwrap(), Uploaded::Created);
    }
    let commits = remote.commits(&writer).await.unwrap();
    assert_eq!(commits.len(), summary.commits);
    assert!(commits.values().all(|c| c.is_complete()));

    let here = query::session(&local).await.unwrap();
    let there = query::remote_session(&remote).await.unwrap();
    let per_host = "SELECT authority, count(*) FROM access_log GROUP BY authority";
    assert_eq!(pairs(&there, per_host).await, pairs(&here, per_host).await);
    let rejects = "SELECT reason, count(*) FROM rejects GROUP BY reason";
    assert_eq!(pairs(&there, rejects).await, pairs(&here, rejects).await);
    let writers = "SELECT cluster || '/' || collector, count(*) FROM access_log GROUP BY 1";
    assert_eq!(
        pairs(&there, writers).await,
        [("prod-hz/collector-0".to_owned(), summary.records as i64)]
    );
    let pruned =
        "SELECT 'hour', count(*) FROM access_log WHERE date = '2025-08-18' AND hour = '10'";
    assert_eq!(pairs(&there, pruned).await, pairs(&here, pruned).await);
    for (name, _) in CANNED {
        let params = [("host".to_owned(), "aliyun.com".to_owned())];
        let sql = query::canned(name, &params).unwrap();
        query::run(&there, &sql).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
