//! Typed settings: `config/sluice.toml`, overridden by `SLUICE_*` environment
//! variables (`SLUICE_SERVER__LISTEN=0.0.0.0:8443`: a double underscore
//! separates nesting levels).
//!
//! Loading fails, naming the file, the key and the problem, on unknown keys,
//! wrong types and invalid combinations (plain HTTP on a non-loopback
//! address). This module only reads settings; it does not act on them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable has a syntax error, an unknown
    /// key or a value of the wrong type. Figment's message names the key and
    /// the source (file or variable).
    #[error(transparent)]
    Invalid(#[from] Box<figment::Error>),
    /// The values parse but do not make sense together.
    #[error("{file}: {key}: {problem}")]
    Inconsistent {
        file: String,
        key: &'static str,
        problem: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub tls: TlsSettings,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub storage: StorageSettings,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub ingest: IngestSettings,
    #[serde(default)]
    pub snapshots: SnapshotSettings,
    #[serde(default)]
    pub flight: FlightSettings,
}

/// Arrow Flight SQL (gRPC), for ADBC and JDBC drivers and BI tools: its own
/// listener, with the same TLS, callers, policy and audit as the HTTPS one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightSettings {
    /// Address of the Flight SQL listener (port 0 picks a free port);
    /// unset, there is none.
    pub listen: Option<SocketAddr>,
    /// The fewest rows one endpoint of an answer cut in parts carries: a
    /// slice of a version with at least twice as many rows (and as many
    /// row groups) is answered with one endpoint per part, which clients
    /// read side by side. 0 never cuts.
    pub endpoint_rows: u64,
}

impl Default for FlightSettings {
    fn default() -> Self {
        Self {
            listen: None,
            endpoint_rows: 2_000_000,
        }
    }
}

/// Policy-applied snapshot files (signed links, ranged reads, Delta
/// Sharing).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSettings {
    /// Most bytes of snapshot files kept under `<state>/snapshots`; the
    /// least recently used go first. A slice larger than this is refused
    /// as a snapshot (it can still be streamed).
    pub max_bytes: u64,
    /// How long a signed link lives, in seconds (never past the expiry of
    /// the token that asked for it).
    pub link_ttl_secs: u64,
    /// Most unexpired links at once (503 beyond).
    pub max_links: usize,
    /// Most unexpired links one caller holds (429 `too-many-links` beyond).
    pub max_links_per_caller: usize,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            max_bytes: 4 * 1024 * 1024 * 1024,
            link_ttl_secs: 900,
            max_links: 100_000,
            max_links_per_caller: 1000,
        }
    }
}

/// Uploads: how big they may be and what the decoding process may use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Largest upload body, in bytes (413 beyond).
    pub max_upload_bytes: u64,
    /// An upload whose body stalls this long is abandoned (408).
    pub body_idle_timeout_secs: u64,
    /// Address-space limit of the process that decodes an upload.
    pub worker_memory_bytes: u64,
    /// CPU-time limit of that process, and its wall-clock limit.
    pub worker_cpu_secs: u64,
    /// The program run as `<worker> ingest-worker` (default: this binary).
    pub worker: Option<PathBuf>,
    /// Rows read to infer CSV column types.
    pub csv_sample_rows: usize,
    /// Rows per Parquet row group written (smaller prunes finer).
    pub row_group_rows: usize,
    /// A Parquet upload is refused when its columns would decompress to
    /// more than this many times its size (decompression bombs).
    pub max_expansion: u64,
    /// Most row groups and columns a Parquet upload may declare.
    pub max_row_groups: usize,
    pub max_columns: usize,
    /// Uploads the server processes at once (receiving and decoding);
    /// more are answered 429 `too-many-uploads` with `Retry-After`.
    pub max_concurrent_uploads: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_upload_bytes: 16 * 1024 * 1024 * 1024,
            body_idle_timeout_secs: 60,
            worker_memory_bytes: 2 * 1024 * 1024 * 1024,
            worker_cpu_secs: 1800,
            worker: None,
            csv_sample_rows: 10_000,
            row_group_rows: 128 * 1024,
            max_expansion: 200,
            max_row_groups: 100_000,
            max_columns: 2_000,
            max_concurrent_uploads: 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Record every access (switch off only to measure its cost).
    pub enabled: bool,
    /// Folder of the audit files (default `<state>/audit`).
    pub dir: Option<PathBuf>,
    /// A file is rotated when it would grow past this size (and every day).
    pub max_file_bytes: u64,
    /// The Ed25519 key that signs checkpoints of the chain (default
    /// `<state>/audit-signing-key`, made on first start). Keep it outside
    /// the audit folder: whoever holds it can sign a rewritten trail.
    pub signing_key: Option<PathBuf>,
    /// Seconds between two signed checkpoints while records arrive (also
    /// one at start and one at shutdown).
    pub checkpoint_secs: u64,
    /// This server's name among replicas of one deployment (default: the
    /// host name): its sealed audit files are shipped to
    /// `<ship_url>/<replica_id>/`.
    pub replica_id: Option<String>,
    /// Where sealed audit files are shipped (`s3://bucket/audit`). Default:
    /// `audit/` at the root of the catalogue's bucket when
    /// `storage.datasets_url` is an object store; otherwise nowhere.
    pub ship_url: Option<String>,
}

