//! Domain errors turned into problems: the slice engine's, snapshots',
//! stewards' refusals and content negotiation's.

use super::ApiError;
use crate::formats::NegotiationError;
use crate::slice::SliceError;

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
