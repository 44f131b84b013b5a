//! Access requests: the human half of a grant.
//!
//! A signed-in researcher asks for a dataset (project, purpose, columns,
//! duration); the request is kept as one JSON file under
//! `<state>/access-requests/`, replaced atomically at each change of state.
//! An admin decides with `sluice access approve|reject`, which writes the
//! grant into the policy file (see [`grant_block`] and [`add_grant`]): the
//! policy file stays the one source of truth for who may read what, and
//! the server's live reload applies it. This module knows nothing about
//! HTTP.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::DatasetId;

/// Most pending requests one researcher may have at once.
pub const MAX_PENDING_PER_SUBJECT: usize = 20;
/// Most pending requests of everyone at once: past it, admins have a
/// backlog to clear before more can be kept.
pub const MAX_PENDING: usize = 10_000;
/// Longest a requested grant may run.
pub const MAX_DURATION_DAYS: u32 = 730;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_PURPOSE_CHARS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Rejected,
    /// Approved, then withdrawn by an admin: its grant left the policy.
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Revoked => "revoked",
        }
    }
}

/// One request and its decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    pub id: String,
    pub dataset: DatasetId,
    /// Who asked (the `sub` their identity provider vouched for).
    pub subject: String,
    #[serde(default)]
    pub organisation: Option<String>,
    pub project_title: String,
    pub purpose: String,
    /// The columns asked for (never direct identifiers).
    pub columns: Vec<String>,
    pub duration_days: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    pub status: Status,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub decided: Option<OffsetDateTime>,
    #[serde(default)]
    pub decided_by: Option<String>,
    /// Why it was rejected.
    #[serde(default)]
    pub reason: Option<String>,
    /// The grant an approval wrote (its id).
    #[serde(default)]
    pub grant: Option<String>,
}

