//! The identity providers whose access tokens Sluice trusts, and their keys
//! kept live: read from the provider's `jwks_uri` (found by OpenID
//! discovery unless configured), again on a schedule and on a token with an
//! unknown `kid` (at most once per `min_refresh_secs`, so a flood of
//! made-up `kid`s costs one fetch), keeping the last good set while the
//! provider is down. A key the provider removes stops verifying at the next
//! read; a new one verifies at its first token.
//!
//! Also where each provider's tokens carry roles, groups and organisation
//! ([`ClaimMap`]): Keycloak nests roles (`realm_access.roles`), Entra ID and
//! Auth0 name them otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{AuthError, KeySet, Role};
use crate::config::{
    AuthSettings, IssuerSettings, default_key_min_refresh_secs, default_key_refresh_secs,
};

/// Longest a key or discovery document may be: a provider publishes a
/// handful of keys.
const MAX_JWKS_BYTES: u64 = 256 * 1024;

/// A provider's document, read within [`MAX_JWKS_BYTES`] (the client's
/// timeout abandons a slow one; the last good keys stay).
async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    crate::auth::oidc::get_bounded(http.get(url), MAX_JWKS_BYTES)
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// Where a token's roles, groups and organisation are read from.
#[derive(Debug, Clone)]
pub(super) struct ClaimMap {
    roles: String,
    groups: String,
    /// Tried in order: the first present wins.
    organisation: Vec<String>,
    roles_map: BTreeMap<String, Role>,
}

impl Default for ClaimMap {
    /// Sluice's own claims, as `sluice token` and the shipped examples write them.
    fn default() -> Self {
        Self {
            roles: "roles".into(),
            groups: "groups".into(),
            organisation: vec!["organisation".into(), "org".into(), "organization".into()],
            roles_map: BTreeMap::new(),
        }
    }
}

impl ClaimMap {
    fn from_settings(s: &IssuerSettings) -> Result<Self, String> {
        let roles_map = s
            .roles_map
            .iter()
            .map(|(theirs, ours)| Ok((theirs.clone(), ours.parse::<Role>()?)))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            roles: s.roles_claim.clone(),
            groups: s.groups_claim.clone(),
            organisation: vec![s.organisation_claim.clone()],
            roles_map,
        })
    }

    /// The roles a token's claims give (unknown ones are ignored, so a
    /// provider can carry roles meant for other services).
    /// With a `roles_map`, only the names it maps count (a provider's own
    /// `admin` role is not Sluice's unless mapped); without one, Sluice's
    /// own names.
    pub(super) fn roles(&self, claims: &Value) -> BTreeSet<Role> {
        strings(claim(claims, &self.roles))
            .into_iter()
            .filter_map(|r| {
                if self.roles_map.is_empty() {
                    r.parse().ok()
                } else {
                    self.roles_map.get(&r).copied()
                }
            })
            .collect()
    }

    pub(super) fn groups(&self, claims: &Value) -> Vec<String> {
        strings(claim(claims, &self.groups))
    }

    pub(super) fn organisation(&self, claims: &Value) -> Option<String> {
        self.organisation
            .iter()
            .find_map(|name| claim(claims, name)?.as_str().map(str::to_owned))
    }
}

/// A claim by its dotted path into nested objects, else by its whole name
/// (namespaced claims such as `https://example.org/roles` hold dots
/// themselves). The path comes first: a user who can set a top-level claim
/// named `realm_access.roles` must not shadow the provider's nested one.
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    name.split('.')
        .try_fold(claims, |value, part| value.get(part))
        .or_else(|| claims.get(name))
}

/// A list of strings, or one string as one value (a group's name may hold
/// spaces; it is never split into several).
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(text)) => vec![text.clone()],
        _ => Vec::new(),
    }
}

/// One trusted issuer: its `iss`, audience, claims and keys.
pub(super) struct Issuer {
    pub(super) iss: String,
    pub(super) audience: String,
    pub(super) claims: ClaimMap,
    pub(super) keys: Arc<LiveKeys>,
}

