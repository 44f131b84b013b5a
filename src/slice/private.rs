//! Differentially private aggregates, for `mode = "dp"` grants: exact
//! statistics over a *public* group domain, computed by the engine, then
//! noised by [`crate::dp`] once the caller's budget has paid for them.
//!
//! What makes the release differentially private (unit: one row):
//! - **Groups come from the steward's declared `categories`**, the cross
//!   product in declared order, never from the values found in the data: a
//!   category no row has gets a noisy row like any other, so which rows
//!   exist is not told by which groups appear. Rows whose value is not a
//!   declared category are in no group.
//! - **Every statistic is a vector over all groups with a known
//!   sensitivity**: one row moves the count vector by 1 (in L1) and a sum
//!   vector by at most `max(|low|, |high|)`, the steward's `bounds`, to
//!   which each value is clamped first.
//! - **The epsilon of the answer is split evenly** over the statistics it
//!   needs: the count (when asked for, or dividing a mean), and one sum per
//!   column summed or averaged.
//! - **Paid before any row is read**: [`Engine::private_query`] checks and
//!   plans without touching data, the caller pays [`PrivateQuery::cost`],
//!   and only then does [`Engine::run_private`] read rows. Means, and every confidence interval, are computed
//!   from the noisy figures only (post-processing costs nothing).
//! - min and max are not offered: they are single rows' values.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, Float64Array, Float64Builder, Int64Array, Int64Builder,
    PrimitiveArray, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, cast, lit, when};
use datafusion::prelude::DataFrame;

use super::aggregate::{self, AggregateRequest, Kind, Measure, ROWS, col};
use super::{Engine, SliceError, internal, visible_names};
use crate::catalog::{Manifest, Version};
use crate::dp::noise::{Exact, Noised, Statistic};
use crate::internal::{Internal, OrInternal};
use crate::policy::{AccessPlan, Disclosure};
use crate::suggest::UnknownColumn;

/// A column summed (for `sum` or `mean`), with the bounds its values are
/// clamped to.
#[derive(Debug, Clone)]
struct Summed {
    column: String,
    bounds: [f64; 2],
    integer: bool,
}

impl Summed {
    /// How far one row can move this column's sum vector.
    fn sensitivity(&self) -> f64 {
        let [low, high] = self.bounds;
        low.abs().max(high.abs())
    }

    /// The column's values clamped to its bounds, in the type they are
    /// summed as. NaN compares above every number in Arrow, so it is
    /// clamped to `high` like any large value.
    fn clamped(&self) -> Result<Expr, SliceError> {
        let [low, high] = self.bounds;
        let (x, low, high) = if self.integer {
            (
                cast(col(&self.column), DataType::Int64),
                lit(low as i64),
                lit(high as i64),
            )
        } else {
            (
                cast(col(&self.column), DataType::Float64),
                lit(low),
                lit(high),
            )
        };
        when(x.clone().lt(low.clone()), low)
            .when(x.clone().gt(high.clone()), high)
            .otherwise(x)
            .map_err(internal)
    }

    fn helper_name(&self) -> String {
        format!("sluice:sum:{}", self.column)
    }
}

/// A request checked against the plan and the steward's declarations.
struct Checked {
    group_by: Vec<String>,
    /// Per grouping column, its declared categories.
    categories: Vec<Vec<String>>,
    measures: Vec<Measure>,
    summed: Vec<Summed>,
}

