//! Reading one input as chunks of whole lines, each tagged with the [`Source`] its offsets
//! belong to: a file to its end, a file followed like `tail -F` (appends, truncation in place,
//! rename rotation), a rotated file finished from a checkpoint, or stdin.
//!
//! The reader hands chunks to a callback and never parses; `collect` numbers them for its
//! workers. A stop request hands over every whole line read and returns; an unfinished last
//! line stays in the file for the next run (stdin, never resumed, hands it over too).

use std::cell::Cell;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, bounded};

use super::Input;
use super::kube::Instance;
use super::lines::{Chunk, ChunkReader};
use crate::ingest::{EncodingLock, now_ns};
use crate::parse::LogFormat;

/// How an input is read.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    pub chunk_bytes: usize,
    pub max_line: usize,
    /// Read to the end and return, instead of following the file.
    pub once: bool,
    /// How often a followed file is checked for new lines, truncation and rotation.
    pub poll: Duration,
}

/// One file from one open to its rotation or truncation, stdin, or one pod's container
/// instance: what the positions of its chunks refer to.
#[derive(Debug)]
pub struct Source {
    /// `file:<device>:<inode>`, `stdin:<start ns>` (never resumed), or a pod's
    /// [`Instance::source_id`].
    pub id: String,
    /// The path it was opened by, for people and for finding it after a rotation.
    pub path: Option<String>,
    /// Where reading started.
    pub base: u64,
    /// The pod it comes from, with the cluster's name when one was given.
    pub pod: Option<(Option<String>, Arc<Instance>)>,
}

impl Source {
    pub fn file(id: String, path: Option<String>, base: u64) -> Source {
        Source { id, path, base, pod: None }
    }
}

/// `file:<device>:<inode>`: what identifies a file across renames.
pub fn file_id(meta: &fs::Metadata) -> String {
    format!("file:{}:{}", meta.dev(), meta.ino())
}

pub(super) fn is_gzip(file: &mut File) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let gzip = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0))?;
    Ok(gzip)
}

/// Where reading a path starts: a rotated file to finish first, then the path's own offset.
#[derive(Debug, Default)]
pub struct Start {
    /// A rotated file and the offset to read it from.
    pub rotated: Option<(PathBuf, u64)>,
    pub offset: u64,
    /// The encoding the checkpoint's file was locked to, for the file read first.
    pub lock: EncodingLock,
    pub warning: Option<String>,
}

/// A file next to `path` named `<name>.<anything>` with the identity `id`.
pub fn find_rotated(path: &Path, id: &str) -> io::Result<Option<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(None);
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{name}.");
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let sibling = entry.file_name();
        if !sibling.to_str().is_some_and(|s| s.starts_with(&prefix)) {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_file() && file_id(&meta) == id {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// Why reading stopped early.
#[derive(Debug)]
pub enum ReadFailure {
    Io(io::Error),
    Gzip,
}

impl From<io::Error> for ReadFailure {
    fn from(e: io::Error) -> Self {
        ReadFailure::Io(e)
    }
}

/// Receives each chunk with the encoding decided for its source; false means nobody takes
/// chunks any more, and reading stops.
pub type Hand<'a> = dyn FnMut(Chunk, Option<LogFormat>, &Arc<Source>) -> bool + 'a;

/// Cuts an input into chunks for a [`Hand`].
pub struct Reader<'a> {
    options: ReadOptions,
    stop: &'a AtomicBool,
    /// Bytes read, for progress displays.
    bytes: &'a AtomicU64,
    hand: &'a mut Hand<'a>,
    /// Buffers of handed-over chunks, back for reuse.
    spare: crossbeam_channel::Receiver<Vec<u8>>,
    /// The hand refused a chunk: stop reading.
    closed: Cell<bool>,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("options", &self.options).finish_non_exhaustive()
    }
}

type Spare = Box<dyn FnMut() -> Option<Vec<u8>> + Send>;

/// A file (or stdin) being read: its source, chunk reader and encoding.
struct Open<R> {
    input: R,
    source: Arc<Source>,
    chunks: ChunkReader<Spare>,
    lock: EncodingLock,
}

impl<R: Read> Open<R> {
    /// Where the input stands: the source offset of the next byte to read.
    fn position(&self) -> u64 {
        self.source.base + self.chunks.bytes_read()
    }
}

impl<'a> Reader<'a> {
    pub fn new(
        options: ReadOptions,
        stop: &'a AtomicBool,
        bytes: &'a AtomicU64,
        hand: &'a mut Hand<'a>,
        spare: crossbeam_channel::Receiver<Vec<u8>>,
    ) -> Self {
        Reader { options, stop, bytes, hand, spare, closed: Cell::new(false) }
    }

