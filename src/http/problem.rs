//! Every error a client can get, rendered as `application/problem+json`
//! (RFC 9457) with a stable `type` per kind: clients branch on `type`,
//! people read `detail`. A 5xx carries an opaque detail and the request
//! id; its cause is logged, never sent.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value, json};

use crate::formats::NegotiationError;
use crate::policy::Denial;
use crate::slice::SliceError;
use crate::util::internal::Internal;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

crate::util::words::words! {
    /// The problem types of 409 answers: the request conflicts with the
    /// catalogue's state.
    ConflictKind {
        DatasetExists = "dataset-exists",
        /// An access request from someone who may already read the rows.
        AccessHeld = "access-held",
        DatasetRetired = "dataset-retired",
        TooManyDatasets = "too-many-datasets",
        ChangeDecided = "change-decided",
        ChangeStale = "change-stale",
        /// Restoring a dataset that is not retired.
        NotRetired = "not-retired",
        /// Publishing a dataset with no version in review.
        NothingToPublish = "nothing-to-publish",
        /// Publishing a version whose data an admin must approve first.
        ApprovalRequired = "approval-required",
        /// Rewriting a dataset with no single-file published version.
        NothingToRewrite = "nothing-to-rewrite",
    }
}

crate::util::words::words! {
    /// The problem types of 422 answers: well-formed but unacceptable content.
    UnprocessableKind {
        InvalidManifest = "invalid-manifest",
        UploadInvalid = "upload-invalid",
        SchemaMismatch = "schema-mismatch",
    }
}

