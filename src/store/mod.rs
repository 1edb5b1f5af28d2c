//! The Parquet store: one directory of Hive-partitioned tables
//! (`access_log/date=2025-08-18/hour=09/c000000000012-1of2.parquet`), written only through
//! atomic commits that carry the source position they cover. The store is the collector's
//! checkpoint: no other state survives a restart.
//!
//! A commit writes all its files (one per table and hour) into `.tmp/` as they fill (`.open`),
//! then closes, fsyncs and names them all, and only then renames them into place one by one.
//! So a commit with any file in place has all its files complete: on open, [`Store::open`]
//! finishes such commits from `.tmp/` (roll forward) and deletes the temporary files of commits
//! that never reached the renames. Readers list `*.parquet` below the table directories and
//! never see `.tmp/`.

mod commit;
mod compact;
pub mod remote;
pub mod upload;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;

pub use commit::{CommitSummary, PendingCommit};
pub use compact::{CompactSummary, SMALL_FILE_ROWS};

/// Tables of the store.
pub const ACCESS_LOG: &str = "access_log";
pub const REJECTS: &str = "rejects";
pub const ZTUNNEL_CONN: &str = "ztunnel_conn";
pub const FINDINGS: &str = "findings";
pub const PROBES: &str = "probes";
pub const MESH_HOSTS: &str = "mesh_hosts";
pub const TABLES: [&str; 6] = [ACCESS_LOG, REJECTS, ZTUNNEL_CONN, FINDINGS, PROBES, MESH_HOSTS];
/// Where commits are staged; never read by queries.
const TMP_DIR: &str = ".tmp";
/// Suffix of a staged file still being written.
const OPEN_SUFFIX: &str = "open";

/// Parquet key-value metadata keys every committed file carries.
pub mod meta {
    pub const COMMIT: &str = "egresslens.commit";
    /// The source the commit's records came from (`file:<device>:<inode>`, `stdin`).
    pub const SOURCE: &str = "egresslens.source";
    /// The byte offset in the source just after the commit's last line.
    pub const OFFSET: &str = "egresslens.offset";
    /// The source's path when it was read, for people.
    pub const SOURCE_PATH: &str = "egresslens.source_path";
    /// For sources made of many streams (the Kubernetes API): every stream's cursor, as a
    /// JSON object keyed by stream (`pod:<ns>/<pod>/<container>#<restart>`). The source's
    /// offset is then 0.
    pub const CURSORS: &str = "egresslens.cursors";
    /// The access-log encoding the source's stream was locked to (`envoy_json`,
    /// `envoy_text`), once known; streams of many-stream sources carry theirs in their
    /// cursors (see [`super::stamp_cursor`]).
    pub const ENCODING: &str = "egresslens.encoding";
    /// On a compacted file (which has no source): the names of the files it replaced.
    pub const COMPACTED_FROM: &str = "egresslens.compacted_from";
}

/// An error of the store, naming the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write Parquet file {}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("{} is not a committed store file: {why}", path.display())]
    Foreign { path: PathBuf, why: &'static str },
    #[error("the store {} is in use by another egresslens process (collect or compact)", path.display())]
    Locked { path: PathBuf },
    #[error("uploading the spool to object storage has stopped")]
    UploaderEnded,
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { action, path, source }
}

/// How far a source has been committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub source: String,
    pub offset: u64,
    /// The stream's access-log encoding, once known: a resumed stream keeps the one its first
    /// entry decided, whatever the first line after the checkpoint is.
    pub encoding: Option<String>,
}

/// A stream's cursor as commits store it: the source's own cursor, then, once the stream's
/// access-log encoding is known, `;` and its name (`1764194400.00ab@5120;envoy_json`).
pub fn stamp_cursor(cursor: &str, encoding: Option<&str>) -> String {
    match encoding {
        Some(encoding) => format!("{cursor};{encoding}"),
        None => cursor.to_owned(),
    }
}

/// A stored cursor's own part and the encoding stamped on it ([`stamp_cursor`]).
pub fn split_cursor(stored: &str) -> (&str, Option<&str>) {
    match stored.split_once(';') {
        Some((cursor, encoding)) => (cursor, Some(encoding)),
        None => (stored, None),
    }
}

