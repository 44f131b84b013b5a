//! Checks a parsed policy against the catalogue, and sorts what it finds
//! into two kinds.
//!
//! - **Errors** are mistakes only the policy's author can make: an empty or
//!   duplicate id, a grant naming nobody, an empty purpose, `unmask` outside
//!   the grant's own column list, a row filter that is not valid SQL or
//!   leaves the allow-list, disclosure settings of zero. A file with an
//!   error is refused whole.
//! - **Warnings** are drift a catalogue change can cause after the grant was
//!   written: a dataset retired or gone, a column that disappeared or became
//!   a direct identifier, a masked column reclassified, a row filter naming a
//!   column that is no longer there. They never refuse the file: if they
//!   did, one steward edit would block every later policy change,
//!   revocations included, and stop the server from starting. Each is safe
//!   by construction at request time (`evaluate` never serves a direct
//!   identifier or a missing column, and a grant whose row filter does not
//!   resolve serves nothing), so a warning tells an admin what to clean up,
//!   not what is leaking.

use std::collections::{BTreeSet, HashSet};

use super::file::{Grant, Policy, PolicyError, Problem};
use crate::catalog::{Catalog, Manifest};
use crate::domain::{Classification, ColumnName, DatasetId, Mode};
use crate::filter::{self, FilterError};

/// A grant that still loads but no longer applies as written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyWarning {
    /// The grant's id, or `visa_grant <dataset>`.
    pub grant: String,
    pub problem: String,
}

impl std::fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "grant '{}': {}", self.grant, self.problem)
    }
}

impl Policy {
    /// Checks every grant against the catalogue: errors refuse the file,
    /// warnings are returned (see the module documentation for which is which).
    pub fn check(
        &self,
        catalog: &Catalog,
        file: &str,
        max_filter_bytes: usize,
    ) -> Result<Vec<PolicyWarning>, PolicyError> {
        // Every error is collected, so one run shows them all.
        let mut errors: Vec<Problem> = Vec::new();
        if self.disclosure.min_count == 0 || self.disclosure.round_to == 0 {
            errors.push(Problem {
                line: self.lines.disclosure,
                place: "[disclosure]".into(),
                problem: "min_count and round_to must be at least 1: write min_count = 10 and round_to = 5 (or your own values)".into(),
            });
        }
        let noise = [self.disclosure.count_noise, self.disclosure.sum_noise];
        if noise
            .iter()
            .any(|n| !(n.is_finite() && *n >= 0.0 && *n <= 1000.0))
        {
            errors.push(Problem {
                line: self.lines.disclosure,
                place: "[disclosure]".into(),
                problem: "count_noise and sum_noise must be numbers from 0 to 1000 (0 turns the noise off): write count_noise = 2.0 and sum_noise = 0.5 (or your own values)".into(),
            });
        }
        let mut warnings = Vec::new();
        let mut ids = HashSet::new();
        for (i, grant) in self.grants.iter().enumerate() {
            let mut bad = |problem: String| {
                errors.push(Problem {
                    line: self.lines.grants.get(i).copied(),
                    place: format!("grant '{}'", grant.id),
                    problem,
                })
            };
            let mut warn = |p: String| {
                warnings.push(PolicyWarning {
                    grant: grant.id.clone(),
                    problem: p,
                })
            };
            if grant.id.trim().is_empty() {
                bad("id must not be empty: write id = \"a-short-name\"".into());
            }
            if !ids.insert(grant.id.as_str()) {
                bad("id is used by another grant: give each grant its own id".into());
            }
            if grant.subjects.is_empty()
                && grant.groups.is_empty()
                && grant.organisations.is_empty()
            {
                bad("names no subjects, groups or organisations: add subjects = [\"someone@example.org\"] (or groups, organisations)".into());
            }
            if grant.purpose.trim().is_empty() {
                bad("purpose must not be empty: say what the access is for".into());
            }
            if let Err(e) = budget_errors(grant) {
                bad(e);
            }
            for name in &grant.unmask {
                if grant.columns.as_ref().is_some_and(|c| !c.contains(name)) {
                    bad(format!(
                        "unmask: column '{name}' is not among the grant's columns: add it to columns or remove it from unmask"
                    ));
                }
            }
            let Some(manifest) = live_manifest(catalog, &grant.dataset, &mut warn) else {
                continue;
            };
            column_drift(manifest, grant.columns.as_deref(), &mut warn);
            for name in &grant.unmask {
                let class = manifest.column(name.as_str()).map(|c| c.classification);
                if class.is_some_and(|c| c != Classification::QuasiIdentifier) {
                    warn(format!(
                        "unmask: column '{name}' is no longer a quasi-identifier of '{}' (unmask has no effect)",
                        manifest.id
                    ));
                }
            }
            if let Some(text) = &grant.row_filter {
                match filter::parse(
                    text,
                    max_filter_bytes.max(text.len()),
                    &all_columns(manifest),
                ) {
                    Ok(_) => {}
                    Err(FilterError::UnknownColumn(unknown)) => warn(format!(
                        "row_filter names column '{}', which is not in dataset '{}': the grant serves nothing until it is fixed",
                        unknown.name, manifest.id
                    )),
                    Err(e) => bad(format!("row_filter: {e}")),
                }
            }
        }
        let mut visa_datasets = HashSet::new();
        for (i, visa) in self.visa_grants.iter().enumerate() {
            let name = format!("visa_grant {}", visa.dataset);
            let mut bad = |problem: &str| {
                errors.push(Problem {
                    line: self.lines.visa_grants.get(i).copied(),
                    place: name.clone(),
                    problem: problem.to_owned(),
                })
            };
            if visa.mode == Mode::Dp {
                bad(
                    "mode = \"dp\" needs a privacy budget, which only a [[grant]] carries: use \"aggregate\" or \"rows\"",
                );
            }
            if !visa_datasets.insert(&visa.dataset) {
                bad("another visa_grant names the same dataset: keep one");
            }
            let mut warn = |p: String| {
                warnings.push(PolicyWarning {
                    grant: name.clone(),
                    problem: p,
                })
            };
            if let Some(manifest) = live_manifest(catalog, &visa.dataset, &mut warn) {
                column_drift(manifest, visa.columns.as_deref(), &mut warn);
            }
        }
        if !errors.is_empty() {
            return Err(PolicyError::Grants {
                file: file.to_owned(),
                problems: errors,
            });
        }
        Ok(warnings)
    }
}