fn check(
    plan: &AccessPlan,
    manifest: &Manifest,
    version: &Version,
    request: &AggregateRequest,
    rules: &Disclosure,
) -> Result<Checked, SliceError> {
    let group_by = aggregate::checked_group_by(plan, manifest, request, rules)?;
    let mut categories = Vec::new();
    let mut cells: usize = 1;
    for name in &group_by {
        let declared = manifest
            .column(name)
            .map(|c| c.categories.clone())
            .unwrap_or_default();
        if declared.is_empty() {
            return Err(SliceError::BadColumns(format!(
                "column '{name}' has no declared categories: under differential privacy, groups come only from a public list of values, which the data's steward has not written for this column"
            )));
        }
        cells = cells.saturating_mul(declared.len());
        categories.push(declared);
    }
    if cells > rules.max_groups {
        return Err(SliceError::BadColumns(format!(
            "the aggregate has {cells} groups (every combination of the declared categories); at most {} are released",
            rules.max_groups
        )));
    }

    let measures = aggregate::parsed_measures(request)?;
    let mut names = std::collections::BTreeSet::new();
    let mut summed: Vec<Summed> = Vec::new();
    for m in &measures {
        let name = m.output_name();
        if group_by.contains(&name) || !names.insert(name.clone()) {
            return Err(SliceError::BadColumns(format!(
                "measure '{name}' is listed twice or has a grouping column's name"
            )));
        }
        let Measure::Of(kind, column) = m else {
            continue;
        };
        if matches!(kind, Kind::Min | Kind::Max) {
            return Err(SliceError::BadColumns(format!(
                "{}({column}) is not released under differential privacy: it is one row's value",
                kind.name()
            )));
        }
        // Visible, unmasked, numeric and bounded by the steward: anything
        // else is the same answer as a column that does not exist.
        let bounds = plan
            .column(column)
            .filter(|c| c.mask.is_none())
            .and_then(|_| manifest.column(column))
            .and_then(|c| c.bounds);
        let data_type = version
            .schema
            .field_with_name(column)
            .ok()
            .map(|f| f.data_type().clone());
        let summable = || {
            SliceError::UnknownColumn(UnknownColumn::new(
                column,
                plan.columns
                    .iter()
                    .filter(|c| c.mask.is_none())
                    .filter(|c| {
                        manifest
                            .column(c.name.as_str())
                            .is_some_and(|m| m.bounds.is_some())
                    })
                    .map(|c| c.name.as_str()),
            ))
        };
        let (Some(bounds), Some(data_type)) = (bounds, data_type) else {
            return Err(summable());
        };
        if !data_type.is_numeric() {
            return Err(summable());
        }
        if summed.iter().all(|s| &s.column != column) {
            let integer = data_type.is_integer();
            let bounds = if integer {
                // Whole-number bounds that hold the declared ones.
                [bounds[0].floor(), bounds[1].ceil()]
            } else {
                bounds
            };
            summed.push(Summed {
                column: column.clone(),
                bounds,
                integer,
            });
        }
    }
    Ok(Checked {
        group_by,
        categories,
        measures,
        summed,
    })
}

/// Every combination of the declared categories, first column slowest.
fn domain(categories: &[Vec<String>]) -> Vec<Vec<String>> {
    categories.iter().fold(vec![Vec::new()], |cells, values| {
        cells
            .iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut cell = prefix.clone();
                    cell.push(v.clone());
                    cell
                })
            })
            .collect()
    })
}

/// A DP aggregate checked and planned, with no row read yet: everything
/// that can be refused has been, so it can be paid for before the data is
/// touched (and a failure while reading rows, should one ever happen, is
/// then paid for too, never a free look).
pub struct PrivateQuery {
    checked: Checked,
    frame: DataFrame,
    /// Whether the answer needs the count (asked, or dividing a mean).
    counted: bool,
}

