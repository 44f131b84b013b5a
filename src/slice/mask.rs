//! Masks as engine expressions. A masked column is replaced, inside the
//! query plan and before the caller's filter, by an expression of the same
//! name and type, so nothing downstream (filters, encoders) ever sees the
//! raw value.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Column, ScalarValue};
use datafusion::error::Result;
use datafusion::functions::expr_fn;
use datafusion::logical_expr::{Expr, cast, lit};

use super::pseudonym::Secret;
use crate::domain::Mask;

/// The expression serving column `name` of `data_type` through `mask`.
pub(super) fn masked_column(
    name: &str,
    data_type: &DataType,
    mask: Option<Mask>,
    secret: &Secret,
    project: &str,
) -> Result<Expr> {
    let raw = Expr::Column(Column::new_unqualified(name));
    let Some(mask) = mask else {
        return Ok(raw.alias(name));
    };
    let expr = match mask {
        Mask::Redact => Expr::Literal(ScalarValue::try_from(data_type)?, None),
        // A pseudonym is text whatever the column's type.
        Mask::Hash => secret.pseudonym(project, raw),
        Mask::Year | Mask::Month => {
            let unit = if mask == Mask::Year { "year" } else { "month" };
            let as_timestamp = match data_type {
                DataType::Timestamp(..) => raw,
                _ => cast(raw, DataType::Timestamp(TimeUnit::Second, None)),
            };
            cast(
                expr_fn::date_trunc(lit(unit), as_timestamp),
                data_type.clone(),
            )
        }
        Mask::Bucket(width) => {
            // Floor to a multiple of the width, also for negative values:
            // x - ((x % w) + w) % w.
            let w = lit(i64::from(width));
            let wide = cast(raw, DataType::Int64);
            let offset = ((wide.clone() % w.clone()) + w.clone()) % w;
            cast(wide - offset, data_type.clone())
        }
        Mask::Prefix(n) => cast(expr_fn::left(raw, lit(i64::from(n))), data_type.clone()),
    };
    Ok(expr.alias(name))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Date32Array, Int32Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;

    /// Applies `mask` to a one-column batch with the engine and returns the result.
    fn apply(column: Arc<dyn Array>, mask: Mask) -> Arc<dyn Array> {
        let data_type = column.data_type().clone();
        let schema = Arc::new(Schema::new(vec![Field::new("c", data_type.clone(), true)]));
        let batch = RecordBatch::try_new(schema, vec![column]).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let ctx = SessionContext::new();
            let expr = masked_column(
                "c",
                &data_type,
                Some(mask),
                &Secret::from_bytes([3; 32]),
                "p",
            )
            .unwrap();
            let out = ctx
                .read_batch(batch)
                .unwrap()
                .select(vec![expr])
                .unwrap()
                .collect()
                .await
                .unwrap();
            out[0].column(0).clone()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        #[test]
        fn buckets_keep_only_the_lower_bound(values in proptest::collection::vec(-200i32..200, 1..50), width in 1u32..20) {
            let out = apply(Arc::new(Int32Array::from(values.clone())), Mask::Bucket(width));
            let out = out.as_any().downcast_ref::<Int32Array>().unwrap();
            for (i, v) in values.iter().enumerate() {
                let m = out.value(i);
                proptest::prop_assert!(m <= *v && *v - m < width as i32 && m.rem_euclid(width as i32) == 0, "{v} -> {m}");
            }
        }

        #[test]
        fn prefixes_keep_at_most_n_characters(values in proptest::collection::vec("[a-zA-Z0-9 ]{0,12}", 1..50), n in 1u32..6) {
            let out = apply(Arc::new(StringArray::from(values.clone())), Mask::Prefix(n));
            let out = out.as_any().downcast_ref::<StringArray>().unwrap();
            for (i, v) in values.iter().enumerate() {
                let m = out.value(i);
                proptest::prop_assert!(v.starts_with(m) && m.chars().count() == v.chars().count().min(n as usize));
            }
        }

        #[test]
        fn months_and_years_keep_only_the_period(days in proptest::collection::vec(-20_000i32..40_000, 1..50)) {
            let month = apply(Arc::new(Date32Array::from(days.clone())), Mask::Month);
            let year = apply(Arc::new(Date32Array::from(days.clone())), Mask::Year);
            let month = month.as_any().downcast_ref::<Date32Array>().unwrap();
            let year = year.as_any().downcast_ref::<Date32Array>().unwrap();
            for (i, d) in days.iter().enumerate() {
                let raw = Date32Array::from(vec![*d]).value_as_date(0).unwrap();
                let m = month.value_as_date(i).unwrap();
                let y = year.value_as_date(i).unwrap();
                use chrono::Datelike;
                proptest::prop_assert!(m.day() == 1 && m.month() == raw.month() && m.year() == raw.year());
                proptest::prop_assert!(y.day() == 1 && y.month() == 1 && y.year() == raw.year());
            }
        }

        #[test]
        fn redaction_leaves_nothing(values in proptest::collection::vec(proptest::option::of(0i32..100), 1..20)) {
            let out = apply(Arc::new(Int32Array::from(values)), Mask::Redact);
            proptest::prop_assert_eq!(out.null_count(), out.len());
        }
    }
}
