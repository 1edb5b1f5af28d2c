//! An S3-protocol server on 127.0.0.1 for tests and benchmarks: s3s-fs (a filesystem-backed
//! implementation of the S3 API from the Rust package registry) served over HTTP with SigV4,
//! with a switch that takes it off the network.

#![allow(clippy::unwrap_used, dead_code)] // each includer uses part of it

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};

pub(crate) const ACCESS_KEY: &str = "egresslens-test";
pub(crate) const SECRET_KEY: &str = "egresslens-test-secret";
pub(crate) const BUCKET: &str = "mesh-logs";

/// A running server.
pub(crate) struct S3 {
    pub(crate) endpoint: String,
    /// While set, connections are closed as they come and the open ones are cut: the store
    /// is unreachable.
    pub(crate) down: Arc<AtomicBool>,
}

/// Serves the S3 API over `root` (a bucket is a directory; [`BUCKET`] is made) on an
/// ephemeral port of 127.0.0.1, on a thread of its own, for as long as the process runs.
pub(crate) fn start_s3(root: &Path) -> S3 {
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let down = Arc::new(AtomicBool::new(false));
    let cut = down.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
            tokio::spawn({
                let (open, cut) = (open.clone(), cut.clone());
                async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if cut.load(Ordering::Relaxed) {
                            open.lock().unwrap().drain(..).for_each(|c| c.abort());
                        }
                    }
                }
            });
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                if cut.load(Ordering::Relaxed) {
                    continue;
                }
                let connection =
                    server.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                let mut open = open.lock().unwrap();
                open.retain(|c| !c.is_finished());
                open.push(tokio::spawn(connection).abort_handle());
            }
        });
    });
    S3 { endpoint, down }
}

/// A session state for Ballista whose scheduler and executors (in this process) read the
/// bucket through `store`, the S3 client the test or benchmark made.
pub(crate) fn ballista_state(
    store: Arc<dyn object_store::ObjectStore>,
) -> datafusion::execution::SessionState {
    use ballista::prelude::SessionConfigExt;
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new().build_arc().unwrap();
    let bucket = url::Url::parse(&format!("s3://{BUCKET}")).unwrap();
    runtime.register_object_store(&bucket, store);
    datafusion::execution::SessionStateBuilder::new()
        .with_config(datafusion::prelude::SessionConfig::new_with_ballista())
        .with_runtime_env(runtime)
        .with_default_features()
        .build()
}
