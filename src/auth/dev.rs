//! The development signing key: an Ed25519 key generated into
//! `<state>/dev-signing-key.pem` on first use, which the server trusts in
//! dev mode and `sluice token` signs with. Never enable dev mode in
//! production: anyone who can read the state folder can mint tokens.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::{AuthError, Role};

/// The `kid` of the development key.
pub const DEV_KID: &str = "sluice-dev";

pub struct DevKey {
    private_pem: String,
    public_raw: Vec<u8>,
}

/// What a development token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub sub: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
    pub organisation: Option<String>,
    pub ttl_secs: i64,
    pub issuer: String,
    pub audience: String,
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    roles: &'a [Role],
    groups: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    organisation: Option<&'a str>,
}

impl DevKey {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("dev-signing-key.pem")
    }

    /// Reads the key, or generates and stores it (mode 0600) if absent.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, AuthError> {
        let path = Self::path(state_dir);
        let keys_err =
            |e: &dyn std::fmt::Display| AuthError::Keys(format!("{}: {e}", path.display()));
        let pair = match std::fs::read_to_string(&path) {
            Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| keys_err(&e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair =
                    rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| keys_err(&e))?;
                write_private(&path, pair.serialize_pem().as_bytes()).map_err(|e| keys_err(&e))?;
                pair
            }
            Err(e) => return Err(keys_err(&e)),
        };
        if pair.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(keys_err(&"not an Ed25519 key"));
        }
        Ok(Self {
            private_pem: pair.serialize_pem(),
            public_raw: pair.public_key_raw().to_vec(),
        })
    }

    /// The public half as a one-key JWKS document.
    pub fn jwks_json(&self) -> String {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": DEV_KID,
                "x": URL_SAFE_NO_PAD.encode(&self.public_raw),
            }]
        })
        .to_string()
    }

    /// Signs a token for `request`.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, AuthError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = MintedClaims {
            sub: &request.sub,
            iss: &request.issuer,
            aud: &request.audience,
            iat: now,
            nbf: now,
            exp: now + request.ttl_secs,
            roles: &request.roles,
            groups: &request.groups,
            organisation: request.organisation.as_deref(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(DEV_KID.into());
        let key = EncodingKey::from_ed_pem(self.private_pem.as_bytes())
            .map_err(|e| AuthError::Keys(e.to_string()))?;
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| AuthError::Keys(e.to_string()))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