impl AuditSettings {
    /// The audit folder for a state folder.
    pub fn dir_in(&self, state: &std::path::Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| state.join("audit"))
    }

    /// The checkpoint key's file for a state folder.
    pub fn signing_key_in(&self, state: &std::path::Path) -> PathBuf {
        self.signing_key
            .clone()
            .unwrap_or_else(|| state.join("audit-signing-key"))
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            max_file_bytes: 64 * 1024 * 1024,
            signing_key: None,
            checkpoint_secs: 60,
            replica_id: None,
            ship_url: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks any free port.
    pub listen: SocketAddr,
    /// HTTP worker threads (0: one per core).
    pub workers: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Threads of the query runtime that decodes, filters and encodes slices
    /// (0: one per core).
    pub query_threads: usize,
    /// How often the policy file is checked for changes, in milliseconds.
    pub policy_poll_ms: u64,
    /// The URL callers reach this server at (`https://data.example.org`),
    /// for the links Sluice writes into answers: snapshot links, Delta
    /// Sharing profiles, JSON-LD ids. Unset: taken from each request's
    /// `Host` (and from `X-Forwarded-*` only when a `trusted_proxies`
    /// address sent it); behind a proxy, set it, so links never depend on
    /// headers a client chose.
    pub public_url: Option<String>,
    /// Addresses of reverse proxies whose `Forwarded` and `X-Forwarded-*`
    /// headers are believed (for the scheme and host of links and of the
    /// pages' origin check). From anyone else those headers are ignored:
    /// a client could otherwise choose the host written into links.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            workers: 0,
            shutdown_grace_secs: 30,
            query_threads: 0,
            policy_poll_ms: 2000,
            public_url: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Generate a development CA and server certificate under
    /// `<state>/tls/` on first start and serve HTTPS with them.
    SelfSigned,
    /// Serve HTTPS with the PEM certificate chain and key in `cert`/`key`.
    Files,
    /// Plain HTTP. Allowed only on a loopback address.
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    pub mode: TlsMode,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            mode: TlsMode::SelfSigned,
            cert: None,
            key: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// A JWKS file of the identity provider's public keys (RS256, ES256, EdDSA).
    pub jwks_file: Option<PathBuf>,
    /// Accept tokens signed by a development key generated into
    /// `<state>/dev-signing-key.pem` (minted by `sluice token`).
    pub dev_mode: bool,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds (at most 30).
    pub leeway_secs: u64,
    /// Identity providers whose access tokens are trusted, each with its
    /// keys read live from the provider (or a file), its audience and where
    /// its tokens carry roles, groups and organisation.
    pub issuers: Vec<IssuerSettings>,
    /// Issuers whose GA4GH visas are trusted, each with its JWKS file.
    pub visa_issuers: Vec<VisaIssuer>,
    /// Trust the token's issuer (the passport broker) to put only the
    /// holder's own visas in a passport, so a visa's `sub` need not match
    /// the token's `sub` or be linked to it by a `LinkedIdentities` visa.
    pub passport_broker_asserts_identity: bool,
    /// Sign-in to the web pages through an OpenID Connect provider
    /// (authorization code with PKCE). Without it, pages are anonymous
    /// unless dev mode offers sample identities.
    pub oidc: Option<OidcSettings>,
    /// How `sluice login` gets a token from an identity provider: the
    /// OAuth 2.0 device authorization grant (RFC 8628) with a public client.
    /// Without it, `sluice login` asks for a pasted personal token.
    pub login: Option<LoginSettings>,
    /// Longest a personal access token may run, in days (30 when not asked).
    pub personal_token_max_days: u32,
    /// A web session ends after this many seconds without a request.
    pub session_idle_secs: u64,
    /// ... and in any case this many seconds after sign-in.
    pub session_max_secs: u64,
}

