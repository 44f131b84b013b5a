//! GA4GH Passports: a token's `ga4gh_passport_v1` claim carries visa JWTs.
//! A `ControlledAccessGrants` visa signed by an issuer trusted in config
//! (`auth.visa_issuers`, each with its own JWKS), unexpired, is kept as a
//! [`Visa`]; `policy` turns it into a grant. Everything else is ignored: a bad
//! visa never invalidates the token that carries it, it grants nothing and is
//! logged.

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{AuthError, KeySet, MAX_TOKEN_BYTES, check_iat, check_raw_header, decode_with};
use crate::config::VisaIssuer;

/// Most visas read from one passport.
const MAX_VISAS: usize = 64;

/// A verified `ControlledAccessGrants` visa.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Visa {
    pub issuer: String,
    /// What the visa grants access to: a dataset id or URL.
    pub value: String,
    pub expires: OffsetDateTime,
}

impl Visa {
    /// Whether the visa's value names dataset `id`: the id itself, or a URL
    /// whose path ends in `/datasets/<id>`.
    pub fn names_dataset(&self, id: &str) -> bool {
        let value = self.value.trim_end_matches('/');
        value == id
            || value
                .strip_suffix(id)
                .is_some_and(|rest| rest.ends_with("/datasets/"))
    }
}

#[derive(Deserialize)]
struct VisaClaims {
    iss: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    ga4gh_visa_v1: VisaObject,
}

#[derive(Deserialize)]
struct VisaObject {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

/// The visa issuers this server trusts.
#[derive(Default)]
pub struct TrustedIssuers {
    issuers: Vec<(String, KeySet)>,
}

impl TrustedIssuers {
    pub fn load(config: &[VisaIssuer]) -> Result<Self, AuthError> {
        let issuers = config
            .iter()
            .map(|c| Ok((c.issuer.clone(), KeySet::from_jwks_file(&c.jwks_file)?)))
            .collect::<Result<_, AuthError>>()?;
        Ok(Self { issuers })
    }

    /// The passport's valid `ControlledAccessGrants` visas.
    pub fn verify_all(&self, visas: &[String], leeway: u64) -> Vec<Visa> {
        if self.issuers.is_empty() {
            return Vec::new();
        }
        visas
            .iter()
            .take(MAX_VISAS)
            .filter_map(|jwt| match self.verify(jwt, leeway) {
                Ok(Some(visa)) => Some(visa),
                Ok(None) => None,
                Err(e) => {
                    tracing::info!(reason = e.reason(), error = %e, "visa ignored");
                    None
                }
            })
            .collect()
    }

    /// `Ok(None)` for a valid visa of another type.
    fn verify(&self, jwt: &str, leeway: u64) -> Result<Option<Visa>, AuthError> {
        if jwt.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        check_raw_header(jwt)?;
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| AuthError::Malformed)?;
        // The issuer is read unverified only to choose whose keys to try;
        // the signature check below then pins `iss` to that issuer.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(jwt)
            .map_err(|_| AuthError::Malformed)?;
        let iss = unverified.claims["iss"].as_str().unwrap_or_default();
        let Some((issuer, keys)) = self.issuers.iter().find(|(name, _)| name == iss) else {
            return Err(AuthError::UnknownKey);
        };
        let candidates = keys.matching(header.kid.as_deref(), header.alg);
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = leeway;
        let claims: VisaClaims = decode_with(jwt, &candidates, &validation)?;
        check_iat(claims.iat, leeway)?;
        if claims.ga4gh_visa_v1.kind != "ControlledAccessGrants" {
            return Ok(None);
        }
        let expires =
            OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| AuthError::Malformed)?;
        Ok(Some(Visa {
            issuer: claims.iss,
            value: claims.ga4gh_visa_v1.value,
            expires,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visa(value: &str) -> Visa {
        Visa {
            issuer: "i".into(),
            value: value.into(),
            expires: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn visas_name_datasets_by_id_or_url() {
        assert!(visa("hospital-admissions").names_dataset("hospital-admissions"));
        assert!(
            visa("https://sluice.example/v1/datasets/hospital-admissions")
                .names_dataset("hospital-admissions")
        );
        assert!(
            visa("https://sluice.example/datasets/hospital-admissions/")
                .names_dataset("hospital-admissions")
        );
        assert!(
            !visa("https://sluice.example/datasets/xhospital-admissions")
                .names_dataset("hospital-admissions")
        );
        assert!(!visa("hospital-admissions-2").names_dataset("hospital-admissions"));
    }
}
