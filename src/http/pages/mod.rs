//! The catalogue for people: server-rendered HTML pages (maud, no script),
//! web sign-in and access requests, on the same port as the API.
//!
//! `/`, `/datasets` and `/datasets/{id}` answer HTML to browsers (`Accept:
//! text/html`) and JSON to everyone else. Pages know the visitor by a
//! session cookie ([`Visitor`]); the API still takes only Bearer tokens, so
//! a cookie never authorises an API call and the API needs no CSRF
//! defence. Every page form is a POST carrying a CSRF token, and a POST
//! whose `Origin` is another site is refused before the token is read.
//!
//! Module map: `layout` (the frame and the style sheet), `catalogue`
//! (home, search, dataset page), `access` (your access in words, access
//! requests), `people` (stewards' and admins' pages), `sign_in` (OIDC and
//! development sign-in, sign-out), `snippets` (copy-paste code).

pub(super) mod access;
mod catalogue;
mod glance;
pub(crate) use glance::Glances;
mod layout;
mod people;
mod sign_in;
mod snippets;
mod tokens;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::AppState;
use super::problem::ApiError;
use crate::auth::session::Session;
use crate::auth::{Caller, Role};

/// The session cookie. `__Host-` makes browsers refuse it unless it is
/// `Secure`, has `Path=/` and no `Domain`: no sibling host can plant one.
pub(super) const SESSION_COOKIE: &str = "__Host-sluice-session";
/// A random value, sealed with the server's key, that binds the CSRF token
/// of forms shown before sign-in.
const PRE_SESSION_COOKIE: &str = "__Host-sluice-pre";
/// The `state` of a sign-in in progress, so the callback is this browser's.
const LOGIN_COOKIE: &str = "__Host-sluice-login";

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(catalogue::home))
        .route("/datasets", web::get().to(catalogue::search))
        .route("/datasets/{id}", web::get().to(catalogue::dataset))
        .route(
            "/datasets/{id}/request-access",
            web::post().to(access::request_form),
        )
        .route("/steward", web::get().to(people::steward))
        .route("/admin", web::get().to(people::admin))
        .route("/me/tokens", web::get().to(tokens::tokens_page))
        .route("/me/tokens", web::post().to(tokens::create_form))
        .route(
            "/me/tokens/{id}/revoke",
            web::post().to(tokens::revoke_form),
        )
        .route("/auth/sign-in", web::get().to(sign_in::sign_in_page))
        .route("/auth/oidc", web::get().to(sign_in::start))
        .route("/auth/callback", web::get().to(sign_in::callback))
        .route("/auth/dev", web::post().to(sign_in::dev_sign_in))
        .route("/auth/sign-out", web::post().to(sign_in::sign_out))
        .route("/static/sluice.css", web::get().to(layout::style_sheet))
        .route("/v1/access-requests", web::get().to(access::list_requests))
        .route(
            "/v1/datasets/{id}/access-requests",
            web::post().to(access::create_request),
        );
}

/// Who is looking at a page: the session's principal, or nobody.
pub(super) struct Visitor {
    pub(super) session: Option<Session>,
    /// What this visitor's CSRF tokens are bound to: the session id, or
    /// the pre-session cookie (made now when the browser has none).
    binding: String,
    /// A pre-session cookie to set with this answer.
    new_binding: bool,
}

impl Visitor {
    pub(super) fn caller(&self) -> Caller {
        match &self.session {
            Some(s) => Caller::Principal(s.principal.clone()),
            None => Caller::Anonymous,
        }
    }

