//! What a CSV's text means: each column's type from a bounded sample of its
//! rows, decided as a steward would expect, and said in words.
//!
//! Arrow's own inference reads `01012` (a postcode) as the number 1012 and
//! leaves `11/03/2024` as text. Here digit strings with a leading zero stay
//! text, day-first and month-first dates are recognised when the sample
//! tells them apart (or the upload names its `date_format`), and a column
//! left as text that mostly looks like numbers or dates is pointed out, so
//! nothing changes meaning silently.

use arrow::array::{Array, ArrayRef, Date32Array, StringArray};
use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::util::echo::cut;

/// Which part of a `dd/mm/yyyy`-like date is the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DateOrder {
    /// `31/12/2024`, `31.12.2024`, `31-12-2024`.
    DayFirst,
    /// `12/31/2024`.
    MonthFirst,
}

impl DateOrder {
    /// The order a `date_format` names: `%d/%m/%Y` (any separator among
    /// `/ . -`) or `%m/%d/%Y`; ISO dates are always read.
    pub fn from_format(format: &str) -> Result<Self, String> {
        let parts: Vec<&str> = format.split(['/', '.', '-']).collect();
        match parts.as_slice() {
            ["%d", "%m", "%Y"] => Ok(Self::DayFirst),
            ["%m", "%d", "%Y"] => Ok(Self::MonthFirst),
            ["%Y", "%m", "%d"] => Ok(Self::DayFirst), // ISO: read anyway
            _ => Err(format!(
                "date_format must be %d/%m/%Y or %m/%d/%Y (separators / . or -), not '{}'",
                cut(format)
            )),
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Self::DayFirst => "day/month/year",
            Self::MonthFirst => "month/day/year",
        }
    }
}

/// What the sample of one column showed.
#[derive(Debug, Default)]
pub struct Evidence {
    filled: u64,
    booleans: u64,
    integers: u64,
    /// Digit strings that start with `0` (and are longer than one digit).
    leading_zeros: u64,
    leading_zero_example: Option<String>,
    /// Digit strings too long for a 64-bit integer.
    long_digits: u64,
    decimals: u64,
    iso_dates: u64,
    /// `a/b/yyyy` dates, and the largest `a` and `b` seen.
    other_dates: u64,
    largest_first: u32,
    largest_second: u32,
    /// Timestamps, and the most fractional digits seen.
    timestamps: u64,
    fraction_digits: usize,
    /// A value that is none of the above.
    text_example: Option<String>,
}

impl Evidence {
    pub fn see(&mut self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        self.filled += 1;
        if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false") {
            self.booleans += 1;
        } else if let Some(digits) = integer_digits(value) {
            if digits.len() > 1 && digits.starts_with('0') {
                self.leading_zeros += 1;
                self.leading_zero_example
                    .get_or_insert_with(|| cut(value).to_string());
            } else if digits.len() > 18 {
                self.long_digits += 1;
            } else {
                self.integers += 1;
            }
        } else if is_decimal(value) {
            self.decimals += 1;
        } else if iso_date(value).is_some() {
            self.iso_dates += 1;
        } else if let Some((first, second, _)) = other_date_parts(value) {
            self.other_dates += 1;
            self.largest_first = self.largest_first.max(first);
            self.largest_second = self.largest_second.max(second);
        } else if let Some(fraction) = timestamp_fraction(value) {
            self.timestamps += 1;
            self.fraction_digits = self.fraction_digits.max(fraction);
        } else {
            self.text_example
                .get_or_insert_with(|| cut(value).to_string());
        }
    }
}

/// A column's type, how its dates are read, and the decision in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub data_type: DataType,
    /// Set for dates read from `a/b/yyyy` text.
    pub dates: Option<DateOrder>,
    /// What was inferred, in words.
    pub words: String,
    /// Something the steward should look at.
    pub warning: Option<String>,
}

impl Decision {
    fn plain(data_type: DataType, words: &str) -> Self {
        Self {
            data_type,
            dates: None,
            words: words.to_owned(),
            warning: None,
        }
    }
}

