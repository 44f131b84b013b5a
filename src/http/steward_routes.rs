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

/// Records an upload whose client went away: actix drops the handler (and
/// with it the staging folder and the worker), so nothing else would.
struct AbandonedUpload<'a> {
    state: &'a AppState,
    record: Option<Record>,
}

impl Drop for AbandonedUpload<'_> {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.phase = None;
            record.decision = Some(Decision::Refused);
            record.reason = Some("client-disconnected".into());
            record.outcome = Some(Outcome::Aborted);
            self.state.audit.append(record);
        }
    }
}

/// `POST /v1/datasets`: registers a dataset's metadata (no data yet).
#[tracing::instrument(skip_all)]
#[utoipa::path(post, path = "/v1/datasets", tag = "stewards", request_body = crate::catalog::edit::Registration, security(("bearer" = [])), responses((status = 201, description = "Registered (a draft until its first upload)", body = Object)))]
pub(super) async fn register(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut audit = trail::request_record(Event::Register, &caller, "");
    let result = trail::changing(audit.clone(), async {
        // Authorised from the head before a byte of the body is read.
        let scope = require_steward(&caller)?;
        let body = json_body(&read_manifest_body(&state, &req, payload).await?)?;
        if let Some(id) = body.get("id").and_then(Value::as_str) {
            audit.dataset = Some(id.chars().take(128).collect());
        }
        let registration: Registration = manifest_from(body)?;
        require_publisher(&scope, &registration.publisher)?;
        let manifest = registration.into_manifest().map_err(invalid_manifest)?;
        let dataset = state
            .catalog
            .register(manifest, state.limits.max_datasets_per_publisher)
            .await
            .map_err(|e| write_error(e, UnprocessableKind::InvalidManifest))?;
        let url = format!("/v1/datasets/{}", dataset.id());
        Ok(HttpResponse::Created()
            .insert_header((header::LOCATION, url))
            .json(describe(&state, &caller, &dataset, None)?))
    })
    .await;
    record(&state, audit, &result).await;
    result
}

/// `PATCH /v1/datasets/{id}`: edits metadata. Classification changes apply
/// to every version (they live in the manifest, not the files). A steward's
/// changes that widen access are not applied: they are stored as a pending
/// change for an admin (answer 202, `pending_change`); the rest apply at
/// once. An admin's edit applies whole.
#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(patch, path = "/v1/datasets/{id}", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions")), request_body = crate::catalog::edit::ManifestPatch, security(("bearer" = [])), responses((status = 200, description = "Applied", body = Object), (status = 202, description = "Widening parts wait for an admin (`pending_change`)", body = Object)))]
pub(super) async fn edit(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut audit = trail::request_record(Event::Edit, &caller, &path);
    let sub = caller
        .principal()
        .map(|p| p.sub.clone())
        .unwrap_or_default();
    // What the commit did, for the answer and the trail.
    let mut outcome: Option<EditOutcome> = None;
    let result = trail::changing(audit.clone(), async {
        // Authorised from the head before a byte of the body is read.
        let scope = require_steward(&caller)?;
        let dataset = stewarded(&state, &scope, &path)?;
        let body = json_body(&read_manifest_body(&state, &req, payload).await?)?;
        let patch: ManifestPatch = manifest_from(body)?;
        if patch
            .publisher
            .as_ref()
            .is_some_and(|p| p != &dataset.manifest.publisher)
            && scope != StewardScope::All
        {
            return Err(ApiError::NotPublisher(
                "only admins may move a dataset to another publisher".into(),
            ));
        }
        let admin = scope == StewardScope::All;
        let edited = state
            .catalog
            .edit(&dataset, |current| {
                let requested = patch.apply(current)?;
                // A proposal must be applicable to the data as it is, so
                // the admin who approves it is not the first to find out.
                for version in dataset.versions.values() {
                    check_schema(&requested, version.number, &version.schema)?;
                }
                // A type declared anew must be the stored one.
                if let Some(stored) = dataset.current() {
                    let declared =
                        |m: &Manifest, name: &str| m.column(name).and_then(|c| c.declared_type);
                    let changed = requested
                        .columns
                        .iter()
                        .any(|c| c.declared_type != declared(current, c.name.as_str()));
                    if changed {
                        check_declared_types(&requested, stored.number, &stored.schema)?;
                    }
                }
                if admin {
                    outcome = Some(EditOutcome {
                        applied: change::classify(current, &requested),
                        proposal: None,
                    });
                    return Ok(requested);
                }
                let split = change::split(current, &requested);
                let applied = change::classify(current, &split.applied);
                let mut next = split.applied;
                let proposal = if split.pending.is_empty() {
                    None
                } else {
                    let n = next.propose(&sub, OffsetDateTime::now_utc(), split.pending)?;
                    next.change(n).cloned()
                };
                outcome = Some(EditOutcome { applied, proposal });
                Ok(next)
            })
            .await
            .map_err(|e| write_error(e, UnprocessableKind::InvalidManifest))?;
        let mut body = describe(&state, &caller, &edited, None)?;
        let (applied, proposal) = outcome
            .as_ref()
            .map(|o| (o.applied.clone(), o.proposal.clone()))
            .unwrap_or_default();
        if let Value::Object(map) = &mut body {
            map.insert("applied_changes".into(), json!(applied));
            map.insert("pending_change".into(), json!(proposal));
        }
        Ok(if proposal.is_some() {
            HttpResponse::Accepted().json(body)
        } else {
            HttpResponse::Ok().json(body)
        })
    })
    .await;
    if result.is_ok()
        && let Some(outcome) = outcome
    {
        let admin = steward_scope(&caller) == StewardScope::All;
        audit.changes = trail::field_changes(&outcome.applied);
        audit.proposed_by = Some(sub.clone());
        // An admin's own edit needs no one else's approval: they approved it.
        audit.approved_by = admin.then(|| sub.clone());
        if let Some(proposal) = &outcome.proposal {
            let mut proposed = audit.clone();
            proposed.event = Event::ProposeChange;
            proposed.phase = None;
            proposed.decision = Some(Decision::Pending);
            proposed.change = Some(proposal.number);
            proposed.changes = trail::field_changes(&proposal.fields);
            proposed.approved_by = None;
            if let Err(e) = state.audit.append_durable(proposed).await {
                tracing::error!(error = %e, "a proposed catalogue change could not be audited");
            }
        }
    }
    record(&state, audit, &result).await;
    result
}