/// A committed or staged file's name: `c<commit>-<n>of<k>.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FileName {
    commit: u64,
    n: usize,
    of: usize,
}

impl FileName {
    fn render(self) -> String {
        format!("c{:012}-{}of{}.parquet", self.commit, self.n, self.of)
    }

    fn parse(name: &str) -> Option<FileName> {
        let rest = name.strip_prefix('c')?.strip_suffix(".parquet")?;
        let (commit, rest) = rest.split_once('-')?;
        let (n, of) = rest.split_once("of")?;
        Some(FileName { commit: commit.parse().ok()?, n: n.parse().ok()?, of: of.parse().ok()? })
    }
}

/// Where a staged file goes: `<table>.<date>.<hour>.` before its file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Destination {
    table: String,
    date: String,
    hour: String,
}

impl Destination {
    fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.table)
            .join(format!("date={}", self.date))
            .join(format!("hour={}", self.hour))
    }

    fn staged_name(&self, file: FileName) -> String {
        format!("{}.{}.{}.{}", self.table, self.date, self.hour, file.render())
    }

    fn open_name(&self, commit: u64, n: usize) -> String {
        format!("{}.{}.{}.c{commit:012}-{n}.{OPEN_SUFFIX}", self.table, self.date, self.hour)
    }

    /// A staged file's destination and name; `None` for files still being written.
    /// The destination a partition directory (`<root>/<table>/date=…/hour=…`) stands for.
    fn of_dir(root: &Path, dir: &Path) -> Option<Destination> {
        let hour = partition_value(dir, "hour")?;
        let date_dir = dir.parent()?;
        let date = partition_value(date_dir, "date")?;
        let table = date_dir.parent()?;
        if table.parent()? != root {
            return None;
        }
        let table = table.file_name()?.to_str()?.to_owned();
        Some(Destination { table, date, hour })
    }

    fn parse_staged(name: &str) -> Option<(Destination, FileName)> {
        let mut parts = name.splitn(4, '.');
        let (table, date, hour, file) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if !TABLES.contains(&table) {
            return None;
        }
        let destination =
            Destination { table: table.to_owned(), date: date.to_owned(), hour: hour.to_owned() };
        Some((destination, FileName::parse(file)?))
    }
}

/// The store directory, opened for writing by one process at a time (a lock on `.lock`).
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    next_commit: u64,
    /// Held while the store is open.
    _lock: File,
}

/// What [`Store::open`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Staged files of interrupted commits that were moved into place.
    pub rolled_forward: usize,
    /// Staged files of commits that never began their renames, deleted.
    pub discarded: usize,
    /// Interrupted compactions completed.
    pub compactions: usize,
}

