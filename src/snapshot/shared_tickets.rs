//! Tickets shared by replicas, so a link issued by one replica works on
//! every other behind the same load balancer (Delta Sharing clients and
//! Spark executors fetch files through any of them).
//!
//! Each ticket is also put to the bucket as `<id>.json`, sealed with an
//! HMAC under the link key the replicas share; a replica that does not
//! know a ticket reads it from there, checks the seal and the expiry, and
//! keeps it. Every use still asks the current policy again, so a revoked
//! grant closes a link on every replica at once. (Pre-signed URLs straight
//! to the bucket would spare the replicas those bytes, but cannot be
//! revoked before they expire, and would hand out files the policy no
//! longer allows.)

use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Ticket, UrlSigner};

const SEAL_LABEL: &str = "sluice-ticket-v1";

/// A ticket as kept in the bucket.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The ticket's JSON, as sealed.
    ticket: String,
    owner: String,
    expires: i64,
    seal: String,
}

pub struct SharedTickets {
    store: Arc<dyn ObjectStore>,
}

impl SharedTickets {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    fn path(id: &str) -> StorePath {
        StorePath::from(format!("{id}.json"))
    }

    /// Puts ticket `id` where other replicas find it.
    pub async fn put(
        &self,
        signer: &UrlSigner,
        id: &str,
        owner: &str,
        expires: i64,
        ticket: &Ticket,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let json = serde_json::to_string(ticket)?;
        let expires_text = expires.to_string();
        let seal = signer.seal(&[SEAL_LABEL, id, owner, &expires_text, &json]);
        let stored = Stored {
            ticket: json,
            owner: owner.to_owned(),
            expires,
            seal,
        };
        let body = PutPayload::from(serde_json::to_vec(&stored)?);
        self.store.put(&Self::path(id), body).await?;
        Ok(())
    }

    /// Ticket `id` from the bucket with its owner and expiry, if another
    /// replica issued it, it is unexpired and its seal holds.
    pub async fn get(
        &self,
        signer: &UrlSigner,
        id: &str,
        now: i64,
    ) -> Option<(String, i64, Ticket)> {
        // Ticket ids are URL-safe base64: nothing else names an object.
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let bytes = match self.store.get(&Self::path(id)).await {
            Ok(got) => got.bytes().await.ok()?,
            Err(object_store::Error::NotFound { .. }) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a shared ticket");
                return None;
            }
        };
        let stored: Stored = serde_json::from_slice(&bytes).ok()?;
        let expires_text = stored.expires.to_string();
        let sealed = signer.verify_seal(
            &[SEAL_LABEL, id, &stored.owner, &expires_text, &stored.ticket],
            &stored.seal,
        );
        if !sealed {
            tracing::warn!(ticket = id, "a shared ticket's seal does not hold: ignored");
            return None;
        }
        if stored.expires <= now {
            return None;
        }
        let ticket = serde_json::from_str(&stored.ticket).ok()?;
        Some((stored.owner, stored.expires, ticket))
    }
}