/// What a researcher fills in.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub dataset: DatasetId,
    pub subject: String,
    pub organisation: Option<String>,
    pub project_title: String,
    pub purpose: String,
    pub columns: Vec<String>,
    pub duration_days: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The form is incomplete or out of bounds; the message says which field.
    #[error("{0}")]
    Invalid(String),
    #[error("you already have {MAX_PENDING_PER_SUBJECT} requests waiting for a decision")]
    TooMany,
    #[error(
        "{MAX_PENDING} requests are waiting for a decision; try again once admins have cleared some"
    )]
    Full,
    #[error("no access request '{0}'")]
    NotFound(String),
    #[error("access request {0} was already {1}")]
    Decided(String, &'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The requests of one server, one file each.
#[derive(Debug, Clone)]
pub struct RequestStore {
    dir: PathBuf,
    /// Counting what waits and keeping a new request happen as one step,
    /// so concurrent requests cannot pass the caps together.
    creating: std::sync::Arc<std::sync::Mutex<()>>,
    /// Every request as last read, with the folder's modification time
    /// then: pages read requests on every view, and the folder changes
    /// only when a request is kept or decided (each a rename into it).
    read: std::sync::Arc<std::sync::Mutex<Option<LastRead>>>,
}

/// The folder's modification time and every request read then.
type LastRead = (std::time::SystemTime, std::sync::Arc<Vec<AccessRequest>>);

/// A folder time this recent may still change without a visible tick on
/// filesystems with coarse timestamps: such a read is not kept.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

impl RequestStore {
    /// The store under `<state>/access-requests`, created if missing.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join("access-requests");
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            creating: Default::default(),
            read: Default::default(),
        })
    }

    /// Checks and keeps a new request, pending.
    pub fn create(&self, new: NewRequest) -> Result<AccessRequest, RequestError> {
        let title = one_line(&new.project_title);
        let purpose = new.purpose.trim().to_owned();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Err(RequestError::Invalid(format!(
                "project title: 1 to {MAX_TITLE_CHARS} characters"
            )));
        }
        if purpose.is_empty() || purpose.chars().count() > MAX_PURPOSE_CHARS {
            return Err(RequestError::Invalid(format!(
                "purpose: 1 to {MAX_PURPOSE_CHARS} characters"
            )));
        }
        if new.columns.is_empty() {
            return Err(RequestError::Invalid("columns: choose at least one".into()));
        }
        for (field, text, multiline) in [
            ("project title", new.project_title.as_str(), true),
            ("purpose", new.purpose.as_str(), true),
            (
                "organisation",
                new.organisation.as_deref().unwrap_or(""),
                false,
            ),
            ("subject", new.subject.as_str(), false),
        ] {
            crate::util::echo::refuse_hidden(field, text, multiline)
                .map_err(RequestError::Invalid)?;
        }
        if !(1..=MAX_DURATION_DAYS).contains(&new.duration_days) {
            return Err(RequestError::Invalid(format!(
                "duration: 1 to {MAX_DURATION_DAYS} days"
            )));
        }
        let _one_at_a_time = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        let all = self.all()?;
        let pending: Vec<&AccessRequest> =
            all.iter().filter(|r| r.status == Status::Pending).collect();
        if pending.iter().filter(|r| r.subject == new.subject).count() >= MAX_PENDING_PER_SUBJECT {
            return Err(RequestError::TooMany);
        }
        if pending.len() >= MAX_PENDING {
            return Err(RequestError::Full);
        }
        let now = OffsetDateTime::now_utc();
        let mut request = AccessRequest {
            id: new_id(now),
            dataset: new.dataset,
            subject: new.subject,
            organisation: new.organisation,
            project_title: title,
            purpose,
            columns: new.columns,
            duration_days: new.duration_days,
            created: now,
            status: Status::Pending,
            decided: None,
            decided_by: None,
            reason: None,
            grant: None,
        };
        // A new id never replaces a request kept under it (another
        // replica's, or the same day's): kept with create-new semantics,
        // another id is drawn on a collision.
        for _ in 0..16 {
            let bytes = serde_json::to_vec_pretty(&request).map_err(io::Error::other)?;
            match crate::util::durable::create_file(
                &self.dir.join(format!("{}.json", request.id)),
                &bytes,
            ) {
                Ok(()) => return Ok(request),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => request.id = new_id(now),
                Err(e) => return Err(e.into()),
            }
        }
        Err(RequestError::Io(io::Error::other(
            "no free request id after 16 draws",
        )))
    }

    /// The request with this id.
    pub fn get(&self, id: &str) -> Result<AccessRequest, RequestError> {
        if !valid_id(id) {
            return Err(RequestError::NotFound(crate::util::echo::cut(id)));
        }
        match fs::read(self.dir.join(format!("{id}.json"))) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| RequestError::Io(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RequestError::NotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Every request, newest first. Files that do not parse are skipped
    /// (and logged): one damaged file must not hide the others.
    pub fn list(&self) -> io::Result<Vec<AccessRequest>> {
        Ok(self.all()?.as_ref().clone())
    }

    /// Every request, read again only when the folder changed.
    fn all(&self) -> io::Result<std::sync::Arc<Vec<AccessRequest>>> {
        let modified = fs::metadata(&self.dir)?.modified()?;
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((when, all)) = read.as_ref()
            && *when == modified
        {
            return Ok(all.clone());
        }
        let all = std::sync::Arc::new(self.read_folder()?);
        let settled = modified.elapsed().is_ok_and(|age| age >= SETTLED);
        *read = settled.then(|| (modified, all.clone()));
        Ok(all)
    }

    fn read_folder(&self) -> io::Result<Vec<AccessRequest>> {
        let mut all = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let is_request = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(valid_id)
                && path.extension().is_some_and(|e| e == "json");
            if !is_request {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(request) => all.push(request),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable access request")
                }
            }
        }
        all.sort_by(|a: &AccessRequest, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        Ok(all)
    }

    /// One subject's requests, for one dataset if named; newest first.
    pub fn list_of(
        &self,
        subject: &str,
        dataset: Option<&DatasetId>,
    ) -> io::Result<Vec<AccessRequest>> {
        Ok(self
            .all()?
            .iter()
            .filter(|r| r.subject == subject && dataset.is_none_or(|d| &r.dataset == d))
            .cloned()
            .collect())
    }

    /// Replaces the request's file, atomically and durably.
    /// Removes a request that was kept but could not be recorded.
    pub fn withdraw(&self, id: &str) -> io::Result<()> {
        if !valid_id(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a request id",
            ));
        }
        fs::remove_file(self.dir.join(format!("{id}.json")))?;
        crate::util::durable::sync_dir(&self.dir)
    }

    fn intent_path(&self) -> PathBuf {
        self.dir.join(".approval-intent.json")
    }

    /// Approves `request` in three durable steps, intent before effect: the
    /// intent (which request, by whom) is written; `put_grant_in_force`
    /// writes the policy file with the request's grant; the request records
    /// the decision and the intent goes. A crash between any two is
    /// finished or undone by [`RequestStore::finish_interrupted`], so an
    /// approval never half-happens. Call under the policy edit lock.
    pub fn approve(
        &self,
        mut request: AccessRequest,
        by: &str,
        put_grant_in_force: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<AccessRequest> {
        let intent = ApprovalIntent {
            id: request.id.clone(),
            by: by.to_owned(),
            decided: OffsetDateTime::now_utc(),
        };
        let bytes = serde_json::to_vec(&intent).map_err(io::Error::other)?;
        crate::util::durable::replace_file(&self.intent_path(), &bytes)?;
        crate::util::crash_point::here("approve:intent");
        if let Err(e) = put_grant_in_force() {
            // Nothing is in force: the intent goes with the attempt.
            let _ = fs::remove_file(self.intent_path());
            return Err(e);
        }
        crate::util::crash_point::here("approve:policy");
        intent.decide(&mut request);
        self.save(&request)?;
        fs::remove_file(self.intent_path())?;
        crate::util::durable::sync_dir(&self.dir)?;
        Ok(request)
    }

    /// Finishes an approval a crash interrupted: if its grant is in the
    /// policy file, the request is marked approved; if not, it stays
    /// pending. Says what it did. Call under the policy edit lock.
    pub fn finish_interrupted(&self, policy_file: &Path) -> io::Result<Option<String>> {
        let intent: ApprovalIntent = match fs::read(self.intent_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let text = fs::read_to_string(policy_file)?;
        let in_force = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("grant").and_then(|g| g.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .any(|g| g.get("id").and_then(|v| v.as_str()) == Some(intent.id.as_str()));
        let done = match self.get(&intent.id) {
            Ok(mut request) if in_force && request.status == Status::Pending => {
                intent.decide(&mut request);
                self.save(&request)?;
                format!(
                    "finished the approval of {} (its grant was written)",
                    intent.id
                )
            }
            _ if in_force => format!("the approval of {} had finished", intent.id),
            _ => format!(
                "undid the approval of {} (its grant was never written); it is pending",
                intent.id
            ),
        };
        fs::remove_file(self.intent_path())?;
        crate::util::durable::sync_dir(&self.dir)?;
        Ok(Some(done))
    }

    pub fn save(&self, request: &AccessRequest) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(request).map_err(io::Error::other)?;
        crate::util::durable::replace_file(&self.dir.join(format!("{}.json", request.id)), &bytes)
    }
}

/// An approval under way (see [`RequestStore::approve`]).
#[derive(Debug, Serialize, Deserialize)]
struct ApprovalIntent {
    id: String,
    by: String,
    #[serde(with = "time::serde::rfc3339")]
    decided: OffsetDateTime,
}

impl ApprovalIntent {
    fn decide(&self, request: &mut AccessRequest) {
        request.status = Status::Approved;
        request.decided = Some(self.decided);
        request.decided_by = Some(self.by.clone());
        request.grant = Some(self.id.clone());
    }
}

/// Notices decisions the CLI writes into request files, so the server,
/// which owns the audit trail, can record them: the folder's modification
/// time says when to look (every replacement renames a file into it), and
/// each request's last status seen says what is new.
pub struct DecisionWatch {
    store: RequestStore,
    seen_mtime: Option<std::time::SystemTime>,
    seen: std::collections::HashMap<String, Status>,
}

impl DecisionWatch {
    /// Starts watching. Decisions already on disk that are newer than
    /// `since` (the last record in the trail) are reported by the first
    /// [`DecisionWatch::new_decisions`]: they were made while the server
    /// was down.
    pub fn new(store: RequestStore, since: Option<OffsetDateTime>) -> Self {
        let mut watch = Self {
            store,
            seen_mtime: None,
            seen: Default::default(),
        };
        if let Ok(all) = watch.store.list() {
            for r in all {
                let recorded =
                    r.decided.is_none() || since.is_none_or(|t| r.decided.is_some_and(|d| d <= t));
                if recorded {
                    watch.seen.insert(r.id.clone(), r.status);
                }
            }
        }
        watch
    }

    /// Requests decided since the last call.
    pub fn new_decisions(&mut self) -> Vec<AccessRequest> {
        let mtime = fs::metadata(&self.store.dir)
            .and_then(|m| m.modified())
            .ok();
        if mtime.is_some() && mtime == self.seen_mtime {
            return Vec::new();
        }
        let Ok(all) = self.store.list() else {
            return Vec::new();
        };
        self.seen_mtime = mtime;
        let mut decided = Vec::new();
        for r in all {
            let before = self.seen.insert(r.id.clone(), r.status);
            if r.status != Status::Pending && before != Some(r.status) {
                decided.push(r);
            }
        }
        decided
    }
}

/// `ar-YYYYMMDD-` and six hex digits: sortable by day, never a path.
fn new_id(now: OffsetDateTime) -> String {
    let date = now.date();
    format!(
        "ar-{:04}{:02}{:02}-{:06x}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        rand::random::<u32>() & 0xff_ffff
    )
}

pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 18
        && id.starts_with("ar-")
        && b[3..11].iter().all(u8::is_ascii_digit)
        && b[11] == b'-'
        && b[12..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Text on one line, control characters out, spaces collapsed.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What an approval grants beyond the columns asked for: how rows may be
/// seen, which rows, how many, until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub mode: crate::domain::Mode,
    pub row_filter: Option<String>,
    pub max_rows: Option<u64>,
    pub expires: time::Date,
}

impl Shape {
    /// Every row, no cap, until the end of the duration asked: what is
    /// left when nothing the requester holds narrows it.
    pub fn as_asked(request: &AccessRequest, today: time::Date) -> Self {
        Self {
            mode: crate::domain::Mode::Rows,
            row_filter: None,
            max_rows: None,
            expires: today + time::Duration::days(i64::from(request.duration_days)),
        }
    }
}

/// The narrowest grant `request` can be given on its dataset: what the
/// requester already holds there (by subject or organisation) is carried,
/// the most restrictive of it: its mode (an aggregate-only organisation
/// stays aggregate-only), its row filter, its smallest row cap; expiry
/// after the duration asked. A requester whose access there is
/// differentially private only, or under row filters that disagree, is
/// refused: the admin says what to give (`--mode`, `--row-filter`).
pub fn narrowest(
    policy: &crate::policy::Policy,
    request: &AccessRequest,
    today: time::Date,
) -> Result<Shape, String> {
    use crate::domain::Mode;
    let held: Vec<&crate::policy::Grant> = policy
        .grants
        .iter()
        .filter(|g| g.dataset == request.dataset)
        .filter(|g| {
            g.subjects.contains(&request.subject)
                || request
                    .organisation
                    .as_ref()
                    .is_some_and(|o| g.organisations.contains(o))
        })
        .collect();
    let rank = |m: Mode| match m {
        Mode::Rows => 0,
        Mode::Aggregate => 1,
        Mode::Dp => 2,
    };
    let mode = held
        .iter()
        .map(|g| g.mode)
        .max_by_key(|m| rank(*m))
        .unwrap_or_default();
    let names = |gs: &[&crate::policy::Grant]| {
        gs.iter()
            .map(|g| format!("'{}'", g.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if mode == Mode::Dp {
        return Err(format!(
            "the requester holds differentially private access only to {} ({}); say what to give with --mode aggregate or --mode rows, or write a dp grant with its budget by hand",
            request.dataset,
            names(&held)
        ));
    }
    let mut filters: Vec<&String> = held.iter().filter_map(|g| g.row_filter.as_ref()).collect();
    filters.dedup();
    if filters.len() > 1 {
        return Err(format!(
            "the requester's grants on {} ({}) have different row filters; say which rows with --row-filter",
            request.dataset,
            names(&held)
        ));
    }
    Ok(Shape {
        mode,
        row_filter: filters.first().map(|f| (*f).clone()),
        max_rows: held.iter().filter_map(|g| g.max_rows).min(),
        ..Shape::as_asked(request, today)
    })
}

/// The `[[grant]]` block an approval adds to the policy file, with a
/// comment citing the request: the columns asked for, shaped by `shape`.
/// Every value is written as a TOML string by the toml crate, so nothing a
/// researcher typed can end the string or add keys.
pub fn grant_block(
    request: &AccessRequest,
    approved_by: &str,
    today: time::Date,
    shape: &Shape,
) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let columns: Vec<String> = request.columns.iter().map(|c| quote(c)).collect();
    let purpose = format!(
        "{} ({})",
        one_line(&request.project_title),
        one_line(&request.purpose)
    );
    let mut block = format!(
        "\n# Access request {id}: asked by {who} on {asked}, approved by {by} on {today}.\n\
         [[grant]]\n\
         id = {grant_id}\n\
         subjects = [{subject}]\n\
         dataset = {dataset}\n\
         purpose = {purpose}\n\
         columns = [{columns}]\n\
         expires = {expires}\n",
        id = request.id,
        who = one_line(&request.subject),
        asked = request.created.date(),
        by = one_line(approved_by),
        grant_id = quote(&request.id),
        subject = quote(&request.subject),
        dataset = quote(request.dataset.as_str()),
        purpose = quote(&purpose),
        columns = columns.join(", "),
        expires = shape.expires,
    );
    match shape.mode {
        crate::domain::Mode::Rows => {}
        crate::domain::Mode::Aggregate => block.push_str("mode = \"aggregate\"\n"),
        crate::domain::Mode::Dp => block.push_str("mode = \"dp\"\n"),
    }
    if let Some(filter) = &shape.row_filter {
        block.push_str(&format!("row_filter = {}\n", quote(filter)));
    }
    if let Some(max) = shape.max_rows {
        block.push_str(&format!("max_rows = {max}\n"));
    }
    block
}

/// The policy text without grant `id`'s `[[grant]]` table (and the comment
/// line an approval wrote above it), or why it cannot be taken out.
/// Checked by parsing: every other grant must come out exactly as before,
/// so hand-written grants and comments are left alone.
pub fn remove_grant(policy_text: &str, id: &str, file: &str) -> Result<String, String> {
    let before = crate::policy::Policy::parse(policy_text, file).map_err(|e| e.to_string())?;
    if !before.grants.iter().any(|g| g.id == id) {
        return Err(format!("{file} has no grant '{id}'"));
    }
    let lines: Vec<&str> = policy_text.split_inclusive('\n').collect();
    let is_header = |line: &str| line.trim_start().starts_with('[');
    let names_it = |line: &str| {
        line.split_once('=').is_some_and(|(key, value)| {
            key.trim() == "id" && value.trim().trim_matches(['"', '\'']) == id
        })
    };
    // The table: from its `[[grant]]` header to the next header.
    let id_line = lines
        .iter()
        .position(|l| names_it(l))
        .ok_or_else(|| format!("grant '{id}' is not written as id = \"{id}\""))?;
    let start = (0..id_line)
        .rev()
        .find(|&i| is_header(lines[i]))
        .ok_or_else(|| format!("grant '{id}' has no [[grant]] header"))?;
    let mut end = (id_line + 1..lines.len())
        .find(|&i| is_header(lines[i]))
        .unwrap_or(lines.len());
    // Comments and blank lines right above the next table are its own.
    while end > id_line + 1 && {
        let line = lines[end - 1].trim_start();
        line.is_empty() || line.starts_with('#')
    } {
        end -= 1;
    }
    let mut start = start;
    if start > 0 && lines[start - 1].starts_with(&format!("# Access request {id}:")) {
        start -= 1;
    }
    let text: String = lines[..start].concat() + &lines[end..].concat();
    let after = crate::policy::Policy::parse(&text, file).map_err(|e| e.to_string())?;
    let expected: Vec<_> = before.grants.iter().filter(|g| g.id != id).collect();
    if after.grants.iter().collect::<Vec<_>>() != expected {
        return Err(format!(
            "grant '{id}' could not be taken out of {file} alone; remove it by hand"
        ));
    }
    Ok(text)
}

/// The policy text with `block` added at the end.
pub fn add_grant(policy_text: &str, block: &str) -> String {
    let mut text = policy_text.to_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(block);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_request(subject: &str) -> NewRequest {
        NewRequest {
            dataset: DatasetId::parse("hospital-admissions").unwrap(),
            subject: subject.into(),
            organisation: None,
            project_title: "Stay\nlengths".into(),
            purpose: "Why \"stays\" vary".into(),
            columns: vec!["region".into(), "length_of_stay".into()],
            duration_days: 90,
        }
    }

    #[test]
    fn a_request_is_kept_and_read_back_and_ids_are_never_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = RequestStore::open(dir.path()).unwrap();
        let r = store.create(new_request("carol@uni.example")).unwrap();
        assert!(valid_id(&r.id), "{}", r.id);
        assert_eq!(r.project_title, "Stay lengths");
        assert_eq!(store.get(&r.id).unwrap(), r);
        assert_eq!(store.list().unwrap(), vec![r]);
        assert!(matches!(
            store.get("../../etc/passwd"),
            Err(RequestError::NotFound(_))
        ));
        assert!(!valid_id("ar-20261129-ABCDEF"));
    }

    #[test]
    fn bad_forms_and_too_many_pending_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RequestStore::open(dir.path()).unwrap();
        let mut empty = new_request("c");
        empty.project_title = " ".into();
        assert!(matches!(store.create(empty), Err(RequestError::Invalid(_))));
        let mut long = new_request("c");
        long.duration_days = MAX_DURATION_DAYS + 1;
        assert!(matches!(store.create(long), Err(RequestError::Invalid(_))));
        for _ in 0..MAX_PENDING_PER_SUBJECT {
            store.create(new_request("c")).unwrap();
        }
        assert!(matches!(
            store.create(new_request("c")),
            Err(RequestError::TooMany)
        ));
        store.create(new_request("someone-else")).unwrap();
    }

    #[test]
    fn decisions_are_noticed_once_including_those_made_while_away() {
        let dir = tempfile::tempdir().unwrap();
        let store = RequestStore::open(dir.path()).unwrap();
        let mut early = store.create(new_request("a")).unwrap();
        early.status = Status::Rejected;
        early.decided = Some(OffsetDateTime::now_utc());
        store.save(&early).unwrap();
        let mut watch = DecisionWatch::new(store.clone(), Some(OffsetDateTime::UNIX_EPOCH));
        assert_eq!(
            watch.new_decisions(),
            vec![early.clone()],
            "decided while away"
        );
        assert!(watch.new_decisions().is_empty());
        let mut later = store.create(new_request("b")).unwrap();
        assert!(
            watch.new_decisions().is_empty(),
            "pending is not a decision"
        );
        later.status = Status::Approved;
        later.decided = Some(OffsetDateTime::now_utc());
        // A folder's mtime has a coarse clock on some filesystems.
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.save(&later).unwrap();
        assert_eq!(watch.new_decisions(), vec![later]);
        let mut fresh = DecisionWatch::new(store, Some(OffsetDateTime::now_utc()));
        assert!(fresh.new_decisions().is_empty(), "already in the trail");
    }

    #[test]
    fn the_grant_block_is_valid_toml_whatever_the_researcher_typed() {
        let dir = tempfile::tempdir().unwrap();
        let store = RequestStore::open(dir.path()).unwrap();
        let mut new = new_request("carol@uni.example");
        new.purpose = "x\"\n[[grant]]\nid = \"evil\"\nsubjects = [\"*\"]".into();
        let r = store.create(new).unwrap();
        let today = time::macros::date!(2026 - 11 - 29);
        let shape = narrowest(&crate::policy::Policy::default(), &r, today).unwrap();
        let text = add_grant(
            "[disclosure]\nmin_count = 10",
            &grant_block(&r, "ada", today, &shape),
        );
        let value: toml::Table = toml::from_str(&text).unwrap();
        let grants = value["grant"].as_array().unwrap();
        assert_eq!(grants.len(), 1, "{text}");
        let grant = grants[0].as_table().unwrap();
        assert_eq!(grant["id"].as_str(), Some(r.id.as_str()));
        assert_eq!(grant["subjects"].as_array().unwrap().len(), 1);
        assert_eq!(grant["expires"].to_string(), "2027-02-27");
        assert_eq!(value["disclosure"]["min_count"].as_integer(), Some(10));
        assert!(grant.get("mode").is_none() && grant.get("row_filter").is_none());
    }

    #[test]
    fn an_approval_carries_what_the_requester_holds_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = RequestStore::open(dir.path()).unwrap();
        let today = time::macros::date!(2026 - 11 - 29);
        let policy = |text: &str| crate::policy::Policy::parse(text, "p").unwrap();
        let grant = |id: &str, who: &str, extra: &str| {
            format!(
                "[[grant]]\nid = \"{id}\"\n{who}\ndataset = \"hospital-admissions\"\npurpose = \"p\"\n{extra}\n"
            )
        };
        let nora = store.create(new_request("nora@nhs.example")).unwrap();
        let north = policy(&grant(
            "north",
            "subjects = [\"nora@nhs.example\"]",
            "row_filter = \"region = 'north'\"\nmax_rows = 500",
        ));
        let shape = narrowest(&north, &nora, today).unwrap();
        assert_eq!(shape.row_filter.as_deref(), Some("region = 'north'"));
        assert_eq!(shape.max_rows, Some(500));
        assert_eq!(shape.mode, crate::domain::Mode::Rows);

        let mut agency = new_request("stats@agency.example");
        agency.organisation = Some("Agency".into());
        let agency = store.create(agency).unwrap();
        let aggregate = policy(&grant(
            "agency",
            "organisations = [\"Agency\"]",
            "mode = \"aggregate\"",
        ));
        let shape = narrowest(&aggregate, &agency, today).unwrap();
        assert_eq!(shape.mode, crate::domain::Mode::Aggregate);
        let text = grant_block(&agency, "ada", today, &shape);
        let parsed = policy(&text);
        assert_eq!(parsed.grants[0].mode, crate::domain::Mode::Aggregate);

        let dp = policy(&grant(
            "dp",
            "organisations = [\"Agency\"]",
            "mode = \"dp\"\nepsilon = 1.0\nepsilon_per_query = 0.1",
        ));
        assert!(
            narrowest(&dp, &agency, today)
                .unwrap_err()
                .contains("--mode")
        );
    }
}
