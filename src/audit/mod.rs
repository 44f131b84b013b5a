//! The audit trail: one JSON line per event in append-only files under
//! `<state>/audit/`, hash-chained so nobody can quietly edit, delete or
//! reorder a record.
//!
//! Each line is a [`Record`] whose last member is `hash`: the SHA-256 (hex) of
//! the line's bytes up to that member (the JSON object without `hash`), which
//! include `prev`, the hash of the record before. The chain runs across files:
//! files rotate by size and by day (`audit-YYYYMMDD-NNNNNN.jsonl`), and the
//! first record of a file links to the last of the one before.
//!
//! Records are written by one thread, which takes every record waiting,
//! writes them, and fsyncs once (group commit); callers that must not go on
//! before their record is on disk (the decision of a data request, before
//! the first byte of data) wait for that fsync. A crash can at worst leave
//! the last line of a file torn: the writer cuts it off on restart and
//! records that it did. A write or fsync that fails while running is cut
//! back the same way before anything else is appended, so a full disk
//! never leaves a fragment for the next record to be glued to.
//!
//! The chain is anchored by signed [`checkpoint`]s, so a cut or re-chained
//! tail is caught too.

pub mod checkpoint;
pub mod ship;
mod verify;
mod writer;

use serde::{Deserialize, Serialize};

use crate::util::words::words;

pub use verify::{
    Anchor, VerifyError, VerifyReport, audit_files, read_all, read_newest, verify, verify_all,
};
pub use writer::{AuditError, AuditLog, Checkpoints};

/// The file whose lock makes one process the trail's writer; it stays
/// behind, so its presence also says a server has written the trail.
const WRITER_LOCK: &str = ".writer.lock";

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a differentially private answer spent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySpend {
    /// The budget's account: grant and project.
    pub account: String,
    pub epsilon: f64,
    pub remaining: f64,
}

words! {
    /// What happened.
    Event {
        /// A request for rows.
        Data = "data",
        /// A request for a disclosure-controlled or private aggregate.
        Aggregate = "aggregate",
        /// A steward or admin reading a few rows of their dataset as one of
        /// its grants, or its tier, would (which is in `grant`).
        Preview = "preview",
        Register = "register",
        Upload = "upload",
        Edit = "edit",
        Retire = "retire",
        /// A retired dataset served again (admins only).
        Restore = "restore",
        /// A version held for review published by its steward.
        Publish = "publish",
        /// The current version written again as the next (admins).
        Rewrite = "rewrite",
        /// An edit that waits for a second steward's approval.
        ProposeChange = "propose-change",
        ApproveChange = "approve-change",
        RejectChange = "reject-change",
        PolicyReload = "policy-reload",
        /// A signed link to a snapshot of a slice handed out.
        Snapshot = "snapshot",
        /// A snapshot file read through a signed link (each request,
        /// ranged or not), recorded for the caller the link was issued to.
        SnapshotRead = "snapshot-read",
        /// A researcher asked for access through the web page or the API
        /// (the request's id is in `grant`: an approval's grant takes it).
        AccessRequest = "access-request",
        /// Someone signed in to the web pages (the method is in `reason`).
        SignIn = "sign-in",
        SignOut = "sign-out",
        /// A personal access token made or revoked by its owner (which, and
        /// what, is in `reason`).
        PersonalToken = "personal-token",
        /// The writer cut a torn or failed write off the trail's end
        /// (what, and why, is in `reason`).
        AuditRepair = "audit-repair",
    }
}

words! {
    /// Which record of a data request: the decision is durable before any
    /// byte leaves; the outcome is written when the stream stops.
    Phase {
        Decision = "decision",
        Outcome = "outcome",
        /// A catalogue change about to be committed, durable before it is
        /// (its outcome record follows once the answer is decided).
        Intent = "intent",
    }
}

words! {
    /// What was decided.
    Decision {
        Allow = "allow",
        /// Refused by the policy.
        Deny = "deny",
        /// Refused as invalid (or by a steward rule) before the policy decided.
        Refused = "refused",
        /// A change proposed, waiting for its second steward.
        Pending = "pending",
    }
}

