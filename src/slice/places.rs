//! The engine's places (`limits.max_running_slices`), shared fairly. No
//! caller holds more than its share: the places divided by the callers
//! holding or waiting, plus one for a caller yet to come; and a caller
//! that holds a place already leaves a quarter of them free for callers
//! holding none. So a newcomer (a researcher's first small slice) finds a
//! free place even while a few callers, each within its stream limit, ask
//! for every place they can. A caller alone may hold half the places. A place is only ever given back,
//! never taken: a caller over its share (others arrived) keeps what it
//! holds until those answers end (slow readers end by the floor rate in
//! [`super::ReaderPace`]). Every anonymous caller counts as one caller.

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
    /// The most places `key` may hold now: an equal share among the
    /// callers holding or waiting and one more to come.
    fn share(&self, key: &str, total: usize) -> usize {
        let mut others: std::collections::HashSet<&str> =
            self.held.keys().map(String::as_str).collect();
        others.extend(self.waiting.keys().map(String::as_str));
        others.remove(key);
        (total / (others.len() + 2)).max(1)
    }

    /// Whether `key` may take a free place now: within its share, and, if
    /// it holds one already, only while more than a quarter of the places
    /// stay free. Places are never taken back, so callers arriving at once
    /// (each seeing fewer others than there will be) could otherwise fill
    /// every place before the shares settle; the quarter kept for callers
    /// holding none is what a newcomer finds.
    fn may_take(&self, key: &str, total: usize) -> bool {
        let held = self.held.get(key).copied().unwrap_or(0);
        self.free > 0 && held < self.share(key, total) && (held == 0 || self.free > total / 4)
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
    async fn no_caller_holds_more_than_its_share_and_a_newcomer_finds_a_place() {
        let places = Places::new(8);
        // Alone, a caller holds half the places (the other half waits for
        // whoever comes next).
        let mut greedy = Vec::new();
        while let Some(held) = soon(&places, "greedy").await {
            greedy.push(held);
        }
        assert_eq!(greedy.len(), 4);
        // A second caller's share is 8 / 3: it gets its two at once.
        let mut slow = Vec::new();
        while let Some(held) = soon(&places, "slow").await {
            slow.push(held);
        }
        assert_eq!(slow.len(), 2);
        // A third finds a place free at once.
        let newcomer = soon(&places, "newcomer").await.expect("a free place");
        assert_eq!(places.in_use(), (7, 3));
        // Greedy holds more than its share now (8 / 4) and waits for more;
        // so does slow, at its share. As places come back, each gets one
        // only once it is below its share.
        let wait = |key: &'static str| {
            let places = places.clone();
            tokio::spawn(async move { places.acquire(key).await })
        };
        let (waiting_greedy, waiting_slow) = (wait("greedy"), wait("slow"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(newcomer);
        greedy.truncate(1);
        // Two callers now: shares of 8 / 3 = 2. Greedy holds 1: it gets one.
        tokio::time::timeout(Duration::from_millis(500), waiting_greedy)
            .await
            .expect("greedy, back within its share, got a place")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting_slow.is_finished(), "slow went past its share");
        slow.pop();
        tokio::time::timeout(Duration::from_millis(500), waiting_slow)
            .await
            .expect("slow got a place once below its share")
            .unwrap();
    }

    #[tokio::test]
    async fn callers_arriving_at_once_leave_a_place_for_a_newcomer() {
        let places = Places::new(16);
        let mut asking = Vec::new();
        for caller in ["slow-a", "slow-b", "anonymous", "greedy"] {
            for _ in 0..8 {
                let places = places.clone();
                asking.push(tokio::spawn(async move { places.acquire(caller).await }));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Each caller's first place may come from the quarter kept free;
        // with fewer callers than that quarter, some stay free.
        let (used, callers) = places.in_use();
        assert!(used < 16, "{used} places taken by {callers} callers");
        assert!(soon(&places, "newcomer").await.is_some());
        for task in asking {
            task.abort();
        }
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
