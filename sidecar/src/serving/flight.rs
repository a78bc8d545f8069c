//! Single-flight: concurrent calls for the same key run the operation once and share its outcome.
//!
//! The sidecar reads a source and renders a rendition at most once for any number of identical
//! requests arriving together (a page of thumbnails going viral, a CDN fanning out misses).
//!
//! Semantics of [`Flights::run`]:
//! - the first caller for a key (the leader) runs the operation; callers arriving while it runs
//!   wait for it and get a clone of the same outcome, errors included;
//! - once the last caller of a flight has its outcome, the key is forgotten: a later call runs
//!   the operation again (outcomes are shared, never cached);
//! - when the leader is cancelled (its client went away), a waiting caller runs the operation in
//!   its place, so a disconnect never fails the others;
//! - the map holds only keys with callers in flight, so it is bounded by concurrent requests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

/// Operations in flight, by key. `T` is the shared outcome, cloned for each caller: make it
/// cheap to clone (`Bytes`, `Arc`).
#[derive(Debug)]
pub struct Flights<T> {
    in_flight: Mutex<HashMap<String, Arc<OnceCell<T>>>>,
    joins: AtomicU64,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            in_flight: Mutex::new(HashMap::new()),
            joins: AtomicU64::new(0),
        }
    }
}

impl<T: Clone> Flights<T> {
    /// The outcome of `op` for `key`: run here, or shared with the flight already running.
    pub async fn run<F, Fut>(&self, key: &str, op: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let seat = self.board(key);
        let ran = AtomicBool::new(false);
        let outcome = seat
            .cell()
            .get_or_init(|| {
                ran.store(true, Ordering::Relaxed);
                op()
            })
            .await
            .clone();
        drop(seat);
        if !ran.load(Ordering::Relaxed) {
            self.joins.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Calls so far that shared the outcome of an operation another call ran (metrics).
    pub fn joins(&self) -> u64 {
        self.joins.load(Ordering::Relaxed)
    }

    /// Callers currently in the flight for `key` (for tests and diagnostics).
    pub fn callers(&self, key: &str) -> usize {
        // Every clone of a flight's cell but the map's own is held by a caller's `Seat`.
        self.lock()
            .get(key)
            .map_or(0, |cell| Arc::strong_count(cell) - 1)
    }

    /// Joins the flight for `key`, starting one when none is in the air.
    fn board<'a>(&'a self, key: &'a str) -> Seat<'a, T> {
        let cell = self.lock().entry(key.to_owned()).or_default().clone();
        Seat {
            flights: self,
            key,
            cell: Some(cell),
        }
    }

    /// The map, even if a caller panicked while holding the lock (the map stays consistent:
    /// every critical section is a single insert, clone or remove).
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<OnceCell<T>>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One caller's place in a flight; leaving (normally or by cancellation) forgets the flight
/// when it was the last one aboard.
struct Seat<'a, T> {
    flights: &'a Flights<T>,
    key: &'a str,
    cell: Option<Arc<OnceCell<T>>>,
}

impl<T> Seat<'_, T> {
    fn cell(&self) -> &OnceCell<T> {
        self.cell
            .as_ref()
            .expect("a seat holds its cell until dropped")
    }
}

impl<T> Drop for Seat<'_, T> {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Clones are only made and dropped under the lock, so the count is exact here.
        drop(self.cell.take());
        if map.get(self.key).is_some_and(|c| Arc::strong_count(c) == 1) {
            map.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;
    use tokio::task::JoinHandle;

    use super::*;

    /// Waits until `n` callers are in the flight for `key`.
    async fn until_aboard<T: Clone>(flights: &Flights<T>, key: &str, n: usize) {
        while flights.callers(key) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A caller aboard the flight `key` whose operation never completes.
    async fn never_landing(flights: &Arc<Flights<u32>>, key: &'static str) -> JoinHandle<u32> {
        let caller = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(key, std::future::pending::<u32>).await })
        };
        until_aboard(flights, key, 1).await;
        caller
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(Flights::<Result<u32, String>>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (flights, runs, gate) = (flights.clone(), runs.clone(), gate.clone());
                tokio::spawn(async move {
                    flights
                        .run("k", || async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            gate.notified().await;
                            Err("shared failure".to_owned())
                        })
                        .await
                })
            })
            .collect();
        until_aboard(&flights, "k", 8).await;
        gate.notify_one();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), Err("shared failure".to_owned()));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(
            flights.joins(),
            7,
            "every caller but the one that ran joined"
        );
        assert_eq!(
            flights.callers("k"),
            0,
            "the flight is forgotten once everyone landed"
        );
    }

    #[tokio::test]
    async fn outcomes_are_not_cached_after_the_flight() {
        let flights = Flights::<u32>::default();
        assert_eq!(flights.run("k", || async { 1 }).await, 1);
        assert_eq!(flights.run("k", || async { 2 }).await, 2);
    }

    #[tokio::test]
    async fn different_keys_fly_separately() {
        let flights = Flights::<&str>::default();
        let (a, b) = tokio::join!(
            flights.run("a", || async { "a" }),
            flights.run("b", || async { "b" })
        );
        assert_eq!((a, b), ("a", "b"));
    }

    #[tokio::test]
    async fn a_waiter_takes_over_when_the_leader_is_cancelled() {
        let flights = Arc::new(Flights::<u32>::default());
        let leader = never_landing(&flights, "k").await;
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", || async { 7 }).await })
        };
        until_aboard(&flights, "k", 2).await;
        leader.abort();
        assert_eq!(waiter.await.unwrap(), 7);
        assert_eq!(flights.callers("k"), 0);
        assert_eq!(flights.joins(), 0, "the waiter ran the operation itself");
    }

    #[tokio::test]
    async fn a_cancelled_lone_caller_leaves_nothing_behind() {
        let flights = Arc::new(Flights::<u32>::default());
        let lone = never_landing(&flights, "k").await;
        lone.abort();
        let _ = lone.await;
        assert!(flights.lock().is_empty());
    }
}
