//! `/v1/me/tokens`: a person's personal access tokens, made, listed and
//! revoked by the person (signed in, or with their identity provider's
//! token; a personal token cannot make or revoke tokens). See
//! [`crate::auth::personal`] for what a token is and carries.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::problem::ApiError;
use crate::audit::{Event, Outcome, Record};
use crate::auth::personal::{NewToken, TokenError};
use crate::auth::{Caller, Principal};
use crate::domain::DatasetId;

/// Days a token runs when not asked otherwise.
const DEFAULT_DAYS: u32 = 30;

/// `POST /v1/me/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTokenBody {
    /// What the token is for, to know it in the list ("laptop", "cluster job").
    pub(super) name: String,
    /// Only this dataset (default: all your access).
    #[serde(default)]
    pub(super) dataset: Option<String>,
    /// Only through this grant of yours.
    #[serde(default)]
    pub(super) grant: Option<String>,
    /// Days it runs (default 30; at most the server's `auth.personal_token_max_days`).
    #[serde(default)]
    pub(super) days: Option<u32>,
}

/// The person behind a request, when they may manage tokens.
pub(super) fn owner(caller: &Caller) -> Result<&Principal, ApiError> {
    let Caller::Principal(principal) = caller else {
        return Err(ApiError::TokenRequired);
    };
    if principal.scope.is_some() {
        return Err(ApiError::PersonalTokenRefused(
            "a personal token cannot make or revoke tokens: sign in, or use your identity provider's token".into(),
        ));
    }
    Ok(principal)
}

fn store_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Invalid(why) => ApiError::InvalidParameter(why),
        TokenError::NotFound => ApiError::TokenNotFound,
        TokenError::Store(why) => crate::util::internal::Internal::new(why).into(),
    }
}

/// Makes a token for `principal` (the API's and the page's one way).
pub(super) async fn create_for(
    state: &AppState,
    principal: &Principal,
    body: NewTokenBody,
) -> Result<(String, crate::auth::personal::Record), ApiError> {
    let dataset = body
        .dataset
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            DatasetId::parse(d.trim())
                .map(|d| d.to_string())
                .map_err(|e| ApiError::InvalidParameter(format!("dataset: {e}")))
        })
        .transpose()?;
    if let Some(d) = &dataset {
        // A token for a dataset that is not there would open nothing: say
        // so now rather than at its first use.
        super::catalog_routes::visible_dataset(state, &Default::default(), d)
            .map_err(|_| ApiError::InvalidParameter(format!("no dataset '{d}'")))?;
    }
    let grant = body.grant.filter(|g| !g.trim().is_empty());
    if let Some(grant) = &grant {
        let policy = state.policy.current();
        let Some(held) = policy
            .grants
            .iter()
            .find(|g| &g.id == grant && g.applies_to(principal))
        else {
            return Err(ApiError::InvalidParameter(format!(
                "you hold no grant '{}'",
                crate::util::echo::cut(grant)
            )));
        };
        if dataset
            .as_deref()
            .is_some_and(|d| d != held.dataset.as_str())
        {
            return Err(ApiError::InvalidParameter(format!(
                "grant '{grant}' is for dataset '{}', not the one named",
                held.dataset
            )));
        }
    }
    let new = NewToken {
        name: body.name,
        dataset,
        grant,
        days: body.days.unwrap_or(DEFAULT_DAYS),
    };
    let (text, record) = state
        .personal_tokens
        .create(principal, new, state.personal_token_max_days)
        .await
        .map_err(store_error)?;
    audit(state, principal, "created", &record.id);
    Ok((text, record))
}

/// Revokes one of `principal`'s tokens.
pub(super) async fn revoke_for(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<(), ApiError> {
    state
        .personal_tokens
        .revoke(&principal.sub, id)
        .await
        .map_err(store_error)?;
    audit(state, principal, "revoked", id);
    Ok(())
}

fn audit(state: &AppState, principal: &Principal, what: &str, id: &str) {
    state.audit.append(Record {
        subject: Some(principal.sub.clone()),
        reason: Some(format!("personal token {id} {what}")),
        outcome: Some(Outcome::Ok),
        ..Record::new(Event::PersonalToken)
    });
}

/// `GET /v1/login`: how a command-line client gets a token here, asked
/// before it holds one (so it needs none): the identity provider's device
/// flow when `auth.login` configures one, and always the personal-token page.
#[utoipa::path(get, path = "/v1/login", tag = "researchers", responses((status = 200, description = "`device`: the provider, public client, scopes and resource `sluice login` uses for the OAuth 2.0 device authorization grant (RFC 8628), or null; `personal_tokens`: the page where a signed-in person makes a token to paste", body = Object)))]
pub(super) async fn login(state: web::Data<AppState>, req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "device": state.web.cli_login,
        "personal_tokens": format!("{}/me/tokens", super::public_base(&state, &req)),
    }))
}

#[tracing::instrument(skip_all)]
#[utoipa::path(post, path = "/v1/me/tokens", tag = "researchers", security(("bearer" = [])), request_body = NewTokenBody, responses((status = 201, description = "The token (shown once: only its hash is kept) and its record", body = Object)))]
pub(super) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Who asks is known from the head: no body is read for nobody.
    let principal = owner(&caller)?;
    let body: NewTokenBody =
        super::body::parse_json(&state, &req, payload, "personal token").await?;
    let (text, record) = create_for(&state, principal, body).await?;
    let mut answer = record.public_json();
    answer["token"] = json!(text);
    Ok(HttpResponse::Created().json(answer))
}

#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/v1/me/tokens", tag = "researchers", security(("bearer" = [])), responses((status = 200, description = "Your live personal tokens (never their secrets), with last use", body = Object)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let principal = owner(&caller)?;
    let tokens = state
        .personal_tokens
        .list_of(&principal.sub)
        .await
        .map_err(store_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "tokens": tokens.iter().map(|t| t.public_json()).collect::<Vec<_>>(),
    })))
}

#[tracing::instrument(skip_all)]
#[utoipa::path(delete, path = "/v1/me/tokens/{id}", tag = "researchers", security(("bearer" = [])), params(("id" = String, Path, description = "The token's id")), responses((status = 204, description = "Revoked: refused from now on (by every replica within seconds)")))]
pub(super) async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = owner(&caller)?;
    revoke_for(&state, principal, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
