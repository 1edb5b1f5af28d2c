//! Entries and rejects to Arrow `RecordBatch`es of the schemas in [`crate::schema`].
//!
//! Values go straight from the borrowed [`Entry`] into Arrow builders; a batch is handed out
//! when it holds `capacity` rows or when its oldest row is older than the deadline the caller
//! passes in, and the partial batch is taken on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Float64Builder, StringBuilder,
    TimestampNanosecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};

use crate::findings::{Findings, Noted};
use crate::mesh::HostPosture;
use crate::parse::derived::{ClusterName, ip_of, port_of, tls_originated};
use crate::parse::ztunnel::Connection;
use crate::parse::{Entry, LogFormat, RejectReason};
use crate::rounds::ProbeRow;
use crate::schema;
use crate::workloads::Workloads;

/// Where a line came from and when, as known outside the entry itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineContext<'a> {
    /// Source name: a file path, `stdin`, a pod.
    pub origin: &'a str,
    /// 1-based line number within the origin.
    pub line: u64,
    /// The kubelet's or kubectl's timestamp prefix, if any.
    pub prefix_ts_ns: Option<i64>,
    /// When the line was read, the timestamp of last resort.
    pub ingest_ts_ns: i64,
    pub cluster: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub pod: Option<&'a str>,
    /// The access-log encoding of this line's stream, once known: entries in the other
    /// encoding are rejected as `mixed_encoding`.
    pub encoding: Option<LogFormat>,
    /// Pod IPs to workloads, when sources are resolved.
    pub workloads: Option<&'a Workloads>,
    /// What is taken out of each line as it is parsed.
    pub redact: crate::redact::Redaction,
}

impl LineContext<'_> {
    /// The record's time: the entry's `start_time`, else the prefix, else ingest time.
    pub fn record_ts(&self, entry: &Entry<'_>) -> i64 {
        entry.start_time_ns.or(self.prefix_ts_ns).unwrap_or(self.ingest_ts_ns)
    }

    /// A ztunnel connection's time: its own, else the prefix, else ingest time.
    pub fn connection_ts(&self, conn: &Connection<'_>) -> i64 {
        conn.ts_ns.or(self.prefix_ts_ns).unwrap_or(self.ingest_ts_ns)
    }
}

/// Builds `access_log` batches.
#[derive(Debug)]
pub struct AccessLogBatcher {
    capacity: usize,
    oldest: Option<Instant>,
    ts: TimestampNanosecondBuilder,
    cluster: StringBuilder,
    namespace: StringBuilder,
    pod: StringBuilder,
    log_format: StringBuilder,
    authority: StringBuilder,
    method: StringBuilder,
    path: StringBuilder,
    protocol: StringBuilder,
    response_code: UInt16Builder,
    response_flags: StringBuilder,
    response_code_details: StringBuilder,
    bytes_received: UInt64Builder,
    bytes_sent: UInt64Builder,
    duration_ms: Float64Builder,
    upstream_service_time_ms: Float64Builder,
    upstream_response_time_ms: Float64Builder,
    upstream_cluster: StringBuilder,
    upstream_host: StringBuilder,
    upstream_local_address: StringBuilder,
    downstream_remote_address: StringBuilder,
    downstream_local_address: StringBuilder,
    downstream_peer_uri_san: StringBuilder,
    route_name: StringBuilder,
    user_agent: StringBuilder,
    request_id: StringBuilder,
    x_forwarded_for: StringBuilder,
    requested_server_name: StringBuilder,
    upstream_transport_failure_reason: StringBuilder,
    connection_termination_details: StringBuilder,
    istio_policy_status: StringBuilder,
    cluster_kind: StringBuilder,
    service_port: UInt16Builder,
    service_host: StringBuilder,
    upstream_port: UInt16Builder,
    tls_originated: BooleanBuilder,
    source_ip: StringBuilder,
    source_workload: StringBuilder,
    source_namespace: StringBuilder,
    extra: StringBuilder,
}

