//! "Your tokens" (`/me/tokens`): a signed-in person makes personal access
//! tokens for their programs (named, for all their access or one dataset
//! or grant, for a number of days), sees the new one once, lists theirs
//! with last use, and revokes any. The same work as `/v1/me/tokens`
//! ([`crate::http::token_routes`]).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use serde_json::Value;

use super::layout::{error_page, page};
use super::sign_in::field;
use super::{Visitor, same_origin};
use crate::auth::Principal;
use crate::http::AppState;
use crate::http::problem::ApiError;
use crate::http::token_routes::{self, NewTokenBody};

fn signed_in(visitor: &Visitor) -> Result<&Principal, ApiError> {
    visitor
        .session
        .as_ref()
        .map(|s| &s.principal)
        .ok_or(ApiError::SignInFailed("sign in to manage your tokens"))
}

/// `GET /me/tokens`.
pub(super) async fn tokens_page(
    state: web::Data<AppState>,
    visitor: Visitor,
    req: HttpRequest,
) -> HttpResponse {
    match signed_in(&visitor) {
        Ok(principal) => show(&state, &visitor, &req, principal, None).await,
        Err(e) => error_page(&state, &visitor, &req, e),
    }
}

/// `POST /me/tokens`: makes one, and shows it this once.
pub(super) async fn create_form(
    state: web::Data<AppState>,
    visitor: Visitor,
    payload: web::Payload,
    req: HttpRequest,
) -> HttpResponse {
    let made = async {
        same_origin(&req, &state)?;
        let principal = signed_in(&visitor)?;
        let form = visitor.checked_form(&state, &req, payload).await?;
        // A scope the form does not offer is refused, never read as "all".
        let (dataset, grant) = match field(&form, "scope").split_once(':') {
            _ if field(&form, "scope") == "all" => (None, None),
            Some(("dataset", d)) if !d.is_empty() => (Some(d.to_owned()), None),
            Some(("grant", g)) if !g.is_empty() => (None, Some(g.to_owned())),
            _ => {
                return Err(ApiError::InvalidParameter(
                    "scope must be all, dataset:<id> or grant:<id>".into(),
                ));
            }
        };
        let body = NewTokenBody {
            name: field(&form, "name").to_owned(),
            dataset,
            grant,
            days: field(&form, "days").parse().ok(),
        };
        let (text, _) = token_routes::create_for(&state, principal, body).await?;
        Ok::<_, ApiError>((principal.clone(), text))
    }
    .await;
    match made {
        Ok((principal, text)) => show(&state, &visitor, &req, &principal, Some(text)).await,
        Err(e) => error_page(&state, &visitor, &req, e),
    }
}

/// `POST /me/tokens/{id}/revoke`.
pub(super) async fn revoke_form(
    state: web::Data<AppState>,
    visitor: Visitor,
    path: web::Path<String>,
    payload: web::Payload,
    req: HttpRequest,
) -> HttpResponse {
    let revoked = async {
        same_origin(&req, &state)?;
        let principal = signed_in(&visitor)?;
        visitor.checked_form(&state, &req, payload).await?;
        token_routes::revoke_for(&state, principal, &path).await
    }
    .await;
    match revoked {
        Ok(()) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/me/tokens"))
            .finish(),
        Err(e) => error_page(&state, &visitor, &req, e),
    }
}

async fn show(
    state: &AppState,
    visitor: &Visitor,
    req: &HttpRequest,
    principal: &Principal,
    new: Option<String>,
) -> HttpResponse {
    let tokens = match state.personal_tokens.list_of(&principal.sub).await {
        Ok(tokens) => tokens,
        Err(e) => {
            let e: ApiError = crate::util::internal::Internal::new(e.to_string()).into();
            return error_page(state, visitor, req, e);
        }
    };
    let grants: Vec<String> = state
        .policy
        .current()
        .grants
        .iter()
        .filter(|g| g.applies_to(principal))
        .map(|g| g.id.clone())
        .collect();
    let datasets: Vec<String> = state
        .catalog
        .snapshot()
        .datasets()
        .filter(|d| d.manifest.is_live())
        .map(|d| d.id().to_string())
        .collect();
    let content = html! {
        h1 { "Your tokens" }
        p { "A personal token lets a program (a script, a notebook, the " code { "sluice" } " CLI) read what you may read, as you, without your password. It never acts as an admin. Keep it like a password; revoke it here when you no longer need it." }
        @if let Some(text) = &new {
            section.notice aria-labelledby="new-token" {
                h2 #new-token { "Your new token: copy it now" }
                p { "It is shown this once; only a hash of it is kept." }
                pre #token-value { code { (text) } }
                p { "Use it as " code { "export SLUICE_TOKEN=…" } ", or keep it for the CLI with " code { "sluice login --paste --server " (state.public_url.as_deref().unwrap_or("https://this-server")) } " (paste it when asked)." }
            }
        }
        (new_form(state, visitor, &grants, &datasets))
        h2 { "Tokens you hold" }
        @if tokens.is_empty() {
            p.muted { "None." }
        } @else {
            div.scroll {
                table #tokens {
                    caption.muted { "Live tokens, newest first" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "For" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { "" } } }
                    tbody {
                        @for t in &tokens {
                            @let shown = t.public_json();
                            tr {
                                th scope="row" { (t.name) }
                                td { (scope_words(&shown)) }
                                td { (shown["expires"].as_str().unwrap_or("")) }
                                td { (shown["last_used"].as_str().unwrap_or("never")) }
                                td {
                                    form method="post" action={ "/me/tokens/" (t.id) "/revoke" } {
                                        input type="hidden" name="csrf" value=(visitor.csrf(state));
                                        button type="submit" aria-label={ "Revoke " (t.name) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(state, visitor, req, "Your tokens", content)
}

fn scope_words(shown: &Value) -> String {
    match (shown["dataset"].as_str(), shown["grant"].as_str()) {
        (Some(d), _) => format!("dataset {d}"),
        (None, Some(g)) => format!("grant {g}"),
        _ => "all your access".into(),
    }
}

fn new_form(state: &AppState, visitor: &Visitor, grants: &[String], datasets: &[String]) -> Markup {
    html! {
        h2 #make-title { "Make a token" }
        form method="post" action="/me/tokens" aria-labelledby="make-title" {
            input type="hidden" name="csrf" value=(visitor.csrf(state));
            div.form-row {
                label for="token-name" { "Name (what it is for)" }
                input #token-name type="text" name="name" required maxlength="100";
            }
            div.form-row {
                label for="token-scope" { "What it may read" }
                select #token-scope name="scope" {
                    option value="all" selected { "All your access" }
                    @for d in datasets { option value={ "dataset:" (d) } { "Only dataset " (d) } }
                    @for g in grants { option value={ "grant:" (g) } { "Only through grant " (g) } }
                }
            }
            div.form-row {
                label for="token-days" { "For how long" }
                select #token-days name="days" {
                    option value="7" { "7 days" }
                    option value="30" selected { "30 days" }
                    @if state.personal_token_max_days >= 90 { option value="90" { "90 days" } }
                }
            }
            button type="submit" { "Make the token" }
        }
    }
}
