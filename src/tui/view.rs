//! Drawing `top`: a title bar, the view tabs, the current view, and a bottom line for the
//! prompt or the keys. The hosts view keeps the findings beneath it, so an 80×24 terminal
//! shows both; wider terminals get more columns. Only visible rows are built, so 10 000 hosts
//! cost no more to draw than 20.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};

use super::app::{App, Prompt, Tab};
use crate::findings::{FindingReport, Severity};
use crate::report::{SortKey, human_bytes};
use crate::stats::HostReport;

/// Styles, or none at all under `NO_COLOR`.
struct Theme {
    color: bool,
}

impl Theme {
    fn style(&self, style: Style) -> Style {
        if self.color { style } else { Style::default() }
    }

    fn fg(&self, color: Color) -> Style {
        self.style(Style::default().fg(color))
    }

    fn bar(&self) -> Style {
        // Reversed video reads as a bar with or without colour.
        Style::default().add_modifier(Modifier::REVERSED)
    }

    fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    fn header(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    fn severity(&self, severity: Severity) -> Style {
        self.fg(match severity {
            Severity::Critical => Color::Red,
            Severity::Warning => Color::Yellow,
        })
    }
}

pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let theme = Theme { color: !app.no_color };
    let [title, tabs, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(title_line(app)).style(theme.bar()), title);
    frame.render_widget(Paragraph::new(tab_line(app, &theme)), tabs);
    match app.tab {
        Tab::Hosts if app.detail => draw_detail(frame, app, &theme, body),
        Tab::Hosts => draw_hosts_and_findings(frame, app, &theme, body),
        Tab::Findings => draw_findings(frame, app, &theme, body),
        Tab::Tail => draw_tail(frame, app, &theme, body),
        Tab::Sql => draw_sql(frame, app, &theme, body),
    }
    frame.render_widget(Paragraph::new(bottom_line(app, &theme)), bottom);
    if app.help {
        draw_help(frame, &theme);
    }
}

/// The title: what matters most first, as a narrow terminal cuts the end.
fn title_line(app: &App) -> String {
    let mut parts = vec!["egresslens top".to_owned(), app.source.clone()];
    if let Some(problem) = &app.problem {
        parts.push(problem.clone());
    }
    if !app.filter.is_empty() {
        let mut filter = format!("filter: {}", app.filter.text());
        if !app.filter.exact_for_hosts() && app.tab != Tab::Tail {
            filter.push_str(" (method: tail only)");
        }
        parts.push(filter);
    }
    parts.push(format!("window {}", app.window.as_str()));
    match &app.snapshot {
        Some(snapshot) => {
            // A collector lists the first thousand hosts of the filter and sort asked for.
            let total = snapshot.hosts_total.max(snapshot.stats.hosts.len());
            let shown = app.hosts().len();
            parts.push(if shown == total {
                format!("{total} hosts")
            } else {
                format!("{shown}/{total} hosts")
            });
            parts.push(format!("{} records", snapshot.stats.records));
            if !snapshot.ready {
                parts.push("not ready".into());
            }
        }
        None => parts.push("waiting for data".into()),
    }
    format!(" {}", parts.join(" · "))
}

fn tab_line(app: &App, theme: &Theme) -> Line<'static> {
    let mut spans = Vec::new();
    for tab in Tab::ALL {
        let style = if tab == app.tab { theme.selected() } else { Style::default() };
        spans.push(Span::styled(format!(" {} ", tab.title()), style));
        spans.push(Span::raw(" "));
    }
    let sort =
        format!(" sort: {}{}", sort_name(app.sort), if app.reversed { " (reversed)" } else { "" });
    spans.push(Span::raw(sort));
    Line::from(spans)
}

fn sort_name(key: SortKey) -> &'static str {
    match key {
        SortKey::Requests => "requests",
        SortKey::Host => "host",
        SortKey::Errors => "errors",
        SortKey::ErrorRate => "error %",
        SortKey::Bytes => "bytes",
        SortKey::P50 => "p50",
        SortKey::P99 => "p99",
        SortKey::Tls => "TLS originated",
    }
}