/// What an edit committed: the fields applied, and a proposal if some wait.
struct EditOutcome {
    applied: Vec<change::FieldChange>,
    proposal: Option<change::ProposedChange>,
}

/// `POST /v1/datasets/{id}/publish`: publishes the version held for
/// review (a first upload whose columns the file defined), once its steward
/// has classified them.
#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(post, path = "/v1/datasets/{id}/publish", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions")), security(("bearer" = [])), responses((status = 200, description = "The version in review is published", body = Object)))]
pub(super) async fn publish(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut audit = trail::request_record(Event::Publish, &caller, &path);
    let result = trail::changing(audit.clone(), async {
        let scope = require_steward(&caller)?;
        let dataset = stewarded(&state, &scope, &path)?;
        not_retired(&dataset)?;
        if dataset.manifest.in_review == 0 {
            return Err(ApiError::Conflict {
                kind: ConflictKind::NothingToPublish,
                detail: format!(
                    "dataset '{}' has no version in review: uploads to a published dataset are published at once",
                    dataset.id()
                ),
            });
        }
        if let Some(change) = dataset.manifest.change_holding(dataset.manifest.in_review) {
            return Err(ApiError::Conflict {
                kind: ConflictKind::ApprovalRequired,
                detail: format!(
                    "version {} waits for an admin to approve change {}: {}",
                    dataset.manifest.in_review,
                    change.number,
                    change.findings.join("; ")
                ),
            });
        }
        let published = state
            .catalog
            .publish_reviewed(&dataset)
            .await
            .map_err(|e| write_error(e, UnprocessableKind::InvalidManifest))?;
        audit.version = Some(published.manifest.version);
        Ok(HttpResponse::Ok().json(describe(&state, &caller, &published, None)?))
    })
    .await;
    record(&state, audit, &result).await;
    result
}

/// `POST /v1/datasets/{id}/restore`: serves a retired dataset again.
/// Admins only: it reopens access that a steward closed.
#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(post, path = "/v1/datasets/{id}/restore", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions")), security(("bearer" = [])), responses((status = 200, description = "Served again (admins only)", body = Object)))]
pub(super) async fn restore(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let audit = trail::request_record(Event::Restore, &caller, &path);
    let result = trail::changing(audit.clone(), async {
        let scope = require_steward(&caller)?;
        let dataset = stewarded(&state, &scope, &path)?;
        admin_only(
            &scope,
            "restoring a retired dataset reopens access: an admin does it",
        )?;
        if dataset.manifest.retired.is_none() {
            return Err(ApiError::Conflict {
                kind: ConflictKind::NotRetired,
                detail: format!("dataset '{}' is not retired", dataset.id()),
            });
        }
        let restored = state
            .catalog
            .restore(&dataset)
            .await
            .map_err(|e| write_error(e, UnprocessableKind::InvalidManifest))?;
        Ok(HttpResponse::Ok().json(describe(&state, &caller, &restored, None)?))
    })
    .await;
    record(&state, audit, &result).await;
    result
}

