//! The privacy-budget ledger: what each DP grant's project has spent.
//!
//! One append-only file, `<state>/privacy-ledger.jsonl`, one JSON line per
//! answer (`at`, `account`, `epsilon`, `request`). A spend is checked and
//! written under one lock, and fsynced before [`Ledger::spend`] returns, so
//! the answer it pays for leaves only once the spend would survive a
//! crash, and concurrent answers cannot together overspend. On start the
//! file is summed per account; a last line without its newline is a write
//! that never returned (its answer never left) and is cut off. Any other
//! line that does not parse stops the server: an unknown spend cannot be
//! assumed to be zero.
//!
//! Replicas over one bucket share their ledger instead ([`Ledger::shared`]):
//! one object per account, `<account's SHA-256>.jsonl`, and a spend is a
//! conditional put of the object with its line appended, if-match on the
//! ETag read (create-if-absent for a first spend). Two replicas spending
//! from one account at once cannot both succeed on the same total: the
//! loser reads the new total and checks the budget again. Without this,
//! every replica would grant the whole budget.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Budgets are sums of floats: a spend that lands within this of the total
/// is allowed, so a budget of 1.0 holds ten answers of 0.1.
const SLACK: f64 = 1e-9;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    account: String,
    epsilon: f64,
    request: String,
}

/// What one spend left behind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    pub epsilon: f64,
    pub remaining: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The answer would cost more than what is left.
    #[error("the privacy budget has {remaining} left; the answer costs {cost}")]
    Exhausted { remaining: f64, cost: f64 },
    #[error("privacy ledger {path}: {message}")]
    Io { path: String, message: String },
}

/// Where spends are written.
enum Backing {
    /// The local file, appended under the `spent` lock.
    File(Mutex<crate::util::durable::AppendFile>),
    /// The bucket replicas share.
    Shared(Shared),
}

/// A ledger kept in an object store, shared by replicas.
struct Shared {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
}

/// How many times a spend reads again after another replica's spend won.
const MAX_SPEND_ATTEMPTS: usize = 50;

pub struct Ledger {
    path: PathBuf,
    /// What each account had spent when last read or written here (for a
    /// shared ledger, other replicas' later spends are not counted until
    /// this replica spends from the account again).
    spent: Mutex<HashMap<String, f64>>,
    backing: Backing,
}

