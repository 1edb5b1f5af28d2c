//! A [`StatsReport`] as text for people (table), spreadsheets (CSV) and programs (JSON).
//! Only formatting lives here; what the numbers mean is decided in `stats`.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::findings::{FindingKind, FindingReport};
use crate::stats::ztunnel::ZtunnelDestinationReport;
use crate::stats::{HostReport, STATUS_CLASS_NAMES, StatsReport};

/// Output format of `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// Orders of the host list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Requests,
    Host,
    Errors,
    ErrorRate,
    Bytes,
    P50,
    P99,
    Tls,
}

impl SortKey {
    pub const NAMES: [&'static str; 8] =
        ["requests", "host", "errors", "error_rate", "bytes", "p50", "p99", "tls"];

    pub fn parse(text: &str) -> Option<SortKey> {
        Some(match text {
            "requests" => SortKey::Requests,
            "host" => SortKey::Host,
            "errors" => SortKey::Errors,
            "error_rate" => SortKey::ErrorRate,
            "bytes" => SortKey::Bytes,
            "p50" => SortKey::P50,
            "p99" => SortKey::P99,
            "tls" => SortKey::Tls,
            _ => return None,
        })
    }

    /// The name [`SortKey::parse`] takes.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Requests => "requests",
            SortKey::Host => "host",
            SortKey::Errors => "errors",
            SortKey::ErrorRate => "error_rate",
            SortKey::Bytes => "bytes",
            SortKey::P50 => "p50",
            SortKey::P99 => "p99",
            SortKey::Tls => "tls",
        }
    }
}

/// Sorts hosts: biggest first for numbers, A–Z for names; ties by host name.
pub fn sort_hosts(hosts: &mut [HostReport], key: SortKey) {
    hosts.sort_by(|a, b| host_order(a, b, key));
}

/// The order [`sort_hosts`] puts two hosts in.
pub fn host_order(a: &HostReport, b: &HostReport, key: SortKey) -> std::cmp::Ordering {
    let p = |h: &HostReport, f: fn(&crate::stats::Percentiles) -> f64| {
        h.duration_ms.as_ref().map_or(f64::NEG_INFINITY, f)
    };
    let order = match key {
        SortKey::Requests => b.requests.cmp(&a.requests),
        SortKey::Host => a.host.cmp(&b.host),
        SortKey::Errors => b.errors.cmp(&a.errors),
        SortKey::ErrorRate => b.error_rate.total_cmp(&a.error_rate),
        SortKey::Bytes => (b.bytes_sent + b.bytes_received).cmp(&(a.bytes_sent + a.bytes_received)),
        SortKey::P50 => p(b, |x| x.p50).total_cmp(&p(a, |x| x.p50)),
        SortKey::P99 => p(b, |x| x.p99).total_cmp(&p(a, |x| x.p99)),
        SortKey::Tls => b.tls_originated.cmp(&a.tls_originated),
    };
    order.then_with(|| a.host.cmp(&b.host))
}

/// Writes the report; `top` limits the host rows of table and CSV output.
pub fn write_report(
    out: &mut impl Write,
    report: &StatsReport,
    format: OutputFormat,
    top: Option<usize>,
) -> io::Result<()> {
    let hosts = &report.hosts[..top.unwrap_or(usize::MAX).min(report.hosts.len())];
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)
        }
        OutputFormat::Csv => write_csv(out, hosts),
        OutputFormat::Table => write_table(out, report, hosts),
    }
}

/// `1.2 MB`-style sizes (decimal units, like `ls -h --si`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn millis(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.1}"),
        Some(ms) => format!("{ms:.0}"),
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "-".to_owned() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let keep: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{keep}…")
}

