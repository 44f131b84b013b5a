//! Putting a new policy file in place: the one way admins' tools change
//! the live file (`sluice policy apply`, access approvals). The new text is
//! parsed and checked against the catalogue, sealed, and replaces the file
//! atomically, keeping its permissions; nothing changes when it has an
//! error. One edit at a time, under a lock in the state folder.

use std::fs::File;
use std::path::Path;

use super::{Policy, PolicyError, PolicyWarning, seal};
use crate::catalog::Catalog;

/// One policy edit at a time: an exclusive `flock` on a file in the state
/// folder, released when dropped. Approvals, rejections and `policy apply`
/// take it, and so does the server when it finishes an interrupted
/// approval.
pub struct EditLock {
    _held: File,
}

impl EditLock {
    pub fn take(state: &Path) -> std::io::Result<Self> {
        let dir = state.join("access-requests");
        std::fs::create_dir_all(&dir)?;
        let file = File::create(dir.join(".policy-edit.lock"))?;
        file.lock()?;
        Ok(Self { _held: file })
    }
}

/// What an applied file holds.
#[derive(Debug)]
pub struct Applied {
    pub policy: Policy,
    pub warnings: Vec<PolicyWarning>,
    /// The sealed text written.
    pub sealed: String,
}

/// Checks `text` (sealed or not) as the policy for `catalog` and makes it
/// the sealed content of `target`. Call under an [`EditLock`].
pub fn apply(
    text: &str,
    target: &Path,
    catalog: &Catalog,
    max_filter_bytes: usize,
) -> Result<Applied, PolicyError> {
    let name = target.display().to_string();
    let sealed = check(text, &name, catalog, max_filter_bytes)?;
    crate::util::durable::replace_file(target, sealed.sealed.as_bytes()).map_err(|source| {
        PolicyError::Io {
            file: name.clone(),
            source,
        }
    })?;
    Ok(sealed)
}

/// Checks `text` as a policy named `name` and seals it, writing nothing.
pub fn check(
    text: &str,
    name: &str,
    catalog: &Catalog,
    max_filter_bytes: usize,
) -> Result<Applied, PolicyError> {
    let body = seal::body(text);
    let policy = Policy::parse(body, name)?;
    let warnings = policy.check(catalog, name, max_filter_bytes)?;
    Ok(Applied {
        policy,
        warnings,
        sealed: seal::seal(body),
    })
}

/// The live file's text without its seal, if its seal matches: what an
/// approval adds its grant to. An unsealed live file holds an edit not in
/// force (or one being written): building on it would put that in force
/// unseen.
pub fn live_body(target: &Path) -> Result<String, PolicyError> {
    let name = target.display().to_string();
    let text = std::fs::read_to_string(target).map_err(|source| PolicyError::Io {
        file: name.clone(),
        source,
    })?;
    seal::unseal(&text)
        .map(str::to_owned)
        .map_err(|problem| PolicyError::Unsealed {
            file: name,
            problem,
        })
}
