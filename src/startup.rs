//! The one way to start Sluice: `Application::build(settings)` loads the
//! catalogue and policy, sets up keys, TLS and the engine, and binds the
//! listener (port 0 picks a free port). `main` and the tests both use it.

use std::any::Any;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::{Extensions, Server, ServerHandle};
use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context;

use crate::audit::checkpoint::SigningKey;
use crate::audit::{AuditLog, Checkpoints, Event, Outcome, Record};
use crate::auth::Verifier;
use crate::catalog::{Catalog, LiveCatalog};
use crate::config::{Settings, TlsMode, shared_folders};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::policy::LivePolicy;
use crate::slice::{Engine, Secret};
use crate::tls::{self, DevCertificate};

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    https: bool,
    server: Server,
    state: web::Data<AppState>,
    /// Ships the audit trail to the bucket (replicas), once more at stop.
    shipper: Option<crate::audit::ship::Running>,
    /// The Flight SQL listener, if `flight.listen` is set.
    flight: Option<crate::flight::Running>,
}

impl Application {
    /// Builds the server in the order each part needs the one before.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let storage = &settings.storage;
        std::fs::create_dir_all(&storage.state)
            .with_context(|| format!("creating state folder {}", storage.state.display()))?;
        let catalog = open_catalogue(&settings).await?;
        let policy = Arc::new(load_policy(&settings, &catalog)?);
        let metrics = Arc::new(Metrics::new().context("metrics")?);
        let audit = Arc::new(open_audit(&settings, &metrics)?);
        catalog.record_changes_with(http::change_journal(audit.clone()));
        record_policy_at_start(&policy, &audit).await?;
        let shipper = start_audit_shipper(&settings, &audit).await?;
        let poll = Duration::from_millis(settings.server.policy_poll_ms);
        spawn_policy_watcher(
            policy.clone(),
            catalog.clone(),
            audit.clone(),
            metrics.clone(),
            poll,
        );
        let requests = open_access_requests(storage, &audit, poll)?;
        let secret = Secret::load_or_create(&storage.state).context("pseudonymisation secret")?;
        let tls_config = tls_config(&settings)?;
        let state = web::Data::new(AppState {
            catalog: catalog.clone(),
            policy,
            verifier: Arc::new(load_verifier(&settings)?),
            engine: Arc::new(start_engine(&settings, &catalog, secret.clone())?),
            limits: settings.limits.clone(),
            ingest: settings.ingest.clone(),
            audit,
            ledger: Arc::new(open_ledger(storage).context("privacy budget ledger")?),
            metrics,
            trusted_proxies: settings.server.trusted_proxies.clone(),
            glances: Default::default(),
            public_url: public_url(&settings),
            snapshots: open_snapshots(&settings)?,
            web: web_sign_in(&settings, &secret)?,
            requests,
            personal_tokens: open_personal_tokens(storage, &secret)?,
            personal_token_max_days: settings.auth.personal_token_max_days,
            rate_limits: rate_limits(&settings),
            stream_slots: http::limits::StreamSlots::new(settings.limits.max_streams_per_caller),
            upload_slots: upload_slots(&settings),
            body_budget: body_budget(&settings),
            ready: AtomicBool::new(false),
        });
        let (server, port) = bind(&settings, state.clone(), tls_config.clone())?;
        let flight = match settings.flight.listen {
            Some(listen) => Some(crate::flight::start(
                listen,
                settings.flight.endpoint_rows,
                tls_files(&settings)?,
                state.clone(),
            )?),
            None => None,
        };
        state.ready.store(true, Ordering::Relaxed);
        let datasets = catalog.snapshot().len();
        let https = tls_config.is_some();
        tracing::info!(port, https, datasets, "sluice is listening");
        Ok(Self {
            port,
            https,
            server,
            state,
            shipper,
            flight,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Flight SQL listener's port, if it runs.
    pub fn flight_port(&self) -> Option<u16> {
        self.flight.as_ref().map(|f| f.port)
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// A handle to stop the server (gracefully or not) from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGTERM/SIGINT stop gracefully: new connections
    /// are refused, readiness turns off, in-flight responses get the grace time).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let flight_listener = self.flight;
        let handle = self.server.handle();
        let mut server = std::pin::pin!(self.server);
        tokio::select! {
            result = &mut server => result,
            _ = shutdown_signal() => {
                state.ready.store(false, Ordering::Relaxed);
                tracing::info!("shutting down: draining in-flight requests");
                // Graceful stop; the server future must stay alive until it
                // completes (dropping it stops the workers at once).
                let stop = handle.stop(true);
                let flight = async move {
                    if let Some(flight) = flight_listener {
                        flight.stop().await;
                    }
                };
                let (_, result, _) = tokio::join!(stop, server, flight);
                // Every stream has been recorded: seal the trail's tail,
                // and ship it while this replica's disk is still here.
                state.audit.seal().await;
                if let Some(shipper) = &self.shipper {
                    shipper.ship_now().await;
                }
                tracing::info!("stopped");
                result
            }
        }
    }
}

/// The policy file, checked against the catalogue; the last policy in
/// force is kept in the state folder.
fn load_policy(settings: &Settings, catalog: &LiveCatalog) -> anyhow::Result<LivePolicy> {
    let storage = &settings.storage;
    Ok(LivePolicy::load(
        &storage.policy,
        &catalog.snapshot(),
        settings.limits.max_filter_bytes,
        storage.state.join("policy-in-force.toml"),
    )?)
}

/// Ships the audit trail to the bucket replicas share, when there is one.
async fn start_audit_shipper(
    settings: &Settings,
    audit: &AuditLog,
) -> anyhow::Result<Option<crate::audit::ship::Running>> {
    let (Some(dir), Some((url, replica))) =
        (audit.dir(), crate::audit::ship::destination(settings)?)
    else {
        return Ok(None);
    };
    let store = crate::catalog::rooted::open_url(&url).context("audit.ship_url")?;
    let running = crate::audit::ship::Shipper::open(store, &replica, dir)
        .await?
        .spawn(Duration::from_secs(settings.audit.checkpoint_secs.max(1)));
    tracing::info!(%url, %replica, "shipping the audit trail");
    Ok(Some(running))
}

/// Access requests: their folder, an approval a crash interrupted
/// finished, and decisions taken by hand in the policy file recorded.
fn open_access_requests(
    storage: &crate::config::StorageSettings,
    audit: &Arc<AuditLog>,
    poll: Duration,
) -> anyhow::Result<crate::access_request::RequestStore> {
    let requests = crate::access_request::RequestStore::open(&storage.state)
        .context("access requests folder")?;
    finish_interrupted_approval(&requests, storage)?;
    spawn_decision_recorder(requests.clone(), audit.clone(), poll);
    Ok(requests)
}

/// `server.public_url`, without a trailing slash.
fn public_url(settings: &Settings) -> Option<String> {
    settings
        .server
        .public_url
        .as_ref()
        .map(|u| u.trim_end_matches('/').to_owned())
}

fn open_snapshots(settings: &Settings) -> anyhow::Result<crate::snapshot::Snapshots> {
    let storage = &settings.storage;
    crate::snapshot::Snapshots::open(
        &storage.state,
        &settings.snapshots,
        shared_store(storage, shared_folders::SNAPSHOT_TICKETS)?,
    )
    .context("snapshot cache")
}

/// People's sign-in to the pages: sessions every replica knows, the
/// OpenID provider, and what the pages tell about signing in.
fn web_sign_in(settings: &Settings, secret: &Secret) -> anyhow::Result<http::WebSignIn> {
    let storage = &settings.storage;
    Ok(http::WebSignIn {
        sessions: crate::auth::session::Sessions::new(
            Duration::from_secs(settings.auth.session_idle_secs),
            Duration::from_secs(settings.auth.session_max_secs),
            secret.session_key(),
            shared_or_state(storage, shared_folders::SESSIONS)?,
        ),
        oidc: settings
            .auth
            .oidc
            .clone()
            .map(|o| crate::auth::oidc::Provider::new(o, settings.auth.leeway_secs))
            .transpose()
            .context("auth.oidc")?,
        dev_mode: settings.auth.dev_mode,
        cli_login: settings.auth.login.clone(),
        ca_file: (settings.tls.mode == TlsMode::SelfSigned).then(|| {
            let ca = DevCertificate::in_state(&storage.state).ca;
            std::path::absolute(&ca).unwrap_or(ca).display().to_string()
        }),
    })
}

fn open_personal_tokens(
    storage: &crate::config::StorageSettings,
    secret: &Secret,
) -> anyhow::Result<Arc<crate::auth::personal::PersonalTokens>> {
    Ok(Arc::new(crate::auth::personal::PersonalTokens::new(
        shared_or_state(storage, shared_folders::PERSONAL_TOKENS)?,
        secret.token_seal_key(),
    )))
}

fn rate_limits(settings: &Settings) -> http::limits::RateLimits {
    http::limits::RateLimits::new(
        settings.limits.requests_per_minute,
        settings.limits.request_burst,
    )
}

/// Uploads in progress at once.
fn upload_slots(settings: &Settings) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(
        settings.ingest.max_concurrent_uploads.max(1),
    ))
}

