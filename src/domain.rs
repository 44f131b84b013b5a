//! Small parsed types shared by every module: dataset ids, column names,
//! tiers and column classifications.
//!
//! Each type can only be made by parsing ("parse, don't validate"): once a
//! `DatasetId` exists it is a strict slug, so it can never carry `..` or `/`
//! into a storage path, whatever the caller percent-encoded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a piece of text is not a valid identifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Dataset ids are 1 to 64 characters of `a-z`, `0-9` and `-`,
    /// starting with a letter or digit and not ending with `-`.
    #[error(
        "dataset id must be 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    BadDatasetId,
    /// Column names are 1 to 128 characters of `a-z`, `A-Z`, `0-9` and `_`,
    /// not starting with a digit.
    #[error(
        "column name must be 1-128 characters of letters, digits and '_', not starting with a digit"
    )]
    BadColumnName,
}

/// A dataset identifier: a lowercase slug such as `hospital-admissions`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct DatasetId(String);

impl DatasetId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok_len = (1..=64).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ok_ends = !s.starts_with('-') && !s.ends_with('-');
        if ok_len && ok_chars && ok_ends {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::BadDatasetId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DatasetId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for DatasetId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A column name as it appears in a dataset's schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct ColumnName(String);

impl ColumnName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok_len = (1..=128).contains(&s.len());
        let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let ok_start = !s.as_bytes().first().is_some_and(u8::is_ascii_digit);
        if ok_len && ok_chars && ok_start {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::BadColumnName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ColumnName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ColumnName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Who may read a dataset's rows, before any grant is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Anyone, without a token.
    Open,
    /// Any valid token carrying the `researcher` role.
    Registered,
    /// Only callers holding an unexpired grant for the dataset.
    Controlled,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Open => "open",
            Tier::Registered => "registered",
            Tier::Controlled => "controlled",
        }
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Tier::Open),
            "registered" => Ok(Tier::Registered),
            "controlled" => Ok(Tier::Controlled),
            other => Err(format!(
                "unknown tier '{other}' (expected open, registered or controlled)"
            )),
        }
    }
}

/// Whether rows may be served, only disclosure-controlled aggregates, or
/// only differentially private statistics spent from a budget.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Rows,
    Aggregate,
    /// Differential privacy: noisy aggregates, each answer paid for from
    /// the grant's privacy budget. Grants only (a budget needs an owner).
    Dp,
}

impl Mode {
    /// Whether rows may be served at all.
    pub fn serves_rows(self) -> bool {
        self == Mode::Rows
    }
}

/// How sensitive a column is, as classified by the dataset's steward.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Classification {
    /// Identifies a person on its own (a patient id, a name): never served.
    DirectIdentifier,
    /// Identifies a person in combination (postcode, exact dates): served
    /// through the column's mask unless a grant lifts it.
    QuasiIdentifier,
    /// Everything else.
    #[default]
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_ids_are_strict_slugs() {
        assert!(DatasetId::parse("hospital-admissions").is_ok());
        assert!(DatasetId::parse("a1").is_ok());
        for bad in [
            "", "..", "../etc", "a/b", "A", "-a", "a-", "a b", "a%2F", "a.b", "a\\b",
        ] {
            assert!(DatasetId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(DatasetId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn column_names_are_plain_identifiers() {
        assert!(ColumnName::parse("length_of_stay").is_ok());
        assert!(ColumnName::parse("Age2").is_ok());
        for bad in ["", "1a", "a-b", "a b", "\"a\"", "a.b"] {
            assert!(
                ColumnName::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn parsed_dataset_ids_never_contain_path_syntax(s in "\\PC{0,80}") {
            if let Ok(id) = DatasetId::parse(&s) {
                proptest::prop_assert!(!id.as_str().contains('/'));
                proptest::prop_assert!(!id.as_str().contains(".."));
                proptest::prop_assert!(!id.as_str().contains('\\'));
            }
        }
    }
}

/// How a quasi-identifier column is served when no grant lifts its mask.
/// Named per column in the dataset manifest, e.g. `mask = "prefix(3)"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mask {
    /// Served as a typed null.
    Redact,
    /// Dates and timestamps truncated to the first day of their year.
    Year,
    /// Dates and timestamps truncated to the first day of their month.
    Month,
    /// Integers rounded down to a multiple of the width: the lower bound of
    /// their bucket (age 37 with `bucket(5)` is served as 35, meaning 35-39).
    Bucket(u32),
    /// Strings cut to their first N characters.
    Prefix(u32),
    /// Any value replaced by a keyed pseudonym (HMAC-SHA-256, 128-bit hex),
    /// equal within one project and unlinkable across projects.
    Hash,
}

impl Mask {
    /// Whether the mask can be applied to a column of this Arrow type.
    pub fn fits(self, data_type: &arrow::datatypes::DataType) -> bool {
        use arrow::datatypes::DataType as T;
        match self {
            Mask::Redact | Mask::Hash => true,
            Mask::Year | Mask::Month => {
                matches!(data_type, T::Date32 | T::Date64 | T::Timestamp(..))
            }
            Mask::Bucket(_) => data_type.is_integer(),
            Mask::Prefix(_) => matches!(data_type, T::Utf8 | T::LargeUtf8 | T::Utf8View),
        }
    }
}

impl FromStr for Mask {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let arg = |name: &str| -> Option<Result<u32, String>> {
            let inner = s.strip_prefix(name)?.strip_prefix('(')?.strip_suffix(')')?;
            Some(match inner.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "{name}(N) needs a positive whole number, got '{}'",
                    crate::util::echo::cut(inner)
                )),
            })
        };
        match s {
            "redact" => Ok(Mask::Redact),
            "year" => Ok(Mask::Year),
            "month" => Ok(Mask::Month),
            "hash" => Ok(Mask::Hash),
            _ => {
                if let Some(n) = arg("bucket") {
                    return n.map(Mask::Bucket);
                }
                if let Some(n) = arg("prefix") {
                    return n.map(Mask::Prefix);
                }
                Err(format!(
                    "unknown mask '{}' (expected redact, hash, year, month, bucket(N) or prefix(N))",
                    crate::util::echo::cut(s)
                ))
            }
        }
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mask::Redact => f.write_str("redact"),
            Mask::Year => f.write_str("year"),
            Mask::Month => f.write_str("month"),
            Mask::Hash => f.write_str("hash"),
            Mask::Bucket(n) => write!(f, "bucket({n})"),
            Mask::Prefix(n) => write!(f, "prefix({n})"),
        }
    }
}

