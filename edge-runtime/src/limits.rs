//! Every bound on a size or count that comes from outside — stream headers, flags, model
//! metadata and graphs, config files — in one place (issue #23). Each is checked before anything
//! is allocated from it, and the error names where the value came from and the limit.
//!
//! Graph-level bounds that the quantizer shares live beside its validation
//! ([`edge_seg_quantize::prepare::MAX_RESIZE_SCALE`], [`edge_seg_quantize::prepare::MAX_RESIZE_ELEMENTS`]).

/// Largest frame side from a stream header, `--size` or a camera (8K is 7680).
pub const MAX_FRAME_SIDE: u32 = 8192;
/// Largest single encoded frame read from a stream (guards against reading garbage forever).
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// Largest network input side, from a graph, metadata or `--input-size`.
pub const MAX_INPUT_SIDE: u32 = 8192;
/// Most classes (label masks are 8-bit).
pub const MAX_CLASSES: usize = seg_core::classes::MAX_CLASSES;
/// Most threads of any pool (`--threads`, `threads` of the adaptation config).
pub const MAX_THREADS: usize = 256;
/// Most memory one set of buffers sized from outside values may imply (the adaptation's frame
/// ring and held frames, its negative bank).
pub const MAX_BUFFER_BYTES: u64 = 2 << 30;
/// `--pace` range, frames per second.
pub const PACE_FPS: std::ops::RangeInclusive<f64> = 0.01..=1000.0;

/// `n` threads checked against [`MAX_THREADS`]; `source` names the flag or key.
pub fn check_threads(n: usize, source: &str) -> Result<(), String> {
    if n == 0 || n > MAX_THREADS {
        return Err(format!("{source} = {n}: threads must be in 1..={MAX_THREADS}"));
    }
    Ok(())
}

/// Memory `bytes` implied by `what` checked against [`MAX_BUFFER_BYTES`].
pub fn check_memory(bytes: u128, what: &str) -> Result<(), String> {
    if bytes > MAX_BUFFER_BYTES as u128 {
        return Err(format!(
            "{what} would need {:.1} GiB (limit {} GiB)",
            bytes as f64 / (1u64 << 30) as f64,
            MAX_BUFFER_BYTES >> 30
        ));
    }
    Ok(())
}

/// A `--pace` value checked against [`PACE_FPS`].
pub fn check_pace(fps: f64) -> Result<f64, String> {
    if !PACE_FPS.contains(&fps) {
        return Err(format!(
            "{fps}: frames per second must be in {}..={}",
            PACE_FPS.start(),
            PACE_FPS.end()
        ));
    }
    Ok(fps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue23_limits_name_the_source_and_the_bound() {
        assert!(check_threads(4, "--threads").is_ok());
        let e = check_threads(100_000, "--threads").unwrap_err();
        assert!(e.contains("--threads") && e.contains("256"), "{e}");
        assert!(check_threads(0, "threads").is_err());
        assert!(check_memory(1 << 20, "x").is_ok());
        let e = check_memory(30 << 40, "the adaptation ring").unwrap_err();
        assert!(e.contains("adaptation ring") && e.contains("GiB"), "{e}");
        assert!(check_pace(30.0).is_ok());
        assert!(check_pace(0.0000001).is_err() && check_pace(f64::NAN).is_err());
    }
}