impl AccessLogBatcher {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let s = || StringBuilder::with_capacity(capacity, capacity * 16);
        AccessLogBatcher {
            capacity,
            oldest: None,
            ts: TimestampNanosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            cluster: s(),
            namespace: s(),
            pod: s(),
            log_format: s(),
            authority: s(),
            method: s(),
            path: s(),
            protocol: s(),
            response_code: UInt16Builder::with_capacity(capacity),
            response_flags: s(),
            response_code_details: s(),
            bytes_received: UInt64Builder::with_capacity(capacity),
            bytes_sent: UInt64Builder::with_capacity(capacity),
            duration_ms: Float64Builder::with_capacity(capacity),
            upstream_service_time_ms: Float64Builder::with_capacity(capacity),
            upstream_response_time_ms: Float64Builder::with_capacity(capacity),
            upstream_cluster: s(),
            upstream_host: s(),
            upstream_local_address: s(),
            downstream_remote_address: s(),
            downstream_local_address: s(),
            downstream_peer_uri_san: s(),
            route_name: s(),
            user_agent: s(),
            request_id: s(),
            x_forwarded_for: s(),
            requested_server_name: s(),
            upstream_transport_failure_reason: s(),
            connection_termination_details: s(),
            istio_policy_status: s(),
            cluster_kind: s(),
            service_port: UInt16Builder::with_capacity(capacity),
            service_host: s(),
            upstream_port: UInt16Builder::with_capacity(capacity),
            tls_originated: BooleanBuilder::with_capacity(capacity),
            source_ip: s(),
            source_workload: s(),
            source_namespace: s(),
            extra: s(),
        }
    }

    /// Rows waiting in the builders.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one entry; returns a batch when `capacity` rows are reached.
    pub fn push(&mut self, entry: &Entry<'_>, ctx: &LineContext<'_>) -> Option<RecordBatch> {
        self.oldest.get_or_insert_with(Instant::now);
        self.ts.append_value(ctx.record_ts(entry));
        self.cluster.append_option(ctx.cluster);
        self.namespace.append_option(ctx.namespace);
        self.pod.append_option(ctx.pod);
        self.log_format.append_option(entry.format.map(|f| f.as_str()));
        self.authority.append_option(entry.authority.as_deref());
        self.method.append_option(entry.method.as_deref());
        self.path.append_option(entry.path.as_deref());
        self.protocol.append_option(entry.protocol.as_deref());
        self.response_code.append_option(entry.response_code);
        self.response_flags.append_option(entry.response_flags.as_deref());
        self.response_code_details.append_option(entry.response_code_details.as_deref());
        self.bytes_received.append_option(entry.bytes_received);
        self.bytes_sent.append_option(entry.bytes_sent);
        self.duration_ms.append_option(entry.duration_ms);
        self.upstream_service_time_ms.append_option(entry.upstream_service_time_ms);
        self.upstream_response_time_ms.append_option(entry.upstream_response_time_ms);
        self.upstream_cluster.append_option(entry.upstream_cluster.as_deref());
        self.upstream_host.append_option(entry.upstream_host.as_deref());
        self.upstream_local_address.append_option(entry.upstream_local_address.as_deref());
        self.downstream_remote_address.append_option(entry.downstream_remote_address.as_deref());
        self.downstream_local_address.append_option(entry.downstream_local_address.as_deref());
        self.downstream_peer_uri_san.append_option(entry.downstream_peer_uri_san.as_deref());
        self.route_name.append_option(entry.route_name.as_deref());
        self.user_agent.append_option(entry.user_agent.as_deref());
        self.request_id.append_option(entry.request_id.as_deref());
        self.x_forwarded_for.append_option(entry.x_forwarded_for.as_deref());
        self.requested_server_name.append_option(entry.requested_server_name.as_deref());
        self.upstream_transport_failure_reason
            .append_option(entry.upstream_transport_failure_reason.as_deref());
        self.connection_termination_details
            .append_option(entry.connection_termination_details.as_deref());
        self.istio_policy_status.append_option(entry.istio_policy_status.as_deref());
        let cluster = entry.upstream_cluster.as_deref().and_then(ClusterName::parse);
        let service_port = cluster.and_then(|c| c.port);
        let upstream_port = entry.upstream_host.as_deref().and_then(port_of);
        self.cluster_kind.append_option(cluster.map(|c| c.kind));
        self.service_port.append_option(service_port);
        self.service_host.append_option(cluster.and_then(|c| c.host));
        self.upstream_port.append_option(upstream_port);
        self.tls_originated.append_value(tls_originated(service_port, upstream_port));
        let source_ip = entry.downstream_remote_address.as_deref().and_then(ip_of);
        self.source_ip.append_option(source_ip);
        let workload = source_ip.zip(ctx.workloads).and_then(|(ip, w)| w.lookup(ip));
        self.source_workload.append_option(workload.as_ref().map(|w| &*w.name));
        self.source_namespace.append_option(workload.as_ref().map(|w| &*w.namespace));
        self.extra.append_option(entry.extra.as_deref());
        (self.len() >= self.capacity).then(|| self.finish())
    }

    /// Takes the rows so far if the oldest is older than `max_age`.
    pub fn take_if_older(&mut self, now: Instant, max_age: Duration) -> Option<RecordBatch> {
        let due = self.oldest.is_some_and(|t| now.duration_since(t) >= max_age);
        (due && !self.is_empty()).then(|| self.finish())
    }

    /// Takes whatever rows are waiting (possibly none) as a batch.
    pub fn finish(&mut self) -> RecordBatch {
        self.oldest = None;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.cluster.finish()),
            Arc::new(self.namespace.finish()),
            Arc::new(self.pod.finish()),
            Arc::new(self.log_format.finish()),
            Arc::new(self.authority.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.protocol.finish()),
            Arc::new(self.response_code.finish()),
            Arc::new(self.response_flags.finish()),
            Arc::new(self.response_code_details.finish()),
            Arc::new(self.bytes_received.finish()),
            Arc::new(self.bytes_sent.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.upstream_service_time_ms.finish()),
            Arc::new(self.upstream_response_time_ms.finish()),
            Arc::new(self.upstream_cluster.finish()),
            Arc::new(self.upstream_host.finish()),
            Arc::new(self.upstream_local_address.finish()),
            Arc::new(self.downstream_remote_address.finish()),
            Arc::new(self.downstream_local_address.finish()),
            Arc::new(self.downstream_peer_uri_san.finish()),
            Arc::new(self.route_name.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.x_forwarded_for.finish()),
            Arc::new(self.requested_server_name.finish()),
            Arc::new(self.upstream_transport_failure_reason.finish()),
            Arc::new(self.connection_termination_details.finish()),
            Arc::new(self.istio_policy_status.finish()),
            Arc::new(self.cluster_kind.finish()),
            Arc::new(self.service_port.finish()),
            Arc::new(self.service_host.finish()),
            Arc::new(self.upstream_port.finish()),
            Arc::new(self.tls_originated.finish()),
            Arc::new(self.source_ip.finish()),
            Arc::new(self.source_workload.finish()),
            Arc::new(self.source_namespace.finish()),
            Arc::new(self.extra.finish()),
        ];
        RecordBatch::try_new(schema::access_log(), columns)
            .expect("builders follow schema::access_log column for column")
    }
}

