//! Catalogue search: which datasets match a query's words, ranked.
//!
//! Each dataset is indexed once per catalogue snapshot (the snapshot is
//! immutable, so the index never goes stale) as Snowball-stemmed terms from
//! its id, title, keywords, sector, publisher, description, and column
//! names and descriptions: the catalogue's public metadata, all of which
//! `GET /v1/datasets/{id}` shows anyone who can see the dataset. A query
//! word matches a term with the same stem ("vaccine" finds "vaccination")
//! or, from three letters on, one its stem begins ("vacc", "post" for
//! "postcode_district"), at half weight. Every word must match. The score
//! is BM25's shape without length normalisation (manifests are short):
//! per word, its rarity across the catalogue times, per field, the field's
//! weight times a saturating count, so a title match outranks a passing
//! mention in a column description.
//!
//! A catalogue of thousands of datasets searches in microseconds, which is
//! why this is a small scorer over an in-memory list and not a search
//! engine with an on-disk index.

use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};

use super::Dataset;
use crate::domain::DatasetId;

/// Where a term came from, and how much a match there counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Field {
    Title,
    Keywords,
    Id,
    Sector,
    Publisher,
    ColumnName,
    Description,
    ColumnDescription,
}

impl Field {
    fn weight(self) -> f64 {
        match self {
            Field::Title => 3.0,
            Field::Keywords => 2.5,
            Field::Id | Field::Sector | Field::Publisher => 2.0,
            Field::ColumnName => 1.5,
            Field::Description => 1.0,
            Field::ColumnDescription => 0.75,
        }
    }
}

/// One dataset's terms: per stem, how often it occurs in each field.
#[derive(Debug, Default)]
struct Document {
    terms: HashMap<String, HashMap<Field, u32>>,
}

/// The terms of every dataset of one catalogue snapshot.
#[derive(Debug)]
pub struct SearchIndex {
    documents: HashMap<DatasetId, Document>,
}

fn stemmer() -> Stemmer {
    Stemmer::create(Algorithm::English)
}

/// Lower-cased words of `text` (split at anything not a letter or digit,
/// so `postcode_district` and `icd-10` are two words each), stemmed.
fn stems<'a>(stemmer: &'a Stemmer, text: &'a str) -> impl Iterator<Item = String> + 'a {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| stemmer.stem(&w.to_lowercase()).into_owned())
}

impl SearchIndex {
    pub fn build<'a>(datasets: impl Iterator<Item = &'a Dataset>) -> Self {
        let stemmer = stemmer();
        let documents = datasets
            .map(|d| {
                let m = &d.manifest;
                let mut doc = Document::default();
                let mut add = |field: Field, text: &str| {
                    for stem in stems(&stemmer, text) {
                        *doc.terms.entry(stem).or_default().entry(field).or_default() += 1;
                    }
                };
                add(Field::Id, m.id.as_str());
                add(Field::Title, &m.title);
                for k in &m.keywords {
                    add(Field::Keywords, k);
                }
                add(Field::Sector, &m.sector);
                add(Field::Publisher, &m.publisher);
                add(Field::Description, &m.description);
                for c in &m.columns {
                    add(Field::ColumnName, c.name.as_str());
                    add(Field::ColumnDescription, &c.description);
                }
                (m.id.clone(), doc)
            })
            .collect();
        Self { documents }
    }

    /// The query's words as stems (empty: every dataset matches).
    pub fn query_stems(text: &str) -> Vec<String> {
        let stemmer = stemmer();
        let mut out: Vec<String> = stems(&stemmer, text).collect();
        out.dedup();
        out
    }

    /// The datasets among `visible` that match every stem of `query`, with
    /// their scores (an empty query matches all, at 0).
    ///
    /// A word's rarity is counted among `visible` only: counted over the
    /// whole catalogue, a score (which page tokens carry) would tell how
    /// many drafts or retired datasets the caller cannot see hold a word.
    pub fn matches<'a>(
        &self,
        visible: &[&'a DatasetId],
        query: &[String],
    ) -> Vec<(&'a DatasetId, f64)> {
        let docs: Vec<(&'a DatasetId, &Document)> = visible
            .iter()
            .filter_map(|id| Some((*id, self.documents.get(*id)?)))
            .collect();
        let total = docs.len() as f64;
        let mut scores: Vec<Option<f64>> = vec![Some(0.0); docs.len()];
        for word in query {
            let weights: Vec<f64> = docs.iter().map(|(_, d)| word_weight(d, word)).collect();
            let containing = weights.iter().filter(|w| **w > 0.0).count() as f64;
            let rarity = (1.0 + (total - containing + 0.5) / (containing + 0.5)).ln();
            for (score, weight) in scores.iter_mut().zip(&weights) {
                *score = match (*score, *weight > 0.0) {
                    (Some(s), true) => Some(s + rarity * weight),
                    _ => None,
                };
            }
        }
        docs.iter()
            .zip(scores)
            .filter_map(|((id, _), score)| Some((*id, score?)))
            .collect()
    }
}

/// How strongly `doc` holds `word`: per field, its weight times a
/// saturating count; a prefix match (three letters or more) counts half.
fn word_weight(doc: &Document, word: &str) -> f64 {
    let mut best: HashMap<Field, f64> = HashMap::new();
    for (term, fields) in &doc.terms {
        let factor = if term == word {
            1.0
        } else if word.chars().count() >= 3 && term.starts_with(word) {
            0.5
        } else {
            continue;
        };
        for (field, count) in fields {
            let count = f64::from(*count);
            let value = factor * field.weight() * count / (count + 1.2);
            let slot = best.entry(*field).or_default();
            *slot = slot.max(value);
        }
    }
    // Summed in a fixed order: a HashMap's order differs between calls,
    // and float sums in another order can differ in the last bit, which
    // would move a result across a page token's (score, id) cursor.
    let mut parts: Vec<f64> = best.into_values().collect();
    parts.sort_by(f64::total_cmp);
    parts.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_split_lowered_and_stemmed() {
        let s = stemmer();
        let got: Vec<String> = stems(&s, "Vaccination postcode_district ICD-10").collect();
        assert_eq!(got, ["vaccin", "postcod", "district", "icd", "10"]);
        assert_eq!(SearchIndex::query_stems("vaccines"), ["vaccin"]);
    }
}
