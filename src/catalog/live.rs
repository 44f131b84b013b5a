//! The catalogue as the server sees it while stewards change it: readers
//! take an immutable snapshot, writers (one at a time) commit a change to
//! storage durably and then swap in a new snapshot. A reader never sees a
//! change that is not yet on disk, nor half of one.

use std::path::Path;
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use time::OffsetDateTime;

use super::local::{LocalRoot, OpenError, Recovered, Staging};
use super::manifest::{ColumnSpec, Manifest};
use super::profile::{self, Profile, ProfileKey};
use super::store_root::{Committed, Expect, StoreRoot};
use super::{Catalog, CatalogError, Dataset, Version, check_schema, load_dataset, read_version};
use crate::domain::{ColumnName, DatasetId};

/// Why a change to the catalogue was not made. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no dataset with this id")]
    NotFound,
    #[error("dataset '{0}' is retired")]
    Retired(String),
    #[error("a dataset with id '{0}' already exists")]
    Exists(String),
    /// The publisher has as many datasets as it may.
    #[error("publisher '{publisher}' already has {max} datasets, the most allowed")]
    TooMany { publisher: String, max: usize },
    /// The change would leave metadata and data disagreeing.
    #[error("{0}")]
    Invalid(String),
    /// A version was published after the one a change was based on (a
    /// rewrite racing an upload): nothing was changed.
    #[error("version {0} was published meanwhile; nothing was changed")]
    Moved(u64),
    /// The change no longer applies to the manifest another replica
    /// committed meanwhile (why, in words).
    #[error("the dataset changed meanwhile: {0}")]
    ChangedMeanwhile(String),
    /// Another replica gave the dataset to another publisher while this
    /// change was being made: the caller was authorised for the old one.
    #[error("the dataset's publisher changed meanwhile; nothing was changed")]
    PublisherChanged,
    /// This catalogue is not open for writing (another process has it).
    #[error("the catalogue is read-only here")]
    ReadOnly,
    /// The change's record could not be made durable, so it was not made.
    #[error("the change could not be recorded: {0}")]
    Unrecorded(String),
    /// Storage failed (a failed fsync included): the previous state stands.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("{0}")]
    Catalog(#[from] CatalogError),
}

impl WriteError {
    /// Whether the change was refused before anything of it was committed
    /// (so files put for it may go); storage failures are not refusals: a
    /// write that failed may still have reached storage.
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            WriteError::Retired(_)
                | WriteError::Invalid(_)
                | WriteError::Moved(_)
                | WriteError::ChangedMeanwhile(_)
                | WriteError::PublisherChanged
                | WriteError::Unrecorded(_)
        )
    }
}

/// Where changes are written: a local folder or an object store. Both keep
/// the same layout and commit order (files first, manifest last).
#[derive(Debug)]
enum Writer {
    Local(LocalRoot),
    Store(StoreRoot),
}

impl Writer {
    fn staging(&self) -> std::io::Result<Staging> {
        match self {
            Writer::Local(root) => root.staging(),
            Writer::Store(root) => root.staging(),
        }
    }

    async fn exists(&self, id: &DatasetId) -> std::io::Result<bool> {
        match self {
            Writer::Local(root) => Ok(root.exists(id)),
            Writer::Store(root) => root.exists(id).await,
        }
    }

    /// Commits `manifest` if storage still holds what `expect` says (a
    /// local folder has one writer, so it always does).
    async fn write_manifest(
        &self,
        manifest: &Manifest,
        expect: Expect<'_>,
    ) -> std::io::Result<Committed> {
        match self {
            Writer::Local(root) => root.write_manifest(manifest).map(|()| Committed::Yes(None)),
            Writer::Store(root) => root.write_manifest(manifest, expect).await,
        }
    }

    /// The number the next version of `id` gets: above every folder, and
    /// (in an object store) claimed so no other replica takes it.
    async fn claim_version(&self, id: &DatasetId, published: u64) -> std::io::Result<u64> {
        let next = published.max(self.highest_version_dir(id).await?) + 1;
        match self {
            Writer::Local(_) => Ok(next),
            Writer::Store(root) => root.claim_version(id, next).await,
        }
    }