    fn open<R: Read>(&self, input: R, id: String, path: Option<String>, base: u64) -> Open<R> {
        let spare = self.spare.clone();
        let spare: Spare = Box::new(move || spare.try_recv().ok());
        Open {
            input,
            source: Arc::new(Source::file(id, path, base)),
            chunks: ChunkReader::new(self.options.chunk_bytes, self.options.max_line, spare),
            lock: EncodingLock::default(),
        }
    }

    fn stopping(&self) -> bool {
        self.closed.get() || self.stop.load(Ordering::Relaxed)
    }

    /// Reads `input` from `start` to its end (`once`, stdin) or until a stop; warnings (a
    /// truncation) are added to `warnings`.
    pub fn run(
        &mut self,
        input: &Input,
        start: Start,
        warnings: &mut Vec<String>,
    ) -> Result<(), ReadFailure> {
        match input {
            Input::Path(path) => {
                let mut lock = start.lock;
                if let Some((rotated, offset)) = &start.rotated {
                    self.finish_rotated(rotated, path, *offset, std::mem::take(&mut lock))?;
                }
                if self.options.once {
                    self.read_file_once(path, start.offset, lock)
                } else {
                    self.follow(path, start.offset, lock, warnings)
                }
            }
            Input::Stdin => self.read_stdin(),
            Input::Memory { name, .. } => {
                let id = format!("memory:{name}");
                let mut open = self.open(input.open()?, id, Some(name.clone()), 0);
                self.drain(&mut open, true)?;
                self.finish(open);
                Ok(())
            }
        }
    }

    /// Reads what `open` has now, handing over whole lines, until a stop if `stoppable`;
    /// returns the bytes read.
    fn drain<R: Read>(&mut self, open: &mut Open<R>, stoppable: bool) -> io::Result<u64> {
        let Open { input, source, chunks, lock } = open;
        let no_stop = AtomicBool::new(false);
        let stop = if stoppable { self.stop } else { &no_stop };
        let mut input = Until { inner: input, closed: &self.closed, stop, bytes: self.bytes };
        let (hand, closed, max_line) = (&mut *self.hand, &self.closed, self.options.max_line);
        chunks.read_available(&mut input, &mut |chunk| {
            send(hand, closed, chunk, lock, source, max_line);
        })
    }

    /// Hands over what is left of a complete input, an unfinished last line included.
    fn finish<R: Read>(&mut self, open: Open<R>) {
        let Open { source, chunks, mut lock, .. } = open;
        let (hand, closed, max_line) = (&mut *self.hand, &self.closed, self.options.max_line);
        chunks.finish(&mut |chunk| send(hand, closed, chunk, &mut lock, &source, max_line));
    }

