//! Keeping a live source up across failures (a camera unplugged and plugged back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::FrameSource;
use crate::frame::RawFrame;
use crate::RuntimeError;

/// Opens a source, e.g. a camera by path.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, RuntimeError> + Send>;

/// Told each failure of a [`Reconnecting`] source and the wait before the next try.
pub type OnError = Box<dyn FnMut(&RuntimeError, Duration) + Send>;

/// Keeps a live source up: when opening or reading fails, it reports the error, waits
/// (exponential back-off from `min` to `max`) and reopens, until `stop` is set.
pub struct Reconnecting {
    open: Opener,
    name: String,
    current: Option<Box<dyn FrameSource>>,
    stop: Arc<AtomicBool>,
    min: Duration,
    max: Duration,
    /// Failures since the last good frame.
    failures: u32,
    /// Successful reconnections so far.
    pub reconnects: u32,
    on_error: OnError,
}

impl Reconnecting {
    /// Wraps `open`; `on_error` is told each failure and the wait before the next try.
    pub fn new(
        name: String,
        open: Opener,
        stop: Arc<AtomicBool>,
        backoff: (Duration, Duration),
        on_error: OnError,
    ) -> Self {
        Self {
            open,
            name,
            current: None,
            stop,
            min: backoff.0,
            max: backoff.1,
            failures: 0,
            reconnects: 0,
            on_error,
        }
    }

    /// Sleeps `d` in small steps; false when stopped meanwhile.
    fn wait(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
        !self.stop.load(Ordering::Relaxed)
    }

    fn fail(&mut self, e: RuntimeError) -> bool {
        self.current = None;
        let wait = (self.min * 2u32.saturating_pow(self.failures.min(16))).min(self.max);
        self.failures += 1;
        (self.on_error)(&e, wait);
        self.wait(wait)
    }
}

impl FrameSource for Reconnecting {
    fn describe(&self) -> String {
        match &self.current {
            Some(s) => s.describe(),
            None => format!("{} (reconnecting)", self.name),
        }
    }
    fn is_live(&self) -> bool {
        true
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if self.current.is_none() {
                match (self.open)() {
                    Ok(s) => {
                        if self.failures > 0 {
                            self.reconnects += 1;
                        }
                        self.current = Some(s);
                    }
                    Err(e) => {
                        if !self.fail(e) {
                            return Ok(None);
                        }
                        continue;
                    }
                }
            }
            let src = self.current.as_mut().expect("opened");
            match src.next_frame() {
                Ok(Some(f)) => {
                    self.failures = 0;
                    return Ok(Some(f));
                }
                Ok(None) => {
                    let e = RuntimeError::Input {
                        path: self.name.clone(),
                        reason: "the stream ended".into(),
                    };
                    if !self.fail(e) {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    if !self.fail(e) {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use crate::frame::PixelFormat;

    use super::*;

    /// A source that fails after `ok` frames.
    struct Flaky {
        ok: usize,
    }
    impl FrameSource for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn is_live(&self) -> bool {
            true
        }
        fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
            if self.ok == 0 {
                return Err(RuntimeError::Input {
                    path: "/dev/video9".into(),
                    reason: "No such device (os error 19)".into(),
                });
            }
            self.ok -= 1;
            Ok(Some(RawFrame::new(
                0,
                "f".into(),
                PixelFormat::Rgb24,
                1,
                1,
                vec![0, 0, 0],
            )))
        }
    }

    #[test]
    fn reconnecting_source_retries_with_backoff_and_stops_on_request() {
        // the device is unplugged after 2 frames; the first two reopen attempts fail
        let opens = Arc::new(Mutex::new(0));
        let o = opens.clone();
        let open: Opener = Box::new(move || {
            let mut n = o.lock().unwrap();
            *n += 1;
            match *n {
                1 => Ok(Box::new(Flaky { ok: 2 }) as Box<dyn FrameSource>),
                2 | 3 => Err(RuntimeError::Input {
                    path: "/dev/video9".into(),
                    reason: "cannot open".into(),
                }),
                _ => Ok(Box::new(Flaky { ok: 100 }) as Box<dyn FrameSource>),
            }
        });
        let waits = Arc::new(Mutex::new(Vec::new()));
        let w = waits.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut r = Reconnecting::new(
            "/dev/video9".into(),
            open,
            stop.clone(),
            (Duration::from_millis(1), Duration::from_millis(3)),
            Box::new(move |_, d| w.lock().unwrap().push(d)),
        );
        for _ in 0..5 {
            assert!(r.next_frame().unwrap().is_some());
        }
        assert_eq!(*opens.lock().unwrap(), 4);
        assert_eq!(r.reconnects, 1);
        let ms: Vec<u128> = waits.lock().unwrap().iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![1, 2, 3], "back-off doubles up to the maximum");
        stop.store(true, Ordering::Relaxed);
        assert!(r.next_frame().unwrap().is_none());
    }
}
