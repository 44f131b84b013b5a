//! A Sluice server as the command line speaks to it: `--server`, `--token`
//! and `--ca` (`Target`), the client that sends the kept sign-in (renewed
//! under the credentials' lock when about to expire), answers read with a
//! bound, and refusals reported with the server's own words.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::{credentials, device_login};
use sluice::config::Settings;
use sluice::domain::DatasetId;
use sluice::ingest::UploadFormat;

/// Where a command acts: a server (URL + token) or the local folder.
#[derive(Args, Clone)]
pub struct Target {
    /// Server base URL, e.g. https://127.0.0.1:8443 (default: the local catalogue folder).
    #[arg(long, env = "SLUICE_SERVER")]
    pub(crate) server: Option<String>,
    /// Bearer token for --server (default: the one `sluice login` stored for it).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// CA certificate to trust for --server (default: <state>/tls/ca.pem when it exists).
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn print(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A path segment with everything but unreserved characters escaped.
pub(crate) fn urlencoding_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub(crate) fn fail(status: u16, body: &Value) -> anyhow::Result<()> {
    bail!(
        "the server answered {status} {}: {}",
        device_login::printable(body["type"].as_str().unwrap_or("")),
        device_login::printable(body["detail"].as_str().unwrap_or(&body.to_string()))
    )
}

/// Largest JSON answer a command reads from a server (a catalogue page, a
/// dataset's description): more is a server gone wrong, not an answer.
pub(crate) const MAX_ANSWER_BYTES: u64 = 32 * 1024 * 1024;

/// A server that does not start answering a short request (who am I, how
/// do I sign in) within this is reported, not waited for.
pub(crate) const SHORT_REQUEST: Duration = Duration::from_secs(30);

/// A server, spoken to with the steward's token.
pub(crate) struct Remote {
    client: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: Option<String>,
}

/// A token sent over plain HTTP is anyone's on the way: only to this
/// machine.
pub(crate) fn refuse_plain_http(base: &str) -> anyhow::Result<()> {
    if sluice::auth::oidc::require_secure(base).is_err() {
        bail!("{base}: a token is only sent over https (plain http only to this machine)");
    }
    Ok(())
}

/// `--server` without a trailing slash: the base of every path, and the
/// key a sign-in is kept under.
fn base_of(target: &Target) -> anyhow::Result<String> {
    Ok(target
        .server
        .as_deref()
        .context("no --server")?
        .trim_end_matches('/')
        .to_owned())
}

/// A kept token is renewed when it expires within this many seconds.
pub(crate) const RENEW_MARGIN_SECS: u64 = 60;

/// Renews the token kept for `base` with its refresh token, holding the
/// credentials' lock: a refresh token may be used once (the provider ends
/// the whole sign-in on reuse), so two commands started together must not
/// both spend it; the second finds the first's new token.
pub(crate) async fn renew(folder: &Path, base: &str) -> anyhow::Result<credentials::Stored> {
    let _lock = credentials::Credentials::lock(folder)?;
    let mut kept = credentials::Credentials::load(folder)?;
    let mut stored = kept
        .get(base)
        .cloned()
        .with_context(|| format!("the sign-in kept for {base} was removed"))?;
    let Some(refresh) = stored.refresh.clone() else {
        return Ok(stored);
    };
    if !stored.expires_within(RENEW_MARGIN_SECS) {
        return Ok(stored);
    }
    let (tokens, next) = device_login::refresh(&device_login::client()?, &refresh)
        .await
        .with_context(|| {
            format!(
                "the sign-in kept for {base} has expired and could not be renewed: run `sluice login --server {base}` again"
            )
        })?;
    stored.token = tokens.access_token;
    stored.expires_at = credentials::expiry(tokens.expires_in);
    stored.refresh = Some(next);
    kept.set(base, stored.clone());
    kept.save(folder)?;
    Ok(stored)
}

impl Remote {
    /// The client for `--server`, with the token to send: `--token` or
    /// `SLUICE_TOKEN`, else the one `sluice login` kept for the server,
    /// renewed first when it is about to expire.
    pub(crate) async fn new(settings: &Settings, target: &Target) -> anyhow::Result<Self> {
        let kept = match credentials::folder() {
            Some(folder) if target.token.is_none() => {
                let base = base_of(target)?;
                credentials::Credentials::load(&folder)
                    .with_context(|| {
                        format!("reading the stored sign-ins in {}", folder.display())
                    })?
                    .get(&base)
                    .cloned()
                    .map(|stored| (folder, base, stored))
            }
            _ => None,
        };
        let Some((folder, base, mut stored)) = kept else {
            return Self::unsigned(settings, target);
        };
        // Checked before a renewal too: no token is made for a channel it
        // may not take.
        refuse_plain_http(&base)?;
        if stored.expires_within(RENEW_MARGIN_SECS) && stored.refresh.is_some() {
            stored = renew(&folder, &base).await?;
        }
        Self::unsigned(
            settings,
            &Target {
                token: Some(stored.token),
                ca: target.ca.clone().or(stored.ca),
                ..target.clone()
            },
        )
    }

    /// The client for `--server` with only the token given on the command
    /// line (or in `SLUICE_TOKEN`), none kept.
    pub(crate) fn unsigned(settings: &Settings, target: &Target) -> anyhow::Result<Self> {
        let base = base_of(target)?;
        let mut builder = reqwest::Client::builder();
        let default_ca = settings.storage.state.join("tls").join("ca.pem");
        let ca = target
            .ca
            .clone()
            .or_else(|| default_ca.exists().then_some(default_ca));
        if let Some(ca) = ca {
            let pem = std::fs::read(&ca).with_context(|| ca.display().to_string())?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        let remote = Self {
            client: builder.build()?,
            base,
            token: target.token.clone(),
        };
        if remote.token.is_some() {
            refuse_plain_http(&remote.base)?;
        }
        Ok(remote)
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub(crate) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    pub(crate) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(u16, Value)> {
        let (status, body) = sluice::auth::oidc::send_bounded(request, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| anyhow::anyhow!("contacting the server: {e}"))?;
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status.as_u16(), body))
    }

    /// Streams the file up with a progress bar.
    pub(crate) async fn upload(
        &self,
        id: &DatasetId,
        file: &Path,
        format: UploadFormat,
        query: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        use futures::StreamExt;
        let handle = tokio::fs::File::open(file)
            .await
            .with_context(|| file.display().to_string())?;
        let size = handle.metadata().await?.len();
        let bar = byte_bar(size, format!("uploading {}", file.display()))?;
        let counter = bar.clone();
        let body =
            tokio_util::io::ReaderStream::with_capacity(handle, 1 << 20).inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    counter.inc(chunk.len() as u64);
                }
            });
        let request = self
            .request(reqwest::Method::PUT, &format!("/v1/datasets/{id}/data"))
            .query(query)
            .header(reqwest::header::CONTENT_TYPE, format.media_type())
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        bar.enable_steady_tick(Duration::from_millis(200));
        let result = self.send(request).await;
        bar.finish_and_clear();
        let (status, answer) = result?;
        if status != 201 {
            fail(status, &answer)?;
        }
        Ok(answer)
    }
}

/// A progress bar in bytes over a long copy or upload.
pub(crate) fn byte_bar(size: u64, message: String) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(size);
    bar.set_style(ProgressStyle::with_template(
        "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )?);
    bar.set_message(message);
    Ok(bar)
}
