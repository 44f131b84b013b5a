//! Who is calling: Bearer JWTs verified against keys the server loaded,
//! turned into a [`Principal`].
//!
//! The rules (docs/security.md, "Tokens"): the algorithm comes from the
//! key, never from the token header; `exp`, `iss`, `aud` and `sub` are required,
//! `nbf` is checked, leeway is at most 30 s, `iat` in the future is refused,
//! tokens over 8 KB are refused before decoding, `crit` headers are refused,
//! and `jku`/`x5u`/embedded `jwk` headers are ignored: keys are looked up only
//! by `kid` among the keys of the trusted issuer the token's `iss` names
//! (read from the provider, a JWKS file, or the development key: see
//! [`issuers`]).
//!
//! This module knows nothing about datasets or HTTP.

pub mod dev;
mod issuers;
mod keys;
mod linked;
pub mod oidc;
mod passport;
pub mod personal;
pub mod session;

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Validation, decode};
use serde::{Deserialize, Serialize};

use crate::config::AuthSettings;
pub use issuers::check as check_issuers;
use issuers::{ClaimMap, Issuer, LiveKeys};
pub use keys::{KeySet, VerifyKey};
pub use passport::Visa;

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. The HTTP answer is the same for all of them;
/// the reason goes to the logs and to metrics.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token too large")]
    TooLarge,
    /// Not three base64url parts with a JSON header.
    #[error("malformed token")]
    Malformed,
    /// The header declares critical extensions we do not implement, or a
    /// type that is not a JWT.
    #[error("unsupported token header: {0}")]
    UnsupportedHeader(&'static str),
    /// No loaded key has the token's `kid` and algorithm.
    #[error("no matching key")]
    UnknownKey,
    /// A personal token its owner revoked.
    #[error("revoked")]
    Revoked,
    /// The token's `iss` is none of the trusted issuers.
    #[error("untrusted issuer")]
    UnknownIssuer,
    /// Signature, expiry, not-before, issuer, audience or a required claim failed.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// `iat` lies in the future by more than the leeway.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// The key file could not be read.
    #[error("keys: {0}")]
    Keys(String),
}

impl AuthError {
    /// A short, stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        use jsonwebtoken::errors::ErrorKind as K;
        match self {
            AuthError::TooLarge => "too-large",
            AuthError::Malformed => "malformed",
            AuthError::UnsupportedHeader(_) => "unsupported-header",
            AuthError::UnknownKey => "unknown-key",
            AuthError::UnknownIssuer => "wrong-issuer",
            AuthError::Revoked => "revoked",
            AuthError::IssuedInFuture => "issued-in-future",
            AuthError::Keys(_) => "keys",
            AuthError::Invalid(e) => match e.kind() {
                K::ExpiredSignature => "expired",
                K::ImmatureSignature => "not-yet-valid",
                K::InvalidIssuer => "wrong-issuer",
                K::InvalidAudience => "wrong-audience",
                K::InvalidSignature => "bad-signature",
                K::MissingRequiredClaim(_) => "missing-claim",
                _ => "invalid",
            },
        }
    }
}

/// A role carried in the token's `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Researcher,
    Steward,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "researcher" => Ok(Role::Researcher),
            "steward" => Ok(Role::Steward),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role '{other}' (expected researcher, steward or admin)"
            )),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub sub: String,
    pub roles: BTreeSet<Role>,
    pub groups: BTreeSet<String>,
    pub organisation: Option<String>,
    /// Verified, unconditional GA4GH `ControlledAccessGrants` visas from the
    /// token's passport that belong to this subject.
    pub visas: Vec<Visa>,
    /// The token's `exp` (seconds since the epoch), for `GET /v1/me`.
    pub expires: Option<i64>,
    /// A personal token's narrowing (its dataset or grant) and id; `None`
    /// for a provider's token or a web session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Box<personal::TokenScope>>,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The caller of a request: a verified principal, or nobody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    Anonymous,
    Principal(Principal),
}

impl Caller {
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Anonymous => None,
            Caller::Principal(p) => Some(p),
        }
    }

    /// The subject for logs: the `sub`, or `-` for anonymous callers.
    pub fn subject(&self) -> &str {
        self.principal().map_or("-", |p| p.sub.as_str())
    }
}

