//! The policy in force, replaced whole when the file changes (polled) or on
//! SIGHUP. A file that is not sealed (see [`super::seal`]), fails to parse
//! or has an error an admin must fix is refused with a logged error naming
//! file, line and problem, and the previous policy stays in force; the
//! refusal is shown on `/readyz` until a reload succeeds. Catalogue drift
//! (see [`super::check`]) is logged as warnings and never refuses a file,
//! so a revocation always takes effect. Requests take an `Arc` of the policy when they start, so a
//! response in flight finishes under the policy it started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

use super::{Policy, PolicyError, PolicyWarning};
use crate::audit::FieldChange;
use crate::catalog::Catalog;

/// What the file held when last read: the SHA-256 of its bytes. Modification
/// time and length are not enough: a same-length edit with the time put back
/// would go unnoticed until SIGHUP.
type Fingerprint = Option<[u8; 32]>;

pub struct LivePolicy {
    path: PathBuf,
    max_filter_bytes: usize,
    /// The policy in force and the text it was read from (to tell a
    /// reload's changes).
    current: RwLock<(Arc<Policy>, Arc<String>)>,
    seen: Mutex<Fingerprint>,
    /// The last [`LivePolicy::warnings`] answer and what it was computed
    /// from: `/readyz` is anonymous, and re-checking every grant's row
    /// filter on each call would let anyone make the server parse them all
    /// at will.
    warned: Mutex<Option<Warned>>,
    refused: Mutex<Option<Refusal>>,
    /// A copy of the text last put in force, in the state folder: what a
    /// start compares the file with, so a change made while the server was
    /// stopped is recorded too.
    kept: PathBuf,
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

/// A file read, sealed, parsed and checked: ready to be put in force.
pub struct Prepared {
    policy: Policy,
    /// What the admin wrote (the seal line taken off).
    text: String,
    pub warnings: Vec<PolicyWarning>,
}

impl Prepared {
    /// How many grants it holds.
    pub fn grants(&self) -> usize {
        self.policy.grants.len()
    }
}

/// The last reload that was refused, while the policy before it serves.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refusal {
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    pub problem: String,
}

/// Reads, unseals, parses and checks a policy file. The fingerprint of the
/// bytes read comes back whether or not they were accepted (none when the
/// file could not be read).
fn prepare(
    path: &Path,
    catalog: &Catalog,
    max_filter_bytes: usize,
) -> (Option<[u8; 32]>, Result<Prepared, PolicyError>) {
    let (text, digest) = match read(path) {
        Ok(read) => read,
        Err(e) => return (None, Err(e)),
    };
    (Some(digest), check(&text, path, catalog, max_filter_bytes))
}

fn check(
    text: &str,
    path: &Path,
    catalog: &Catalog,
    max_filter_bytes: usize,
) -> Result<Prepared, PolicyError> {
    let file = path.display().to_string();
    let body = super::seal::unseal(text).map_err(|problem| PolicyError::Unsealed {
        file: file.clone(),
        problem,
    })?;
    let policy = Policy::parse(body, &file)?;
    let warnings = policy.check(catalog, &file, max_filter_bytes)?;
    Ok(Prepared {
        policy,
        text: body.to_owned(),
        warnings,
    })
}

impl LivePolicy {
    /// Loads and checks the file; an error here stops the server from
    /// starting (warnings do not, and are logged).
    pub fn load(
        path: &Path,
        catalog: &Catalog,
        max_filter_bytes: usize,
        kept: PathBuf,
    ) -> Result<Self, PolicyError> {
        let (digest, prepared) = prepare(path, catalog, max_filter_bytes);
        let prepared = prepared?;
        log_warnings(path, &prepared.warnings);
        Ok(Self {
            path: path.to_owned(),
            max_filter_bytes,
            current: RwLock::new((Arc::new(prepared.policy), Arc::new(prepared.text))),
            seen: Mutex::new(digest),
            warned: Mutex::new(None),
            refused: Mutex::new(None),
            kept,
        })
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        // The lock only guards a pointer swap; a poisoned one still holds a
        // complete policy.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// The last refused reload, if none succeeded since.
    pub fn refused(&self) -> Option<Refusal> {
        self.refused
            .lock()
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

    /// Reads, unseals, parses and checks the file without putting it in
    /// force. A refusal is remembered (see [`LivePolicy::refused`]) and the
    /// bytes refused are not read again until they change.
    pub fn prepare(&self, catalog: &Catalog) -> Result<Prepared, PolicyError> {
        let (digest, result) = prepare(&self.path, catalog, self.max_filter_bytes);
        // Remember exactly the bytes judged, refused or not: the poller then
        // waits for the next change instead of refusing the same bytes
        // again, and a write that completes after this read is a change.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = digest;
        match result {
            Ok(prepared) => Ok(prepared),
            Err(e) => {
                self.refuse(e.to_string());
                Err(e)
            }
        }
    }

    /// What putting `next` in force changes, grant by grant, against the
    /// policy in force: each added, changed or removed `[[grant]]`,
    /// `[[visa_grant]]` or `[disclosure]`, with its old and new text.
    pub fn changes(&self, next: &Prepared) -> Vec<FieldChange> {
        super::diff::changes(&self.text(), &next.text)
    }

    /// Puts a prepared file in force (its warnings are logged).
    pub fn put_in_force(&self, next: Prepared) -> Arc<Policy> {
        log_warnings(&self.path, &next.warnings);
        let policy = Arc::new(next.policy);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            (policy.clone(), Arc::new(next.text));
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(e) = self.keep() {
            tracing::warn!(error = %e, "could not keep a copy of the policy in force");
        }
        policy
    }

    /// What the policy in force changes against the copy kept when one was
    /// last put in force (all of it at a first start).
    pub fn changes_since_kept(&self) -> Vec<FieldChange> {
        let kept = std::fs::read_to_string(&self.kept).unwrap_or_default();
        super::diff::changes(&kept, &self.text())
    }

    /// Keeps a copy of the policy in force (see [`LivePolicy::changes_since_kept`]).
    pub fn keep(&self) -> std::io::Result<()> {
        crate::util::durable::replace_file(&self.kept, self.text().as_bytes())
    }

    /// Records that a reload was refused for `problem` (the file, or its
    /// audit record, could not be had); a file refused for want of its
    /// record is read again at the next poll.
    pub fn refuse(&self, problem: String) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(Refusal {
            at: time::OffsetDateTime::now_utc(),
            problem,
        });
    }

    /// Makes the next poll read the file again (its refusal was not the
    /// file's fault).
    pub fn retry(&self) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text of the policy in force (its seal taken off).
    pub fn text(&self) -> Arc<String> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
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
