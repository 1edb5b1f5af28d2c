//! egresslens: egress observability for Istio ambient mode.
//!
//! Layout, in the order data flows:
//! - [`parse`]: bytes of one log line to an [`parse::Entry`] or a [`parse::RejectReason`]
//! - [`schema`]: Arrow schemas and column names, the one source of truth
//! - [`batch`]: entries and rejects to Arrow `RecordBatch`es
//! - [`stats`]: per-external-host egress statistics with time windows

pub mod batch;
pub mod parse;
pub mod schema;
pub mod stats;
