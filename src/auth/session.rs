//! Web sessions and the tokens that guard their forms.
//!
//! A session is server-side: the browser holds only a random 256-bit id in
//! an `HttpOnly; Secure; SameSite=Lax` cookie, and this store maps it to
//! the principal the identity provider vouched for. A session ends after
//! `auth.session_idle_secs` without a request, `auth.session_max_secs`
//! after sign-in whatever happens, or at sign-out; sign-in always makes a
//! new id (an id planted before sign-in is never promoted).
//!
//! Every replica knows every session, and a restart keeps them: each is
//! also a record in a store replicas share (the catalogue's bucket, else
//! the state folder), named by a hash of the id (whoever reads the bucket
//! learns no cookie) and sealed with an HMAC (whoever writes it makes no
//! session). A replica takes a session it has not seen from there, and
//! reads the record again every [`RECHECK`], so a sign-out on one replica
//! ends the session on all within it. When it was last used is noted
//! beside the record at most every [`SEEN_EVERY`] (or a quarter of the
//! idle limit, when that is shorter), so idle expiry counts requests to
//! any replica.
//!
//! Forms carry a CSRF token: an HMAC of the session id (or, before sign-in,
//! of a random pre-session cookie) under a key replicas share. A cross-site
//! page can neither read it nor compute it. A sign-in on its way through
//! the identity provider is held by the browser, not here: its `state`,
//! PKCE verifier, nonce and return path travel in a cookie sealed with the
//! same key (HMAC), so starting sign-ins costs the server no memory. Each
//! subject holds at most [`MAX_SESSIONS_PER_SUBJECT`] sessions (its oldest
//! goes), and a full store refuses new sessions rather than dropping other
//! people's. This module knows nothing about HTTP; `http::pages` sets the
//! cookies and checks the tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::auth::Principal;

/// Most sessions held at once; beyond it sign-ins are refused.
const MAX_SESSIONS: usize = 100_000;
/// Most sessions of one subject; a new one ends its oldest.
pub const MAX_SESSIONS_PER_SUBJECT: usize = 10;
/// A sign-in must come back from the identity provider within this.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// A replica reads a session's record again after this long.
const RECHECK: Duration = Duration::from_secs(5);
/// A session's last use is noted in the shared store at most this often.
const SEEN_EVERY: Duration = Duration::from_secs(60);

/// A fresh random token: 256 bits, base64url.
/// Why no session was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefused {
    /// This replica holds as many live sessions as it may.
    Full,
    /// The session's record could not be written.
    Store,
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub principal: Principal,
    /// How the principal signed in: `oidc` or `dev`.
    pub method: &'static str,
    started: Instant,
    last_seen: Instant,
    /// When this replica last read the shared record (or wrote it).
    checked: Instant,
    /// When this replica last noted the session's use in the store.
    noted: Instant,
}

/// A session as kept in the shared store.
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionRecord {
    principal: Principal,
    method: String,
    /// Seconds since the epoch.
    started: i64,
}

/// A sign-in sent to the identity provider and not back yet, as sealed
/// into the browser's login cookie.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingLogin {
    /// The OAuth `state` the callback must carry.
    pub state: String,
    /// The PKCE code verifier (RFC 7636).
    pub verifier: String,
    /// The OpenID `nonce` the ID token must carry.
    pub nonce: String,
    /// The local page to return to.
    pub next: String,
    /// When it started (seconds since the epoch).
    started: i64,
}

