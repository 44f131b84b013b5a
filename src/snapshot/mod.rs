//! Policy-applied snapshots: one caller-visible slice written once as a
//! Parquet file, so tools that read files rather than streams (Parquet
//! readers over HTTP with ranges, the Delta Sharing connectors, a resumed
//! download) can be handed a file that holds only what the caller may see.
//!
//! A snapshot is addressed by the hash of everything that decides its
//! content ([`SnapshotKey::of`]): the dataset version's files, the caller's
//! access plan (columns, masks, row filter, row cap, pseudonym project) and
//! the slice asked for. Two callers with the same plan share a file; a
//! change of policy or of the manifest's masks makes a new key, so a file
//! never outlives the plan it was cut for.
//!
//! Files live in `<state>/snapshots` as `<key>.<etag>.<rows>.parquet`, so
//! one rename publishes a file with everything the cache needs to know
//! about it, and a crash leaves at worst a `.tmp-` file that the next start
//! removes. The cache keeps at most `max_bytes` and evicts the least
//! recently used file first; a reader that opened a file before it was
//! evicted keeps reading it (Unix keeps unlinked open files). One writer
//! per key: concurrent requests for a snapshot being written wait for it.

pub mod shared_tickets;
pub mod signed_url;

pub use signed_url::{Link, Tickets, TicketsFull, UrlSigner};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::Caller;
use crate::config::SnapshotSettings;
use crate::slice::{SliceError, SliceRequest, SliceStream};
use crate::util::internal::{Internal, OrInternal};

/// Everything the server keeps for snapshots: the files, the key that signs
/// links to them and the tickets those links name.
pub struct Snapshots {
    pub cache: SnapshotCache,
    pub signer: UrlSigner,
    pub tickets: Tickets<Ticket>,
    pub link_ttl_secs: u64,
    /// Where replicas share their tickets, when there are replicas.
    pub shared: Option<shared_tickets::SharedTickets>,
}

impl Snapshots {
    /// Opens `<state>/snapshots` and the link key in `<state>`; with
    /// `shared`, tickets are also kept there for other replicas.
    pub fn open(
        state_dir: &Path,
        settings: &SnapshotSettings,
        shared: Option<Arc<dyn object_store::ObjectStore>>,
    ) -> Result<Self, Internal> {
        Ok(Self {
            cache: SnapshotCache::open(&state_dir.join("snapshots"), settings.max_bytes)?,
            signer: UrlSigner::load_or_create(state_dir)
                .or_internal("reading the snapshot link key")?,
            tickets: Tickets::new(settings.max_links, settings.max_links_per_caller),
            link_ttl_secs: settings.link_ttl_secs,
            shared: shared.map(shared_tickets::SharedTickets::new),
        })
    }

    /// Ticket `id`, unexpired: this replica's, or one another replica
    /// issued (read from the bucket, then kept here).
    pub async fn ticket(&self, id: &str, now: i64) -> Option<Ticket> {
        if let Some(ticket) = self.tickets.get(id, now) {
            return Some(ticket);
        }
        let (owner, until, ticket) = self.shared.as_ref()?.get(&self.signer, id, now).await?;
        self.tickets.adopt(id, &owner, ticket.clone(), until, now);
        Some(ticket)
    }
}

/// What a signed link was issued for: by whom (with the claims their token
/// carried), which slice of which version, under which grant, and the key
/// the snapshot had then. Each use asks the policy again with these.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ticket {
    pub caller: Caller,
    pub dataset: String,
    pub version: u64,
    pub grant: Option<String>,
    pub request: SliceRequest,
    pub key: SnapshotKey,
}

/// The hash of a snapshot's inputs (64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SnapshotKey(String);

impl SnapshotKey {
    /// The key of a snapshot made from `inputs`: any serialisable value
    /// that holds everything deciding the file's bytes.
    pub fn of(inputs: &serde_json::Value) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"sluice-snapshot-v1\n");
        hash.update(inputs.to_string().as_bytes());
        Self(hex(&hash.finalize()))
    }

    /// A key from its text, if it is one (64 lowercase hex digits).
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A snapshot on disk.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub key: SnapshotKey,
    pub path: PathBuf,
    pub size: u64,
    pub rows: u64,
    /// The first 32 hex digits of the file's SHA-256.
    pub etag: String,
}