fn bottom_line(app: &App, theme: &Theme) -> Line<'static> {
    match &app.prompt {
        Some(Prompt::Filter(text)) => {
            let mut spans = vec![Span::raw(format!("/{text}▏"))];
            if let Some(error) = &app.filter_error {
                spans.push(Span::styled(format!("  {error}"), theme.fg(Color::Red)));
            }
            Line::from(spans)
        }
        Some(Prompt::Sql { text, .. }) => Line::from(format!(":{text}▏")),
        None => {
            let keys = match app.tab {
                Tab::Tail => {
                    "space pause  w wrap  ↑↓ scroll  / filter  : SQL  Tab view  ? help  q quit"
                }
                _ if app.detail => "Esc back  / filter  : SQL  ? help  q quit",
                _ => {
                    "/ filter  : SQL  s/S sort  Enter host  1 5 h a window  Tab view  ? help  q quit"
                }
            };
            Line::from(Span::styled(keys.to_owned(), theme.fg(Color::DarkGray)))
        }
    }
}

/// The first row to draw so that `selected` is in a window of `visible` rows.
fn first_row(selected: usize, visible: usize) -> usize {
    (selected + 1).saturating_sub(visible.max(1))
}

fn ms(value: f64) -> String {
    if value < 10.0 { format!("{value:.1}") } else { format!("{value:.0}") }
}

fn percent(part: f64) -> String {
    format!("{:.1}", part * 100.0)
}

fn draw_hosts_and_findings(frame: &mut Frame<'_>, app: &App, theme: &Theme, area: Rect) {
    let findings = app.findings_shown();
    if findings.is_empty() || area.height < 12 {
        draw_hosts(frame, app, theme, area);
        return;
    }
    // The findings take a third at most, and no more than they need.
    let wanted = findings.len() as u16 + 3;
    let room = (area.height / 3).max(5).min(wanted);
    let [hosts, below] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(room)]).areas(area);
    draw_hosts(frame, app, theme, hosts);
    draw_finding_groups(frame, &findings, theme, below);
}

/// The findings beneath the hosts: one row per kind and host, its sources taken together.
fn draw_finding_groups(
    frame: &mut Frame<'_>,
    findings: &[&FindingReport],
    theme: &Theme,
    area: Rect,
) {
    // (severity, kind, host) → sources, count, last seen; in the list's order (worst first).
    let mut groups: Vec<(&FindingReport, usize, u64, &str)> = Vec::new();
    for f in findings {
        match groups.iter_mut().find(|(g, ..)| g.kind == f.kind && g.host == f.host) {
            Some((_, sources, count, last)) => {
                *sources += 1;
                *count += f.count;
                *last = (*last).max(f.last_seen.as_str());
            }
            None => groups.push((f, 1, f.count, &f.last_seen)),
        }
    }
    let visible = area.height.saturating_sub(3) as usize;
    let rows = groups.iter().take(visible).map(|(f, sources, count, last)| {
        Row::new([
            Cell::from(severity_name(f.severity)).style(theme.severity(f.severity)),
            Cell::from(kind_name(f)),
            Cell::from(f.host.clone()),
            Cell::from(sources.to_string()),
            Cell::from(count.to_string()),
            Cell::from(short_time(last)),
        ])
    });
    let widths = [
        Constraint::Length(4),
        Constraint::Length(23),
        Constraint::Min(14),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(12),
    ];
    let title = format!(
        " Findings: {} kinds × hosts, {} rows (Tab for each) ",
        groups.len(),
        findings.len()
    );
    let table = Table::new(rows, widths)
        .header(Row::new(["SEV", "KIND", "HOST", "SOURCES", "COUNT", "LAST"]).style(theme.header()))
        .block(Block::default().borders(Borders::ALL).title(title));
    frame.render_widget(table, area);
}

