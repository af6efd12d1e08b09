//! Weak supervision helpers (issue #26): tags derived from masks (`edge-seg-train derive-tags`).

use std::path::Path;

use anyhow::{Context, Result};
use seg_core::tags::{tags_from_mask, teachable, TagFile};

use crate::config::DataConfig;

/// What [`derive_tags`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct TagReport {
    /// Tagged images.
    pub images: usize,
    /// Per class: images tagged with it.
    pub presence: Vec<usize>,
    /// Per class: whether tags can teach it (absent from at least `min_absent` of the images).
    pub teachable: Vec<bool>,
}

impl TagReport {
    /// One line per class: name, images tagged, share, teachable or not.
    pub fn table(&self, names: &[String]) -> String {
        let mut s = String::new();
        for (i, name) in names.iter().enumerate() {
            let p = self.presence[i];
            let share = 100.0 * p as f64 / self.images.max(1) as f64;
            let verdict = if self.teachable[i] {
                "teachable"
            } else if p == 0 {
                "never tagged"
            } else {
                "in (nearly) every image: tags cannot teach it"
            };
            s.push_str(&format!("{name:>12} {p:>5} images {share:>5.1}%  {verdict}\n"));
        }
        s
    }
}

/// Tags every image of `split` (restricted to name `prefixes` when given) with the classes its
/// mask shows on at least `min_pixels` pixels, writes them to `out` (the line format of
/// [`seg_core::tags`], atomically) and reports per class how often it is tagged.
pub fn derive_tags(
    data: &DataConfig,
    split: &str,
    prefixes: &[String],
    min_pixels: u64,
    min_absent: f64,
    out: &Path,
) -> Result<TagReport> {
    anyhow::ensure!(min_pixels > 0, "--min-pixels must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&min_absent),
        "--min-absent {min_absent} must be in [0, 1]"
    );
    let mut ds = seg_core::data::Dataset::open(&data.root, data.layout, split, data.classes.len(), data.ignore_id)?;
    if !prefixes.is_empty() {
        ds.retain(|it| prefixes.iter().any(|p| it.name.starts_with(p.as_str())));
    }
    anyhow::ensure!(
        !ds.is_empty(),
        "{}: no item of '{split}' matches {prefixes:?}",
        data.root.display()
    );
    let n = data.classes.len();
    let mut entries = Vec::with_capacity(ds.len());
    for i in 0..ds.len() {
        let s = ds.load(i)?;
        let mask = s
            .mask
            .with_context(|| format!("{}: no mask to derive tags from", ds.items[i].image.display()))?;
        entries.push((s.name, tags_from_mask(&mask, n, min_pixels)));
    }
    let tags = TagFile::from_entries(entries, n)?;
    seg_core::io::write_atomic(out, tags.to_text(&data.classes).as_bytes())
        .with_context(|| format!("{}: cannot write the tag file", out.display()))?;
    let presence = tags.presence(n);
    Ok(TagReport {
        images: tags.len(),
        teachable: teachable(&presence, tags.len(), min_absent),
        presence,
    })
}
