//! Request ids and request logs: every request gets an id (a fresh UUID;
//! a caller's `x-request-id` is not trusted into our logs), returned in the
//! `x-request-id` header and in error bodies, and carried by the tracing
//! span of everything done for the request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

use super::problem::REQUEST_ID;

pub const HEADER: &str = "x-request-id";

/// Whether a request declares a body (a length above zero, or chunks).
fn has_body(req: &actix_web::HttpRequest) -> bool {
    use actix_web::http::header;
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
    );
    let started = Instant::now();
    let result = REQUEST_ID
        .scope(id.clone(), next.call(req))
        .instrument(span.clone())
        .await;
    let _entered = span.enter();
    match result {
        Ok(mut response) => {
            let route = response
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".into());
            if let Some(state) = response
                .request()
                .app_data::<actix_web::web::Data<super::AppState>>()
            {
                state
                    .metrics
                    .requests
                    .with_label_values(&[route.as_str(), response.status().as_str()])
                    .inc();
            }
            if let Ok(value) = HeaderValue::from_str(&id) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(HEADER), value);
            }
            // An answer to a caller who showed a token or a session is
            // about them (their access, their requests, what they may see):
            // no cache keeps it unless the route said otherwise.
            let credentialed = [header::AUTHORIZATION, header::COOKIE]
                .iter()
                .any(|h| response.request().headers().contains_key(h));
            if credentialed && !response.headers().contains_key(header::CACHE_CONTROL) {
                response.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, no-store"),
                );
            }
            // A request refused with its body perhaps unread (a timeout, a
            // size or type refusal, no right to send it): the connection
            // closes after the answer, so no one keeps it open by
            // trickling the rest of a body nobody will read.
            if response.status().as_u16() >= 400 && has_body(response.request()) {
                response
                    .response_mut()
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
            }
            tracing::info!(
                status = response.status().as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "request answered"
            );
            Ok(response)
        }
        Err(e) => {
            tracing::warn!(error = %e, "request failed");
            Err(e)
        }
    }
}
