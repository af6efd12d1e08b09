//! The hand-over point between the adaptation worker and the inference thread.
//!
//! The worker builds a complete new inference plan (adapted weights folded into the graph) off
//! the inference path, then [`Slot::publish`]es it: one pointer swap under a mutex. The inference
//! thread asks [`Slot::newer`] between frames and, when there is a newer version, switches to it
//! for the next frame. A reader therefore sees either the old weight set or the new one, never a
//! mixture: published values are immutable (`Arc<T>`), and a frame in flight keeps the plan it
//! started with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A versioned, atomically replaced value.
#[derive(Debug)]
pub struct Slot<T> {
    version: AtomicU64,
    value: Mutex<(u64, Arc<T>)>,
}

impl<T> Slot<T> {
    /// A slot holding `value` as version 0.
    pub fn new(value: T) -> Self {
        Self {
            version: AtomicU64::new(0),
            value: Mutex::new((0, Arc::new(value))),
        }
    }

    /// Replaces the value; returns its version (1, 2, …).
    pub fn publish(&self, value: T) -> u64 {
        let value = Arc::new(value);
        let mut slot = self.value.lock().expect("slot lock");
        let v = slot.0 + 1;
        *slot = (v, value);
        self.version.store(v, Ordering::Release);
        v
    }

    /// The current version and value.
    pub fn load(&self) -> (u64, Arc<T>) {
        let slot = self.value.lock().expect("slot lock");
        (slot.0, slot.1.clone())
    }

    /// The current version number (a cheap check between frames).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The value when it is newer than `*seen` (which is then updated), else `None`.
    pub fn newer(&self, seen: &mut u64) -> Option<Arc<T>> {
        if self.version() == *seen {
            return None;
        }
        let (v, value) = self.load();
        *seen = v;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #5: the hot-swap never exposes a half-written weight set. A writer publishes weight
    /// sets whose every value is the set's version while readers keep loading: every set a reader
    /// sees is whole (one value throughout) and versions never go back.
    #[test]
    fn issue5_hot_swap_readers_never_see_a_half_written_set() {
        const N: usize = 200_000;
        let slot = Arc::new(Slot::new(vec![0f32; N]));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (slot, stop) = (slot.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut last, mut seen, mut loads) = (0u64, 0u64, 0u64);
                    // until the writer is done and this reader has seen its last set: on a loaded
                    // machine a reader may first run after every publish (it must still see one)
                    while !(stop.load(Ordering::Relaxed) && last == 300) {
                        let (v, w) = slot.load();
                        assert!(v >= last, "version went back from {last} to {v}");
                        let first = w[0];
                        assert_eq!(first, v as f32, "the set does not belong to its version");
                        assert!(w.iter().all(|&x| x == first), "a mixed weight set at version {v}");
                        if v != last {
                            seen += 1;
                        }
                        last = v;
                        loads += 1;
                        if let Some(w) = slot.newer(&mut last.clone()) {
                            assert!(w.iter().all(|&x| x == w[0]));
                        }
                    }
                    (seen, loads)
                })
            })
            .collect();
        for v in 1..=300u64 {
            // build the whole set first (as the worker builds a whole plan), then swap it in
            let w = vec![v as f32; N];
            assert_eq!(slot.publish(w), v);
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            let (seen, loads) = r.join().unwrap();
            assert!(
                loads > 0 && seen > 0,
                "the readers ran ({seen} versions, {loads} loads)"
            );
        }
        let mut seen = 0;
        assert_eq!(slot.newer(&mut seen).unwrap()[0], 300.0);
        assert_eq!(seen, 300);
        assert!(slot.newer(&mut seen).is_none());
    }
}
