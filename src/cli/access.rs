//! The admin's commands for access requests: `sluice access list`,
//! `approve ID` and `reject ID --reason`. They work on this machine's
//! files, as an admin editing `config/policy.toml` would: an approval adds
//! a `[[grant]]` block citing the request, checks the whole new policy
//! against the catalogue, and only then replaces the file atomically and
//! sealed; the server's live reload applies it. The request's file records
//! who decided and when; an approval's intent is written first, so a crash
//! midway is finished or undone by the next command or server start.

use anyhow::{Context, bail};
use clap::Subcommand;

use sluice::access_request::{self, AccessRequest, RequestStore, Status};
use sluice::config::Settings;
use sluice::policy::apply;

#[derive(Subcommand)]
pub enum AccessCommand {
    /// List access requests, newest first.
    List {
        /// Only requests in this state.
        #[arg(long, value_parser = ["pending", "approved", "rejected", "revoked"])]
        status: Option<String>,
    },
    /// Approve a request: write its grant into the policy file. The grant
    /// gives the columns asked for and carries what the requester already
    /// holds on the dataset (mode, row filter, row cap); the options
    /// change that.
    Approve {
        /// The request's id (ar-YYYYMMDD-xxxxxx).
        id: String,
        /// Who approves (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// How the grant may read: rows or aggregate (a dp grant needs a
        /// budget: write it by hand).
        #[arg(long, value_parser = ["rows", "aggregate"])]
        mode: Option<String>,
        /// The rows the grant opens (a filter like `region = 'north'`), or
        /// `none` for every row.
        #[arg(long)]
        row_filter: Option<String>,
        /// The most rows one answer may hold.
        #[arg(long)]
        max_rows: Option<u64>,
        /// The last day of the grant (YYYY-MM-DD; default: after the
        /// duration asked).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Revoke an approved request: its grant leaves the policy file (the
    /// server stops serving it at its next policy check) and the request
    /// says revoked, with the reason, to the researcher.
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
        /// Who revokes (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject a request, saying why (the researcher sees the reason).
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        /// Who rejects (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

pub async fn run(settings: Settings, command: AccessCommand) -> anyhow::Result<()> {
    let store = RequestStore::open(&settings.storage.state)?;
    let by_default = |by: Option<String>| {
        by.or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "admin".into())
    };
    match command {
        AccessCommand::List { status } => {
            for r in store.list()? {
                if status.as_deref().is_some_and(|s| s != r.status.as_str()) {
                    continue;
                }
                // Subjects and titles come from outside: no control
                // character reaches the admin's terminal.
                println!(
                    "{}  {:<8}  {}  asked by {}{}\n    project: \"{}\"\n    purpose: \"{}\"\n    columns: {}; for {} days",
                    r.id,
                    r.status.as_str(),
                    r.dataset,
                    printable(&r.subject),
                    r.organisation
                        .as_deref()
                        .map_or(String::new(), |o| format!(" ({})", printable(o))),
                    printable(&r.project_title),
                    printable(&r.purpose),
                    printable(&r.columns.join(", ")),
                    r.duration_days,
                );
            }
            Ok(())
        }
        AccessCommand::Approve {
            id,
            by,
            mode,
            row_filter,
            max_rows,
            expires,
        } => {
            // Decided under the lock, so an approval and a rejection of the
            // same request cannot both happen.
            let _lock = edit_lock(&settings, &store)?;
            let request = pending(&store, &id)?;
            let by = by_default(by);
            let catalog = sluice::startup::load_configured_catalog(&settings.storage).await?;
            let live = catalog
                .get(&request.dataset)
                .is_some_and(|d| d.manifest.is_live());
            if !live {
                bail!(
                    "{} is not a published dataset (retired or removed since the request); reject the request instead",
                    request.dataset
                );
            }
            let file = &settings.storage.policy;
            let name = file.display().to_string();
            let nothing_changed =
                || format!("the grant for {id} does not fit {name}; nothing was changed");
            let text = apply::live_body(file).with_context(nothing_changed)?;
            let today = time::OffsetDateTime::now_utc().date();
            let live_policy = sluice::policy::Policy::parse(&text, &name)?;
            let mut shape = match access_request::narrowest(&live_policy, &request, today) {
                Ok(shape) => shape,
                // The admin says what to give.
                Err(_) if mode.is_some() => access_request::Shape::as_asked(&request, today),
                Err(why) => bail!("{why}; nothing was changed"),
            };
            if let Some(mode) = mode {
                shape.mode = if mode == "aggregate" {
                    sluice::domain::Mode::Aggregate
                } else {
                    sluice::domain::Mode::Rows
                };
            }
            if let Some(filter) = row_filter {
                shape.row_filter = (filter.trim() != "none").then_some(filter);
            }
            if max_rows.is_some() {
                shape.max_rows = max_rows;
            }
            if let Some(day) = expires {
                let format = time::macros::format_description!("[year]-[month]-[day]");
                shape.expires = time::Date::parse(&day, format)
                    .with_context(|| format!("--expires {day}: not a date YYYY-MM-DD"))?;
            }
            let updated = access_request::add_grant(
                &text,
                &access_request::grant_block(&request, &by, today, &shape),
            );
            // The whole new policy must load and fit the catalogue before it
            // replaces the old one; otherwise nothing changes.
            let checked = apply::check(&updated, &name, &catalog, settings.limits.max_filter_bytes)
                .with_context(nothing_changed)?;
            let request = store
                .approve(request, &by, || {
                    sluice::util::durable::replace_file(file, checked.sealed.as_bytes())
                })
                .with_context(|| format!("writing {name}"))?;
            println!(
                "approved {id}: grant '{}' added to {name} ({} grants): {} of {}, mode {}, {}{}, until {}; the server applies it at its next policy check",
                request.id,
                checked.policy.grants.len(),
                request.columns.join(", "),
                request.dataset,
                match shape.mode {
                    sluice::domain::Mode::Rows => "rows",
                    sluice::domain::Mode::Aggregate => "aggregate",
                    sluice::domain::Mode::Dp => "dp",
                },
                shape
                    .row_filter
                    .as_deref()
                    .map_or("every row".to_owned(), |f| format!("rows where {f}")),
                shape
                    .max_rows
                    .map_or(String::new(), |m| format!(", at most {m} rows an answer")),
                shape.expires
            );
            Ok(())
        }
        AccessCommand::Revoke { id, reason, by } => {
            let _lock = edit_lock(&settings, &store)?;
            let request = store.get(&id)?;
            if request.status != Status::Approved {
                bail!(
                    "access request {id} is {}, not approved: there is no grant to revoke",
                    request.status.as_str()
                );
            }
            let reason = given_reason(&reason)?;
            let file = &settings.storage.policy;
            let name = file.display().to_string();
            let grant = request.grant.clone().unwrap_or_else(|| request.id.clone());
            let text = apply::live_body(file).with_context(|| format!("reading {name}"))?;
            let in_force = sluice::policy::Policy::parse(&text, &name)?
                .grants
                .iter()
                .any(|g| g.id == grant);
            // Policy first, then the request: a crash between leaves the
            // request approved with its grant gone, and running revoke
            // again finishes it.
            if in_force {
                let updated = access_request::remove_grant(&text, &grant, &name)
                    .map_err(anyhow::Error::msg)
                    .context("nothing was changed")?;
                let catalog = sluice::startup::load_configured_catalog(&settings.storage).await?;
                let checked =
                    apply::check(&updated, &name, &catalog, settings.limits.max_filter_bytes)
                        .context("nothing was changed")?;
                sluice::util::durable::replace_file(file, checked.sealed.as_bytes())
                    .with_context(|| format!("writing {name}"))?;
            }
            close(&store, request, Status::Revoked, &by_default(by), reason)?;
            println!(
                "revoked {id}: grant '{grant}' {} {name}; the server stops serving it at its next policy check",
                if in_force {
                    "removed from"
                } else {
                    "was already gone from"
                }
            );
            Ok(())
        }
        AccessCommand::Reject { id, reason, by } => {
            let _lock = edit_lock(&settings, &store)?;
            let request = pending(&store, &id)?;
            let reason = given_reason(&reason)?;
            close(&store, request, Status::Rejected, &by_default(by), reason)?;
            println!("rejected {id}");
            Ok(())
        }
    }
}

/// The reason for a rejection or revocation, which the researcher sees.
fn given_reason(reason: &str) -> anyhow::Result<&str> {
    let reason = reason.trim();
    if reason.is_empty() {
        bail!("say why in --reason: the researcher sees it");
    }
    Ok(reason)
}

/// Records that `by` rejected or revoked `request`, saying why.
fn close(
    store: &RequestStore,
    mut request: AccessRequest,
    status: Status,
    by: &str,
    reason: &str,
) -> anyhow::Result<()> {
    request.status = status;
    request.decided = Some(time::OffsetDateTime::now_utc());
    request.decided_by = Some(by.to_owned());
    request.reason = Some(reason.to_owned());
    Ok(store.save(&request)?)
}

fn pending(store: &RequestStore, id: &str) -> anyhow::Result<AccessRequest> {
    let request = store.get(id)?;
    if request.status != Status::Pending {
        bail!(
            "access request {id} was already {}",
            request.status.as_str()
        );
    }
    Ok(request)
}

/// Text without control characters or the invisible formatting ones that
/// reorder or hide what a terminal shows (bidirectional overrides, zero
/// widths, line separators), for the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if sluice::util::echo::is_hidden(c) {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// One decision at a time, after finishing one a crash interrupted.
fn edit_lock(settings: &Settings, store: &RequestStore) -> anyhow::Result<apply::EditLock> {
    let lock = apply::EditLock::take(&settings.storage.state)
        .context("could not lock the policy for editing")?;
    if let Some(done) = store.finish_interrupted(&settings.storage.policy)? {
        eprintln!("{done}");
    }
    Ok(lock)
}