/// `POST /v1/datasets/{id}/rewrite`: writes the current version's rows
/// again with today's Parquet writer and publishes them as the next
/// version (the same worker and crash-safe commit as an upload). Admins
/// only: it is maintenance of the catalogue's files, for versions written
/// before the writer last changed; the old version stays readable by number.
#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(post, path = "/v1/datasets/{id}/rewrite", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions")), security(("bearer" = [])), responses((status = 201, description = "The same rows, written again as the next version", body = Object)))]
pub(super) async fn rewrite(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let mut audit = trail::request_record(Event::Rewrite, &caller, &path);
    let result = trail::changing(audit.clone(), async {
        let scope = require_steward(&caller)?;
        let dataset = stewarded(&state, &scope, &path)?;
        admin_only(
            &scope,
            "rewriting a dataset's files is an admin's maintenance",
        )?;
        not_retired(&dataset)?;
        let _slot = state
            .upload_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyUploads(UPLOAD_RETRY_SECS))?;
        let key = state.engine.profile_key();
        let (published, summary) = ingest::rewrite(
            &state.catalog,
            &dataset,
            &state.ingest,
            state.limits.batch_rows,
            Publication {
                by: caller.principal().map_or("", |p| p.sub.as_str()),
                key: &key,
                based_on: None,
            },
        )
        .await
        .map_err(upload_error)?;
        audit.version = Some(published.version);
        audit.duration_ms = Some(started.elapsed().as_millis() as u64);
        let (answer, rows) = new_version_answer(&published, &summary, None)?;
        audit.rows = Some(rows);
        Ok(answer)
    })
    .await;
    record(&state, audit, &result).await;
    result
}

/// `DELETE /v1/datasets/{id}`: retires the dataset. It is no longer listed
/// or served; its files and audit records stay.
#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(delete, path = "/v1/datasets/{id}", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions")), security(("bearer" = [])), responses((status = 200, description = "Retired: no longer served; its id stays taken", body = Object)))]
pub(super) async fn retire(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let audit = trail::request_record(Event::Retire, &caller, &path);
    let result = trail::changing(audit.clone(), async {
        let scope = require_steward(&caller)?;
        let dataset = stewarded(&state, &scope, &path)?;
        not_retired(&dataset)?;
        let retired = state
            .catalog
            .retire(&dataset)
            .await
            .map_err(|e| write_error(e, UnprocessableKind::InvalidManifest))?;
        Ok(HttpResponse::Ok().json(describe(&state, &caller, &retired, None)?))
    })
    .await;
    record(&state, audit, &result).await;
    result
}

/// `PUT /v1/datasets/{id}/data`: uploads the dataset's next version.
#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(put, path = "/v1/datasets/{id}/data", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions"), CsvParams), request_body(description = "The new version's rows", content(("text/csv"), ("application/vnd.apache.parquet"), ("application/vnd.apache.arrow.stream"))), security(("bearer" = [])), responses((status = 201, description = "A new version, committed", body = Object)))]
pub(super) async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let mut audit = trail::request_record(Event::Upload, &caller, &path);
    let mut abandoned = AbandonedUpload {
        state: &state,
        record: Some(audit.clone()),
    };
    let result = trail::changing(audit.clone(), async {
        let scope = require_steward(&caller)?;
        let dataset = stewarded(&state, &scope, &path)?;
        not_retired(&dataset)?;
        let format = upload_format(&req)?;
        let csv = csv_options(&req, format)?;
        audit.format = Some(format!("{format:?}").to_lowercase());
        // Held until the answer: receiving and decoding both count. A full
        // server answers at once rather than queueing bodies it cannot take.
        let _slot = state
            .upload_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyUploads(UPLOAD_RETRY_SECS))?;
        let max = state.ingest.max_upload_bytes;
        if declared_length(&req).is_some_and(|len| len > max) {
            return Err(ApiError::PayloadTooLarge(
                usize::try_from(max).unwrap_or(usize::MAX),
            ));
        }
        let staging = state
            .catalog
            .staging()
            .await
            .map_err(|e| write_error(e, UnprocessableKind::UploadInvalid))?;
        let received = receive(&state, payload, &staging).await?;
        let body = ingest::Body {
            path: staging.body(),
            format,
            csv,
        };
        let key = state.engine.profile_key();
        let (published, summary) = ingest::upload(
            &state.catalog,
            &dataset,
            staging,
            body,
            &state.ingest,
            state.limits.batch_rows,
            Publication {
                by: caller.principal().map_or("", |p| p.sub.as_str()),
                key: &key,
                based_on: None,
            },
        )
        .await
        .map_err(upload_error)?;
        audit.version = Some(published.version);
        audit.bytes = Some(received);
        audit.duration_ms = Some(started.elapsed().as_millis() as u64);
        let (answer, rows) = new_version_answer(&published, &summary, Some(received))?;
        audit.rows = Some(rows);
        Ok(answer)
    })
    .await;
    abandoned.record = None;
    record(&state, audit, &result).await;
    result
}

