//! `--pace FPS`: a recorded source delivered at a camera's rate.

use std::time::{Duration, Instant};

use super::FrameSource;
use crate::frame::RawFrame;
use crate::RuntimeError;

/// Delivers a recorded source's frames at a camera's rate (`--pace FPS`): frames are stamped
/// when they are due, and a pipeline that falls behind drops them as it would a camera's.
pub struct Paced {
    inner: Box<dyn FrameSource>,
    period: Duration,
    start: Option<Instant>,
    n: u32,
}

impl Paced {
    /// `inner` at `fps` frames per second.
    pub fn new(inner: Box<dyn FrameSource>, fps: f64) -> Self {
        Self {
            inner,
            period: Duration::from_secs_f64(1.0 / fps.max(1e-3)),
            start: None,
            n: 0,
        }
    }
}

impl FrameSource for Paced {
    fn describe(&self) -> String {
        format!(
            "{} at {:.1} FPS",
            self.inner.describe(),
            1.0 / self.period.as_secs_f64()
        )
    }
    fn is_live(&self) -> bool {
        true
    }
    fn len_hint(&self) -> Option<usize> {
        self.inner.len_hint()
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = start + self.period * self.n;
        let mut f = self.inner.next_frame()?;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        self.n += 1;
        if let Some(f) = &mut f {
            f.captured = Instant::now();
        }
        Ok(f)
    }
}
