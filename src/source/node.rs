//! Node mode: the CRI log files the kubelet keeps on each node, read directly (a DaemonSet
//! mounts `/var/log/pods`), for clusters where the log API is too slow.
//!
//! Layout: the container runtime writes `<root>/<namespace>_<pod>_<uid>/<container>/N.log`,
//! N being the container's restart count. The kubelet rotates it by size: it compresses older
//! rotated files (`N.log.<YYYYMMDD-HHMMSS>` becomes `….gz` through a `….gz.tmp` file), renames
//! `N.log` to `N.log.<YYYYMMDD-HHMMSS>` and has the runtime open a new `N.log`.
//!
//! Each container instance (one N) is one stream. Its files are read oldest first; the current
//! one is followed through its open descriptor, so a rotated file is drained to its end before
//! the next one is read, even when it was renamed and compressed meanwhile. A stream's cursor
//! names a file by its first line ([`FileKey`]: a rename or compression keeps it) and a byte
//! offset in its uncompressed text, so a restarted collector finds its place in `N.log`,
//! `N.log.<stamp>` or `N.log.<stamp>.gz` alike.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;

use super::follow::{ReadOptions, Source, Until, file_id, is_gzip};
use super::kube::Instance;
use super::lines::{Chunk, ChunkReader};
use crate::ingest::EncodingLock;
use crate::parse::{LogFormat, frame};
use crate::store::split_cursor;

/// Which container logs a node reader follows.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The kubelet's pod log directory, `/var/log/pods`.
    pub root: PathBuf,
    /// Namespaces to read; empty means all.
    pub namespaces: Vec<String>,
    /// Container names to read (waypoints and ztunnel run `istio-proxy`).
    pub containers: Vec<String>,
    /// How often the tree is scanned for new pods, restarts and removals.
    pub rescan: Duration,
}

/// One container instance's log files: `<root>/<namespace>_<pod>_<uid>/<container>/N.log*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogDir {
    pub instance: Instance,
    pub uid: String,
    pub dir: PathBuf,
}

impl LogDir {
    /// The name its cursor is stored under: `cri:<namespace>/<pod>/<uid>/<container>#<N>`.
    pub fn stream_id(&self) -> String {
        let Instance { namespace, pod, container, restart } = &self.instance;
        format!("cri:{namespace}/{pod}/{}/{container}#{restart}", self.uid)
    }

    fn current(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.instance.restart))
    }
}

/// Splits a pod directory's name, `<namespace>_<pod>_<uid>` (neither may hold `_`).
fn pod_dir_name(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.split('_');
    let parts = (parts.next()?, parts.next()?, parts.next()?, parts.next());
    match parts {
        (ns, pod, uid, None) if !ns.is_empty() && !pod.is_empty() && !uid.is_empty() => {
            Some((ns, pod, uid))
        }
        _ => None,
    }
}

/// The restart count a log file belongs to: `N.log`, `N.log.<stamp>`, `N.log.<stamp>.gz`.
fn restart_of(file_name: &str) -> Option<i32> {
    let (n, rest) = file_name.split_once(".log")?;
    (rest.is_empty() || rest.starts_with('.')).then_some(())?;
    n.parse().ok().filter(|n| *n >= 0)
}

