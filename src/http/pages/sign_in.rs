//! Signing in to the pages and out again.
//!
//! With `auth.oidc`: `GET /auth/oidc` keeps a pending sign-in (PKCE
//! verifier, nonce, where to return) under a fresh `state`, sets that
//! `state` in a short-lived cookie, and sends the browser to the provider;
//! `GET /auth/callback` accepts only the `state` this browser holds, takes
//! the pending sign-in once, exchanges the code, verifies the ID token
//! ([`crate::auth::oidc`]) and starts a new session. In dev mode the sign-in page
//! also offers sample identities (a CSRF-checked POST). Sign-out is a
//! CSRF-checked POST that ends the session on the server. Sign-ins and
//! sign-outs are audited.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::html;
use serde::Deserialize;

use super::layout::{encode, error_page, page};
use super::{LOGIN_COOKIE, SESSION_COOKIE, Visitor, cookie, removal, same_origin};
use crate::audit::{Decision, Event, Outcome};
use crate::auth::session::{PENDING_TTL, PendingLogin, local_path};
use crate::auth::{Caller, Principal, Role};
use crate::http::problem::ApiError;
use crate::http::{AppState, public_base, trail};

/// A sample identity dev mode offers, matching the shipped policy and
/// sample catalogue.
struct DevIdentity {
    sub: &'static str,
    roles: &'static [Role],
    groups: &'static [&'static str],
    organisation: Option<&'static str>,
    /// What signing in as it shows.
    shows: &'static str,
}

const fn dev(
    sub: &'static str,
    roles: &'static [Role],
    groups: &'static [&'static str],
    organisation: Option<&'static str>,
    shows: &'static str,
) -> DevIdentity {
    DevIdentity {
        sub,
        roles,
        groups,
        organisation,
        shows,
    }
}

const DEV_IDENTITIES: &[DevIdentity] = &[
    dev(
        "alice@uni.example",
        &[Role::Researcher],
        &[],
        None,
        "researcher with a grant for hospital admissions",
    ),
    dev(
        "carol@uni.example",
        &[Role::Researcher],
        &[],
        Some("University of Example"),
        "researcher with no grant yet",
    ),
    dev(
        "nora@nhs.example",
        &[Role::Researcher],
        &["nhs-north-analysts"],
        None,
        "analyst: northern rows only",
    ),
    dev(
        "stats@agency.example",
        &[Role::Researcher],
        &[],
        Some("Example Public Health Agency"),
        "aggregate-only access",
    ),
    dev(
        "dp@network.example",
        &[Role::Researcher],
        &[],
        Some("Open Health Research Network"),
        "differentially private access",
    ),
    dev(
        "sam@health.example",
        &[Role::Steward],
        &[],
        Some("Example Health Data Service"),
        "steward of hospital admissions",
    ),
    dev(
        "pat@observatory.example",
        &[Role::Steward],
        &[],
        Some("Public Health Observatory"),
        "steward of a publisher with no datasets yet (registers new ones)",
    ),
    dev(
        "ada@sluice.example",
        &[Role::Admin, Role::Steward],
        &[],
        Some("Example Health Data Service"),
        "admin",
    ),
];

#[derive(Debug, Deserialize)]
pub(super) struct NextParam {
    next: Option<String>,
}

/// `GET /auth/sign-in`: how to sign in here.
pub(super) async fn sign_in_page(
    state: web::Data<AppState>,
    visitor: Visitor,
    params: web::Query<NextParam>,
    req: HttpRequest,
) -> HttpResponse {
    let next = local_path(params.next.as_deref().unwrap_or("/"));
    let oidc = state.web.oidc.as_ref();
    let content = html! {
        h1 { "Sign in" }
        @if let Some(session) = &visitor.session {
            p.notice { "You are signed in as " strong { (session.principal.sub) } ". Signing in again replaces this session." }
        }
        @if let Some(provider) = oidc {
            p { a href={ "/auth/oidc?next=" (encode(&next)) } { "Sign in with " (provider.label()) } }
        }
        @if state.web.dev_mode {
            h2 { "Development identities" }
            p.muted { "This server runs in development mode: pick a sample identity. A production server signs people in through their institution only." }
            form method="post" action="/auth/dev" {
                input type="hidden" name="csrf" value=(visitor.csrf(&state));
                input type="hidden" name="next" value=(next);
                fieldset {
                    legend { "Sign in as" }
                    @for (i, who) in DEV_IDENTITIES.iter().enumerate() {
                        div {
                            label {
                                input type="radio" name="identity" value=(who.sub) required checked[i == 0];
                                strong { (who.sub) } " — " (who.shows)
                                @if let Some(org) = who.organisation { " (" (org) ")" }
                                " [" (who.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>().join(", ")) "]"
                            }
                        }
                    }
                }
                button type="submit" { "Sign in" }
            }
        }
        @if oidc.is_none() && !state.web.dev_mode {
            p { "This server has no sign-in for people configured (auth.oidc). Programs use bearer tokens." }
        }
    };
    page(&state, &visitor, &req, "Sign in", content)
}

