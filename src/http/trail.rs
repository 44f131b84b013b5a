//! What handlers write to the audit trail and metrics for a data request:
//! the decision (durable before any data leaves), and the outcome when the
//! stream ends; and for a catalogue change, its intent (durable before it
//! commits) and its outcome.

use std::sync::Arc;
use std::time::Instant;

use super::AppState;
use super::limits::Slot;
use super::problem::{ApiError, REQUEST_ID};
use crate::audit::{AuditLog, Decision, Event, Phase, Record, VisaEvidence};
use crate::auth::Caller;
use crate::metrics::Metrics;
use crate::policy::{AccessPlan, Basis};
use crate::slice::{Finished, OnFinish};

/// The start of a record for a request by `caller` about `dataset`.
pub(super) fn request_record(event: Event, caller: &Caller, dataset: &str) -> Record {
    let principal = caller.principal();
    Record {
        phase: Some(Phase::Decision),
        request_id: REQUEST_ID.try_with(Clone::clone).ok(),
        subject: principal.map(|p| p.sub.clone()),
        roles: principal
            .map(|p| {
                p.roles
                    .iter()
                    .filter_map(|r| serde_json::to_value(r).ok())
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        organisation: principal.and_then(|p| p.organisation.clone()),
        personal_token: principal
            .and_then(|p| p.scope.as_ref())
            .map(|s| s.token.clone()),
        // Dataset ids are slugs; anything else is recorded truncated.
        dataset: Some(dataset.chars().take(128).collect()),
        ..Record::new(event)
    }
}

tokio::task_local! {
    /// The record of the catalogue change the current request makes, for
    /// the catalogue's journal to write before the change commits.
    static CHANGE: Record;
}

/// Runs `change` (a handler's work) with `record` as the change it makes.
pub(super) async fn changing<F: std::future::Future>(record: Record, change: F) -> F::Output {
    CHANGE.scope(record, change).await
}

/// The catalogue's journal (see [`crate::catalog::live::Journal`]): the
/// intent record of the change about to commit, with the fields it changes
/// and the version it publishes, made durable first. Changes made outside
/// a request (none today) are recorded as plain edits.
pub fn journal(audit: Arc<AuditLog>) -> crate::catalog::live::Journal {
    Arc::new(move |before, after| {
        let record = CHANGE
            .try_with(Clone::clone)
            .unwrap_or_else(|_| Record::new(Event::Edit));
        let record = intent(record, before, after);
        let audit = audit.clone();
        Box::pin(async move {
            audit
                .append_durable(record)
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// `record` as the intent of the change from `before` to `after`: the
/// dataset, the version it will serve (or hold for review) and each field
/// it changes.
pub fn intent(
    mut record: Record,
    before: Option<&crate::catalog::Manifest>,
    after: &crate::catalog::Manifest,
) -> Record {
    record.phase = Some(Phase::Intent);
    record.dataset = Some(after.id.to_string());
    record.version = Some(after.version.max(after.in_review));
    if let Some(before) = before {
        record.changes = field_changes(&crate::catalog::change::classify(before, after));
    }
    record
}

/// A catalogue change's fields as the trail records them.
pub(super) fn field_changes(
    changes: &[crate::catalog::change::FieldChange],
) -> Vec<crate::audit::FieldChange> {
    changes
        .iter()
        .map(|c| crate::audit::FieldChange {
            field: c.field.clone(),
            old: c.old.clone(),
            new: c.new.clone(),
            widens: c.widens,
        })
        .collect()
}

/// Adds the grant and purpose of an allowed plan, and the visa it rests on.
pub(super) fn with_plan(mut record: Record, plan: &AccessPlan) -> Record {
    record.visa = plan.visa.as_ref().map(|v| VisaEvidence {
        issuer: v.issuer.clone(),
        subject: v.subject.clone(),
        value: v.value.clone(),
        asserted: v.asserted,
    });
    if let Basis::Grant { id, purpose, .. } = &plan.basis {
        record.grant = Some(id.clone());
        record.purpose = Some(purpose.clone());
    } else {
        record.grant = Some(match plan.basis {
            Basis::Open => "tier:open".into(),
            _ => "tier:registered".into(),
        });
    }
    record
}

/// Records a refused request (denied by policy, or invalid).
pub(super) fn refused(state: &AppState, mut record: Record, error: &ApiError) {
    record.decision = Some(match error {
        ApiError::Denied(_)
        | ApiError::AggregateOnly(_)
        | ApiError::PrivacyBudgetExhausted { .. } => Decision::Deny,
        _ => Decision::Refused,
    });
    record.reason = Some(error.kind().into());
    state.audit.append(record);
}

/// Records the decision to serve and waits until it is on disk: no byte of
/// data leaves before its decision is durable.
pub(super) async fn allowed(state: &AppState, record: &Record) -> Result<(), ApiError> {
    let mut record = record.clone();
    record.decision = Some(Decision::Allow);
    state.audit.append_durable(record).await.map_err(|e| {
        tracing::error!(error = %e, "audit unavailable: refusing to serve data");
        ApiError::AuditUnavailable
    })
}

/// Starts the slice while its decision record is being made durable, and
/// hands the stream over only once both are done: the fsync's latency hides
/// behind the engine's first batch, and still no byte of data leaves before
/// the record is on disk. If the record cannot be written, the stream is
/// dropped (which stops its work) and the caller gets 503.
pub(super) async fn durable_then<T>(
    state: &AppState,
    record: &Record,
    start: impl std::future::Future<Output = Result<T, crate::slice::SliceError>>,
) -> Result<T, ApiError> {
    let (durable, started) = tokio::join!(allowed(state, record), start);
    durable?;
    Ok(started?)
}

/// The callback that records how the stream ended.
pub(super) fn on_finish(
    state: &AppState,
    mut record: Record,
    started: Instant,
    endpoint: Event,
    slot: Slot,
) -> OnFinish {
    let audit: Arc<AuditLog> = state.audit.clone();
    let metrics: Arc<Metrics> = state.metrics.clone();
    Box::new(move |finished: Finished| {
        // The caller's stream slot frees when the stream ends.
        drop(slot);
        let dataset = record.dataset.clone().unwrap_or_default();
        let format = record.format.clone().unwrap_or_default();
        metrics
            .rows
            .with_label_values(&[&dataset, &format])
            .inc_by(finished.rows);
        metrics
            .bytes
            .with_label_values(&[&dataset, &format])
            .inc_by(finished.bytes);
        metrics
            .duration
            .with_label_values(&[endpoint.as_str(), finished.outcome.as_str()])
            .observe(started.elapsed().as_secs_f64());
        record.phase = Some(Phase::Outcome);
        record.decision = Some(Decision::Allow);
        record.rows = Some(finished.rows);
        record.bytes = Some(finished.bytes);
        record.outcome = Some(finished.outcome);
        record.duration_ms = Some(started.elapsed().as_millis() as u64);
        audit.append(record);
    })
}