/// The type of column `name` from its sample, unless the dataset already
/// fixes it (`known`); `date_format` settles day-first against month-first.
pub fn decide(
    name: &str,
    evidence: &Evidence,
    known: Option<&DataType>,
    date_format: Option<DateOrder>,
) -> Decision {
    let e = evidence;
    let dates = e.iso_dates + e.other_dates;
    let order = || {
        date_format.or(if e.largest_first > 12 {
            Some(DateOrder::DayFirst)
        } else if e.largest_second > 12 {
            Some(DateOrder::MonthFirst)
        } else {
            None
        })
    };
    if let Some(known) = known {
        // Dates in another order are converted; everything else Arrow
        // reads as the type says (and refuses, naming the line).
        if *known == DataType::Date32 && e.other_dates > 0 {
            let order = order().unwrap_or(DateOrder::DayFirst);
            return Decision {
                data_type: DataType::Date32,
                dates: Some(order),
                words: format!("dates, read as {}", order.words()),
                warning: None,
            };
        }
        return Decision::plain(known.clone(), "as declared");
    }
    if e.filled == 0 {
        return Decision::plain(DataType::Utf8, "text (every sampled value was empty)");
    }
    let numbers = e.integers + e.decimals;
    if e.booleans == e.filled {
        return Decision::plain(DataType::Boolean, "true/false");
    }
    if e.integers == e.filled {
        return Decision::plain(DataType::Int64, "whole numbers");
    }
    if numbers == e.filled {
        return Decision::plain(DataType::Float64, "decimal numbers");
    }
    if e.leading_zeros > 0 && e.leading_zeros + numbers + e.long_digits == e.filled {
        let example = e.leading_zero_example.as_deref().unwrap_or("0…");
        return Decision {
            data_type: DataType::Utf8,
            dates: None,
            words: format!(
                "text: values such as '{example}' start with 0, which a number would drop"
            ),
            warning: Some(format!(
                "column '{name}' was kept as text because values such as '{example}' start with 0 (codes, postcodes, identifiers); declare its type int64 if they are numbers"
            )),
        };
    }
    if e.long_digits > 0 && e.long_digits + numbers == e.filled {
        return Decision::plain(
            DataType::Utf8,
            "text: digit strings too long for a number (identifiers?)",
        );
    }
    if e.iso_dates == e.filled {
        return Decision::plain(DataType::Date32, "dates (yyyy-mm-dd)");
    }
    if dates == e.filled {
        return match order() {
            Some(order) => Decision {
                data_type: DataType::Date32,
                dates: Some(order),
                words: format!("dates, read as {}", order.words()),
                warning: None,
            },
            None => Decision {
                data_type: DataType::Utf8,
                dates: None,
                words: "text: dates whose day and month cannot be told apart".into(),
                warning: Some(format!(
                    "column '{name}' looks like dates, but no sampled value tells day from month (every part is 12 or less); it was kept as text: upload again with date_format=%d/%m/%Y or date_format=%m/%d/%Y"
                )),
            },
        };
    }
    if e.timestamps == e.filled {
        let unit = match e.fraction_digits {
            0 => TimeUnit::Second,
            1..=3 => TimeUnit::Millisecond,
            4..=6 => TimeUnit::Microsecond,
            _ => TimeUnit::Nanosecond,
        };
        return Decision::plain(DataType::Timestamp(unit, None), "date and time");
    }
    let looked_like = [
        (numbers + e.leading_zeros + e.long_digits, "numbers"),
        (dates, "dates"),
    ]
    .into_iter()
    .find(|(n, _)| *n * 2 > e.filled);
    let warning = looked_like.map(|(n, what)| {
        format!(
            "column '{name}' was kept as text: {} of {} sampled values look like {what}, but others such as '{}' do not (if those mean a missing value, send them in null=…)",
            n,
            e.filled,
            e.text_example.as_deref().unwrap_or("")
        )
    });
    Decision {
        data_type: DataType::Utf8,
        dates: None,
        words: "text".into(),
        warning,
    }
}

/// The digits of an integer (an optional `-`, then only digits).
fn integer_digits(value: &str) -> Option<&str> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// A decimal or scientific number Arrow reads as a float.
fn is_decimal(value: &str) -> bool {
    let body = value.strip_prefix('-').unwrap_or(value);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (body, None),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    exponent_ok
        && digits(whole)
        && digits(fraction)
        && !(whole.is_empty() && fraction.is_empty())
        && (mantissa.contains('.') || exponent.is_some())
}

/// `yyyy-mm-dd` as a date.
fn iso_date(value: &str) -> Option<time::Date> {
    let bytes = value.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = value[..4].parse().ok()?;
    let month: u8 = value[5..7].parse().ok()?;
    let day = value[8..].parse().ok()?;
    time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
}

/// The parts of `a/b/yyyy`, `a.b.yyyy` or `a-b-yyyy` (one or two digits
/// each for `a` and `b`), if each could be a day or a month.
fn other_date_parts(value: &str) -> Option<(u32, u32, i32)> {
    let separator = value.chars().find(|c| matches!(c, '/' | '.' | '-'))?;
    let mut parts = value.split(separator);
    let (a, b, year) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !(1..=2).contains(&a.len())
        || !(1..=2).contains(&b.len())
        || year.len() != 4
    {
        return None;
    }
    let (a, b, year): (u32, u32, i32) = (a.parse().ok()?, b.parse().ok()?, year.parse().ok()?);
    ((1..=31).contains(&a) && (1..=31).contains(&b) && (a <= 12 || b <= 12)).then_some((a, b, year))
}

/// `yyyy-mm-dd hh:mm:ss` (or with `T`), and its fractional digits.
fn timestamp_fraction(value: &str) -> Option<usize> {
    if value.len() < 19 || !value.is_char_boundary(10) || !value.is_char_boundary(19) {
        return None;
    }
    iso_date(&value[..10])?;
    let separator = value.as_bytes()[10];
    let clock = &value[11..19];
    let ok = matches!(separator, b'T' | b' ')
        && clock.bytes().enumerate().all(|(i, b)| {
            if i == 2 || i == 5 {
                b == b':'
            } else {
                b.is_ascii_digit()
            }
        });
    if !ok {
        return None;
    }
    match &value[19..] {
        "" => Some(0),
        rest => {
            let fraction = rest.strip_prefix('.')?;
            (!fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()))
                .then_some(fraction.len())
        }
    }
}