/// Request body bytes held at once, across requests.
fn body_budget(settings: &Settings) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(
        settings
            .limits
            .max_body_bytes_in_flight
            .min(tokio::sync::Semaphore::MAX_PERMITS),
    ))
}

/// The catalogue: in an object store when `storage.datasets_url` is set
/// (polled for other replicas' changes), else the local folder.
async fn open_catalogue(settings: &Settings) -> anyhow::Result<Arc<LiveCatalog>> {
    let storage = &settings.storage;
    let catalog = Arc::new(match &storage.datasets_url {
        Some(url) => LiveCatalog::open_url(url, &storage.state.join("staging")).await?,
        None => open_folder_catalogue(&storage.datasets).await?,
    });
    if storage.datasets_url.is_some() {
        spawn_catalogue_poller(catalog.clone(), Duration::from_millis(storage.poll_millis));
    }
    Ok(catalog)
}

/// The audit trail with its checkpoint signing key, or a log that records
/// nothing when audit is switched off.
fn open_audit(settings: &Settings, metrics: &Metrics) -> anyhow::Result<AuditLog> {
    if !settings.audit.enabled {
        tracing::warn!("audit is off: accesses are not recorded");
        return Ok(AuditLog::disabled());
    }
    let state = &settings.storage.state;
    let write_latency = metrics.audit_write.clone();
    let checkpoints = Checkpoints {
        key: SigningKey::load_or_create(&settings.audit.signing_key_in(state))?,
        every: Duration::from_secs(settings.audit.checkpoint_secs.max(1)),
    };
    Ok(AuditLog::open(
        &settings.audit.dir_in(state),
        settings.audit.max_file_bytes,
        Some(checkpoints),
        Box::new(move |secs| write_latency.observe(secs)),
    )?)
}