/// Raw bytes kept per reject: enough to see what went wrong, bounded for memory.
pub const REJECT_RAW_CAP: usize = 4096;

/// Builds `rejects` batches.
#[derive(Debug)]
pub struct RejectBatcher {
    capacity: usize,
    oldest: Option<Instant>,
    ts: TimestampNanosecondBuilder,
    origin: StringBuilder,
    line: UInt64Builder,
    reason: StringBuilder,
    raw_len: UInt64Builder,
    raw: BinaryBuilder,
}

impl RejectBatcher {
    pub fn new(capacity: usize) -> Self {
        RejectBatcher {
            capacity: capacity.max(1),
            oldest: None,
            ts: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            origin: StringBuilder::new(),
            line: UInt64Builder::new(),
            reason: StringBuilder::new(),
            raw_len: UInt64Builder::new(),
            raw: BinaryBuilder::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one reject; `raw_len` is the line's full length, `raw` at most its head.
    pub fn push(
        &mut self,
        reason: RejectReason,
        raw: &[u8],
        raw_len: u64,
        ctx: &LineContext<'_>,
    ) -> Option<RecordBatch> {
        self.oldest.get_or_insert_with(Instant::now);
        self.ts.append_value(ctx.prefix_ts_ns.unwrap_or(ctx.ingest_ts_ns));
        self.origin.append_value(ctx.origin);
        self.line.append_value(ctx.line);
        self.reason.append_value(reason.as_str());
        self.raw_len.append_value(raw_len);
        self.raw.append_value(&raw[..raw.len().min(REJECT_RAW_CAP)]);
        (self.len() >= self.capacity).then(|| self.finish())
    }

    pub fn take_if_older(&mut self, now: Instant, max_age: Duration) -> Option<RecordBatch> {
        let due = self.oldest.is_some_and(|t| now.duration_since(t) >= max_age);
        (due && !self.is_empty()).then(|| self.finish())
    }

    pub fn finish(&mut self) -> RecordBatch {
        self.oldest = None;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.origin.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.raw_len.finish()),
            Arc::new(self.raw.finish()),
        ];
        RecordBatch::try_new(schema::rejects(), columns)
            .expect("builders follow schema::rejects column for column")
    }
}

