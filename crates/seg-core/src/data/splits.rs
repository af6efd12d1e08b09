//! Class-balanced labeled/unlabeled splits for semi-supervised training, and their files.
//!
//! [`make_split`] is deterministic: the same pool (in any order) and seed always give the same
//! split. [`write_split`] stores it as `labeled.txt` / `unlabeled.txt`, one item name per line,
//! which [`crate::data::Dataset::open`] reads back as split-list files.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use image::GrayImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Why a split cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// More labeled items asked for than the pool holds.
    #[error("cannot pick {n_labeled} labeled items from a pool of {pool}")]
    TooMany {
        /// Items asked for.
        n_labeled: usize,
        /// Pool size.
        pool: usize,
    },
    /// Two pool entries share a name.
    #[error("duplicate item name '{0}' in the split pool")]
    Duplicate(String),
    /// Histograms of different lengths.
    #[error("item '{name}' has {got} class counts, expected {expected} like the first item")]
    ClassCountMismatch {
        /// The item.
        name: String,
        /// Its histogram length.
        got: usize,
        /// The first item's histogram length.
        expected: usize,
    },
    /// Covering every class present in the pool takes more items than asked for.
    #[error(
        "{n_labeled} labeled items cannot cover all {classes} classes present in the pool \
         (the greedy cover needs {needed})"
    )]
    CannotCover {
        /// Items asked for.
        n_labeled: usize,
        /// Classes present in the pool.
        classes: usize,
        /// Items the greedy cover used.
        needed: usize,
    },
}

/// Pixel count of each class id `0..num_classes` in `mask`; other values (void) are skipped.
pub fn class_histogram(mask: &GrayImage, num_classes: usize) -> Vec<u64> {
    let mut all = [0u64; 256];
    for &v in mask.iter() {
        all[v as usize] += 1;
    }
    let mut hist = all[..num_classes.min(256)].to_vec();
    hist.resize(num_classes, 0);
    hist
}

/// Picks `n_labeled` items of `pool` (name, per-class pixel counts) to label.
///
/// Every class that occurs anywhere in the pool occurs in the labeled part: classes are
/// covered greedily, rarest first (fewest items containing it), each time taking the item
/// with that class that covers the most still-uncovered classes (ties broken by the seeded
/// RNG). The remaining places are filled with a seeded random choice. Returns
/// `(labeled, unlabeled)` names, each sorted; together they are exactly the pool.
///
/// The result depends only on the pool's contents and `seed`, not on the pool's order.
pub fn make_split(
    pool: &[(String, Vec<u64>)],
    n_labeled: usize,
    seed: u64,
) -> Result<(Vec<String>, Vec<String>), SplitError> {
    if n_labeled > pool.len() {
        return Err(SplitError::TooMany {
            n_labeled,
            pool: pool.len(),
        });
    }
    let num_classes = pool.first().map_or(0, |(_, h)| h.len());
    let mut seen = HashSet::with_capacity(pool.len());
    for (name, hist) in pool {
        if !seen.insert(name.as_str()) {
            return Err(SplitError::Duplicate(name.clone()));
        }
        if hist.len() != num_classes {
            return Err(SplitError::ClassCountMismatch {
                name: name.clone(),
                got: hist.len(),
                expected: num_classes,
            });
        }
    }
    // Work in name order so the pool's order does not matter.
    let mut order: Vec<usize> = (0..pool.len()).collect();
    order.sort_by(|&a, &b| pool[a].0.cmp(&pool[b].0));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    // How many items contain each class (rarity), and total pixels for tie-breaking.
    let mut items_with = vec![0usize; num_classes];
    let mut pixels = vec![0u64; num_classes];
    for (_, hist) in pool {
        for (c, &n) in hist.iter().enumerate() {
            if n > 0 {
                items_with[c] += 1;
                pixels[c] += n;
            }
        }
    }
    let mut uncovered: Vec<usize> = (0..num_classes).filter(|&c| items_with[c] > 0).collect();
    let classes_present = uncovered.len();
    // Rarest first; stable order for equal rarity.
    uncovered.sort_by_key(|&c| (items_with[c], pixels[c], c));

    let mut chosen = vec![false; pool.len()];
    let mut labeled = Vec::with_capacity(n_labeled);
    while let Some(&rarest) = uncovered.first() {
        let mut candidates: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| !chosen[i] && pool[i].1[rarest] > 0)
            .collect();
        candidates.shuffle(&mut rng);
        let covers = |i: usize| uncovered.iter().filter(|&&c| pool[i].1[c] > 0).count();
        // First maximum in shuffled order: ties are broken by the RNG. `rarest` is uncovered,
        // so some unchosen item contains it and `candidates` is never empty.
        let Some(best) = candidates
            .iter()
            .copied()
            .fold(None, |best: Option<(usize, usize)>, i| {
                let n = covers(i);
                match best {
                    Some((_, bn)) if bn >= n => best,
                    _ => Some((i, n)),
                }
            })
            .map(|(i, _)| i)
        else {
            break;
        };
        chosen[best] = true;
        labeled.push(best);
        uncovered.retain(|&c| pool[best].1[c] == 0);
    }
    if labeled.len() > n_labeled {
        return Err(SplitError::CannotCover {
            n_labeled,
            classes: classes_present,
            needed: labeled.len(),
        });
    }
    // Fill the rest at random.
    let mut rest: Vec<usize> = order.iter().copied().filter(|&i| !chosen[i]).collect();
    rest.shuffle(&mut rng);
    let fill = n_labeled - labeled.len();
    for &i in &rest[..fill] {
        chosen[i] = true;
    }
    let mut lab: Vec<String> = Vec::with_capacity(n_labeled);
    let mut unl: Vec<String> = Vec::with_capacity(pool.len() - n_labeled);
    for &i in &order {
        if chosen[i] {
            lab.push(pool[i].0.clone());
        } else {
            unl.push(pool[i].0.clone());
        }
    }
    // `order` is name-sorted, so both lists already are.
    debug_assert!(lab.is_sorted() && unl.is_sorted());
    Ok((lab, unl))
}

