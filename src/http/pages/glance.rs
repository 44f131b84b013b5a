//! "Your columns at a glance" on a dataset's page: for each column the
//! visitor may read, how many values are missing, how many differ, and the
//! most common ones (or the range of a number or date column), so a
//! researcher can look before reading or asking.
//!
//! Computed only from what the visitor may read: the first
//! [`GLANCE_ROWS`] rows of their own slice, fetched through the same path,
//! policy and audit record as `GET …/data?limit=…`, so masks, hidden
//! columns and a grant's row filter apply. Callers with aggregate-only or
//! DP access get nothing here (a count of rows is a release, which only
//! their tables make). Pseudonym columns show no values (they differ per
//! project).
//!
//! Aggregate-only callers see, for each declared field they may group by,
//! the released one-way table of counts: the very answer `GET …/aggregate?
//! group_by=field&measures=count` gives them (disclosure control, cell-key
//! noise and audit record included), so the page releases nothing their
//! own questions would not. DP callers see the fields and their declared
//! categories only: every DP answer spends their budget, and a page view
//! must not spend it for them.
//!
//! Kept per dataset, version and access, so a page view does not read the
//! data again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::HttpRequest;
use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use maud::{Markup, html};
use serde_json::Value;

use crate::audit::Event;
use crate::auth::Caller;
use crate::catalog::{ColumnSpec, Dataset};
use crate::domain::Bins;
use crate::http::{AppState, data_routes, trail};

/// Rows an overview is taken from.
const GLANCE_ROWS: u64 = 10_000;
/// Declared fields an aggregate-only caller's overview counts (each is one
/// table over the grant's whole population).
const FIELDS: usize = 6;
/// Most common values shown per column.
const TOP: usize = 5;
/// Overviews kept (per dataset, version and access); the oldest go first.
const KEPT: usize = 256;

/// One column's overview.
#[derive(Debug, Clone, PartialEq)]
struct Glance {
    name: String,
    missing: usize,
    distinct: usize,
    /// The most common values and how many rows have each, or the range.
    shown: Shown,
}

#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Common(Vec<(String, usize)>),
    Range(String, String),
    Nothing,
}

/// An overview of what the first rows hold; `rows` is how many there were.
#[derive(Debug)]
struct Overview {
    rows: usize,
    columns: Vec<Glance>,
}

/// One declared field's released counts, in declared order.
#[derive(Debug, Clone, PartialEq)]
struct Released {
    field: String,
    counts: Vec<(String, String)>,
}

/// What a page keeps for one dataset, version and access.
#[derive(Debug)]
enum Kept {
    Rows(Overview),
    Counts(Vec<Released>),
}

impl Kept {
    /// The columns an overview shows, for the trail.
    fn shown_columns(&self) -> Vec<String> {
        match self {
            Kept::Rows(o) => o.columns.iter().map(|g| g.name.clone()).collect(),
            Kept::Counts(r) => r.iter().map(|r| r.field.clone()).collect(),
        }
    }
}

/// Overviews kept, per dataset, version and access; the oldest go first.
#[derive(Default)]
pub(crate) struct Glances(Mutex<Store>);

#[derive(Default)]
struct Store {
    /// Keys, oldest first.
    order: std::collections::VecDeque<String>,
    by_key: HashMap<String, Arc<Kept>>,
}

impl std::fmt::Debug for Glances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Glances(..)")
    }
}

impl Glances {
    fn get(&self, key: &str) -> Option<Arc<Kept>> {
        self.0.lock().ok().and_then(|k| k.by_key.get(key).cloned())
    }

    fn keep(&self, key: String, overview: Arc<Kept>) {
        if let Ok(mut kept) = self.0.lock() {
            if kept.order.len() >= KEPT
                && let Some(oldest) = kept.order.pop_front()
            {
                kept.by_key.remove(&oldest);
            }
            if kept.by_key.insert(key.clone(), overview).is_none() {
                kept.order.push_back(key);
            }
        }
    }
}

