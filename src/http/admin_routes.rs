//! Admins' endpoints. `GET /metrics` is here too: its per-dataset series
//! say who reads what and how much, which is not every caller's business.
//!
//! `GET /v1/audit`: admins read the audit trail, filtered by dataset,
//! subject and time, oldest first, in pages.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::AppState;
use super::problem::ApiError;
use crate::auth::{Caller, Role};
use crate::policy::Denial;
use crate::util::internal::OrInternal;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    dataset: Option<String>,
    sub: Option<String>,
    since: Option<String>,
    until: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
}

/// Where a page starts, from an offset page token (none: the start).
pub(super) fn offset_of(page_token: Option<&str>) -> Result<usize, ApiError> {
    match page_token {
        None => Ok(0),
        Some(t) => t.parse().map_err(|_| {
            ApiError::InvalidParameter("page_token is not one this server issued".into())
        }),
    }
}

/// Admins only: 401 without a token, 403 `role-required` with another one.
pub(super) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller.principal() {
        None => Err(ApiError::TokenRequired),
        Some(p) if !p.has_role(Role::Admin) => {
            Err(ApiError::Denied(Denial::RoleRequired { role: Role::Admin }))
        }
        Some(_) => Ok(()),
    }
}

#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditParams), security(("bearer" = [])), responses((status = 200, description = "Audit records, newest last (admins only)", body = Object)))]
pub(super) async fn audit(
    state: web::Data<AppState>,
    caller: Caller,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let p = params.into_inner();
    let instant = |name: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| {
                OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                    ApiError::InvalidParameter(format!(
                        "{name} must be an RFC 3339 time, e.g. 2026-11-26T08:00:00Z"
                    ))
                })
            })
            .transpose()
    };
    let since = instant("since", &p.since)?;
    let until = instant("until", &p.until)?;
    let page_size = p.page_size.unwrap_or(100).clamp(1, 1000);
    let skip = offset_of(p.page_token.as_deref())?;
    let Some(dir) = state.audit.dir().map(|d| d.to_owned()) else {
        return Ok(HttpResponse::Ok().json(json!({ "records": [], "next_page_token": null })));
    };
    let records = web::block(move || crate::audit::read_all(&dir))
        .await
        .or_internal("reading the audit trail")?
        .or_internal("reading the audit trail")?;
    let mut matching = records.into_iter().filter(|r| {
        let time = OffsetDateTime::parse(&r.time, &Rfc3339).ok();
        p.dataset
            .as_ref()
            .is_none_or(|d| r.dataset.as_ref() == Some(d))
            && p.sub.as_ref().is_none_or(|s| r.subject.as_ref() == Some(s))
            && since.is_none_or(|s| time.is_some_and(|t| t >= s))
            && until.is_none_or(|u| time.is_some_and(|t| t < u))
    });
    let page: Vec<_> = matching.by_ref().skip(skip).take(page_size).collect();
    let next = matching.next().map(|_| (skip + page.len()).to_string());
    Ok(HttpResponse::Ok().json(json!({ "records": page, "next_page_token": next })))
}

/// `GET /metrics`: Prometheus text, for admin tokens only (a scraper is
/// given one with `bearer_token_file`).
#[utoipa::path(get, path = "/metrics", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "Prometheus text exposition (admin tokens only)", content_type = "text/plain; version=0.0.4")))]
pub(super) async fn metrics(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    state
        .metrics
        .active_streams
        .set(state.engine.active_streams() as i64);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}
