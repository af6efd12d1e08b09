//! Class weights for the weighted cross-entropy (`optim.class_weights`) from a split's masks:
//! median-frequency balancing (Eigen & Fergus 2015; SegNet's CamVid weights), optionally
//! softened by a power.
//!
//! `freq(c)` = pixels of class `c` / all pixels of the images in which `c` appears;
//! `w(c) = (median_c freq(c) / freq(c))^power`. Ignored pixels count in the image's pixels but in
//! no class, as in SegNet's weights (the CamVid README's values are reproduced to 4 decimals).

use anyhow::{ensure, Result};
use image::GrayImage;
use seg_core::data::splits::class_histogram;

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
    /// No image counted yet, for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            pixels: vec![0; classes],
            image_pixels: vec![0; classes],
            images: vec![0; classes],
            total_images: 0,
        }
    }

    /// Adds one mask: class ids `0..classes` count, anything else (void) only in its pixels.
    pub fn add(&mut self, mask: &GrayImage) {
        let hist = class_histogram(mask, self.pixels.len());
        let all = mask.as_raw().len() as u64;
        for (k, &n) in hist.iter().enumerate().filter(|(_, &n)| n > 0) {
            self.pixels[k] += n;
            self.image_pixels[k] += all;
            self.images[k] += 1;
        }
        self.total_images += 1;
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
    let mut counts = ClassCounts::new(data.classes.len());
    crate::data::each_mask(data, split, prefixes, "to count classes in", |_, mask| counts.add(mask))?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts of 4×1 masks.
    fn counts(masks: &[&[u8; 4]], classes: usize) -> ClassCounts {
        let mut c = ClassCounts::new(classes);
        for m in masks {
            c.add(&GrayImage::from_raw(4, 1, m.to_vec()).unwrap());
        }
        c
    }

    #[test]
    fn median_frequency_by_hand() {
        // class 0 in both images (4 + 2 of 8 pixels), class 1 in the first (2 of 4), class 2 in
        // the second (1 of 4); 255 is ignored
        let c = counts(&[&[0, 0, 1, 1], &[0, 0, 2, 255]], 3);
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
        let c = counts(&[&[0, 0, 1, 1]], 3);
        let e = c.median_frequency_weights(1.0, &[]).unwrap_err().to_string();
        assert!(e.contains("class 2"), "{e}");
        let names = ["a".to_string(), "b".into(), "c".into()];
        let e = c.median_frequency_weights(1.0, &names).unwrap_err().to_string();
        assert!(e.starts_with("c has no pixel"), "{e}");
        let c = counts(&[&[0, 0, 1, 1]], 2);
        assert!(c.median_frequency_weights(f64::NAN, &[]).is_err());
        assert!(c.median_frequency_weights(-1.0, &[]).is_err());
    }
}
