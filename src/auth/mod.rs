//! Who is calling: Bearer JWTs verified against keys the server loaded,
//! turned into a [`Principal`].
//!
//! The rules (docs/security.md, "Tokens"): the algorithm comes from the
//! key, never from the token header; `exp`, `iss`, `aud` and `sub` are required,
//! `nbf` is checked, leeway is at most 30 s, `iat` in the future is refused,
//! tokens over 8 KB are refused before decoding, `crit` headers are refused,
//! and `jku`/`x5u`/embedded `jwk` headers are ignored: keys are looked up only
//! by `kid` among the keys loaded from the JWKS file (or the development key).
//!
//! This module knows nothing about datasets or HTTP.

pub mod dev;
mod keys;
mod linked;
mod passport;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Validation, decode};
use serde::{Deserialize, Serialize};

use crate::config::AuthSettings;
pub use keys::{KeySet, VerifyKey};
pub use passport::Visa;

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How often an unknown `kid` may trigger a reload of the JWKS file.
const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

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

/// The claims Sluice reads. Unknown roles are ignored rather than refused,
/// so an identity provider can carry roles meant for other services.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default, alias = "org", alias = "organization")]
    organisation: Option<String>,
    /// Visa JWTs (GA4GH Passport v1.2).
    #[serde(default)]
    ga4gh_passport_v1: Vec<String>,
}

/// The parts of the JOSE header that the `jsonwebtoken` crate does not check.
#[derive(Debug, Deserialize)]
struct RawHeader {
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    typ: Option<String>,
}

/// Verifies tokens against the loaded keys.
pub struct Verifier {
    issuer: String,
    audience: String,
    leeway: u64,
    jwks_file: Option<PathBuf>,
    dev_keys: KeySet,
    jwks: RwLock<KeySet>,
    last_refresh: Mutex<Instant>,
    visa_issuers: passport::TrustedIssuers,
}

impl Verifier {
    /// Loads the JWKS file (if configured) and the development key (in dev
    /// mode, creating it under `state_dir` on first use).
    pub fn new(settings: &AuthSettings, state_dir: &std::path::Path) -> Result<Self, AuthError> {
        let jwks = match &settings.jwks_file {
            Some(path) => KeySet::from_jwks_file(path)?,
            None => KeySet::default(),
        };
        let dev_keys = if settings.dev_mode {
            let key = dev::DevKey::load_or_create(state_dir)?;
            KeySet::from_jwks_json(&key.jwks_json()).map_err(AuthError::Keys)?
        } else {
            KeySet::default()
        };
        Ok(Self {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway_secs,
            jwks_file: settings.jwks_file.clone(),
            dev_keys,
            jwks: RwLock::new(jwks),
            last_refresh: Mutex::new(Instant::now()),
            visa_issuers: passport::TrustedIssuers::load(
                &settings.visa_issuers,
                settings.passport_broker_asserts_identity,
            )?,
        })
    }

    /// Verifies a compact JWS and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claims: Claims = verify_jws(
            token,
            &self.issuer,
            &self.audience,
            self.leeway,
            |kid, alg| {
                let mut found = self.dev_keys.matching(kid, alg);
                found.extend(self.read_jwks().matching(kid, alg));
                if found.is_empty() && kid.is_some() && self.refresh_allowed() {
                    self.reload_jwks();
                    found.extend(self.read_jwks().matching(kid, alg));
                }
                found
            },
        )?;
        // Every rule keys on the subject: a token about nobody is malformed.
        if claims.sub.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        // Names that are written into the trail, pages and the policy file
        // are shown as text: one that holds a control or invisible
        // formatting character (a newline forging a policy line, a
        // right-to-left override reversing a page's line) is refused.
        let names = std::iter::once(&claims.sub)
            .chain(claims.organisation.iter())
            .chain(claims.groups.iter());
        if names
            .into_iter()
            .any(|n| crate::echo::hidden_char(n, false).is_some())
        {
            return Err(AuthError::Malformed);
        }
        Ok(self.principal_from(claims))
    }

    fn principal_from(&self, claims: Claims) -> Principal {
        let visas =
            self.visa_issuers
                .verify_all(&claims.ga4gh_passport_v1, self.leeway, &claims.sub);
        Principal {
            sub: claims.sub,
            roles: claims.roles.iter().filter_map(|r| r.parse().ok()).collect(),
            groups: claims.groups.into_iter().collect(),
            organisation: claims.organisation,
            visas,
            expires: claims.exp,
        }
    }

    fn read_jwks(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        // A poisoned lock only means a reload panicked midway; the key set
        // it guards is replaced whole, so the old value is still consistent.
        self.jwks.read().unwrap_or_else(|e| e.into_inner())
    }

    /// At most one reload per interval, whatever the number of unknown-`kid`
    /// tokens arriving: a flood of made-up `kid`s costs one file read.
    fn refresh_allowed(&self) -> bool {
        if self.jwks_file.is_none() {
            return false;
        }
        let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= KEY_REFRESH_INTERVAL {
            *last = Instant::now();
            true
        } else {
            false
        }
    }

    fn reload_jwks(&self) {
        let Some(path) = &self.jwks_file else { return };
        match KeySet::from_jwks_file(path) {
            Ok(keys) => {
                *self.jwks.write().unwrap_or_else(|e| e.into_inner()) = keys;
                tracing::info!(file = %path.display(), "reloaded JWKS after an unknown kid");
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "JWKS reload failed; keeping the keys in force")
            }
        }
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