/// The claims Sluice reads itself; roles, groups and organisation are
/// found among the others by the issuer's [`ClaimMap`].
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<i64>,
    /// Visa JWTs (GA4GH Passport v1.2).
    #[serde(default)]
    ga4gh_passport_v1: Vec<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// The parts of the JOSE header that the `jsonwebtoken` crate does not check.
#[derive(Debug, Deserialize)]
struct RawHeader {
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    typ: Option<String>,
}

/// Verifies tokens against the trusted issuers' keys.
pub struct Verifier {
    leeway: u64,
    issuers: Vec<Issuer>,
    visa_issuers: passport::TrustedIssuers,
}

impl Verifier {
    /// The configured issuers: `auth.issuers`, and `auth.issuer` with the
    /// JWKS file (if configured) and the development key (in dev mode,
    /// created under `state_dir` on first use). Keys read from providers
    /// are empty until [`Verifier::keep_keys_fresh`] reads them.
    pub fn new(settings: &AuthSettings, state_dir: &std::path::Path) -> Result<Self, AuthError> {
        let mut issuers = Vec::new();
        let own = |keys: KeySet, file: Option<&std::path::Path>| Issuer {
            iss: settings.issuer.clone(),
            audience: settings.audience.clone(),
            claims: ClaimMap::default(),
            keys: std::sync::Arc::new(LiveKeys::local(keys, file)),
        };
        if let Some(path) = &settings.jwks_file {
            issuers.push(own(KeySet::from_jwks_file(path)?, Some(path)));
        }
        if settings.dev_mode {
            let key = dev::DevKey::load_or_create(state_dir)?;
            let keys = KeySet::from_jwks_json(&key.jwks_json()).map_err(AuthError::Keys)?;
            issuers.push(own(keys, None));
        }
        for issuer in &settings.issuers {
            issuers.push(Issuer::from_settings(issuer, &settings.audience)?);
        }
        Ok(Self {
            leeway: settings.leeway_secs,
            issuers,
            visa_issuers: passport::TrustedIssuers::load(
                &settings.visa_issuers,
                settings.passport_broker_asserts_identity,
            )?,
        })
    }

    /// Starts reading the keys of issuers configured by URL, at once and
    /// then on their schedules (needs the server's runtime).
    pub fn keep_keys_fresh(&self) {
        for issuer in &self.issuers {
            issuer.keys.clone().keep_fresh();
        }
    }

    /// Verifies a compact JWS against the keys in force and returns its
    /// principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let issuers = self.issuers_of(token)?;
        let first = issuers[0];
        let claims: Claims = verify_jws(
            token,
            &first.iss,
            &first.audience,
            self.leeway,
            |kid, alg| {
                issuers
                    .iter()
                    .flat_map(|i| i.keys.current().matching(kid, alg))
                    .collect()
            },
        )?;
        self.principal_from(claims, &first.claims)
    }

    /// [`Verifier::verify`], reading the issuer's keys again first when the
    /// token names a key they lack (a rotation at the provider), at most
    /// once per the issuer's `min_refresh_secs`.
    pub async fn verify_live(&self, token: &str) -> Result<Principal, AuthError> {
        match self.verify(token) {
            Err(AuthError::UnknownKey) => {
                let mut read = false;
                for issuer in self.issuers_of(token)? {
                    read |= issuer.keys.refresh_for_unknown_kid().await;
                }
                if read {
                    self.verify(token)
                } else {
                    Err(AuthError::UnknownKey)
                }
            }
            other => other,
        }
    }

    /// The trusted issuers a token's `iss` names (read unverified, only to
    /// choose whose keys verify it).
    fn issuers_of(&self, token: &str) -> Result<Vec<&Issuer>, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        #[derive(Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        let payload = token.split('.').nth(1).ok_or(AuthError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::Malformed)?;
        let iss = serde_json::from_slice::<Iss>(&bytes)
            .map_err(|_| AuthError::Malformed)?
            .iss
            .ok_or_else(|| {
                jsonwebtoken::errors::Error::from(
                    jsonwebtoken::errors::ErrorKind::MissingRequiredClaim("iss".into()),
                )
            })?;
        let issuers: Vec<&Issuer> = self.issuers.iter().filter(|i| i.iss == iss).collect();
        if issuers.is_empty() {
            return Err(AuthError::UnknownIssuer);
        }
        Ok(issuers)
    }

    fn principal_from(&self, claims: Claims, map: &ClaimMap) -> Result<Principal, AuthError> {
        let other = serde_json::Value::Object(claims.other);
        let groups = map.groups(&other);
        let organisation = map.organisation(&other);
        // Every rule keys on the subject: a token about nobody is malformed.
        if claims.sub.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        // Names that are written into the trail, pages and the policy file
        // are shown as text: one that holds a control or invisible
        // formatting character (a newline forging a policy line, a
        // right-to-left override reversing a page's line) is refused.
        let names = std::iter::once(&claims.sub)
            .chain(organisation.iter())
            .chain(groups.iter());
        if names
            .into_iter()
            .any(|n| crate::util::echo::hidden_char(n, false).is_some())
        {
            return Err(AuthError::Malformed);
        }
        let visas =
            self.visa_issuers
                .verify_all(&claims.ga4gh_passport_v1, self.leeway, &claims.sub);
        Ok(Principal {
            roles: map.roles(&other),
            groups: groups.into_iter().collect(),
            organisation,
            sub: claims.sub,
            visas,
            expires: claims.exp,
            scope: None,
        })
    }
}