fn draw_hosts(frame: &mut Frame<'_>, app: &App, theme: &Theme, area: Rect) {
    let wide = area.width >= 110;
    let flagged = |host: &str| {
        let snapshot = app.snapshot.as_ref()?;
        snapshot.stats.findings.iter().filter(|f| f.host == host).map(|f| f.severity).min()
    };
    let mut header = vec!["HOST", "REQ", "REQ/S", "ERR%", "P50ms", "P99ms"];
    let mut widths = vec![
        Constraint::Min(16),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    if wide {
        header.extend(["IN", "OUT", "TLS%"]);
        widths.extend([Constraint::Length(9), Constraint::Length(9), Constraint::Length(5)]);
    }
    header.extend(["FLAG", "!"]);
    widths.extend([Constraint::Length(7), Constraint::Length(1)]);
    let visible = area.height.saturating_sub(3) as usize;
    let first = first_row(app.selected, visible);
    let hosts = app.hosts();
    let rows = hosts.iter().enumerate().skip(first).take(visible).map(|(i, h)| {
        let mut cells = host_cells(h, wide);
        let marker = match flagged(&h.host) {
            Some(severity) => Cell::from("!").style(theme.severity(severity)),
            None => Cell::from(" "),
        };
        cells.push(marker);
        let row = Row::new(cells);
        let row = if h.error_rate >= 0.05 { row.style(theme.fg(Color::Red)) } else { row };
        if i == app.selected { row.style(theme.selected()) } else { row }
    });
    let title = match hosts.len() {
        0 if app.snapshot.is_some() && !app.filter.is_empty() => {
            " Hosts: none match the filter ".to_owned()
        }
        0 => " Hosts: no egress seen yet ".to_owned(),
        n => format!(" Hosts {}/{n} ", app.selected + 1),
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.header()))
        .block(Block::default().borders(Borders::ALL).title(title));
    frame.render_widget(table, area);
}

fn host_cells(h: &HostReport, wide: bool) -> Vec<Cell<'static>> {
    let (p50, p99) = match &h.duration_ms {
        Some(p) => (ms(p.p50), ms(p.p99)),
        None => ("-".into(), "-".into()),
    };
    let rps = h.requests_per_second.map_or("-".into(), |r| format!("{r:.1}"));
    let mut cells = vec![
        Cell::from(h.host.clone()),
        Cell::from(h.requests.to_string()),
        Cell::from(rps),
        Cell::from(percent(h.error_rate)),
        Cell::from(p50),
        Cell::from(p99),
    ];
    if wide {
        let tls = if h.requests == 0 { 0.0 } else { h.tls_originated as f64 / h.requests as f64 };
        cells.extend([
            Cell::from(human_bytes(h.bytes_received)),
            Cell::from(human_bytes(h.bytes_sent)),
            Cell::from(percent(tls)),
        ]);
    }
    cells.push(Cell::from(h.top_flag().map_or(String::new(), |(flag, _)| flag.to_owned())));
    cells
}

fn draw_findings(frame: &mut Frame<'_>, app: &App, theme: &Theme, area: Rect) {
    let findings = app.findings_shown();
    let evidence_rows = if area.height >= 12 { 4 } else { 0 };
    let [table_area, evidence_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(evidence_rows)]).areas(area);
    let visible = table_area.height.saturating_sub(3) as usize;
    let selected = app.selected;
    let first = first_row(selected, visible);
    let rows = findings.iter().enumerate().skip(first).take(visible).map(|(i, f)| {
        let row = Row::new([
            Cell::from(severity_name(f.severity)).style(theme.severity(f.severity)),
            Cell::from(kind_name(f)),
            Cell::from(f.host.clone()),
            Cell::from(f.source.clone()),
            Cell::from(f.count.to_string()),
            Cell::from(short_time(&f.last_seen)),
        ]);
        if i == selected { row.style(theme.selected()) } else { row }
    });
    let title = match findings.len() {
        0 => " Findings: none ".to_owned(),
        n => format!(" Findings ({n}) "),
    };
    let widths = [
        Constraint::Length(4),
        Constraint::Length(23),
        Constraint::Min(14),
        Constraint::Min(15),
        Constraint::Length(6),
        Constraint::Length(12),
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(["SEV", "KIND", "HOST", "SOURCE", "COUNT", "LAST"]).style(theme.header()))
        .block(Block::default().borders(Borders::ALL).title(title));
    frame.render_widget(table, table_area);
    if evidence_rows > 0
        && let Some(f) = findings.get(selected)
    {
        let text = format!("{} — {}", f.detail, f.evidence);
        let evidence = Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::TOP).title(" evidence "));
        frame.render_widget(evidence, evidence_area);
    }
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "CRIT",
        Severity::Warning => "WARN",
    }
}

fn kind_name(finding: &FindingReport) -> String {
    finding.kind.as_str().to_owned()
}

/// `HH:MM:SS.mmm` of an RFC 3339 time.
fn short_time(time: &str) -> String {
    time.get(11..23).unwrap_or(time).to_owned()
}

