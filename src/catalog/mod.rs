//! The catalogue: which datasets exist, their manifests, versions and files.
//!
//! Storage sits behind `object_store`, so a local folder (the default,
//! `datasets/`) and an object store bucket are read the same way:
//!
//! ```text
//! <id>/dataset.toml                  the manifest (metadata, columns, published version)
//! <id>/versions/<n>/<part>.parquet   the immutable files of version n
//! ```
//!
//! The catalogue owns metadata and file locations. It does not decide who may
//! read what (that is `policy`) and does not run queries (that is `slice`).
//! A [`Catalog`] is an immutable snapshot; [`LiveCatalog`] swaps in a new
//! one after each committed change.

pub mod change;
pub mod citation;
pub mod edit;
pub mod linked_data;
pub mod live;
pub mod local;
pub mod manifest;
pub mod profile;
pub mod rooted;
pub mod search;
pub mod store_root;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::async_reader::MetadataFetch;
use parquet::arrow::parquet_to_arrow_schema;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use time::OffsetDateTime;

pub use live::{LiveCatalog, WriteError};
pub use manifest::{ColumnSpec, DeclaredType, Manifest};

use crate::domain::{DatasetId, Tier};

/// Why the catalogue could not be loaded or read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The storage backend failed.
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    /// A manifest is not valid.
    #[error("{path}: {problem}")]
    BadManifest { path: String, problem: String },
    /// A data file is not readable Parquet.
    #[error("{path}: {source}")]
    BadFile {
        path: String,
        source: parquet::errors::ParquetError,
    },
    /// Manifest and data disagree.
    #[error("dataset '{id}': {problem}")]
    Inconsistent { id: String, problem: String },
}

/// One immutable version of a dataset.
#[derive(Debug, Clone)]
pub struct Version {
    pub number: u64,
    pub files: Vec<ObjectMeta>,
    pub rows: u64,
    pub bytes: u64,
    pub published: OffsetDateTime,
    pub schema: SchemaRef,
}

crate::util::words::words! {
    /// Where a dataset is in its life.
    Status {
        /// Registered, no data yet: visible to its stewards only.
        Draft = "draft",
        Published = "published",
        /// Retired: its id stays taken; visible to its stewards only.
        Retired = "retired",
    }
}

/// A dataset: its manifest and every version on storage.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub manifest: Manifest,
    pub versions: BTreeMap<u64, Version>,
    /// The manifest object's ETag as read or written (object stores):
    /// the next commit replaces exactly this manifest or conflicts, and
    /// replicas compare it to notice each other's changes.
    pub manifest_tag: Option<String>,
}

impl Dataset {
    pub fn id(&self) -> &DatasetId {
        &self.manifest.id
    }

    /// The version readers get when they do not pin one (none before the
    /// first upload).
    pub fn current(&self) -> Option<&Version> {
        self.versions.get(&self.manifest.version)
    }

    /// A published version: the current one, or the one pinned (never
    /// the one in review).
    pub fn version(&self, number: Option<u64>) -> Option<&Version> {
        match number {
            None => self.current(),
            Some(n) if n <= self.manifest.version => self.versions.get(&n),
            Some(_) => None,
        }
    }

    /// Published versions, oldest first.
    pub fn published_versions(&self) -> impl Iterator<Item = &Version> {
        self.versions
            .range(..=self.manifest.version)
            .map(|(_, v)| v)
    }

    /// The version held for review, if any.
    pub fn in_review(&self) -> Option<&Version> {
        match self.manifest.in_review {
            0 => None,
            n => self.versions.get(&n),
        }
    }

    pub fn status(&self) -> Status {
        match (&self.manifest.retired, self.manifest.version) {
            (Some(_), _) => Status::Retired,
            (None, 0) => Status::Draft,
            (None, _) => Status::Published,
        }
    }

    /// Whether a steward or admin may change this dataset: admins all,
    /// stewards those their organisation publishes.
    pub fn stewarded_by(&self, scope: &StewardScope) -> bool {
        match scope {
            StewardScope::All => true,
            StewardScope::Publisher(org) => &self.manifest.publisher == org,
            StewardScope::None => false,
        }
    }
}