impl Ledger {
    /// The ledger in `state`: created empty, or read back.
    pub fn open_in(state: &Path) -> Result<Self, LedgerError> {
        Self::open(&state.join("privacy-ledger.jsonl"))
    }

    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let io = |e: std::io::Error| LedgerError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            tracing::warn!(
                path = %path.display(),
                bytes = text.len() - complete,
                "privacy ledger: cutting off a last line that was never completed"
            );
            file.set_len(complete as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let (spent, fragments) = totals(&text[..complete], path)?;
        if fragments > 0 {
            // Entries glued behind torn fragments (a writer before the
            // cut-back) are kept; the fragments go, in one atomic rewrite.
            tracing::warn!(
                path = %path.display(),
                fragments,
                "privacy ledger: removing fragments of failed writes; every whole entry is kept"
            );
            let cleaned: String = text[..complete]
                .lines()
                .map(|line| {
                    let whole = entry_of(line).ok().and_then(|(_, glued)| glued);
                    format!("{}\n", whole.unwrap_or(line))
                })
                .collect();
            crate::util::durable::replace_file(path, cleaned.as_bytes()).map_err(io)?;
            return Self::open(path);
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            spent: Mutex::new(spent),
            backing: Backing::File(Mutex::new(crate::util::durable::AppendFile::new(
                file,
                complete as u64,
            ))),
        })
    }

    /// A ledger in `store`, shared with every replica that opens the same
    /// store; spends block on `runtime` (call them off the async workers).
    pub fn shared(store: Arc<dyn ObjectStore>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            path: PathBuf::from(store.to_string()),
            spent: Mutex::new(HashMap::new()),
            backing: Backing::Shared(Shared { store, runtime }),
        }
    }

    /// What each account in `state`'s ledger has spent, read without
    /// changing the file (for `sluice policy explain`, beside a running
    /// server; a line being written is not counted yet).
    pub fn read_totals(state: &Path) -> Result<HashMap<String, f64>, LedgerError> {
        let path = state.join("privacy-ledger.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(LedgerError::Io {
                    path: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        totals(&text[..complete], &path).map(|(spent, _)| spent)
    }

    /// What `account` has spent, read now from a shared ledger (for
    /// `sluice policy explain`; a file ledger answers what it holds).
    pub async fn spent_now(&self, account: &str) -> Result<f64, LedgerError> {
        match &self.backing {
            Backing::Shared(shared) => shared.read(account).await.map(|(_, spent, _)| spent),
            Backing::File(_) => Ok(self.spent(account)),
        }
    }

    /// What `account` has spent so far.
    pub fn spent(&self, account: &str) -> f64 {
        let spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        spent.get(account).copied().unwrap_or(0.0)
    }

    /// Spends `cost` from `account`, whose budget is `total`, durably; or
    /// refuses when less is left. Blocks on an fsync: call it off the
    /// async workers.
    pub fn spend(
        &self,
        account: &str,
        total: f64,
        cost: f64,
        request: &str,
    ) -> Result<Spend, LedgerError> {
        let entry = Entry {
            at: OffsetDateTime::now_utc(),
            account: account.to_owned(),
            epsilon: cost,
            request: request.to_owned(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(|e| self.io(e.to_string()))?;
        line.push(b'\n');
        let spent = match &self.backing {
            // The bucket arbitrates (conditional puts): no lock is held
            // meanwhile, so one project's spends do not wait for another's.
            Backing::Shared(shared) => {
                let result = shared.spend(account, total, cost, &line);
                // Show the latest total read, also when it refused.
                let latest = match &result {
                    Ok(spent) => Some(spent + cost),
                    Err(LedgerError::Exhausted { remaining, .. }) => Some(total - remaining),
                    Err(_) => None,
                };
                if let Some(latest) = latest {
                    let mut totals = self.spent.lock().unwrap_or_else(|e| e.into_inner());
                    let shown = totals.entry(account.to_owned()).or_default();
                    *shown = shown.max(latest);
                }
                result?
            }
            // Checked, written and counted under the `spent` lock: the next
            // spend sees this one.
            Backing::File(file) => {
                let mut totals = self.spent.lock().unwrap_or_else(|e| e.into_inner());
                let spent = totals.get(account).copied().unwrap_or(0.0);
                check_budget(total, spent, cost)?;
                let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
                file.append(&line).map_err(|e| self.io(e.to_string()))?;
                totals.insert(account.to_owned(), spent + cost);
                spent
            }
        };
        Ok(Spend {
            epsilon: cost,
            remaining: (total - spent - cost).max(0.0),
        })
    }

    fn io(&self, message: String) -> LedgerError {
        LedgerError::Io {
            path: self.path.display().to_string(),
            message,
        }
    }
}

/// Refuses a spend of `cost` when less than that is left of `total`.
fn check_budget(total: f64, spent: f64, cost: f64) -> Result<(), LedgerError> {
    let remaining = (total - spent).max(0.0);
    if cost > remaining + SLACK {
        return Err(LedgerError::Exhausted { remaining, cost });
    }
    Ok(())
}

impl Shared {
    fn path(account: &str) -> StorePath {
        StorePath::from(format!(
            "{}.jsonl",
            crate::audit::sha256_hex(account.as_bytes())
        ))
    }

    fn io(&self, account: &str, message: String) -> LedgerError {
        LedgerError::Io {
            path: format!("{}/{}", self.store, Self::path(account)),
            message,
        }
    }

    /// `account`'s object now: its text, what it sums to, and the put mode
    /// that replaces exactly this object (or creates the first one).
    async fn read(&self, account: &str) -> Result<(String, f64, PutMode), LedgerError> {
        let path = Self::path(account);
        let (bytes, mode) = match self.store.get(&path).await {
            Ok(got) => {
                let version = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| self.io(account, e.to_string()))?;
                (bytes.to_vec(), PutMode::Update(version))
            }
            Err(object_store::Error::NotFound { .. }) => (Vec::new(), PutMode::Create),
            Err(e) => return Err(self.io(account, e.to_string())),
        };
        let text = String::from_utf8(bytes).map_err(|e| self.io(account, e.to_string()))?;
        let spent = totals(&text, Path::new(path.as_ref()))?
            .0
            .get(account)
            .copied()
            .unwrap_or(0.0);
        Ok((text, spent, mode))
    }

    /// Appends `line` to `account`'s object if the budget allows, with a
    /// conditional put; returns what the account had spent before.
    fn spend(&self, account: &str, total: f64, cost: f64, line: &[u8]) -> Result<f64, LedgerError> {
        self.runtime.block_on(async {
            for _ in 0..MAX_SPEND_ATTEMPTS {
                let (text, spent, mode) = self.read(account).await?;
                check_budget(total, spent, cost)?;
                let mut body = text.into_bytes();
                body.extend_from_slice(line);
                match self
                    .store
                    .put_opts(&Self::path(account), body.into(), mode.into())
                    .await
                {
                    Ok(_) => return Ok(spent),
                    // Another replica spent first: read its total.
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. },
                    ) => continue,
                    Err(e) => return Err(self.io(account, e.to_string())),
                }
            }
            Err(self.io(
                account,
                "too many replicas spending from this account at once; try again".into(),
            ))
        })
    }
}

/// Spends per account in complete ledger lines, and how many lines were a
/// torn fragment with a whole entry glued behind it (the entry counts).
fn totals(text: &str, path: &Path) -> Result<(HashMap<String, f64>, usize), LedgerError> {
    let mut spent: HashMap<String, f64> = HashMap::new();
    let mut fragments = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (entry, glued) = entry_of(line).map_err(|e| LedgerError::Io {
            path: path.display().to_string(),
            message: format!(
                "line {} is not a ledger entry ({e}); fix or restore the file: an unknown spend cannot be taken as zero",
                n + 1
            ),
        })?;
        fragments += usize::from(glued.is_some());
        *spent.entry(entry.account).or_default() += entry.epsilon;
    }
    Ok((spent, fragments))
}

