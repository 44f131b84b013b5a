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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.expires_at
            .is_some_and(|at| at <= now.saturating_add(margin_secs))
    }
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

    /// Writes the file whole, for its owner only.
    pub fn save(&self, folder: &Path) -> std::io::Result<()> {
        let created = !folder.exists();
        std::fs::create_dir_all(folder)?;
        let path = file_in(folder);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            // A folder made here is its owner's only; one that was there
            // (a shared SLUICE_CONFIG_DIR) keeps its mode: the file is 0600.
            if created {
                std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))?;
            }
            // The replacement keeps this file's mode: it is never readable
            // by others, not even for a moment.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
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