/// The token verifier with its keys (the development key in dev mode),
/// reading the identity providers' keys from now on.
fn load_verifier(settings: &Settings) -> anyhow::Result<Verifier> {
    let verifier =
        Verifier::new(&settings.auth, &settings.storage.state).context("loading keys")?;
    verifier.keep_keys_fresh();
    if settings.auth.dev_mode {
        tracing::warn!(
            "auth.dev_mode is on: tokens minted by `sluice token` are accepted; never use this in production"
        );
    }
    Ok(verifier)
}

/// The query engine, with the pseudonymisation secret its masks use.
fn start_engine(
    settings: &Settings,
    catalog: &LiveCatalog,
    secret: Secret,
) -> anyhow::Result<Engine> {
    Ok(Engine::new(
        &catalog.snapshot(),
        secret,
        settings.server.query_threads,
        &settings.limits,
    )?)
}

/// The TLS configuration, or `None` for plain HTTP (`tls.mode = "off"`).
fn tls_config(settings: &Settings) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    Ok(match tls_files(settings)? {
        Some((cert, key)) => Some(tls::server_config(&cert, &key)?),
        None => None,
    })
}

/// The certificate chain and key both listeners serve (PEM files), the
/// development ones made first if need be; none for plain HTTP.
fn tls_files(
    settings: &Settings,
) -> anyhow::Result<Option<(std::path::PathBuf, std::path::PathBuf)>> {
    Ok(match settings.tls.mode {
        TlsMode::Off => None,
        TlsMode::SelfSigned => {
            let dev = DevCertificate::in_state(&settings.storage.state);
            dev.ensure()?;
            Some((dev.cert, dev.key))
        }
        TlsMode::Files => {
            // `Settings::load` checked both are set.
            let (Some(cert), Some(key)) = (&settings.tls.cert, &settings.tls.key) else {
                anyhow::bail!("tls.mode = \"files\" needs tls.cert and tls.key");
            };
            Some((cert.clone(), key.clone()))
        }
    })
}