fn draw_detail(frame: &mut Frame<'_>, app: &App, theme: &Theme, area: Rect) {
    let Some(h) = app.selected_host() else { return };
    let mut lines = Vec::new();
    let rps = h.requests_per_second.map_or("-".into(), |r| format!("{r:.2}/s"));
    lines.push(Line::from(format!(
        "{} requests ({rps}), {} errors ({}%), {} in, {} out, {} TLS-originated",
        h.requests,
        h.errors,
        percent(h.error_rate),
        human_bytes(h.bytes_received),
        human_bytes(h.bytes_sent),
        h.tls_originated
    )));
    if let Some(p) = &h.duration_ms {
        lines.push(Line::from(format!(
            "latency ms: p50 {}  p90 {}  p99 {}  max {}",
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.max)
        )));
    }
    let detail = app.snapshot.as_ref().and_then(|s| s.detail.as_ref()).filter(|d| d.host == h.host);
    if let Some(detail) = detail {
        lines.push(Line::from(""));
        let title = format!(
            "requests per {} s, window {} (peak {})",
            detail.slot_seconds,
            detail.window,
            detail.requests.iter().max().unwrap_or(&0)
        );
        lines.push(Line::from(Span::styled(title, theme.header())));
        lines.push(Line::from(sparkline(&detail.requests, area.width.saturating_sub(2) as usize)));
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("latency (ms, bars on a log scale)", theme.header())));
        let top = detail.latency_ms.iter().map(|(_, ms)| *ms).fold(1.0, f64::max);
        let width = area.width.saturating_sub(22).max(10) as f64;
        for (q, value) in &detail.latency_ms {
            let name = if *q >= 1.0 { "max".to_owned() } else { format!("p{}", q * 100.0) };
            let len = ((value + 1.0).ln() / (top + 1.0).ln() * width).round() as usize;
            lines.push(Line::from(vec![
                Span::raw(format!("{name:>6} {:>8} ", ms(*value))),
                Span::styled("▇".repeat(len), theme.fg(Color::Cyan)),
            ]));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("status classes", theme.header())));
    let width = area.width.saturating_sub(20).max(10) as u64;
    for (class, n) in &h.status {
        let len = if h.requests == 0 { 0 } else { (n * width).div_ceil(h.requests) };
        let color = match class.as_str() {
            "5xx" | "0" => Color::Red,
            "4xx" => Color::Yellow,
            _ => Color::Green,
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{class:>4} {n:>8} ")),
            Span::styled("█".repeat(len as usize), theme.fg(color)),
        ]));
    }
    let mut list = |title: &str, entries: Vec<(String, u64)>| {
        if entries.is_empty() {
            return;
        }
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(title.to_owned(), theme.header())));
        for (value, count) in entries {
            lines.push(Line::from(format!("{count:>8}  {value}")));
        }
    };
    let flags = h.response_flags.iter().map(|(k, v)| (k.clone(), *v)).collect();
    list("response flags", flags);
    let top = |entries: &[crate::stats::TopEntry]| {
        entries.iter().map(|e| (e.value.clone(), e.count)).collect::<Vec<_>>()
    };
    list("top paths", top(&h.top_paths));
    list("top sources", top(&h.top_sources));
    if let Some(detail) = detail {
        list("upstream addresses", top(&detail.upstreams));
    }
    let findings: Vec<(String, u64)> = app
        .findings_shown()
        .into_iter()
        .filter(|f| f.host == h.host)
        .map(|f| (format!("{} from {}", kind_name(f), f.source), f.count))
        .collect();
    list("findings", findings);
    let block = Block::default().borders(Borders::ALL).title(format!(" {} ", h.host));
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}

/// `values` as a line of eighth-blocks, the newest at the right, at most `width` of them.
fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let shown = &values[values.len().saturating_sub(width)..];
    let top = shown.iter().copied().max().unwrap_or(0).max(1);
    shown
        .iter()
        .map(|v| if *v == 0 { ' ' } else { BARS[((v * 8).div_ceil(top) as usize).clamp(1, 8) - 1] })
        .collect()
}

