//! Personal access tokens: what a signed-in researcher makes for their
//! programs (`sluice_pat_<id>_<secret>`), named, scoped to all their access
//! or one dataset or one grant, expiring, shown once.
//!
//! Each token is one record, `<id>.json`, in a store every replica reads:
//! the catalogue's bucket when replicas share one, else the state folder.
//! A record holds only a SHA-256 of the secret (the secret is 32 random
//! bytes, so a fast hash is enough), and is sealed with an HMAC under a key
//! derived from the secret replicas share, so whoever can write to the
//! bucket still cannot make a token. A replica trusts what it read for at
//! most [`RECHECK`]: a revocation on one replica closes the token on all
//! within it (on the replica that revoked, at once).
//!
//! A token is its owner, as they were when they made it, minus the admin
//! role (admin work needs a fresh sign-in), narrowed to its scope: the
//! policy decides every use afresh, so it never carries more than its
//! owner's grants allow now, and a grant revoked closes it too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuthError, Principal, Role};

/// What every token starts with (so secret scanners and people tell them).
pub const PREFIX: &str = "sluice_pat_";
/// A replica re-reads a token's record after this long.
const RECHECK: Duration = Duration::from_secs(5);
/// Last use is written back at most this often per token.
const LAST_USE_EVERY: Duration = Duration::from_secs(300);
/// Most live tokens one person may hold.
pub const MAX_PER_OWNER: usize = 50;
const SEAL_LABEL: &str = "sluice-personal-token-v1";

/// What a token may be used for beyond its owner's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenScope {
    /// Only this dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Only through this grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The token's id, for the trail.
    #[serde(default)]
    pub token: String,
}

/// One token's record (the part shown to its owner, and the sealed rest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub owner: Principal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    pub created: i64,
    pub expires: i64,
    /// Filled from the `.used` object beside the record when listed.
    #[serde(skip)]
    pub last_used: Option<i64>,
    /// SHA-256 of the secret, hex.
    hash: String,
}

impl Record {
    /// What its owner is shown (never the hash).
    pub fn public_json(&self) -> serde_json::Value {
        let at = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
        };
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "dataset": self.dataset,
            "grant": self.grant,
            "created": at(self.created),
            "expires": at(self.expires),
            "last_used": self.last_used.and_then(at),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    record: String,
    seal: String,
}

/// What asking for a new token says.
pub struct NewToken {
    pub name: String,
    pub dataset: Option<String>,
    pub grant: Option<String>,
    pub days: u32,
}

/// The tokens, their store and what this replica read of it lately.
pub struct PersonalTokens {
    store: Arc<dyn ObjectStore>,
    key: hmac::Key,
    /// What this replica read lately, by id.
    read: Mutex<HashMap<String, Seen>>,
    /// Tokens revoked through this replica: refused at once, whatever a
    /// read in flight puts back in `read`.
    revoked_here: Mutex<std::collections::HashSet<String>>,
    creating: tokio::sync::Mutex<()>,
}

