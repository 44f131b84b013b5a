//! "Your access" on a dataset's page, in plain words from the same
//! decision `GET /v1/datasets/{id}` returns as `access`; the preview of
//! the rows you may see; and access requests: the page's form, `POST
//! /v1/datasets/{id}/access-requests` for programs, and `GET
//! /v1/access-requests` (admins see all, researchers their own).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::catalogue::{capitalised, text};
use super::layout::{encode, error_page};
use super::sign_in::field;
use super::{Visitor, same_origin};
use crate::access_request::{AccessRequest, NewRequest, RequestError, Status};
use crate::audit::{Decision, Event};
use crate::auth::{Caller, Principal, Role};
use crate::catalog::Dataset;
use crate::domain::Classification;
use crate::http::problem::ApiError;
use crate::http::{AppState, catalog_routes, data_routes, trail};

/// Rows shown on a dataset's page.
const PREVIEW_ROWS: u64 = 20;

/// The "Your access" section of a dataset's page.
pub(super) async fn section(
    state: &AppState,
    visitor: &Visitor,
    req: &HttpRequest,
    dataset: &Dataset,
    described: &Value,
) -> Markup {
    let access = &described["access"];
    let allowed = access["allowed"].as_bool().unwrap_or(false);
    let mode = access["mode"].as_str().unwrap_or("rows");
    let rows_allowed = allowed && mode == "rows";
    let caller = visitor.caller();
    // Drafts and retired datasets (shown to their stewards) have no rows to serve.
    let preview = if rows_allowed && dataset.manifest.is_live() {
        Some(data_routes::preview(state, &caller, dataset.id().as_str(), PREVIEW_ROWS, req).await)
    } else {
        None
    };
    let requests: Vec<AccessRequest> = match &visitor.session {
        Some(s) => {
            let store = state.requests.clone();
            let (sub, id) = (s.principal.sub.clone(), dataset.id().clone());
            web::block(move || store.list_of(&sub, Some(&id)))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    let pending = requests.iter().any(|r| r.status == Status::Pending);
    let glance = super::glance::section(state, &caller, req, dataset, access).await;
    html! {
        section #your-access aria-labelledby="your-access-title" {
            h2 #your-access-title { "Your access" }
            @if visitor.session.is_none() {
                p.notice {
                    "You are not signed in, so this is what anyone may read. "
                    a href={ "/auth/sign-in?next=" (encode(&format!("/datasets/{}", dataset.id()))) } { "Sign in" }
                    " to see your own access or to ask for it."
                }
            }
            (decision_words(access, pending, visitor.session.is_some()))
            @match preview {
                Some(Ok((header, rows))) => {
                    h3 { "The first " (rows.len()) " rows you may see" }
                    div.scroll {
                        table #preview {
                            caption.muted { "Masked columns appear as you would receive them" }
                            thead { tr { @for h in &header { th scope="col" { (h) } } } }
                            tbody { @for row in &rows { tr { @for cell in row { td { (cell) } } } } }
                        }
                    }
                }
                Some(Err(e)) => {
                    p.notice.bad { "The preview could not be shown: " (crate::util::echo::cut_to(&e.detail(), crate::util::echo::MAX_DETAIL_BYTES)) }
                }
                None => {}
            }
            (glance)
            @if allowed && mode != "rows" {
                (example_aggregate(dataset, access))
            }
            @if !requests.is_empty() {
                h3 { "Your requests" }
                ul {
                    @for r in &requests {
                        li {
                            span class={ "status-" (r.status.as_str()) } { (capitalised(r.status.as_str())) }
                            ": “" (r.project_title) "”, asked on " (r.created.date())
                            " (" code { (r.id) } ")"
                            @if let Some(reason) = &r.reason { ". Reason: " (reason) }
                            @if r.status == Status::Approved { ". Your grant is " code { (r.grant.as_deref().unwrap_or(&r.id)) } "." }
                        }
                    }
                }
            }
            @if let Some(session) = &visitor.session {
                @if !holds_everything(access, dataset) && !pending {
                    (ask_form(state, visitor, dataset, &session.principal))
                }
            }
        }
    }
}

