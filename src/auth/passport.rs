//! GA4GH Passports (v1.2): a token's `ga4gh_passport_v1` claim carries visa
//! JWTs. A visa counts only if all of these hold:
//!
//! - it is signed by an issuer trusted in config (`auth.visa_issuers`, each
//!   with its own JWKS), unexpired, and carries `sub`, `asserted` and a value;
//! - it has no `conditions`: Sluice does not evaluate visa conditions, and a
//!   condition nobody checked is a condition that does not hold, so every
//!   conditional visa is refused;
//! - it belongs to the token's holder: its `sub` is the token's `sub`, or a
//!   `LinkedIdentities` visa of the holder links its `sub` and issuer to them
//!   (see [`super::linked`]), or `auth.passport_broker_asserts_identity`
//!   says the token's issuer vouches for every visa it packs.
//!
//! Only `ControlledAccessGrants` visas that pass are kept, as [`Visa`]s;
//! `policy` decides what their value opens. Everything else is ignored: a
//! bad visa never invalidates the token that carries it, it grants nothing
//! and is logged.

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::linked;
use super::{AuthError, KeySet, MAX_TOKEN_BYTES, check_iat, check_raw_header, decode_with};
use crate::config::VisaIssuer;

/// Most visas read from one passport.
const MAX_VISAS: usize = 64;

/// A verified visa of the token's holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Visa {
    /// The visa's `iss`: a trusted visa issuer.
    pub issuer: String,
    /// The visa's `sub`, as its issuer knows the holder.
    pub subject: String,
    /// What the visa grants access to (for `ControlledAccessGrants`), as
    /// written in the visa.
    pub value: String,
    /// When the issuer asserted it (seconds since the epoch), as written.
    pub asserted: i64,
    pub expires: OffsetDateTime,
}

/// The visa types Sluice reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ControlledAccessGrants,
    LinkedIdentities,
}

#[derive(Deserialize)]
struct VisaClaims {
    iss: String,
    sub: String,
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
    /// Required by the specification.
    asserted: i64,
    /// Any value but absent (or null) makes the visa conditional.
    #[serde(default)]
    conditions: Option<serde_json::Value>,
}

/// Why a visa was not used (for the log only).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the visa has conditions, which Sluice does not evaluate")]
    Conditional,
    #[error("the visa's subject is not the token's, nor linked to it")]
    OtherSubject,
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::Auth(e) => e.reason(),
            Refused::Conditional => "conditional",
            Refused::OtherSubject => "other-subject",
        }
    }
}

/// The visa issuers this server trusts.
#[derive(Default)]
pub(super) struct TrustedIssuers {
    issuers: Vec<(String, KeySet)>,
    broker_asserts_identity: bool,
}

impl TrustedIssuers {
    pub(super) fn load(
        config: &[VisaIssuer],
        broker_asserts_identity: bool,
    ) -> Result<Self, AuthError> {
        let issuers = config
            .iter()
            .map(|c| Ok((c.issuer.clone(), KeySet::from_jwks_file(&c.jwks_file)?)))
            .collect::<Result<_, AuthError>>()?;
        Ok(Self {
            issuers,
            broker_asserts_identity,
        })
    }

    /// The passport's valid, unconditional `ControlledAccessGrants` visas
    /// that belong to `holder` (the token's `sub`).
    pub(super) fn verify_all(&self, visas: &[String], leeway: u64, holder: &str) -> Vec<Visa> {
        if self.issuers.is_empty() {
            return Vec::new();
        }
        let verified: Vec<(Kind, Visa)> = visas
            .iter()
            .take(MAX_VISAS)
            .filter_map(|jwt| match self.verify(jwt, leeway) {
                Ok(found) => found,
                Err(e) => {
                    log_refused(&e);
                    None
                }
            })
            .collect();
        let identities = linked::identities(
            holder,
            verified
                .iter()
                .filter(|(kind, _)| *kind == Kind::LinkedIdentities)
                .map(|(_, visa)| visa),
        );
        verified
            .into_iter()
            .filter(|(kind, _)| *kind == Kind::ControlledAccessGrants)
            .map(|(_, visa)| visa)
            .filter(|visa| {
                let belongs = self.broker_asserts_identity
                    || visa.subject == holder
                    || identities.contains(&(visa.subject.clone(), visa.issuer.clone()));
                if !belongs {
                    log_refused(&Refused::OtherSubject);
                }
                belongs
            })
            .collect()
    }

    /// `Ok(None)` for a valid visa of a type Sluice does not read.
    fn verify(&self, jwt: &str, leeway: u64) -> Result<Option<(Kind, Visa)>, Refused> {
        if jwt.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge.into());
        }
        check_raw_header(jwt)?;
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| AuthError::Malformed)?;
        // The issuer is read unverified only to choose whose keys to try;
        // the signature check below then pins `iss` to that issuer.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(jwt)
            .map_err(|_| AuthError::Malformed)?;
        let iss = unverified.claims["iss"].as_str().unwrap_or_default();
        let Some((issuer, keys)) = self.issuers.iter().find(|(name, _)| name == iss) else {
            return Err(AuthError::UnknownKey.into());
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
        let kind = match claims.ga4gh_visa_v1.kind.as_str() {
            "ControlledAccessGrants" => Kind::ControlledAccessGrants,
            "LinkedIdentities" => Kind::LinkedIdentities,
            _ => return Ok(None),
        };
        if claims.ga4gh_visa_v1.conditions.is_some() {
            return Err(Refused::Conditional);
        }
        // A visa about nobody, or asserted before the epoch or after now,
        // is not a statement anyone should act on.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let asserted = claims.ga4gh_visa_v1.asserted;
        if claims.sub.trim().is_empty() || asserted <= 0 || asserted > now + leeway as i64 {
            return Err(AuthError::Malformed.into());
        }
        let expires =
            OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| AuthError::Malformed)?;
        Ok(Some((
            kind,
            Visa {
                issuer: claims.iss,
                subject: claims.sub,
                value: claims.ga4gh_visa_v1.value,
                asserted: claims.ga4gh_visa_v1.asserted,
                expires,
            },
        )))
    }
}

fn log_refused(e: &Refused) {
    tracing::info!(reason = e.reason(), error = %e, "visa ignored");
}
