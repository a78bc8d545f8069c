//! The render worker pool: at most one render per core, a bounded queue in front of it, and an
//! immediate refusal when the queue is full, so overload shows as a clear 503 instead of
//! unbounded latency and memory (every queued request holds its source bytes).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// Why a job did not run to completion.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// Every worker is busy and the queue is full (HTTP 503).
    #[error("every render worker is busy and {queued} requests are queued")]
    Busy {
        /// The queue length at the time.
        queued: usize,
    },
    /// The job panicked or its thread was lost (HTTP 500). The detail is for logs only.
    #[error("render worker failed")]
    Lost(String),
}

/// Runs CPU-bound jobs on blocking threads, `workers` at a time, with at most `max_queue`
/// waiting.
#[derive(Debug)]
pub struct WorkerPool {
    permits: Semaphore,
    waiting: AtomicUsize,
    max_queue: usize,
}

/// Counts one waiting job; uncounts it when dropped, including when the caller is cancelled.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WorkerPool {
    /// A pool of `workers` (at least 1) concurrent jobs and `max_queue` waiting ones.
    pub fn new(workers: usize, max_queue: usize) -> Self {
        WorkerPool {
            permits: Semaphore::new(workers.max(1)),
            waiting: AtomicUsize::new(0),
            max_queue,
        }
    }

    /// Jobs waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Runs `job` on a blocking thread once a worker is free, or refuses at once when the queue
    /// is full.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
                let _waiting = Waiting(&self.waiting);
                if queued >= self.max_queue {
                    return Err(PoolError::Busy { queued });
                }
                self.permits
                    .acquire()
                    .await
                    .map_err(|_| PoolError::Lost("worker pool closed".into()))?
            }
        };
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

    /// Waits until `pool` has `n` queued jobs.
    async fn until_queued(pool: &WorkerPool, n: usize) {
        while pool.queued() != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_when_the_queue_is_full_and_recovers() {
        let pool = Arc::new(WorkerPool::new(1, 1));
        let (release, hold) = mpsc::channel::<()>();
        let busy = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.run(move || hold.recv().is_ok()).await }
        });
        // Let the first job take the only worker.
        while pool.permits.available_permits() != 0 {
            tokio::task::yield_now().await;
        }
        let queued = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.run(|| 2 + 2).await }
        });
        until_queued(&pool, 1).await;
        match pool.run(|| ()).await {
            Err(PoolError::Busy { queued: 1 }) => {}
            other => panic!("expected Busy, got {other:?}"),
        }
        assert_eq!(pool.queued(), 1, "a refused job leaves the queue as it was");

        release.send(()).unwrap();
        assert!(busy.await.unwrap().unwrap());
        assert_eq!(queued.await.unwrap().unwrap(), 4);
        assert_eq!(pool.queued(), 0);
        assert_eq!(pool.run(|| 1).await.unwrap(), 1, "the pool serves again");
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_not_a_crash() {
        let pool = WorkerPool::new(1, 0);
        let err = pool.run(|| panic!("decoder bug")).await.unwrap_err();
        assert!(matches!(err, PoolError::Lost(_)), "{err}");
        assert_eq!(pool.run(|| 7).await.unwrap(), 7, "the worker was returned");
    }
}
