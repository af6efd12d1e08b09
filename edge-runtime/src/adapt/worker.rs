//! The background adaptation worker of `edge-seg run --adapt`.
//!
//! The inference thread hands it one frame in `every_n_frames` through a one-slot queue that
//! drops the older frame when the worker is busy (so adaptation never slows capture). Per frame
//! the worker observes it and takes one step; every `swap_every` steps it runs the guards and,
//! when the weights passed (or were reset to the source), builds a new tract plan and publishes it
//! in the [`Slot`] the inference thread polls between frames. The state file is rewritten after
//! each publish and at the end. With `max_busy < 1` it pauses after a step whenever its busy
//! time exceeds that share of the wall time ([`pause`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::RgbImage;

use super::slot::Slot;
use super::{state, AdaptStats, Adapter};
use crate::backend::tract::TractBackend;
use crate::queue::{Policy, Queue};
use crate::RuntimeError;

/// The span over which `max_busy` is kept (counts older than about this are halved away).
const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a worker that has been busy for `busy` of `elapsed` must pause to bring its share
/// of the wall time down to `max_busy` (zero when it is within it; at most a second, so that a
/// stop never waits long).
pub fn pause(busy: std::time::Duration, elapsed: std::time::Duration, max_busy: f64) -> std::time::Duration {
    if max_busy >= 1.0 || max_busy <= 0.0 {
        return std::time::Duration::ZERO;
    }
    let needed = busy.as_secs_f64() / max_busy;
    std::time::Duration::from_secs_f64((needed - elapsed.as_secs_f64()).clamp(0.0, 1.0))
}

/// A running worker.
pub struct Worker {
    frames: Arc<Queue<RgbImage>>,
    slot: Arc<Slot<Option<TractBackend>>>,
    status: Arc<Mutex<String>>,
    handle: Option<JoinHandle<Result<AdaptStats, RuntimeError>>>,
    every: u64,
}

impl Worker {
    /// Starts the worker thread; `state_file`: where to persist the adapted weights.
    pub fn spawn(mut adapter: Adapter, state_file: Option<PathBuf>) -> Self {
        let frames = Arc::new(Queue::new(1, Policy::DropOldest));
        let slot = Arc::new(Slot::new(None));
        let status = Arc::new(Mutex::new(adapter.stats.status()));
        let every = adapter.config().every_n_frames;
        let (q, sl, st) = (frames.clone(), slot.clone(), status.clone());
        let handle = std::thread::Builder::new()
            .name("adapt".into())
            .spawn(move || -> Result<AdaptStats, RuntimeError> {
                let threads = adapter.config().threads;
                let max_busy = adapter.config().max_busy;
                let work = || -> Result<(), RuntimeError> {
                    let mut start = std::time::Instant::now();
                    let mut busy = std::time::Duration::ZERO;
                    while let Some(frame) = q.pop() {
                        let t0 = std::time::Instant::now();
                        adapter.observe(&frame)?;
                        if let Some(plan) = adapter.advance()? {
                            sl.publish(Some(plan));
                            if let Some(p) = &state_file {
                                state::save(&adapter, p)?;
                            }
                        }
                        *st.lock().expect("status lock") = adapter.stats.status();
                        busy += t0.elapsed();
                        // a sliding window: halve both counts every WINDOW, so an idle spell
                        // earns no burst later
                        if start.elapsed() > WINDOW {
                            busy /= 2;
                            start += start.elapsed() / 2;
                        }
                        std::thread::sleep(pause(busy, start.elapsed(), max_busy));
                    }
                    Ok(())
                };
                if let Err(e) = super::in_pool(threads, work).and_then(|r| r) {
                    // inference goes on with the last published weights; the run reports the
                    // error when it ends
                    tracing::error!("adaptation stopped: {e}");
                    *st.lock().expect("status lock") = format!("adapt: stopped ({e})");
                    q.abandon();
                    return Err(e);
                }
                if let Some(p) = &state_file {
                    state::save(&adapter, p)?;
                }
                Ok(adapter.stats.clone())
            })
            .expect("spawn adapt");
        Self {
            frames,
            slot,
            status,
            handle: Some(handle),
            every,
        }
    }

    /// What the pipeline's inference thread needs.
    pub fn link(&self) -> crate::pipeline::AdaptLink {
        let q = self.frames.clone();
        crate::pipeline::AdaptLink {
            every: self.every,
            tap: Arc::new(move |f: &RgbImage| {
                let _ = q.push(f.clone());
            }),
            slot: self.slot.clone(),
        }
    }

    /// The status-line text.
    pub fn status(&self) -> Arc<Mutex<String>> {
        self.status.clone()
    }

    /// Stops the worker (after its current step) and returns what it did.
    pub fn finish(mut self) -> Result<AdaptStats, RuntimeError> {
        self.frames.close();
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(RuntimeError::Adapt("the adaptation worker panicked".into())),
            None => Err(RuntimeError::Adapt("the adaptation worker was already stopped".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::pause;

    #[test]
    fn pause_keeps_the_busy_share_at_most_max_busy() {
        let s = Duration::from_secs_f64;
        // busy 0.3 s of 1 s at max 0.5: needs 0.6 s of wall time, has 1 s: no pause
        assert_eq!(pause(s(0.3), s(1.0), 0.5), Duration::ZERO);
        // busy 0.8 s of 1 s at max 0.5: needs 1.6 s, pauses 0.6 s
        assert!((pause(s(0.8), s(1.0), 0.5).as_secs_f64() - 0.6).abs() < 1e-9);
        // after the pause the share is exactly the limit
        let p = pause(s(0.4), s(1.0), 0.25);
        assert!((0.4 / (1.0 + p.as_secs_f64()) - 0.25).abs() < 1e-9, "{p:?}");
        // 1 = never; bounded
        assert_eq!(pause(s(5.0), s(1.0), 1.0), Duration::ZERO);
        assert_eq!(pause(s(1000.0), s(1.0), 0.5), s(1.0)); // bounded: a stop is never kept waiting long
    }
}