/// Binds the listener and starts the HTTP server on it (port 0 picks a
/// free port, returned with the server).
fn bind(
    settings: &Settings,
    state: web::Data<AppState>,
    tls_config: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<(Server, u16)> {
    let listener = TcpListener::bind(settings.server.listen)
        .with_context(|| format!("binding {}", settings.server.listen))?;
    let port = listener.local_addr()?.port();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(middleware::from_fn(http::request_id::middleware))
            .configure(http::routes(state.clone()))
    })
    .on_connect(set_nodelay)
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_grace_secs)
    .client_request_timeout(Duration::from_secs(
        settings.limits.request_head_timeout_secs,
    ));
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    let server = match &tls_config {
        Some(config) => server.listen_rustls_0_23(listener, (**config).clone())?,
        None => server.listen(listener)?,
    }
    .run();
    Ok((server, port))
}

/// Opens the catalogue for serving: writable when this process can take
/// the folder's writer lock, else read-only (a read-only mount, or another
/// process writing it): data is still served, steward changes answer 503.
async fn open_folder_catalogue(folder: &std::path::Path) -> anyhow::Result<LiveCatalog> {
    match LiveCatalog::open_local(folder).await {
        Ok(catalog) => Ok(catalog),
        Err(e)
            if e.downcast_ref::<crate::catalog::local::OpenError>()
                .is_some() =>
        {
            tracing::warn!(
                error = %e,
                "the catalogue folder cannot be opened for writing: serving it read-only"
            );
            Ok(LiveCatalog::read_only(load_catalog(folder).await?))
        }
        Err(e) => Err(e),
    }
}

/// Loads the catalogue from a local folder, read-only (no lock, no
/// clean-up): for commands that only look.
pub async fn load_catalog(folder: &std::path::Path) -> anyhow::Result<Catalog> {
    crate::catalog::live::load_local(folder).await
}

/// Loads the catalogue the settings name (the object store when
/// `storage.datasets_url` is set, else the folder), read-only.
pub async fn load_configured_catalog(
    storage: &crate::config::StorageSettings,
) -> anyhow::Result<Catalog> {
    match &storage.datasets_url {
        Some(url) => {
            let store = crate::catalog::rooted::open_url(url).context("storage.datasets_url")?;
            Catalog::load(store).await.context("loading the catalogue")
        }
        None => load_catalog(&storage.datasets).await,
    }
}

