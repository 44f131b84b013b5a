//! What a manifest edit changes, field by field, and which of those changes
//! widen access: lowering a classification, weakening a quasi-identifier's
//! mask, opening a tier, switching tier access from aggregates to rows,
//! letting aggregate-only callers group by an identifying column or ask
//! for a column's minimum and maximum. A steward may make the others at
//! once; widening ones wait in the manifest as a [`ProposedChange`] until
//! an admin approves them.
//!
//! Pure: manifests in, field changes out. Who may do what is decided by
//! the HTTP layer; storing the proposal is an ordinary manifest commit, so
//! it is as durable as the manifest itself on either catalogue backend.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::manifest::Manifest;
use crate::domain::{Classification, Mask, Mode, Tier};
use crate::util::echo::cut_to;

/// Text fields (descriptions, titles) are recorded this far in a change.
const TEXT_BYTES: usize = 200;
/// An admin's reason is kept this long.
pub const REASON_BYTES: usize = 1024;
/// Proposals waiting for an admin, per dataset.
pub const MAX_PENDING: usize = 20;
/// Decided proposals kept in the manifest (the audit trail keeps them all).
const DECIDED_KEPT: usize = 20;

/// One field's change: `columns.nhs_number.classification`,
/// `direct-identifier` → `none`. A value that is absent (no mask, no
/// access request) is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    pub field: String,
    #[serde(default)]
    pub old: Option<String>,
    #[serde(default)]
    pub new: Option<String>,
    /// Whether the change opens access (needs an admin).
    #[serde(default)]
    pub widens: bool,
}

/// The pending changes of `manifests`, oldest first, each as JSON with its
/// dataset's id in `dataset`: what `GET /v1/changes`, `/admin` and `sluice
/// datasets changes` without an id list.
pub fn pending_across<'a>(
    manifests: impl IntoIterator<Item = &'a Manifest>,
) -> Vec<serde_json::Value> {
    let mut found: Vec<(&OffsetDateTime, serde_json::Value)> = manifests
        .into_iter()
        .flat_map(|m| {
            m.changes
                .iter()
                .filter(|c| c.status == ChangeStatus::Pending)
                .map(move |c| {
                    let mut entry = serde_json::json!(c);
                    entry["dataset"] = serde_json::json!(m.id);
                    (&c.proposed_at, entry)
                })
        })
        .collect();
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, entry)| entry).collect()
}

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeStatus {
    Pending,
    Approved,
    Rejected,
}

/// A steward's widening change, kept in the manifest until an admin
/// decides. Numbered per dataset; numbers are never reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposedChange {
    pub number: u64,
    pub status: ChangeStatus,
    /// The proposer's `sub`.
    pub proposed_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub proposed_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub decided_at: Option<OffsetDateTime>,
    pub fields: Vec<FieldChange>,
    /// Why a new version waits (its data looks to hold what a more
    /// protected column held), in words; empty for metadata edits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    /// Why it was decided as it was: an admin's reason, or that a later
    /// upload replaced the version before anyone decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ProposedChange {
    /// The version this change publishes, if it is a held upload's.
    pub fn publishes(&self) -> Option<u64> {
        self.fields
            .iter()
            .find(|f| f.field == VERSION)
            .and_then(|f| f.new.as_deref()?.parse().ok())
    }
}

/// The field a held upload's change sets: the published version.
const VERSION: &str = "version";

/// Why a proposal could not be decided. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("dataset has no change {0}")]
    NotFound(u64),
    #[error("change {0} was already {1}")]
    Decided(u64, &'static str),
    /// The manifest moved on since the proposal: approving it now would
    /// apply something nobody proposed.
    #[error("change {number} no longer applies: {problem}")]
    Stale { number: u64, problem: String },
}

/// An edit split in two: what may apply now and what waits for an admin.
#[derive(Debug, Clone)]
pub struct Split {
    /// The current manifest with every non-widening change applied.
    pub applied: Manifest,
    /// The changes from `applied` to the requested manifest.
    pub pending: Vec<FieldChange>,
}