    async fn release_claim(&self, id: &DatasetId, number: u64) -> std::io::Result<()> {
        match self {
            Writer::Local(root) => root.release_claim(id, number),
            Writer::Store(root) => root.release_claim(id, number).await,
        }
    }

    async fn highest_version_dir(&self, id: &DatasetId) -> std::io::Result<u64> {
        match self {
            Writer::Local(root) => root.highest_version_dir(id),
            Writer::Store(root) => root.highest_version_dir(id).await,
        }
    }

    async fn place_version(&self, id: &DatasetId, n: u64, staged: &Path) -> std::io::Result<()> {
        match self {
            Writer::Local(root) => root.place_version(id, n, staged),
            Writer::Store(root) => root.place_version(id, n, staged).await,
        }
    }

    async fn remove_unpublished(&self, id: &DatasetId, n: u64) -> std::io::Result<()> {
        match self {
            Writer::Local(root) => root.remove_unpublished(id, n),
            Writer::Store(root) => root.remove_unpublished(id, n).await,
        }
    }

    async fn recover(&self) -> std::io::Result<Recovered> {
        match self {
            Writer::Local(root) => root.recover(),
            Writer::Store(root) => root.recover().await,
        }
    }
}

/// The catalogue, changeable.
pub struct LiveCatalog {
    current: RwLock<Arc<Catalog>>,
    /// Held while a change is being committed: one writer at a time. `None`
    /// when the catalogue was opened read-only.
    writer: tokio::sync::Mutex<Option<Writer>>,
    /// The change marker's ETag at the last full listing, and when.
    listed: std::sync::Mutex<Option<(Option<String>, std::time::Instant)>>,
    /// When a request last made this replica look for changes.
    refreshed: std::sync::Mutex<Option<std::time::Instant>>,
    /// Told of every change right before it is committed (see
    /// [`LiveCatalog::record_changes_with`]).
    journal: std::sync::OnceLock<Journal>,
}

/// Records a change before it is committed: given the manifest before
/// (none for a registration) and the one about to be written, it returns
/// what makes the record durable. An error refuses the change.
pub type Journal = Arc<
    dyn Fn(Option<&Manifest>, &Manifest) -> futures::future::BoxFuture<'static, Result<(), String>>
        + Send
        + Sync,
>;

impl std::fmt::Debug for LiveCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCatalog").finish_non_exhaustive()
    }
}

/// A published upload: what the new version holds.
#[derive(Debug)]
pub struct Published {
    pub dataset: Arc<Dataset>,
    pub version: u64,
    /// Columns the upload added to a manifest that declared none.
    pub added_columns: Vec<ColumnName>,
    /// The version is held for review, not published: its columns were
    /// defined by the file and nobody has classified them yet.
    pub held: bool,
    /// Why the version waits for an admin, in words (empty when it does
    /// not): what its data looks to hold that the version it replaces did
    /// not ([`profile::findings`]).
    pub findings: Vec<String>,
    /// The pending change an admin approves to publish it.
    pub change: Option<u64>,
}

/// How a new version is published: by whom, with the key its profile is
/// taken under, and (for a rewrite) only while it is still based on the
/// version that is current.
#[derive(Debug, Clone, Copy)]
pub struct Publication<'a> {
    /// The uploader's `sub`, recorded on a change the version waits in.
    pub by: &'a str,
    pub key: &'a ProfileKey,
    /// Published only if this is still the current version.
    pub based_on: Option<u64>,
}

impl LiveCatalog {
    /// Opens a local catalogue folder for reading and writing: takes the
    /// writer's lock, cleans up after any crashed write, then loads.
    pub async fn open_local(folder: &Path) -> anyhow::Result<Self> {
        let root = LocalRoot::open(folder)?;
        let catalog_folder = root.root().to_owned();
        Self::open_with(Writer::Local(root), || load_local(&catalog_folder)).await
    }