/// An identity provider whose access tokens Sluice accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The tokens' `iss`, exactly; without `jwks_uri` or `jwks_file`, also
    /// where `/.well-known/openid-configuration` is read to find the keys.
    pub issuer: String,
    /// The `aud` its tokens must carry (default: `auth.audience`).
    #[serde(default)]
    pub audience: Option<String>,
    /// The provider's keys, read over HTTPS (instead of discovery).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// A JWKS file instead (read at start, and again on an unknown `kid`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// CA certificates (PEM) the provider's HTTPS certificate chains to,
    /// when it is not one of the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Keys are read again this often, so a key the provider removed stops
    /// working within it.
    #[serde(default = "default_key_refresh_secs")]
    pub refresh_secs: u64,
    /// A token with an unknown `kid` reads the keys again at once, but at
    /// most once in this many seconds, so made-up `kid`s cannot make Sluice
    /// hammer the provider.
    #[serde(default = "default_key_min_refresh_secs")]
    pub min_refresh_secs: u64,
    /// Claims that carry roles, groups and the organisation: a claim name,
    /// or a dotted path into nested claims (`realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    #[serde(default = "default_organisation_claim")]
    pub organisation_claim: String,
    /// The provider's role names for Sluice's (`"data-admins" = "admin"`);
    /// without an entry, a role counts only when it is Sluice's own name.
    #[serde(default)]
    pub roles_map: std::collections::BTreeMap<String, String>,
}

pub(crate) fn default_key_refresh_secs() -> u64 {
    300
}
pub(crate) fn default_key_min_refresh_secs() -> u64 {
    30
}

/// The device flow `sluice login` follows, told to the CLI by
/// `GET /v1/login`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    /// The provider, one of `auth.issuers` (its tokens are the ones Sluice
    /// verifies); its discovery document names the device and token
    /// endpoints.
    pub issuer: String,
    /// A public client registered at the provider for the CLI, with the
    /// device grant (and refresh tokens) allowed and no secret.
    pub client_id: String,
    /// Scopes asked for; `offline_access` lets the CLI refresh the token.
    #[serde(default = "default_login_scopes")]
    pub scopes: Vec<String>,
    /// RFC 8707 resource indicator sent with the request, for providers
    /// that set a token's audience from it.
    #[serde(default)]
    pub resource: Option<String>,
}

fn default_login_scopes() -> Vec<String> {
    vec!["openid".into(), "offline_access".into()]
}

