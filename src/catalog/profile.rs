//! What a version's columns hold, and whether a new version's columns now
//! hold what another column held: the check that stops a steward from
//! opening identifier data by re-uploading it under a column classified
//! lower (`a,secret` uploaded again as `secret,a`).
//!
//! A column's [`ColumnProfile`] is small and bounded whatever the data's
//! size: its null and distinct shares, the shapes its values take
//! (`SW1A 1AA` → `AA9A 9AA`), and keyed bottom-k [`Sketch`]es: of its
//! values (for distinct counts), of their *pieces* (each value lower-cased
//! without punctuation, and its longer letter and digit runs, so `id:S12345`,
//! `s12345` and `12345.0` all meet `S12345`), and of every piece the column
//! has held in any version so far. Two sketches estimate how much of one
//! column's values appear in another without keeping a single value; the
//! key (derived from the server's secret) keeps hashes from being matched
//! against guesses, and a steward cannot tell which values are sampled, so
//! no part of a move can be steered around the sample.
//!
//! [`findings`] compares the version being published with the one it
//! replaces, against the manifest as it is at the commit, and says in words
//! what looks moved. Overlaps are judged against each pair's *baseline*:
//! the overlap the two columns had when first profiled together, carried
//! unchanged from version to version, so moving values a little at a time,
//! or emptying the protected column first, does not raise it. A version
//! with findings is held for an admin, like a widening metadata change.
//!
//! What it cannot see: values transformed beyond case, punctuation and
//! number formatting (split over two columns, encoded, reversed); a small
//! share of an identifier's values moved into a column of many values; and
//! exact values of a numeric quasi-identifier with few distinct values
//! (ages, dates) moved into another number column, whose values overlap
//! such columns anyway.

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

/// Hashes kept per sketch: estimates of overlap are within a few percent
/// at this size (the standard error of a share p is about √(p(1-p)/k)).
pub const SAMPLE: usize = 256;
/// Value shapes counted per column; rarer ones are counted together.
const SHAPES: usize = 64;
/// Shapes are cut to this many characters.
const SHAPE_CHARS: usize = 24;
/// Letter or digit runs at least this long are pieces of their own.
const PIECE_CHARS: usize = 4;
/// An overlap this far above the pair's baseline counts.
const MOVED: f64 = 0.1;
/// A column at least this distinct, over at least [`UNIQUE_MIN_ROWS`]
/// values, picks out rows.
const NEAR_UNIQUE: f64 = 0.9;
const UNIQUE_MIN_ROWS: u64 = 20;
/// Columns at least this distinct have values that say who they are about.
const IDENTIFYING: f64 = 0.5;
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

    /// Tells profiles taken under this key from others (a CLI run with
    /// another state folder has another secret): those are taken again.
    fn check(&self) -> u64 {
        self.hash("\u{0}sluice-profile-key-check")
    }
}

/// The [`SAMPLE`] smallest keyed hashes of a set of texts, ascending.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sketch(Vec<u64>);

impl Sketch {
    /// Whether the sketch holds every hash of its set.
    fn complete(&self) -> bool {
        self.0.len() < SAMPLE
    }

    /// Every hash of the set up to this one is in the sketch.
    fn limit(&self) -> u64 {
        match self.0.last() {
            Some(last) if !self.complete() => *last,
            _ => u64::MAX,
        }
    }

    /// Distinct texts: exact below [`SAMPLE`], else the k-minimum-values
    /// estimate (k - 1) / (the k-th smallest as a share of the range).
    fn distinct(&self) -> u64 {
        if self.complete() {
            return self.0.len() as u64;
        }
        let share = (self.limit() as f64 + 1.0) / (u64::MAX as f64 + 1.0);
        ((SAMPLE - 1) as f64 / share) as u64
    }

    /// Estimated share of this set's texts that are also `other`'s, and how
    /// many sampled hashes that rests on; `None` when the sketches cannot
    /// tell. Of this sketch's hashes up to `other`'s limit, the share found
    /// in `other` is an unbiased estimate (Broder's containment).
    fn contained_in(&self, other: &Sketch) -> Option<(f64, usize)> {
        let limit = other.limit();
        let looked: Vec<u64> = self.0.iter().copied().filter(|h| *h <= limit).collect();
        if looked.is_empty() {
            return None;
        }
        let found = looked
            .iter()
            .filter(|h| other.0.binary_search(h).is_ok())
            .count();
        Some((found as f64 / looked.len() as f64, found))
    }

