//! The `Caller` extractor: no `Authorization` header is an anonymous caller;
//! a Bearer token is verified; anything else, or a token that fails, is a
//! 401 with the same body whatever the reason (the reason is logged).

use futures::future::LocalBoxFuture;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::AppState;
use super::problem::ApiError;
use crate::auth::Caller;
use crate::util::internal::Internal;

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { caller_of(&req).await })
    }
}

async fn caller_of(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| Internal::new("the application state is missing"))?;
    let verified = verified_caller(req, state).await;
    // A failed token counts against the peer address, so guessing costs too.
    count_request(req, state, verified.as_ref().unwrap_or(&Caller::Anonymous))?;
    verified
}

/// Counts a request against its caller's rate limit (API token or page
/// session alike); 429 `rate-limited` beyond it.
pub(super) fn count_request(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
) -> Result<(), ApiError> {
    let key = rate_key(req, caller);
    state.rate_limits.check(&key).map_err(|wait| {
        tracing::info!(key, "rate limited");
        ApiError::RateLimited(wait.as_secs().max(1))
    })
}

/// Whom a place in the engine counts against: the subject; every
/// anonymous caller together (addresses are cheap to change, so anonymous
/// callers share one fair share of the engine).
pub(crate) fn share_key(caller: &Caller) -> String {
    match caller.principal() {
        Some(p) => format!("sub:{}", p.sub),
        None => "anonymous".into(),
    }
}

/// Whom limits count against: the subject, or the peer address of
/// anonymous callers (and of callers whose token failed).
pub(super) fn rate_key(req: &HttpRequest, caller: &Caller) -> String {
    match caller.principal() {
        Some(p) => format!("sub:{}", p.sub),
        None => format!(
            "ip:{}",
            req.peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default()
        ),
    }
}

async fn verified_caller(req: &HttpRequest, state: &AppState) -> Result<Caller, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or_else(|| refused(state, "not-bearer"))?;
    verify_token(state, token).await
}

/// The token of an `Authorization` value `Bearer <token>`.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who holds `token`: a personal token, or a JWT from a trusted issuer (or
/// the dev key). A failure is logged and counted by reason, and answered
/// the same way whatever the reason.
pub(crate) async fn verify_token(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let verified = if crate::auth::personal::is_personal(token) {
        state.personal_tokens.verify(token).await
    } else {
        state.verifier.verify_live(token).await
    };
    match verified {
        Ok(principal) => {
            tracing::Span::current().record("sub", principal.sub.as_str());
            Ok(Caller::Principal(principal))
        }
        Err(e) => Err(refused(state, e.reason())),
    }
}

/// A failed authentication, logged and counted by `reason`.
pub(crate) fn refused(state: &AppState, reason: &'static str) -> ApiError {
    tracing::info!(reason, "authentication failed");
    state
        .metrics
        .auth_failures
        .with_label_values(&[reason])
        .inc();
    ApiError::InvalidToken(reason)
}
