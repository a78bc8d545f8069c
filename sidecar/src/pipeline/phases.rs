//! How long a render spent in each phase (decode, resize, effects, encode), for the sidecar's
//! metrics: the steps time themselves with [`timed`] into the collection [`collect`] opened on
//! this thread (a render runs on one worker thread); without one, nothing is kept. Frames of an
//! animation add up per phase.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// A phase's name and the time spent in it.
pub type Phases = Vec<(&'static str, Duration)>;

thread_local! {
    static OPEN: RefCell<Option<Phases>> = const { RefCell::new(None) };
}

/// Runs `job`, returning what it returned and the time its steps spent per phase, in the order
/// the phases were first entered.
pub fn collect<T>(job: impl FnOnce() -> T) -> (T, Phases) {
    struct Close(Option<Phases>);
    impl Drop for Close {
        fn drop(&mut self) {
            OPEN.with(|o| *o.borrow_mut() = self.0.take());
        }
    }
    let close = Close(OPEN.with(|o| o.borrow_mut().replace(Vec::new())));
    let out = job();
    let phases = OPEN.with(|o| o.borrow_mut().take()).unwrap_or_default();
    drop(close);
    (out, phases)
}

/// Runs `step`, counting its time in `phase`.
pub fn timed<T>(phase: &'static str, step: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = step();
    let spent = started.elapsed();
    OPEN.with(|o| {
        if let Some(phases) = o.borrow_mut().as_mut() {
            match phases.iter_mut().find(|(p, _)| *p == phase) {
                Some((_, total)) => *total += spent,
                None => phases.push((phase, spent)),
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_per_name_inside_a_collection_only() {
        assert_eq!(timed("decode", || 1), 1, "outside a collection: just runs");
        let (out, phases) = collect(|| {
            timed("decode", || ());
            timed("resize", || ());
            timed("resize", || ());
            7
        });
        assert_eq!(out, 7);
        let names: Vec<&str> = phases.iter().map(|(p, _)| *p).collect();
        assert_eq!(names, ["decode", "resize"]);
        let (_, none) = collect(|| ());
        assert!(none.is_empty(), "a new collection starts empty");
    }
}
