//! The writer: one thread appending sealed records with group commit,
//! rotating files by size and by day, and signing checkpoints of the
//! chain's head (see [`super::checkpoint`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::checkpoint::{self, SigningKey};
use super::{GENESIS, Record, WRITER_LOCK, seal, unseal};
use crate::util::internal::Internal;

/// Why a record could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Writing or fsyncing failed; the record may not be on disk.
    #[error("audit log: {0}")]
    Io(#[source] Internal),
    /// The writer thread is gone.
    #[error("audit log writer stopped")]
    Stopped,
    /// Another process writes this trail (a server on the same state
    /// folder): two writers would fork the chain.
    #[error("another process writes the audit trail in {0} (a running server?)")]
    Busy(String),
}

fn io_error(
    doing: impl Into<std::borrow::Cow<'static, str>>,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> AuditError {
    AuditError::Io(Internal::caused(doing, cause))
}

enum Job {
    Record {
        record: Box<Record>,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Sign a checkpoint of the head now (at shutdown).
    Seal(oneshot::Sender<()>),
}

/// A record to write, and who waits for it to be durable.
type RecordJob = (Record, Option<oneshot::Sender<Result<(), String>>>);

/// How the writer signs checkpoints.
pub struct Checkpoints {
    pub key: SigningKey,
    /// Most time between two checkpoints while records arrive.
    pub every: std::time::Duration,
}

/// A handle to the audit trail; cheap to share.
pub struct AuditLog {
    tx: Option<mpsc::Sender<Job>>,
    dir: PathBuf,
    /// False from a failed write until a write succeeds again.
    healthy: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for AuditLog {
    /// Closes the queue and waits for the writer to finish what it holds,
    /// so the trail's lock is free once this returns (a reopen in the same
    /// process finds it free).
    fn drop(&mut self) {
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Most records written between two fsyncs.
const MAX_GROUP: usize = 4096;

/// How long the writer gathers records before one write and fsync.
const GROUP_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// Longest time a record nobody waits for stays written but not fsynced.
const LAZY_SYNC: std::time::Duration = std::time::Duration::from_secs(1);

impl AuditLog {
    /// Opens (creating) the folder, finds the chain's last hash, starts the writer.
    pub fn open(
        dir: &Path,
        max_file_bytes: u64,
        checkpoints: Option<Checkpoints>,
        on_write: Box<dyn Fn(f64) + Send>,
    ) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        // One writer per trail, for as long as this log is open (the lock
        // goes with the writer thread).
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(WRITER_LOCK))
            .map_err(|e| io_error(format!("opening {}", dir.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AuditError::Busy(dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_error(format!("locking {}", dir.display()), e));
            }
        }
        let (state, repaired) = ChainState::recover(dir)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let healthy = Arc::new(AtomicBool::new(true));
        let mut writer = Writer {
            dir: dir.to_owned(),
            max_file_bytes: max_file_bytes.max(1024),
            synced: Synced::of(&state),
            state,
            torn: false,
            repair_note: repaired,
            healthy: healthy.clone(),
            file: None,
            on_write,
            unsynced: false,
            had_company: false,
            last_sync: Instant::now(),
            checkpoints,
            sealed: None,
            last_checkpoint: Instant::now(),
            _lock: lock,
        };
        // A restart seals what the previous run left, so a tail cut while
        // the server was down is caught from here on.
        writer
            .checkpoint()
            .map_err(|e| io_error("writing the start checkpoint", e))?;
        let writer = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_error("starting the audit writer", e))?;
        Ok(Self {
            tx: Some(tx),
            dir: dir.to_owned(),
            healthy,
            writer: Some(writer),
        })
    }

    /// Whether the last write reached the disk (a full or failing disk
    /// makes every request that must be audited answer 503 until one does).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// An audit log that records nothing (audit switched off).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            dir: PathBuf::new(),
            healthy: Arc::new(AtomicBool::new(true)),
            writer: None,
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.tx.as_ref().map(|_| self.dir.as_path())
    }

