//! The HTTP face of Sluice: routes, extractors, problem+json errors and
//! streaming bodies. This is the only module that knows actix-web; handlers
//! are thin and call into `catalog`, `policy`, `slice` and `formats`.

mod admin_routes;
mod body;
pub(crate) mod caller;
mod catalog_routes;
mod change_routes;
pub(crate) mod data_routes;
mod docs_page;
pub mod limits;
mod me_route;
mod openapi;
mod pages;
mod privacy;
pub mod problem;
pub mod request_id;
mod sharing_routes;
mod snapshot_routes;
mod steward_routes;
mod token_routes;
mod trail;

pub use trail::{intent as change_intent, journal as change_journal};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{HttpResponse, web};

use crate::audit::AuditLog;
use crate::auth::Verifier;
use crate::catalog::LiveCatalog;
use crate::config::{IngestSettings, Limits};
use crate::dp::Ledger;
use crate::metrics::Metrics;
use crate::policy::LivePolicy;
use crate::slice::Engine;
use problem::ApiError;

/// What every handler shares.
pub struct AppState {
    pub catalog: Arc<LiveCatalog>,
    pub policy: Arc<LivePolicy>,
    pub verifier: Arc<Verifier>,
    pub engine: Arc<Engine>,
    pub limits: Limits,
    pub ingest: IngestSettings,
    pub audit: Arc<AuditLog>,
    /// What each DP grant's project has spent of its privacy budget.
    pub ledger: Arc<Ledger>,
    pub metrics: Arc<Metrics>,
    pub rate_limits: limits::RateLimits,
    pub stream_slots: limits::StreamSlots,
    /// Uploads in progress on this server (`ingest.max_concurrent_uploads`).
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// Bytes of JSON bodies being received, server-wide
    /// (`limits.max_body_bytes_in_flight`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Snapshot files, the key that signs links to them, and the links'
    /// tickets.
    pub snapshots: crate::snapshot::Snapshots,
    /// Web sign-in: sessions, the identity provider, dev identities.
    pub web: WebSignIn,
    /// Researchers' access requests.
    pub requests: crate::access_request::RequestStore,
    /// Personal access tokens (shared by replicas over a bucket).
    pub personal_tokens: Arc<crate::auth::personal::PersonalTokens>,
    /// Longest a personal token may run, in days.
    pub personal_token_max_days: u32,
    /// `server.public_url`, without a trailing slash.
    pub public_url: Option<String>,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Column overviews shown on dataset pages, per dataset, version and
    /// access (see `pages::glance`).
    pub(crate) glances: pages::Glances,
    /// False until the server is built and again once shutdown starts.
    pub ready: AtomicBool,
}

/// How people sign in to the web pages.
pub struct WebSignIn {
    pub sessions: crate::auth::session::Sessions,
    pub oidc: Option<crate::auth::oidc::Provider>,
    /// Offer sample identities on the sign-in page (`auth.dev_mode`).
    pub dev_mode: bool,
    /// The development CA's file, for snippets to trust (self-signed TLS only).
    pub ca_file: Option<String>,
    /// The device flow `sluice login` follows (`auth.login`).
    pub cli_login: Option<crate::config::LoginSettings>,
}

