//! CSV text for one batch, written straight into a byte buffer.
//!
//! The bytes are arrow-csv's (the writer Sluice used before, and what its
//! tests pin): a header of column names, values as arrow's display writes
//! them, nulls as empty fields, `\n` after each row, and the `csv` crate's
//! "necessary" quoting (a field with `,` `"` `\r` or `\n` is quoted, quotes
//! doubled; an empty field alone on its row is `""`). What differs is the
//! path: arrow-csv formats every value through a formatter object into a
//! `String`, then the `csv` crate copies and scans it again, which held a
//! download to about 90 MB/s per core. Here the common types (64- and
//! 32-bit integers, 64-bit floats, text, booleans, dates) are written by
//! `itoa`, `ryu` (the formatter arrow uses for floats) and a date routine
//! with no intermediate string; any other type goes through arrow's own
//! formatter, so it is the same text by construction. A property test
//! compares the two writers on random batches.

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Appends `batch` as CSV rows to `out`, after a header line if `header`.
pub(super) fn write_batch(
    batch: &RecordBatch,
    header: bool,
    out: &mut Vec<u8>,
) -> Result<(), ArrowError> {
    let lone = batch.num_columns() == 1;
    if header {
        for (i, field) in batch.schema().fields().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            quoted(field.name().as_bytes(), lone, out);
        }
        out.push(b'\n');
    }
    let options = FormatOptions::default().with_null("");
    let columns = batch
        .columns()
        .iter()
        .map(|array| Column::of(array, &options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut scratch = String::new();
    for row in 0..batch.num_rows() {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            column.write(row, lone, out, &mut scratch)?;
        }
        out.push(b'\n');
    }
    Ok(())
}

