//! Recent-traffic windows by the log's own clock: rings of time slots, each slot holding
//! counters and a latency sketch per active host. 10-second slots serve the 1- and 5-minute
//! windows, 1-minute slots the hour, so an hour costs 94 cells per busy host, not 362. Slots
//! are sparse (only hosts seen in them) and are reused when the clock moves a ring past them.

use std::collections::HashMap;

use super::{Counters, LatencySketch, OVERFLOW_HOST, Observation, STATUS_CLASSES, status_class};
use foldhash::fast::RandomState;

/// Five minutes of 10-second slots, plus the partly covered slot at each end.
const FINE: RingShape = RingShape { slot_ns: 10_000_000_000, slots: 32 };
/// One hour of 1-minute slots, plus the partly covered slot at each end.
const COARSE: RingShape = RingShape { slot_ns: 60_000_000_000, slots: 62 };

#[derive(Debug, Clone, Copy)]
struct RingShape {
    slot_ns: i64,
    slots: usize,
}

/// A time window a report can cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Window {
    OneMinute,
    FiveMinutes,
    OneHour,
    /// Everything since the collector started.
    #[default]
    All,
}

impl Window {
    /// The window's length, `None` for [`Window::All`].
    pub fn seconds(self) -> Option<i64> {
        match self {
            Window::OneMinute => Some(60),
            Window::FiveMinutes => Some(300),
            Window::OneHour => Some(3600),
            Window::All => None,
        }
    }

    pub fn parse(text: &str) -> Option<Window> {
        Some(match text {
            "1m" => Window::OneMinute,
            "5m" => Window::FiveMinutes,
            "1h" => Window::OneHour,
            "all" => Window::All,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::OneMinute => "1m",
            Window::FiveMinutes => "5m",
            Window::OneHour => "1h",
            Window::All => "all",
        }
    }
}

/// What a window knows about one host.
#[derive(Debug, Clone, Default)]
pub struct WindowCell {
    pub counters: Counters,
    pub duration: LatencySketch,
    pub flags: CellFlags,
}

impl WindowCell {
    pub fn merge(&mut self, other: &WindowCell) {
        self.counters.merge(&other.counters);
        self.duration.merge(&other.duration);
        for &(flag, n) in &other.flags.0 {
            self.flags.add(flag, n);
        }
    }
}

/// What a slot knows about one host: [`WindowCell`] with 32-bit counts (a host's requests in
/// one slot), as slots hold most of the cells.
#[derive(Debug, Clone, Default)]
struct SlotCell {
    requests: u32,
    errors: u32,
    status: [u32; STATUS_CLASSES],
    tls_originated: u32,
    bytes_sent: u64,
    bytes_received: u64,
    duration: LatencySketch,
    flags: CellFlags,
}

impl SlotCell {
    fn add(&mut self, obs: &Observation, flags: Option<&str>) {
        let add = |n: &mut u32, yes: bool| *n = n.saturating_add(u32::from(yes));
        add(&mut self.requests, true);
        add(&mut self.errors, obs.error);
        add(&mut self.status[status_class(obs.response_code)], true);
        add(&mut self.tls_originated, obs.tls_originated);
        self.bytes_sent += obs.bytes_sent;
        self.bytes_received += obs.bytes_received;
        if let Some(ms) = obs.duration_ms {
            self.duration.add(ms);
        }
        if let Some(flags) = flags {
            self.flags.add_list(flags);
        }
    }

    fn merge(&mut self, other: &SlotCell) {
        let add = |n: &mut u32, m: u32| *n = n.saturating_add(m);
        add(&mut self.requests, other.requests);
        add(&mut self.errors, other.errors);
        for (a, b) in self.status.iter_mut().zip(other.status) {
            add(a, b);
        }
        add(&mut self.tls_originated, other.tls_originated);
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.duration.merge(&other.duration);
        for &(flag, n) in &other.flags.0 {
            self.flags.add(flag, n);
        }
    }

    /// Adds the slot's counts to a window's.
    fn add_to(&self, cell: &mut WindowCell) {
        let counters = Counters {
            requests: self.requests.into(),
            errors: self.errors.into(),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            status: self.status.map(u64::from),
            tls_originated: self.tls_originated.into(),
        };
        cell.counters.merge(&counters);
        cell.duration.merge(&self.duration);
        for &(flag, n) in &self.flags.0 {
            cell.flags.add(flag, n);
        }
    }
}

/// Kinds of response flag a window cell counts; more go under [`OVERFLOW_HOST`].
const CELL_FLAGS: usize = 8;

/// A window cell's response flags and their counts, each flag packed into a `u64` (Envoy's
/// are two to five letters; a longer one counts as [`OVERFLOW_HOST`]). Most cells have none,
/// and then no allocation.
#[derive(Debug, Clone, Default)]
pub struct CellFlags(Vec<(u64, u64)>);

impl CellFlags {
    /// Counts each flag of a comma-separated list.
    fn add_list(&mut self, flags: &str) {
        for flag in flags.split(',').filter(|f| !f.is_empty() && *f != "-") {
            self.add(pack(flag), 1);
        }
    }

