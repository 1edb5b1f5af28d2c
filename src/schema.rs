//! Arrow schemas, column names and the waypoint's JSON keys: the one source of truth.
//!
//! Every other module names columns through these constants, so a rename happens here or
//! nowhere. The README's "Schema" section documents the same columns for users.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Column names of the `access_log` table.
pub mod col {
    pub const TS: &str = "ts";
    pub const CLUSTER: &str = "cluster";
    pub const NAMESPACE: &str = "namespace";
    pub const POD: &str = "pod";
    pub const LOG_FORMAT: &str = "log_format";
    pub const AUTHORITY: &str = "authority";
    pub const METHOD: &str = "method";
    pub const PATH: &str = "path";
    pub const PROTOCOL: &str = "protocol";
    pub const RESPONSE_CODE: &str = "response_code";
    pub const RESPONSE_FLAGS: &str = "response_flags";
    pub const RESPONSE_CODE_DETAILS: &str = "response_code_details";
    pub const BYTES_RECEIVED: &str = "bytes_received";
    pub const BYTES_SENT: &str = "bytes_sent";
    pub const DURATION_MS: &str = "duration_ms";
    pub const UPSTREAM_SERVICE_TIME_MS: &str = "upstream_service_time_ms";
    pub const UPSTREAM_RESPONSE_TIME_MS: &str = "upstream_response_time_ms";
    pub const UPSTREAM_CLUSTER: &str = "upstream_cluster";
    pub const UPSTREAM_HOST: &str = "upstream_host";
    pub const UPSTREAM_LOCAL_ADDRESS: &str = "upstream_local_address";
    pub const DOWNSTREAM_REMOTE_ADDRESS: &str = "downstream_remote_address";
    pub const DOWNSTREAM_LOCAL_ADDRESS: &str = "downstream_local_address";
    pub const DOWNSTREAM_PEER_URI_SAN: &str = "downstream_peer_uri_san";
    pub const ROUTE_NAME: &str = "route_name";
    pub const USER_AGENT: &str = "user_agent";
    pub const REQUEST_ID: &str = "request_id";
    pub const X_FORWARDED_FOR: &str = "x_forwarded_for";
    pub const REQUESTED_SERVER_NAME: &str = "requested_server_name";
    pub const UPSTREAM_TRANSPORT_FAILURE_REASON: &str = "upstream_transport_failure_reason";
    pub const CONNECTION_TERMINATION_DETAILS: &str = "connection_termination_details";
    pub const ISTIO_POLICY_STATUS: &str = "istio_policy_status";
    pub const CLUSTER_KIND: &str = "cluster_kind";
    pub const SERVICE_PORT: &str = "service_port";
    pub const SERVICE_HOST: &str = "service_host";
    pub const UPSTREAM_PORT: &str = "upstream_port";
    pub const TLS_ORIGINATED: &str = "tls_originated";
    pub const SOURCE_IP: &str = "source_ip";
    pub const SOURCE_WORKLOAD: &str = "source_workload";
    pub const SOURCE_NAMESPACE: &str = "source_namespace";
    pub const EXTRA: &str = "extra";
}

/// Column names of the `rejects` table.
pub mod reject_col {
    pub const TS: &str = "ts";
    pub const ORIGIN: &str = "origin";
    pub const LINE: &str = "line";
    pub const REASON: &str = "reason";
    pub const RAW_LEN: &str = "raw_len";
    pub const RAW: &str = "raw";
}

/// Column names of the `findings` table: evidence noted per (kind, host, source) and commit.
pub mod finding_col {
    /// When the commit's first piece of evidence was seen.
    pub const TS: &str = "ts";
    pub const LAST_SEEN: &str = "last_seen";
    pub const KIND: &str = "kind";
    pub const SEVERITY: &str = "severity";
    pub const HOST: &str = "host";
    pub const SOURCE: &str = "source";
    pub const COUNT: &str = "count";
    pub const DETAIL: &str = "detail";
    pub const EVIDENCE: &str = "evidence";
    pub const ORIGIN: &str = "origin";
}

