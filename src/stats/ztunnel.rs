//! ztunnel's outbound connections summarised per destination (inbound ones are the far end of
//! a mesh connection already counted at its source): how many, how many went over HBONE (to a
//! waypoint or a mesh workload) and how many went direct (no `dst.hbone_addr`: passed through
//! unmodified, which for an external address means it skipped every waypoint), bytes, errors
//! and the top sources. Bounded like the host table: destinations past the limit are counted
//! under [`OVERFLOW_HOST`].

use std::collections::HashMap;

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};

use super::topk::TopK;
use super::{OVERFLOW_HOST, TopEntry, top_list};
use crate::netrange::InternalRanges;
use crate::parse::ztunnel::Connection;

#[derive(Debug, Clone)]
struct Destination {
    connections: u64,
    hbone: u64,
    /// Direct to an external address: around every waypoint.
    bypass: u64,
    bytes_sent: u64,
    bytes_recv: u64,
    errors: u64,
    sources: TopK,
}

/// Per-destination ztunnel connection counts of a run.
#[derive(Debug, Clone)]
pub struct ZtunnelStats {
    internal: InternalRanges,
    max_destinations: usize,
    top_k_capacity: usize,
    index: HashMap<Box<str>, usize, RandomState>,
    names: Vec<Box<str>>,
    destinations: Vec<Destination>,
    /// Connections counted under [`OVERFLOW_HOST`] because the table was full.
    pub overflowed: u64,
}

/// The name a connection's destination is summarised under: the service ztunnel resolved it
/// to, else the address the workload asked for (`dst.hbone_addr` when tunnelled, else
/// `dst.addr`).
pub(crate) fn destination_name<'c>(conn: &'c Connection<'_>) -> &'c str {
    conn.dst_service
        .as_deref()
        .or(conn.dst_hbone_addr.as_deref())
        .or(conn.dst_addr.as_deref())
        .unwrap_or("-")
}

impl ZtunnelStats {
    pub fn new(max_destinations: usize, top_k_capacity: usize, internal: InternalRanges) -> Self {
        ZtunnelStats {
            internal,
            max_destinations,
            top_k_capacity,
            index: HashMap::default(),
            names: Vec::new(),
            destinations: Vec::new(),
            overflowed: 0,
        }
    }

    fn id(&mut self, name: &str) -> usize {
        if let Some(id) = self.index.get(name) {
            return *id;
        }
        let name =
            if self.destinations.len() >= self.max_destinations { OVERFLOW_HOST } else { name };
        if let Some(id) = self.index.get(name) {
            return *id;
        }
        let id = self.destinations.len();
        self.index.insert(name.into(), id);
        self.names.push(name.into());
        self.destinations.push(Destination {
            connections: 0,
            hbone: 0,
            bypass: 0,
            bytes_sent: 0,
            bytes_recv: 0,
            errors: 0,
            sources: TopK::new(self.top_k_capacity),
        });
        id
    }

    /// Counts one outbound connection. A `connection opened` line (written when ztunnel logs
    /// at debug level) is not counted: its `connection complete` line will be.
    pub fn record(&mut self, conn: &Connection<'_>) {
        if !conn.is_outbound_complete() {
            return;
        }
        let id = self.id(destination_name(conn));
        if self.names[id].as_ref() == OVERFLOW_HOST {
            self.overflowed += 1;
        }
        let bypass = conn.bypasses(&self.internal);
        let dest = &mut self.destinations[id];
        dest.connections += 1;
        dest.hbone += u64::from(conn.dst_hbone_addr.is_some());
        dest.bypass += u64::from(bypass);
        dest.bytes_sent += conn.bytes_sent.unwrap_or(0);
        dest.bytes_recv += conn.bytes_recv.unwrap_or(0);
        dest.errors += u64::from(conn.error.is_some());
        dest.sources.add(&conn.source(), 1);
    }

    pub fn merge(&mut self, other: &ZtunnelStats) {
        self.overflowed += other.overflowed;
        for (name, theirs) in other.names.iter().zip(&other.destinations) {
            let id = self.id(name);
            if self.names[id].as_ref() == OVERFLOW_HOST && name.as_ref() != OVERFLOW_HOST {
                // Full here though not there: these go under the overflow name now.
                self.overflowed += theirs.connections;
            }
            let ours = &mut self.destinations[id];
            ours.connections += theirs.connections;
            ours.hbone += theirs.hbone;
            ours.bypass += theirs.bypass;
            ours.bytes_sent += theirs.bytes_sent;
            ours.bytes_recv += theirs.bytes_recv;
            ours.errors += theirs.errors;
            ours.sources.merge(&theirs.sources);
        }
    }