    fn add(&mut self, flag: u64, n: u64) {
        if let Some(kept) = self.0.iter_mut().find(|(f, _)| *f == flag) {
            kept.1 += n;
        } else if self.0.len() < CELL_FLAGS {
            self.0.push((flag, n));
        } else {
            let other = pack(OVERFLOW_HOST);
            match self.0.iter_mut().find(|(f, _)| *f == other) {
                Some(kept) => kept.1 += n,
                None => self.0.push((other, n)),
            }
        }
    }

    /// The flags by name, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.0.iter().map(|&(flag, n)| (unpack(flag), n))
    }
}

/// Up to eight bytes of `flag` in a number; longer flags are all [`OVERFLOW_HOST`].
fn pack(flag: &str) -> u64 {
    let flag = if flag.len() > 8 { OVERFLOW_HOST } else { flag };
    let mut bytes = [0u8; 8];
    bytes[..flag.len()].copy_from_slice(flag.as_bytes());
    u64::from_le_bytes(bytes)
}

fn unpack(flag: u64) -> String {
    let bytes = flag.to_le_bytes();
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(8);
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

#[derive(Debug, Clone)]
struct Slot {
    index: i64,
    hosts: HashMap<u32, SlotCell, RandomState>,
}

/// One ring of slots; hosts are numbered by the caller.
#[derive(Debug, Clone)]
struct Ring {
    shape: RingShape,
    slots: Vec<Slot>,
}

impl Ring {
    fn new(shape: RingShape) -> Self {
        let empty = Slot { index: i64::MIN, hosts: HashMap::default() };
        Ring { shape, slots: vec![empty; shape.slots] }
    }

    /// The slot for `index`, emptied if it held an older one; `None` if `index` is older
    /// than what the slot holds (beyond the ring's horizon).
    fn slot(&mut self, index: i64) -> Option<&mut Slot> {
        let slot = &mut self.slots[index.rem_euclid(self.shape.slots as i64) as usize];
        if slot.index > index {
            return None;
        }
        if slot.index < index {
            slot.index = index;
            slot.hosts.clear();
        }
        Some(slot)
    }

    fn record(&mut self, host: u32, obs: &Observation, flags: Option<&str>) {
        // Older than the ring's horizon: counted since start, not in this window.
        let Some(slot) = self.slot(obs.ts_ns.div_euclid(self.shape.slot_ns)) else { return };
        slot.hosts.entry(host).or_default().add(obs, flags);
    }

    fn collect(&self, now_ns: i64, seconds: i64) -> HashMap<u32, WindowCell, RandomState> {
        let now = now_ns.div_euclid(self.shape.slot_ns);
        let oldest = (now_ns - seconds * 1_000_000_000).div_euclid(self.shape.slot_ns);
        let mut out: HashMap<u32, WindowCell, RandomState> = HashMap::default();
        for slot in self.slots.iter().filter(|s| (oldest..=now).contains(&s.index)) {
            for (host, cell) in &slot.hosts {
                cell.add_to(out.entry(*host).or_default());
            }
        }
        out
    }

    fn series(&self, host: u32, now_ns: i64, seconds: i64) -> Vec<u64> {
        let now = now_ns.div_euclid(self.shape.slot_ns);
        let oldest = (now_ns - seconds * 1_000_000_000).div_euclid(self.shape.slot_ns);
        (oldest.max(now - self.shape.slots as i64 + 1)..=now)
            .map(|index| {
                let slot = &self.slots[index.rem_euclid(self.shape.slots as i64) as usize];
                let cell = (slot.index == index).then(|| slot.hosts.get(&host)).flatten();
                cell.map_or(0, |c| c.requests.into())
            })
            .collect()
    }

    fn merge(&mut self, other: &Ring, remap: &[u32]) {
        for theirs in other.slots.iter().filter(|s| s.index != i64::MIN) {
            let Some(ours) = self.slot(theirs.index) else { continue };
            for (host, cell) in &theirs.hosts {
                let host = remap[*host as usize];
                ours.hosts.entry(host).or_default().merge(cell);
            }
        }
    }
}

/// The windows of one stats table.
#[derive(Debug, Clone)]
pub struct Windows {
    fine: Ring,
    coarse: Ring,
}

impl Default for Windows {
    fn default() -> Self {
        Windows { fine: Ring::new(FINE), coarse: Ring::new(COARSE) }
    }
}

impl Windows {
    /// Counts one record of `host`, with its response flags (comma-separated) if any.
    pub fn record(&mut self, host: u32, obs: &Observation, flags: Option<&str>) {
        self.fine.record(host, obs, flags);
        self.coarse.record(host, obs, flags);
    }

    /// Per-host totals over the slots overlapping `(now_ns - seconds, now_ns]`: the window's
    /// edges are rounded out to whole slots (10 s up to 5 minutes, 1 minute beyond), so it may
    /// cover up to one slot more than asked.
    pub fn collect(&self, now_ns: i64, seconds: i64) -> HashMap<u32, WindowCell, RandomState> {
        let fine_span = (FINE.slots as i64 - 1) * FINE.slot_ns / 1_000_000_000;
        let ring = if seconds < fine_span { &self.fine } else { &self.coarse };
        ring.collect(now_ns, seconds)
    }

    /// One host's requests per slot over `(now_ns - seconds, now_ns]`, oldest first, with the
    /// slot's length in seconds (the ring [`Windows::collect`] would use).
    pub fn series(&self, host: u32, now_ns: i64, seconds: i64) -> (i64, Vec<u64>) {
        let fine_span = (FINE.slots as i64 - 1) * FINE.slot_ns / 1_000_000_000;
        let ring = if seconds < fine_span { &self.fine } else { &self.coarse };
        (ring.shape.slot_ns / 1_000_000_000, ring.series(host, now_ns, seconds))
    }

    /// Adds another table's windows; `remap` turns the other side's host numbers into ours.
    pub fn merge(&mut self, other: &Windows, remap: &[u32]) {
        self.fine.merge(&other.fine, remap);
        self.coarse.merge(&other.coarse, remap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(ts_s: i64) -> Observation {
        Observation {
            ts_ns: ts_s * 1_000_000_000,
            response_code: Some(200),
            error: false,
            bytes_sent: 10,
            bytes_received: 1,
            tls_originated: false,
            duration_ms: Some(5.0),
        }
    }

    #[test]
    fn windows_count_only_recent_slots() {
        let mut w = Windows::default();
        let now = 10_000;
        for age in [0, 30, 59, 200, 1000, 3599, 3700] {
            w.record(0, &obs(now - age), None);
        }
        let count =
            |secs| w.collect(now * 1_000_000_000, secs).get(&0).map_or(0, |c| c.counters.requests);
        assert_eq!(count(60), 3);
        assert_eq!(count(300), 4);
        assert_eq!(count(3600), 6);
    }

    #[test]
    fn late_records_beyond_the_horizon_do_not_wipe_newer_slots() {
        let mut w = Windows::default();
        w.record(0, &obs(10_000), None);
        w.record(0, &obs(10_000 - 3600), None);
        assert_eq!(w.collect(10_000_000_000_000, 60)[&0].counters.requests, 1);
    }

    #[test]
    fn merge_remaps_hosts() {
        let mut a = Windows::default();
        let mut b = Windows::default();
        a.record(0, &obs(100), Some("UF,URX"));
        b.record(0, &obs(100), Some("UF"));
        b.record(1, &obs(100), None);
        a.merge(&b, &[1, 0]);
        let cells = a.collect(100_000_000_000, 60);
        assert_eq!((cells[&0].counters.requests, cells[&1].counters.requests), (2, 1));
        let flags = |host| cells[&host].flags.iter().collect::<Vec<_>>();
        assert_eq!(flags(0), [("UF".to_owned(), 1), ("URX".to_owned(), 1)]);
        assert_eq!(flags(1), [("UF".to_owned(), 1)]);
    }

    #[test]
    fn a_cell_counts_eight_kinds_of_flag_and_the_rest_together() {
        let mut w = Windows::default();
        let kinds = ["UH", "UF", "UO", "NR", "URX", "NC", "DT", "DC", "LH", "UT"];
        w.record(0, &obs(100), Some(&kinds.join(",")));
        w.record(0, &obs(100), Some("UMSDR,SomeVeryLongFlag"));
        let cells = w.collect(100_000_000_000, 60);
        let flags: std::collections::BTreeMap<String, u64> = cells[&0].flags.iter().collect();
        assert_eq!(flags.len(), 9, "{flags:?}");
        assert_eq!(flags[OVERFLOW_HOST], 4, "LH, UT, UMSDR and the long one");
        assert_eq!(flags["UF"], 1);
    }
}
