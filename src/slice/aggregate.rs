//! Aggregates: `group_by` and `measures` over the caller's visible rows,
//! computed by the engine, then passed through disclosure control before a
//! single value leaves the server. Measures may only use visible, unmasked
//! columns: a measure on a masked or hidden column is the same error as on
//! an absent one.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::Column;
use datafusion::functions_aggregate::expr_fn::{avg, count, max, min, sum};
use datafusion::logical_expr::{Expr, SortExpr, lit, when};
use datafusion::prelude::DataFrame;

use super::disclosure::{self, Cell};
use super::{Engine, SliceError, internal, resolve_columns};
use crate::catalog::Version;
use crate::policy::{AccessPlan, Disclosure};

/// Most grouping columns and measures in one aggregate.
const MAX_GROUP_COLUMNS: usize = 6;
const MAX_MEASURES: usize = 16;

/// An aggregate request, as received.
#[derive(Debug, Clone, Default)]
pub struct AggregateRequest {
    pub group_by: Vec<String>,
    pub measures: Vec<String>,
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sum,
    Mean,
    Min,
    Max,
}

/// A parsed measure: `count` or `kind(column)`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Measure {
    Count,
    Of(Kind, String),
}

impl Measure {
    fn parse(text: &str) -> Result<Self, SliceError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("count") || text.eq_ignore_ascii_case("count(*)") {
            return Ok(Measure::Count);
        }
        let bad = || {
            SliceError::BadColumns(format!(
                "measure '{text}' is not one of count, sum(column), mean(column), min(column), max(column)"
            ))
        };
        let (name, rest) = text.split_once('(').ok_or_else(bad)?;
        let column = rest.strip_suffix(')').ok_or_else(bad)?.trim();
        let kind = match name.trim().to_ascii_lowercase().as_str() {
            "sum" => Kind::Sum,
            "mean" | "avg" => Kind::Mean,
            "min" => Kind::Min,
            "max" => Kind::Max,
            _ => return Err(bad()),
        };
        Ok(Measure::Of(kind, column.to_owned()))
    }

    fn output_name(&self) -> String {
        match self {
            Measure::Count => "count".into(),
            Measure::Of(kind, column) => {
                let k = match kind {
                    Kind::Sum => "sum",
                    Kind::Mean => "mean",
                    Kind::Min => "min",
                    Kind::Max => "max",
                };
                format!("{k}_{column}")
            }
        }
    }
}

fn col(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// Names of the helper columns for the dominance rule of measure `i`.
fn helper_names(i: usize) -> (String, String) {
    (format!("__largest_{i}"), format!("__magnitude_{i}"))
}

impl Engine {
    /// Plans, runs and disclosure-controls an aggregate; returns a frame of
    /// the released table, ready to stream in any format.
    pub async fn aggregate(
        &self,
        version: &Version,
        plan: &AccessPlan,
        request: &AggregateRequest,
        max_filter_bytes: usize,
        rules: &Disclosure,
    ) -> Result<DataFrame, SliceError> {
        let visible: BTreeSet<String> = plan.columns.iter().map(|c| c.name.to_string()).collect();
        if request.group_by.len() > MAX_GROUP_COLUMNS {
            return Err(SliceError::BadColumns(format!(
                "group_by takes at most {MAX_GROUP_COLUMNS} columns"
            )));
        }
        let group_by = if request.group_by.is_empty() {
            Vec::new()
        } else {
            resolve_columns(&request.group_by, &visible)?
        };
        let mut measures: Vec<Measure> = request
            .measures
            .iter()
            .filter(|m| !m.trim().is_empty())
            .map(|m| Measure::parse(m))
            .collect::<Result<_, _>>()?;
        if measures.is_empty() {
            measures.push(Measure::Count);
        }
        if measures.len() > MAX_MEASURES {
            return Err(SliceError::BadColumns(format!(
                "at most {MAX_MEASURES} measures"
            )));
        }
        let mut names = BTreeSet::new();
        for m in &measures {
            if let Measure::Of(_, column) = m {
                // Only visible, unmasked columns can be measured.
                let measurable = plan.column(column).is_some_and(|c| c.mask.is_none());
                if !measurable {
                    return Err(SliceError::UnknownColumn(column.clone()));
                }
            }
            if !names.insert(m.output_name()) || group_by.contains(&m.output_name()) {
                return Err(SliceError::BadColumns(format!(
                    "measure '{}' is listed twice",
                    m.output_name()
                )));
            }
        }

        let df = self.visible_frame(version, plan, request.filter.as_deref(), max_filter_bytes)?;
        // The group size always comes first, whether asked for or not.
        let mut aggregates = vec![count(lit(1)).alias("__rows")];
        for (i, m) in measures.iter().enumerate() {
            let Measure::Of(kind, column) = m else {
                continue;
            };
            let x = col(column);
            aggregates.push(
                match kind {
                    Kind::Sum => sum(x.clone()),
                    Kind::Mean => avg(x.clone()),
                    Kind::Min => min(x.clone()),
                    Kind::Max => max(x.clone()),
                }
                .alias(m.output_name()),
            );
            if matches!(kind, Kind::Sum | Kind::Mean) {
                let magnitude = when(x.clone().lt(lit(0)), -x.clone())
                    .otherwise(x)
                    .map_err(internal)?;
                let (largest, total) = helper_names(i);
                aggregates.push(max(magnitude.clone()).alias(largest));
                aggregates.push(sum(magnitude).alias(total));
            }
        }
        let group_exprs: Vec<Expr> = group_by.iter().map(|g| col(g)).collect();
        let order: Vec<SortExpr> = group_by.iter().map(|g| col(g).sort(true, true)).collect();
        let df = df
            .aggregate(group_exprs, aggregates)
            .map_err(|_| SliceError::FilterTypes)?
            .sort(order)
            .map_err(internal)?
            .limit(0, Some(rules.max_groups + 1))
            .map_err(internal)?;
        let batches = self.collect(df).await?;
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => return Err(SliceError::Internal("aggregate returned no schema".into())),
        };
        let table = arrow::compute::concat_batches(&schema, &batches)
            .map_err(|e| SliceError::Internal(e.to_string()))?;
        if table.num_rows() > rules.max_groups {
            return Err(SliceError::BadColumns(format!(
                "the aggregate has more than {} groups; group by fewer or coarser columns",
                rules.max_groups
            )));
        }
        let released = release(&table, &group_by, &measures, rules)?;
        self.ctx.read_batch(released).map_err(internal)
    }

    /// Runs a small plan to completion on the query runtime.
    async fn collect(&self, df: DataFrame) -> Result<Vec<RecordBatch>, SliceError> {
        self.runtime
            .handle()
            .spawn(async move { df.collect().await })
            .await
            .map_err(|e| SliceError::Internal(e.to_string()))?
            .map_err(super::engine_error)
    }
}