/// The rules every signed token Sluice accepts is held to, API tokens and
/// identity providers' ID tokens alike (see the module doc): size, header,
/// a key chosen by `kid` and pinned to its algorithm, `exp`, `nbf`, `iss`,
/// `aud`, `sub` and `iat`. `keys` gives the candidate keys for a `kid` and
/// header algorithm.
pub fn verify_jws<T: serde::de::DeserializeOwned>(
    token: &str,
    issuer: &str,
    audience: &str,
    leeway: u64,
    keys: impl FnOnce(Option<&str>, jsonwebtoken::Algorithm) -> Vec<VerifyKey>,
) -> Result<T, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    check_raw_header(token)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
    let candidates = keys(header.kid.as_deref(), header.alg);
    // The algorithm list is replaced by each candidate key's own in `decode_with`.
    let mut validation = Validation::new(header.alg);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.validate_nbf = true;
    validation.leeway = leeway;
    let claims: WithIat<T> = decode_with(token, &candidates, &validation)?;
    check_iat(claims.iat, leeway)?;
    Ok(claims.claims)
}

/// A token's claims with `iat` read aside, for [`check_iat`].
#[derive(Deserialize)]
struct WithIat<T> {
    #[serde(default)]
    iat: Option<i64>,
    #[serde(flatten)]
    claims: T,
}

/// Checks a token against candidate keys. Every key is pinned to one
/// algorithm (`matching` only returns keys of the header's algorithm) and
/// the validation's algorithm list is that one.
fn decode_with<T: serde::de::DeserializeOwned>(
    token: &str,
    candidates: &[VerifyKey],
    validation: &Validation,
) -> Result<T, AuthError> {
    let mut last_error = AuthError::UnknownKey;
    for key in candidates {
        let mut validation = validation.clone();
        validation.algorithms = vec![key.algorithm];
        match decode::<T>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => last_error = AuthError::Invalid(e),
        }
    }
    Err(last_error)
}

/// `iat` in the future (beyond the leeway) is refused; the crate does not check it.
fn check_iat(iat: Option<i64>, leeway: u64) -> Result<(), AuthError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway as i64)) {
        return Err(AuthError::IssuedInFuture);
    }
    Ok(())
}

/// Refuses headers with `crit` (we implement no extensions, so RFC 7515
/// requires refusal) and a `typ` other than JWT.
fn check_raw_header(token: &str) -> Result<(), AuthError> {
    let first = token.split('.').next().ok_or(AuthError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|_| AuthError::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    if raw.crit.is_some() {
        return Err(AuthError::UnsupportedHeader("crit"));
    }
    if let Some(typ) = raw.typ
        && !typ.eq_ignore_ascii_case("JWT")
        && !typ.eq_ignore_ascii_case("at+jwt")
    {
        return Err(AuthError::UnsupportedHeader("typ"));
    }
    Ok(())
}
