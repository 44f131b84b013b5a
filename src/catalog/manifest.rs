//! The dataset manifest (`<id>/dataset.toml`): what a steward says about a
//! dataset. Parsing rejects unknown keys, a missing licence, masks on
//! columns that are not quasi-identifiers and duplicate column names.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::domain::{Classification, ColumnName, DatasetId, Mask, Mode, Tier};

/// What a steward declares about a dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub id: DatasetId,
    pub title: String,
    pub description: String,
    pub sector: String,
    pub publisher: String,
    pub license: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    pub tier: Tier,
    /// What tier access (open or registered, no grant) may read: rows, or
    /// only disclosure-controlled aggregates. Grants set their own mode.
    #[serde(default)]
    pub mode: Mode,
    /// The published version: readers who do not pin one get this.
    pub version: u64,
    /// How to ask for access, shown to callers who are denied.
    #[serde(default)]
    pub access_request: Option<String>,
    pub columns: Vec<ColumnSpec>,
}

/// A column as the steward describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: ColumnName,
    pub description: String,
    #[serde(default)]
    pub classification: Classification,
    /// How the column is served when no grant lifts the mask
    /// (quasi-identifiers only; those without one are redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Mask>,
}

impl ColumnSpec {
    /// The mask this column is served through by default, if any.
    pub fn default_mask(&self) -> Option<Mask> {
        match self.classification {
            Classification::QuasiIdentifier => Some(self.mask.unwrap_or(Mask::Redact)),
            _ => None,
        }
    }
}

impl Manifest {
    /// Parses and checks a manifest. Errors carry the TOML position.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("title", &self.title),
            ("license", &self.license),
            ("publisher", &self.publisher),
            ("sector", &self.sector),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{field} must not be empty"));
            }
        }
        if self.version == 0 {
            return Err("version numbers start at 1".into());
        }
        let mut seen = HashSet::new();
        for column in &self.columns {
            if !seen.insert(column.name.as_str()) {
                return Err(format!("column '{}' is declared twice", column.name));
            }
            if column.mask.is_some() && column.classification != Classification::QuasiIdentifier {
                return Err(format!(
                    "column '{}' has a mask but is not a quasi-identifier",
                    column.name
                ));
            }
        }
        Ok(())
    }

    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "x"
title = "X"
description = "d"
sector = "health"
publisher = "P"
license = "CC-BY-4.0"
tier = "open"
version = 1
[[columns]]
name = "a"
description = "a"
classification = "quasi-identifier"
mask = "prefix(2)"
"#;

    #[test]
    fn a_good_manifest_parses() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.columns[0].default_mask(), Some(Mask::Prefix(2)));
    }

    #[test]
    fn unknown_keys_and_missing_licence_are_refused() {
        let unknown = GOOD.replace("tier = \"open\"", "tier = \"open\"\ncolour = \"red\"");
        assert!(Manifest::parse(&unknown).unwrap_err().contains("colour"));
        let no_licence = GOOD.replace("license = \"CC-BY-4.0\"\n", "");
        assert!(
            Manifest::parse(&no_licence)
                .unwrap_err()
                .contains("license")
        );
    }

    #[test]
    fn masks_belong_to_quasi_identifiers_only() {
        let bad = GOOD.replace("quasi-identifier", "none");
        assert!(Manifest::parse(&bad).unwrap_err().contains("mask"));
    }
}
