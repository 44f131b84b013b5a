//! Checking the chain: every line parses, carries the hash of its own bytes
//! and the hash of the record before it, across files in name order; and
//! the chain matches every signed checkpoint (its head is the record at the
//! position the checkpoint signed). Every problem is reported by file and
//! line. A torn line (one without its newline) is accepted only as the
//! last line of a file, where a crash leaves it, or as a fragment with a
//! whole record glued behind it (a failed write under an older writer),
//! and is reported as such; a complete line that does not verify is an
//! error wherever it is. An empty trail is an error: a server that has run
//! leaves at least its start checkpoint. Without a head kept elsewhere, a
//! trail cut back to one of its own checkpoints, or wiped together with
//! them, cannot be told from a shorter honest one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::checkpoint::{self, Checkpoint};
use super::{GENESIS, Record, WRITER_LOCK, sha256_hex, unseal};

/// What the chain is checked against beyond itself.
#[derive(Debug, Default, Clone)]
pub struct Anchor {
    /// The checkpoint signing key's public half (raw 32 bytes): every
    /// checkpoint in the folder must verify with it, and there must be one.
    pub public_key: Option<Vec<u8>>,
    /// A head hash kept elsewhere (from a checkpoint in an external log):
    /// the chain must contain it.
    pub head: Option<String>,
}

/// The first place the chain does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {problem}")]
pub struct VerifyError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// What a successful check saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub files: usize,
    pub records: usize,
    /// Torn final lines left by crashes, as `file:line`.
    pub torn: Vec<String>,
    /// Signed checkpoints checked.
    pub checkpoints: usize,
    /// Records vouched for by the newest checkpoint; those after it are
    /// unsealed (a cut of them would not be noticed).
    pub sealed: usize,
}

/// The audit files in `dir`, oldest first.
pub fn audit_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Verifies every record in `dir`, and the chain against the anchor; the
/// first problem found, if any (see [`verify_all`] for every one).
pub fn verify(dir: &Path, anchor: &Anchor) -> Result<VerifyReport, VerifyError> {
    let (report, problems) = verify_all(dir, anchor);
    match problems.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(report),
    }
}