impl PendingLogin {
    pub fn new(state: String, verifier: String, nonce: String, next: String) -> Self {
        Self {
            state,
            verifier,
            nonce,
            next,
            started: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

/// Every session of this server, and the key that seals its tokens.
pub struct Sessions {
    idle: Duration,
    max_age: Duration,
    key: [u8; 32],
    store: Mutex<Store>,
    /// Where replicas share sessions.
    shared: Arc<dyn ObjectStore>,
}

#[derive(Default)]
struct Store {
    sessions: HashMap<String, Session>,
    /// Each subject's session ids, oldest first.
    by_subject: HashMap<String, Vec<String>>,
}

impl Sessions {
    /// Sessions kept in `shared` (replicas give the same store and key).
    pub fn new(
        idle: Duration,
        max_age: Duration,
        key: [u8; 32],
        shared: Arc<dyn ObjectStore>,
    ) -> Self {
        Self {
            idle,
            max_age,
            key,
            store: Mutex::new(Store::default()),
            shared,
        }
    }

    /// The most a session may live, for the cookie's `Max-Age`.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// A new session for `principal`, under a new id. Refused when this
    /// replica holds as many live sessions as it may, or when its record
    /// cannot be written: a session only this replica knew would end,
    /// unexplained, at the next recheck or on the next replica.
    pub async fn create(
        &self,
        principal: Principal,
        method: &'static str,
    ) -> Result<Session, SessionRefused> {
        let session = self
            .remember_and_evict(random_token(), principal, method, Instant::now())
            .await
            .ok_or(SessionRefused::Full)?;
        let record = SessionRecord {
            principal: session.principal.clone(),
            method: method.to_owned(),
            started: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        if let Err(e) = self.put_record(&session.id, &record).await {
            lock(&self.store).remove(&session.id);
            tracing::warn!(error = %e, "could not keep a new session");
            return Err(SessionRefused::Store);
        }
        self.noted(session, true).await.ok_or(SessionRefused::Store)
    }

    /// [`Sessions::remember`], then ends the sessions it pushed out
    /// everywhere (else another replica, or this one, would read them back).
    async fn remember_and_evict(
        &self,
        id: String,
        principal: Principal,
        method: &'static str,
        started: Instant,
    ) -> Option<Session> {
        let (session, evicted) = self.remember(id, principal, method, started);
        for old in evicted {
            self.end(&old).await;
        }
        session
    }

    /// Keeps a session in this replica's memory (at most
    /// [`MAX_SESSIONS_PER_SUBJECT`] per subject here: its oldest goes, and
    /// is returned to be ended).
    fn remember(
        &self,
        id: String,
        principal: Principal,
        method: &'static str,
        started: Instant,
    ) -> (Option<Session>, Vec<String>) {
        let now = Instant::now();
        let session = Session {
            id,
            principal,
            method,
            started,
            last_seen: now,
            checked: now,
            noted: now,
        };
        let mut store = lock(&self.store);
        let Store {
            sessions,
            by_subject,
        } = &mut *store;
        let mine = by_subject.entry(session.principal.sub.clone()).or_default();
        mine.retain(|id| sessions.get(id).is_some_and(|s| !self.expired(s, now)));
        let mut evicted = Vec::new();
        while mine.len() >= MAX_SESSIONS_PER_SUBJECT {
            let oldest = mine.remove(0);
            sessions.remove(&oldest);
            evicted.push(oldest);
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| !self.expired(s, now));
            by_subject.retain(|_, ids| {
                ids.retain(|id| sessions.contains_key(id));
                !ids.is_empty()
            });
            if sessions.len() >= MAX_SESSIONS {
                return (None, evicted);
            }
        }
        by_subject
            .entry(session.principal.sub.clone())
            .or_default()
            .push(session.id.clone());
        sessions.insert(session.id.clone(), session.clone());
        (Some(session), evicted)
    }

    /// The live session with this id, its idle clock restarted; an
    /// expired or ended one is removed and not returned. Read from the
    /// shared store when this replica has not seen it, or saw it more than
    /// [`RECHECK`] ago.
    pub async fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        // (The lock is never held across an await.)
        let (known, fresh, idle_here, aged) = {
            let mut store = lock(&self.store);
            match store.sessions.get_mut(id) {
                Some(s) if now.duration_since(s.started) >= self.max_age => {
                    store.remove(id);
                    (None, None, false, true)
                }
                Some(s) if self.expired(s, now) => {
                    store.remove(id);
                    (None, None, true, false)
                }
                Some(s) if now.duration_since(s.checked) < RECHECK => {
                    s.last_seen = now;
                    let due = now.duration_since(s.noted) >= self.seen_every();
                    if due {
                        s.noted = now;
                    }
                    (None, Some((s.clone(), due)), false, false)
                }
                Some(s) => (Some(s.clone()), None, false, false),
                None => (None, None, false, false),
            }
        };
        if aged {
            self.end(id).await;
            return None;
        }
        if let Some((session, due)) = fresh {
            return self.noted(session, due).await;
        }
        // Idle here: still live only if another replica noted a use since.
        if idle_here {
            let wall = time::OffsetDateTime::now_utc().unix_timestamp();
            let used_elsewhere = self
                .last_noted(id)
                .await
                .is_some_and(|seen| wall - seen < self.idle.as_secs() as i64);
            if !used_elsewhere {
                self.end(id).await;
                return None;
            }
        }
        // Read the record: it may have ended on another replica, or be one
        // this replica has not seen (another signed it in, or a restart).
        let Some(record) = self.read_record(id).await else {
            lock(&self.store).remove(id);
            return None;
        };
        let wall = time::OffsetDateTime::now_utc().unix_timestamp();
        let age = Duration::from_secs(u64::try_from(wall - record.started).unwrap_or(0));
        let idle = match self.last_noted(id).await {
            Some(seen) => Duration::from_secs(u64::try_from(wall - seen).unwrap_or(0)),
            None => age,
        };
        let idle = known
            .as_ref()
            .map_or(idle, |k| idle.min(now.duration_since(k.last_seen)));
        if age >= self.max_age || idle >= self.idle {
            self.end(id).await;
            return None;
        }
        let method = match record.method.as_str() {
            "oidc" => "oidc",
            _ => "dev",
        };
        let started = now.checked_sub(age).unwrap_or(now);
        let session = match known {
            Some(mut k) => {
                let mut store = lock(&self.store);
                if let Some(s) = store.sessions.get_mut(id) {
                    s.checked = now;
                    s.last_seen = now;
                    k = s.clone();
                }
                k
            }
            None => {
                self.remember_and_evict(id.to_owned(), record.principal, method, started)
                    .await?
            }
        };
        let due = now.duration_since(session.noted) >= self.seen_every();
        if due && let Some(s) = lock(&self.store).sessions.get_mut(id) {
            s.noted = now;
        }
        self.noted(session, due).await
    }

    /// Notes the session's use in the store when `due`; returns it.
    async fn noted(&self, session: Session, due: bool) -> Option<Session> {
        if due {
            let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
            if let Err(e) = self
                .shared
                .put(&seen_path(&session.id), PutPayload::from(now.into_bytes()))
                .await
            {
                tracing::warn!(error = %e, "could not note a session's use");
            }
        }
        Some(session)
    }

    /// Ends a session (sign-out) here and, within [`RECHECK`], everywhere.
    pub async fn end(&self, id: &str) {
        lock(&self.store).remove(id);
        for path in [record_path(id), seen_path(id)] {
            match self.shared.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "could not end a shared session"),
            }
        }
    }

