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

pub mod manifest;

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

pub use manifest::{ColumnSpec, Manifest};

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

/// A dataset: its manifest and every version on storage.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub manifest: Manifest,
    pub versions: BTreeMap<u64, Version>,
}

impl Dataset {
    pub fn id(&self) -> &DatasetId {
        &self.manifest.id
    }

    /// The version readers get when they do not pin one.
    pub fn current(&self) -> &Version {
        // Loading refuses a dataset whose published version is missing, so
        // this lookup cannot fail.
        &self.versions[&self.manifest.version]
    }

    pub fn version(&self, number: Option<u64>) -> Option<&Version> {
        match number {
            None => Some(self.current()),
            Some(n) => self.versions.get(&n),
        }
    }
}

/// A catalogue search: words, sector, tier and a page.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Words that must all appear in the title, description or keywords.
    pub words: Vec<String>,
    pub sector: Option<String>,
    pub tier: Option<Tier>,
    /// Return datasets whose id sorts after this one (keyset paging).
    pub after: Option<DatasetId>,
    pub page_size: usize,
}

/// One page of search results.
#[derive(Debug)]
pub struct SearchPage<'a> {
    pub datasets: Vec<&'a Dataset>,
    /// The id to pass as `page_token` for the next page, if there is one.
    pub next: Option<&'a DatasetId>,
}

/// All datasets, loaded from storage.
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    datasets: BTreeMap<DatasetId, Arc<Dataset>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("datasets", &self.datasets.keys().collect::<Vec<_>>())
            .finish()
    }
}

const MANIFEST_FILE: &str = "dataset.toml";

impl Catalog {
    /// Reads every dataset under the store's root. Any invalid manifest or
    /// file stops the load with an error naming it: a half-loaded catalogue
    /// would serve some datasets under assumptions nobody checked.
    pub async fn load(store: Arc<dyn ObjectStore>) -> Result<Self, CatalogError> {
        let top = store.list_with_delimiter(None).await?;
        let mut datasets = BTreeMap::new();
        for prefix in top.common_prefixes {
            let manifest_path = prefix.clone().join(MANIFEST_FILE);
            let text = match store.get(&manifest_path).await {
                Ok(got) => got.bytes().await?,
                // A folder without a manifest is not a dataset (e.g. scratch space).
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let bad = |problem: String| CatalogError::BadManifest {
                path: manifest_path.to_string(),
                problem,
            };
            let text = std::str::from_utf8(&text).map_err(|e| bad(e.to_string()))?;
            let manifest = Manifest::parse(text).map_err(bad)?;
            if manifest.id.as_str() != prefix.as_ref() {
                return Err(bad(format!(
                    "id '{}' does not match its folder '{}'",
                    manifest.id, prefix
                )));
            }
            let versions = load_versions(&store, &prefix, &manifest).await?;
            datasets.insert(
                manifest.id.clone(),
                Arc::new(Dataset { manifest, versions }),
            );
        }
        Ok(Self { store, datasets })
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
        let words: Vec<String> = query.words.iter().map(|w| w.to_lowercase()).collect();
        let mut hits = self
            .datasets
            .values()
            .filter(|d| query.after.as_ref().is_none_or(|after| d.id() > after))
            .filter(|d| query.tier.is_none_or(|t| d.manifest.tier == t))
            .filter(|d| {
                query
                    .sector
                    .as_ref()
                    .is_none_or(|s| d.manifest.sector.eq_ignore_ascii_case(s))
            })
            .filter(|d| matches_words(&d.manifest, &words));
        let datasets: Vec<&Dataset> = hits.by_ref().take(query.page_size).map(|d| &**d).collect();
        let next = if hits.next().is_some() {
            datasets.last().map(|d| d.id())
        } else {
            None
        };
        SearchPage { datasets, next }
    }
}

fn matches_words(manifest: &Manifest, words: &[String]) -> bool {
    if words.is_empty() {
        return true;
    }
    let text = format!(
        "{} {} {}",
        manifest.title,
        manifest.description,
        manifest.keywords.join(" ")
    )
    .to_lowercase();
    words.iter().all(|w| text.contains(w.as_str()))
}

async fn load_versions(
    store: &Arc<dyn ObjectStore>,
    dataset: &StorePath,
    manifest: &Manifest,
) -> Result<BTreeMap<u64, Version>, CatalogError> {
    let inconsistent = |problem: String| CatalogError::Inconsistent {
        id: manifest.id.to_string(),
        problem,
    };
    let versions_root = dataset.clone().join("versions");
    let listing = store.list_with_delimiter(Some(&versions_root)).await?;
    let mut versions = BTreeMap::new();
    for version_dir in listing.common_prefixes {
        let Some(number) = version_dir
            .filename()
            .and_then(|name| name.parse::<u64>().ok())
        else {
            continue;
        };
        let mut files: Vec<ObjectMeta> = store
            .list(Some(&version_dir))
            .try_filter(|meta| futures::future::ready(meta.location.extension() == Some("parquet")))
            .try_collect()
            .await?;
        if files.is_empty() {
            continue;
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
                    return Err(inconsistent(format!(
                        "files of version {number} have different schemas"
                    )));
                }
            }
        }
        let Some(schema) = schema else { continue };
        for spec in &manifest.columns {
            if schema.field_with_name(spec.name.as_str()).is_err() {
                return Err(inconsistent(format!(
                    "column '{}' is in the manifest but not in version {number}",
                    spec.name
                )));
            }
        }
        for spec in &manifest.columns {
            let data_type = schema
                .field_with_name(spec.name.as_str())
                .map(|f| f.data_type().clone());
            if let (Some(mask), Ok(data_type)) = (spec.default_mask(), data_type)
                && !mask.fits(&data_type)
            {
                return Err(inconsistent(format!(
                    "mask {mask} of column '{}' does not fit its type {data_type}",
                    spec.name
                )));
            }
        }
        for field in schema.fields() {
            if manifest.column(field.name()).is_none() {
                return Err(inconsistent(format!(
                    "column '{}' of version {number} is not described in the manifest",
                    field.name()
                )));
            }
        }
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
        versions.insert(
            number,
            Version {
                number,
                files,
                rows,
                bytes,
                published,
                schema,
            },
        );
    }
    if !versions.contains_key(&manifest.version) {
        return Err(inconsistent(format!(
            "published version {} has no data files",
            manifest.version
        )));
    }
    Ok(versions)
}

/// Reads a Parquet footer through the object store (two small range reads).
async fn read_footer(
    store: &Arc<dyn ObjectStore>,
    file: &ObjectMeta,
) -> Result<ParquetMetaData, parquet::errors::ParquetError> {
    struct Fetch<'a> {
        store: &'a Arc<dyn ObjectStore>,
        path: &'a StorePath,
    }
    impl MetadataFetch for Fetch<'_> {
        fn fetch(
            &mut self,
            range: std::ops::Range<u64>,
        ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
            Box::pin(async move {
                self.store
                    .get_range(self.path, range)
                    .await
                    .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
            })
        }
    }
    let fetch = Fetch {
        store,
        path: &file.location,
    };
    ParquetMetaDataReader::new()
        .load_and_finish(fetch, file.size)
        .await
}
