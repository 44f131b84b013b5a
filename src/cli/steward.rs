//! The steward's commands: `sluice register` and `sluice datasets
//! list|show|retire`. Each works either directly on the catalogue folder
//! (when no server has it open: the folder lock says so) or against a
//! server URL with a token, through the same API researchers' tools use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use serde_json::{Value, json};

use crate::remote::{Remote, Target, byte_bar, fail, print, runtime};
use sluice::audit::checkpoint::SigningKey;
use sluice::audit::{AuditLog, Checkpoints, Decision, Event, Outcome, Record};
use sluice::catalog::edit::Registration;
use sluice::catalog::live::Publication;
use sluice::catalog::profile::ProfileKey;
use sluice::catalog::{Dataset, LiveCatalog};
use sluice::config::Settings;
use sluice::domain::DatasetId;
use sluice::ingest::{self, UploadFormat};

#[derive(Args)]
pub struct RegisterArgs {
    /// The data file: Parquet, CSV or Arrow IPC.
    file: PathBuf,
    /// Dataset id (default: the manifest's).
    #[arg(long)]
    id: Option<String>,
    /// Manifest (JSON or TOML) registering the dataset; needed only the first time.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The file's format (default: from its extension).
    #[arg(long, value_parser = ["parquet", "csv", "arrow"])]
    format: Option<String>,
    #[command(flatten)]
    csv: CsvArgs,
    #[command(flatten)]
    target: Target,
}

/// How a CSV file is written (CSV uploads only).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CsvArgs {
    /// CSV field separator: one character, or `tab` (default `,`).
    #[arg(long)]
    delimiter: Option<String>,
    /// CSV quote character (default `"`).
    #[arg(long)]
    quote: Option<String>,
    /// The CSV has no header row: columns are named column_1, column_2, ….
    #[arg(long)]
    no_header: bool,
    /// Texts that mean a missing value, comma-separated (e.g. `NA,n/a`);
    /// empty cells always do.
    #[arg(long)]
    null: Option<String>,
    /// How dates such as 11/03/2024 are written, when the file's values
    /// cannot tell: `%d/%m/%Y` (day first) or `%m/%d/%Y`.
    #[arg(long)]
    date_format: Option<String>,
    /// Give a header cell another column name: `--rename 'Durée (jours)=stay_days'`
    /// (repeatable).
    #[arg(long, value_name = "CELL=COLUMN")]
    rename: Vec<String>,
}

impl CsvArgs {
    /// The options as the upload's query string (empty when none are set).
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(d) = &self.delimiter {
            query.push(("delimiter", d.clone()));
        }
        if let Some(q) = &self.quote {
            query.push(("quote", q.clone()));
        }
        if self.no_header {
            query.push(("header", "absent".to_owned()));
        }
        if let Some(n) = &self.null {
            query.push(("null", n.clone()));
        }
        if let Some(f) = &self.date_format {
            query.push(("date_format", f.clone()));
        }
        if !self.rename.is_empty() {
            query.push(("rename", self.rename.join(",")));
        }
        query
    }

    /// The options for a local upload.
    fn options(&self) -> anyhow::Result<ingest::CsvOptions> {
        let rename = self.rename.join(",");
        ingest::CsvOptions::from_text(ingest::CsvText {
            delimiter: self.delimiter.as_deref(),
            quote: self.quote.as_deref(),
            header: !self.no_header,
            null: self.null.as_deref(),
            date_format: self.date_format.as_deref(),
            rename: Some(rename.as_str()).filter(|r| !r.is_empty()),
        })
        .map_err(anyhow::Error::msg)
    }
}

