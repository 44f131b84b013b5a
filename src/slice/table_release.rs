//! What an aggregate-only caller gets from a counted table: disclosure
//! control decided on the *whole* table over the grouped fields (every
//! combination of their declared categories, empty ones included), then
//! cell-key noise and rounding on what is released, then the selection.
//!
//! One rule for every cell, zeros included: a cell is released when it
//! holds at least `min_count` records and secondary suppression leaves it;
//! otherwise it is absent (no row, no label). Because the rule is decided
//! on the whole table before the selection, a selection only hides rows of
//! the answer it would give anyway; and a margin (the same table without
//! one field, which a caller can also ask for) minus the released cells
//! gives back only noisy sums of at least two absent cells.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field as ArrowField, Schema};

use super::SliceError;
use super::aggregate::{Kind, Measure};
use super::cell_noise::CellNoise;
use super::disclosure::{self, Cell};
use super::table::{TableQuery, Tabulated};
use crate::policy::Disclosure;
use crate::util::internal::OrInternal;

/// The released table: group labels, then the measures in the asked order.
pub(super) fn release(
    query: &TableQuery,
    table: &Tabulated,
    rules: &Disclosure,
    noise: &CellNoise,
) -> Result<RecordBatch, SliceError> {
    let grouped = query.grouped;
    let (full, _) = table.margin(grouped, None);
    let domain = query.group_cells();
    // Suppression is decided with the fields in one fixed order (by name),
    // and `disclosure::suppressed` breaks ties by label, so asking for the
    // same fields in another order withholds exactly the same cells.
    let mut canonical: Vec<usize> = (0..grouped).collect();
    canonical.sort_by(|&a, &b| query.dims[a].name.cmp(&query.dims[b].name));
    let cells: Vec<Cell> = domain
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let labels = query.labels(cell);
            Cell {
                keys: canonical.iter().map(|&d| labels[d].clone()).collect(),
                count: full.rows[i],
            }
        })
        .collect();
    let hidden = disclosure::suppressed(&cells, rules.min_count);
    let kept: Vec<usize> = (0..domain.len())
        .filter(|&i| !hidden[i] && query.selection.keeps(&domain[i]))
        .collect();

    let counts: Vec<i64> = kept
        .iter()
        .map(|&i| {
            let rows = full.rows[i];
            let noisy = rows as i64 + noise.count(full.keys[i], rows, rules.count_noise);
            disclosure::round_count(noisy.max(0) as u64, rules.round_to) as i64
        })
        .collect();
    // Released sums (None where one record dominates), per summed column,
    // kept within what the released count of clamped values can add up to.
    let sums: Vec<Vec<Option<f64>>> = query
        .summed
        .iter()
        .zip(&full.sums)
        .map(|(s, sum)| {
            kept.iter()
                .zip(&counts)
                .map(|(&i, &n)| {
                    let (largest, magnitude) = (s.value(sum.largest[i]), s.value(sum.magnitude[i]));
                    if disclosure::dominated(largest, magnitude, rules.dominance_pct) {
                        return None;
                    }
                    let scale = rules.sum_noise * s.sensitivity();
                    let noisy = s.value(sum.total[i])
                        + noise.sum(&s.column, full.keys[i], full.rows[i], scale);
                    let [low, high] = s.bounds;
                    let noisy = noisy.clamp(low * n as f64, high * n as f64);
                    Some(disclosure::round_value(noisy, rules.round_to))
                })
                .collect()
        })
        .collect();

    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (d, field) in query.dims[..grouped].iter().enumerate() {
        let mut b = StringBuilder::new();
        for &i in &kept {
            b.append_value(&field.labels[domain[i][d] as usize]);
        }
        fields.push(ArrowField::new(&field.name, DataType::Utf8, false));
        arrays.push(Arc::new(b.finish()));
    }
    let summed_at = |column: &str| query.summed.iter().position(|s| s.column == column);
    for m in &query.measures {
        let name = m.output_name();
        let (field, array): (ArrowField, ArrayRef) = match m {
            Measure::Count => {
                let mut b = Int64Builder::with_capacity(kept.len());
                b.append_slice(&counts);
                (
                    ArrowField::new(&name, DataType::Int64, false),
                    Arc::new(b.finish()),
                )
            }
            Measure::Of(kind, column) => {
                let at = summed_at(column).ok_or_else(|| {
                    crate::util::internal::Internal::new("a measure was not summed")
                })?;
                let values = &sums[at];
                match kind {
                    Kind::Sum if query.summed[at].integer => {
                        let mut b = Int64Builder::with_capacity(kept.len());
                        for v in values {
                            b.append_option(v.map(|v| v as i64));
                        }
                        (
                            ArrowField::new(&name, DataType::Int64, true),
                            Arc::new(b.finish()),
                        )
                    }
                    _ => {
                        // A mean is derived from the released sum and
                        // count, so it gives back nothing they do not.
                        let mut b = Float64Builder::with_capacity(kept.len());
                        for (v, &n) in values.iter().zip(&counts) {
                            b.append_option(match kind {
                                Kind::Sum => *v,
                                _ => v.filter(|_| n > 0).map(|v| v / n as f64),
                            });
                        }
                        (
                            ArrowField::new(&name, DataType::Float64, true),
                            Arc::new(b.finish()),
                        )
                    }
                }
            }
        };
        fields.push(field);
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new(schema, arrays).or_internal("assembling the released table")?)
}

impl super::Engine {
    /// An aggregate-only caller's table: checked, counted over the grant's
    /// whole population, released under disclosure control.
    pub(super) async fn released_table(
        &self,
        version: &crate::catalog::Version,
        plan: &crate::policy::AccessPlan,
        manifest: &crate::catalog::Manifest,
        request: &super::AggregateRequest,
        max_filter_bytes: usize,
        rules: &Disclosure,
    ) -> Result<RecordBatch, SliceError> {
        let query = super::table::check(plan, manifest, version, request, max_filter_bytes, rules)?;
        let counted = self.tabulate(version, plan, &query).await?;
        release(&query, &counted, rules, &self.cell_noise)
    }
}