    /// Opens a catalogue in an object store (`s3://…`, `memory:///`, …),
    /// staging uploads in the local folder `staging`.
    pub async fn open_url(url: &str, staging: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let store = super::rooted::open_url(url).context("storage.datasets_url")?;
        let root = StoreRoot::new(store.clone(), staging)?;
        Self::open_with(Writer::Store(root), || async {
            Catalog::load(store).await.context("loading the catalogue")
        })
        .await
    }

    /// Cleans up after any crashed write, then loads.
    async fn open_with<F, Fut>(writer: Writer, load: F) -> anyhow::Result<Self>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Catalog>>,
    {
        let recovered = writer.recover().await?;
        if recovered != Default::default() {
            tracing::warn!(?recovered, "removed what interrupted writes left behind");
        }
        let catalog = load().await?;
        Ok(Self {
            current: RwLock::new(Arc::new(catalog)),
            writer: tokio::sync::Mutex::new(Some(writer)),
            refreshed: Default::default(),
            listed: Default::default(),
            journal: Default::default(),
        })
    }

    /// A catalogue nobody may change through this process.
    pub fn read_only(catalog: Catalog) -> Self {
        Self {
            current: RwLock::new(Arc::new(catalog)),
            writer: tokio::sync::Mutex::new(None),
            refreshed: Default::default(),
            listed: Default::default(),
            journal: Default::default(),
        }
    }

    /// Makes every change record itself through `journal` before it is
    /// committed, intent before effect: a change whose record cannot be
    /// made durable is refused with nothing changed ([`WriteError::Unrecorded`]),
    /// so no change is ever in force without its record. Set once, at start.
    pub fn record_changes_with(&self, journal: Journal) {
        let _ = self.journal.set(journal);
    }

    /// Records the change from `before` to `after`, if a journal is set.
    async fn journal(&self, before: Option<&Manifest>, after: &Manifest) -> Result<(), WriteError> {
        match self.journal.get() {
            Some(journal) => journal(before, after).await.map_err(WriteError::Unrecorded),
            None => Ok(()),
        }
    }

