//! One commit, written as its batches arrive: rows go to an open Parquet writer per table and
//! hour (`.open` files in `.tmp/`, row groups flushed as they fill), and [`Store::finish`]
//! closes them with the checkpoint in their metadata, fsyncs them, names them, and only then
//! renames them into place (see the module above for why that order makes commits atomic).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::{Array, RecordBatch, TimestampNanosecondArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::{
    Checkpoint, Destination, FileName, Store, StoreError, TMP_DIR, io_err, meta, sync_dir,
};
use crate::parse::time::utc_date_hour;
use crate::schema::{col, reject_col, ztunnel_col};

/// Rows per Parquet row group: large enough for good compression and statistics, small enough
/// for readers to skip by statistics within an hour.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Rows the commit takes elsewhere after which a file's unfinished row group is written out:
/// reading old logs, a commit spans hours, and the files of hours passed would otherwise each
/// hold up to a row group's pages, dictionaries and codecs in memory until the commit ends.
const IDLE_FLUSH_ROWS: usize = 64 * 1024;

/// Columns whose values are nearly all distinct (ids, timestamps, ephemeral ports, sizes):
/// a dictionary would only cost time before the writer falls back to plain encoding.
const NO_DICTIONARY: [&str; 13] = [
    col::TS,
    col::REQUEST_ID,
    col::DOWNSTREAM_REMOTE_ADDRESS,
    col::UPSTREAM_LOCAL_ADDRESS,
    col::BYTES_RECEIVED,
    col::BYTES_SENT,
    col::DURATION_MS,
    col::UPSTREAM_SERVICE_TIME_MS,
    col::UPSTREAM_RESPONSE_TIME_MS,
    col::EXTRA,
    reject_col::RAW,
    reject_col::LINE,
    ztunnel_col::SRC_ADDR,
];

/// What one commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitSummary {
    pub commit: u64,
    pub files: usize,
    pub rows: usize,
    /// The files' size.
    pub bytes: u64,
}

/// A commit being written. Nothing of it is visible until [`Store::finish`]; dropped
/// unfinished, it leaves `.open` files that the next [`Store::open`] deletes.
#[derive(Debug)]
pub struct PendingCommit {
    commit: u64,
    tmp: PathBuf,
    files: BTreeMap<Destination, OpenFile>,
    rows: usize,
}

struct OpenFile {
    path: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
    /// The commit's row count when this file was last written to.
    last_write: usize,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl PendingCommit {
    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Files open: one per table and hour seen.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Adds `batch` of `table` to the commit, each row to the file of its hour.
    pub fn write(&mut self, table: &str, batch: &RecordBatch) -> Result<(), StoreError> {
        for (destination, part) in split_by_hour(table, batch) {
            if !self.files.contains_key(&destination) {
                let n = self.files.len() + 1;
                let path = self.tmp.join(destination.open_name(self.commit, n));
                let file = File::create(&path).map_err(io_err("create", &path))?;
                let writer = ArrowWriter::try_new(
                    BufWriter::with_capacity(64 * 1024, file),
                    part.schema(),
                    Some(writer_properties()),
                )
                .map_err(|source| StoreError::Parquet { path: path.clone(), source })?;
                let last_write = self.rows;
                self.files.insert(destination.clone(), OpenFile { path, writer, last_write });
            }
            let open = self.files.get_mut(&destination).expect("inserted above");
            open.writer
                .write(&part)
                .map_err(|source| StoreError::Parquet { path: open.path.clone(), source })?;
            self.rows += part.num_rows();
            open.last_write = self.rows;
        }
        self.flush_idle()
    }

    /// Writes out the unfinished row groups of files not written to for [`IDLE_FLUSH_ROWS`].
    fn flush_idle(&mut self) -> Result<(), StoreError> {
        for open in self.files.values_mut() {
            if self.rows - open.last_write >= IDLE_FLUSH_ROWS && open.writer.in_progress_rows() > 0
            {
                open.writer
                    .flush()
                    .map_err(|source| StoreError::Parquet { path: open.path.clone(), source })?;
            }
        }
        Ok(())
    }
}

/// A commit whose files are complete in `.tmp/` under their staged names.
#[derive(Debug)]
pub(super) struct Sealed {
    pub(super) commit: u64,
    pub(super) staged: Vec<(PathBuf, Destination, FileName)>,
    pub(super) rows: usize,
}

impl Store {
    /// Starts the next commit.
    pub fn begin(&self) -> PendingCommit {
        PendingCommit {
            commit: self.next_commit,
            tmp: self.root.join(TMP_DIR),
            files: BTreeMap::new(),
            rows: 0,
        }
    }

