//! A dataset's life as its steward leads it: registered, its metadata
//! edited (widening parts wait for an admin), published from review,
//! rewritten, retired and restored.

use super::upload::{UPLOAD_RETRY_SECS, new_version_answer, upload_error};
#[allow(clippy::wildcard_imports)]
use super::*;

/// `POST /v1/datasets`: registers a dataset's metadata (no data yet).
#[tracing::instrument(skip_all)]
#[utoipa::path(post, path = "/v1/datasets", tag = "stewards", request_body = crate::catalog::edit::Registration, security(("bearer" = [])), responses((status = 201, description = "Registered (a draft until its first upload)", body = Object)))]
pub(in crate::http) async fn register(
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
pub(in crate::http) async fn edit(
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
pub(in crate::http) async fn publish(
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
pub(in crate::http) async fn restore(
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
pub(in crate::http) async fn rewrite(
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
pub(in crate::http) async fn retire(
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
