//! egresslens: egress observability for Istio ambient mode.
//!
//! Layout, in the order data flows:
//! - [`source`]: where lines come from (files, gzip, stdin, memory, Kubernetes pods) and how
//!   they are split
//! - [`workloads`]: pod IP → workload, for the source columns
//! - [`netrange`]: inside the cluster or external, by address
//! - [`parse`]: bytes of one log line to an [`parse::Entry`] or a [`parse::RejectReason`]
//! - [`redact`]: `--redact`: query strings, user agents, forwarded-for addresses taken out
//! - [`schema`]: Arrow schemas and column names, the one source of truth
//! - [`batch`]: entries and rejects to Arrow `RecordBatch`es
//! - [`findings`]: bypass, unregistered and blocked egress, failing TLS origination, from the
//!   evidence in records and ztunnel connections
//! - [`stats`]: per-external-host egress statistics with time windows
//! - [`traffic`]: realistic waypoint traffic with an exact ground truth, for the demo and tests
//! - [`report`]: stats reports as table, CSV or JSON
//! - [`collect`]: inputs into the store, resumed from its checkpoint
//! - [`store`]: the Parquet store, its atomic commits and the checkpoint inside them
//! - [`query`]: DataFusion SQL over the store, canned queries
//! - [`ingest`]: one-shot runs that wire sources, parsing and a sink together
//! - [`probe`]: whether a response came through a mesh proxy or straight from the origin
//! - [`mesh`]: the mesh's egress configuration (ServiceEntries, DestinationRules, waypoints)
//!   and each registered host's posture
//! - [`rounds`]: what a Kubernetes collector does on a schedule: mesh snapshots and probes
//! - [`verify`]: the walkthrough's checks for one host, from registration to TLS origination
//! - [`export`]: OTLP metrics and traces to the organisation's OpenTelemetry pipeline
//! - [`live`]: the collector's live view (windowed stats, recent records, source progress)
//! - [`filter`]: the filter language of `top` and of the status API's tail
//! - [`serve`]: the collector's read-only status API over the live view
//! - [`tui`]: `egresslens top`, the terminal view over a collector or a file
//! - [`demo`]: the pipeline on a simulated mesh with incidents, for `egresslens demo`

pub mod batch;
pub mod collect;
pub mod demo;
pub mod export;
pub mod filter;
pub mod findings;
pub mod ingest;
pub mod live;
pub mod mesh;
pub mod netrange;
pub mod parse;
pub mod probe;
pub mod query;
pub mod redact;
pub mod report;
pub mod rounds;
pub mod schema;
pub mod serve;
pub mod source;
pub mod stats;
pub mod store;
pub mod traffic;
pub mod tui;
pub mod verify;
pub mod workloads;
