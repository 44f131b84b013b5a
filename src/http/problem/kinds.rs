//! The stable `type` of every problem: one per kind of error, listed
//! whole for the OpenAPI document (the build stops when a variant has no
//! example).

use super::{ApiError, ConflictKind, UnprocessableKind};
use crate::policy::Denial;
use crate::util::internal::Internal;

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
    pub(in crate::http) fn all_kinds() -> Vec<&'static str> {
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
}
