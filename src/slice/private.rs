//! Differentially private aggregates, for `mode = "dp"` grants: a table
//! over declared fields ([`super::table`]), counted over every row of the
//! grant's population, then noised by [`crate::dp`] once the caller's
//! budget has paid for it.
//!
//! What makes the release differentially private (unit: one row):
//! - **Cells come from the steward's declared categories and bins**, every
//!   combination in declared order, never from the values found in the
//!   data: a category no row has gets a noisy row like any other. Rows
//!   whose value is in no declared category are in no cell.
//! - **Every statistic is a vector over all cells with a known
//!   sensitivity**: one row moves the count vector by 1 (in L1) and a sum
//!   vector by at most `max(|low|, |high|)`, the steward's `bounds`, to
//!   which each value is clamped first.
//! - **The selection picks cells, not rows**, after counting: whatever it
//!   keeps, one row still moves each vector by at most its sensitivity.
//! - **The epsilon of the answer is split evenly** over the statistics it
//!   needs: the count (when asked for, or dividing a mean), and one sum per
//!   column summed or averaged.
//! - **Paid before any row is read**: [`Engine::private_query`] checks the
//!   question without touching data, the caller pays [`PrivateQuery::cost`],
//!   and only then does [`Engine::run_private`] read rows. Means, and every
//!   confidence interval, are computed from the noisy figures only
//!   (post-processing costs nothing).
//! - min and max are not offered: they are single rows' values.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};

use super::aggregate::{AggregateRequest, Kind, Measure};
use super::table::{self, Summed, TableQuery};
use super::{Engine, SliceError};
use crate::catalog::{Manifest, Version};
use crate::dp::noise::{Exact, Noised, Statistic};
use crate::policy::{AccessPlan, Disclosure};
use crate::util::internal::{Internal, OrInternal};

/// A DP aggregate checked, with no row read yet: everything that can be
/// refused has been, so it can be paid for before the data is touched
/// (and a failure while reading rows, should one ever happen, is then paid
/// for too, never a free look).
pub struct PrivateQuery {
    query: TableQuery,
    version: Version,
    plan: AccessPlan,
    /// Whether the answer needs the count (asked, or dividing a mean).
    counted: bool,
}

impl Engine {
    /// Checks a DP aggregate without reading a row.
    pub fn private_query(
        &self,
        version: &Version,
        plan: &AccessPlan,
        manifest: &Manifest,
        request: &AggregateRequest,
        max_filter_bytes: usize,
        rules: &Disclosure,
    ) -> Result<PrivateQuery, SliceError> {
        let query = table::check(plan, manifest, version, request, max_filter_bytes, rules)?;
        let counted = query
            .measures
            .iter()
            .any(|m| matches!(m, Measure::Count | Measure::Of(Kind::Mean, _)));
        Ok(PrivateQuery {
            query,
            version: version.clone(),
            plan: plan.clone(),
            counted,
        })
    }

    /// Runs a paid-for query: its exact statistics over every cell,
    /// priced at `epsilon` as [`PrivateQuery::cost`] said, ready to be
    /// noised.
    pub async fn run_private(
        &self,
        query: PrivateQuery,
        epsilon: f64,
    ) -> Result<PlannedRelease, SliceError> {
        let PrivateQuery {
            query,
            version,
            plan,
            counted,
        } = query;
        let counted_table = self.tabulate(&version, &plan, &query).await?;
        // Only cells the selection can reach are released (which ones is
        // told by the categories alone, so leaving the others out is free).
        let (cells, reached) = counted_table.margin(query.grouped, Some(&query.selection));
        let keep = |i: &usize| reached[*i];
        let labels: Vec<Vec<String>> = query
            .group_cells()
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(i))
            .map(|(_, cell)| query.labels(cell))
            .collect();

        let share = epsilon / statistics(counted, query.summed.len());
        let fault = |e: String| SliceError::from(Internal::caused("planning the noise", e));
        let count = if counted {
            let exact = (0..cells.rows.len())
                .filter(keep)
                .map(|i| cells.rows[i] as i64)
                .collect();
            Some(Statistic::plan(Exact::Integers(exact), 1.0, share).map_err(fault)?)
        } else {
            None
        };
        let sums = query
            .summed
            .iter()
            .zip(&cells.sums)
            .map(|(s, sum)| {
                let totals = (0..sum.total.len()).filter(keep).map(|i| sum.total[i]);
                let exact = if s.integer {
                    Exact::Integers(totals.map(|t| t as i64).collect())
                } else {
                    Exact::Decimals(totals.map(|t| s.value(t)).collect())
                };
                let statistic = Statistic::plan(exact, s.sensitivity(), share).map_err(fault)?;
                Ok((s.clone(), statistic))
            })
            .collect::<Result<Vec<_>, SliceError>>()?;
        Ok(PlannedRelease {
            group_by: query.group_by(),
            cells: labels,
            measures: query.measures,
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
        let share = epsilon / statistics(self.counted, self.query.summed.len());
        let fault = |e: String| SliceError::from(Internal::caused("costing the noise", e));
        let mut total = 0.0;
        if self.counted {
            total += Statistic::plan(Exact::Integers(Vec::new()), 1.0, share)
                .map_err(fault)?
                .epsilon;
        }
        for s in &self.query.summed {
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
        let share = epsilon / statistics(self.counted, self.query.summed.len());
        let count = self
            .counted
            .then(|| ("count".to_owned(), Statistic::scale_for(1.0, share)));
        count
            .into_iter()
            .chain(self.query.summed.iter().map(|s| {
                (
                    format!("sum_{}", s.column),
                    Statistic::scale_for(s.sensitivity(), share),
                )
            }))
            .collect()
    }
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
    fn a_sum_is_moved_by_one_row_at_most_its_largest_bound() {
        let s = Summed {
            column: "x".into(),
            bounds: [-20.0, 5.0],
            integer: true,
        };
        assert_eq!(s.sensitivity(), 20.0);
    }
}
