//! Class weights for the weighted cross-entropy (`optim.class_weights`) from a split's masks:
//! median-frequency balancing (Eigen & Fergus 2015; SegNet's CamVid weights), optionally
//! softened by a power.
//!
//! `freq(c)` = pixels of class `c` / all pixels of the images in which `c` appears;
//! `w(c) = (median_c freq(c) / freq(c))^power`. Ignored pixels count in the image's pixels but in
//! no class, as in SegNet's weights (the CamVid README's values are reproduced to 4 decimals).

use anyhow::{ensure, Context, Result};

use crate::config::DataConfig;

/// Per-class pixel counts of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCounts {
    /// Pixels of each class.
    pub pixels: Vec<u64>,
    /// All pixels (ignored ones included) of the images in which each class appears.
    pub image_pixels: Vec<u64>,
    /// Images in which each class appears.
    pub images: Vec<usize>,
    /// Images counted.
    pub total_images: usize,
}

impl ClassCounts {
    /// Counts from `(mask pixels, classes)` pairs: every mask value `< classes` is a class id,
    /// anything else is ignored.
    pub fn from_masks<'a>(masks: impl IntoIterator<Item = &'a [u8]>, classes: usize) -> Self {
        let mut c = Self {
            pixels: vec![0; classes],
            image_pixels: vec![0; classes],
            images: vec![0; classes],
            total_images: 0,
        };
        let mut per = vec![0u64; classes];
        for mask in masks {
            per.iter_mut().for_each(|v| *v = 0);
            for &v in mask {
                if let Some(p) = per.get_mut(v as usize) {
                    *p += 1;
                }
            }
            for (k, &n) in per.iter().enumerate() {
                if n > 0 {
                    c.pixels[k] += n;
                    c.image_pixels[k] += mask.len() as u64;
                    c.images[k] += 1;
                }
            }
            c.total_images += 1;
        }
        c
    }

    /// Median-frequency weights raised to `power` (1 = SegNet's, 0.5 = their square root, 0 = all
    /// ones); an error naming the class (`names[k]`, or its id) when a class never appears (its
    /// weight would be infinite).
    pub fn median_frequency_weights(&self, power: f64, names: &[String]) -> Result<Vec<f64>> {
        ensure!(
            power.is_finite() && (0.0..=2.0).contains(&power),
            "--power {power}: expected a number in 0..=2"
        );
        let freq: Vec<f64> = self
            .pixels
            .iter()
            .zip(&self.image_pixels)
            .enumerate()
            .map(|(k, (&p, &all))| {
                let name = names.get(k).cloned().unwrap_or_else(|| format!("class {k}"));
                ensure!(p > 0, "{name} has no pixel in the split: its weight would be infinite");
                Ok(p as f64 / all as f64)
            })
            .collect::<Result<_>>()?;
        let mut sorted = freq.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        Ok(freq.iter().map(|f| (median / f).powf(power)).collect())
    }
}

/// Counts the classes of a split's masks (`prefixes` as in the other tools).
pub fn count(data: &DataConfig, split: &str, prefixes: &[String]) -> Result<ClassCounts> {
    let ds = crate::data::open_prefixed(data, split, prefixes)?;
    let mut masks = Vec::with_capacity(ds.len());
    for i in 0..ds.len() {
        let s = ds.load(i)?;
        let mask = s
            .mask
            .with_context(|| format!("{}: no mask to count classes in", ds.items[i].image.display()))?;
        masks.push(mask.into_raw());
    }
    Ok(ClassCounts::from_masks(
        masks.iter().map(Vec::as_slice),
        data.classes.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_frequency_by_hand() {
        // class 0 in both images (4 + 2 of 8 pixels), class 1 in the first (2 of 4), class 2 in
        // the second (1 of 4); 255 is ignored
        let a = [0u8, 0, 1, 1];
        let b = [0u8, 0, 2, 255];
        let c = ClassCounts::from_masks([&a[..], &b[..]], 3);
        assert_eq!(c.pixels, vec![4, 2, 1]);
        assert_eq!(c.image_pixels, vec![8, 4, 4]);
        assert_eq!(c.images, vec![2, 1, 1]);
        // freq 0.5, 0.5, 0.25: median 0.5
        let w = c.median_frequency_weights(1.0, &[]).unwrap();
        assert_eq!(w, vec![1.0, 1.0, 2.0]);
        let w = c.median_frequency_weights(0.5, &[]).unwrap();
        assert!((w[2] - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(c.median_frequency_weights(0.0, &[]).unwrap(), vec![1.0; 3]);
    }

    #[test]
    fn absent_class_and_bad_power_are_errors() {
        let a = [0u8, 0, 1, 1];
        let c = ClassCounts::from_masks([&a[..]], 3);
        let e = c.median_frequency_weights(1.0, &[]).unwrap_err().to_string();
        assert!(e.contains("class 2"), "{e}");
        let names = ["a".to_string(), "b".into(), "c".into()];
        let e = c.median_frequency_weights(1.0, &names).unwrap_err().to_string();
        assert!(e.starts_with("c has no pixel"), "{e}");
        let c = ClassCounts::from_masks([&a[..]], 2);
        assert!(c.median_frequency_weights(f64::NAN, &[]).is_err());
        assert!(c.median_frequency_weights(-1.0, &[]).is_err());
    }
}