/// Verifies every record in `dir`, and the chain against the anchor,
/// going on past each problem: after a line that does not hold, the chain
/// is picked up again at the next record, so one torn or altered record
/// does not hide what follows it.
pub fn verify_all(dir: &Path, anchor: &Anchor) -> (VerifyReport, Vec<VerifyError>) {
    let mut problems = Vec::new();
    let mut fail = |file: &Path, line: usize, problem: String| {
        problems.push(VerifyError {
            file: file.display().to_string(),
            line,
            problem,
        })
    };
    let mut report = VerifyReport::default();
    let files = match audit_files(dir) {
        Ok(files) => files,
        Err(e) => {
            fail(dir, 0, e.to_string());
            return (report, problems);
        }
    };
    let checkpoint_file = checkpoint::checkpoint_path(dir);
    let checkpoints = checkpoint::read(dir).unwrap_or_else(|e| {
        fail(&checkpoint_file, 0, e.to_string());
        Vec::new()
    });
    if let Some(key) = &anchor.public_key {
        for (i, c) in checkpoints.iter().enumerate() {
            if !c.verify(key) {
                fail(
                    &checkpoint_file,
                    i + 1,
                    "the checkpoint's signature does not verify with the audit key: forged or altered".into(),
                );
            }
        }
    }
    // Position (1-based record count) → the head a checkpoint signed there.
    let mut expected: HashMap<u64, &Checkpoint> = HashMap::new();
    for c in &checkpoints {
        expected.insert(c.records, c);
    }
    report.files = files.len();
    report.checkpoints = checkpoints.len();
    let mut head_found = false;
    let mut prev = GENESIS.to_string();
    // After a problem, the next record's `prev` is taken as it is: the
    // break was reported once.
    let mut resync = false;
    for path in &files {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                fail(path, 0, e.to_string());
                resync = true;
                continue;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for (i, raw) in lines.iter().enumerate() {
            let number = i + 1;
            if !raw.ends_with('\n') && i + 1 == lines.len() {
                // Only a crash mid-write leaves a line without its newline.
                report.torn.push(format!("{}:{number}", path.display()));
                continue;
            }
            let line = raw.trim_end_matches('\n');
            let sealed = unseal(line);
            let parsed = sealed
                .as_ref()
                .map(|(body, _)| serde_json::from_str::<Record>(body));
            let intact = match (&sealed, &parsed) {
                (Some((body, hash)), Some(Ok(_))) => sha256_hex(body.as_bytes()) == *hash,
                _ => false,
            };
            // A write that failed part-way with the next record appended
            // to it (a writer before the cut-back): the fragment was never
            // acknowledged; the whole record behind it counts.
            let (record, hash, altered) = match glued(line).filter(|_| !intact) {
                Some((fragment, record, hash)) => {
                    report.torn.push(format!(
                        "{}:{number} ({fragment} bytes before a whole record)",
                        path.display()
                    ));
                    (record, hash, false)
                }
                None => match (sealed, parsed) {
                    (Some((_, hash)), Some(Ok(record))) => (record, hash, !intact),
                    (_, Some(Err(e))) => {
                        fail(path, number, format!("not a valid record: {e}"));
                        resync = true;
                        continue;
                    }
                    _ => {
                        fail(path, number, "not a complete audit record".into());
                        resync = true;
                        continue;
                    }
                },
            };
            if altered {
                fail(
                    path,
                    number,
                    "the record was altered (its hash does not match its content)".into(),
                );
                resync = true;
            } else if record.prev != prev && !resync {
                fail(
                    path,
                    number,
                    "the chain is broken here: a record before this one was removed, reordered or altered".into(),
                );
            } else {
                resync = false;
            }
            prev = hash.to_owned();
            report.records += 1;
            if let Some(c) = expected.get(&(report.records as u64)) {
                if c.head != hash {
                    fail(
                        path,
                        number,
                        format!(
                            "this is record {} of the chain, but the checkpoint of {} signed another: records up to here were removed, added or rewritten",
                            report.records, c.time
                        ),
                    );
                }
                report.sealed = report.sealed.max(report.records);
            }
            head_found |= anchor.head.as_deref() == Some(hash);
        }
    }
    if let Some(c) = checkpoints
        .iter()
        .find(|c| c.records as usize > report.records)
    {
        fail(
            &checkpoint_file,
            0,
            format!(
                "the trail was cut: the checkpoint of {} vouches for {} records, only {} are left",
                c.time, c.records, report.records
            ),
        );
    }
    if let Some(head) = &anchor.head
        && !head_found
    {
        fail(
            dir,
            0,
            format!("the head {head} is not in the chain: records were cut or rewritten"),
        );
    }
    // The writer's lock file stays: its presence says a server has
    // written this trail.
    let has_run = dir.join(WRITER_LOCK).exists();
    if anchor.public_key.is_some() && checkpoints.is_empty() && (report.records > 0 || has_run) {
        fail(
            &checkpoint_file,
            0,
            "no signed checkpoint: nothing vouches for the trail's tail (was the checkpoint file removed?)".into(),
        );
    }
    if report.records == 0 && checkpoints.is_empty() {
        // A server that has run wrote at least its start checkpoint or a
        // record; nothing at all is a wiped trail, or the wrong folder.
        fail(
            dir,
            0,
            if has_run {
                "the trail is empty, but a server has written here: its files were removed".into()
            } else {
                "no audit trail here (no records, no checkpoints): the wrong folder, or a wiped one"
                    .into()
            },
        );
    }
    (report, problems)
}

/// A line that is a torn fragment with a whole record glued behind it:
/// the fragment's length, the record and its hash.
fn glued(line: &str) -> Option<(usize, Record, &str)> {
    let (fragment, rest) = crate::util::durable::after_torn_fragment(line, "{\"time\":")?;
    let (body, hash) = unseal(rest)?;
    let record = serde_json::from_str(&body).ok()?;
    (sha256_hex(body.as_bytes()) == hash).then_some((fragment, record, hash))
}

/// Every record in `dir`, oldest first (torn lines skipped).
pub fn read_all(dir: &Path) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    for path in audit_files(dir)? {
        read_file_into(&path, &mut out)?;
    }
    Ok(out)
}

/// At least the `n` newest records (whole files are read, newest file
/// first, until there are `n`), oldest first: what a page of recent
/// activity needs without reading a long trail.
pub fn read_newest(dir: &Path, n: usize) -> std::io::Result<Vec<Record>> {
    let mut batches = Vec::new();
    let mut count = 0;
    for path in audit_files(dir)?.iter().rev() {
        let mut records = Vec::new();
        read_file_into(path, &mut records)?;
        count += records.len();
        batches.push(records);
        if count >= n {
            break;
        }
    }
    Ok(batches.into_iter().rev().flatten().collect())
}