/// Checks the configured issuers (see `Settings::check`): the key in error
/// and why.
pub fn check(auth: &AuthSettings) -> Result<(), (&'static str, String)> {
    let mut seen = BTreeSet::new();
    if auth.dev_mode || auth.jwks_file.is_some() {
        seen.insert(auth.issuer.as_str());
    }
    for issuer in &auth.issuers {
        if issuer.issuer.trim().is_empty() {
            return Err(("auth.issuers", "every issuer needs its `issuer`".into()));
        }
        if !seen.insert(issuer.issuer.as_str()) {
            return Err((
                "auth.issuers",
                format!("issuer '{}' is configured twice", issuer.issuer),
            ));
        }
        if issuer.jwks_uri.is_some() && issuer.jwks_file.is_some() {
            return Err((
                "auth.issuers",
                format!(
                    "issuer '{}': give jwks_uri or jwks_file, not both",
                    issuer.issuer
                ),
            ));
        }
        if issuer.jwks_file.is_none() {
            let url = issuer.jwks_uri.as_deref().unwrap_or(&issuer.issuer);
            crate::auth::oidc::require_secure(url).map_err(|e| ("auth.issuers", e.to_string()))?;
        }
        if issuer.refresh_secs == 0 || issuer.min_refresh_secs == 0 {
            return Err((
                "auth.issuers",
                format!(
                    "issuer '{}': refresh_secs and min_refresh_secs must be at least 1",
                    issuer.issuer
                ),
            ));
        }
        ClaimMap::from_settings(issuer).map_err(|e| {
            (
                "auth.issuers",
                format!("issuer '{}': roles_map: {e}", issuer.issuer),
            )
        })?;
    }
    if let Some(login) = &auth.login {
        if !auth.issuers.iter().any(|i| i.issuer == login.issuer) {
            return Err((
                "auth.login",
                format!(
                    "issuer '{}' is not one of auth.issuers: the tokens `sluice login` gets would not verify",
                    login.issuer
                ),
            ));
        }
        if login.client_id.trim().is_empty() {
            return Err(("auth.login", "client_id is empty".into()));
        }
    }
    Ok(())
}

