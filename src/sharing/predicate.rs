//! Delta Sharing's JSON predicate hints (`jsonPredicateHints`) as a Sluice
//! filter. Hints only narrow what the server sends; a client that needs
//! exact rows filters again. So a hint that cannot be translated is
//! dropped, never guessed at, and a part of an `and` that cannot be
//! translated is dropped too (the rest still selects a superset). Inside
//! `or` and `not` every part must translate exactly, since dropping one
//! there could lose rows.
//!
//! The result is ordinary filter text: it is parsed and checked against
//! the caller's visible columns like any `filter=`, so a hint can name
//! nothing the caller could not filter on.

use serde::Deserialize;

use crate::domain::ColumnName;

/// How deeply a hint may nest before it is dropped.
const MAX_DEPTH: usize = 32;

/// One node of a hint, as the protocol writes it.
#[derive(Debug, Deserialize)]
struct Node {
    op: String,
    #[serde(default)]
    children: Vec<Node>,
    name: Option<String>,
    value: Option<String>,
    #[serde(rename = "valueType")]
    value_type: Option<String>,
}

/// A translated node: its text, and whether it selects exactly what the
/// hint said (or a superset, after a dropped `and` part).
struct Text {
    sql: String,
    exact: bool,
}

/// The filter a hint stands for, or `None` to send every row.
pub fn to_filter(json: &str) -> Option<String> {
    let node: Node = serde_json::from_str(json).ok()?;
    translate(&node, 0).map(|t| t.sql)
}

fn translate(node: &Node, depth: usize) -> Option<Text> {
    if depth > MAX_DEPTH {
        return None;
    }
    let exact = |sql: String| Some(Text { sql, exact: true });
    match node.op.as_str() {
        "and" => {
            let parts: Vec<Option<Text>> = node
                .children
                .iter()
                .map(|c| translate(c, depth + 1))
                .collect();
            let all = parts.iter().all(|p| p.as_ref().is_some_and(|t| t.exact));
            let kept: Vec<String> = parts.into_iter().flatten().map(|t| t.sql).collect();
            if kept.is_empty() {
                return None;
            }
            Some(Text {
                sql: format!("({})", kept.join(" AND ")),
                exact: all && node.children.len() >= 2,
            })
        }
        "or" if node.children.len() >= 2 => {
            let parts = node
                .children
                .iter()
                .map(|c| translate(c, depth + 1).filter(|t| t.exact).map(|t| t.sql))
                .collect::<Option<Vec<_>>>()?;
            exact(format!("({})", parts.join(" OR ")))
        }
        "not" if node.children.len() == 1 => {
            let inner = translate(&node.children[0], depth + 1).filter(|t| t.exact)?;
            exact(format!("(NOT {})", inner.sql))
        }
        "isNull" if node.children.len() == 1 => {
            exact(format!("({} IS NULL)", operand(&node.children[0])?))
        }
        op @ ("equal" | "lessThan" | "lessThanOrEqual" | "greaterThan" | "greaterThanOrEqual")
            if node.children.len() == 2 =>
        {
            let symbol = match op {
                "equal" => "=",
                "lessThan" => "<",
                "lessThanOrEqual" => "<=",
                "greaterThan" => ">",
                _ => ">=",
            };
            let (a, b) = (operand(&node.children[0])?, operand(&node.children[1])?);
            exact(format!("({a} {symbol} {b})"))
        }
        _ => None,
    }
}

/// A column or a literal.
fn operand(node: &Node) -> Option<String> {
    match node.op.as_str() {
        "column" => {
            // Quoted, so a column named like a keyword (`null`) stays a
            // column; a column name has no quote to escape.
            let name = ColumnName::parse(node.name.as_deref()?).ok()?;
            Some(format!("\"{}\"", name.as_str()))
        }
        "literal" => literal(node.value.as_deref()?, node.value_type.as_deref()?),
        _ => None,
    }
}