/// Why a new version (an upload or a rewrite) was not made.
fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::NothingToRewrite(detail) => ApiError::Conflict {
            kind: ConflictKind::NothingToRewrite,
            detail,
        },
        UploadError::Ingest(failure) => ingest_error(failure),
        UploadError::Write(e) => write_error(e, UnprocessableKind::SchemaMismatch),
    }
}

/// The answer to a new version (an upload or a rewrite): 201 with the
/// version, its rows and schema, and what the steward should do next; and
/// the version's rows, for the trail.
fn new_version_answer(
    published: &Published,
    summary: &Summary,
    received: Option<u64>,
) -> Result<(HttpResponse, u64), ApiError> {
    let version = published
        .dataset
        .versions
        .get(&published.version)
        .ok_or_else(|| Internal::new("the uploaded version vanished"))?;
    let id = published.dataset.id();
    let mut warnings: Vec<String> = if let Some(change) = published.change {
        vec![format!(
            "version {} is held for an admin, not published: its data looks to hold what a more protected column held ({}); readers keep version {} until an admin approves change {change} (POST /v1/datasets/{id}/changes/{change}/approve; CLI: sluice datasets approve {id} {change}); GET /v1/datasets/{id}/data?version={}&as=tier shows you what it holds",
            published.version,
            published.findings.join("; "),
            published.dataset.manifest.version,
            published.version,
        )]
    } else if published.held {
        vec![format!(
            "version {} is held for review, not published: its columns ({}) came from the file and are classified 'none'; classify the sensitive ones with PATCH /v1/datasets/{id} (CLI: sluice datasets edit {id} --classify COLUMN=direct-identifier), look at it as readers would with GET /v1/datasets/{id}/data?version={}&as=tier, then publish with POST /v1/datasets/{id}/publish (CLI: sluice datasets publish {id})",
            published.version,
            published
                .dataset
                .manifest
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            published.version,
        )]
    } else {
        published
            .added_columns
            .iter()
            .map(|c| {
                format!(
                    "column '{c}' was added with classification 'none' (served as is): classify it with PATCH /v1/datasets/{id} if it is sensitive"
                )
            })
            .collect()
    };
    warnings.extend(summary.warnings.iter().cloned());
    let answer = HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!(
                "/v1/datasets/{id}/data?version={}&as=tier",
                published.version
            ),
        ))
        .json(json!({
            "id": id,
            "version": published.version,
            "status": published.dataset.status(),
            "in_review": published.held,
            "change": published.change,
            "findings": published.findings,
            "rows": version.rows,
            "bytes": version.bytes,
            "uploaded_bytes": received,
            "schema": summary.columns,
            "url": format!("/v1/datasets/{id}"),
            // What the dataset's tier sees of the new version: its steward's
            // preview, which works for held versions too.
            "data_url": format!("/v1/datasets/{id}/data?version={}&as=tier", published.version),
            "renamed_columns": summary
                .renamed
                .iter()
                .map(|(from, to)| (from.clone(), Value::from(to.as_str())))
                .collect::<serde_json::Map<_, _>>(),
            "inferred": summary
                .inferred
                .iter()
                .map(|(column, words)| (column.clone(), Value::from(words.as_str())))
                .collect::<serde_json::Map<_, _>>(),
            "warnings": warnings,
        }));
    Ok((answer, version.rows))
}