impl Engine {
    /// Checks a DP aggregate and builds its plan (the count and clamped
    /// sums of every cell of the public domain) without running it.
    pub fn private_query(
        &self,
        version: &Version,
        plan: &AccessPlan,
        manifest: &Manifest,
        request: &AggregateRequest,
        max_filter_bytes: usize,
        rules: &Disclosure,
    ) -> Result<PrivateQuery, SliceError> {
        let checked = check(plan, manifest, version, request, rules)?;
        // Noise covers any filter on any visible column: no filter limits.
        let mut df = self.visible_frame(
            &self.ctx,
            version,
            plan,
            request.filter.as_deref(),
            &visible_names(plan),
            max_filter_bytes,
        )?;
        let text = |g: &str| cast(col(g), DataType::Utf8);
        for (g, values) in checked.group_by.iter().zip(&checked.categories) {
            let list = values.iter().map(|v| lit(v.clone())).collect();
            df = df
                .filter(text(g).in_list(list, false))
                .map_err(|_| SliceError::FilterTypes)?;
        }
        let groups: Vec<Expr> = checked.group_by.iter().map(|g| text(g).alias(g)).collect();
        let mut aggregates = vec![count(lit(1)).alias(ROWS)];
        for s in &checked.summed {
            aggregates.push(sum(s.clamped()?).alias(s.helper_name()));
        }
        let frame = df
            .aggregate(groups, aggregates)
            .map_err(|_| SliceError::FilterTypes)?;
        let counted = checked
            .measures
            .iter()
            .any(|m| matches!(m, Measure::Count | Measure::Of(Kind::Mean, _)));
        Ok(PrivateQuery {
            checked,
            frame,
            counted,
        })
    }

    /// Runs a paid-for query: its exact statistics, priced at `epsilon` as
    /// [`PrivateQuery::cost`] said, ready to be noised.
    pub async fn run_private(
        &self,
        query: PrivateQuery,
        epsilon: f64,
    ) -> Result<PlannedRelease, SliceError> {
        let PrivateQuery {
            checked,
            frame,
            counted,
        } = query;
        let schema = frame.schema().inner().clone();
        let table = self.collect_one(frame, schema).await?;

        let cells = domain(&checked.categories);
        let index: HashMap<&[String], usize> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_slice(), i))
            .collect();
        let keys = aggregate::group_keys(&table, &checked.group_by)?;
        let slots: Vec<Option<usize>> = keys
            .iter()
            .map(|k| index.get(k.as_slice()).copied())
            .collect();

        let counts = per_cell(
            &int64(aggregate::column(&table, ROWS)?)?,
            &slots,
            cells.len(),
        );
        let mut sums = Vec::new();
        for s in checked.summed {
            let array = aggregate::column(&table, &s.helper_name())?;
            let exact = if s.integer {
                Exact::Integers(per_cell(&int64(array)?, &slots, cells.len()))
            } else {
                Exact::Decimals(per_cell(&float64(array)?, &slots, cells.len()))
            };
            sums.push((s, exact));
        }
        let share = epsilon / statistics(counted, sums.len());
        let fault = |e: String| SliceError::from(Internal::caused("planning the noise", e));
        let count = if counted {
            Some(Statistic::plan(Exact::Integers(counts), 1.0, share).map_err(fault)?)
        } else {
            None
        };
        let sums = sums
            .into_iter()
            .map(|(s, exact)| {
                let statistic = Statistic::plan(exact, s.sensitivity(), share).map_err(fault)?;
                Ok((s, statistic))
            })
            .collect::<Result<Vec<_>, SliceError>>()?;
        Ok(PlannedRelease {
            group_by: checked.group_by,
            cells,
            measures: checked.measures,
            count,
            sums,
        })
    }
}

/// How many statistics an answer's epsilon is split over.
fn statistics(counted: bool, sums: usize) -> f64 {
    (usize::from(counted) + sums) as f64
}

impl PrivateQuery {
    /// What answering at `epsilon` costs, by OpenDP's privacy maps of the
    /// very measurements the answer will use (they depend on the scales
    /// and sensitivities, not on the data).
    pub fn cost(&self, epsilon: f64) -> Result<f64, SliceError> {
        let share = epsilon / statistics(self.counted, self.checked.summed.len());
        let fault = |e: String| SliceError::from(Internal::caused("costing the noise", e));
        let mut total = 0.0;
        if self.counted {
            total += Statistic::plan(Exact::Integers(Vec::new()), 1.0, share)
                .map_err(fault)?
                .epsilon;
        }
        for s in &self.checked.summed {
            let exact = if s.integer {
                Exact::Integers(Vec::new())
            } else {
                Exact::Decimals(Vec::new())
            };
            total += Statistic::plan(exact, s.sensitivity(), share)
                .map_err(fault)?
                .epsilon;
        }
        Ok(total)
    }

