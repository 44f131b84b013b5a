//! The policy in force, replaced whole when the file changes (polled) or on
//! SIGHUP. A file that fails to parse or check is refused with a logged
//! error naming file, line and problem, and the previous policy stays in
//! force. Requests take an `Arc` of the policy when they start, so a
//! response in flight finishes under the policy it started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use super::{Policy, PolicyError};
use crate::catalog::Catalog;

/// What the file looked like when last read: modification time and length.
type Fingerprint = Option<(SystemTime, u64)>;

pub struct LivePolicy {
    path: PathBuf,
    max_filter_bytes: usize,
    current: RwLock<Arc<Policy>>,
    seen: Mutex<Fingerprint>,
}

fn fingerprint(path: &Path) -> Fingerprint {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl LivePolicy {
    /// Loads and checks the file; an error here stops the server from starting.
    pub fn load(
        path: &Path,
        catalog: &Catalog,
        max_filter_bytes: usize,
    ) -> Result<Self, PolicyError> {
        let seen = fingerprint(path);
        let policy = Policy::load(path)?;
        policy.check(catalog, &path.display().to_string(), max_filter_bytes)?;
        Ok(Self {
            path: path.to_owned(),
            max_filter_bytes,
            current: RwLock::new(Arc::new(policy)),
            seen: Mutex::new(seen),
        })
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        // The lock only guards a pointer swap; a poisoned one still holds a
        // complete policy.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the file changed since it was last read.
    pub fn changed_on_disk(&self) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        fingerprint(&self.path) != *seen
    }

    /// Reads, parses and checks the file, and puts it in force if valid.
    pub fn reload(&self, catalog: &Catalog) -> Result<Arc<Policy>, PolicyError> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = fingerprint(&self.path);
        let policy = Policy::load(&self.path)?;
        policy.check(
            catalog,
            &self.path.display().to_string(),
            self.max_filter_bytes,
        )?;
        let policy = Arc::new(policy);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = policy.clone();
        Ok(policy)
    }

    /// Reloads and logs the outcome; returns the number of grants in force.
    pub fn reload_logged(&self, catalog: &Catalog, why: &str) -> Result<usize, PolicyError> {
        match self.reload(catalog) {
            Ok(policy) => {
                tracing::info!(
                    file = %self.path.display(),
                    why,
                    grants = policy.grants.len(),
                    "policy reloaded"
                );
                Ok(policy.grants.len())
            }
            Err(e) => {
                tracing::error!(
                    file = %self.path.display(),
                    why,
                    error = %e,
                    "policy refused; the previous policy stays in force"
                );
                Err(e)
            }
        }
    }
}
