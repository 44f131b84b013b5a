//! Files replaced whole or not at all: write a temporary file beside the
//! target, fsync it, rename it over the target, fsync the folder. A crash
//! at any point leaves the old file or the new one, never a mix. And what
//! the append-only files (audit trail, checkpoints, privacy ledger) share:
//! an append that is whole and durable or cut back ([`AppendFile`]), and
//! finding the whole entry behind a torn fragment.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes`, atomically and durably, keeping its
/// permissions.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // A symbolic link is followed: what it points to is replaced, and the
    // link stays.
    let resolved = fs::canonicalize(path).ok();
    let path = resolved.as_deref().unwrap_or(path);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    // The new file keeps the old one's permissions (a policy file an admin
    // made private stays private), else the umask's.
    let keep = fs::metadata(path).ok().map(|m| m.permissions());
    let written = create_private(&temp, keep.is_some()).and_then(|mut file| {
        if let Some(permissions) = keep {
            file.set_permissions(permissions)?;
        }
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&temp, path)) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(dir)
}

/// A new temporary file. When it will take an existing file's permissions,
/// it is made readable by its owner only until then, so a private file's
/// next content is never, even for a moment, readable by others.
fn create_private(temp: &Path, private_until_set: bool) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private_until_set {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private_until_set;
    options.open(temp)
}

/// Creates `path` with `bytes`, whole and durably, unless it exists
/// (`AlreadyExists`, and the existing file is untouched): the bytes go to a
/// temporary file that is then hard-linked to its name, which fails rather
/// than replace.
pub fn create_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let linked = File::create(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::hard_link(&temp, path));
    let _ = fs::remove_file(&temp);
    linked?;
    sync_dir(dir)
}

/// Makes a folder's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An append-only file whose every append is whole and fsynced, or cut
/// back: a write that fails part-way (a full disk) is truncated to the
/// last whole append before anything else is written, so no later entry is
/// glued to a fragment of it. If the cut fails too, nothing is appended
/// until it succeeds.
pub struct AppendFile {
    file: File,
    /// Bytes of whole, fsynced appends.
    whole: u64,
    /// A failed append whose bytes may still be in the file.
    torn: bool,
}

impl AppendFile {
    /// `file` (opened for appending), of which the first `whole` bytes are
    /// whole entries.
    pub fn new(file: File, whole: u64) -> Self {
        Self {
            file,
            whole,
            torn: false,
        }
    }

    /// `path`, created if missing, taken as whole as it is.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let whole = file.metadata()?.len();
        Ok(Self::new(file, whole))
    }

    /// Appends `bytes` durably, or leaves the file as it was.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.torn {
            self.cut_back()?;
        }
        let written = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.whole += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.torn = true;
                if let Err(cut) = self.cut_back() {
                    tracing::error!(error = %cut, "could not cut back a failed append; nothing is appended until it can be");
                }
                Err(e)
            }
        }
    }

    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.whole)?;
        self.file.sync_all()?;
        self.torn = false;
        Ok(())
    }
}

/// A line of an append-only file of JSON objects that all begin with
/// `start` (their first member), when it is a torn fragment (a write that
/// failed part-way) with a whole entry appended behind it: the fragment's
/// length and the entry's text. The caller checks that the entry parses.
pub fn after_torn_fragment<'a>(line: &'a str, start: &str) -> Option<(usize, &'a str)> {
    if !line.starts_with(start) {
        return None;
    }
    let at = line.rfind(start).filter(|&at| at > 0)?;
    Some((at, &line[at..]))
}