/// Builds `ztunnel_conn` batches.
#[derive(Debug)]
pub struct ZtunnelBatcher {
    capacity: usize,
    ts: TimestampNanosecondBuilder,
    /// cluster, namespace, pod, level, message, src_addr, src_ip, src_workload,
    /// src_namespace, src_identity, dst_addr, dst_ip: in schema order.
    head: [StringBuilder; 12],
    dst_port: UInt16Builder,
    /// dst_hbone_addr, dst_service, dst_workload, dst_namespace, dst_identity, direction.
    dst: [StringBuilder; 6],
    bytes_sent: UInt64Builder,
    bytes_recv: UInt64Builder,
    duration_ms: Float64Builder,
    error: StringBuilder,
}

impl ZtunnelBatcher {
    pub fn new(capacity: usize) -> Self {
        ZtunnelBatcher {
            capacity: capacity.max(1),
            ts: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            head: std::array::from_fn(|_| StringBuilder::new()),
            dst_port: UInt16Builder::new(),
            dst: std::array::from_fn(|_| StringBuilder::new()),
            bytes_sent: UInt64Builder::new(),
            bytes_recv: UInt64Builder::new(),
            duration_ms: Float64Builder::new(),
            error: StringBuilder::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ts.len() == 0
    }

    /// Appends one connection; returns a batch when `capacity` rows are reached.
    pub fn push(&mut self, conn: &Connection<'_>, ctx: &LineContext<'_>) -> Option<RecordBatch> {
        self.ts.append_value(ctx.connection_ts(conn));
        let src_ip = conn.src_addr.as_deref().and_then(ip_of);
        let dst_ip = conn.dst_addr.as_deref().and_then(ip_of);
        let head = [
            ctx.cluster,
            ctx.namespace,
            ctx.pod,
            conn.level.as_deref(),
            conn.message.as_deref(),
            conn.src_addr.as_deref(),
            src_ip,
            conn.src_workload.as_deref(),
            conn.src_namespace.as_deref(),
            conn.src_identity.as_deref(),
            conn.dst_addr.as_deref(),
            dst_ip,
        ];
        for (builder, value) in self.head.iter_mut().zip(head) {
            builder.append_option(value);
        }
        self.dst_port.append_option(conn.dst_addr.as_deref().and_then(port_of));
        let dst = [
            conn.dst_hbone_addr.as_deref(),
            conn.dst_service.as_deref(),
            conn.dst_workload.as_deref(),
            conn.dst_namespace.as_deref(),
            conn.dst_identity.as_deref(),
            conn.direction.as_deref(),
        ];
        for (builder, value) in self.dst.iter_mut().zip(dst) {
            builder.append_option(value);
        }
        self.bytes_sent.append_option(conn.bytes_sent);
        self.bytes_recv.append_option(conn.bytes_recv);
        self.duration_ms.append_option(conn.duration_ms);
        self.error.append_option(conn.error.as_deref());
        (self.ts.len() >= self.capacity).then(|| self.finish())
    }

    /// Takes whatever rows are waiting (possibly none) as a batch.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.ts.finish())];
        columns.extend(self.head.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(self.dst_port.finish()));
        columns.extend(self.dst.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(self.bytes_sent.finish()));
        columns.push(Arc::new(self.bytes_recv.finish()));
        columns.push(Arc::new(self.duration_ms.finish()));
        columns.push(Arc::new(self.error.finish()));
        RecordBatch::try_new(schema::ztunnel_conn(), columns)
            .expect("builders follow schema::ztunnel_conn column for column")
    }
}

