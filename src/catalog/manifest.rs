//! The dataset manifest (`<id>/dataset.toml`): what a steward says about a
//! dataset, and which version is published. Parsing rejects unknown keys, a
//! missing licence, masks on columns that are not quasi-identifiers and
//! duplicate column names.

use std::collections::HashSet;

use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::change::ProposedChange;
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
    /// The published version: readers who do not pin one get this. Zero
    /// means registered but no data uploaded yet. Version folders above this
    /// number are uploads that never committed and are not read.
    #[serde(default)]
    pub version: u64,
    /// A first upload held for its steward's review: its columns were
    /// defined by the file, not classified by anyone, so it is not served
    /// until a steward publishes it (`POST /v1/datasets/{id}/publish`).
    /// Zero: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_review: u64,
    /// The highest version number given so far: numbers are never given
    /// twice, even those of versions rejected or replaced in review (whose
    /// folders are removed). Zero in manifests from before it was kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_version: u64,
    /// How to ask for access, shown to callers who are denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request: Option<String>,
    /// Columns uploads are sorted by (in this order), so range filters on
    /// them prune row groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sort_by: Vec<ColumnName>,
    /// When a steward retired the dataset: no longer listed or served, kept
    /// on storage and in the audit trail.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retired: Option<OffsetDateTime>,
    /// The number of the last proposed change (numbers are never reused).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_change: u64,
    #[serde(default)]
    pub columns: Vec<ColumnSpec>,
    /// Changes a steward proposed that widen access, waiting for an admin,
    /// and the latest decided ones. Kept in the manifest so a proposal is
    /// committed exactly like the manifest (both backends, crash-safe).
    /// Shown to the dataset's stewards and admins only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ProposedChange>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How large a manifest a steward may write (registration or edit): a
/// listing page of 100 summaries, and a dataset's description, stay small.
/// Manifests already on storage are loaded whatever their size.
pub mod caps {
    pub const TITLE_BYTES: usize = 200;
    pub const DESCRIPTION_BYTES: usize = 4096;
    /// `sector`, `publisher`, `license`, and each keyword.
    pub const SHORT_TEXT_BYTES: usize = 128;
    pub const KEYWORDS: usize = 32;
    pub const ACCESS_REQUEST_BYTES: usize = 1024;
    pub const COLUMNS: usize = 2000;
    pub const COLUMN_DESCRIPTION_BYTES: usize = 1024;
}

/// A column as the steward describes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: ColumnName,
    pub description: String,
    #[serde(default)]
    pub classification: Classification,
    /// How the column is served when no grant lifts the mask
    /// (quasi-identifiers only; those without one are redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "bucket(5)")]
    pub mask: Option<Mask>,
    /// A lookup key: uploads get a bloom filter on it, so point lookups
    /// skip row groups that cannot hold the value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key: bool,
    /// The type CSV values are read as (otherwise inferred from a sample);
    /// other formats must carry this type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub declared_type: Option<DeclaredType>,
    /// The header cell CSV uploads name this column by, when it is not the
    /// column's name (`Durée de séjour (jours)` for `length_of_stay`):
    /// every upload reads that cell as this column, so a steward renames
    /// once, at registration, not at each monthly upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "Durée de séjour (jours)")]
    pub source: Option<String>,
    /// Whether aggregate-only callers may group by this column (in its
    /// masked form, for a quasi-identifier). A steward's decision: never
    /// direct identifiers or `hash` pseudonyms.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub groupable: bool,
    /// Whether aggregate-only callers may ask for `min`/`max` of this column
    /// (released only when at least `min_count` rows share the value).
    /// Plain columns only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub order_statistics: bool,
    /// For differentially private sums and means: `[low, high]`. Values are
    /// clamped into it, which bounds how much one row can move a sum; a
    /// column without bounds cannot be summed under differential privacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f64>>)]
    pub bounds: Option<[f64; 2]>,
    /// The public set of values a groupable column takes (in its masked
    /// form). Under differential privacy the groups are exactly these, in
    /// this order, whether or not any row has the value, so which groups
    /// appear says nothing about the data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// How a number or date column is cut into categories (instead of
    /// `categories`): bin edges, or calendar periods between two dates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub bins: Option<Bins>,
}

