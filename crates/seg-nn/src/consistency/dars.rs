//! DARS per-class thresholds (He et al., ICCV 2021).

use rand::seq::SliceRandom;
use rand::Rng;

/// The outcome of [`dars_select`].
#[derive(Debug, Clone, PartialEq)]
pub struct DarsSelection {
    /// Per pixel: selected as a pseudo-label.
    pub selected: Vec<bool>,
    /// Per class: the confidence threshold (`+∞` when the class gets no pixel).
    pub thresholds: Vec<f32>,
    /// Per class: pixels selected.
    pub counts: Vec<usize>,
}

/// DARS (He et al., ICCV 2021) per-class thresholds: of the `budget` pseudo-labels, class `c`
/// gets `n_c = min(round(budget · target_c / Σ target), #pixels predicted c)`, the `n_c` most
/// confident pixels whose pseudo-label is `c`. The threshold `t_c` is the `n_c`-th highest such
/// confidence: every pixel above it is selected, and among the pixels tied at `t_c` the ones
/// still needed are drawn at random from `rng`.
///
/// `conf`, `labels`, `valid`: per pixel (same length); `target`: per class (any non-negative
/// weights, e.g. the labeled set's class frequencies).
pub fn dars_select(
    conf: &[f32],
    labels: &[u32],
    valid: &[bool],
    target: &[f64],
    budget: usize,
    rng: &mut impl Rng,
) -> DarsSelection {
    let nc = target.len();
    let total: f64 = target.iter().filter(|v| v.is_finite() && **v > 0.0).sum();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); nc];
    for (i, (&l, &v)) in labels.iter().zip(valid).enumerate() {
        if v && (l as usize) < nc {
            by_class[l as usize].push(i);
        }
    }
    let mut selected = vec![false; conf.len()];
    let mut thresholds = vec![f32::INFINITY; nc];
    let mut counts = vec![0; nc];
    for (c, mut idx) in by_class.into_iter().enumerate() {
        let share = if total > 0.0 && target[c] > 0.0 {
            target[c] / total
        } else {
            0.0
        };
        let want = ((budget as f64 * share).round() as usize).min(idx.len());
        if want == 0 {
            continue;
        }
        idx.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]));
        let t = conf[idx[want - 1]];
        let above: Vec<usize> = idx.iter().copied().filter(|&i| conf[i] > t).collect();
        let mut tied: Vec<usize> = idx.iter().copied().filter(|&i| conf[i] == t).collect();
        tied.shuffle(rng);
        for &i in above.iter().chain(&tied[..want - above.len()]) {
            selected[i] = true;
        }
        thresholds[c] = t;
        counts[c] = want;
    }
    DarsSelection {
        selected,
        thresholds,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn dars_thresholds_reproduce_the_target_distribution_with_random_ties() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // 3 classes predicted on 3000 pixels; confidences quantised to 0.05 steps: many ties
        let n = 3000;
        let labels: Vec<u32> = (0..n).map(|i| [0, 0, 0, 1, 1, 2][i % 6]).collect();
        let conf: Vec<f32> = (0..n).map(|_| (rng.random_range(6..20) as f32) * 0.05).collect();
        let mut valid = vec![true; n];
        valid[5] = false;
        let target = [0.2, 0.3, 0.5]; // labeled set: class 2 most frequent
        let budget = 900;
        let s1 = dars_select(
            &conf,
            &labels,
            &valid,
            &target,
            budget,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        assert_eq!(s1.counts, [180, 270, 450]);
        for c in 0..3 {
            let sel: Vec<usize> = (0..n).filter(|&i| s1.selected[i] && labels[i] == c as u32).collect();
            assert_eq!(sel.len(), s1.counts[c]);
            let t = s1.thresholds[c];
            // everything above the threshold is in, nothing below
            for i in 0..n {
                if valid[i] && labels[i] == c as u32 {
                    if conf[i] > t {
                        assert!(s1.selected[i]);
                    }
                    if conf[i] < t {
                        assert!(!s1.selected[i]);
                    }
                }
            }
            // the threshold cuts through a tie (quantised confidences)
            let tied = (0..n)
                .filter(|&i| valid[i] && labels[i] == c as u32 && conf[i] == t)
                .count();
            let tied_in = sel.iter().filter(|&&i| conf[i] == t).count();
            assert!(tied_in < tied, "class {c}: no tie at the threshold to sample from");
        }
        assert!(!s1.selected[5], "an invalid pixel was selected");
        // ties are sampled: another seed picks other tied pixels, same counts and thresholds
        let s2 = dars_select(
            &conf,
            &labels,
            &valid,
            &target,
            budget,
            &mut ChaCha8Rng::seed_from_u64(2),
        );
        assert_eq!(
            (s2.counts.clone(), s2.thresholds.clone()),
            (s1.counts.clone(), s1.thresholds.clone())
        );
        assert_ne!(s1.selected, s2.selected);
        // a class with too few predicted pixels gives all it has
        let s = dars_select(&conf, &labels, &valid, &[0.0, 0.0, 1.0], 5000, &mut rng);
        assert_eq!(s.counts, [0, 0, 499]); // 500 predicted, one invalid
        assert_eq!(s.thresholds[0], f32::INFINITY);
    }
}