/// Whether an access (the `access` JSON of a dataset) already serves every
/// row and every column a grant could give: then there is nothing to ask
/// for. Someone with a row filter, a row cap, fewer columns or aggregates
/// only may still ask for more.
fn holds_everything(access: &Value, dataset: &Dataset) -> bool {
    let grantable = dataset
        .manifest
        .columns
        .iter()
        .filter(|c| c.classification != Classification::DirectIdentifier)
        .count();
    access["allowed"] == true
        && access["mode"] == "rows"
        && access["row_filter"].is_null()
        && access["max_rows"].is_null()
        && access["columns"]
            .as_array()
            .is_some_and(|columns| columns.len() == grantable)
}

/// The decision in words, from the `access` member of the dataset's JSON.
fn decision_words(access: &Value, pending: bool, signed_in: bool) -> Markup {
    if access["allowed"].as_bool() != Some(true) {
        let why = match access["reason"].as_str().unwrap_or("") {
            "token-required" => "This dataset is not open: sign in to read it.".to_owned(),
            "role-required" => "This dataset is for registered researchers, and your account does not have the researcher role.".to_owned(),
            "grant-expired" => format!(
                "Your grant {} expired on {}. Ask for a renewal below.",
                text(&access["grant"]),
                text(&access["expired"])
            ),
            "grant-ambiguous" => format!(
                "Several of your grants cover this dataset ({}); programs must choose one with grant=.",
                access["grants"].as_array().into_iter().flatten().map(text).collect::<Vec<_>>().join(", ")
            ),
            "grant-suspended" => format!(
                "Your grant {} cannot be applied as written and serves nothing until an admin fixes it.",
                text(&access["grant"])
            ),
            _ if pending => "You hold no grant for this dataset yet: your request is pending, and its decision will show here.".to_owned(),
            _ if signed_in => "You hold no grant for this dataset. You can ask for one below.".to_owned(),
            _ => "Sign in to ask for a grant.".to_owned(),
        };
        // One way to ask: the form (shown to the signed-in); the
        // publisher's own words about requests go with it, not beside it.
        return html! {
            p { strong { "You may not read this dataset. " } (why) }
        };
    }
    let basis = &access["basis"];
    let through = match basis["kind"].as_str() {
        Some("open") => "the dataset is open to everyone".to_owned(),
        Some("registered") => "you are a registered researcher".to_owned(),
        _ => format!(
            "grant {} for “{}”{}",
            text(&basis["id"]),
            text(&basis["purpose"]),
            basis["expires"]
                .as_str()
                .map(|e| format!(", valid until {e}"))
                .unwrap_or_default()
        ),
    };
    let mode = match access["mode"].as_str() {
        Some("aggregate") => {
            "Aggregates only: counts and sums of groups large enough to publish, never rows."
        }
        Some("dp") => {
            "Differentially private statistics only, each paid from your project's privacy budget."
        }
        _ => "Rows: you may download the columns below.",
    };
    let columns: Vec<String> = access["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| match c["mask"].as_str() {
            Some(mask) => format!("{} (masked: {mask})", text(&c["name"])),
            None => text(&c["name"]),
        })
        .collect();
    html! {
        p { strong { "You may read this dataset" } ", because " (through) "." }
        dl.facts {
            dt { "What you get" } dd { (mode) }
            dt { "Columns" } dd { (columns.join(", ")) }
            dt { "Rows" } dd {
                @match access["row_filter"].as_str() {
                    Some(f) => { "only rows where " code { (f) } }
                    None => "all rows",
                }
            }
            @if let Some(cap) = access["max_rows"].as_u64() { dt { "Row cap" } dd { "at most " (cap) " rows per request" } }
            @if let Some(budget) = access.get("privacy_budget") {
                dt { "Privacy budget" } dd { "epsilon " (text(&budget["remaining"])) " left of " (text(&budget["epsilon"])) }
            }
        }
    }
}

