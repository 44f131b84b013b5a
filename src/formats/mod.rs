//! Output formats: which one a caller asked for (the `format` parameter or
//! the `Accept` header), and turning a stream of record batches into a
//! stream of encoded byte chunks, one chunk per batch, never the whole body.
//!
//! Every batch passes through [`sanitize`] before an encoder sees it, so
//! what leaves the server is built from the visible rows only: string views
//! are compacted, dictionaries re-encoded without unused values, and schema
//! metadata from the source file dropped (docs/security.md, "No byte of
//! hidden data in any response").

mod csv_text;
mod encode;
mod negotiate;
pub mod parquet_layout;

pub use encode::{EncodeJob, Encoder, Provenance, sanitize, sanitized_schema};
pub use negotiate::{NegotiationError, negotiate};

/// A batch of nullable columns named as given, for the formats' tests.
#[cfg(test)]
pub(crate) fn test_batch(
    columns: Vec<(&str, arrow::array::ArrayRef)>,
) -> arrow::array::RecordBatch {
    use arrow::datatypes::{Field, Schema};
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
        .collect();
    arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("columns of equal length")
}

/// How an answer's bytes are compressed, only when the client asks.
/// - CSV and NDJSON: zstd frames (one per batch, compressed in parallel;
///   RFC 8878 lets a zstd stream be any number of frames, and decoders read
///   them as one), asked for with `Accept-Encoding: zstd` and sent with
///   `Content-Encoding: zstd`.
/// - Arrow IPC: the format's own body compression (LZ4 frame or zstd, per
///   buffer), asked for with `compression=lz4|zstd`; pyarrow, polars and
///   arrow-rs read it with no option, so no header changes.
/// - Parquet is compressed by its own codecs, always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Zstd,
    Lz4,
}

impl Coding {
    /// `compression=…` for Arrow answers.
    pub fn from_name(name: &str) -> Option<Coding> {
        match name.to_ascii_lowercase().as_str() {
            "none" | "identity" => Some(Coding::Identity),
            "zstd" => Some(Coding::Zstd),
            "lz4" | "lz4_frame" => Some(Coding::Lz4),
            _ => None,
        }
    }
}

/// A format Sluice can stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Arrow,
    Parquet,
    Csv,
    Ndjson,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Arrow, Format::Parquet, Format::Csv, Format::Ndjson];

    /// The name used in the `format` parameter.
    pub fn name(self) -> &'static str {
        match self {
            Format::Arrow => "arrow",
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }

    /// The media type of the body.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    /// The file extension for `Content-Disposition`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Arrow => "arrows",
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "arrow" | "arrows" | "ipc" => Some(Format::Arrow),
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }
}
