//! Compaction: the small files of an hour partition (a following collector commits every 30 s)
//! merged into one, as one more atomic commit.
//!
//! Crash safety: the merged file is sealed in `.tmp/` first; then a manifest naming it and the
//! files it replaces is written (complete before it gets its name); only then is the merged
//! file moved into place and the replaced files deleted, and the manifest goes last. On open,
//! [`Store::open`] finishes any manifest it finds, so a crash leaves either the old files or
//! the merged one — never both, never neither.
//!
//! The newest commit of each source is never compacted: it is that source's checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use super::commit::Sealed;
use super::{
    Destination, FileName, Store, StoreError, TMP_DIR, committed_files, io_err, meta, read_footer,
    sync_dir,
};

/// Files with fewer rows than this are merged.
pub const SMALL_FILE_ROWS: i64 = 256 * 1024;
const MANIFEST_PREFIX: &str = "compact-c";

/// What one compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactSummary {
    pub partitions: usize,
    pub files_replaced: usize,
    pub rows: usize,
}

/// The record of a compaction in progress, in `.tmp/compact-c<commit>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    commit: u64,
    /// Staged names in `.tmp/` of the merged files.
    staged: Vec<String>,
    /// The replaced files, relative to the store root.
    replaces: Vec<PathBuf>,
}

fn manifest_path(root: &Path, commit: u64) -> PathBuf {
    root.join(TMP_DIR).join(format!("{MANIFEST_PREFIX}{commit:012}.json"))
}

impl Store {
    /// Merges the small files of every hour partition that ended before `before_ns`.
    pub fn compact(&mut self, before_ns: i64) -> Result<CompactSummary, StoreError> {
        let (cutoff_date, cutoff_hour) = crate::parse::time::utc_date_hour(before_ns);
        let mut partitions: BTreeMap<PathBuf, Vec<(FileName, PathBuf)>> = BTreeMap::new();
        for (name, path) in committed_files(&self.root)? {
            let Some(dir) = path.parent() else { continue };
            partitions.entry(dir.to_path_buf()).or_default().push((name, path));
        }
        let mut newest_of_source: BTreeMap<String, Option<u64>> = BTreeMap::new();
        let mut summary = CompactSummary::default();
        for (dir, mut files) in partitions {
            let Some(destination) = Destination::of_dir(&self.root, &dir) else { continue };
            if (destination.date.as_str(), destination.hour.as_str())
                >= (cutoff_date.as_str(), cutoff_hour.as_str())
            {
                continue;
            }
            // A compacted hour is one file: skip it without reading footers (this runs every
            // few minutes over the whole store).
            if files.len() < 2 {
                continue;
            }
            files.sort();
            let mut small = Vec::new();
            for (name, path) in files {
                let footer = read_footer(&path)?;
                if footer.rows >= SMALL_FILE_ROWS {
                    continue;
                }
                if let Some(source) = footer.key_values.get(meta::SOURCE) {
                    let newest = match newest_of_source.get(source) {
                        Some(newest) => *newest,
                        None => {
                            let newest = self.newest_commit_of(source)?;
                            newest_of_source.insert(source.clone(), newest);
                            newest
                        }
                    };
                    if newest == Some(name.commit) {
                        continue;
                    }
                }
                small.push(path);
            }
            if small.len() < 2 {
                continue;
            }
            summary.rows += self.merge(&destination, &small)?;
            summary.partitions += 1;
            summary.files_replaced += small.len();
        }
        Ok(summary)
    }

    /// One compaction commit: `files` (of one partition) merged into one.
    fn merge(&mut self, destination: &Destination, files: &[PathBuf]) -> Result<usize, StoreError> {
        let (sealed, manifest, path) = self.prepare_merge(destination, files)?;
        let rows = sealed.rows;
        self.publish(sealed)?;
        finish_manifest(&self.root, &path, &manifest)?;
        Ok(rows)
    }

    /// The merged file sealed and its manifest written: from here on the compaction happens,
    /// crash or not.
    fn prepare_merge(
        &self,
        destination: &Destination,
        files: &[PathBuf],
    ) -> Result<(Sealed, Manifest, PathBuf), StoreError> {
        let mut pending = self.begin();
        for path in files {
            let parquet_err = |source| StoreError::Parquet { path: path.clone(), source };
            let file = File::open(path).map_err(io_err("open", path))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(64 * 1024).build())
                .map_err(parquet_err)?;
            for batch in reader {
                let batch = batch.map_err(|e| parquet_err(e.into()))?;
                pending.write(&destination.table, &batch)?;
            }
        }
        let replaces: Vec<PathBuf> = files
            .iter()
            .filter_map(|f| f.strip_prefix(&self.root).ok().map(Path::to_path_buf))
            .collect();
        let names: Vec<String> =
            replaces.iter().filter_map(|p| p.file_name()?.to_str().map(str::to_owned)).collect();
        let sealed = self.seal(pending, &[(meta::COMPACTED_FROM, names.join(","))])?;
        let manifest = Manifest {
            commit: sealed.commit,
            staged: sealed
                .staged
                .iter()
                .filter_map(|(p, _, _)| p.file_name()?.to_str().map(str::to_owned))
                .collect(),
            replaces,
        };
        let path = manifest_path(&self.root, sealed.commit);
        let open = path.with_extension("json.open");
        let mut file = File::create(&open).map_err(io_err("create", &open))?;
        let json = serde_json::to_vec(&manifest).expect("a manifest serialises");
        file.write_all(&json).and_then(|()| file.sync_all()).map_err(io_err("write", &open))?;
        fs::rename(&open, &path).map_err(io_err("name", &open))?;
        sync_dir(&self.root.join(TMP_DIR))?;
        Ok((sealed, manifest, path))
    }

    /// The newest commit whose files came from `source`.
    fn newest_commit_of(&self, source: &str) -> Result<Option<u64>, StoreError> {
        let newest = self.newest(|kv| kv.get(meta::SOURCE).is_some_and(|s| s == source))?;
        Ok(newest.map(|(commit, _)| commit))
    }
}