fn example_aggregate(dataset: &Dataset, access: &Value) -> Markup {
    let visible: Vec<String> = access["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| text(&c["name"]))
        .collect();
    let group = dataset
        .manifest
        .columns
        .iter()
        .find(|c| {
            c.groupable
                && (!c.categories.is_empty() || c.bins.is_some())
                && visible.iter().any(|v| v == c.name.as_str())
        })
        .map(|c| c.name.to_string());
    let url = match &group {
        Some(g) => format!(
            "/v1/datasets/{}/aggregate?group_by={g}&measures=count",
            dataset.id()
        ),
        None => format!("/v1/datasets/{}/aggregate?measures=count", dataset.id()),
    };
    html! {
        h3 { "An example aggregate" }
        p { "Rows are not shown here. Ask for counts of groups instead, for example:" }
        pre { code { "GET " (url) } }
    }
}

/// The form a signed-in researcher fills to ask for access.
fn ask_form(
    state: &AppState,
    visitor: &Visitor,
    dataset: &Dataset,
    principal: &Principal,
) -> Markup {
    let columns: Vec<&str> = dataset
        .manifest
        .columns
        .iter()
        .filter(|c| c.classification != Classification::DirectIdentifier)
        .map(|c| c.name.as_str())
        .collect();
    html! {
        h3 #request-title { "Ask for access" }
        p { "An admin reads your request and decides. Your answer appears here." }
        @if let Some(how) = &dataset.manifest.access_request {
            p { "What the publisher asks of requests: " (how) }
        }
        form method="post" action={ "/datasets/" (dataset.id()) "/request-access" } aria-labelledby="request-title" {
            input type="hidden" name="csrf" value=(visitor.csrf(state));
            div.form-row {
                label for="project_title" { "Project title" }
                input #project_title type="text" name="project_title" required maxlength="200";
            }
            div.form-row {
                label for="purpose" { "Purpose: what you will do with the data" }
                textarea #purpose name="purpose" rows="4" required maxlength="2000" {}
            }
            div.form-row {
                label for="organisation" { "Organisation" }
                input #organisation type="text" name="organisation" value=(principal.organisation.as_deref().unwrap_or("")) maxlength="200";
            }
            fieldset {
                legend { "Columns you need (direct identifiers are never served)" }
                @for c in &columns {
                    label { input type="checkbox" name="columns" value=(c); (c) }
                }
            }
            div.form-row {
                label for="duration_days" { "For how long" }
                select #duration_days name="duration_days" {
                    option value="90" { "3 months" }
                    option value="180" selected { "6 months" }
                    option value="365" { "1 year" }
                    option value="730" { "2 years" }
                }
            }
            button type="submit" { "Send the request" }
        }
    }
}

/// `POST /datasets/{id}/request-access`: the page's form. Answers with a
/// redirect to the dataset's page (which shows the request), or an error
/// page.
pub(super) async fn request_form(
    state: web::Data<AppState>,
    visitor: Visitor,
    path: web::Path<String>,
    payload: web::Payload,
    req: HttpRequest,
) -> HttpResponse {
    let result = async {
        same_origin(&req, &state)?;
        // Only the signed-in may ask, and only for a dataset they can see:
        // both are known before the body is read.
        if visitor.session.is_none() {
            return Err(ApiError::SignInFailed("sign in to ask for access"));
        }
        catalog_routes::visible_dataset(&state, &Default::default(), &path)?;
        let form = visitor.checked_form(&state, &req, payload).await?;
        let caller = visitor.caller();
        let organisation = field(&form, "organisation");
        let body = RequestBody {
            project_title: field(&form, "project_title").to_owned(),
            purpose: field(&form, "purpose").to_owned(),
            organisation: (!organisation.is_empty()).then(|| organisation.to_owned()),
            columns: form
                .iter()
                .filter(|(k, _)| k == "columns")
                .map(|(_, v)| v.clone())
                .collect(),
            duration_days: field(&form, "duration_days").parse().unwrap_or(0),
        };
        keep_request(&state, &caller, &path, body).await
    }
    .await;
    match result {
        Ok(_) => HttpResponse::SeeOther()
            .insert_header((
                header::LOCATION,
                format!("/datasets/{}#your-access", encode(&path)),
            ))
            .finish(),
        Err(e) => error_page(&state, &visitor, &req, e),
    }
}

