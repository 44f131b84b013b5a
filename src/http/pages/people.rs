//! Pages for the people who run the catalogue: a steward's datasets
//! (drafts, published, retired, each with its upload history) and the
//! admin's desk (access requests waiting, with the command that decides
//! each, and the newest audit records).

use actix_web::{HttpRequest, HttpResponse, web};
use maud::html;

use super::Visitor;
use super::catalogue::{capitalised, tier_badge};
use super::layout::{bytes, encode, error_page, page};
use crate::access_request::Status as RequestStatus;
use crate::audit::Event;
use crate::auth::Role;
use crate::catalog::{Dataset, Status};
use crate::http::AppState;
use crate::http::problem::ApiError;
use crate::policy::steward::steward_scope;

/// Audit records shown on the admin page.
const AUDIT_ROWS: usize = 50;
/// Pending access requests shown on the admin page (oldest first).
const PENDING_SHOWN: usize = 100;

/// `GET /steward`: the datasets this steward (or admin) looks after.
pub(super) async fn steward(
    state: web::Data<AppState>,
    visitor: Visitor,
    req: HttpRequest,
) -> HttpResponse {
    if let Some(answer) = refusal(&state, &visitor, &[Role::Steward, Role::Admin], &req) {
        return answer;
    }
    let scope = steward_scope(&visitor.caller());
    let catalog = state.catalog.snapshot();
    let mut mine: Vec<&Dataset> = catalog
        .datasets()
        .map(|d| d.as_ref())
        .filter(|d| d.stewarded_by(&scope))
        .collect();
    mine.sort_by(|a, b| a.manifest.title.cmp(&b.manifest.title));
    let groups = [
        (Status::Draft, "Drafts (registered, no data yet)"),
        (Status::Published, "Published"),
        (Status::Retired, "Retired"),
    ];
    let content = html! {
        h1 { "Your datasets" }
        p.muted { "Register, upload and edit through the API or the CLI (" code { "sluice register" } "); this page shows where each dataset stands." }
        @for (status, heading) in groups {
            h2 { (heading) }
            @let these: Vec<&&Dataset> = mine.iter().filter(|d| d.status() == status).collect();
            @if these.is_empty() { p.muted { "None." } }
            @for d in these {
                h3 { a href={ "/datasets/" (d.id()) } { (d.manifest.title) } " " (tier_badge(d.manifest.tier)) }
                p.muted { code { (d.id()) } " · " (d.manifest.publisher) }
                @if let Some(review) = d.in_review() {
                    p.notice { "Version " (review.number) " (" (review.rows) " rows) waits for review: " code { "POST /v1/datasets/" (d.id()) "/publish" } }
                }
                @let versions: Vec<_> = d.published_versions().collect();
                @if !versions.is_empty() {
                    div.scroll {
                        table {
                            caption.muted { "Uploads of " (d.id()) }
                            thead { tr { th scope="col" { "Version" } th scope="col" { "Published" } th scope="col" { "Rows" } th scope="col" { "Size" } } }
                            tbody {
                                @for v in versions.iter().rev() {
                                    tr { th scope="row" { (v.number) } td { (v.published.date()) } td { (v.rows) } td { (bytes(v.bytes)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&state, &visitor, &req, "Your datasets", content)
}

/// `GET /admin`: access requests and the newest audit records.
pub(super) async fn admin(
    state: web::Data<AppState>,
    visitor: Visitor,
    req: HttpRequest,
) -> HttpResponse {
    if let Some(answer) = refusal(&state, &visitor, &[Role::Admin], &req) {
        return answer;
    }
    let store = state.requests.clone();
    let audit_dir = state.audit.dir().map(ToOwned::to_owned);
    let read = web::block(move || {
        let requests = store.list();
        let records = audit_dir.map(|dir| crate::audit::read_newest(&dir, AUDIT_ROWS));
        (requests, records)
    })
    .await;
    let (requests, records) = match read {
        Ok((Ok(requests), records)) => (requests, records),
        _ => {
            let e = crate::util::internal::Internal::new("reading access requests");
            return error_page(&state, &visitor, &req, e.into());
        }
    };
    let records = match records {
        Some(Ok(all)) => {
            let skip = all.len().saturating_sub(AUDIT_ROWS);
            all.into_iter().skip(skip).rev().collect()
        }
        _ => Vec::new(),
    };
    let changes =
        crate::http::change_routes::pending_changes(&state, &steward_scope(&visitor.caller()));
    let (pending, decided): (Vec<_>, Vec<_>) = requests
        .iter()
        .partition(|r| r.status == RequestStatus::Pending);
    let content = html! {
        h1 { "Admin" }
        h2 { "Access requests waiting (" (pending.len()) ")" }
        @if pending.is_empty() { p.muted { "None." } }
        @if pending.len() > PENDING_SHOWN {
            p.muted { "The oldest " (PENDING_SHOWN) " are shown; " code { "sluice access list --status pending" } " lists all." }
        }
        @for r in pending.iter().rev().take(PENDING_SHOWN) {
            article {
                h3 { "“" (r.project_title) "” — " a href={ "/datasets/" (r.dataset) } { (r.dataset) } }
                p { strong { (r.subject) } @if let Some(org) = &r.organisation { " (" (org) ")" } ", asked on " (r.created.date()) " for " (r.duration_days) " days: " (r.columns.join(", ")) }
                p { (r.purpose) }
                p.muted { "Decide on the server: " }
                pre { code { "sluice access approve " (r.id) "\nsluice access reject " (r.id) " --reason \"…\"" } }
            }
        }
        h2 { "Dataset changes waiting (" (changes.len()) ")" }
        @if changes.is_empty() { p.muted { "None." } }
        @for c in &changes {
            @let dataset = c["dataset"].as_str().unwrap_or_default();
            @let number = c["number"].as_u64().unwrap_or_default();
            article {
                h3 { "Change " (number) " — " a href={ "/datasets/" (dataset) } { (dataset) } }
                p { "Proposed by " strong { (c["proposed_by"].as_str().unwrap_or_default()) } " on " (c["proposed_at"].as_str().unwrap_or_default()) }
                ul {
                    @for f in c["fields"].as_array().into_iter().flatten() {
                        li { code { (f["field"].as_str().unwrap_or_default()) } ": " (f["old"].as_str().unwrap_or("unset")) " → " (f["new"].as_str().unwrap_or("unset")) }
                    }
                    @for finding in c["findings"].as_array().into_iter().flatten() {
                        li { (finding.as_str().unwrap_or_default()) }
                    }
                }
                pre { code { "sluice datasets approve " (dataset) " " (number) "\nsluice datasets reject " (dataset) " " (number) " --reason \"…\"" } }
            }
        }
        h2 { "Decided" }
        @if decided.is_empty() { p.muted { "None." } }
        ul {
            @for r in decided.iter().take(50) {
                li { span class={ "status-" (r.status.as_str()) } { (capitalised(r.status.as_str())) } " " code { (r.id) } ": " (r.subject) ", " (r.dataset) @if let Some(by) = &r.decided_by { ", by " (by) } }
            }
        }
        h2 { "Newest audit records" }
        p.muted { "All of them, filtered: " a href={ "/v1/audit?page_size=" (encode("100")) } { "GET /v1/audit" } " with an admin token, or " code { "sluice audit tail" } "." }
        div.scroll {
            table {
                thead { tr { th scope="col" { "Time" } th scope="col" { "Event" } th scope="col" { "Who" } th scope="col" { "Dataset" } th scope="col" { "Decision" } th scope="col" { "Outcome" } th scope="col" { "Rows" } } }
                tbody {
                    @for r in &records {
                        tr {
                            td { (r.time.get(..19).unwrap_or(&r.time)) }
                            td { (r.event.as_str()) }
                            td { (r.subject.as_deref().unwrap_or(if r.event == Event::PolicyReload { "the server" } else { "anonymous" })) }
                            td { (r.dataset.as_deref().unwrap_or("")) }
                            td { (r.decision.map(|d| d.as_str()).unwrap_or("")) }
                            td { (r.outcome.map(|o| o.as_str()).unwrap_or("")) }
                            td { (r.rows.map(|n| n.to_string()).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    };
    page(&state, &visitor, &req, "Admin", content)
}

/// Nothing when the visitor is signed in with one of `roles`; else the
/// answer: off to sign in, or 403.
fn refusal(
    state: &AppState,
    visitor: &Visitor,
    roles: &[Role],
    req: &HttpRequest,
) -> Option<HttpResponse> {
    match &visitor.session {
        None => Some(
            HttpResponse::SeeOther()
                .insert_header((
                    actix_web::http::header::LOCATION,
                    format!("/auth/sign-in?next={}", encode(req.path())),
                ))
                .finish(),
        ),
        Some(_) if roles.iter().any(|r| visitor.has_role(*r)) => None,
        Some(_) => Some(error_page(
            state,
            visitor,
            req,
            ApiError::AdminRequired(format!(
                "this page is for {}; your account does not have that role",
                if roles.contains(&Role::Steward) {
                    "stewards and admins"
                } else {
                    "admins"
                }
            )),
        )),
    }
}