/// The identity provider the web pages sign in with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The provider's issuer URL; its `/.well-known/openid-configuration`
    /// is read on first use.
    pub issuer: String,
    pub client_id: String,
    /// The client secret (better given as `SLUICE_AUTH__OIDC__CLIENT_SECRET`).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Scopes asked for; `openid` is always included.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// ID-token claims that carry Sluice's roles, groups and organisation.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    #[serde(default = "default_organisation_claim")]
    pub organisation_claim: String,
    /// The name on the sign-in button.
    #[serde(default = "default_oidc_label")]
    pub label: String,
    /// CA certificates (PEM) the provider's HTTPS certificate chains to,
    /// when it is not one of the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_organisation_claim() -> String {
    "organisation".into()
}
fn default_oidc_label() -> String {
    "your institution".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisaIssuer {
    /// The visa's `iss`, exactly.
    pub issuer: String,
    pub jwks_file: PathBuf,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: "sluice-dev".into(),
            audience: "sluice".into(),
            jwks_file: None,
            dev_mode: false,
            leeway_secs: 30,
            issuers: Vec::new(),
            personal_token_max_days: 90,
            visa_issuers: Vec::new(),
            passport_broker_asserts_identity: false,
            oidc: None,
            login: None,
            session_idle_secs: 1800,
            session_max_secs: 12 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// The catalogue: one folder per dataset.
    pub datasets: PathBuf,
    /// The catalogue in an object store instead (`s3://…`, `gs://…`,
    /// `az://…` when built with those backends; `memory:///` for trials):
    /// when set, `datasets` is not used.
    pub datasets_url: Option<String>,
    /// How often, in milliseconds, a server with an object-store catalogue
    /// looks for changes other replicas made (manifests' ETags).
    pub poll_millis: u64,
    /// Server state: TLS material, development keys.
    pub state: PathBuf,
    /// The policy file (grants).
    pub policy: PathBuf,
}

impl StorageSettings {
    /// `<bucket>/<folder>` of an object-store catalogue's bucket
    /// (`s3://bucket/audit`), where replicas keep what they share beside
    /// the catalogue (see [`shared_folders`]); `None` for a folder or
    /// `memory:///`.
    pub fn shared_url(&self, folder: &str) -> Option<String> {
        let parsed = url::Url::parse(self.datasets_url.as_deref()?).ok()?;
        match (parsed.scheme(), parsed.host_str()) {
            ("memory" | "file", _) | (_, None) => None,
            (scheme, Some(bucket)) => Some(format!("{scheme}://{bucket}/{folder}")),
        }
    }
}

/// This machine's host name (`HOSTNAME`, else the kernel's): the default
/// `audit.replica_id`, and who claimed a version in a bucket.
pub fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The folders replicas share at the root of the catalogue's bucket.
pub mod shared_folders {
    /// Each replica's shipped audit trail, `audit/<replica-id>/`.
    pub const AUDIT: &str = "audit";
    /// The privacy budget, one object per account.
    pub const PRIVACY_LEDGER: &str = "privacy-ledger";
    /// Personal access tokens, one sealed record each.
    pub const PERSONAL_TOKENS: &str = "personal-tokens";
    /// Web sessions, one sealed record each (named by a hash of the id).
    pub const SESSIONS: &str = "sessions";
    /// Sealed tickets of snapshot links.
    pub const SNAPSHOT_TICKETS: &str = "snapshot-tickets";
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            datasets: "datasets".into(),
            datasets_url: None,
            poll_millis: 2000,
            state: "state".into(),
            policy: "config/policy.toml".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (JSON query bodies), in bytes.
    pub max_body_bytes: usize,
    /// Longest `filter` expression, in bytes.
    pub max_filter_bytes: usize,
    /// Rows per record batch produced by the engine.
    pub batch_rows: usize,
    /// Encoded chunks buffered between the engine and the socket, per
    /// response: the bound on a response's memory.
    pub stream_buffer_chunks: usize,
    pub default_page_size: usize,
    pub max_page_size: usize,
    /// Longest time to wait for a request head, in seconds.
    pub request_head_timeout_secs: u64,
    /// Longest time a JSON body (manifest, patch, query) may take to
    /// arrive whole, in seconds; 408 `body-timeout` after it.
    pub body_timeout_secs: u64,
    /// Bytes of JSON bodies the server holds while receiving them, all
    /// requests together; a body that would go past it is answered 503
    /// `server-busy` with `Retry-After` (uploads go to disk and are bounded
    /// by `ingest.max_concurrent_uploads` instead).
    pub max_body_bytes_in_flight: usize,
    /// Requests per minute per subject (per IP address when anonymous).
    pub requests_per_minute: u32,
    /// Requests a caller may make at once above the steady rate.
    pub request_burst: u32,
    /// Data streams one subject (or IP address) may have open at once.
    pub max_streams_per_caller: usize,
    /// Answers the engine works on at once, all callers together (slices,
    /// aggregates, snapshots being written); more wait in line, first come
    /// first served. Each holds its decoder's buffers, so this is what
    /// bounds the engine's memory under any load.
    pub max_running_slices: usize,
    /// Longest a request waits in that line, in seconds; then 503
    /// `server-busy` with `Retry-After`.
    pub slice_queue_secs: u64,
    /// An answer whose reader has taken nothing for this many seconds is
    /// abandoned (audited as aborted), freeing its place in the engine.
    pub stalled_reader_secs: u64,
    /// The slowest a reader may take an answer, in bytes per second, while
    /// the engine waits on it: a reader slower than this for
    /// `slow_reader_grace_secs` (time the engine spent waiting on it) is
    /// cut off, giving its place in the engine back. 0 turns it off.
    pub min_reader_bytes_per_sec: u64,
    pub slow_reader_grace_secs: u64,
    /// Bytes the engine's row-holding operators (the hash tables of
    /// aggregates, sorts) may take, all answers together: one pool, so
    /// memory stays bounded whatever runs at once. An answer that cannot
    /// get its share is refused with 503 `server-busy`.
    pub engine_memory_bytes: usize,
    /// Datasets one publisher may have (drafts and retired ones count);
    /// registering more is 409 `too-many-datasets`.
    pub max_datasets_per_publisher: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_filter_bytes: 4096,
            batch_rows: 8192,
            stream_buffer_chunks: 4,
            default_page_size: 20,
            max_page_size: 100,
            request_head_timeout_secs: 10,
            body_timeout_secs: 10,
            max_body_bytes_in_flight: 32 * 1024 * 1024,
            requests_per_minute: 1200,
            request_burst: 200,
            max_streams_per_caller: 8,
            max_running_slices: 16,
            slice_queue_secs: 30,
            stalled_reader_secs: 120,
            // 256 kbit/s: a researcher on a poor mobile link reads faster.
            min_reader_bytes_per_sec: 32 * 1024,
            slow_reader_grace_secs: 20,
            engine_memory_bytes: 512 * 1024 * 1024,
            max_datasets_per_publisher: 1000,
        }
    }
}