/// The body of `POST /v1/datasets/{id}/access-requests`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct RequestBody {
    project_title: String,
    purpose: String,
    #[serde(default)]
    organisation: Option<String>,
    columns: Vec<String>,
    duration_days: u32,
}

/// `POST /v1/datasets/{id}/access-requests`: the same request from a program.
#[utoipa::path(post, path = "/v1/datasets/{id}/access-requests", tag = "researchers", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions")), request_body = RequestBody, security(("bearer" = [])), responses((status = 201, description = "The request, pending until an admin decides", body = Object)))]
pub(in crate::http) async fn create_request(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Who asks is known from the head: no body is read for nobody.
    caller.principal().ok_or(ApiError::TokenRequired)?;
    let body: RequestBody =
        crate::http::body::parse_json(&state, &req, payload, "access request").await?;
    let request = keep_request(&state, &caller, &path, body).await?;
    Ok(HttpResponse::Created().json(request_json(&request)))
}

/// Checks a request against the dataset and the caller, keeps it, and
/// records it in the audit trail (on disk before the answer).
async fn keep_request(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    body: RequestBody,
) -> Result<AccessRequest, ApiError> {
    let principal = caller.principal().ok_or(ApiError::TokenRequired)?;
    // A token narrowed to one dataset or grant reads; it asks for nothing.
    if principal.scope.as_ref().is_some_and(|s| s.narrows()) {
        return Err(ApiError::PersonalTokenRefused(
            "a personal token narrowed to a dataset or grant cannot ask for access: use your own sign-in".into(),
        ));
    }
    // Access is asked for by researchers (a steward's or an admin's token
    // is not a researcher's).
    if !principal.has_role(crate::auth::Role::Researcher) {
        return Err(ApiError::Denied(crate::policy::Denial::RoleRequired {
            role: crate::auth::Role::Researcher,
        }));
    }
    let dataset = catalog_routes::visible_dataset(state, &Default::default(), raw_id)?;
    // Someone who may already read every row and column has nothing to ask for.
    let today = time::OffsetDateTime::now_utc().date();
    let decision = crate::policy::evaluate(
        &state.policy.current(),
        caller,
        &dataset.manifest,
        None,
        today,
    );
    if holds_everything(&crate::policy::decision_json(&decision), &dataset) {
        return Err(ApiError::Conflict {
            kind: crate::http::problem::ConflictKind::AccessHeld,
            detail: "you may already read every row and column of this dataset that a grant could give; there is nothing to ask for".into(),
        });
    }
    let mut columns = Vec::new();
    for name in body.columns {
        let known = dataset
            .manifest
            .columns
            .iter()
            .find(|c| c.name.as_str() == name)
            .filter(|c| c.classification != Classification::DirectIdentifier);
        match known {
            Some(c) if !columns.contains(&c.name.to_string()) => columns.push(c.name.to_string()),
            Some(_) => {}
            None => {
                return Err(ApiError::InvalidParameter(format!(
                    "columns: '{}' is not a column of this dataset that can be granted",
                    crate::util::echo::cut(&name)
                )));
            }
        }
    }
    let organisation = body
        .organisation
        .map(|o| o.trim().chars().take(200).collect::<String>())
        .filter(|o| !o.is_empty())
        .or_else(|| principal.organisation.clone());
    let new = NewRequest {
        dataset: dataset.id().clone(),
        subject: principal.sub.clone(),
        organisation,
        project_title: body.project_title,
        purpose: body.purpose,
        columns,
        duration_days: body.duration_days,
    };
    let store = state.requests.clone();
    let request = web::block(move || store.create(new))
        .await
        .map_err(|_| crate::util::internal::Internal::new("keeping an access request"))?
        .map_err(|e| match e {
            RequestError::Invalid(detail) => ApiError::InvalidParameter(detail),
            RequestError::TooMany | RequestError::Full => {
                ApiError::TooManyAccessRequests(e.to_string())
            }
            RequestError::Io(e) => {
                tracing::error!(error = %e, "an access request could not be kept");
                ApiError::StorageUnavailable
            }
            other => ApiError::Internal(crate::util::internal::Internal::caused(
                "keeping an access request",
                other,
            )),
        })?;
    let mut record = trail::request_record(Event::AccessRequest, caller, dataset.id().as_str());
    record.phase = None;
    record.decision = Some(Decision::Pending);
    record.grant = Some(request.id.clone());
    record.purpose = Some(request.project_title.clone());
    record.columns = Some(request.columns.clone());
    if let Err(e) = state.audit.append_durable(record).await {
        // No request is kept without its record: it goes again.
        tracing::error!(error = %e, request = %request.id, "a kept access request could not be audited; withdrawn");
        let _ = state.requests.withdraw(&request.id);
        return Err(ApiError::AuditUnavailable);
    }
    tracing::info!(request = %request.id, dataset = %dataset.id(), "access request received");
    Ok(request)
}

