//! `top`'s views drawn on ratatui's `TestBackend` from fixed snapshots, at 80×24 and 160×48,
//! and compared with the reviewed text in `tests/snapshots/` (insta): every view, the empty
//! state, a long host name, 10 000 hosts, and an active filter.

#![allow(clippy::unwrap_used)] // tests

use egresslens::ingest::{self, IngestConfig};
use egresslens::live::{SelfCounts, Snapshot, SourceProgress, TailRecord};
use egresslens::source::Input;
use egresslens::stats::{HostReport, StatsReport, Window};
use egresslens::traffic::{GenConfig, generate};
use egresslens::tui::app::{App, SqlResult, Tab};
use egresslens::tui::view::draw;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// A fixed snapshot: the report of generated traffic with incidents (its seed fixes it).
fn snapshot() -> Snapshot {
    snapshot_of(generated_stats().report(Window::All, None))
}

fn generated_stats() -> egresslens::stats::EgressStats {
    let mut bytes = Vec::new();
    let config =
        GenConfig { lines: 3_000, seed: 11, incidents: true, bad: 0.01, ..GenConfig::default() };
    generate(&config, &mut bytes).unwrap();
    let input = Input::Memory { name: "generated".into(), bytes: bytes.into() };
    ingest::stats(&[input], &IngestConfig::default()).unwrap()
}

fn snapshot_of(stats: StatsReport) -> Snapshot {
    Snapshot {
        ready: true,
        taken_at: "2025-08-18T09:40:00.000Z".into(),
        sources: vec![SourceProgress {
            source: "generated".into(),
            lines: stats.lines,
            ..SourceProgress::default()
        }],
        hosts_total: stats.hosts.len(),
        hosts_matched: stats.hosts.len(),
        collector: SelfCounts::default(),
        detail: None,
        stats,
    }
}

fn app_with(snapshot: Option<Snapshot>) -> App {
    let mut app = App::new("http://127.0.0.1:9464".into());
    // Colour is not in the text compared; NO_COLOR's path is the one drawn.
    app.no_color = true;
    if let Some(snapshot) = snapshot {
        app.set_snapshot(snapshot);
    }
    app
}

fn press(app: &mut App, keys: &str) {
    for c in keys.chars() {
        let code = match c {
            '\n' => KeyCode::Enter,
            '\t' => KeyCode::Tab,
            '\u{1b}' => KeyCode::Esc,
            c => KeyCode::Char(c),
        };
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
    }
}

/// The screen as text, one line per row.
fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, app)).unwrap();
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..height {
        let line: String = (0..width).map(|x| buffer[(x, y)].symbol().to_owned()).collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn both_sizes(name: &str, app: &App) {
    insta::assert_snapshot!(format!("{name}_80x24"), screen(app, 80, 24));
    insta::assert_snapshot!(format!("{name}_160x48"), screen(app, 160, 48));
}

fn tail_records() -> Vec<TailRecord> {
    let record = |host: &str, status: u16, flags: Option<&str>, ms: f64| TailRecord {
        time: "2025-08-18T09:38:10.309Z".into(),
        host: host.into(),
        method: Some("GET".into()),
        path: Some("/v1/objects/report.csv?part=1".into()),
        status: Some(status),
        flags: flags.map(Into::into),
        duration_ms: Some(ms),
        source: Some("payments/checkout".into()),
        origin: "waypoint-7c9d".into(),
        ..TailRecord::default()
    };
    vec![
        record("oss-cn-hangzhou.aliyuncs.com", 200, None, 35.0),
        record("api.github.com", 503, Some("UF,URX"), 1003.0),
        record("dashscope.aliyuncs.com", 404, None, 12.5),
        record("aliyun.com", 301, None, 24.0),
    ]
}

#[test]
fn hosts_with_findings_beneath() {
    both_sizes("hosts", &app_with(Some(snapshot())));
}

#[test]
fn waiting_for_the_first_snapshot() {
    both_sizes("empty", &app_with(None));
}

#[test]
fn a_filter_in_the_title_and_applied_to_every_view() {
    let mut app = app_with(Some(snapshot()));
    app.push_tail(tail_records());
    press(&mut app, "/status:5xx\n");
    both_sizes("filtered_hosts", &app);
    press(&mut app, "\t\t");
    assert_eq!(app.tab, Tab::Tail);
    both_sizes("filtered_tail", &app);
}

#[test]
fn host_detail() {
    let stats = generated_stats();
    let mut app = app_with(Some(snapshot_of(stats.report(Window::All, None))));
    press(&mut app, "j");
    let mut asked = None;
    if let egresslens::tui::app::Action::Detail(host) =
        app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE))
    {
        asked = host;
    }
    assert_eq!(asked.as_deref(), Some("api.github.com"));
    // The feed answers with the host's closer look.
    let mut snapshot = app.snapshot.clone().unwrap();
    snapshot.detail = stats.host_detail("api.github.com", Window::All, None);
    assert!(snapshot.detail.as_ref().is_some_and(|d| d.requests.iter().sum::<u64>() > 0));
    app.set_snapshot(snapshot);
    assert!(app.detail);
    both_sizes("detail", &app);
}

