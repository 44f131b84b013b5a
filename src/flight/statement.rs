//! The SQL that Flight SQL callers may send, turned into the requests the
//! HTTP API takes: never handed to a SQL engine.
//!
//! Two shapes are answered:
//!
//! ```text
//! SELECT * | col, …  FROM dataset [WHERE filter] [LIMIT n] [OFFSET m]
//! SELECT field, …, count(*), sum(col), avg(col), min(col), max(col)
//!     FROM dataset [WHERE filter] GROUP BY field, …
//! ```
//!
//! The first is `GET …/data` (`columns`, `filter`, `limit`, `offset`), the
//! second `GET …/aggregate` (`group_by`, `measures`, `filter`), and both
//! then take the same path as over HTTP: the filter is parsed again by the
//! allow-listing translator, the columns are checked against the caller's
//! access plan, and so on.
//!
//! What is accepted is checked by construction: the parts read out of the
//! parsed statement are written back as the canonical statement above,
//! parsed again, and the two must print the same. Any clause this module
//! did not read (`ORDER BY`, `DISTINCT`, a join, a window, `HAVING`, a
//! CTE, an alias…) makes them differ, and the statement is refused.
//! Comments are refused before parsing, so nothing rides along unread.

use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, LimitClause,
    ObjectNamePart, SelectItem, SetExpr, TableFactor, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};

use crate::http::data_routes::Planner;
use crate::slice::{AggregateRequest, SliceRequest};

/// The longest statement taken, in bytes (the filter inside it has its own,
/// smaller, limit).
pub(super) const MAX_STATEMENT_BYTES: usize = 16 * 1024;
/// The most words and symbols a statement may have (see [`tokens`]).
const MAX_STATEMENT_TOKENS: usize = 4096;

/// What may be asked, for every refusal.
pub(super) const WHAT_MAY_BE_ASKED: &str = "Sluice answers SELECT * or columns FROM a dataset [WHERE filter] [LIMIT n] [OFFSET m], and tables of counts: SELECT fields, count(*), sum(col), avg(col) FROM a dataset [WHERE filter] GROUP BY fields";

/// A statement Sluice will answer: which dataset (and, if named, which
/// schema, the dataset's sector) and what is asked of it.
#[derive(Debug)]
pub(super) struct Statement {
    pub(super) dataset: String,
    pub(super) schema: Option<String>,
    pub(super) planner: Planner,
}

/// Why a statement was refused; the message quotes only the caller's own
/// text and says what may be asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}. {WHAT_MAY_BE_ASKED}.")]
pub(super) struct Refused(String);

pub(super) fn refused(what: impl Into<String>) -> Refused {
    Refused(what.into())
}

/// A literal bound to a prepared statement's `?` (or `$n`) placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Literal {
    fn sql(&self) -> String {
        match self {
            Literal::Null => "NULL".into(),
            Literal::Bool(b) => b.to_string(),
            Literal::Int(n) => n.to_string(),
            // Debug keeps a decimal point or an exponent, so a float stays a
            // float; non-finite values have no SQL literal.
            Literal::Float(x) if x.is_finite() => format!("{x:?}"),
            Literal::Float(_) => "NULL".into(),
            Literal::Text(s) => format!("'{}'", s.replace('\'', "''")),
        }
    }
}

/// The statement's tokens with where each stands, refused if it carries a
/// comment or is too long.
///
/// The token bound is what keeps parsing safe: a chain of infix or postfix
/// operators (`1 + 1 + …`, `x::int::int…`) parses without recursion into
/// a tree as deep as the chain is long, and printing or dropping that tree
/// recurses once per level, so a long enough chain overflows the stack.
/// A filter is at most 4 KiB anyway (`limits.max_filter_bytes`).
fn tokens(sql: &str) -> Result<Vec<TokenWithSpan>, Refused> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(refused(format!(
            "the statement is longer than {MAX_STATEMENT_BYTES} bytes"
        )));
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| refused(format!("the statement is not SQL: {}", e.message)))?;
    if tokens.iter().any(|t| {
        matches!(
            t.token,
            Token::Whitespace(Whitespace::SingleLineComment { .. })
                | Token::Whitespace(Whitespace::MultiLineComment(_))
        )
    }) {
        return Err(refused(
            "the statement has a comment, and comments are not taken",
        ));
    }
    // `sluice.sector."dataset"` and a filter's own.
    crate::filter::check_parse_cost(
        tokens.iter().map(|t| &t.token),
        2 + crate::filter::MAX_FILTER_PERIODS,
    )
    .map_err(|e| refused(format!("the statement is refused: {e}")))?;
    let words = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .count();
    if words > MAX_STATEMENT_TOKENS {
        return Err(refused(format!(
            "the statement has more than {MAX_STATEMENT_TOKENS} words and symbols"
        )));
    }
    Ok(tokens)
}

