//! Every error a client can get, rendered as `application/problem+json`
//! (RFC 9457) with a stable `type` per kind: clients branch on `type`,
//! people read `detail`. A 5xx carries an opaque detail and the request
//! id; its cause is logged, never sent.

use crate::policy::Denial;
use crate::util::internal::Internal;

mod conversions;
mod kinds;
mod render;

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
        /// A part of an answer cut in parts (Flight SQL's endpoints) whose
        /// access no longer allows that cut.
        AccessChanged = "access-changed",
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
    /// The server is as busy as it allows: the request bodies it holds at
    /// once, or the answers its engine makes at once (after their line
    /// did not move in time); retry after the seconds.
    #[error(
        "the server is as busy as it allows (request bodies being received, or answers being made); retry after {0} s"
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