/// Every container instance under `options.root` that `options` selects, with whether a newer
/// instance of the same container exists (the older one writes no more).
pub fn discover(options: &NodeOptions) -> io::Result<Vec<(LogDir, bool)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(&options.root)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some((namespace, pod, uid)) = name.to_str().and_then(pod_dir_name) else {
            continue;
        };
        if !options.namespaces.is_empty() && !options.namespaces.iter().any(|n| n == namespace) {
            continue;
        }
        for container in &options.containers {
            let dir = entry.path().join(container);
            let restarts: BTreeSet<i32> = match fs::read_dir(&dir) {
                Ok(files) => files
                    .filter_map(|f| f.ok()?.file_name().to_str().and_then(restart_of))
                    .collect(),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let newest = restarts.last().copied();
            for restart in restarts {
                let instance = Instance {
                    namespace: namespace.to_owned(),
                    pod: pod.to_owned(),
                    container: container.clone(),
                    restart,
                };
                let log_dir = LogDir { instance, uid: uid.to_owned(), dir: dir.clone() };
                found.push((log_dir, Some(restart) != newest));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// One of an instance's log files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogFile {
    path: PathBuf,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `N.log`, which the runtime writes.
    Current,
    /// `N.log.<stamp>`: complete once a newer file exists.
    Rotated,
    /// `N.log.<stamp>.gz`.
    Compressed,
}

/// An instance's files, oldest first: rotated ones by their stamp (a file both plain and
/// compressed, mid-compression, once, plain), then `N.log`. Compressions in progress (`.tmp`)
/// and empty rotated files are left out.
fn files_of(dir: &LogDir) -> io::Result<Vec<LogFile>> {
    let current_name = format!("{}.log", dir.instance.restart);
    let prefix = format!("{current_name}.");
    let mut rotated: BTreeMap<String, LogFile> = BTreeMap::new();
    let mut current = None;
    let entries = match fs::read_dir(&dir.dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == current_name {
            current = Some(LogFile { path: entry.path(), kind: Kind::Current });
            continue;
        }
        let Some(rest) = name.strip_prefix(&prefix) else { continue };
        if rest.ends_with(".tmp") || !entry.metadata().is_ok_and(|m| m.len() > 0) {
            continue;
        }
        let (stamp, kind) = match rest.strip_suffix(".gz") {
            Some(stamp) => (stamp, Kind::Compressed),
            None => (rest, Kind::Rotated),
        };
        let file = LogFile { path: entry.path(), kind };
        let keep_plain = rotated.get(stamp).is_some_and(|f| f.kind == Kind::Rotated);
        if !keep_plain {
            rotated.insert(stamp.to_owned(), file);
        }
    }
    Ok(rotated.into_values().chain(current).collect())
}

/// What identifies a log file across its rename and compression: its first line's timestamp
/// and a hash of that line's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKey {
    pub ts_ns: i64,
    pub hash: u64,
}

/// Bytes of a first line that go into its [`FileKey`]: the timestamp, stream and tag, and
/// enough of the message.
const KEY_BYTES: usize = 256;

impl FileKey {
    /// The key of a file whose first line (without its newline) starts with `head`.
    fn of_first_line(head: &[u8]) -> FileKey {
        let head = &head[..head.len().min(KEY_BYTES)];
        // FNV-1a: stable across builds and platforms, as stored cursors need.
        let hash = head.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        FileKey { ts_ns: frame(head).ts_ns.unwrap_or(0), hash }
    }

    /// The key of the file a chunk read from its start belongs to.
    fn of_chunk(chunk: &Chunk) -> FileKey {
        let bytes = match chunk {
            Chunk::Lines { buf, len, .. } => &buf[..*len],
            Chunk::Single { line, .. } => &line[..],
        };
        let first = memchr::memchr(b'\n', bytes).map_or(bytes, |end| &bytes[..end]);
        FileKey::of_first_line(first)
    }

    /// The key of `file`, or None while its first line is unfinished.
    fn of_file(file: &LogFile) -> io::Result<Option<FileKey>> {
        let mut input = open_plain(file)?;
        let mut head = Vec::with_capacity(KEY_BYTES);
        (&mut input).take(KEY_BYTES as u64).read_to_end(&mut head)?;
        Ok(match memchr::memchr(b'\n', &head) {
            Some(end) => Some(FileKey::of_first_line(&head[..end])),
            None if head.len() == KEY_BYTES => Some(FileKey::of_first_line(&head)),
            None => None,
        })
    }
}

/// Where a stream stands: a file (by its key) and the byte offset after the last line taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCursor {
    pub key: FileKey,
    pub offset: u64,
}

impl std::fmt::Display for FileCursor {
    /// `<first line's ts_ns>.<hash>@<offset>`, as commits store it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:016x}@{}", self.key.ts_ns, self.key.hash, self.offset)
    }
}

impl std::str::FromStr for FileCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a CRI file cursor (<ts_ns>.<hash>@<offset>)");
        let (key, offset) = text.rsplit_once('@').ok_or_else(bad)?;
        let (ts, hash) = key.split_once('.').ok_or_else(bad)?;
        Ok(FileCursor {
            key: FileKey {
                ts_ns: ts.parse().map_err(|_| bad())?,
                hash: u64::from_str_radix(hash, 16).map_err(|_| bad())?,
            },
            offset: offset.parse().map_err(|_| bad())?,
        })
    }
}