words! {
    /// How it ended.
    Outcome {
        /// A stream sent its last byte.
        Complete = "complete",
        /// The caller hung up before the end.
        ClientAborted = "client-aborted",
        /// A fault stopped the stream.
        Error = "error",
        /// A change or reload took effect.
        Ok = "ok",
        /// A change did not take effect.
        Aborted = "aborted",
        /// A policy reload was refused (the previous policy stays).
        Refused = "refused",
    }
}

/// One audit event. Members that do not apply to an event are omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// RFC 3339, UTC, set when the record is written.
    #[serde(default)]
    pub time: String,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    /// The personal token the subject used, if any (its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The GA4GH visa a visa grant rested on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visa: Option<VisaEvidence>,
    /// A differentially private answer: what it spent and what was left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySpend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Which part of an answer cut in parts this is ("2/4").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A catalogue change: each field with its old and new value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// The number of a proposed change (per dataset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<u64>,
    /// Who proposed a catalogue change (`sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_by: Option<String>,
    /// Who approved it: an admin's `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Who rejected or revoked it: an admin's `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    /// Hash of the previous record ([`GENESIS`] for the first).
    #[serde(default)]
    pub prev: String,
    /// Set by the writer; never serialised into the hashed bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl Record {
    /// A record of `event` with every other member empty.
    pub fn new(event: Event) -> Self {
        Self {
            time: Default::default(),
            event,
            phase: Default::default(),
            request_id: Default::default(),
            subject: Default::default(),
            roles: Default::default(),
            organisation: Default::default(),
            personal_token: Default::default(),
            grant: Default::default(),
            purpose: Default::default(),
            visa: Default::default(),
            privacy: Default::default(),
            dataset: Default::default(),
            version: Default::default(),
            columns: Default::default(),
            filter: Default::default(),
            format: Default::default(),
            part: Default::default(),
            decision: Default::default(),
            reason: Default::default(),
            rows: Default::default(),
            bytes: Default::default(),
            outcome: Default::default(),
            duration_ms: Default::default(),
            changes: Default::default(),
            change: Default::default(),
            proposed_by: Default::default(),
            approved_by: Default::default(),
            rejected_by: Default::default(),
            prev: Default::default(),
            hash: Default::default(),
        }
    }
}

/// The visa behind an access: who vouched for what, about whom, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisaEvidence {
    /// The visa's `iss`.
    pub issuer: String,
    /// The visa's `sub`.
    pub subject: String,
    /// The visa's `value`, as written in the visa.
    pub value: String,
    /// The visa's `asserted` (seconds since the epoch).
    pub asserted: i64,
}

/// One field of a catalogue change, as the trail records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    pub field: String,
    /// `null` when the field had no value (no mask, say).
    pub old: Option<String>,
    pub new: Option<String>,
    /// The change widens access (it needed an admin).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub widens: bool,
}

/// The hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The line for `record` chained after `prev`, and its hash.
fn seal(record: &Record, prev: &str) -> Result<(String, String), serde_json::Error> {
    let mut record = record.clone();
    record.prev = prev.to_owned();
    record.hash.clear();
    let body = serde_json::to_string(&record)?;
    let hash = sha256_hex(body.as_bytes());
    // `body` is a JSON object: replace its closing brace by the hash member.
    let line = format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]);
    Ok((line, hash))
}

/// Splits a written line into the hashed body and the stated hash.
fn unseal(line: &str) -> Option<(String, &str)> {
    const SUFFIX_LEN: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    if line.len() < SUFFIX_LEN || !line.ends_with("\"}") {
        return None;
    }
    let split = line.len() - SUFFIX_LEN;
    let (body, tail) = line.split_at(split);
    let hash = tail.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (format!("{body}}}"), hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_line_unseals_to_its_hashed_body() {
        let record = Record {
            subject: Some("alice".into()),
            ..Record::new(Event::Data)
        };
        let (line, hash) = seal(&record, GENESIS).unwrap();
        let (body, stated) = unseal(line.trim_end()).unwrap();
        assert_eq!(stated, hash);
        assert_eq!(sha256_hex(body.as_bytes()), hash);
        let parsed: Record = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.prev, GENESIS);
        assert_eq!(parsed.subject.as_deref(), Some("alice"));
    }
}