/// Records in the audit trail the access-request decisions admins make
/// with `sluice access` (which cannot write the server's hash chain
/// itself), checked as often as the policy file.
fn spawn_decision_recorder(
    requests: crate::access_request::RequestStore,
    audit: Arc<AuditLog>,
    every: Duration,
) {
    use crate::access_request::{DecisionWatch, Status};
    let since = audit
        .dir()
        .and_then(|dir| crate::audit::read_newest(dir, 1).ok())
        .and_then(|records| records.last().cloned())
        .and_then(|r| {
            time::OffsetDateTime::parse(&r.time, &time::format_description::well_known::Rfc3339)
                .ok()
        });
    let mut watch = DecisionWatch::new(requests, since);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let (next, decided) = tokio::task::spawn_blocking(move || {
                let decided = watch.new_decisions();
                (watch, decided)
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            watch = next;
            for r in decided {
                audit.append(Record {
                    subject: Some(r.subject.clone()),
                    organisation: r.organisation.clone(),
                    dataset: Some(r.dataset.to_string()),
                    grant: Some(r.id.clone()),
                    purpose: Some(r.project_title.clone()),
                    columns: Some(r.columns.clone()),
                    decision: Some(if r.status == Status::Approved {
                        crate::audit::Decision::Allow
                    } else {
                        crate::audit::Decision::Deny
                    }),
                    reason: match r.status {
                        Status::Revoked => r.reason.as_ref().map(|why| format!("revoked: {why}")),
                        _ => r.reason.clone(),
                    },
                    approved_by: r
                        .decided_by
                        .clone()
                        .filter(|_| r.status == Status::Approved),
                    rejected_by: r
                        .decided_by
                        .clone()
                        .filter(|_| r.status != Status::Approved),
                    outcome: Some(Outcome::Ok),
                    ..Record::new(Event::AccessRequest)
                });
            }
        }
    });
}

/// `<bucket>/<folder>`, where replicas over one bucket share what they
/// must agree on; `None` without an object-store catalogue.
fn shared_store(
    storage: &crate::config::StorageSettings,
    folder: &str,
) -> anyhow::Result<Option<Arc<dyn object_store::ObjectStore>>> {
    storage
        .shared_url(folder)
        .map(|url| crate::catalog::rooted::open_url(&url))
        .transpose()
}

/// `<bucket>/<folder>` when replicas share a bucket, else
/// `<state>/<folder>`: where what must outlive a restart, and be the same
/// on every replica, is kept (personal tokens, sessions: revoked or ended
/// on one replica, refused by all).
fn shared_or_state(
    storage: &crate::config::StorageSettings,
    folder: &str,
) -> anyhow::Result<Arc<dyn object_store::ObjectStore>> {
    Ok(match shared_store(storage, folder)? {
        Some(store) => store,
        None => {
            let path = storage.state.join(folder);
            std::fs::create_dir_all(&path).with_context(|| format!("{}", path.display()))?;
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(&path)
                    .with_context(|| format!("{}", path.display()))?,
            )
        }
    })
}

/// The privacy-budget ledger: in the bucket when replicas share one (each
/// would otherwise grant the whole budget), else in the state folder.
fn open_ledger(storage: &crate::config::StorageSettings) -> anyhow::Result<crate::dp::Ledger> {
    Ok(
        match shared_store(storage, shared_folders::PRIVACY_LEDGER)? {
            Some(store) => crate::dp::Ledger::shared(store, tokio::runtime::Handle::current()),
            None => crate::dp::Ledger::open_in(&storage.state)?,
        },
    )
}

/// Notices what other replicas commit to an object-store catalogue: every
/// `every`, datasets whose manifest changed are read again.
fn spawn_catalogue_poller(catalog: Arc<LiveCatalog>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match catalog.refresh().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(datasets = n, "read datasets other replicas changed"),
                Err(e) => tracing::warn!(error = %e, "could not look for other replicas' changes"),
            }
        }
    });
}

/// Records what the policy put in force at start changes against the one
/// last in force here (a file applied while the server was stopped, or
/// every grant at a first start), durably, before any request is served: a
/// grant is never in force without its record.
async fn record_policy_at_start(policy: &LivePolicy, audit: &AuditLog) -> anyhow::Result<()> {
    let changes = policy.changes_since_kept();
    if changes.is_empty() {
        return Ok(());
    }
    audit
        .append_durable(Record {
            reason: Some(format!(
                "start: {} grants in force; the file differs from the policy last in force here",
                policy.current().grants.len()
            )),
            outcome: Some(Outcome::Ok),
            changes,
            ..Record::new(Event::PolicyReload)
        })
        .await
        .context("recording the policy in force at start")?;
    policy
        .keep()
        .context("keeping a copy of the policy in force")?;
    Ok(())
}