/// How many placeholders (`?`, `$1`…) the statement has.
pub(super) fn placeholders(sql: &str) -> Result<usize, Refused> {
    let tokens = tokens(sql)?;
    let mut numbered = std::collections::BTreeSet::new();
    let mut positional = 0;
    for t in &tokens {
        if let Token::Placeholder(p) = &t.token {
            match p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => {
                    numbered.insert(n);
                }
                None => positional += 1,
            }
        }
    }
    Ok(positional + numbered.len())
}

/// `sql` with each placeholder replaced by its literal: `?` in order, `$n`
/// by number (from 1). Only the placeholders' own bytes are replaced; the
/// rest of the text is kept byte for byte (never printed again from
/// tokens, which would undo the doubling of quotes inside strings), so a
/// value can never become SQL.
pub(super) fn bind(sql: &str, values: &[Literal]) -> Result<String, Refused> {
    let mut next = 0;
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let offsets = Offsets::new(sql);
    for t in tokens(sql)? {
        let Token::Placeholder(p) = &t.token else {
            continue;
        };
        let index = match p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n.checked_sub(1),
            None => {
                next += 1;
                Some(next - 1)
            }
        };
        let value = index.and_then(|i| values.get(i)).ok_or_else(|| {
            refused(format!(
                "the statement has a placeholder {p} with no value bound to it"
            ))
        })?;
        let (start, end) = offsets
            .of(t.span.start)
            .zip(offsets.of(t.span.end))
            .filter(|(start, end)| sql.get(*start..*end) == Some(p.as_str()))
            .ok_or_else(|| refused(format!("the placeholder {p} could not be found")))?;
        // Spaced, so a value never merges with what the template wrote
        // beside its placeholder (`E?` would make an escaped string of it,
        // `-?` a comment of a negative number).
        out.push_str(&sql[copied..start]);
        out.push(' ');
        out.push_str(&value.sql());
        out.push(' ');
        copied = end;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// `sql` with every placeholder NULL: the statement's shape, checked when
/// it is prepared.
pub(super) fn unbound(sql: &str) -> Result<String, Refused> {
    let most = placeholders(sql)?.max(
        tokens(sql)?
            .iter()
            .filter_map(|t| match &t.token {
                Token::Placeholder(p) => p.strip_prefix('$')?.parse::<usize>().ok(),
                _ => None,
            })
            .max()
            .unwrap_or(0),
    );
    bind(sql, &vec![Literal::Null; most])
}

/// Byte offsets of the tokenizer's positions (line and column from 1, a
/// column per character, a line after each `\n`).
struct Offsets<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(sql: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { sql, line_starts }
    }

    fn of(&self, at: Location) -> Option<usize> {
        let line = usize::try_from(at.line).ok()?.checked_sub(1)?;
        let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
        let start = *self.line_starts.get(line)?;
        let rest = &self.sql[start..];
        let within = rest
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(rest.len()))
            .nth(column)?;
        Some(start + within)
    }
}

/// Parses one statement Sluice answers.
pub(super) fn parse(sql: &str) -> Result<Statement, Refused> {
    let tokens = tokens(sql)?;
    if let Some(Token::Placeholder(p)) = tokens
        .iter()
        .map(|t| &t.token)
        .find(|t| matches!(t, Token::Placeholder(_)))
    {
        return Err(refused(format!(
            "the statement has a placeholder {p}: prepare it and bind a value to each"
        )));
    }
    // The parser reads the very tokens that were checked.
    let dialect = GenericDialect {};
    let statement = single(
        Parser::new(&dialect)
            .with_tokens_with_locations(tokens)
            .parse_statements(),
    )?;
    let read = read(&statement)?;
    let canonical = single(Parser::parse_sql(&dialect, &read.canonical))?;
    if canonical.to_string() != statement.to_string() {
        return Err(refused(format!(
            "the statement has {}, which is not taken",
            extra_part(&statement)
        )));
    }
    Ok(read.statement)
}

