//! The policy file (`config/policy.toml`): grants written by policy admins,
//! parsed strictly here and checked against the catalogue in `check`.
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
//! mode = "rows"                                  # or "aggregate", or "dp"
//! project = "los-2026"                # optional: scope of `hash` pseudonyms
//! epsilon = 3.0                       # mode = "dp" only: the project's budget
//! epsilon_per_query = 0.5             # mode = "dp" only: most one answer spends
//!
//! [[visa_grant]]                      # what a GA4GH ControlledAccessGrants visa opens
//! dataset = "hospital-admissions"
//! value = "https://sluice.example/datasets/hospital-admissions"   # the visa's value, exactly
//! mode = "aggregate"                  # optional, default "rows"
//! columns = ["age_band", "region"]    # optional
//!
//! [disclosure]                        # aggregate disclosure control
//! min_count = 10
//! round_to = 5
//! ```

use std::path::Path;

use serde::{Deserialize, Deserializer};
use time::Date;

use crate::auth::{Principal, Visa};
use crate::domain::{ColumnName, DatasetId, Mode};

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
    /// The file is not sealed as whole (being written, or edited by hand).
    #[error("{file}: {problem}")]
    Unsealed {
        file: String,
        problem: super::seal::SealError,
    },
    /// Grants that cannot be applied as written: every one found, so one
    /// run of `sluice policy check` shows them all.
    #[error("{}", grant_problems(file, problems))]
    Grants {
        file: String,
        problems: Vec<Problem>,
    },
}

/// One thing wrong in a policy file: where, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line of the table it is in (`[[grant]]`, `[disclosure]`), when known.
    pub line: Option<usize>,
    /// `grant 'id'`, `visa_grant dataset` or `[disclosure]`.
    pub place: String,
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: {}", self.place, self.problem)
    }
}

fn grant_problems(file: &str, problems: &[Problem]) -> String {
    match problems {
        [problem] => format!("{file}: {problem}"),
        _ => {
            let mut out = format!("{file}: {} problems", problems.len());
            for problem in problems {
                out.push_str(&format!("\n  {problem}"));
            }
            out
        }
    }
}

/// Where each table of a policy file starts (1-based lines), found by its
/// header, so a problem can name the line to fix. Tables written inline
/// (`grant = [{ … }]`) have no header and get no line.
#[derive(Debug, Clone, Default)]
pub struct SourceLines {
    pub grants: Vec<usize>,
    pub visa_grants: Vec<usize>,
    pub disclosure: Option<usize>,
}

impl SourceLines {
    fn of(text: &str) -> Self {
        let mut lines = Self::default();
        for (i, line) in text.lines().enumerate() {
            let header: String = line
                .split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            match header.as_str() {
                "[[grant]]" => lines.grants.push(i + 1),
                "[[visa_grant]]" => lines.visa_grants.push(i + 1),
                "[disclosure]" => lines.disclosure = Some(i + 1),
                _ => {}
            }
        }
        lines
    }
}

/// All grants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, rename = "grant")]
    pub grants: Vec<Grant>,
    /// Datasets a GA4GH `ControlledAccessGrants` visa may open, and how.
    #[serde(default, rename = "visa_grant")]
    pub visa_grants: Vec<VisaGrant>,
    #[serde(default)]
    pub disclosure: Disclosure,
    /// Where each table is in the file, for error messages.
    #[serde(skip)]
    pub lines: SourceLines,
}

/// What a verified visa for `dataset` grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisaGrant {
    pub dataset: DatasetId,
    /// The URL a visa's `value` must be (normalised; see [`super::visa`]).
    #[serde(deserialize_with = "dataset_url")]
    pub value: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub columns: Option<Vec<ColumnName>>,
    #[serde(default = "visa_purpose")]
    pub purpose: String,
}

fn dataset_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    super::visa::dataset_url(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn visa_purpose() -> String {
    "GA4GH ControlledAccessGrants visa".into()
}

/// Statistical disclosure control for aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Disclosure {
    /// Groups with fewer individuals than this are suppressed.
    pub min_count: u64,
    /// Released counts are rounded to a multiple of this.
    pub round_to: u64,
    /// Sums and means are suppressed when one contributor is more than
    /// this share of the cell (percent).
    pub dominance_pct: u64,
    /// Most groups one aggregate may return.
    pub max_groups: usize,
    /// Most columns one aggregate may group by: every added dimension
    /// makes cells smaller and labels closer to single people.
    pub max_group_by: usize,
    /// Aggregate-only tables: the scale of each released count's fixed
    /// cell-key noise (two-sided geometric, `P(k) ∝ exp(-|k| / scale)`).
    pub count_noise: f64,
    /// Aggregate-only tables: the scale of each released sum's fixed
    /// noise, as a share of the column's largest bound (Laplace).
    pub sum_noise: f64,
}

impl Default for Disclosure {
    fn default() -> Self {
        Self {
            min_count: 10,
            round_to: 5,
            dominance_pct: 50,
            max_groups: 100_000,
            max_group_by: 4,
            count_noise: 2.0,
            sum_noise: 0.5,
        }
    }
}

/// One grant: who, which dataset, for what, and what it lets them see.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub id: String,
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Organisations (the token's `organisation` claim) the grant covers.
    #[serde(default)]
    pub organisations: Vec<String>,
    pub dataset: DatasetId,
    pub purpose: String,
    #[serde(default)]
    pub mode: Mode,
    /// Pseudonyms from `hash` masks are the same within a project and
    /// unlinkable across projects; defaults to the grant's id.
    #[serde(default)]
    pub project: Option<String>,
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
    /// `mode = "dp"`: the privacy budget of the grant's project for the
    /// grant's lifetime (the sum of every answer's epsilon).
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// `mode = "dp"`: the most one answer may spend (and what it spends
    /// when the caller does not ask for less).
    #[serde(default)]
    pub epsilon_per_query: Option<f64>,
    /// For a grant made from visas: the visa it rests on (never in the file).
    #[serde(skip)]
    pub visa: Option<Visa>,
}

impl Grant {
    pub fn applies_to(&self, principal: &Principal) -> bool {
        self.subjects.contains(&principal.sub)
            || self.groups.iter().any(|g| principal.groups.contains(g))
            || principal
                .organisation
                .as_ref()
                .is_some_and(|o| self.organisations.contains(o))
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
        let mut policy: Self = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        policy.lines = SourceLines::of(text);
        Ok(policy)
    }

    /// Grants whose last valid day is before `today` (still loaded: they
    /// answer `grant-expired`, but an admin may want to prune them).
    pub fn expired(&self, today: Date) -> impl Iterator<Item = &Grant> {
        self.grants
            .iter()
            .filter(move |g| g.expires.is_some_and(|e| e < today))
    }
}