impl Store {
    /// Opens (creating if needed) the store at `root` and completes or discards what an
    /// interrupted commit left behind.
    pub fn open(root: &Path) -> Result<(Store, Recovery), StoreError> {
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        let lock_path = root.join(".lock");
        let lock = File::create(&lock_path).map_err(io_err("create", &lock_path))?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                fs::TryLockError::WouldBlock => StoreError::Locked { path: root.to_path_buf() },
                fs::TryLockError::Error(e) => io_err("lock", &lock_path)(e),
            });
        }
        for table in TABLES {
            let dir = root.join(table);
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let mut recovery = Recovery { compactions: compact::recover(root)?, ..Recovery::default() };
        let committed = committed_files(root)?;
        let started: std::collections::BTreeSet<u64> =
            committed.iter().map(|(name, _)| name.commit).collect();
        for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))? {
            let path = entry.map_err(io_err("list", &tmp))?.path();
            let staged =
                path.file_name().and_then(|n| n.to_str()).and_then(Destination::parse_staged);
            match staged {
                Some((destination, file)) if started.contains(&file.commit) => {
                    let dir = destination.dir(root);
                    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
                    let target = dir.join(file.render());
                    fs::rename(&path, &target).map_err(io_err("move into place", &path))?;
                    sync_dir(&dir)?;
                    recovery.rolled_forward += 1;
                }
                _ => {
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                    recovery.discarded += 1;
                }
            }
        }
        sync_dir(&tmp)?;
        let next_commit = started.last().map_or(1, |c| c + 1);
        Ok((Store { root: root.to_path_buf(), next_commit, _lock: lock }, recovery))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes whole hour partitions that end before `cutoff_ns`. The partitions holding the
    /// newest checkpoint stay whatever their age: losing it would make the collector read its
    /// source again. Returns the partitions removed.
    pub fn expire(&self, cutoff_ns: i64) -> Result<Vec<PathBuf>, StoreError> {
        let files = committed_files(&self.root)?;
        let newest = self.newest(|_| true)?.map(|(commit, _)| commit);
        let keep: std::collections::BTreeSet<PathBuf> = files
            .iter()
            .filter(|(name, _)| Some(name.commit) == newest)
            .filter_map(|(_, path)| path.parent().map(Path::to_path_buf))
            .collect();
        let (cutoff_date, cutoff_hour) = crate::parse::time::utc_date_hour(cutoff_ns);
        let mut removed = Vec::new();
        for table in TABLES {
            let table_dir = self.root.join(table);
            for date_dir in list_dirs(&table_dir)? {
                let Some(date) = partition_value(&date_dir, "date") else { continue };
                for hour_dir in list_dirs(&date_dir)? {
                    let Some(hour) = partition_value(&hour_dir, "hour") else { continue };
                    // The hour ends before the cutoff when it is an earlier hour than the
                    // cutoff's own (dates and hours compare as fixed-width text).
                    let expired = (date.as_str(), hour.as_str())
                        < (cutoff_date.as_str(), cutoff_hour.as_str());
                    if expired && !keep.contains(&hour_dir) {
                        fs::remove_dir_all(&hour_dir).map_err(io_err("remove", &hour_dir))?;
                        removed.push(hour_dir);
                    }
                }
                if list_dirs(&date_dir)?.is_empty()
                    && fs::read_dir(&date_dir).map_err(io_err("list", &date_dir))?.next().is_none()
                {
                    fs::remove_dir(&date_dir).map_err(io_err("remove", &date_dir))?;
                }
            }
            sync_dir(&table_dir)?;
        }
        Ok(removed)
    }

    /// The stream cursors of the newest commit from `source` (see [`meta::CURSORS`]).
    pub fn cursors(&self, source: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let newest = self.newest(|kv| kv.get(meta::SOURCE).is_some_and(|s| s == source))?;
        let Some((_, footer)) = newest else { return Ok(BTreeMap::new()) };
        let Some(json) = footer.key_values.get(meta::CURSORS) else { return Ok(BTreeMap::new()) };
        serde_json::from_str(json)
            .map_err(|_| StoreError::Foreign { path: footer.path, why: "unreadable cursors" })
    }

    /// Where the file `id` was left: the checkpoint of the newest commit that read it, alone
    /// or together with others as source `together` (its cursor there).
    pub fn file_checkpoint(
        &self,
        id: &str,
        together: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let cursors = |kv: &BTreeMap<String, String>| {
            let json = kv.get(meta::CURSORS)?;
            serde_json::from_str::<BTreeMap<String, String>>(json).ok()
        };
        let newest = self.newest(|kv| match kv.get(meta::SOURCE) {
            Some(source) if source == id => true,
            Some(source) if source == together => cursors(kv).is_some_and(|c| c.contains_key(id)),
            _ => false,
        })?;
        let Some((_, footer)) = newest else { return Ok(None) };
        let kv = &footer.key_values;
        let (offset, encoding) = match cursors(kv) {
            Some(cursors) if kv.get(meta::SOURCE).is_some_and(|s| s == together) => {
                let stored = cursors.get(id).map(|c| split_cursor(c));
                let offset = stored.and_then(|(offset, _)| offset.parse().ok());
                (offset, stored.and_then(|(_, encoding)| encoding.map(str::to_owned)))
            }
            _ => {
                (kv.get(meta::OFFSET).and_then(|o| o.parse().ok()), kv.get(meta::ENCODING).cloned())
            }
        };
        match offset {
            Some(offset) => Ok(Some(Checkpoint { source: id.to_owned(), offset, encoding })),
            None => Err(StoreError::Foreign { path: footer.path, why: "no offset for the file" }),
        }
    }

    /// The newest committed position of whatever file was read by the name `path` (after a
    /// rotation, another file than the one there now).
    pub fn checkpoint_of_path(&self, path: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.newest_checkpoint(|kv| kv.get(meta::SOURCE_PATH).is_some_and(|p| p == path))
    }

    fn newest_checkpoint(
        &self,
        matches: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let Some((_, footer)) = self.newest(matches)? else { return Ok(None) };
        let source = footer.key_values.get(meta::SOURCE).cloned();
        let offset = footer.key_values.get(meta::OFFSET).and_then(|o| o.parse().ok());
        let encoding = footer.key_values.get(meta::ENCODING).cloned();
        match (source, offset) {
            (Some(source), Some(offset)) => Ok(Some(Checkpoint { source, offset, encoding })),
            _ => Err(StoreError::Foreign { path: footer.path, why: "no source and offset" }),
        }
    }

    /// The newest commit carrying a checkpoint whose metadata `matches`.
    fn newest(
        &self,
        matches: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Result<Option<(u64, Footer)>, StoreError> {
        // Newest commit first; each commit's files carry the same checkpoint. Compactions
        // carry none.
        let mut by_commit: BTreeMap<u64, PathBuf> = BTreeMap::new();
        for (name, path) in committed_files(&self.root)? {
            by_commit.entry(name.commit).or_insert(path);
        }
        for (commit, path) in by_commit.into_iter().rev() {
            let footer = read_footer(&path)?;
            if footer.key_values.contains_key(meta::SOURCE) && matches(&footer.key_values) {
                return Ok(Some((commit, footer)));
            }
        }
        Ok(None)
    }
}

