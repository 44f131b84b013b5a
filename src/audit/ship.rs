//! Shipping a replica's trail to the deployment's bucket, so the trail
//! outlives the machine and one command checks every replica's chain.
//!
//! Each replica writes and fsyncs its own trail locally, as a single
//! server does (a record is durable before the data it allows leaves), and
//! a background task copies its files to `<ship_url>/<replica_id>/`: every
//! file whose size differs from the copy in the bucket (audit files and the
//! checkpoint file are append-only, so a size names their content). The
//! checkpoint file is read before the audit files, so a shipped checkpoint
//! never vouches for records the shipped files lack. What the bucket holds
//! lags the local trail by at most one round (`audit.checkpoint_secs`); a
//! server stopping gracefully ships a last round after sealing its trail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::checkpoint::CHECKPOINT_FILE;
use crate::config::Settings;

/// Where a replica's files go, and what the bucket already has.
pub struct Shipper {
    store: Arc<dyn ObjectStore>,
    replica: StorePath,
    dir: PathBuf,
    /// Size of each file in the bucket, by name.
    shipped: HashMap<String, u64>,
}

impl Shipper {
    /// A shipper of `dir` to `store` under `replica_id/`, knowing what an
    /// earlier run of this replica shipped.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        replica_id: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let replica = StorePath::from(replica_id);
        let shipped = store
            .list(Some(&replica))
            .map_ok(|meta| (meta.location.filename().unwrap_or("").to_owned(), meta.size))
            .try_collect()
            .await
            .context("listing the audit files already shipped")?;
        Ok(Self {
            store,
            replica,
            dir: dir.to_owned(),
            shipped,
        })
    }

    /// Copies every file that changed since the last round; returns how
    /// many.
    pub async fn ship_changed(&mut self) -> anyhow::Result<usize> {
        let dir = self.dir.clone();
        // Checkpoints first, audit files after (see the module's notes).
        let files = tokio::task::spawn_blocking(move || read_trail(&dir)).await??;
        let mut count = 0;
        for (name, bytes) in files {
            let size = bytes.len() as u64;
            if self.shipped.get(&name) == Some(&size) {
                continue;
            }
            self.store
                .put(
                    &self.replica.clone().join(name.as_str()),
                    PutPayload::from(bytes),
                )
                .await
                .with_context(|| format!("shipping audit file {name}"))?;
            self.shipped.insert(name, size);
            count += 1;
        }
        Ok(count)
    }

    /// Ships every `every`, for as long as the server runs.
    pub fn spawn(self, every: Duration) -> Running {
        let running = Running(Arc::new(tokio::sync::Mutex::new(self)));
        let shipper = running.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                shipper.ship_now().await;
            }
        });
        running
    }
}

/// A shipper at work, which a stopping server asks for a last round.
#[derive(Clone)]
pub struct Running(Arc<tokio::sync::Mutex<Shipper>>);

impl Running {
    /// Ships what changed now (a failure is logged: the next round, or the
    /// next start, tries again).
    pub async fn ship_now(&self) {
        match self.0.lock().await.ship_changed().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(files = n, "shipped audit files"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "could not ship the audit trail"),
        }
    }
}

/// The trail's files with their bytes, in the order they go to the bucket:
/// audit files oldest first, the checkpoint file last. The checkpoint file
/// is read first, so the audit files hold every record it counts.
fn read_trail(dir: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let checkpoints = match std::fs::read(dir.join(CHECKPOINT_FILE)) {
        Ok(bytes) => Some((CHECKPOINT_FILE.to_owned(), bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for path in super::audit_files(dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        files.push((name, std::fs::read(&path)?));
    }
    files.extend(checkpoints);
    Ok(files)
}

/// Where this server ships its trail: `audit.ship_url`, else `audit/` at
/// the root of the catalogue's bucket when the catalogue is in an object
/// store other than memory; and under which replica name.
pub fn destination(settings: &Settings) -> anyhow::Result<Option<(String, String)>> {
    let shared = settings
        .storage
        .shared_url(crate::config::shared_folders::AUDIT);
    let Some(url) = settings.audit.ship_url.clone().or(shared) else {
        return Ok(None);
    };
    let replica = settings
        .audit
        .replica_id
        .clone()
        .or_else(crate::config::host_name)
        .unwrap_or_default();
    let valid = !replica.is_empty()
        && replica.len() <= 64
        && replica
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !replica.starts_with('.');
    anyhow::ensure!(
        valid,
        "audit.replica_id {replica:?}: name this replica with 1 to 64 letters, digits, '-', '_' or '.'"
    );
    Ok(Some((url, replica)))
}

/// Copies every replica's shipped trail under `url` into `into/<replica>/`;
/// returns the replicas' folders, by name.
pub async fn download(url: &str, into: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let store = crate::catalog::rooted::open_url(url)?;
    let objects: Vec<_> = store
        .list(None)
        .try_collect()
        .await
        .with_context(|| format!("listing {url}"))?;
    let mut replicas = std::collections::BTreeSet::new();
    for meta in objects {
        let parts: Vec<String> = meta
            .location
            .parts()
            .map(|p| p.as_ref().to_owned())
            .collect();
        let [replica, name] = parts.as_slice() else {
            continue;
        };
        let folder = into.join(replica);
        std::fs::create_dir_all(&folder)?;
        let bytes = store.get(&meta.location).await?.bytes().await?;
        std::fs::write(folder.join(name), &bytes)?;
        replicas.insert(folder);
    }
    anyhow::ensure!(!replicas.is_empty(), "no audit files under {url}");
    Ok(replicas.into_iter().collect())
}
