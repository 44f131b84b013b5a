//! The `sluice` command: serve, mint development tokens, make demo data.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod access;
mod credentials;
mod device_login;
mod remote;
mod sign_in;
mod steward;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::auth::Role;
use sluice::auth::dev::{DevKey, TokenRequest};
use sluice::config::Settings;
use sluice::startup::Application;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Open-dataset access gateway")]
struct Cli {
    /// Settings file (default: config/sluice.toml in the current folder);
    /// SLUICE_* environment variables override it. Commands given --server
    /// need none.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the catalogue over HTTPS.
    Serve,
    /// Mint a development token (needs auth.dev_mode; signs with the key in the state folder).
    Token {
        /// The subject (who the token is for), e.g. alice@uni.example.
        #[arg(long)]
        sub: String,
        /// researcher, steward or admin; repeat for several.
        #[arg(long = "role")]
        roles: Vec<Role>,
        /// A group the subject belongs to (grants may name groups); repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The subject's organisation (grants may name organisations; stewards publish as it).
        #[arg(long)]
        org: Option<String>,
        /// Lifetime in seconds (at least 60).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(60..))]
        ttl: i64,
    },
    /// Check or explain the policy file.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// List, approve or reject researchers' access requests.
    Access {
        #[command(subcommand)]
        command: access::AccessCommand,
    },
    /// Verify or read the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Sign in to a server and keep its token: through the server's identity
    /// provider (a code to approve in a browser on any device) when it offers
    /// that, else a personal token pasted on standard input. Later commands
    /// with that --server use it, renewed when it can be.
    Login {
        /// Paste a token (a personal token) even where the provider's sign-in is offered.
        #[arg(long)]
        paste: bool,
        #[command(flatten)]
        target: remote::Target,
    },
    /// Print the token kept for a server (renewed first if about to
    /// expire): `export SLUICE_TOKEN=$(sluice print-token --server URL)`.
    PrintToken {
        #[command(flatten)]
        target: remote::Target,
    },
    /// Forget the token kept for a server.
    Logout {
        #[command(flatten)]
        target: remote::Target,
    },
    /// Make, list or revoke your personal access tokens on a server.
    Tokens {
        #[command(subcommand)]
        command: sign_in::TokensCommand,
    },
    /// Register a dataset and/or upload a new version of it from a file.
    Register(steward::RegisterArgs),
    /// List, show or retire datasets.
    Datasets {
        #[command(subcommand)]
        command: steward::DatasetsCommand,
    },
    /// Decode one upload (run by the server in a limited process; reads a job
    /// on stdin, answers on stdout).
    #[command(hide = true, name = "ingest-worker")]
    IngestWorker,
    /// Write the synthetic sample datasets (deterministic for a seed).
    DemoData {
        /// Rows of the hospital admissions table (the others scale with it).
        #[arg(long, default_value_t = 2000)]
        rows: u64,
        /// Catalogue folder to write into.
        #[arg(long, default_value = "datasets")]
        out: PathBuf,
        /// Seed of the generator: the same seed writes the same files.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Only this dataset (default: all).
        #[arg(long)]
        only: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every chain link and every signed checkpoint; report every
    /// problem by file and line.
    Verify {
        /// Audit folder (default: audit.dir, else <state>/audit), or where
        /// replicas ship their trails (`s3://bucket/audit`): then every
        /// replica's chain is checked.
        dir: Option<PathBuf>,
        /// The checkpoint key's public half (base64, as in each checkpoint's
        /// log line), when checking a copy away from the server's key file.
        #[arg(long)]
        public_key: Option<String>,
        /// A head hash from a checkpoint kept elsewhere (an external log):
        /// the chain must still contain it. For shipped trails, one per
        /// replica as REPLICA=HASH (repeat the option).
        #[arg(long)]
        head: Vec<String>,
        /// For shipped trails: a replica whose trail must be there (repeat
        /// for each). Without them, a replica's folder deleted from the
        /// bucket would not be noticed.
        #[arg(long = "replica")]
        replicas: Vec<String>,
    },
    /// Print the newest records, one JSON line each.
    Tail {
        /// How many of the newest records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Audit folder (default: audit.dir, else <state>/audit).
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file against the catalogue.
    Check {
        /// Policy file (default: storage.policy).
        file: Option<PathBuf>,
    },
    /// Check a policy file and put it in force: it replaces the live file
    /// (storage.policy) atomically, sealed as whole, if it has no error.
    /// Apply the live file itself after editing it by hand.
    Apply {
        /// The new policy (the live file itself, to seal an edit made in place).
        file: PathBuf,
    },
    /// What a caller would get of a dataset, in words and as JSON.
    Explain {
        /// The caller's subject (omit for an anonymous caller).
        #[arg(long)]
        sub: Option<String>,
        /// The caller's roles: researcher, steward or admin; repeat for several.
        #[arg(long = "role")]
        roles: Vec<Role>,
        /// The caller's groups; repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The caller's organisation.
        #[arg(long)]
        org: Option<String>,
        /// The dataset's id.
        #[arg(long)]
        dataset: String,
        /// The grant the caller would choose, if several match.
        #[arg(long)]
        grant: Option<String>,
        /// Policy file (default: storage.policy).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Files and folders Sluice creates (state, audit, requests, snapshots,
    // keys, uploads) are its own: owner-only, whatever the shell's umask.
    // Files it replaces keep their mode (`durable::replace_file`).
    // SAFETY: sets the process's file-creation mask before any thread starts.
    unsafe {
        libc::umask(0o077);
    }
    let cli = Cli::parse();
    sluice::telemetry::init(cli.log_json);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Checks one audit folder and says what it found: every problem, not
/// only the first.
fn verify_audit_folder(dir: &Path, anchor: &sluice::audit::Anchor) -> anyhow::Result<()> {
    let (report, problems) = sluice::audit::verify_all(dir, anchor);
    for torn in &report.torn {
        eprintln!("warning: {torn}: torn record (a write that never completed); not counted");
    }
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    if anchor.head.is_none() {
        eprintln!(
            "note: without --head (a head kept off this machine: the log stream's `audit checkpoint` lines, or the bucket), a trail cut back to one of its own checkpoints, or wiped with them, cannot be detected"
        );
    }
    anyhow::ensure!(
        problems.is_empty(),
        "{}: {} problems in the audit trail (listed above)",
        dir.display(),
        problems.len()
    );
    println!(
        "{}: ok, {} records in {} files, chain intact; {} signed checkpoints, {} records sealed, {} unsealed (after the newest checkpoint)",
        dir.display(),
        report.records,
        report.files,
        report.checkpoints,
        report.sealed,
        report.records - report.sealed
    );
    Ok(())
}

/// The settings file named by --config or SLUICE_CONFIG, else the default.
fn config_path(config: &Option<PathBuf>) -> PathBuf {
    config
        .clone()
        .unwrap_or_else(|| PathBuf::from("config/sluice.toml"))
}

/// Settings for a command that works on this machine's folders: the file
/// must exist, and when it does not, say once where it was looked for.
fn local_settings(config: &Option<PathBuf>) -> anyhow::Result<Settings> {
    let path = config_path(config);
    if !path.exists() {
        anyhow::bail!(
            "no settings file at {}: run sluice from the folder that holds config/ (the repository), or pass --config FILE (or set SLUICE_CONFIG)",
            path.display()
        );
    }
    Ok(Settings::load(&path)?)
}

/// Settings for a command that may talk to a server: with --server and no
/// settings file named or present, the defaults serve (only the default CA
/// path is read from them).
fn client_settings(config: &Option<PathBuf>, server: bool) -> anyhow::Result<Settings> {
    if server && config.is_none() && !config_path(config).exists() {
        return Ok(Settings::client_defaults()?);
    }
    local_settings(config)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            let settings = local_settings(&cli.config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let banner = first_start_banner(&settings);
                let app = Application::build(settings).await?;
                eprintln!("{}", banner(app.port(), app.is_https()));
                app.run_until_stopped().await?;
                anyhow::Ok(())
            })
        }
        Command::Token {
            sub,
            roles,
            groups,
            org,
            ttl,
        } => {
            let settings = local_settings(&cli.config)?;
            anyhow::ensure!(
                settings.auth.dev_mode,
                "auth.dev_mode is off in {}: tokens come from your identity provider",
                config_path(&cli.config).display()
            );
            let key = DevKey::load_or_create(&settings.storage.state)?;
            let token = key.mint(&TokenRequest {
                sub,
                roles,
                groups,
                organisation: org,
                ttl_secs: ttl,
                issuer: settings.auth.issuer,
                audience: settings.auth.audience,
            })?;
            println!("{token}");
            Ok(())
        }
        Command::Policy { command } => {
            let settings = local_settings(&cli.config)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(policy_command(settings, command))
        }
        Command::Access { command } => {
            let settings = local_settings(&cli.config)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(access::run(settings, command))
        }
        Command::Audit { command } => {
            let settings = local_settings(&cli.config)?;
            let default_dir = settings.audit.dir_in(&settings.storage.state);
            match command {
                AuditCommand::Verify {
                    dir,
                    public_key,
                    head,
                    replicas,
                } => {
                    let dir = dir.unwrap_or(default_dir);
                    let public_key = match public_key {
                        Some(text) => Some(
                            sluice::audit::checkpoint::public_key_from_base64(&text).ok_or_else(
                                || anyhow::anyhow!("--public-key: not a base64 Ed25519 public key"),
                            )?,
                        ),
                        None => {
                            // The server's own key, if this machine has it.
                            let path = settings.audit.signing_key_in(&settings.storage.state);
                            path.exists()
                                .then(|| {
                                    sluice::audit::checkpoint::SigningKey::load_or_create(&path)
                                })
                                .transpose()?
                                .map(|k| k.public_key().to_vec())
                        }
                    };
                    if public_key.is_none() {
                        eprintln!(
                            "warning: no checkpoint key (audit.signing_key or --public-key): checking the chain only, which cannot catch a cut or rewritten tail"
                        );
                    }
                    let text = dir.to_string_lossy().into_owned();
                    if !text.contains("://") {
                        anyhow::ensure!(
                            head.len() <= 1 && replicas.is_empty(),
                            "one --head and no --replica for a local folder"
                        );
                        let head = head.into_iter().next();
                        return verify_audit_folder(
                            &dir,
                            &sluice::audit::Anchor { public_key, head },
                        );
                    }
                    // REPLICA=HASH anchors, by replica.
                    let mut heads = std::collections::BTreeMap::new();
                    for pair in &head {
                        let (replica, hash) = pair.split_once('=').ok_or_else(|| {
                            anyhow::anyhow!("--head {pair}: for shipped trails, write REPLICA=HASH")
                        })?;
                        heads.insert(replica.to_owned(), hash.to_owned());
                    }
                    if replicas.is_empty() {
                        eprintln!(
                            "warning: no --replica named: checking the replicas found in the bucket, so a deleted replica folder would not be noticed"
                        );
                    }
                    // Every replica's shipped trail, from the bucket.
                    let copy =
                        std::env::temp_dir().join(format!("sluice-audit-{}", uuid::Uuid::new_v4()));
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let result = runtime
                        .block_on(sluice::audit::ship::download(&text, &copy))
                        .and_then(|folders| {
                            let name = |f: &PathBuf| {
                                f.file_name().unwrap_or_default().to_string_lossy().into_owned()
                            };
                            let found: Vec<String> = folders.iter().map(name).collect();
                            for expected in replicas.iter().chain(heads.keys()) {
                                anyhow::ensure!(
                                    found.contains(expected),
                                    "replica {expected}: no audit files in the bucket (deleted, or never shipped)"
                                );
                            }
                            for folder in &folders {
                                let anchor = sluice::audit::Anchor {
                                    public_key: public_key.clone(),
                                    head: heads.get(&name(folder)).cloned(),
                                };
                                verify_audit_folder(folder, &anchor)
                                    .with_context(|| format!("replica {}", name(folder)))?;
                            }
                            Ok(())
                        });
                    let _ = std::fs::remove_dir_all(&copy);
                    result
                }
                AuditCommand::Tail { lines, dir } => {
                    let records = sluice::audit::read_all(&dir.unwrap_or(default_dir))?;
                    for record in &records[records.len().saturating_sub(lines)..] {
                        println!("{}", serde_json::to_string(record)?);
                    }
                    Ok(())
                }
            }
        }
        Command::Login { paste, target } => {
            let settings = client_settings(&cli.config, true)?;
            sign_in::login(settings, target, paste)
        }
        Command::PrintToken { target } => {
            let settings = client_settings(&cli.config, true)?;
            sign_in::print_token(settings, target)
        }
        Command::Logout { target } => sign_in::logout(target),
        Command::Tokens { command } => {
            let settings = client_settings(&cli.config, true)?;
            sign_in::tokens(settings, command)
        }
        Command::Register(args) => {
            let settings = client_settings(&cli.config, args.has_server())?;
            steward::register(settings, args)
        }
        Command::Datasets { command } => {
            let settings = client_settings(&cli.config, command.has_server())?;
            steward::datasets(settings, command)
        }
        Command::IngestWorker => Ok(sluice::ingest::sandbox::serve_one()?),
        Command::DemoData {
            rows,
            out,
            seed,
            only,
        } => {
            let written = sluice::demo_data::write_all(&out, rows, seed, only.as_deref())?;
            for (id, rows) in written {
                eprintln!("wrote {id}: {rows} rows");
            }
            Ok(())
        }
    }
}

async fn policy_command(settings: Settings, command: PolicyCommand) -> anyhow::Result<()> {
    use sluice::auth::{Caller, Principal};
    use sluice::policy::{self, Policy};

    let catalog = sluice::startup::load_configured_catalog(&settings.storage).await?;
    let file_of = |file: Option<PathBuf>| file.unwrap_or_else(|| settings.storage.policy.clone());
    match command {
        PolicyCommand::Check { file } => {
            let file = file_of(file);
            let name = file.display().to_string();
            let policy = Policy::load(&file)?;
            let warnings = policy.check(&catalog, &name, settings.limits.max_filter_bytes)?;
            for warning in &warnings {
                eprintln!("warning: {name}: {warning}");
            }
            let today = time::OffsetDateTime::now_utc().date();
            for grant in policy.expired(today) {
                eprintln!(
                    "warning: {name}: grant '{}' expired on {} (it answers grant-expired)",
                    grant.id,
                    grant.expires.map(|d| d.to_string()).unwrap_or_default()
                );
            }
            let sealed =
                std::fs::read_to_string(&file).is_ok_and(|text| policy::seal::is_sealed(&text));
            if !sealed {
                eprintln!(
                    "note: {name} is not sealed: the server does not put it in force until `sluice policy apply {name}`"
                );
            }
            println!(
                "{name}: ok ({} grants, {} visa grants, {} warnings, disclosure min_count={} round_to={})",
                policy.grants.len(),
                policy.visa_grants.len(),
                warnings.len(),
                policy.disclosure.min_count,
                policy.disclosure.round_to
            );
            Ok(())
        }
        PolicyCommand::Apply { file } => {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {name}"))?;
            let target = &settings.storage.policy;
            let _lock = policy::apply::EditLock::take(&settings.storage.state)
                .context("could not lock the policy for editing")?;
            let applied =
                policy::apply::apply(&text, target, &catalog, settings.limits.max_filter_bytes)
                    .with_context(|| format!("{name} was not applied; nothing was changed"))?;
            for warning in &applied.warnings {
                eprintln!("warning: {name}: {warning}");
            }
            println!(
                "applied {name} to {} ({} grants, sealed); the server puts it in force at its next policy check",
                target.display(),
                applied.policy.grants.len()
            );
            Ok(())
        }
        PolicyCommand::Explain {
            sub,
            roles,
            groups,
            org,
            dataset,
            grant,
            file,
        } => {
            let file = file_of(file);
            let policy = Policy::load(&file)?;
            // Warnings (shown by `policy check`) do not change the decision.
            policy.check(
                &catalog,
                &file.display().to_string(),
                settings.limits.max_filter_bytes,
            )?;
            let id = sluice::domain::DatasetId::parse(&dataset)?;
            let dataset = catalog
                .get(&id)
                .ok_or_else(|| anyhow::anyhow!("no dataset '{id}' in the catalogue"))?;
            let caller = match sub {
                None => Caller::Anonymous,
                Some(sub) => Caller::Principal(Principal {
                    sub,
                    roles: roles.into_iter().collect(),
                    groups: groups.into_iter().collect(),
                    organisation: org,
                    visas: Vec::new(),
                    expires: None,
                    scope: None,
                }),
            };
            let today = time::OffsetDateTime::now_utc().date();
            let decision =
                policy::evaluate(&policy, &caller, &dataset.manifest, grant.as_deref(), today);
            print!("{}", policy::describe(&dataset.manifest, &decision));
            if let policy::Decision::Allow(plan) = &decision
                && let Some(budget) = &plan.budget
            {
                let shared = settings
                    .storage
                    .shared_url(sluice::config::shared_folders::PRIVACY_LEDGER);
                let (spent, ledger) = match shared {
                    // Replicas share the ledger in the bucket.
                    Some(url) => {
                        let store = sluice::catalog::rooted::open_url(&url)?;
                        let ledger =
                            sluice::dp::Ledger::shared(store, tokio::runtime::Handle::current());
                        (ledger.spent_now(&budget.account).await?, url)
                    }
                    None => (
                        sluice::dp::Ledger::read_totals(&settings.storage.state)?
                            .get(&budget.account)
                            .copied()
                            .unwrap_or(0.0),
                        settings.storage.state.display().to_string(),
                    ),
                };
                println!(
                    "privacy budget: spent {spent} of {}, {} left (ledger in {ledger})",
                    budget.epsilon,
                    (budget.epsilon - spent).max(0.0),
                );
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&policy::decision_json(&decision))?
            );
            Ok(())
        }
    }
}

