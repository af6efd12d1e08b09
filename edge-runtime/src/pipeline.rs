//! The `edge-seg run` pipeline: capture → decode/preprocess → inference → post-process/draw →
//! output, each on its own thread, joined by bounded [`Queue`]s. With a live source the queues
//! drop their oldest frame instead of growing, so the picture shown is always recent. The
//! pipeline only knows the [`Backend`](crate::backend::Backend) trait, through [`Segmenter`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use image::RgbImage;
use serde::Serialize;

use crate::backend::Logits;
use crate::frame::RawFrame;
use crate::output::{Output, Rendered};
use crate::overlay::{self, Legend, RenderOptions};
use crate::queue::{Policy, Queue};
use crate::segmenter::{argmax_resized, Preprocessor};
use crate::source::FrameSource;
use crate::{RuntimeError, Segmenter};

/// Extra text for the status line (e.g. the adaptation state), asked once per frame.
pub type StatusSuffix = Arc<dyn Fn() -> String + Send + Sync>;

/// The link to an on-device adaptation worker (`adapt::worker::Worker::link`). It needs no
/// candle, so the pipeline is the same with and without the `adapt` feature; without it nothing
/// makes one.
#[derive(Clone)]
pub struct AdaptLink {
    /// Hand one frame in this many to the worker.
    pub every: u64,
    /// Gives a frame to the worker (never blocks).
    pub tap: Arc<dyn Fn(&RgbImage) + Send + Sync>,
    /// Where the worker publishes adapted plans; polled between frames.
    pub slot: Arc<crate::adapt::slot::Slot<Option<crate::backend::tract::TractBackend>>>,
}

/// How to run.
#[derive(Clone)]
pub struct PipelineOptions {
    /// Capacity of each queue between stages.
    pub queue: usize,
    /// Full-queue behaviour; `None`: drop for live sources, block for recorded ones.
    pub policy: Option<Policy>,
    /// Drawing.
    pub render: RenderOptions,
    /// Stop after this many captured frames.
    pub max_frames: Option<u64>,
    /// Appended to the status line.
    pub status_suffix: Option<StatusSuffix>,
    /// On-device adaptation (`--adapt`).
    pub adapt: Option<AdaptLink>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            queue: 2,
            policy: None,
            render: RenderOptions::default(),
            max_frames: None,
            status_suffix: None,
            adapt: None,
        }
    }
}

/// Per-frame timings (milliseconds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FrameTiming {
    /// Frame index in the source.
    pub index: u64,
    /// Frame name.
    pub name: String,
    /// Capture → output done.
    pub latency_ms: f64,
    /// Decode to RGB + resize + normalise.
    pub preprocess_ms: f64,
    /// Backend run.
    pub infer_ms: f64,
    /// Logit resize + arg-max.
    pub post_ms: f64,
    /// Overlay drawing.
    pub draw_ms: f64,
    /// All outputs.
    pub output_ms: f64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// Backend name.
    pub backend: String,
    /// Source description.
    pub source: String,
    /// Frames the source delivered.
    pub frames_in: u64,
    /// Frames that reached the outputs.
    pub frames_out: u64,
    /// Frames dropped by full queues.
    pub dropped: u64,
    /// Corrupt frames skipped (only while dropping stale frames).
    pub skipped: u64,
    /// First capture → last output, seconds.
    pub wall_s: f64,
    /// Output frames per second over `wall_s`.
    pub fps: f64,
    /// Latency percentiles (ms), over the last [`LATENCY_WINDOW`] frames.
    pub latency_p50_ms: f64,
    /// 90th percentile.
    pub latency_p90_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Mean per-stage times (ms).
    pub mean_preprocess_ms: f64,
    /// Mean inference time.
    pub mean_infer_ms: f64,
    /// Mean post-processing time.
    pub mean_post_ms: f64,
    /// Mean drawing time.
    pub mean_draw_ms: f64,
    /// Mean output time.
    pub mean_output_ms: f64,
    /// Peak resident memory of the process (MiB), from /proc/self/status.
    pub peak_rss_mib: Option<f64>,
    /// True when the run ended by a stop request (Ctrl-C).
    pub interrupted: bool,
}