fn read_file_into(path: &Path, out: &mut Vec<Record>) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    for raw in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        if let Some((body, hash)) = unseal(raw.trim_end_matches('\n'))
            && let Ok(mut record) = serde_json::from_str::<Record>(&body)
        {
            record.hash = hash.to_owned();
            out.push(record);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Event, seal};
    use super::*;

    fn write_chain(dir: &Path, n: usize) -> Vec<String> {
        let mut prev = GENESIS.to_string();
        let mut lines = Vec::new();
        for i in 0..n {
            let record = Record {
                subject: Some(format!("user{i}")),
                rows: Some(i as u64),
                ..Record::new(Event::Data)
            };
            let (line, hash) = seal(&record, &prev).unwrap();
            lines.push(line);
            prev = hash;
        }
        std::fs::write(dir.join("audit-20261126-000001.jsonl"), lines.concat()).unwrap();
        lines
    }

    fn file(dir: &Path) -> PathBuf {
        dir.join("audit-20261126-000001.jsonl")
    }

    #[test]
    fn an_intact_chain_verifies() {
        let dir = tempfile::tempdir().unwrap();
        write_chain(dir.path(), 5);
        let report = verify(dir.path(), &Anchor::default()).unwrap();
        assert_eq!((report.files, report.records), (1, 5));
        assert!(report.torn.is_empty());
    }

    #[test]
    fn an_edited_record_is_caught_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let lines = write_chain(dir.path(), 5);
        let edited = lines[2].replace("user2", "user9");
        let text = [&lines[..2], &[edited], &lines[3..]].concat().concat();
        std::fs::write(file(dir.path()), text).unwrap();
        let err = verify(dir.path(), &Anchor::default()).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.problem.contains("altered"));
    }

    #[test]
    fn a_deleted_record_is_caught_where_the_chain_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let lines = write_chain(dir.path(), 5);
        let text = [&lines[..1], &lines[2..]].concat().concat();
        std::fs::write(file(dir.path()), text).unwrap();
        let err = verify(dir.path(), &Anchor::default()).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.problem.contains("chain is broken"));
    }

    #[test]
    fn reordered_records_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = write_chain(dir.path(), 5);
        lines.swap(1, 3);
        std::fs::write(file(dir.path()), lines.concat()).unwrap();
        assert_eq!(verify(dir.path(), &Anchor::default()).unwrap_err().line, 2);
    }

    #[test]
    fn a_torn_last_line_is_reported_not_accepted_silently() {
        let dir = tempfile::tempdir().unwrap();
        let lines = write_chain(dir.path(), 3);
        let torn = &lines[2][..lines[2].len() / 2];
        std::fs::write(file(dir.path()), format!("{}{}{torn}", lines[0], lines[1])).unwrap();
        let report = verify(dir.path(), &Anchor::default()).unwrap();
        assert_eq!(report.records, 2);
        assert_eq!(report.torn.len(), 1);
        // The same damage in the middle of a file is an error.
        std::fs::write(
            file(dir.path()),
            format!("{}{torn}\n{}", lines[0], lines[1]),
        )
        .unwrap();
        assert_eq!(verify(dir.path(), &Anchor::default()).unwrap_err().line, 2);
    }

    #[test]
    fn every_problem_is_reported_and_the_chain_is_picked_up_after_each() {
        let dir = tempfile::tempdir().unwrap();
        let lines = write_chain(dir.path(), 8);
        let mut damaged = lines.clone();
        damaged[2] = lines[2].replace("user2", "user9");
        damaged[5] = "not a record\n".into();
        std::fs::write(file(dir.path()), damaged.concat()).unwrap();
        let (report, problems) = verify_all(dir.path(), &Anchor::default());
        let at: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(at, [3, 6], "{problems:?}");
        assert_eq!(report.records, 7);
    }

    #[test]
    fn a_record_glued_behind_a_torn_fragment_counts_and_the_fragment_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let lines = write_chain(dir.path(), 3);
        // A failed write of a record that was never acknowledged (so the
        // next record's `prev` skips it), then the next record.
        let fragment = r#"{"time":"2026-11-26T00:00:00Z","event":"da"#;
        let text = format!("{}{fragment}{}{}", lines[0], lines[1], lines[2]);
        std::fs::write(file(dir.path()), text).unwrap();
        let report = verify(dir.path(), &Anchor::default()).unwrap();
        assert_eq!(report.records, 3);
        assert_eq!(report.torn.len(), 1, "{:?}", report.torn);
    }

    #[test]
    fn an_empty_or_wiped_trail_fails() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(dir.path(), &Anchor::default()).unwrap_err();
        assert!(err.problem.contains("no audit trail"), "{err}");
        // A server ran here (its lock file stays), then every file went.
        std::fs::write(dir.path().join(WRITER_LOCK), "").unwrap();
        let err = verify(dir.path(), &Anchor::default()).unwrap_err();
        assert!(err.problem.contains("files were removed"), "{err}");
    }

    /// A chain of `n` records with a checkpoint of its head signed by a new
    /// key, and the anchor that trusts that key.
    fn sealed_chain(dir: &Path, n: usize) -> (Vec<String>, Anchor) {
        let lines = write_chain(dir, n);
        let key = checkpoint::SigningKey::load_or_create(&dir.join("key")).unwrap();
        let head = unseal(lines[n - 1].trim_end()).unwrap().1.to_owned();
        checkpoint::append(dir, &key.sign("t", n as u64, &head)).unwrap();
        let anchor = Anchor {
            public_key: Some(key.public_key().to_vec()),
            head: None,
        };
        (lines, anchor)
    }

    #[test]
    fn an_altered_last_record_is_an_error_not_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let lines = write_chain(dir.path(), 3);
        let edited = lines[2].replace("user2", "user7");
        std::fs::write(file(dir.path()), [&lines[..2], &[edited]].concat().concat()).unwrap();
        assert!(
            verify(dir.path(), &Anchor::default())
                .unwrap_err()
                .problem
                .contains("altered")
        );
        // A last line whose hash member was cut but that kept its newline
        // is not a crash either.
        let cut = format!("{}\n", &lines[2][..lines[2].len() - 20]);
        std::fs::write(file(dir.path()), [&lines[..2], &[cut]].concat().concat()).unwrap();
        assert_eq!(verify(dir.path(), &Anchor::default()).unwrap_err().line, 3);
    }

    #[test]
    fn a_cut_tail_is_caught_by_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, anchor) = sealed_chain(dir.path(), 50);
        assert_eq!(verify(dir.path(), &anchor).unwrap().sealed, 50);
        std::fs::write(file(dir.path()), lines[..10].concat()).unwrap();
        let err = verify(dir.path(), &anchor).unwrap_err();
        assert!(err.problem.contains("cut"), "{err}");
    }

    #[test]
    fn a_rechained_trail_without_one_callers_records_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, anchor) = sealed_chain(dir.path(), 6);
        // Drop user3's record and recompute every hash with the public rule.
        let mut prev = GENESIS.to_string();
        let mut forged = Vec::new();
        for line in lines.iter().filter(|l| !l.contains("user3")) {
            let (body, _) = unseal(line.trim_end()).unwrap();
            let record: Record = serde_json::from_str(&body).unwrap();
            let (line, hash) = seal(&record, &prev).unwrap();
            forged.push(line);
            prev = hash;
        }
        std::fs::write(file(dir.path()), forged.concat()).unwrap();
        // The chain alone holds together …
        let checkpoints = checkpoint::checkpoint_path(dir.path());
        let aside = dir.path().join("aside");
        std::fs::rename(&checkpoints, &aside).unwrap();
        assert!(verify(dir.path(), &Anchor::default()).is_ok());
        // … the signed checkpoint does not.
        std::fs::rename(&aside, &checkpoints).unwrap();
        assert!(verify(dir.path(), &anchor).is_err());
        // A head kept elsewhere catches it without the key.
        let head = unseal(lines[5].trim_end()).unwrap().1.to_owned();
        let elsewhere = Anchor {
            public_key: None,
            head: Some(head),
        };
        std::fs::remove_file(&checkpoints).unwrap();
        assert!(
            verify(dir.path(), &elsewhere)
                .unwrap_err()
                .problem
                .contains("not in the chain")
        );
    }

    #[test]
    fn forged_or_removed_checkpoints_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, anchor) = sealed_chain(dir.path(), 5);
        // A checkpoint signed by another key over a shortened trail.
        std::fs::write(file(dir.path()), lines[..2].concat()).unwrap();
        let other = checkpoint::SigningKey::load_or_create(&dir.path().join("other")).unwrap();
        let head = unseal(lines[1].trim_end()).unwrap().1.to_owned();
        std::fs::remove_file(checkpoint::checkpoint_path(dir.path())).unwrap();
        checkpoint::append(dir.path(), &other.sign("t", 2, &head)).unwrap();
        assert!(
            verify(dir.path(), &anchor)
                .unwrap_err()
                .problem
                .contains("signature")
        );
        // No checkpoint at all.
        std::fs::remove_file(checkpoint::checkpoint_path(dir.path())).unwrap();
        assert!(
            verify(dir.path(), &anchor)
                .unwrap_err()
                .problem
                .contains("no signed checkpoint")
        );
    }
}