/// A date from text in `order` (ISO dates are read whatever the order).
fn parse_date(value: &str, order: DateOrder) -> Option<time::Date> {
    if let Some(date) = iso_date(value) {
        return Some(date);
    }
    let (a, b, year) = other_date_parts(value)?;
    let (day, month) = match order {
        DateOrder::DayFirst => (a, b),
        DateOrder::MonthFirst => (b, a),
    };
    time::Date::from_calendar_date(
        year,
        time::Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()
}

/// Text dates in `order` as a date column; the error names the first value
/// that is not a date and its row within the batch.
pub fn to_dates(column: &ArrayRef, order: DateOrder) -> Result<ArrayRef, (usize, String)> {
    let text = column
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or((0, String::new()))?;
    let epoch =
        time::Date::from_calendar_date(1970, time::Month::January, 1).unwrap_or(time::Date::MIN);
    let mut days = Vec::with_capacity(text.len());
    for (row, value) in text.iter().enumerate() {
        let day = match value.map(str::trim) {
            None | Some("") => None,
            Some(value) => {
                let date = parse_date(value, order).ok_or_else(|| (row, cut(value).to_string()))?;
                Some((date - epoch).whole_days() as i32)
            }
        };
        days.push(day);
    }
    Ok(std::sync::Arc::new(Date32Array::from(days)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn decided(values: &[&str]) -> Decision {
        let mut evidence = Evidence::default();
        for v in values {
            evidence.see(v);
        }
        decide("c", &evidence, None, None)
    }

    #[test]
    fn leading_zeros_stay_text_and_say_why() {
        let d = decided(&["01012", "75001", "13008"]);
        assert_eq!(d.data_type, DataType::Utf8);
        assert!(d.warning.unwrap().contains("'01012'"));
        assert_eq!(decided(&["0", "12", "-3"]).data_type, DataType::Int64);
        assert_eq!(decided(&["0.5", "12", "1e3"]).data_type, DataType::Float64);
        assert_eq!(decided(&["12345678901234567890"]).data_type, DataType::Utf8);
    }

    #[test]
    fn dates_are_read_in_the_order_the_sample_shows() {
        let d = decided(&["11/03/2024", "25/12/2023"]);
        assert_eq!(
            (d.data_type, d.dates),
            (DataType::Date32, Some(DateOrder::DayFirst))
        );
        let d = decided(&["03/11/2024", "12/25/2023"]);
        assert_eq!(d.dates, Some(DateOrder::MonthFirst));
        let d = decided(&["1.3.2024", "31.12.2023"]);
        assert_eq!(d.dates, Some(DateOrder::DayFirst));
        assert_eq!(decided(&["2024-03-11"]).data_type, DataType::Date32);
        let ambiguous = decided(&["11/03/2024", "01/02/2024"]);
        assert_eq!(ambiguous.data_type, DataType::Utf8);
        assert!(ambiguous.warning.unwrap().contains("date_format"));
        let mut evidence = Evidence::default();
        evidence.see("11/03/2024");
        let told = decide("c", &evidence, None, Some(DateOrder::MonthFirst));
        assert_eq!(told.dates, Some(DateOrder::MonthFirst));
    }

    #[test]
    fn other_types_and_mixed_columns() {
        assert_eq!(decided(&["true", "FALSE"]).data_type, DataType::Boolean);
        assert_eq!(
            decided(&["2024-03-11 10:00:00", "2024-03-11T10:00:00.123"]).data_type,
            DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        let mixed = decided(&["12", "14", "n/a"]);
        assert_eq!(mixed.data_type, DataType::Utf8);
        assert!(mixed.warning.unwrap().contains("'n/a'"));
        assert_eq!(decided(&["north", "south"]).warning, None);
        assert_eq!(decided(&[]).data_type, DataType::Utf8);
    }

    #[test]
    fn text_dates_convert_and_bad_ones_are_named() {
        let column: ArrayRef = Arc::new(StringArray::from(vec![
            Some("11/03/2024"),
            None,
            Some("2024-01-02"),
        ]));
        let dates = to_dates(&column, DateOrder::DayFirst).unwrap();
        let dates = dates.as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!(dates.value_as_date(0).unwrap().to_string(), "2024-03-11");
        assert!(dates.is_null(1));
        let bad: ArrayRef = Arc::new(StringArray::from(vec!["01/01/2024", "31/02/2024"]));
        assert_eq!(
            to_dates(&bad, DateOrder::DayFirst).unwrap_err(),
            (1, "31/02/2024".into())
        );
        assert_eq!(DateOrder::from_format("%d.%m.%Y"), Ok(DateOrder::DayFirst));
        assert!(DateOrder::from_format("%Y").is_err());
    }
}