    /// The larger of the two containments: a few identifiers moved into a
    /// column of few values dominate it; many moved into a column of many
    /// values show as a share of the identifiers.
    fn overlap(&self, other: &Sketch) -> Option<(f64, usize)> {
        [self.contained_in(other), other.contained_in(self)]
            .into_iter()
            .flatten()
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// The sketch of both sets together.
    fn union(&self, other: &Sketch) -> Sketch {
        let mut all: BTreeSet<u64> = self.0.iter().chain(&other.0).copied().collect();
        while all.len() > SAMPLE {
            all.pop_last();
        }
        Sketch(all.into_iter().collect())
    }
}

/// Builds a [`Sketch`] one hash at a time.
#[derive(Default)]
struct Sketching(BTreeSet<u64>);

impl Sketching {
    fn add(&mut self, hash: u64) {
        if self.0.len() < SAMPLE || self.0.last().is_some_and(|top| hash < *top) {
            self.0.insert(hash);
            if self.0.len() > SAMPLE {
                self.0.pop_last();
            }
        }
    }

    fn finish(self) -> Sketch {
        Sketch(self.0.into_iter().collect())
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
    /// Distinct non-null values (estimated above [`SAMPLE`]).
    pub distinct: u64,
    /// The most common value shapes and how many values had each.
    pub shapes: Vec<(String, u64)>,
    /// The values' pieces in this version.
    pub pieces: Sketch,
    /// The pieces of this column in this version and every earlier one.
    pub seen: Sketch,
}

impl ColumnProfile {
    fn filled(&self) -> u64 {
        self.rows - self.nulls
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

    /// Whether the values say who they are about: many distinct, or not a
    /// number or date (whose small domains overlap by chance).
    fn identifying(&self) -> bool {
        self.distinct_share() >= IDENTIFYING || self.data_type == "Utf8"
    }
}

/// How much two columns' values overlapped when first profiled together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub column: String,
    pub protected: String,
    pub share: f64,
}

/// A version's columns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub version: u64,
    /// Which key the hashes were taken under ([`ProfileKey::check`]).
    pub key_check: u64,
    pub columns: Vec<ColumnProfile>,
    /// Overlaps of each column with each column classified when the pair
    /// was first profiled.
    pub baselines: Vec<Baseline>,
}

impl Profile {
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn baseline(&self, column: &str, protected: &str) -> Option<f64> {
        self.baselines
            .iter()
            .find(|b| b.column == column && b.protected == protected)
            .map(|b| b.share)
    }

    /// Carries history from `old`, the version this one replaces: each
    /// column's pieces seen so far, and the baseline of every pair with a
    /// column `manifest` classifies. A pair's baseline is kept from the
    /// first version that recorded it; a pair `old` holds but did not
    /// record (its column was classified since) starts from `old`'s
    /// overlap; a column new in this version starts from none, so a new
    /// column carrying an identifier is found.
    pub fn continue_from(&mut self, old: Option<&Profile>, manifest: &Manifest) {
        for column in &mut self.columns {
            column.seen = match old.and_then(|o| o.column(&column.name)) {
                Some(before) => column.pieces.union(&before.seen),
                None => column.pieces.clone(),
            };
        }
        let classified = |name: &str| {
            manifest
                .column(name)
                .is_some_and(|c| c.classification != Classification::None)
        };
        let overlap = |a: &ColumnProfile, b: &ColumnProfile| {
            a.seen.overlap(&b.seen).map_or(0.0, |(share, _)| share)
        };
        let mut baselines = Vec::new();
        for column in &self.columns {
            for protected in self.columns.iter().filter(|p| classified(&p.name)) {
                if protected.name == column.name {
                    continue;
                }
                let share = match old {
                    None => overlap(column, protected),
                    Some(old) => match old.baseline(&column.name, &protected.name) {
                        Some(kept) => kept,
                        None => match (old.column(&column.name), old.column(&protected.name)) {
                            (Some(c), Some(p)) => overlap(c, p),
                            _ => 0.0,
                        },
                    },
                };
                baselines.push(Baseline {
                    column: column.name.clone(),
                    protected: protected.name.clone(),
                    share,
                });
            }
        }
        self.baselines = baselines;
    }
}

/// Builds a profile batch by batch, in bounded memory.
pub struct Profiler {
    key: ProfileKey,
    columns: Vec<Building>,
    pieces: Pieces,
}

#[derive(Default)]
struct Building {
    profile: ColumnProfile,
    values: Sketching,
    pieces: Sketching,
    shapes: HashMap<String, u64>,
    /// Hashes of values whose pieces were added lately.
    lately: std::collections::HashSet<u64>,
    values_seen: u64,
    shaped: u64,
}

/// Values remembered as lately seen, per column.
const LATELY: usize = 4096;
/// Every value's shape is counted up to this many, then every
/// [`SHAPE_EVERY`]th.
const SHAPE_ALL: u64 = 1000;
const SHAPE_EVERY: u64 = 8;

impl Profiler {
    pub fn new(key: ProfileKey) -> Self {
        Self {
            key,
            columns: Vec::new(),
            pieces: Pieces::default(),
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
                building.see(&self.key, value, &mut self.pieces);
            }
        }
        Ok(())
    }

