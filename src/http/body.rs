//! Reading small bodies (JSON manifests, patches, query bodies; the pages'
//! forms) with a byte limit and one deadline for the whole body. Handlers authorise from the
//! request head first and only then read the body: a caller who may not
//! make the change is answered at once, and actix closes the connection
//! instead of reading what is left, so nobody holds memory and a connection
//! by trickling a body they were never allowed to send.
//!
//! What authorised callers may hold is bounded too: each body takes its
//! bytes from one server-wide budget as they arrive (a stalled body holds
//! only what it sent) and gives them back when reading ends; a body that
//! would go past the budget is refused at once with 503 `server-busy`, so
//! many slow bodies cost the server a bounded amount of memory, not one
//! limit per connection.

use std::time::Duration;

use tokio::sync::Semaphore;

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures::StreamExt;

use super::problem::ApiError;

/// A refused body may be sent again after this long: bodies in flight
/// finish or time out within seconds.
const BUSY_RETRY_SECS: u64 = 2;

/// What a body must be declared as.
#[derive(Clone, Copy)]
pub(super) enum BodyKind {
    /// `application/json` or `…+json`.
    Json,
    /// `application/x-www-form-urlencoded` (the pages' forms).
    Form,
}

/// Reads the whole body within `deadline`, refusing it past `limit` bytes
/// (counted as it arrives, not trusted from `Content-Length`) and unless
/// it is declared as `kind`.
pub(super) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    budget: &Semaphore,
    limit: usize,
    deadline: Duration,
    (kind, what): (BodyKind, &str),
) -> Result<web::Bytes, ApiError> {
    let declared_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok());
    let fits = declared_type.is_some_and(|m| match kind {
        BodyKind::Json => m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON),
        BodyKind::Form => m.essence_str() == "application/x-www-form-urlencoded",
    });
    if !fits {
        let media = match kind {
            BodyKind::Json => "application/json",
            BodyKind::Form => "application/x-www-form-urlencoded",
        };
        return Err(ApiError::UnsupportedMediaType(format!(
            "send the {what} as {media}"
        )));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let read = async {
        let mut body = web::BytesMut::new();
        // Released when reading ends, however it ends.
        let mut held = budget
            .try_acquire_many(0)
            .map_err(|_| ApiError::ServerBusy(BUSY_RETRY_SECS))?;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::InvalidParameter(format!("the body could not be read: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            let more = u32::try_from(chunk.len())
                .ok()
                .and_then(|n| budget.try_acquire_many(n).ok())
                .ok_or(ApiError::ServerBusy(BUSY_RETRY_SECS))?;
            held.merge(more);
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(deadline.as_secs()))?
}

/// Reads a JSON body under the server's limits ([`read_body`]) and parses
/// it; a body that does not parse is 400 `invalid-parameter`.
pub(super) async fn parse_json<T: serde::de::DeserializeOwned>(
    state: &super::AppState,
    req: &HttpRequest,
    payload: web::Payload,
    what: &str,
) -> Result<T, ApiError> {
    let deadline = Duration::from_secs(state.limits.body_timeout_secs.max(1));
    let bytes = read_body(
        req,
        payload,
        &state.body_budget,
        state.limits.max_body_bytes,
        deadline,
        (BodyKind::Json, what),
    )
    .await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::InvalidParameter(crate::util::echo::cut_quoted(&format!(
            "the JSON body is not valid: {e}"
        )))
    })
}

/// The largest page form: an access request's longest purpose, percent-encoded.
const MAX_FORM_BYTES: usize = 32 * 1024;

/// A page's form, read under the same limits as JSON bodies (one deadline,
/// `limits.max_body_bytes`, the server-wide budget), as its fields in
/// order; a field may repeat (checkboxes).
pub(super) async fn read_form(
    state: &super::AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Vec<(String, String)>, ApiError> {
    let deadline = Duration::from_secs(state.limits.body_timeout_secs.max(1));
    let bytes = read_body(
        req,
        payload,
        &state.body_budget,
        state.limits.max_body_bytes.min(MAX_FORM_BYTES),
        deadline,
        (BodyKind::Form, "form"),
    )
    .await?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}
