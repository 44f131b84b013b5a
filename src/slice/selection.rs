//! Selections: what aggregate-only and differentially private callers send
//! instead of a row filter. A selection keeps categories of declared
//! fields, and nothing else can be said in it:
//!
//! ```text
//! region = 'north'          region IN ('north', 'south')     sex <> 'F'
//! age_band >= '45-64'       (declared order)                 admission_date BETWEEN '2020-01' AND '2020-06'
//! length_of_stay >= 8       length_of_stay < 15              (numbers: bin edges only)
//! … combined with AND, OR, NOT and parentheses
//! ```
//!
//! It is parsed once into sets of category numbers and applied to the
//! cells of a table *after* every row has been counted, so no part of it
//! ever runs per row: its cost is the table's size, whatever the data.

use sqlparser::ast::{BinaryOperator, Expr as SqlExpr, UnaryOperator, Value};

use super::SliceError;
use super::fields::Field;

/// What every refusal says may be asked.
const WHAT_MAY_BE_ASKED: &str = "a selection keeps categories of declared fields: field = 'category', field <> 'category', field IN ('a', 'b'), field >= 'category' (in declared order), field BETWEEN 'a' AND 'b', and for number bins field >= edge or field < edge, combined with AND, OR, NOT";

/// A parsed selection over a table's fields (by their position in it).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Selection {
    /// Every cell.
    All,
    /// Cells whose category in `field` is one of `keep`.
    Keep {
        field: usize,
        keep: Vec<bool>,
    },
    And(Box<Selection>, Box<Selection>),
    Or(Box<Selection>, Box<Selection>),
    Not(Box<Selection>),
}

impl Selection {
    /// Whether the cell with these category numbers is kept.
    pub(super) fn keeps(&self, cell: &[u32]) -> bool {
        match self {
            Selection::All => true,
            Selection::Keep { field, keep } => keep[cell[*field] as usize],
            Selection::And(a, b) => a.keeps(cell) && b.keeps(cell),
            Selection::Or(a, b) => a.keeps(cell) || b.keeps(cell),
            Selection::Not(a) => !a.keeps(cell),
        }
    }

    /// Moves field positions to `to(position)` (positions it has no new
    /// place for stay).
    pub(super) fn renumber(&mut self, to: &dyn Fn(usize) -> Option<usize>) {
        match self {
            Selection::All => {}
            Selection::Keep { field, .. } => *field = to(*field).unwrap_or(*field),
            Selection::And(a, b) | Selection::Or(a, b) => {
                a.renumber(to);
                b.renumber(to);
            }
            Selection::Not(a) => a.renumber(to),
        }
    }

    /// The fields the selection names, by position.
    pub(super) fn fields(&self, out: &mut Vec<usize>) {
        match self {
            Selection::All => {}
            Selection::Keep { field, .. } => {
                if !out.contains(field) {
                    out.push(*field)
                }
            }
            Selection::And(a, b) | Selection::Or(a, b) => {
                a.fields(out);
                b.fields(out);
            }
            Selection::Not(a) => a.fields(out),
        }
    }
}

/// Parses `text` against the fields a caller may use. `fields` is every
/// declared field of the caller's plan; names of anything else are
/// refused as unknown.
pub(super) fn parse(text: &str, max_len: usize, fields: &[Field]) -> Result<Selection, SliceError> {
    if text.trim().is_empty() {
        return Ok(Selection::All);
    }
    if text.len() > max_len {
        return Err(refused(format!(
            "the selection is longer than {max_len} bytes"
        )));
    }
    let sql = crate::filter::parse_sql(text).map_err(|e| refused(e.to_string()))?;
    Parser { fields }.selection(&sql)
}

fn refused(why: String) -> SliceError {
    SliceError::Selection(format!("{why}; {WHAT_MAY_BE_ASKED}"))
}

struct Parser<'a> {
    fields: &'a [Field],
}

