//! Checking the chain: every line parses, carries the hash of its own bytes
//! and the hash of the record before it, across files in name order. The
//! first broken record is reported by file and line. A torn line (no newline,
//! or cut short) is accepted only as the last line of a file, where a crash
//! leaves it, and is reported as such.

use std::path::{Path, PathBuf};

use super::{GENESIS, Record, sha256_hex, unseal};

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

/// Verifies every record in `dir`.
pub fn verify(dir: &Path) -> Result<VerifyReport, VerifyError> {
    let fail = |file: &Path, line: usize, problem: String| VerifyError {
        file: file.display().to_string(),
        line,
        problem,
    };
    let files = audit_files(dir).map_err(|e| fail(dir, 0, e.to_string()))?;
    let mut report = VerifyReport {
        files: files.len(),
        ..Default::default()
    };
    let mut prev = GENESIS.to_string();
    for path in &files {
        let bytes = std::fs::read(path).map_err(|e| fail(path, 0, e.to_string()))?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for (i, raw) in lines.iter().enumerate() {
            let number = i + 1;
            let complete = raw.ends_with('\n');
            let sealed = unseal(raw.trim_end_matches('\n'));
            let Some((body, hash)) = sealed.filter(|_| complete) else {
                if i + 1 == lines.len() {
                    report.torn.push(format!("{}:{number}", path.display()));
                    continue;
                }
                return Err(fail(path, number, "not a complete audit record".into()));
            };
            let record: Record = serde_json::from_str(&body)
                .map_err(|e| fail(path, number, format!("not a valid record: {e}")))?;
            if sha256_hex(body.as_bytes()) != hash {
                return Err(fail(
                    path,
                    number,
                    "the record was altered (its hash does not match its content)".into(),
                ));
            }
            if record.prev != prev {
                return Err(fail(
                    path,
                    number,
                    "the chain is broken here: a record before this one was removed, reordered or altered".into(),
                ));
            }
            prev = hash.to_owned();
            report.records += 1;
        }
    }
    Ok(report)
}

/// Every record in `dir`, oldest first (torn lines skipped).
pub fn read_all(dir: &Path) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    for path in audit_files(dir)? {
        let text = std::fs::read_to_string(&path)?;
        for raw in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            if let Some((body, hash)) = unseal(raw.trim_end_matches('\n'))
                && let Ok(mut record) = serde_json::from_str::<Record>(&body)
            {
                record.hash = hash.to_owned();
                out.push(record);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::seal;
    use super::*;

    fn write_chain(dir: &Path, n: usize) -> Vec<String> {
        let mut prev = GENESIS.to_string();
        let mut lines = Vec::new();
        for i in 0..n {
            let record = Record {
                event: "data".into(),
                subject: Some(format!("user{i}")),
                rows: Some(i as u64),
                ..Default::default()
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
        let report = verify(dir.path()).unwrap();
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
        let err = verify(dir.path()).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.problem.contains("altered"));
    }

    #[test]
    fn a_deleted_record_is_caught_where_the_chain_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let lines = write_chain(dir.path(), 5);
        let text = [&lines[..1], &lines[2..]].concat().concat();
        std::fs::write(file(dir.path()), text).unwrap();
        let err = verify(dir.path()).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.problem.contains("chain is broken"));
    }

    #[test]
    fn reordered_records_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = write_chain(dir.path(), 5);
        lines.swap(1, 3);
        std::fs::write(file(dir.path()), lines.concat()).unwrap();
        assert_eq!(verify(dir.path()).unwrap_err().line, 2);
    }

    #[test]
    fn a_torn_last_line_is_reported_not_accepted_silently() {
        let dir = tempfile::tempdir().unwrap();
        let lines = write_chain(dir.path(), 3);
        let torn = &lines[2][..lines[2].len() / 2];
        std::fs::write(file(dir.path()), format!("{}{}{torn}", lines[0], lines[1])).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.records, 2);
        assert_eq!(report.torn.len(), 1);
        // The same damage in the middle of a file is an error.
        std::fs::write(
            file(dir.path()),
            format!("{}{torn}\n{}", lines[0], lines[1]),
        )
        .unwrap();
        assert_eq!(verify(dir.path()).unwrap_err().line, 2);
    }
}
