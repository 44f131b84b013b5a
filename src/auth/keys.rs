//! Verification keys loaded from a JWKS document. Each key carries the one
//! algorithm it may verify, fixed when it is loaded: RS256 for RSA keys,
//! ES256 for P-256 keys, EdDSA for Ed25519 keys. Symmetric (`oct`) keys and
//! other curves are refused, so a public key can never be used as an HMAC
//! secret (the classic algorithm-confusion attack).

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::AuthError;

/// One verification key and the algorithm it is pinned to.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The keys a verifier trusts.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl KeySet {
    pub fn from_jwks_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Keys(format!("{}: {e}", path.display())))?;
        Self::from_jwks_json(&text).map_err(|e| AuthError::Keys(format!("{}: {e}", path.display())))
    }

    pub fn from_jwks_json(text: &str) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys = set
            .keys
            .iter()
            .enumerate()
            .map(|(i, jwk)| {
                let algorithm = pinned_algorithm(jwk).map_err(|e| format!("key {i}: {e}"))?;
                let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {i}: {e}"))?;
                Ok(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self { keys })
    }

    /// The signing keys of an identity provider's published JWKS that
    /// Sluice accepts; the others (encryption keys, algorithms it does not
    /// take) are left out rather than failing the whole set, since a
    /// provider publishes keys for many clients.
    pub fn usable_from_jwks_json(text: &str) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys = set
            .keys
            .iter()
            .filter(|jwk| {
                !matches!(
                    jwk.common.public_key_use,
                    Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                )
            })
            .filter_map(|jwk| {
                let algorithm = pinned_algorithm(jwk).ok()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                })
            })
            .collect();
        Ok(Self { keys })
    }

    /// Keys that may verify a token with this `kid` and header algorithm.
    /// A token without `kid` may be checked against every key of its
    /// algorithm; one with a `kid` only against that key.
    pub fn matching(&self, kid: Option<&str>, alg: Algorithm) -> Vec<VerifyKey> {
        self.keys
            .iter()
            .filter(|k| k.algorithm == alg)
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .cloned()
            .collect()
    }
}

fn pinned_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    let natural = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are not accepted".into());
        }
        _ => return Err("only RSA, EC P-256 and Ed25519 keys are accepted".into()),
    };
    // A JWKS may name the algorithm; it must agree with the key type.
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(other) => return Err(format!("algorithm {other:?} is not accepted")),
    };
    match declared {
        Some(alg) if alg != natural => Err(format!("alg {alg:?} does not fit the key type")),
        _ => Ok(natural),
    }
}