/// Column names of the `probes` table: one row per probe the collector sent.
pub mod probe_col {
    pub const TS: &str = "ts";
    pub const HOST: &str = "host";
    /// `namespace/pod` the probe was sent from.
    pub const SOURCE: &str = "source";
    pub const VERDICT: &str = "verdict";
    pub const STATUS: &str = "status";
    pub const SERVER: &str = "server";
    pub const UPSTREAM_SERVICE_TIME_MS: &str = "upstream_service_time_ms";
    pub const ENVOY_HEADERS: &str = "envoy_headers";
    pub const LATENCY_MS: &str = "latency_ms";
    pub const ERROR: &str = "error";
}

/// Column names of the `mesh_hosts` table: the collector's snapshots of the mesh's posture.
pub mod mesh_col {
    pub const TS: &str = "ts";
    pub const HOST: &str = "host";
    pub const NAMESPACE: &str = "namespace";
    pub const SERVICE_ENTRY: &str = "service_entry";
    /// `namespace/name`, null when none is asked for.
    pub const WAYPOINT: &str = "waypoint";
    pub const WAYPOINT_READY_PODS: &str = "waypoint_ready_pods";
    pub const WAYPOINT_PODS: &str = "waypoint_pods";
    /// The waypoint originates TLS for service port 80.
    pub const TLS_ORIGINATION: &str = "tls_origination";
    /// `80→443 SIMPLE, 443`.
    pub const PORTS: &str = "ports";
    /// Problem kinds, comma-separated (empty: none).
    pub const PROBLEMS: &str = "problems";
}

/// Column names of the `ztunnel_conn` table (ztunnel's keys with `.` as `_`).
pub mod ztunnel_col {
    pub const TS: &str = "ts";
    pub const CLUSTER: &str = "cluster";
    pub const NAMESPACE: &str = "namespace";
    pub const POD: &str = "pod";
    pub const LEVEL: &str = "level";
    pub const MESSAGE: &str = "message";
    pub const SRC_ADDR: &str = "src_addr";
    pub const SRC_IP: &str = "src_ip";
    pub const SRC_WORKLOAD: &str = "src_workload";
    pub const SRC_NAMESPACE: &str = "src_namespace";
    pub const SRC_IDENTITY: &str = "src_identity";
    pub const DST_ADDR: &str = "dst_addr";
    pub const DST_IP: &str = "dst_ip";
    pub const DST_PORT: &str = "dst_port";
    pub const DST_HBONE_ADDR: &str = "dst_hbone_addr";
    pub const DST_SERVICE: &str = "dst_service";
    pub const DST_WORKLOAD: &str = "dst_workload";
    pub const DST_NAMESPACE: &str = "dst_namespace";
    pub const DST_IDENTITY: &str = "dst_identity";
    pub const DIRECTION: &str = "direction";
    pub const BYTES_SENT: &str = "bytes_sent";
    pub const BYTES_RECV: &str = "bytes_recv";
    pub const DURATION_MS: &str = "duration_ms";
    pub const ERROR: &str = "error";
}

