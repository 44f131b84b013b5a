//! What a version's columns hold, and whether a new version's columns now
//! hold what another column used to: the check that stops a steward from
//! opening identifier data by re-uploading it under a column classified
//! lower (`a,secret` uploaded again as `secret,a`).
//!
//! A column's [`ColumnProfile`] is small and bounded whatever the data's
//! size: its null and distinct shares, the shapes its values take
//! (`SW1A 1AA` → `AA9A 9AA`), and a keyed bottom-k sample of its values'
//! hashes (the [`SAMPLE`] smallest SipHash-1-3 values under a key derived
//! from the server's secret). Two samples estimate how much of one column's
//! values appear in another without keeping a single value; the key keeps
//! the hashes from being matched against guesses, and a steward cannot tell
//! which of their values are sampled, so no part of a swap can be steered
//! around the sample.
//!
//! [`findings`] compares the version being published with the one it
//! replaces, against the manifest as it is at the commit, and says in
//! words what looks moved. A version with findings is held for an admin,
//! like a metadata change that widens access.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hasher;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::DataType;
use arrow::util::display::FormatOptions;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use crate::catalog::manifest::Manifest;
use crate::catalog::{StoreFile, Version};
use crate::domain::{Classification, DatasetId};

/// Hashes kept per column: estimates of overlap are within a few percent
/// at this size (the standard error of a share p is about √(p(1-p)/k)).
pub const SAMPLE: usize = 256;
/// Value shapes counted per column; rarer ones are counted together.
const SHAPES: usize = 64;
/// Shapes are cut to this many characters.
const SHAPE_CHARS: usize = 24;
/// An overlap this far above what the two columns shared before counts.
const MOVED: f64 = 0.1;
/// A column at least this distinct, over at least [`UNIQUE_MIN_ROWS`]
/// values, picks out rows.
const NEAR_UNIQUE: f64 = 0.9;
const UNIQUE_MIN_ROWS: u64 = 20;
/// The file a version's profile is kept in, beside its Parquet files.
const FILE: &str = "profile.json";
/// Batches read when profiling a version.
const BATCH_ROWS: usize = 8192;

/// The key value hashes are taken under (from the server's secret, so the
/// same on every replica and after a restart).
#[derive(Clone)]
pub struct ProfileKey([u8; 16]);

impl std::fmt::Debug for ProfileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProfileKey(..)")
    }
}

impl ProfileKey {
    /// The label the key is derived from the server's secret under.
    pub const LABEL: &str = "data-profile";

    /// The key from bytes derived for it from the server's secret.
    pub fn from_derived(derived: [u8; 32]) -> Self {
        let mut key = [0; 16];
        key.copy_from_slice(&derived[..16]);
        Self(key)
    }

    fn hash(&self, text: &str) -> u64 {
        let half = |range: std::ops::Range<usize>| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&self.0[range]);
            u64::from_le_bytes(bytes)
        };
        let mut hasher = SipHasher13::new_with_keys(half(0..8), half(8..16));
        hasher.write(text.as_bytes());
        hasher.finish()
    }
}

/// What one column of a version holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub rows: u64,
    pub nulls: u64,
    /// Distinct non-null values: exact below [`SAMPLE`], else estimated
    /// from the sample.
    pub distinct: u64,
    /// The most common value shapes and how many values had each.
    pub shapes: Vec<(String, u64)>,
    /// The smallest [`SAMPLE`] keyed hashes of the distinct values, ascending.
    pub sample: Vec<u64>,
}

impl ColumnProfile {
    fn filled(&self) -> u64 {
        self.rows - self.nulls
    }

    /// Whether the sample holds every distinct value.
    fn complete(&self) -> bool {
        self.sample.len() < SAMPLE
    }

    /// Distinct values per non-null value.
    fn distinct_share(&self) -> f64 {
        match self.filled() {
            0 => 0.0,
            filled => self.distinct as f64 / filled as f64,
        }
    }