/// Whose unpublished and retired datasets a caller may see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StewardScope {
    /// Researchers and anonymous callers: live datasets only.
    #[default]
    None,
    /// A steward: also their organisation's.
    Publisher(String),
    /// An admin: everything.
    All,
}

/// A catalogue search: words, sector, tier and a page.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Words that must all match (see [`search`]); results are ranked.
    pub words: Vec<String>,
    pub sector: Option<String>,
    pub tier: Option<Tier>,
    /// Return the results ranked after this one (keyset paging).
    pub after: Option<Cursor>,
    pub page_size: usize,
    /// Whose drafts and retired datasets to include.
    pub steward: StewardScope,
}

/// A place in a ranking: results come by score (highest first), then id.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub score: f64,
    pub id: DatasetId,
}

impl Cursor {
    /// Whether `(score, id)` ranks after this place.
    fn precedes(&self, score: f64, id: &DatasetId) -> bool {
        score < self.score || (score == self.score && id > &self.id)
    }
}

/// One page of search results.
#[derive(Debug)]
pub struct SearchPage<'a> {
    pub datasets: Vec<&'a Dataset>,
    /// Where the next page starts, if there is one.
    pub next: Option<Cursor>,
}

/// All datasets, loaded from storage.
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    datasets: BTreeMap<DatasetId, Arc<Dataset>>,
    /// Built on the first search of this snapshot.
    index: std::sync::OnceLock<search::SearchIndex>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("datasets", &self.datasets.keys().collect::<Vec<_>>())
            .finish()
    }
}

pub(crate) const MANIFEST_FILE: &str = "dataset.toml";

impl Catalog {
    /// Reads every dataset under the store's root. Any invalid manifest or
    /// file stops the load with an error naming it: a half-loaded catalogue
    /// would serve some datasets under assumptions nobody checked.
    pub async fn load(store: Arc<dyn ObjectStore>) -> Result<Self, CatalogError> {
        let top = store.list_with_delimiter(None).await?;
        let mut datasets = BTreeMap::new();
        for prefix in top.common_prefixes {
            // Only slugs name datasets (`.staging` and the like do not).
            let Ok(id) = DatasetId::parse(prefix.as_ref()) else {
                continue;
            };
            if let Some(dataset) = load_dataset(&store, &id).await? {
                datasets.insert(id, Arc::new(dataset));
            }
        }
        Ok(Self {
            store,
            datasets,
            index: Default::default(),
        })
    }

    /// This catalogue with one dataset added or replaced.
    pub fn with_dataset(&self, dataset: Dataset) -> Self {
        let mut datasets = self.datasets.clone();
        datasets.insert(dataset.id().clone(), Arc::new(dataset));
        Self {
            store: self.store.clone(),
            datasets,
            index: Default::default(),
        }
    }

    pub fn datasets(&self) -> impl Iterator<Item = &Arc<Dataset>> {
        self.datasets.values()
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn get(&self, id: &DatasetId) -> Option<&Arc<Dataset>> {
        self.datasets.get(id)
    }

    pub fn len(&self) -> usize {
        self.datasets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datasets.is_empty()
    }

    pub fn search(&self, query: &SearchQuery) -> SearchPage<'_> {
        let index = self
            .index
            .get_or_init(|| search::SearchIndex::build(self.datasets.values().map(|d| &**d)));
        let stems = search::SearchIndex::query_stems(&query.words.join(" "));
        let visible: Vec<&DatasetId> = self
            .datasets
            .values()
            .filter(|d| d.manifest.is_live() || d.stewarded_by(&query.steward))
            .filter(|d| query.tier.is_none_or(|t| d.manifest.tier == t))
            .filter(|d| {
                query
                    .sector
                    .as_ref()
                    .is_none_or(|s| d.manifest.sector.eq_ignore_ascii_case(s))
            })
            .map(|d| d.id())
            .collect();
        let mut hits: Vec<(f64, &Dataset)> = index
            .matches(&visible, &stems)
            .into_iter()
            .filter_map(|(id, score)| Some((score, &**self.datasets.get(id)?)))
            .filter(|(score, d)| {
                query
                    .after
                    .as_ref()
                    .is_none_or(|after| after.precedes(*score, d.id()))
            })
            .collect();
        hits.sort_by(|(a, x), (b, y)| b.total_cmp(a).then_with(|| x.id().cmp(y.id())));
        let more = hits.len() > query.page_size;
        hits.truncate(query.page_size);
        let next = more.then(|| {
            hits.last().map(|(score, d)| Cursor {
                score: *score,
                id: d.id().clone(),
            })
        });
        SearchPage {
            datasets: hits.into_iter().map(|(_, d)| d).collect(),
            next: next.flatten(),
        }
    }
}