#[test]
fn findings_view_with_evidence() {
    let mut app = app_with(Some(snapshot()));
    press(&mut app, "\t");
    both_sizes("findings", &app);
}

#[test]
fn tail_view_paused() {
    let mut app = app_with(Some(snapshot()));
    app.push_tail(tail_records());
    press(&mut app, "\t\t ");
    both_sizes("tail_paused", &app);
}

#[test]
fn help_over_the_hosts() {
    let mut app = app_with(Some(snapshot()));
    press(&mut app, "?");
    both_sizes("help", &app);
}

#[test]
fn sql_result_and_sql_error() {
    let mut app = app_with(Some(snapshot()));
    app.sql_available = true;
    press(&mut app, ":select authority, count(*) from access_log group by 1\n");
    app.set_sql(SqlResult {
        query: "select authority, count(*) from access_log group by 1".into(),
        columns: vec!["authority".into(), "count(*)".into()],
        rows: vec![
            vec!["aliyun.com".into(), "1520".into()],
            vec!["api.github.com".into(), "611".into()],
        ],
        error: None,
    });
    both_sizes("sql_result", &app);
    press(&mut app, ":select nope\n");
    app.set_sql(SqlResult {
        query: "select nope".into(),
        error: Some("Schema error: No field named nope.".into()),
        ..SqlResult::default()
    });
    both_sizes("sql_error", &app);
}

fn host(name: String, requests: u64) -> HostReport {
    let mut report = snapshot_host();
    report.host = name;
    report.requests = requests;
    report
}

fn snapshot_host() -> HostReport {
    let snapshot = snapshot();
    snapshot.stats.hosts[0].clone()
}

#[test]
fn a_long_host_name_is_cut_not_wrapped() {
    let mut stats = snapshot().stats;
    let long = "a-very-long-internal-service-name.with.many.labels.cn-hangzhou.oss.aliyuncs.com";
    stats.hosts.insert(0, host(long.into(), 1_000_000));
    both_sizes("long_host", &app_with(Some(snapshot_of(stats))));
}

#[test]
fn ten_thousand_hosts_draw_the_visible_rows() {
    let mut stats = snapshot().stats;
    let template = snapshot_host();
    stats.hosts = (0..10_000)
        .map(|i| HostReport {
            host: format!("host-{i:05}.example.com"),
            requests: 10_000 - i,
            ..template.clone()
        })
        .collect();
    stats.findings.clear();
    let mut app = app_with(Some(snapshot_of(stats)));
    // The end of the list: the last rows, the selection on the last host.
    press(&mut app, "G");
    assert_eq!(app.selected, 9_999);
    both_sizes("ten_thousand_hosts", &app);
}

/// A store's history, replayed, gives the per-host figures `stats` gives on the lines it was
/// collected from; the findings are the store's own.
#[test]
fn a_store_replays_to_the_stats_of_its_lines() {
    use egresslens::collect::{CollectConfig, Control, collect};
    use egresslens::live::Live;
    use egresslens::stats::StatsConfig;
    use egresslens::store::Store;
    use egresslens::tui::history::History;

    let mut bytes = Vec::new();
    let config = GenConfig { lines: 5_000, seed: 12, incidents: true, ..GenConfig::default() };
    generate(&config, &mut bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    let input = Input::Memory { name: "generated".into(), bytes: bytes.clone().into() };
    let once = CollectConfig { once: true, ..CollectConfig::default() };
    collect(&input, &mut store, &once, &Control::default()).unwrap();
    drop(store);

    let store = egresslens::query::StoreAt::Dir(dir.path().to_path_buf());
    let history = History { store, since: None, speed: None };
    let live = Live::new(StatsConfig::default());
    let played = history.replay(&live, &std::sync::atomic::AtomicBool::new(false)).unwrap();
    let replayed = live.snapshot(Window::All, SelfCounts::default()).stats;
    let input = Input::Memory { name: "generated".into(), bytes: bytes.into() };
    let expected =
        ingest::stats(&[input], &IngestConfig::default()).unwrap().report(Window::All, None);
    assert_eq!(played, expected.records);
    assert_eq!(replayed.hosts.len(), expected.hosts.len());
    for (got, want) in replayed.hosts.iter().zip(&expected.hosts) {
        let figures = |h: &HostReport| {
            (h.host.clone(), h.requests, h.bytes_sent, h.bytes_received, h.errors, h.status.clone())
        };
        assert_eq!(figures(got), figures(want));
    }
    let findings = history.findings().unwrap();
    assert!(!findings.is_empty() && findings.iter().all(|f| !f.evidence.is_empty()));
}