    async fn put_record(&self, id: &str, record: &SessionRecord) -> Result<(), String> {
        let json = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        let tag = self.record_mac(id, &json).finalize().into_bytes();
        let body = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(tag)
        );
        self.shared
            .put(&record_path(id), PutPayload::from(body.into_bytes()))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// An object's bytes, if it is there and readable.
    async fn read(&self, path: &StorePath) -> Option<bytes::Bytes> {
        self.shared.get(path).await.ok()?.bytes().await.ok()
    }

    async fn read_record(&self, id: &str) -> Option<SessionRecord> {
        let bytes = self.read(&record_path(id)).await?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (json, tag) = text.split_once('.')?;
        let json = URL_SAFE_NO_PAD.decode(json).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.record_mac(id, &json).verify_slice(&tag).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// When another replica last noted a use; a time in the future is no
    /// answer (it would keep an idle session alive).
    async fn last_noted(&self, id: &str) -> Option<i64> {
        let bytes = self.read(&seen_path(id)).await?;
        let seen: i64 = std::str::from_utf8(&bytes).ok()?.trim().parse().ok()?;
        (seen <= time::OffsetDateTime::now_utc().unix_timestamp()).then_some(seen)
    }

    /// A record's seal covers the session it is for (the hash of its id,
    /// which names it), so a record copied under another name is no
    /// session.
    fn record_mac(&self, id: &str, json: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac(b"sluice-session\0", record_path(id).as_ref().as_bytes());
        mac.update(b"\0");
        mac.update(json);
        mac
    }

    /// How often a session's use is noted in the store: often enough for
    /// idle expiry to count use on any replica.
    fn seen_every(&self) -> Duration {
        SEEN_EVERY.min(self.idle / 4)
    }

    /// Whether this replica holds `id` as read from the store less than
    /// [`RECHECK`] ago (a lookup that costs no read of the store).
    pub fn is_fresh(&self, id: &str) -> bool {
        lock(&self.store)
            .sessions
            .get(id)
            .is_some_and(|s| s.checked.elapsed() < RECHECK)
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) >= self.idle
            || now.duration_since(s.started) >= self.max_age
    }

