//! How Sluice lays out the Parquet it writes (a version's files, Parquet
//! answers, snapshots): settings chosen per column from a sample of its
//! values, as good writers do, rather than one setting for every column.
//!
//! Measured on a 12 M-row upload (BENCHMARKS.md, issue 20), against
//! DuckDB's file of the same rows:
//! - A dictionary only where values repeat: for numbers and dates when at
//!   most 40 % of the sampled values are distinct, for text at most 60 %.
//!   Beyond that a dictionary is 10-60 % larger than the values themselves
//!   (a unique id: 35 MB as a dictionary, 12 MB plain, 0.04 MB delta).
//! - Without one: integers, dates and timestamps as `DELTA_BINARY_PACKED`
//!   (sorted or slowly changing values shrink to almost nothing); floats
//!   `PLAIN` when their values are short decimals (as CSV data mostly is:
//!   zstd then does best) and `BYTE_STREAM_SPLIT` when they use their full
//!   precision; text `PLAIN`.
//! - A text dictionary's page may grow to hold the sampled distinct values
//!   (up to 8 MiB), so a column does not fall back to plain halfway
//!   through a row group.
//! - zstd level 3: 0.2 % smaller than level 1 for the same time; levels 6
//!   and 9 save 2 % for 45-135 % more writing time.
//! - Pages of at most 16 Ki rows, so the page index narrows a point lookup
//!   to a few pages.

use std::collections::HashSet;
use std::hash::Hash;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

/// Rows per data page.
pub const PAGE_ROWS: usize = 16 * 1024;
/// The zstd level.
const ZSTD_LEVEL: i32 = 3;
/// Largest share of distinct values for which a dictionary pays.
const DICTIONARY_MAX_DISTINCT_NUMBERS: f64 = 0.40;
const DICTIONARY_MAX_DISTINCT_TEXT: f64 = 0.60;
/// A text dictionary page grows up to this to hold a row group's values.
const MAX_DICTIONARY_PAGE_BYTES: usize = 8 * 1024 * 1024;
const DEFAULT_DICTIONARY_PAGE_BYTES: usize = 1024 * 1024;
/// Fewer sampled rows than this say too little: the writer's defaults.
const MIN_SAMPLE_ROWS: usize = 1024;
/// Floats with at most this many significant digits count as short.
const SHORT_FLOAT_DIGITS: usize = 6;

/// The settings every file gets: zstd, page statistics and page index,
/// bounded pages.
pub fn base() -> WriterPropertiesBuilder {
    let level = ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default();
    parquet::file::properties::WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
}

/// How one column is written.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnLayout {
    pub name: String,
    pub dictionary: bool,
    /// The encoding without a dictionary (none: the writer's default).
    pub encoding: Option<Encoding>,
    /// A larger dictionary page than the default, for text.
    pub dictionary_page_bytes: Option<usize>,
    /// The sample's values never decrease (integers only).
    pub sorted: bool,
}

/// Per-column settings chosen from a sample of the rows.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub columns: Vec<ColumnLayout>,
}

impl Layout {
    /// The layout for the columns of `sample` (one row group's rows, or
    /// the first batch of an answer). Columns of other types keep the
    /// writer's defaults.
    pub fn choose(sample: &[RecordBatch]) -> Layout {
        let Some(first) = sample.first() else {
            return Layout::default();
        };
        if sample.iter().map(RecordBatch::num_rows).sum::<usize>() < MIN_SAMPLE_ROWS {
            return Layout::default();
        }
        let columns = first
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(i, field)| {
                let parts: Vec<&dyn Array> = sample.iter().map(|b| b.column(i).as_ref()).collect();
                let column = arrow::compute::concat(&parts).ok()?;
                choose_column(field.name(), &column)
            })
            .collect();
        Layout { columns }
    }

    /// `builder` with these per-column settings.
    pub fn apply(&self, mut builder: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
        for c in &self.columns {
            let path = ColumnPath::from(c.name.as_str());
            builder = builder.set_column_dictionary_enabled(path.clone(), c.dictionary);
            if let Some(encoding) = c.encoding.filter(|_| !c.dictionary) {
                builder = builder.set_column_encoding(path.clone(), encoding);
            }
            if let Some(bytes) = c.dictionary_page_bytes {
                builder = builder.set_column_dictionary_page_size_limit(path, bytes);
            }
        }
        builder
    }

    pub fn column(&self, name: &str) -> Option<&ColumnLayout> {
        self.columns.iter().find(|c| c.name == name)
    }
}

fn choose_column(name: &str, column: &ArrayRef) -> Option<ColumnLayout> {
    let values = column.len() - column.null_count();
    if values == 0 {
        return None;
    }
    let share = |distinct: usize| distinct as f64 / values as f64;
    let layout = |dictionary, encoding, dictionary_page_bytes, sorted| ColumnLayout {
        name: name.to_owned(),
        dictionary,
        encoding,
        dictionary_page_bytes,
        sorted,
    };
    Some(match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => {
            let (distinct, bytes) = match column.data_type() {
                DataType::Utf8 => text_profile(column.as_string::<i32>().iter()),
                _ => text_profile(column.as_string::<i64>().iter()),
            };
            let dictionary = share(distinct) <= DICTIONARY_MAX_DISTINCT_TEXT;
            // Each entry costs its bytes and a 4-byte length; a quarter
            // more for the rows the sample did not see.
            let page = (bytes + 4 * distinct) * 5 / 4;
            let page = (dictionary && page > DEFAULT_DICTIONARY_PAGE_BYTES)
                .then(|| page.min(MAX_DICTIONARY_PAGE_BYTES));
            layout(dictionary, Some(Encoding::PLAIN), page, false)
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..) => {
            let dictionary = share(distinct_fixed(column)) <= DICTIONARY_MAX_DISTINCT_NUMBERS;
            let encoding = Some(Encoding::DELTA_BINARY_PACKED);
            layout(dictionary, encoding, None, non_decreasing(column))
        }
        DataType::Float32 | DataType::Float64 => {
            let dictionary = share(distinct_fixed(column)) <= DICTIONARY_MAX_DISTINCT_NUMBERS;
            let short = match column.data_type() {
                DataType::Float32 => short_share(
                    column
                        .as_primitive::<Float32Type>()
                        .iter()
                        .flatten()
                        .map(f64::from),
                ),
                _ => short_share(column.as_primitive::<Float64Type>().iter().flatten()),
            };
            let encoding = if short >= 0.95 {
                Encoding::PLAIN
            } else {
                Encoding::BYTE_STREAM_SPLIT
            };
            layout(dictionary, Some(encoding), None, false)
        }
        _ => return None,
    })
}

