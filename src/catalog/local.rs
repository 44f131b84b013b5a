//! Durable writes to a catalogue kept in a local folder: the commit
//! protocol (docs/security.md, "Durability") and the clean-up after a crash.
//!
//! Every change follows the same order: write under a temporary name, fsync
//! the file, rename it into place, fsync the folder. A version is published
//! only by rewriting `dataset.toml` that way *after* its files are durable,
//! so whatever moment the process dies at, readers see the old version or
//! the whole new one. Folders of versions above the published number are
//! uploads that never committed: [`LocalRoot::recover`] removes them.
//!
//! One process writes to a root at a time: [`LocalRoot::open`] takes an
//! exclusive lock on `<root>/.sluice.lock` for as long as the root is open.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::MANIFEST_FILE;
use super::manifest::Manifest;
use super::store_root::CLAIM_FILE;
use crate::domain::DatasetId;
use crate::util::durable::sync_dir;

const LOCK_FILE: &str = ".sluice.lock";
const STAGING: &str = ".staging";

/// A catalogue folder opened for writing.
#[derive(Debug)]
pub struct LocalRoot {
    root: PathBuf,
    // Held for the lifetime of the root: the OS lock is released on drop.
    _lock: File,
}

/// Why a root cannot be opened for writing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("another sluice process is writing to {0} (a running server?): use --server instead")]
    Busy(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A private folder for one upload, removed when dropped unless published.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// A fresh staging folder under `parent`.
    pub fn create_in(parent: &Path) -> io::Result<Self> {
        let dir = parent.join(uuid::Uuid::new_v4().to_string());
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the upload's raw body is written.
    pub fn body(&self) -> PathBuf {
        self.dir.join("upload.raw")
    }

    /// Where the normalised files of the new version are written.
    pub fn output(&self) -> PathBuf {
        self.dir.join("version")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.dir.exists()
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove staging folder");
        }
    }
}

/// What [`LocalRoot::recover`] cleaned up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub staging: usize,
    pub uncommitted_versions: usize,
    pub temp_files: usize,
}

