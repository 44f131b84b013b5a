//! What data stewards do over HTTP: register a dataset (`POST
//! /v1/datasets`), upload a version (`PUT /v1/datasets/{id}/data`), edit
//! metadata (`PATCH /v1/datasets/{id}`) and retire (`DELETE
//! /v1/datasets/{id}`). Stewards act on their organisation's datasets
//! (`publisher` equals their `organisation` claim); admins on all. Every
//! change, refused or made, goes to the audit trail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

use super::AppState;
use super::catalog_routes::{describe, visible_dataset};
use super::problem::{ApiError, ConflictKind, UnprocessableKind};
use super::trail;
use crate::audit::Record;
use crate::audit::{Decision, Event, Outcome};
use crate::auth::Caller;
use crate::catalog::change;
use crate::catalog::edit::{ManifestPatch, Registration};
use crate::catalog::live::{Publication, Published};
use crate::catalog::local::Staging;
use crate::catalog::{
    Dataset, Manifest, StewardScope, WriteError, check_declared_types, check_schema,
};
use crate::ingest::{self, CsvOptions, Failure, Summary, UploadError, UploadFormat};
use crate::policy::steward::{self, steward_scope};
use crate::util::internal::Internal;

mod lifecycle;
mod upload;

pub(super) use lifecycle::*;
pub(super) use upload::*;

/// The caller's scope, or why they may not change the catalogue at all.
pub(super) fn require_steward(caller: &Caller) -> Result<StewardScope, ApiError> {
    Ok(steward::require_steward(caller)?)
}

fn require_publisher(scope: &StewardScope, publisher: &str) -> Result<(), ApiError> {
    Ok(steward::require_publisher(scope, publisher)?)
}

/// The dataset a steward may change: one they can see, of their publisher.
pub(super) fn stewarded(
    state: &AppState,
    scope: &StewardScope,
    raw_id: &str,
) -> Result<Arc<Dataset>, ApiError> {
    let dataset = visible_dataset(state, scope, raw_id)?;
    require_publisher(scope, &dataset.manifest.publisher)?;
    Ok(dataset)
}

/// Retired datasets take no new versions and cannot be retired again.
fn not_retired(dataset: &Dataset) -> Result<(), ApiError> {
    match dataset.manifest.retired {
        Some(_) => Err(ApiError::Conflict {
            kind: ConflictKind::DatasetRetired,
            detail: format!("dataset '{}' is retired", dataset.id()),
        }),
        None => Ok(()),
    }
}

/// Refuses a steward who is not an admin (scope `All`) with 403
/// `admin-required`, saying why the change is an admin's.
pub(super) fn admin_only(scope: &StewardScope, why: &str) -> Result<(), ApiError> {
    match scope {
        StewardScope::All => Ok(()),
        _ => Err(ApiError::AdminRequired(why.into())),
    }
}

fn invalid_manifest(detail: impl Into<String>) -> ApiError {
    ApiError::Unprocessable {
        kind: UnprocessableKind::InvalidManifest,
        detail: detail.into(),
    }
}

/// A body as JSON: malformed JSON is 400.
fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::InvalidParameter(crate::util::echo::cut_quoted(&format!(
            "the body is not valid JSON: {e}"
        )))
    })
}

/// JSON that is not a valid `T` (unknown field, missing licence, bad id) is 422.
fn manifest_from<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    // serde quotes the offending field or value; cut it.
    serde_json::from_value(value)
        .map_err(|e| invalid_manifest(crate::util::echo::cut_quoted(&e.to_string())))
}

/// Largest manifest or patch body (thousands of described columns fit).
const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

/// Reads a manifest or patch body (after the caller was authorised).
async fn read_manifest_body(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<web::Bytes, ApiError> {
    let deadline = Duration::from_secs(state.limits.body_timeout_secs.max(1));
    super::body::read_body(
        req,
        payload,
        &state.body_budget,
        MAX_MANIFEST_BYTES,
        deadline,
        (super::body::BodyKind::Json, "manifest"),
    )
    .await
}

pub(super) fn write_error(e: WriteError, invalid_kind: UnprocessableKind) -> ApiError {
    match e {
        WriteError::NotFound => ApiError::DatasetNotFound,
        WriteError::Retired(id) => ApiError::Conflict {
            kind: ConflictKind::DatasetRetired,
            detail: format!("dataset '{id}' is retired"),
        },
        WriteError::Exists(id) => ApiError::Conflict {
            kind: ConflictKind::DatasetExists,
            detail: format!("a dataset with id '{id}' already exists"),
        },
        e @ WriteError::TooMany { .. } => ApiError::Conflict {
            kind: ConflictKind::TooManyDatasets,
            detail: e.to_string(),
        },
        WriteError::Invalid(detail) => ApiError::Unprocessable {
            kind: invalid_kind,
            detail,
        },
        WriteError::Moved(version) => ApiError::Conflict {
            kind: ConflictKind::ChangeStale,
            detail: format!(
                "version {version} was published meanwhile; nothing was changed, try again"
            ),
        },
        e @ (WriteError::PublisherChanged | WriteError::ChangedMeanwhile(_)) => {
            ApiError::Conflict {
                kind: ConflictKind::ChangeStale,
                detail: e.to_string(),
            }
        }
        WriteError::ReadOnly => ApiError::CatalogReadOnly,
        WriteError::Storage(e) => {
            tracing::error!(error = %e, "storage failed during a catalogue change");
            ApiError::StorageUnavailable
        }
        WriteError::Unrecorded(e) => {
            tracing::error!(error = %e, "a catalogue change was refused: its audit record could not be written");
            ApiError::StorageUnavailable
        }
        WriteError::Catalog(e) => Internal::caused("changing the catalogue", e).into(),
    }
}

/// Records a steward's change (or its refusal). Changes are made durable
/// before the answer goes out; a refusal is recorded in the background.
pub(super) async fn record(
    state: &AppState,
    mut record: Record,
    result: &Result<HttpResponse, ApiError>,
) {
    record.phase = None;
    match result {
        Ok(_) => {
            record.decision = Some(Decision::Allow);
            record.outcome = Some(Outcome::Ok);
            if let Err(e) = state.audit.append_durable(record).await {
                tracing::error!(error = %e, "a committed catalogue change could not be audited");
            }
        }
        Err(error) => trail::refused(state, record, error),
    }
}