impl Serialize for Mask {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod mask_tests {
    use super::*;

    #[test]
    fn masks_round_trip_through_text() {
        for text in ["redact", "year", "month", "bucket(5)", "prefix(3)", "hash"] {
            let mask: Mask = text.parse().unwrap();
            assert_eq!(mask.to_string(), text);
        }
        for bad in ["bucket(0)", "prefix()", "prefix(x)", "hmac", "bucket5"] {
            assert!(bad.parse::<Mask>().is_err(), "{bad}");
        }
    }
}

/// How a number or date column is cut into the categories that tables of
/// aggregate-only and differentially private callers group and select by.
/// A steward's declaration, public like the column's description: which
/// categories exist never depends on the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Bins {
    /// Lower edges of number bins, ascending: `[0, 1, 2, 4, 8, 15]` makes
    /// the categories `0`, `1`, `2-3`, `4-7`, `8-14` and `15+` (on an
    /// integer column; on decimals `2-<4`). Values below the first edge
    /// are in no category.
    Edges(Vec<f64>),
    /// Calendar periods of a date column, `from` to `to` included
    /// (`YYYY-MM` for months, `YYYY` for years): categories `2019-01`, …
    Periods {
        every: Period,
        from: String,
        to: String,
    },
}

/// A calendar period date bins are cut by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Month,
    Year,
}

/// Most categories one declared field may have.
pub const MAX_CATEGORIES: usize = 1000;

impl Bins {
    /// Checks the declaration; the error names what is wrong.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Bins::Edges(edges) => {
                if edges.is_empty() || edges.len() > MAX_CATEGORIES {
                    return Err(format!("bins take 1 to {MAX_CATEGORIES} edges"));
                }
                if edges.iter().any(|e| !e.is_finite()) {
                    return Err("bin edges must be finite numbers".into());
                }
                if edges.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("bin edges must be in ascending order, each once".into());
                }
                Ok(())
            }
            Bins::Periods { .. } => {
                let (from, to) = self.period_range()?;
                if to < from {
                    return Err("bins: 'from' must not be after 'to'".into());
                }
                if to - from >= MAX_CATEGORIES as i64 {
                    return Err(format!("bins: at most {MAX_CATEGORIES} periods"));
                }
                Ok(())
            }
        }
    }

    /// For periods: the first and last period as counts of periods since
    /// year 0 (months: `year * 12 + month - 1`; years: the year).
    pub fn period_range(&self) -> Result<(i64, i64), String> {
        let Bins::Periods { every, from, to } = self else {
            return Err("not a period declaration".into());
        };
        let parse = |text: &str| -> Result<i64, String> {
            let bad = || {
                format!(
                    "bins: '{}' is not a {}",
                    crate::util::echo::cut(text),
                    match every {
                        Period::Month => "month (YYYY-MM)",
                        Period::Year => "year (YYYY)",
                    }
                )
            };
            match every {
                Period::Year => {
                    let y: i64 = text.parse().map_err(|_| bad())?;
                    (text.len() == 4).then_some(y).ok_or_else(bad)
                }
                Period::Month => {
                    let (y, m) = text.split_once('-').ok_or_else(bad)?;
                    let (y, m): (i64, i64) =
                        (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
                    (text.len() == 7 && (1..=12).contains(&m))
                        .then_some(y * 12 + m - 1)
                        .ok_or_else(bad)
                }
            }
        };
        Ok((parse(from)?, parse(to)?))
    }
}