impl LocalRoot {
    /// Opens `root` for writing, or says who else has it.
    pub fn open(root: &Path) -> Result<Self, OpenError> {
        let io_err = |source| OpenError::Io {
            path: root.to_owned(),
            source,
        };
        fs::create_dir_all(root).map_err(io_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(LOCK_FILE))
            .map_err(io_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(OpenError::Busy(root.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        Ok(Self {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dataset_dir(&self, id: &DatasetId) -> PathBuf {
        // A DatasetId is a strict slug: joining it cannot leave the root.
        self.root.join(id.as_str())
    }

    /// Removes what crashed writes left: staging folders, version folders
    /// above each manifest's published version, temporary manifests.
    pub fn recover(&self) -> io::Result<Recovered> {
        let mut done = Recovered::default();
        let staging = self.root.join(STAGING);
        if staging.exists() {
            for entry in fs::read_dir(&staging)? {
                fs::remove_dir_all(entry?.path())?;
                done.staging += 1;
            }
        }
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            // Only slug-named folders are datasets.
            let name = entry.file_name();
            if name.to_str().is_none_or(|n| DatasetId::parse(n).is_err()) {
                continue;
            }
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            for file in fs::read_dir(&dir)? {
                let file = file?;
                if file.file_name().to_string_lossy().starts_with(".tmp-") {
                    fs::remove_file(file.path())?;
                    done.temp_files += 1;
                }
            }
            // Without a readable manifest nothing here is published; the
            // catalogue load reports a damaged manifest itself.
            let Ok(text) = fs::read_to_string(dir.join(MANIFEST_FILE)) else {
                continue;
            };
            let Ok(manifest) = Manifest::parse(&text) else {
                continue;
            };
            let versions = dir.join("versions");
            if !versions.exists() {
                continue;
            }
            for version in fs::read_dir(&versions)? {
                let version = version?;
                let number = version
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok());
                let claimed = version.path().join(CLAIM_FILE).exists();
                if number.is_some_and(|n| {
                    manifest.is_stale_version(n) || (claimed && !manifest.names_version(n))
                }) {
                    fs::remove_dir_all(version.path())?;
                    done.uncommitted_versions += 1;
                }
            }
            sync_dir(&versions)?;
        }
        Ok(done)
    }

    /// A fresh staging folder on the same file system as the catalogue, so
    /// publishing is a rename.
    pub fn staging(&self) -> io::Result<Staging> {
        Staging::create_in(&self.root.join(STAGING))
    }

    /// Whether a dataset folder with a manifest exists (retired or not).
    pub fn exists(&self, id: &DatasetId) -> bool {
        self.dataset_dir(id).join(MANIFEST_FILE).exists()
    }

    /// Writes a manifest atomically and durably (temp, fsync, rename, fsync).
    pub fn write_manifest(&self, manifest: &Manifest) -> io::Result<()> {
        let dir = self.dataset_dir(&manifest.id);
        let fresh = !dir.exists();
        fs::create_dir_all(&dir)?;
        if fresh {
            sync_dir(&self.root)?;
        }
        crate::util::durable::replace_file(&dir.join(MANIFEST_FILE), manifest.to_toml().as_bytes())
    }

    /// Moves a staged version's files to `<id>/versions/<number>/`, durably.
    /// The version is not published until the manifest names it.
    pub fn place_version(&self, id: &DatasetId, number: u64, staged: &Path) -> io::Result<()> {
        // Claimed until published, as in an object store: a version that is
        // never published (replaced or rejected in review) keeps its claim,
        // so it is never read as an earlier published one.
        fs::write(staged.join(CLAIM_FILE), b"claimed\n")?;
        for entry in fs::read_dir(staged)? {
            File::open(entry?.path())?.sync_all()?;
        }
        sync_dir(staged)?;
        let versions = self.dataset_dir(id).join("versions");
        fs::create_dir_all(&versions)?;
        let target = versions.join(number.to_string());
        if target.exists() {
            // Only a crashed upload leaves one (recovery removes them); never
            // merge into it.
            fs::remove_dir_all(&target)?;
        }
        fs::rename(staged, &target)?;
        sync_dir(&versions)?;
        sync_dir(&self.dataset_dir(id))
    }

    /// Marks version `number` published: its claim goes.
    pub fn release_claim(&self, id: &DatasetId, number: u64) -> io::Result<()> {
        let folder = self
            .dataset_dir(id)
            .join("versions")
            .join(number.to_string());
        match fs::remove_file(folder.join(CLAIM_FILE)) {
            Ok(()) => sync_dir(&folder),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes a placed version that was never published.
    pub fn remove_unpublished(&self, id: &DatasetId, number: u64) -> io::Result<()> {
        let dir = self
            .dataset_dir(id)
            .join("versions")
            .join(number.to_string());
        fs::remove_dir_all(dir)
    }

    /// The highest version folder on disk for a dataset (committed or not).
    pub fn highest_version_dir(&self, id: &DatasetId) -> io::Result<u64> {
        let versions = self.dataset_dir(id).join("versions");
        if !versions.exists() {
            return Ok(0);
        }
        let mut highest = 0;
        for entry in fs::read_dir(versions)? {
            if let Some(n) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
                highest = highest.max(n);
            }
        }
        Ok(highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(version: u64) -> Manifest {
        Manifest::parse(&format!(
            "id = \"d\"\ntitle = \"D\"\ndescription = \"\"\nsector = \"s\"\npublisher = \"P\"\nlicense = \"L\"\ntier = \"open\"\nversion = {version}\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalRoot::open(dir.path()).unwrap();
        assert!(matches!(
            LocalRoot::open(dir.path()),
            Err(OpenError::Busy(_))
        ));
        drop(first);
        LocalRoot::open(dir.path()).unwrap();
    }

    #[test]
    fn recovery_removes_uncommitted_versions_and_staging_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = LocalRoot::open(dir.path()).unwrap();
        root.write_manifest(&manifest(1)).unwrap();
        let id = DatasetId::parse("d").unwrap();
        for n in [1, 2] {
            let staged = dir.path().join(format!("staged{n}"));
            fs::create_dir_all(&staged).unwrap();
            fs::write(staged.join("part-0.parquet"), b"x").unwrap();
            root.place_version(&id, n, &staged).unwrap();
        }
        let staging = root.staging().unwrap();
        fs::write(staging.body(), b"half an upload").unwrap();
        std::mem::forget(staging);
        fs::write(dir.path().join("d/.tmp-123"), b"half a manifest").unwrap();

        let done = root.recover().unwrap();
        assert_eq!(
            done,
            Recovered {
                staging: 1,
                uncommitted_versions: 1,
                temp_files: 1
            }
        );
        assert!(dir.path().join("d/versions/1/part-0.parquet").exists());
        assert!(!dir.path().join("d/versions/2").exists());
        assert_eq!(root.highest_version_dir(&id).unwrap(), 1);
    }
}
