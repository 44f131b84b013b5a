//! What a Flight SQL caller left with the server between two calls: an
//! answer waiting for its `DoGet`, a later part of one, or a prepared
//! statement. Each sits under a random 128-bit handle, bound to the
//! credential that made it, and is dropped after a while: a handle seen by
//! someone else opens nothing, and one nobody comes back for frees what it
//! holds (an answer its engine place and stream slot).
//!
//! Entries count against a share (the subject, or an anonymous caller's
//! address), however many credentials it holds. Room can be reserved
//! before the value is made, so an answer is never made and then turned
//! away for want of room.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Things left by callers, by handle.
pub(super) struct Parked<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
    /// How long an entry lives without being used.
    idle: Duration,
    /// The most entries one share may leave.
    per_share: usize,
    /// The most entries all callers together may leave.
    total: usize,
}

struct Entry<T> {
    /// The credential that may open it.
    owner: String,
    /// Whom it counts against.
    share: String,
    used: Instant,
    /// `None` while reserved: room held for a value being made. A
    /// reservation does not lapse (its value may wait long in the engine's
    /// line); [`Reserved`] releases it when the making ends, however.
    value: Option<T>,
}

impl<T> Entry<T> {
    fn lapsed(&self, idle: Duration) -> bool {
        self.value.is_some() && self.used.elapsed() > idle
    }
}

/// The share, or everyone together, already left as many as they may.
#[derive(Debug)]
pub(super) struct Full;

impl<T> Parked<T> {
    pub(super) fn new(idle: Duration, per_share: usize, total: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            idle,
            per_share,
            total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds room for a value `owner` will leave, counted against `share`:
    /// its handle, which opens nothing until [`Parked::fill`]ed.
    pub(super) fn reserve(&self, share: &str, owner: &str) -> Result<String, Full> {
        let expired = self.sweep();
        let mut entries = self.lock();
        if entries.len() >= self.total
            || entries.values().filter(|e| e.share == share).count() >= self.per_share
        {
            return Err(Full);
        }
        let handle = uuid::Uuid::new_v4().simple().to_string();
        entries.insert(
            handle.clone(),
            Entry {
                owner: owner.to_owned(),
                share: share.to_owned(),
                used: Instant::now(),
                value: None,
            },
        );
        drop(entries);
        // Expired values are dropped outside the lock (an answer's drop
        // records its outcome).
        drop(expired);
        Ok(handle)
    }

    /// Leaves `value` under a handle `owner` reserved.
    pub(super) fn fill(&self, share: &str, owner: &str, handle: &str, value: T) {
        let mut entries = self.lock();
        let entry = Entry {
            owner: owner.to_owned(),
            share: share.to_owned(),
            used: Instant::now(),
            value: Some(value),
        };
        let before = entries.insert(handle.to_owned(), entry);
        drop(entries);
        drop(before);
    }

    /// Leaves `value` for `owner`, counted against `share`; its handle.
    pub(super) fn park(&self, share: &str, owner: &str, value: T) -> Result<String, Full> {
        let handle = self.reserve(share, owner)?;
        self.fill(share, owner, &handle, value);
        Ok(handle)
    }

    /// Drops whatever `owner` has under `handle`, reserved or not.
    pub(super) fn release(&self, owner: &str, handle: &str) {
        let mut entries = self.lock();
        let released = match entries.get(handle) {
            Some(entry) if entry.owner == owner => entries.remove(handle),
            _ => None,
        };
        drop(entries);
        drop(released);
    }

    /// Takes the value back out: only its owner can, once.
    pub(super) fn take(&self, owner: &str, handle: &str) -> Option<T> {
        let mut entries = self.lock();
        let entry = entries.get(handle)?;
        if entry.owner != owner || entry.used.elapsed() > self.idle || entry.value.is_none() {
            return None;
        }
        entries.remove(handle).and_then(|e| e.value)
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
        let value = entry.value.as_mut()?;
        entry.used = Instant::now();
        Some(f(value))
    }

    /// How many more entries `share` may leave now.
    #[cfg(test)]
    fn room(&self, share: &str) -> usize {
        let entries = self.lock();
        let live = |e: &&Entry<T>| !e.lapsed(self.idle);
        let theirs = entries
            .values()
            .filter(live)
            .filter(|e| e.share == share)
            .count();
        let all = entries.values().filter(live).count();
        self.per_share
            .saturating_sub(theirs)
            .min(self.total.saturating_sub(all))
    }

    /// Removes everything not used within the idle time; returns the
    /// values, to be dropped by the caller outside the lock.
    pub(super) fn sweep(&self) -> Vec<T> {
        let mut entries = self.lock();
        let stale: Vec<String> = entries
            .iter()
            .filter(|(_, e)| e.lapsed(self.idle))
            .map(|(k, _)| k.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|k| entries.remove(&k).and_then(|e| e.value))
            .collect()
    }
}

/// Handles reserved for values being made: released when dropped unless
/// filled (the making failed, or its caller went away).
pub(super) struct Reserved<'a, T> {
    parked: &'a Parked<T>,
    share: String,
    owner: String,
    handles: Vec<String>,
}

