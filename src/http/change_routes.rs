//! Changes that widen access and wait for an admin: `GET
//! /v1/datasets/{id}/changes` (the dataset's stewards and admins), `POST
//! …/changes/{n}/approve` and `POST …/changes/{n}/reject` (admins only).
//! Approving re-checks the change against the manifest as it is now and
//! applies it in one commit; every decision, and every refusal, is audited
//! with the fields, their old and new values, the proposer and the admin.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::AppState;
use super::catalog_routes::describe;
use super::problem::{ApiError, ConflictKind, UnprocessableKind};
use super::steward_routes::{admin_only, record, require_steward, stewarded, write_error};
use super::trail;
use crate::audit::Event;
use crate::auth::Caller;
use crate::catalog::WriteError;
use crate::catalog::change::{DecideError, ProposedChange};

/// `GET /v1/datasets/{id}/changes`: pending and recently decided changes.
#[utoipa::path(get, path = "/v1/datasets/{id}/changes", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions")), security(("bearer" = [])), responses((status = 200, description = "Pending and recently decided changes", body = Object)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let scope = require_steward(&caller)?;
    let dataset = stewarded(&state, &scope, &path)?;
    Ok(HttpResponse::Ok().json(json!({
        "dataset": dataset.id(),
        "changes": dataset.manifest.changes,
    })))
}

/// `POST /v1/datasets/{id}/changes/{n}/approve`.
#[utoipa::path(post, path = "/v1/datasets/{id}/changes/{n}/approve", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions"), ("n" = u64, Path, description = "The change's number")), security(("bearer" = [])), responses((status = 200, description = "Approved and applied", body = Object)))]
pub(super) async fn approve(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    decide(state, caller, path.into_inner(), true, None).await
}

/// Why an admin rejects a change: shown to the dataset's stewards.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RejectBody {
    reason: Option<String>,
}

/// `POST /v1/datasets/{id}/changes/{n}/reject`, with an optional JSON body
/// `{"reason": "…"}`.
#[utoipa::path(post, path = "/v1/datasets/{id}/changes/{n}/reject", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions"), ("n" = u64, Path, description = "The change's number")), request_body(content = RejectBody, description = "Why (optional)"), security(("bearer" = [])), responses((status = 200, description = "Rejected", body = Object)))]
pub(super) async fn reject(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: Option<web::Json<RejectBody>>,
) -> Result<HttpResponse, ApiError> {
    let reason = body.and_then(|b| b.into_inner().reason);
    if let Some(reason) = &reason {
        crate::util::echo::refuse_hidden("the reason", reason, true)
            .map_err(ApiError::InvalidParameter)?;
        if reason.len() > crate::catalog::change::REASON_BYTES {
            return Err(ApiError::InvalidParameter(format!(
                "the reason is {} bytes; at most {} are kept",
                reason.len(),
                crate::catalog::change::REASON_BYTES
            )));
        }
    }
    decide(state, caller, path.into_inner(), false, reason).await
}

/// `GET /v1/changes`: pending changes across datasets, oldest first: every
/// dataset's for admins, their publisher's for stewards.
#[utoipa::path(get, path = "/v1/changes", tag = "stewards", security(("bearer" = [])), responses((status = 200, description = "Pending changes across datasets", body = Object)))]
pub(super) async fn pending(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let scope = require_steward(&caller)?;
    let changes = pending_changes(&state, &scope);
    Ok(HttpResponse::Ok().json(json!({ "changes": changes })))
}

/// The pending changes of every dataset `scope` looks after, oldest first,
/// each with its dataset's id.
pub(super) fn pending_changes(
    state: &AppState,
    scope: &crate::catalog::StewardScope,
) -> Vec<Value> {
    let catalog = state.catalog.snapshot();
    crate::catalog::change::pending_across(
        catalog
            .datasets()
            .filter(|d| d.stewarded_by(scope))
            .map(|d| &d.manifest),
    )
}

async fn decide(
    state: web::Data<AppState>,
    caller: Caller,
    (id, number): (String, String),
    approve: bool,
    reason: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let event = if approve {
        Event::ApproveChange
    } else {
        Event::RejectChange
    };
    let mut audit = trail::request_record(event, &caller, &id);
    let admin = caller
        .principal()
        .map(|p| p.sub.clone())
        .unwrap_or_default();
    let mut decided: Option<ProposedChange> = None;
    let result = trail::changing(audit.clone(), async {
        let scope = require_steward(&caller)?;
        let dataset = stewarded(&state, &scope, &id)?;
        let number: u64 = number.parse().map_err(|_| ApiError::RouteNotFound)?;
        audit.change = Some(number);
        admin_only(
            &scope,
            "changes that widen access are approved or rejected by an admin",
        )?;
        let mut refusal: Option<DecideError> = None;
        let edited = state
            .catalog
            .edit(&dataset, |current| {
                let mut next = current
                    .decide(number, approve, &admin, OffsetDateTime::now_utc())
                    .map_err(|e| {
                        let message = e.to_string();
                        refusal = Some(e);
                        message
                    })?;
                if let Some(reason) = &reason {
                    next.note_reason(number, reason);
                }
                decided = next.change(number).cloned();
                Ok(next)
            })
            .await
            .map_err(|e| match (refusal.take(), e) {
                (Some(DecideError::NotFound(_)), _) => ApiError::RouteNotFound,
                (Some(e @ DecideError::Decided(..)), _) => ApiError::Conflict {
                    kind: ConflictKind::ChangeDecided,
                    detail: e.to_string(),
                },
                (Some(e @ DecideError::Stale { .. }), _) => ApiError::Conflict {
                    kind: ConflictKind::ChangeStale,
                    detail: e.to_string(),
                },
                // Decided, but the result does not fit the data's columns.
                (None, WriteError::Invalid(detail)) => ApiError::Conflict {
                    kind: ConflictKind::ChangeStale,
                    detail: format!("change {number} no longer applies: {detail}"),
                },
                (None, e) => write_error(e, UnprocessableKind::InvalidManifest),
            })?;
        let mut body = describe(&state, &caller, &edited, None)?;
        if let Value::Object(map) = &mut body {
            map.insert("change".into(), json!(decided));
        }
        Ok(HttpResponse::Ok().json(body))
    })
    .await;
    if let Some(change) = &decided {
        audit.changes = trail::field_changes(&change.fields);
        audit.proposed_by = Some(change.proposed_by.clone());
        if approve {
            audit.approved_by = Some(admin.clone());
        } else {
            audit.rejected_by = Some(admin.clone());
            audit.reason = change.reason.clone();
        }
    }
    record(&state, audit, &result).await;
    result
}