fn single(parsed: Result<Vec<ast::Statement>, ParserError>) -> Result<ast::Statement, Refused> {
    let mut statements = parsed.map_err(|e| refused(format!("the statement is not SQL: {e}")))?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        0 => Err(refused("there is no statement")),
        _ => Err(refused(
            "there is more than one statement; send one at a time",
        )),
    }
}

/// What was read out of a statement, and the statement written back from
/// it alone.
struct Read {
    statement: Statement,
    canonical: String,
}

fn read(statement: &ast::Statement) -> Result<Read, Refused> {
    let ast::Statement::Query(query) = statement else {
        return Err(refused("only SELECT statements are answered"));
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(refused(
            "the statement is not a single SELECT (UNION, VALUES and the like are not taken)",
        ));
    };
    let (dataset, schema, table_sql) = table(select)?;
    let mut columns: Vec<String> = Vec::new();
    let mut measures: Vec<String> = Vec::new();
    let mut wildcard = false;
    let mut items_sql = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) => {
                wildcard = true;
                items_sql.push("*".to_owned());
            }
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => {
                columns.push(ident.value.clone());
                items_sql.push(ident.to_string());
            }
            SelectItem::UnnamedExpr(Expr::Function(f)) => {
                let (measure, sql) = measure(f)?;
                measures.push(measure);
                items_sql.push(sql);
            }
            SelectItem::ExprWithAlias { alias, .. } => {
                return Err(refused(format!(
                    "the statement names a column {alias}; columns keep their names here, so AS is not taken"
                )));
            }
            other => {
                return Err(refused(format!(
                    "{} is not a column, *, or count/sum/avg/min/max of a column",
                    crate::util::echo::cut(&other.to_string())
                )));
            }
        }
    }
    if wildcard && select.projection.len() > 1 {
        return Err(refused("* goes alone"));
    }
    let filter = select.selection.as_ref().map(ToString::to_string);
    let group_by: Vec<String> = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => exprs
            .iter()
            .map(|e| match e {
                Expr::Identifier(ident) => Ok(ident.value.clone()),
                other => Err(refused(format!(
                    "GROUP BY takes columns, not {}",
                    crate::util::echo::cut(&other.to_string())
                ))),
            })
            .collect::<Result<_, _>>()?,
        GroupByExpr::All(_) => return Err(refused("GROUP BY ALL is not taken; name the fields")),
    };
    let (limit, offset) = limits(query.limit_clause.as_ref())?;

    let mut canonical = format!("SELECT {} FROM {table_sql}", items_sql.join(", "));
    if let Some(filter) = &select.selection {
        canonical.push_str(&format!(" WHERE {filter}"));
    }
    if let GroupByExpr::Expressions(exprs, _) = &select.group_by
        && !exprs.is_empty()
    {
        let names: Vec<String> = exprs.iter().map(ToString::to_string).collect();
        canonical.push_str(&format!(" GROUP BY {}", names.join(", ")));
    }
    if let Some(limit) = limit {
        canonical.push_str(&format!(" LIMIT {limit}"));
    }
    if let Some(offset) = offset {
        canonical.push_str(&format!(" OFFSET {offset}"));
    }

    let planner = if measures.is_empty() && group_by.is_empty() {
        Planner::Slice(SliceRequest {
            columns: (!wildcard).then_some(columns),
            filter,
            limit,
            offset,
        })
    } else {
        if wildcard {
            return Err(refused("* does not go with GROUP BY or count/sum/avg"));
        }
        if limit.is_some() || offset.is_some() {
            return Err(refused(
                "LIMIT and OFFSET apply to rows, not to a table of counts",
            ));
        }
        let mut grouped = group_by.clone();
        grouped.sort();
        let mut selected = columns.clone();
        selected.sort();
        if grouped != selected {
            return Err(refused(
                "the columns selected beside count/sum/avg must be exactly the GROUP BY fields",
            ));
        }
        if measures.is_empty() {
            return Err(refused(
                "a GROUP BY statement asks for at least one of count(*), sum(col), avg(col)",
            ));
        }
        Planner::Aggregate(AggregateRequest {
            group_by,
            measures,
            filter,
            epsilon: None,
        })
    };
    Ok(Read {
        statement: Statement {
            dataset,
            schema,
            planner,
        },
        canonical,
    })
}