/// A record as this replica last read it.
#[derive(Clone)]
struct Seen {
    record: Record,
    read_at: Instant,
    /// When this replica last wrote the token's last use back.
    use_written: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such token")]
    NotFound,
    #[error("token store: {0}")]
    Store(String),
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn hash_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `(id, secret)` of a token's text, if it has a token's shape: 16 hex
/// digits, `_`, 43 base64url characters (which may hold `_` themselves).
fn parts(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = (rest.get(..16)?, rest.get(17..)?);
    let ok = rest.as_bytes().get(16) == Some(&b'_')
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some((id, secret))
}

/// Whether a bearer token is a personal one (by its shape).
pub fn is_personal(token: &str) -> bool {
    token.starts_with(PREFIX)
}

impl PersonalTokens {
    pub fn new(store: Arc<dyn ObjectStore>, seal_key: [u8; 32]) -> Self {
        Self {
            store,
            key: hmac::Key::new(hmac::HMAC_SHA256, &seal_key),
            read: Mutex::new(HashMap::new()),
            revoked_here: Mutex::new(Default::default()),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    fn path(id: &str) -> StorePath {
        StorePath::from(format!("{id}.json"))
    }

    /// When the token was last used (seconds), as a replica last noted it.
    fn used_path(id: &str) -> StorePath {
        StorePath::from(format!("{id}.used"))
    }

    async fn last_used(&self, id: &str) -> Option<i64> {
        let got = self.store.get(&Self::used_path(id)).await.ok()?;
        std::str::from_utf8(&got.bytes().await.ok()?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    async fn put(&self, record: &Record) -> Result<(), TokenError> {
        let json = serde_json::to_string(record).map_err(|e| TokenError::Store(e.to_string()))?;
        let seal = hmac::sign(&self.key, format!("{SEAL_LABEL}\n{json}").as_bytes());
        let sealed = Sealed {
            record: json,
            seal: hex(seal.as_ref()),
        };
        let body = serde_json::to_vec(&sealed).map_err(|e| TokenError::Store(e.to_string()))?;
        self.store
            .put(&Self::path(&record.id), PutPayload::from(body))
            .await
            .map_err(|e| TokenError::Store(e.to_string()))?;
        Ok(())
    }

    async fn fetch(&self, id: &str) -> Result<Record, TokenError> {
        let bytes = match self.store.get(&Self::path(id)).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(|e| TokenError::Store(e.to_string()))?,
            Err(object_store::Error::NotFound { .. }) => return Err(TokenError::NotFound),
            Err(e) => return Err(TokenError::Store(e.to_string())),
        };
        let sealed: Sealed =
            serde_json::from_slice(&bytes).map_err(|e| TokenError::Store(e.to_string()))?;
        let seal = unhex(&sealed.seal).ok_or(TokenError::NotFound)?;
        hmac::verify(
            &self.key,
            format!("{SEAL_LABEL}\n{}", sealed.record).as_bytes(),
            &seal,
        )
        .map_err(|_| {
            tracing::warn!(token = id, "a personal token's seal does not hold: ignored");
            TokenError::NotFound
        })?;
        let record: Record =
            serde_json::from_str(&sealed.record).map_err(|e| TokenError::Store(e.to_string()))?;
        if record.id != id {
            return Err(TokenError::NotFound);
        }
        Ok(record)
    }

    /// Makes a token for `owner`; returns its text (shown once) and record.
    pub async fn create(
        &self,
        owner: &Principal,
        new: NewToken,
        max_days: u32,
    ) -> Result<(String, Record), TokenError> {
        let name = new.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(TokenError::Invalid(
                "name the token (1 to 100 characters), so you know it in the list".into(),
            ));
        }
        if crate::util::echo::hidden_char(&name, false).is_some() {
            return Err(TokenError::Invalid(
                "the name holds a control or invisible character".into(),
            ));
        }
        if new.days == 0 || new.days > max_days {
            return Err(TokenError::Invalid(format!(
                "days must be 1 to {max_days} (this server's longest)"
            )));
        }
        // One creation at a time on this replica, so parallel requests
        // cannot pass the cap together (replicas each hold their own turn).
        let _turn = self.creating.lock().await;
        if self.list_of(&owner.sub).await?.len() >= MAX_PER_OWNER {
            return Err(TokenError::Invalid(format!(
                "you hold {MAX_PER_OWNER} live tokens: revoke one first"
            )));
        }
        let id = {
            use rand::RngCore;
            let mut bytes = [0u8; 8];
            rand::rng().fill_bytes(&mut bytes);
            hex(&bytes)
        };
        let secret = crate::auth::session::random_token();
        let mut owner = owner.clone();
        // Admin work needs a fresh sign-in; a token is for programs.
        owner.roles.remove(&Role::Admin);
        owner.scope = None;
        owner.expires = None;
        let created = now();
        let record = Record {
            id: id.clone(),
            name,
            owner,
            dataset: new.dataset,
            grant: new.grant,
            created,
            expires: created + i64::from(new.days) * 86_400,
            last_used: None,
            hash: hash_hex(&secret),
        };
        self.put(&record).await?;
        self.store
            .put(
                &StorePath::from(format!("owners/{}/{id}", owner_key(&record.owner.sub))),
                PutPayload::default(),
            )
            .await
            .map_err(|e| TokenError::Store(e.to_string()))?;
        Ok((format!("{PREFIX}{id}_{secret}"), record))
    }

    /// The owner's tokens that are neither revoked nor expired, newest
    /// first: read through the owner's index (`owners/<hash of sub>/<id>`),
    /// so listing costs the owner's tokens, not everyone's. Entries of
    /// tokens gone or expired are cleared on the way.
    pub async fn list_of(&self, sub: &str) -> Result<Vec<Record>, TokenError> {
        use futures::TryStreamExt;
        let prefix = StorePath::from(format!("owners/{}", owner_key(sub)));
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| TokenError::Store(e.to_string()))?;
        let mut records = Vec::new();
        let now = now();
        for meta in metas {
            let Some(id) = meta.location.filename().map(str::to_owned) else {
                continue;
            };
            match self.fetch(&id).await {
                Ok(mut r) if r.owner.sub == sub && r.expires > now => {
                    r.last_used = self.last_used(&id).await;
                    records.push(r);
                }
                Ok(r) if r.owner.sub == sub => self.remove(sub, &id).await,
                Err(TokenError::NotFound) => self.remove(sub, &id).await,
                _ => {}
            }
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.created));
        Ok(records)
    }