fn request_json(r: &AccessRequest) -> Value {
    json!({
        "id": r.id,
        "dataset": r.dataset,
        "subject": r.subject,
        "organisation": r.organisation,
        "project_title": r.project_title,
        "purpose": r.purpose,
        "columns": r.columns,
        "duration_days": r.duration_days,
        "created": r.created.format(&time::format_description::well_known::Rfc3339).ok(),
        "status": r.status.as_str(),
        "decided": r.decided.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        "reason": r.reason,
        "grant": r.grant,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct ListParams {
    /// `pending`, `approved` or `rejected`.
    status: Option<String>,
    /// 1–1000, default 100.
    page_size: Option<usize>,
    /// From `next_page_token`.
    page_token: Option<String>,
}

/// `GET /v1/access-requests`: admins see every request, anyone else signed
/// in their own; newest first.
#[utoipa::path(get, path = "/v1/access-requests", tag = "researchers", params(ListParams), security(("bearer" = [])), responses((status = 200, description = "Access requests: all of them for admins, your own otherwise", body = Object)))]
pub(in crate::http) async fn list_requests(
    state: web::Data<AppState>,
    caller: Caller,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.principal().ok_or(ApiError::TokenRequired)?;
    let status = match params.status.as_deref() {
        None => None,
        Some("pending") => Some(Status::Pending),
        Some("approved") => Some(Status::Approved),
        Some("rejected") => Some(Status::Rejected),
        Some("revoked") => Some(Status::Revoked),
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "status '{}' is not pending, approved, rejected or revoked",
                crate::util::echo::cut(other)
            )));
        }
    };
    let admin = principal.has_role(Role::Admin);
    let store = state.requests.clone();
    let all = web::block(move || store.list())
        .await
        .map_err(|_| crate::util::internal::Internal::new("listing access requests"))?
        .map_err(|e| crate::util::internal::Internal::caused("listing access requests", e))?;
    let page_size = params.page_size.unwrap_or(100).clamp(1, 1000);
    let skip = crate::http::admin_routes::offset_of(params.page_token.as_deref())?;
    let mut matching = all
        .iter()
        .filter(|r| admin || r.subject == principal.sub)
        .filter(|r| status.is_none_or(|s| r.status == s));
    let shown: Vec<Value> = matching
        .by_ref()
        .skip(skip)
        .take(page_size)
        .map(request_json)
        .collect();
    let next = matching.next().map(|_| (skip + shown.len()).to_string());
    Ok(HttpResponse::Ok().json(json!({ "requests": shown, "next_page_token": next })))
}
