//! The seal that says a policy file is whole: its last line,
//! `# sluice-seal sha256:<hex>`, carries the SHA-256 of every byte before
//! it. The server puts a file in force only when the seal matches, so a
//! file caught while being written never takes effect, whatever its shape:
//! a cut before `row_filter = …` or `mode = "dp"` is still valid TOML and
//! would widen access, but it has no seal (the seal is written last) or a
//! seal that no longer matches (an in-place rewrite that kept an old tail).
//! `sluice policy apply` and approvals check a file and seal it; a file
//! edited by hand is applied the same way. The line is a TOML comment, so
//! a sealed file is still a plain policy file to every other reader.

/// What starts the seal line.
const PREFIX: &str = "# sluice-seal sha256:";

/// Why a file's seal does not vouch for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "the file has no seal on its last line: it is being written, or was edited by hand; check and put it in force with `sluice policy apply FILE`"
    )]
    Missing,
    #[error(
        "the file's seal does not match its content: it changed after it was sealed (being written, or edited by hand); check and put it in force with `sluice policy apply FILE`"
    )]
    Mismatch,
    #[error(
        "the file holds a seal line before its last line (a sealed file pasted into another?); put it in force with `sluice policy apply FILE`, which keeps one seal, at the end"
    )]
    Inner,
}

/// `text` without a seal line it may end with (sealed or not, matching or
/// not): what an admin wrote.
pub fn body(text: &str) -> &str {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    match trimmed.rfind('\n') {
        Some(i) if trimmed[i + 1..].starts_with(PREFIX) => &text[..i + 1],
        None if trimmed.starts_with(PREFIX) => "",
        _ => text,
    }
}

/// `text` ending in a seal that matches it. Every seal line it held goes
/// first, wherever it was (a draft copied from a sealed file, blank lines
/// after a seal): a seal line left inside would make a cut just after it
/// look whole.
pub fn seal(text: &str) -> String {
    let mut body: String = text
        .split_inclusive('\n')
        .filter(|line| !line.starts_with(PREFIX))
        .collect();
    while body.ends_with("\n\n") {
        body.pop();
    }
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    let digest = crate::audit::sha256_hex(body.as_bytes());
    format!("{body}{PREFIX}{digest}\n")
}

/// The body of a sealed `text`, if its seal matches.
pub fn unseal(text: &str) -> Result<&str, SealError> {
    let body = body(text);
    let line = text[body.len()..].trim_end_matches('\n');
    let stated = line.strip_prefix(PREFIX).ok_or(SealError::Missing)?;
    if stated != crate::audit::sha256_hex(body.as_bytes()) {
        return Err(SealError::Mismatch);
    }
    // A seal line inside the body would vouch for a cut just after it.
    if body.split('\n').any(|l| l.starts_with(PREFIX)) {
        return Err(SealError::Inner);
    }
    Ok(body)
}

/// Whether `text` is sealed and its seal matches.
pub fn is_sealed(text: &str) -> bool {
    unseal(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str =
        "[[grant]]\nid = \"north\"\nrow_filter = \"region = 'north'\"\nmode = \"aggregate\"\n";

    #[test]
    fn a_sealed_file_unseals_to_what_was_written() {
        let sealed = seal(POLICY);
        assert_eq!(unseal(&sealed), Ok(POLICY));
        // Sealing again replaces the seal rather than stacking another.
        assert_eq!(seal(&sealed), sealed);
        assert_eq!(unseal(&seal("")), Ok(""));
        assert_eq!(unseal(&seal("x = 1")), Ok("x = 1\n"));
    }

    #[test]
    fn every_cut_of_a_sealed_file_is_refused() {
        let sealed = seal(POLICY);
        for cut in 0..sealed.len() - 1 {
            assert!(unseal(&sealed[..cut]).is_err(), "cut at {cut} accepted");
        }
        // Only a trailing newline may go.
        assert!(unseal(sealed.trim_end()).is_ok());
    }

    #[test]
    fn a_seal_inside_a_file_is_dropped_when_sealing_and_refused_when_reading() {
        let first = seal(POLICY);
        // A draft copied from a sealed file, a narrowing added after its
        // seal, and blank lines: one seal, at the end.
        let draft = format!("{first}row_filter = \"x = 1\"\n\n\n");
        let sealed = seal(&draft);
        assert_eq!(sealed.matches(PREFIX).count(), 1, "{sealed}");
        assert!(
            unseal(&sealed)
                .unwrap()
                .ends_with("row_filter = \"x = 1\"\n")
        );
        // A cut just after an inner seal line (a file sealed wrongly by an
        // older tool) is refused all the same.
        let inner = format!("{first}row_filter = \"x = 1\"\n");
        let wrongly = format!(
            "{inner}{PREFIX}{}\n",
            crate::audit::sha256_hex(inner.as_bytes())
        );
        assert_eq!(unseal(&wrongly), Err(SealError::Inner));
        assert!(
            unseal(&wrongly[..first.len()]).is_ok(),
            "the cut is the old whole file"
        );
    }

    #[test]
    fn an_edit_after_sealing_is_refused() {
        let sealed = seal(POLICY);
        let widened = sealed.replace("row_filter = \"region = 'north'\"\n", "");
        assert_eq!(unseal(&widened), Err(SealError::Mismatch));
        // A new file written over an old, longer one, keeping its tail.
        let new = seal("[[grant]]\nid = \"x\"\n");
        let mixed = format!("{}{}", &new[..new.len() - 10], &sealed[new.len() - 10..]);
        assert!(unseal(&mixed).is_err());
        assert_eq!(unseal(POLICY), Err(SealError::Missing));
    }
}
