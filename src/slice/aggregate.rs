//! Aggregates of callers who may read rows: `group_by` and `measures`
//! over the caller's visible rows with the full filter language, computed
//! by the engine, then released under disclosure control (the rules are in
//! [`super::disclosure`]). Aggregate-only and DP callers never come here
//! for their answer: [`Engine::aggregate`] sends them to tables over
//! declared fields ([`super::table`]); this module still owns what both
//! share (the request, measures and their names).
//!
//! What leaves the server is built here from released values only, with
//! fresh buffers: a withheld cell is not in the answer at all (no row, no
//! label), and a withheld measure is a null whose bytes are zero.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, Int64Array, Int64Builder, MutableArrayData,
    RecordBatch, make_array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::{Expr, SortExpr, lit, when};
use datafusion::prelude::DataFrame;

use super::disclosure::{self, Cell};
use super::{Engine, SliceError, internal, resolve_columns};
use crate::catalog::{Manifest, Version};
use crate::domain::{Mask, Mode};
use crate::policy::{AccessPlan, Disclosure};
use crate::util::internal::{Internal, OrInternal};
use crate::util::suggest::UnknownColumn;

/// Most measures in one aggregate.
pub(super) const MAX_MEASURES: usize = 16;

/// Names the engine's helper columns carry. Column names are plain
/// identifiers (letters, digits, `_`), so a `:` keeps them apart from any
/// column a dataset can have.
pub(super) const ROWS: &str = "sluice:rows";

/// An aggregate request, as received.
#[derive(Debug, Clone, Default)]
pub struct AggregateRequest {
    pub group_by: Vec<String>,
    pub measures: Vec<String>,
    pub filter: Option<String>,
    /// Under differential privacy: spend this much (at most the grant's
    /// per-answer maximum) rather than the maximum.
    pub epsilon: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Sum,
    Mean,
    Min,
    Max,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Sum => "sum",
            Kind::Mean => "mean",
            Kind::Min => "min",
            Kind::Max => "max",
        }
    }

    fn is_order_statistic(self) -> bool {
        matches!(self, Kind::Min | Kind::Max)
    }
}

/// A parsed measure: `count` or `kind(column)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Measure {
    Count,
    Of(Kind, String),
}