    /// Makes `pending` visible as one atomic commit covering the source up to `checkpoint`.
    /// A commit without rows writes nothing.
    pub fn finish(
        &mut self,
        pending: PendingCommit,
        checkpoint: &Checkpoint,
        source_path: Option<&str>,
    ) -> Result<CommitSummary, StoreError> {
        let mut key_values = vec![
            (meta::SOURCE, checkpoint.source.clone()),
            (meta::OFFSET, checkpoint.offset.to_string()),
        ];
        if let Some(path) = source_path {
            key_values.push((meta::SOURCE_PATH, path.to_owned()));
        }
        if let Some(encoding) = &checkpoint.encoding {
            key_values.push((meta::ENCODING, encoding.clone()));
        }
        let sealed = self.seal(pending, &key_values)?;
        self.publish(sealed)
    }

    /// Makes `pending` visible as one atomic commit of `source`, a source of many streams,
    /// with every stream's cursor (all of them, not only those in this commit: the newest
    /// commit is the whole checkpoint).
    pub fn finish_streams(
        &mut self,
        pending: PendingCommit,
        source: &str,
        cursors: &BTreeMap<String, String>,
    ) -> Result<CommitSummary, StoreError> {
        let json = serde_json::to_string(cursors).expect("a map of strings serialises");
        let key_values = [
            (meta::SOURCE, source.to_owned()),
            (meta::OFFSET, "0".to_owned()),
            (meta::CURSORS, json),
        ];
        let sealed = self.seal(pending, &key_values)?;
        self.publish(sealed)
    }

    /// Closes the files of `pending` with `key_values` (and the commit number) in their
    /// metadata, fsyncs them and gives them their staged names; nothing is visible yet.
    pub(super) fn seal(
        &self,
        pending: PendingCommit,
        key_values: &[(&str, String)],
    ) -> Result<Sealed, StoreError> {
        let PendingCommit { commit, tmp, files, rows } = pending;
        let of = files.len();
        let mut staged = Vec::with_capacity(of);
        for (i, (destination, mut open)) in files.into_iter().enumerate() {
            if rows == 0 {
                fs::remove_file(&open.path).map_err(io_err("remove", &open.path))?;
                continue;
            }
            let commit_kv = (meta::COMMIT, commit.to_string());
            for (key, value) in std::iter::once(&commit_kv).chain(key_values) {
                open.writer
                    .append_key_value_metadata(KeyValue::new((*key).to_owned(), value.clone()));
            }
            let parquet_err = |source| StoreError::Parquet { path: open.path.clone(), source };
            let buffered = open.writer.into_inner().map_err(parquet_err)?;
            let file =
                buffered.into_inner().map_err(|e| io_err("write", &open.path)(e.into_error()))?;
            file.sync_all().map_err(io_err("sync", &open.path))?;
            let name = FileName { commit, n: i + 1, of };
            let path = tmp.join(destination.staged_name(name));
            fs::rename(&open.path, &path).map_err(io_err("name", &open.path))?;
            staged.push((path, destination, name));
        }
        sync_dir(&tmp)?;
        Ok(Sealed { commit, staged, rows })
    }

    /// Renames sealed files into place: from the first rename on, recovery finishes the
    /// commit instead of discarding it.
    pub(super) fn publish(&mut self, sealed: Sealed) -> Result<CommitSummary, StoreError> {
        let Sealed { commit, staged, rows } = sealed;
        if staged.is_empty() {
            return Ok(CommitSummary::default());
        }
        let files = staged.len();
        let mut bytes = 0;
        for (path, destination, file) in staged {
            bytes += fs::metadata(&path).map_err(io_err("inspect", &path))?.len();
            let dir = destination.dir(&self.root);
            create_dirs(&dir)?;
            fs::rename(&path, dir.join(file.render())).map_err(io_err("move into place", &path))?;
            sync_dir(&dir)?;
        }
        self.next_commit += 1;
        Ok(CommitSummary { commit, files, rows, bytes })
    }