impl Issuer {
    /// The issuer as configured; remote keys are empty until the first read
    /// (see [`LiveKeys::keep_fresh`]).
    pub(super) fn from_settings(
        s: &IssuerSettings,
        default_audience: &str,
    ) -> Result<Self, AuthError> {
        let source = match (&s.jwks_file, &s.jwks_uri) {
            (Some(path), _) => Source::File(path.clone()),
            (None, Some(uri)) => Source::Uri(uri.clone()),
            (None, None) => Source::Discovery(s.issuer.clone()),
        };
        let http = match &source {
            Source::File(_) => None,
            _ => Some(
                crate::auth::oidc::https_client(s.ca_file.as_deref()).map_err(AuthError::Keys)?,
            ),
        };
        let keys = match &source {
            Source::File(path) => KeySet::from_jwks_file(path)?,
            _ => KeySet::default(),
        };
        Ok(Self {
            iss: s.issuer.clone(),
            audience: s
                .audience
                .clone()
                .unwrap_or_else(|| default_audience.into()),
            claims: ClaimMap::from_settings(s).map_err(AuthError::Keys)?,
            keys: Arc::new(LiveKeys {
                source,
                http,
                keys: RwLock::new(keys),
                refresh: Duration::from_secs(s.refresh_secs),
                min_refresh: Duration::from_secs(s.min_refresh_secs),
                last_on_demand: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
enum Source {
    /// Given once (the development key).
    Fixed,
    File(std::path::PathBuf),
    Uri(String),
    /// The issuer URL: its discovery document names the `jwks_uri`.
    Discovery(String),
}

/// An issuer's keys, replaced whole at each good read.
pub(super) struct LiveKeys {
    source: Source,
    http: Option<reqwest::Client>,
    keys: RwLock<KeySet>,
    refresh: Duration,
    min_refresh: Duration,
    /// When an unknown `kid` last made the keys be read; held while a read
    /// is under way, so concurrent tokens wait for one read.
    last_on_demand: tokio::sync::Mutex<Option<Instant>>,
}

impl LiveKeys {
    /// Keys from a file (read again on an unknown `kid`), or fixed ones
    /// (the development key).
    pub(super) fn local(keys: KeySet, file: Option<&Path>) -> Self {
        Self {
            source: match file {
                Some(path) => Source::File(path.to_path_buf()),
                None => Source::Fixed,
            },
            http: None,
            keys: RwLock::new(keys),
            refresh: Duration::from_secs(default_key_refresh_secs()),
            min_refresh: Duration::from_secs(default_key_min_refresh_secs()),
            last_on_demand: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) fn current(&self) -> KeySet {
        // A poisoned lock only means a reload panicked midway; the key set
        // it guards is replaced whole, so the old value is still consistent.
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the keys are read from the provider (and so kept fresh).
    pub(super) fn is_remote(&self) -> bool {
        self.http.is_some()
    }

    /// Reads the keys again because a token named a `kid` they lack, unless
    /// that was done less than `min_refresh` ago. Returns whether a read
    /// was made.
    pub(super) async fn refresh_for_unknown_kid(&self) -> bool {
        if matches!(self.source, Source::Fixed) {
            return false;
        }
        let mut last = self.last_on_demand.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return false;
        }
        *last = Some(Instant::now());
        self.reload("an unknown kid").await;
        true
    }

    /// Reads the keys on schedule for as long as the server runs. The first
    /// read is at once; a failed read is tried again sooner.
    pub(super) fn keep_fresh(self: Arc<Self>) {
        if !self.is_remote() {
            return;
        }
        tokio::spawn(async move {
            loop {
                let wait = if self.reload("schedule").await {
                    self.refresh
                } else {
                    self.refresh.min(Duration::from_secs(10))
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    async fn reload(&self, why: &str) -> bool {
        let fetched = match &self.source {
            Source::Fixed => return true,
            Source::File(path) => KeySet::from_jwks_file(path).map_err(|e| e.to_string()),
            _ => self.fetch().await,
        };
        match fetched {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                tracing::debug!(source = ?self.source, why, "read the issuer's keys");
                true
            }
            Err(e) => {
                tracing::warn!(source = ?self.source, why, error = %e, "reading the issuer's keys failed; keeping the keys in force");
                false
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let Some(http) = &self.http else {
            return Err("no HTTP client".into());
        };
        let jwks_uri = match &self.source {
            Source::Uri(uri) => uri.clone(),
            Source::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let discovery: Value = serde_json::from_slice(&get(http, &url).await?)
                    .map_err(|e| format!("{url}: {e}"))?;
                // OpenID Connect Discovery §4.3: the document must name
                // the issuer it was read for.
                if discovery["issuer"].as_str() != Some(issuer.as_str()) {
                    return Err(format!("{url} names another issuer"));
                }
                let uri = discovery["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| format!("{url} has no jwks_uri"))?
                    .to_owned();
                crate::auth::oidc::require_secure(&uri).map_err(|e| e.to_string())?;
                uri
            }
            Source::Fixed | Source::File(_) => return Err("not read over HTTP".into()),
        };
        let body = get(http, &jwks_uri).await?;
        let text = std::str::from_utf8(&body).map_err(|e| format!("{jwks_uri}: {e}"))?;
        KeySet::usable_from_jwks_json(text).map_err(|e| format!("{jwks_uri}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_by_name_path_or_namespace() {
        let claims = serde_json::json!({
            "realm_access": {"roles": ["data-admins", "research-staff", "admin"]},
            "realm_access.roles": ["steward"],
            "https://example.org/org": "Example University",
            "groups": "Team north",
            "roles": "researcher",
        });
        let map = ClaimMap {
            roles: "realm_access.roles".into(),
            groups: "groups".into(),
            organisation: vec!["https://example.org/org".into()],
            roles_map: [
                ("data-admins".to_owned(), Role::Admin),
                ("research-staff".to_owned(), Role::Researcher),
            ]
            .into(),
        };
        // Mapped names only (the provider's own `admin` is not Sluice's),
        // from the nested claim, not the top-level one that shadows it.
        assert_eq!(
            map.roles(&claims),
            [Role::Admin, Role::Researcher].into_iter().collect()
        );
        let unmapped = ClaimMap {
            roles_map: [("research-staff".to_owned(), Role::Researcher)].into(),
            ..map.clone()
        };
        assert_eq!(
            unmapped.roles(&claims),
            [Role::Researcher].into_iter().collect()
        );
        // One string is one group, spaces and all.
        assert_eq!(map.groups(&claims), ["Team north"]);
        assert_eq!(
            map.organisation(&claims).as_deref(),
            Some("Example University")
        );
        assert_eq!(
            ClaimMap::default().roles(&claims),
            [Role::Researcher].into_iter().collect()
        );
    }
}
