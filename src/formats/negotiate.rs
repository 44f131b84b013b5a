//! Content negotiation: an explicit `format` parameter wins; otherwise the
//! `Accept` header's preferences (with q-values) pick among the formats;
//! no header or `*/*` gives Arrow IPC, the format every listed client reads
//! fastest.

use super::Format;

/// Why no format could be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NegotiationError {
    /// The `format` parameter names no format.
    #[error("unknown format '{0}' (expected arrow, parquet, csv or ndjson)")]
    UnknownFormat(String),
    /// The `Accept` header allows none of the formats.
    #[error(
        "none of the acceptable media types can be produced; available: application/vnd.apache.arrow.stream, application/vnd.apache.parquet, text/csv, application/x-ndjson"
    )]
    NotAcceptable,
}

/// Media types recognised for each format (first is canonical).
fn aliases(format: Format) -> &'static [&'static str] {
    match format {
        Format::Arrow => &[
            "application/vnd.apache.arrow.stream",
            "application/vnd.apache.arrow",
        ],
        Format::Parquet => &[
            "application/vnd.apache.parquet",
            "application/x-parquet",
            "application/parquet",
        ],
        Format::Csv => &["text/csv"],
        Format::Ndjson => &[
            "application/x-ndjson",
            "application/jsonl",
            "application/json-seq",
        ],
    }
}

/// Picks the response format.
pub fn negotiate(param: Option<&str>, accept: Option<&str>) -> Result<Format, NegotiationError> {
    if let Some(name) = param.filter(|p| !p.is_empty()) {
        return Format::from_name(name)
            .ok_or_else(|| NegotiationError::UnknownFormat(name.to_owned()));
    }
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Format::Arrow);
    };
    let mut best: Option<(f32, usize, Format)> = None;
    for (position, item) in accept.split(',').enumerate() {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        let format = if media == "*/*" || media == "application/*" {
            Some(Format::Arrow)
        } else if media == "text/*" {
            Some(Format::Csv)
        } else {
            Format::ALL
                .into_iter()
                .find(|f| aliases(*f).contains(&media.as_str()))
        };
        if let Some(format) = format {
            // Higher q wins; among equals, the earlier entry. Wildcards rank
            // below exact types at the same q.
            let rank = if media.ends_with("/*") {
                position + 1000
            } else {
                position
            };
            if best.is_none_or(|(bq, brank, _)| q > bq || (q == bq && rank < brank)) {
                best = Some((q, rank, format));
            }
        }
    }
    best.map(|(_, _, f)| f)
        .ok_or(NegotiationError::NotAcceptable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameter_wins_over_accept() {
        assert_eq!(
            negotiate(Some("csv"), Some("application/vnd.apache.arrow.stream")),
            Ok(Format::Csv)
        );
        assert!(matches!(
            negotiate(Some("xls"), None),
            Err(NegotiationError::UnknownFormat(_))
        ));
    }

    #[test]
    fn accept_is_honoured_with_q_values() {
        assert_eq!(negotiate(None, None), Ok(Format::Arrow));
        assert_eq!(negotiate(None, Some("*/*")), Ok(Format::Arrow));
        assert_eq!(negotiate(None, Some("text/csv")), Ok(Format::Csv));
        assert_eq!(
            negotiate(None, Some("text/csv;q=0.5, application/vnd.apache.parquet")),
            Ok(Format::Parquet)
        );
        assert_eq!(
            negotiate(None, Some("application/x-ndjson, */*;q=0.1")),
            Ok(Format::Ndjson)
        );
        assert_eq!(
            negotiate(None, Some("text/html")),
            Err(NegotiationError::NotAcceptable)
        );
        assert_eq!(
            negotiate(None, Some("text/csv;q=0")),
            Err(NegotiationError::NotAcceptable)
        );
    }
}