impl Settings {
    /// Loads `file` (if it exists) and `SLUICE_*` variables over the defaults.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let figment = Figment::new()
            .merge(Toml::file_exact(file))
            .merge(Env::prefixed("SLUICE_").filter(is_setting).split("__"));
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.check(&file.display().to_string())?;
        Ok(settings)
    }

    /// The defaults, not checked as a server's would be: for client
    /// commands given --server and no settings file (they read no more
    /// than where a local CA might be).
    pub fn client_defaults() -> Result<Self, ConfigError> {
        Ok(Figment::new().extract().map_err(Box::new)?)
    }

    /// Loads only from a TOML string (no environment), for tests and tools.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let settings: Settings = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        settings.check("<string>")?;
        Ok(settings)
    }

    fn check(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key, problem: String| ConfigError::Inconsistent {
            file: file.to_owned(),
            key,
            problem,
        };
        if self.tls.mode == TlsMode::Off && !self.server.listen.ip().is_loopback() {
            return Err(bad(
                "tls.mode",
                format!(
                    "plain HTTP is allowed only on a loopback address, not {}",
                    self.server.listen.ip()
                ),
            ));
        }
        if let Some(flight) = self.flight.listen
            && self.tls.mode == TlsMode::Off
            && !flight.ip().is_loopback()
        {
            return Err(bad(
                "flight.listen",
                format!(
                    "Flight SQL without TLS is allowed only on a loopback address, not {}",
                    flight.ip()
                ),
            ));
        }
        if self.tls.mode == TlsMode::Files && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return Err(bad(
                "tls.cert",
                "mode \"files\" needs both tls.cert and tls.key".into(),
            ));
        }
        if self.auth.leeway_secs > 30 {
            return Err(bad(
                "auth.leeway_secs",
                format!("{} is more than the 30 s allowed", self.auth.leeway_secs),
            ));
        }
        if !self.auth.dev_mode
            && self.auth.jwks_file.is_none()
            && self.auth.oidc.is_none()
            && self.auth.issuers.is_empty()
        {
            return Err(bad(
                "auth.issuers",
                "no one could ever sign in: set auth.issuers, auth.jwks_file, auth.oidc or auth.dev_mode = true"
                    .into(),
            ));
        }
        crate::auth::check_issuers(&self.auth).map_err(|(key, why)| bad(key, why))?;
        // `sluice login` refuses a resource that is not the server it signs
        // in to (a server could otherwise collect tokens for another).
        if let (Some(resource), Some(public)) = (
            self.auth.login.as_ref().and_then(|l| l.resource.as_deref()),
            &self.server.public_url,
        ) && resource.trim_end_matches('/') != public.trim_end_matches('/')
        {
            return Err(bad(
                "auth.login.resource",
                format!("must be this server's address, server.public_url ({public})"),
            ));
        }
        if !self.auth.dev_mode && self.server.public_url.is_none() {
            return Err(bad(
                "server.public_url",
                "set it to the address researchers reach this server at (https://data.example.org): outside dev mode, links in answers and the pages' origin check never come from request headers".into(),
            ));
        }
        if let Some(public) = &self.server.public_url {
            let parsed = url::Url::parse(public).ok().filter(|u| {
                matches!(u.scheme(), "https" | "http")
                    && u.host().is_some()
                    && u.path().trim_end_matches('/').is_empty()
                    && u.query().is_none()
                    && u.username().is_empty()
            });
            if parsed.is_none() {
                return Err(bad(
                    "server.public_url",
                    "must be a scheme and host (and port), such as https://data.example.org, with no path".into(),
                ));
            }
        }
        if self.limits.batch_rows == 0
            || self.limits.stream_buffer_chunks == 0
            || self.limits.max_running_slices == 0
        {
            return Err(bad(
                "limits",
                "batch_rows, stream_buffer_chunks and max_running_slices must be at least 1".into(),
            ));
        }
        if self.limits.default_page_size == 0
            || self.limits.default_page_size > self.limits.max_page_size
        {
            return Err(bad(
                "limits.default_page_size",
                "must be between 1 and limits.max_page_size".into(),
            ));
        }
        Ok(())
    }
}