    /// The most common shape, if at least half the values have it.
    fn usual_shape(&self) -> Option<&str> {
        let (shape, count) = self.shapes.first()?;
        (2 * count >= self.filled()).then_some(shape.as_str())
    }

    fn shape_share(&self, shape: &str) -> f64 {
        let count = self
            .shapes
            .iter()
            .find(|(s, _)| s == shape)
            .map_or(0, |(_, n)| *n);
        match self.filled() {
            0 => 0.0,
            filled => count as f64 / filled as f64,
        }
    }
}

/// Estimated share of `a`'s distinct values that are also `b`'s, and how
/// many sampled values that rests on; `None` when the samples cannot tell.
/// Every hash of `b` up to its sample's largest is in its sample, so of
/// `a`'s sampled hashes in that range, the share found in `b`'s sample is
/// an unbiased estimate (Broder's containment from bottom-k sketches).
fn contained(a: &ColumnProfile, b: &ColumnProfile) -> Option<(f64, usize)> {
    let limit = if b.complete() {
        u64::MAX
    } else {
        *b.sample.last()?
    };
    let looked: Vec<u64> = a.sample.iter().copied().filter(|h| *h <= limit).collect();
    if looked.is_empty() {
        return None;
    }
    let found = looked
        .iter()
        .filter(|h| b.sample.binary_search(h).is_ok())
        .count();
    Some((found as f64 / looked.len() as f64, found))
}

/// A version's columns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub version: u64,
    pub columns: Vec<ColumnProfile>,
}

impl Profile {
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Builds a profile batch by batch, in bounded memory.
pub struct Profiler {
    key: ProfileKey,
    columns: Vec<Building>,
}

#[derive(Default)]
struct Building {
    profile: ColumnProfile,
    sample: BTreeSet<u64>,
    shapes: HashMap<String, u64>,
    other_shapes: u64,
}

impl Profiler {
    pub fn new(key: ProfileKey) -> Self {
        Self {
            key,
            columns: Vec::new(),
        }
    }

    /// Adds a batch's values. Every batch must have the first one's columns.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
        if self.columns.is_empty() {
            self.columns = batch
                .schema()
                .fields()
                .iter()
                .map(|f| Building {
                    profile: ColumnProfile {
                        name: f.name().clone(),
                        data_type: f.data_type().to_string(),
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .collect();
        }
        // Values are compared as text, so an identifier moved into a column
        // of another type is still found.
        let options = CastOptions {
            safe: true,
            format_options: FormatOptions::default(),
        };
        for (column, building) in batch.columns().iter().zip(&mut self.columns) {
            let text = cast_with_options(column, &DataType::Utf8, &options)?;
            let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
                continue;
            };
            building.profile.rows += text.len() as u64;
            building.profile.nulls += column.null_count() as u64;
            for value in text.iter().flatten() {
                building.see(&self.key, value);
            }
        }
        Ok(())
    }

    pub fn finish(self, version: u64) -> Profile {
        Profile {
            version,
            columns: self.columns.into_iter().map(Building::finish).collect(),
        }
    }
}

impl Building {
    fn see(&mut self, key: &ProfileKey, value: &str) {
        let hash = key.hash(value);
        let full = self.sample.len() >= SAMPLE;
        if !full || self.sample.last().is_some_and(|top| hash < *top) {
            self.sample.insert(hash);
            if self.sample.len() > SAMPLE {
                self.sample.pop_last();
            }
        }
        let shape = shape_of(value);
        if let Some(count) = self.shapes.get_mut(&shape) {
            *count += 1;
        } else if self.shapes.len() < SHAPES {
            self.shapes.insert(shape, 1);
        } else {
            self.other_shapes += 1;
        }
    }

