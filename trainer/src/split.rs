//! Labeled/unlabeled split generation (`edge-seg-train split`).

use std::path::Path;

use anyhow::{Context, Result};
use seg_core::data::splits::{class_histogram, make_split, write_split};

use crate::config::DataConfig;

/// Parses `1/8`, `0.125` or `8` (meaning 1/8) into a fraction.
pub fn parse_ratio(s: &str) -> Result<f64> {
    let r = match s.split_once('/') {
        Some((a, b)) => a.trim().parse::<f64>()? / b.trim().parse::<f64>()?,
        None => {
            let v: f64 = s.trim().parse()?;
            if v > 1.0 {
                1.0 / v
            } else {
                v
            }
        }
    };
    anyhow::ensure!(r > 0.0 && r <= 1.0 && r.is_finite(), "ratio '{s}' must be in (0, 1]");
    Ok(r)
}

/// Builds a split of the training pool that covers every class (optionally restricted to name
/// prefixes) with `round(ratio · pool)` labeled items, and writes
/// `out/{labeled,unlabeled}.txt`. Returns `(labeled, unlabeled)` counts.
pub fn run(
    data: &DataConfig,
    split: &str,
    prefixes: &[String],
    ratio: f64,
    seed: u64,
    out: &Path,
) -> Result<(usize, usize)> {
    let mut ds = seg_core::data::Dataset::open(&data.root, data.layout, split, data.classes.len(), data.ignore_id)?;
    if !prefixes.is_empty() {
        ds.retain(|it| prefixes.iter().any(|p| it.name.starts_with(p.as_str())));
    }
    anyhow::ensure!(
        !ds.is_empty(),
        "{}: no item of '{split}' matches {prefixes:?}",
        data.root.display()
    );
    let mut pool = Vec::with_capacity(ds.len());
    for i in 0..ds.len() {
        let s = ds.load(i)?;
        let mask = s
            .mask
            .with_context(|| format!("{}: no mask", ds.items[i].image.display()))?;
        pool.push((s.name, class_histogram(&mask, data.classes.len())));
    }
    let n = ((ratio * pool.len() as f64).round() as usize).max(1);
    let (l, u) = make_split(&pool, n, seed)?;
    write_split(out, &l, &u).with_context(|| format!("{}: cannot write split", out.display()))?;
    Ok((l.len(), u.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios() {
        assert_eq!(parse_ratio("1/8").unwrap(), 0.125);
        assert_eq!(parse_ratio("16").unwrap(), 1.0 / 16.0);
        assert_eq!(parse_ratio("0.5").unwrap(), 0.5);
        assert!(parse_ratio("0").is_err());
        assert!(parse_ratio("x").is_err());
    }
}