/// An error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter or body field is malformed.
    #[error("{0}")]
    InvalidParameter(String),
    /// A column the caller may not use (or that does not exist).
    #[error("{0}")]
    UnknownColumn(crate::util::suggest::UnknownColumn),
    /// A filter that was refused or could not be applied.
    #[error("{0}")]
    InvalidFilter(String),
    /// No token where one is needed (outside dataset access).
    #[error("this resource needs a bearer token")]
    TokenRequired,
    /// A token that failed verification, for whatever reason.
    #[error("{}", token_problem(.0))]
    InvalidToken(&'static str),
    /// A policy denial.
    #[error("access denied")]
    Denied(Denial),
    /// Rows were asked for under aggregate-only access.
    #[error("your access to this dataset is aggregate-only: use /v1/datasets/{0}/aggregate")]
    AggregateOnly(String),
    #[error("no dataset with this id")]
    DatasetNotFound,
    #[error("this dataset has no version {0}")]
    VersionNotFound(u64),
    #[error("no such resource")]
    RouteNotFound,
    #[error("{0}")]
    NotAcceptable(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests from this caller; retry after the given seconds.
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    /// Too many streams open at once for this caller.
    #[error("you have too many downloads open at once; wait for one to finish")]
    TooManyStreams,
    /// The audit trail cannot record the access, so no data is served.
    #[error("the audit trail is unavailable; try again later")]
    AuditUnavailable,
    /// Catalogue changes need the steward (or admin) role.
    #[error("this needs a token with the steward or admin role")]
    StewardRequired,
    /// A change that only an admin may make (approving a widening change).
    #[error("{0}")]
    AdminRequired(String),
    /// What a personal token may not do (make or revoke tokens).
    #[error("{0}")]
    PersonalTokenRefused(String),
    /// No personal token of the caller's has this id.
    #[error("you hold no personal token with this id")]
    TokenNotFound,
    /// The server holds as many request bodies as it takes at once; retry
    /// after the seconds.
    #[error(
        "the server is receiving as many request bodies as it holds at once; retry after {0} s"
    )]
    ServerBusy(u64),
    /// Too many uploads in progress on this server; retry after the seconds.
    #[error("the server is processing as many uploads as it takes at once; retry after {0} s")]
    TooManyUploads(u64),
    /// A steward acting on another organisation's dataset.
    #[error("{0}")]
    NotPublisher(String),
    /// The change conflicts with the catalogue's state (`kind` is the type).
    #[error("{detail}")]
    Conflict { kind: ConflictKind, detail: String },
    /// Well-formed but unacceptable content: a manifest or an upload.
    #[error("{detail}")]
    Unprocessable {
        kind: UnprocessableKind,
        detail: String,
    },
    /// An upload body that ended early (the connection broke).
    #[error("the upload body ended before it was complete; nothing was changed")]
    UploadIncomplete,
    /// An upload body stalled.
    #[error("the upload stalled for {0} s and was abandoned; nothing was changed")]
    UploadTimeout(u64),
    /// A JSON body that did not arrive whole in time.
    #[error("the request body did not arrive within {0} s; nothing was changed")]
    BodyTimeout(u64),
    /// This server cannot change the catalogue (read-only folder, or
    /// another process holds its writer lock).
    #[error(
        "this server cannot change the catalogue now (its folder is read-only or another process is writing it); nothing was changed"
    )]
    CatalogReadOnly,
    /// Storage failed to make a change durable; the previous state stands.
    #[error("storage could not record the change; nothing was changed, try again later")]
    StorageUnavailable,
    /// A differentially private answer the grant's budget cannot pay for.
    #[error(
        "this answer would spend epsilon {cost:.4}, and the privacy budget of grant '{grant}' has {remaining:.4} left: ask for less with epsilon= (at most what is left), or ask the policy's admins to raise the grant's epsilon"
    )]
    PrivacyBudgetExhausted {
        grant: String,
        remaining: f64,
        cost: f64,
    },
    /// A signed link whose signature does not hold.
    #[error("this link is not valid: ask for a new one")]
    LinkInvalid,
    /// A signed link past its expiry, whose ticket is gone (a restart), or
    /// whose caller's access has changed since it was issued.
    #[error("{0}: ask for a new link")]
    LinkExpired(&'static str),
    /// The server holds as many unexpired snapshot links as it keeps.
    #[error("the server holds as many snapshot links as it keeps; retry after {0} s")]
    LinksFull(u64),
    /// The caller holds as many unexpired snapshot links as one may.
    #[error(
        "you hold {0} unexpired snapshot links, the most one caller may; reuse them or wait for some to expire"
    )]
    TooManyLinks(usize),
    /// A slice too large to keep as a snapshot file.
    #[error("{0}")]
    SnapshotTooLarge(String),
    /// A form without this site's CSRF token, or from another origin.
    #[error(
        "this form has expired or did not come from this site: reload the page and send it again"
    )]
    FormRejected,
    /// Sign-in through the identity provider did not complete (the reason
    /// is logged, not shown: it can describe the provider's setup).
    #[error("{0}")]
    SignInFailed(&'static str),
    /// The server holds as many web sessions as it keeps.
    #[error("the server holds as many signed-in sessions as it keeps; try again in a few minutes")]
    SessionsFull,
    /// A researcher with as many pending access requests as one may hold.
    #[error("{0}")]
    TooManyAccessRequests(String),
    /// A fault on our side; its chain of causes goes to the log only.
    #[error("internal error")]
    Internal(#[from] Internal),
}

/// What a token's problem means for its holder, by the verifier's reason.
/// Forgery details (which key, which signature check) stay generic: they
/// help an attacker more than a user.
fn token_problem(reason: &str) -> &'static str {
    match reason {
        "expired" => "the token has expired: get a new one",
        "not-yet-valid" => {
            "the token is not valid yet (its nbf is in the future): check the clocks"
        }
        "issued-in-future" => "the token was issued in the future (its iat): check the clocks",
        "wrong-issuer" => "the token's issuer (iss) is not one this server trusts",
        "wrong-audience" => "the token is for another audience (aud), not this server",
        "missing-claim" => "the token lacks a required claim (sub, exp, iss or aud)",
        "too-large" => "the token is larger than this server accepts",
        "not-bearer" => "send the token as 'Authorization: Bearer <token>'",
        "malformed" => "the token is not a JWT (three base64url parts)",
        "revoked" => "this personal token was revoked: make a new one",
        _ => "the bearer token is not valid",
    }
}