use crate::domain::{Bins, MAX_CATEGORIES};

/// Longest header cell a column's `source` may name.
const MAX_SOURCE_BYTES: usize = 200;

/// `bounds` and `categories` as differential privacy needs them.
fn column_domain_errors(column: &ColumnSpec) -> Result<(), String> {
    if let Some([low, high]) = column.bounds
        && !(low.is_finite() && high.is_finite() && low <= high)
    {
        return Err(format!(
            "column '{}': bounds must be two finite numbers, low first",
            column.name
        ));
    }
    if let Some(bins) = &column.bins {
        if !column.categories.is_empty() {
            return Err(format!(
                "column '{}' has both categories and bins; declare one",
                column.name
            ));
        }
        if !column.groupable {
            return Err(format!(
                "column '{}' has bins but is not groupable",
                column.name
            ));
        }
        bins.check()
            .map_err(|e| format!("column '{}': {e}", column.name))?;
    }
    if column.categories.is_empty() {
        return Ok(());
    }
    if !column.groupable {
        return Err(format!(
            "column '{}' has categories but is not groupable",
            column.name
        ));
    }
    if column.categories.len() > MAX_CATEGORIES {
        return Err(format!(
            "column '{}' has {} categories; at most {MAX_CATEGORIES} are accepted",
            column.name,
            column.categories.len()
        ));
    }
    let mut seen = HashSet::new();
    for category in &column.categories {
        if category.len() > caps::SHORT_TEXT_BYTES {
            return Err(format!(
                "column '{}': a category is {} bytes; at most {} are accepted",
                column.name,
                category.len(),
                caps::SHORT_TEXT_BYTES
            ));
        }
        if !seen.insert(category.as_str()) {
            return Err(format!(
                "column '{}': category '{}' is listed twice",
                column.name,
                crate::util::echo::cut(category)
            ));
        }
    }
    Ok(())
}

/// Column types a steward can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeclaredType {
    String,
    Int64,
    Float64,
    Boolean,
    Date,
    Timestamp,
}

