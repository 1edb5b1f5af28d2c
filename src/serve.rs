//! The collector's status API (read-only), on loopback unless told otherwise:
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 once the store is writable and the sources are connected, else 503
//!   saying which is missing.
//! - `GET /api/v1/snapshot?window=1m|5m|1h|all` (default `all`): the live view as JSON
//!   ([`crate::live::Snapshot`]): `hosts` with the keys of `stats -o json`, findings, rejects,
//!   sources and their lag, the collector's own counts; with `&host=NAME`, that host's
//!   requests over time and latency profile as `detail`. `&filter=…` lists only the hosts
//!   (and their findings) the filter takes, `&limit=N` only the first N of them by
//!   `&sort=requests|host|errors|error_rate|bytes|p50|p99|tls` (`&reverse=true`);
//!   `hosts_total` and `hosts_matched` count what was left out.
//! - `GET /api/v1/tail?filter=…`: the recent records, then every new one, as NDJSON (the
//!   [`crate::filter`] language); a reader too slow for the stream gets `{"missed": N}` lines.
//!
//! With a token (`--listen-token-file`), every path but `/healthz` wants
//! `Authorization: Bearer <token>` and answers 401 without it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::{broadcast, oneshot};

use crate::collect::Control;
use crate::filter::Filter;
use crate::live::{Listing, Live, SelfCounts, TailRecord};
use crate::report::SortKey;
use crate::stats::Window;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the status API's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr} for the status API")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    live: Arc<Live>,
    control: Arc<Control>,
    token: Option<Arc<str>>,
}

/// The running status API; dropping it stops it.
#[derive(Debug)]
pub struct StatusServer {
    /// Where it listens (the port chosen when asked for port 0).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl StatusServer {
    /// Listens on `addr` and serves `live` (with `control`'s counts) on a thread of its own.
    pub fn start(
        addr: SocketAddr,
        token: Option<String>,
        live: Arc<Live>,
        control: Arc<Control>,
    ) -> Result<StatusServer, ServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("status-api")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
        let shared = Shared { live, control, token: token.map(Arc::from) };
        let (stop, stopped) = oneshot::channel::<()>();
        runtime.spawn(async move {
            let served = axum::serve(listener, router(shared))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "egresslens: warning: status API: {e}");
            }
        });
        Ok(StatusServer { addr, stop: Some(stop), runtime: Some(runtime) })
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open tail streams end with the runtime; nothing waits on them.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn router(shared: Shared) -> Router {
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/tail", get(tail))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_token));
    Router::new().route("/healthz", get(|| async { "ok\n" })).merge(guarded).with_state(shared)
}

async fn require_token(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let Some(token) = &shared.token else { return next.run(request).await };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.as_bytes(), token.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this collector's status API wants Authorization: Bearer <token>\n",
        )
            .into_response(),
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let readiness = &shared.live.readiness;
    let mut missing = Vec::new();
    if !readiness.store.load(Ordering::Relaxed) {
        missing.push("the store is not open for writing");
    }
    if !readiness.sources.load(Ordering::Relaxed) {
        missing.push("the sources are not connected");
    }
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned()).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", missing.join("; ")))
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct SnapshotQuery {
    window: Option<String>,
    /// A host to look at closer (`detail`).
    host: Option<String>,
    /// Which hosts to list (see [`Listing`]).
    filter: Option<String>,
    sort: Option<String>,
    reverse: Option<bool>,
    limit: Option<usize>,
}

async fn snapshot(State(shared): State<Shared>, Query(query): Query<SnapshotQuery>) -> Response {
    let window = match query.window.as_deref().map(Window::parse) {
        None => Window::All,
        Some(Some(window)) => window,
        Some(None) => {
            let text = "window: use 1m, 5m, 1h or all\n";
            return (StatusCode::BAD_REQUEST, text).into_response();
        }
    };
    let filter = match Filter::parse(query.filter.as_deref().unwrap_or("")) {
        Ok(filter) => filter,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("filter: {e}\n")).into_response(),
    };
    let sort = match query.sort.as_deref().map(SortKey::parse) {
        None => SortKey::default(),
        Some(Some(sort)) => sort,
        Some(None) => {
            let text = format!("sort: use one of {}\n", SortKey::NAMES.join(", "));
            return (StatusCode::BAD_REQUEST, text).into_response();
        }
    };
    let listing =
        Listing { filter, sort, reverse: query.reverse.unwrap_or(false), limit: query.limit };
    let counts = SelfCounts::of(&shared.control);
    // The report walks every host: off the runtime's only worker.
    let live = shared.live.clone();
    let host = query.host;
    let taken = tokio::task::spawn_blocking(move || {
        live.snapshot_with(window, counts, host.as_deref(), &listing)
    });
    match taken.await {
        Ok(snapshot) => axum::Json(snapshot).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the snapshot failed\n").into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct TailQuery {
    filter: Option<String>,
    /// Only records whose `seq` is above this (a reconnecting reader's last).
    after: Option<u64>,
}

async fn tail(State(shared): State<Shared>, Query(query): Query<TailQuery>) -> Response {
    let filter = match Filter::parse(query.filter.as_deref().unwrap_or("")) {
        Ok(filter) => filter,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("filter: {e}\n")).into_response(),
    };
    // Subscribed before the recent ones are read, so none is missed; those that come both
    // ways are sent once (by `seq`).
    let receiver = shared.live.subscribe();
    let recent = shared.live.recent();
    let after = query.after.unwrap_or(0);
    let sent = recent.last().map_or(after, |r| r.seq.max(after));
    let mut lines = String::new();
    for record in recent.iter().filter(|r| r.seq > after && filter.matches_record(r)) {
        push_line(&mut lines, record);
    }
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(lines) });
    let live =
        futures::stream::unfold((receiver, filter), move |(mut receiver, filter)| async move {
            loop {
                let line = match receiver.recv().await {
                    Ok(record) if record.seq > sent && filter.matches_record(&record) => {
                        let mut line = String::new();
                        push_line(&mut line, &record);
                        line
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => format!("{{\"missed\":{n}}}\n"),
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                return Some((Ok(line), (receiver, filter)));
            }
        });
    let body = Body::from_stream(futures::StreamExt::chain(first, live));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn push_line(out: &mut String, record: &TailRecord) {
    // A record of strings and numbers always serialises.
    if let Ok(json) = serde_json::to_string(record) {
        out.push_str(&json);
        out.push('\n');
    }
}
