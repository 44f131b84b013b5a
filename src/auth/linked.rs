//! `LinkedIdentities` visas (GA4GH Passport v1.2): which other (`sub`,
//! `iss`) identities are the token holder's.
//!
//! A `LinkedIdentities` visa's value lists identities as `sub,iss` pairs
//! separated by `;`, each part URL-encoded (so a `,` or `;` inside a subject
//! or issuer is `%2C` or `%3B`). Such a visa counts only when it is the
//! holder's own (its `sub` is the token's `sub`) and was verified like any
//! visa (trusted issuer, signature, expiry, no conditions). Links are
//! followed one step: an identity linked by a visa about another linked
//! identity is not the holder's, since nobody trusted asserted that.

use std::collections::HashSet;

use super::passport::Visa;

/// An identity as a visa issuer knows it: (`sub`, `iss`).
pub(super) type Identity = (String, String);

/// The identities the holder's own `LinkedIdentities` visas tie to `holder`.
/// A visa whose value does not parse links nothing.
pub(super) fn identities<'a>(
    holder: &str,
    visas: impl Iterator<Item = &'a Visa>,
) -> HashSet<Identity> {
    visas
        .filter(|visa| visa.subject == holder)
        .filter_map(|visa| {
            let parsed = parse(&visa.value);
            if parsed.is_none() {
                tracing::info!(issuer = %visa.issuer, "LinkedIdentities visa ignored: malformed value");
            }
            parsed
        })
        .flatten()
        .collect()
}

/// `sub,iss;sub2,iss2` with URL-encoded parts; `None` if any pair is
/// malformed (the whole visa is then ignored rather than half-read).
pub(super) fn parse(value: &str) -> Option<Vec<Identity>> {
    value
        .split(';')
        .map(|pair| {
            let (sub, iss) = pair.split_once(',')?;
            let (sub, iss) = (percent_decode(sub)?, percent_decode(iss)?);
            (!sub.is_empty() && !iss.is_empty()).then_some((sub, iss))
        })
        .collect()
}

/// Decodes `%XX` escapes; `None` for a broken escape, a stray `,`/`;` (they
/// must arrive encoded) or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b',' | b';' => return None,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_split_and_decoded() {
        assert_eq!(
            parse("c123,https%3A%2F%2Fvisas.example;a%2Cb,https://other.example").unwrap(),
            vec![
                ("c123".to_string(), "https://visas.example".to_string()),
                ("a,b".to_string(), "https://other.example".to_string()),
            ]
        );
    }

    #[test]
    fn malformed_values_link_nothing() {
        for bad in [
            "",
            "only-a-sub",
            "s,",
            ",i",
            "s,i;",
            "s,i,j",
            "s%2,i",
            "s%ZZ,i",
            "%FF,i",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
