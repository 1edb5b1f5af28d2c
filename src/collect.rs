//! `collect`: an input read to its end into the store, committed every `commit_rows` rows, and
//! resumed from the store's checkpoint, so running it again never duplicates a record.
//!
//! Following a growing file (`tail -F`) and stopping on signals join in the next step; this is
//! the batch-import form (`collect --once`).

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use arrow_array::RecordBatch;

use crate::batch::LineContext;
use crate::ingest::{BatchSink, EncodingLock, TableBatch, now_ns, process_line};
use crate::source::Input;
use crate::source::lines::read_chunks;
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
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            max_line: crate::source::lines::DEFAULT_MAX_LINE,
            chunk_bytes: 1 << 20,
            batch_rows: 64 * 1024,
            commit_rows: 256 * 1024,
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

/// Reads `input` to its end into `store`, from where the store says it was left.
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
    let pending: Cell<Vec<(&str, RecordBatch)>> = Cell::new(Vec::new());
    let mut sink = BatchSink::new(config.batch_rows, |batch| {
        let mut list = pending.take();
        match batch {
            TableBatch::AccessLog(b) => list.push((ACCESS_LOG, b)),
            TableBatch::Rejects(b) => list.push((REJECTS, b)),
        }
        pending.set(list);
    });
    let mut lock = EncodingLock::default();
    let mut rows_since_commit = 0usize;
    let mut failure: Option<StoreError> = None;
    let mut commit = |sink: &mut BatchSink<_>, offset: u64, summary: &mut CollectSummary| {
        sink.flush();
        let batches = pending.take();
        let checkpoint = Checkpoint { source: source.clone(), offset: base + offset };
        let written = store.commit(&batches, &checkpoint, Some(&name))?;
        for (table, batch) in &batches {
            if *table == ACCESS_LOG {
                summary.records += batch.num_rows();
            } else {
                summary.rejects += batch.num_rows();
            }
        }
        summary.commits += usize::from(written.files > 0);
        Ok::<(), StoreError>(())
    };
    let spare: Cell<Option<Vec<u8>>> = Cell::new(None);
    let bytes = read_chunks(
        reader,
        config.chunk_bytes,
        config.max_line,
        || spare.take(),
        |chunk| {
            if failure.is_some() {
                return;
            }
            let ctx =
                LineContext { origin: &name, ingest_ts_ns: now_ns(), ..LineContext::default() };
            let mut lines = 0;
            chunk.lines(config.max_line, |line| {
                lock.observe(&line);
                let ctx = LineContext { encoding: lock.encoding(), ..ctx };
                process_line(line, &ctx, &mut sink);
                lines += 1;
            });
            rows_since_commit += lines;
            if rows_since_commit >= config.commit_rows {
                rows_since_commit = 0;
                if let Err(e) = commit(&mut sink, chunk.end_offset(), &mut summary) {
                    failure = Some(e);
                }
            }
            spare.set(chunk.into_buffer());
        },
    )
    .map_err(read_err)?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    commit(&mut sink, bytes, &mut summary)?;
    summary.bytes = bytes;
    Ok(summary)
}
