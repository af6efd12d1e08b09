//! Segmentation metrics over a confusion matrix.

use crate::IGNORE;

/// A `n × n` confusion matrix, rows = ground truth, columns = prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    n: usize,
    counts: Vec<u64>,
    /// Per ground-truth class: pixels predicted as an id outside `0..n`.
    out_of_range: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix for `n` classes.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            counts: vec![0; n * n],
            out_of_range: vec![0; n],
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.n
    }

    /// Adds one image: `target` pixels equal to [`IGNORE`] are skipped. Predictions outside
    /// `0..n` count as misses of their ground-truth class.
    pub fn update(&mut self, pred: &[u8], target: &[u8]) {
        assert_eq!(pred.len(), target.len(), "prediction and target sizes differ");
        for (&p, &t) in pred.iter().zip(target) {
            if t == IGNORE || t as usize >= self.n {
                continue;
            }
            if (p as usize) < self.n {
                self.counts[t as usize * self.n + p as usize] += 1;
            } else {
                self.out_of_range[t as usize] += 1;
            }
        }
    }

    /// Adds another matrix.
    pub fn merge(&mut self, other: &ConfusionMatrix) {
        assert_eq!(self.n, other.n);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        for (a, b) in self.out_of_range.iter_mut().zip(&other.out_of_range) {
            *a += b;
        }
    }

    /// The count of (ground truth `t`, prediction `p`).
    pub fn get(&self, t: usize, p: usize) -> u64 {
        self.counts[t * self.n + p]
    }

    /// IoU per class; `None` for a class that appears neither in targets nor predictions.
    pub fn iou(&self) -> Vec<Option<f64>> {
        (0..self.n)
            .map(|c| {
                let tp = self.get(c, c);
                let row: u64 = (0..self.n).map(|p| self.get(c, p)).sum::<u64>() + self.out_of_range[c];
                let col: u64 = (0..self.n).map(|t| self.get(t, c)).sum();
                let union = row + col - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over the classes that have a defined IoU (0 when none has).
    pub fn miou(&self) -> f64 {
        let v: Vec<f64> = self.iou().into_iter().flatten().collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    /// Fraction of labelled pixels predicted correctly.
    pub fn pixel_accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().sum::<u64>() + self.out_of_range.iter().sum::<u64>();
        let correct: u64 = (0..self.n).map(|c| self.get(c, c)).sum();
        if total == 0 {
            0.0
        } else {
            correct as f64 / total as f64
        }
    }

    /// CSV with a header row of class names: rows = ground truth, columns = prediction.
    pub fn to_csv(&self, names: &[String]) -> String {
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("class{i}"));
        let mut s = String::from("gt\\pred");
        for p in 0..self.n {
            s.push(',');
            s.push_str(&name(p));
        }
        s.push('\n');
        for t in 0..self.n {
            s.push_str(&name(t));
            for p in 0..self.n {
                s.push_str(&format!(",{}", self.get(t, p)));
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miou_by_hand() {
        let mut m = ConfusionMatrix::new(3);
        // gt:   0 0 1 1 2 ignore
        // pred: 0 1 1 1 0 2
        m.update(&[0, 1, 1, 1, 0, 2], &[0, 0, 1, 1, 2, IGNORE]);
        let iou = m.iou();
        // class 0: tp 1, row 2, col 2 -> 1/3 ; class 1: tp 2, row 2, col 3 -> 2/3 ; class 2: tp 0 row 1 col 0 -> 0
        assert!((iou[0].unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((iou[1].unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(iou[2], Some(0.0));
        assert!((m.miou() - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.pixel_accuracy() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn absent_class_is_excluded() {
        let mut m = ConfusionMatrix::new(3);
        m.update(&[0, 1], &[0, 1]);
        assert_eq!(m.iou()[2], None);
        assert_eq!(m.miou(), 1.0);
        let csv = m.to_csv(&["a".into(), "b".into(), "c".into()]);
        assert!(csv.starts_with("gt\\pred,a,b,c\na,1,0,0\n"));
    }
}
