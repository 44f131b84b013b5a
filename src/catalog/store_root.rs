//! Writes to a catalogue kept in an object store (S3, GCS, Azure, or
//! `memory:///`), with the same layout and the same commit order as a local
//! folder ([`super::local`]).
//!
//! Object stores have no rename and no fsync, but a `put` is atomic: an
//! object appears whole or not at all, and a completed `put` is durable.
//! Several servers (replicas) may write to one bucket at once, with no lock
//! and no coordinator: every commit is a conditional put.
//!
//! - A new dataset's `dataset.toml` is put only if absent.
//! - An upload first claims its version number by putting
//!   `versions/<n>/.claim` only if absent (a lost race moves on to n+1),
//!   then puts its files, then puts `dataset.toml` only if it is still the
//!   manifest the upload started from (its ETag). If another replica
//!   committed meanwhile, the upload retries on the new manifest, or gives
//!   up when a newer version than its own was published.
//! - The claim is deleted once the manifest names the version, and, before
//!   any manifest moves past a version, that version's claim is deleted
//!   too. So below the published version a claim means "never committed":
//!   readers skip such folders and [`StoreRoot::recover`] deletes them.
//!
//! Uploads are staged on local disk (`<state>/staging`), where the worker
//! decodes them, then streamed to the bucket as multipart uploads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use tokio::io::AsyncWriteExt;

use super::MANIFEST_FILE;
use super::local::{Recovered, Staging};
use super::manifest::Manifest;
use crate::domain::DatasetId;

/// Marks a version folder as taken by an upload not yet committed.
pub const CLAIM_FILE: &str = ".claim";
/// Rewritten after every commit, so replicas can tell with one `HEAD`
/// whether anything changed (not a dataset id: ids are slugs).
pub const CHANGES_FILE: &str = "_changes";
/// Uncommitted folders younger than this may belong to an upload still
/// running on another replica: recovery leaves them.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What a manifest write expects to replace.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// No manifest: a new dataset.
    Absent,
    /// The manifest with this ETag (any manifest when the store gave none).
    Tag(Option<&'a str>),
}