impl ApiError {
    /// The stable `type` of this error.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidParameter(_) => "invalid-parameter",
            ApiError::UnknownColumn(_) => "unknown-column",
            ApiError::InvalidFilter(_) => "invalid-filter",
            ApiError::TokenRequired => "token-required",
            ApiError::InvalidToken(_) => "invalid-token",
            ApiError::Denied(d) => match d {
                Denial::TokenRequired { .. } => "token-required",
                Denial::RoleRequired { .. } => "role-required",
                Denial::GrantRequired { .. } => "grant-required",
                Denial::GrantExpired { .. } => "grant-expired",
                Denial::GrantAmbiguous { .. } => "grant-ambiguous",
                Denial::GrantSuspended { .. } => "grant-suspended",
                Denial::TokenScope { .. } => "token-scope",
            },
            ApiError::AggregateOnly(_) => "aggregate-only",
            ApiError::DatasetNotFound => "dataset-not-found",
            ApiError::VersionNotFound(_) => "version-not-found",
            ApiError::RouteNotFound => "not-found",
            ApiError::NotAcceptable(_) => "not-acceptable",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::RateLimited(_) => "rate-limited",
            ApiError::TooManyStreams => "too-many-streams",
            ApiError::AuditUnavailable => "audit-unavailable",
            ApiError::StewardRequired => "steward-required",
            ApiError::NotPublisher(_) => "not-publisher",
            ApiError::AdminRequired(_) => "admin-required",
            ApiError::PersonalTokenRefused(_) => "personal-token-refused",
            ApiError::TokenNotFound => "token-not-found",
            ApiError::TooManyUploads(_) => "too-many-uploads",
            ApiError::ServerBusy(_) => "server-busy",
            ApiError::Conflict { kind, .. } => kind.as_str(),
            ApiError::Unprocessable { kind, .. } => kind.as_str(),
            ApiError::UploadTimeout(_) => "upload-timeout",
            ApiError::BodyTimeout(_) => "body-timeout",
            ApiError::UploadIncomplete => "upload-incomplete",
            ApiError::StorageUnavailable => "storage-unavailable",
            ApiError::CatalogReadOnly => "catalog-read-only",
            ApiError::PrivacyBudgetExhausted { .. } => "privacy-budget-exhausted",
            ApiError::LinkInvalid => "link-invalid",
            ApiError::LinkExpired(_) => "link-expired",
            ApiError::TooManyLinks(_) => "too-many-links",
            ApiError::LinksFull(_) => "server-busy",
            ApiError::SnapshotTooLarge(_) => "snapshot-too-large",
            ApiError::FormRejected => "form-rejected",
            ApiError::SessionsFull => "server-busy",
            ApiError::SignInFailed(_) => "sign-in-failed",
            ApiError::TooManyAccessRequests(_) => "too-many-access-requests",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Every `type` an answer can carry, for the OpenAPI document. One
    /// example of each variant; the exhaustive `match` below stops the
    /// build when a variant is added without one.
    pub(super) fn all_kinds() -> Vec<&'static str> {
        let denials = [
            Denial::TokenRequired {
                tier: crate::domain::Tier::Controlled,
            },
            Denial::RoleRequired {
                role: crate::auth::Role::Researcher,
            },
            Denial::GrantRequired {
                how_to_request: None,
                your_grants: None,
            },
            Denial::GrantExpired {
                grant: String::new(),
                expired: time::Date::MIN,
            },
            Denial::GrantAmbiguous { grants: vec![] },
            Denial::GrantSuspended {
                grant: String::new(),
            },
            Denial::TokenScope {
                dataset: None,
                grant: None,
            },
        ];
        let mut examples: Vec<ApiError> = denials.into_iter().map(ApiError::Denied).collect();
        examples.extend(ConflictKind::ALL.iter().map(|&kind| ApiError::Conflict {
            kind,
            detail: String::new(),
        }));
        examples.extend(
            UnprocessableKind::ALL
                .iter()
                .map(|&kind| ApiError::Unprocessable {
                    kind,
                    detail: String::new(),
                }),
        );
        let text = String::new;
        examples.extend([
            ApiError::InvalidParameter(text()),
            ApiError::UnknownColumn(crate::util::suggest::UnknownColumn::new(
                "",
                Vec::<String>::new(),
            )),
            ApiError::InvalidFilter(text()),
            ApiError::TokenRequired,
            ApiError::InvalidToken(""),
            ApiError::AggregateOnly(text()),
            ApiError::DatasetNotFound,
            ApiError::VersionNotFound(0),
            ApiError::RouteNotFound,
            ApiError::NotAcceptable(text()),
            ApiError::PayloadTooLarge(0),
            ApiError::UnsupportedMediaType(text()),
            ApiError::RateLimited(0),
            ApiError::TooManyStreams,
            ApiError::AuditUnavailable,
            ApiError::StewardRequired,
            ApiError::AdminRequired(text()),
            ApiError::PersonalTokenRefused(text()),
            ApiError::TokenNotFound,
            ApiError::ServerBusy(0),
            ApiError::TooManyUploads(0),
            ApiError::NotPublisher(text()),
            ApiError::UploadIncomplete,
            ApiError::UploadTimeout(0),
            ApiError::BodyTimeout(0),
            ApiError::CatalogReadOnly,
            ApiError::StorageUnavailable,
            ApiError::PrivacyBudgetExhausted {
                grant: text(),
                remaining: 0.0,
                cost: 0.0,
            },
            ApiError::LinkInvalid,
            ApiError::LinkExpired(""),
            ApiError::TooManyLinks(0),
            ApiError::LinksFull(0),
            ApiError::SnapshotTooLarge(text()),
            ApiError::FormRejected,
            ApiError::SessionsFull,
            ApiError::SignInFailed(""),
            ApiError::TooManyAccessRequests(text()),
            ApiError::Internal(Internal::new("")),
        ]);
        for example in &examples {
            // Add an example above for any variant this match gains.
            match example {
                ApiError::InvalidParameter(_)
                | ApiError::UnknownColumn(_)
                | ApiError::InvalidFilter(_)
                | ApiError::TokenRequired
                | ApiError::InvalidToken(_)
                | ApiError::Denied(_)
                | ApiError::AggregateOnly(_)
                | ApiError::DatasetNotFound
                | ApiError::VersionNotFound(_)
                | ApiError::RouteNotFound
                | ApiError::NotAcceptable(_)
                | ApiError::PayloadTooLarge(_)
                | ApiError::UnsupportedMediaType(_)
                | ApiError::RateLimited(_)
                | ApiError::TooManyStreams
                | ApiError::AuditUnavailable
                | ApiError::StewardRequired
                | ApiError::AdminRequired(_)
                | ApiError::PersonalTokenRefused(_)
                | ApiError::TokenNotFound
                | ApiError::ServerBusy(_)
                | ApiError::TooManyUploads(_)
                | ApiError::NotPublisher(_)
                | ApiError::Conflict { .. }
                | ApiError::Unprocessable { .. }
                | ApiError::UploadIncomplete
                | ApiError::UploadTimeout(_)
                | ApiError::BodyTimeout(_)
                | ApiError::CatalogReadOnly
                | ApiError::StorageUnavailable
                | ApiError::PrivacyBudgetExhausted { .. }
                | ApiError::LinkInvalid
                | ApiError::LinkExpired(_)
                | ApiError::TooManyLinks(_)
                | ApiError::LinksFull(_)
                | ApiError::SnapshotTooLarge(_)
                | ApiError::FormRejected
                | ApiError::SessionsFull
                | ApiError::SignInFailed(_)
                | ApiError::TooManyAccessRequests(_)
                | ApiError::Internal(_) => {}
            }
        }
        let mut kinds: Vec<&'static str> = examples.iter().map(ApiError::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }

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