    /// Appends a record and waits until it is on disk (fsynced).
    pub async fn append_durable(&self, record: Record) -> Result<(), AuditError> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let (done, wait) = oneshot::channel();
        tx.send(Job::Record {
            record: Box::new(record),
            done: Some(done),
        })
        .map_err(|_| AuditError::Stopped)?;
        wait.await
            .map_err(|_| AuditError::Stopped)?
            .map_err(|e| io_error("writing the record", e))
    }

    /// Appends a record without waiting for it (written in the next group).
    pub fn append(&self, record: Record) {
        if let Some(tx) = &self.tx
            && tx
                .send(Job::Record {
                    record: Box::new(record),
                    done: None,
                })
                .is_err()
        {
            tracing::error!("audit log writer stopped; a record was lost");
        }
    }

    /// Signs a checkpoint of everything written so far and waits for it
    /// (at shutdown, after the last stream has been recorded).
    pub async fn seal(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Job::Seal(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Where the chain stands: the last hash and the file to continue.
struct ChainState {
    last_hash: String,
    /// Complete records in the chain.
    records: u64,
    /// The newest file, if it may be appended to (not torn).
    current: Option<(PathBuf, u64)>,
    next_seq: u64,
}

impl ChainState {
    /// Finds where the chain stands. A newest file ending in a torn record
    /// (a crash mid-write: bytes after the last newline) is cut back to its
    /// last whole record, so the chain continues in it; what was cut is
    /// returned, for the trail to record. A file whose last whole line is
    /// not a record is left as it is for `verify` to report, and the chain
    /// continues in a new file.
    fn recover(dir: &Path) -> Result<(Self, Option<String>), AuditError> {
        let files =
            super::verify::audit_files(dir).map_err(|e| io_error("listing the audit files", e))?;
        let Some(newest) = files.last() else {
            return Ok((
                Self {
                    last_hash: GENESIS.into(),
                    records: 0,
                    current: None,
                    next_seq: 1,
                },
                None,
            ));
        };
        let next_seq = files.iter().filter_map(|f| file_seq(f)).max().unwrap_or(0) + 1;
        let reading = |e| io_error(format!("reading {}", newest.display()), e);
        let bytes = std::fs::read(newest).map_err(reading)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut repaired = None;
        if whole < bytes.len() {
            let file = OpenOptions::new()
                .write(true)
                .open(newest)
                .map_err(reading)?;
            file.set_len(whole as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    io_error(format!("cutting the torn end of {}", newest.display()), e)
                })?;
            let note = format!(
                "{}: cut {} bytes of a record torn by a crash while it was written (it was never acknowledged)",
                newest.display(),
                bytes.len() - whole
            );
            tracing::warn!("audit log: {note}");
            repaired = Some(note);
        }
        let text = String::from_utf8_lossy(&bytes[..whole]);
        let damaged = text
            .lines()
            .next_back()
            .is_some_and(|l| unseal(l).is_none());
        let last_hash = text
            .lines()
            .rev()
            .find_map(|l| unseal(l).map(|(_, h)| h.to_owned()));
        // The chain continues from the previous file if this one holds no
        // complete record.
        let last_hash = match last_hash {
            Some(h) => h,
            None => previous_hash(&files[..files.len() - 1])?,
        };
        if damaged {
            tracing::error!(file = %newest.display(), "audit log ends in a line that is not a record; continuing in a new file, `sluice audit verify` reports it");
        }
        Ok((
            Self {
                last_hash,
                records: count_records(&files)?,
                current: (!damaged).then(|| (newest.clone(), whole as u64)),
                next_seq,
            },
            repaired,
        ))
    }
}

/// Complete records in `files`: the chain's length, which checkpoints sign.
fn count_records(files: &[PathBuf]) -> Result<u64, AuditError> {
    let mut records = 0;
    for path in files {
        let reading = || format!("reading {}", path.display());
        let file = File::open(path).map_err(|e| io_error(reading(), e))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| io_error(reading(), e))?;
            if std::str::from_utf8(&line).is_ok_and(|l| unseal(l).is_some()) {
                records += 1;
            }
        }
    }
    Ok(records)
}

