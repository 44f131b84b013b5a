//! Sign-in through an OpenID Connect provider: discovery, the
//! authorization-code request with PKCE, the code exchange and the ID
//! token's verification, ending in a [`Principal`].
//!
//! The ID token is held to the same rules as API tokens
//! ([`crate::auth::verify_jws`]): key chosen by `kid` among the provider's
//! published keys and pinned to its algorithm, `exp`/`nbf`/`iat` with the
//! same leeway, `iss` the discovered issuer, `aud` our client id; and, as
//! OpenID Connect Core §3.1.3.7 adds, the `nonce` this sign-in sent and
//! `azp` our client id when there are several audiences. Claims the ID
//! token leaves out are read from the provider's userinfo endpoint (with
//! the sign-in's access token), about the same `sub` only, never
//! overriding the signed ID token. The provider must be reached over HTTPS
//! unless it is on loopback (tests, a local broker), or trust `ca_file`.
//! This module knows nothing about cookies or pages.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::auth::{AuthError, KeySet, Principal, Role};
use crate::config::OidcSettings;

/// How long discovery and keys are trusted before being read again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` reloads the keys at most this often.
const KEY_REFRESH: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense.
    #[error("identity provider: {0}")]
    Provider(String),
    /// The ID token failed verification.
    #[error("ID token: {0}")]
    Token(String),
}

impl From<AuthError> for OidcError {
    fn from(e: AuthError) -> Self {
        OidcError::Token(e.reason().into())
    }
}

/// The parts of `/.well-known/openid-configuration` Sluice uses.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    /// Where claims the ID token leaves out are read (providers that keep
    /// ID tokens small, as OpenID Connect Core §5.4 has scope claims).
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    /// Where a browser is sent to sign out at the provider too (OpenID
    /// Connect RP-Initiated Logout), when it offers it.
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

/// Largest userinfo answer read.
const MAX_USERINFO_BYTES: u64 = 64 * 1024;

struct Metadata {
    discovery: Discovery,
    keys: KeySet,
    fetched: Instant,
    keys_fetched: Instant,
}

/// One configured identity provider.
pub struct Provider {
    settings: OidcSettings,
    leeway: u64,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<Metadata>>,
}