fn literal(value: &str, value_type: &str) -> Option<String> {
    match value_type {
        "int" | "long" | "short" | "byte" => {
            value.trim().parse::<i64>().ok().map(|n| n.to_string())
        }
        "float" | "double" => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| format!("{f:?}")),
        "boolean" => match value.trim() {
            "true" => Some("TRUE".into()),
            "false" => Some("FALSE".into()),
            _ => None,
        },
        "string" => Some(format!("'{}'", value.replace('\'', "''"))),
        "date" => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(value.trim(), format)
                .ok()
                .map(|d| format!("DATE '{d}'"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::to_filter;

    fn column(name: &str) -> String {
        format!(r#"{{"op":"column","name":"{name}","valueType":"int"}}"#)
    }

    fn literal(value: &str, value_type: &str) -> String {
        format!(r#"{{"op":"literal","value":"{value}","valueType":"{value_type}"}}"#)
    }

    fn op(op: &str, children: &[String]) -> String {
        format!(r#"{{"op":"{op}","children":[{}]}}"#, children.join(","))
    }

    #[test]
    fn comparisons_and_logic_translate() {
        let hint = op(
            "and",
            &[
                op(
                    "greaterThan",
                    &[column("length_of_stay"), literal("7", "int")],
                ),
                op(
                    "or",
                    &[
                        op("equal", &[column("region"), literal("north", "string")]),
                        op("isNull", &[column("region")]),
                    ],
                ),
            ],
        );
        assert_eq!(
            to_filter(&hint).unwrap(),
            r#"(("length_of_stay" > 7) AND (("region" = 'north') OR ("region" IS NULL)))"#
        );
        let date = op(
            "lessThanOrEqual",
            &[column("d"), literal("2024-02-29", "date")],
        );
        assert_eq!(to_filter(&date).unwrap(), r#"("d" <= DATE '2024-02-29')"#);
    }

    #[test]
    fn a_column_named_like_a_keyword_stays_a_column() {
        let hint = op("isNull", &[column("null")]);
        assert_eq!(to_filter(&hint).unwrap(), r#"("null" IS NULL)"#);
        let names = ["null".to_owned()].into_iter().collect();
        let parsed = crate::filter::parse(&to_filter(&hint).unwrap(), 4096, &names);
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn strings_are_quoted_and_names_checked() {
        let quote = op(
            "equal",
            &[column("r"), literal("o'brien') OR (1=1", "string")],
        );
        assert_eq!(
            to_filter(&quote).unwrap(),
            r#"("r" = 'o''brien'') OR (1=1')"#
        );
        let bad_name = op("equal", &[column("r) OR (1=1"), literal("1", "int")]);
        assert_eq!(to_filter(&bad_name), None);
        assert_eq!(
            to_filter(&op("equal", &[column("n"), literal("1e999", "double")])),
            None
        );
        assert_eq!(
            to_filter(&op("equal", &[column("n"), literal("2024-13-01", "date")])),
            None
        );
    }

    #[test]
    fn untranslatable_parts_drop_only_where_that_keeps_every_row() {
        let unknown = op("in", &[column("a")]);
        let kept = op("equal", &[column("a"), literal("1", "int")]);
        // `and` keeps what it can: a superset.
        assert_eq!(
            to_filter(&op("and", &[kept.clone(), unknown.clone()])).unwrap(),
            r#"(("a" = 1))"#
        );
        // `or` and `not` cannot drop a part.
        assert_eq!(to_filter(&op("or", &[kept.clone(), unknown.clone()])), None);
        assert_eq!(
            to_filter(&op("not", &[op("and", &[kept.clone(), unknown])])),
            None
        );
        assert_eq!(
            to_filter(&op("not", &[kept])).unwrap(),
            r#"(NOT ("a" = 1))"#
        );
        assert_eq!(to_filter("not json"), None);
        let deep = (0..40).fold(op("isNull", &[column("a")]), |inner, _| op("not", &[inner]));
        assert_eq!(to_filter(&deep), None);
    }
}