/// The hash of the last complete record in `files` (newest last).
fn previous_hash(files: &[PathBuf]) -> Result<String, AuditError> {
    for path in files.iter().rev() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io_error(format!("reading {}", path.display()), e))?;
        if let Some(hash) = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .rev()
            .find_map(|l| unseal(l.trim_end_matches('\n')).map(|(_, h)| h.to_owned()))
        {
            return Ok(hash);
        }
    }
    Ok(GENESIS.into())
}

/// The chain and the open file as of the last fsync that succeeded: what
/// a failed write is cut back to.
struct Synced {
    len: u64,
    last_hash: String,
    records: u64,
}

impl Synced {
    fn of(state: &ChainState) -> Self {
        Self {
            len: state.current.as_ref().map_or(0, |(_, len)| *len),
            last_hash: state.last_hash.clone(),
            records: state.records,
        }
    }
}

struct Writer {
    dir: PathBuf,
    max_file_bytes: u64,
    state: ChainState,
    synced: Synced,
    /// A write or fsync failed and the open file may hold bytes past
    /// `synced`: nothing is appended before they are cut.
    torn: bool,
    /// A repair to record with the next records written.
    repair_note: Option<String>,
    healthy: Arc<AtomicBool>,
    file: Option<(File, PathBuf, u64, time::Date)>,
    on_write: Box<dyn Fn(f64) + Send>,
    /// Records written since the last fsync.
    unsynced: bool,
    /// Whether the last group had more than one job: then the next waits
    /// `GROUP_WINDOW` for others to share its fsync.
    had_company: bool,
    last_sync: Instant,
    checkpoints: Option<Checkpoints>,
    /// The head the newest checkpoint signed.
    sealed: Option<String>,
    last_checkpoint: Instant,
    /// The trail's writer lock, held while the writer runs.
    _lock: File,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            // Records nobody waits for are fsynced with the next group that
            // someone waits for, or within `LAZY_SYNC` when idle.
            let first = match rx.recv_timeout(LAZY_SYNC) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.unsynced
                        && let Err(e) = self.sync()
                    {
                        tracing::error!(error = %e, "audit fsync failed");
                    }
                    // After a failure, try again unasked: a replica that
                    // says it is not ready gets no requests to find out
                    // that the disk has room again. The repair's record
                    // is what is written (and fsynced).
                    if self.repair_note.is_some() {
                        let mut repair = Vec::new();
                        let result = self.write_group(&mut repair).and_then(|()| self.sync());
                        self.healthy.store(result.is_ok(), Ordering::Relaxed);
                    }
                    self.checkpoint_if_due();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.sync();
                    self.checkpoint_logged();
                    return;
                }
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP
                && let Ok(job) = rx.try_recv()
            {
                jobs.push(job);
            }
            // Group commit, only with company (as PostgreSQL's
            // `commit_siblings`): when the last group was shared, gather
            // what arrives within a short window, so one fsync serves many
            // requests under load; a lone request is not kept waiting.
            if self.had_company {
                let window_ends = Instant::now() + GROUP_WINDOW;
                while jobs.len() < MAX_GROUP {
                    let left = window_ends.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
            }
            self.had_company = jobs.len() > 1;
            let (mut records, mut seals) = (Vec::new(), Vec::new());
            for job in jobs {
                match job {
                    Job::Record { record, done } => records.push((*record, done)),
                    Job::Seal(done) => seals.push(done),
                }
            }
            if !records.is_empty() {
                let started = Instant::now();
                let result = self.write_group(&mut records).map_err(|e| e.to_string());
                self.healthy.store(result.is_ok(), Ordering::Relaxed);
                (self.on_write)(started.elapsed().as_secs_f64());
                if let Err(e) = &result {
                    tracing::error!(error = %e, "audit write failed");
                }
                for (_, done) in records {
                    if let Some(done) = done {
                        let _ = done.send(result.clone());
                    }
                }
            }
            if seals.is_empty() {
                self.checkpoint_if_due();
            } else {
                let _ = self.sync();
                self.checkpoint_logged();
                for done in seals {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Signs a checkpoint when the head moved and the interval has passed,
    /// or when no record has been sealed yet (so a trail's first records are
    /// vouched for at once).
    fn checkpoint_if_due(&mut self) {
        let nothing_sealed = self.sealed.as_deref().is_none_or(|head| head == GENESIS);
        let due = self
            .checkpoints
            .as_ref()
            .is_some_and(|c| nothing_sealed || self.last_checkpoint.elapsed() >= c.every);
        if due {
            self.checkpoint_logged();
        }
    }

    fn checkpoint_logged(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "audit checkpoint failed");
        }
    }

    /// Signs the head, appends the checkpoint to the file and logs it; does
    /// nothing without a key or when the head has not moved since the last.
    /// Records are fsynced first: a checkpoint never vouches for a record
    /// that is not on disk.
    fn checkpoint(&mut self) -> std::io::Result<()> {
        if self.checkpoints.is_none() {
            return Ok(());
        }
        self.last_checkpoint = Instant::now();
        // A new trail gets a checkpoint of its empty chain at once: a
        // checkpoint file exists from the start, so a trail read while the
        // first records are being sealed verifies (those records count as
        // unsealed), and a removed checkpoint file is still caught.
        if self.sealed.as_deref() == Some(&self.state.last_hash) {
            return Ok(());
        }
        if self.unsynced {
            self.sync()?;
        }
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(());
        };
        let time = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let signed = checkpoints
            .key
            .sign(&time, self.state.records, &self.state.last_hash);
        checkpoint::append(&self.dir, &signed)?;
        tracing::info!(
            target: "sluice::audit::checkpoint",
            records = signed.records,
            head = %signed.head,
            public_key = %signed.public_key,
            signature = %signed.signature,
            time = %signed.time,
            "audit checkpoint"
        );
        self.sealed = Some(signed.head);
        Ok(())
    }

    /// Fsyncs the open file; a failure leaves the file to be cut back to
    /// the last fsync that succeeded (after a failed fsync, what the
    /// kernel holds of the file cannot be trusted).
    fn sync(&mut self) -> std::io::Result<()> {
        if let Some((file, ..)) = &self.file
            && let Err(e) = file.sync_data()
        {
            self.failed(&e);
            return Err(e);
        }
        self.unsynced = false;
        self.synced = Synced {
            len: self.file.as_ref().map_or(0, |f| f.2),
            last_hash: self.state.last_hash.clone(),
            records: self.state.records,
        };
        Ok(())
    }

    /// After a failed write or fsync: the file's end must be cut back
    /// before anything else is appended; tried at once, and again before
    /// the next group.
    fn failed(&mut self, error: &std::io::Error) {
        self.torn = true;
        self.repair_note = Some(format!(
            "a write failed ({error}); the trail was cut back to its last record on disk, and the requests waiting on the records after it were refused"
        ));
        if let Err(e) = self.cut_back() {
            tracing::error!(error = %e, "audit log: could not cut back a failed write; nothing is written until it can be");
        }
    }

    /// Cuts the open file back to the last fsync that succeeded and moves
    /// the chain's head back with it.
    fn cut_back(&mut self) -> std::io::Result<()> {
        if let Some((file, _, size, _)) = &mut self.file {
            file.set_len(self.synced.len)?;
            file.sync_all()?;
            *size = self.synced.len;
        }
        self.state.last_hash = self.synced.last_hash.clone();
        self.state.records = self.synced.records;
        self.unsynced = false;
        self.torn = false;
        Ok(())
    }

    /// Writes a group of records, preceded by the record of a repair made
    /// since the last group. Never appends after a failed write that has
    /// not been cut back.
    fn write_group(&mut self, jobs: &mut Vec<RecordJob>) -> std::io::Result<()> {
        if self.torn {
            self.cut_back()?;
        }
        if let Some(note) = self.repair_note.take() {
            let record = super::Record {
                reason: Some(note),
                outcome: Some(super::Outcome::Ok),
                ..super::Record::new(super::Event::AuditRepair)
            };
            jobs.insert(0, (record, None));
        }
        let result = self.append_group(jobs);
        if let Err(e) = &result
            && !self.torn
        {
            self.failed(e);
        }
        result
    }

    fn append_group(&mut self, jobs: &mut [RecordJob]) -> std::io::Result<()> {
        let now = OffsetDateTime::now_utc();
        let stamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        for (record, _) in jobs.iter_mut() {
            record.time = stamp.clone();
            let (line, hash) =
                seal(record, &self.state.last_hash).map_err(std::io::Error::other)?;
            let file = self.file_for(line.len() as u64, now.date())?;
            file.0.write_all(line.as_bytes())?;
            file.2 += line.len() as u64;
            self.state.last_hash = hash;
            self.state.records += 1;
        }
        self.unsynced = true;
        let someone_waits = jobs.iter().any(|(_, done)| done.is_some());
        if someone_waits || self.last_sync.elapsed() >= LAZY_SYNC {
            // A failed fsync is not retried into success (docs/security.md): the
            // callers waiting on this group are told, and answer 503.
            self.sync()?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// The open file, rotated first if `len` more bytes would pass the size
    /// limit or the day has changed.
    fn file_for(
        &mut self,
        len: u64,
        today: time::Date,
    ) -> std::io::Result<&mut (File, PathBuf, u64, time::Date)> {
        let rotate = match &self.file {
            None => true,
            Some((_, _, size, day)) => {
                *size > 0 && (*size + len > self.max_file_bytes || *day != today)
            }
        };
        if rotate {
            if self.file.is_some() {
                self.sync()?;
                self.file = None;
            }
            let (path, size) = match self.state.current.take() {
                // Continue the newest file found at start, if it is today's and has room.
                Some((path, size))
                    if size + len <= self.max_file_bytes && file_day(&path) == Some(today) =>
                {
                    (path, size)
                }
                _ => {
                    let name = format!(
                        "audit-{:04}{:02}{:02}-{:06}.jsonl",
                        today.year(),
                        today.month() as u8,
                        today.day(),
                        self.state.next_seq
                    );
                    self.state.next_seq += 1;
                    (self.dir.join(name), 0)
                }
            };
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            if size == 0 {
                // Make the new file's name durable too.
                File::open(&self.dir)?.sync_all()?;
            }
            self.file = Some((file, path, size, today));
            self.synced.len = size;
        }
        // Set just above when absent.
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no audit file"))
    }
}

/// The sequence number in a file name `audit-YYYYMMDD-NNNNNN.jsonl`.
fn file_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".jsonl")?
        .rsplit('-')
        .next()?
        .parse()
        .ok()
}

/// The day in a file name `audit-YYYYMMDD-…`.
fn file_day(path: &Path) -> Option<time::Date> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix("audit-")?.get(..8)?;
    let format = time::macros::format_description!("[year][month][day]");
    time::Date::parse(digits, format).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;

    #[tokio::test]
    async fn files_rotate_by_size_and_the_chain_runs_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), 2048, None, Box::new(|_| {})).unwrap();
        for i in 0..40 {
            let record = Record {
                subject: Some(format!("user{i}")),
                ..Record::new(Event::Data)
            };
            log.append_durable(record).await.unwrap();
        }
        drop(log);
        let report = super::super::verify(dir.path(), &Default::default()).unwrap();
        assert_eq!(report.records, 40);
        assert!(report.files >= 3, "{} files", report.files);
        // Reopening continues the same chain.
        let log = AuditLog::open(dir.path(), 2048, None, Box::new(|_| {})).unwrap();
        log.append_durable(Record {
            ..Record::new(Event::Data)
        })
        .await
        .unwrap();
        assert_eq!(
            super::super::verify(dir.path(), &Default::default())
                .unwrap()
                .records,
            41
        );
    }
}