fn write_table(out: &mut impl Write, report: &StatsReport, hosts: &[HostReport]) -> io::Result<()> {
    let rejected = report.lines - report.records - report.ztunnel_connections;
    let ztunnel = match report.ztunnel_connections {
        0 => String::new(),
        n => format!("{n} ztunnel connections, "),
    };
    writeln!(
        out,
        "{} lines: {} records, {ztunnel}{} rejected ({} expected proxy noise) · window {} · {} hosts",
        report.lines,
        report.records,
        rejected,
        report.expected_noise,
        report.window,
        report.hosts.len()
    )?;
    if !report.rejects.is_empty() {
        let list: Vec<String> = report.rejects.iter().map(|(r, n)| format!("{r} {n}")).collect();
        writeln!(out, "rejects: {}", list.join(", "))?;
    }
    if report.overflowed_records > 0 {
        writeln!(
            out,
            "host table full: {} records counted under _other",
            report.overflowed_records
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<30} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9} {:>9} {:>7} {:>7} {:>6}  TOP FLAG",
        "HOST",
        "REQS",
        "ERR%",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "none",
        "SENT",
        "RECV",
        "P50ms",
        "P99ms",
        "TLS%"
    )?;
    for h in hosts {
        let flag = h.top_flag().map_or_else(|| "-".to_owned(), |(f, n)| format!("{f} {n}"));
        writeln!(
            out,
            "{:<30} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9} {:>9} {:>7} {:>7} {:>6}  {}",
            shorten(&h.host, 30),
            h.requests,
            percent(h.errors, h.requests),
            h.status["2xx"],
            h.status["3xx"],
            h.status["4xx"],
            h.status["5xx"],
            h.status["0"],
            human_bytes(h.bytes_sent),
            human_bytes(h.bytes_received),
            millis(h.duration_ms.map(|p| p.p50)),
            millis(h.duration_ms.map(|p| p.p99)),
            percent(h.tls_originated, h.requests),
            flag
        )?;
    }
    if hosts.len() < report.hosts.len() {
        writeln!(out, "… {} more hosts (--top to show more)", report.hosts.len() - hosts.len())?;
    }
    write_findings(out, &report.findings)?;
    write_ztunnel(out, &report.ztunnel_destinations)?;
    writeln!(out)?;
    writeln!(
        out,
        "ERR%  5xx, or no response where one was due   none  status 0: no response, or TCP"
    )?;
    writeln!(out, "SENT/RECV  bytes the waypoint sent to / received from the calling pods")?;
    writeln!(
        out,
        "TLS%  requests to service port 80 sent upstream to 443: TLS originated at the waypoint"
    )
}

/// Most findings a table shows (JSON has them all, with their evidence lines).
const FINDING_ROWS: usize = 20;

fn write_findings(out: &mut impl Write, findings: &[FindingReport]) -> io::Result<()> {
    if findings.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let grouped = by_kind_and_host(findings);
    write_finding_rows(out, &grouped[..grouped.len().min(FINDING_ROWS)], false)?;
    if grouped.len() > FINDING_ROWS {
        writeln!(out, "… {} more findings (-o json has all)", grouped.len() - FINDING_ROWS)?;
    }
    Ok(())
}

/// Every finding, each with what it shows and its first evidence line (`egresslens findings`).
pub fn write_findings_table(out: &mut impl Write, findings: &[FindingReport]) -> io::Result<()> {
    if findings.is_empty() {
        return writeln!(out, "no findings");
    }
    write_finding_rows(out, &by_kind_and_host(findings), true)
}

/// The findings of one kind and host, their sources taken together: tables show one row for
/// a host that 40 pods call (JSON keeps one object per source).
struct HostFindings<'a> {
    /// The source with the most evidence.
    top: &'a FindingReport,
    sources: usize,
    count: u64,
    last_seen: &'a str,
}

/// `findings` (in report order) grouped by kind and host, most severe and most frequent first.
fn by_kind_and_host(findings: &[FindingReport]) -> Vec<HostFindings<'_>> {
    let mut groups: Vec<HostFindings<'_>> = Vec::new();
    let mut index: HashMap<(FindingKind, &str), usize> = HashMap::new();
    for f in findings {
        let at = *index.entry((f.kind, f.host.as_str())).or_insert_with(|| {
            groups.push(HostFindings { top: f, sources: 0, count: 0, last_seen: &f.last_seen });
            groups.len() - 1
        });
        let group = &mut groups[at];
        group.sources += 1;
        group.count += f.count;
        if f.count > group.top.count {
            group.top = f;
        }
        group.last_seen = group.last_seen.max(f.last_seen.as_str());
    }
    groups.sort_by(|a, b| {
        (a.top.severity, std::cmp::Reverse(a.count), a.top.kind, &a.top.host).cmp(&(
            b.top.severity,
            std::cmp::Reverse(b.count),
            b.top.kind,
            &b.top.host,
        ))
    });
    groups
}