/// Reads one dataset's manifest and committed versions; `None` when its
/// folder has no manifest (scratch space, or a registration that never
/// committed).
pub async fn load_dataset(
    store: &Arc<dyn ObjectStore>,
    id: &DatasetId,
) -> Result<Option<Dataset>, CatalogError> {
    let prefix = StorePath::from(id.as_str());
    let manifest_path = prefix.clone().join(MANIFEST_FILE);
    let (text, manifest_tag) = match store.get(&manifest_path).await {
        Ok(got) => {
            let tag = got.meta.e_tag.clone();
            (got.bytes().await?, tag)
        }
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bad = |problem: String| CatalogError::BadManifest {
        path: manifest_path.to_string(),
        problem,
    };
    let text = std::str::from_utf8(&text).map_err(|e| bad(e.to_string()))?;
    let manifest = Manifest::parse(text).map_err(bad)?;
    if &manifest.id != id {
        return Err(bad(format!(
            "id '{}' does not match its folder '{}'",
            manifest.id, id
        )));
    }
    let listing = store
        .list_with_delimiter(Some(&prefix.clone().join("versions")))
        .await?;
    // Folders above the published version (or the one in review) are
    // uploads that never committed.
    let committed = listing
        .common_prefixes
        .iter()
        .filter_map(|dir| dir.filename().and_then(|name| name.parse::<u64>().ok()))
        .filter(|n| *n > 0 && !manifest.is_stale_version(*n));
    let mut versions = BTreeMap::new();
    for number in committed {
        // Below the published version, a claim marks an upload that lost
        // its race to another replica (see `store_root`).
        if !manifest.names_version(number) && has_claim(store, id, number).await? {
            continue;
        }
        if let Some(version) = read_version(store, &manifest, number).await? {
            versions.insert(number, version);
        }
    }
    for (number, what) in [
        (manifest.version, "published"),
        (manifest.in_review, "in review"),
    ] {
        if number > 0 && !versions.contains_key(&number) {
            return Err(CatalogError::Inconsistent {
                id: id.to_string(),
                problem: format!("version {number} ({what}) has no data files"),
            });
        }
    }
    Ok(Some(Dataset {
        manifest,
        versions,
        manifest_tag,
    }))
}

async fn has_claim(
    store: &Arc<dyn ObjectStore>,
    id: &DatasetId,
    number: u64,
) -> Result<bool, CatalogError> {
    match store
        .head(&store_root::StoreRoot::claim_path(id, number))
        .await
    {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads version `number` of a dataset (its files' footers) and checks it
/// against the manifest; `None` if it has no files.
pub async fn read_version(
    store: &Arc<dyn ObjectStore>,
    manifest: &Manifest,
    number: u64,
) -> Result<Option<Version>, CatalogError> {
    let version_dir = StorePath::from(manifest.id.as_str())
        .join("versions")
        .join(number.to_string());
    {
        let mut files: Vec<ObjectMeta> = store
            .list(Some(&version_dir))
            .try_filter(|meta| futures::future::ready(meta.location.extension() == Some("parquet")))
            .try_collect()
            .await?;
        if files.is_empty() {
            return Ok(None);
        }
        files.sort_by(|a, b| a.location.cmp(&b.location));
        let mut rows = 0;
        let mut schema: Option<SchemaRef> = None;
        for file in &files {
            let bad_file = |source| CatalogError::BadFile {
                path: file.location.to_string(),
                source,
            };
            let metadata = read_footer(store, file).await.map_err(bad_file)?;
            let file_metadata = metadata.file_metadata();
            rows += file_metadata.num_rows().max(0) as u64;
            let file_schema = Arc::new(
                parquet_to_arrow_schema(
                    file_metadata.schema_descr(),
                    file_metadata.key_value_metadata(),
                )
                .map_err(bad_file)?,
            );
            match &schema {
                None => schema = Some(file_schema),
                Some(s) if s.fields() == file_schema.fields() => {}
                Some(_) => {
                    return Err(CatalogError::Inconsistent {
                        id: manifest.id.to_string(),
                        problem: format!("files of version {number} have different schemas"),
                    });
                }
            }
        }
        let Some(schema) = schema else {
            return Ok(None);
        };
        check_schema(manifest, number, &schema).map_err(|problem| CatalogError::Inconsistent {
            id: manifest.id.to_string(),
            problem,
        })?;
        let published = files
            .iter()
            .map(|f| f.last_modified)
            .max()
            .map(|t| {
                OffsetDateTime::from_unix_timestamp(t.timestamp())
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            })
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let bytes = files.iter().map(|f| f.size).sum();
        Ok(Some(Version {
            number,
            files,
            rows,
            bytes,
            published,
            schema,
        }))
    }
}

/// Checks that a version's schema and the manifest describe the same
/// columns, and that every column's mask fits its type.
/// Whether every column type `manifest` declares is the type version
/// `number` stores: a published column's type is its data's, so an edit
/// cannot declare another one (uploads must match the stored type).
pub fn check_declared_types(
    manifest: &Manifest,
    number: u64,
    schema: &arrow::datatypes::Schema,
) -> Result<(), String> {
    for spec in &manifest.columns {
        if let (Some(declared), Ok(field)) = (
            spec.declared_type,
            schema.field_with_name(spec.name.as_str()),
        ) && declared.data_type() != *field.data_type()
        {
            return Err(format!(
                "column '{}' is stored as {} in version {number}; a published column keeps its type (uploads must match it), so it cannot be declared {}",
                spec.name,
                field.data_type(),
                serde_json::to_value(declared)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(())
}

pub fn check_schema(
    manifest: &Manifest,
    number: u64,
    schema: &arrow::datatypes::Schema,
) -> Result<(), String> {
    for spec in &manifest.columns {
        let Ok(field) = schema.field_with_name(spec.name.as_str()) else {
            return Err(format!(
                "column '{}' is in the manifest but not in version {number}",
                spec.name
            ));
        };
        if let Some(mask) = spec.default_mask()
            && !mask.fits(field.data_type())
        {
            return Err(format!(
                "mask {mask} of column '{}' does not fit its type {} (version {number})",
                spec.name,
                field.data_type()
            ));
        }
    }
    for field in schema.fields() {
        if manifest.column(field.name()).is_none() {
            return Err(format!(
                "column '{}' of version {number} is not described in the manifest",
                field.name()
            ));
        }
    }
    Ok(())
}

/// Reads a Parquet footer through the object store (two small range reads).
async fn read_footer(
    store: &Arc<dyn ObjectStore>,
    file: &ObjectMeta,
) -> Result<ParquetMetaData, parquet::errors::ParquetError> {
    ParquetMetaDataReader::new()
        .load_and_finish(StoreFile::new(store, file), file.size)
        .await
}

/// A Parquet file in the object store, read by ranges.
pub struct StoreFile {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    size: u64,
}

impl StoreFile {
    pub fn new(store: &Arc<dyn ObjectStore>, file: &ObjectMeta) -> Self {
        Self {
            store: store.clone(),
            path: file.location.clone(),
            size: file.size,
        }
    }
}

fn parquet_error(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl MetadataFetch for StoreFile {
    fn fetch(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_error)
        })
    }
}

impl parquet::arrow::async_reader::AsyncFileReader for StoreFile {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        self.fetch(range)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}
