//! `edge-seg adapt`, the offline twin of `run --adapt`: a list of frames played in order as a
//! stream through the same [`Adapter`] (worker settings, guards, published plans), the model's
//! inference on each frame timed as the camera loop would run it.

use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{in_pool, state, Adapter, Verdict};
use crate::{RuntimeError, Segmenter};

/// How the frames are played.
#[derive(Debug, Clone)]
pub struct Offline {
    /// Times the list is played (≥ 1).
    pub passes: u32,
    /// Adaptation steps per frame handed over (≥ 1).
    pub steps_per_frame: u32,
    /// Collapse stress test: after every frame, this many near-constant frames
    /// ([`stress_frame`]).
    pub stress: u32,
    /// The state file saved (atomically) whenever new weights are published.
    pub state: Option<PathBuf>,
}

/// What a play gave.
#[derive(Debug, Clone)]
pub struct OfflineReport {
    /// Frames handed to the adapter (stress frames included).
    pub frames: u64,
    /// Mean inference time of the model in use on the listed frames, ms.
    pub mean_infer_ms: f64,
    /// The guards' verdict on the last published weights, checked after the last frame.
    pub final_check: Verdict,
}

/// A near-constant frame: `f`'s mean colour plus uniform integer noise in `[-3, 3]` drawn from
/// `seed`.
pub fn stress_frame(f: &RgbImage, seed: u64) -> RgbImage {
    let n = (f.width() as u64 * f.height() as u64).max(1);
    let mut sum = [0u64; 3];
    for p in f.pixels() {
        for c in 0..3 {
            sum[c] += p[c] as u64;
        }
    }
    let mean = sum.map(|s| (s / n) as i32);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    RgbImage::from_fn(f.width(), f.height(), |_, _| {
        let d: i32 = rng.random_range(-3..=3);
        image::Rgb(mean.map(|m| (m + d).clamp(0, 255) as u8))
    })
}

fn decode(p: &Path) -> Result<RgbImage, RuntimeError> {
    Ok(image::open(p)
        .map_err(|e| RuntimeError::Input {
            path: p.display().to_string(),
            reason: format!("cannot decode the image: {e}"),
        })?
        .to_rgb8())
}

/// Plays `files` through `adapter`, with `seg` running the model: each frame (and its stress
/// frames) is observed and followed by `steps_per_frame` steps; a published plan replaces
/// `seg`'s backend and is saved to the state file. The adaptation's candle work runs on its
/// own pool of `adapter.config().threads`. `progress` is called after each listed frame.
pub fn play(
    adapter: &mut Adapter,
    seg: &mut Segmenter,
    files: &[PathBuf],
    opts: &Offline,
    mut progress: impl FnMut(&Adapter) + Send,
) -> Result<OfflineReport, RuntimeError> {
    let (mut t_infer, mut n_infer, mut frames) = (0.0f64, 0u64, 0u64);
    let threads = adapter.config().threads;
    in_pool(threads, || -> Result<(), RuntimeError> {
        for pass in 0..opts.passes {
            for (i, p) in files.iter().enumerate() {
                let frame = decode(p)?;
                let t0 = std::time::Instant::now();
                seg.logits(&frame)?;
                t_infer += t0.elapsed().as_secs_f64() * 1e3;
                n_infer += 1;
                let stress =
                    (0..opts.stress).map(|k| stress_frame(&frame, (pass as u64) << 40 | (i as u64) << 16 | k as u64));
                for f in std::iter::once(frame.clone()).chain(stress) {
                    frames += 1;
                    adapter.observe(&f)?;
                    for _ in 0..opts.steps_per_frame {
                        if let Some(plan) = adapter.advance()? {
                            seg.set_backend(Box::new(plan));
                            if let Some(s) = &opts.state {
                                state::save(adapter, s)?;
                            }
                        }
                    }
                }
                progress(adapter);
            }
        }
        Ok(())
    })??;
    // the published weights are the last ones that passed the guards
    let final_check = adapter.check()?;
    Ok(OfflineReport {
        frames,
        mean_infer_ms: t_infer / n_infer.max(1) as f64,
        final_check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stress_frames_stay_within_three_of_the_mean_clamped_and_follow_the_seed() {
        // channel means 0 (noise clamped below), 255 (clamped above) and 100
        let f = RgbImage::from_fn(8, 6, |x, _| image::Rgb([0, 255, if x < 4 { 90 } else { 110 }]));
        let a = stress_frame(&f, 7);
        assert_eq!(a.dimensions(), f.dimensions());
        for p in a.pixels() {
            assert!(p[0] <= 3 && p[1] >= 252 && (97..=103).contains(&p[2]), "{p:?}");
        }
        // the noise is there: not every pixel equals the mean
        assert!(a.pixels().any(|p| p[0] > 0) && a.pixels().any(|p| p[2] != 100));
        assert_eq!(a, stress_frame(&f, 7));
        assert_ne!(a, stress_frame(&f, 8));
    }
}