    /// Each released statistic's Laplace noise scale, by name, at `epsilon`.
    pub fn noise_scales(&self, epsilon: f64) -> Vec<(String, f64)> {
        let share = epsilon / statistics(self.counted, self.checked.summed.len());
        let count = self
            .counted
            .then(|| ("count".to_owned(), Statistic::scale_for(1.0, share)));
        count
            .into_iter()
            .chain(self.checked.summed.iter().map(|s| {
                (
                    format!("sum_{}", s.column),
                    Statistic::scale_for(s.sensitivity(), share),
                )
            }))
            .collect()
    }
}

/// The engine's per-group values placed in the public domain's cells
/// (`slots[row]` is the row's cell): cells no row reached, and null sums
/// (a group whose values are all null), stay zero.
fn per_cell<T: ArrowPrimitiveType>(
    values: &PrimitiveArray<T>,
    slots: &[Option<usize>],
    cells: usize,
) -> Vec<T::Native> {
    let mut out = vec![T::Native::default(); cells];
    for (row, slot) in slots.iter().enumerate() {
        if let Some(cell) = *slot
            && !values.is_null(row)
        {
            out[cell] = values.value(row);
        }
    }
    out
}

fn int64(array: &ArrayRef) -> Result<Int64Array, SliceError> {
    aggregate::cast(array, &DataType::Int64)?
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| Internal::new("a conversion to Int64 gave another type").into())
}

fn float64(array: &ArrayRef) -> Result<Float64Array, SliceError> {
    aggregate::cast(array, &DataType::Float64)?
        .as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| Internal::new("a conversion to Float64 gave another type").into())
}

/// A paid-for release whose noise is fixed but not yet drawn.
pub struct PlannedRelease {
    group_by: Vec<String>,
    cells: Vec<Vec<String>>,
    measures: Vec<Measure>,
    count: Option<Statistic>,
    sums: Vec<(Summed, Statistic)>,
}

/// A released statistic's values, with its interval, as floats for means.
struct Released {
    noised: Noised,
}

impl Released {
    fn at(&self, i: usize) -> f64 {
        match &self.noised.values {
            Exact::Integers(v) => v[i] as f64,
            Exact::Decimals(v) => v[i],
        }
    }

    /// Value, low and high columns.
    fn arrays(&self) -> [ArrayRef; 3] {
        let h = self.noised.half_width;
        match &self.noised.values {
            Exact::Integers(v) => {
                let h = h as i64;
                let column = |f: &dyn Fn(i64) -> i64| -> ArrayRef {
                    let mut b = Int64Builder::with_capacity(v.len());
                    for &x in v {
                        b.append_value(f(x));
                    }
                    Arc::new(b.finish())
                };
                [
                    column(&|x| x),
                    column(&|x| x.saturating_sub(h)),
                    column(&|x| x.saturating_add(h)),
                ]
            }
            Exact::Decimals(v) => {
                let column = |f: &dyn Fn(f64) -> f64| -> ArrayRef {
                    Arc::new(Float64Array::from(
                        v.iter().map(|&x| f(x)).collect::<Vec<_>>(),
                    ))
                };
                [column(&|x| x), column(&|x| x - h), column(&|x| x + h)]
            }
        }
    }
}

