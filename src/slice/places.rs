//! The engine's places (`limits.max_running_slices`), shared fairly. A
//! caller takes a free place at once while nobody else waits; while others
//! wait, a caller holding its share (the places divided by the callers
//! holding or waiting) takes no more, so one greedy caller, or a few
//! callers each within their stream limit, cannot hold every place. A
//! place is only ever given back, never taken: a caller over its share
//! keeps what it holds until those answers end (slow readers end by the
//! floor rate in [`super::ReaderPace`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Who a place counts against: a signed-in caller's subject; every
/// anonymous caller together.
pub type ShareKey = String;

pub struct Places {
    total: usize,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    free: usize,
    held: HashMap<ShareKey, usize>,
    waiting: HashMap<ShareKey, usize>,
}

impl State {
    fn callers(&self) -> usize {
        let mut keys: std::collections::HashSet<&ShareKey> = self.held.keys().collect();
        keys.extend(self.waiting.keys());
        keys.len().max(1)
    }

    fn others_wait(&self, key: &str) -> bool {
        self.waiting.keys().any(|k| k != key)
    }

    /// Whether `key` may take a free place now.
    fn may_take(&self, key: &str, total: usize) -> bool {
        if self.free == 0 {
            return false;
        }
        let share = (total / self.callers()).max(1);
        !self.others_wait(key) || self.held.get(key).copied().unwrap_or(0) < share
    }
}

/// A place held; given back when dropped.
pub struct Held {
    places: Arc<Places>,
    key: ShareKey,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.places.lock();
        state.free += 1;
        decrement(&mut state.held, &self.key);
        drop(state);
        self.places.changed.notify_waiters();
    }
}

/// Counts a waiting caller while its wait lasts (a wait given up by a
/// timeout or a dropped request included).
struct Waiting<'a> {
    places: &'a Places,
    key: &'a str,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            decrement(&mut self.places.lock().waiting, self.key);
            // Someone over their share may take the place this caller
            // no longer wants.
            self.places.changed.notify_waiters();
        }
    }
}

fn decrement(counts: &mut HashMap<ShareKey, usize>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Places {
    pub fn new(total: usize) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            total,
            state: Mutex::new(State {
                free: total,
                ..Default::default()
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `key` may take a place, and takes it.
    pub async fn acquire(self: &Arc<Self>, key: &str) -> Held {
        let mut waiting = Waiting {
            places: self,
            key,
            done: false,
        };
        *self.lock().waiting.entry(key.to_owned()).or_default() += 1;
        loop {
            // Registered before the check, so a place given back between
            // the check and the wait still wakes this caller.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.may_take(key, self.total) {
                    state.free -= 1;
                    decrement(&mut state.waiting, key);
                    *state.held.entry(key.to_owned()).or_default() += 1;
                    waiting.done = true;
                    return Held {
                        places: self.clone(),
                        key: key.to_owned(),
                    };
                }
            }
            changed.await;
        }
    }

    /// Places held now, by how many callers.
    pub fn in_use(&self) -> (usize, usize) {
        let state = self.lock();
        (self.total - state.free, state.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn soon(places: &Arc<Places>, key: &str) -> Option<Held> {
        tokio::time::timeout(Duration::from_millis(50), places.acquire(key))
            .await
            .ok()
    }

    #[tokio::test]
    async fn a_lone_caller_may_take_every_place_but_a_freed_one_goes_to_who_waits() {
        let places = Places::new(4);
        let mut greedy = Vec::new();
        for _ in 0..4 {
            greedy.push(soon(&places, "greedy").await.expect("free places"));
        }
        let waiter = |key: &'static str| {
            let places = places.clone();
            tokio::spawn(async move { places.acquire(key).await })
        };
        // Greedy asks for a fifth first, then another caller asks for one.
        let fifth = waiter("greedy");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let other = waiter("other");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Greedy gives one back: it holds more than its share (4 / 2), so
        // the place goes to the other caller, though greedy asked first.
        greedy.pop();
        let other = tokio::time::timeout(Duration::from_millis(500), other)
            .await
            .expect("the other caller got the freed place")
            .unwrap();
        assert!(!fifth.is_finished());
        assert_eq!(places.in_use(), (4, 2));
        // Once nobody else waits, greedy takes what is freed.
        drop(other);
        tokio::time::timeout(Duration::from_millis(500), fifth)
            .await
            .expect("greedy got the place nobody else wanted")
            .unwrap();
    }

    #[tokio::test]
    async fn a_given_up_wait_is_forgotten() {
        let places = Places::new(1);
        let held = soon(&places, "a").await.unwrap();
        assert!(soon(&places, "b").await.is_none());
        drop(held);
        // "b" no longer waits, so "a" is alone again and may take it.
        assert!(soon(&places, "a").await.is_some());
        assert_eq!(places.lock().waiting.len(), 0);
    }
}