/// Keys of the waypoint's JSON access-log entry: Istio's 24 default JSON keys, the walkthrough's
/// waypoint keys (`authority_for`, `upstream_response_time`), the ≤1.7 `istio_policy_status` and
/// the peer SAN some waypoint replicas add. Any other key lands in the `extra` column.
pub mod key {
    pub const START_TIME: &str = "start_time";
    pub const AUTHORITY: &str = "authority";
    /// Alibaba ASM writes the requested host here; it wins over `authority`.
    pub const AUTHORITY_FOR: &str = "authority_for";
    pub const METHOD: &str = "method";
    pub const PATH: &str = "path";
    pub const PROTOCOL: &str = "protocol";
    pub const RESPONSE_CODE: &str = "response_code";
    pub const RESPONSE_FLAGS: &str = "response_flags";
    pub const RESPONSE_CODE_DETAILS: &str = "response_code_details";
    pub const BYTES_RECEIVED: &str = "bytes_received";
    pub const BYTES_SENT: &str = "bytes_sent";
    pub const DURATION: &str = "duration";
    pub const UPSTREAM_SERVICE_TIME: &str = "upstream_service_time";
    pub const UPSTREAM_RESPONSE_TIME: &str = "upstream_response_time";
    pub const UPSTREAM_CLUSTER: &str = "upstream_cluster";
    pub const UPSTREAM_HOST: &str = "upstream_host";
    pub const UPSTREAM_LOCAL_ADDRESS: &str = "upstream_local_address";
    pub const DOWNSTREAM_REMOTE_ADDRESS: &str = "downstream_remote_address";
    pub const DOWNSTREAM_LOCAL_ADDRESS: &str = "downstream_local_address";
    pub const DOWNSTREAM_PEER_URI_SAN: &str = "downstream_peer_uri_san";
    pub const ROUTE_NAME: &str = "route_name";
    pub const USER_AGENT: &str = "user_agent";
    pub const REQUEST_ID: &str = "request_id";
    pub const X_FORWARDED_FOR: &str = "x_forwarded_for";
    pub const REQUESTED_SERVER_NAME: &str = "requested_server_name";
    pub const UPSTREAM_TRANSPORT_FAILURE_REASON: &str = "upstream_transport_failure_reason";
    pub const CONNECTION_TERMINATION_DETAILS: &str = "connection_termination_details";
    pub const ISTIO_POLICY_STATUS: &str = "istio_policy_status";
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn timestamp(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false)
}

/// Schema of the `access_log` table: one row per waypoint request.
pub fn access_log() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use col::*;
            Arc::new(Schema::new(vec![
                timestamp(TS),
                utf8(CLUSTER),
                utf8(NAMESPACE),
                utf8(POD),
                utf8(LOG_FORMAT),
                utf8(AUTHORITY),
                utf8(METHOD),
                utf8(PATH),
                utf8(PROTOCOL),
                Field::new(RESPONSE_CODE, DataType::UInt16, true),
                utf8(RESPONSE_FLAGS),
                utf8(RESPONSE_CODE_DETAILS),
                Field::new(BYTES_RECEIVED, DataType::UInt64, true),
                Field::new(BYTES_SENT, DataType::UInt64, true),
                Field::new(DURATION_MS, DataType::Float64, true),
                Field::new(UPSTREAM_SERVICE_TIME_MS, DataType::Float64, true),
                Field::new(UPSTREAM_RESPONSE_TIME_MS, DataType::Float64, true),
                utf8(UPSTREAM_CLUSTER),
                utf8(UPSTREAM_HOST),
                utf8(UPSTREAM_LOCAL_ADDRESS),
                utf8(DOWNSTREAM_REMOTE_ADDRESS),
                utf8(DOWNSTREAM_LOCAL_ADDRESS),
                utf8(DOWNSTREAM_PEER_URI_SAN),
                utf8(ROUTE_NAME),
                utf8(USER_AGENT),
                utf8(REQUEST_ID),
                utf8(X_FORWARDED_FOR),
                utf8(REQUESTED_SERVER_NAME),
                utf8(UPSTREAM_TRANSPORT_FAILURE_REASON),
                utf8(CONNECTION_TERMINATION_DETAILS),
                utf8(ISTIO_POLICY_STATUS),
                utf8(CLUSTER_KIND),
                Field::new(SERVICE_PORT, DataType::UInt16, true),
                utf8(SERVICE_HOST),
                Field::new(UPSTREAM_PORT, DataType::UInt16, true),
                Field::new(TLS_ORIGINATED, DataType::Boolean, false),
                utf8(SOURCE_IP),
                utf8(SOURCE_WORKLOAD),
                utf8(SOURCE_NAMESPACE),
                utf8(EXTRA),
            ]))
        })
        .clone()
}