/// How a CSV upload is written, from the query string: `delimiter` and
/// `quote` (one character; `tab` for a tab), `header` (`present`, the
/// default, or `absent`), `null` (comma-separated texts that mean a
/// missing value), `date_format` (`%d/%m/%Y` or `%m/%d/%Y`) and `rename`
/// (`header cell=column,…`). Refused for other formats, where they would
/// mean nothing.
fn csv_options(req: &HttpRequest, format: UploadFormat) -> Result<CsvOptions, ApiError> {
    let query = web::Query::<CsvParams>::from_query(req.query_string())
        .map_err(|e| ApiError::InvalidParameter(e.to_string()))?
        .into_inner();
    let given = query.delimiter.is_some()
        || query.quote.is_some()
        || query.header.is_some()
        || query.null.is_some()
        || query.date_format.is_some()
        || query.rename.is_some();
    if given && format != UploadFormat::Csv {
        return Err(ApiError::InvalidParameter(
            "delimiter, quote, header, null, date_format and rename apply to CSV uploads only"
                .into(),
        ));
    }
    let header = match query.header.as_deref() {
        None | Some("present") => true,
        Some("absent") => false,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "header must be 'present' or 'absent', not '{}'",
                crate::util::echo::cut(other)
            )));
        }
    };
    CsvOptions::from_text(ingest::CsvText {
        delimiter: query.delimiter.as_deref(),
        quote: query.quote.as_deref(),
        header,
        null: query.null.as_deref(),
        date_format: query.date_format.as_deref(),
        rename: query.rename.as_deref(),
    })
    .map_err(ApiError::InvalidParameter)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct CsvParams {
    delimiter: Option<String>,
    quote: Option<String>,
    header: Option<String>,
    null: Option<String>,
    date_format: Option<String>,
    rename: Option<String>,
}

/// What a refused upload is told to wait: roughly a small upload's time.
const UPLOAD_RETRY_SECS: u64 = 5;

fn upload_format(req: &HttpRequest) -> Result<UploadFormat, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if req.headers().contains_key(header::CONTENT_ENCODING) {
        return Err(ApiError::UnsupportedMediaType(
            "send uploads without Content-Encoding (Parquet and Arrow compress themselves)".into(),
        ));
    }
    UploadFormat::from_media_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "upload Parquet ({}), CSV ({}) or Arrow IPC ({}), named by Content-Type",
            UploadFormat::Parquet.media_type(),
            UploadFormat::Csv.media_type(),
            UploadFormat::Arrow.media_type()
        ))
    })
}

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The staging disk failed (full, most likely): nothing was changed.
fn staging_failed(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "staging an upload failed");
    ApiError::StorageUnavailable
}

/// Streams the body to the staging folder, counting bytes (the payload
/// extractor enforces no limit) and giving up on a stalled body.
async fn receive(
    state: &AppState,
    mut payload: web::Payload,
    staging: &Staging,
) -> Result<u64, ApiError> {
    let max = state.ingest.max_upload_bytes;
    let idle = Duration::from_secs(state.ingest.body_idle_timeout_secs.max(1));
    let file = tokio::fs::File::create(staging.body())
        .await
        .map_err(staging_failed)?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut received: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(idle, payload.next()).await {
            Err(_) => return Err(ApiError::UploadTimeout(idle.as_secs())),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(error = %e, "upload body broke off");
                return Err(ApiError::UploadIncomplete);
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        received += chunk.len() as u64;
        if received > max {
            return Err(ApiError::PayloadTooLarge(
                usize::try_from(max).unwrap_or(usize::MAX),
            ));
        }
        file.write_all(&chunk).await.map_err(staging_failed)?;
    }
    file.flush().await.map_err(staging_failed)?;
    if received == 0 {
        return Err(ApiError::Unprocessable {
            kind: UnprocessableKind::UploadInvalid,
            detail: "the upload body is empty".into(),
        });
    }
    Ok(received)
}

fn ingest_error(failure: Failure) -> ApiError {
    match failure {
        Failure::Invalid(detail) => ApiError::Unprocessable {
            kind: UnprocessableKind::UploadInvalid,
            detail,
        },
        Failure::SchemaMismatch(detail) => ApiError::Unprocessable {
            kind: UnprocessableKind::SchemaMismatch,
            detail,
        },
        // The worker's cause crossed a process boundary as text.
        Failure::Internal(cause) => Internal::caused("running the ingest worker", cause).into(),
        Failure::StorageFull(cause) => {
            tracing::error!(cause, "an upload's output could not be written");
            ApiError::StorageUnavailable
        }
    }
}
