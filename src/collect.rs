//! `collect`: an input read to its end into the store, committed every `commit_rows` rows, and
//! resumed from the store's checkpoint, so running it again never duplicates a record.
//!
//! Following a growing file (`tail -F`) and stopping on signals join in the next step; this is
//! the batch-import form (`collect --once`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use crossbeam_channel::bounded;

use crate::batch::LineContext;
use crate::ingest::{BatchSink, EncodingLock, TableBatch, now_ns, process_line};
use crate::parse::LogFormat;
use crate::source::Input;
use crate::source::lines::{Chunk, read_chunks};
use crate::store::{ACCESS_LOG, Checkpoint, REJECTS, Store, StoreError};

/// Settings of a collect run.
#[derive(Debug, Clone, Copy)]
pub struct CollectConfig {
    pub max_line: usize,
    pub chunk_bytes: usize,
    /// Rows per Arrow batch.
    pub batch_rows: usize,
    /// Rows after which a commit is made (at the next chunk boundary).
    pub commit_rows: usize,
    /// Parsing threads.
    pub workers: usize,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            max_line: crate::source::lines::DEFAULT_MAX_LINE,
            chunk_bytes: 1 << 20,
            batch_rows: 64 * 1024,
            commit_rows: 1024 * 1024,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// What a collect run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectSummary {
    /// Bytes of the input already in the store, skipped.
    pub resumed_at: u64,
    pub bytes: u64,
    pub records: usize,
    pub rejects: usize,
    pub commits: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {name}")]
    Read {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The identity of an input that survives renames (log rotation): device and inode for files.
/// Stdin has none, so it is never resumed.
fn source_id(input: &Input) -> io::Result<Option<String>> {
    match input {
        Input::Path(path) => {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path)?;
            Ok(Some(format!("file:{}:{}", meta.dev(), meta.ino())))
        }
        Input::Stdin => Ok(None),
        Input::Memory { name, .. } => Ok(Some(format!("memory:{name}"))),
    }
}

/// Opens `input` positioned at `offset` of its (decompressed) content: a seek for plain files,
/// reading and discarding otherwise. Returns the reader and the offset really reached (0 when
/// the file is now shorter than the checkpoint: it was truncated and is read from the start).
fn open_at(input: &Input, offset: u64) -> io::Result<(Box<dyn Read + Send>, u64)> {
    if offset == 0 {
        return Ok((input.open()?, 0));
    }
    if let Input::Path(path) = input {
        let mut file = File::open(path)?;
        let mut magic = [0u8; 2];
        let plain = file.read(&mut magic)? < 2 || magic != [0x1f, 0x8b];
        if plain {
            if file.metadata()?.len() < offset {
                return Ok((input.open()?, 0));
            }
            file.seek(SeekFrom::Start(offset))?;
            return Ok((Box::new(io::BufReader::with_capacity(256 * 1024, file)), offset));
        }
    }
    let mut reader = input.open()?;
    let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())?;
    if skipped < offset {
        return Ok((input.open()?, 0));
    }
    Ok((reader, offset))
}

/// One chunk parsed by a worker: its batches, and where the input stands after it.
struct Parsed {
    seq: u64,
    batches: Vec<TableBatch>,
    end_offset: u64,
}