impl Summary {
    /// A human summary.
    pub fn report(&self) -> String {
        let rss = self
            .peak_rss_mib
            .map(|m| format!(", peak RSS {m:.0} MiB"))
            .unwrap_or_default();
        format!(
            "{} frames in {:.1} s: {:.1} FPS; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms\n\
             stages (mean ms): preprocess {:.1}, inference {:.1}, post {:.1}, draw {:.1}, output {:.1}; \
             dropped {}, skipped {}{rss}",
            self.frames_out,
            self.wall_s,
            self.fps,
            self.latency_p50_ms,
            self.latency_p90_ms,
            self.latency_p99_ms,
            self.mean_preprocess_ms,
            self.mean_infer_ms,
            self.mean_post_ms,
            self.mean_draw_ms,
            self.mean_output_ms,
            self.dropped,
            self.skipped,
        )
    }
}

/// Latency percentiles cover at most this many recent frames, so a camera running for days keeps
/// a bounded memory (the means cover every frame).
pub const LATENCY_WINDOW: usize = 100_000;

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Peak resident set size of this process (VmHWM), MiB; `None` off Linux.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

struct Prepared {
    raw_captured: Instant,
    index: u64,
    name: String,
    frame: RgbImage,
    input: Vec<f32>,
    t: FrameTiming,
}

struct Inferred {
    p: Prepared,
    logits: Logits,
}

struct Drawn {
    captured: Instant,
    rendered: Rendered,
    t: FrameTiming,
}

/// Shared failure slot: the first error wins and stops the run.
struct Failure {
    first: Mutex<Option<RuntimeError>>,
    stop: Arc<AtomicBool>,
}

impl Failure {
    fn set(&self, e: RuntimeError) {
        let mut f = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The two ways a stage lets go of a queue.
trait Shut {
    fn close(&self);
    fn abandon(&self);
}

impl<T> Shut for Queue<T> {
    fn close(&self) {
        Queue::close(self)
    }
    fn abandon(&self) {
        Queue::abandon(self)
    }
}

/// Held by each stage thread: when the thread ends, normally or by a panic, its output queue is
/// closed (the next stage drains it and ends); on a panic its input queue is abandoned too (the
/// previous stage's pushes fail and it ends), so no thread waits forever. The panic itself
/// becomes the run's error when the thread is joined ([`internal_error`]).
struct StageGuard<'a> {
    input: Option<&'a dyn Shut>,
    output: Option<&'a dyn Shut>,
}

impl Drop for StageGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(q) = self.input {
                q.abandon();
            }
        }
        if let Some(q) = self.output {
            q.close();
        }
    }
}

