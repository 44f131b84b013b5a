//! How the command line gets a token from an identity provider without a
//! browser on the same machine: the OAuth 2.0 device authorization grant
//! (RFC 8628), and the refresh of that token (RFC 6749 §6) before it
//! expires. The server tells the CLI which provider and public client to
//! use (`GET /v1/login`, from `auth.login`); the person opens the
//! provider's page on any device, signs in there and enters the code shown.
//!
//! The provider is reached as the server reaches it: HTTPS (plain HTTP on
//! loopback only), no redirects, bounded answers.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use sluice::auth::oidc::{get_bounded, https_client, require_secure, send_bounded};
use sluice::config::LoginSettings;

/// Largest answer read from the provider.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// RFC 8628 §3.5: `slow_down` adds five seconds to the polling interval.
const SLOW_DOWN_SECS: u64 = 5;
/// Polling interval when the provider names none (RFC 8628 §3.2).
const DEFAULT_INTERVAL_SECS: u64 = 5;
/// Longest wait between polls, and longest a code is waited for, whatever
/// the provider says (a hostile one could say "forever").
const MAX_INTERVAL_SECS: u64 = 60;
const MAX_CODE_SECS: u64 = 30 * 60;

/// Where the flow talks to the provider, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    issuer: String,
    pub device_authorization_endpoint: Option<String>,
    pub token_endpoint: String,
    /// RFC 7009: where `sluice logout` revokes the refresh token.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

/// What the person is asked to do (RFC 8628 §3.3).
#[derive(Debug, Deserialize)]
pub struct Prompt {
    device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    expires_in: u64,
    #[serde(default)]
    interval: Option<u64>,
}

/// A token answer (RFC 6749 §5.1).
#[derive(Debug, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// What the CLI keeps to renew a token without asking the person again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Refresh {
    pub token: String,
    pub token_endpoint: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
}

/// An error answer (RFC 6749 §5.2).
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The provider's client: its timeouts and no redirects, the system's CAs.
pub fn client() -> anyhow::Result<reqwest::Client> {
    https_client(None).map_err(anyhow::Error::msg)
}

/// Reads the provider's discovery document (OpenID Connect Discovery §4),
/// which must name the issuer it was read from.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> anyhow::Result<Endpoints> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    require_secure(&url)?;
    let body = get_bounded(http.get(&url), MAX_ANSWER_BYTES)
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let endpoints: Endpoints =
        serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    if endpoints.issuer != issuer {
        anyhow::bail!(
            "{url} names the issuer '{}', not '{issuer}'",
            endpoints.issuer
        );
    }
    // An HTTPS provider's endpoints are HTTPS too: plain HTTP to loopback
    // is for a provider on this machine, not a way for a remote one to make
    // the CLI post to a local service.
    let https = issuer.starts_with("https://");
    for endpoint in [&endpoints.token_endpoint]
        .into_iter()
        .chain(endpoints.device_authorization_endpoint.as_ref())
        .chain(endpoints.revocation_endpoint.as_ref())
    {
        require_secure(endpoint)?;
        if https && !endpoint.starts_with("https://") {
            anyhow::bail!("{url}: the endpoint {endpoint} is not https");
        }
    }
    Ok(endpoints)
}

/// A token asked for another resource would be handed to this server,
/// which could use it there (RFC 8628 §5.4, remote phishing): the
/// resource, when the server names one, must be the server itself.
pub fn check_resource(server: &str, login: &LoginSettings) -> anyhow::Result<()> {
    match &login.resource {
        Some(resource) if resource.trim_end_matches('/') != server.trim_end_matches('/') => {
            anyhow::bail!(
                "{server} asks you to sign in for another server ({}): refused",
                printable(resource)
            )
        }
        _ => Ok(()),
    }
}

/// Starts the flow: the code the person enters, and where.
pub async fn start(
    http: &reqwest::Client,
    login: &LoginSettings,
    endpoints: &Endpoints,
) -> anyhow::Result<Prompt> {
    let Some(endpoint) = &endpoints.device_authorization_endpoint else {
        anyhow::bail!(
            "the identity provider {} offers no device sign-in (no device_authorization_endpoint)",
            login.issuer
        );
    };
    let mut form = vec![
        ("client_id", login.client_id.clone()),
        ("scope", login.scopes.join(" ")),
    ];
    if let Some(resource) = &login.resource {
        form.push(("resource", resource.clone()));
    }
    match post(http, endpoint, &form).await? {
        Ok(prompt) => Ok(prompt),
        Err(e) => anyhow::bail!("the identity provider refused to start: {}", describe(&e)),
    }
}