    fn open_file(&self, path: &Path, offset: u64) -> Result<Open<File>, ReadFailure> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let offset = if meta.len() < offset { 0 } else { offset };
        if is_gzip(&mut file)? {
            return Err(ReadFailure::Gzip);
        }
        file.seek(SeekFrom::Start(offset))?;
        let path = Some(path.display().to_string());
        Ok(self.open(file, file_id(&meta), path, offset))
    }

    /// A file that was rotated away while no collector ran: read from the checkpoint to its
    /// end, under the name the collector knew it by.
    fn finish_rotated(
        &mut self,
        rotated: &Path,
        path: &Path,
        offset: u64,
        lock: EncodingLock,
    ) -> Result<(), ReadFailure> {
        let mut open = self.open_file(rotated, offset)?;
        open.lock = lock;
        let (id, base) = (open.source.id.clone(), open.source.base);
        open.source = Arc::new(Source::file(id, Some(path.display().to_string()), base));
        Ok(self.read_to_end(open)?)
    }

    /// Reads a complete file to its end; on a stop, its unfinished last line stays for the
    /// next run.
    fn read_to_end<R: Read>(&mut self, mut open: Open<R>) -> io::Result<()> {
        self.drain(&mut open, true)?;
        if !self.stopping() {
            self.finish(open);
        }
        Ok(())
    }

    /// Reads `path` from `offset` to its end; `lock` is its encoding as far as known.
    fn read_file_once(
        &mut self,
        path: &Path,
        offset: u64,
        lock: EncodingLock,
    ) -> Result<(), ReadFailure> {
        let mut file = File::open(path)?;
        if is_gzip(&mut file)? {
            // Compressed: no seeking, so skip the committed part by reading it.
            let mut reader = Input::Path(path.to_path_buf()).open()?;
            let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())?;
            let (reader, base) = if skipped < offset {
                (Input::Path(path.to_path_buf()).open()?, 0)
            } else {
                (reader, offset)
            };
            let id = file_id(&file.metadata()?);
            let mut open = self.open(reader, id, Some(path.display().to_string()), base);
            open.lock = lock;
            return Ok(self.read_to_end(open)?);
        }
        let mut open = self.open_file(path, offset)?;
        open.lock = lock;
        Ok(self.read_to_end(open)?)
    }

    /// `tail -F`: reads what is appended, starts over when the file is truncated, and when
    /// another file takes the path (rotation), finishes the old one and reads the new one from
    /// its start. A missing path is waited for. `lock` is the encoding of the file at
    /// `offset`, as far as known.
    fn follow(
        &mut self,
        path: &Path,
        mut offset: u64,
        mut lock: EncodingLock,
        warnings: &mut Vec<String>,
    ) -> Result<(), ReadFailure> {
        let mut current: Option<Open<File>> = None;
        while !self.stopping() {
            let Some(open) = current.as_mut() else {
                match self.open_file(path, offset) {
                    Ok(mut open) => {
                        open.lock = std::mem::take(&mut lock);
                        current = Some(open);
                    }
                    Err(ReadFailure::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                        self.sleep();
                    }
                    Err(e) => return Err(e),
                }
                offset = 0;
                continue;
            };
            if self.drain(open, true)? > 0 || self.stopping() {
                continue;
            }
            let position = open.position();
            if open.input.metadata()?.len() < position {
                // Truncated in place (copytruncate): what was beyond is gone; start over.
                warnings.push(format!(
                    "{} was truncated at byte {position}; reading it again from its start",
                    path.display()
                ));
                let mut old = current.take().expect("checked above");
                old.input.seek(SeekFrom::Start(0))?;
                let path = old.source.path.clone();
                let id = old.source.id.clone();
                let (file, lock) = (old.input.try_clone()?, std::mem::take(&mut old.lock));
                self.finish(old);
                let mut fresh = self.open(file, id, path, 0);
                fresh.lock = lock;
                current = Some(fresh);
                continue;
            }
            let replaced = match fs::metadata(path) {
                Ok(meta) => file_id(&meta) != open.source.id,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e.into()),
            };
            if replaced {
                // Rotated: take what the writer added before it moved on, then switch.
                self.drain(open, true)?;
                if self.stopping() {
                    continue;
                }
                let old = current.take().expect("checked above");
                self.finish(old);
                continue;
            }
            self.sleep();
        }
        Ok(())
    }

    /// Stdin, through a thread that owns the blocking reads, so a stop is seen even while no
    /// line comes. Stdin is never resumed, so on a stop whatever was read is handed over.
    fn read_stdin(&mut self) -> Result<(), ReadFailure> {
        let (tx, rx) = bounded::<io::Result<Vec<u8>>>(4);
        std::thread::spawn(move || {
            let mut stdin = io::stdin().lock();
            loop {
                let mut block = vec![0u8; 256 * 1024];
                let read = match stdin.read(&mut block) {
                    Ok(0) => return,
                    Ok(n) => {
                        block.truncate(n);
                        Ok(block)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                if tx.send(read).is_err() {
                    return;
                }
            }
        });
        let piped = Piped { rx, pending: Vec::new(), at: 0, poll: self.options.poll, eof: false };
        let id = format!("stdin:{}", now_ns());
        let mut open = self.open(piped, id, None, 0);
        while !open.input.eof && !self.closed.get() {
            if self.stop.load(Ordering::Relaxed) {
                // Take what already came through the pipe, then stop waiting for more.
                open.input.poll = Duration::ZERO;
                self.drain(&mut open, false)?;
                break;
            }
            self.drain(&mut open, true)?;
        }
        self.finish(open);
        Ok(())
    }

    fn sleep(&self) {
        let until = Instant::now() + self.options.poll;
        while !self.stopping() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20).min(self.options.poll));
        }
    }
}

/// Hands a chunk over, deciding the source's encoding from its first lines.
fn send(
    hand: &mut Hand<'_>,
    closed: &Cell<bool>,
    chunk: Chunk,
    lock: &mut EncodingLock,
    source: &Arc<Source>,
    max_line: usize,
) {
    lock.observe_chunk(&chunk, max_line);
    if !hand(chunk, lock.encoding(), source) {
        closed.set(true);
    }
}

/// A reader that reports "nothing more for now" (0) once a stop is requested, and counts the
/// bytes it reads as they come (for progress displays).
pub(super) struct Until<'a, R> {
    pub(super) inner: &'a mut R,
    pub(super) closed: &'a Cell<bool>,
    pub(super) stop: &'a AtomicBool,
    pub(super) bytes: &'a AtomicU64,
}

impl<R: Read> Read for Until<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.closed.get() || self.stop.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Stdin's blocks as they arrive: 0 after `poll` without any ("nothing for now"), or at the
/// end (`eof`).
struct Piped {
    rx: crossbeam_channel::Receiver<io::Result<Vec<u8>>>,
    pending: Vec<u8>,
    at: usize,
    poll: Duration,
    eof: bool,
}

impl Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.pending.len() {
            match self.rx.recv_timeout(self.poll) {
                Ok(block) => (self.pending, self.at) = (block?, 0),
                Err(RecvTimeoutError::Timeout) => return Ok(0),
                Err(RecvTimeoutError::Disconnected) => {
                    self.eof = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