/// Reads `input` to its end into `store`, from where the store says it was left. Chunks are
/// parsed on `config.workers` threads; their batches are committed in input order, so every
/// checkpoint covers exactly the lines before it.
pub fn collect_once(
    input: &Input,
    store: &mut Store,
    config: &CollectConfig,
) -> Result<CollectSummary, CollectError> {
    let name = input.name();
    let read_err = |source| CollectError::Read { name: name.clone(), source };
    let source = source_id(input).map_err(read_err)?;
    let checkpoint = match &source {
        Some(id) => store.checkpoint(id)?,
        None => None,
    };
    let (reader, base) = open_at(input, checkpoint.map_or(0, |c| c.offset)).map_err(read_err)?;
    let source = source.unwrap_or_else(|| format!("stdin:{}", now_ns()));
    let mut summary = CollectSummary { resumed_at: base, ..CollectSummary::default() };
    let workers = config.workers.max(1);
    // Bounded at both ends: the reader waits for workers, workers wait for the committer.
    let (chunk_tx, chunk_rx) = bounded::<(u64, Chunk, Option<LogFormat>)>(workers * 2);
    let (parsed_tx, parsed_rx) = bounded::<Parsed>(workers * 2);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (chunk_rx, parsed_tx) = (chunk_rx.clone(), parsed_tx.clone());
            let origin = name.as_str();
            scope.spawn(move || {
                for (seq, chunk, encoding) in chunk_rx {
                    let mut batches = Vec::new();
                    // Builders are sized for this chunk's lines (waypoint lines run near a
                    // kilobyte), not for a whole batch: a worker makes one set per chunk, and
                    // spare capacity would stay allocated until the commit.
                    let expected = (chunk.len_bytes() / 1024).clamp(64, config.batch_rows);
                    let mut sink = BatchSink::new(expected, |b| batches.push(b));
                    let ctx = LineContext {
                        origin,
                        ingest_ts_ns: now_ns(),
                        encoding,
                        ..LineContext::default()
                    };
                    chunk.lines(config.max_line, |line| {
                        process_line(line, &ctx, &mut sink);
                    });
                    sink.flush();
                    let end_offset = chunk.end_offset();
                    if parsed_tx.send(Parsed { seq, batches, end_offset }).is_err() {
                        return;
                    }
                }
            });
        }
        drop((chunk_rx, parsed_tx));
        let reader_thread = scope.spawn(move || {
            let mut lock = EncodingLock::default();
            let mut seq = 0;
            read_chunks(
                reader,
                config.chunk_bytes,
                config.max_line,
                || None,
                |chunk| {
                    lock.observe_chunk(&chunk, config.max_line);
                    // A closed channel means the committer failed; the error is reported there.
                    let _ = chunk_tx.send((seq, chunk, lock.encoding()));
                    seq += 1;
                },
            )
        });
        let committed =
            commit_in_order(parsed_rx, store, config, &source, base, &name, &mut summary);
        // Unblock the reader if committing stopped early, then collect its result.
        let read = reader_thread.join().expect("the reader thread panicked");
        committed?;
        summary.bytes = read.map_err(read_err)?;
        Ok(summary)
    })
}

/// Most files one commit keeps open (one per table and hour its rows fall in); more, and the
/// commit is made early. Bounds the writers' memory when old logs span many hours.
const MAX_OPEN_FILES: usize = 32;

/// Takes parsed chunks as they come, puts them back in input order, and writes them into the
/// pending commit, made every `commit_rows` rows with the offset after its last chunk.
fn commit_in_order(
    parsed: crossbeam_channel::Receiver<Parsed>,
    store: &mut Store,
    config: &CollectConfig,
    source: &str,
    base: u64,
    name: &str,
    summary: &mut CollectSummary,
) -> Result<(), CollectError> {
    let mut waiting: BTreeMap<u64, Parsed> = BTreeMap::new();
    let mut next_seq = 0;
    let mut pending = store.begin();
    let mut offset = None;
    let mut commit = |store: &mut Store, pending, offset: u64| {
        let checkpoint = Checkpoint { source: source.to_owned(), offset: base + offset };
        let written = store.finish(pending, &checkpoint, Some(name))?;
        summary.commits += usize::from(written.files > 0);
        Ok::<_, StoreError>(store.begin())
    };
    for chunk in parsed {
        waiting.insert(chunk.seq, chunk);
        while let Some(chunk) = waiting.remove(&next_seq) {
            next_seq += 1;
            for batch in chunk.batches {
                let (table, batch) = match batch {
                    TableBatch::AccessLog(b) => {
                        summary.records += b.num_rows();
                        (ACCESS_LOG, b)
                    }
                    TableBatch::Rejects(b) => {
                        summary.rejects += b.num_rows();
                        (REJECTS, b)
                    }
                };
                pending.write(table, &batch)?;
            }
            offset = Some(chunk.end_offset);
            if pending.rows() >= config.commit_rows || pending.open_files() > MAX_OPEN_FILES {
                pending = commit(store, pending, chunk.end_offset)?;
            }
        }
    }
    if let Some(offset) = offset {
        commit(store, pending, offset)?;
    }
    Ok(())
}