    /// The login cookie's value for a sign-in: the sign-in as JSON and
    /// its HMAC, both base64url.
    pub fn seal_login(&self, login: &PendingLogin) -> String {
        let json = serde_json::to_vec(login).unwrap_or_default();
        let tag = self.mac(b"sluice-login\0", &json).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The sign-in sealed in a login cookie, if this server sealed it and
    /// it is younger than [`PENDING_TTL`].
    pub fn open_login(&self, sealed: &str) -> Option<PendingLogin> {
        let (json, tag) = sealed.split_once('.')?;
        let json = URL_SAFE_NO_PAD.decode(json).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(b"sluice-login\0", &json).verify_slice(&tag).ok()?;
        let login: PendingLogin = serde_json::from_slice(&json).ok()?;
        let age = time::OffsetDateTime::now_utc().unix_timestamp() - login.started;
        (0..PENDING_TTL.as_secs() as i64)
            .contains(&age)
            .then_some(login)
    }

    /// The CSRF token for forms shown to the holder of `binding` (a session
    /// id, or a pre-session cookie before sign-in).
    pub fn csrf_token(&self, binding: &str) -> String {
        self.sign(b"sluice-csrf\0", binding)
    }

    /// Whether `token` is the CSRF token of `binding` (compared in constant time).
    pub fn csrf_valid(&self, binding: &str, token: &str) -> bool {
        !binding.is_empty() && self.signed(b"sluice-csrf\0", binding, token)
    }

    /// A new pre-session binding (the cookie that binds the CSRF token of
    /// forms shown before sign-in): a random value and this server's MAC
    /// of it, so a value a client chose, or an attacker planted, is never
    /// taken back as one.
    pub fn new_binding(&self) -> String {
        let value = random_token();
        let mac = self.sign(b"sluice-pre\0", &value);
        format!("{value}.{mac}")
    }

    /// Whether `binding` is one this server issued ([`Sessions::new_binding`]).
    pub fn binding_valid(&self, binding: &str) -> bool {
        binding
            .split_once('.')
            .is_some_and(|(value, mac)| self.signed(b"sluice-pre\0", value, mac))
    }

    /// `data`'s MAC for `purpose`, as URL-safe base64.
    fn sign(&self, purpose: &[u8], data: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(purpose, data.as_bytes()).finalize().into_bytes())
    }

    /// Whether `mac` (URL-safe base64) is `data`'s MAC for `purpose`
    /// (compared in constant time).
    fn signed(&self, purpose: &[u8], data: &str, mac: &str) -> bool {
        URL_SAFE_NO_PAD.decode(mac).is_ok_and(|bytes| {
            self.mac(purpose, data.as_bytes())
                .verify_slice(&bytes)
                .is_ok()
        })
    }

    /// HMAC under this server's key, `purpose` first so a token made for
    /// one use never passes for another.
    fn mac(&self, purpose: &[u8], data: &[u8]) -> Hmac<Sha256> {
        #[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(purpose);
        mac.update(data);
        mac
    }
}

