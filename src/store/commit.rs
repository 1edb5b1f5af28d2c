//! One commit: batches split by the hour of their rows, written to staged files, fsynced,
//! then renamed into place (see the module above for why that order makes commits atomic).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;

use arrow_array::{Array, RecordBatch, TimestampNanosecondArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::{
    Checkpoint, Destination, FileName, Store, StoreError, TMP_DIR, io_err, meta, sync_dir,
};
use crate::parse::time::utc_date_hour;

/// Rows per Parquet row group: large enough for good compression and statistics, small enough
/// for readers to skip by statistics within an hour.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// What one commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitSummary {
    pub commit: u64,
    pub files: usize,
    pub rows: usize,
}

impl Store {
    /// Writes `batches` (each with the table it belongs to) as one atomic commit covering the
    /// source up to `checkpoint`. A commit without rows writes nothing.
    pub fn commit(
        &mut self,
        batches: &[(&str, RecordBatch)],
        checkpoint: &Checkpoint,
        source_path: Option<&str>,
    ) -> Result<CommitSummary, StoreError> {
        let groups = split_by_hour(batches);
        let rows = groups.values().flatten().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            return Ok(CommitSummary::default());
        }
        let commit = self.next_commit;
        let of = groups.len();
        let mut key_values = vec![
            KeyValue::new(meta::COMMIT.to_owned(), commit.to_string()),
            KeyValue::new(meta::SOURCE.to_owned(), checkpoint.source.clone()),
            KeyValue::new(meta::OFFSET.to_owned(), checkpoint.offset.to_string()),
        ];
        if let Some(path) = source_path {
            key_values.push(KeyValue::new(meta::SOURCE_PATH.to_owned(), path.to_owned()));
        }
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("3 is a zstd level")))
            .set_dictionary_enabled(true)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_key_value_metadata(Some(key_values))
            .set_created_by(format!("egresslens {}", env!("CARGO_PKG_VERSION")))
            .build();
        let tmp = self.root.join(TMP_DIR);
        let mut staged = Vec::with_capacity(of);
        for (i, (destination, batches)) in groups.iter().enumerate() {
            let file = FileName { commit, n: i + 1, of };
            let path = tmp.join(destination.staged_name(file));
            write_parquet(&path, batches, props.clone())?;
            staged.push((path, destination, file));
        }
        sync_dir(&tmp)?;
        // From the first rename on, recovery finishes this commit instead of discarding it.
        for (path, destination, file) in staged {
            let dir = destination.dir(&self.root);
            create_dirs(&dir)?;
            fs::rename(&path, dir.join(file.render())).map_err(io_err("move into place", &path))?;
            sync_dir(&dir)?;
        }
        self.next_commit += 1;
        Ok(CommitSummary { commit, files: of, rows })
    }
}

/// Rows of every batch grouped by table and the UTC hour of their `ts` (the first column).
fn split_by_hour(batches: &[(&str, RecordBatch)]) -> BTreeMap<Destination, Vec<RecordBatch>> {
    let mut groups: BTreeMap<Destination, Vec<RecordBatch>> = BTreeMap::new();
    for (table, batch) in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let ts = batch
            .column(0)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .expect("every store table starts with its ts column");
        let mut rows: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
        for (row, value) in ts.values().iter().enumerate() {
            rows.entry(utc_date_hour(*value)).or_default().push(row as u32);
        }
        for ((date, hour), indices) in rows {
            let part = if indices.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(indices))
                    .expect("indices come from the batch itself")
            };
            let destination = Destination { table: (*table).to_owned(), date, hour };
            groups.entry(destination).or_default().push(part);
        }
    }
    groups
}

fn write_parquet(
    path: &Path,
    batches: &[RecordBatch],
    props: WriterProperties,
) -> Result<(), StoreError> {
    let file = File::create(path).map_err(io_err("create", path))?;
    let parquet_err = |source| StoreError::Parquet { path: path.to_path_buf(), source };
    let handle = file.try_clone().map_err(io_err("open", path))?;
    let mut writer =
        ArrowWriter::try_new(handle, batches[0].schema(), Some(props)).map_err(parquet_err)?;
    for batch in batches {
        writer.write(batch).map_err(parquet_err)?;
    }
    writer.close().map_err(parquet_err)?;
    file.sync_all().map_err(io_err("sync", path))
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