/// Registers every route.
pub fn routes(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state)
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _req| ApiError::InvalidParameter(err.to_string()).into()),
            )
            .app_data(
                web::FormConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|err, _req| ApiError::InvalidParameter(err.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default().error_handler(|_, _| ApiError::RouteNotFound.into()),
            )
            .configure(pages::routes)
            .route("/healthz", web::get().to(healthz))
            .route("/openapi.json", web::get().to(openapi::openapi_json))
            .route("/docs", web::get().to(openapi::docs))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(admin_routes::metrics))
            .configure(sharing_routes::routes)
            .service(
                web::scope("/v1")
                    .route("/me", web::get().to(me_route::me))
                    .route("/login", web::get().to(token_routes::login))
                    .route("/me/tokens", web::get().to(token_routes::list))
                    .route("/me/tokens", web::post().to(token_routes::create))
                    .route("/me/tokens/{id}", web::delete().to(token_routes::revoke))
                    .route(
                        "/me/delta-sharing-profile",
                        web::get().to(me_route::sharing_profile),
                    )
                    .route("/datasets", web::get().to(catalog_routes::list))
                    .route(
                        "/catalog.jsonld",
                        web::get().to(catalog_routes::catalog_jsonld),
                    )
                    .route("/datasets", web::post().to(steward_routes::register))
                    .route("/datasets/{id}", web::get().to(catalog_routes::show))
                    .route("/datasets/{id}", web::patch().to(steward_routes::edit))
                    .route("/datasets/{id}", web::delete().to(steward_routes::retire))
                    .route("/datasets/{id}/data", web::get().to(data_routes::get_data))
                    .route("/datasets/{id}/data", web::put().to(steward_routes::upload))
                    .route(
                        "/datasets/{id}/publish",
                        web::post().to(steward_routes::publish),
                    )
                    .route(
                        "/datasets/{id}/rewrite",
                        web::post().to(steward_routes::rewrite),
                    )
                    .route(
                        "/datasets/{id}/restore",
                        web::post().to(steward_routes::restore),
                    )
                    .route(
                        "/datasets/{id}/query",
                        web::post().to(data_routes::post_query),
                    )
                    .route(
                        "/datasets/{id}/citation",
                        web::get().to(catalog_routes::citation),
                    )
                    .route("/datasets/{id}/changes", web::get().to(change_routes::list))
                    .route("/changes", web::get().to(change_routes::pending))
                    .route(
                        "/datasets/{id}/changes/{n}/approve",
                        web::post().to(change_routes::approve),
                    )
                    .route(
                        "/datasets/{id}/changes/{n}/reject",
                        web::post().to(change_routes::reject),
                    )
                    .route(
                        "/datasets/{id}/snapshot",
                        web::post().to(snapshot_routes::create),
                    )
                    .route(
                        "/snapshots/{name}",
                        web::route()
                            .guard(
                                actix_web::guard::Any(actix_web::guard::Get())
                                    .or(actix_web::guard::Head()),
                            )
                            .to(snapshot_routes::serve_file),
                    )
                    .route("/audit", web::get().to(admin_routes::audit))
                    .route(
                        "/datasets/{id}/aggregate",
                        web::get().to(data_routes::get_aggregate),
                    ),
            )
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::RouteNotFound)
            }));
    }
}

/// `scheme://host` for links written into answers: `server.public_url`,
/// or else how the caller reached this server: the connection's scheme and
/// `Host`, or what a trusted proxy forwarded (`server.trusted_proxies`);
/// a forwarding header from anyone else is ignored.
pub(super) fn public_base(state: &AppState, req: &actix_web::HttpRequest) -> String {
    if let Some(url) = &state.public_url {
        return url.clone();
    }
    let proxied = req
        .peer_addr()
        .is_some_and(|peer| state.trusted_proxies.contains(&peer.ip()));
    if proxied {
        let info = req.connection_info();
        return format!("{}://{}", info.scheme(), info.host());
    }
    let scheme = if req.app_config().secure() {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_else(|| req.app_config().host());
    format!("{scheme}://{host}")
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up", body = Object)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Readiness. Policy warnings (grants that load but no longer apply as
/// written, after catalogue edits) are counted for everyone and spelled out
/// for admins only: they name grants and columns, which are not every
/// caller's business.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Ready to serve: datasets published, policy loaded (admins also see warnings)", body = Object), (status = 503, description = "Starting, shutting down, or the audit trail cannot be written", body = Object)))]
async fn readyz(state: web::Data<AppState>, caller: Option<crate::auth::Caller>) -> HttpResponse {
    if !state.audit.healthy() {
        // Every data request would answer 503 until the trail can be
        // written again: send traffic elsewhere.
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "audit-unavailable",
            "problem": "the audit trail cannot be written (disk full or failing); data requests answer 503 storage-unavailable",
        }));
    }
    if state.ready.load(Ordering::Relaxed) {
        let warnings = state.policy.warnings(&state.catalog.snapshot());
        let mut body = serde_json::json!({
            "status": "ready",
            // Published datasets only: drafts and retired ones are their
            // stewards' business.
            "datasets": state.catalog.snapshot().datasets().filter(|d| d.manifest.is_live()).count(),
            "grants": state.policy.current().grants.len(),
            "policy_warnings": warnings.len(),
            "active_streams": state.engine.active_streams(),
        });
        let admin = caller
            .as_ref()
            .and_then(|c| c.principal())
            .is_some_and(|p| p.has_role(crate::auth::Role::Admin));
        if let Some(refused) = state.policy.refused() {
            // Everyone learns that the file on disk is not what serves;
            // why (file, line, grant) is for admins.
            body["policy_reload"] = serde_json::json!({
                "state": "refused",
                "at": refused.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            });
            if admin {
                body["policy_reload"]["problem"] = serde_json::json!(refused.problem);
            }
        }
        if admin {
            body["policy_warning_details"] =
                serde_json::json!(warnings.iter().map(ToString::to_string).collect::<Vec<_>>());
        }
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "not-ready" }))
    }
}
