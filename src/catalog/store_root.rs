//! Writes to a catalogue kept in an object store (S3, GCS, Azure, or
//! `memory:///`), with the same layout and the same commit order as a local
//! folder ([`super::local`]).
//!
//! Object stores have no rename and no fsync, but a `put` is atomic: an
//! object appears whole or not at all, and a completed `put` is durable.
//! So a version's files are put first and `dataset.toml` is put last; a
//! crash in between leaves version objects above the published number,
//! which readers ignore and [`StoreRoot::recover`] deletes. Uploads are
//! staged on local disk (`<state>/staging`), where the worker decodes them.
//!
//! There is no cross-process lock here: run one writing server per bucket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;

use super::local::{Recovered, Staging};
use super::manifest::Manifest;
use crate::domain::DatasetId;

const MANIFEST_FILE: &str = "dataset.toml";

fn io(e: object_store::Error) -> std::io::Error {
    std::io::Error::other(e)
}

/// An object store opened for writing.
#[derive(Debug)]
pub struct StoreRoot {
    store: Arc<dyn ObjectStore>,
    staging: PathBuf,
}

impl StoreRoot {
    pub fn new(store: Arc<dyn ObjectStore>, staging: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(staging)?;
        Ok(Self {
            store,
            staging: staging.to_owned(),
        })
    }

    fn versions(id: &DatasetId) -> StorePath {
        StorePath::from(id.as_str()).join("versions")
    }

    fn manifest_path(id: &DatasetId) -> StorePath {
        StorePath::from(id.as_str()).join(MANIFEST_FILE)
    }

    pub fn staging(&self) -> std::io::Result<Staging> {
        Staging::create_in(&self.staging)
    }

    pub async fn exists(&self, id: &DatasetId) -> std::io::Result<bool> {
        match self.store.head(&Self::manifest_path(id)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    pub async fn write_manifest(&self, manifest: &Manifest) -> std::io::Result<()> {
        let body = PutPayload::from(manifest.to_toml().into_bytes());
        self.store
            .put(&Self::manifest_path(&manifest.id), body)
            .await
            .map_err(io)?;
        Ok(())
    }

    /// Version numbers that have objects, committed or not.
    async fn version_numbers(&self, id: &DatasetId) -> std::io::Result<Vec<u64>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&Self::versions(id)))
            .await
            .map_err(io)?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|n| n.parse().ok()))
            .collect())
    }

    pub async fn highest_version_dir(&self, id: &DatasetId) -> std::io::Result<u64> {
        Ok(self
            .version_numbers(id)
            .await?
            .into_iter()
            .max()
            .unwrap_or(0))
    }

    /// Puts every staged file under `<id>/versions/<number>/`, streaming.
    pub async fn place_version(
        &self,
        id: &DatasetId,
        number: u64,
        staged: &Path,
    ) -> std::io::Result<()> {
        let target = Self::versions(id).join(number.to_string());
        for entry in std::fs::read_dir(staged)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut file = tokio::fs::File::open(entry.path()).await?;
            let mut writer = object_store::buffered::BufWriter::new(
                self.store.clone(),
                target.clone().join(name),
            );
            tokio::io::copy(&mut file, &mut writer).await?;
            writer.shutdown().await?;
        }
        Ok(())
    }

    pub async fn remove_unpublished(&self, id: &DatasetId, number: u64) -> std::io::Result<()> {
        let prefix = Self::versions(id).join(number.to_string());
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(io)?;
        for location in objects {
            self.store.delete(&location).await.map_err(io)?;
        }
        Ok(())
    }

    /// Clears local staging and deletes version objects above each
    /// manifest's published number.
    pub async fn recover(&self) -> std::io::Result<Recovered> {
        let mut done = Recovered::default();
        for entry in std::fs::read_dir(&self.staging)? {
            std::fs::remove_dir_all(entry?.path())?;
            done.staging += 1;
        }
        let top = self.store.list_with_delimiter(None).await.map_err(io)?;
        for prefix in top.common_prefixes {
            let Ok(id) = DatasetId::parse(prefix.as_ref()) else {
                continue;
            };
            let text = match self.store.get(&Self::manifest_path(&id)).await {
                Ok(got) => got.bytes().await.map_err(io)?,
                Err(_) => continue,
            };
            let Some(manifest) = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| Manifest::parse(t).ok())
            else {
                continue;
            };
            for number in self.version_numbers(&id).await? {
                if manifest.is_stale_version(number) {
                    self.remove_unpublished(&id, number).await?;
                    done.uncommitted_versions += 1;
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recovery_deletes_versions_above_the_published_one() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let root = StoreRoot::new(store.clone(), &dir.path().join("staging")).unwrap();
        let manifest = Manifest::parse(
            "id = \"d\"\ntitle = \"D\"\ndescription = \"\"\nsector = \"s\"\npublisher = \"P\"\nlicense = \"L\"\ntier = \"open\"\nversion = 1\n",
        )
        .unwrap();
        let id = manifest.id.clone();
        assert!(!root.exists(&id).await.unwrap());
        root.write_manifest(&manifest).await.unwrap();
        assert!(root.exists(&id).await.unwrap());
        for n in [1, 2] {
            let staging = root.staging().unwrap();
            std::fs::create_dir_all(staging.output()).unwrap();
            std::fs::write(staging.output().join("part-00000.parquet"), vec![7u8; 10]).unwrap();
            root.place_version(&id, n, &staging.output()).await.unwrap();
        }
        let leftover = root.staging().unwrap();
        std::mem::forget(leftover);
        assert_eq!(root.highest_version_dir(&id).await.unwrap(), 2);

        let done = root.recover().await.unwrap();
        assert_eq!(done.uncommitted_versions, 1);
        assert_eq!(done.staging, 1);
        assert_eq!(root.highest_version_dir(&id).await.unwrap(), 1);
        let kept = store
            .get(&StorePath::from("d/versions/1/part-00000.parquet"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(kept.len(), 10);
    }
}