impl Measure {
    pub(super) fn parse(text: &str) -> Result<Self, SliceError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("count") || text.eq_ignore_ascii_case("count(*)") {
            return Ok(Measure::Count);
        }
        let bad = || {
            SliceError::BadColumns(format!(
                "measure '{}' is not one of count, sum(column), mean(column), min(column), max(column)",
                crate::util::echo::cut(text)
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

    pub(super) fn output_name(&self) -> String {
        match self {
            Measure::Count => "count".into(),
            Measure::Of(kind, column) => format!("{}_{column}", kind.name()),
        }
    }
}

pub(super) fn col(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// Helper column names for a summed column: its sum, its largest and its
/// total magnitude (for the dominance rule).
fn sum_names(column: &str) -> [String; 3] {
    [
        format!("sluice:sum:{column}"),
        format!("sluice:largest:{column}"),
        format!("sluice:magnitude:{column}"),
    ]
}

/// Whether `name` may be grouped on under `plan`: visible, never a `hash`
/// pseudonym (a group per pseudonym is a row per person).
fn groupable(plan: &AccessPlan, name: &str) -> bool {
    plan.column(name)
        .is_some_and(|c| c.mask != Some(Mask::Hash))
}

/// The request's grouping columns: at most `max_group_by`, each visible and
/// groupable under `plan`. A column that may not be grouped on is the same
/// error as one that does not exist; the hint lists what may be grouped on.
fn checked_group_by(
    plan: &AccessPlan,
    request: &AggregateRequest,
    rules: &Disclosure,
) -> Result<Vec<String>, SliceError> {
    if request.group_by.len() > rules.max_group_by {
        return Err(SliceError::BadColumns(format!(
            "group_by takes at most {} columns",
            rules.max_group_by
        )));
    }
    if request.group_by.is_empty() {
        return Ok(Vec::new());
    }
    let visible = super::visible_names(plan);
    let group_by = resolve_columns(&request.group_by, &visible)?;
    for name in &group_by {
        if !groupable(plan, name) {
            return Err(SliceError::UnknownColumn(UnknownColumn::new(
                name,
                visible.iter().filter(|v| groupable(plan, v)),
            )));
        }
    }
    Ok(group_by)
}

/// The request's measures, parsed: `count` when none is asked for, at
/// most [`MAX_MEASURES`].
pub(super) fn parsed_measures(request: &AggregateRequest) -> Result<Vec<Measure>, SliceError> {
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
    Ok(measures)
}

/// A checked aggregate: what to group by and measure.
struct Checked {
    group_by: Vec<String>,
    measures: Vec<Measure>,
    /// Columns summed (for `sum` and `mean`), each once.
    summed: BTreeSet<String>,
    /// Columns with `min` or `max`, each once.
    ordered: BTreeSet<String>,
}

/// Checks a request against the caller's plan and the steward's column
/// decisions. Errors name only what the caller sent.
fn check(
    plan: &AccessPlan,
    schema: &Schema,
    request: &AggregateRequest,
    rules: &Disclosure,
) -> Result<Checked, SliceError> {
    let group_by = checked_group_by(plan, request, rules)?;
    let measures = parsed_measures(request)?;
    let mut names = BTreeSet::new();
    let (mut summed, mut ordered) = (BTreeSet::new(), BTreeSet::new());
    for m in &measures {
        let name = m.output_name();
        if group_by.contains(&name) {
            return Err(SliceError::BadColumns(format!(
                "measure '{name}' has the name of a grouping column; group by or measure it, not both"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(SliceError::BadColumns(format!(
                "measure '{name}' is listed twice"
            )));
        }
        let Measure::Of(kind, column) = m else {
            continue;
        };
        // Only visible, unmasked columns can be measured.
        if plan.column(column).is_none_or(|c| c.mask.is_some()) {
            return Err(SliceError::UnknownColumn(UnknownColumn::new(
                column,
                plan.columns
                    .iter()
                    .filter(|c| c.mask.is_none())
                    .map(|c| c.name.as_str()),
            )));
        }
        let data_type = schema
            .field_with_name(column)
            .or_internal("finding a checked column in the schema")?
            .data_type();
        if kind.is_order_statistic() {
            ordered.insert(column.clone());
        } else {
            if !data_type.is_numeric() {
                return Err(SliceError::BadColumns(format!(
                    "{}({column}) needs a numeric column",
                    kind.name()
                )));
            }
            summed.insert(column.clone());
        }
    }
    Ok(Checked {
        group_by,
        measures,
        summed,
        ordered,
    })
}

impl Engine {
    /// Plans, runs and disclosure-controls an aggregate; returns a frame of
    /// the released table, ready to stream in any format.
    pub async fn aggregate(
        &self,
        version: &Version,
        plan: &AccessPlan,
        manifest: &Manifest,
        request: &AggregateRequest,
        max_filter_bytes: usize,
        rules: &Disclosure,
    ) -> Result<DataFrame, SliceError> {
        if plan.mode != Mode::Rows {
            // Aggregate-only access asks for tables over declared fields.
            let released = self
                .released_table(version, plan, manifest, request, max_filter_bytes, rules)
                .await?;
            return self.ctx.read_batch(released).map_err(internal);
        }
        let checked = check(plan, &version.schema, request, rules)?;
        let visible = self.visible_frame(
            &self.ctx,
            (version, None),
            plan,
            request.filter.as_deref(),
            &super::visible_names(plan),
            max_filter_bytes,
        )?;
        let groups: Vec<Expr> = checked.group_by.iter().map(|g| col(g)).collect();

        // The group size always comes first, whether asked for or not.
        let mut aggregates = vec![count(lit(1)).alias(ROWS)];
        for column in &checked.summed {
            let x = col(column);
            let magnitude = when(x.clone().lt(lit(0)), -x.clone())
                .otherwise(x.clone())
                .map_err(internal)?;
            let [total, largest, sum_abs] = sum_names(column);
            aggregates.push(sum(x).alias(total));
            aggregates.push(max(magnitude.clone()).alias(largest));
            aggregates.push(sum(magnitude).alias(sum_abs));
        }
        let mut df = visible
            .clone()
            .aggregate(groups.clone(), aggregates)
            .map_err(|_| SliceError::FilterTypes)?;
        if !groups.is_empty() {
            let order: Vec<SortExpr> = groups.iter().map(|g| g.clone().sort(true, true)).collect();
            df = df.sort(order).map_err(internal)?;
        }
        let df = df
            .limit(0, Some(rules.max_groups.saturating_add(1)))
            .map_err(internal)?;
        let engine_schema: SchemaRef = df.schema().inner().clone();
        let table = self.collect_one(df, engine_schema).await?;
        if table.num_rows() > rules.max_groups {
            return Err(SliceError::BadColumns(format!(
                "the aggregate has more than {} groups; group by fewer or coarser columns",
                rules.max_groups
            )));
        }

        // min/max: per group, the extremes among values that at least
        // `min_count` rows share, so no released value is one person's.
        let mut extremes = HashMap::new();
        for column in &checked.ordered {
            let mut by_value = groups.clone();
            by_value.push(col(column));
            let shared = visible
                .clone()
                .aggregate(by_value, vec![count(lit(1)).alias(ROWS)])
                .map_err(|_| SliceError::FilterTypes)?
                .filter(col(ROWS).gt_eq(lit(rules.min_count as i64)))
                .map_err(internal)?
                .aggregate(
                    groups.clone(),
                    vec![
                        min(col(column)).alias("sluice:min"),
                        max(col(column)).alias("sluice:max"),
                    ],
                )
                .map_err(internal)?;
            let schema: SchemaRef = shared.schema().inner().clone();
            extremes.insert(column.clone(), self.collect_one(shared, schema).await?);
        }

        let released = release(&table, &extremes, &checked, &version.schema, rules)?;
        self.ctx.read_batch(released).map_err(internal)
    }

    /// Runs a small plan to completion on the query runtime, as one batch,
    /// under the place its request already holds ([`super::Place`]).
    pub(super) async fn collect_one(
        &self,
        df: DataFrame,
        schema: SchemaRef,
    ) -> Result<RecordBatch, SliceError> {
        let batches = self
            .runtime
            .handle()
            .spawn(async move { df.collect().await })
            .await
            .or_internal("running the aggregate")?
            .map_err(super::engine_error)?;
        Ok(arrow::compute::concat_batches(&schema, &batches)
            .or_internal("joining the aggregate's batches")?)
    }
}

pub(super) fn column<'a>(table: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, SliceError> {
    table
        .column_by_name(name)
        .ok_or_else(|| Internal::new(format!("the aggregate lost its column {name}")).into())
}

pub(super) fn cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, SliceError> {
    Ok(arrow::compute::cast(array, to).or_internal("converting an aggregate's values")?)
}

/// Each row's group values as text, the key the disclosure rules and the
/// min/max tables share.
pub(super) fn group_keys(
    table: &RecordBatch,
    group_by: &[String],
) -> Result<Vec<Vec<String>>, SliceError> {
    let columns = group_by
        .iter()
        .map(|g| {
            let text = cast(column(table, g)?, &DataType::Utf8)?;
            let text = text
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .cloned()
                .ok_or_else(|| Internal::new("a conversion to text gave another type"))?;
            Ok((0..text.len())
                .map(|i| {
                    if text.is_null(i) {
                        // Not a value a text column can hold.
                        "\u{0}null".to_string()
                    } else {
                        text.value(i).to_string()
                    }
                })
                .collect::<Vec<_>>())
        })
        .collect::<Result<Vec<_>, SliceError>>()?;
    Ok((0..table.num_rows())
        .map(|r| columns.iter().map(|c| c[r].clone()).collect())
        .collect())
}

/// A fresh array of `array`'s values at `slots` (`None` is a null): no byte
/// of a value that is not taken reaches the new buffers, and a null slot's
/// bytes are zero.
fn gather(array: &ArrayRef, slots: &[Option<usize>]) -> Result<ArrayRef, SliceError> {
    let data = array.to_data();
    let mut out = MutableArrayData::new(vec![&data], true, slots.len());
    for slot in slots {
        match slot {
            Some(i) => out.try_extend(0, *i, i + 1),
            None => out.try_extend_nulls(1),
        }
        .or_internal("placing values in their cells")?;
    }
    Ok(make_array(out.freeze()))
}

/// The released table: the groups that pass suppression, their labels,
/// rounded counts and sums, means derived from those, and min/max of shared
/// values. Columns: the group columns, then the measures in the asked order.
fn release(
    table: &RecordBatch,
    extremes: &HashMap<String, RecordBatch>,
    checked: &Checked,
    source: &Schema,
    rules: &Disclosure,
) -> Result<RecordBatch, SliceError> {
    let keys = group_keys(table, &checked.group_by)?;
    let counts = cast(column(table, ROWS)?, &DataType::Int64)?;
    let counts = counts
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| Internal::new("the row count is not Int64"))?;
    let cells: Vec<Cell> = keys
        .iter()
        .enumerate()
        .map(|(r, k)| Cell {
            keys: k.clone(),
            count: counts.value(r).max(0) as u64,
        })
        .collect();
    let hidden = disclosure::suppressed(&cells, rules.min_count);
    let kept: Vec<usize> = (0..cells.len()).filter(|&r| !hidden[r]).collect();
    let released_count = |r: usize| disclosure::round_count(cells[r].count, rules.round_to) as i64;

    // Released sums (None where withheld), per summed column.
    let mut sums: HashMap<&str, Vec<Option<f64>>> = HashMap::new();
    for name in &checked.summed {
        let [total, largest, magnitude] = sum_names(name);
        let as_f64 = |n: &str| -> Result<Float64Array, SliceError> {
            let a = cast(column(table, n)?, &DataType::Float64)?;
            a.as_any()
                .downcast_ref::<Float64Array>()
                .cloned()
                .ok_or_else(|| Internal::new("a conversion to float gave another type").into())
        };
        let (total, largest, magnitude) = (as_f64(&total)?, as_f64(&largest)?, as_f64(&magnitude)?);
        let released = kept
            .iter()
            .map(|&r| {
                let withheld = total.is_null(r)
                    || disclosure::dominated(
                        largest.value(r),
                        magnitude.value(r),
                        rules.dominance_pct,
                    );
                (!withheld).then(|| disclosure::round_value(total.value(r), rules.round_to))
            })
            .collect();
        sums.insert(name.as_str(), released);
    }

    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let kept_slots: Vec<Option<usize>> = kept.iter().map(|&r| Some(r)).collect();
    for g in &checked.group_by {
        let array = gather(column(table, g)?, &kept_slots)?;
        fields.push(Field::new(g, array.data_type().clone(), true));
        arrays.push(array);
    }
    for m in &checked.measures {
        let name = m.output_name();
        let (field, array): (Field, ArrayRef) = match m {
            Measure::Count => {
                let mut b = Int64Builder::with_capacity(kept.len());
                for &r in &kept {
                    b.append_value(released_count(r));
                }
                (
                    Field::new(&name, DataType::Int64, false),
                    Arc::new(b.finish()),
                )
            }
            Measure::Of(Kind::Sum, c) => {
                let integer = source
                    .field_with_name(c)
                    .is_ok_and(|f| f.data_type().is_integer());
                let values = &sums[c.as_str()];
                if integer {
                    let mut b = Int64Builder::with_capacity(kept.len());
                    for v in values {
                        b.append_option(v.map(|v| v as i64));
                    }
                    (
                        Field::new(&name, DataType::Int64, true),
                        Arc::new(b.finish()),
                    )
                } else {
                    let mut b = Float64Builder::with_capacity(kept.len());
                    for v in values {
                        b.append_option(*v);
                    }
                    (
                        Field::new(&name, DataType::Float64, true),
                        Arc::new(b.finish()),
                    )
                }
            }
            Measure::Of(Kind::Mean, c) => {
                // Derived from the released sum and count, so the mean
                // gives back nothing they do not.
                let mut b = Float64Builder::with_capacity(kept.len());
                for (v, &r) in sums[c.as_str()].iter().zip(&kept) {
                    let n = released_count(r);
                    b.append_option(v.filter(|_| n > 0).map(|v| v / n as f64));
                }
                (
                    Field::new(&name, DataType::Float64, true),
                    Arc::new(b.finish()),
                )
            }
            Measure::Of(kind, c) => {
                let shared = &extremes[c];
                let which = if *kind == Kind::Min {
                    "sluice:min"
                } else {
                    "sluice:max"
                };
                let index: HashMap<Vec<String>, usize> = group_keys(shared, &checked.group_by)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, k)| (k, i))
                    .collect();
                let slots: Vec<Option<usize>> =
                    kept.iter().map(|&r| index.get(&keys[r]).copied()).collect();
                let array = gather(column(shared, which)?, &slots)?;
                (Field::new(&name, array.data_type().clone(), true), array)
            }
        };
        fields.push(field);
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    if arrays.is_empty() {
        return Ok(RecordBatch::new_empty(schema));
    }
    Ok(RecordBatch::try_new(schema, arrays).or_internal("assembling the aggregate's answer")?)
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

    #[test]
    fn gathered_arrays_hold_only_the_taken_values() {
        let source: ArrayRef = Arc::new(Int64Array::from(vec![11, 22, 33]));
        let out = gather(&source, &[Some(2), None]).unwrap();
        let data = out.to_data();
        let values: &[i64] = data.buffers()[0].typed_data();
        assert_eq!(values, [33, 0]);
        let text: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![
            "secret", "kept", "other",
        ]));
        let out = gather(&text, &[Some(1), None]).unwrap();
        assert_eq!(out.to_data().buffers()[1].as_slice(), b"kept");
    }

    /// The engine's table for `rows` of (a, b, v) grouped by `dims`
    /// (indexes into [a, b]), computed here the slow way, with each group's
    /// exact count for checking.
    fn engine_table(
        rows: &[(u8, u8, i64)],
        dims: &[usize],
    ) -> (RecordBatch, Vec<(Vec<String>, u64)>) {
        let mut groups: std::collections::BTreeMap<Vec<String>, (u64, i64, i64, i64)> =
            Default::default();
        for &(a, b, v) in rows {
            let values = [a.to_string(), b.to_string()];
            let key: Vec<String> = dims.iter().map(|&d| values[d].clone()).collect();
            let g = groups.entry(key).or_default();
            g.0 += 1;
            g.1 += v;
            g.2 = g.2.max(v.abs());
            g.3 += v.abs();
        }
        if dims.is_empty() && groups.is_empty() {
            groups.insert(Vec::new(), (0, 0, 0, 0));
        }
        let names = ["a", "b"];
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (i, &d) in dims.iter().enumerate() {
            fields.push(Field::new(names[d], DataType::Utf8, true));
            let labels: Vec<String> = groups.keys().map(|k| k[i].clone()).collect();
            arrays.push(Arc::new(arrow::array::StringArray::from(labels)));
        }
        let [total, largest, magnitude] = sum_names("v");
        let numbers = |f: fn(&(u64, i64, i64, i64)) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from(groups.values().map(f).collect::<Vec<_>>()))
        };
        for (name, array) in [
            (ROWS.to_string(), numbers(|g| g.0 as i64)),
            (total, numbers(|g| g.1)),
            (largest, numbers(|g| g.2)),
            (magnitude, numbers(|g| g.3)),
        ] {
            fields.push(Field::new(name, DataType::Int64, true));
            arrays.push(array);
        }
        let table = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
        let exact = groups.into_iter().map(|(k, g)| (k, g.0)).collect();
        (table, exact)
    }