/// Writes `dir/labeled.txt` and `dir/unlabeled.txt` (one name per line, each file replaced
/// atomically), creating `dir` if needed. Names containing a line break are rejected.
pub fn write_split(dir: &Path, labeled: &[String], unlabeled: &[String]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, names) in [("labeled.txt", labeled), ("unlabeled.txt", unlabeled)] {
        let mut text = String::new();
        for name in names {
            if name.contains(['\n', '\r']) || name.trim().is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: invalid item name {name:?}", dir.join(file).display()),
                ));
            }
            text.push_str(name);
            text.push('\n');
        }
        crate::io::write_atomic(&dir.join(file), text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    /// 40 items over 6 classes; class 5 appears in one item only, class 4 in two.
    fn pool() -> Vec<(String, Vec<u64>)> {
        (0..40)
            .map(|i| {
                let mut h = vec![0u64; 6];
                h[0] = 100 + i as u64;
                h[1] = if i % 2 == 0 { 50 } else { 0 };
                h[2] = if i % 3 == 0 { 20 } else { 0 };
                h[3] = if i % 7 == 0 { 5 } else { 0 };
                h[4] = if i == 13 || i == 29 { 3 } else { 0 };
                h[5] = if i == 37 { 1 } else { 0 };
                (format!("item_{i:02}.png"), h)
            })
            .collect()
    }

    fn classes_of(pool: &[(String, Vec<u64>)], names: &[String]) -> HashSet<usize> {
        pool.iter()
            .filter(|(n, _)| names.contains(n))
            .flat_map(|(_, h)| h.iter().enumerate().filter(|(_, &v)| v > 0).map(|(c, _)| c))
            .collect()
    }

    #[test]
    fn labeled_part_covers_every_class() {
        let p = pool();
        for n in [3, 4, 10, 40] {
            for seed in 0..5 {
                let (lab, unl) = make_split(&p, n, seed).unwrap();
                assert_eq!(lab.len(), n);
                assert_eq!(classes_of(&p, &lab).len(), 6, "n={n} seed={seed}");
                assert!(lab.contains(&"item_37.png".to_string()));
                // Disjoint and complete.
                let mut all: Vec<String> = lab.iter().chain(&unl).cloned().collect();
                all.sort();
                let mut want: Vec<String> = p.iter().map(|(n, _)| n.clone()).collect();
                want.sort();
                assert_eq!(all, want);
                assert!(lab.is_sorted() && unl.is_sorted());
            }
        }
    }

    #[test]
    fn deterministic_and_order_independent() {
        let p = pool();
        let a = make_split(&p, 8, 42).unwrap();
        assert_eq!(a, make_split(&p, 8, 42).unwrap());
        let mut rev = p.clone();
        rev.reverse();
        assert_eq!(a, make_split(&rev, 8, 42).unwrap());
        let others = (0..10).filter(|&s| make_split(&p, 8, s).unwrap() != a).count();
        assert!(others > 0, "the seed has no effect");
    }

    #[test]
    fn errors() {
        let p = pool();
        assert!(matches!(make_split(&p, 41, 0), Err(SplitError::TooMany { .. })));
        // Classes 4 and 5 live in different items (plus the others): one item is not enough.
        assert!(matches!(make_split(&p, 1, 0), Err(SplitError::CannotCover { .. })));
        let mut dup = p.clone();
        dup.push(p[0].clone());
        assert!(matches!(make_split(&dup, 5, 0), Err(SplitError::Duplicate(_))));
        let mut bad = p.clone();
        bad[3].1.pop();
        assert!(matches!(
            make_split(&bad, 5, 0),
            Err(SplitError::ClassCountMismatch { .. })
        ));
        assert_eq!(make_split(&[], 0, 0).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn histogram_skips_void() {
        let m = GrayImage::from_fn(4, 2, |x, _| Luma([[0, 2, 255, 11][x as usize]]));
        assert_eq!(class_histogram(&m, 11), vec![2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(class_histogram(&m, 12)[11], 2);
        assert_eq!(class_histogram(&m, 300).len(), 300);
    }

    #[test]
    fn split_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("splits/seed0");
        let lab = vec!["a.png".to_string(), "b.png".to_string()];
        let unl = vec!["c.png".to_string()];
        write_split(&out, &lab, &unl).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("labeled.txt")).unwrap(),
            "a.png\nb.png\n"
        );
        assert_eq!(std::fs::read_to_string(out.join("unlabeled.txt")).unwrap(), "c.png\n");
        let bad = vec!["x\ny".to_string()];
        assert!(write_split(&out, &bad, &unl).is_err());
    }
}
