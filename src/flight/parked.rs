//! What a Flight SQL caller left with the server between two calls: an
//! answer waiting for its `DoGet`, or a prepared statement. Each sits under
//! a random 128-bit handle, bound to whoever made it, and is dropped after
//! a while: a handle seen by someone else opens nothing, and one nobody
//! comes back for frees what it holds (an answer its engine place and
//! stream slot).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Things left by callers, by handle.
pub(super) struct Parked<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
    /// How long an entry lives without being used.
    idle: Duration,
    /// The most entries one caller may leave.
    per_owner: usize,
    /// The most entries all callers together may leave (anonymous callers
    /// are one owner per address).
    total: usize,
}

struct Entry<T> {
    owner: String,
    used: Instant,
    value: T,
}

/// The caller, or everyone together, already left as many as they may.
#[derive(Debug)]
pub(super) struct Full;

impl<T> Parked<T> {
    pub(super) fn new(idle: Duration, per_owner: usize, total: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            idle,
            per_owner,
            total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves `value` for `owner`; its handle.
    pub(super) fn park(&self, owner: &str, value: T) -> Result<String, Full> {
        let expired = self.sweep();
        let mut entries = self.lock();
        if entries.len() >= self.total
            || entries.values().filter(|e| e.owner == owner).count() >= self.per_owner
        {
            return Err(Full);
        }
        let handle = uuid::Uuid::new_v4().simple().to_string();
        entries.insert(
            handle.clone(),
            Entry {
                owner: owner.to_owned(),
                used: Instant::now(),
                value,
            },
        );
        drop(entries);
        // Expired values are dropped outside the lock (an answer's drop
        // records its outcome).
        drop(expired);
        Ok(handle)
    }

    /// How many more entries `owner` may leave now.
    pub(super) fn room(&self, owner: &str) -> usize {
        let entries = self.lock();
        let live = |e: &&Entry<T>| e.used.elapsed() <= self.idle;
        let theirs = entries
            .values()
            .filter(live)
            .filter(|e| e.owner == owner)
            .count();
        let all = entries.values().filter(live).count();
        self.per_owner
            .saturating_sub(theirs)
            .min(self.total.saturating_sub(all))
    }

    /// Takes the value back out: only its owner can, once.
    pub(super) fn take(&self, owner: &str, handle: &str) -> Option<T> {
        let mut entries = self.lock();
        let entry = entries.get(handle)?;
        if entry.owner != owner || entry.used.elapsed() > self.idle {
            return None;
        }
        entries.remove(handle).map(|e| e.value)
    }

    /// Reads the value (its owner only), which counts as a use.
    pub(super) fn with<R>(
        &self,
        owner: &str,
        handle: &str,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        let mut entries = self.lock();
        let entry = entries.get_mut(handle)?;
        if entry.owner != owner || entry.used.elapsed() > self.idle {
            return None;
        }
        entry.used = Instant::now();
        Some(f(&mut entry.value))
    }

    /// Removes everything not used within the idle time; returns it, to be
    /// dropped by the caller outside the lock.
    pub(super) fn sweep(&self) -> Vec<T> {
        let mut entries = self.lock();
        let stale: Vec<String> = entries
            .iter()
            .filter(|(_, e)| e.used.elapsed() > self.idle)
            .map(|(k, _)| k.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|k| entries.remove(&k).map(|e| e.value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_opens_a_handle_and_only_while_it_lives() {
        let parked = Parked::new(Duration::from_millis(50), 2, 4);
        let h = parked.park("sub:a", 1).unwrap();
        assert_eq!(parked.take("sub:b", &h), None, "someone else's handle");
        assert_eq!(parked.with("sub:b", &h, |v| *v), None);
        assert_eq!(parked.with("sub:a", &h, |v| *v), Some(1));
        assert_eq!(parked.take("sub:a", &h), Some(1));
        assert_eq!(parked.take("sub:a", &h), None, "taken once");

        parked.park("sub:a", 2).unwrap();
        parked.park("sub:a", 3).unwrap();
        assert!(parked.park("sub:a", 4).is_err(), "two per owner");
        parked.park("sub:b", 5).unwrap();

        assert_eq!(parked.room("sub:b"), 1);
        assert_eq!(parked.room("sub:a"), 0);
        let late = parked.park("sub:b", 6).unwrap();
        assert_eq!(parked.room("sub:c"), 0, "four in all");
        assert!(parked.park("sub:c", 7).is_err(), "four in all");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(parked.take("sub:b", &late), None, "expired");
        assert_eq!(parked.sweep().len(), 4);
        parked.park("sub:c", 7).unwrap();
    }
}
