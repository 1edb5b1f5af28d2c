//! Uploading the spool to object storage, and starting an empty spool from it.
//!
//! With a store URL, `collect` commits into a local store as always (the spool), and an
//! [`Uploader`] thread puts each committed file under its final key ([`Remote::upload`]),
//! commit after commit in order, then deletes the uploaded commits from the spool — all but
//! the newest, which stays as the checkpoint the collector resumes from. A collector restarted
//! with its spool finds its checkpoint there and uploads what was waiting; one whose spool is
//! gone (a rescheduled pod) starts from the newest complete commit in the object store
//! ([`restore`]) and reads again what the lost spool held.
//!
//! The spool is bounded: with more than `max_bytes` of files waiting for upload, the
//! committer waits ([`SpoolFull::Block`]: the readers' bounded queues then hold the sources
//! back) or the oldest waiting commits are deleted and their rows counted
//! ([`SpoolFull::Drop`]). Nothing here knows the sources: the committer tells the spool of
//! each commit it makes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::commit::Sealed;
use super::remote::{Placed, Remote, RemoteCommit, RemoteError, Uploaded, Writer};
use super::{
    CommitSummary, Destination, FileName, Store, StoreError, TMP_DIR, io_err, placed_files,
    read_footer, sync_dir,
};

/// How long the uploader sleeps when the spool has nothing new (a commit wakes it sooner).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// The first wait after a failed upload; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// While uploads keep failing, a warning at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What happens when the spool holds `max_bytes` of files waiting for upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolFull {
    /// The committer waits for uploads (backpressure): nothing is lost while the sources keep
    /// their logs.
    Block,
    /// The oldest waiting commits are deleted, their rows counted.
    Drop,
}

/// How much the spool may hold for upload, and what happens past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimit {
    pub max_bytes: u64,
    pub full: SpoolFull,
}

/// What the uploader has done; read for the status and the end-of-run report.
#[derive(Debug, Default)]
pub struct SpoolCounters {
    pub uploaded_files: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    /// Files an earlier, interrupted run had uploaded already.
    pub already_there: AtomicU64,
    /// Upload rounds that failed (the store unreachable, refusing, timing out).
    pub failures: AtomicU64,
    /// Commits deleted before upload because the spool was full ([`SpoolFull::Drop`]).
    pub dropped_commits: AtomicU64,
    pub dropped_rows: AtomicU64,
    /// Bytes of committed files waiting for upload.
    pub backlog_bytes: AtomicU64,
}

/// The spool directory as the committer and the uploader share it.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    limit: SpoolLimit,
    pub counters: SpoolCounters,
    state: Mutex<SpoolState>,
    /// Signalled on a commit, an upload, a finish request and the uploader's end.
    changed: Condvar,
    /// Held while the committer moves files into place and while the uploader lists the
    /// spool or deletes from it: the uploader never sees half a commit, and never removes a
    /// partition directory the committer is about to fill.
    placing: Mutex<()>,
}

#[derive(Debug, Default)]
struct SpoolState {
    /// The newest commit of this run. Until the first, the collector may still read the
    /// checkpoints of older commits, so none is deleted.
    newest_of_run: Option<u64>,
    /// How long to keep trying once asked to finish.
    finishing: Option<Duration>,
    /// The uploader has ended (an error stops it for good).
    ended: bool,
}

/// An error of the uploader.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the object store holds commit {remote} of this collector, newer than the spool's \
         newest ({local}): another collector writes with the same cluster and collector id, \
         or the spool is an old one"
    )]
    AheadOfSpool { remote: u64, local: u64 },
    #[error("cannot start the uploader")]
    Start(#[source] io::Error),
    #[error("the uploader ended without saying why")]
    Died,
}

impl Spool {
    /// The spool at `root` (the local store's directory).
    pub fn new(root: &Path, limit: SpoolLimit) -> Spool {
        Spool {
            root: root.to_path_buf(),
            limit,
            counters: SpoolCounters::default(),
            state: Mutex::new(SpoolState::default()),
            changed: Condvar::new(),
            placing: Mutex::new(()),
        }
    }

