//! `top`'s state and what each key does to it. Drawing is [`super::view`]'s; the loop that
//! feeds snapshots and keys in is [`super::run`]'s. Everything here is plain data, so key
//! handling is tested without a terminal.

use std::collections::VecDeque;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::filter::Filter;
use crate::live::{Snapshot, TailRecord};
use crate::report::{SortKey, host_order};
use crate::stats::{HostReport, Window};

/// Records the tail view keeps.
pub const TAIL_KEEP: usize = 5_000;

/// SQL statements remembered for ↑/↓.
const HISTORY_KEEP: usize = 100;

/// The views, in the order Tab visits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Hosts with the findings beneath.
    Hosts,
    Findings,
    Tail,
    /// The last SQL result.
    Sql,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Hosts, Tab::Findings, Tab::Tail, Tab::Sql];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Hosts => "Hosts",
            Tab::Findings => "Findings",
            Tab::Tail => "Tail",
            Tab::Sql => "SQL",
        }
    }
}

/// A line being typed at the bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// `/`: a filter.
    Filter(String),
    /// `:`: SQL, with where ↑/↓ stand in the history (`None`: a new line).
    Sql { text: String, history_at: Option<usize> },
}

/// A SQL result, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlResult {
    pub query: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// The engine's error, shown in place of rows.
    pub error: Option<String>,
}

/// What the loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Ask the feed for this window's snapshots.
    Window(Window),
    /// Run this SQL.
    Sql(String),
    /// Look closer at this host (`None`: at none).
    Detail(Option<String>),
}

/// Everything `top` shows and how.
#[derive(Debug)]
pub struct App {
    /// Where the data comes from, for the title.
    pub source: String,
    /// What the feed says is wrong (a collector out of reach), for the title.
    pub problem: Option<String>,
    pub snapshot: Option<Snapshot>,
    /// Where the snapshot's hosts the filter takes stand in it, sorted; rebuilt when either
    /// changes (indices: ten thousand hosts are not copied each second).
    shown: Vec<usize>,
    pub tail: VecDeque<TailRecord>,
    /// Tail records that came while more than [`TAIL_KEEP`] were kept, or in a pause.
    pub tail_dropped: u64,
    pub tab: Tab,
    /// The host detail of the selected host, over the hosts view.
    pub detail: bool,
    pub help: bool,
    pub window: Window,
    pub sort: SortKey,
    /// Smallest first instead of the key's natural order.
    pub reversed: bool,
    pub filter: Filter,
    /// The last filter that did not parse, and why.
    pub filter_error: Option<String>,
    pub prompt: Option<Prompt>,
    /// Selected row of the current table view.
    pub selected: usize,
    pub tail_paused: bool,
    pub tail_wrap: bool,
    /// Rows scrolled up from the newest in the tail view.
    pub tail_scroll: usize,
    pub history: Vec<String>,
    pub sql: Option<SqlResult>,
    pub sql_running: bool,
    pub sql_scroll: usize,
    /// Whether SQL can run here (a store to run it on).
    pub sql_available: bool,
    /// Styles off (`NO_COLOR`).
    pub no_color: bool,
}

/// The sort keys `s` steps through, in order.
const SORTS: [SortKey; 8] = [
    SortKey::Requests,
    SortKey::ErrorRate,
    SortKey::P99,
    SortKey::P50,
    SortKey::Bytes,
    SortKey::Tls,
    SortKey::Errors,
    SortKey::Host,
];

impl App {
    pub fn new(source: String) -> App {
        App {
            source,
            problem: None,
            snapshot: None,
            shown: Vec::new(),
            tail: VecDeque::new(),
            tail_dropped: 0,
            tab: Tab::Hosts,
            detail: false,
            help: false,
            window: Window::All,
            sort: SortKey::Requests,
            reversed: false,
            filter: Filter::default(),
            filter_error: None,
            prompt: None,
            selected: 0,
            tail_paused: false,
            tail_wrap: false,
            tail_scroll: 0,
            history: Vec::new(),
            sql: None,
            sql_running: false,
            sql_scroll: 0,
            sql_available: false,
            no_color: false,
        }
    }