/// What the browser is sent to, and what must be kept for its return.
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl Provider {
    pub fn new(settings: OidcSettings, leeway: u64) -> Result<Self, OidcError> {
        require_secure(&settings.issuer)?;
        let http = https_client(settings.ca_file.as_deref()).map_err(OidcError::Provider)?;
        Ok(Self {
            settings,
            leeway,
            http,
            metadata: tokio::sync::Mutex::new(None),
        })
    }

    /// The provider's issuer (the one discovery confirmed).
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The name on the sign-in button.
    pub fn label(&self) -> &str {
        &self.settings.label
    }

    /// Where to send a browser that signed out here, to sign out at the
    /// provider too and come back to `back_to`; `None` when the provider
    /// offers no logout (or cannot be reached: signing out here stands).
    pub async fn logout_url(&self, back_to: &str) -> Option<String> {
        let discovery = self.discovery().await.ok()?;
        let endpoint = discovery.end_session_endpoint?;
        require_secure(&endpoint).ok()?;
        let mut url = url::Url::parse(&endpoint).ok()?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("post_logout_redirect_uri", back_to);
        Some(url.into())
    }

    /// Where to send the browser to sign in, returning to `redirect_uri`.
    pub async fn authorize(&self, redirect_uri: &str) -> Result<Authorization, OidcError> {
        let discovery = self.discovery().await?;
        let state = crate::auth::session::random_token();
        let nonce = crate::auth::session::random_token();
        let (verifier, challenge) = crate::auth::session::pkce_pair();
        let mut scopes: Vec<&str> = vec!["openid"];
        scopes.extend(
            self.settings
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid"),
        );
        let mut url = url::Url::parse(&discovery.authorization_endpoint)
            .map_err(|e| OidcError::Provider(format!("authorization_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(Authorization {
            url: url.into(),
            state,
            nonce,
            verifier,
        })
    }

    /// Exchanges the code for tokens and verifies the ID token.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
        redirect_uri: &str,
    ) -> Result<Principal, OidcError> {
        let discovery = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(&discovery.token_endpoint);
        match &self.settings.client_secret {
            // client_secret_basic (RFC 6749 §2.3.1: both parts form-encoded).
            Some(secret) => {
                request = request.basic_auth(
                    form_encode(&self.settings.client_id),
                    Some(form_encode(secret)),
                );
            }
            None => form.push(("client_id", &self.settings.client_id)),
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint answered {status}: {e}")))?;
        if !status.is_success() {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("?");
            return Err(OidcError::Provider(format!(
                "token endpoint answered {status} ({})",
                crate::util::echo::cut(error)
            )));
        }
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::Provider("no id_token in the token response".into()))?;
        let mut claims = self.verify_id_token(id_token).await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(OidcError::Token("nonce does not match this sign-in".into()));
        }
        if let Some(Value::Array(audiences)) = claims.get("aud")
            && audiences.len() > 1
            && claims.get("azp").and_then(Value::as_str) != Some(&self.settings.client_id)
        {
            return Err(OidcError::Token("azp is not this client".into()));
        }
        if let (Some(endpoint), Some(access_token)) = (
            discovery.userinfo_endpoint.as_deref(),
            body.get("access_token").and_then(Value::as_str),
        ) {
            let userinfo = self.userinfo(endpoint, access_token).await?;
            merge_userinfo(&mut claims, userinfo)?;
        }
        principal_from(&claims, &self.settings)
    }

    /// The provider's userinfo for this sign-in's access token.
    async fn userinfo(&self, endpoint: &str, access_token: &str) -> Result<Value, OidcError> {
        require_secure(endpoint)?;
        let request = self.http.get(endpoint).bearer_auth(access_token);
        let bytes = get_bounded(request, MAX_USERINFO_BYTES)
            .await
            .map_err(|e| OidcError::Provider(format!("userinfo endpoint: {e}")))?;
        // A signed (JWT) userinfo is not taken: only JSON.
        serde_json::from_slice(&bytes)
            .map_err(|_| OidcError::Provider("userinfo is not a JSON object".into()))
    }

    async fn verify_id_token(&self, token: &str) -> Result<Value, OidcError> {
        let (issuer, keys) = {
            let mut guard = self.metadata.lock().await;
            let m = self.refresh(&mut guard, false).await?;
            (m.discovery.issuer.clone(), m.keys.clone())
        };
        let verify = |keys: &KeySet| {
            crate::auth::verify_jws::<Value>(
                token,
                &issuer,
                &self.settings.client_id,
                self.leeway,
                |kid, alg| keys.matching(kid, alg),
            )
        };
        match verify(&keys) {
            // The provider may have rotated its keys: read them once more.
            Err(AuthError::UnknownKey) => {
                let mut guard = self.metadata.lock().await;
                let stale = guard
                    .as_ref()
                    .is_some_and(|m| m.keys_fetched.elapsed() >= KEY_REFRESH);
                let keys = self.refresh(&mut guard, stale).await?.keys.clone();
                drop(guard);
                Ok(verify(&keys)?)
            }
            other => Ok(other?),
        }
    }

    async fn discovery(&self) -> Result<Discovery, OidcError> {
        let mut guard = self.metadata.lock().await;
        Ok(self.refresh(&mut guard, false).await?.discovery.clone())
    }

    /// The metadata in `slot`, read again when missing or old (or when
    /// `keys_too`, after an unknown `kid`).
    async fn refresh<'a>(
        &self,
        slot: &'a mut Option<Metadata>,
        keys_too: bool,
    ) -> Result<&'a Metadata, OidcError> {
        let fresh = slot
            .as_ref()
            .is_some_and(|m| m.fetched.elapsed() < METADATA_TTL);
        if !fresh || keys_too {
            match self.fetch().await {
                Ok(m) => *slot = Some(m),
                // A provider down for a moment: keep signing in with what we had.
                Err(e) if slot.is_some() => {
                    tracing::warn!(error = %e, "identity provider metadata refresh failed; keeping the old");
                }
                Err(e) => return Err(e),
            }
        }
        slot.as_ref()
            .ok_or_else(|| OidcError::Provider("no metadata".into()))
    }

    async fn fetch(&self) -> Result<Metadata, OidcError> {
        let base = self.settings.issuer.trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let discovery: Discovery = self.get_json(&url).await?;
        // OpenID Connect Discovery §4.3: the document's issuer must be the
        // one asked for, exactly.
        if discovery.issuer != self.settings.issuer {
            return Err(OidcError::Provider(format!(
                "discovery names issuer '{}', not the configured '{}'",
                crate::util::echo::cut(&discovery.issuer),
                self.settings.issuer
            )));
        }
        for endpoint in [
            &discovery.authorization_endpoint,
            &discovery.token_endpoint,
            &discovery.jwks_uri,
        ] {
            require_secure(endpoint)?;
        }
        let jwks = self
            .http
            .get(&discovery.jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| OidcError::Provider(format!("jwks_uri: {e}")))?
            .text()
            .await
            .map_err(|e| OidcError::Provider(format!("jwks_uri: {e}")))?;
        let keys = KeySet::usable_from_jwks_json(&jwks).map_err(OidcError::Provider)?;
        let now = Instant::now();
        Ok(Metadata {
            discovery,
            keys,
            fetched: now,
            keys_fetched: now,
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        self.http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))?
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))
    }
}

