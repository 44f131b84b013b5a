//! Web sessions and the tokens that guard their forms.
//!
//! A session is server-side: the browser holds only a random 256-bit id in
//! an `HttpOnly; Secure; SameSite=Lax` cookie, and this store maps it to
//! the principal the identity provider vouched for. A session ends after
//! `auth.session_idle_secs` without a request, `auth.session_max_secs`
//! after sign-in whatever happens, or at sign-out; sign-in always makes a
//! new id (an id planted before sign-in is never promoted). Sessions live
//! in memory: a restart signs everyone out, which is the safe direction.
//!
//! Forms carry a CSRF token: an HMAC of the session id (or, before sign-in,
//! of a random pre-session cookie) under a key made at start. A cross-site
//! page can neither read it nor compute it. This module knows nothing about
//! HTTP; `http::pages` sets the cookies and checks the tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::auth::Principal;

/// Most sessions held at once; beyond it the oldest is dropped.
const MAX_SESSIONS: usize = 100_000;
/// Most sign-ins started and not finished at once.
const MAX_PENDING: usize = 10_000;
/// A sign-in must come back from the identity provider within this.
pub const PENDING_TTL: Duration = Duration::from_secs(600);

/// A fresh random token: 256 bits, base64url.
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
}

/// A sign-in sent to the identity provider and not back yet.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    /// The PKCE code verifier (RFC 7636).
    pub verifier: String,
    /// The OpenID `nonce` the ID token must carry.
    pub nonce: String,
    /// The local page to return to.
    pub next: String,
    started: Instant,
}

impl PendingLogin {
    pub fn new(verifier: String, nonce: String, next: String) -> Self {
        Self {
            verifier,
            nonce,
            next,
            started: Instant::now(),
        }
    }
}

/// Every session and pending sign-in of this server.
pub struct Sessions {
    idle: Duration,
    max_age: Duration,
    csrf_key: [u8; 32],
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, PendingLogin>>,
}

impl Sessions {
    pub fn new(idle: Duration, max_age: Duration) -> Self {
        let mut csrf_key = [0u8; 32];
        rand::rng().fill_bytes(&mut csrf_key);
        Self {
            idle,
            max_age,
            csrf_key,
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The most a session may live, for the cookie's `Max-Age`.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// A new session for `principal`, under a new id.
    pub fn create(&self, principal: Principal, method: &'static str) -> Session {
        let now = Instant::now();
        let session = Session {
            id: random_token(),
            principal,
            method,
            started: now,
            last_seen: now,
        };
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| !self.expired(s, now));
            if sessions.len() >= MAX_SESSIONS
                && let Some(oldest) = sessions
                    .values()
                    .min_by_key(|s| s.last_seen)
                    .map(|s| s.id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(session.id.clone(), session.clone());
        session
    }

    /// The live session with this id, its idle clock restarted; an
    /// expired one is removed and not returned.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        let session = sessions.get_mut(id)?;
        if self.expired(session, now) {
            sessions.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends a session (sign-out).
    pub fn end(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) >= self.idle
            || now.duration_since(s.started) >= self.max_age
    }

    /// Keeps a sign-in under its `state`; false when too many are waiting.
    pub fn remember_login(&self, state: &str, login: PendingLogin) -> bool {
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, p| p.started.elapsed() < PENDING_TTL);
            if pending.len() >= MAX_PENDING {
                return false;
            }
        }
        pending.insert(state.to_owned(), login);
        true
    }

    /// The sign-in started under `state`, once: a replayed callback finds
    /// nothing.
    pub fn take_login(&self, state: &str) -> Option<PendingLogin> {
        lock(&self.pending)
            .remove(state)
            .filter(|p| p.started.elapsed() < PENDING_TTL)
    }

    /// The CSRF token for forms shown to the holder of `binding` (a session
    /// id, or a pre-session cookie before sign-in).
    pub fn csrf_token(&self, binding: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.csrf_mac(binding).finalize().into_bytes())
    }

    /// Whether `token` is the CSRF token of `binding` (compared in constant time).
    pub fn csrf_valid(&self, binding: &str, token: &str) -> bool {
        if binding.is_empty() {
            return false;
        }
        match URL_SAFE_NO_PAD.decode(token) {
            Ok(bytes) => self.csrf_mac(binding).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    fn csrf_mac(&self, binding: &str) -> Hmac<Sha256> {
        #[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.csrf_key).expect("HMAC takes keys of any length");
        mac.update(b"sluice-csrf\0");
        mac.update(binding.as_bytes());
        mac
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update leaves the maps whole, so a poisoned lock's data is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    fn alice() -> Principal {
        Principal {
            sub: "alice@uni.example".into(),
            roles: BTreeSet::new(),
            groups: BTreeSet::new(),
            organisation: None,
            visas: Vec::new(),
            expires: None,
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

    #[test]
    fn a_session_ends_when_idle_and_at_sign_out_and_ids_are_new_each_time() {
        let sessions = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let a = sessions.create(alice(), "dev");
        let b = sessions.create(alice(), "dev");
        assert_ne!(a.id, b.id);
        assert_eq!(
            sessions.get(&a.id).unwrap().principal.sub,
            "alice@uni.example"
        );
        sessions.end(&a.id);
        assert!(sessions.get(&a.id).is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.get(&b.id).is_none(), "idle expiry");
    }

    #[test]
    fn a_session_ends_at_its_absolute_age_even_when_busy() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_millis(60));
        let a = sessions.create(alice(), "dev");
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(15));
            assert!(sessions.get(&a.id).is_some());
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(sessions.get(&a.id).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_one_binding() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let token = sessions.csrf_token("session-a");
        assert!(sessions.csrf_valid("session-a", &token));
        assert!(!sessions.csrf_valid("session-b", &token));
        assert!(!sessions.csrf_valid("", &sessions.csrf_token("")));
        assert!(!sessions.csrf_valid("session-a", "not base64 !"));
        // Another server (another key) does not accept it.
        let other = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(!other.csrf_valid("session-a", &token));
    }

    #[test]
    fn a_pending_sign_in_is_taken_once() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(
            sessions.remember_login("s1", PendingLogin::new("v".into(), "n".into(), "/".into()))
        );
        assert_eq!(sessions.take_login("s1").unwrap().nonce, "n");
        assert!(sessions.take_login("s1").is_none());
    }
}