    pub fn finish(self, version: u64) -> Profile {
        Profile {
            version,
            key_check: self.key.check(),
            columns: self.columns.into_iter().map(Building::finish).collect(),
            baselines: Vec::new(),
        }
    }
}

impl Building {
    fn see(&mut self, key: &ProfileKey, value: &str, pieces: &mut Pieces) {
        let hash = key.hash(value);
        self.values.add(hash);
        // A value's pieces are a set's members: a value seen lately adds
        // nothing again (columns of few values repeat them all the time).
        if self.lately.insert(hash) {
            if self.lately.len() > LATELY {
                self.lately.clear();
                self.lately.insert(hash);
            }
            for piece in pieces.of(value) {
                self.pieces.add(key.hash(piece));
            }
        }
        // Shapes are shares: the first values and then every eighth tell
        // them as well as all would.
        self.values_seen += 1;
        if self.values_seen <= SHAPE_ALL || self.values_seen.is_multiple_of(SHAPE_EVERY) {
            self.shaped += 1;
            let shape = shape_of(value);
            if let Some(count) = self.shapes.get_mut(&shape) {
                *count += 1;
            } else if self.shapes.len() < SHAPES {
                self.shapes.insert(shape, 1);
            }
        }
    }

    fn finish(self) -> ColumnProfile {
        let mut profile = self.profile;
        let values = self.values.finish();
        profile.distinct = values.distinct().min(profile.rows - profile.nulls);
        profile.pieces = self.pieces.finish();
        // Counts of the values shaped, scaled to all the values.
        let filled = profile.rows - profile.nulls;
        let scale = |n: u64| match self.shaped {
            0 => 0,
            shaped => (n as f64 * filled as f64 / shaped as f64).round() as u64,
        };
        let mut shapes: Vec<(String, u64)> = self
            .shapes
            .into_iter()
            .map(|(shape, n)| (shape, scale(n)))
            .collect();
        shapes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        shapes.truncate(8);
        profile.shapes = shapes;
        profile
    }
}

/// What a value is compared by: its letters and digits, lower-cased, and
/// each run of letters or of digits at least [`PIECE_CHARS`] long
/// (`ID: S-12345` → `ids12345`, `12345`; `12345.0` → `123450`, `12345`).
#[cfg(test)]
fn pieces(value: &str) -> Vec<String> {
    Pieces::default().of(value).to_vec()
}

/// [`pieces`] with its buffers kept from value to value: a profile sees
/// every value of a version, and allocating for each was most of its cost.
#[derive(Default)]
struct Pieces {
    found: Vec<String>,
    count: usize,
    run: String,
}