fn list_dirs(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let path = entry.map_err(io_err("list", dir))?.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// `2025-08-18` of a directory named `date=2025-08-18`.
fn partition_value(dir: &Path, column: &str) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    Some(name.strip_prefix(column)?.strip_prefix('=')?.to_owned())
}

impl Store {
    /// Every committed file, oldest commit first, with where it is placed: what an
    /// upload to object storage ([`remote::Remote::upload`]) takes.
    pub fn committed(&self) -> Result<Vec<(remote::Placed, PathBuf)>, StoreError> {
        Ok(placed_files(&self.root)?.into_iter().map(|(_, placed, path)| (placed, path)).collect())
    }
}

/// Every committed file below `root`'s partitions, oldest commit first, with its name and
/// place.
fn placed_files(root: &Path) -> Result<Vec<(FileName, remote::Placed, PathBuf)>, StoreError> {
    let mut files = committed_files(root)?;
    files.sort_by_key(|(name, _)| *name);
    Ok(files
        .into_iter()
        .filter_map(|(name, path)| {
            let at = Destination::of_dir(root, path.parent()?)?;
            let placed = remote::Placed {
                table: at.table,
                date: at.date,
                hour: at.hour,
                name: name.render(),
            };
            Some((name, placed, path))
        })
        .collect())
}

/// Every committed file below the table directories, with its parsed name.
fn committed_files(root: &Path) -> Result<Vec<(FileName, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for table in TABLES {
        walk(&root.join(table), &mut out)?;
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<(FileName, PathBuf)>) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io_err("inspect", &path))?.is_dir() {
            walk(&path, out)?;
        } else if let Some(name) =
            path.file_name().and_then(|n| n.to_str()).and_then(FileName::parse)
        {
            out.push((name, path));
        }
    }
    Ok(())
}

/// What a committed file's footer says: its rows and key-value metadata.
#[derive(Debug)]
struct Footer {
    path: PathBuf,
    rows: i64,
    key_values: BTreeMap<String, String>,
}

fn read_footer(path: &Path) -> Result<Footer, StoreError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|source| StoreError::Parquet { path: path.to_path_buf(), source })?;
    let file_metadata = metadata.file_metadata();
    let key_values = file_metadata
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
        .collect();
    Ok(Footer { path: path.to_path_buf(), rows: file_metadata.num_rows(), key_values })
}

/// Makes a directory's entries (renames, new files) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let name = FileName { commit: 42, n: 2, of: 3 };
        assert_eq!(name.render(), "c000000000042-2of3.parquet");
        assert_eq!(FileName::parse(&name.render()), Some(name));
        assert_eq!(FileName::parse("part-0.parquet"), None);
        let dest =
            Destination { table: ACCESS_LOG.into(), date: "2025-08-18".into(), hour: "09".into() };
        let staged = dest.staged_name(name);
        assert_eq!(Destination::parse_staged(&staged), Some((dest, name)));
    }
}