/// Applies suppression, rounding and dominance to the engine's table and
/// builds the released one: group columns, then measures in the asked
/// order, then `suppressed`.
fn release(
    table: &RecordBatch,
    group_by: &[String],
    measures: &[Measure],
    rules: &Disclosure,
) -> Result<RecordBatch, SliceError> {
    let column = |name: &str| -> Result<&ArrayRef, SliceError> {
        table
            .column_by_name(name)
            .ok_or_else(|| SliceError::Internal(format!("aggregate lost column {name}")))
    };
    let as_text = |array: &ArrayRef| -> Result<Vec<String>, SliceError> {
        let text = arrow::compute::cast(array, &DataType::Utf8)
            .map_err(|e| SliceError::Internal(e.to_string()))?;
        let text = text
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .ok_or_else(|| SliceError::Internal("cast to text".into()))?;
        Ok((0..text.len())
            .map(|i| {
                if text.is_null(i) {
                    "\u{0}null".to_string()
                } else {
                    text.value(i).to_string()
                }
            })
            .collect())
    };
    let rows = column("__rows")?
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| SliceError::Internal("row count is not Int64".into()))?
        .clone();
    let keys: Vec<Vec<String>> = group_by
        .iter()
        .map(|g| column(g).and_then(as_text))
        .collect::<Result<_, _>>()?;
    let cells: Vec<Cell> = (0..table.num_rows())
        .map(|r| Cell {
            keys: keys.iter().map(|k| k[r].clone()).collect(),
            count: rows.value(r).max(0) as u64,
        })
        .collect();
    let hidden = disclosure::suppressed(&cells, rules.min_count);

    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let mut row_withheld = hidden.clone();
    for g in group_by {
        let array = column(g)?;
        fields.push(Field::new(g, array.data_type().clone(), true));
        arrays.push(array.clone());
    }
    for (i, m) in measures.iter().enumerate() {
        let name = m.output_name();
        let (array, withheld): (ArrayRef, Vec<bool>) = match m {
            Measure::Count => {
                let released: UInt64Array = cells
                    .iter()
                    .map(|c| Some(disclosure::round_count(c.count, rules.round_to)))
                    .collect();
                let released: ArrayRef = Arc::new(released);
                let released = arrow::compute::cast(&released, &DataType::Int64)
                    .map_err(|e| SliceError::Internal(e.to_string()))?;
                (released, hidden.clone())
            }
            Measure::Of(kind, _) => {
                let mut withheld = hidden.clone();
                if matches!(kind, Kind::Sum | Kind::Mean) {
                    let (largest, total) = helper_names(i);
                    let to_f64 = |a: &ArrayRef| -> Result<Float64Array, SliceError> {
                        let f = arrow::compute::cast(a, &DataType::Float64)
                            .map_err(|e| SliceError::Internal(e.to_string()))?;
                        Ok(f.as_any()
                            .downcast_ref::<Float64Array>()
                            .cloned()
                            .unwrap_or_else(|| Float64Array::from(vec![0.0; table.num_rows()])))
                    };
                    let largest = to_f64(column(&largest)?)?;
                    let total = to_f64(column(&total)?)?;
                    for (r, w) in withheld.iter_mut().enumerate() {
                        if disclosure::dominated(
                            largest.value(r),
                            total.value(r),
                            rules.dominance_pct,
                        ) {
                            *w = true;
                        }
                    }
                }
                (column(&name)?.clone(), withheld)
            }
        };
        for (r, w) in withheld.iter().enumerate() {
            row_withheld[r] |= *w;
        }
        let mask = BooleanArray::from(withheld);
        let released = arrow::compute::nullif(&array, &mask)
            .map_err(|e| SliceError::Internal(e.to_string()))?;
        fields.push(Field::new(&name, released.data_type().clone(), true));
        arrays.push(released);
    }
    fields.push(Field::new("suppressed", DataType::Boolean, false));
    arrays.push(Arc::new(BooleanArray::from(row_withheld)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| SliceError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_parse_into_kinds_and_names() {
        assert_eq!(Measure::parse("count").unwrap(), Measure::Count);
        assert_eq!(
            Measure::parse(" mean(length_of_stay) ")
                .unwrap()
                .output_name(),
            "mean_length_of_stay"
        );
        assert_eq!(
            Measure::parse("AVG(x)").unwrap(),
            Measure::Of(Kind::Mean, "x".into())
        );
        for bad in ["median(x)", "sum", "sum(x", "x"] {
            assert!(Measure::parse(bad).is_err(), "{bad}");
        }
    }
}