/// Every field that differs between `old` and `new`, in manifest order,
/// each marked whether it widens access.
pub fn classify(old: &Manifest, new: &Manifest) -> Vec<FieldChange> {
    let before = fields(old);
    let after = fields(new);
    let mut changes = Vec::new();
    for (field, new_value) in &after {
        let old_value = lookup(&before, field);
        if old_value != *new_value {
            changes.push(FieldChange {
                field: field.clone(),
                widens: widens(field, old, new, old_value.as_deref(), new_value.as_deref()),
                old: old_value.map(|v| shown(field, v)),
                new: new_value.as_ref().map(|v| shown(field, v.clone())),
            });
        }
    }
    changes
}

/// Splits the edit from `old` to `requested` into what a steward may apply
/// now and what needs an admin. If applying only the harmless part would
/// leave an invalid manifest (a mask on a column whose reclassification
/// waits), every access field waits, and the descriptive ones apply.
pub fn split(old: &Manifest, requested: &Manifest) -> Split {
    let mut applied = requested.clone();
    for change in classify(old, requested).iter().filter(|c| c.widens) {
        let previous = value(old, &change.field);
        // Only access fields widen, and those are all settable.
        let _ = set(&mut applied, &change.field, previous.as_deref());
    }
    if applied.check().is_err() {
        applied = requested.clone();
        for (field, _) in fields(old).iter().filter(|(f, _)| is_access_field(f)) {
            let _ = set(&mut applied, field, value(old, field).as_deref());
        }
    }
    let pending = classify(&applied, requested);
    Split { applied, pending }
}

impl Manifest {
    /// Records `fields` as a pending proposal by `by`; its number.
    pub fn propose(
        &mut self,
        by: &str,
        at: OffsetDateTime,
        fields: Vec<FieldChange>,
    ) -> Result<u64, String> {
        let waiting = self
            .changes
            .iter()
            .filter(|c| c.status == ChangeStatus::Pending)
            .count();
        if waiting >= MAX_PENDING {
            return Err(format!(
                "{waiting} changes already wait for an admin; ask one to decide them first"
            ));
        }
        self.last_change += 1;
        self.changes.push(ProposedChange {
            number: self.last_change,
            status: ChangeStatus::Pending,
            proposed_by: by.to_owned(),
            proposed_at: at,
            decided_by: None,
            decided_at: None,
            fields,
            findings: Vec::new(),
            reason: None,
        });
        Ok(self.last_change)
    }