impl PlannedRelease {
    /// Draws the noise and builds the answer: the group columns, then per
    /// measure its value and its 95 % interval (`<measure>_ci_low`,
    /// `<measure>_ci_high`). Call only once the budget is paid.
    pub fn release(self) -> Result<RecordBatch, SliceError> {
        let fault = |e: String| SliceError::from(Internal::caused("drawing the noise", e));
        let count = self
            .count
            .map(|c| c.release().map(|noised| Released { noised }))
            .transpose()
            .map_err(fault)?;
        let mut sums: HashMap<String, (Summed, Released)> = HashMap::new();
        for (s, statistic) in self.sums {
            let noised = statistic.release().map_err(fault)?;
            sums.insert(s.column.clone(), (s, Released { noised }));
        }

        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (d, g) in self.group_by.iter().enumerate() {
            let mut b = StringBuilder::new();
            for cell in &self.cells {
                b.append_value(&cell[d]);
            }
            fields.push(Field::new(g, DataType::Utf8, false));
            arrays.push(Arc::new(b.finish()));
        }
        let mut push = |name: String, [value, low, high]: [ArrayRef; 3]| {
            for (suffix, array) in [("", value), ("_ci_low", low), ("_ci_high", high)] {
                fields.push(Field::new(
                    format!("{name}{suffix}"),
                    array.data_type().clone(),
                    true,
                ));
                arrays.push(array);
            }
        };
        let unplanned = || Internal::new("a count was not planned");
        for m in &self.measures {
            let name = m.output_name();
            match m {
                Measure::Count => push(name, count.as_ref().ok_or_else(unplanned)?.arrays()),
                Measure::Of(Kind::Sum, c) => push(name, sums[c].1.arrays()),
                Measure::Of(_, c) => {
                    let (summed, total) = &sums[c];
                    let count = count.as_ref().ok_or_else(unplanned)?;
                    push(
                        name,
                        mean_arrays(summed.bounds, total, count, self.cells.len()),
                    );
                }
            }
        }
        let schema = Arc::new(Schema::new(fields));
        Ok(RecordBatch::try_new(schema, arrays).or_internal("assembling the released answer")?)
    }
}

/// Means from the noisy sum and count, clamped to the bounds (a mean of
/// clamped values lies in them); null where the noisy count is below 1.
/// The interval divides the sum's interval by the count's, so it holds
/// with at least 90 % (both 95 % intervals at once), more in practice.
fn mean_arrays(bounds: [f64; 2], sum: &Released, count: &Released, n: usize) -> [ArrayRef; 3] {
    let [low, high] = bounds;
    let (mut value, mut lo, mut hi) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    let (hs, hc) = (sum.noised.half_width, count.noised.half_width);
    for i in 0..n {
        let (s, c) = (sum.at(i), count.at(i));
        value.append_option((c >= 1.0).then(|| (s / c).clamp(low, high)));
        let c_low = c - hc;
        if c_low >= 1.0 {
            let ratios = [
                (s - hs) / c_low,
                (s - hs) / (c + hc),
                (s + hs) / c_low,
                (s + hs) / (c + hc),
            ];
            let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            lo.append_value(min.clamp(low, high));
            hi.append_value(max.clamp(low, high));
        } else {
            lo.append_null();
            hi.append_null();
        }
    }
    [
        Arc::new(value.finish()),
        Arc::new(lo.finish()),
        Arc::new(hi.finish()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_is_every_combination_in_declared_order() {
        let cats = vec![
            vec!["F".to_string(), "M".to_string()],
            vec!["north".to_string(), "south".to_string(), "east".to_string()],
        ];
        let cells = domain(&cats);
        assert_eq!(cells.len(), 6);
        assert_eq!(cells[0], ["F", "north"]);
        assert_eq!(cells[5], ["M", "east"]);
        assert_eq!(domain(&[]), vec![Vec::<String>::new()]);
    }

    #[test]
    fn a_sum_is_moved_by_one_row_at_most_its_largest_bound() {
        let s = Summed {
            column: "x".into(),
            bounds: [-20.0, 5.0],
            integer: true,
        };
        assert_eq!(s.sensitivity(), 20.0);
    }
}