thread_local! {
    /// Set while this thread runs a pipeline stage, whose panic [`run`] reports as its error.
    static IN_STAGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread is reported by [`run`] (for [`crate::install_panic_hook`]).
pub fn panic_is_reported() -> bool {
    IN_STAGE.with(|c| c.get())
}

/// Runs `f` with its panics caught and marked as reported (the caller turns them into an
/// error; [`crate::install_panic_hook`] keeps them off stderr).
pub(crate) fn catch_reported<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let was = IN_STAGE.with(|c| c.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_STAGE.with(|c| c.set(was));
    r
}

/// A panic's message on one line (the trainer's ONNX teacher reports tract's panics the same way).
pub(crate) use seg_core::io::panic_message;

/// A stage's panic as a one-line error.
fn internal_error(stage: &str, payload: Box<dyn std::any::Any + Send>) -> RuntimeError {
    RuntimeError::Backend(format!(
        "internal error in the {stage} stage: {} (please report it)",
        panic_message(payload.as_ref())
    ))
}

/// Runs `source` through `seg` into `outputs` until the source ends, `stop` is set, or a
/// stage fails (the first error is returned after every thread has finished and the outputs
/// are flushed). `on_frame` sees each output frame's timings (for `--stats`).
///
/// This is the wiring of the stages: `capture_stage` on its own thread (`spawn_capture`),
/// `stop_watch`, `preprocess_stage`, `inference_stage` (with the adaptation link,
/// `adapt_between_frames`) and `draw_stage` on scoped threads, `output_stage` on this thread;
/// then `join_capture`, `finish_outputs` and the [`Summary`].
pub fn run(
    source: Box<dyn FrameSource>,
    mut seg: Segmenter,
    mut outputs: Vec<Box<dyn Output>>,
    opts: &PipelineOptions,
    stop: Arc<AtomicBool>,
    mut on_frame: impl FnMut(&FrameTiming) + Send,
) -> Result<Summary, RuntimeError> {
    let live = source.is_live();
    let policy = opts
        .policy
        .unwrap_or(if live { Policy::DropOldest } else { Policy::Block });
    // dropping frames means latency over completeness: a corrupt frame is skipped, not fatal
    let skip_bad = policy == Policy::DropOldest;
    let q_raw: Arc<Queue<RawFrame>> = Arc::new(Queue::new(opts.queue, policy));
    let q_pre: Queue<Prepared> = Queue::new(opts.queue, policy);
    let q_inf: Queue<Inferred> = Queue::new(opts.queue, policy);
    let q_drawn: Queue<Drawn> = Queue::new(opts.queue, policy);
    let fail = Failure {
        first: Mutex::new(None),
        stop: stop.clone(),
    };
    let fps_bits = AtomicU64::new(0f64.to_bits());
    let (frames_in, skipped) = (Arc::new(AtomicU64::new(0)), AtomicU64::new(0));
    let pre = seg.preprocessor();
    let model = seg.meta.name.clone();
    let backend = seg.backend_name();
    let names = seg.meta.classes.names.clone();
    let palette = seg.meta.classes.palette.clone();
    let source_name = source.describe();
    let mut tally = Tally::default();
    // under systemd (`Type=notify`, `WatchdogSec=`): READY=1 with the first frame out, then
    // WATCHDOG=1 while frames flow; nothing otherwise
    let mut notify = crate::notify::Notifier::from_env();

    // capture runs outside the scope below: a read blocked on an idle pipe or a silent camera
    // must not keep a stopped run from ending (issue #23); its error goes to its own slot
    let capture_fail: Arc<Mutex<Option<RuntimeError>>> = Arc::new(Mutex::new(None));
    let capture = spawn_capture(
        source,
        &q_raw,
        &stop,
        &frames_in,
        &capture_fail,
        opts.max_frames,
        &source_name,
    )?;
    let pipeline_done = AtomicBool::new(false);
    let legend = Legend {
        names: &names,
        palette: &palette,
    };

    std::thread::scope(|s| {
        // a stop request (Ctrl-C, SIGTERM, a failed stage) closes the capture queue, so the
        // stages drain what was captured and end even while capture waits for input
        std::thread::Builder::new()
            .name("stop-watch".into())
            .spawn_scoped(s, || stop_watch(&pipeline_done, &stop, &q_raw))
            .expect("spawn stop-watch");
        // decode + preprocess
        let preprocess = std::thread::Builder::new()
            .name("preprocess".into())
            .spawn_scoped(s, || preprocess_stage(&q_raw, &q_pre, &pre, skip_bad, &skipped, &fail))
            .expect("spawn preprocess");
        // inference
        let inference = std::thread::Builder::new()
            .name("inference".into())
            .spawn_scoped(s, || {
                inference_stage(&q_pre, &q_inf, &mut seg, opts.adapt.as_ref(), &fail)
            })
            .expect("spawn inference");
        // post-process + draw
        let draw = std::thread::Builder::new()
            .name("draw".into())
            .spawn_scoped(s, || {
                draw_stage(&q_inf, &q_drawn, &legend, &model, backend, &fps_bits, opts)
            })
            .expect("spawn draw");
        // outputs, on this thread; a panic here ends the run like one in another stage
        IN_STAGE.with(|c| c.set(true));
        let outputs_loop = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            output_stage(
                &q_drawn,
                &mut outputs,
                &fail,
                &fps_bits,
                &mut on_frame,
                &mut notify,
                &mut tally,
            )
        }));
        IN_STAGE.with(|c| c.set(false));
        pipeline_done.store(true, Ordering::Relaxed);
        notify.stopping();
        if let Err(p) = outputs_loop {
            q_drawn.abandon();
            fail.set(internal_error("output", p));
        }
        for (stage, h) in [("preprocess", preprocess), ("inference", inference), ("draw", draw)] {
            if let Err(p) = h.join() {
                fail.set(internal_error(stage, p));
            }
        }
    });

    join_capture(capture, &q_raw, &fail, &capture_fail);
    // flush outputs even after an error or Ctrl-C
    let finish_err = finish_outputs(&mut outputs);
    if let Some(e) = fail
        .first
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .or(finish_err)
    {
        return Err(e);
    }
    Ok(tally.summarize(Summary {
        model,
        backend: backend.to_string(),
        source: source_name,
        frames_in: frames_in.load(Ordering::Relaxed),
        dropped: q_raw.dropped() + q_pre.dropped() + q_inf.dropped() + q_drawn.dropped(),
        skipped: skipped.load(Ordering::Relaxed),
        interrupted: stop.load(Ordering::Relaxed),
        ..Default::default()
    }))
}

