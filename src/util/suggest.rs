//! Errors that teach: an unknown column named together with the columns
//! that would have worked in that place, and the nearest of them. The list
//! is always built from what the caller may use there (visible, groupable,
//! measurable), so it names nothing hidden.

use std::fmt;

/// How alike (Jaro-Winkler, 0..1) a known name must be to be suggested.
const SIMILAR: f64 = 0.8;

/// A column name that is not usable where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownColumn {
    pub name: String,
    /// What could have been written instead, sorted.
    pub usable: Vec<String>,
}

impl UnknownColumn {
    pub fn new<S: AsRef<str>>(name: &str, usable: impl IntoIterator<Item = S>) -> Self {
        let mut usable: Vec<String> = usable.into_iter().map(|s| s.as_ref().to_owned()).collect();
        usable.sort();
        usable.dedup();
        Self {
            name: name.to_owned(),
            usable,
        }
    }

    /// The usable name closest to the one written, if any is close.
    pub fn nearest(&self) -> Option<&str> {
        let written = self.name.to_lowercase();
        self.usable
            .iter()
            .map(|u| (strsim::jaro_winkler(&written, &u.to_lowercase()), u))
            .filter(|(score, _)| *score >= SIMILAR)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, u)| u.as_str())
    }

    /// The hint after the error: the nearest name, and the usable ones.
    pub fn hint(&self) -> String {
        let mut out = String::new();
        if let Some(near) = self.nearest() {
            out.push_str(&format!("did you mean '{near}'? "));
        }
        if self.usable.is_empty() {
            out.push_str("no column can be used here");
        } else {
            out.push_str(&format!("usable here: {}", self.usable.join(", ")));
        }
        out
    }
}

impl fmt::Display for UnknownColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown column '{}'", crate::util::echo::cut(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_nearest_name_and_nonsense_gets_none() {
        let usable = ["age_band", "region", "sex", "length_of_stay"];
        let typo = UnknownColumn::new("age_bnad", usable);
        assert_eq!(typo.nearest(), Some("age_band"));
        assert_eq!(
            typo.hint(),
            "did you mean 'age_band'? usable here: age_band, length_of_stay, region, sex"
        );
        assert_eq!(
            UnknownColumn::new("Region", usable).nearest(),
            Some("region")
        );
        assert_eq!(UnknownColumn::new("zzz", usable).nearest(), None);
        assert_eq!(
            UnknownColumn::new("x", Vec::<String>::new()).hint(),
            "no column can be used here"
        );
    }
}