    pub(super) fn has_role(&self, role: Role) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.principal.has_role(role))
    }

    pub(super) fn csrf(&self, state: &AppState) -> String {
        state.web.sessions.csrf_token(&self.binding)
    }

    /// A page's form, read with the body limits, refused without this
    /// visitor's CSRF token.
    pub(super) async fn checked_form(
        &self,
        state: &AppState,
        req: &HttpRequest,
        payload: web::Payload,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let form = crate::http::body::read_form(state, req, payload).await?;
        self.check_csrf(state, sign_in::field(&form, "csrf"))?;
        Ok(form)
    }

    /// Refuses a form without this visitor's CSRF token.
    pub(super) fn check_csrf(&self, state: &AppState, token: &str) -> Result<(), ApiError> {
        if state.web.sessions.csrf_valid(&self.binding, token) {
            Ok(())
        } else {
            tracing::info!("form refused: CSRF token missing or wrong");
            Err(ApiError::FormRejected)
        }
    }

    /// The pre-session cookie to set, when this answer made one.
    pub(super) fn cookie_to_set(&self) -> Option<Cookie<'static>> {
        self.new_binding
            .then(|| cookie(PRE_SESSION_COOKIE, self.binding.clone(), None))
    }
}

impl FromRequest for Visitor {
    type Error = ApiError;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { visitor_of(&req).await })
    }
}

async fn visitor_of(req: &HttpRequest) -> Result<Visitor, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| crate::util::internal::Internal::new("the application state is missing"))?;
    // Pages are rate-limited like the API, per signed-in subject or address.
    let session = match req.cookie(SESSION_COOKIE) {
        Some(c) => {
            // A cookie this replica does not hold costs a read of the shared
            // store: counted against the address first, so a flood of made-up
            // cookies reads the store no faster than the rate limit.
            if !state.web.sessions.is_fresh(c.value()) {
                super::caller::count_request(req, state, &Caller::Anonymous)?;
            }
            state.web.sessions.get(c.value()).await
        }
        None => None,
    };
    let caller = session.as_ref().map_or(Caller::Anonymous, |s| {
        Caller::Principal(s.principal.clone())
    });
    super::caller::count_request(req, state, &caller)?;
    if let Some(s) = &session {
        tracing::Span::current().record("sub", s.principal.sub.as_str());
    }
    let (binding, new_binding) = match (&session, req.cookie(PRE_SESSION_COOKIE)) {
        (Some(s), _) => (s.id.clone(), false),
        // Only a binding this server issued: a planted cookie would let
        // its planter know the victim's CSRF token (login CSRF).
        (None, Some(c)) if state.web.sessions.binding_valid(c.value()) => {
            (c.value().to_owned(), false)
        }
        (None, _) => (state.web.sessions.new_binding(), true),
    };
    Ok(Visitor {
        session,
        binding,
        new_binding,
    })
}

/// A cookie as every Sluice cookie is: host-only, whole site, never read by
/// scripts, sent over HTTPS only, not on cross-site subrequests or POSTs.
fn cookie(name: &'static str, value: String, max_age_secs: Option<i64>) -> Cookie<'static> {
    let mut c = Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .finish();
    if let Some(secs) = max_age_secs {
        c.set_max_age(actix_web::cookie::time::Duration::seconds(secs));
    }
    c
}

/// A cookie that deletes `name` in the browser.
fn removal(name: &'static str) -> Cookie<'static> {
    cookie(name, String::new(), Some(0))
}

/// Whether a browser asked for a page (`text/html` before any JSON type).
pub(super) fn wants_html(req: &HttpRequest) -> bool {
    let Some(accept) = super::data_routes::accept(req) else {
        return false;
    };
    let html = accept.find("text/html");
    let json = accept.find("json");
    match (html, json) {
        (Some(h), Some(j)) => h < j,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Refuses a POST sent from a page of another origin: browsers send
/// `Origin` on every cross-site POST, so one that does not match this
/// server's is a forgery whatever its token says. (A POST without `Origin`
/// still needs the CSRF token.)
pub(super) fn same_origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let expected = super::public_base(state, req);
    if origin
        .to_str()
        .is_ok_and(|o| o.eq_ignore_ascii_case(&expected))
    {
        Ok(())
    } else {
        tracing::info!(origin = ?origin, "form refused: cross-origin POST");
        Err(ApiError::FormRejected)
    }
}
