//! How a person signs the command line in to a server and manages what it
//! holds: `sluice login` (the provider's device flow, or a pasted personal
//! token), `print-token`, `logout`, and `tokens create|list|revoke`.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::remote::{
    Remote, SHORT_REQUEST, Target, fail, print, refuse_plain_http, runtime, urlencoding_segment,
};
use crate::{credentials, device_login};
use sluice::config::{LoginSettings, Settings};

/// `sluice login`: gets a token for a server and keeps it (see
/// [`credentials`]). The server says how (`GET /v1/login`): through its
/// identity provider's device flow when it offers one, else a personal
/// token pasted on standard input; `--token` or `--paste` take a token as
/// given. Either is checked against the server (`GET /v1/me`) before it is
/// kept.
pub fn login(settings: Settings, target: Target, paste: bool) -> anyhow::Result<()> {
    let server = target
        .server
        .clone()
        .context("name the server: --server URL")?;
    // Whatever the token, it will be sent there: refused before anyone is
    // asked to sign in.
    refuse_plain_http(&server)?;
    runtime()?.block_on(async {
        let anonymous = Target {
            token: None,
            ..target.clone()
        };
        let (token, expires_at, refresh) = match &target.token {
            Some(token) => (token.clone(), None, None),
            None => {
                let offer = if paste {
                    Value::Null
                } else {
                    let client = Remote::unsigned(&settings, &anonymous)?;
                    let (status, offer) = client
                        .send(client.get("/v1/login").timeout(SHORT_REQUEST))
                        .await?;
                    if status != 200 {
                        return fail(status, &offer);
                    }
                    offer
                };
                match serde_json::from_value::<Option<LoginSettings>>(offer["device"].clone())? {
                    Some(device) => sign_in_on_another_device(&server, &device).await?,
                    None => (read_pasted_token(&server, &offer)?, None, None),
                }
            }
        };
        if token.is_empty() {
            bail!("no token given");
        }
        let client = Remote::unsigned(
            &settings,
            &Target {
                token: Some(token.clone()),
                ..target.clone()
            },
        )?;
        let (status, me) = client
            .send(client.get("/v1/me").timeout(SHORT_REQUEST))
            .await?;
        if status != 200 {
            return fail(status, &me);
        }
        let folder =
            credentials::folder().context("no config folder: set SLUICE_CONFIG_DIR or HOME")?;
        let _lock = credentials::Credentials::lock(&folder)?;
        let mut stored = credentials::Credentials::load(&folder)?;
        stored.set(
            &server,
            credentials::Stored {
                token,
                ca: target.ca.clone().map(|ca| ca.canonicalize().unwrap_or(ca)),
                expires_at,
                refresh,
            },
        );
        stored.save(&folder)?;
        eprintln!(
            "signed in to {server} as {} (token expires {}); kept in {}",
            device_login::printable(me["subject"].as_str().unwrap_or("?")),
            device_login::printable(me["token_expires"].as_str().unwrap_or("never")),
            folder.join("credentials.json").display()
        );
        Ok(())
    })
}