/// What a new user needs once the server is up: its URL, the CA to trust,
/// a request that works as pasted, and how to get a token. Printed to
/// stderr (the log goes there too), after the listener is bound.
fn first_start_banner(settings: &Settings) -> impl FnOnce(u16, bool) -> String + use<> {
    let listen = settings.server.listen;
    let self_signed = settings.tls.mode == sluice::config::TlsMode::SelfSigned;
    let ca = sluice::tls::DevCertificate::in_state(&settings.storage.state).ca;
    let dev_mode = settings.auth.dev_mode;
    move |port, https| {
        // Absolute, so the lines work from any folder.
        let ca = std::fs::canonicalize(&ca).unwrap_or(ca);
        let host = if listen.ip().is_loopback() || listen.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            listen.ip().to_string()
        };
        let url = format!("{}://{host}:{port}", if https { "https" } else { "http" });
        let trust = if self_signed {
            format!(" --cacert {}", ca.display())
        } else {
            String::new()
        };
        let mut text =
            format!("\nSluice is serving {url}\n  try:  curl{trust} {url}/v1/datasets\n");
        if self_signed {
            text.push_str(&format!(
                "  the development CA (trust it in clients): {}\n",
                ca.display()
            ));
        }
        if dev_mode {
            text.push_str(
                "  a development token:  sluice token --sub you@example.org --role researcher\n",
            );
        }
        text
    }
}
