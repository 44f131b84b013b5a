//! Server secrets kept as files under `<state>`: 32 random bytes, created
//! on first use with mode 0600 and never rewritten, so a restart keeps
//! pseudonyms stable and signed links valid.

use std::io::Write;
use std::path::Path;

/// Reads the 32-byte key at `path`, creating it on first use.
pub fn load_or_create(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => bytes.try_into().map_err(|_| {
            std::io::Error::other(format!("{} must hold exactly 32 bytes", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let made = super::load_or_create(&path).unwrap();
        assert_eq!(super::load_or_create(&path).unwrap(), made);
        std::fs::write(&path, b"short").unwrap();
        assert!(super::load_or_create(&path).is_err());
    }
}