/// A token pasted on standard input (a personal token from the server's page).
fn read_pasted_token(server: &str, offer: &Value) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        let page = offer["personal_tokens"]
            .as_str()
            .map(device_login::printable)
            .unwrap_or_else(|| format!("{server}/me/tokens"));
        eprint!("Paste a personal access token for {server} (make one at {page}): ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// The device flow: the person approves on the provider's page, on this
/// or any other device; the token, its expiry and how to renew it.
async fn sign_in_on_another_device(
    server: &str,
    device: &LoginSettings,
) -> anyhow::Result<(String, Option<u64>, Option<device_login::Refresh>)> {
    device_login::check_resource(server, device)?;
    let http = device_login::client()?;
    let endpoints = device_login::discover(&http, &device.issuer).await?;
    let prompt = device_login::start(&http, device, &endpoints).await?;
    eprintln!(
        "To sign in to {server}, open {} and enter the code {}",
        device_login::printable(&prompt.verification_uri),
        device_login::printable(&prompt.user_code)
    );
    if let Some(complete) = &prompt.verification_uri_complete {
        eprintln!("(or open {})", device_login::printable(complete));
    }
    eprintln!(
        "Waiting for you to approve at {} ...",
        device_login::printable(&device.issuer)
    );
    let tokens = device_login::finish(&http, device, &endpoints, &prompt).await?;
    let refresh = tokens
        .refresh_token
        .clone()
        .map(|token| device_login::Refresh {
            token,
            token_endpoint: endpoints.token_endpoint.clone(),
            client_id: device.client_id.clone(),
            resource: device.resource.clone(),
            revocation_endpoint: endpoints.revocation_endpoint.clone(),
        });
    Ok((
        tokens.access_token,
        credentials::expiry(tokens.expires_in),
        refresh,
    ))
}

/// `sluice print-token`: the token a command would send to a server
/// (renewed first when it is about to expire), for `SLUICE_TOKEN` in
/// scripts and notebooks.
pub fn print_token(settings: Settings, target: Target) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = Remote::new(&settings, &target).await?;
        match client.token {
            Some(token) => {
                println!("{token}");
                Ok(())
            }
            None => bail!(
                "no token is kept for {}: run `sluice login --server {0}`",
                client.base
            ),
        }
    })
}

/// `sluice tokens …`: the caller's personal access tokens on a server.
#[derive(Subcommand)]
pub enum TokensCommand {
    /// Make a token (printed once: keep it, or `sluice login` with it).
    Create {
        /// What it is for ("laptop", "cluster job").
        #[arg(long)]
        name: String,
        /// Only this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Only through this grant of yours.
        #[arg(long)]
        grant: Option<String>,
        /// Days it runs (default 30).
        #[arg(long)]
        days: Option<u32>,
        #[command(flatten)]
        target: Target,
    },
    /// List your live tokens (never their secrets), with last use.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke one: refused from now on.
    Revoke {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn tokens(settings: Settings, command: TokensCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let (target, request) = match &command {
            TokensCommand::Create {
                name,
                dataset,
                grant,
                days,
                target,
            } => (
                target,
                json!({"name": name, "dataset": dataset, "grant": grant, "days": days}),
            ),
            TokensCommand::List { target } | TokensCommand::Revoke { target, .. } => {
                (target, Value::Null)
            }
        };
        let client = Remote::new(&settings, target).await?;
        let (status, answer) = match &command {
            TokensCommand::Create { .. } => {
                client
                    .send(client.post("/v1/me/tokens").json(&request))
                    .await?
            }
            TokensCommand::List { .. } => client.send(client.get("/v1/me/tokens")).await?,
            TokensCommand::Revoke { id, .. } => {
                let path = format!("/v1/me/tokens/{}", urlencoding_segment(id));
                client
                    .send(client.request(reqwest::Method::DELETE, &path))
                    .await?
            }
        };
        if !(200..300).contains(&status) {
            return fail(status, &answer);
        }
        if status == 204 {
            eprintln!("revoked");
            return Ok(());
        }
        print(&answer)
    })
}

/// `sluice logout`: forgets the token kept for a server, and ends the
/// sign-in at the identity provider when it came from there (RFC 7009), so
/// a copy of the file renews nothing.
pub fn logout(target: Target) -> anyhow::Result<()> {
    let server = target.server.context("name the server: --server URL")?;
    let folder =
        credentials::folder().context("no config folder: set SLUICE_CONFIG_DIR or HOME")?;
    let _lock = credentials::Credentials::lock(&folder)?;
    let mut stored = credentials::Credentials::load(&folder)?;
    let Some(kept) = stored.get(&server).cloned() else {
        eprintln!("no token was kept for {server}");
        return Ok(());
    };
    if let Some(refresh) = &kept.refresh {
        let revoked = runtime()?
            .block_on(async { device_login::revoke(&device_login::client()?, refresh).await });
        if let Err(e) = revoked {
            eprintln!(
                "could not end the sign-in at the identity provider ({e}); forgetting it here"
            );
        }
    }
    stored.remove(&server);
    stored.save(&folder)?;
    eprintln!("forgot the token for {server}");
    Ok(())
}