/// A DP grant carries a budget and a per-query maximum; no other grant
/// carries either.
fn budget_errors(grant: &Grant) -> Result<(), String> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    match (grant.mode, grant.epsilon, grant.epsilon_per_query) {
        (Mode::Dp, Some(total), Some(per_query)) => {
            if !positive(total) || !positive(per_query) {
                Err("epsilon and epsilon_per_query must be positive numbers".into())
            } else if per_query < crate::dp::MIN_EPSILON {
                Err(format!(
                    "epsilon_per_query must be at least {}",
                    crate::dp::MIN_EPSILON
                ))
            } else if per_query > total {
                Err("epsilon_per_query cannot exceed epsilon".into())
            } else {
                Ok(())
            }
        }
        (Mode::Dp, _, _) => {
            Err("mode = \"dp\" needs epsilon (the project's budget) and epsilon_per_query".into())
        }
        (_, None, None) => Ok(()),
        (_, _, _) => Err("epsilon and epsilon_per_query apply to mode = \"dp\" only".into()),
    }
}

/// The dataset's manifest, or a warning when it is gone or retired (the
/// grant then opens nothing: data routes serve live datasets only).
fn live_manifest<'a>(
    catalog: &'a Catalog,
    id: &DatasetId,
    warn: &mut impl FnMut(String),
) -> Option<&'a Manifest> {
    match catalog.get(id).map(|d| &d.manifest) {
        None => {
            warn(format!(
                "dataset '{id}' is not in the catalogue: the grant opens nothing"
            ));
            None
        }
        Some(m) if m.retired.is_some() => {
            warn(format!(
                "dataset '{id}' is retired: the grant opens nothing"
            ));
            None
        }
        Some(m) => Some(m),
    }
}

/// Named columns that are gone or have become direct identifiers are not
/// served; say so.
fn column_drift(
    manifest: &Manifest,
    columns: Option<&[ColumnName]>,
    warn: &mut impl FnMut(String),
) {
    for name in columns.into_iter().flatten() {
        match manifest.column(name.as_str()) {
            None => warn(format!(
                "column '{name}' is not in dataset '{}': it is not served",
                manifest.id
            )),
            Some(c) if c.classification == Classification::DirectIdentifier => warn(format!(
                "column '{name}' is a direct identifier: it is never served"
            )),
            Some(_) => {}
        }
    }
}

/// Every column of the dataset: a grant's row filter sees raw rows.
pub(super) fn all_columns(manifest: &Manifest) -> BTreeSet<String> {
    manifest
        .columns
        .iter()
        .map(|c| c.name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(extra: &str) -> Grant {
        let text = format!(
            "[[grant]]\nid = \"g\"\nsubjects = [\"a\"]\ndataset = \"d\"\npurpose = \"p\"\n{extra}"
        );
        Policy::parse(&text, "p.toml").unwrap().grants.remove(0)
    }

    #[test]
    fn a_dp_grant_needs_a_budget_and_only_a_dp_grant_has_one() {
        let ok = "mode = \"dp\"\nepsilon = 3.0\nepsilon_per_query = 0.5";
        assert_eq!(budget_errors(&grant(ok)), Ok(()));
        for (extra, says) in [
            ("mode = \"dp\"", "needs epsilon"),
            ("mode = \"dp\"\nepsilon = 3.0", "needs epsilon"),
            (
                "mode = \"dp\"\nepsilon = 1.0\nepsilon_per_query = 2.0",
                "cannot exceed",
            ),
            (
                "mode = \"dp\"\nepsilon = -1.0\nepsilon_per_query = 0.5",
                "positive",
            ),
            (
                "mode = \"dp\"\nepsilon = 1.0\nepsilon_per_query = 1e-300",
                "at least",
            ),
            ("mode = \"aggregate\"\nepsilon = 1.0", "dp\" only"),
            ("epsilon_per_query = 1.0", "dp\" only"),
        ] {
            let error = budget_errors(&grant(extra)).unwrap_err();
            assert!(error.contains(says), "{extra}: {error}");
        }
    }
}