    /// Records that version `number`, uploaded by `by`, waits for an admin
    /// because of `findings`: approving it publishes the version.
    pub fn propose_version(
        &mut self,
        number: u64,
        findings: Vec<String>,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<u64, String> {
        let fields = vec![FieldChange {
            field: VERSION.into(),
            old: Some(self.version.to_string()),
            new: Some(number.to_string()),
            widens: true,
        }];
        let proposed = self.propose(by, at, fields)?;
        if let Some(change) = self.changes.iter_mut().find(|c| c.number == proposed) {
            change.findings = findings;
        }
        Ok(proposed)
    }

    /// Records why change `number` was decided as it was (an admin's
    /// reason for a rejection, shown to the steward).
    pub fn note_reason(&mut self, number: u64, reason: &str) {
        if let Some(change) = self.changes.iter_mut().find(|c| c.number == number) {
            change.reason = Some(cut_to(reason, REASON_BYTES).to_string());
        }
    }

    /// The pending change that would publish version `number`, if one does.
    pub fn change_holding(&self, number: u64) -> Option<&ProposedChange> {
        self.changes
            .iter()
            .find(|c| c.status == ChangeStatus::Pending && c.publishes() == Some(number))
    }

    /// Closes the pending change for held version `replaced`, which the
    /// upload of version `by_version` replaced before anyone decided.
    pub fn supersede(&mut self, replaced: u64, by_version: u64, by: &str, at: OffsetDateTime) {
        for change in &mut self.changes {
            if change.status == ChangeStatus::Pending && change.publishes() == Some(replaced) {
                change.status = ChangeStatus::Rejected;
                change.decided_by = Some(by.to_owned());
                change.decided_at = Some(at);
                change.reason = Some(format!(
                    "version {replaced} was replaced by the upload of version {by_version}"
                ));
            }
        }
    }

    pub fn change(&self, number: u64) -> Option<&ProposedChange> {
        self.changes.iter().find(|c| c.number == number)
    }

    /// Approves (applies, after checking each field still has the value it
    /// had when proposed) or rejects pending change `number`.
    pub fn decide(
        &self,
        number: u64,
        approve: bool,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<Manifest, DecideError> {
        let proposal = self.change(number).ok_or(DecideError::NotFound(number))?;
        match proposal.status {
            ChangeStatus::Pending => {}
            ChangeStatus::Approved => return Err(DecideError::Decided(number, "approved")),
            ChangeStatus::Rejected => return Err(DecideError::Decided(number, "rejected")),
        }
        let mut next = self.clone();
        if !approve && proposal.publishes().is_some_and(|n| n == next.in_review) {
            // The held version will not be served: its files go with the
            // next clean-up, as an upload that never committed.
            next.in_review = 0;
        }
        if approve {
            let stale = |problem: String| DecideError::Stale { number, problem };
            for change in &proposal.fields {
                let now = value(&next, &change.field);
                if now != change.old {
                    return Err(stale(format!(
                        "'{}' is now {}, not {} as when it was proposed",
                        change.field,
                        now.as_deref().unwrap_or("unset"),
                        change.old.as_deref().unwrap_or("unset")
                    )));
                }
                set(&mut next, &change.field, change.new.as_deref()).map_err(stale)?;
            }
            next.check().map_err(stale)?;
        }
        if let Some(entry) = next.changes.iter_mut().find(|c| c.number == number) {
            entry.status = if approve {
                ChangeStatus::Approved
            } else {
                ChangeStatus::Rejected
            };
            entry.decided_by = Some(by.to_owned());
            entry.decided_at = Some(at);
        }
        // Keep the manifest small: only the latest decided proposals stay.
        let decided = next
            .changes
            .iter()
            .filter(|c| c.status != ChangeStatus::Pending)
            .count();
        let mut drop = decided.saturating_sub(DECIDED_KEPT);
        next.changes.retain(|c| {
            if drop > 0 && c.status != ChangeStatus::Pending {
                drop -= 1;
                false
            } else {
                true
            }
        });
        Ok(next)
    }
}

/// The fields a classification decides access by (the rest describe).
fn is_access_field(field: &str) -> bool {
    matches!(field, "tier" | "mode")
        || [
            ".classification",
            ".mask",
            ".groupable",
            ".order_statistics",
        ]
        .iter()
        .any(|suffix| field.starts_with("columns.") && field.ends_with(suffix))
}

fn lookup(fields: &[(String, Option<String>)], field: &str) -> Option<String> {
    fields
        .iter()
        .find(|(f, _)| f == field)
        .and_then(|(_, v)| v.clone())
}

fn value(m: &Manifest, field: &str) -> Option<String> {
    lookup(&fields(m), field)
}

/// Descriptive text is recorded cut; access values are short.
fn shown(field: &str, value: String) -> String {
    if is_access_field(field) {
        value
    } else {
        cut_to(&value, TEXT_BYTES)
    }
}

/// A serde enum's name (`direct-identifier`, `aggregate`).
fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(field: &str, value: Option<&str>) -> Result<T, String> {
    let text = value.ok_or_else(|| format!("'{field}' cannot be unset"))?;
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("'{field}' cannot be {}", crate::util::echo::cut(text)))
}

/// Every field of a manifest as text, by path.
fn fields(m: &Manifest) -> Vec<(String, Option<String>)> {
    let text = |s: &str| Some(s.to_owned());
    let mut out = vec![
        (VERSION.to_owned(), Some(m.version.to_string())),
        ("title".to_owned(), text(&m.title)),
        ("description".to_owned(), text(&m.description)),
        ("sector".to_owned(), text(&m.sector)),
        ("publisher".to_owned(), text(&m.publisher)),
        ("license".to_owned(), text(&m.license)),
        ("keywords".to_owned(), Some(m.keywords.join(", "))),
        ("tier".to_owned(), text(m.tier.as_str())),
        ("mode".to_owned(), Some(name(&m.mode))),
        ("access_request".to_owned(), m.access_request.clone()),
        (
            "sort_by".to_owned(),
            Some(
                m.sort_by
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ),
    ];
    for c in &m.columns {
        let path = |what: &str| format!("columns.{}.{what}", c.name);
        out.push((path("description"), text(&c.description)));
        out.push((path("classification"), Some(name(&c.classification))));
        out.push((path("mask"), c.mask.map(|mask| mask.to_string())));
        out.push((path("key"), Some(c.key.to_string())));
        out.push((path("type"), c.declared_type.map(|t| name(&t))));
        out.push((path("groupable"), Some(c.groupable.to_string())));
        out.push((
            path("order_statistics"),
            Some(c.order_statistics.to_string()),
        ));
        // Differential privacy holds whatever these are (they shape the
        // noise, not what is revealed): they describe, and apply at once.
        out.push((
            path("bounds"),
            c.bounds.map(|[low, high]| format!("[{low}, {high}]")),
        ));
        out.push((
            path("categories"),
            Some(c.categories.join(", ")).filter(|s| !s.is_empty()),
        ));
        out.push((
            path("bins"),
            c.bins.as_ref().and_then(|b| serde_json::to_string(b).ok()),
        ));
    }
    out
}

/// Sets an access field from its text form.
fn set(m: &mut Manifest, field: &str, value: Option<&str>) -> Result<(), String> {
    match field {
        VERSION => {
            let number: u64 = value
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("'{field}' must be a version number"))?;
            if m.in_review != number {
                return Err(format!("version {number} is no longer held for review"));
            }
            m.version = std::mem::take(&mut m.in_review);
        }
        "tier" => m.tier = parse::<Tier>(field, value)?,
        "mode" => m.mode = parse::<Mode>(field, value)?,
        _ => {
            let (column, what) = field
                .strip_prefix("columns.")
                .and_then(|rest| rest.rsplit_once('.'))
                .ok_or_else(|| format!("'{field}' cannot be changed by a proposal"))?;
            let spec = m
                .columns
                .iter_mut()
                .find(|c| c.name.as_str() == column)
                .ok_or_else(|| format!("column '{column}' no longer exists"))?;
            match what {
                "classification" => spec.classification = parse(field, value)?,
                "mask" => {
                    spec.mask = value
                        .map(str::parse::<Mask>)
                        .transpose()
                        .map_err(|e| format!("'{field}': {e}"))?
                }
                "groupable" => spec.groupable = parse_bool(field, value)?,
                "order_statistics" => spec.order_statistics = parse_bool(field, value)?,
                _ => return Err(format!("'{field}' cannot be changed by a proposal")),
            }
        }
    }
    Ok(())
}

fn parse_bool(field: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(format!("'{field}' must be true or false")),
    }
}

