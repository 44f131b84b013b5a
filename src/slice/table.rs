//! Tables: what aggregate-only (`mode = "aggregate"`) and differentially
//! private (`mode = "dp"`) callers may ask. A question is a grouping over
//! declared fields ([`super::fields`]), measures (`count`, and `sum` or
//! `mean` of a column the steward bounded), and a selection that keeps
//! categories of declared fields ([`super::selection`]). No expression a
//! caller writes ever runs per row.
//!
//! Fixed work per answer: [`Engine::tabulate`] reads every row of the
//! grant's population (its row filter, masks applied), always the same
//! columns for one grant whatever is asked, and counts every row into the
//! full table over the fields asked for (grouping and selection); the
//! selection then picks cells of that table. How long an answer takes
//! depends on the dataset and the grant, never on which rows match.
//!
//! What is released from the table is decided elsewhere: disclosure control
//! with cell-key noise for aggregate-only callers ([`super::table_release`]),
//! budgeted noise for DP callers ([`super::private`]).

use std::collections::BTreeSet;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use datafusion::logical_expr::Expr;
use futures::StreamExt;

use super::aggregate::{AggregateRequest, Kind, Measure, parsed_measures};
use super::cell_noise::RecordKeys;
use super::fields::{Field, NONE, cast_to};
use super::selection::{self, Selection};
use super::{Engine, SliceError, internal};
use crate::catalog::{Manifest, Version};
use crate::domain::{Mask, Mode};
use crate::policy::{AccessPlan, Disclosure};
use crate::util::internal::OrInternal;
use crate::util::suggest::UnknownColumn;

/// Fixed-point scale of decimal sums: values are summed as integers of
/// 2^-20, so a sum is the same whatever order the rows arrive in.
const DECIMAL_SCALE: f64 = (1u64 << 20) as f64;

/// A column summed (for `sum` or `mean`), with the bounds its values are
/// clamped to.
#[derive(Debug, Clone)]
pub(super) struct Summed {
    pub(super) column: String,
    pub(super) bounds: [f64; 2],
    pub(super) integer: bool,
}

impl Summed {
    /// How far one row can move this column's sum.
    pub(super) fn sensitivity(&self) -> f64 {
        let [low, high] = self.bounds;
        low.abs().max(high.abs())
    }

    /// A value clamped to the bounds, in fixed point. NaN counts as `high`,
    /// a null as nothing.
    fn fixed(&self, value: Option<f64>) -> i128 {
        let Some(v) = value else { return 0 };
        let [low, high] = self.bounds;
        let v = if v.is_nan() { high } else { v.clamp(low, high) };
        if self.integer {
            v as i128
        } else {
            (v * DECIMAL_SCALE).round() as i128
        }
    }

    /// A fixed-point sum as a number.
    pub(super) fn value(&self, fixed: i128) -> f64 {
        if self.integer {
            fixed as f64
        } else {
            fixed as f64 / DECIMAL_SCALE
        }
    }
}

/// A table question checked against the caller's plan.
#[derive(Debug, Clone)]
pub(super) struct TableQuery {
    /// The fields the table is over: the grouping first, then fields only
    /// the selection names.
    pub(super) dims: Vec<Field>,
    /// How many of `dims` are grouped by.
    pub(super) grouped: usize,
    /// Over positions in `dims`.
    pub(super) selection: Selection,
    pub(super) measures: Vec<Measure>,
    pub(super) summed: Vec<Summed>,
    /// Every column the grant's tables can touch: read for every answer,
    /// whatever it asks, so the work and the records' keys are the same.
    read: Vec<String>,
}

impl TableQuery {
    /// Every cell of the table over the grouping fields, as category
    /// numbers, first field slowest (the order of [`Tabulated::margin`]).
    pub(super) fn group_cells(&self) -> Vec<Vec<u32>> {
        let sizes: Vec<usize> = self.dims[..self.grouped]
            .iter()
            .map(|f| f.labels.len())
            .collect();
        Tabulated::domain(&sizes)
    }

