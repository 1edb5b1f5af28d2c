//! The store on object storage (`s3://bucket/prefix`, `gs://…`, `az://…`, `file:///…`).
//!
//! Object stores have no atomic rename, so the local store stays what commits are written
//! to (the spool), and its committed files are uploaded afterwards, each once, under a
//! final and deterministic key, with a create-only condition (`If-None-Match: *` on S3):
//!
//! ```text
//! <prefix>/<table>/cluster=<cluster>/collector=<id>/date=<date>/hour=<hour>/c<commit>-<n>of<k>.parquet
//! ```
//!
//! Each collector writes below its own `cluster=…/collector=…/`, so writers never touch each
//! other's keys and need no coordination; readers list `<prefix>/<table>/` and see one
//! table, with `cluster` and `collector` as partition columns next to `date` and `hour`.
//! A single PUT is atomic: an interrupted upload leaves no object, and uploading again
//! finds either nothing (and uploads) or the whole object (and checks its size). A commit
//! is complete once all `k` of its files are there; [`Remote::commits`] says which are.
//! Files stay far below one PUT's limit (5 GiB on S3): a commit holds `--commit-rows`
//! rows. Multipart uploads are not used: the `object_store` crate has no create-only mode
//! for them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use url::Url;

use super::{FileName, TABLES};

/// An error of the object store, naming the key or URL it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{url:?} is not a store URL: {why}")]
    Url { url: String, why: String },
    #[error("{what:?} cannot name a {part}: use letters, digits, '.', '_' and '-'")]
    Name { part: &'static str, what: String },
    #[error("cannot {action} {key} in the object store")]
    Object {
        action: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "{key} already exists in the object store with {found} bytes, not the {local} of the \
         file to upload: another collector writes under the same cluster and collector id"
    )]
    Conflict { key: String, found: u64, local: u64 },
    #[error("cannot read {} to upload it", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} is not a Parquet file written by a commit: {why}")]
    Foreign { key: String, why: String },
}

/// A store URL as errors show it: without the user and password someone put in it.
fn shown(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            // Both succeed on URLs that have a host, which a URL with credentials has.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => text.to_owned(),
    }
}

/// A request's retries inside the client: few and short, since the uploader tries again
/// on its own (the client's default keeps at it for three minutes).
fn retries() -> RetryConfig {
    RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(15), ..RetryConfig::default() }
}

/// Who writes: the prefix of its keys inside each table (`cluster=…/collector=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub cluster: String,
    pub collector: String,
}

impl Writer {
    /// A writer, after checking both names can be one path segment each.
    pub fn new(cluster: &str, collector: &str) -> Result<Writer, RemoteError> {
        for (part, what) in [("cluster", cluster), ("collector id", collector)] {
            let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if what.is_empty() || what.starts_with('.') || !what.chars().all(fine) {
                return Err(RemoteError::Name { part, what: what.to_owned() });
            }
        }
        Ok(Writer { cluster: cluster.to_owned(), collector: collector.to_owned() })
    }
}

/// A committed file's place: its table, partition and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placed {
    pub table: String,
    pub date: String,
    pub hour: String,
    pub name: String,
}

/// One file found under the writer's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub key: Key,
    pub placed: Placed,
    pub size: u64,
}

/// What the object store holds of one commit of the writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteCommit {
    /// The commit's file count, from the names (`…-<n>of<k>`).
    pub of: usize,
    /// The files there, by their number in the commit.
    pub files: BTreeMap<usize, RemoteFile>,
}

impl RemoteCommit {
    /// Whether every file of the commit is there.
    pub fn is_complete(&self) -> bool {
        self.of > 0 && self.files.len() == self.of
    }
}

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    Created,
    /// An earlier, interrupted run had uploaded it already (same key and size).
    AlreadyThere,
}

/// A store URL's object store and the prefix inside it.
#[derive(Debug, Clone)]
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Key,
}