/// How closed a tier is: higher is more closed.
fn tier_rank(t: Tier) -> u8 {
    match t {
        Tier::Open => 0,
        Tier::Registered => 1,
        Tier::Controlled => 2,
    }
}

/// How protected a classification is: higher is more protected.
pub(crate) fn class_rank(c: Classification) -> u8 {
    match c {
        Classification::None => 0,
        Classification::QuasiIdentifier => 1,
        Classification::DirectIdentifier => 2,
    }
}

/// Whether serving through `new` instead of `old` can reveal more. Only
/// orders we can prove count as narrowing; anything else widens. A new mask
/// narrows only if it is a function of the old one (each new bucket a union
/// of old ones): callers keep what they read before, so two masks that do
/// not nest (bucket(7) then bucket(36)) together tell more than either.
pub(crate) fn mask_widens(old: Mask, new: Mask) -> bool {
    match (old, new) {
        _ if old == new => false,
        (_, Mask::Redact) => false,
        (Mask::Bucket(n), Mask::Bucket(m)) => !(m > n && m % n == 0),
        (Mask::Prefix(n), Mask::Prefix(m)) => m > n,
        (Mask::Month, Mask::Year) => false,
        _ => true,
    }
}

fn widens(
    field: &str,
    old: &Manifest,
    new: &Manifest,
    old_value: Option<&str>,
    new_value: Option<&str>,
) -> bool {
    match field {
        "tier" => tier_rank(new.tier) < tier_rank(old.tier),
        "mode" => old.mode == Mode::Aggregate && new.mode == Mode::Rows,
        _ => {
            let Some((column, what)) = field
                .strip_prefix("columns.")
                .and_then(|rest| rest.rsplit_once('.'))
            else {
                return false;
            };
            let (Some(before), Some(after)) = (old.column(column), new.column(column)) else {
                // A column appearing or vanishing is not an edit's to make;
                // if it happens, an admin looks at it.
                return is_access_field(field);
            };
            let turned_on = old_value == Some("false") && new_value == Some("true");
            match what {
                "classification" => {
                    class_rank(after.classification) < class_rank(before.classification)
                }
                "mask" if before.classification != after.classification => {
                    // The mask follows the classification's direction.
                    class_rank(after.classification) < class_rank(before.classification)
                }
                "mask" => match (before.default_mask(), after.default_mask()) {
                    (Some(a), Some(b)) => mask_widens(a, b),
                    // Not a quasi-identifier: a mask means nothing there.
                    _ => false,
                },
                "groupable" => {
                    turned_on
                        && !(before.classification == Classification::None
                            && after.classification == Classification::None)
                }
                "order_statistics" => turned_on,
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::edit::ManifestPatch;

    const MANIFEST: &str = r#"
id = "h"
title = "H"
description = "d"
sector = "health"
publisher = "P"
license = "OGL"
tier = "controlled"
mode = "aggregate"
version = 1
[[columns]]
name = "nhs_number"
description = "id"
classification = "direct-identifier"
[[columns]]
name = "age"
description = "age"
classification = "quasi-identifier"
mask = "bucket(5)"
[[columns]]
name = "postcode"
description = "pc"
classification = "quasi-identifier"
mask = "prefix(3)"
[[columns]]
name = "admitted"
description = "date"
classification = "quasi-identifier"
mask = "month"
[[columns]]
name = "patient"
description = "pseudonym"
classification = "quasi-identifier"
mask = "hash"
[[columns]]
name = "region"
description = "region"
[[columns]]
name = "stay"
description = "days"
"#;

    fn base() -> Manifest {
        Manifest::parse(MANIFEST).unwrap()
    }

    fn edit(json: &str) -> Vec<FieldChange> {
        let m = base();
        let patch: ManifestPatch = serde_json::from_str(json).unwrap();
        classify(&m, &patch.apply(&m).unwrap())
    }

    /// The fields a patch widens, and the ones it changes without widening.
    fn verdict(json: &str) -> (Vec<String>, Vec<String>) {
        let (wide, narrow): (Vec<_>, Vec<_>) = edit(json).into_iter().partition(|c| c.widens);
        (
            wide.into_iter().map(|c| c.field).collect(),
            narrow.into_iter().map(|c| c.field).collect(),
        )
    }

    fn widening(json: &str) -> Vec<String> {
        let (wide, narrow) = verdict(json);
        assert!(narrow.is_empty(), "{json}: unexpected narrowing {narrow:?}");
        wide
    }

    fn narrowing(json: &str) -> Vec<String> {
        let (wide, narrow) = verdict(json);
        assert!(wide.is_empty(), "{json}: unexpected widening {wide:?}");
        narrow
    }

    #[test]
    fn lowering_a_classification_widens() {
        assert_eq!(
            widening(r#"{"columns":[{"name":"nhs_number","classification":"none"}]}"#),
            ["columns.nhs_number.classification"]
        );
        assert_eq!(
            widening(r#"{"columns":[{"name":"nhs_number","classification":"quasi-identifier"}]}"#),
            ["columns.nhs_number.classification"]
        );
        // The mask goes with the classification, and is pending with it.
        assert_eq!(
            widening(r#"{"columns":[{"name":"age","classification":"none"}]}"#),
            ["columns.age.classification", "columns.age.mask"]
        );
    }

    #[test]
    fn raising_a_classification_narrows() {
        assert_eq!(
            narrowing(r#"{"columns":[{"name":"region","classification":"quasi-identifier"}]}"#),
            ["columns.region.classification"]
        );
        assert_eq!(
            narrowing(
                r#"{"columns":[{"name":"stay","classification":"quasi-identifier","mask":"bucket(10)"}]}"#
            ),
            ["columns.stay.classification", "columns.stay.mask"]
        );
        assert_eq!(
            narrowing(r#"{"columns":[{"name":"age","classification":"direct-identifier"}]}"#),
            ["columns.age.classification", "columns.age.mask"]
        );
    }

    #[test]
    fn weakening_a_mask_widens() {
        for patch in [
            r#"{"columns":[{"name":"age","mask":"bucket(2)"}]}"#,
            r#"{"columns":[{"name":"postcode","mask":"prefix(4)"}]}"#,
            r#"{"columns":[{"name":"admitted","mask":"hash"}]}"#,
            r#"{"columns":[{"name":"patient","mask":"prefix(3)"}]}"#,
            r#"{"columns":[{"name":"age","mask":"hash"}]}"#,
        ] {
            assert_eq!(widening(patch).len(), 1, "{patch}");
        }
        // From redact (a quasi-identifier without a mask) to anything else.
        let mut m = base();
        m.columns[2].mask = None;
        let patch: ManifestPatch =
            serde_json::from_str(r#"{"columns":[{"name":"postcode","mask":"prefix(1)"}]}"#)
                .unwrap();
        let changes = classify(&m, &patch.apply(&m).unwrap());
        assert!(changes[0].widens);
        assert_eq!(changes[0].old, None);
        // Year to month is finer.
        let mut m = base();
        m.columns[3].mask = Some(Mask::Year);
        let patch: ManifestPatch =
            serde_json::from_str(r#"{"columns":[{"name":"admitted","mask":"month"}]}"#).unwrap();
        assert!(classify(&m, &patch.apply(&m).unwrap())[0].widens);
    }

    #[test]
    fn strengthening_a_mask_narrows() {
        for patch in [
            r#"{"columns":[{"name":"age","mask":"bucket(10)"}]}"#,
            r#"{"columns":[{"name":"postcode","mask":"prefix(2)"}]}"#,
            r#"{"columns":[{"name":"admitted","mask":"year"}]}"#,
            r#"{"columns":[{"name":"patient","mask":"redact"}]}"#,
            // No mask on a quasi-identifier is redaction.
            r#"{"columns":[{"name":"age","mask":null}]}"#,
        ] {
            assert_eq!(narrowing(patch).len(), 1, "{patch}");
        }
    }

    #[test]
    fn buckets_that_do_not_nest_widen() {
        // age is bucket(5): bucket(7) or bucket(36) cut old buckets in two,
        // and together with what callers already read they tell more.
        for m in [7, 6, 36, 4] {
            let patch = format!(r#"{{"columns":[{{"name":"age","mask":"bucket({m})"}}]}}"#);
            assert_eq!(widening(&patch), ["columns.age.mask"], "bucket({m})");
        }
        assert_eq!(
            narrowing(r#"{"columns":[{"name":"age","mask":"bucket(15)"}]}"#).len(),
            1
        );
    }

    #[test]
    fn opening_a_tier_or_rows_widens_and_closing_narrows() {
        assert_eq!(widening(r#"{"tier":"open"}"#), ["tier"]);
        assert_eq!(widening(r#"{"tier":"registered"}"#), ["tier"]);
        assert_eq!(widening(r#"{"mode":"rows"}"#), ["mode"]);
        let mut m = base();
        m.tier = Tier::Open;
        m.mode = Mode::Rows;
        let patch: ManifestPatch =
            serde_json::from_str(r#"{"tier":"registered","mode":"aggregate"}"#).unwrap();
        let changes = classify(&m, &patch.apply(&m).unwrap());
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| !c.widens));
    }

    #[test]
    fn grouping_and_order_statistics() {
        assert_eq!(
            widening(r#"{"columns":[{"name":"age","groupable":true}]}"#),
            ["columns.age.groupable"]
        );
        assert_eq!(
            widening(r#"{"columns":[{"name":"stay","order_statistics":true}]}"#),
            ["columns.stay.order_statistics"]
        );
        // A plain column the steward lets aggregates group by.
        assert_eq!(
            narrowing(r#"{"columns":[{"name":"region","groupable":true}]}"#),
            ["columns.region.groupable"]
        );
    }

    #[test]
    fn descriptions_keys_and_sorting_are_neutral() {
        let changes = narrowing(
            r#"{"title":"T","description":"new","keywords":["a","b"],"sort_by":["stay"],
                "access_request":"ask","columns":[{"name":"stay","description":"nights","key":true}]}"#,
        );
        assert_eq!(
            changes,
            [
                "title",
                "description",
                "keywords",
                "access_request",
                "sort_by",
                "columns.stay.description",
                "columns.stay.key"
            ]
        );
    }

    #[test]
    fn a_split_applies_the_harmless_part_and_keeps_the_rest_pending() {
        let m = base();
        let patch: ManifestPatch = serde_json::from_str(
            r#"{"tier":"open","description":"new","columns":[{"name":"nhs_number","classification":"none"},
                {"name":"region","classification":"quasi-identifier"}]}"#,
        )
        .unwrap();
        let split = split(&m, &patch.apply(&m).unwrap());
        assert_eq!(split.applied.tier, Tier::Controlled);
        assert_eq!(split.applied.description, "new");
        assert_eq!(
            split.applied.column("nhs_number").unwrap().classification,
            Classification::DirectIdentifier
        );
        assert_eq!(
            split.applied.column("region").unwrap().classification,
            Classification::QuasiIdentifier
        );
        let pending: Vec<_> = split.pending.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(pending, ["tier", "columns.nhs_number.classification"]);

        // Approving replays the pending fields onto the current manifest.
        let mut proposed = split.applied.clone();
        let n = proposed
            .propose("sam", OffsetDateTime::UNIX_EPOCH, split.pending)
            .unwrap();
        let approved = proposed
            .decide(n, true, "ada", OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(approved.tier, Tier::Open);
        assert_eq!(
            approved.column("nhs_number").unwrap().classification,
            Classification::None
        );
        assert_eq!(approved.change(n).unwrap().status, ChangeStatus::Approved);
        assert_eq!(
            approved
                .decide(n, true, "ada", OffsetDateTime::UNIX_EPOCH)
                .err(),
            Some(DecideError::Decided(n, "approved"))
        );
        assert_eq!(
            proposed
                .decide(n + 1, true, "ada", OffsetDateTime::UNIX_EPOCH)
                .err(),
            Some(DecideError::NotFound(n + 1))
        );

        // A field that moved since the proposal makes it stale.
        let mut moved = proposed.clone();
        moved.tier = Tier::Registered;
        assert!(matches!(
            moved.decide(n, true, "ada", OffsetDateTime::UNIX_EPOCH),
            Err(DecideError::Stale { .. })
        ));
        // Rejecting changes nothing but the proposal's status.
        let rejected = moved
            .decide(n, false, "ada", OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(rejected.tier, Tier::Registered);
        assert_eq!(rejected.change(n).unwrap().status, ChangeStatus::Rejected);
    }

    #[test]
    fn a_mask_waits_with_the_reclassification_it_depends_on() {
        // Reclassifying a direct identifier as a masked quasi-identifier:
        // the mask alone would sit on a direct identifier, so it waits too.
        let m = base();
        let patch: ManifestPatch = serde_json::from_str(
            r#"{"title":"T2","columns":[{"name":"nhs_number","classification":"quasi-identifier","mask":"hash"}]}"#,
        )
        .unwrap();
        let split = split(&m, &patch.apply(&m).unwrap());
        assert!(split.applied.check().is_ok());
        assert_eq!(split.applied.title, "T2");
        let pending: Vec<_> = split.pending.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            pending,
            [
                "columns.nhs_number.classification",
                "columns.nhs_number.mask"
            ]
        );
    }

    #[test]
    fn proposals_survive_the_manifest_file() {
        let mut m = base();
        m.propose(
            "sam",
            OffsetDateTime::UNIX_EPOCH,
            vec![FieldChange {
                field: "columns.age.mask".into(),
                old: Some("bucket(5)".into()),
                new: None,
                widens: true,
            }],
        )
        .unwrap();
        let back = Manifest::parse(&m.to_toml()).unwrap();
        assert_eq!(back.changes, m.changes);
        assert_eq!(back.last_change, 1);
    }
}