    /// A grouped cell's labels, one per grouping field.
    pub(super) fn labels(&self, cell: &[u32]) -> Vec<String> {
        cell.iter()
            .zip(&self.dims)
            .map(|(&c, f)| f.labels[c as usize].clone())
            .collect()
    }

    /// The grouping fields' names.
    pub(super) fn group_by(&self) -> Vec<String> {
        self.dims[..self.grouped]
            .iter()
            .map(|f| f.name.clone())
            .collect()
    }
}

/// The declared fields of `plan`: visible columns the steward made
/// groupable with categories or bins, never pseudonyms.
fn plan_fields(plan: &AccessPlan, manifest: &Manifest, version: &Version) -> Vec<Field> {
    plan.columns
        .iter()
        .filter(|c| c.mask != Some(Mask::Hash))
        .filter_map(|c| {
            let spec = manifest.column(c.name.as_str()).filter(|s| s.groupable)?;
            let field = version.schema.field_with_name(c.name.as_str()).ok()?;
            Field::declared(spec, field.data_type())
        })
        .collect()
}

/// The columns of `plan` that may be summed: visible, unmasked, numeric,
/// with the steward's bounds.
fn summable(plan: &AccessPlan, manifest: &Manifest, version: &Version) -> Vec<Summed> {
    plan.columns
        .iter()
        .filter(|c| c.mask.is_none())
        .filter_map(|c| {
            let bounds = manifest.column(c.name.as_str())?.bounds?;
            let data_type = version
                .schema
                .field_with_name(c.name.as_str())
                .ok()?
                .data_type();
            if !data_type.is_numeric() {
                return None;
            }
            let integer = data_type.is_integer();
            Some(Summed {
                column: c.name.to_string(),
                // Whole-number bounds that hold the declared ones.
                bounds: if integer {
                    [bounds[0].floor(), bounds[1].ceil()]
                } else {
                    bounds
                },
                integer,
            })
        })
        .collect()
}