/// The one table read: `dataset`, `schema.dataset` or `sluice.schema.dataset`.
fn table(select: &ast::Select) -> Result<(String, Option<String>, String), Refused> {
    let [from] = select.from.as_slice() else {
        return Err(refused(if select.from.is_empty() {
            "the statement reads no dataset (FROM is missing)"
        } else {
            "the statement reads more than one dataset"
        }));
    };
    if !from.joins.is_empty() {
        return Err(refused(
            "the statement joins datasets, and joins are not taken",
        ));
    }
    let TableFactor::Table { name, .. } = &from.relation else {
        return Err(refused(
            "FROM takes a dataset, not a subquery or a function",
        ));
    };
    let parts: Vec<&str> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(ident) => Ok(ident.value.as_str()),
            ObjectNamePart::Function(_) => Err(refused("FROM takes a dataset's name")),
        })
        .collect::<Result<_, _>>()?;
    let (catalog, schema, dataset) = match parts.as_slice() {
        [dataset] => (None, None, *dataset),
        [schema, dataset] => (None, Some(*schema), *dataset),
        [catalog, schema, dataset] => (Some(*catalog), Some(*schema), *dataset),
        _ => return Err(refused("FROM takes [sluice.][sector.]dataset")),
    };
    if catalog.is_some_and(|c| c != super::metadata::CATALOG) {
        return Err(refused(format!(
            "the only catalogue here is {}",
            super::metadata::CATALOG
        )));
    }
    Ok((
        dataset.to_owned(),
        schema.map(str::to_owned),
        name.to_string(),
    ))
}

/// `count(*)`, `sum(col)`, `avg(col)` (or `mean`), `min(col)`, `max(col)`,
/// as the measure the HTTP API names, and as written back (the name as the
/// caller spelled it, so the round trip compares equal).
fn measure(f: &ast::Function) -> Result<(String, String), Refused> {
    let name = f.name.to_string().to_ascii_lowercase();
    let not_taken = || {
        refused(format!(
            "{} is not count(*), sum(col), avg(col), min(col) or max(col)",
            crate::util::echo::cut(&f.to_string())
        ))
    };
    let FunctionArguments::List(list) = &f.args else {
        return Err(not_taken());
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(not_taken());
    }
    match (name.as_str(), list.args.as_slice()) {
        ("count", [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]) => {
            Ok(("count".into(), format!("{}(*)", f.name)))
        }
        (
            "sum" | "avg" | "mean" | "min" | "max",
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(column)))],
        ) => {
            let kind = if name == "avg" { "mean" } else { name.as_str() };
            Ok((
                format!("{kind}({})", column.value),
                format!("{}({column})", f.name),
            ))
        }
        _ => Err(not_taken()),
    }
}

/// `LIMIT n` and `OFFSET m` as whole numbers.
fn limits(clause: Option<&LimitClause>) -> Result<(Option<u64>, Option<u64>), Refused> {
    let number = |what: &str, e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<u64>().map_err(|_| {
                refused(format!(
                    "{what} takes a whole number, not {}",
                    crate::util::echo::cut(n)
                ))
            }),
            _ => Err(refused(format!("{what} takes a whole number"))),
        },
        _ => Err(refused(format!("{what} takes a whole number"))),
    };
    match clause {
        None => Ok((None, None)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => Ok((
            limit.as_ref().map(|l| number("LIMIT", l)).transpose()?,
            offset
                .as_ref()
                .map(|o| number("OFFSET", &o.value))
                .transpose()?,
        )),
        Some(_) => Err(refused("LIMIT takes LIMIT n [OFFSET m]")),
    }
}