/// The findings noted, one row each, as a `findings` batch; `None` when there are none.
pub fn findings_batch(findings: &Findings) -> Option<RecordBatch> {
    let noted: Vec<_> = findings.iter().collect();
    if noted.is_empty() {
        return None;
    }
    let times = |f: fn(&Noted<'_>) -> i64| {
        let mut builder =
            TimestampNanosecondBuilder::with_capacity(noted.len()).with_timezone("UTC");
        builder.extend(noted.iter().map(|n| Some(f(n))));
        Arc::new(builder.finish()) as ArrayRef
    };
    let strings = |f: for<'b> fn(&'b Noted<'b>) -> &'b str| {
        let mut builder = StringBuilder::new();
        for n in &noted {
            builder.append_value(f(n));
        }
        Arc::new(builder.finish()) as ArrayRef
    };
    let mut count = UInt64Builder::with_capacity(noted.len());
    count.extend(noted.iter().map(|n| Some(n.count)));
    let columns = vec![
        times(|n| n.first_ns),
        times(|n| n.last_ns),
        strings(|n| n.kind.as_str()),
        strings(|n| n.kind.severity().as_str()),
        strings(|n| n.host),
        strings(|n| n.source),
        Arc::new(count.finish()) as ArrayRef,
        strings(|n| n.detail),
        strings(|n| n.evidence),
        strings(|n| n.origin),
    ];
    Some(RecordBatch::try_new(schema::findings(), columns).expect("columns follow the schema"))
}

/// Probe answers as a `probes` batch; `None` when there are none.
pub fn probes_batch(rows: &[ProbeRow]) -> Option<RecordBatch> {
    if rows.is_empty() {
        return None;
    }
    let mut ts = TimestampNanosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let [mut host, mut source, mut verdict, mut server, mut headers, mut error] =
        std::array::from_fn(|_| StringBuilder::new());
    let mut status = UInt16Builder::with_capacity(rows.len());
    let (mut upstream, mut latency) = (Float64Builder::new(), Float64Builder::new());
    for row in rows {
        let answer = &row.answer;
        ts.append_value(row.ts_ns);
        host.append_value(&row.host);
        source.append_value(&row.source);
        verdict.append_value(answer.verdict.as_str());
        status.append_option(answer.status);
        server.append_option(answer.server.as_deref());
        upstream.append_option(answer.upstream_service_time_ms);
        let names = (!answer.envoy_headers.is_empty()).then(|| answer.envoy_headers.join(" "));
        headers.append_option(names);
        latency.append_option(answer.latency_ms);
        error.append_option(answer.error.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts.finish()),
        Arc::new(host.finish()),
        Arc::new(source.finish()),
        Arc::new(verdict.finish()),
        Arc::new(status.finish()),
        Arc::new(server.finish()),
        Arc::new(upstream.finish()),
        Arc::new(headers.finish()),
        Arc::new(latency.finish()),
        Arc::new(error.finish()),
    ];
    Some(RecordBatch::try_new(schema::probes(), columns).expect("columns follow the schema"))
}

