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
pub fn masked_column(
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