    /// A new snapshot from the feed.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = Some(snapshot);
        self.rebuild_hosts();
    }

    /// New tail records (dropped while paused: a pause freezes the view, not the feed).
    pub fn push_tail(&mut self, records: impl IntoIterator<Item = TailRecord>) {
        for record in records {
            if self.tail_paused {
                self.tail_dropped += 1;
                continue;
            }
            if self.tail.len() == TAIL_KEEP {
                self.tail.pop_front();
                self.tail_dropped += 1;
            }
            self.tail.push_back(record);
        }
    }

    /// The tail records the filter takes, oldest first.
    pub fn tail_shown(&self) -> Vec<&TailRecord> {
        self.tail.iter().filter(|r| self.filter.matches_record(r)).collect()
    }

    /// The filtered and sorted hosts, from the snapshot.
    fn rebuild_hosts(&mut self) {
        let Some(snapshot) = &self.snapshot else { return };
        let hosts = &snapshot.stats.hosts;
        let mut shown: Vec<usize> =
            (0..hosts.len()).filter(|&i| self.filter.matches_host(&hosts[i])).collect();
        shown.sort_by(|&a, &b| host_order(&hosts[a], &hosts[b], self.sort));
        if self.reversed {
            shown.reverse();
        }
        self.shown = shown;
        self.selected = self.selected.min(self.rows().saturating_sub(1));
    }

    /// The hosts the filter takes, in the order asked for.
    pub fn hosts(&self) -> Vec<&HostReport> {
        let Some(snapshot) = &self.snapshot else { return Vec::new() };
        self.shown.iter().map(|&i| &snapshot.stats.hosts[i]).collect()
    }

    /// The findings the filter takes.
    pub fn findings_shown(&self) -> Vec<&crate::findings::FindingReport> {
        let Some(snapshot) = &self.snapshot else { return Vec::new() };
        // A snapshot that lists only some of the hosts the filter takes has the findings of
        // them all, chosen by the collector with the same filter.
        let listed_all = snapshot.stats.hosts.len() >= snapshot.hosts_matched;
        let shown: Option<std::collections::HashSet<&str>> = (!self.filter.is_empty()
            && listed_all)
            .then(|| self.hosts().into_iter().map(|h| h.host.as_str()).collect());
        let taken = |f: &&crate::findings::FindingReport| {
            shown.as_ref().is_none_or(|shown| shown.contains(f.host.as_str()))
        };
        snapshot.stats.findings.iter().filter(taken).collect()
    }

    /// Rows of the current view's table.
    fn rows(&self) -> usize {
        match self.tab {
            Tab::Hosts => self.shown.len(),
            Tab::Findings => self.findings_shown().len(),
            Tab::Tail => self.tail_shown().len(),
            Tab::Sql => self.sql.as_ref().map_or(0, |r| r.rows.len()),
        }
    }

    /// The host the hosts view has selected.
    pub fn selected_host(&self) -> Option<&HostReport> {
        let index = *self.shown.get(self.selected)?;
        self.snapshot.as_ref()?.stats.hosts.get(index)
    }

    /// What `key` does.
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.prompt.is_some() {
            return self.prompt_key(key);
        }
        if self.help {
            // Any key closes the help.
            self.help = false;
            return Action::None;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Esc if self.detail => {
                self.detail = false;
                return Action::Detail(None);
            }
            KeyCode::Esc => self.set_filter(Filter::default()),
            KeyCode::Char('/') => self.prompt = Some(Prompt::Filter(self.filter.text().into())),
            KeyCode::Char(':') => {
                self.prompt = Some(Prompt::Sql { text: String::new(), history_at: None })
            }
            KeyCode::Tab | KeyCode::BackTab => {
                let was = self.detail;
                self.switch_tab(if key.code == KeyCode::Tab { 1 } else { Tab::ALL.len() - 1 });
                if was {
                    return Action::Detail(None);
                }
            }
            KeyCode::Char(c @ ('1' | '5' | 'h' | 'a')) => {
                let window = match c {
                    '1' => Window::OneMinute,
                    '5' => Window::FiveMinutes,
                    'h' => Window::OneHour,
                    _ => Window::All,
                };
                self.window = window;
                return Action::Window(window);
            }
            KeyCode::Char('s') => self.step_sort(),
            KeyCode::Char('S') => {
                self.reversed = !self.reversed;
                self.rebuild_hosts();
            }
            KeyCode::Enter if self.tab == Tab::Hosts && !self.shown.is_empty() => {
                self.detail = true;
                return Action::Detail(self.selected_host().map(|h| h.host.clone()));
            }
            KeyCode::Char(' ') if self.tab == Tab::Tail => self.tail_paused = !self.tail_paused,
            KeyCode::Char('w') if self.tab == Tab::Tail => self.tail_wrap = !self.tail_wrap,
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            _ => {}
        }
        Action::None
    }

    fn switch_tab(&mut self, step: usize) {
        let at = Tab::ALL.iter().position(|t| *t == self.tab).unwrap_or(0);
        self.tab = Tab::ALL[(at + step) % Tab::ALL.len()];
        self.detail = false;
        self.selected = 0;
    }

    fn step_sort(&mut self) {
        let at = SORTS.iter().position(|k| *k == self.sort).unwrap_or(0);
        self.sort = SORTS[(at + 1) % SORTS.len()];
        self.rebuild_hosts();
    }

    /// Moves the selection (the scroll, in the tail and SQL views).
    fn move_by(&mut self, by: isize) {
        let rows = self.rows();
        let clamp = |at: usize| at.saturating_add_signed(by).min(rows.saturating_sub(1));
        match self.tab {
            // Up goes back in time: the scroll counts from the newest.
            Tab::Tail => {
                self.tail_scroll =
                    self.tail_scroll.saturating_add_signed(-by).min(rows.saturating_sub(1))
            }
            Tab::Sql => self.sql_scroll = clamp(self.sql_scroll),
            Tab::Hosts | Tab::Findings => self.selected = clamp(self.selected),
        }
    }

    fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
        self.filter_error = None;
        self.selected = 0;
        self.tail_scroll = 0;
        self.rebuild_hosts();
    }

    fn prompt_key(&mut self, key: KeyEvent) -> Action {
        let Some(prompt) = &mut self.prompt else { return Action::None };
        let text = match prompt {
            Prompt::Filter(text) | Prompt::Sql { text, .. } => text,
        };
        match key.code {
            KeyCode::Esc => self.prompt = None,
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            KeyCode::Up | KeyCode::Down => {
                if let Prompt::Sql { text, history_at } = prompt {
                    step_history(&self.history, text, history_at, key.code == KeyCode::Up);
                }
            }
            KeyCode::Enter => {
                let prompt = self.prompt.take();
                match prompt {
                    Some(Prompt::Filter(text)) => match Filter::parse(&text) {
                        Ok(filter) => self.set_filter(filter),
                        Err(e) => {
                            self.filter_error = Some(e.to_string());
                            self.prompt = Some(Prompt::Filter(text));
                        }
                    },
                    Some(Prompt::Sql { text, .. }) if !text.trim().is_empty() => {
                        let sql = text.trim().to_owned();
                        if self.history.last() != Some(&sql) {
                            self.history.push(sql.clone());
                            if self.history.len() > HISTORY_KEEP {
                                self.history.remove(0);
                            }
                        }
                        self.tab = Tab::Sql;
                        self.sql_scroll = 0;
                        if !self.sql_available {
                            self.sql = Some(SqlResult {
                                query: sql,
                                error: Some(
                                    "no store here to query: use top --store DIR, or top FILE"
                                        .into(),
                                ),
                                ..SqlResult::default()
                            });
                            return Action::None;
                        }
                        self.sql_running = true;
                        return Action::Sql(sql);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Action::None
    }

    /// A SQL result (or its error) from the runner.
    pub fn set_sql(&mut self, result: SqlResult) {
        self.sql_running = false;
        self.sql_scroll = 0;
        self.sql = Some(result);
    }
}

/// Moves `text` one step through `history` (up: older).
fn step_history(history: &[String], text: &mut String, at: &mut Option<usize>, up: bool) {
    if history.is_empty() {
        return;
    }
    let next = match (*at, up) {
        (None, true) => Some(history.len() - 1),
        (None, false) => None,
        (Some(i), true) => Some(i.saturating_sub(1)),
        (Some(i), false) if i + 1 < history.len() => Some(i + 1),
        (Some(_), false) => None,
    };
    *at = next;
    *text = next.map(|i| history[i].clone()).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            app.handle_key(key(KeyCode::Char(c)));
        }
    }

    #[test]
    fn window_keys_ask_the_feed_for_that_window() {
        let mut app = App::new("test".into());
        assert_eq!(app.handle_key(key(KeyCode::Char('5'))), Action::Window(Window::FiveMinutes));
        assert_eq!(app.handle_key(key(KeyCode::Char('h'))), Action::Window(Window::OneHour));
        assert_eq!(app.handle_key(key(KeyCode::Char('a'))), Action::Window(Window::All));
        assert_eq!(app.window, Window::All);
        assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.handle_key(ctrl_c), Action::Quit);
    }

    #[test]
    fn a_filter_is_typed_applied_and_cleared_with_esc() {
        let mut app = App::new("test".into());
        app.handle_key(key(KeyCode::Char('/')));
        typed(&mut app, "status:5xx");
        // Keys go to the prompt while it is open: `q` is text, not quit.
        assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Action::None);
        app.handle_key(key(KeyCode::Backspace));
        app.handle_key(key(KeyCode::Enter));
        assert_eq!((app.filter.text(), app.prompt.is_none()), ("status:5xx", true));
        app.handle_key(key(KeyCode::Esc));
        assert!(app.filter.is_empty());
    }

    #[test]
    fn a_bad_filter_keeps_the_prompt_open_with_the_reason() {
        let mut app = App::new("test".into());
        app.handle_key(key(KeyCode::Char('/')));
        typed(&mut app, "dur>soon");
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(app.prompt, Some(Prompt::Filter("dur>soon".into())));
        assert_eq!(app.filter_error.as_deref(), Some("dur>soon: say 500ms or 2s"));
        assert!(app.filter.is_empty());
    }

    #[test]
    fn sql_runs_goes_to_history_and_comes_back_with_up() {
        let mut app = App::new("test".into());
        app.sql_available = true;
        app.handle_key(key(KeyCode::Char(':')));
        typed(&mut app, "select 1");
        assert_eq!(app.handle_key(key(KeyCode::Enter)), Action::Sql("select 1".into()));
        assert_eq!((app.tab, app.sql_running), (Tab::Sql, true));
        app.handle_key(key(KeyCode::Char(':')));
        typed(&mut app, "select 2");
        app.handle_key(key(KeyCode::Enter));
        app.handle_key(key(KeyCode::Char(':')));
        app.handle_key(key(KeyCode::Up));
        app.handle_key(key(KeyCode::Up));
        assert_eq!(app.prompt, Some(Prompt::Sql { text: "select 1".into(), history_at: Some(0) }));
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Down));
        assert_eq!(app.prompt, Some(Prompt::Sql { text: String::new(), history_at: None }));
    }

    #[test]
    fn sql_without_a_store_says_so_instead_of_running() {
        let mut app = App::new("test".into());
        app.handle_key(key(KeyCode::Char(':')));
        typed(&mut app, "select 1");
        assert_eq!(app.handle_key(key(KeyCode::Enter)), Action::None);
        let error = app.sql.as_ref().and_then(|r| r.error.clone()).unwrap_or_default();
        assert!(error.contains("no store"), "{error}");
    }

    #[test]
    fn tabs_cycle_and_help_closes_on_any_key() {
        let mut app = App::new("test".into());
        app.handle_key(key(KeyCode::Tab));
        assert_eq!(app.tab, Tab::Findings);
        app.handle_key(key(KeyCode::BackTab));
        app.handle_key(key(KeyCode::BackTab));
        assert_eq!(app.tab, Tab::Sql);
        app.handle_key(key(KeyCode::Char('?')));
        assert!(app.help);
        assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Action::None);
        assert!(!app.help);
    }

    #[test]
    fn a_paused_tail_counts_what_it_missed() {
        let mut app = App::new("test".into());
        app.tab = Tab::Tail;
        app.push_tail([TailRecord::default()]);
        app.handle_key(key(KeyCode::Char(' ')));
        app.push_tail([TailRecord::default(), TailRecord::default()]);
        assert_eq!((app.tail.len(), app.tail_dropped), (1, 2));
        app.handle_key(key(KeyCode::Char('w')));
        assert!(app.tail_wrap);
    }
}