impl Pieces {
    fn of(&mut self, value: &str) -> &[String] {
        // Fullwidth and other compatibility forms, and accents, as plain
        // letters and digits (`ｓ６７` → `s67`).
        let folded;
        let value = if value.is_ascii() {
            value
        } else {
            folded = deunicode::deunicode(value);
            folded.as_str()
        };
        self.count = 0;
        let skeleton = self.next();
        for c in value.chars().filter(|c| c.is_alphanumeric()) {
            skeleton.extend(c.to_lowercase());
        }
        self.run.clear();
        let mut run_is_digits = false;
        for c in value.chars() {
            if !c.is_alphanumeric() {
                self.close_run();
                continue;
            }
            let digit = c.is_numeric();
            if !self.run.is_empty() && digit != run_is_digits {
                self.close_run();
            }
            run_is_digits = digit;
            self.run.extend(c.to_lowercase());
        }
        self.close_run();
        // A number written another way (`4.347712782e9`, `12345.0`) as the
        // whole number it is.
        if value.contains(['.', 'e', 'E'])
            && let Ok(number) = value.trim().parse::<f64>()
            && number.is_finite()
            && number.fract() == 0.0
            && number.abs() < 1e18
        {
            let whole = format!("{}", number as i64);
            if !self.found[..self.count].contains(&whole) {
                self.next().push_str(&whole);
            }
        }
        &self.found[..self.count]
    }

    /// A cleared buffer for the next piece.
    fn next(&mut self) -> &mut String {
        if self.count == self.found.len() {
            self.found.push(String::new());
        }
        let piece = &mut self.found[self.count];
        piece.clear();
        self.count += 1;
        piece
    }

