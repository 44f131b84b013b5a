//! What stewards send to change the catalogue's metadata: a registration
//! (`POST /v1/datasets`) and a patch (`PATCH /v1/datasets/{id}`). Both are
//! parsed strictly (unknown fields are refused) and turned into a checked
//! [`Manifest`]; the published version and retirement are never set by them.

use serde::Deserialize;

use super::manifest::{ColumnSpec, DeclaredType, Manifest};
use crate::domain::{Classification, ColumnName, DatasetId, Mask, Mode, Tier};

/// A new dataset's metadata.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub id: DatasetId,
    pub title: String,
    pub description: String,
    pub sector: String,
    pub publisher: String,
    pub license: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    pub tier: Tier,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub access_request: Option<String>,
    #[serde(default)]
    pub sort_by: Vec<ColumnName>,
    /// May be empty: the first upload then defines the columns.
    #[serde(default)]
    pub columns: Vec<ColumnSpec>,
}

impl Registration {
    /// The manifest of a registered dataset with no data yet.
    pub fn into_manifest(self) -> Result<Manifest, String> {
        let manifest = Manifest {
            id: self.id,
            title: self.title,
            description: self.description,
            sector: self.sector,
            publisher: self.publisher,
            license: self.license,
            keywords: self.keywords,
            tier: self.tier,
            mode: self.mode,
            version: 0,
            in_review: 0,
            last_version: 0,
            access_request: self.access_request,
            sort_by: self.sort_by,
            retired: None,
            last_change: 0,
            columns: self.columns,
            changes: Vec::new(),
        };
        manifest.check()?;
        manifest.check_size()?;
        Ok(manifest)
    }
}

/// A metadata edit: every field is optional; absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub sector: Option<String>,
    /// Only admins may move a dataset to another publisher.
    pub publisher: Option<String>,
    pub license: Option<String>,
    pub keywords: Option<Vec<String>>,
    pub tier: Option<Tier>,
    pub mode: Option<Mode>,
    pub access_request: Option<String>,
    pub sort_by: Option<Vec<ColumnName>>,
    pub columns: Option<Vec<ColumnPatch>>,
}

/// An edit of one existing column.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnPatch {
    pub name: ColumnName,
    pub description: Option<String>,
    pub classification: Option<Classification>,
    /// `null` removes the mask (quasi-identifiers are then redacted).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "month")]
    pub mask: Option<Option<Mask>>,
    pub key: Option<bool>,
    #[serde(rename = "type")]
    pub declared_type: Option<DeclaredType>,
    pub groupable: Option<bool>,
    pub order_statistics: Option<bool>,
    /// `null` removes them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<f64>>)]
    pub bounds: Option<Option<[f64; 2]>>,
    pub categories: Option<Vec<String>>,
    /// `null` removes them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub bins: Option<Option<crate::domain::Bins>>,
    /// The header cell CSV uploads name the column by; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    pub source: Option<Option<String>>,
}

/// Tells "absent" (outer `None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl ManifestPatch {
    /// The manifest with this patch applied and checked. Columns must already
    /// exist: a patch describes data, it cannot add or drop columns.
    pub fn apply(&self, current: &Manifest) -> Result<Manifest, String> {
        let mut m = current.clone();
        let set = |slot: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                *slot = v.clone();
            }
        };
        set(&mut m.title, &self.title);
        set(&mut m.description, &self.description);
        set(&mut m.sector, &self.sector);
        set(&mut m.publisher, &self.publisher);
        set(&mut m.license, &self.license);
        if let Some(keywords) = &self.keywords {
            m.keywords = keywords.clone();
        }
        if let Some(tier) = self.tier {
            m.tier = tier;
        }
        if let Some(mode) = self.mode {
            m.mode = mode;
        }
        if let Some(how) = &self.access_request {
            m.access_request = Some(how.clone()).filter(|h| !h.trim().is_empty());
        }
        if let Some(sort_by) = &self.sort_by {
            m.sort_by = sort_by.clone();
        }
        for edit in self.columns.iter().flatten() {
            let Some(column) = m.columns.iter_mut().find(|c| c.name == edit.name) else {
                return Err(format!("column '{}' does not exist", edit.name));
            };
            if let Some(d) = &edit.description {
                column.description = d.clone();
            }
            if let Some(c) = edit.classification {
                column.classification = c;
                if c != Classification::QuasiIdentifier && edit.mask.is_none() {
                    // A mask only means something on a quasi-identifier.
                    column.mask = None;
                }
            }
            if let Some(mask) = edit.mask {
                column.mask = mask;
            }
            if let Some(key) = edit.key {
                column.key = key;
            }
            if let Some(t) = edit.declared_type {
                column.declared_type = Some(t);
            }
            if let Some(g) = edit.groupable {
                column.groupable = g;
            }
            if let Some(o) = edit.order_statistics {
                column.order_statistics = o;
            }
            if let Some(bounds) = edit.bounds {
                column.bounds = bounds;
            }
            if let Some(categories) = &edit.categories {
                column.categories = categories.clone();
            }
            if let Some(bins) = &edit.bins {
                column.bins = bins.clone();
            }
            if let Some(source) = &edit.source {
                column.source = source.clone().filter(|s| !s.trim().is_empty());
            }
        }
        m.check()?;
        m.check_size()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(json: &str) -> Result<Manifest, String> {
        serde_json::from_str::<Registration>(json)
            .map_err(|e| e.to_string())?
            .into_manifest()
    }

    const GOOD: &str = r#"{"id":"x","title":"X","description":"d","sector":"health",
        "publisher":"P","license":"CC-BY-4.0","tier":"open",
        "columns":[{"name":"a","description":"a"}]}"#;

    #[test]
    fn registrations_start_unpublished_and_refuse_unknown_fields() {
        let m = registration(GOOD).unwrap();
        assert_eq!(m.version, 0);
        assert!(!m.is_live());
        let err = registration(&GOOD.replace("\"tier\"", "\"version\":3,\"tier\"")).unwrap_err();
        assert!(err.contains("version"), "{err}");
        let err = registration(&GOOD.replace(r#""license":"CC-BY-4.0","#, "")).unwrap_err();
        assert!(err.contains("license"), "{err}");
        let err = registration(&GOOD.replace(r#""id":"x""#, r#""id":"../x""#)).unwrap_err();
        assert!(err.contains("dataset id"), "{err}");
    }

    #[test]
    fn patches_edit_existing_columns_only() {
        let m = registration(GOOD).unwrap();
        let patch: ManifestPatch = serde_json::from_str(
            r#"{"title":"Y","columns":[{"name":"a","classification":"quasi-identifier","mask":"hash"}]}"#,
        )
        .unwrap();
        let edited = patch.apply(&m).unwrap();
        assert_eq!(edited.title, "Y");
        assert_eq!(edited.columns[0].default_mask(), Some(Mask::Hash));
        let back: ManifestPatch =
            serde_json::from_str(r#"{"columns":[{"name":"a","classification":"none"}]}"#).unwrap();
        assert_eq!(back.apply(&edited).unwrap().columns[0].mask, None);
        let unknown: ManifestPatch =
            serde_json::from_str(r#"{"columns":[{"name":"b","description":"?"}]}"#).unwrap();
        assert!(unknown.apply(&m).unwrap_err().contains("'b'"));
        let empty: ManifestPatch = serde_json::from_str(r#"{"license":" "}"#).unwrap();
        assert!(empty.apply(&m).unwrap_err().contains("license"));
    }
}
