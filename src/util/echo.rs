//! Bounding what an error message repeats back. A caller's value (a column
//! name in a file header, a manifest field, a filter token) can be
//! arbitrarily long; an error that quotes it whole lets one request make the
//! server hold and send that value again. Every value quoted in an error
//! goes through [`cut`], and text from other libraries (serde, Arrow,
//! Parquet), which quotes values its own way, through [`cut_quoted`]. And
//! what text from outside may not hold at all ([`hidden_char`]).

/// Bytes of a value an error message may repeat.
pub const ECHO_BYTES: usize = 64;

/// Longest error detail sent or handed between processes: a last bound
/// for messages assembled from several values.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// Marks a value that was cut.
const MORE: &str = "…";

/// `value` cut to [`ECHO_BYTES`] (on a character boundary), marked with an
/// ellipsis when something was dropped.
pub fn cut(value: &str) -> String {
    cut_to(value, ECHO_BYTES)
}

/// `value` cut to at most `max` bytes of its own, plus the marker.
pub fn cut_to(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &value[..end])
}

/// A message with every quoted segment (between a pair of `'`, `` ` `` or
/// `"`) cut to [`ECHO_BYTES`], and the whole cut to [`MAX_DETAIL_BYTES`].
/// For messages of other libraries, which quote the offending value.
pub fn cut_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_DETAIL_BYTES + 8));
    let mut rest = message;
    while let Some(open) = rest.find(['\'', '`', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('\'');
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        match after.find(quote) {
            Some(close) => {
                out.push_str(&cut(&after[..close]));
                out.push(quote);
                rest = &after[close + 1..];
            }
            None => {
                // An unmatched quote: the rest may be one long value.
                out.push_str(&cut(after));
                rest = "";
            }
        }
        if out.len() > MAX_DETAIL_BYTES {
            break;
        }
    }
    out.push_str(rest);
    cut_to(&out, MAX_DETAIL_BYTES)
}

/// The first character of `text` that would not show as itself: a control
/// character (line breaks and tabs allowed in `multiline` text) or one of
/// the invisible formatting characters that reorder or hide what is shown
/// (bidirectional overrides and isolates, zero widths, line separators, the
/// byte-order mark). Text from stewards and researchers that holds one is
/// refused at the door: a right-to-left override in an organisation's name
/// reverses a line on an admin's page, a newline in a subject forges a
/// line in the policy file.
pub fn hidden_char(text: &str, multiline: bool) -> Option<char> {
    text.chars().find(|&c| {
        let allowed_break = multiline && matches!(c, '\n' | '\t' | '\r');
        is_hidden(c) && !allowed_break
    })
}

/// Whether `c` would not show as itself: a control character or an
/// invisible formatting one (see [`hidden_char`]).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// `Err` naming `field` and the character (as `U+XXXX`) if `text` holds a
/// [`hidden_char`].
pub fn refuse_hidden(field: &str, text: &str, multiline: bool) -> Result<(), String> {
    match hidden_char(text, multiline) {
        Some(c) => Err(format!(
            "{field} holds the invisible or control character U+{:04X}; write it without",
            c as u32
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_pass_and_long_ones_are_cut_on_a_character_boundary() {
        assert_eq!(cut("age"), "age");
        let long = "é".repeat(100);
        let got = cut(&long);
        assert!(got.ends_with(MORE));
        assert!(got.len() <= ECHO_BYTES + MORE.len(), "{}", got.len());
        assert!(got.starts_with("éé"));
    }

    #[test]
    fn quoted_values_in_library_messages_are_cut() {
        let name = "x".repeat(10_000);
        let got = cut_quoted(&format!("unknown field `{name}`, expected one of `a`, `b`"));
        assert_eq!(
            got,
            format!(
                "unknown field `{}…`, expected one of `a`, `b`",
                "x".repeat(64)
            )
        );
        let got = cut_quoted(&format!("bad value '{name}"));
        assert_eq!(got, format!("bad value '{}…", "x".repeat(64)));
        let got = cut_quoted(&"y".repeat(5000));
        assert!(got.len() <= MAX_DETAIL_BYTES + MORE.len());
        assert_eq!(cut_quoted("column 'a' is missing"), "column 'a' is missing");
    }
}
