//! `GET /v1/me`: who the token says the caller is, the grants that name
//! them, and every dataset they can read and how, decided by the same
//! policy evaluation the data routes use. Nothing about anyone else.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use super::problem::ApiError;
use crate::auth::Caller;
use crate::policy::{self, Decision, Denial};

#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/v1/me", tag = "researchers", security(("bearer" = [])), responses((status = 200, description = "Who the token says you are, your grants and the datasets you can read", body = Object)))]
pub(super) async fn me(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let Caller::Principal(principal) = &caller else {
        return Err(ApiError::TokenRequired);
    };
    let policy = state.policy.current();
    let catalog = state.catalog.snapshot();
    let today = time::OffsetDateTime::now_utc().date();
    let rfc3339 = &time::format_description::well_known::Rfc3339;

    // A personal token narrowed to a dataset or grant shows only that.
    let in_scope = |g: &&crate::policy::Grant| {
        principal.scope.as_ref().is_none_or(|s| {
            s.dataset.as_deref().is_none_or(|d| d == g.dataset.as_str())
                && s.grant.as_deref().is_none_or(|id| id == g.id)
        })
    };
    let grants: Vec<Value> = policy
        .grants
        .iter()
        .filter(|g| g.applies_to(principal))
        .filter(in_scope)
        .map(|g| {
            let mut grant = json!({
                "id": g.id,
                "dataset": g.dataset,
                "purpose": g.purpose,
                "mode": g.mode,
                "expires": g.expires.map(|d| d.to_string()),
                "expired": g.expires.is_some_and(|e| e < today),
            });
            // What the grant opens today, through the same evaluation.
            let budget = catalog
                .get(&g.dataset)
                .map(|d| policy::evaluate(&policy, &caller, &d.manifest, Some(&g.id), today));
            if let Some(Decision::Allow(plan)) = budget
                && let Some(b) = &plan.budget
            {
                grant["privacy_budget"] = super::privacy::budget_json(&state, b);
            }
            grant
        })
        .collect();

    let mut datasets = Vec::new();
    for dataset in catalog.datasets().filter(|d| d.manifest.is_live()) {
        let m = &dataset.manifest;
        let entry = json!({ "id": m.id, "title": m.title, "tier": m.tier });
        match policy::evaluate(&policy, &caller, m, None, today) {
            Decision::Allow(plan) => {
                let mut entry = entry;
                entry["mode"] = json!(plan.mode);
                entry["basis"] = json!(plan.basis);
                datasets.push(entry);
            }
            Decision::Deny(Denial::GrantAmbiguous { grants }) => {
                let mut entry = entry;
                entry["choose_grant"] = json!(grants);
                datasets.push(entry);
            }
            Decision::Deny(_) => {}
        }
    }

    Ok(HttpResponse::Ok().json(json!({
        "subject": principal.sub,
        "roles": principal.roles,
        "groups": principal.groups,
        "organisation": principal.organisation,
        "token_expires": principal.expires
            .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok())
            .and_then(|t| t.format(rfc3339).ok()),
        "grants": grants,
        "datasets": datasets,
    })))
}

/// `GET /v1/me/delta-sharing-profile`: a Delta Sharing profile file
/// (version 1) for the caller's own token, to open Sluice with the
/// unmodified connectors: `delta_sharing.load_as_pandas("sluice.share#health.default.<dataset>")`.
/// The token is the caller's own, sent back to them; it expires when the
/// token does.
#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/v1/me/delta-sharing-profile", tag = "delta-sharing", security(("bearer" = [])), responses((status = 200, description = "A Delta Sharing profile file (version 1) for your own token", body = Object)))]
pub(super) async fn sharing_profile(
    state: web::Data<AppState>,
    caller: Caller,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let Caller::Principal(principal) = &caller else {
        return Err(ApiError::TokenRequired);
    };
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, token)| token.trim())
        .ok_or(ApiError::TokenRequired)?;
    let mut profile = json!({
        "shareCredentialsVersion": 1,
        "endpoint": format!("{}/delta-sharing", super::public_base(&state, &req)),
        "bearerToken": token,
    });
    if let Some(expires) = principal
        .expires
        .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
    {
        profile["expirationTime"] = json!(expires);
    }
    Ok(HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            "attachment; filename=\"sluice.share\"",
        ))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(profile))
}