    proptest::proptest! {
        #[test]
        fn released_tables_describe_only_large_groups_with_rounded_figures(
            rows in proptest::collection::vec((0u8..4, 0u8..3, 0i64..40), 0..200),
            dims in proptest::sample::subsequence(vec![0usize, 1], 0..=2),
        ) {
            let rules = Disclosure::default();
            let names = ["a", "b"];
            let checked = Checked {
                group_by: dims.iter().map(|&d| names[d].to_string()).collect(),
                measures: vec![
                    Measure::Count,
                    Measure::Of(Kind::Sum, "v".into()),
                    Measure::Of(Kind::Mean, "v".into()),
                ],
                summed: ["v".to_string()].into(),
                ordered: BTreeSet::new(),
            };
            let source = Schema::new(vec![Field::new("v", DataType::Int64, false)]);
            let (table, exact) = engine_table(&rows, &dims);
            let out = release(&table, &HashMap::new(), &checked, &source, &rules).unwrap();
            let exact: HashMap<Vec<String>, u64> = exact.into_iter().collect();
            let keys = group_keys(&out, &checked.group_by).unwrap();
            let column = |name: &str| out.column_by_name(name).unwrap().clone();
            let counts = column("count");
            let counts = counts.as_any().downcast_ref::<Int64Array>().unwrap();
            let sums = column("sum_v");
            let sums = sums.as_any().downcast_ref::<Int64Array>().unwrap();
            let means = column("mean_v");
            let means = means.as_any().downcast_ref::<Float64Array>().unwrap();
            let mut released = std::collections::HashSet::new();
            for (r, key) in keys.iter().enumerate() {
                let people = exact[key];
                proptest::prop_assert!(people >= rules.min_count, "{key:?} describes {people}");
                let count = counts.value(r);
                proptest::prop_assert_eq!(count % 5, 0);
                proptest::prop_assert!((count - people as i64).abs() <= 2);
                if sums.is_valid(r) {
                    proptest::prop_assert_eq!(sums.value(r) % 5, 0);
                    proptest::prop_assert!(means.is_valid(r));
                    proptest::prop_assert!((means.value(r) * count as f64 - sums.value(r) as f64).abs() < 1e-6);
                } else {
                    proptest::prop_assert!(means.is_null(r));
                }
                released.insert(key.clone());
            }
            // Along every dimension, the withheld cells of a margin are none,
            // all of it, or at least two adding up to the threshold: the
            // margin's total cannot give one back.
            for dim in 0..dims.len() {
                let mut margins: HashMap<Vec<&String>, (usize, u64, usize)> = HashMap::new();
                for (key, &n) in &exact {
                    let rest: Vec<&String> = key.iter().enumerate().filter(|(d, _)| *d != dim).map(|(_, k)| k).collect();
                    let m = margins.entry(rest).or_default();
                    m.2 += 1;
                    if !released.contains(key) {
                        m.0 += 1;
                        m.1 += n;
                    }
                }
                for (hidden, total, size) in margins.values() {
                    proptest::prop_assert!(*hidden == 0 || hidden == size || (*hidden >= 2 && *total >= rules.min_count));
                }
            }
        }
    }
}