/// Why a snapshot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The slice is larger than one snapshot may be (a quarter of the
    /// cache).
    #[error(
        "the slice is larger than a snapshot may be ({limit} bytes); ask for fewer columns or rows, or stream it from /data"
    )]
    TooLarge { limit: u64 },
    /// The slice could not be planned or read.
    #[error(transparent)]
    Slice(#[from] SliceError),
    /// Writing the file failed.
    #[error("snapshot: {0}")]
    Internal(#[from] Internal),
}

struct Entry {
    snapshot: Arc<Snapshot>,
    last_used: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<SnapshotKey, Entry>,
    bytes: u64,
    clock: u64,
}

/// The bounded cache of snapshot files.
pub struct SnapshotCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    /// One lock per key being written.
    writers: Mutex<HashMap<SnapshotKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Files being written at once, server-wide. With each file at most a
    /// quarter of `max_bytes`, the folder never holds more than 1.5 times
    /// `max_bytes`, half-written files included.
    writing: tokio::sync::Semaphore,
}

/// Files written at once.
const CONCURRENT_WRITES: usize = 2;

/// A snapshot and an open handle on its file: opened under the index's
/// lock, so an eviction cannot remove it between finding and reading (a
/// reader keeps an evicted file's data through its handle).
pub struct Opened {
    pub snapshot: Arc<Snapshot>,
    pub file: std::fs::File,
}