    /// To hold while moving a commit's files into place.
    pub fn placing(&self) -> MutexGuard<'_, ()> {
        self.placing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> MutexGuard<'_, SpoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the uploader of a commit just placed (`placing` still held, so that the
    /// uploader counts it once). With [`SpoolFull::Block`], then waits while more than the
    /// limit waits for upload, until `stop`: the spool passes its limit by one commit at most.
    pub fn committed(
        &self,
        written: CommitSummary,
        placing: Option<MutexGuard<'_, ()>>,
        stop: &AtomicBool,
    ) -> Result<(), StoreError> {
        self.counters.backlog_bytes.fetch_add(written.bytes, Ordering::Relaxed);
        drop(placing);
        let mut state = self.state();
        state.newest_of_run = Some(written.commit);
        self.changed.notify_all();
        loop {
            if state.ended {
                return Err(StoreError::UploaderEnded);
            }
            let over = self.counters.backlog_bytes.load(Ordering::Relaxed) > self.limit.max_bytes;
            if self.limit.full == SpoolFull::Drop || !over || stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let waited = self.changed.wait_timeout(state, Duration::from_millis(100));
            state = waited.unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// The committed files, by commit, listed while no commit is being placed, and the bytes
    /// of those waiting for upload counted afresh.
    fn list(&self, progress: &Progress) -> Result<BTreeMap<u64, SpoolCommit>, StoreError> {
        let _placing = self.placing();
        let commits = spool_commits(&self.root)?;
        self.counters.backlog_bytes.store(progress.backlog(&commits), Ordering::Relaxed);
        Ok(commits)
    }

    /// With [`SpoolFull::Drop`]: deletes the oldest waiting commits until the backlog is
    /// within the limit. Never the newest (the checkpoint), nor one partly uploaded (that
    /// would leave a partial commit in the object store).
    fn drop_over_limit(
        &self,
        commits: &mut BTreeMap<u64, SpoolCommit>,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        if self.limit.full != SpoolFull::Drop {
            return Ok(());
        }
        let newest = commits.keys().next_back().copied();
        let mut backlog = progress.backlog(commits);
        let droppable: Vec<u64> = commits
            .keys()
            .copied()
            .filter(|c| Some(*c) != newest && !progress.started.contains(c))
            .collect();
        for commit in droppable {
            if backlog <= self.limit.max_bytes {
                break;
            }
            let files = commits.remove(&commit).expect("listed above");
            let mut rows = 0;
            for file in &files.files {
                rows += read_footer(&file.path)?.rows.max(0) as u64;
            }
            self.delete(&files)?;
            backlog -= files.bytes();
            self.counters.backlog_bytes.fetch_sub(files.bytes(), Ordering::Relaxed);
            self.counters.dropped_commits.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped_rows.fetch_add(rows, Ordering::Relaxed);
            let _ = writeln!(
                io::stderr(),
                "egresslens: warning: the spool is full ({} MB waiting for upload): dropped \
                 commit {commit} ({rows} rows)",
                backlog / 1_000_000
            );
        }
        Ok(())
    }

    /// Deletes uploaded commits older than this run's newest: the newest stays as the
    /// checkpoint. Commits found incomplete in the spool were being deleted when a run
    /// stopped: their deletion is finished.
    fn delete_uploaded(
        &self,
        commits: &mut BTreeMap<u64, SpoolCommit>,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let Some(newest) = self.state().newest_of_run else { return Ok(()) };
        let done: Vec<u64> = commits
            .iter()
            .filter(|(c, files)| **c < newest && (progress.uploaded.contains(c) || !files.whole()))
            .map(|(c, _)| *c)
            .collect();
        for commit in done {
            let files = commits.remove(&commit).expect("listed above");
            self.delete(&files)?;
        }
        Ok(())
    }

    /// Deletes a commit's files, and the partition directories that leaves empty.
    fn delete(&self, commit: &SpoolCommit) -> Result<(), StoreError> {
        let _placing = self.placing();
        for file in &commit.files {
            fs::remove_file(&file.path).map_err(io_err("remove", &file.path))?;
        }
        for file in &commit.files {
            let hour = file.path.parent();
            for dir in [hour, hour.and_then(Path::parent)].into_iter().flatten() {
                // Fails while the directory holds other files: then it stays.
                if fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Sleeps until `timeout` or a commit, an upload or a finish request.
    fn wait(&self, timeout: Duration) {
        let _ = self.changed.wait_timeout(self.state(), timeout);
    }
}

/// A committed file in the spool.
#[derive(Debug, Clone)]
struct SpoolFile {
    placed: Placed,
    path: PathBuf,
    size: u64,
}

/// A commit's files in the spool, and how many it had.
#[derive(Debug, Clone, Default)]
struct SpoolCommit {
    of: usize,
    files: Vec<SpoolFile>,
}

impl SpoolCommit {
    fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    fn whole(&self) -> bool {
        self.files.len() == self.of
    }
}

fn spool_commits(root: &Path) -> Result<BTreeMap<u64, SpoolCommit>, StoreError> {
    let mut commits: BTreeMap<u64, SpoolCommit> = BTreeMap::new();
    for (name, placed, path) in placed_files(root)? {
        let size = fs::metadata(&path).map_err(io_err("inspect", &path))?.len();
        let commit = commits.entry(name.commit).or_default();
        commit.of = name.of;
        commit.files.push(SpoolFile { placed, path, size });
    }
    Ok(commits)
}

/// The uploader's memory of this run.
#[derive(Debug, Default)]
struct Progress {
    /// Commits whose files are all in the object store.
    uploaded: BTreeSet<u64>,
    /// Commits with at least one file there.
    started: BTreeSet<u64>,
    /// When an upload last succeeded.
    last: Option<Instant>,
}

impl Progress {
    fn backlog(&self, commits: &BTreeMap<u64, SpoolCommit>) -> u64 {
        self.waiting(commits).map(|(_, files)| files.bytes()).sum()
    }

    fn waiting<'a>(
        &'a self,
        commits: &'a BTreeMap<u64, SpoolCommit>,
    ) -> impl Iterator<Item = (&'a u64, &'a SpoolCommit)> {
        commits.iter().filter(|(c, files)| files.whole() && !self.uploaded.contains(c))
    }
}

/// What was left in the spool when the uploader finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Left {
    pub commits: usize,
    pub bytes: u64,
}

/// The thread uploading the spool.
#[derive(Debug)]
pub struct Uploader {
    spool: Arc<Spool>,
    thread: JoinHandle<Result<Left, UploadError>>,
}

impl Uploader {
    /// Starts uploading `spool` to `remote` as `writer`.
    pub fn start(
        remote: Remote,
        writer: Writer,
        spool: Arc<Spool>,
    ) -> Result<Uploader, UploadError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(UploadError::Start)?;
        let shared = spool.clone();
        let thread = std::thread::Builder::new()
            .name("uploader".to_owned())
            .spawn(move || {
                let result = upload_loop(&runtime, &remote, &writer, &shared);
                shared.state().ended = true;
                shared.changed.notify_all();
                result
            })
            .map_err(UploadError::Start)?;
        Ok(Uploader { spool, thread })
    }

    /// Uploads what is left and ends: once everything is up, or once `patience` passes
    /// without an upload succeeding (the store unreachable). Says what stays in the spool.
    pub fn finish(self, patience: Duration) -> Result<Left, UploadError> {
        self.spool.state().finishing = Some(patience);
        self.spool.changed.notify_all();
        self.thread.join().map_err(|_| UploadError::Died)?
    }
}

fn upload_loop(
    runtime: &tokio::runtime::Runtime,
    remote: &Remote,
    writer: &Writer,
    spool: &Spool,
) -> Result<Left, UploadError> {
    let mut progress = Progress::default();
    let mut retry = RETRY_FIRST;
    // While uploads fail: how many rounds have, and when that was last said.
    let mut failing: Option<(u64, Option<Instant>)> = None;
    // When the uploader was first seen asked to finish.
    let mut asked: Option<Instant> = None;
    loop {
        let finishing = spool.state().finishing;
        let started = Instant::now();
        let mut commits = spool.list(&progress)?;
        progress.uploaded.retain(|c| commits.contains_key(c));
        progress.started.retain(|c| commits.contains_key(c));
        spool.drop_over_limit(&mut commits, &progress)?;
        let outcome =
            runtime.block_on(upload_waiting(remote, writer, spool, &commits, &mut progress));
        let failed = match outcome {
            Ok(()) => {
                if let Some((failures, _)) = failing.take() {
                    let _ = writeln!(
                        io::stderr(),
                        "egresslens: uploads to {} go through again after {failures} failed \
                         rounds",
                        remote.url()
                    );
                }
                retry = RETRY_FIRST;
                false
            }
            Err(UploadError::Remote(e @ RemoteError::Object { .. })) => {
                spool.counters.failures.fetch_add(1, Ordering::Relaxed);
                let (failures, warned) = failing.get_or_insert((0, None));
                *failures += 1;
                if warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
                    *warned = Some(Instant::now());
                    let e = with_root_cause(&e);
                    let _ = writeln!(
                        io::stderr(),
                        "egresslens: warning: upload failed, retrying (the spool keeps the \
                         files): {e}"
                    );
                }
                true
            }
            Err(e) => return Err(e),
        };
        spool.delete_uploaded(&mut commits, &progress)?;
        let waiting: Vec<u64> = progress.waiting(&commits).map(|(c, _)| *c).collect();
        if let Some(patience) = finishing {
            let asked = *asked.get_or_insert(started);
            let stuck = progress.last.map_or(asked, |last| last.max(asked)).elapsed() >= patience;
            if waiting.is_empty() || (failed && stuck) {
                let bytes = progress.backlog(&commits);
                return Ok(Left { commits: waiting.len(), bytes });
            }
        }
        if failed {
            spool.wait(retry);
            retry = (retry * 2).min(RETRY_MAX);
        } else if waiting.is_empty() {
            spool.wait(IDLE_WAIT);
        }
    }
}

/// An error and its deepest cause: the object store's errors repeat their inner ones.
fn with_root_cause(error: &dyn std::error::Error) -> String {
    let mut root = error.source();
    while let Some(deeper) = root.and_then(|e| e.source()) {
        root = Some(deeper);
    }
    match root {
        Some(root) => format!("{error}: {root}"),
        None => error.to_string(),
    }
}

/// Uploads the waiting commits in order; the backlog is counted down as each completes.
async fn upload_waiting(
    remote: &Remote,
    writer: &Writer,
    spool: &Spool,
    commits: &BTreeMap<u64, SpoolCommit>,
    progress: &mut Progress,
) -> Result<(), UploadError> {
    let counters = &spool.counters;
    let waiting: Vec<u64> = progress.waiting(commits).map(|(c, _)| *c).collect();
    for commit in waiting {
        let files = &commits[&commit];
        for file in &files.files {
            match remote.upload(writer, &file.placed, &file.path).await? {
                Uploaded::Created => {
                    counters.uploaded_files.fetch_add(1, Ordering::Relaxed);
                    counters.uploaded_bytes.fetch_add(file.size, Ordering::Relaxed);
                }
                Uploaded::AlreadyThere => {
                    counters.already_there.fetch_add(1, Ordering::Relaxed);
                }
            }
            progress.started.insert(commit);
            progress.last = Some(Instant::now());
        }
        progress.uploaded.insert(commit);
        counters.backlog_bytes.fetch_sub(files.bytes(), Ordering::Relaxed);
        spool.changed.notify_all();
    }
    Ok(())
}

/// What [`restore`] took from the object store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// The commit put into the empty spool as its checkpoint, and its file count.
    pub commit: Option<(u64, usize)>,
    /// Newer commits found incomplete and deleted: their spool is gone, and their rows
    /// are read again from the checkpoint.
    pub deleted: Vec<u64>,
}