impl Parser<'_> {
    fn selection(&self, e: &SqlExpr) -> Result<Selection, SliceError> {
        match e {
            SqlExpr::Nested(inner) => self.selection(inner),
            SqlExpr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Selection::Not(Box::new(self.selection(expr)?))),
            SqlExpr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => Ok(Selection::And(
                    Box::new(self.selection(left)?),
                    Box::new(self.selection(right)?),
                )),
                BinaryOperator::Or => Ok(Selection::Or(
                    Box::new(self.selection(left)?),
                    Box::new(self.selection(right)?),
                )),
                _ => self.comparison(left, op, right),
            },
            SqlExpr::InList {
                expr,
                list,
                negated,
            } => {
                let field = self.field(expr)?;
                let mut keep = vec![false; self.fields[field].labels.len()];
                for item in list {
                    keep[self.category(field, item)?] = true;
                }
                Ok(negate(Selection::Keep { field, keep }, *negated))
            }
            SqlExpr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let field = self.field(expr)?;
                let (low, high) = (self.category(field, low)?, self.category(field, high)?);
                let keep = (0..self.fields[field].labels.len())
                    .map(|i| low <= i && i <= high)
                    .collect();
                Ok(negate(Selection::Keep { field, keep }, *negated))
            }
            other => Err(refused(format!("'{}' is not allowed", shown(other)))),
        }
    }

    fn comparison(
        &self,
        left: &SqlExpr,
        op: &BinaryOperator,
        right: &SqlExpr,
    ) -> Result<Selection, SliceError> {
        let field = self.field(left)?;
        let count = self.fields[field].labels.len();
        let literal = literal(right)?;
        if let Literal::Number(n) = literal {
            return self.edge_comparison(field, op, n);
        }
        let at = self.category(field, right)?;
        let keep: Vec<bool> = (0..count)
            .map(|i| match op {
                BinaryOperator::Eq => i == at,
                BinaryOperator::NotEq => i != at,
                BinaryOperator::Lt => i < at,
                BinaryOperator::LtEq => i <= at,
                BinaryOperator::Gt => i > at,
                BinaryOperator::GtEq => i >= at,
                _ => false,
            })
            .collect();
        if !matches!(
            op,
            BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq
        ) {
            return Err(refused(format!("the operator {op} is not allowed")));
        }
        Ok(Selection::Keep { field, keep })
    }

    /// `field >= edge` or `field < edge` on a number field's bins.
    fn edge_comparison(
        &self,
        field: usize,
        op: &BinaryOperator,
        n: f64,
    ) -> Result<Selection, SliceError> {
        let f = &self.fields[field];
        let Some(edges) = f.edges() else {
            return Err(refused(format!(
                "'{}' has text categories: write them in single quotes",
                f.name
            )));
        };
        let listed = || {
            edges
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(at) = edges.iter().position(|e| *e == n) else {
            return Err(refused(format!(
                "{n} is not a bin edge of '{}' (its edges: {})",
                f.name,
                listed()
            )));
        };
        let keep = (0..edges.len())
            .map(|i| match op {
                BinaryOperator::GtEq => Ok(i >= at),
                BinaryOperator::Lt => Ok(i < at),
                _ => Err(refused(format!(
                    "numbers compare with bin edges by >= or < only (or name a bin: '{}')",
                    f.labels[at]
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Selection::Keep { field, keep })
    }

    /// The position of the field `e` names.
    fn field(&self, e: &SqlExpr) -> Result<usize, SliceError> {
        let name = match e {
            SqlExpr::Identifier(ident) => &ident.value,
            SqlExpr::Nested(inner) => return self.field(inner),
            other => {
                return Err(refused(format!(
                    "'{}' is not a field: each comparison starts with a field's name",
                    shown(other)
                )));
            }
        };
        self.fields
            .iter()
            .position(|f| &f.name == name)
            .ok_or_else(|| {
                SliceError::UnknownColumn(crate::util::suggest::UnknownColumn::new(
                    name,
                    self.fields.iter().map(|f| f.name.as_str()),
                ))
            })
    }

    /// The position of the category `e` names in `field`.
    fn category(&self, field: usize, e: &SqlExpr) -> Result<usize, SliceError> {
        let f = &self.fields[field];
        let text = match literal(e)? {
            Literal::Text(text) => text,
            Literal::Number(n) => crate::util::echo::cut(&n.to_string()),
        };
        f.labels.iter().position(|l| *l == text).ok_or_else(|| {
            let listed = f.labels.iter().take(40).cloned().collect::<Vec<_>>();
            refused(format!(
                "'{}' is not a category of '{}' (its categories: {}{})",
                crate::util::echo::cut(&text),
                f.name,
                listed.join(", "),
                if f.labels.len() > 40 { ", …" } else { "" }
            ))
        })
    }
}

enum Literal {
    Text(String),
    Number(f64),
}

fn literal(e: &SqlExpr) -> Result<Literal, SliceError> {
    match e {
        SqlExpr::Nested(inner) => literal(inner),
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Ok(Literal::Text(s.clone())),
            Value::Number(n, _) => n
                .parse()
                .map(Literal::Number)
                .map_err(|_| refused(format!("'{n}' is not a number"))),
            other => Err(refused(format!("'{other}' is not a category"))),
        },
        other => Err(refused(format!(
            "'{}' is not a category: categories are quoted text, or numbers for bin edges",
            shown(other)
        ))),
    }
}

fn negate(s: Selection, negated: bool) -> Selection {
    if negated {
        Selection::Not(Box::new(s))
    } else {
        s
    }
}

/// The caller's own text of an expression, cut short.
fn shown(e: &SqlExpr) -> String {
    crate::util::echo::cut(&e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ColumnSpec;
    use arrow::datatypes::DataType;

    fn fields() -> Vec<Field> {
        let spec = |t: &str| toml::from_str::<ColumnSpec>(t).unwrap();
        vec![
            Field::declared(
                &spec("name = \"region\"\ndescription = \"\"\ngroupable = true\ncategories = [\"north\", \"south\", \"east\"]"),
                &DataType::Utf8,
            )
            .unwrap(),
            Field::declared(
                &spec("name = \"los\"\ndescription = \"\"\ngroupable = true\nbins = [0, 1, 2, 4, 8]"),
                &DataType::Int64,
            )
            .unwrap(),
        ]
    }

    fn kept(text: &str) -> Vec<(u32, u32)> {
        let s = parse(text, 4096, &fields()).unwrap();
        let mut out = Vec::new();
        for r in 0..3 {
            for l in 0..5 {
                if s.keeps(&[r, l]) {
                    out.push((r, l));
                }
            }
        }
        out
    }

    #[test]
    fn selections_keep_categories_in_declared_order() {
        assert_eq!(kept("region = 'south' AND los >= 4"), [(1, 3), (1, 4)]);
        assert_eq!(
            kept("region IN ('north', 'east') AND los < 1"),
            [(0, 0), (2, 0)]
        );
        assert_eq!(
            kept("NOT region <> 'east' AND los BETWEEN '2-3' AND '4-7'"),
            [(2, 2), (2, 3)]
        );
        assert_eq!(kept("region > 'north' AND los = '8+'").len(), 2);
        assert_eq!(kept("").len(), 15);
    }

    #[test]
    fn anything_that_is_not_a_category_is_refused_with_what_may_be_asked() {
        for bad in [
            "region LIKE 'n%'",
            "upper(region) = 'NORTH'",
            "los + 1 > 3",
            "region = NULL",
            "region IS NULL",
            "region = 'nowhere'",
            "los >= 3",
            "los > 4",
            "region = los",
            "TRUE",
            "((NOT (region = 'north')) OR NULL) OR (los >= 8)",
        ] {
            let e = parse(bad, 4096, &fields()).unwrap_err();
            assert!(matches!(e, SliceError::Selection(_)), "{bad}: {e:?}");
        }
        assert!(matches!(
            parse("patient_id = 'x'", 4096, &fields()).unwrap_err(),
            SliceError::UnknownColumn(_)
        ));
    }
}