    /// Every destination, most connections first (ties by name).
    pub fn report(&self) -> Vec<ZtunnelDestinationReport> {
        let mut report: Vec<ZtunnelDestinationReport> = self
            .names
            .iter()
            .zip(&self.destinations)
            .map(|(name, d)| ZtunnelDestinationReport {
                destination: name.to_string(),
                connections: d.connections,
                hbone: d.hbone,
                direct: d.connections - d.hbone,
                bypass: d.bypass,
                bytes_sent: d.bytes_sent,
                bytes_recv: d.bytes_recv,
                errors: d.errors,
                top_sources: top_list(&d.sources),
            })
            .collect();
        report.sort_by(|a, b| {
            b.connections.cmp(&a.connections).then_with(|| a.destination.cmp(&b.destination))
        });
        report
    }
}

/// One destination in `stats -o json` (`ztunnel_destinations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZtunnelDestinationReport {
    /// `dst.service`, else `dst.hbone_addr`, else `dst.addr`.
    pub destination: String,
    pub connections: u64,
    /// Tunnelled over HBONE (`dst.hbone_addr` set).
    pub hbone: u64,
    /// Not tunnelled: passed through as is.
    pub direct: u64,
    /// Direct to an address outside the cluster's ranges: around every waypoint.
    pub bypass: u64,
    pub bytes_sent: u64,
    pub bytes_recv: u64,
    /// Connections that ended with an `error`.
    pub errors: u64,
    /// The top sources, as many as hosts list (`namespace/workload`, else IP).
    pub top_sources: Vec<TopEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::ztunnel::parse;

    #[test]
    fn destinations_split_hbone_from_direct_and_stay_bounded() {
        let lines = [
            "2025-08-18T09:36:30.123456Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.1.7:51234 src.workload=\"sleep-7b9f8d6c5-x2x7k\" src.namespace=\"default\" dst.addr=10.0.3.9:15008 dst.hbone_addr=240.240.0.3:80 dst.service=\"aliyun.com\" direction=\"outbound\" bytes_sent=120 bytes_recv=340 duration=\"27ms\"",
            "2025-08-18T09:36:31.123456Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.1.7:51240 src.workload=\"sleep-7b9f8d6c5-x2x7k\" src.namespace=\"default\" dst.addr=140.205.135.3:443 direction=\"outbound\" bytes_sent=517 bytes_recv=4000 duration=\"90ms\"",
            "2025-08-18T09:36:32.123456Z\terror\taccess\tconnection complete\tsrc.addr=10.0.1.8:40000 dst.addr=140.205.135.3:443 direction=\"outbound\" bytes_sent=0 bytes_recv=0 duration=\"3ms\" error=\"connection refused\"",
            "2025-08-18T09:36:33.123456Z\tdebug\taccess\tconnection opened\tsrc.addr=10.0.1.8:40001 dst.addr=140.205.135.3:443 direction=\"outbound\"",
            "2025-08-18T09:36:34.123456Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.1.7:51234 dst.addr=10.0.3.9:9080 dst.hbone_addr=10.0.3.9:9080 dst.service=\"reviews\" direction=\"inbound\" bytes_sent=1 bytes_recv=1",
        ];
        let mut stats = ZtunnelStats::new(2, 8, InternalRanges::default());
        for line in lines {
            stats.record(&parse(line).unwrap());
        }
        let mut other = ZtunnelStats::new(2, 8, InternalRanges::default());
        let third = lines[0].replace("aliyun.com", "api.github.com");
        other.record(&parse(&third).unwrap());
        stats.merge(&other);
        let report = stats.report();
        let rows: Vec<_> = report
            .iter()
            .map(|d| (d.destination.as_str(), d.connections, d.hbone, d.bypass, d.errors))
            .collect();
        assert_eq!(
            rows,
            [("140.205.135.3:443", 2, 0, 2, 1), ("_other", 1, 1, 0, 0), ("aliyun.com", 1, 1, 0, 0)]
        );
        assert_eq!(stats.overflowed, 1);
        let sources: Vec<_> = report[0].top_sources.iter().map(|t| t.value.as_str()).collect();
        assert_eq!(sources, ["10.0.1.8", "default/sleep-7b9f8d6c5-x2x7k"]);
        assert_eq!((report[0].bytes_sent, report[0].bytes_recv), (517, 4000));
    }
}
