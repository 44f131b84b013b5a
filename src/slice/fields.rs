//! Declared fields: the columns that tables of aggregate-only and
//! differentially private callers are built over, each with a public,
//! finite list of categories the steward declared (text values, number
//! bins or calendar periods).
//!
//! This module owns turning a column of (visible, masked) values into
//! category numbers. The work is the same for every row whatever its value:
//! a hash lookup, a binary search over the edges, or calendar arithmetic.
//! It does not decide who may use a field (see [`super::table`]).

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, Date32Array, Float64Array, StringArray};
use arrow::datatypes::DataType;

use super::SliceError;
use crate::catalog::ColumnSpec;
use crate::domain::{Bins, Period};
use crate::util::internal::{Internal, OrInternal};

/// A row's category in a field it has no declared category in (a value
/// outside the declared list, below the first edge, outside the periods,
/// or null): such a row is in no cell of any table over the field.
pub(super) const NONE: u32 = u32::MAX;

/// A declared field: a column and its categories, in declared order.
#[derive(Debug, Clone)]
pub(super) struct Field {
    pub(super) name: String,
    pub(super) labels: Vec<String>,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Declared text values, looked up by the value as text.
    Text(HashMap<String, u32>),
    /// Number bins by their lower edges.
    Edges(Vec<f64>),
    /// Calendar periods, the first as a count of periods since year 0.
    Periods { every: Period, first: i64 },
}

impl Field {
    /// The field a column declares, if any: categories or bins that fit
    /// the column's (visible) type.
    pub(super) fn declared(spec: &ColumnSpec, data_type: &DataType) -> Option<Field> {
        let name = spec.name.to_string();
        if !spec.categories.is_empty() {
            let index = spec
                .categories
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i as u32))
                .collect();
            return Some(Field {
                name,
                labels: spec.categories.clone(),
                kind: Kind::Text(index),
            });
        }
        match spec.bins.as_ref()? {
            Bins::Edges(edges) if data_type.is_numeric() => {
                let whole = data_type.is_integer() && edges.iter().all(|e| e.fract() == 0.0);
                Some(Field {
                    name,
                    labels: edge_labels(edges, whole),
                    kind: Kind::Edges(edges.clone()),
                })
            }
            bins @ Bins::Periods { every, .. }
                if matches!(
                    data_type,
                    DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
                ) =>
            {
                let (first, last) = bins.period_range().ok()?;
                Some(Field {
                    name,
                    labels: (first..=last).map(|p| period_label(*every, p)).collect(),
                    kind: Kind::Periods {
                        every: *every,
                        first,
                    },
                })
            }
            _ => None,
        }
    }

    /// The lower edges of a number field's bins.
    pub(super) fn edges(&self) -> Option<&[f64]> {
        match &self.kind {
            Kind::Edges(edges) => Some(edges),
            _ => None,
        }
    }

    /// Each value's category number ([`NONE`] for none), appended to `out`.
    pub(super) fn categorize(
        &self,
        values: &ArrayRef,
        out: &mut Vec<u32>,
    ) -> Result<(), SliceError> {
        out.clear();
        match &self.kind {
            Kind::Text(index) => {
                let text = cast_to::<StringArray>(values, &DataType::Utf8)?;
                out.extend((0..text.len()).map(|i| {
                    if text.is_null(i) {
                        NONE
                    } else {
                        index.get(text.value(i)).copied().unwrap_or(NONE)
                    }
                }));
            }
            Kind::Edges(edges) => {
                let numbers = cast_to::<Float64Array>(values, &DataType::Float64)?;
                out.extend((0..numbers.len()).map(|i| {
                    let v = numbers.value(i);
                    // NaN is below no edge: no bin.
                    let above = edges.partition_point(|e| *e <= v);
                    if numbers.is_null(i) || above == 0 {
                        NONE
                    } else {
                        above as u32 - 1
                    }
                }));
            }
            Kind::Periods { every, first } => {
                let days = cast_to::<Date32Array>(values, &DataType::Date32)?;
                let count = self.labels.len() as i64;
                out.extend((0..days.len()).map(|i| {
                    let (year, month) = civil_from_days(i64::from(days.value(i)));
                    let period = match every {
                        Period::Month => year * 12 + month - 1,
                        Period::Year => year,
                    } - first;
                    if days.is_null(i) || !(0..count).contains(&period) {
                        NONE
                    } else {
                        period as u32
                    }
                }));
            }
        }
        Ok(())
    }
}

