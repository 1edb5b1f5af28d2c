//! Whether the live view (the status API's snapshots, `top`'s screen) stays responsive under
//! load: a collector follows a file that grows by RATE lines a second across HOSTS hosts,
//! while this thread does once a second what `top` does: takes a snapshot of the whole run
//! and of the last 5 minutes (with one host's detail), and draws the hosts view from it
//! (160×48, on ratatui's `TestBackend`: the view's work without a terminal's). Prints the
//! snapshot and draw times (median and worst), and how far ingest fell behind the writer.
//!
//! `cargo bench --bench live -- [SECONDS] [RATE] [HOSTS]` (default 20 100000 10000).

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a benchmark

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use egresslens::collect::{CollectConfig, Control, collect};
use egresslens::live::{Listing, Live, SelfCounts};
use egresslens::source::Input;
use egresslens::stats::{StatsConfig, Window};
use egresslens::store::Store;
use egresslens::traffic::{GenConfig, generate};
use egresslens::tui::app::App;
use egresslens::tui::view::draw;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// How often the writer appends (its share of a second's lines each time).
const TICK: Duration = Duration::from_millis(100);

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut next = |default: u64| args.next().map_or(default, |a| a.parse().unwrap());
    let (seconds, rate, hosts) = (next(20), next(100_000), next(10_000));

    let lines = seconds * rate;
    let generated = Instant::now();
    let mut bytes = Vec::new();
    let config = GenConfig {
        lines,
        hosts: hosts as usize,
        rate: rate as f64,
        seed: 7,
        ..GenConfig::default()
    };
    generate(&config, &mut bytes).unwrap();
    let ends: Vec<usize> = memchr::memchr_iter(b'\n', &bytes).map(|i| i + 1).collect();
    eprintln!(
        "{lines} lines ({} MB, {hosts} hosts) generated in {:.1?}",
        bytes.len() / 1_000_000,
        generated.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("waypoint.log");
    std::fs::write(&file, b"").unwrap();
    let live = Arc::new(Live::new(StatsConfig::default()));
    let control = Arc::new(Control::default());
    let _ = control.live.set(live.clone());
    let collecting = {
        let (control, file, store) = (control.clone(), file.clone(), dir.path().join("store"));
        std::thread::spawn(move || {
            let (mut store, _) = Store::open(&store).unwrap();
            let config = CollectConfig { once: false, ..CollectConfig::default() };
            collect(&Input::Path(file), &mut store, &config, &control).unwrap();
        })
    };

    // The writer: a tenth of a second's lines every tenth of a second.
    let written = Arc::new(AtomicU64::new(0));
    let writing_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, done, file) = (written.clone(), writing_done.clone(), file.clone());
        std::thread::spawn(move || {
            let mut out = OpenOptions::new().append(true).open(&file).unwrap();
            let per_tick = (rate / (1_000 / TICK.as_millis() as u64)) as usize;
            let start = Instant::now();
            let (mut line, mut from) = (0, 0);
            for tick in 1.. {
                if line >= ends.len() {
                    break;
                }
                line = (line + per_tick).min(ends.len());
                out.write_all(&bytes[from..ends[line - 1]]).unwrap();
                from = ends[line - 1];
                written.store(line as u64, Ordering::Relaxed);
                if let Some(wait) = (TICK * tick).checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let mut app = App::new("bench".into());
    let (mut all, mut windowed, mut drawn) = (Vec::new(), Vec::new(), Vec::new());
    let (mut behind, mut shown_hosts) = (0u64, 0);
    let start = Instant::now();
    for second in 1..=seconds {
        if let Some(wait) = Duration::from_secs(second).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let parsed = control.lines.load(Ordering::Relaxed);
        behind = behind.max(written.load(Ordering::Relaxed).saturating_sub(parsed));
        let counts = SelfCounts::of(&control);
        let t = Instant::now();
        let snapshot = live.snapshot(Window::All, counts);
        all.push(t.elapsed());
        let host = snapshot.stats.hosts.first().map(|h| h.host.clone());
        let t = Instant::now();
        let recent =
            live.snapshot_with(Window::FiveMinutes, counts, host.as_deref(), &Listing::default());
        windowed.push(t.elapsed());
        shown_hosts = snapshot.stats.hosts.len();
        drop(recent);
        let t = Instant::now();
        app.set_snapshot(snapshot);
        terminal.draw(|frame| draw(frame, &app)).unwrap();
        drawn.push(t.elapsed());
    }
    writer.join().unwrap();
    let caught_up = Instant::now();
    while control.lines.load(Ordering::Relaxed) < lines {
        std::thread::sleep(Duration::from_millis(10));
    }
    let tail = caught_up.elapsed();
    control.stop.store(true, Ordering::Relaxed);
    collecting.join().unwrap();
    assert!(writing_done.load(Ordering::Relaxed));

    let stat = |name: &str, mut times: Vec<Duration>| {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name:<28} median {:>7.1} ms   worst {:>7.1} ms",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    };
    println!(
        "{seconds} s at {rate} lines/s, {hosts} hosts generated ({shown_hosts} seen), {} cores",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    stat("snapshot, all", all);
    stat("snapshot, 5m + host detail", windowed);
    stat("snapshot shown, drawn 160x48", drawn);
    println!(
        "ingest: at most {behind} lines behind the writer at a snapshot; the last line parsed \
         {:.2?} after the last was written",
        tail
    );
}