/// Finishes (or undoes) an access approval a crash interrupted, before the
/// decision recorder and the pages read the requests.
fn finish_interrupted_approval(
    requests: &crate::access_request::RequestStore,
    storage: &crate::config::StorageSettings,
) -> anyhow::Result<()> {
    let _lock = crate::policy::apply::EditLock::take(&storage.state)
        .context("locking the policy for editing")?;
    if let Some(done) = requests
        .finish_interrupted(&storage.policy)
        .context("finishing an interrupted access approval")?
    {
        tracing::warn!("{done}");
    }
    Ok(())
}

/// Reads the policy file again and puts it in force unless it is refused.
/// A file that adds or changes an entry is recorded, with each entry's old
/// and new text, durably before it takes effect: a grant is never in force
/// without its record, and a reload that cannot be recorded is refused and
/// tried again at the next poll.
async fn reload_policy(
    policy: &LivePolicy,
    catalog: &LiveCatalog,
    audit: &AuditLog,
    metrics: &Metrics,
    why: &str,
) {
    let file = policy.path().display().to_string();
    let refused = |problem: String| {
        tracing::error!(file, why, error = %problem, "policy refused; the previous policy stays in force");
        metrics
            .policy_reloads
            .with_label_values(&[Outcome::Refused.as_str()])
            .inc();
        Record {
            reason: Some(format!("{why}: refused: {problem}")),
            outcome: Some(Outcome::Refused),
            ..Record::new(Event::PolicyReload)
        }
    };
    let prepared = match policy.prepare(&catalog.snapshot()) {
        Ok(prepared) => prepared,
        Err(e) => {
            audit.append(refused(e.to_string()));
            return;
        }
    };
    let changes = policy.changes(&prepared);
    let grants = prepared.grants();
    let warnings = prepared.warnings.len();
    let record = Record {
        reason: Some(match warnings {
            0 => format!("{why}: {grants} grants in force"),
            n => format!("{why}: {grants} grants in force, {n} warnings (see the log or /readyz)"),
        }),
        outcome: Some(Outcome::Ok),
        changes,
        ..Record::new(Event::PolicyReload)
    };
    if record.changes.iter().any(|c| c.widens) {
        if let Err(e) = audit.append_durable(record).await {
            let problem = format!(
                "the reload could not be audited ({e}); it is tried again at the next poll"
            );
            policy.refuse(problem.clone());
            policy.retry();
            audit.append(refused(problem));
            return;
        }
    } else {
        audit.append(record);
    }
    policy.put_in_force(prepared);
    metrics
        .policy_reloads
        .with_label_values(&[Outcome::Ok.as_str()])
        .inc();
    tracing::info!(file, why, grants, warnings, "policy reloaded");
}

/// Reloads the policy when its file changes (checked every `every`) and on SIGHUP.
fn spawn_policy_watcher(
    policy: Arc<LivePolicy>,
    catalog: Arc<LiveCatalog>,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    every: Duration,
) {
    let changed = {
        let policy = policy.clone();
        move || policy.changed_on_disk()
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = tick.tick() => {
                    if changed() {
                        reload_policy(&policy, &catalog, &audit, &metrics, "file changed").await;
                    }
                }
                _ = hup => reload_policy(&policy, &catalog, &audit, &metrics, "SIGHUP").await,
            }
        }
    });
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Small responses must not wait for Nagle's algorithm (measured on this
/// kind of machine: a one-row answer took 48 ms instead of 14 ms without
/// this).
fn set_nodelay(conn: &dyn Any, _: &mut Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    use actix_web::rt::net::TcpStream;
    let tcp = conn
        .downcast_ref::<TlsStream<TcpStream>>()
        .map(|tls| tls.get_ref().0)
        .or_else(|| conn.downcast_ref::<TcpStream>());
    if let Some(tcp) = tcp
        && let Err(e) = tcp.set_nodelay(true)
    {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}