/// The first clause of a statement that [`read`] did not take, for the
/// refusal.
fn extra_part(statement: &ast::Statement) -> &'static str {
    let ast::Statement::Query(query) = statement else {
        return "more than a SELECT";
    };
    if query.with.is_some() {
        return "WITH";
    }
    if query.order_by.is_some() {
        return "ORDER BY";
    }
    if let SetExpr::Select(select) = query.body.as_ref() {
        if select.distinct.is_some() {
            return "DISTINCT";
        }
        if select.having.is_some() {
            return "HAVING";
        }
        if select.top.is_some() {
            return "TOP";
        }
        if select.into.is_some() {
            return "INTO";
        }
        if !select.named_window.is_empty() || select.qualify.is_some() {
            return "a window";
        }
        if let [from] = select.from.as_slice()
            && let TableFactor::Table {
                alias,
                args,
                with_hints,
                version,
                ..
            } = &from.relation
        {
            if alias.is_some() {
                return "an alias for the dataset";
            }
            if args.is_some() || !with_hints.is_empty() || version.is_some() {
                return "arguments or hints on the dataset";
            }
        }
    }
    if query.fetch.is_some() {
        return "FETCH";
    }
    if !query.locks.is_empty() {
        return "a lock clause";
    }
    "a clause beyond SELECT, FROM, WHERE, GROUP BY, LIMIT and OFFSET"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(sql: &str) -> (String, SliceRequest) {
        let s = parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        match s.planner {
            Planner::Slice(r) => (s.dataset, r),
            Planner::Aggregate(_) => panic!("{sql}: an aggregate"),
        }
    }

    fn aggregate(sql: &str) -> AggregateRequest {
        match parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).planner {
            Planner::Aggregate(a) => a,
            Planner::Slice(_) => panic!("{sql}: a slice"),
        }
    }

    #[test]
    fn rows_become_the_data_routes_request() {
        let (dataset, r) = slice("SELECT * FROM \"hospital-admissions\"");
        assert_eq!(dataset, "hospital-admissions");
        assert!(r.columns.is_none() && r.filter.is_none());

        let (_, r) = slice(
            "select region, cost_eur from sluice.health.\"hospital-admissions\" where cost_eur > 15000 and region in ('north', 'south') limit 10 offset 5;",
        );
        assert_eq!(r.columns.unwrap(), ["region", "cost_eur"]);
        assert_eq!(
            r.filter.unwrap(),
            "cost_eur > 15000 AND region IN ('north', 'south')"
        );
        assert_eq!((r.limit, r.offset), (Some(10), Some(5)));
        let s = parse("SELECT a FROM health.\"x-y\"").unwrap();
        assert_eq!(s.schema.as_deref(), Some("health"));
    }

    #[test]
    fn tables_of_counts_become_the_aggregate_request() {
        let a = aggregate(
            "SELECT region, sex, COUNT(*), avg(length_of_stay), sum(cost_eur) FROM \"hospital-admissions\" WHERE region = 'north' GROUP BY sex, region",
        );
        assert_eq!(a.group_by, ["sex", "region"]);
        assert_eq!(
            a.measures,
            ["count", "mean(length_of_stay)", "sum(cost_eur)"]
        );
        assert_eq!(a.filter.as_deref(), Some("region = 'north'"));
        let a = aggregate("SELECT count(*) FROM d");
        assert!(a.group_by.is_empty());
    }

    #[test]
    fn everything_else_is_refused_with_what_may_be_asked() {
        for (sql, says) in [
            ("SELECT * FROM a ORDER BY x", "ORDER BY"),
            ("SELECT DISTINCT x FROM a", "DISTINCT"),
            ("SELECT * FROM a JOIN b ON a.x = b.x", "joins"),
            ("SELECT * FROM a, b", "more than one dataset"),
            ("SELECT * FROM (SELECT * FROM b)", "subquery"),
            ("WITH t AS (SELECT * FROM a) SELECT * FROM t", "WITH"),
            ("SELECT * FROM a UNION SELECT * FROM b", "single SELECT"),
            (
                "SELECT * FROM a; SELECT * FROM b",
                "more than one statement",
            ),
            ("SELECT * FROM a -- hidden", "comment"),
            ("SELECT /* x */ * FROM a", "comment"),
            ("SELECT x AS y FROM a", "AS is not taken"),
            ("SELECT upper(x) FROM a", "is not count"),
            ("SELECT x + 1 FROM a", "is not a column"),
            ("SELECT * FROM a AS t", "alias"),
            (
                "SELECT x, count(*) FROM a GROUP BY x HAVING count(*) > 5",
                "HAVING",
            ),
            ("SELECT x, count(*) FROM a", "exactly the GROUP BY"),
            (
                "SELECT x, y, count(*) FROM a GROUP BY x",
                "exactly the GROUP BY",
            ),
            ("SELECT count(x) FROM a", "is not count"),
            ("SELECT count(DISTINCT x) FROM a", "is not count"),
            (
                "SELECT * FROM a LIMIT 99999999999999999999999",
                "whole number",
            ),
            ("SELECT * FROM a LIMIT -1", "whole number"),
            ("SELECT * FROM a WHERE x = ?", "placeholder"),
            ("DELETE FROM a", "only SELECT"),
            ("DROP TABLE a", "only SELECT"),
            ("SELECT * FROM other.schema.a", "only catalogue"),
            ("SELECT * FROM a FOR UPDATE", "lock"),
            ("SELECT", "not SQL"),
        ] {
            let err = match parse(sql) {
                Ok(_) => panic!("{sql} was taken"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(says), "{sql}: {err}");
            assert!(err.contains(WHAT_MAY_BE_ASKED), "{sql}: {err}");
        }
        let huge = format!(
            "SELECT * FROM a WHERE x = '{}'",
            "a".repeat(MAX_STATEMENT_BYTES)
        );
        assert!(
            parse(&huge)
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
    }

    #[test]
    fn bound_values_stay_values() {
        let sql = "SELECT * FROM d WHERE region = ? AND cost_eur > ? AND x = $1";
        assert_eq!(placeholders(sql).unwrap(), 3);
        let bound = bind(
            sql,
            &[
                Literal::Text("north' OR '1'='1".into()),
                Literal::Float(2.5),
            ],
        )
        .unwrap();
        assert_eq!(
            bound,
            "SELECT * FROM d WHERE region =  'north'' OR ''1''=''1'  AND cost_eur >  2.5  AND x =  'north'' OR ''1''=''1' "
        );
        let (_, r) = slice(&bound);
        assert_eq!(
            r.filter.unwrap(),
            "region = 'north'' OR ''1''=''1' AND cost_eur > 2.5 AND x = 'north'' OR ''1''=''1'"
        );
        assert!(bind("SELECT * FROM d WHERE a = ? AND b = ?", &[Literal::Int(1)]).is_err());

        // Quotes doubled inside the statement's own strings and names stay
        // doubled, so a value cannot close a string the template opened.
        let template = r#"SELECT "reg""ion" FROM d WHERE x <> 'a''' AND region = ? AND y <> '''b'"#;
        let bound = bind(template, &[Literal::Text("' OR region <> '".into())]).unwrap();
        assert_eq!(
            bound,
            r#"SELECT "reg""ion" FROM d WHERE x <> 'a''' AND region =  ''' OR region <> '''  AND y <> '''b'"#
        );
        let (_, r) = slice(&bound);
        assert_eq!(r.columns.unwrap(), ["reg\"ion"]);
        assert_eq!(
            r.filter.unwrap(),
            "x <> 'a''' AND region = ''' OR region <> ''' AND y <> '''b'"
        );
        // Positions count characters, and lines.
        let bound = bind(
            "SELECT * FROM d\nWHERE é = 'ü' AND\n b = ?",
            &[Literal::Int(7)],
        )
        .unwrap();
        assert_eq!(bound, "SELECT * FROM d\nWHERE é = 'ü' AND\n b =  7 ");
        assert_eq!(
            unbound("SELECT * FROM d WHERE a = $2 AND b = ?").unwrap(),
            "SELECT * FROM d WHERE a =  NULL  AND b =  NULL "
        );
        // A value never merges with what stands beside its placeholder.
        let bound = bind(
            "SELECT * FROM d WHERE a = E? AND b = 1 -?",
            &[Literal::Text(r"x\' OR a <> '".into()), Literal::Int(-5)],
        )
        .unwrap();
        assert_eq!(
            bound,
            r"SELECT * FROM d WHERE a = E 'x\'' OR a <> '''  AND b = 1 - -5 "
        );
    }

    /// Long operator chains parse into trees as deep as they are long;
    /// the token bound keeps them shallow enough to print and drop on a
    /// worker thread's stack (2 MiB), and refuses longer ones.
    #[test]
    fn long_operator_chains_are_refused_before_they_overflow_the_stack() {
        let chains = [
            ("year = 1", " + 1", 2),
            ("length_of_stay", "::int", 2),
            ("region", "->'a'", 2),
            ("region = ", "INTERVAL ", 1),
            ("x IS NULL", " IS NULL", 2),
        ];
        for (start, link, tokens_per_link) in chains {
            let at_limit = (MAX_STATEMENT_TOKENS / tokens_per_link - 8)
                .min((MAX_STATEMENT_BYTES - 64) / link.len());
            let sql = |n: usize| format!("SELECT a FROM d WHERE {start}{}", link.repeat(n));
            let within = sql(at_limit);
            let outcome = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || parse(&within).map(|_| ()).map_err(|e| e.to_string()))
                .unwrap()
                .join();
            assert!(outcome.is_ok(), "{link}: the parser's thread overflowed");
            let err = parse(&sql(MAX_STATEMENT_TOKENS)).unwrap_err().to_string();
            assert!(
                err.contains("words and symbols") || err.contains("longer than"),
                "{link}: {err}"
            );
        }
    }
}