/// The entry on `line`, parsed once; when the line is a torn fragment with
/// a whole entry glued behind it, that entry and its text.
fn entry_of(line: &str) -> Result<(Entry, Option<&str>), serde_json::Error> {
    serde_json::from_str(line).map(|e| (e, None)).or_else(|e| {
        crate::util::durable::after_torn_fragment(line, "{\"at\":")
            .and_then(|(_, rest)| Some((serde_json::from_str(rest).ok()?, Some(rest))))
            .ok_or(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn spends_add_up_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_in(dir.path()).unwrap();
        for _ in 0..10 {
            ledger.spend("g/p", 1.0, 0.1, "r").unwrap();
        }
        assert!(matches!(
            ledger.spend("g/p", 1.0, 0.1, "r"),
            Err(LedgerError::Exhausted { remaining, .. }) if remaining < 1e-9
        ));
        // Another account has its own budget.
        assert_eq!(ledger.spend("g/q", 1.0, 0.5, "r").unwrap().remaining, 0.5);
        drop(ledger);
        let again = Ledger::open_in(dir.path()).unwrap();
        assert!((again.spent("g/p") - 1.0).abs() < 1e-9);
        assert_eq!(again.spent("g/q"), 0.5);
    }

    #[test]
    fn a_torn_last_line_is_cut_and_a_corrupt_one_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("privacy-ledger.jsonl");
        Ledger::open(&path)
            .unwrap()
            .spend("a", 2.0, 0.5, "r")
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"at":"2026-11-28T00:00:00Z","acc"#)
            .unwrap();
        drop(f);
        // Read beside a writer: the torn line is not counted, nor cut.
        let read = Ledger::read_totals(dir.path()).unwrap();
        assert_eq!(read["a"], 0.5);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("acc"));
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.spent("a"), 0.5);
        ledger.spend("a", 2.0, 0.5, "r").unwrap();
        assert_eq!(Ledger::open(&path).unwrap().spent("a"), 1.0);

        std::fs::write(&path, "not json\n").unwrap();
        assert!(matches!(Ledger::open(&path), Err(LedgerError::Io { .. })));
    }

    #[test]
    fn an_entry_glued_behind_a_torn_fragment_is_kept_and_the_fragment_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("privacy-ledger.jsonl");
        let entry = |request: &str| {
            format!(
                r#"{{"at":"2026-11-28T00:00:00Z","account":"a","epsilon":0.25,"request":"{request}"}}"#
            )
        };
        // What a full disk left under a writer that appended after a
        // failed write: a fragment, then a released answer's entry.
        let text = format!(
            "{}\n{}{}\n{}\n",
            entry("r1"),
            &entry("r2")[..30],
            entry("r3"),
            entry("r4")
        );
        std::fs::write(&path, &text).unwrap();
        assert_eq!(Ledger::read_totals(dir.path()).unwrap()["a"], 0.75);
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.spent("a"), 0.75);
        let repaired = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            repaired,
            format!("{}\n{}\n{}\n", entry("r1"), entry("r3"), entry("r4"))
        );
        // And it appends after the repair, durably.
        ledger.spend("a", 2.0, 0.25, "r5").unwrap();
        assert_eq!(Ledger::open(&path).unwrap().spent("a"), 1.0);
    }

    #[test]
    fn concurrent_spends_never_overspend() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = std::sync::Arc::new(Ledger::open_in(dir.path()).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let ledger = ledger.clone();
                std::thread::spawn(move || ledger.spend("a", 1.0, 0.25, "r").is_ok())
            })
            .collect();
        let granted = threads
            .into_iter()
            .filter(|_| true)
            .map(|t| t.join().unwrap())
            .filter(|&ok| ok)
            .count();
        assert_eq!(granted, 4);
        assert_eq!(ledger.spent("a"), 1.0);
    }

    #[test]
    fn replicas_sharing_a_ledger_never_overspend_together() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        // Two replicas, eight threads each, one account with four spends.
        let replicas: Vec<_> = (0..2)
            .map(|_| Arc::new(Ledger::shared(store.clone(), runtime.handle().clone())))
            .collect();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let ledger = replicas[i % 2].clone();
                std::thread::spawn(move || ledger.spend("g/p", 1.0, 0.25, "r").is_ok())
            })
            .collect();
        let granted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&ok| ok)
            .count();
        assert_eq!(granted, 4);
        // A third replica started later sees the whole spend.
        let late = Ledger::shared(store, runtime.handle().clone());
        assert!(matches!(
            late.spend("g/p", 1.0, 0.25, "r"),
            Err(LedgerError::Exhausted { remaining, .. }) if remaining < 1e-9
        ));
        assert_eq!(late.spend("g/q", 1.0, 0.5, "r").unwrap().remaining, 0.5);
    }
}