    /// Revokes one of `sub`'s tokens: its record goes, so every replica
    /// refuses it once it reads again (within [`RECHECK`]), this one at
    /// once.
    pub async fn revoke(&self, sub: &str, id: &str) -> Result<Record, TokenError> {
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::NotFound);
        }
        let record = self.fetch(id).await?;
        // Someone else's token is as absent as one that never was.
        if record.owner.sub != sub {
            return Err(TokenError::NotFound);
        }
        if let Ok(mut revoked) = self.revoked_here.lock() {
            revoked.insert(id.to_owned());
        }
        self.forget(id);
        self.store
            .delete(&Self::path(id))
            .await
            .map_err(|e| TokenError::Store(e.to_string()))?;
        self.remove(sub, id).await;
        Ok(record)
    }

    /// Clears what is left of a token gone (its index entry, its last use,
    /// its record if still there); failures only leave litter.
    async fn remove(&self, sub: &str, id: &str) {
        for path in [
            Self::path(id),
            Self::used_path(id),
            StorePath::from(format!("owners/{}/{id}", owner_key(sub))),
        ] {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "could not clear a personal token's remains"),
            }
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut read) = self.read.lock() {
            read.remove(id);
        }
    }

    /// The principal a token stands for, narrowed to its scope.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let (id, secret) = parts(token).ok_or(AuthError::UnknownKey)?;
        if self
            .revoked_here
            .lock()
            .is_ok_and(|revoked| revoked.contains(id))
        {
            return Err(AuthError::Revoked);
        }
        let seen = self.read.lock().ok().and_then(|r| r.get(id).cloned());
        let written = seen.as_ref().and_then(|s| s.use_written);
        // What was read less than RECHECK ago stands; the time it was read
        // is kept, not renewed by each use, so a token in steady use is
        // still read again (and a revocation seen) every RECHECK.
        let (record, read_at) = match seen.filter(|s| s.read_at.elapsed() < RECHECK) {
            Some(seen) => (seen.record, seen.read_at),
            None => {
                let fetched = self.fetch(id).await.map_err(|e| match e {
                    TokenError::Store(why) => AuthError::Keys(why),
                    _ => AuthError::UnknownKey,
                })?;
                (fetched, Instant::now())
            }
        };
        // Compared in full whatever differs first.
        let given = hash_hex(secret);
        let differs = given
            .bytes()
            .zip(record.hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 || given.len() != record.hash.len() {
            return Err(AuthError::UnknownKey);
        }
        let now = now();
        if record.expires <= now {
            self.forget(id);
            self.remove(&record.owner.sub, id).await;
            return Err(AuthError::Invalid(
                jsonwebtoken::errors::ErrorKind::ExpiredSignature.into(),
            ));
        }
        // Last use, written now and then (a write per request would make
        // every read a write to the bucket), beside the record, never into
        // it: a replica writing it from a stale read must not undo a
        // revocation another replica just wrote.
        let write_back = written.is_none_or(|w| w.elapsed() >= LAST_USE_EVERY);
        let kept = record.clone();
        if write_back {
            let used = PutPayload::from(now.to_string().into_bytes());
            if let Err(e) = self.store.put(&Self::used_path(id), used).await {
                tracing::warn!(error = %e, "could not note a personal token's last use");
            }
        }
        if let Ok(mut read) = self.read.lock() {
            let use_written = if write_back {
                Some(Instant::now())
            } else {
                written
            };
            read.insert(
                id.to_owned(),
                Seen {
                    record: kept,
                    read_at,
                    use_written,
                },
            );
        }
        let mut principal = record.owner;
        principal.expires = Some(record.expires);
        principal.scope = Some(Box::new(TokenScope {
            dataset: record.dataset,
            grant: record.grant,
            token: record.id,
        }));
        if principal.scope.as_ref().is_some_and(|s| s.narrows()) {
            // A narrowed token reads; it does not publish.
            principal.roles.retain(|r| *r == Role::Researcher);
        }
        Ok(principal)
    }
}

