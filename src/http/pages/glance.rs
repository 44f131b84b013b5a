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
//! project). Kept per dataset, version and access, so a page view does not
//! read the data again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::HttpRequest;
use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use maud::{Markup, html};
use serde_json::Value;

use crate::auth::Caller;
use crate::catalog::Dataset;
use crate::http::{AppState, data_routes};

/// Rows an overview is taken from.
const GLANCE_ROWS: u64 = 10_000;
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

/// Overviews kept, per dataset, version and access; the oldest go first.
#[derive(Default)]
pub(crate) struct Glances(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    /// Keys, oldest first.
    order: std::collections::VecDeque<String>,
    by_key: HashMap<String, Arc<Overview>>,
}

impl std::fmt::Debug for Glances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Glances(..)")
    }
}

impl Glances {
    fn get(&self, key: &str) -> Option<Arc<Overview>> {
        self.0.lock().ok().and_then(|k| k.by_key.get(key).cloned())
    }

    fn keep(&self, key: String, overview: Arc<Overview>) {
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

/// The section, or nothing when the visitor may not read rows.
pub(super) async fn section(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    dataset: &Dataset,
    access: &Value,
) -> Markup {
    let rows_allowed = access["allowed"].as_bool() == Some(true)
        && access["mode"].as_str().unwrap_or("rows") == "rows";
    if !rows_allowed || !dataset.manifest.is_live() {
        return html! {};
    }
    let pseudonyms: Vec<&str> = access["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["mask"] == "hash")
        .filter_map(|c| c["name"].as_str())
        .collect();
    // The access (columns, masks, rows) decides what the overview may say.
    let key = format!(
        "{}\u{0}{}\u{0}{access}",
        dataset.id(),
        dataset.manifest.version
    );
    let overview = match state.glances.get(&key) {
        Some(overview) => overview,
        None => {
            let batches = match data_routes::first_rows(
                state,
                caller,
                dataset.id().as_str(),
                GLANCE_ROWS,
                req,
            )
            .await
            {
                Ok(batches) => batches,
                Err(_) => return html! {},
            };
            let overview = Arc::new(overview_of(&batches, &pseudonyms));
            state.glances.keep(key, overview.clone());
            overview
        }
    };
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