    fn finish(self) -> ColumnProfile {
        let mut profile = self.profile;
        profile.distinct = match self.sample.last() {
            Some(top) if self.sample.len() >= SAMPLE => {
                // k-minimum-values: (k - 1) / (the k-th smallest as a share
                // of the hash range).
                let share = (*top as f64 + 1.0) / (u64::MAX as f64 + 1.0);
                (((SAMPLE - 1) as f64 / share) as u64).min(profile.rows - profile.nulls)
            }
            _ => self.sample.len() as u64,
        };
        profile.sample = self.sample.into_iter().collect();
        let mut shapes: Vec<(String, u64)> = self.shapes.into_iter().collect();
        shapes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        shapes.truncate(8);
        profile.shapes = shapes;
        profile
    }
}

/// A value's shape: capitals `A`, small letters `a`, digits `9`, anything
/// else as it is (`SW1A 1AA` → `AA9A 9AA`, `2024-03-11` → `9999-99-99`).
fn shape_of(value: &str) -> String {
    let mut shape: String = value
        .chars()
        .take(SHAPE_CHARS)
        .map(|c| match c {
            c if c.is_numeric() => '9',
            c if c.is_uppercase() => 'A',
            c if c.is_alphabetic() => 'a',
            c if c.is_control() => '?',
            c => c,
        })
        .collect();
    if value.chars().nth(SHAPE_CHARS).is_some() {
        shape.push('…');
    }
    shape
}

fn profile_path(id: &DatasetId, version: u64) -> StorePath {
    StorePath::from(id.as_str())
        .join("versions")
        .join(version.to_string())
        .join(FILE)
}

/// Reads every row of `version` and profiles it.
pub async fn profile(
    store: &Arc<dyn ObjectStore>,
    version: &Version,
    key: &ProfileKey,
) -> anyhow::Result<Profile> {
    let mut profiler = Profiler::new(key.clone());
    for file in &version.files {
        let mut batches = ParquetRecordBatchStreamBuilder::new(StoreFile::new(store, file))
            .await?
            .with_batch_size(BATCH_ROWS)
            .build()?;
        while let Some(batch) = batches.try_next().await? {
            profiler.add(&batch)?;
        }
    }
    Ok(profiler.finish(version.number))
}

/// `version`'s profile: the one kept beside its files, else read from its
/// rows and kept (versions published before profiles existed).
pub async fn kept_or_new(
    store: &Arc<dyn ObjectStore>,
    id: &DatasetId,
    version: &Version,
    key: &ProfileKey,
) -> anyhow::Result<Profile> {
    let path = profile_path(id, version.number);
    if let Ok(found) = store.get(&path).await
        && let Ok(bytes) = found.bytes().await
        && let Ok(kept) = serde_json::from_slice::<Profile>(&bytes)
        && kept.version == version.number
    {
        return Ok(kept);
    }
    let made = profile(store, version, key).await?;
    keep(store, id, &made).await?;
    Ok(made)
}

/// Writes `profile` beside its version's files.
pub async fn keep(
    store: &Arc<dyn ObjectStore>,
    id: &DatasetId,
    profile: &Profile,
) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(profile)?;
    store
        .put(&profile_path(id, profile.version), PutPayload::from(bytes))
        .await?;
    Ok(())
}

/// Whether `column` is more protected than `than` under `manifest`: a
/// higher classification, or for two quasi-identifiers a mask that
/// reveals less.
fn more_protected(manifest: &Manifest, column: &str, than: &str) -> bool {
    use crate::catalog::change::{class_rank, mask_widens};
    let (Some(column), Some(than)) = (manifest.column(column), manifest.column(than)) else {
        return false;
    };
    match class_rank(column.classification).cmp(&class_rank(than.classification)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => match (column.default_mask(), than.default_mask()) {
            (Some(column), Some(than)) => mask_widens(column, than),
            _ => false,
        },
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn class_name(manifest: &Manifest, column: &str) -> String {
    match manifest.column(column) {
        Some(c) => match c.classification {
            Classification::DirectIdentifier => "a direct identifier".into(),
            Classification::QuasiIdentifier => match c.mask {
                Some(mask) => format!("a quasi-identifier served as {mask}"),
                None => "a quasi-identifier".into(),
            },
            Classification::None => "not classified".into(),
        },
        None => "not in the manifest".into(),
    }
}

/// What looks moved between `old` (the version `new` replaces) and `new`,
/// in words, judged by `manifest`'s classifications: a column whose values
/// now overlap a more protected column's previous values more than they
/// did; a column below quasi-identifier that became near-unique or took an
/// identifier's shape; a masked column whose values changed shape. Empty
/// when the new version holds the same kind of data (new rows, reordered
/// rows or columns, corrections).
pub fn findings(old: &Profile, new: &Profile, manifest: &Manifest) -> Vec<String> {
    let mut found = Vec::new();
    for column in &new.columns {
        let before = old.column(&column.name);
        for protected in &old.columns {
            if protected.name == column.name
                || !more_protected(manifest, &protected.name, &column.name)
            {
                continue;
            }
            // Both directions: a few identifiers moved into a column of few
            // values dominate it; many moved into a column of many values
            // show as a share of the identifiers.
            let now = [contained(column, protected), contained(protected, column)];
            let then = before.map_or([None, None], |b| {
                [contained(b, protected), contained(protected, b)]
            });
            let moved = now.iter().zip(then).find_map(|(now, then)| {
                let (share, found) = (*now)?;
                let was = then.map_or(0.0, |(share, _)| share);
                (found > 0 && share >= was + MOVED && share >= MOVED).then_some((share, was))
            });
            if let Some((share, was)) = moved {
                found.push(format!(
                    "column '{}' ({}) now holds values of column '{}' ({}): about {} of the sampled values match, {} before",
                    column.name,
                    class_name(manifest, &column.name),
                    protected.name,
                    class_name(manifest, &protected.name),
                    percent(share),
                    percent(was),
                ));
            }
        }
        let Some(spec) = manifest.column(&column.name) else {
            continue;
        };
        if spec.classification == Classification::None {
            let was = before.map_or(0.0, ColumnProfile::distinct_share);
            if column.filled() >= UNIQUE_MIN_ROWS
                && column.distinct_share() >= NEAR_UNIQUE
                && was < NEAR_UNIQUE / 2.0
            {
                found.push(format!(
                    "column '{}' (not classified) is now {} distinct ({} before): its values pick out single rows",
                    column.name,
                    percent(column.distinct_share()),
                    percent(was),
                ));
            }
            if let Some(shape) = column.usual_shape()
                && before.is_none_or(|b| b.usual_shape() != Some(shape))
                && let Some(identifier) = old.columns.iter().find(|o| {
                    o.name != column.name
                        && o.usual_shape() == Some(shape)
                        && more_protected(manifest, &o.name, &column.name)
                })
            {
                found.push(format!(
                    "column '{}' (not classified) now takes the shape '{shape}' of column '{}' ({})",
                    column.name,
                    identifier.name,
                    class_name(manifest, &identifier.name),
                ));
            }
        }
        if spec.mask.is_some()
            && let Some(before) = before
            && let Some(shape) = before.usual_shape()
        {
            let (was, now) = (before.shape_share(shape), column.shape_share(shape));
            if now < was / 2.0 {
                found.push(format!(
                    "masked column '{}' ({}) changed shape: {} of its values were like '{shape}', now {}",
                    column.name,
                    class_name(manifest, &column.name),
                    percent(was),
                    percent(now),
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    const MANIFEST: &str = r#"
id = "x"
title = "X"
description = "d"
sector = "health"
publisher = "P"
license = "OGL"
tier = "open"
version = 1
[[columns]]
name = "a"
description = "a"
[[columns]]
name = "secret"
description = "id"
classification = "direct-identifier"
[[columns]]
name = "q"
description = "q"
classification = "quasi-identifier"
mask = "bucket(10)"
"#;

    fn key() -> ProfileKey {
        ProfileKey([7; 16])
    }

    fn profile_of(version: u64, rows: &[(&str, &str, i64)]) -> Profile {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("secret", DataType::Utf8, true),
            Field::new("q", DataType::Int64, true),
        ]));
        let text = |values: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(values)) };
        let batch = RecordBatch::try_new(
            schema,
            vec![
                text(rows.iter().map(|r| r.0).collect()),
                text(rows.iter().map(|r| r.1).collect()),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let mut profiler = Profiler::new(key());
        profiler.add(&batch).unwrap();
        profiler.finish(version)
    }

    fn people(n: usize) -> Vec<(String, String, i64)> {
        (0..n)
            .map(|i| {
                (
                    ["north", "south", "east"][i % 3].to_owned(),
                    format!("S{:06}", i * 7919 % 1_000_003),
                    20 + (i % 60) as i64,
                )
            })
            .collect()
    }

    fn borrowed(rows: &[(String, String, i64)]) -> Vec<(&str, &str, i64)> {
        rows.iter()
            .map(|(a, s, q)| (a.as_str(), s.as_str(), *q))
            .collect()
    }

    fn check(old: &[(String, String, i64)], new: &[(String, String, i64)]) -> Vec<String> {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        findings(
            &profile_of(1, &borrowed(old)),
            &profile_of(2, &borrowed(new)),
            &manifest,
        )
    }

    #[test]
    fn the_swap_of_one_row_is_found() {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        let old = profile_of(1, &[("x", "S1", 37)]);
        let new = profile_of(2, &[("S1", "x", 37)]);
        let found = findings(&old, &new, &manifest);
        assert!(
            found
                .iter()
                .any(|f| f.contains("'a'") && f.contains("'secret'")),
            "{found:?}"
        );
    }

    #[test]
    fn more_rows_reordered_rows_and_corrections_are_not_findings() {
        let old = people(5000);
        let mut new = people(6000);
        new.reverse();
        new[10].0 = "west".into();
        assert_eq!(check(&old, &new), Vec::<String>::new());
    }

    #[test]
    fn swaps_of_part_of_the_rows_are_found() {
        let old = people(5000);
        for fraction in [2, 5, 10] {
            let mut new = old.clone();
            for row in new.iter_mut().step_by(fraction) {
                std::mem::swap(&mut row.0, &mut row.1);
            }
            let found = check(&old, &new);
            assert!(
                found
                    .iter()
                    .any(|f| f.contains("'a'") && f.contains("'secret'")),
                "1 in {fraction}: {found:?}"
            );
        }
    }

    #[test]
    fn a_masked_column_changing_shape_is_found() {
        let old = people(500);
        let mut new = old.clone();
        for row in &mut new {
            row.2 *= 1000;
        }
        let found = check(&old, &new);
        assert!(
            found.iter().any(|f| f.contains("masked column 'q'")),
            "{found:?}"
        );
    }

    #[test]
    fn an_unclassified_column_becoming_unique_is_found() {
        let old = people(500);
        let mut new = old.clone();
        for (i, row) in new.iter_mut().enumerate() {
            row.0 = format!("R{i}");
        }
        let found = check(&old, &new);
        assert!(
            found.iter().any(|f| f.contains("is now 100% distinct")),
            "{found:?}"
        );
    }

    #[test]
    fn distinct_counts_are_estimated_within_a_few_percent() {
        let rows = people(20_000);
        let profile = profile_of(1, &borrowed(&rows));
        let secret = profile.column("secret").unwrap();
        let error = (secret.distinct as f64 - 20_000.0).abs() / 20_000.0;
        assert!(error < 0.15, "{}", secret.distinct);
        assert_eq!(profile.column("a").unwrap().distinct, 3);
        assert_eq!(profile.column("secret").unwrap().shapes[0].0, "A999999");
    }

    #[test]
    fn shapes_keep_punctuation_and_classes() {
        assert_eq!(shape_of("SW1A 1AA"), "AA9A 9AA");
        assert_eq!(shape_of("2024-03-11"), "9999-99-99");
        assert_eq!(shape_of("Zoë"), "Aaa");
    }
}