impl Store {
    fn remove(&mut self, id: &str) {
        if let Some(session) = self.sessions.remove(id)
            && let Some(ids) = self.by_subject.get_mut(&session.principal.sub)
        {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_subject.remove(&session.principal.sub);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update leaves the maps whole, so a poisoned lock's data is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A session's record: named by a hash of its id, so whoever can list the
/// store learns no cookie.
fn record_path(id: &str) -> StorePath {
    stored_as(id, "json")
}

/// Where a session's last use is noted, beside its record.
fn seen_path(id: &str) -> StorePath {
    stored_as(id, "seen")
}

fn stored_as(id: &str, extension: &str) -> StorePath {
    use sha2::Digest;
    let hash = Sha256::digest(id.as_bytes());
    StorePath::from(format!("{}.{extension}", URL_SAFE_NO_PAD.encode(hash)))
}

/// PKCE (RFC 7636, S256): a verifier and its challenge.
pub fn pkce_pair() -> (String, String) {
    let verifier = random_token();
    let challenge = pkce_challenge(&verifier);
    (verifier, challenge)
}

/// `BASE64URL(SHA256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `next` if it is a path on this server, else `/`: a sign-in never
/// forwards to another site (no open redirect through `//host` or
/// `/\host`, which browsers read as another host).
pub fn local_path(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if ok { next.to_owned() } else { "/".into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn sessions_with(idle: Duration, max_age: Duration, key: u8) -> Sessions {
        Sessions::new(
            idle,
            max_age,
            [key; 32],
            Arc::new(object_store::memory::InMemory::new()),
        )
    }

    fn alice() -> Principal {
        Principal {
            sub: "alice@uni.example".into(),
            roles: BTreeSet::new(),
            groups: BTreeSet::new(),
            organisation: None,
            visas: Vec::new(),
            expires: None,
            scope: None,
        }
    }

    #[test]
    fn the_pkce_challenge_is_the_rfc_7636_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path("/datasets/x?q=1"), "/datasets/x?q=1");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "",
            "/a\nb",
        ] {
            assert_eq!(local_path(bad), "/", "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_session_ends_when_idle_and_at_sign_out_and_ids_are_new_each_time() {
        let sessions = sessions_with(Duration::from_millis(50), Duration::from_secs(60), 1);
        let a = sessions.create(alice(), "dev").await.unwrap();
        let b = sessions.create(alice(), "dev").await.unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(
            sessions.get(&a.id).await.unwrap().principal.sub,
            "alice@uni.example"
        );
        sessions.end(&a.id).await;
        assert!(sessions.get(&a.id).await.is_none());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(sessions.get(&b.id).await.is_none(), "idle expiry");
    }

    #[tokio::test]
    async fn a_session_ends_at_its_absolute_age_even_when_busy() {
        let sessions = sessions_with(Duration::from_secs(60), Duration::from_millis(60), 1);
        let a = sessions.create(alice(), "dev").await.unwrap();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(15)).await;
            assert!(sessions.get(&a.id).await.is_some());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(sessions.get(&a.id).await.is_none());
    }

    /// Two replicas over one store with one key: a session made on one is
    /// honoured by the other (and after a restart: a new `Sessions`), and
    /// one ended on either is ended on both; a store record sealed under
    /// another key is no session.
    #[tokio::test]
    async fn every_replica_knows_every_session() {
        let shared: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let replica = |key: u8| {
            Sessions::new(
                Duration::from_secs(60),
                Duration::from_secs(600),
                [key; 32],
                shared.clone(),
            )
        };
        let (a, b) = (replica(1), replica(1));
        let made = a.create(alice(), "oidc").await.unwrap();
        let seen = b.get(&made.id).await.expect("known on the other replica");
        assert_eq!(seen.principal.sub, "alice@uni.example");
        assert_eq!(seen.method, "oidc");
        assert!(
            replica(1).get(&made.id).await.is_some(),
            "a restart keeps it"
        );
        assert!(replica(2).get(&made.id).await.is_none(), "another key");
        assert!(b.get("not-a-session").await.is_none());
        // A record copied under another name is no session.
        let bytes = shared
            .get(&record_path(&made.id))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        shared
            .put(&record_path("chosen-id"), PutPayload::from(bytes))
            .await
            .unwrap();
        assert!(b.get("chosen-id").await.is_none());
        b.end(&made.id).await;
        assert!(a.get(&made.id).await.is_some(), "until a reads again");
        tokio::time::sleep(RECHECK).await;
        assert!(a.get(&made.id).await.is_none(), "ended everywhere");
    }

    #[test]
    fn only_bindings_this_server_issued_are_taken_back() {
        let sessions = sessions_with(Duration::from_secs(60), Duration::from_secs(600), 1);
        let issued = sessions.new_binding();
        assert!(sessions.binding_valid(&issued));
        assert!(!sessions.binding_valid(&"x".repeat(48)));
        let (value, _) = issued.split_once('.').unwrap();
        assert!(!sessions.binding_valid(&format!("{value}.AAAA")));
        let other = sessions_with(Duration::from_secs(60), Duration::from_secs(600), 2);
        assert!(!other.binding_valid(&issued));
    }

    #[test]
    fn csrf_tokens_belong_to_one_binding() {
        let sessions = sessions_with(Duration::from_secs(60), Duration::from_secs(60), 1);
        let token = sessions.csrf_token("session-a");
        assert!(sessions.csrf_valid("session-a", &token));
        assert!(!sessions.csrf_valid("session-b", &token));
        assert!(!sessions.csrf_valid("", &sessions.csrf_token("")));
        assert!(!sessions.csrf_valid("session-a", "not base64 !"));
        // Another server (another key) does not accept it.
        let other = sessions_with(Duration::from_secs(60), Duration::from_secs(60), 2);
        assert!(!other.csrf_valid("session-a", &token));
    }

    /// A session whose record cannot be written is not given: it would end
    /// at the next recheck, or on the next replica, with no reason shown.
    #[tokio::test]
    async fn no_session_without_its_record() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the store's folder should be: every write fails,
        // even for root.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(&blocked).unwrap();
        let sessions = Sessions::new(
            Duration::from_secs(60),
            Duration::from_secs(600),
            [1; 32],
            Arc::new(store),
        );
        assert_eq!(
            sessions.create(alice(), "dev").await.err(),
            Some(SessionRefused::Store)
        );
        assert!(
            lock(&sessions.store).sessions.is_empty(),
            "nothing kept here"
        );
    }

    #[test]
    fn a_sealed_sign_in_opens_only_here_unchanged_and_young() {
        let sessions = sessions_with(Duration::from_secs(60), Duration::from_secs(60), 1);
        let login = PendingLogin::new("st".into(), "v".into(), "n".into(), "/x".into());
        let sealed = sessions.seal_login(&login);
        assert_eq!(sessions.open_login(&sealed), Some(login.clone()));
        let other = sessions_with(Duration::from_secs(60), Duration::from_secs(60), 2);
        assert_eq!(other.open_login(&sealed), None, "another key");
        let (json, tag) = sealed.split_once('.').unwrap();
        let mut changed = URL_SAFE_NO_PAD.decode(json).unwrap();
        changed[2] ^= 1;
        assert_eq!(
            sessions.open_login(&format!("{}.{tag}", URL_SAFE_NO_PAD.encode(changed))),
            None
        );
        // A CSRF token for the same bytes is not a login seal.
        let csrf =
            sessions.csrf_token(&String::from_utf8(URL_SAFE_NO_PAD.decode(json).unwrap()).unwrap());
        assert_eq!(sessions.open_login(&format!("{json}.{csrf}")), None);
        let mut old = login;
        old.started -= PENDING_TTL.as_secs() as i64;
        assert_eq!(
            sessions.open_login(&sessions.seal_login(&old)),
            None,
            "expired"
        );
    }

    #[tokio::test]
    async fn one_subject_holds_a_bounded_number_of_sessions_and_others_keep_theirs() {
        let sessions = sessions_with(Duration::from_secs(60), Duration::from_secs(60), 1);
        let mut bob = alice();
        bob.sub = "bob@uni.example".into();
        let bobs = sessions.create(bob, "dev").await.unwrap();
        let first = sessions.create(alice(), "dev").await.unwrap();
        for _ in 0..MAX_SESSIONS_PER_SUBJECT {
            sessions.create(alice(), "dev").await.unwrap();
        }
        assert!(
            sessions.get(&first.id).await.is_none(),
            "alice's oldest went, from the shared store too"
        );
        assert!(sessions.get(&bobs.id).await.is_some(), "bob's stayed");
        assert_eq!(
            lock(&sessions.store).by_subject["alice@uni.example"].len(),
            MAX_SESSIONS_PER_SUBJECT
        );
    }
}