impl SnapshotCache {
    /// Opens `dir` (creating it), removes half-written files and indexes the
    /// rest, oldest first.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, Internal> {
        std::fs::create_dir_all(dir).or_internal("creating the snapshot folder")?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).or_internal("listing the snapshot folder")? {
            let entry = entry.or_internal("listing the snapshot folder")?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().or_internal("reading a snapshot's size")?;
            match parse_file_name(&name) {
                Some((key, etag, rows)) if meta.is_file() => {
                    let used = meta.modified().ok();
                    found.push((
                        used,
                        Snapshot {
                            key,
                            path,
                            size: meta.len(),
                            rows,
                            etag,
                        },
                    ));
                }
                _ => {
                    // A `.tmp-` file a crash left, or something foreign.
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort_by_key(|(used, _)| *used);
        let cache = Self {
            dir: dir.to_owned(),
            max_bytes,
            index: Mutex::new(Index::default()),
            writers: Mutex::new(HashMap::new()),
            writing: tokio::sync::Semaphore::new(CONCURRENT_WRITES),
        };
        for (_, snapshot) in found {
            cache.insert(snapshot);
        }
        Ok(cache)
    }

    /// The snapshot for `key`, opened, if it is on disk (and marks it used).
    fn find(&self, key: &SnapshotKey) -> Option<Opened> {
        let mut index = self.lock();
        index.clock += 1;
        let clock = index.clock;
        let entry = index.entries.get_mut(key)?;
        entry.last_used = clock;
        let snapshot = entry.snapshot.clone();
        match std::fs::File::open(&snapshot.path) {
            Ok(file) => Some(Opened { snapshot, file }),
            Err(_) => {
                // Removed behind the cache's back: forget it, cut again.
                if let Some(gone) = index.entries.remove(key) {
                    index.bytes -= gone.snapshot.size;
                }
                None
            }
        }
    }

    /// The largest snapshot the cache writes.
    fn max_file_bytes(&self) -> u64 {
        self.max_bytes / 4
    }

    /// The snapshot for `key`, opened, written from the slice `start`
    /// produces if it is not on disk. Only one caller writes a key; others
    /// wait for it and then find the file. Waiting (for that writer, or for
    /// one of the server's write slots) lasts at most `wait`, then the
    /// caller is told the server is busy. Returns whether this call wrote
    /// it.
    pub async fn get_or_write<F, Fut>(
        &self,
        key: &SnapshotKey,
        wait: std::time::Duration,
        start: F,
    ) -> Result<(Opened, bool), SnapshotError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<SliceStream, SnapshotError>>,
    {
        if let Some(found) = self.find(key) {
            return Ok((found, false));
        }
        // Forgets the key's lock however this call ends (a dropped request
        // included), once no other caller holds it. Declared first, so it
        // runs after this call's own handle on the lock is dropped.
        let _forget = ForgetWriter { cache: self, key };
        let lock = {
            let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
            writers.entry(key.clone()).or_default().clone()
        };
        let deadline = tokio::time::Instant::now() + wait;
        let busy = |_| SnapshotError::Slice(SliceError::busy());
        let _writing = tokio::time::timeout_at(deadline, lock.lock())
            .await
            .map_err(busy)?;
        if let Some(found) = self.find(key) {
            return Ok((found, false));
        }
        let _permit = tokio::time::timeout_at(deadline, self.writing.acquire())
            .await
            .map_err(busy)?
            .or_internal("waiting to write a snapshot")?;
        let stream = start().await?;
        let snapshot = self.write(key, stream).await?;
        let file = std::fs::File::open(&snapshot.path).or_internal("opening a snapshot file")?;
        Ok((
            Opened {
                snapshot: self.insert(snapshot),
                file,
            },
            true,
        ))
    }

    /// Writes a slice's chunks to a temporary file, then renames it into
    /// place under its final name.
    async fn write(
        &self,
        key: &SnapshotKey,
        stream: SliceStream,
    ) -> Result<Snapshot, SnapshotError> {
        let temp = TempFile(
            self.dir
                .join(format!(".tmp-{}-{}", key.0, uuid::Uuid::new_v4())),
        );
        let mut file = tokio::fs::File::create(&temp.0)
            .await
            .or_internal("creating a snapshot file")?;
        let (mut hash, mut size) = (Sha256::new(), 0u64);
        let mut chunks = std::pin::pin!(stream.into_chunks());
        while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > self.max_file_bytes() {
                return Err(SnapshotError::TooLarge {
                    limit: self.max_file_bytes(),
                });
            }
            hash.update(&chunk);
            file.write_all(&chunk)
                .await
                .or_internal("writing a snapshot file")?;
        }
        file.sync_all()
            .await
            .or_internal("flushing a snapshot file")?;
        drop(file);
        let etag = hex(&hash.finalize())[..32].to_owned();
        let path = temp.0.clone();
        let rows = tokio::task::spawn_blocking(move || count_rows(&path))
            .await
            .or_internal("reading a snapshot's footer")??;
        let path = self.dir.join(file_name(key, &etag, rows));
        std::fs::rename(&temp.0, &path).or_internal("publishing a snapshot file")?;
        std::mem::forget(temp);
        Ok(Snapshot {
            key: key.clone(),
            path,
            size,
            rows,
            etag,
        })
    }

    /// Adds a file to the index and evicts the least recently used others
    /// while the cache holds more than its limit.
    fn insert(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        let mut index = self.lock();
        index.clock += 1;
        let clock = index.clock;
        index.bytes += snapshot.size;
        if let Some(old) = index.entries.insert(
            snapshot.key.clone(),
            Entry {
                snapshot: snapshot.clone(),
                last_used: clock,
            },
        ) {
            index.bytes -= old.snapshot.size;
        }
        while index.bytes > self.max_bytes {
            let Some(victim) = index
                .entries
                .iter()
                .filter(|(key, _)| **key != snapshot.key)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(gone) = index.entries.remove(&victim) {
                index.bytes -= gone.snapshot.size;
                let _ = std::fs::remove_file(&gone.snapshot.path);
                tracing::debug!(key = victim.as_str(), "snapshot evicted");
            }
        }
        snapshot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Drops a key's writer lock from the map when the last user is done.
struct ForgetWriter<'a> {
    cache: &'a SnapshotCache,
    key: &'a SnapshotKey,
}

impl Drop for ForgetWriter<'_> {
    fn drop(&mut self) {
        let mut writers = self.cache.writers.lock().unwrap_or_else(|e| e.into_inner());
        // The map's own reference is the only one left: nobody waits.
        if writers
            .get(self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            writers.remove(self.key);
        }
    }
}

/// Removes a half-written file unless it was published.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn file_name(key: &SnapshotKey, etag: &str, rows: u64) -> String {
    format!("{}.{etag}.{rows}.parquet", key.0)
}