/// Completes an interrupted compaction from its manifest: merged files into place, replaced
/// files deleted, manifest removed. Returns the manifests finished.
pub(super) fn recover(root: &Path) -> Result<usize, StoreError> {
    let tmp = root.join(TMP_DIR);
    let mut finished = 0;
    let mut manifests = BTreeSet::new();
    for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))? {
        let path = entry.map_err(io_err("list", &tmp))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(MANIFEST_PREFIX) && name.ends_with(".json") {
            manifests.insert(path);
        }
    }
    for path in manifests {
        let text = fs::read(&path).map_err(io_err("read", &path))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|_| StoreError::Foreign { path: path.clone(), why: "unreadable manifest" })?;
        for staged in &manifest.staged {
            let from = tmp.join(staged);
            let Some((destination, file)) = Destination::parse_staged(staged) else { continue };
            if from.exists() {
                let dir = destination.dir(root);
                fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
                fs::rename(&from, dir.join(file.render()))
                    .map_err(io_err("move into place", &from))?;
                sync_dir(&dir)?;
            }
        }
        finish_manifest(root, &path, &manifest)?;
        finished += 1;
    }
    Ok(finished)
}

/// Deletes the replaced files still there, then the manifest.
fn finish_manifest(root: &Path, path: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    let mut dirs = BTreeSet::new();
    for replaced in &manifest.replaces {
        let file = root.join(replaced);
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &file)(e)),
        }
        dirs.extend(file.parent().map(Path::to_path_buf));
    }
    for dir in dirs {
        sync_dir(&dir)?;
    }
    fs::remove_file(path).map_err(io_err("remove", path))?;
    sync_dir(&root.join(TMP_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{CollectConfig, Control, collect};
    use crate::source::Input;
    use crate::traffic::{GenConfig, generate};

    /// A store of many small commits over three hours, and its files.
    fn small_commits(root: &Path) -> Vec<PathBuf> {
        let mut bytes = Vec::new();
        let config = GenConfig { lines: 3_000, seed: 3, rate: 0.3, ..GenConfig::default() };
        generate(&config, &mut bytes).expect("generating into memory");
        let input = Input::Memory { name: "gen".into(), bytes: bytes.into() };
        let (mut store, _) = Store::open(root).expect("open");
        let config =
            CollectConfig { commit_rows: 200, chunk_bytes: 16 * 1024, ..Default::default() };
        collect(&input, &mut store, &config, &Control::default()).expect("collect");
        files(root)
    }

    fn files(root: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> =
            committed_files(root).expect("list").into_iter().map(|(_, p)| p).collect();
        files.sort();
        files
    }

    fn rows(root: &Path) -> i64 {
        files(root).iter().map(|f| read_footer(f).expect("footer").rows).sum()
    }

    #[test]
    fn small_files_merge_per_hour_and_the_checkpoint_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = small_commits(dir.path());
        let total = rows(dir.path());
        let (mut store, _) = Store::open(dir.path()).expect("open");
        let checkpoint = store.file_checkpoint("memory:gen", "files").expect("read");
        assert!(checkpoint.is_some());
        let summary = store.compact(i64::MAX).expect("compact");
        let after = files(dir.path());
        assert!(summary.partitions >= 3 && summary.files_replaced > 10, "{summary:?}");
        assert_eq!(after.len(), before.len() - summary.files_replaced + summary.partitions);
        assert_eq!(rows(dir.path()), total);
        assert_eq!(store.file_checkpoint("memory:gen", "files").expect("read"), checkpoint);
        // Nothing small is left to merge but the checkpoint's own files.
        assert_eq!(store.compact(i64::MAX).expect("compact").partitions, 0);
    }

    #[test]
    fn a_compaction_stopped_at_any_step_is_undone_or_finished_on_open() {
        for step in 0..4 {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path();
            small_commits(root);
            let total = rows(root);
            let (mut store, _) = Store::open(root).expect("open");
            let partition = root.join("access_log/date=2025-08-18/hour=09");
            let old: Vec<_> =
                files(root).into_iter().filter(|f| f.starts_with(&partition)).collect();
            let destination = Destination::of_dir(root, &partition).expect("a partition");
            let replaced = &old[..old.len() - 1];
            let (sealed, manifest, path) =
                store.prepare_merge(&destination, replaced).expect("prepare");
            if step == 0 {
                // Sealed, but stopped while writing its manifest: undone.
                fs::rename(&path, path.with_extension("json.open")).expect("rename");
            }
            if step >= 2 {
                store.publish(sealed).expect("publish");
            }
            if step == 3 {
                fs::remove_file(root.join(&manifest.replaces[0])).expect("remove");
            }
            drop(store);
            let (_, recovery) = Store::open(root).expect("reopen");
            assert_eq!(recovery.compactions, usize::from(step > 0), "step {step}");
            assert_eq!(rows(root), total, "step {step}");
            let now: Vec<_> =
                files(root).into_iter().filter(|f| f.starts_with(&partition)).collect();
            let want = if step == 0 { old.len() } else { 2 };
            assert_eq!(now.len(), want, "step {step}: {now:?}");
            assert_eq!(fs::read_dir(root.join(TMP_DIR)).expect("tmp").count(), 0);
        }
    }
}