/// Starts an empty spool from the object store: the writer's newest complete commit becomes
/// the checkpoint (and the next commit is numbered after it); the writer's newer, incomplete
/// commits are deleted. A spool with commits is left as it is, after checking the object
/// store holds nothing newer.
pub fn restore(
    remote: &Remote,
    writer: &Writer,
    store: &mut Store,
) -> Result<Restored, UploadError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(UploadError::Start)?;
    let local = spool_commits(store.root())?;
    let found = runtime.block_on(remote.commits(writer));
    if let Some(local) = local.keys().next_back().copied() {
        // A spool with commits goes on without the object store; checked when it answers.
        let remote_newest = found.ok().and_then(|found| found.keys().next_back().copied());
        return match remote_newest {
            Some(remote) if remote > local => Err(UploadError::AheadOfSpool { remote, local }),
            _ => Ok(Restored::default()),
        };
    }
    let found = found?;
    let complete = found.iter().rev().find(|(_, c)| c.is_complete()).map(|(n, _)| *n);
    let mut restored = Restored::default();
    for (commit, files) in found.range(complete.map_or(0, |n| n + 1)..) {
        runtime.block_on(remote.delete(files))?;
        restored.deleted.push(*commit);
    }
    if let Some(commit) = complete {
        let files = &found[&commit];
        let downloaded = runtime.block_on(download(remote, files))?;
        store.adopt(commit, downloaded)?;
        restored.commit = Some((commit, files.files.len()));
    }
    Ok(restored)
}

