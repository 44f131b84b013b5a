//! Short-lived signed links to snapshot files. Many file readers (fsspec,
//! the Delta Sharing connectors, `curl -C -`) send no `Authorization`
//! header to a file URL and may re-normalise its path, so the proof of
//! access travels in the query string: an HMAC-SHA256, under a key kept in
//! `<state>/snapshot-url-key`, over the snapshot's path, the ticket that
//! records whom the link was issued to, that caller's subject and the
//! expiry.
//!
//! A valid signature is necessary, not sufficient: each use also finds the
//! ticket and asks the current policy again (see `http::snapshot_routes`),
//! so a revoked grant or a retired dataset closes every link already handed
//! out.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a link's signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// The path of the file, e.g. `/v1/snapshots/<key>.parquet`.
    pub path: &'a str,
    pub ticket: &'a str,
    pub subject: &'a str,
    /// Seconds since the epoch.
    pub expires: i64,
}

/// Signs and checks links.
pub struct UrlSigner {
    key: [u8; 32],
}

impl UrlSigner {
    /// The signer whose key is in `<state>/snapshot-url-key`.
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<Self> {
        crate::util::key_file::load_or_create(&state_dir.join("snapshot-url-key"))
            .map(|key| Self { key })
    }

    pub fn from_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The HMAC of `parts`, each ended by a newline (no part has one).
    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        #[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    fn link_parts<'a>(link: &'a Link<'a>, expires: &'a str) -> [&'a str; 5] {
        [
            "sluice-link-v1",
            link.path,
            link.ticket,
            link.subject,
            expires,
        ]
    }

    /// The link's signature (URL-safe base64).
    pub fn sign(&self, link: &Link<'_>) -> String {
        let expires = link.expires.to_string();
        self.seal(&Self::link_parts(link, &expires))
    }

    /// Whether `signature` is the link's (compared in constant time).
    pub fn verify(&self, link: &Link<'_>, signature: &str) -> bool {
        let expires = link.expires.to_string();
        self.verify_seal(&Self::link_parts(link, &expires), signature)
    }

    /// A seal over `parts` (newline-free texts) under the link key, for
    /// what replicas hand each other through the bucket.
    pub fn seal(&self, parts: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(parts).finalize().into_bytes())
    }

    /// Whether `seal` is the seal of `parts` (constant time).
    pub fn verify_seal(&self, parts: &[&str], seal: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(seal)
            .is_ok_and(|bytes| self.mac(parts).verify_slice(&bytes).is_ok())
    }
}

/// Tickets: what a link was issued for (the caller and the request), kept
/// in memory until they expire. A link whose ticket is gone (expired, or
/// the server restarted) is refused; the caller asks for a new one. Each
/// caller holds at most `per_caller` unexpired tickets, so nobody can use
/// up the server's `max`.
pub struct Tickets<T> {
    max: usize,
    per_caller: usize,
    inner: Mutex<Held<T>>,
}

struct Held<T> {
    /// id → (owner, expiry, value)
    map: HashMap<String, (String, i64, T)>,
    per_owner: HashMap<String, usize>,
}

impl<T> Held<T> {
    fn prune(&mut self, now: i64) {
        let per_owner = &mut self.per_owner;
        self.map.retain(|_, (owner, until, _)| {
            let keep = *until > now;
            if !keep && let Some(n) = per_owner.get_mut(owner.as_str()) {
                *n -= 1;
            }
            keep
        });
        per_owner.retain(|_, n| *n > 0);
    }
}

/// Why no ticket was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketsFull {
    /// The caller holds this many unexpired links.
    Caller(usize),
    /// The server holds as many as it keeps.
    Server,
}

impl<T: Clone> Tickets<T> {
    pub fn new(max: usize, per_caller: usize) -> Self {
        Self {
            max,
            per_caller,
            inner: Mutex::new(Held {
                map: HashMap::new(),
                per_owner: HashMap::new(),
            }),
        }
    }

    /// Stores `value` for `owner` until `expires` and returns its id (128
    /// random bits).
    pub fn issue(
        &self,
        owner: &str,
        value: T,
        expires: i64,
        now: i64,
    ) -> Result<String, TicketsFull> {
        let mut held = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let owned = |held: &Held<T>| held.per_owner.get(owner).copied().unwrap_or(0);
        if held.map.len() >= self.max || owned(&held) >= self.per_caller {
            held.prune(now);
        }
        if owned(&held) >= self.per_caller {
            return Err(TicketsFull::Caller(self.per_caller));
        }
        if held.map.len() >= self.max {
            return Err(TicketsFull::Server);
        }
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        held.map
            .insert(id.clone(), (owner.to_owned(), expires, value));
        *held.per_owner.entry(owner.to_owned()).or_default() += 1;
        Ok(id)
    }

    /// Keeps a ticket another replica issued (read from the bucket), so
    /// later uses of its link need not read it again.
    pub fn adopt(&self, id: &str, owner: &str, value: T, expires: i64, now: i64) {
        let mut held = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if held.map.len() >= self.max {
            held.prune(now);
            if held.map.len() >= self.max {
                return;
            }
        }
        if held
            .map
            .insert(id.to_owned(), (owner.to_owned(), expires, value))
            .is_none()
        {
            *held.per_owner.entry(owner.to_owned()).or_default() += 1;
        }
    }

    /// The ticket `id`, unless it is unknown or expired.
    pub fn get(&self, id: &str, now: i64) -> Option<T> {
        let held = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        held.map
            .get(id)
            .filter(|(_, until, _)| *until > now)
            .map(|(_, _, value)| value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_what_it_signed() {
        let signer = UrlSigner::from_key([9; 32]);
        let link = Link {
            path: "/v1/snapshots/a.parquet",
            ticket: "t",
            subject: "alice",
            expires: 100,
        };
        let signature = signer.sign(&link);
        assert!(signer.verify(&link, &signature));
        for other in [
            Link {
                path: "/v1/snapshots/b.parquet",
                ..link
            },
            Link {
                ticket: "u",
                ..link
            },
            Link {
                subject: "bob",
                ..link
            },
            Link {
                expires: 101,
                ..link
            },
        ] {
            assert!(!signer.verify(&other, &signature), "{other:?}");
        }
        assert!(!UrlSigner::from_key([8; 32]).verify(&link, &signature));
        assert!(!signer.verify(&link, "not base64!"));
    }

    #[test]
    fn tickets_expire_and_the_store_is_bounded_per_caller_and_in_all() {
        let tickets = Tickets::new(3, 2);
        let a = tickets.issue("x", "a", 10, 0).unwrap();
        assert_eq!(tickets.get(&a, 5), Some("a"));
        assert_eq!(tickets.get(&a, 10), None);
        tickets.issue("x", "b", 20, 0).unwrap();
        assert_eq!(tickets.issue("x", "c", 20, 5), Err(TicketsFull::Caller(2)));
        // Once `a` has expired its place is taken back.
        tickets.issue("x", "c", 20, 11).unwrap();
        tickets.issue("y", "d", 20, 11).unwrap();
        assert_eq!(tickets.issue("z", "e", 20, 11), Err(TicketsFull::Server));
    }
}
