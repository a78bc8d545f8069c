//! Cancellation of a render whose caller went away (client gone, Envoy's route timeout, a
//! client-sent `grpc-timeout`): the job runs on a blocking thread and cannot be dropped, so its
//! caller raises a flag when it is dropped, and the pipeline checks it between its steps
//! ([`check`]), stopping at the next one.
//!
//! The flag is the job's thread's for the length of the job ([`scope`]), so the pipeline
//! checks it without a parameter through every step; outside a job [`check`] always passes
//! (benchmarks, tests).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The render was abandoned by every caller waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request was cancelled")]
pub struct Cancelled;

thread_local! {
    static FLAG: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Raises its flag when dropped: held by the future that waits for a job.
#[derive(Debug, Default)]
pub struct OnDrop(Arc<AtomicBool>);

impl OnDrop {
    /// The flag this raises, for [`scope`].
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `job` on this thread with `flag` as what [`check`] reads.
pub fn scope<T>(flag: Arc<AtomicBool>, job: impl FnOnce() -> T) -> T {
    struct Reset(Option<Arc<AtomicBool>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            FLAG.with(|f| *f.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(FLAG.with(|f| f.borrow_mut().replace(flag)));
    job()
}

/// An error when the job running on this thread was abandoned.
pub fn check() -> Result<(), Cancelled> {
    let cancelled = FLAG.with(|f| {
        f.borrow()
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    });
    if cancelled { Err(Cancelled) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_sees_its_flag_and_nothing_else_does() {
        assert_eq!(check(), Ok(()), "outside a job");
        let caller = OnDrop::default();
        let flag = caller.flag();
        let seen = std::thread::spawn(move || {
            scope(flag, || {
                let before = check();
                drop(caller);
                (before, check())
            })
        })
        .join()
        .unwrap();
        assert_eq!(seen, (Ok(()), Err(Cancelled)));
        assert_eq!(check(), Ok(()), "the scope ends with the job");
    }
}