/// Starts [`capture_stage`] on its own thread, `capture`.
fn spawn_capture(
    source: Box<dyn FrameSource>,
    q_raw: &Arc<Queue<RawFrame>>,
    stop: &Arc<AtomicBool>,
    frames_in: &Arc<AtomicU64>,
    capture_fail: &Arc<Mutex<Option<RuntimeError>>>,
    max_frames: Option<u64>,
    source_name: &str,
) -> Result<std::thread::JoinHandle<()>, RuntimeError> {
    let (q, stop, frames_in, slot) = (q_raw.clone(), stop.clone(), frames_in.clone(), capture_fail.clone());
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || capture_stage(source, &q, &stop, &frames_in, &slot, max_frames))
        .map_err(|e| RuntimeError::Input {
            path: source_name.to_string(),
            reason: format!("cannot start the capture thread: {e}"),
        })
}

/// Capture: `source`'s frames into `q` until the source ends, `stop` is set or `max_frames`
/// were read (counted in `frames_in`); a read error goes to `slot` and stops the run.
fn capture_stage(
    mut source: Box<dyn FrameSource>,
    q: &Queue<RawFrame>,
    stop: &AtomicBool,
    frames_in: &AtomicU64,
    slot: &Mutex<Option<RuntimeError>>,
    max_frames: Option<u64>,
) {
    let _guard = StageGuard {
        input: None,
        output: Some(q),
    };
    IN_STAGE.with(|c| c.set(true));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && max_frames.is_none_or(|m| n < m) {
        match source.next_frame() {
            Ok(Some(f)) => {
                n += 1;
                frames_in.store(n, Ordering::Relaxed);
                if q.push(f).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                slot.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    q.close();
}

/// Closes the capture queue when `stop` is set, until the pipeline is done.
fn stop_watch(pipeline_done: &AtomicBool, stop: &AtomicBool, q_raw: &Queue<RawFrame>) {
    while !pipeline_done.load(Ordering::Relaxed) {
        if stop.load(Ordering::Relaxed) {
            q_raw.close();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Decode + preprocess: raw frames to RGB and the model's input. A corrupt frame is skipped
/// when `skip_bad` (counted in `skipped`), else it fails the run.
fn preprocess_stage(
    q_raw: &Queue<RawFrame>,
    q_pre: &Queue<Prepared>,
    pre: &Preprocessor,
    skip_bad: bool,
    skipped: &AtomicU64,
    fail: &Failure,
) {
    let _guard = StageGuard {
        input: Some(q_raw),
        output: Some(q_pre),
    };
    IN_STAGE.with(|c| c.set(true));
    while let Some(raw) = q_raw.pop() {
        let t0 = Instant::now();
        let frame = match raw.to_rgb() {
            Ok(f) => f,
            Err(reason) => {
                let e = RuntimeError::Input {
                    path: raw.origin.clone(),
                    reason,
                };
                if skip_bad {
                    let k = skipped.fetch_add(1, Ordering::Relaxed);
                    if k < 3 || k.is_multiple_of(100) {
                        tracing::warn!("skipping a corrupt frame: {e}");
                    }
                    continue;
                }
                fail.set(e);
                q_raw.abandon();
                break;
            }
        };
        let mut input = Vec::new();
        pre.run(&frame, &mut input);
        let t = FrameTiming {
            index: raw.index,
            name: raw.name.clone(),
            preprocess_ms: ms(t0),
            ..Default::default()
        };
        let p = Prepared {
            raw_captured: raw.captured,
            index: raw.index,
            name: raw.name,
            frame,
            input,
            t,
        };
        if q_pre.push(p).is_err() {
            q_raw.abandon();
            break;
        }
    }
    q_pre.close();
}

/// Inference: the backend run on each prepared input; with `adapt`, [`adapt_between_frames`]
/// before each frame.
fn inference_stage(
    q_pre: &Queue<Prepared>,
    q_inf: &Queue<Inferred>,
    seg: &mut Segmenter,
    adapt: Option<&AdaptLink>,
    fail: &Failure,
) {
    let _guard = StageGuard {
        input: Some(q_pre),
        output: Some(q_inf),
    };
    IN_STAGE.with(|c| c.set(true));
    let mut version = 0u64;
    while let Some(mut p) = q_pre.pop() {
        if let Some(a) = adapt {
            adapt_between_frames(a, &mut version, seg, &p);
        }
        let t0 = Instant::now();
        match seg.infer(&p.input) {
            Ok(logits) => {
                p.t.infer_ms = ms(t0);
                if q_inf.push(Inferred { p, logits }).is_err() {
                    q_pre.abandon();
                    break;
                }
            }
            Err(e) => {
                fail.set(e);
                q_pre.abandon();
                break;
            }
        }
    }
    q_inf.close();
}

/// The adaptation wiring of the inference stage, before frame `p`: switch to a plan the worker
/// published since `version`, and hand the worker one frame in `a.every`.
fn adapt_between_frames(a: &AdaptLink, version: &mut u64, seg: &mut Segmenter, p: &Prepared) {
    // between frames: switch to a newly published adapted plan (whole)
    if let Some(b) = a.slot.newer(version) {
        if let Some(b) = b.as_ref() {
            seg.set_backend(Box::new(b.clone()));
        }
    }
    if p.index.is_multiple_of(a.every.max(1)) {
        (a.tap)(&p.frame);
    }
}

/// Post-process + draw: logits to classes at the frame's size (arg-max), then the overlay with
/// its status line (`model | backend | FPS`, and the status suffix).
fn draw_stage(
    q_inf: &Queue<Inferred>,
    q_drawn: &Queue<Drawn>,
    legend: &Legend,
    model: &str,
    backend: &str,
    fps_bits: &AtomicU64,
    opts: &PipelineOptions,
) {
    let _guard = StageGuard {
        input: Some(q_inf),
        output: Some(q_drawn),
    };
    IN_STAGE.with(|c| c.set(true));
    while let Some(Inferred { mut p, logits }) = q_inf.pop() {
        let t0 = Instant::now();
        let classes = argmax_resized(&logits, p.frame.height() as usize, p.frame.width() as usize);
        p.t.post_ms = ms(t0);
        let t1 = Instant::now();
        let fps = f64::from_bits(fps_bits.load(Ordering::Relaxed));
        // no rate until one has been measured (the first frames would say "0.0 FPS")
        let mut status = if fps > 0.0 {
            format!("{model} | {backend} | {fps:.1} FPS")
        } else {
            format!("{model} | {backend}")
        };
        if let Some(extra) = &opts.status_suffix {
            status.push_str(" | ");
            status.push_str(&extra());
        }
        let image = overlay::render_with(&p.frame, &classes, legend, &status, &opts.render);
        p.t.draw_ms = ms(t1);
        let d = Drawn {
            captured: p.raw_captured,
            rendered: Rendered {
                index: p.index,
                name: p.name,
                image,
                status,
                fps,
            },
            t: p.t,
        };
        if q_drawn.push(d).is_err() {
            q_inf.abandon();
            break;
        }
    }
    q_drawn.close();
}

/// Outputs (on the caller's thread): each drawn frame to every output, then its timings into
/// `tally`, the FPS estimate the status line shows (`fps_bits`), `on_frame` and `notify`.
fn output_stage(
    q_drawn: &Queue<Drawn>,
    outputs: &mut [Box<dyn Output>],
    fail: &Failure,
    fps_bits: &AtomicU64,
    on_frame: &mut impl FnMut(&FrameTiming),
    notify: &mut crate::notify::Notifier,
    tally: &mut Tally,
) {
    let mut ewma_dt: Option<f64> = None;
    while let Some(mut d) = q_drawn.pop() {
        let t0 = Instant::now();
        let mut failed = false;
        for o in outputs.iter_mut() {
            if let Err(e) = o.write(&d.rendered) {
                fail.set(e);
                failed = true;
                break;
            }
        }
        if failed {
            q_drawn.abandon();
            break;
        }
        let now = Instant::now();
        d.t.output_ms = ms(t0);
        d.t.latency_ms = (now - d.captured).as_secs_f64() * 1e3;
        tally.first_capture = Some(tally.first_capture.map_or(d.captured, |f| f.min(d.captured)));
        if let Some(prev) = tally.last_output {
            let dt = (now - prev).as_secs_f64();
            let e = ewma_dt.map_or(dt, |e| 0.9 * e + 0.1 * dt);
            ewma_dt = Some(e);
            fps_bits.store((1.0 / e.max(1e-6)).to_bits(), Ordering::Relaxed);
        }
        tally.last_output = Some(now);
        on_frame(&d.t);
        if tally.latencies.len() == LATENCY_WINDOW {
            tally.latencies.pop_front();
        }
        tally.latencies.push_back(d.t.latency_ms);
        for (acc, v) in
            tally
                .sums
                .iter_mut()
                .zip([d.t.preprocess_ms, d.t.infer_ms, d.t.post_ms, d.t.draw_ms, d.t.output_ms])
        {
            *acc += v;
        }
        tally.frames_out += 1;
        notify.frame(tally.frames_out, f64::from_bits(fps_bits.load(Ordering::Relaxed)));
    }
}

/// After the stages: capture has ended too unless it waits for input that will not come (then
/// it is left behind; the process ends without it). Its panic or read error goes to `fail`.
fn join_capture(
    capture: std::thread::JoinHandle<()>,
    q_raw: &Queue<RawFrame>,
    fail: &Failure,
    capture_fail: &Mutex<Option<RuntimeError>>,
) {
    q_raw.close();
    let waited = Instant::now();
    while !capture.is_finished() && waited.elapsed() < std::time::Duration::from_millis(200) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if capture.is_finished() {
        if let Err(p) = capture.join() {
            fail.set(internal_error("capture", p));
        }
    }
    if let Some(e) = capture_fail.lock().unwrap_or_else(|e| e.into_inner()).take() {
        fail.set(e);
    }
}

/// Flushes every output; the first error.
fn finish_outputs(outputs: &mut [Box<dyn Output>]) -> Option<RuntimeError> {
    let mut finish_err = None;
    for o in outputs.iter_mut() {
        if let Err(e) = o.finish() {
            finish_err.get_or_insert(e);
        }
    }
    finish_err
}

/// What the output stage measured, for the [`Summary`].
#[derive(Default)]
struct Tally {
    /// Latencies (ms) of the last [`LATENCY_WINDOW`] output frames.
    latencies: VecDeque<f64>,
    /// Stage time sums (ms): preprocess, infer, post, draw, output.
    sums: [f64; 5],
    /// Frames that reached the outputs.
    frames_out: u64,
    /// Earliest capture time of an output frame.
    first_capture: Option<Instant>,
    /// When the last frame was output.
    last_output: Option<Instant>,
}

impl Tally {
    /// `counts` (the run's names and counters) completed with the measurements.
    fn summarize(self, counts: Summary) -> Summary {
        let frames_out = self.frames_out;
        let wall_s = match (self.first_capture, self.last_output) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        let mut lat: Vec<f64> = self.latencies.into_iter().collect();
        lat.sort_by(f64::total_cmp);
        let mean = |i: usize| self.sums[i] / frames_out.max(1) as f64;
        Summary {
            frames_out,
            wall_s,
            fps: if wall_s > 0.0 { frames_out as f64 / wall_s } else { 0.0 },
            latency_p50_ms: percentile(&lat, 50.0),
            latency_p90_ms: percentile(&lat, 90.0),
            latency_p99_ms: percentile(&lat, 99.0),
            mean_preprocess_ms: mean(0),
            mean_infer_ms: mean(1),
            mean_post_ms: mean(2),
            mean_draw_ms: mean(3),
            mean_output_ms: mean(4),
            peak_rss_mib: peak_rss_mib(),
            ..counts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Embedded sample frames; panics at frame `panic_at` (when `Some`).
    struct Frames {
        n: u64,
        panic_at: Option<u64>,
    }

    impl FrameSource for Frames {
        fn describe(&self) -> String {
            "test frames".into()
        }
        fn is_live(&self) -> bool {
            false
        }
        fn next_frame(&mut self) -> Result<Option<crate::frame::RawFrame>, RuntimeError> {
            if Some(self.n) == self.panic_at {
                panic!("capacity overflow (test)");
            }
            self.n += 1;
            let png = crate::DEFAULT_SAMPLES[0].1.to_vec();
            Ok((self.n <= 6).then(|| {
                crate::frame::RawFrame::new(
                    self.n - 1,
                    format!("f{}", self.n),
                    crate::frame::PixelFormat::Image,
                    0,
                    0,
                    png,
                )
            }))
        }
    }

    struct PanickyOutput(u64);

    impl Output for PanickyOutput {
        fn describe(&self) -> String {
            "panicky".into()
        }
        fn write(&mut self, _: &Rendered) -> Result<(), RuntimeError> {
            self.0 += 1;
            assert!(self.0 < 3, "output broke (test)");
            Ok(())
        }
    }

    fn small() -> Segmenter {
        Segmenter::from_bytes(crate::SMALL_MODEL, "small").unwrap()
    }

    /// Issue #23: a panic in a stage thread (capture here) or in the output stage ends the run
    /// with a one-line error instead of leaving the other threads waiting forever.
    #[test]
    fn issue23_a_panicking_stage_ends_the_run_with_an_error() {
        crate::install_panic_hook();
        let opts = PipelineOptions {
            queue: 1,
            policy: Some(Policy::Block),
            ..Default::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let src = Box::new(Frames {
            n: 0,
            panic_at: Some(2),
        });
        let e = run(src, small(), vec![], &opts, stop, |_| {}).unwrap_err().to_string();
        assert!(
            e.contains("internal error in the capture stage") && e.contains("capacity overflow"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let src = Box::new(Frames { n: 0, panic_at: None });
        let out: Vec<Box<dyn Output>> = vec![Box::new(PanickyOutput(0))];
        let stop = Arc::new(AtomicBool::new(false));
        let e = run(src, small(), out, &opts, stop, |_| {}).unwrap_err().to_string();
        assert!(
            e.contains("internal error in the output stage") && e.contains("output broke"),
            "{e}"
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
