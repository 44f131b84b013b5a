//! The policy in force, replaced whole when the file changes (polled) or on
//! SIGHUP. A file that fails to parse or has an error an admin must fix is
//! refused with a logged error naming file, line and problem, and the
//! previous policy stays in force. Catalogue drift (see [`super::check`])
//! is logged as warnings and never refuses a file, so a revocation always
//! takes effect. Requests take an `Arc` of the policy when they start, so a
//! response in flight finishes under the policy it started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

use super::{Policy, PolicyError, PolicyWarning};
use crate::catalog::Catalog;

/// What the file held when last read: the SHA-256 of its bytes. Modification
/// time and length are not enough: a same-length edit with the time put back
/// would go unnoticed until SIGHUP.
type Fingerprint = Option<[u8; 32]>;

pub struct LivePolicy {
    path: PathBuf,
    max_filter_bytes: usize,
    current: RwLock<Arc<Policy>>,
    seen: Mutex<Fingerprint>,
    /// The last [`LivePolicy::warnings`] answer and what it was computed
    /// from: `/readyz` is anonymous, and re-checking every grant's row
    /// filter on each call would let anyone make the server parse them all
    /// at will.
    warned: Mutex<Option<Warned>>,
}

type Warned = (Arc<Policy>, Arc<Catalog>, Vec<PolicyWarning>);

/// The file's text and the fingerprint of exactly those bytes.
fn read(path: &Path) -> Result<(String, [u8; 32]), PolicyError> {
    let bytes = std::fs::read(path).map_err(|source| PolicyError::Io {
        file: path.display().to_string(),
        source,
    })?;
    let digest = Sha256::digest(&bytes).into();
    let text = String::from_utf8(bytes).map_err(|_| PolicyError::Syntax {
        file: path.display().to_string(),
        message: "the file is not UTF-8".into(),
    })?;
    Ok((text, digest))
}

fn fingerprint(path: &Path) -> Fingerprint {
    // Policy files are small; reading one every poll costs less than a
    // missed revocation.
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

impl LivePolicy {
    /// Loads and checks the file; an error here stops the server from
    /// starting (warnings do not, and are logged).
    pub fn load(
        path: &Path,
        catalog: &Catalog,
        max_filter_bytes: usize,
    ) -> Result<Self, PolicyError> {
        let (text, digest) = read(path)?;
        let file = path.display().to_string();
        let policy = Policy::parse(&text, &file)?;
        let warnings = policy.check(catalog, &file, max_filter_bytes)?;
        log_warnings(path, &warnings);
        Ok(Self {
            path: path.to_owned(),
            max_filter_bytes,
            current: RwLock::new(Arc::new(policy)),
            seen: Mutex::new(Some(digest)),
            warned: Mutex::new(None),
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

    /// What in the policy in force no longer applies as written, against
    /// the catalogue as it is now (a steward edit since the last reload
    /// shows up here at once).
    pub fn warnings(&self, catalog: &Arc<Catalog>) -> Vec<PolicyWarning> {
        let policy = self.current();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, c, warnings)) = warned.as_ref()
            && Arc::ptr_eq(p, &policy)
            && Arc::ptr_eq(c, catalog)
        {
            return warnings.clone();
        }
        let file = self.path.display().to_string();
        // The policy in force passed every catalogue-independent check when
        // it was loaded, so only warnings can come back; an error would mean
        // that split is broken, and is shown rather than hidden.
        let warnings = policy
            .check(catalog, &file, self.max_filter_bytes)
            .unwrap_or_else(|e| {
                vec![PolicyWarning {
                    grant: "-".into(),
                    problem: e.to_string(),
                }]
            });
        *warned = Some((policy, catalog.clone(), warnings.clone()));
        warnings
    }

    /// Whether the file's content changed since it was last read.
    pub fn changed_on_disk(&self) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        fingerprint(&self.path) != *seen
    }

    /// Reads, parses and checks the file, and puts it in force unless it has
    /// an error. Returns the policy now in force and its warnings.
    pub fn reload(
        &self,
        catalog: &Catalog,
    ) -> Result<(Arc<Policy>, Vec<PolicyWarning>), PolicyError> {
        let read = read(&self.path);
        // Remember what was seen even when it is refused: the poller then
        // waits for the next change instead of refusing the same bytes again.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            read.as_ref().ok().map(|(_, digest)| *digest);
        let (text, _) = read?;
        let file = self.path.display().to_string();
        let policy = Policy::parse(&text, &file)?;
        let warnings = policy.check(catalog, &file, self.max_filter_bytes)?;
        let policy = Arc::new(policy);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = policy.clone();
        Ok((policy, warnings))
    }

    /// Reloads and logs the outcome; returns the number of grants in force
    /// and of warnings.
    pub fn reload_logged(
        &self,
        catalog: &Catalog,
        why: &str,
    ) -> Result<(usize, usize), PolicyError> {
        match self.reload(catalog) {
            Ok((policy, warnings)) => {
                tracing::info!(
                    file = %self.path.display(),
                    why,
                    grants = policy.grants.len(),
                    warnings = warnings.len(),
                    "policy reloaded"
                );
                log_warnings(&self.path, &warnings);
                Ok((policy.grants.len(), warnings.len()))
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

fn log_warnings(path: &Path, warnings: &[PolicyWarning]) {
    for warning in warnings {
        tracing::warn!(
            file = %path.display(),
            grant = %warning.grant,
            problem = %warning.problem,
            "policy warning: the grant loads but does not apply as written"
        );
    }
}
