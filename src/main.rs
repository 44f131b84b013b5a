//! The `sluice` command: serve, mint development tokens, make demo data.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::auth::Role;
use sluice::auth::dev::{DevKey, TokenRequest};
use sluice::config::Settings;
use sluice::startup::Application;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Open-dataset access gateway")]
struct Cli {
    /// Settings file; SLUICE_* environment variables override it.
    #[arg(
        long,
        global = true,
        default_value = "config/sluice.toml",
        env = "SLUICE_CONFIG"
    )]
    config: PathBuf,
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
        #[arg(long)]
        sub: String,
        /// researcher, steward or admin; repeat for several.
        #[arg(long = "role")]
        roles: Vec<Role>,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long)]
        org: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Write the synthetic sample datasets (deterministic for a seed).
    DemoData {
        #[arg(long, default_value_t = 2000)]
        rows: u64,
        #[arg(long, default_value = "datasets")]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Only this dataset (default: all).
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            let settings = Settings::load(&cli.config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let app = Application::build(settings).await?;
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
            let settings = Settings::load(&cli.config)?;
            anyhow::ensure!(
                settings.auth.dev_mode,
                "auth.dev_mode is off in {}: tokens come from your identity provider",
                cli.config.display()
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