/// A snapshot of the registered hosts' posture at `ts_ns` as a `mesh_hosts` batch; `None`
/// when no host is registered.
pub fn mesh_hosts_batch(ts_ns: i64, hosts: &[HostPosture]) -> Option<RecordBatch> {
    if hosts.is_empty() {
        return None;
    }
    let mut ts = TimestampNanosecondBuilder::with_capacity(hosts.len()).with_timezone("UTC");
    let [mut host, mut namespace, mut entry, mut waypoint, mut ports, mut problems] =
        std::array::from_fn(|_| StringBuilder::new());
    let (mut ready, mut pods) = (UInt32Builder::new(), UInt32Builder::new());
    let mut tls = BooleanBuilder::new();
    for h in hosts {
        ts.append_value(ts_ns);
        host.append_value(&h.host);
        namespace.append_value(&h.namespace);
        entry.append_value(&h.service_entry);
        waypoint.append_option(h.waypoint.as_deref());
        ready.append_option(h.waypoint_ready_pods.map(|n| n as u32));
        pods.append_option(h.waypoint_pods.map(|n| n as u32));
        tls.append_value(h.ports.iter().any(|p| p.port == 80 && p.tls_origination));
        let described: Vec<String> = h
            .ports
            .iter()
            .map(|p| {
                let target = if p.target_port == p.port {
                    String::new()
                } else {
                    format!("→{}", p.target_port)
                };
                let mode = p.tls_mode.as_deref().map_or(String::new(), |m| format!(" {m}"));
                format!("{}{target}{mode}", p.port)
            })
            .collect();
        ports.append_value(described.join(", "));
        let kinds: Vec<&str> = h.problems.iter().map(|p| p.kind.as_str()).collect();
        problems.append_value(kinds.join(","));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts.finish()),
        Arc::new(host.finish()),
        Arc::new(namespace.finish()),
        Arc::new(entry.finish()),
        Arc::new(waypoint.finish()),
        Arc::new(ready.finish()),
        Arc::new(pods.finish()),
        Arc::new(tls.finish()),
        Arc::new(ports.finish()),
        Arc::new(problems.finish()),
    ];
    Some(RecordBatch::try_new(schema::mesh_hosts(), columns).expect("columns follow the schema"))
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, UInt16Type};

    use super::*;
    use crate::parse::{Projection, parse_message};
    use crate::schema::col;

    #[test]
    fn walkthrough_entry_becomes_one_row_with_derived_columns() {
        let line = br#"{"authority_for":"aliyun.com","bytes_sent":239,"duration":24,"upstream_cluster":"inbound-vip|80|http|aliyun.com;","upstream_host":"140.205.135.3:443","downstream_remote_address":"172.16.5.26:33356","response_code":301}"#;
        let entry = parse_message(line, Projection::All).unwrap();
        let ctx = LineContext { ingest_ts_ns: 7, ..LineContext::default() };
        let mut batcher = AccessLogBatcher::new(10);
        assert!(batcher.push(&entry, &ctx).is_none());
        let batch = batcher.finish();
        assert_eq!(batch.num_rows(), 1);
        let col = |name| batch.column_by_name(name).unwrap();
        assert_eq!(col(col::AUTHORITY).as_string::<i32>().value(0), "aliyun.com");
        assert_eq!(col(col::CLUSTER_KIND).as_string::<i32>().value(0), "inbound-vip");
        assert_eq!(col(col::SERVICE_PORT).as_primitive::<UInt16Type>().value(0), 80);
        assert_eq!(col(col::UPSTREAM_PORT).as_primitive::<UInt16Type>().value(0), 443);
        assert!(col(col::TLS_ORIGINATED).as_boolean().value(0));
        assert_eq!(col(col::SOURCE_IP).as_string::<i32>().value(0), "172.16.5.26");
        assert_eq!(col(col::DURATION_MS).as_primitive::<Float64Type>().value(0), 24.0);
        assert!(col(col::UPSTREAM_SERVICE_TIME_MS).is_null(0));
        assert!(col(col::POD).is_null(0));
    }

    #[test]
    fn full_batches_are_handed_out_at_capacity() {
        let entry = parse_message(br#"{"authority":"a.com"}"#, Projection::All).unwrap();
        let mut batcher = AccessLogBatcher::new(2);
        let ctx = LineContext::default();
        assert!(batcher.push(&entry, &ctx).is_none());
        assert_eq!(batcher.push(&entry, &ctx).map(|b| b.num_rows()), Some(2));
        assert!(batcher.is_empty());
    }

    #[test]
    fn deadline_flushes_a_partial_batch() {
        let entry = parse_message(br#"{"authority":"a.com"}"#, Projection::All).unwrap();
        let mut batcher = AccessLogBatcher::new(100);
        batcher.push(&entry, &LineContext::default());
        let now = Instant::now();
        assert!(batcher.take_if_older(now, Duration::from_secs(3600)).is_none());
        let later = now + Duration::from_secs(2);
        assert_eq!(
            batcher.take_if_older(later, Duration::from_secs(1)).map(|b| b.num_rows()),
            Some(1)
        );
    }

    #[test]
    fn deadline_flushes_partial_rejects_too() {
        let mut batcher = RejectBatcher::new(100);
        batcher.push(RejectReason::Empty, b"", 0, &LineContext::default());
        let now = Instant::now();
        assert!(batcher.take_if_older(now, Duration::from_secs(3600)).is_none());
        let later = now + Duration::from_secs(2);
        let batch = batcher.take_if_older(later, Duration::from_secs(1));
        assert_eq!(batch.map(|b| b.num_rows()), Some(1));
        assert!(batcher.is_empty());
    }

    #[test]
    fn rejects_keep_a_capped_head_and_the_full_length() {
        let mut batcher = RejectBatcher::new(10);
        let raw = vec![b'x'; REJECT_RAW_CAP * 2];
        let ctx = LineContext { origin: "f.log", line: 3, ..LineContext::default() };
        batcher.push(RejectReason::TooLong, &raw, 2 << 20, &ctx);
        let batch = batcher.finish();
        let raw_col = batch.column_by_name("raw").unwrap().as_binary::<i32>();
        assert_eq!(raw_col.value(0).len(), REJECT_RAW_CAP);
        assert_eq!(batch.column_by_name("reason").unwrap().as_string::<i32>().value(0), "too_long");
    }
}
