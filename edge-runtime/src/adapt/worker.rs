//! The background adaptation worker of `edge-seg run --adapt`.
//!
//! The inference thread hands it one frame in `every_n_frames` through a one-slot queue that
//! drops the older frame when the worker is busy (so adaptation never slows capture). Per frame
//! the worker observes it and takes one step; every `swap_every` steps it runs the guards and,
//! when the weights passed (or were reset to the source), builds a new tract plan and publishes it
//! in the [`Slot`] the inference thread polls between frames. The state file is rewritten after
//! each publish and at the end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::RgbImage;

use super::slot::Slot;
use super::{state, AdaptStats, Adapter};
use crate::backend::tract::TractBackend;
use crate::queue::{Policy, Queue};
use crate::RuntimeError;

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
                let work = || -> Result<(), RuntimeError> {
                    while let Some(frame) = q.pop() {
                        adapter.observe(&frame)?;
                        if let Some(plan) = adapter.advance()? {
                            sl.publish(Some(plan));
                            if let Some(p) = &state_file {
                                state::save(&adapter, p)?;
                            }
                        }
                        *st.lock().expect("status lock") = adapter.stats.status();
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