    pub(super) fn detail(&self) -> String {
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

impl From<SliceError> for ApiError {
    fn from(e: SliceError) -> Self {
        match e {
            SliceError::UnknownColumn(unknown) => ApiError::UnknownColumn(unknown),
            SliceError::BadColumns(m) => ApiError::InvalidParameter(m),
            SliceError::Selection(m) => ApiError::InvalidFilter(m),
            SliceError::Filter(crate::filter::FilterError::UnknownColumn(unknown)) => {
                ApiError::UnknownColumn(unknown)
            }
            SliceError::Filter(f) => {
                ApiError::InvalidFilter(crate::util::echo::cut_quoted(&f.to_string()))
            }
            e @ (SliceError::FilterTypes | SliceError::Evaluation) => {
                ApiError::InvalidFilter(e.to_string())
            }
            SliceError::Busy { retry_after_secs } => ApiError::ServerBusy(retry_after_secs),
            SliceError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<crate::snapshot::SnapshotError> for ApiError {
    fn from(e: crate::snapshot::SnapshotError) -> Self {
        use crate::snapshot::SnapshotError as E;
        match e {
            E::TooLarge { .. } => ApiError::SnapshotTooLarge(e.to_string()),
            E::Slice(slice) => slice.into(),
            E::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<crate::policy::steward::StewardRefusal> for ApiError {
    fn from(refusal: crate::policy::steward::StewardRefusal) -> Self {
        use crate::policy::steward::StewardRefusal as R;
        match refusal {
            R::TokenRequired => ApiError::TokenRequired,
            R::StewardRequired => ApiError::StewardRequired,
            R::NoOrganisation => ApiError::NotPublisher(
                "your token names no organisation, so you steward no datasets".into(),
            ),
            R::NotPublisher { publisher, org } => ApiError::NotPublisher(format!(
                "this dataset is published by '{publisher}'; your organisation is '{org}'"
            )),
        }
    }
}

impl From<NegotiationError> for ApiError {
    fn from(e: NegotiationError) -> Self {
        match e {
            NegotiationError::UnknownFormat(_) => ApiError::InvalidParameter(e.to_string()),
            NegotiationError::NotAcceptable => ApiError::NotAcceptable(e.to_string()),
        }
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