/// A column, typed once per batch so each value is one match away from
/// its writer.
enum Column<'a> {
    Int64(&'a Int64Array),
    Int32(&'a Int32Array),
    Float64(&'a Float64Array),
    Text(&'a StringArray),
    Boolean(&'a BooleanArray),
    /// Dates with a year of 0-9999 are written here; others (and the
    /// errors for days out of range) by arrow's formatter.
    Date(&'a Date32Array, ArrayFormatter<'a>),
    /// Every other type, through arrow's formatter (as arrow-csv does).
    Other(&'a ArrayRef, ArrayFormatter<'a>),
}

impl<'a> Column<'a> {
    fn of(array: &'a ArrayRef, options: &FormatOptions<'a>) -> Result<Self, ArrowError> {
        if array.data_type().is_nested() {
            return Err(ArrowError::CsvError(format!(
                "Nested type {} is not supported in CSV",
                array.data_type()
            )));
        }
        let any = array.as_any();
        let typed = match array.data_type() {
            DataType::Int64 => any.downcast_ref().map(Column::Int64),
            DataType::Int32 => any.downcast_ref().map(Column::Int32),
            DataType::Float64 => any.downcast_ref().map(Column::Float64),
            DataType::Utf8 => any.downcast_ref().map(Column::Text),
            DataType::Boolean => any.downcast_ref().map(Column::Boolean),
            DataType::Date32 => match any.downcast_ref() {
                Some(dates) => Some(Column::Date(
                    dates,
                    ArrayFormatter::try_new(array.as_ref(), options)?,
                )),
                None => None,
            },
            _ => None,
        };
        match typed {
            Some(column) => Ok(column),
            None => Ok(Column::Other(
                array,
                ArrayFormatter::try_new(array.as_ref(), options)?,
            )),
        }
    }

    fn array(&self) -> &dyn Array {
        match self {
            Column::Int64(a) => *a,
            Column::Int32(a) => *a,
            Column::Float64(a) => *a,
            Column::Text(a) => *a,
            Column::Boolean(a) => *a,
            Column::Date(a, _) => *a,
            Column::Other(a, _) => a.as_ref(),
        }
    }

    fn write(
        &self,
        row: usize,
        lone: bool,
        out: &mut Vec<u8>,
        scratch: &mut String,
    ) -> Result<(), ArrowError> {
        if self.array().is_null(row) {
            quoted(b"", lone, out);
            return Ok(());
        }
        match self {
            Column::Int64(a) => {
                out.extend_from_slice(itoa::Buffer::new().format(a.value(row)).as_bytes())
            }
            Column::Int32(a) => {
                out.extend_from_slice(itoa::Buffer::new().format(a.value(row)).as_bytes())
            }
            Column::Float64(a) => {
                out.extend_from_slice(ryu::Buffer::new().format(a.value(row)).as_bytes())
            }
            Column::Text(a) => quoted(a.value(row).as_bytes(), lone, out),
            Column::Boolean(a) => {
                out.extend_from_slice(if a.value(row) { b"true" } else { b"false" })
            }
            Column::Date(a, formatter) => {
                if !write_date(a.value(row), out) {
                    formatted(formatter, row, lone, out, scratch)?;
                }
            }
            Column::Other(_, formatter) => formatted(formatter, row, lone, out, scratch)?,
        }
        Ok(())
    }
}

/// A value through arrow's formatter, then quoted as needed.
fn formatted(
    formatter: &ArrayFormatter<'_>,
    row: usize,
    lone: bool,
    out: &mut Vec<u8>,
    scratch: &mut String,
) -> Result<(), ArrowError> {
    scratch.clear();
    formatter.value(row).write(scratch)?;
    quoted(scratch.as_bytes(), lone, out);
    Ok(())
}

/// A field, quoted when it must be: it holds a delimiter, a quote or a
/// line break, or it is empty and alone on its row (an empty line would
/// read as no row at all).
fn quoted(field: &[u8], lone: bool, out: &mut Vec<u8>) {
    let needs = (lone && field.is_empty())
        || field
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !needs {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for &b in field {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Writes a Date32 (days since 1970-01-01) as `YYYY-MM-DD` when its year is
/// 0-9999 (as chrono's `NaiveDate` debug form, which arrow writes);
/// returns false, writing nothing, otherwise.
fn write_date(days: i32, out: &mut Vec<u8>) -> bool {
    // Days to a civil date in the proleptic Gregorian calendar (Howard
    // Hinnant's algorithm, as in `chrono` and C++'s <chrono>).
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return false;
    }
    let digits = |n: i64| b'0' + (n % 10) as u8;
    out.extend_from_slice(&[
        digits(year / 1000),
        digits(year / 100),
        digits(year / 10),
        digits(year),
        b'-',
        digits(month / 10),
        digits(month),
        b'-',
        digits(day / 10),
        digits(day),
    ]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::test_batch as batch;
    use arrow::array::{Date64Array, Float32Array, Int8Array, TimestampMillisecondArray};
    use proptest::prelude::*;
    use std::sync::Arc;

    /// What arrow-csv writes for the batch (the reference).
    fn arrow_csv(batch: &RecordBatch, header: bool) -> Vec<u8> {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(header)
            .build(Vec::new());
        w.write(batch).unwrap();
        w.into_inner()
    }

    fn ours(batch: &RecordBatch, header: bool) -> Vec<u8> {
        let mut out = Vec::new();
        write_batch(batch, header, &mut out).unwrap();
        out
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            Just(String::new()),
            "[a-z ]{0,6}",
            "[a-z,\"\r\n é]{0,8}",
        ])
    }

    proptest! {
        #[test]
        fn the_same_bytes_as_arrow_csv(
            rows in prop::collection::vec(
                (
                    prop::option::of(any::<i64>()),
                    prop::option::of(any::<i32>()),
                    prop::option::of(prop_oneof![
                        any::<f64>(),
                        Just(f64::NAN),
                        Just(f64::INFINITY),
                        Just(-0.0),
                        Just(1e300),
                        Just(0.1),
                    ]),
                    text(),
                    prop::option::of(any::<bool>()),
                    // Years -100 to 10100: both sides of the fast path.
                    prop::option::of(-756_000i32..2_965_000),
                    prop::option::of(any::<f32>()),
                ),
                0..40,
            ),
            header in any::<bool>(),
        ) {
            let b = batch(vec![
                ("id", Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()))),
                ("n", Arc::new(Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()))),
                ("x", Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()))),
                ("t, \"quoted\"", Arc::new(StringArray::from(rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>()))),
                ("b", Arc::new(BooleanArray::from(rows.iter().map(|r| r.4).collect::<Vec<_>>()))),
                ("d", Arc::new(Date32Array::from(rows.iter().map(|r| r.5).collect::<Vec<_>>()))),
                ("f", Arc::new(Float32Array::from(rows.iter().map(|r| r.6).collect::<Vec<_>>()))),
            ]);
            let (mine, theirs) = (ours(&b, header), arrow_csv(&b, header));
            prop_assert_eq!(String::from_utf8_lossy(&mine), String::from_utf8_lossy(&theirs));
            // One column alone: empty fields are quoted.
            let lone = batch(vec![("t", b.column(3).clone())]);
            prop_assert_eq!(ours(&lone, header), arrow_csv(&lone, header));
        }
    }

    #[test]
    fn other_types_go_through_arrows_formatter() {
        let b = batch(vec![
            ("small", Arc::new(Int8Array::from(vec![Some(-3), None]))),
            (
                "at",
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_700_000_000_123),
                    None,
                ])),
            ),
            (
                "d64",
                Arc::new(Date64Array::from(vec![Some(86_400_000), None])),
            ),
        ]);
        assert_eq!(ours(&b, true), arrow_csv(&b, true));
    }

    #[test]
    fn dates_at_the_edges_of_the_fast_path() {
        // 0000-01-01, 9999-12-31 and one day either side.
        for days in [-719_528, -719_529, 2_932_896, 2_932_897, 0, -1, 19_000] {
            let b = batch(vec![(
                "d",
                Arc::new(Date32Array::from(vec![Some(days)])) as ArrayRef,
            )]);
            assert_eq!(
                String::from_utf8(ours(&b, false)).unwrap(),
                String::from_utf8(arrow_csv(&b, false)).unwrap(),
                "days {days}"
            );
        }
    }
}
