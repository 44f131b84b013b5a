//! What a new policy file changes against the one in force, entry by
//! entry (`[[grant]]` by id, `[[visa_grant]]` by dataset and value,
//! `[disclosure]`), as the audit trail records it: the old and new text of
//! each entry added, changed or removed. Added and changed entries are
//! marked as widening: telling a narrowing edit from a widening one would
//! need a judgement on row filters, and the trail should rather say too
//! much than too little.

use crate::audit::FieldChange;

/// Each entry of `new` that differs from `old`, in a stable order.
pub(super) fn changes(old: &str, new: &str) -> Vec<FieldChange> {
    let (old, new) = (entries(old), entries(new));
    let mut changes = Vec::new();
    for (place, text) in &new {
        let before = old.get(place);
        if before != Some(text) {
            changes.push(FieldChange {
                field: place.clone(),
                old: before.cloned(),
                new: Some(text.clone()),
                widens: true,
            });
        }
    }
    for (place, text) in &old {
        if !new.contains_key(place) {
            changes.push(FieldChange {
                field: place.clone(),
                old: Some(text.clone()),
                new: None,
                widens: false,
            });
        }
    }
    changes
}

/// The file's entries by place, each as one line of inline TOML. A file
/// that does not parse (never one in force) has none.
fn entries(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(table) = text.parse::<toml::Table>() else {
        return out;
    };
    for (key, value) in table {
        match value {
            toml::Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let name = |k: &str| item.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                    let place = match key.as_str() {
                        "grant" => {
                            format!("grant '{}'", name("id").unwrap_or_else(|| i.to_string()))
                        }
                        "visa_grant" => format!(
                            "visa_grant '{}' '{}'",
                            name("dataset").unwrap_or_default(),
                            name("value").unwrap_or_default()
                        ),
                        other => format!("{other}[{i}]"),
                    };
                    out.insert(place, item.to_string());
                }
            }
            other => {
                out.insert(format!("[{key}]"), other.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORTH: &str = "[[grant]]\nid = \"north\"\ngroups = [\"nhs-north\"]\ndataset = \"d\"\nrow_filter = \"region = 'north'\"\n";
    const AGG: &str = "[[grant]]\nid = \"agg\"\ndataset = \"d\"\nmode = \"aggregate\"\n";

    #[test]
    fn a_dropped_row_filter_is_a_changed_grant_with_both_texts() {
        let widened = NORTH.replace("row_filter = \"region = 'north'\"\n", "");
        let changes = changes(&format!("{NORTH}{AGG}"), &format!("{widened}{AGG}"));
        assert_eq!(changes.len(), 1, "{changes:?}");
        let change = &changes[0];
        assert_eq!(change.field, "grant 'north'");
        assert!(change.old.as_deref().unwrap().contains("region = 'north'"));
        assert!(!change.new.as_deref().unwrap().contains("row_filter"));
        assert!(change.widens);
    }

    #[test]
    fn added_and_removed_grants_are_told_apart_and_comments_do_not_count() {
        let changes = changes(NORTH, &format!("# a comment\n{AGG}"));
        let fields: Vec<(&str, bool)> = changes
            .iter()
            .map(|c| (c.field.as_str(), c.widens))
            .collect();
        assert_eq!(fields, [("grant 'agg'", true), ("grant 'north'", false)]);
        assert!(super::changes(NORTH, &format!("# only a comment\n{NORTH}")).is_empty());
    }
}