fn parse_file_name(name: &str) -> Option<(SnapshotKey, String, u64)> {
    let rest = name.strip_suffix(".parquet")?;
    let mut parts = rest.split('.');
    let key = SnapshotKey::parse(parts.next()?)?;
    let etag = parts.next()?;
    let rows = parts.next()?.parse().ok()?;
    let etag_ok = etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit());
    (etag_ok && parts.next().is_none()).then(|| (key, etag.to_owned(), rows))
}

/// The row count in a Parquet file's footer (which also checks the file
/// is whole).
fn count_rows(path: &Path) -> Result<u64, Internal> {
    use parquet::file::reader::FileReader;
    let file = std::fs::File::open(path).or_internal("opening a snapshot file")?;
    let reader = parquet::file::reader::SerializedFileReader::new(file)
        .or_internal("reading a snapshot's footer")?;
    Ok(u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or_default())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fake(dir: &Path, n: u8, size: usize) -> Snapshot {
        let key = SnapshotKey::of(&serde_json::json!(n));
        let etag = format!("{n:032x}");
        let path = dir.join(file_name(&key, &etag, 1));
        std::fs::write(&path, vec![0u8; size]).unwrap();
        Snapshot {
            key,
            path,
            size: size as u64,
            rows: 1,
            etag,
        }
    }

    #[test]
    fn evicts_least_recently_used_beyond_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::open(dir.path(), 250).unwrap();
        let a = cache.insert(fake(dir.path(), 1, 100));
        let b = cache.insert(fake(dir.path(), 2, 100));
        // Using `a` makes `b` the oldest.
        assert!(cache.find(&a.key).is_some());
        let c = cache.insert(fake(dir.path(), 3, 100));
        assert!(cache.find(&b.key).is_none());
        assert!(!b.path.exists());
        assert!(cache.find(&a.key).is_some() && cache.find(&c.key).is_some());
        assert_eq!(cache.lock().bytes, 200);
    }

    #[test]
    fn reopening_indexes_published_files_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let kept = fake(dir.path(), 1, 10);
        std::fs::write(dir.path().join(".tmp-half-written"), b"x").unwrap();
        let cache = SnapshotCache::open(dir.path(), 1000).unwrap();
        let found = cache.find(&kept.key).unwrap().snapshot;
        assert_eq!(
            (found.size, found.rows, found.etag.as_str()),
            (10, 1, kept.etag.as_str())
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A write that never ends, holding its key's lock and a write slot.
    fn stuck_writer(cache: &Arc<SnapshotCache>, n: u64) -> tokio::task::JoinHandle<()> {
        let (cache, key) = (
            cache.clone(),
            SnapshotKey::of(&serde_json::json!({ "n": n })),
        );
        tokio::spawn(async move {
            let _ = cache
                .get_or_write(&key, Duration::from_secs(600), || {
                    std::future::pending::<Result<SliceStream, SnapshotError>>()
                })
                .await;
        })
    }

    #[tokio::test]
    async fn waiting_for_a_writer_or_a_write_slot_ends_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(SnapshotCache::open(dir.path(), 1000).unwrap());
        let stuck: Vec<_> = (0..CONCURRENT_WRITES as u64)
            .map(|n| stuck_writer(&cache, n))
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The same key as a stuck writer, and a new key with every slot taken.
        for n in [0, 99] {
            let key = SnapshotKey::of(&serde_json::json!({ "n": n }));
            let waited = cache
                .get_or_write(&key, Duration::from_millis(100), || {
                    std::future::pending::<Result<SliceStream, SnapshotError>>()
                })
                .await;
            assert!(
                matches!(waited, Err(SnapshotError::Slice(SliceError::Busy { .. }))),
                "key {n}"
            );
        }
        for writer in stuck {
            writer.abort();
        }
    }

    #[test]
    fn keys_parse_only_as_written() {
        let key = SnapshotKey::of(&serde_json::json!({"a": 1}));
        assert_eq!(SnapshotKey::parse(key.as_str()), Some(key.clone()));
        assert_eq!(SnapshotKey::parse("../etc/passwd"), None);
        assert_eq!(SnapshotKey::parse(&key.as_str().to_uppercase()), None);
    }
}