/// A file's uncompressed text from its start.
fn open_plain(file: &LogFile) -> io::Result<Box<dyn Read>> {
    let mut handle = File::open(&file.path)?;
    Ok(if is_gzip(&mut handle)? {
        Box::new(MultiGzDecoder::new(BufReader::new(handle)))
    } else {
        Box::new(handle)
    })
}

/// Receives each chunk with its encoding, its instance's source and the stream's cursor after
/// it; false means nobody takes chunks any more, and reading stops.
pub type NodeHand<'a> = dyn FnMut(Chunk, Option<LogFormat>, &Arc<Source>, String) -> bool + 'a;

type Spare = Box<dyn FnMut() -> Option<Vec<u8>>>;

/// Most container instances followed at once; more are left out, with a warning. (A kubelet
/// runs at most 110 pods by default, 250 as commonly configured.)
const MAX_FOLLOWERS: usize = 1024;

/// The most a follower reads into one chunk: each open file keeps a buffer of about this
/// plus a read's size, so many followers stay small.
pub const NODE_CHUNK_BYTES: usize = 128 * 1024;

/// Reads the selected containers' log files under a node's pod log directory.
#[derive(Debug)]
pub struct NodeReader<'a> {
    pub options: NodeOptions,
    pub read: ReadOptions,
    pub cluster: Option<String>,
    /// Where each stream was left, from the store: stream id to cursor.
    pub cursors: HashMap<String, String>,
    pub stop: &'a AtomicBool,
    /// Bytes read, for progress displays.
    pub bytes: &'a AtomicU64,
    pub spare: crossbeam_channel::Receiver<Vec<u8>>,
}

/// What one follower needs to read and hand over.
struct Io<'r, 'h> {
    read: ReadOptions,
    stop: &'r AtomicBool,
    bytes: &'r AtomicU64,
    closed: &'r Cell<bool>,
    hand: &'r mut NodeHand<'h>,
    spare: &'r crossbeam_channel::Receiver<Vec<u8>>,
    warnings: &'r mut Vec<String>,
}

impl Io<'_, '_> {
    fn stopping(&self) -> bool {
        self.closed.get() || self.stop.load(Ordering::Relaxed)
    }
}

impl NodeReader<'_> {
    /// Follows every selected instance until a stop (or, with `once`, reads every file to its
    /// end and returns). Warnings (a checkpoint's file rotated away, an unreadable instance)
    /// are added to `warnings`.
    pub fn run(self, hand: &mut NodeHand<'_>, warnings: &mut Vec<String>) -> io::Result<()> {
        let closed = Cell::new(false);
        let mut io = Io {
            read: self.read,
            stop: self.stop,
            bytes: self.bytes,
            closed: &closed,
            hand,
            spare: &self.spare,
            warnings,
        };
        let mut followers: BTreeMap<String, Follower> = BTreeMap::new();
        let mut scanned: Option<Instant> = None;
        let mut left_out = 0usize;
        while !io.stopping() {
            if scanned.is_none_or(|t| t.elapsed() >= self.options.rescan) {
                let found = discover(&self.options)?;
                let present: BTreeSet<String> = found.iter().map(|(d, _)| d.stream_id()).collect();
                followers.retain(|id, f| present.contains(id) || !f.done);
                for follower in followers.values_mut() {
                    follower.ended |= !present.contains(&follower.dir.stream_id());
                }
                let mut missed = 0;
                for (dir, superseded) in found {
                    let id = dir.stream_id();
                    if let Some(follower) = followers.get_mut(&id) {
                        follower.ended |= superseded;
                    } else if followers.len() < MAX_FOLLOWERS {
                        let cursor = self.cursors.get(&id).and_then(|stored| {
                            let (cursor, encoding) = split_cursor(stored);
                            Some((cursor.parse().ok()?, EncodingLock::resumed(encoding)))
                        });
                        let mut follower = Follower::new(dir, &self.cluster, cursor, superseded);
                        follower.once = self.read.once;
                        followers.insert(id, follower);
                    } else {
                        missed += 1;
                    }
                }
                left_out = left_out.max(missed);
                scanned = Some(Instant::now());
            }
            let mut progress = false;
            for follower in followers.values_mut() {
                if io.stopping() {
                    break;
                }
                progress |= follower.step(&mut io);
            }
            if self.read.once && followers.values().all(|f| f.done) {
                break;
            }
            if !progress {
                sleep(&io, self.read.poll);
            }
        }
        if left_out > 0 {
            io.warnings.push(format!(
                "{left_out} container instances were not followed: at most {MAX_FOLLOWERS} are"
            ));
        }
        Ok(())
    }
}

