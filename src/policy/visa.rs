//! What the caller's verified visas open: at most one grant per dataset,
//! shaped by the policy's `[[visa_grant]]` for it.
//!
//! A visa names a dataset only by the exact URL the `visa_grant` gives as
//! `value`: both are parsed as URLs (so scheme and host case, default
//! ports and `.`/`..` path segments do not matter) and must then be equal.
//! A visa value with a query or fragment never matches, and nothing is
//! matched by suffix, so `https://evil.example/datasets/x`,
//! `…/?x=/datasets/x`, `…#/datasets/x` and `urn:x:/datasets/x` open nothing.
//!
//! Several matching visas make one grant, `visa:<dataset>` (they would all
//! open the same shape): the one that expires last is the evidence recorded
//! in the audit trail.

use url::Url;

use super::{Grant, Policy};
use crate::auth::{Principal, Visa};
use crate::catalog::Manifest;

/// A `visa_grant` value as stored: an absolute `http(s)` URL with a host,
/// no user info, query or fragment, in its normal form.
pub(super) fn dataset_url(text: &str) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("value '{text}' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(format!(
            "value '{text}' must be an https:// URL with a host"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("value '{text}' must not carry user information"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("value '{text}' must not have a query or fragment"));
    }
    Ok(url.into())
}

/// Whether a visa's value is exactly the configured dataset URL: equal
/// after normalising only the scheme's and host's case and a default port.
/// Forms a lenient URL parser would quietly repair (backslashes, white
/// space, missing slashes, dot segments, zero-padded ports) are refused.
fn names(visa_value: &str, configured: &str) -> bool {
    let lower = visa_value.to_ascii_lowercase();
    let plain = (lower.starts_with("https://") || lower.starts_with("http://"))
        && !visa_value
            .chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
        && !lower.contains("%2e")
        && !lower.contains("/.")
        && !lower.contains(":0");
    plain
        && Url::parse(visa_value).is_ok_and(|url| {
            url.query().is_none() && url.fragment().is_none() && url.as_str() == configured
        })
}

/// The grant the caller's visas make for this dataset, if any.
pub(super) fn visa_grant(
    policy: &Policy,
    principal: &Principal,
    manifest: &Manifest,
) -> Option<Grant> {
    let shape = policy
        .visa_grants
        .iter()
        .find(|v| v.dataset == manifest.id)?;
    let evidence: &Visa = principal
        .visas
        .iter()
        .filter(|visa| names(&visa.value, &shape.value))
        // The latest expiry; the first such visa on a tie.
        .reduce(|best, visa| {
            if visa.expires > best.expires {
                visa
            } else {
                best
            }
        })?;
    let id = format!("visa:{}", manifest.id);
    Some(Grant {
        id: id.clone(),
        subjects: vec![principal.sub.clone()],
        groups: Vec::new(),
        organisations: Vec::new(),
        dataset: manifest.id.clone(),
        purpose: shape.purpose.clone(),
        mode: shape.mode,
        // One pseudonym scope for visa access to this dataset, whichever
        // visa happens to be the evidence today.
        project: Some(id),
        columns: shape.columns.clone(),
        unmask: Vec::new(),
        row_filter: None,
        max_rows: None,
        expires: Some(evidence.expires.date()),
        visa: Some(evidence.clone()),
        epsilon: None,
        epsilon_per_query: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://sluice.example/datasets/hospital-admissions";

    #[test]
    fn configured_urls_are_normalised_and_strict() {
        assert_eq!(
            dataset_url("HTTPS://Sluice.Example:443/v1/../datasets/hospital-admissions").unwrap(),
            URL
        );
        for bad in [
            "hospital-admissions",
            "urn:x:/datasets/hospital-admissions",
            "https://sluice.example/datasets/hospital-admissions?x=1",
            "https://sluice.example/datasets/hospital-admissions#f",
            "https://u@sluice.example/datasets/hospital-admissions",
            "ftp://sluice.example/datasets/hospital-admissions",
        ] {
            assert!(dataset_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_visa_names_a_dataset_only_by_its_exact_url() {
        assert!(names(URL, URL));
        assert!(names(
            "https://SLUICE.example:443/datasets/hospital-admissions",
            URL
        ));
        for other in [
            // Dot segments are what a lenient parser repairs: refused.
            "https://sluice.example/datasets/./hospital-admissions",
            "hospital-admissions",
            "https://evil.example/datasets/hospital-admissions",
            "https://sluice.example/datasets/hospital-admissions/",
            "https://sluice.example/x/datasets/hospital-admissions",
            "https://sluice.example/?x=/datasets/hospital-admissions",
            "https://sluice.example/datasets/hospital-admissions?",
            "https://sluice.example/#/datasets/hospital-admissions",
            "https://sluice.example/datasets/hospital-admissions#",
            "urn:x:/datasets/hospital-admissions",
            "http://sluice.example/datasets/hospital-admissions",
            "https://sluice.example:8443/datasets/hospital-admissions",
            "https://sluice.example.evil.example/datasets/hospital-admissions",
        ] {
            assert!(!names(other, URL), "{other}");
        }
    }
}