#[derive(Subcommand)]
pub enum DatasetsCommand {
    /// List datasets (with --server: as the token's holder sees them).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show one dataset's metadata, columns and versions.
    Show {
        /// The dataset's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Edit a dataset's metadata and columns through a server (a change
    /// that widens access waits there for an admin's approval).
    Edit {
        /// The dataset's id.
        id: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// New keywords, comma-separated (replace the old ones).
        #[arg(long)]
        keywords: Option<String>,
        /// Classify a column: `COLUMN=none|quasi-identifier|direct-identifier` (repeatable).
        #[arg(long, value_name = "COLUMN=LEVEL")]
        classify: Vec<String>,
        /// Mask a quasi-identifier: `COLUMN=RULE`, e.g. `age=bucket(10)`, `postcode=prefix(3)` (repeatable).
        #[arg(long, value_name = "COLUMN=RULE")]
        mask: Vec<String>,
        /// Let aggregate-only callers group by this column (repeatable).
        #[arg(long, value_name = "COLUMN")]
        groupable: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Serve a retired dataset again (admins).
    Restore {
        /// The dataset's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Publish the version held for review (a first upload whose columns
    /// the file defined), once its columns are classified.
    Publish {
        /// The dataset's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Write the current version's rows again with today's Parquet writer,
    /// published as the next version (admins; for versions written before
    /// the writer last changed). The old version stays readable by number.
    Rewrite {
        /// The dataset's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Retire a dataset: no longer listed or served; kept on disk and in audit.
    Retire {
        /// The dataset's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// List a dataset's proposed changes (pending and recently decided),
    /// or without an id every dataset's pending ones.
    Changes {
        /// The dataset's id (none: pending changes of every dataset).
        id: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Approve pending change N of a dataset (admins; locally: whoever runs this).
    Approve {
        /// The dataset's id.
        id: String,
        /// The change's number (from `sluice datasets changes ID`).
        n: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Reject pending change N of a dataset, saying why (its stewards see
    /// the reason).
    Reject {
        /// The dataset's id.
        id: String,
        /// The change's number (from `sluice datasets changes ID`).
        n: u64,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

impl RegisterArgs {
    /// Whether the command talks to a server (then it needs no settings file).
    pub fn has_server(&self) -> bool {
        self.target.server.is_some()
    }
}

impl DatasetsCommand {
    /// Whether the command talks to a server (then it needs no settings file).
    pub fn has_server(&self) -> bool {
        let target = match self {
            DatasetsCommand::List { target }
            | DatasetsCommand::Show { target, .. }
            | DatasetsCommand::Retire { target, .. }
            | DatasetsCommand::Publish { target, .. }
            | DatasetsCommand::Rewrite { target, .. }
            | DatasetsCommand::Edit { target, .. }
            | DatasetsCommand::Restore { target, .. }
            | DatasetsCommand::Changes { target, .. }
            | DatasetsCommand::Approve { target, .. }
            | DatasetsCommand::Reject { target, .. } => target,
        };
        target.server.is_some()
    }
}

pub fn register(settings: Settings, args: RegisterArgs) -> anyhow::Result<()> {
    let format = match &args.format {
        Some(name) => match name.as_str() {
            "parquet" => UploadFormat::Parquet,
            "csv" => UploadFormat::Csv,
            _ => UploadFormat::Arrow,
        },
        None => UploadFormat::from_extension(&args.file).with_context(|| {
            format!(
                "cannot tell the format of {} from its extension: pass --format",
                args.file.display()
            )
        })?,
    };
    // The manifest as sent to a server, and as checked here.
    let (manifest_body, registration) = args
        .manifest
        .as_deref()
        .map(read_manifest)
        .transpose()?
        .unzip();
    let id = match (&args.id, &registration) {
        (Some(id), Some(r)) if id != r.id.as_str() => {
            bail!("--id {id} differs from the manifest's id '{}'", r.id)
        }
        (Some(id), _) => DatasetId::parse(id)?,
        (None, Some(r)) => r.id.clone(),
        (None, None) => bail!("name the dataset with --id (and --manifest the first time)"),
    };
    let runtime = runtime()?;
    match &args.target.server {
        Some(_) => runtime.block_on(async {
            let client = Remote::new(&settings, &args.target).await?;
            if let Some(body) = &manifest_body {
                let (status, answer) = client.send(client.post("/v1/datasets").json(body)).await?;
                if status == 409 {
                    eprintln!("dataset '{id}' is already registered; uploading a new version");
                } else if !(200..300).contains(&status) {
                    return fail(status, &answer);
                }
            }
            let answer = client
                .upload(&id, &args.file, format, &args.csv.query())
                .await?;
            print(&answer)
        }),
        None => runtime.block_on(async {
            let catalog = open_local(&settings).await?;
            let audit = LocalAudit::open(&settings)?;
            audit.journal(&catalog);
            let existing = catalog.snapshot().get(&id).cloned();
            let dataset = match (existing, registration) {
                (Some(d), _) => d,
                (None, Some(r)) => {
                    let manifest = r.into_manifest().map_err(anyhow::Error::msg)?;
                    let registered = catalog
                        .register(manifest, settings.limits.max_datasets_per_publisher)
                        .await?;
                    audit.record(Event::Register, &id, None).await?;
                    registered
                }
                (None, None) => bail!("no dataset '{id}' yet: pass --manifest to register it"),
            };
            let staging = catalog.staging().await?;
            // Staged like a server upload: the worker reads a private copy
            // that cannot change under it.
            let input = staging.body();
            copy_with_progress(&args.file, &input).await?;
            let spinner = spinner(&format!("normalising {}", args.file.display()));
            let mut ingest_settings = settings.ingest.clone();
            if ingest_settings.worker.is_none() {
                ingest_settings.worker = Some(std::env::current_exe()?);
            }
            let body = ingest::Body {
                path: input,
                format,
                csv: args.csv.options()?,
            };
            let key = profile_key(&settings)?;
            let result = ingest::upload(
                &catalog,
                &dataset,
                staging,
                body,
                &ingest_settings,
                settings.limits.batch_rows,
                Publication {
                    by: &local_subject(),
                    key: &key,
                    based_on: None,
                },
            )
            .await;
            spinner.finish_and_clear();
            let (published, summary) = result?;
            audit
                .record(Event::Upload, &id, Some(published.version))
                .await?;
            let version = published
                .dataset
                .versions
                .get(&published.version)
                .context("the uploaded version is missing")?;
            if let Some(change) = published.change {
                eprintln!(
                    "version {} of {id} is held for an admin, not published: its data looks to hold what a more protected column held ({}). Readers keep version {} until an admin runs `sluice datasets approve {id} {change}`",
                    published.version,
                    published.findings.join("; "),
                    published.dataset.manifest.version,
                );
            } else if published.held {
                eprintln!(
                    "version {} of {id} is held for review: its columns came from the file and are classified 'none'. Classify the sensitive ones in {id}/dataset.toml (or PATCH through a server), then run `sluice datasets publish {id}`",
                    published.version
                );
            }
            print(&json!({
                "id": id,
                "version": published.version,
                "in_review": published.held,
                "change": published.change,
                "findings": published.findings,
                "rows": version.rows,
                "bytes": version.bytes,
                "schema": summary.columns,
                "renamed_columns": summary.renamed,
                "inferred": summary.inferred,
                "warnings": summary.warnings,
                "added_columns": published.added_columns,
            }))
        }),
    }
}

pub fn datasets(settings: Settings, command: DatasetsCommand) -> anyhow::Result<()> {
    let runtime = runtime()?;
    runtime.block_on(async {
        match command {
            DatasetsCommand::List { target } if target.server.is_some() => {
                let client = Remote::new(&settings, &target).await?;
                let mut token: Option<String> = None;
                loop {
                    let mut path = "/v1/datasets?page_size=100".to_owned();
                    if let Some(t) = &token {
                        path.push_str(&format!("&page_token={t}"));
                    }
                    let (status, page) = client.send(client.get(&path)).await?;
                    if status != 200 {
                        return fail(status, &page);
                    }
                    for d in page["datasets"].as_array().into_iter().flatten() {
                        println!(
                            "{}\t{}\tv{}\t{}\t{}",
                            d["id"].as_str().unwrap_or(""),
                            d["status"].as_str().unwrap_or(""),
                            d["version"],
                            d["tier"].as_str().unwrap_or(""),
                            d["title"].as_str().unwrap_or("")
                        );
                    }
                    match page["next_page_token"].as_str() {
                        Some(next) => token = Some(next.to_owned()),
                        None => return Ok(()),
                    }
                }
            }
            DatasetsCommand::List { .. } => {
                let catalog = load_local(&settings).await?;
                for d in catalog.datasets() {
                    println!(
                        "{}\t{}\tv{}\t{}\t{}",
                        d.id(),
                        d.status(),
                        d.manifest.version,
                        d.manifest.tier.as_str(),
                        d.manifest.title
                    );
                }
                Ok(())
            }
            DatasetsCommand::Show { id, target } if target.server.is_some() => {
                let client = Remote::new(&settings, &target).await?;
                let id = DatasetId::parse(&id)?;
                let (status, body) = client
                    .send(client.get(&format!("/v1/datasets/{id}")))
                    .await?;
                if status != 200 {
                    return fail(status, &body);
                }
                print(&body)
            }
            DatasetsCommand::Show { id, .. } => {
                let catalog = load_local(&settings).await?;
                let id = DatasetId::parse(&id)?;
                let d = catalog
                    .get(&id)
                    .with_context(|| format!("no dataset '{id}'"))?;
                print(&local_description(d))
            }
            DatasetsCommand::Edit {
                id,
                title,
                description,
                keywords,
                classify,
                mask,
                groupable,
                target,
            } => {
                anyhow::ensure!(
                    target.server.is_some(),
                    "edits go through a server (--server URL --token T), where a change that widens access waits for an admin; on this machine, edit {id}/dataset.toml"
                );
                let patch = edit_patch(title, description, keywords, &classify, &mask, &groupable)?;
                let client = Remote::new(&settings, &target).await?;
                let id = DatasetId::parse(&id)?;
                let (status, body) = client
                    .send(
                        client
                            .request(reqwest::Method::PATCH, &format!("/v1/datasets/{id}"))
                            .json(&patch),
                    )
                    .await?;
                if !(200..300).contains(&status) {
                    return fail(status, &body);
                }
                if let Some(pending) = body.get("pending_change").filter(|p| !p.is_null()) {
                    eprintln!(
                        "change {} widens access: it waits for an admin's approval",
                        pending["number"]
                    );
                }
                print(&body)
            }
            DatasetsCommand::Restore { id, target } if target.server.is_some() => {
                let client = Remote::new(&settings, &target).await?;
                let id = DatasetId::parse(&id)?;
                let (status, body) = client
                    .send(client.post(&format!("/v1/datasets/{id}/restore")))
                    .await?;
                if status != 200 {
                    return fail(status, &body);
                }
                eprintln!("restored {id}");
                Ok(())
            }
            DatasetsCommand::Restore { id, .. } => {
                let catalog = open_local(&settings).await?;
                let audit = LocalAudit::open(&settings)?;
                audit.journal(&catalog);
                let id = DatasetId::parse(&id)?;
                catalog.restore(&*seen(&catalog, &id)?).await?;
                audit.record(Event::Restore, &id, None).await?;
                eprintln!("restored {id}");
                Ok(())
            }
            DatasetsCommand::Publish { id, target } if target.server.is_some() => {
                let client = Remote::new(&settings, &target).await?;
                let id = DatasetId::parse(&id)?;
                let (status, body) = client
                    .send(client.post(&format!("/v1/datasets/{id}/publish")))
                    .await?;
                if status != 200 {
                    return fail(status, &body);
                }
                eprintln!("published {id} version {}", body["version"]);
                Ok(())
            }
            DatasetsCommand::Publish { id, .. } => {
                let catalog = open_local(&settings).await?;
                let audit = LocalAudit::open(&settings)?;
                audit.journal(&catalog);
                let id = DatasetId::parse(&id)?;
                let published = catalog.publish_reviewed(&*seen(&catalog, &id)?).await?;
                audit
                    .record(Event::Publish, &id, Some(published.manifest.version))
                    .await?;
                eprintln!("published {id} version {}", published.manifest.version);
                Ok(())
            }
            DatasetsCommand::Rewrite { id, target } if target.server.is_some() => {
                let client = Remote::new(&settings, &target).await?;
                let id = DatasetId::parse(&id)?;
                let (status, body) = client
                    .send(client.post(&format!("/v1/datasets/{id}/rewrite")))
                    .await?;
                if status != 201 {
                    return fail(status, &body);
                }
                eprintln!("rewrote {id} as version {}", body["version"]);
                print(&body)
            }
            DatasetsCommand::Rewrite { id, .. } => {
                let catalog = open_local(&settings).await?;
                let audit = LocalAudit::open(&settings)?;
                audit.journal(&catalog);
                let id = DatasetId::parse(&id)?;
                let dataset = catalog
                    .snapshot()
                    .get(&id)
                    .cloned()
                    .with_context(|| format!("no dataset '{id}'"))?;
                let mut ingest_settings = settings.ingest.clone();
                if ingest_settings.worker.is_none() {
                    ingest_settings.worker = Some(std::env::current_exe()?);
                }
                let key = profile_key(&settings)?;
                let (published, _) = ingest::rewrite(
                    &catalog,
                    &dataset,
                    &ingest_settings,
                    settings.limits.batch_rows,
                    Publication {
                        by: &local_subject(),
                        key: &key,
                        based_on: None,
                    },
                )
                .await?;
                audit
                    .record(Event::Rewrite, &id, Some(published.version))
                    .await?;
                eprintln!("rewrote {id} as version {}", published.version);
                Ok(())
            }
            DatasetsCommand::Retire { id, target } if target.server.is_some() => {
                let client = Remote::new(&settings, &target).await?;
                let id = DatasetId::parse(&id)?;
                let (status, body) = client
                    .send(client.request(reqwest::Method::DELETE, &format!("/v1/datasets/{id}")))
                    .await?;
                if status != 200 {
                    return fail(status, &body);
                }
                eprintln!("retired {id}");
                Ok(())
            }
            DatasetsCommand::Retire { id, .. } => {
                let catalog = open_local(&settings).await?;
                let audit = LocalAudit::open(&settings)?;
                audit.journal(&catalog);
                let id = DatasetId::parse(&id)?;
                catalog.retire(&*seen(&catalog, &id)?).await?;
                audit.record(Event::Retire, &id, None).await?;
                eprintln!("retired {id}");
                Ok(())
            }
            DatasetsCommand::Changes { id, target } if target.server.is_some() => {
                let client = Remote::new(&settings, &target).await?;
                let path = match &id {
                    Some(id) => format!("/v1/datasets/{}/changes", DatasetId::parse(id)?),
                    None => "/v1/changes".to_owned(),
                };
                let (status, body) = client.send(client.get(&path)).await?;
                if status != 200 {
                    return fail(status, &body);
                }
                print(&body)
            }
            DatasetsCommand::Changes { id: Some(id), .. } => {
                let catalog = load_local(&settings).await?;
                let id = DatasetId::parse(&id)?;
                let d = catalog
                    .get(&id)
                    .with_context(|| format!("no dataset '{id}'"))?;
                print(&json!({"dataset": id, "changes": d.manifest.changes}))
            }
            DatasetsCommand::Changes { id: None, .. } => {
                let catalog = load_local(&settings).await?;
                let pending = sluice::catalog::change::pending_across(
                    catalog.datasets().map(|d| &d.manifest),
                );
                print(&json!({ "changes": pending }))
            }
            DatasetsCommand::Approve { id, n, target } => {
                decide(&settings, &id, n, true, None, target).await
            }
            DatasetsCommand::Reject {
                id,
                n,
                reason,
                target,
            } => decide(&settings, &id, n, false, reason, target).await
        }
    })
}

/// Approves or rejects a proposed change: through a server (which checks
/// the token is an admin's and audits it), or on the local folder, where
/// whoever may write the folder decides (recorded as `local:<user>` in the
/// manifest).
/// The audit trail, for changes made directly on this machine's folders:
/// they land in the same trail as the server's, as subject `local:<user>`.
/// Opened before the change, so a trail another process writes (a server
/// on the same state folder) refuses the change rather than leaving it
/// unaudited.
struct LocalAudit(Option<std::sync::Arc<AuditLog>>);

impl LocalAudit {
    fn open(settings: &Settings) -> anyhow::Result<Self> {
        if !settings.audit.enabled {
            return Ok(Self(None));
        }
        let state = &settings.storage.state;
        let key = SigningKey::load_or_create(&settings.audit.signing_key_in(state))?;
        let log = AuditLog::open(
            &settings.audit.dir_in(state),
            settings.audit.max_file_bytes,
            Some(Checkpoints {
                key,
                every: Duration::from_secs(settings.audit.checkpoint_secs.max(1)),
            }),
            Box::new(|_| {}),
        )
        .context("recording this change in the audit trail")?;
        Ok(Self(Some(std::sync::Arc::new(log))))
    }

    /// Makes `catalog` record each change's intent in this trail, durably,
    /// before the change commits (as the server does); the change's own
    /// record follows it ([`LocalAudit::record`]).
    fn journal(&self, catalog: &LiveCatalog) {
        let Some(log) = self.0.clone() else { return };
        catalog.record_changes_with(std::sync::Arc::new(move |before, after| {
            let event = match before {
                None => Event::Register,
                Some(b) if b.retired.is_none() && after.retired.is_some() => Event::Retire,
                Some(b) if b.retired.is_some() && after.retired.is_none() => Event::Restore,
                Some(b) if b.in_review != 0 && after.version == b.in_review => Event::Publish,
                Some(b) if b.version != after.version || b.in_review != after.in_review => {
                    Event::Upload
                }
                Some(_) => Event::Edit,
            };
            let base = Record {
                subject: Some(local_subject()),
                ..Record::new(event)
            };
            let record = sluice::http::change_intent(base, before, after);
            let log = log.clone();
            Box::pin(async move { log.append_durable(record).await.map_err(|e| e.to_string()) })
        }));
    }

    /// Records a committed change and seals the trail with a checkpoint.
    async fn record(
        &self,
        event: Event,
        id: &DatasetId,
        version: Option<u64>,
    ) -> anyhow::Result<()> {
        let Some(log) = &self.0 else { return Ok(()) };
        log.append_durable(Record {
            subject: Some(local_subject()),
            dataset: Some(id.to_string()),
            version,
            decision: Some(Decision::Allow),
            outcome: Some(Outcome::Ok),
            ..Record::new(event)
        })
        .await?;
        log.seal().await;
        Ok(())
    }
}

/// Who a change made on this machine's folders is recorded as.
/// The key data profiles are taken under: the server's, from its state
/// folder, so profiles kept by either compare.
fn profile_key(settings: &Settings) -> anyhow::Result<ProfileKey> {
    let secret = sluice::slice::Secret::load_or_create(&settings.storage.state)
        .context("pseudonymisation secret")?;
    Ok(secret.profile_key())
}

fn local_subject() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("local:{user}")
}

/// The `PATCH` body of `sluice datasets edit`: only what was given.
fn edit_patch(
    title: Option<String>,
    description: Option<String>,
    keywords: Option<String>,
    classify: &[String],
    mask: &[String],
    groupable: &[String],
) -> anyhow::Result<Value> {
    let mut patch = serde_json::Map::new();
    if let Some(t) = title {
        patch.insert("title".into(), json!(t));
    }
    if let Some(d) = description {
        patch.insert("description".into(), json!(d));
    }
    if let Some(k) = keywords {
        let list: Vec<&str> = k
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        patch.insert("keywords".into(), json!(list));
    }
    // One entry per column, merging what several flags say about it.
    let mut columns: Vec<serde_json::Map<String, Value>> = Vec::new();
    fn column<'a>(
        columns: &'a mut Vec<serde_json::Map<String, Value>>,
        name: &str,
    ) -> &'a mut serde_json::Map<String, Value> {
        let at = match columns.iter().position(|c| c["name"] == name) {
            Some(at) => at,
            None => {
                let mut entry = serde_json::Map::new();
                entry.insert("name".into(), json!(name));
                columns.push(entry);
                columns.len() - 1
            }
        };
        &mut columns[at]
    }
    let pair = |flag: &str, text: &str| -> anyhow::Result<(String, String)> {
        let (name, value) = text
            .split_once('=')
            .with_context(|| format!("--{flag} takes COLUMN=VALUE, not '{text}'"))?;
        Ok((name.trim().to_owned(), value.trim().to_owned()))
    };
    for c in classify {
        let (name, level) = pair("classify", c)?;
        column(&mut columns, &name).insert("classification".into(), json!(level));
    }
    for m in mask {
        let (name, rule) = pair("mask", m)?;
        column(&mut columns, &name).insert("mask".into(), json!(rule));
    }
    for g in groupable {
        column(&mut columns, g.trim()).insert("groupable".into(), json!(true));
    }
    if !columns.is_empty() {
        patch.insert("columns".into(), json!(columns));
    }
    anyhow::ensure!(
        !patch.is_empty(),
        "nothing to change: give --title, --description, --keywords, --classify, --mask or --groupable"
    );
    Ok(Value::Object(patch))
}

async fn decide(
    settings: &Settings,
    id: &str,
    n: u64,
    approve: bool,
    reason: Option<String>,
    target: Target,
) -> anyhow::Result<()> {
    let id = DatasetId::parse(id)?;
    let verb = if approve { "approve" } else { "reject" };
    if target.server.is_some() {
        let client = Remote::new(settings, &target).await?;
        let mut request = client.post(&format!("/v1/datasets/{id}/changes/{n}/{verb}"));
        if let Some(reason) = &reason {
            request = request.json(&json!({ "reason": reason }));
        }
        let (status, body) = client.send(request).await?;
        if status != 200 {
            return fail(status, &body);
        }
        print(&body["change"])?;
    } else {
        let catalog = open_local(settings).await?;
        let by = local_subject();
        let edited = catalog
            .edit(&*seen(&catalog, &id)?, |m| {
                let mut next = m
                    .decide(n, approve, &by, time::OffsetDateTime::now_utc())
                    .map_err(|e| e.to_string())?;
                if let Some(reason) = &reason {
                    next.note_reason(n, reason);
                }
                Ok(next)
            })
            .await?;
        print(&json!(edited.manifest.change(n)))?;
    }
    eprintln!(
        "{} change {n} of {id}",
        if approve { "approved" } else { "rejected" }
    );
    Ok(())
}

fn local_description(d: &Dataset) -> Value {
    let mut body = serde_json::to_value(&d.manifest).unwrap_or_default();
    if let Value::Object(map) = &mut body {
        map.insert("status".into(), json!(d.status()));
        map.insert(
            "versions".into(),
            d.versions
                .values()
                .map(|v| json!({"version": v.number, "rows": v.rows, "bytes": v.bytes}))
                .collect(),
        );
    }
    body
}

async fn open_local(settings: &Settings) -> anyhow::Result<LiveCatalog> {
    local_only(settings)?;
    LiveCatalog::open_local(&settings.storage.datasets).await
}

async fn load_local(settings: &Settings) -> anyhow::Result<sluice::catalog::Catalog> {
    local_only(settings)?;
    sluice::startup::load_catalog(&settings.storage.datasets).await
}

/// The dataset `id` as this process sees it, for a change based on it.
fn seen(
    catalog: &LiveCatalog,
    id: &DatasetId,
) -> anyhow::Result<std::sync::Arc<sluice::catalog::Dataset>> {
    catalog
        .snapshot()
        .get(id)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no dataset '{id}' in the catalogue"))
}

/// Without --server the CLI works on a local folder only.
fn local_only(settings: &Settings) -> anyhow::Result<()> {
    if let Some(url) = &settings.storage.datasets_url {
        bail!("the catalogue is in an object store ({url}): use --server URL --token T");
    }
    Ok(())
}

async fn copy_with_progress(from: &Path, to: &Path) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut source = tokio::fs::File::open(from)
        .await
        .with_context(|| from.display().to_string())?;
    let bar = byte_bar(
        source.metadata().await?.len(),
        format!("staging {}", from.display()),
    )?;
    let mut target = tokio::fs::File::create(to).await?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = source.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        target.write_all(&buffer[..n]).await?;
        bar.inc(n as u64);
    }
    target.flush().await?;
    bar.finish_and_clear();
    Ok(())
}

/// A manifest file as JSON, checked as a registration.
fn read_manifest(path: &Path) -> anyhow::Result<(Value, Registration)> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let value = manifest_json(path, &text)?;
    let registration = serde_json::from_value(value.clone())
        .with_context(|| format!("manifest {}", path.display()))?;
    Ok((value, registration))
}

/// A manifest file (JSON, or TOML by extension) as JSON.
fn manifest_json(path: &Path, text: &str) -> anyhow::Result<Value> {
    if path.extension().and_then(|e| e.to_str()) == Some("toml") {
        let value: toml::Value =
            toml::from_str(text).with_context(|| format!("manifest {}", path.display()))?;
        Ok(serde_json::to_value(value)?)
    } else {
        serde_json::from_str(text).with_context(|| format!("manifest {}", path.display()))
    }
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
