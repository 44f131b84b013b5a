//! The parts of the Delta Sharing protocol that are not HTTP: how the
//! catalogue is laid out as shares, schemas and tables for one caller,
//! table schemas in Spark's JSON form, and the protocol's JSON predicate
//! hints as Sluice filters. The routes are in `http::sharing_routes`.
//!
//! Layout: one share per sector (its name made a slug), one schema
//! `default`, and one table per dataset the caller may read rows of. When
//! several of the caller's grants cover a dataset (the v1 API asks them to
//! choose with `grant=`), each grant is its own table, `<dataset>__<grant>`:
//! a Delta Sharing client has no place for that parameter, and Sluice never
//! silently picks or unions grants.

pub mod predicate;
pub mod spark_schema;

use crate::auth::Caller;
use crate::catalog::Catalog;
use crate::policy::{self, Decision, Denial, Policy};

/// The one schema of every share.
pub const SCHEMA: &str = "default";

/// Separates a dataset from a grant in a table's name (dataset ids have no
/// underscores, so the split is unambiguous).
const GRANT_SEPARATOR: &str = "__";

/// A table a caller may read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Table {
    pub share: String,
    pub name: String,
    pub dataset: String,
    /// The grant this table reads under, when the caller has to choose.
    pub grant: Option<String>,
}

/// A sector as a share name: lowercase letters, digits and hyphens (a
/// table URL is `share.schema.table`, so no dots).
pub fn share_name(sector: &str) -> String {
    let slug: String = sector
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let slug = slug.trim_matches('-').to_owned();
    if slug.is_empty() {
        "other".into()
    } else {
        slug
    }
}

/// Every table `caller` may read rows of, sorted by share and name.
pub fn tables(catalog: &Catalog, policy: &Policy, caller: &Caller) -> Vec<Table> {
    let today = time::OffsetDateTime::now_utc().date();
    let mut tables = Vec::new();
    for dataset in catalog.datasets() {
        let m = &dataset.manifest;
        if !m.is_live() || dataset.version(None).is_none() {
            continue;
        }
        let share = share_name(&m.sector);
        let readable = |grant: Option<&str>| {
            matches!(
                policy::evaluate(policy, caller, m, grant, today),
                Decision::Allow(plan) if plan.mode.serves_rows()
            )
        };
        match policy::evaluate(policy, caller, m, None, today) {
            Decision::Allow(plan) if plan.mode.serves_rows() => tables.push(Table {
                share,
                name: m.id.to_string(),
                dataset: m.id.to_string(),
                grant: None,
            }),
            Decision::Deny(Denial::GrantAmbiguous { grants }) => {
                for grant in grants {
                    let nameable = grant
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if nameable && readable(Some(&grant)) {
                        tables.push(Table {
                            share: share.clone(),
                            name: format!("{}{GRANT_SEPARATOR}{grant}", m.id),
                            dataset: m.id.to_string(),
                            grant: Some(grant),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    tables.sort();
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_become_share_names_without_dots() {
        assert_eq!(share_name("health"), "health");
        assert_eq!(
            share_name(" Social Care & Housing."),
            "social-care---housing"
        );
        assert_eq!(share_name("..."), "other");
    }
}
