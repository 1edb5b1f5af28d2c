//! `egresslens top`: the operator's live view of egress, per host, with findings, a tail, a
//! filter and SQL.
//!
//! - [`app`]: the state and what each key does to it
//! - [`view`]: drawing it
//! - [`feed`]: where snapshots and tail records come from: a running collector's status API
//!   (`--attach`), the pipeline run here over a file, or a store's history (`--store`)
//! - [`history`]: replaying a store
//!
//! One thread owns the [`app::App`]: it takes keys, the newest snapshot (a `watch` channel:
//! a slow screen skips snapshots, never queues them), tail records (a bounded channel) and SQL
//! results, and redraws at most ten times a second. `ratatui::init` restores the terminal on
//! a panic; SIGTERM and SIGINT end the loop, which restores it too.

pub mod app;
pub mod feed;
pub mod history;
pub mod view;

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use self::app::{Action, App, SqlResult};
use self::feed::{Feed, FeedError};
use crate::query::StoreAt;
use crate::report::{OutputFormat, write_report};

/// Redraws at most this often.
const FRAME: Duration = Duration::from_millis(100);

/// How long a non-interactive `top` waits for its one snapshot.
const ONE_SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error("the terminal")]
    Terminal(#[source] io::Error),
    #[error("{0}: {1}")]
    NoSnapshot(String, String),
}

/// How `top` runs.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// A store to run SQL on (the collector's, when attached).
    pub sql_store: Option<StoreAt>,
}

/// Runs `top` over `feed` until `q`. With stdout not a terminal, prints one snapshot table
/// instead (for scripts) and returns.
pub fn run(feed: Feed, options: TopOptions) -> Result<(), TopError> {
    let name = feed.name();
    let interactive = io::stdout().is_terminal();
    let sql_store = options.sql_store.clone().or_else(|| feed.store());
    let running = feed.start(!interactive)?;
    if !interactive {
        let snapshot = running
            .first_snapshot(ONE_SNAPSHOT_WAIT)
            .map_err(|problem| TopError::NoSnapshot(name.clone(), problem))?;
        let mut out = io::stdout().lock();
        write_report(&mut out, &snapshot.stats, OutputFormat::Table, None)
            .and_then(|()| {
                let (listed, total) = (snapshot.stats.hosts.len(), snapshot.hosts_total);
                if listed < total {
                    writeln!(out, "(the {listed} hosts with most requests, of {total})")?;
                }
                out.flush()
            })
            .map_err(TopError::Terminal)?;
        return Ok(());
    }
    let mut app = App::new(name);
    app.no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    app.sql_available = sql_store.is_some();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).map_err(TopError::Terminal)?;
    }
    let mut terminal = ratatui::try_init().map_err(TopError::Terminal)?;
    let result = ui_loop(&mut terminal, &mut app, &running, (sql_store, &stop));
    ratatui::restore();
    result
}

fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    running: &feed::Running,
    (sql_store, stop): (Option<StoreAt>, &AtomicBool),
) -> Result<(), TopError> {
    let (sql_tx, sql_rx) = bounded::<SqlResult>(4);
    let mut snapshots = running.snapshots();
    let mut dirty = true;
    let mut drawn = Instant::now() - FRAME;
    while !stop.load(Ordering::Relaxed) {
        if event::poll(FRAME / 2).map_err(TopError::Terminal)? {
            match event::read().map_err(TopError::Terminal)? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    dirty = true;
                    match app.handle_key(key) {
                        Action::Quit => break,
                        Action::Window(window) => running.set_window(window),
                        Action::Detail(host) => running.set_detail(host),
                        Action::Sql(sql) => match &sql_store {
                            Some(store) => run_sql(store.clone(), sql, sql_tx.clone()),
                            None => app.set_sql(SqlResult { query: sql, ..SqlResult::default() }),
                        },
                        Action::None => {}
                    }
                    running.set_listing(app.filter.text(), app.sort, app.reversed);
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if snapshots.has_changed().unwrap_or(false) {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                app.set_snapshot(snapshot);
                dirty = true;
            }
        }
        dirty |= drain(running.tail(), |record| app.push_tail([record]));
        let problem = running.problem();
        dirty |= problem != app.problem;
        app.problem = problem;
        app.tail_dropped += running.tail_dropped();
        dirty |= drain(&sql_rx, |result| app.set_sql(result));
        if dirty && drawn.elapsed() >= FRAME {
            terminal.draw(|frame| view::draw(frame, app)).map_err(TopError::Terminal)?;
            drawn = Instant::now();
            dirty = false;
        }
    }
    Ok(())
}

/// Takes what is waiting on `rx`; true when there was something.
fn drain<T>(rx: &Receiver<T>, mut take: impl FnMut(T)) -> bool {
    let mut any = false;
    while let Ok(item) = rx.try_recv() {
        take(item);
        any = true;
    }
    any
}

/// Runs `sql` (or a canned `@name`) over `store` on a thread of its own; the result, or the
/// engine's error, goes to `done`.
fn run_sql(store: StoreAt, sql: String, done: crossbeam_channel::Sender<SqlResult>) {
    std::thread::spawn(move || {
        let result = query_table(&store, &sql);
        let result = match result {
            Ok((columns, rows)) => SqlResult { query: sql, columns, rows, error: None },
            Err(e) => SqlResult { query: sql, error: Some(e), ..SqlResult::default() },
        };
        let _ = done.send(result);
    });
}

/// Rows of a result above this are cut (the view says how many came).
const SQL_MAX_ROWS: usize = 10_000;

type TextTable = (Vec<String>, Vec<Vec<String>>);

fn query_table(store: &StoreAt, sql: &str) -> Result<TextTable, String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let sql = match sql.strip_prefix('@') {
        Some(name) => crate::query::canned(name.trim(), &[]).map_err(|e| e.to_string())?,
        None => sql.to_owned(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(async {
        let ctx = store.session().await?;
        crate::query::run_with_schema(&ctx, &sql).await
    });
    let (schema, batches) = result.map_err(|e| crate::rounds::chain(&e))?;
    let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in &batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..batch.num_rows() {
            if rows.len() == SQL_MAX_ROWS {
                return Ok((columns, rows));
            }
            rows.push(formatters.iter().map(|f| f.value(row).to_string()).collect());
        }
    }
    Ok((columns, rows))
}