impl TokenScope {
    /// Whether the token is limited to a dataset or a grant.
    pub fn narrows(&self) -> bool {
        self.dataset.is_some() || self.grant.is_some()
    }
}

/// Where an owner's index entries live: a hash of their `sub` (which may
/// hold any character).
fn owner_key(sub: &str) -> String {
    hex(&Sha256::digest(sub.as_bytes())[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Principal {
        Principal {
            sub: "rita@uni.example".into(),
            roles: [Role::Researcher, Role::Admin].into_iter().collect(),
            groups: Default::default(),
            organisation: None,
            visas: Vec::new(),
            expires: Some(1),
            scope: None,
        }
    }

    #[tokio::test]
    async fn made_used_revoked_and_never_forged() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let tokens = PersonalTokens::new(store.clone(), [7; 32]);
        let new = || NewToken {
            name: "laptop".into(),
            dataset: None,
            grant: None,
            days: 30,
        };
        let (text, record) = tokens.create(&owner(), new(), 90).await.unwrap();
        assert!(text.starts_with(PREFIX));
        let principal = tokens.verify(&text).await.unwrap();
        assert_eq!(principal.sub, "rita@uni.example");
        assert!(!principal.has_role(Role::Admin), "no admin through a token");
        assert_eq!(tokens.list_of("rita@uni.example").await.unwrap().len(), 1);

        // A wrong secret, or a record sealed under another key, opens nothing.
        let wrong = format!("{PREFIX}{}_{}", record.id, "A".repeat(43));
        assert!(tokens.verify(&wrong).await.is_err());
        let other = PersonalTokens::new(store.clone(), [8; 32]);
        assert!(other.verify(&text).await.is_err());

        // Someone else cannot revoke it; its owner can, at once.
        assert!(tokens.revoke("eve@uni.example", &record.id).await.is_err());
        tokens.revoke("rita@uni.example", &record.id).await.unwrap();
        assert!(matches!(
            tokens.verify(&text).await,
            Err(AuthError::Revoked)
        ));
        assert!(tokens.list_of("rita@uni.example").await.unwrap().is_empty());

        let long = NewToken { days: 91, ..new() };
        assert!(tokens.create(&owner(), long, 90).await.is_err());
    }
}