/// `GET /auth/oidc`: off to the identity provider.
pub(super) async fn start(
    state: web::Data<AppState>,
    visitor: Visitor,
    params: web::Query<NextParam>,
    req: HttpRequest,
) -> HttpResponse {
    let result = async {
        let provider = state.web.oidc.as_ref().ok_or(ApiError::RouteNotFound)?;
        let authorization = provider
            .authorize(&redirect_uri(&state, &req))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "sign-in could not start");
                ApiError::SignInFailed(
                    "the identity provider cannot be reached now; try again in a minute",
                )
            })?;
        let next = local_path(params.next.as_deref().unwrap_or("/"));
        // Kept by the browser, sealed: starting sign-ins costs no memory here.
        let login = PendingLogin::new(
            authorization.state,
            authorization.verifier,
            authorization.nonce,
            next,
        );
        Ok::<_, ApiError>((authorization.url, state.web.sessions.seal_login(&login)))
    }
    .await;
    match result {
        Ok((url, sealed)) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .cookie(cookie(
                LOGIN_COOKIE,
                sealed,
                Some(PENDING_TTL.as_secs() as i64),
            ))
            .finish(),
        Err(e) => error_page(&state, &visitor, &req, e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    /// RFC 9207: the issuer of this answer, when the provider says.
    iss: Option<String>,
}

/// `GET /auth/callback`: back from the provider.
pub(super) async fn callback(
    state: web::Data<AppState>,
    visitor: Visitor,
    params: web::Query<CallbackParams>,
    req: HttpRequest,
) -> HttpResponse {
    let result = async {
        let provider = state.web.oidc.as_ref().ok_or(ApiError::RouteNotFound)?;
        if let Some(error) = &params.error {
            tracing::info!(error = %crate::util::echo::cut(error), "the identity provider refused the sign-in");
            return Err(ApiError::SignInFailed("the identity provider did not sign you in"));
        }
        // RFC 9207: an answer naming another issuer is from another
        // provider (a mix-up attack), whatever its code.
        if params.iss.as_deref().is_some_and(|iss| iss != provider.issuer()) {
            tracing::info!("sign-in refused: the answer names another issuer");
            return Err(ApiError::SignInFailed("the sign-in answer came from another identity provider; start again"));
        }
        let (Some(code), Some(returned)) = (&params.code, &params.state) else {
            return Err(ApiError::SignInFailed("the sign-in answer is incomplete; start again"));
        };
        // The sign-in this browser started, sealed by this server and not
        // older than ten minutes; its state must be the one returned, so a
        // callback carried to another browser (login CSRF) finds no match.
        let login = req
            .cookie(LOGIN_COOKIE)
            .and_then(|c| state.web.sessions.open_login(c.value()))
            .ok_or(ApiError::SignInFailed("this sign-in has expired or was not started in this browser; start again"))?;
        if login.state != *returned {
            tracing::info!("sign-in refused: state does not match this browser's");
            return Err(ApiError::SignInFailed("this sign-in was not started in this browser; start again"));
        }
        let principal = provider
            .finish(code, &login.verifier, &login.nonce, &redirect_uri(&state, &req))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "sign-in failed");
                ApiError::SignInFailed("the identity provider's answer could not be verified; start again")
            })?;
        Ok::<_, ApiError>((principal, login.next))
    }
    .await;
    let result = match result {
        Ok((principal, next)) => signed_in(&state, &visitor, principal, "oidc", &next).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(mut answer) => answer.cookie(removal(LOGIN_COOKIE)).finish(),
        Err(e) => {
            let mut response = error_page(&state, &visitor, &req, e);
            let _ = response.add_cookie(&removal(LOGIN_COOKIE));
            response
        }
    }
}