fn draw_tail(frame: &mut Frame<'_>, app: &App, theme: &Theme, area: Rect) {
    let shown = app.tail_shown();
    let visible = area.height.saturating_sub(2) as usize;
    let end = shown.len().saturating_sub(app.tail_scroll);
    let start = end.saturating_sub(visible);
    let lines: Vec<Line<'static>> = shown[start..end]
        .iter()
        .map(|r| {
            let status = r.status.map_or("-".into(), |s| s.to_string());
            let style = match r.status {
                Some(s) if s >= 500 => theme.fg(Color::Red),
                Some(s) if s >= 400 => theme.fg(Color::Yellow),
                Some(0) | None => theme.fg(Color::Red),
                _ => Style::default(),
            };
            let text = format!(
                "{} {status:>3} {:<6} {} {} {}ms {} {}",
                short_time(&r.time),
                r.method.as_deref().unwrap_or("-"),
                r.host,
                r.path.as_deref().unwrap_or("-"),
                r.duration_ms.map_or("-".into(), ms),
                r.flags.as_deref().unwrap_or(""),
                r.source.as_deref().unwrap_or("-"),
            );
            Line::from(Span::styled(text, style))
        })
        .collect();
    let mut title = format!(" Tail ({} shown", shown.len());
    if app.tail_dropped > 0 {
        title.push_str(&format!(", {} not kept", app.tail_dropped));
    }
    title.push(')');
    if app.tail_paused {
        title.push_str(" PAUSED");
    }
    title.push(' ');
    let mut paragraph =
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title));
    if app.tail_wrap {
        paragraph = paragraph.wrap(Wrap { trim: false });
    }
    frame.render_widget(paragraph, area);
}

fn draw_sql(frame: &mut Frame<'_>, app: &App, theme: &Theme, area: Rect) {
    let block = |title: String| Block::default().borders(Borders::ALL).title(title);
    let Some(result) = &app.sql else {
        let hint = if app.sql_available {
            "Press : and type SQL over the store's tables (access_log, findings, ztunnel_conn, rejects, probes), e.g. SELECT authority, count(*) FROM access_log GROUP BY 1 ORDER BY 2 DESC"
        } else {
            "SQL needs a store: top --store DIR, or top FILE (which keeps one while it runs)"
        };
        frame.render_widget(
            Paragraph::new(hint).wrap(Wrap { trim: false }).block(block(" SQL ".into())),
            area,
        );
        return;
    };
    if app.sql_running {
        let text = format!("running: {}", result.query);
        frame.render_widget(Paragraph::new(text).block(block(" SQL ".into())), area);
        return;
    }
    if let Some(error) = &result.error {
        let text = vec![
            Line::from(result.query.clone()),
            Line::from(""),
            Line::from(Span::styled(error.clone(), theme.fg(Color::Red))),
        ];
        let paragraph =
            Paragraph::new(text).wrap(Wrap { trim: false }).block(block(" SQL: error ".into()));
        frame.render_widget(paragraph, area);
        return;
    }
    let widths: Vec<Constraint> = result
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let longest =
                result.rows.iter().map(|r| r.get(i).map_or(0, |v| v.chars().count())).max();
            Constraint::Length(longest.unwrap_or(0).max(name.chars().count()).min(40) as u16)
        })
        .collect();
    let visible = area.height.saturating_sub(3) as usize;
    let rows = result
        .rows
        .iter()
        .skip(app.sql_scroll)
        .take(visible)
        .map(|r| Row::new(r.iter().map(|v| Cell::from(v.clone()))));
    let title = format!(" SQL: {} rows · {} ", result.rows.len(), result.query);
    let table = Table::new(rows, widths)
        .header(Row::new(result.columns.clone()).style(theme.header()))
        .block(block(title));
    frame.render_widget(table, area);
}

fn draw_help(frame: &mut Frame<'_>, theme: &Theme) {
    let text = [
        "Tab / Shift-Tab   next / previous view (hosts, findings, tail, SQL)",
        "↑ ↓ PgUp PgDn g G move (scroll in the tail and SQL views)",
        "Enter             the selected host's detail; Esc back",
        "s / S             next sort column / reverse the order",
        "1 5 h a           window: 1 minute, 5 minutes, 1 hour, all",
        "/                 filter: text or host:TEXT, host~REGEX, status:5xx,",
        "                  flag:UF, src:payments/*, method:POST, dur>500ms",
        "Esc               clear the filter",
        ":                 SQL over the store (↑ ↓ history)",
        "space / w         tail: pause / wrap lines",
        "q, Ctrl-C         quit",
        "",
        "any key closes this help",
    ];
    let area = frame.area();
    let width = 76.min(area.width);
    let height = (text.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line<'_>> = text.iter().map(|t| Line::from(*t)).collect();
    let help = Paragraph::new(lines).block(
        Block::default().borders(Borders::ALL).title(" keys ").style(theme.style(Style::default())),
    );
    frame.render_widget(Clear, popup);
    frame.render_widget(help, popup);
}