/// The section: an overview of the visitor's rows, their released counts,
/// their fields, or nothing when they may read nothing.
pub(super) async fn section(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    dataset: &Dataset,
    access: &Value,
) -> Markup {
    if access["allowed"].as_bool() != Some(true) || !dataset.manifest.is_live() {
        return html! {};
    }
    let visible: Vec<&str> = access["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let fields: Vec<&ColumnSpec> = dataset
        .manifest
        .columns
        .iter()
        .filter(|c| c.groupable && (!c.categories.is_empty() || c.bins.is_some()))
        .filter(|c| visible.contains(&c.name.as_str()))
        .collect();
    let aggregate = match access["mode"].as_str().unwrap_or("rows") {
        "rows" => false,
        "aggregate" => true,
        _ => return dp_fields(&fields),
    };
    // The access (columns, masks, rows, mode) and the disclosure rules
    // decide what the overview may say: a policy that tightens either
    // makes a new one.
    let key = format!(
        "{}\u{0}{}\u{0}{access}\u{0}{:?}",
        dataset.id(),
        dataset.manifest.version,
        state.policy.current().disclosure
    );
    let kept = match state.glances.get(&key) {
        Some(kept) => {
            // Shown again without reading: still a release to this
            // visitor, so it is in the trail under their name.
            let event = if aggregate {
                Event::Aggregate
            } else {
                Event::Data
            };
            let mut record = trail::request_record(event, caller, dataset.id().as_str());
            record.columns = Some(kept.shown_columns());
            record.reason = Some("page overview, kept".into());
            if trail::allowed(state, &record).await.is_err() {
                return html! {};
            }
            kept
        }
        None => {
            let id = dataset.id().as_str();
            let kept = if aggregate {
                let mut released = Vec::new();
                for field in fields.iter().take(FIELDS) {
                    let name = field.name.as_str();
                    if let Ok(batches) =
                        data_routes::released_counts(state, caller, id, name, req).await
                    {
                        released.push(counts_of(name, &batches));
                    }
                }
                Kept::Counts(released)
            } else {
                let pseudonyms: Vec<&str> = access["columns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["mask"] == "hash")
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                match data_routes::first_rows(state, caller, id, GLANCE_ROWS, req).await {
                    Ok(batches) => Kept::Rows(overview_of(&batches, &pseudonyms)),
                    Err(_) => return html! {},
                }
            };
            let kept = Arc::new(kept);
            state.glances.keep(key, kept.clone());
            kept
        }
    };
    match kept.as_ref() {
        Kept::Rows(overview) => rows_table(overview),
        Kept::Counts(released) => {
            counts_tables(released, state.policy.current().disclosure.min_count)
        }
    }
}

fn rows_table(overview: &Overview) -> Markup {
    html! {
        h3 { "Your columns at a glance" }
        p.muted { "From the first " (overview.rows) " rows you may read, as you would read them (masked where your access masks)." }
        div.scroll {
            table {
                caption.muted { "Missing values, distinct values and the most common ones, per column" }
                thead { tr { th scope="col" { "Column" } th scope="col" { "Missing" } th scope="col" { "Distinct" } th scope="col" { "Most common, or range" } } }
                tbody {
                    @for g in &overview.columns {
                        tr {
                            th scope="row" { code { (g.name) } }
                            td { (g.missing) }
                            td { (g.distinct) }
                            td {
                                @match &g.shown {
                                    Shown::Common(values) => {
                                        @for (i, (value, n)) in values.iter().enumerate() {
                                            @if i > 0 { ", " }
                                            code { (value) } " (" (n) ")"
                                        }
                                    }
                                    Shown::Range(low, high) => { (low) " to " (high) }
                                    Shown::Nothing => { span.muted { "pseudonyms: not shown" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An aggregate-only caller's overview: each field's released counts.
fn counts_tables(released: &[Released], min_count: u64) -> Markup {
    if released.iter().all(|r| r.counts.is_empty()) {
        return html! {};
    }
    html! {
        h3 { "Your fields at a glance" }
        p.muted {
            "Counts per category, as your own aggregate answers release them (rounded, with noise). "
            "A category not listed is withheld (fewer than " (min_count) " records, or to protect one that is)."
        }
        @for r in released {
            div.scroll {
                table {
                    caption { code { (r.field) } }
                    thead { tr { th scope="col" { "Category" } th scope="col" { "Records" } } }
                    tbody {
                        @for (label, count) in &r.counts {
                            tr { th scope="row" { (label) } td { (count) } }
                        }
                    }
                }
            }
        }
    }
}

/// A DP caller's overview: the fields they may group by and their
/// categories, which are public; no counts (each would spend budget).
fn dp_fields(fields: &[&ColumnSpec]) -> Markup {
    if fields.is_empty() {
        return html! {};
    }
    html! {
        h3 { "Your fields at a glance" }
        p.muted { "Every answer under your access spends privacy budget, so this page shows no counts: these are the fields you may group by and their declared categories." }
        ul {
            @for c in fields {
                li {
                    code { (c.name) } ": "
                    @if c.categories.is_empty() {
                        @if let Some(bins) = &c.bins { (bins_words(bins)) }
                    } @else {
                        (c.categories.join(", "))
                    }
                }
            }
        }
    }
}

fn bins_words(bins: &Bins) -> String {
    match bins {
        Bins::Edges(edges) => format!(
            "bins from {}",
            edges
                .iter()
                .map(f64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Bins::Periods { every, from, to } => {
            let every = match every {
                crate::domain::Period::Month => "months",
                crate::domain::Period::Year => "years",
            };
            format!("{every} from {from} to {to}")
        }
    }
}

/// A field's released counts from the answer's batches (label, count).
fn counts_of(field: &str, batches: &[RecordBatch]) -> Released {
    let mut counts = Vec::new();
    for batch in batches {
        let (Ok(labels), Ok(values)) = (
            arrow::compute::cast(batch.column(0), &DataType::Utf8),
            arrow::compute::cast(batch.column(batch.num_columns() - 1), &DataType::Utf8),
        ) else {
            continue;
        };
        let (Some(labels), Some(values)) = (
            labels.as_any().downcast_ref::<StringArray>(),
            values.as_any().downcast_ref::<StringArray>(),
        ) else {
            continue;
        };
        for (label, value) in labels.iter().zip(values.iter()) {
            counts.push((
                label.unwrap_or("").to_owned(),
                value.unwrap_or("").to_owned(),
            ));
        }
    }
    Released {
        field: field.to_owned(),
        counts,
    }
}

/// Each column's overview from `batches`.
fn overview_of(batches: &[RecordBatch], pseudonyms: &[&str]) -> Overview {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Overview {
            rows: 0,
            columns: Vec::new(),
        };
    };
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let mut counts: HashMap<String, usize> = HashMap::new();
            let mut missing = 0;
            for batch in batches {
                let column = batch.column(i);
                missing += column.null_count();
                let Ok(text) = arrow::compute::cast(column, &DataType::Utf8) else {
                    continue;
                };
                if let Some(text) = text.as_any().downcast_ref::<StringArray>() {
                    for value in text.iter().flatten() {
                        *counts.entry(value.to_owned()).or_default() += 1;
                    }
                }
            }
            let data_type = field.data_type();
            let ordered = data_type.is_numeric()
                || matches!(
                    data_type,
                    DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
                );
            let shown = if pseudonyms.contains(&field.name().as_str()) {
                Shown::Nothing
            } else if ordered && counts.len() > TOP {
                range(&counts, field.data_type())
            } else {
                let mut common: Vec<(String, usize)> =
                    counts.iter().map(|(v, n)| (v.clone(), *n)).collect();
                common.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                common.truncate(TOP);
                Shown::Common(common)
            };
            Glance {
                name: field.name().clone(),
                missing,
                distinct: counts.len(),
                shown,
            }
        })
        .collect();
    Overview { rows, columns }
}

/// The smallest and largest of a number or date column's values.
fn range(counts: &HashMap<String, usize>, data_type: &DataType) -> Shown {
    let numeric = data_type.is_numeric();
    let key = |v: &String| {
        if numeric {
            v.parse::<f64>().unwrap_or(f64::NAN)
        } else {
            0.0
        }
    };
    let mut values: Vec<&String> = counts.keys().collect();
    if numeric {
        values.sort_by(|a, b| key(a).total_cmp(&key(b)));
    } else {
        // ISO dates and timestamps sort as text.
        values.sort();
    }
    match (values.first(), values.last()) {
        (Some(low), Some(high)) => Shown::Range((*low).clone(), (*high).clone()),
        _ => Shown::Common(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn common_values_ranges_and_pseudonyms() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("region", DataType::Utf8, true),
            Field::new("stay", DataType::Int64, true),
            Field::new("patient", DataType::Utf8, true),
        ]));
        let region: ArrayRef = Arc::new(StringArray::from(vec![
            Some("north"),
            Some("north"),
            Some("south"),
            None,
            Some("east"),
            Some("north"),
            Some("west"),
        ]));
        let stay: ArrayRef = Arc::new(Int64Array::from(vec![3, 10, 2, 7, 12, 1, 9]));
        let patient: ArrayRef =
            Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e", "f", "g"]));
        let batch = RecordBatch::try_new(schema, vec![region, stay, patient]).unwrap();
        let overview = overview_of(&[batch], &["patient"]);
        assert_eq!(overview.rows, 7);
        let region = &overview.columns[0];
        assert_eq!((region.missing, region.distinct), (1, 4));
        assert_eq!(
            region.shown,
            Shown::Common(vec![
                ("north".into(), 3),
                ("east".into(), 1),
                ("south".into(), 1),
                ("west".into(), 1)
            ])
        );
        assert_eq!(
            overview.columns[1].shown,
            Shown::Range("1".into(), "12".into())
        );
        assert_eq!(overview.columns[2].shown, Shown::Nothing);
    }
}
