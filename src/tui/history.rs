//! `top --store DIR`: the store's history played through the same live view a collector
//! keeps, in time order, as fast as it reads or at `--speed` times the pace it happened; the
//! findings are the store's own (with their evidence lines). Rows stream from DataFusion a
//! batch at a time, so a long history costs time, not memory.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, TimestampNanosecondType, UInt16Type, UInt64Type};
use futures::StreamExt;

use crate::batch::LineContext;
use crate::findings::FindingReport;
use crate::ingest::LineSink;
use crate::live::{Live, LiveChunk, Shard};
use crate::parse::Entry;
use crate::parse::time::format_rfc3339_ms;

/// Which history, how fast.
#[derive(Debug, Clone)]
pub struct History {
    pub store: crate::query::StoreAt,
    /// Only records newer than this long before now (wall clock).
    pub since: Option<Duration>,
    /// Replay at this many times the recorded pace; `None`: as fast as it reads.
    pub speed: Option<f64>,
}

/// The columns a replay reads, in this order.
const COLUMNS: [&str; 16] = [
    "ts",
    "pod",
    "authority",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration_ms",
    "upstream_cluster",
    "upstream_host",
    "downstream_remote_address",
    "downstream_local_address",
    "requested_server_name",
];

impl History {
    fn sql(&self) -> String {
        let mut sql = format!("SELECT {} FROM access_log", COLUMNS.join(", "));
        if let Some(since) = self.since {
            let cutoff = crate::ingest::now_ns().saturating_sub(since.as_nanos() as i64);
            sql.push_str(&format!(" WHERE ts >= '{}'", format_rfc3339_ms(cutoff)));
        }
        sql.push_str(" ORDER BY ts");
        sql
    }

    /// Replays the store into `live` until done or `stop`; returns the records played.
    pub fn replay(&self, live: &Live, stop: &AtomicBool) -> Result<u64, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let ctx = self.store.session().await.map_err(|e| crate::rounds::chain(&e))?;
            let frame = ctx.sql(&self.sql()).await.map_err(|e| crate::rounds::chain(&e))?;
            let mut batches = frame.execute_stream().await.map_err(|e| crate::rounds::chain(&e))?;
            let mut pace = Pace { speed: self.speed, start: None };
            let shard = live.shard();
            let mut played = 0;
            while let Some(batch) = batches.next().await {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let batch = batch.map_err(|e| crate::rounds::chain(&e))?;
                played += play(&batch, (live, &shard), &mut pace, stop).await?;
            }
            Ok(played)
        })
    }

    /// The findings the store holds.
    pub fn findings(&self) -> Result<Vec<FindingReport>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(async {
                let ctx = self.store.session().await?;
                crate::query::findings(&ctx).await
            })
            .map_err(|e| crate::rounds::chain(&e))
    }
}

/// Keeps a replay at its speed: the first record's time is the start.
struct Pace {
    speed: Option<f64>,
    start: Option<(i64, Instant)>,
}

impl Pace {
    /// How long to wait before the record of `ts_ns` is due.
    fn wait(&mut self, ts_ns: i64) -> Option<Duration> {
        let speed = self.speed?;
        let (first, began) = *self.start.get_or_insert((ts_ns, Instant::now()));
        let due = Duration::from_secs_f64((ts_ns - first).max(0) as f64 / 1e9 / speed);
        due.checked_sub(began.elapsed()).filter(|d| *d > Duration::from_millis(10))
    }
}

/// One batch of rows into `live`, recorded into `shard` (one chunk per batch, or per wait
/// when paced: the shard is not kept locked while the replay waits).
async fn play(
    batch: &RecordBatch,
    (live, shard): (&Live, &Shard),
    pace: &mut Pace,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| format!("the store has no {name} column"))
    };
    let text = |name: &str| -> Result<_, String> {
        column(name)?.as_string_opt::<i32>().ok_or_else(|| format!("{name} is not text"))
    };
    let ts = column("ts")?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or("ts is not a timestamp in nanoseconds")?;
    let code = column("response_code")?
        .as_primitive_opt::<UInt16Type>()
        .ok_or("response_code is not u16")?;
    let bytes_received = column("bytes_received")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or("bytes_received is not u64")?;
    let bytes_sent =
        column("bytes_sent")?.as_primitive_opt::<UInt64Type>().ok_or("bytes_sent is not u64")?;
    let duration =
        column("duration_ms")?.as_primitive_opt::<Float64Type>().ok_or("duration_ms is not f64")?;
    let (pod, authority, method, path, protocol, flags) = (
        text("pod")?,
        text("authority")?,
        text("method")?,
        text("path")?,
        text("protocol")?,
        text("response_flags")?,
    );
    let (cluster, upstream, remote, local, sni) = (
        text("upstream_cluster")?,
        text("upstream_host")?,
        text("downstream_remote_address")?,
        text("downstream_local_address")?,
        text("requested_server_name")?,
    );
    fn get(a: &datafusion::arrow::array::StringArray, row: usize) -> Option<Cow<'_, str>> {
        (!a.is_null(row)).then(|| Cow::Borrowed(a.value(row)))
    }
    let mut chunk: Option<LiveChunk<'_>> = None;
    for row in 0..batch.num_rows() {
        let ts_ns = (!ts.is_null(row)).then(|| ts.value(row));
        // What was played shows while the replay waits; a stop ends the wait.
        while let Some(wait) = ts_ns.and_then(|t| pace.wait(t)) {
            if let Some(mut played) = chunk.take() {
                played.flush();
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(row as u64);
            }
            tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
        }
        let entry = Entry {
            start_time_ns: ts_ns,
            authority: get(authority, row),
            method: get(method, row),
            path: get(path, row),
            protocol: get(protocol, row),
            response_code: (!code.is_null(row)).then(|| code.value(row)),
            response_flags: get(flags, row),
            bytes_received: (!bytes_received.is_null(row)).then(|| bytes_received.value(row)),
            bytes_sent: (!bytes_sent.is_null(row)).then(|| bytes_sent.value(row)),
            duration_ms: (!duration.is_null(row)).then(|| duration.value(row)),
            upstream_cluster: get(cluster, row),
            upstream_host: get(upstream, row),
            downstream_remote_address: get(remote, row),
            downstream_local_address: get(local, row),
            requested_server_name: get(sni, row),
            ..Entry::default()
        };
        let origin = if pod.is_null(row) { "store" } else { pod.value(row) };
        let ctx = LineContext { origin, pod: Some(origin), ..LineContext::default() };
        let chunk = chunk.get_or_insert_with(|| live.chunk(shard, "store", None));
        chunk.record(&entry, b"", &ctx);
    }
    if let Some(mut played) = chunk {
        played.flush();
    }
    Ok(batch.num_rows() as u64)
}