impl Remote {
    /// The object store a URL names. Credentials come the usual way for each service
    /// (for S3: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_WEB_IDENTITY_TOKEN_FILE`
    /// with `AWS_ROLE_ARN` as under IRSA, else the instance's metadata service), never from
    /// the URL. `s3_endpoint` is an S3-compatible service's address (MinIO, Alibaba OSS),
    /// path-style, plain HTTP allowed when it says `http://`.
    pub fn open(text: &str, s3_endpoint: Option<&str>) -> Result<Remote, RemoteError> {
        let bad = |why: &str| RemoteError::Url { url: shown(text), why: why.to_owned() };
        let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials do not go in the URL (use the environment)"));
        }
        if s3_endpoint.is_some() && !matches!(url.scheme(), "s3" | "s3a") {
            return Err(bad("--s3-endpoint goes with s3:// URLs only"));
        }
        let built = |e: object_store::Error| bad(&e.to_string());
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => {
                let mut builder = AmazonS3Builder::from_env().with_url(text).with_retry(retries());
                if let Some(endpoint) = s3_endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                Arc::new(builder.build().map_err(built)?)
            }
            "gs" => {
                let builder =
                    GoogleCloudStorageBuilder::from_env().with_url(text).with_retry(retries());
                Arc::new(builder.build().map_err(built)?)
            }
            "az" | "abfs" | "abfss" => {
                let builder =
                    MicrosoftAzureBuilder::from_env().with_url(text).with_retry(retries());
                Arc::new(builder.build().map_err(built)?)
            }
            "file" => Arc::new(LocalFileSystem::new()),
            other => return Err(bad(&format!("unknown scheme {other:?} (s3, gs, az or file)"))),
        };
        Remote::with_store(text, store)
    }

    /// The store at `text` through an object store built by the caller (one configured
    /// otherwise than from the environment).
    pub fn with_store(text: &str, store: Arc<dyn ObjectStore>) -> Result<Remote, RemoteError> {
        let bad = |why: &str| RemoteError::Url { url: shown(text), why: why.to_owned() };
        let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        let prefix = Key::parse(url.path().trim_matches('/')).map_err(|e| bad(&e.to_string()))?;
        Ok(Remote { url: text.trim_end_matches('/').to_owned(), store, prefix })
    }

    /// The URL this store was opened from, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Where `placed` goes for `writer`.
    pub fn key(&self, writer: &Writer, placed: &Placed) -> Key {
        self.writer_prefix(writer, &placed.table)
            .join(format!("date={}", placed.date).as_str())
            .join(format!("hour={}", placed.hour).as_str())
            .join(placed.name.as_str())
    }

    fn writer_prefix(&self, writer: &Writer, table: &str) -> Key {
        self.prefix
            .clone()
            .join(table)
            .join(format!("cluster={}", writer.cluster).as_str())
            .join(format!("collector={}", writer.collector).as_str())
    }

    /// Uploads the committed file at `path` to where `placed` goes, unless it is there. The
    /// file is read whole: a commit's files are bounded by its rows.
    pub async fn upload(
        &self,
        writer: &Writer,
        placed: &Placed,
        path: &Path,
    ) -> Result<Uploaded, RemoteError> {
        let key = self.key(writer, placed);
        let bytes = std::fs::read(path)
            .map_err(|source| RemoteError::Read { path: path.to_path_buf(), source })?;
        let local = bytes.len() as u64;
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        let put = self.store.put_opts(&key, PutPayload::from(Bytes::from(bytes)), options).await;
        match put {
            Ok(_) => Ok(Uploaded::Created),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let head = self.store.head(&key).await.map_err(self.error("inspect", &key))?;
                if head.size == local {
                    Ok(Uploaded::AlreadyThere)
                } else {
                    Err(RemoteError::Conflict { key: key.to_string(), found: head.size, local })
                }
            }
            Err(source) => {
                Err(RemoteError::Object { action: "upload", key: key.to_string(), source })
            }
        }
    }

    /// Every commit the writer has files of, by number.
    pub async fn commits(
        &self,
        writer: &Writer,
    ) -> Result<BTreeMap<u64, RemoteCommit>, RemoteError> {
        let mut commits: BTreeMap<u64, RemoteCommit> = BTreeMap::new();
        for table in TABLES {
            let prefix = self.writer_prefix(writer, table);
            let mut listing = self.store.list(Some(&prefix));
            while let Some(meta) = listing.try_next().await.map_err(self.error("list", &prefix))? {
                let Some((name, placed)) = placed_below(&meta.location, &prefix, table) else {
                    continue;
                };
                let commit = commits.entry(name.commit).or_default();
                commit.of = name.of;
                let file = RemoteFile { key: meta.location, placed, size: meta.size };
                commit.files.insert(name.n, file);
            }
        }
        Ok(commits)
    }

    /// A file's Parquet key-value metadata, read from its footer alone.
    pub async fn key_values(
        &self,
        file: &RemoteFile,
    ) -> Result<BTreeMap<String, String>, RemoteError> {
        let foreign =
            |why: &str| RemoteError::Foreign { key: file.key.to_string(), why: why.to_owned() };
        if file.size < 12 {
            return Err(foreign("too short"));
        }
        let tail = self.get(file, file.size - 8..file.size).await?;
        let footer: [u8; 8] = tail[..].try_into().map_err(|_| foreign("short read"))?;
        let tail = FooterTail::try_new(&footer).map_err(|e| foreign(&e.to_string()))?;
        let len = tail.metadata_length() as u64;
        if len + 8 > file.size {
            return Err(foreign("metadata longer than the file"));
        }
        let bytes = self.get(file, file.size - 8 - len..file.size - 8).await?;
        let metadata =
            ParquetMetaDataReader::decode_metadata(&bytes).map_err(|e| foreign(&e.to_string()))?;
        Ok(metadata
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
            .collect())
    }

    /// A file's whole contents.
    pub async fn get_whole(&self, file: &RemoteFile) -> Result<Bytes, RemoteError> {
        let read = self.store.get(&file.key).await.map_err(self.error("read", &file.key))?;
        read.bytes().await.map_err(self.error("read", &file.key))
    }

    async fn get(
        &self,
        file: &RemoteFile,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, RemoteError> {
        self.store.get_range(&file.key, range).await.map_err(self.error("read", &file.key))
    }

    /// Deletes the files of a commit that cannot be completed any more (its spool is gone).
    pub async fn delete(&self, commit: &RemoteCommit) -> Result<(), RemoteError> {
        for file in commit.files.values() {
            self.store.delete(&file.key).await.map_err(self.error("delete", &file.key))?;
        }
        Ok(())
    }

    fn error(
        &self,
        action: &'static str,
        key: &Key,
    ) -> impl FnOnce(object_store::Error) -> RemoteError {
        let key = key.to_string();
        move |source| RemoteError::Object { action, key, source }
    }
}