/// Polls the token endpoint until the person has approved (or refused, or
/// the code has expired).
pub async fn finish(
    http: &reqwest::Client,
    login: &LoginSettings,
    endpoints: &Endpoints,
    prompt: &Prompt,
) -> anyhow::Result<Tokens> {
    let deadline = Instant::now() + Duration::from_secs(prompt.expires_in.min(MAX_CODE_SECS));
    let mut interval = prompt
        .interval
        .unwrap_or(DEFAULT_INTERVAL_SECS)
        .clamp(1, MAX_INTERVAL_SECS);
    let mut form = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
        ),
        ("device_code", prompt.device_code.clone()),
        ("client_id", login.client_id.clone()),
    ];
    // RFC 8707 §2.2: named again, so a provider that would otherwise mint
    // a token for its own userinfo endpoint mints it for Sluice.
    if let Some(resource) = &login.resource {
        form.push(("resource", resource.clone()));
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(Duration::from_secs(interval).min(left)).await;
        if Instant::now() >= deadline {
            anyhow::bail!("the code expired before it was approved: run `sluice login` again");
        }
        match post(http, &endpoints.token_endpoint, &form).await? {
            Ok(tokens) => return Ok(tokens),
            Err(e) => match e.error.as_str() {
                "authorization_pending" => {}
                "slow_down" => interval = (interval + SLOW_DOWN_SECS).min(MAX_INTERVAL_SECS),
                "access_denied" => {
                    anyhow::bail!("the sign-in was refused at the identity provider")
                }
                "expired_token" => {
                    anyhow::bail!(
                        "the code expired before it was approved: run `sluice login` again"
                    )
                }
                _ => anyhow::bail!("the identity provider refused: {}", describe(&e)),
            },
        }
    }
}

/// Renews a token with its refresh token; the provider may rotate the
/// refresh token too (kept when it does not).
pub async fn refresh(
    http: &reqwest::Client,
    refresh: &Refresh,
) -> anyhow::Result<(Tokens, Refresh)> {
    require_secure(&refresh.token_endpoint)?;
    let mut form = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", refresh.token.clone()),
        ("client_id", refresh.client_id.clone()),
    ];
    if let Some(resource) = &refresh.resource {
        form.push(("resource", resource.clone()));
    }
    match post::<Tokens>(http, &refresh.token_endpoint, &form).await? {
        Ok(tokens) => {
            let next = Refresh {
                token: tokens
                    .refresh_token
                    .clone()
                    .unwrap_or_else(|| refresh.token.clone()),
                ..refresh.clone()
            };
            Ok((tokens, next))
        }
        Err(e) => anyhow::bail!("{}", describe(&e)),
    }
}

/// A form POST to the provider: its success answer, or its error answer.
async fn post<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, String)],
) -> anyhow::Result<Result<T, ErrorAnswer>> {
    let request = http
        .post(endpoint)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(form);
    let (status, body) = send_bounded(request, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| anyhow::anyhow!("{endpoint}: {e}"))?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map(Ok)
            .map_err(|e| anyhow::anyhow!("{endpoint}: {e}"));
    }
    serde_json::from_slice(&body)
        .map(Err)
        .map_err(|_| anyhow::anyhow!("{endpoint} answered {status}"))
}

/// Ends a kept sign-in at the provider (RFC 7009), where it offers that:
/// a copy of the credentials file then renews nothing.
pub async fn revoke(http: &reqwest::Client, refresh: &Refresh) -> anyhow::Result<()> {
    let Some(endpoint) = &refresh.revocation_endpoint else {
        return Ok(());
    };
    require_secure(endpoint)?;
    let form = [
        ("token", refresh.token.clone()),
        ("token_type_hint", "refresh_token".to_owned()),
        ("client_id", refresh.client_id.clone()),
    ];
    let (status, _) = send_bounded(http.post(endpoint).form(&form), MAX_ANSWER_BYTES)
        .await
        .map_err(|e| anyhow::anyhow!("{endpoint}: {e}"))?;
    if !status.is_success() {
        anyhow::bail!("{endpoint} answered {status}");
    }
    Ok(())
}

fn describe(e: &ErrorAnswer) -> String {
    printable(&match &e.error_description {
        Some(text) => format!("{} ({text})", e.error),
        None => e.error.clone(),
    })
}

/// Text from a provider or server made safe to show on a terminal: control
/// characters (escape sequences that could redraw the screen, retitle the
/// window or hide a line) are dropped.
pub fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_may_ask_for_tokens_for_itself_only() {
        let login = |resource: Option<&str>| LoginSettings {
            issuer: "https://id.example".into(),
            client_id: "sluice-cli".into(),
            scopes: vec!["openid".into()],
            resource: resource.map(str::to_owned),
        };
        let server = "https://data.example.org";
        assert!(check_resource(server, &login(None)).is_ok());
        assert!(check_resource(server, &login(Some("https://data.example.org/"))).is_ok());
        let err = check_resource(server, &login(Some("https://other.example.org")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("another server"), "{err}");
    }

    #[test]
    fn what_a_provider_says_cannot_drive_the_terminal() {
        assert_eq!(
            printable("ABCD\u{1b}[2K\u{1b}]0;pwned\u{7}-EFGH\r\n"),
            "ABCD[2K]0;pwned-EFGH"
        );
    }
}