/// HTTPS, or plain HTTP to a loopback host only.
/// The client every request to an identity provider goes through: a
/// timeout, no redirects (every endpoint is named by configuration or
/// discovery), and the system's CAs plus `ca_file`'s (a private CA).
pub fn https_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// The body of a GET to an identity provider: 2xx only, at most `max`
/// bytes (see [`send_bounded`]).
pub async fn get_bounded(request: reqwest::RequestBuilder, max: u64) -> Result<Vec<u8>, String> {
    let (status, body) = send_bounded(request, max).await?;
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    Ok(body)
}

/// Sends a request to an identity provider and reads its answer's status
/// and body, at most `max` bytes counted as they arrive (a declared length
/// is not trusted).
pub async fn send_bounded(
    request: reqwest::RequestBuilder,
    max: u64,
) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    let too_large = || format!("larger than {max} bytes");
    if response.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max {
            return Err(too_large());
        }
    }
    Ok((response.status(), body))
}

/// An identity provider's URL: HTTPS, or plain HTTP on loopback only
/// (tests, a local broker).
pub fn require_secure(url: &str) -> Result<(), OidcError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| OidcError::Provider(format!("'{url}' is not a URL: {e}")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(OidcError::Provider(format!(
            "'{url}' must use https (plain http only on loopback)"
        ))),
    }
}

fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The principal an ID token describes, through the configured claim
/// names. A claim may be a list or one string; roles Sluice does not know
/// are ignored, as for API tokens.
/// Adds to the ID token's claims those userinfo has and it lacks. The ID
/// token wins where both say something (it is the signed one), and a
/// userinfo about another `sub` is refused (OpenID Connect Core §5.3.4:
/// it may be a substituted answer).
fn merge_userinfo(claims: &mut Value, userinfo: Value) -> Result<(), OidcError> {
    let Value::Object(extra) = userinfo else {
        return Err(OidcError::Provider("userinfo is not a JSON object".into()));
    };
    if extra.get("sub") != claims.get("sub") {
        return Err(OidcError::Token("userinfo is about another sub".into()));
    }
    if let Value::Object(own) = claims {
        for (name, value) in extra {
            own.entry(name).or_insert(value);
        }
    }
    Ok(())
}

fn principal_from(claims: &Value, settings: &OidcSettings) -> Result<Principal, OidcError> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| OidcError::Token("no sub".into()))?;
    let strings = |name: &str| -> BTreeSet<String> {
        match claims.get(name) {
            Some(Value::String(s)) => [s.clone()].into(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => BTreeSet::new(),
        }
    };
    let roles: BTreeSet<Role> = strings(&settings.roles_claim)
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    Ok(Principal {
        sub: sub.to_owned(),
        roles,
        groups: strings(&settings.groups_claim),
        organisation: strings(&settings.organisation_claim).into_iter().next(),
        visas: Vec::new(),
        expires: claims.get("exp").and_then(Value::as_i64),
        scope: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OidcSettings {
        toml::from_str(
            r#"issuer = "https://id.example"
client_id = "sluice"
roles_claim = "sluice_roles"
"#,
        )
        .unwrap()
    }

    #[test]
    fn userinfo_fills_in_what_the_id_token_leaves_out_and_only_for_its_sub() {
        let mut claims = serde_json::json!({"sub": "carol", "organisation": "Signed Org"});
        merge_userinfo(
            &mut claims,
            serde_json::json!({"sub": "carol", "roles": ["researcher"], "organisation": "Other"}),
        )
        .unwrap();
        assert_eq!(claims["roles"], serde_json::json!(["researcher"]));
        assert_eq!(claims["organisation"], "Signed Org", "the ID token wins");
        let mut claims = serde_json::json!({"sub": "carol"});
        assert!(merge_userinfo(&mut claims, serde_json::json!({"sub": "mallory"})).is_err());
        assert!(merge_userinfo(&mut claims, serde_json::json!({"roles": ["admin"]})).is_err());
        assert!(merge_userinfo(&mut claims, serde_json::json!(["x"])).is_err());
    }

    #[test]
    fn claims_map_to_a_principal_through_the_configured_names() {
        let claims = serde_json::json!({
            "sub": "carol@uni.example",
            "sluice_roles": ["researcher", "superuser"],
            "groups": "nhs-north",
            "organisation": "Uni",
            "exp": 99,
        });
        let p = principal_from(&claims, &settings()).unwrap();
        assert_eq!(p.sub, "carol@uni.example");
        assert_eq!(p.roles, [Role::Researcher].into());
        assert_eq!(p.groups, ["nhs-north".to_string()].into());
        assert_eq!(p.organisation.as_deref(), Some("Uni"));
        assert!(principal_from(&serde_json::json!({"sub": " "}), &settings()).is_err());
    }

    #[test]
    fn a_provider_must_be_reached_over_https_unless_on_loopback() {
        assert!(require_secure("https://id.example").is_ok());
        assert!(require_secure("http://127.0.0.1:9000").is_ok());
        assert!(require_secure("http://localhost:9000/x").is_ok());
        assert!(require_secure("http://id.example").is_err());
        assert!(require_secure("ftp://127.0.0.1").is_err());
    }
}