/// Checks a table question against the plan and the steward's
/// declarations. Under aggregate-only access a selection may name only
/// grouped fields, so every released number is a cell of a declared table.
pub(super) fn check(
    plan: &AccessPlan,
    manifest: &Manifest,
    version: &Version,
    request: &AggregateRequest,
    max_filter_bytes: usize,
    rules: &Disclosure,
) -> Result<TableQuery, SliceError> {
    let fields = plan_fields(plan, manifest, version);
    // A visible, groupable column without declared categories is told so
    // (its description is public); anything else is an unknown column.
    let undeclared = |name: &str, in_group_by: bool| -> SliceError {
        let visible_groupable = plan
            .column(name)
            .is_some_and(|c| c.mask != Some(Mask::Hash))
            && manifest.column(name).is_some_and(|c| c.groupable);
        if visible_groupable {
            let why = format!(
                "column '{name}' has no declared categories or bins: tables group and select only by fields whose categories the data's steward declared (here: {})",
                names(&fields)
            );
            if in_group_by {
                SliceError::BadColumns(why)
            } else {
                SliceError::Selection(why)
            }
        } else {
            SliceError::UnknownColumn(UnknownColumn::new(
                name,
                fields.iter().map(|f| f.name.as_str()),
            ))
        }
    };
    if request.group_by.len() > rules.max_group_by {
        return Err(SliceError::BadColumns(format!(
            "group_by takes at most {} columns",
            rules.max_group_by
        )));
    }
    let mut dims: Vec<usize> = Vec::new();
    for name in &request.group_by {
        let at = fields
            .iter()
            .position(|f| &f.name == name)
            .ok_or_else(|| undeclared(name, true))?;
        if dims.contains(&at) {
            return Err(SliceError::BadColumns(format!(
                "column '{name}' is listed twice"
            )));
        }
        dims.push(at);
    }
    let grouped = dims.len();

    let text = request.filter.as_deref().unwrap_or("");
    let mut selection = selection::parse(text, max_filter_bytes, &fields).map_err(|e| match e {
        SliceError::UnknownColumn(unknown) => undeclared(&unknown.name, false),
        other => other,
    })?;
    let mut named = Vec::new();
    selection.fields(&mut named);
    for at in named {
        if dims.contains(&at) {
            continue;
        }
        if plan.mode == Mode::Aggregate {
            return Err(SliceError::Selection(format!(
                "under aggregate-only access a selection keeps categories only of fields the table groups by, so that every released number is a cell of a declared table: add '{}' to group_by",
                fields[at].name
            )));
        }
        dims.push(at);
    }
    selection.renumber(&|field| dims.iter().position(|d| *d == field));

    let cells = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(fields[d].labels.len()))
        .unwrap_or(usize::MAX);
    if cells > rules.max_groups {
        return Err(SliceError::BadColumns(format!(
            "the table has {cells} cells (every combination of the declared categories of the fields grouped or selected on); at most {} are computed",
            rules.max_groups
        )));
    }

    let measures = parsed_measures(request)?;
    let all_summable = summable(plan, manifest, version);
    let mut names_seen = BTreeSet::new();
    let mut summed: Vec<Summed> = Vec::new();
    for m in &measures {
        let name = m.output_name();
        if request.group_by.contains(&name) || !names_seen.insert(name.clone()) {
            return Err(SliceError::BadColumns(format!(
                "measure '{name}' is listed twice or has a grouping column's name"
            )));
        }
        let Measure::Of(kind, column) = m else {
            continue;
        };
        if matches!(kind, Kind::Min | Kind::Max) {
            return Err(SliceError::BadColumns(format!(
                "{}({column}) is not released to aggregate-only or differentially private access: it is one person's value (ask for count, sum or mean)",
                kind.name()
            )));
        }
        let Some(s) = all_summable.iter().find(|s| &s.column == column) else {
            return Err(SliceError::UnknownColumn(UnknownColumn::new(
                column,
                all_summable.iter().map(|s| s.column.as_str()),
            )));
        };
        if summed.iter().all(|x| &x.column != column) {
            summed.push(s.clone());
        }
    }

    let read = fields
        .iter()
        .map(|f| f.name.clone())
        .chain(all_summable.iter().map(|s| s.column.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(TableQuery {
        dims: dims.iter().map(|&d| fields[d].clone()).collect(),
        grouped,
        selection,
        measures,
        summed,
        read,
    })
}

fn names(fields: &[Field]) -> String {
    if fields.is_empty() {
        return "none".into();
    }
    fields
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per-cell figures of a table, cells in the order of every combination of
/// the fields' categories, first field slowest.
#[derive(Debug, Clone, Default)]
pub(super) struct Cells {
    pub(super) rows: Vec<u64>,
    /// The sum of the cell's records' keys ([`super::cell_noise`]).
    pub(super) keys: Vec<u64>,
    /// Per summed column (as in [`TableQuery::summed`]).
    pub(super) sums: Vec<SumCells>,
}

/// Per-cell figures of one summed column, in fixed point.
#[derive(Debug, Clone, Default)]
pub(super) struct SumCells {
    pub(super) total: Vec<i128>,
    /// The largest magnitude one row adds (for the dominance rule).
    pub(super) largest: Vec<i128>,
    /// The sum of magnitudes.
    pub(super) magnitude: Vec<i128>,
}

impl Cells {
    fn zeros(cells: usize, summed: usize) -> Self {
        let sum = || SumCells {
            total: vec![0; cells],
            largest: vec![0; cells],
            magnitude: vec![0; cells],
        };
        Cells {
            rows: vec![0; cells],
            keys: vec![0; cells],
            sums: (0..summed).map(|_| sum()).collect(),
        }
    }

    /// Adds cell `from` of `other` into cell `to` of this table.
    fn add(&mut self, to: usize, other: &Cells, from: usize) {
        self.rows[to] += other.rows[from];
        self.keys[to] = self.keys[to].wrapping_add(other.keys[from]);
        for (mine, theirs) in self.sums.iter_mut().zip(&other.sums) {
            mine.total[to] += theirs.total[from];
            mine.largest[to] = mine.largest[to].max(theirs.largest[from]);
            mine.magnitude[to] += theirs.magnitude[from];
        }
    }
}

/// The counted table over all of a query's fields.
#[derive(Debug)]
pub(super) struct Tabulated {
    sizes: Vec<usize>,
    cells: Cells,
}

impl Tabulated {
    /// Every cell's category numbers, in cell order, over the first
    /// `fields` fields.
    pub(super) fn domain(sizes: &[usize]) -> Vec<Vec<u32>> {
        sizes.iter().fold(vec![Vec::new()], |cells, &n| {
            cells
                .iter()
                .flat_map(|prefix| {
                    (0..n as u32).map(move |v| {
                        let mut cell = prefix.clone();
                        cell.push(v);
                        cell
                    })
                })
                .collect()
        })
    }

    /// The table over the first `grouped` fields, of the cells `selection`
    /// keeps (all, when `None`): the selection applies to counted cells,
    /// never to rows. With it, which of those cells the selection can
    /// reach at all (decided by the categories alone, not the data).
    pub(super) fn margin(
        &self,
        grouped: usize,
        selection: Option<&Selection>,
    ) -> (Cells, Vec<bool>) {
        let group_cells: usize = self.sizes[..grouped].iter().product();
        let mut out = Cells::zeros(group_cells, self.cells.sums.len());
        let mut reached = vec![false; group_cells];
        for (fine, cell) in Self::domain(&self.sizes).iter().enumerate() {
            if !selection.is_none_or(|s| s.keeps(cell)) {
                continue;
            }
            let to = index(&cell[..grouped], &self.sizes[..grouped]);
            reached[to] = true;
            if self.cells.rows[fine] > 0 {
                out.add(to, &self.cells, fine);
            }
        }
        (out, reached)
    }
}

/// A cell's position from its category numbers.
fn index(cell: &[u32], sizes: &[usize]) -> usize {
    cell.iter()
        .zip(sizes)
        .fold(0, |at, (&c, &n)| at * n + c as usize)
}

impl Engine {
    /// Counts every row of the grant's population into the full table over
    /// `query`'s fields, with the same work for every row.
    pub(super) async fn tabulate(
        &self,
        version: &Version,
        plan: &AccessPlan,
        query: &TableQuery,
    ) -> Result<Tabulated, SliceError> {
        let population =
            self.visible_frame(&self.ctx, (version, None), plan, None, &BTreeSet::new(), 0)?;
        let read: Vec<Expr> = query
            .read
            .iter()
            .map(|c| super::aggregate::col(c))
            .collect();
        let frame = population.select(read).map_err(internal)?;
        let query = query.clone();
        self.runtime
            .handle()
            .spawn(async move {
                let sizes: Vec<usize> = query.dims.iter().map(|f| f.labels.len()).collect();
                let mut cells = Cells::zeros(sizes.iter().product(), query.summed.len());
                let mut batches = frame.execute_stream().await.map_err(super::engine_error)?;
                let mut scratch = Scratch::default();
                while let Some(batch) = batches.next().await {
                    let batch = batch.map_err(super::engine_error)?;
                    count_batch(&query, &sizes, &batch, &mut cells, &mut scratch)?;
                }
                Ok(Tabulated { sizes, cells })
            })
            .await
            .or_internal("counting the table")?
    }
}

/// Buffers reused from batch to batch.
#[derive(Default)]
struct Scratch {
    categories: Vec<Vec<u32>>,
    keys: Vec<u64>,
}

/// Adds one batch's rows to the table.
fn count_batch(
    query: &TableQuery,
    sizes: &[usize],
    batch: &RecordBatch,
    cells: &mut Cells,
    scratch: &mut Scratch,
) -> Result<(), SliceError> {
    let n = batch.num_rows();
    let column = |name: &str| -> Result<&ArrayRef, SliceError> {
        batch.column_by_name(name).ok_or_else(|| {
            crate::util::internal::Internal::new("a table column went missing").into()
        })
    };
    scratch.categories.resize_with(query.dims.len(), Vec::new);
    for (field, out) in query.dims.iter().zip(scratch.categories.iter_mut()) {
        field.categorize(column(&field.name)?, out)?;
    }
    scratch.keys.clear();
    scratch.keys.resize(n, 0);
    for name in &query.read {
        fold_keys(column(name)?, &mut scratch.keys)?;
    }
    let mut values: Vec<Float64Array> = Vec::with_capacity(query.summed.len());
    for s in &query.summed {
        values.push(cast_to::<Float64Array>(
            column(&s.column)?,
            &DataType::Float64,
        )?);
    }
    for row in 0..n {
        let mut at = 0usize;
        let mut outside = false;
        for (d, &size) in sizes.iter().enumerate() {
            let c = scratch.categories[d][row];
            outside |= c == NONE;
            at = at * size + (c as usize % size.max(1));
        }
        if outside {
            continue;
        }
        cells.rows[at] += 1;
        cells.keys[at] = cells.keys[at].wrapping_add(scratch.keys[row]);
        for ((s, sum), v) in query.summed.iter().zip(&mut cells.sums).zip(&values) {
            let x = s.fixed((!v.is_null(row)).then(|| v.value(row)));
            sum.total[at] += x;
            sum.largest[at] = sum.largest[at].max(x.abs());
            sum.magnitude[at] += x.abs();
        }
    }
    Ok(())
}

/// Folds each row's value in `values` into its record key.
fn fold_keys(values: &ArrayRef, keys: &mut [u64]) -> Result<(), SliceError> {
    const NULL: u64 = 0x6e75_6c6c_6e75_6c6c;
    let t = values.data_type();
    if t.is_integer() || t.is_temporal() || *t == DataType::Boolean {
        let v = cast_to::<Int64Array>(values, &DataType::Int64)?;
        for (i, key) in keys.iter_mut().enumerate() {
            let x = if v.is_null(i) {
                NULL
            } else {
                v.value(i) as u64
            };
            *key = RecordKeys::fold(*key, x);
        }
    } else if t.is_floating() {
        let v = cast_to::<Float64Array>(values, &DataType::Float64)?;
        for (i, key) in keys.iter_mut().enumerate() {
            let x = if v.is_null(i) {
                NULL
            } else {
                v.value(i).to_bits()
            };
            *key = RecordKeys::fold(*key, x);
        }
    } else {
        let v = cast_to::<StringArray>(values, &DataType::Utf8)?;
        for (i, key) in keys.iter_mut().enumerate() {
            let x = if v.is_null(i) {
                NULL
            } else {
                RecordKeys::bytes(v.value(i).as_bytes())
            };
            *key = RecordKeys::fold(*key, x);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_add_the_kept_cells_into_their_group() {
        // 2 × 3 table, each cell holding its own index as its count.
        let sizes = vec![2, 3];
        let mut cells = Cells::zeros(6, 0);
        for i in 0..6 {
            cells.rows[i] = i as u64 + 1;
            cells.keys[i] = 1 << i;
        }
        let t = Tabulated { sizes, cells };
        let (by_first, _) = t.margin(1, None);
        assert_eq!(by_first.rows, [1 + 2 + 3, 4 + 5 + 6]);
        assert_eq!(by_first.keys, [0b111, 0b111000]);
        // Keep only the second field's last category.
        let keep_last = Selection::Keep {
            field: 1,
            keep: vec![false, false, true],
        };
        assert_eq!(t.margin(1, Some(&keep_last)).0.rows, [3, 6]);
        assert_eq!(t.margin(0, Some(&keep_last)).0.rows, [9]);
        let keep_first = Selection::Keep {
            field: 0,
            keep: vec![true, false],
        };
        assert_eq!(t.margin(1, Some(&keep_first)).1, [true, false]);
    }
}