/// Schema of the `ztunnel_conn` table: one row per connection ztunnel logged.
pub fn ztunnel_conn() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use ztunnel_col::*;
            Arc::new(Schema::new(vec![
                timestamp(TS),
                utf8(CLUSTER),
                utf8(NAMESPACE),
                utf8(POD),
                utf8(LEVEL),
                utf8(MESSAGE),
                utf8(SRC_ADDR),
                utf8(SRC_IP),
                utf8(SRC_WORKLOAD),
                utf8(SRC_NAMESPACE),
                utf8(SRC_IDENTITY),
                utf8(DST_ADDR),
                utf8(DST_IP),
                Field::new(DST_PORT, DataType::UInt16, true),
                utf8(DST_HBONE_ADDR),
                utf8(DST_SERVICE),
                utf8(DST_WORKLOAD),
                utf8(DST_NAMESPACE),
                utf8(DST_IDENTITY),
                utf8(DIRECTION),
                Field::new(BYTES_SENT, DataType::UInt64, true),
                Field::new(BYTES_RECV, DataType::UInt64, true),
                Field::new(DURATION_MS, DataType::Float64, true),
                utf8(ERROR),
            ]))
        })
        .clone()
}

/// Schema of the `findings` table: per commit, one row per (kind, host, source) with evidence
/// in it; `egresslens findings` adds the rows of one key up.
pub fn findings() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use finding_col::*;
            Arc::new(Schema::new(vec![
                timestamp(TS),
                timestamp(LAST_SEEN),
                Field::new(KIND, DataType::Utf8, false),
                Field::new(SEVERITY, DataType::Utf8, false),
                Field::new(HOST, DataType::Utf8, false),
                Field::new(SOURCE, DataType::Utf8, false),
                Field::new(COUNT, DataType::UInt64, false),
                Field::new(DETAIL, DataType::Utf8, false),
                Field::new(EVIDENCE, DataType::Utf8, false),
                Field::new(ORIGIN, DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Schema of the `probes` table.
pub fn probes() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use probe_col::*;
            Arc::new(Schema::new(vec![
                timestamp(TS),
                Field::new(HOST, DataType::Utf8, false),
                Field::new(SOURCE, DataType::Utf8, false),
                Field::new(VERDICT, DataType::Utf8, false),
                Field::new(STATUS, DataType::UInt16, true),
                utf8(SERVER),
                Field::new(UPSTREAM_SERVICE_TIME_MS, DataType::Float64, true),
                utf8(ENVOY_HEADERS),
                Field::new(LATENCY_MS, DataType::Float64, true),
                utf8(ERROR),
            ]))
        })
        .clone()
}

/// Schema of the `mesh_hosts` table.
pub fn mesh_hosts() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use mesh_col::*;
            Arc::new(Schema::new(vec![
                timestamp(TS),
                Field::new(HOST, DataType::Utf8, false),
                Field::new(NAMESPACE, DataType::Utf8, false),
                Field::new(SERVICE_ENTRY, DataType::Utf8, false),
                utf8(WAYPOINT),
                Field::new(WAYPOINT_READY_PODS, DataType::UInt32, true),
                Field::new(WAYPOINT_PODS, DataType::UInt32, true),
                Field::new(TLS_ORIGINATION, DataType::Boolean, false),
                Field::new(PORTS, DataType::Utf8, false),
                Field::new(PROBLEMS, DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Schema of the `rejects` table: one row per line that did not become a record.
pub fn rejects() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use reject_col::*;
            Arc::new(Schema::new(vec![
                timestamp(TS),
                Field::new(ORIGIN, DataType::Utf8, false),
                Field::new(LINE, DataType::UInt64, false),
                Field::new(REASON, DataType::Utf8, false),
                Field::new(RAW_LEN, DataType::UInt64, false),
                Field::new(RAW, DataType::Binary, false),
            ]))
        })
        .clone()
}