    /// Writes `batches` (each with the table it belongs to) as one atomic commit.
    pub fn commit(
        &mut self,
        batches: &[(&str, RecordBatch)],
        checkpoint: &Checkpoint,
        source_path: Option<&str>,
    ) -> Result<CommitSummary, StoreError> {
        let mut pending = self.begin();
        for (table, batch) in batches {
            pending.write(table, batch)?;
        }
        self.finish(pending, checkpoint, source_path)
    }
}

/// zstd level 1: on these columns (dictionary indices, delta-encoded times) it compresses
/// about as well as level 3 for much less time.
const ZSTD_LEVEL: i32 = 1;

fn writer_properties() -> WriterProperties {
    let level = ZstdLevel::try_new(ZSTD_LEVEL).expect("a valid zstd level");
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_dictionary_enabled(true)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("egresslens {}", env!("CARGO_PKG_VERSION")));
    for column in NO_DICTIONARY {
        props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    // Log times rise nearly monotonically: their deltas are small.
    props = props.set_column_encoding(ColumnPath::from(col::TS), Encoding::DELTA_BINARY_PACKED);
    props.build()
}

/// The rows of `batch` grouped by the UTC hour of their `ts` (the first column).
fn split_by_hour(table: &str, batch: &RecordBatch) -> Vec<(Destination, RecordBatch)> {
    if batch.num_rows() == 0 {
        return Vec::new();
    }
    let ts = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .expect("every store table starts with its ts column");
    let destination = |(date, hour)| Destination { table: table.to_owned(), date, hour };
    // Nearly always one hour: check that before grouping row by row.
    let first = utc_date_hour(ts.value(0));
    let hour_ns = 3_600_000_000_000;
    let start = ts.value(0) - ts.value(0).rem_euclid(hour_ns);
    if ts.values().iter().all(|t| (start..start + hour_ns).contains(t)) {
        return vec![(destination(first), batch.clone())];
    }
    let mut rows: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
    for (row, value) in ts.values().iter().enumerate() {
        rows.entry(utc_date_hour(*value)).or_default().push(row as u32);
    }
    rows.into_iter()
        .map(|(hour, indices)| {
            let part = take_record_batch(batch, &UInt32Array::from(indices))
                .expect("indices come from the batch itself");
            (destination(hour), part)
        })
        .collect()
}

/// Creates `dir` and its missing parents, syncing each parent so the new entries survive a
/// crash.
fn create_dirs(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
        fs::create_dir(dir)
            .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })
            .map_err(io_err("create", dir))?;
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    const HOUR_NS: i64 = 3_600_000_000_000;

    /// `rows` rows in hour `hour` (of 2025-08-18), numbered from `first`.
    fn batch(hour: i64, first: i64, rows: i64) -> RecordBatch {
        let start = 1_755_475_200_000_000_000 + hour * HOUR_NS;
        let schema = Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
            Field::new("n", DataType::Int64, false),
        ]);
        let ts = TimestampNanosecondArray::from_iter_values((0..rows).map(|i| start + i));
        let n = Int64Array::from_iter_values(first..first + rows);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(ts), Arc::new(n)]).unwrap()
    }

    #[test]
    fn a_file_left_behind_writes_its_row_group_out_and_still_takes_late_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let mut pending = store.begin();
        pending.write("t", &batch(9, 0, 1000)).unwrap();
        let hour_nine = |p: &PendingCommit| {
            p.files.iter().find(|(d, _)| d.hour == "09").map(|(_, f)| f.writer.in_progress_rows())
        };
        let step = IDLE_FLUSH_ROWS as i64 / 4;
        for i in 0..3 {
            pending.write("t", &batch(10, 1000 + i * step, step)).unwrap();
            assert_eq!(hour_nine(&pending), Some(1000), "not idle long enough yet");
        }
        pending.write("t", &batch(10, 1000 + 3 * step, step)).unwrap();
        assert_eq!(hour_nine(&pending), Some(0), "idle: its row group is written out");
        // A straggler for hour 9 goes into the same file, in a row group of its own.
        pending.write("t", &batch(9, 1000 + 4 * step, 10)).unwrap();
        store
            .finish(pending, &Checkpoint { source: "s".into(), offset: 1, encoding: None }, None)
            .unwrap();

        let mut numbers: Vec<i64> = Vec::new();
        let mut groups = BTreeMap::new();
        for entry in walkdir(dir.path()) {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(File::open(&entry).unwrap()).unwrap();
            let hour = entry.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
            groups.insert(hour, reader.metadata().num_row_groups());
            for b in reader.build().unwrap() {
                let b = b.unwrap();
                numbers.extend(b.column(1).as_any().downcast_ref::<Int64Array>().unwrap().values());
            }
        }
        numbers.sort_unstable();
        assert_eq!(numbers, (0..1000 + 4 * step + 10).collect::<Vec<_>>());
        assert_eq!(groups["hour=09"], 2, "{groups:?}");
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.ends_with(super::TMP_DIR) {
                out.extend(walkdir(&path));
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
        out
    }
}