/// Distinct values and their total bytes.
fn text_profile<'a>(values: impl Iterator<Item = Option<&'a str>>) -> (usize, usize) {
    let distinct: HashSet<&str> = values.flatten().collect();
    let bytes = distinct.iter().map(|s| s.len()).sum();
    (distinct.len(), bytes)
}

/// Distinct non-null values of a fixed-width column, compared by bytes.
fn distinct_fixed(column: &ArrayRef) -> usize {
    let data = column.to_data();
    let Some(width) = data.data_type().primitive_width() else {
        return column.len();
    };
    let Some(buffer) = data.buffers().first() else {
        return column.len();
    };
    let bytes = buffer.as_slice();
    let start = data.offset() * width;
    let values = bytes
        .get(start..start + data.len() * width)
        .unwrap_or_default()
        .chunks_exact(width)
        .enumerate()
        .filter(|(i, _)| data.is_valid(*i))
        .map(|(_, v)| v);
    count_distinct(values)
}

fn count_distinct<T: Eq + Hash>(values: impl Iterator<Item = T>) -> usize {
    values.collect::<HashSet<T>>().len()
}

/// Whether an integer column's values never decrease (nulls skipped).
fn non_decreasing(column: &ArrayRef) -> bool {
    let Ok(as_i64) = arrow::compute::cast(column, &DataType::Int64) else {
        return false;
    };
    let values: Vec<i64> = as_i64
        .as_primitive::<arrow::datatypes::Int64Type>()
        .iter()
        .flatten()
        .collect();
    values.windows(2).all(|w| w[0] <= w[1])
}

/// The share of values with at most [`SHORT_FLOAT_DIGITS`] significant
/// digits in their shortest decimal form.
fn short_share(values: impl Iterator<Item = f64>) -> f64 {
    let (mut short, mut all) = (0usize, 0usize);
    for v in values {
        all += 1;
        if significant_digits(v) <= SHORT_FLOAT_DIGITS {
            short += 1;
        }
    }
    if all == 0 {
        1.0
    } else {
        short as f64 / all as f64
    }
}

fn significant_digits(v: f64) -> usize {
    if !v.is_finite() {
        return 0;
    }
    // Rust prints the shortest decimal that reads back as `v`.
    let text = format!("{:e}", v.abs());
    let mantissa = text.split('e').next().unwrap_or_default();
    mantissa.bytes().filter(u8::is_ascii_digit).count()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};

    use super::*;
    use crate::formats::test_batch as batch;

    #[test]
    fn columns_get_what_their_values_call_for() {
        let n = 10_000;
        let sample = batch(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
            (
                "region",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| ["north", "south"][i as usize % 2]),
                )),
            ),
            (
                "note",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("note {i}")),
                )),
            ),
            (
                "price",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| (i % 5000) as f64 / 100.0),
                )),
            ),
            (
                "noise",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| (i as f64).sqrt() * std::f64::consts::PI),
                )),
            ),
            (
                "band",
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 7))),
            ),
        ]);
        let layout = Layout::choose(&[sample]);
        let id = layout.column("id").unwrap();
        assert!(!id.dictionary && id.sorted);
        assert_eq!(id.encoding, Some(Encoding::DELTA_BINARY_PACKED));
        assert!(layout.column("region").unwrap().dictionary);
        let note = layout.column("note").unwrap();
        assert!(!note.dictionary);
        assert_eq!(note.encoding, Some(Encoding::PLAIN));
        // 5,000 distinct short decimals in 10,000 rows: plain.
        let price = layout.column("price").unwrap();
        assert!(!price.dictionary);
        assert_eq!(price.encoding, Some(Encoding::PLAIN));
        assert_eq!(
            layout.column("noise").unwrap().encoding,
            Some(Encoding::BYTE_STREAM_SPLIT)
        );
        let band = layout.column("band").unwrap();
        assert!(band.dictionary && !band.sorted);
    }

    #[test]
    fn significant_digits_of_the_shortest_form() {
        assert_eq!(significant_digits(12.34), 4);
        assert_eq!(significant_digits(0.001), 1);
        assert_eq!(significant_digits(1500.0), 2);
        assert_eq!(significant_digits(std::f64::consts::PI), 16);
    }

    #[test]
    fn the_layout_writes_a_file_that_reads_back() {
        let n = 5000;
        let sample = batch(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
            (
                "x",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| i as f64 / 3.0),
                )),
            ),
            (
                "t",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("{}", i % 3)),
                )),
            ),
        ]);
        let layout = Layout::choose(std::slice::from_ref(&sample));
        let props = layout.apply(base()).build();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(Vec::new(), sample.schema(), Some(props)).unwrap();
        writer.write(&sample).unwrap();
        let bytes = bytes::Bytes::from(writer.into_inner().unwrap());
        let read: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 8192)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(read, vec![sample]);
    }
}