fn sleep(io: &Io<'_, '_>, poll: Duration) {
    let until = Instant::now() + poll;
    while !io.stopping() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20).min(poll));
    }
}

/// Which file a follower opens next.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// The oldest file there is (a stream never read).
    Oldest,
    /// The file a stored cursor names, from its offset.
    At(FileCursor),
    /// The file after the one with this key, which was read to its end.
    After(FileKey),
    /// The current file from its start: it was truncated in place.
    CurrentFromStart,
}

/// A file being read.
struct OpenLog {
    input: Box<dyn Read>,
    file: LogFile,
    /// `file:<device>:<inode>`: tells when another file takes the current path.
    id: String,
    /// Known once its first line is.
    key: Option<FileKey>,
    base: u64,
    chunks: ChunkReader<Spare>,
}

/// One container instance being followed.
struct Follower {
    dir: LogDir,
    source: Arc<Source>,
    next: Next,
    open: Option<OpenLog>,
    lock: EncodingLock,
    /// A newer instance exists or the pod's directory is gone: no more lines will come.
    ended: bool,
    /// Read what is there and stop (`--once`): the current file's unfinished last line, still
    /// being written, is left for the next run.
    once: bool,
    /// Read to the end of its last file after it ended, or failed (with a warning).
    done: bool,
}

impl Follower {
    /// A follower of `dir`, from a stored cursor (with its stream's encoding) or from the
    /// oldest file.
    fn new(
        dir: LogDir,
        cluster: &Option<String>,
        cursor: Option<(FileCursor, EncodingLock)>,
        ended: bool,
    ) -> Self {
        let source = Source {
            id: dir.stream_id(),
            path: Some(dir.current().display().to_string()),
            base: 0,
            pod: Some((cluster.clone(), Arc::new(dir.instance.clone()))),
        };
        let (next, lock) = match cursor {
            Some((cursor, lock)) => (Next::At(cursor), lock),
            None => (Next::Oldest, EncodingLock::default()),
        };
        let source = Arc::new(source);
        Follower { dir, source, next, open: None, lock, ended, once: false, done: false }
    }

    /// Reads what there is; true when it read something or moved to another file. An error
    /// ends this follower with a warning: other instances go on.
    fn step(&mut self, io: &mut Io<'_, '_>) -> bool {
        if self.done {
            return false;
        }
        match self.try_step(io) {
            Ok(progress) => progress,
            Err(e) => {
                io.warnings.push(format!("stopped reading {}: {e}", self.dir.current().display()));
                self.done = true;
                false
            }
        }
    }

