//! Reading small JSON bodies (manifests, patches, query bodies) with a byte
//! limit and one deadline for the whole body. Handlers authorise from the
//! request head first and only then read the body: a caller who may not
//! make the change is answered at once, and actix closes the connection
//! instead of reading what is left, so nobody holds memory and a connection
//! by trickling a body they were never allowed to send.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures::StreamExt;

use super::problem::ApiError;

/// Reads the whole body within `deadline`, refusing it past `limit` bytes
/// (counted as it arrives, not trusted from `Content-Length`) and unless
/// it is declared `application/json` (or `…+json`).
pub async fn read_json(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    deadline: Duration,
    what: &str,
) -> Result<web::Bytes, ApiError> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON));
    if !json {
        return Err(ApiError::UnsupportedMediaType(format!(
            "send the {what} as application/json"
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
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::InvalidParameter(format!("the body could not be read: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(deadline.as_secs()))?
}