    /// The catalogue as of now; later changes do not affect it.
    pub fn snapshot(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves `dataset` from now on, in place of any older copy (one swap
    /// under the lock, so a concurrent swap of another dataset is kept).
    fn put_dataset(&self, dataset: Dataset) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(current.with_dataset(dataset));
    }

    /// A private folder for an upload's body and normalised files.
    pub async fn staging(&self) -> Result<Staging, WriteError> {
        let writer = self.writer.lock().await;
        let root = writer.as_ref().ok_or(WriteError::ReadOnly)?;
        Ok(root.staging()?)
    }

    /// Registers a new dataset (no data yet), if its publisher has fewer
    /// than `max_per_publisher` (drafts and retired ones count: they keep
    /// their storage and their id).
    pub async fn register(
        &self,
        manifest: Manifest,
        max_per_publisher: usize,
    ) -> Result<Arc<Dataset>, WriteError> {
        let writer = self.writer.lock().await;
        let root = writer.as_ref().ok_or(WriteError::ReadOnly)?;
        let id = manifest.id.clone();
        if self.snapshot().get(&id).is_some() || root.exists(&id).await? {
            return Err(WriteError::Exists(id.to_string()));
        }
        let published = self
            .snapshot()
            .datasets()
            .filter(|d| d.manifest.publisher == manifest.publisher)
            .count();
        if published >= max_per_publisher {
            return Err(WriteError::TooMany {
                publisher: crate::util::echo::cut(&manifest.publisher),
                max: max_per_publisher,
            });
        }
        self.journal(None, &manifest).await?;
        crate::util::crash_point::here("commit:recorded");
        // Another replica may have registered the same id meanwhile.
        let Committed::Yes(manifest_tag) = root.write_manifest(&manifest, Expect::Absent).await?
        else {
            return Err(WriteError::Exists(id.to_string()));
        };
        let dataset = Dataset {
            manifest,
            versions: Default::default(),
            manifest_tag,
        };
        self.put_dataset(dataset);
        self.snapshot()
            .get(&id)
            .cloned()
            .ok_or(WriteError::NotFound)
    }

    /// Publishes the files staged in `staging.output()` as the dataset's
    /// next version. `columns` describes the upload's columns when the
    /// manifest declared none (the first upload defines them). With
    /// `based_on`, only if that is still the current version (a rewrite of
    /// it), checked under the writer's lock. `seen` is the dataset as the
    /// caller was authorised on it: if its publisher has changed since (an
    /// admin gave it away, here or through another replica, while the body
    /// arrived), nothing is published.
    pub async fn publish(
        &self,
        seen: &Dataset,
        staging: Staging,
        columns: &[ColumnName],
        publication: Publication<'_>,
    ) -> Result<Published, WriteError> {
        let Publication { by, key, based_on } = publication;
        let id = seen.id();
        let writer = self.writer.lock().await;
        let root = writer.as_ref().ok_or(WriteError::ReadOnly)?;
        let catalog = self.snapshot();
        let dataset = catalog.get(id).ok_or(WriteError::NotFound)?.clone();
        let start = dataset
            .manifest
            .committed_up_to()
            .max(dataset.manifest.last_version);
        // Refused before a number is claimed and the files are put; the
        // commit checks again on the dataset as it is then.
        check_publishable(&dataset, based_on)?;
        same_publisher(&dataset, &seen.manifest.publisher)?;
        let number = root.claim_version(id, start).await?;
        // Anything below leaves nothing behind when it fails.
        let abandon = |e: WriteError| async {
            if let Err(cleanup) = root.remove_unpublished(id, number).await {
                tracing::warn!(error = %cleanup, "could not remove an unpublished version");
            }
            e
        };
        if let Err(e) = root.place_version(id, number, &staging.output()).await {
            return Err(abandon(e.into()).await);
        }
        // Read the placed files back through the store and check them
        // against the manifest before anything points at them.
        let (first, _) = next_manifest(&dataset.manifest, columns);
        let version = match read_version(catalog.store(), &first, number).await {
            Ok(Some(version)) => version,
            Ok(None) => {
                return Err(
                    abandon(WriteError::Invalid("the upload produced no data".into())).await,
                );
            }
            Err(CatalogError::Inconsistent { problem, .. }) => {
                return Err(abandon(WriteError::Invalid(problem)).await);
            }
            Err(e) => return Err(abandon(e.into()).await),
        };
        let profiles = match profiles(catalog.store(), &dataset, &version, key).await {
            Ok(profiles) => profiles,
            Err(e) => return Err(abandon(e).await),
        };
        let mut added_columns = Vec::new();
        let mut findings = Vec::new();
        let mut change = None;
        let committed = self
            .commit(root, seen, |dataset, _| {
                check_publishable(dataset, based_on)?;
                check_still_fits(dataset, &version, number)?;
                let (mut manifest, added) = next_manifest(&dataset.manifest, columns);
                check_schema(&manifest, number, &version.schema).map_err(WriteError::Invalid)?;
                findings = match &profiles {
                    (Some(old), _) if old.version != manifest.version => {
                        // Another replica published meanwhile: compare
                        // with that version instead.
                        return Err(WriteError::Moved(manifest.version));
                    }
                    (Some(old), new) => profile::findings(old, new, &manifest),
                    (None, _) => Vec::new(),
                };
                // A first upload that defined its own columns waits for a
                // steward to classify them and publish; so does one
                // replacing it in review. A version whose data looks to
                // hold what a more protected column held waits for an
                // admin, in a change like a widening edit.
                let held = !findings.is_empty()
                    || manifest.version == 0 && (!added.is_empty() || manifest.in_review > 0);
                manifest.last_version = manifest.last_version.max(number);
                let replaced = std::mem::take(&mut manifest.in_review);
                manifest.supersede(replaced, number, by, OffsetDateTime::now_utc());
                change = None;
                if !findings.is_empty() {
                    let proposed = manifest
                        .propose_version(number, findings.clone(), by, OffsetDateTime::now_utc())
                        .map_err(WriteError::Invalid)?;
                    change = Some(proposed);
                }
                if held {
                    manifest.in_review = number;
                } else {
                    manifest.version = number;
                }
                added_columns = added;
                Ok(manifest)
            })
            .await;
        let committed = match committed {
            Ok(committed) => committed,
            Err(e) if e.is_refusal() => return Err(abandon(e).await),
            // Storage failed: whether the new manifest reached it or not,
            // the files stay, and a restart shows the old version or the
            // whole new one.
            Err(e) => return Err(e),
        };
        let Dataset {
            manifest,
            mut versions,
            manifest_tag,
        } = committed;
        let held = manifest.in_review == number;
        // A held version keeps its claim until it is published: if it is
        // rejected or replaced instead, the claim keeps it from ever being
        // read as an earlier published version.
        if !held && let Err(e) = root.release_claim(id, number).await {
            tracing::warn!(error = %e, "could not release a version's claim");
        }
        versions.insert(number, version);
        self.put_dataset(Dataset {
            manifest,
            versions,
            manifest_tag,
        });
        drop(staging);
        Ok(Published {
            dataset: self
                .snapshot()
                .get(id)
                .cloned()
                .ok_or(WriteError::NotFound)?,
            version: number,
            added_columns,
            held,
            findings,
            change,
        })
    }

    /// Reads again every dataset whose manifest changed in storage since
    /// this snapshot was made: new datasets, versions, edits and
    /// retirements committed by other replicas. Returns how many datasets
    /// were read again.
    ///
    /// Every commit rewrites a marker object, so while nothing changes a
    /// refresh is one `HEAD` of it; otherwise, and at least every
    /// [`FULL_LISTING_EVERY`] (for changes whose marker write failed, or
    /// made by hand), one listing of the store (a request per 1000 objects
    /// on S3) finds which manifests changed.
    pub async fn refresh(&self) -> Result<usize, CatalogError> {
        let catalog = self.snapshot();
        let store = catalog.store().clone();
        // The marker is read before the listing: a commit after this read
        // changes it again, and the next refresh lists.
        let marker = match store
            .head(&object_store::path::Path::from(
                super::store_root::CHANGES_FILE,
            ))
            .await
        {
            Ok(meta) => meta.e_tag,
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        {
            let listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((seen, at)) = listed.as_ref()
                && *seen == marker
                && marker.is_some()
                && at.elapsed() < FULL_LISTING_EVERY
            {
                return Ok(0);
            }
        }
        let manifests: Vec<ObjectMeta> = store
            .list(None)
            .try_filter(|meta| {
                let parts: Vec<_> = meta.location.parts().collect();
                futures::future::ready(
                    parts.len() == 2 && parts[1].as_ref() == super::MANIFEST_FILE,
                )
            })
            .try_collect()
            .await?;
        let mut reread = Vec::new();
        for meta in manifests {
            let Some(Ok(id)) = meta
                .location
                .parts()
                .next()
                .map(|p| DatasetId::parse(p.as_ref()))
            else {
                continue;
            };
            let known = catalog.get(&id).map(|d| d.manifest_tag.clone());
            if known.as_ref() == Some(&meta.e_tag) {
                continue;
            }
            match load_dataset(&store, &id).await {
                Ok(Some(dataset)) => reread.push((known, dataset)),
                Ok(None) => {}
                // Keep serving what was last read; the next poll tries again.
                Err(e) => {
                    tracing::warn!(dataset = %id, error = %e, "could not read a changed dataset")
                }
            }
        }
        // Not under the writer's lock (an upload may hold it for minutes):
        // a dataset this replica changed meanwhile keeps its own newer copy
        // (compared by the tag this refresh started from).
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut next: Option<Catalog> = None;
        let mut count = 0;
        for (known, dataset) in reread {
            let base = next.as_ref().unwrap_or(&current);
            if base.get(dataset.id()).map(|d| d.manifest_tag.clone()) != known {
                continue;
            }
            next = Some(base.with_dataset(dataset));
            count += 1;
        }
        if let Some(next) = next {
            *current = Arc::new(next);
        }
        drop(current);
        *self.listed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((marker, std::time::Instant::now()));
        Ok(count)
    }

    /// [`Self::refresh`] for a request that finds this replica behind (a
    /// link another replica signed), unless such a request made one less
    /// than `every` ago: requests cannot make a replica list the bucket
    /// more often than that.
    pub async fn refresh_on_demand(
        &self,
        every: std::time::Duration,
    ) -> Result<usize, CatalogError> {
        {
            let mut last = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < every) {
                return Ok(0);
            }
            *last = Some(std::time::Instant::now());
        }
        self.refresh().await
    }

    /// Reads dataset `id` again from storage (another replica changed it)
    /// and serves what it read from now on.
    async fn reload(&self, id: &DatasetId) -> Result<Arc<Dataset>, WriteError> {
        let catalog = self.snapshot();
        let dataset = load_dataset(catalog.store(), id)
            .await?
            .ok_or(WriteError::NotFound)?;
        self.put_dataset(dataset);
        self.snapshot().get(id).cloned().ok_or(WriteError::NotFound)
    }

    /// Changes a dataset's manifest with `change`, checks the result against
    /// every version, and commits it. When another replica changed the
    /// manifest first, `change` runs again on the new one. `seen` is the
    /// dataset as the caller was authorised on it: a change is refused once
    /// its publisher is another.
    pub async fn edit(
        &self,
        seen: &Dataset,
        mut change: impl FnMut(&Manifest) -> Result<Manifest, String>,
    ) -> Result<Arc<Dataset>, WriteError> {
        let id = seen.id();
        let writer = self.writer.lock().await;
        let root = writer.as_ref().ok_or(WriteError::ReadOnly)?;
        let committed = self
            .commit(root, seen, |dataset, attempt| {
                // On a retry the caller's change met a manifest they did
                // not see (another replica's commit): a refusal then is a
                // conflict.
                let manifest = change(&dataset.manifest).map_err(|problem| match attempt {
                    1 => WriteError::Invalid(problem),
                    _ => WriteError::ChangedMeanwhile(problem),
                })?;
                if &manifest.id != id {
                    return Err(WriteError::Invalid("a dataset's id cannot change".into()));
                }
                for version in dataset.versions.values() {
                    check_schema(&manifest, version.number, &version.schema)
                        .map_err(WriteError::Invalid)?;
                }
                Ok(manifest)
            })
            .await?;
        self.put_dataset(committed);
        self.snapshot().get(id).cloned().ok_or(WriteError::NotFound)
    }

    /// The end of every change to a dataset: `next` makes the manifest to
    /// write from the dataset as this replica holds it, and it is written
    /// only if storage still holds that dataset's manifest (its ETag). If
    /// another replica committed first, the dataset is read again and
    /// `next` runs again (told which attempt it is), up to
    /// [`MAX_COMMIT_ATTEMPTS`] times. Refused once the dataset's publisher
    /// is not the one the caller was authorised for (`seen`'s). The
    /// version a manifest moves past loses its claim first (see
    /// `store_root`). Returns the dataset as committed, with the versions
    /// it had (the caller adds a new one).
    async fn commit(
        &self,
        root: &Writer,
        seen: &Dataset,
        mut next: impl FnMut(&Dataset, u32) -> Result<Manifest, WriteError>,
    ) -> Result<Dataset, WriteError> {
        let id = seen.id();
        let mut dataset = self.snapshot().get(id).ok_or(WriteError::NotFound)?.clone();
        for attempt in 1..=MAX_COMMIT_ATTEMPTS {
            same_publisher(&dataset, &seen.manifest.publisher)?;
            let manifest = next(&dataset, attempt)?;
            self.journal(Some(&dataset.manifest), &manifest).await?;
            crate::util::crash_point::here("commit:recorded");
            root.release_claim(id, dataset.manifest.version).await?;
            let expect = Expect::Tag(dataset.manifest_tag.as_deref());
            if let Committed::Yes(manifest_tag) = root.write_manifest(&manifest, expect).await? {
                crate::util::crash_point::here("commit:written");
                let mut versions = dataset.versions.clone();
                // A version in review that the manifest no longer names
                // (replaced by another upload, held or published, or
                // rejected by an admin) is never served: it leaves the
                // catalogue now and its files go. Its claim keeps it
                // unread if the removal does not happen.
                let was_in_review = dataset.manifest.in_review;
                let unnamed: Vec<u64> = versions
                    .keys()
                    .copied()
                    .filter(|n| {
                        (*n > manifest.version || *n == was_in_review)
                            && !manifest.names_version(*n)
                    })
                    .collect();
                for number in unnamed {
                    versions.remove(&number);
                    if let Err(e) = root.remove_unpublished(id, number).await {
                        tracing::warn!(error = %e, "could not remove a version that was not published");
                    }
                }
                return Ok(Dataset {
                    manifest,
                    versions,
                    manifest_tag,
                });
            }
            if attempt < MAX_COMMIT_ATTEMPTS {
                dataset = self.reload(id).await?;
            }
        }
        Err(WriteError::Moved(dataset.manifest.version))
    }

    /// Publishes the version held for review: from now on it is served.
    pub async fn publish_reviewed(&self, seen: &Dataset) -> Result<Arc<Dataset>, WriteError> {
        self.edit(seen, |m| {
            if m.in_review == 0 {
                return Err(format!("dataset '{}' has no version in review", m.id));
            }
            if let Some(change) = m.change_holding(m.in_review) {
                return Err(format!(
                    "version {} waits for an admin to approve change {}: {}",
                    m.in_review,
                    change.number,
                    change.findings.join("; ")
                ));
            }
            let mut m = m.clone();
            m.version = std::mem::take(&mut m.in_review);
            Ok(m)
        })
        .await
    }

    /// Restores a retired dataset: listed and served again, as it was.
    pub async fn restore(&self, seen: &Dataset) -> Result<Arc<Dataset>, WriteError> {
        self.edit(seen, |m| {
            if m.retired.is_none() {
                return Err(format!("dataset '{}' is not retired", m.id));
            }
            let mut m = m.clone();
            m.retired = None;
            Ok(m)
        })
        .await
    }

    /// Retires a dataset: no longer listed or served; its files stay.
    pub async fn retire(&self, seen: &Dataset) -> Result<Arc<Dataset>, WriteError> {
        self.edit(seen, |m| {
            if m.retired.is_some() {
                return Err(format!("dataset '{}' is already retired", m.id));
            }
            let mut m = m.clone();
            m.retired = Some(OffsetDateTime::now_utc());
            Ok(m)
        })
        .await
    }
}

/// The longest a replica trusts the change marker alone: then it lists.
const FULL_LISTING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How many times a commit is tried again on a manifest another replica
/// changed, before the writer gives up with a conflict.
const MAX_COMMIT_ATTEMPTS: u32 = 5;

/// Refuses a change whose caller was authorised for `publisher` when the
/// dataset now has another one (changed meanwhile, here or elsewhere).
fn same_publisher(dataset: &Dataset, publisher: &str) -> Result<(), WriteError> {
    if dataset.manifest.publisher == publisher {
        Ok(())
    } else {
        Err(WriteError::PublisherChanged)
    }
}

/// Whether an upload may still become a version of `dataset`: not retired,
/// and (for a rewrite) based on the current version.
/// The profile of the version `dataset` serves (`None` for a first
/// version, which replaces nothing) and of the `new` one, continued from
/// it and kept beside its files, so the next upload compares with it.
///
/// Runs on a blocking thread: it hashes every value of the version, which
/// would otherwise hold an HTTP worker (and every request queued on it) for
/// as long as a large upload takes to read.
async fn profiles(
    store: &Arc<dyn object_store::ObjectStore>,
    dataset: &Dataset,
    new: &Version,
    key: &ProfileKey,
) -> Result<(Option<Profile>, Profile), WriteError> {
    let failed = |e: anyhow::Error| WriteError::Storage(std::io::Error::other(format!("{e:#}")));
    let (store, dataset, new, key) = (store.clone(), dataset.clone(), new.clone(), key.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(async {
            let started = std::time::Instant::now();
            let old = profile::kept_or_rebuilt(&store, &dataset, &key).await?;
            let mut made = profile::profile(&store, &new, &key).await?;
            tracing::info!(
                dataset = %dataset.id(),
                version = new.number,
                rows = new.rows,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "profiled the new version"
            );
            made.continue_from(old.as_ref(), &dataset.manifest);
            profile::keep(&store, dataset.id(), &made).await?;
            Ok((old, made))
        })
    })
    .await
    .map_err(|e| failed(anyhow::anyhow!("profiling stopped: {e}")))?
    .map_err(failed)
}