impl DeclaredType {
    pub fn data_type(self) -> DataType {
        match self {
            DeclaredType::String => DataType::Utf8,
            DeclaredType::Int64 => DataType::Int64,
            DeclaredType::Float64 => DataType::Float64,
            DeclaredType::Boolean => DataType::Boolean,
            DeclaredType::Date => DataType::Date32,
            DeclaredType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
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

    pub fn check(&self) -> Result<(), String> {
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
        if self.mode == Mode::Dp {
            return Err(
                "mode = \"dp\" needs a privacy budget, which only a grant in the policy file carries; use \"aggregate\" here".into(),
            );
        }
        let mut seen = HashSet::new();
        let mut sources = HashSet::new();
        for column in &self.columns {
            if !seen.insert(column.name.as_str()) {
                return Err(format!("column '{}' is declared twice", column.name));
            }
            if let Some(source) = &column.source {
                if source.trim().is_empty() || source.len() > MAX_SOURCE_BYTES {
                    return Err(format!(
                        "column '{}': source must be a header cell of 1 to {MAX_SOURCE_BYTES} bytes",
                        column.name
                    ));
                }
                if !sources.insert(source.trim()) {
                    return Err(format!(
                        "column '{}': header cell '{}' is the source of two columns",
                        column.name,
                        crate::util::echo::cut(source)
                    ));
                }
            }
            if column.mask.is_some() && column.classification != Classification::QuasiIdentifier {
                return Err(format!(
                    "column '{}' has a mask but is not a quasi-identifier",
                    column.name
                ));
            }
            if column.groupable
                && (column.classification == Classification::DirectIdentifier
                    || column.default_mask() == Some(Mask::Hash))
            {
                return Err(format!(
                    "column '{}' cannot be groupable: identifiers and pseudonyms are never grouped on",
                    column.name
                ));
            }
            column_domain_errors(column)?;
            if column.order_statistics && column.classification != Classification::None {
                return Err(format!(
                    "column '{}' cannot have order_statistics: min and max of an identifier are single people's values",
                    column.name
                ));
            }
        }
        for name in &self.sort_by {
            if !self.columns.is_empty() && self.column(name.as_str()).is_none() {
                return Err(format!("sort_by names '{name}', which is not a column"));
            }
        }
        Ok(())
    }

    /// Checks the sizes a steward may write ([`caps`]): separate from
    /// [`Manifest::check`] so a catalogue written before the caps still loads.
    pub fn check_size(&self) -> Result<(), String> {
        let too_long = |field: &str, len: usize, max: usize| {
            Err(format!(
                "{field} is {len} bytes; at most {max} are accepted"
            ))
        };
        for (field, value, max) in [
            ("title", &self.title, caps::TITLE_BYTES),
            ("description", &self.description, caps::DESCRIPTION_BYTES),
            ("sector", &self.sector, caps::SHORT_TEXT_BYTES),
            ("publisher", &self.publisher, caps::SHORT_TEXT_BYTES),
            ("license", &self.license, caps::SHORT_TEXT_BYTES),
        ] {
            if value.len() > max {
                return too_long(field, value.len(), max);
            }
        }
        if let Some(how) = &self.access_request
            && how.len() > caps::ACCESS_REQUEST_BYTES
        {
            return too_long("access_request", how.len(), caps::ACCESS_REQUEST_BYTES);
        }
        if self.keywords.len() > caps::KEYWORDS {
            return Err(format!(
                "{} keywords; at most {} are accepted",
                self.keywords.len(),
                caps::KEYWORDS
            ));
        }
        if let Some(k) = self
            .keywords
            .iter()
            .find(|k| k.len() > caps::SHORT_TEXT_BYTES)
        {
            return too_long("a keyword", k.len(), caps::SHORT_TEXT_BYTES);
        }
        if self.columns.len() > caps::COLUMNS {
            return Err(format!(
                "{} columns; at most {} are accepted",
                self.columns.len(),
                caps::COLUMNS
            ));
        }
        use crate::util::echo::refuse_hidden;
        for (field, value) in [
            ("title", &self.title),
            ("sector", &self.sector),
            ("publisher", &self.publisher),
            ("license", &self.license),
        ] {
            refuse_hidden(field, value, false)?;
        }
        refuse_hidden("description", &self.description, true)?;
        if let Some(how) = &self.access_request {
            refuse_hidden("access_request", how, true)?;
        }
        for k in &self.keywords {
            refuse_hidden("a keyword", k, false)?;
        }
        for c in &self.columns {
            refuse_hidden(
                &format!("the description of column '{}'", c.name),
                &c.description,
                true,
            )?;
            if c.description.len() > caps::COLUMN_DESCRIPTION_BYTES {
                return too_long(
                    &format!("the description of column '{}'", c.name),
                    c.description.len(),
                    caps::COLUMN_DESCRIPTION_BYTES,
                );
            }
        }
        Ok(())
    }

    /// The manifest as stored in `dataset.toml`.
    pub fn to_toml(&self) -> String {
        // Every field is a plain string, number, list or table: serialising
        // cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Whether the dataset is live: published and not retired.
    /// The highest version folder that holds committed data: the
    /// published version, or the one in review above it.
    pub fn committed_up_to(&self) -> u64 {
        self.version.max(self.in_review)
    }

    /// Whether the manifest points at version `n` (published or in review).
    pub fn names_version(&self, n: u64) -> bool {
        n > 0 && (n == self.version || n == self.in_review)
    }

    /// Whether version folder `n` holds nothing anyone will read: an upload
    /// that never committed (above the committed ones), or an upload in
    /// review that a later one replaced (a crash may leave it behind).
    pub fn is_stale_version(&self, n: u64) -> bool {
        n > self.committed_up_to() || (n > self.version && n < self.in_review)
    }

    pub fn is_live(&self) -> bool {
        self.version > 0 && self.retired.is_none()
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