/// The name and place of a committed file's key below a writer's `prefix` in `table`
/// (`date=…/hour=…/c…-<n>of<k>.parquet`); `None` for anything else there.
fn placed_below(key: &Key, prefix: &Key, table: &str) -> Option<(FileName, Placed)> {
    let parts: Vec<_> = key.prefix_match(prefix)?.collect();
    let [date, hour, name] = parts.as_slice() else { return None };
    let value =
        |part: &str, column: &str| Some(part.strip_prefix(column)?.strip_prefix('=')?.to_owned());
    let placed = Placed {
        table: table.to_owned(),
        date: value(date.as_ref(), "date")?,
        hour: value(hour.as_ref(), "hour")?,
        name: name.as_ref().to_owned(),
    };
    Some((FileName::parse(&placed.name)?, placed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, RecordBatch};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;

    fn parquet_file(path: &Path, rows: i64, commit: &str) {
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from_iter_values(0..rows)) as arrow_array::ArrayRef,
        )])
        .expect("batch");
        let kv = KeyValue::new("egresslens.commit".to_owned(), commit.to_owned());
        let props = WriterProperties::builder().set_key_value_metadata(Some(vec![kv])).build();
        let file = std::fs::File::create(path).expect("create");
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    }

    fn placed(table: &str, name: &str) -> Placed {
        Placed {
            table: table.into(),
            date: "2025-08-18".into(),
            hour: "09".into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn uploads_are_create_only_and_commits_are_complete_with_all_their_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}/bucket/egress/", dir.path().display());
        let remote = Remote::open(&url, None).expect("open");
        let writer = Writer::new("prod-hz", "waypoint-6f7c9d-x2x7q").expect("writer");
        let (one, two) = (dir.path().join("one.parquet"), dir.path().join("two.parquet"));
        parquet_file(&one, 10, "7");
        parquet_file(&two, 20, "7");
        let first = placed("access_log", "c000000000007-1of2.parquet");
        assert_eq!(remote.upload(&writer, &first, &one).await.expect("upload"), Uploaded::Created);
        let key = remote.key(&writer, &first).to_string();
        assert!(
            key.ends_with(
                "egress/access_log/cluster=prod-hz/collector=waypoint-6f7c9d-x2x7q/date=2025-08-18/\
                 hour=09/c000000000007-1of2.parquet"
            ),
            "{key}"
        );
        let commits = remote.commits(&writer).await.expect("list");
        assert!(!commits[&7].is_complete());
        // Again after an interruption: found whole, not written twice.
        assert_eq!(
            remote.upload(&writer, &first, &one).await.expect("again"),
            Uploaded::AlreadyThere
        );
        // The same key with other contents is somebody else's.
        let conflict = remote.upload(&writer, &first, &two).await.expect_err("conflict");
        assert!(conflict.to_string().contains("another collector"), "{conflict}");
        let second = placed("rejects", "c000000000007-2of2.parquet");
        remote.upload(&writer, &second, &two).await.expect("upload");
        let commits = remote.commits(&writer).await.expect("list");
        assert!(commits[&7].is_complete());
        assert_eq!(commits[&7].files[&1].placed, first);
        assert_eq!(commits[&7].files[&2].placed, second);
        let kv = remote.key_values(&commits[&7].files[&2]).await.expect("footer");
        assert_eq!(kv.get("egresslens.commit").map(String::as_str), Some("7"));
        // Another writer's keys are not listed as this one's.
        let other = Writer::new("prod-hz", "waypoint-6f7c9d-k9pzt").expect("writer");
        assert!(remote.commits(&other).await.expect("list").is_empty());
        remote.delete(&commits[&7]).await.expect("delete");
        assert!(remote.commits(&writer).await.expect("list").is_empty());
    }

    #[test]
    fn urls_and_names_are_checked() {
        let err = |url: &str| Remote::open(url, None).expect_err(url).to_string();
        assert!(err("ftp://host/x").contains("unknown scheme"));
        let secret = err("s3://key:secret@bucket/x");
        assert!(secret.contains("credentials do not go in the URL"), "{secret}");
        assert!(!secret.contains("secret@") && !secret.contains("key:"), "{secret}");
        assert!(err("not a url").contains("is not a store URL"));
        let endpoint = Remote::open("file:///tmp/x", Some("http://127.0.0.1:9000"));
        assert!(endpoint.expect_err("endpoint").to_string().contains("s3:// URLs only"));
        assert!(Writer::new("prod", "a/b").is_err());
        assert!(Writer::new("", "a").is_err());
        assert!(Writer::new("..", "a").is_err());
        assert!(Writer::new("prod.eu-1", "waypoint_0").is_ok());
    }
}