/// How a conditional manifest write ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// Written; the new manifest's ETag, when the store has them.
    Yes(Option<String>),
    /// Another writer changed (or created) the manifest first: nothing
    /// was written.
    Conflict,
}

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

    pub async fn write_manifest(
        &self,
        manifest: &Manifest,
        expect: Expect<'_>,
    ) -> std::io::Result<Committed> {
        let body = PutPayload::from(manifest.to_toml().into_bytes());
        let mode = match expect {
            Expect::Absent => PutMode::Create,
            Expect::Tag(Some(tag)) => PutMode::Update(UpdateVersion {
                e_tag: Some(tag.to_owned()),
                version: None,
            }),
            Expect::Tag(None) => PutMode::Overwrite,
        };
        match self
            .store
            .put_opts(&Self::manifest_path(&manifest.id), body, mode.into())
            .await
        {
            Ok(done) => {
                self.mark_changed().await;
                Ok(Committed::Yes(done.e_tag))
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(Committed::Conflict),
            Err(e) => Err(io(e)),
        }
    }

    /// Rewrites the change marker (after a commit). Best effort: a replica
    /// that misses a change here finds it at its next full listing.
    async fn mark_changed(&self) {
        let payload = PutPayload::from(uuid::Uuid::new_v4().to_string().into_bytes());
        if let Err(e) = self
            .store
            .put(&StorePath::from(CHANGES_FILE), payload)
            .await
        {
            tracing::warn!(error = %e, "could not mark a commit for the other replicas");
        }
    }

    /// Where version `number` of `id` is claimed.
    pub(super) fn claim_path(id: &DatasetId, number: u64) -> StorePath {
        Self::versions(id).join(number.to_string()).join(CLAIM_FILE)
    }

    /// Takes the first free version number from `from` on: its folder's
    /// claim is put only if absent, so two replicas never share a number.
    pub async fn claim_version(&self, id: &DatasetId, from: u64) -> std::io::Result<u64> {
        let mut number = from;
        loop {
            let payload = PutPayload::from(format!("claimed by {}\n", replica_name()).into_bytes());
            match self
                .store
                .put_opts(
                    &Self::claim_path(id, number),
                    payload,
                    PutMode::Create.into(),
                )
                .await
            {
                Ok(_) => return Ok(number),
                Err(object_store::Error::AlreadyExists { .. }) => number += 1,
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Drops version `number`'s claim: a manifest names it (or is about to
    /// move past it, see the module's notes).
    pub async fn release_claim(&self, id: &DatasetId, number: u64) -> std::io::Result<()> {
        if number == 0 {
            return Ok(());
        }
        match self.store.delete(&Self::claim_path(id, number)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io(e)),
        }
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

    /// Clears local staging and deletes version folders no manifest will
    /// name: above the committed version, or below it with a claim (an
    /// upload that lost its race). Only folders untouched for a day: a
    /// younger one may be an upload still running on another replica.
    pub async fn recover(&self) -> std::io::Result<Recovered> {
        self.recover_older_than(ABANDONED_AFTER).await
    }

    async fn recover_older_than(&self, age: std::time::Duration) -> std::io::Result<Recovered> {
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
                let objects: Vec<_> = self
                    .store
                    .list(Some(&Self::versions(&id).join(number.to_string())))
                    .try_collect()
                    .await
                    .map_err(io)?;
                let claimed = objects
                    .iter()
                    .any(|o| o.location.filename() == Some(CLAIM_FILE));
                let unnamed = manifest.is_stale_version(number)
                    || (claimed && !manifest.names_version(number));
                let newest = objects.iter().map(|o| o.last_modified).max();
                let abandoned = newest.is_none_or(|t| {
                    std::time::SystemTime::now()
                        .duration_since(t.into())
                        .unwrap_or_default()
                        >= age
                });
                if unnamed && abandoned {
                    self.remove_unpublished(&id, number).await?;
                    done.uncommitted_versions += 1;
                }
            }
        }
        Ok(done)
    }
}

/// This process's name in claims (host and process id), for people
/// looking at a bucket.
fn replica_name() -> String {
    let host = crate::config::host_name().unwrap_or_else(|| "unknown-host".into());
    format!("{host} pid {}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        let written = root
            .write_manifest(&manifest, Expect::Absent)
            .await
            .unwrap();
        assert!(matches!(written, Committed::Yes(Some(_))));
        // A second registration of the same id loses.
        let again = root
            .write_manifest(&manifest, Expect::Absent)
            .await
            .unwrap();
        assert_eq!(again, Committed::Conflict);
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

        // Young folders may be another replica's upload in progress.
        let done = root.recover().await.unwrap();
        assert_eq!((done.staging, done.uncommitted_versions), (1, 0));
        let done = root.recover_older_than(Duration::ZERO).await.unwrap();
        assert_eq!(done.uncommitted_versions, 1);
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

    #[tokio::test]
    async fn two_claims_never_share_a_number_and_a_lost_one_is_recovered() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let root = StoreRoot::new(store.clone(), &dir.path().join("staging")).unwrap();
        let mut manifest = Manifest::parse(
            "id = \"d\"\ntitle = \"D\"\ndescription = \"\"\nsector = \"s\"\npublisher = \"P\"\nlicense = \"L\"\ntier = \"open\"\n",
        )
        .unwrap();
        let id = manifest.id.clone();
        let Committed::Yes(tag) = root
            .write_manifest(&manifest, Expect::Absent)
            .await
            .unwrap()
        else {
            panic!("a new manifest is written")
        };
        let first = root.claim_version(&id, 1).await.unwrap();
        let second = root.claim_version(&id, 1).await.unwrap();
        assert_eq!((first, second), (1, 2));
        for n in [1, 2] {
            let file = StorePath::from(format!("d/versions/{n}/part-00000.parquet"));
            store
                .put(&file, PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        // Version 2 commits; version 1 (the loser) never does.
        manifest.version = 2;
        let Committed::Yes(_) = root
            .write_manifest(&manifest, Expect::Tag(tag.as_deref()))
            .await
            .unwrap()
        else {
            panic!("the manifest was unchanged")
        };
        root.release_claim(&id, 2).await.unwrap();
        // A write based on the old manifest conflicts.
        let stale = root
            .write_manifest(&manifest, Expect::Tag(tag.as_deref()))
            .await
            .unwrap();
        assert_eq!(stale, Committed::Conflict);
        let done = root.recover_older_than(Duration::ZERO).await.unwrap();
        assert_eq!(done.uncommitted_versions, 1);
        assert_eq!(root.version_numbers(&id).await.unwrap(), vec![2]);
    }
}