/// Characters of an evidence line a table shows.
const EVIDENCE_CHARS: usize = 160;

fn write_finding_rows(
    out: &mut impl Write,
    groups: &[HostFindings<'_>],
    evidence: bool,
) -> io::Result<()> {
    writeln!(
        out,
        "{:<9} {:<24} {:<30} {:<28} {:>7}  LAST SEEN",
        "FINDING", "KIND", "HOST", "SOURCE (most evidence)", "COUNT"
    )?;
    for g in groups {
        let f = g.top;
        let source = match g.sources {
            1 => shorten(&f.source, 28),
            n => {
                let more = format!(" +{}", n - 1);
                format!("{}{more}", shorten(&f.source, 28 - more.len()))
            }
        };
        writeln!(
            out,
            "{:<9} {:<24} {:<30} {:<28} {:>7}  {}",
            f.severity.as_str(),
            f.kind.as_str(),
            shorten(&f.host, 30),
            source,
            g.count,
            g.last_seen
        )?;
        if evidence {
            writeln!(out, "          {}", f.detail)?;
            let line = f.evidence.trim_end();
            writeln!(out, "          {}: {}", f.origin, shorten(line, EVIDENCE_CHARS))?;
        }
    }
    Ok(())
}

/// Most ztunnel destinations a table shows (JSON has them all).
const ZTUNNEL_ROWS: usize = 20;

fn write_ztunnel(
    out: &mut impl Write,
    destinations: &[ZtunnelDestinationReport],
) -> io::Result<()> {
    if destinations.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<40} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6}  TOP SOURCE",
        "ZTUNNEL DESTINATION (outbound)",
        "CONNS",
        "HBONE",
        "DIRECT",
        "BYPASS",
        "SENT",
        "RECV",
        "ERRORS"
    )?;
    for d in destinations.iter().take(ZTUNNEL_ROWS) {
        let source = d.top_sources.first().map_or("-", |t| t.value.as_str());
        writeln!(
            out,
            "{:<40} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6}  {}",
            shorten(&d.destination, 40),
            d.connections,
            d.hbone,
            d.direct,
            d.bypass,
            human_bytes(d.bytes_sent),
            human_bytes(d.bytes_recv),
            d.errors,
            source
        )?;
    }
    if destinations.len() > ZTUNNEL_ROWS {
        writeln!(
            out,
            "… {} more destinations (-o json has all)",
            destinations.len() - ZTUNNEL_ROWS
        )?;
    }
    writeln!(out, "DIRECT  not tunnelled over HBONE")?;
    writeln!(
        out,
        "BYPASS  direct to an address outside the cluster's ranges: around every waypoint"
    )
}

fn write_csv(out: &mut impl Write, hosts: &[HostReport]) -> io::Result<()> {
    let status_cols: Vec<String> =
        STATUS_CLASS_NAMES.iter().map(|c| format!("status_{c}")).collect();
    writeln!(
        out,
        "host,requests,errors,error_rate,{},bytes_sent,bytes_received,duration_p50_ms,duration_p90_ms,duration_p99_ms,duration_max_ms,tls_originated,top_flag",
        status_cols.join(",")
    )?;
    for h in hosts {
        let status: Vec<String> =
            STATUS_CLASS_NAMES.iter().map(|c| h.status[*c].to_string()).collect();
        let p = |f: fn(&crate::stats::Percentiles) -> f64| {
            h.duration_ms.as_ref().map_or_else(String::new, |x| f(x).to_string())
        };
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&h.host),
            h.requests,
            h.errors,
            h.error_rate,
            status.join(","),
            h.bytes_sent,
            h.bytes_received,
            p(|x| x.p50),
            p(|x| x.p90),
            p(|x| x.p99),
            p(|x| x.max),
            h.tls_originated,
            csv_field(h.top_flag().map_or("", |(f, _)| f)),
        )?;
    }
    Ok(())
}

/// Quotes a CSV field when it holds a separator, quote or newline (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_ls_si() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234), "1.2 kB");
        assert_eq!(human_bytes(5_600_000_000), "5.6 GB");
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("aliyun.com"), "aliyun.com");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }

    #[test]
    fn every_sort_key_name_parses() {
        for name in SortKey::NAMES {
            assert!(SortKey::parse(name).is_some(), "{name}");
        }
        assert_eq!(SortKey::parse("latency"), None);
    }
}
