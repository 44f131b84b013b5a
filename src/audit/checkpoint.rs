//! Signed checkpoints: what anchors the hash chain. A chain alone catches an
//! edit in the middle, but not a cut tail, nor a tail (or one caller's
//! records) rewritten and re-chained with the public rule. So the writer
//! signs the chain's head (the newest record's hash) and the number of
//! records up to it, with an Ed25519 key kept outside the audit folder,
//! periodically, at start and at shutdown. Each checkpoint is appended to
//! `checkpoints.jsonl` in the audit folder *and* written as a log line, so
//! a copy can live in an external log store, where an intruder with the
//! disk cannot reach it.
//!
//! Verifying against the newest checkpoint catches any change to records
//! up to it; records after it are reported as unsealed. What an intruder
//! who also holds the signing key can do is in docs/security.md.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The file checkpoints are appended to, in the audit folder.
pub const CHECKPOINT_FILE: &str = "checkpoints.jsonl";

/// One signed statement: "the chain had `records` records, the last with
/// hash `head`, at `time`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub time: String,
    pub records: u64,
    pub head: String,
    /// The signing key's public half (base64), so a reader can tell which
    /// key to trust; verification uses the key it was given, not this.
    pub public_key: String,
    /// Ed25519 over [`Checkpoint::message`], base64.
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: a fixed domain string, then the fields.
    fn message(time: &str, records: u64, head: &str) -> Vec<u8> {
        format!("sluice-audit-checkpoint-v1\n{records}\n{head}\n{time}\n").into_bytes()
    }

    /// Whether `public_key` (raw 32 bytes) signed this checkpoint.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        let Ok(signature) = B64.decode(&self.signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(
                &Self::message(&self.time, self.records, &self.head),
                &signature,
            )
            .is_ok()
    }
}

/// Why a key or checkpoint file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {problem}")]
    Key { path: String, problem: String },
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a checkpoint")]
    NotACheckpoint {
        path: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// The Ed25519 key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Loads the key (PKCS#8, base64 in a text file), or makes one with
    /// owner-only permissions if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, CheckpointError> {
        let fail = |problem: String| CheckpointError::Key {
            path: path.display().to_string(),
            problem,
        };
        if !path.exists() {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| fail(e.to_string()))?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| fail(e.to_string()))?;
            file.write_all(format!("{}\n", B64.encode(pkcs8.as_ref())).as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| fail(e.to_string()))?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let der = B64
            .decode(text.trim())
            .map_err(|_| fail("not a base64 PKCS#8 Ed25519 key".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| fail("not a PKCS#8 Ed25519 key".into()))?;
        Ok(Self { pair })
    }

    /// The raw public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn sign(&self, time: &str, records: u64, head: &str) -> Checkpoint {
        let signature = self.pair.sign(&Checkpoint::message(time, records, head));
        Checkpoint {
            time: time.to_owned(),
            records,
            head: head.to_owned(),
            public_key: B64.encode(self.public_key()),
            signature: B64.encode(signature.as_ref()),
        }
    }
}

/// Appends a checkpoint to the audit folder's file and fsyncs it; a write
/// that fails (a full disk) is cut back, so no later checkpoint is glued to
/// a fragment of this one.
pub fn append(dir: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let line = serde_json::to_string(checkpoint).map_err(std::io::Error::other)?;
    crate::util::durable::AppendFile::open(&checkpoint_path(dir))?
        .append(format!("{line}\n").as_bytes())
}

pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Every checkpoint in the audit folder, oldest first. A last line without
/// its newline is a checkpoint whose write never completed (it vouches for
/// nothing) and a fragment glued before a whole checkpoint is skipped; any
/// other line that does not parse is an error.
pub fn read(dir: &Path) -> Result<Vec<Checkpoint>, CheckpointError> {
    let path = checkpoint_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .or_else(|e| {
                    crate::util::durable::after_torn_fragment(l, "{\"time\":")
                        .and_then(|(_, rest)| serde_json::from_str(rest).ok())
                        .ok_or(e)
                })
                .map_err(|source| CheckpointError::NotACheckpoint {
                    path: path.display().to_string(),
                    line: i + 1,
                    source,
                })
        })
        .collect()
}

/// Decodes a base64 public key given on the command line.
pub fn public_key_from_base64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.trim()).ok().filter(|k| k.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        let again = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        assert_eq!(key.public_key(), again.public_key(), "the key is kept");
        let other = SigningKey::load_or_create(&dir.path().join("other")).unwrap();
        let c = key.sign("2026-11-28T00:00:00Z", 7, &"a".repeat(64));
        assert!(c.verify(key.public_key()));
        assert!(!c.verify(other.public_key()));
        let mut forged = c.clone();
        forged.records = 6;
        assert!(!forged.verify(key.public_key()));
        append(dir.path(), &c).unwrap();
        assert_eq!(read(dir.path()).unwrap(), vec![c]);
    }
}