/// `POST /auth/dev`: dev mode's sample identities (form: `csrf`,
/// `identity`, `next`).
pub(super) async fn dev_sign_in(
    state: web::Data<AppState>,
    visitor: Visitor,
    payload: web::Payload,
    req: HttpRequest,
) -> HttpResponse {
    let result = async {
        if !state.web.dev_mode {
            return Err(ApiError::RouteNotFound);
        }
        same_origin(&req, &state)?;
        let form = visitor.checked_form(&state, &req, payload).await?;
        let who = DEV_IDENTITIES
            .iter()
            .find(|who| who.sub == field(&form, "identity"))
            .ok_or_else(|| {
                ApiError::InvalidParameter("identity: not one of the sample identities".into())
            })?;
        let principal = Principal {
            sub: who.sub.to_owned(),
            roles: who.roles.iter().copied().collect(),
            groups: who.groups.iter().map(|g| (*g).to_owned()).collect(),
            organisation: who.organisation.map(str::to_owned),
            visas: Vec::new(),
            expires: None,
            scope: None,
        };
        let next = local_path(field(&form, "next"));
        signed_in(&state, &visitor, principal, "dev", &next).await
    }
    .await;
    match result {
        Ok(mut answer) => answer.finish(),
        Err(e) => error_page(&state, &visitor, &req, e),
    }
}

/// `POST /auth/sign-out` (form: `csrf`).
pub(super) async fn sign_out(
    state: web::Data<AppState>,
    visitor: Visitor,
    payload: web::Payload,
    req: HttpRequest,
) -> HttpResponse {
    let checked = async {
        same_origin(&req, &state)?;
        // Nobody to sign out: no body is read.
        if visitor.session.is_none() {
            return Ok(());
        }
        visitor.checked_form(&state, &req, payload).await.map(drop)
    }
    .await;
    if let Err(e) = checked {
        return error_page(&state, &visitor, &req, e);
    }
    let mut next = "/".to_owned();
    if let Some(session) = &visitor.session {
        state.web.sessions.end(&session.id).await;
        let mut record = trail::request_record(Event::SignOut, &visitor.caller(), "");
        record.phase = None;
        record.dataset = None;
        record.outcome = Some(Outcome::Ok);
        state.audit.append(record);
        // Signed in at the provider: sign out there too, where it offers it.
        if session.method == "oidc"
            && let Some(provider) = &state.web.oidc
            && let Some(url) = provider
                .logout_url(&format!("{}/", public_base(&state, &req)))
                .await
        {
            next = url;
        }
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .cookie(removal(SESSION_COOKIE))
        .finish()
}

/// A form field's value, empty when missing (a missing CSRF token is then
/// refused as a wrong one).
pub(super) fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// A new session (never the id the browser had before) and the redirect
/// that carries its cookie.
async fn signed_in(
    state: &AppState,
    visitor: &Visitor,
    principal: Principal,
    method: &'static str,
    next: &str,
) -> Result<actix_web::HttpResponseBuilder, ApiError> {
    if let Some(old) = &visitor.session {
        state.web.sessions.end(&old.id).await;
    }
    let session = state
        .web
        .sessions
        .create(principal, method)
        .await
        .map_err(|refused| match refused {
            crate::auth::session::SessionRefused::Full => ApiError::SessionsFull,
            crate::auth::session::SessionRefused::Store => ApiError::StorageUnavailable,
        })?;
    let mut record = trail::request_record(
        Event::SignIn,
        &Caller::Principal(session.principal.clone()),
        "",
    );
    record.phase = None;
    record.dataset = None;
    record.decision = Some(Decision::Allow);
    record.reason = Some(method.to_owned());
    state.audit.append(record);
    tracing::info!(sub = %session.principal.sub, method, "signed in");
    let mut response = HttpResponse::SeeOther();
    response
        .insert_header((header::LOCATION, next.to_owned()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie(
            SESSION_COOKIE,
            session.id,
            Some(state.web.sessions.max_age().as_secs() as i64),
        ));
    Ok(response)
}

/// Where the provider sends the browser back: this server's callback.
fn redirect_uri(state: &AppState, req: &HttpRequest) -> String {
    format!("{}/auth/callback", public_base(state, req))
}