    fn try_step(&mut self, io: &mut Io<'_, '_>) -> io::Result<bool> {
        if self.open.is_none() {
            self.open = self.open_next(io)?;
            if self.open.is_none() {
                self.done = self.ended || self.once;
                return Ok(false);
            }
        }
        let open = self.open.as_mut().expect("opened above");
        if drain(open, &self.source, &mut self.lock, io)? > 0 {
            return Ok(true);
        }
        if io.stopping() {
            return Ok(false);
        }
        let mut truncated = false;
        let complete = match open.file.kind {
            Kind::Rotated | Kind::Compressed => true,
            Kind::Current => match fs::metadata(&open.file.path) {
                Ok(meta) if meta.len() < open.base + open.chunks.bytes_read() => {
                    io.warnings.push(format!(
                        "{} was truncated in place; reading it again from its start",
                        open.file.path.display()
                    ));
                    truncated = true;
                    true
                }
                // Another file took the path: this one was rotated, and the runtime writes
                // the new one since.
                Ok(meta) => file_id(&meta) != open.id || self.ended,
                // Between the kubelet's rename and the runtime's reopen.
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.ended,
                Err(e) => return Err(e),
            },
        };
        if !complete {
            if self.once {
                self.open = None;
                self.done = true;
            }
            return Ok(false);
        }
        // What the writer added before it moved on.
        drain(open, &self.source, &mut self.lock, io)?;
        if io.stopping() {
            return Ok(false);
        }
        let mut open = self.open.take().expect("opened above");
        let (source, lock) = (&self.source, &mut self.lock);
        open.chunks.finish(&mut |chunk| send(chunk, &mut open.key, open.base, source, lock, io));
        match open.key {
            _ if truncated => self.next = Next::CurrentFromStart,
            Some(key) => self.next = Next::After(key),
            // An empty current file, and no more lines will come (or none are waited for).
            None if self.ended || self.once => self.done = true,
            // An empty file replaced: the next choice skips empty rotated files.
            None => {}
        }
        Ok(true)
    }

