//! The render worker pool: at most one render per core, a bounded number of requests holding
//! their source in memory (two per core: one rendering, one read ahead), a bounded queue in
//! front of those, and an immediate refusal when the queue is full, so overload shows as a
//! clear 503 instead of unbounded latency and memory.
//!
//! A request first takes an [`Admission`] (waiting in the queue, holding nothing), then reads
//! its source, then runs its render with [`WorkerPool::run`], which needs the admission: so no
//! more than two sources per core are ever in memory however many requests arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    workers: Semaphore,
    waiting: AtomicUsize,
    max_queue: usize,
}

/// A request's right to hold its source in memory and to run a render; released on drop.
#[derive(Debug)]
pub struct Admission(#[allow(dead_code)] OwnedSemaphorePermit);

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
            admissions: Arc::new(Semaphore::new(workers * 2)),
            workers: Semaphore::new(workers),
            waiting: AtomicUsize::new(0),
            max_queue,
        }
    }

    /// Requests waiting for an admission now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Admits a request once fewer than two per worker hold one, or refuses at once when the
    /// queue is full.
    pub async fn admit(&self) -> Result<Admission, PoolError> {
        if let Ok(permit) = Arc::clone(&self.admissions).try_acquire_owned() {
            return Ok(Admission(permit));
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.max_queue {
            return Err(PoolError::Busy { queued });
        }
        Arc::clone(&self.admissions)
            .acquire_owned()
            .await
            .map(Admission)
            .map_err(|_| PoolError::Lost("worker pool closed".into()))
    }

    /// Runs `job` on a blocking thread once a worker is free. Only admitted requests get here,
    /// so at most one per worker waits.
    pub async fn run<T: Send + 'static>(
        &self,
        _admitted: &Admission,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let permit = self
            .workers
            .acquire()
            .await
            .map_err(|_| PoolError::Lost("worker pool closed".into()))?;
        let result = tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| PoolError::Lost(e.to_string()));
        drop(permit);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;

    use super::*;

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
                pool.run(&admitted, || 2 + 2).await
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
            async move { pool.run(&first, move || hold.recv().is_ok()).await }
        });
        drop(second);
        until_queued(&pool, 0).await;
        release.send(()).unwrap();
        assert!(busy.await.unwrap().unwrap());
        assert_eq!(queued.await.unwrap().unwrap(), 4, "admitted when one left");
        assert_eq!(pool.queued(), 0);
        let admitted = pool.admit().await.unwrap();
        assert_eq!(
            pool.run(&admitted, || 1).await.unwrap(),
            1,
            "the pool serves again"
        );
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_not_a_crash() {
        let pool = WorkerPool::new(1, 0);
        let admitted = pool.admit().await.unwrap();
        let err = pool
            .run(&admitted, || panic!("decoder bug"))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Lost(_)), "{err}");
        assert_eq!(
            pool.run(&admitted, || 7).await.unwrap(),
            7,
            "the worker was returned"
        );
    }
}
