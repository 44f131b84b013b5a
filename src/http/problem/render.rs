//! How a problem is written: status, title, the `detail` people read,
//! extension members clients act on, and the `application/problem+json`
//! body (a 5xx carries an opaque detail and the request id).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value, json};

use super::{ApiError, REQUEST_ID, token_problem};
use crate::policy::Denial;

impl ApiError {
    fn title(&self) -> &'static str {
        match self.status_code() {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Authentication required",
            StatusCode::FORBIDDEN => "Access denied",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::NOT_ACCEPTABLE => "Not acceptable",
            StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable content",
            StatusCode::REQUEST_TIMEOUT => "Request timeout",
            _ => "Internal error",
        }
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            ApiError::Denied(d) => match d {
                Denial::TokenRequired { tier } => {
                    format!("this dataset is {}: send a bearer token", tier.as_str())
                }
                Denial::RoleRequired { role } => {
                    let role = serde_json::to_value(role)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    if role == "researcher" {
                        format!(
                            "this dataset is for registered researchers: your token needs the '{role}' role"
                        )
                    } else {
                        format!("this needs a token with the '{role}' role")
                    }
                }
                Denial::GrantRequired {
                    your_grants: Some(yours),
                    ..
                } => {
                    let yours = if yours.is_empty() {
                        "you hold none for it".to_owned()
                    } else {
                        format!("yours for it: {} (choose with grant=)", yours.join(", "))
                    };
                    format!("you hold no grant of that name for this dataset; {yours}")
                }
                Denial::GrantRequired { how_to_request, .. } => match how_to_request {
                    Some(how) => format!("this dataset needs a grant; to request access: {how}"),
                    None => {
                        "this dataset needs a grant; ask the data steward named as publisher".into()
                    }
                },
                Denial::GrantExpired { grant, expired } => {
                    format!("grant '{grant}' expired on {expired}; ask for a renewal")
                }
                Denial::GrantAmbiguous { grants } => format!(
                    "several grants cover this dataset for you ({}); choose one with the 'grant' parameter",
                    grants.join(", ")
                ),
                Denial::GrantSuspended { grant } => format!(
                    "grant '{grant}' cannot be applied as written and serves nothing until a policy admin fixes it"
                ),
                Denial::TokenScope { dataset, grant } => format!(
                    "this personal token is only for {}: make another for this",
                    scope_words(dataset.as_deref(), grant.as_deref())
                ),
            },
            ApiError::Internal(_) => {
                "the server failed to answer; quote the request id when reporting it".into()
            }
            ApiError::UnknownColumn(unknown) => format!("{unknown}: {}", unknown.hint()),
            other => other.to_string(),
        }
    }

    /// Extra members for some kinds, for clients to act on.
    fn extensions(&self) -> Map<String, Value> {
        let mut map = Map::new();
        if let ApiError::Denied(denial) = self
            && let Ok(Value::Object(fields)) = serde_json::to_value(denial)
        {
            for (k, v) in fields {
                if k != "reason" {
                    map.insert(k, v);
                }
            }
        }
        if let ApiError::InvalidToken(reason) = self {
            map.insert("token_problem".into(), json!(reason));
        }
        if let ApiError::UnknownColumn(unknown) = self {
            map.insert(
                "column".into(),
                json!(crate::util::echo::cut(&unknown.name)),
            );
            map.insert("usable_columns".into(), json!(unknown.usable));
            if let Some(near) = unknown.nearest() {
                map.insert("did_you_mean".into(), json!(near));
            }
        }
        if let ApiError::PrivacyBudgetExhausted {
            grant,
            remaining,
            cost,
        } = self
        {
            map.insert("grant".into(), json!(grant));
            map.insert("epsilon_remaining".into(), json!(remaining));
            map.insert("epsilon_cost".into(), json!(cost));
        }
        map
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidParameter(_)
            | ApiError::UploadIncomplete
            | ApiError::UnknownColumn(_)
            | ApiError::InvalidFilter(_)
            | ApiError::Denied(Denial::GrantAmbiguous { .. }) => StatusCode::BAD_REQUEST,
            ApiError::InvalidToken(_)
            | ApiError::TokenRequired
            | ApiError::Denied(Denial::TokenRequired { .. }) => StatusCode::UNAUTHORIZED,
            ApiError::Denied(_)
            | ApiError::AggregateOnly(_)
            | ApiError::PrivacyBudgetExhausted { .. }
            | ApiError::StewardRequired
            | ApiError::AdminRequired(_)
            | ApiError::PersonalTokenRefused(_)
            | ApiError::LinkInvalid
            | ApiError::LinkExpired(_)
            | ApiError::FormRejected
            | ApiError::NotPublisher(_) => StatusCode::FORBIDDEN,
            ApiError::SignInFailed(_) => StatusCode::UNAUTHORIZED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unprocessable { .. } | ApiError::SnapshotTooLarge(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::UploadTimeout(_) | ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::DatasetNotFound
            | ApiError::VersionNotFound(_)
            | ApiError::RouteNotFound
            | ApiError::TokenNotFound => StatusCode::NOT_FOUND,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_)
            | ApiError::TooManyStreams
            | ApiError::TooManyUploads(_)
            | ApiError::TooManyLinks(_)
            | ApiError::TooManyAccessRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::AuditUnavailable
            | ApiError::ServerBusy(_)
            | ApiError::StorageUnavailable
            | ApiError::LinksFull(_)
            | ApiError::SessionsFull
            | ApiError::CatalogReadOnly => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let request_id = REQUEST_ID.try_with(Clone::clone).ok();
        if let ApiError::Internal(cause) = self {
            tracing::error!(cause = %cause.chain(), "internal error");
        }
        let mut body = Map::new();
        body.insert("type".into(), json!(self.kind()));
        body.insert("title".into(), json!(self.title()));
        body.insert("status".into(), json!(status.as_u16()));
        // Details name the caller's values, each already cut where it is
        // formatted; this bounds what several of them add up to.
        body.insert(
            "detail".into(),
            json!(crate::util::echo::cut_to(
                &self.detail(),
                crate::util::echo::MAX_DETAIL_BYTES
            )),
        );
        if let Some(id) = request_id {
            body.insert("request_id".into(), json!(id));
        }
        body.extend(self.extensions());
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        if let ApiError::RateLimited(secs)
        | ApiError::TooManyUploads(secs)
        | ApiError::ServerBusy(secs)
        | ApiError::LinksFull(secs) = self
        {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if let ApiError::SessionsFull = self {
            response.insert_header((header::RETRY_AFTER, "60"));
        }
        if let ApiError::TooManyLinks(_) = self {
            // Links expire over minutes; a minute frees some.
            response.insert_header((header::RETRY_AFTER, "60"));
        }
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                // RFC 6750: the description says what to do about it.
                ApiError::InvalidToken(reason) => format!(
                    r#"Bearer realm="sluice", error="invalid_token", error_description="{}""#,
                    token_problem(reason)
                ),
                _ => r#"Bearer realm="sluice""#.to_owned(),
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
        }
        response.body(Value::Object(body).to_string())
    }
}

/// A personal token's narrowing in words.
fn scope_words(dataset: Option<&str>, grant: Option<&str>) -> String {
    match (dataset, grant) {
        (Some(d), Some(g)) => format!("dataset '{d}' through grant '{g}'"),
        (Some(d), None) => format!("dataset '{d}'"),
        (None, Some(g)) => format!("grant '{g}'"),
        (None, None) => "its owner's access".into(),
    }
}
