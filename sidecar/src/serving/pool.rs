//! The render worker pool: at most one render per worker, at most two requests per worker
//! reading or holding their source, a bounded queue in front of those, and an immediate refusal
//! when the queue is full, so overload shows as a clear 503 instead of unbounded latency.
//!
//! A request first takes an [`Admission`] (waiting in the queue, holding nothing), then reads
//! its source, then runs its render with [`WorkerPool::run`], which needs the admission. The
//! bytes the admitted requests' sources hold are bounded by the memory budget's reads share
//! ([`crate::serving::budget`]), not by the number of admissions, so the worker count (the
//! node's size, by default) never raises the memory used.
//!
//! A job owns its worker, a share of its admission and its memory reservation until it ends,
//! not until its caller stops waiting: a render whose client went away keeps counting against
//! the pool and the budget until it stops, which it does at its next step ([`crate::pipeline::cancel`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::pipeline::cancel;
use crate::serving::budget::Reservation;

/// Why a job did not run to completion.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// Every admission is taken and the queue is full (HTTP 503).
    #[error("every render worker is busy and {queued} requests are queued")]
    Busy {
        /// The queue length at the time.
        queued: usize,
    },
    /// The job panicked or its thread was lost (HTTP 500). The detail is for logs only.
    #[error("render worker failed")]
    Lost(String),
}

/// Runs CPU-bound jobs on blocking threads, `workers` at a time, for at most twice as many
/// admitted requests, with at most `max_queue` waiting for an admission.
#[derive(Debug)]
pub struct WorkerPool {
    admissions: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queue: usize,
    size: usize,
}