    /// Opens the file `next` names, if it is there yet.
    fn open_next(&mut self, io: &mut Io<'_, '_>) -> io::Result<Option<OpenLog>> {
        let files = files_of(&self.dir)?;
        let mut keys = Vec::with_capacity(files.len());
        for file in &files {
            match FileKey::of_file(file) {
                Ok(key) => keys.push(key),
                // Renamed or compressed since the listing: the next listing has it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let after = |ts_ns: i64| keys.iter().position(|k| k.is_none_or(|k| k.ts_ns > ts_ns));
        let (index, offset) = match self.next {
            Next::Oldest => (0, 0),
            Next::CurrentFromStart => (files.len().saturating_sub(1), 0),
            Next::At(cursor) => match keys.iter().position(|k| *k == Some(cursor.key)) {
                Some(index) => (index, cursor.offset),
                None => {
                    let index = after(cursor.key.ts_ns).unwrap_or(files.len().saturating_sub(1));
                    if let Some(file) = files.get(index) {
                        io.warnings.push(format!(
                            "the file {} had reached is gone (rotated away while no collector \
                             ran): reading on from {}; lines written in between are not in \
                             the store",
                            self.source.id,
                            file.path.display()
                        ));
                    }
                    (index, 0)
                }
            },
            Next::After(key) => match keys.iter().position(|k| *k == Some(key)) {
                Some(index) => (index + 1, 0),
                None => (after(key.ts_ns).unwrap_or(files.len()), 0),
            },
        };
        let Some(file) = files.get(index) else { return Ok(None) };
        let mut handle = match File::open(&file.path) {
            Ok(handle) => handle,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = file_id(&handle.metadata()?);
        let (input, base): (Box<dyn Read>, u64) = if is_gzip(&mut handle)? {
            let mut input = MultiGzDecoder::new(BufReader::new(handle));
            let skipped = io::copy(&mut (&mut input).take(offset), &mut io::sink())?;
            (Box::new(input), skipped)
        } else {
            let offset = offset.min(handle.metadata()?.len());
            handle.seek(SeekFrom::Start(offset))?;
            (Box::new(handle), offset)
        };
        let spare = io.spare.clone();
        let spare: Spare = Box::new(move || spare.try_recv().ok());
        let chunks = ChunkReader::new(io.read.chunk_bytes, io.read.max_line, spare);
        let key = keys[index];
        if let Next::CurrentFromStart = self.next {
            // Read again from its start, it is the file after the one before it.
            self.next =
                index.checked_sub(1).and_then(|i| keys[i]).map_or(Next::Oldest, Next::After);
        }
        Ok(Some(OpenLog { input, file: file.clone(), id, key, base, chunks }))
    }
}

/// Reads what `open` has now and hands over its whole lines; returns the bytes read.
fn drain(
    open: &mut OpenLog,
    source: &Arc<Source>,
    lock: &mut EncodingLock,
    io: &mut Io<'_, '_>,
) -> io::Result<u64> {
    let OpenLog { input, key, base, chunks, .. } = open;
    let (closed, stop, bytes) = (io.closed, io.stop, io.bytes);
    let mut input = Until { inner: input, closed, stop, bytes };
    chunks.read_available(&mut input, &mut |chunk| send(chunk, key, *base, source, lock, io))
}

/// Hands a chunk over with the stream's cursor after it.
fn send(
    chunk: Chunk,
    key: &mut Option<FileKey>,
    base: u64,
    source: &Arc<Source>,
    lock: &mut EncodingLock,
    io: &mut Io<'_, '_>,
) {
    let key = *key.get_or_insert_with(|| FileKey::of_chunk(&chunk));
    let cursor = FileCursor { key, offset: base + chunk.end_offset() };
    lock.observe_chunk(&chunk, io.read.max_line);
    if !(io.hand)(chunk, lock.encoding(), source, cursor.to_string()) {
        io.closed.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_directories_and_log_names_are_taken_apart() {
        assert_eq!(
            pod_dir_name("istio-egress_waypoint-7c9d_0f1e-22"),
            Some(("istio-egress", "waypoint-7c9d", "0f1e-22"))
        );
        assert_eq!(pod_dir_name("a_b"), None);
        assert_eq!(pod_dir_name("a_b_c_d"), None);
        assert_eq!(restart_of("0.log"), Some(0));
        assert_eq!(restart_of("3.log.20261126-220000.gz"), Some(3));
        assert_eq!(restart_of("3.log.20261126-220000.gz.tmp"), Some(3));
        assert_eq!(restart_of("x.log"), None);
        assert_eq!(restart_of("0.logs"), None);
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let cursor =
            FileCursor { key: FileKey { ts_ns: 1_764_194_400_123, hash: 0xabc }, offset: 77 };
        assert_eq!(cursor.to_string().parse::<FileCursor>(), Ok(cursor));
        assert!("1/2".parse::<FileCursor>().unwrap_err().contains("not a CRI file cursor"));
        assert!("1.zz@3".parse::<FileCursor>().is_err());
    }

    #[test]
    fn a_file_and_its_compressed_copy_share_a_key_and_order_by_stamp() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ns_pod_uid/istio-proxy");
        fs::create_dir_all(&log).unwrap();
        let first = "2026-11-26T22:00:00.000000001Z stdout F {\"a\":1}\n";
        fs::write(log.join("0.log.20261126-220000"), first).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(first.as_bytes()).unwrap();
        fs::write(log.join("0.log.20261126-220000.gz"), gz.finish().unwrap()).unwrap();
        fs::write(log.join("0.log.20261126-210000.gz.tmp"), b"partial").unwrap();
        fs::write(log.join("0.log.20261126-230000"), "2026-11-26T23:00:00Z stdout F {}\n").unwrap();
        fs::write(log.join("0.log"), "2026-11-26T23:30:00Z stdout P {").unwrap();
        fs::write(log.join("1.log"), "").unwrap();
        let options = NodeOptions {
            root: dir.path().to_path_buf(),
            namespaces: Vec::new(),
            containers: vec!["istio-proxy".into()],
            rescan: Duration::from_secs(1),
        };
        let found = discover(&options).unwrap();
        let ended: Vec<_> = found.iter().map(|(d, ended)| (d.stream_id(), *ended)).collect();
        assert_eq!(
            ended,
            [
                ("cri:ns/pod/uid/istio-proxy#0".into(), true),
                ("cri:ns/pod/uid/istio-proxy#1".into(), false)
            ]
        );
        let files = files_of(&found[0].0).unwrap();
        let names: Vec<_> =
            files.iter().map(|f| f.path.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["0.log.20261126-220000", "0.log.20261126-230000", "0.log"]);
        fs::remove_file(log.join("0.log.20261126-220000")).unwrap();
        let files = files_of(&found[0].0).unwrap();
        assert_eq!(files[0].kind, Kind::Compressed);
        let key = FileKey::of_file(&files[0]).unwrap().unwrap();
        assert_eq!(key, FileKey::of_first_line(first.trim_end().as_bytes()));
        assert_eq!(key.ts_ns, 1_795_730_400_000_000_001);
        assert_eq!(FileKey::of_file(&files[2]).unwrap(), None, "first line unfinished");
    }
}