fn check_publishable(dataset: &Dataset, based_on: Option<u64>) -> Result<(), WriteError> {
    let manifest = &dataset.manifest;
    if manifest.retired.is_some() {
        return Err(WriteError::Retired(manifest.id.to_string()));
    }
    if based_on.is_some_and(|v| v != manifest.version) {
        return Err(WriteError::Moved(manifest.version));
    }
    Ok(())
}

/// Whether `version` (number `number`) may follow what `dataset` now
/// holds: a newer version published meanwhile (by another replica) wins,
/// and one published with other column types makes the upload stale.
fn check_still_fits(dataset: &Dataset, version: &Version, number: u64) -> Result<(), WriteError> {
    if dataset.manifest.committed_up_to() >= number {
        return Err(WriteError::Moved(dataset.manifest.version));
    }
    match dataset.current() {
        Some(current) if !same_columns(&current.schema, &version.schema) => {
            Err(WriteError::Invalid(format!(
                "version {} was published while this upload was processed, with other column types; upload again",
                dataset.manifest.version
            )))
        }
        _ => Ok(()),
    }
}

/// The manifest that publishes an upload with `columns`: the current one,
/// with the upload's columns when it declared none (the first upload
/// defines them); and which columns were so added.
fn next_manifest(current: &Manifest, columns: &[ColumnName]) -> (Manifest, Vec<ColumnName>) {
    let mut manifest = current.clone();
    let mut added_columns = Vec::new();
    if manifest.columns.is_empty() {
        for name in columns {
            manifest.columns.push(ColumnSpec {
                name: name.clone(),
                description: String::new(),
                classification: Default::default(),
                mask: None,
                key: false,
                declared_type: None,
                source: None,
                groupable: false,
                order_statistics: false,
                bounds: None,
                categories: Vec::new(),
                bins: None,
            });
            added_columns.push(name.clone());
        }
    }
    (manifest, added_columns)
}

/// Same column names and types, in order (nullability and field metadata
/// aside: files written by other tools may differ there).
fn same_columns(a: &arrow::datatypes::Schema, b: &arrow::datatypes::Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// Loads a catalogue from a local folder through `object_store`.
pub async fn load_local(folder: &Path) -> anyhow::Result<Catalog> {
    use anyhow::Context;
    let datasets = std::fs::canonicalize(folder)
        .with_context(|| format!("catalogue folder {}", folder.display()))?;
    let store: Arc<dyn ObjectStore> = Arc::new(
        LocalFileSystem::new_with_prefix(&datasets)
            .with_context(|| format!("catalogue folder {}", datasets.display()))?,
    );
    Catalog::load(store).await.context("loading the catalogue")
}

impl From<OpenError> for WriteError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Busy(_) => WriteError::ReadOnly,
            OpenError::Io { source, .. } => WriteError::Storage(source),
        }
    }
}