impl<'a, T> Reserved<'a, T> {
    /// Up to `most` handles reserved for `owner` (as many as there is
    /// room for).
    pub(super) fn up_to(parked: &'a Parked<T>, share: &str, owner: &str, most: usize) -> Self {
        let handles = (0..most)
            .map_while(|_| parked.reserve(share, owner).ok())
            .collect();
        Self {
            parked,
            share: share.to_owned(),
            owner: owner.to_owned(),
            handles,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Fills the reserved handles with `values`, in order, releases those
    /// left over; the handles filled.
    pub(super) fn fill(mut self, values: impl IntoIterator<Item = T>) -> Vec<String> {
        let handles = std::mem::take(&mut self.handles);
        let mut values = values.into_iter();
        let mut filled = Vec::new();
        for handle in handles {
            match values.next() {
                Some(value) => {
                    self.parked.fill(&self.share, &self.owner, &handle, value);
                    filled.push(handle);
                }
                None => self.parked.release(&self.owner, &handle),
            }
        }
        filled
    }
}

impl<T> Drop for Reserved<'_, T> {
    fn drop(&mut self) {
        for handle in &self.handles {
            self.parked.release(&self.owner, handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_opens_a_handle_and_only_while_it_lives() {
        let parked = Parked::new(Duration::from_millis(50), 2, 4);
        let h = parked.park("sub:a", "a", 1).unwrap();
        assert_eq!(parked.take("b", &h), None, "someone else's handle");
        assert_eq!(parked.with("b", &h, |v| *v), None);
        assert_eq!(parked.with("a", &h, |v| *v), Some(1));
        assert_eq!(parked.take("a", &h), Some(1));
        assert_eq!(parked.take("a", &h), None, "taken once");

        parked.park("sub:a", "a", 2).unwrap();
        // Another credential of the same share counts against it.
        parked.park("sub:a", "a token:1", 3).unwrap();
        assert!(
            parked.park("sub:a", "a token:2", 4).is_err(),
            "two per share"
        );
        parked.park("sub:b", "b", 5).unwrap();

        assert_eq!(parked.room("sub:b"), 1);
        assert_eq!(parked.room("sub:a"), 0);
        let late = parked.park("sub:b", "b", 6).unwrap();
        assert_eq!(parked.room("sub:c"), 0, "four in all");
        assert!(parked.park("sub:c", "c", 7).is_err(), "four in all");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(parked.take("b", &late), None, "expired");
        assert_eq!(parked.sweep().len(), 4);
        parked.park("sub:c", "c", 7).unwrap();
    }

    #[test]
    fn reserved_room_opens_nothing_and_is_released_unless_filled() {
        let parked = Parked::new(Duration::from_millis(20), 3, 10);
        let reserved = Reserved::up_to(&parked, "sub:a", "a", 5);
        std::thread::sleep(Duration::from_millis(30));
        parked.sweep();
        assert_eq!(reserved.len(), 3, "as many as there is room for");
        assert_eq!(parked.room("sub:a"), 0, "reservations do not lapse");
        let handle = reserved.handles[0].clone();
        assert_eq!(
            parked.take("a", &handle),
            None,
            "a reservation opens nothing"
        );
        drop(reserved);
        assert_eq!(parked.room("sub:a"), 3, "released when dropped");

        let reserved = Reserved::up_to(&parked, "sub:a", "a", 3);
        let filled = reserved.fill([7, 8]);
        assert_eq!(filled.len(), 2);
        assert_eq!(parked.room("sub:a"), 1, "the one left over is released");
        assert_eq!(parked.take("a", &filled[1]), Some(8));
    }
}