async fn download(
    remote: &Remote,
    commit: &RemoteCommit,
) -> Result<Vec<(Placed, Bytes)>, RemoteError> {
    let mut out = Vec::with_capacity(commit.files.len());
    for file in commit.files.values() {
        out.push((file.placed.clone(), remote.get_whole(file).await?));
    }
    Ok(out)
}

impl Store {
    /// Puts the files of a commit made elsewhere (downloaded from the object store) into
    /// this empty store as one commit, as a commit of its own is put (staged, synced, then
    /// moved into place), and numbers the next commit after it.
    fn adopt(&mut self, commit: u64, files: Vec<(Placed, Bytes)>) -> Result<(), StoreError> {
        let tmp = self.root.join(TMP_DIR);
        let mut staged = Vec::with_capacity(files.len());
        for (placed, bytes) in files {
            let foreign = |why| StoreError::Foreign { path: PathBuf::from(&placed.name), why };
            let name = FileName::parse(&placed.name).ok_or_else(|| foreign("not a store name"))?;
            if name.commit != commit {
                return Err(foreign("of another commit"));
            }
            let destination =
                Destination { table: placed.table, date: placed.date, hour: placed.hour };
            let path = tmp.join(destination.staged_name(name));
            let mut file = fs::File::create(&path).map_err(io_err("create", &path))?;
            file.write_all(&bytes).map_err(io_err("write", &path))?;
            file.sync_all().map_err(io_err("sync", &path))?;
            staged.push((path, destination, name));
        }
        sync_dir(&tmp)?;
        self.next_commit = commit;
        self.publish(Sealed { commit, staged, rows: 0 })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{CollectConfig, Control, collect};
    use crate::source::Input;
    use crate::traffic::{GenConfig, generate};
    use object_store::RetryConfig;
    use object_store::aws::AmazonS3Builder;

    /// A store holding several commits of generated traffic read from `dir/waypoint.log`.
    fn collected(dir: &Path) -> (Store, PathBuf) {
        let log = dir.join("waypoint.log");
        let mut bytes = Vec::new();
        generate(&GenConfig { lines: 3_000, seed: 4, ..GenConfig::default() }, &mut bytes)
            .expect("generate");
        fs::write(&log, bytes).expect("write log");
        let (mut store, _) = Store::open(&dir.join("spool")).expect("open");
        let config =
            CollectConfig { commit_rows: 500, chunk_bytes: 128 * 1024, ..CollectConfig::default() };
        let summary = collect(&Input::Path(log.clone()), &mut store, &config, &Control::default())
            .expect("collect");
        assert!(summary.commits >= 4, "{summary:?}");
        (store, log)
    }

    /// An S3 store where nothing listens (port 1 of the loopback), with no retries.
    fn unreachable() -> Remote {
        let client = AmazonS3Builder::new()
            .with_bucket_name("mesh-logs")
            .with_region("us-east-1")
            .with_access_key_id("id")
            .with_secret_access_key("secret")
            .with_endpoint("http://127.0.0.1:1")
            .with_allow_http(true)
            .with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() })
            .build()
            .expect("client");
        Remote::with_store("s3://mesh-logs/egress", Arc::new(client)).expect("remote")
    }

    fn rows_of(commit: &SpoolCommit) -> u64 {
        commit.files.iter().map(|f| read_footer(&f.path).expect("footer").rows as u64).sum()
    }

    /// With `drop`, an unreachable store and a full spool cost the oldest waiting commits
    /// (counted, with their rows), never the newest: the checkpoint.
    #[test]
    fn a_full_spool_drops_its_oldest_commits_and_counts_their_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = collected(dir.path());
        let before = spool_commits(store.root()).expect("list");
        let newest = *before.keys().next_back().expect("commits");
        let dropped_rows: u64 =
            before.iter().filter(|(c, _)| **c != newest).map(|(_, c)| rows_of(c)).sum();
        let limit = SpoolLimit { max_bytes: 1, full: SpoolFull::Drop };
        let spool = Arc::new(Spool::new(store.root(), limit));
        let writer = Writer::new("prod", "wp-0").expect("writer");
        let uploader = Uploader::start(unreachable(), writer, spool.clone()).expect("start");
        let left = uploader.finish(Duration::ZERO).expect("finish");

        let counters = &spool.counters;
        assert_eq!(counters.dropped_commits.load(Ordering::Relaxed), before.len() as u64 - 1);
        assert_eq!(counters.dropped_rows.load(Ordering::Relaxed), dropped_rows);
        assert!(counters.failures.load(Ordering::Relaxed) >= 1);
        let after = spool_commits(store.root()).expect("list");
        assert_eq!(after.keys().copied().collect::<Vec<_>>(), [newest]);
        assert_eq!(left, Left { commits: 1, bytes: after[&newest].bytes() });
    }

    /// Asked to finish while the store has never answered, the uploader gives up after its
    /// patience and says what stays in the spool (with `block`, nothing is dropped).
    #[test]
    fn finishing_gives_up_when_the_store_never_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = collected(dir.path());
        let commits = spool_commits(store.root()).expect("list");
        let limit = SpoolLimit { max_bytes: 1, full: SpoolFull::Block };
        let spool = Arc::new(Spool::new(store.root(), limit));
        let writer = Writer::new("prod", "wp-0").expect("writer");
        let uploader = Uploader::start(unreachable(), writer, spool.clone()).expect("start");
        let left = uploader.finish(Duration::from_secs(2)).expect("finish");
        assert_eq!(left.commits, commits.len());
        assert_eq!(spool.counters.dropped_commits.load(Ordering::Relaxed), 0);
        assert!(spool.counters.failures.load(Ordering::Relaxed) >= 1);
    }

    /// An empty spool starts from the newest complete commit in the object store: the same
    /// checkpoint, the next commit numbered after it, and the newer incomplete commit of the
    /// lost spool deleted.
    #[test]
    fn an_empty_spool_resumes_from_the_newest_complete_commit_in_the_object_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, log) = collected(dir.path());
        let bucket = dir.path().join("bucket");
        fs::create_dir_all(&bucket).expect("bucket");
        let url = format!("file://{}/egress", bucket.display());
        let remote = Remote::open(&url, None).expect("remote");
        let writer = Writer::new("prod", "wp-0").expect("writer");
        let limit = SpoolLimit { max_bytes: u64::MAX, full: SpoolFull::Block };
        let spool = Arc::new(Spool::new(store.root(), limit));
        let uploader = Uploader::start(remote.clone(), writer.clone(), spool).expect("start");
        assert_eq!(uploader.finish(Duration::from_secs(10)).expect("finish"), Left::default());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let runtime = runtime.expect("runtime");
        let uploaded = runtime.block_on(remote.commits(&writer)).expect("list");
        let newest = *uploaded.keys().next_back().expect("commits");
        assert!(uploaded.values().all(RemoteCommit::is_complete));
        // The lost spool had begun uploading one more commit.
        let (placed, path) = store.committed().expect("files").remove(0);
        let partial = Placed { name: format!("c{:012}-1of2.parquet", newest + 1), ..placed };
        runtime.block_on(remote.upload(&writer, &partial, &path)).expect("upload");
        let checkpoint = store.checkpoint_of_path(&log.display().to_string()).expect("checkpoint");
        drop(store);

        let (mut empty, _) = Store::open(&dir.path().join("new-spool")).expect("open");
        let restored = restore(&remote, &writer, &mut empty).expect("restore");
        assert_eq!(restored.commit.map(|(c, _)| c), Some(newest));
        assert_eq!(restored.deleted, [newest + 1]);
        let resumed = empty.checkpoint_of_path(&log.display().to_string()).expect("checkpoint");
        assert_eq!(resumed, checkpoint);
        assert_eq!(empty.next_commit, newest + 1);
        let remaining = runtime.block_on(remote.commits(&writer)).expect("list");
        assert_eq!(remaining.keys().next_back(), Some(&newest));

        // A spool with commits is left alone; one behind the object store is refused.
        assert_eq!(restore(&remote, &writer, &mut empty).expect("again"), Restored::default());
        let newer = Placed { name: format!("c{:012}-1of1.parquet", newest + 5), ..partial };
        runtime.block_on(remote.upload(&writer, &newer, &path)).expect("upload");
        let behind = restore(&remote, &writer, &mut empty).expect_err("behind");
        assert!(matches!(behind, UploadError::AheadOfSpool { .. }), "{behind}");
    }
}
