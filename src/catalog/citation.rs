//! How to cite one version of a dataset: a Citation File Format (CFF 1.2.0)
//! document and a BibTeX entry, both from the manifest and the version
//! alone (the catalogue's public metadata, never data). Every value is
//! escaped for its format, so a title with quotes, braces or a newline
//! cannot break out of its field.

use super::{Manifest, Version};

/// What a citation names: the dataset, the version, and where to find it.
pub struct Cited<'a> {
    pub manifest: &'a Manifest,
    pub version: &'a Version,
    /// The dataset's address (`https://host/v1/datasets/<id>`).
    pub url: &'a str,
}

impl Cited<'_> {
    fn date(&self) -> String {
        self.version.published.date().to_string()
    }

    /// A `CITATION.cff` document (YAML). Strings are written as JSON
    /// strings, which YAML reads as double-quoted scalars with the same
    /// escapes.
    pub fn cff(&self) -> String {
        let m = self.manifest;
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let mut out = String::new();
        out.push_str("cff-version: 1.2.0\n");
        out.push_str("message: \"If you use this dataset, please cite it as below.\"\n");
        out.push_str("type: dataset\n");
        out.push_str(&format!("title: {}\n", q(&m.title)));
        out.push_str("authors:\n");
        out.push_str(&format!("  - name: {}\n", q(&m.publisher)));
        out.push_str(&format!("version: \"{}\"\n", self.version.number));
        out.push_str(&format!("date-released: \"{}\"\n", self.date()));
        out.push_str(&format!("license: {}\n", q(&m.license)));
        out.push_str(&format!("url: {}\n", q(self.url)));
        if !m.description.is_empty() {
            out.push_str(&format!("abstract: {}\n", q(&m.description)));
        }
        if !m.keywords.is_empty() {
            out.push_str("keywords:\n");
            for k in &m.keywords {
                out.push_str(&format!("  - {}\n", q(k)));
            }
        }
        out.push_str("identifiers:\n");
        out.push_str("  - type: other\n");
        out.push_str(&format!(
            "    value: {}\n",
            q(&format!("sluice:{}@{}", m.id, self.version.number))
        ));
        out.push_str(&format!(
            "    description: {}\n",
            q("The dataset's id and version in this Sluice catalogue")
        ));
        out
    }

    /// A BibTeX `@misc` entry keyed `<id>_v<version>`.
    pub fn bibtex(&self) -> String {
        let m = self.manifest;
        let year = self.version.published.year();
        // The key is a slug with `-` and digits: BibTeX takes it as is.
        let key = format!("{}_v{}", m.id, self.version.number);
        let fields = [
            ("title", bib(&m.title)),
            // Double braces: an organisation, not a person's name to split.
            ("author", format!("{{{}}}", bib(&m.publisher))),
            ("publisher", bib(&m.publisher)),
            ("year", year.to_string()),
            ("version", self.version.number.to_string()),
            ("date", self.date()),
            ("url", bib(self.url)),
            ("note", format!("Licence: {}", bib(&m.license))),
            ("howpublished", "Sluice dataset".to_owned()),
        ];
        let mut out = format!("@misc{{{key},\n");
        for (name, value) in fields {
            out.push_str(&format!("  {name} = {{{value}}},\n"));
        }
        out.push_str("}\n");
        out
    }
}

/// `text` safe inside a BibTeX `{…}` field: TeX's special characters are
/// escaped and line breaks become spaces, so braces always balance.
fn bib(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '{' | '}' | '%' | '&' | '$' | '#' | '_' => {
                out.push('\\');
                out.push(c);
            }
            '^' => out.push_str("\\textasciicircum{}"),
            '~' => out.push_str("\\textasciitilde{}"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::bib;

    #[test]
    fn bibtex_fields_cannot_break_out_of_their_braces() {
        let hostile = "A} , author = {Mallory\n@misc{x";
        let escaped = bib(hostile);
        assert_eq!(escaped, "A\\} , author = \\{Mallory @misc\\{x");
        let depth = escaped
            .replace("\\{", "")
            .replace("\\}", "")
            .chars()
            .filter(|c| matches!(c, '{' | '}'))
            .count();
        assert_eq!(depth, 0);
        assert_eq!(
            bib("50% & $5 #1 a_b ~^\\"),
            "50\\% \\& \\$5 \\#1 a\\_b \\textasciitilde{}\\textasciicircum{}\\textbackslash{}"
        );
    }
}