/// A request's right to hold its source in memory and to run a render; released when the
/// request and every job it ran have dropped it.
#[derive(Debug, Clone)]
pub struct Admission(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// Counts one waiting request; uncounts it when dropped, including when the caller is
/// cancelled.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WorkerPool {
    /// A pool of `workers` (at least 1) concurrent jobs, twice as many admissions and
    /// `max_queue` requests waiting for one.
    pub fn new(workers: usize, max_queue: usize) -> Self {
        let workers = workers.max(1);
        WorkerPool {
            admissions: Arc::new(Semaphore::new(workers.saturating_mul(2))),
            workers: Arc::new(Semaphore::new(workers)),
            waiting: AtomicUsize::new(0),
            max_queue,
            size: workers,
        }
    }

    /// Workers, and how many run a job now (metrics).
    pub fn workers(&self) -> (usize, usize) {
        (self.size, self.size - self.workers.available_permits())
    }

    /// Whether the queue is full: the next request not admitted at once is refused.
    pub fn saturated(&self) -> bool {
        self.queued() >= self.max_queue && self.admissions.available_permits() == 0
    }

    /// Requests that may wait for an admission.
    pub fn max_queue(&self) -> usize {
        self.max_queue
    }

    /// Requests waiting for an admission now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Admits a request once fewer than two per worker hold one, or refuses at once when the
    /// queue is full.
    pub async fn admit(&self) -> Result<Admission, PoolError> {
        if let Ok(permit) = Arc::clone(&self.admissions).try_acquire_owned() {
            return Ok(Admission(Arc::new(permit)));
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.max_queue {
            return Err(PoolError::Busy { queued });
        }
        Arc::clone(&self.admissions)
            .acquire_owned()
            .await
            .map(|permit| Admission(Arc::new(permit)))
            .map_err(|_| PoolError::Lost("worker pool closed".into()))
    }

    /// Runs `job` on a blocking thread once a worker is free. Only admitted requests get here,
    /// so at most one per worker waits. The job holds its worker, `admitted` and `reserved`
    /// until it ends; when this future is dropped first, the job is told to stop
    /// ([`cancel::check`]).
    pub async fn run<T: Send + 'static>(
        &self,
        admitted: &Admission,
        reserved: Reservation,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let worker = Arc::clone(&self.workers)
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Lost("worker pool closed".into()))?;
        let held = (worker, admitted.clone(), reserved);
        let caller = cancel::OnDrop::default();
        let flag = caller.flag();
        let result = tokio::task::spawn_blocking(move || {
            let _held = held;
            let out = cancel::scope(Arc::clone(&flag), job);
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::info!("a render ended after every request waiting for it went away");
            }
            out
        })
        .await
        .map_err(|e| PoolError::Lost(e.to_string()));
        drop(caller);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;

    use super::*;
    use crate::serving::budget::MemoryBudget;

    /// A reservation of 1 KiB of a budget of its own.
    async fn reserved() -> Reservation {
        MemoryBudget::new(1 << 20).reserve(1024).await.unwrap()
    }

    /// Waits until `pool` has `n` queued requests.
    async fn until_queued(pool: &WorkerPool, n: usize) {
        while pool.queued() != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admits_two_per_worker_refuses_when_the_queue_is_full_and_recovers() {
        let pool = Arc::new(WorkerPool::new(1, 1));
        let first = pool.admit().await.unwrap();
        let second = pool.admit().await.unwrap();
        let queued = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move {
                let admitted = pool.admit().await?;
                pool.run(&admitted, reserved().await, || 2 + 2).await
            }
        });
        until_queued(&pool, 1).await;
        match pool.admit().await {
            Err(PoolError::Busy { queued: 1 }) => {}
            other => panic!("expected Busy, got {other:?}"),
        }
        assert_eq!(
            pool.queued(),
            1,
            "a refused request leaves the queue as it was"
        );

        // The only worker is held by the first admission's job until it is released.
        let (release, hold) = mpsc::channel::<()>();
        let busy = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move {
                pool.run(&first, reserved().await, move || hold.recv().is_ok())
                    .await
            }
        });
        drop(second);
        until_queued(&pool, 0).await;
        release.send(()).unwrap();
        assert!(busy.await.unwrap().unwrap());
        assert_eq!(queued.await.unwrap().unwrap(), 4, "admitted when one left");
        assert_eq!(pool.queued(), 0);
        let admitted = pool.admit().await.unwrap();
        assert_eq!(
            pool.run(&admitted, reserved().await, || 1).await.unwrap(),
            1,
            "the pool serves again"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_job_keeps_what_it_holds_until_it_stops_and_is_told_to() {
        let pool = Arc::new(WorkerPool::new(1, 4));
        let budget = Arc::new(MemoryBudget::new(4 << 20));
        let (started, on_start) = mpsc::channel::<()>();
        let (release, hold) = mpsc::channel::<()>();
        let (stopped, on_stop) = mpsc::channel::<Result<(), cancel::Cancelled>>();
        let abandoned = tokio::spawn({
            let (pool, budget) = (Arc::clone(&pool), Arc::clone(&budget));
            async move {
                let admitted = pool.admit().await.unwrap();
                let reserved = budget.reserve(3 << 20).await.unwrap();
                pool.run(&admitted, reserved, move || {
                    started.send(()).unwrap();
                    hold.recv().unwrap();
                    stopped.send(cancel::check()).unwrap();
                })
                .await
            }
        });
        tokio::task::spawn_blocking(move || on_start.recv().unwrap())
            .await
            .unwrap();
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());

        // Its worker, admission share and reservation are still taken by the running job.
        assert_eq!(budget.available_kib(), 1024);
        let admitted = pool.admit().await.unwrap();
        let next = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.run(&admitted, reserved().await, || 7).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !next.is_finished(),
            "the only worker is still the abandoned job's"
        );

        release.send(()).unwrap();
        let seen = tokio::task::spawn_blocking(move || on_stop.recv().unwrap())
            .await
            .unwrap();
        assert_eq!(
            seen,
            Err(cancel::Cancelled),
            "the job was told its caller left"
        );
        assert_eq!(next.await.unwrap().unwrap(), 7, "its worker was returned");
        assert_eq!(budget.available_kib(), 4096, "and its reservation");
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_not_a_crash() {
        let pool = WorkerPool::new(1, 0);
        let admitted = pool.admit().await.unwrap();
        let err = pool
            .run(&admitted, reserved().await, || panic!("decoder bug"))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Lost(_)), "{err}");
        assert_eq!(
            pool.run(&admitted, reserved().await, || 7).await.unwrap(),
            7,
            "the worker was returned"
        );
    }
}
