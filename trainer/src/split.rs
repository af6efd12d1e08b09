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
    let mut pool = Vec::new();
    crate::data::each_mask(data, split, prefixes, "to split by", |name, mask| {
        pool.push((name, class_histogram(mask, data.classes.len())))
    })?;
    let n = ((ratio * pool.len() as f64).round() as usize).max(1);
    let (l, u) = make_split(&pool, n, seed)?;
    write_split(out, &l, &u).with_context(|| format!("{}: cannot write split", out.display()))?;
    Ok((l.len(), u.len()))
}

/// The target-scene split of the `xseq-target` protocol (issue #25): the items of `split` whose
/// name starts with `prefix` (one drive), in name order (= time order for CamVid); the first
/// `adapt` become unlabeled frames of the scene (`target.txt`, images only), the rest the
/// evaluation frames (`eval.txt`), never trained on. For each labeled list in `labeled`
/// (`…/<ratio>/<seed>/labeled.txt`) it also writes the target oracle's labeled list,
/// `out/oracle/<ratio>/<seed>/labeled.txt` = that list + the target frames (with their labels).
/// Returns `(target, eval)` counts.
pub fn target(
    data: &DataConfig,
    split: &str,
    prefix: &str,
    adapt: usize,
    labeled: &[std::path::PathBuf],
    out: &Path,
) -> Result<(usize, usize)> {
    let mut ds = seg_core::data::Dataset::open(&data.root, data.layout, split, data.classes.len(), data.ignore_id)?;
    ds.retain(|it| it.name.starts_with(prefix));
    let mut names: Vec<String> = ds.items.iter().map(|it| it.name.clone()).collect();
    names.sort();
    anyhow::ensure!(
        adapt >= 1 && adapt < names.len(),
        "--adapt {adapt}: '{prefix}' has {} frames in '{split}'; keep at least one for evaluation",
        names.len()
    );
    let (target, eval) = names.split_at(adapt);
    let list = |names: &[String]| names.iter().map(|n| format!("{n}\n")).collect::<String>();
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    for (file, names) in [("target.txt", target), ("eval.txt", eval)] {
        let path = out.join(file);
        seg_core::io::write_atomic(&path, list(names).as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    for l in labeled {
        let text = std::fs::read_to_string(l).with_context(|| format!("--labeled {}: cannot read", l.display()))?;
        let mut oracle: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        anyhow::ensure!(!oracle.is_empty(), "--labeled {}: empty list", l.display());
        if let Some(n) = oracle.iter().find(|n| target.contains(n) || eval.contains(n)) {
            anyhow::bail!("--labeled {}: {n} belongs to the target drive '{prefix}'", l.display());
        }
        oracle.extend(target.iter().cloned());
        let parts: Vec<&std::ffi::OsStr> = l.parent().into_iter().flat_map(|p| p.iter()).collect();
        anyhow::ensure!(
            parts.len() >= 2,
            "--labeled {}: expected a path like <ratio>/<seed>/labeled.txt",
            l.display()
        );
        let dir = out
            .join("oracle")
            .join(parts[parts.len() - 2])
            .join(parts[parts.len() - 1]);
        std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        let path = dir.join("labeled.txt");
        seg_core::io::write_atomic(&path, list(&oracle).as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok((target.len(), eval.len()))
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
