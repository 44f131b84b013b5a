//! The policy file (`config/policy.toml`): grants written by policy admins,
//! parsed strictly and checked against the catalogue before it is used.
//!
//! ```toml
//! [[grant]]
//! id = "los-study-2026"
//! subjects = ["alice@uni.example"]      # and/or groups = ["nhs-north"]
//! dataset = "hospital-admissions"
//! purpose = "Length-of-stay study, protocol 2026-14"
//! columns = ["age_band", "region", "length_of_stay"]   # optional
//! unmask = ["admission_date"]                           # optional
//! row_filter = "region = 'north'"                       # optional
//! max_rows = 100000                                     # optional
//! expires = 2027-06-30                                  # optional, inclusive
//! ```

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use serde::{Deserialize, Deserializer};
use time::Date;

use crate::auth::Principal;
use crate::catalog::Catalog;
use crate::domain::{Classification, ColumnName, DatasetId};

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    /// Syntax, unknown keys or wrong types (the message carries the line).
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// A grant that cannot be applied as written.
    #[error("{file}: grant '{grant}': {problem}")]
    Grant {
        file: String,
        grant: String,
        problem: String,
    },
}

/// All grants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, rename = "grant")]
    pub grants: Vec<Grant>,
}

/// One grant: who, which dataset, for what, and what it lets them see.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub id: String,
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub dataset: DatasetId,
    pub purpose: String,
    /// Visible columns; absent means every column that is not a direct identifier.
    #[serde(default)]
    pub columns: Option<Vec<ColumnName>>,
    /// Quasi-identifier columns this grant serves unmasked.
    #[serde(default)]
    pub unmask: Vec<ColumnName>,
    #[serde(default)]
    pub row_filter: Option<String>,
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Last day (UTC) on which the grant is valid.
    #[serde(default, deserialize_with = "date_opt")]
    pub expires: Option<Date>,
}

impl Grant {
    pub fn applies_to(&self, principal: &Principal) -> bool {
        self.subjects.contains(&principal.sub)
            || self.groups.iter().any(|g| principal.groups.contains(g))
    }
}

/// Accepts a TOML date (`2027-06-30`) or a string of that form.
fn date_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Toml(toml::value::Datetime),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Toml(dt) => match (dt.date, dt.time) {
            (Some(date), None) => date.to_string(),
            _ => {
                return Err(serde::de::Error::custom(
                    "expires must be a date (YYYY-MM-DD)",
                ));
            }
        },
        Raw::Text(t) => t,
    };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(&text, format).map(Some).map_err(|_| {
        serde::de::Error::custom(format!("expires '{text}' is not a date (YYYY-MM-DD)"))
    })
}

impl Policy {
    /// Reads and parses a policy file (not yet checked against a catalogue).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, PolicyError> {
        toml::from_str(text).map_err(|e| PolicyError::Syntax {
            file: file.to_owned(),
            message: e.to_string(),
        })
    }

    /// Checks every grant against the catalogue: the dataset exists, named
    /// columns exist and are not direct identifiers, `unmask` names visible
    /// quasi-identifiers, the row filter parses against the dataset's
    /// columns, ids are unique, and someone is named.
    pub fn check(
        &self,
        catalog: &Catalog,
        file: &str,
        max_filter_bytes: usize,
    ) -> Result<(), PolicyError> {
        let mut ids = HashSet::new();
        for grant in &self.grants {
            let bad = |problem: String| PolicyError::Grant {
                file: file.to_owned(),
                grant: grant.id.clone(),
                problem,
            };
            if grant.id.trim().is_empty() {
                return Err(bad("id must not be empty".into()));
            }
            if !ids.insert(grant.id.as_str()) {
                return Err(bad("id is used by another grant".into()));
            }
            if grant.subjects.is_empty() && grant.groups.is_empty() {
                return Err(bad("names no subjects and no groups".into()));
            }
            if grant.purpose.trim().is_empty() {
                return Err(bad("purpose must not be empty".into()));
            }
            let Some(dataset) = catalog.get(&grant.dataset) else {
                return Err(bad(format!(
                    "dataset '{}' is not in the catalogue",
                    grant.dataset
                )));
            };
            let manifest = &dataset.manifest;
            let known = |name: &ColumnName| -> Result<&crate::catalog::ColumnSpec, PolicyError> {
                manifest.column(name.as_str()).ok_or_else(|| {
                    bad(format!(
                        "column '{name}' is not in dataset '{}'",
                        manifest.id
                    ))
                })
            };
            for name in grant.columns.iter().flatten() {
                if known(name)?.classification == Classification::DirectIdentifier {
                    return Err(bad(format!(
                        "column '{name}' is a direct identifier and can never be granted"
                    )));
                }
            }
            for name in &grant.unmask {
                if known(name)?.classification != Classification::QuasiIdentifier {
                    return Err(bad(format!(
                        "unmask: column '{name}' is not a quasi-identifier"
                    )));
                }
                if grant.columns.as_ref().is_some_and(|c| !c.contains(name)) {
                    return Err(bad(format!(
                        "unmask: column '{name}' is not among the grant's columns"
                    )));
                }
            }
            if let Some(filter) = &grant.row_filter {
                let all: BTreeSet<String> = manifest
                    .columns
                    .iter()
                    .map(|c| c.name.to_string())
                    .collect();
                crate::filter::parse(filter, max_filter_bytes.max(filter.len()), &all)
                    .map_err(|e| bad(format!("row_filter: {e}")))?;
            }
        }
        Ok(())
    }
}