    fn close_run(&mut self) {
        let long = self.run.chars().count() >= PIECE_CHARS;
        if long && !self.found[..self.count].contains(&self.run) {
            let run = std::mem::take(&mut self.run);
            self.next().push_str(&run);
            self.run = run;
        }
        self.run.clear();
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

/// Reads every row of `version` and profiles it (without history).
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

/// The profile of `dataset`'s current version, with its history: the one
/// kept beside its files, else rebuilt from every published version in
/// turn, reusing the kept ones (versions published before profiles
/// existed; or all of them, when the key changed, since hashes under
/// another key match nothing).
pub async fn kept_or_rebuilt(
    store: &Arc<dyn ObjectStore>,
    dataset: &crate::catalog::Dataset,
    key: &ProfileKey,
) -> anyhow::Result<Option<Profile>> {
    let id = dataset.id();
    let versions: Vec<&Version> = dataset.published_versions().collect();
    // Most often the current version's own profile is kept: one read.
    if let Some(current) = versions.last()
        && let Some(kept) = read_kept(store, id, current.number, key).await
    {
        return Ok(Some(kept));
    }
    let mut previous: Option<Profile> = None;
    for version in versions {
        if let Some(kept) = read_kept(store, id, version.number, key).await {
            previous = Some(kept);
            continue;
        }
        let mut made = profile(store, version, key).await?;
        made.continue_from(previous.as_ref(), &dataset.manifest);
        keep(store, id, &made).await?;
        previous = Some(made);
    }
    Ok(previous)
}

/// Version `number`'s kept profile, if there is one taken under `key`.
async fn read_kept(
    store: &Arc<dyn ObjectStore>,
    id: &DatasetId,
    number: u64,
    key: &ProfileKey,
) -> Option<Profile> {
    let bytes = store
        .get(&profile_path(id, number))
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    serde_json::from_slice::<Profile>(&bytes)
        .ok()
        .filter(|kept| kept.version == number && kept.key_check == key.check())
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

/// Whether `column`'s values say who they are about: a direct identifier
/// always; another column if it is [identifying](ColumnProfile::identifying)
/// now or was in the version before (emptying a column first does not
/// make its earlier values harmless).
fn identifying(manifest: &Manifest, old: &Profile, column: &ColumnProfile) -> bool {
    manifest
        .column(&column.name)
        .is_some_and(|c| c.classification == Classification::DirectIdentifier)
        || column.identifying()
        || old
            .column(&column.name)
            .is_some_and(ColumnProfile::identifying)
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

/// What looks moved in `new` (already [continued](Profile::continue_from)
/// from `old`, the version it replaces), in words, judged by `manifest`'s
/// classifications: a column whose values overlap what a more protected,
/// identifying column has held in any version more than the pair's
/// baseline; a column below quasi-identifier that became near-unique or
/// took an identifying column's shape; a masked column whose values changed
/// shape. Empty when the new version holds the same kind of data (new rows,
/// reordered rows or columns, corrections).
pub fn findings(old: &Profile, new: &Profile, manifest: &Manifest) -> Vec<String> {
    let mut found = Vec::new();
    for column in &new.columns {
        let before = old.column(&column.name);
        for protected in &new.columns {
            if protected.name == column.name
                || !identifying(manifest, old, protected)
                || !more_protected(manifest, &protected.name, &column.name)
            {
                continue;
            }
            let was = new.baseline(&column.name, &protected.name).unwrap_or(0.0);
            // Everything the column has held against everything the
            // protected one has: earlier versions stay readable by number,
            // so a few values moved per version add up.
            if let Some((share, hits)) = column.seen.overlap(&protected.seen)
                && hits > 0
                && share >= MOVED
                && share >= was + MOVED
            {
                found.push(format!(
                    "column '{}' ({}) now holds values of column '{}' ({}): about {} of the sampled values match, {} when first profiled",
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
                        && identifying(manifest, old, o)
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

    type Row = (String, String, i64);

    fn key() -> ProfileKey {
        ProfileKey([7; 16])
    }

    fn manifest() -> Manifest {
        Manifest::parse(MANIFEST).unwrap()
    }

    fn profile_of(version: u64, rows: &[Row]) -> Profile {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("secret", DataType::Utf8, true),
            Field::new("q", DataType::Int64, true),
        ]));
        let text = |values: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(values)) };
        let batch = RecordBatch::try_new(
            schema,
            vec![
                text(rows.iter().map(|r| r.0.as_str()).collect()),
                text(rows.iter().map(|r| r.1.as_str()).collect()),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let mut profiler = Profiler::new(key());
        profiler.add(&batch).unwrap();
        profiler.finish(version)
    }

    fn people(n: usize) -> Vec<Row> {
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

    /// The findings of publishing each of `versions` in turn; those of the
    /// last.
    fn published(versions: &[Vec<Row>]) -> Vec<String> {
        let manifest = manifest();
        let mut previous: Option<Profile> = None;
        let mut found = Vec::new();
        for (n, rows) in versions.iter().enumerate() {
            let mut profile = profile_of(n as u64 + 1, rows);
            profile.continue_from(previous.as_ref(), &manifest);
            found = previous
                .as_ref()
                .map(|old| findings(old, &profile, &manifest))
                .unwrap_or_default();
            previous = Some(profile);
        }
        found
    }

    fn moved(found: &[String]) -> bool {
        found
            .iter()
            .any(|f| f.contains("column 'a'") && f.contains("values of column 'secret'"))
    }

    #[test]
    fn the_swap_of_one_row_is_found() {
        let one = |a: &str, s: &str| vec![(a.to_owned(), s.to_owned(), 37)];
        let found = published(&[one("x", "S1"), one("S1", "x")]);
        assert!(moved(&found), "{found:?}");
    }

    #[test]
    fn more_rows_reordered_rows_and_corrections_are_not_findings() {
        let old = people(5000);
        let mut new = people(6000);
        new.reverse();
        new[10].0 = "west".into();
        assert_eq!(published(&[old, new]), Vec::<String>::new());
    }

    #[test]
    fn swaps_of_part_of_the_rows_are_found() {
        let old = people(5000);
        for fraction in [2, 5, 10] {
            let mut new = old.clone();
            for row in new.iter_mut().step_by(fraction) {
                std::mem::swap(&mut row.0, &mut row.1);
            }
            let found = published(&[old.clone(), new]);
            assert!(moved(&found), "1 in {fraction}: {found:?}");
        }
    }

    #[test]
    fn identifiers_changed_in_case_punctuation_or_number_form_are_found() {
        let old = people(5000);
        let forms: [fn(&str) -> String; 4] = [
            |s| s.to_lowercase(),
            |s| format!("id:{s}"),
            |s| format!(" {s}"),
            |s| format!("{}.0", &s[1..]),
        ];
        for (i, form) in forms.iter().enumerate() {
            let mut new = old.clone();
            for row in new.iter_mut().step_by(3) {
                row.0 = form(&row.1);
            }
            let found = published(&[old.clone(), new]);
            assert!(moved(&found), "form {i}: {found:?}");
        }
    }

    #[test]
    fn fullwidth_and_scientific_forms_are_found() {
        let old = people(3000);
        let forms: [fn(&str) -> String; 2] = [
            |s| {
                s.chars()
                    .map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap_or(c))
                    .collect()
            },
            |s| {
                let n: f64 = s[1..].parse().unwrap();
                format!("{n:e}")
            },
        ];
        for (i, form) in forms.iter().enumerate() {
            let mut new = old.clone();
            for row in &mut new {
                row.0 = form(&row.1);
            }
            let found = published(&[old.clone(), new]);
            assert!(moved(&found), "form {i}: {found:?}");
        }
    }

    #[test]
    fn making_the_identifier_constant_first_does_not_hide_it() {
        let old = people(3000);
        let mut new = old.clone();
        for row in &mut new {
            row.0 = format!("#{}", row.1);
            row.1 = "same".into();
        }
        let found = published(&[old, new]);
        assert!(moved(&found), "{found:?}");
    }

    #[test]
    fn a_few_values_per_version_add_up() {
        let old = people(3000);
        let mut versions = vec![old.clone()];
        for k in 0..6 {
            let mut next = old.clone();
            for (i, row) in next.iter_mut().enumerate() {
                if i % 20 == k {
                    row.0 = row.1.clone();
                }
            }
            versions.push(next);
        }
        assert!(moved(&published(&versions)));
    }

    #[test]
    fn moving_a_little_at_a_time_is_measured_from_the_first_version() {
        let old = people(3000);
        let mut versions = vec![old.clone()];
        for step in 1..=6 {
            let mut next = old.clone();
            for (i, row) in next.iter_mut().enumerate() {
                if i % 100 < step * 4 {
                    row.0 = row.1.clone();
                }
            }
            versions.push(next);
        }
        // Each step moves 4% more: small against the last version, 24%
        // against the first.
        assert!(moved(&published(&versions)));
    }

    #[test]
    fn emptying_the_identifier_first_does_not_hide_it() {
        let old = people(3000);
        let mut junk = old.clone();
        for (i, row) in junk.iter_mut().enumerate() {
            row.1 = format!("zz-{i}");
        }
        let mut moved_in = junk.clone();
        for (row, original) in moved_in.iter_mut().zip(&old) {
            row.0 = original.1.clone();
        }
        assert!(moved(&published(&[old, junk, moved_in])));
    }

    #[test]
    fn new_rows_carrying_their_own_identifiers_are_found() {
        let old = people(3000);
        let mut new = old.clone();
        for i in 0..1000 {
            let id = format!("N{i:06}");
            new.push((id.clone(), id, 40));
        }
        assert!(moved(&published(&[old, new])));
    }

    #[test]
    fn a_number_column_growing_into_a_numeric_quasi_identifiers_range_is_not_a_finding() {
        let old = people(3000);
        let mut small = old.clone();
        let mut large = old.clone();
        for (i, (s, l)) in small.iter_mut().zip(&mut large).enumerate() {
            s.0 = (i % 10).to_string();
            l.0 = (i % 100).to_string();
        }
        let found = published(&[small, large]);
        assert!(!moved(&found), "{found:?}");
    }

    #[test]
    fn a_masked_column_changing_shape_is_found() {
        let old = people(500);
        let mut new = old.clone();
        for row in &mut new {
            row.2 *= 1000;
        }
        let found = published(&[old, new]);
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
        let found = published(&[old, new]);
        assert!(
            found.iter().any(|f| f.contains("is now 100% distinct")),
            "{found:?}"
        );
    }

    #[test]
    fn distinct_counts_are_estimated_within_a_few_percent() {
        let rows = people(20_000);
        let profile = profile_of(1, &rows);
        let secret = profile.column("secret").unwrap();
        let error = (secret.distinct as f64 - 20_000.0).abs() / 20_000.0;
        assert!(error < 0.15, "{}", secret.distinct);
        assert_eq!(profile.column("a").unwrap().distinct, 3);
        assert_eq!(secret.shapes[0].0, "A999999");
    }

    #[test]
    fn pieces_and_shapes() {
        assert_eq!(pieces("ID: S-12345"), ["ids12345", "12345"]);
        assert_eq!(pieces("12345.0"), ["123450", "12345"]);
        assert_eq!(pieces("S000123"), ["s000123", "000123"]);
        assert_eq!(shape_of("SW1A 1AA"), "AA9A 9AA");
        assert_eq!(shape_of("2024-03-11"), "9999-99-99");
        assert_eq!(shape_of("Zoë"), "Aaa");
    }
}
