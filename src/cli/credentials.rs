//! The command line's stored sign-ins: one token (and the CA to trust) per
//! server, kept by `sluice login` in the user's config folder
//! (`$SLUICE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/sluice`, else
//! `~/.config/sluice`) as `credentials.json`, readable by its owner only
//! (0600, in a 0700 folder), replaced whole. Commands that talk to a server
//! use it when neither `--token` nor `SLUICE_TOKEN` gives a token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is kept for one server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stored {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// When the token expires (seconds since 1970), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// How to renew it, for a token from the device flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<crate::device_login::Refresh>,
}

impl Stored {
    /// Whether the token expires within `margin_secs` (never, when its
    /// expiry is unknown).
    pub fn expires_within(&self, margin_secs: u64) -> bool {
        self.expires_at
            .is_some_and(|at| at <= unix_now().saturating_add(margin_secs))
    }
}

/// When a token that runs `expires_in` seconds from now expires (seconds
/// since 1970), as a token answer gives it.
pub fn expiry(expires_in: Option<u64>) -> Option<u64> {
    expires_in.map(|secs| unix_now().saturating_add(secs))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Every server's stored sign-in, by base URL.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    servers: BTreeMap<String, Stored>,
}

/// The folder the credentials live in.
pub fn folder() -> Option<PathBuf> {
    let from = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    from("SLUICE_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| from("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("sluice")))
        .or_else(|| from("HOME").map(|h| PathBuf::from(h).join(".config").join("sluice")))
}

fn file_in(folder: &Path) -> PathBuf {
    folder.join("credentials.json")
}

/// Opens (or makes) a file of the folder's for its owner only (0600); a
/// folder made here is its owner's only (0700), one that was there (a
/// shared SLUICE_CONFIG_DIR) keeps its mode.
fn private_file(folder: &Path, name: &str) -> std::io::Result<std::fs::File> {
    let created = !folder.exists();
    std::fs::create_dir_all(folder)?;
    let path = folder.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if created {
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))?;
        }
        options.mode(0o600);
        let file = options.open(&path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        let _ = created;
        options.open(&path)
    }
}

/// A server's URL as the key it is stored under.
fn key(server: &str) -> String {
    server.trim_end_matches('/').to_owned()
}

impl Credentials {
    /// The stored credentials (none when the file does not exist).
    pub fn load(folder: &Path) -> std::io::Result<Self> {
        match std::fs::read(file_in(folder)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    pub fn get(&self, server: &str) -> Option<&Stored> {
        self.servers.get(&key(server))
    }

    pub fn set(&mut self, server: &str, stored: Stored) {
        self.servers.insert(key(server), stored);
    }

    /// Forgets a server; whether it was known.
    pub fn remove(&mut self, server: &str) -> bool {
        self.servers.remove(&key(server)).is_some()
    }

    /// Holds the folder's lock until the guard is dropped: commands that
    /// read, renew and write a sign-in take turns (another process waits).
    pub fn lock(folder: &Path) -> std::io::Result<std::fs::File> {
        let file = private_file(folder, "credentials.lock")?;
        file.lock()?;
        Ok(file)
    }

    /// Writes the file whole, for its owner only.
    pub fn save(&self, folder: &Path) -> std::io::Result<()> {
        let path = file_in(folder);
        // The replacement keeps this file's mode: it is never readable by
        // others, not even for a moment.
        private_file(folder, "credentials.json")?;
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        sluice::util::durable::replace_file(&path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_per_server_for_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("sluice");
        let mut credentials = Credentials::load(&folder).unwrap();
        assert!(credentials.get("https://a.example").is_none());
        let stored = Stored {
            token: "t1".into(),
            ca: Some("/ca.pem".into()),
            expires_at: Some(1),
            refresh: Some(crate::device_login::Refresh {
                token: "r1".into(),
                token_endpoint: "https://id.example/token".into(),
                client_id: "cli".into(),
                resource: None,
                revocation_endpoint: None,
            }),
        };
        assert!(stored.expires_within(0));
        credentials.set("https://a.example/", stored.clone());
        credentials.save(&folder).unwrap();
        let again = Credentials::load(&folder).unwrap();
        assert_eq!(again.get("https://a.example"), Some(&stored));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file_in(&folder))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let mut again = again;
        assert!(again.remove("https://a.example"));
        again.save(&folder).unwrap();
        assert!(
            Credentials::load(&folder)
                .unwrap()
                .get("https://a.example")
                .is_none()
        );
    }
}