/// `values` cast to `to`, as the array type `A`.
pub(super) fn cast_to<A: Array + Clone + 'static>(
    values: &ArrayRef,
    to: &DataType,
) -> Result<A, SliceError> {
    let cast = arrow::compute::cast(values, to).or_internal("reading a field's values")?;
    cast.as_any()
        .downcast_ref::<A>()
        .cloned()
        .ok_or_else(|| Internal::new("a cast gave another type").into())
}

/// A number as a label: whole numbers without a decimal point.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Labels of the bins between `edges`: on whole numbers `2-3` (both
/// included) or `2` for a bin of one value, otherwise `2-<4`; the last
/// bin is `15+`.
fn edge_labels(edges: &[f64], whole: bool) -> Vec<String> {
    edges
        .iter()
        .enumerate()
        .map(|(i, &low)| match edges.get(i + 1) {
            None => format!("{}+", number(low)),
            Some(&next) if whole && next - low == 1.0 => number(low),
            Some(&next) if whole => format!("{}-{}", number(low), number(next - 1.0)),
            Some(&next) => format!("{}-<{}", number(low), number(next)),
        })
        .collect()
}

fn period_label(every: Period, period: i64) -> String {
    match every {
        Period::Year => format!("{period:04}"),
        Period::Month => format!(
            "{:04}-{:02}",
            period.div_euclid(12),
            period.rem_euclid(12) + 1
        ),
    }
}

/// The civil year and month (1-12) of a day counted from 1970-01-01
/// (H. Hinnant's `civil_from_days`): the same arithmetic for every day.
fn civil_from_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;

    use super::*;

    #[test]
    fn whole_number_bins_are_labelled_with_both_ends() {
        let labels = edge_labels(&[0.0, 1.0, 2.0, 4.0, 8.0, 15.0], true);
        assert_eq!(labels, ["0", "1", "2-3", "4-7", "8-14", "15+"]);
        assert_eq!(edge_labels(&[0.0, 2.5], false), ["0-<2.5", "2.5+"]);
    }

    #[test]
    fn civil_dates_match_the_calendar() {
        assert_eq!(civil_from_days(0), (1970, 1));
        // 2019-02-01 and 2020-02-29 (a leap day), and a day before 1970.
        assert_eq!(civil_from_days(17_928), (2019, 2));
        assert_eq!(civil_from_days(18_321), (2020, 2));
        assert_eq!(civil_from_days(-1), (1969, 12));
    }

    fn spec(toml_text: &str) -> ColumnSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn numbers_fall_in_their_bin_and_out_of_range_values_in_none() {
        let field = Field::declared(
            &spec("name = \"los\"\ndescription = \"\"\ngroupable = true\nbins = [0, 1, 2, 4]"),
            &DataType::Int64,
        )
        .unwrap();
        let values: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(0),
            Some(3),
            Some(4),
            Some(99),
            Some(-1),
            None,
        ]));
        let mut out = Vec::new();
        field.categorize(&values, &mut out).unwrap();
        assert_eq!(out, [0, 2, 3, 3, NONE, NONE]);
    }

    #[test]
    fn dates_fall_in_their_month() {
        let field = Field::declared(
            &spec(
                "name = \"d\"\ndescription = \"\"\ngroupable = true\nbins = { every = \"month\", from = \"2019-01\", to = \"2019-12\" }",
            ),
            &DataType::Date32,
        )
        .unwrap();
        assert_eq!(field.labels.len(), 12);
        assert_eq!(field.labels[1], "2019-02");
        let values: ArrayRef = Arc::new(Date32Array::from(vec![17_928, 0]));
        let mut out = Vec::new();
        field.categorize(&values, &mut out).unwrap();
        assert_eq!(out, [1, NONE]);
    }
}