/// Only `SLUICE_<SECTION>__<KEY>` variables are settings; others with the
/// prefix (`SLUICE_CONFIG`, used by the CLI) are not.
fn is_setting(key: &figment::value::UncasedStr) -> bool {
    const SECTIONS: [&str; 7] = [
        "server__",
        "tls__",
        "auth__",
        "storage__",
        "limits__",
        "audit__",
        "ingest__",
    ];
    let key = key.as_str().to_ascii_lowercase();
    SECTIONS.iter().any(|section| key.starts_with(section))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Settings::from_toml_str("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = Settings::from_toml_str("[limits]\nbatch_rows = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_rows"), "{err}");
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let err = Settings::from_toml_str(
            "[server]\nlisten = \"0.0.0.0:8080\"\n[tls]\nmode = \"off\"\n[auth]\ndev_mode = true\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tls.mode"), "{err}");
    }

    #[test]
    // The error type is figment's own; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    fn environment_variables_override_the_file_and_others_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "[server]\nlisten = \"127.0.0.1:1\"\n[auth]\ndev_mode = true\n",
            )?;
            jail.set_env("SLUICE_SERVER__LISTEN", "127.0.0.1:9443");
            jail.set_env("SLUICE_LIMITS__BATCH_ROWS", "1024");
            jail.set_env("SLUICE_CONFIG", "elsewhere.toml");
            jail.set_env("SLUICE_VENV", "/tmp/venv");
            let settings =
                Settings::load(std::path::Path::new("s.toml")).map_err(|e| e.to_string())?;
            assert_eq!(settings.server.listen.port(), 9443);
            assert_eq!(settings.limits.batch_rows, 1024);
            jail.set_env("SLUICE_LIMITS__BATCH_ROWS", "many");
            let err = Settings::load(std::path::Path::new("s.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.to_lowercase().contains("batch_rows") && err.contains("SLUICE_"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn issuers_are_read_and_checked() {
        let base = "[server]\npublic_url = \"https://data.example.org\"\n";
        let good = format!(
            "{base}[[auth.issuers]]\nissuer = \"https://login.example.org/realms/r\"\nroles_claim = \"realm_access.roles\"\nroles_map = {{ \"staff\" = \"researcher\" }}\n"
        );
        let settings = Settings::from_toml_str(&good).unwrap();
        assert_eq!(settings.auth.issuers[0].refresh_secs, 300);
        assert_eq!(settings.auth.issuers[0].min_refresh_secs, 30);
        for (bad, why) in [
            ("issuer = \"http://login.example.org\"", "https"),
            (
                "issuer = \"https://a.example\"\nroles_map = { \"x\" = \"owner\" }",
                "unknown role",
            ),
            (
                "issuer = \"https://a.example\"\nrefresh_secs = 0",
                "at least 1",
            ),
            (
                "issuer = \"https://a.example\"\njwks_uri = \"https://a.example/k\"\njwks_file = \"k.json\"",
                "not both",
            ),
        ] {
            let text = format!("{base}[[auth.issuers]]\n{bad}\n");
            let err = Settings::from_toml_str(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let twice =
            format!("{good}[[auth.issuers]]\nissuer = \"https://login.example.org/realms/r\"\n");
        let err = Settings::from_toml_str(&twice).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
        // `sluice login`'s provider must be one whose tokens verify.
        let login = |issuer: &str| {
            format!("{good}[auth.login]\nissuer = \"{issuer}\"\nclient_id = \"sluice-cli\"\n")
        };
        let settings =
            Settings::from_toml_str(&login("https://login.example.org/realms/r")).unwrap();
        let offered = settings.auth.login.unwrap();
        assert_eq!(offered.scopes, ["openid", "offline_access"]);
        let err = Settings::from_toml_str(&login("https://elsewhere.example"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not one of auth.issuers"), "{err}");
        let elsewhere = format!(
            "{}resource = \"https://other.example.org\"\n",
            login("https://login.example.org/realms/r")
        );
        let err = Settings::from_toml_str(&elsewhere).unwrap_err().to_string();
        assert!(err.contains("server.public_url"), "{err}");
    }

    #[test]
    fn defaults_need_a_key_source() {
        let err = Settings::from_toml_str("").unwrap_err().to_string();
        assert!(err.contains("auth.issuers"), "{err}");
        assert!(Settings::from_toml_str("[auth]\ndev_mode = true\n").is_ok());
        // Outside dev mode, links never come from request headers.
        let jwks = "[auth]\njwks_file = \"keys.json\"\n";
        let unset = Settings::from_toml_str(jwks).unwrap_err().to_string();
        assert!(unset.contains("public_url"), "{unset}");
        let with = format!("[server]\npublic_url = \"https://data.example.org\"\n{jwks}");
        assert!(Settings::from_toml_str(&with).is_ok());
        for bad in [
            "data.example.org",
            "https://data.example.org/x",
            "ftp://d.example",
        ] {
            let text = format!("[server]\npublic_url = \"{bad}\"\n{jwks}");
            assert!(Settings::from_toml_str(&text).is_err(), "{bad}");
        }
    }
}
