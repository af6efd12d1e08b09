//! Dataset folders: CamVid, PASCAL-VOC and Cityscapes-style layouts, and split-list files.
//!
//! [`Dataset::open`] only lists files; [`Dataset::load`] decodes one item and validates it
//! (decodable, mask present and of the image's size, every label id known). Loaded masks hold
//! train ids `0..num_classes` and [`crate::IGNORE`] for void, whatever the file's own void id.
//!
//! # Layouts
//! - [`Layout::Camvid`]: `<root>/<split>/*.png` and `<root>/<split>annot/<same name>`; mask
//!   values are class ids, the void id is usually 11. Item name: the file name
//!   (`0001TP_006690.png`).
//! - [`Layout::Voc`]: `<root>/JPEGImages/<id>.jpg`, `<root>/SegmentationClass/<id>.png`
//!   (paletted PNG whose palette *indices* are the class ids, 255 = border/void) and the split
//!   list `<root>/ImageSets/Segmentation/<split>.txt`. Item name: the id (`2007_000032`).
//! - [`Layout::Cityscapes`]: `<root>/leftImg8bit/<split>/<city>/<x>_leftImg8bit.png` and
//!   `<root>/gtFine/<split>/<city>/<x>_gtFine_labelIds.png`; label ids are mapped to the 19
//!   standard train ids ([`CITYSCAPES_TRAIN_IDS`]), all other ids are void. Item name: `<x>`.
//!
//! # Split-list files
//! Instead of a split name, `split` may name a text file (any argument containing a path
//! separator or an extension, looked up as given and then relative to the root). One entry per
//! line: a file name or id (`0001TP_006690.png`, `0001TP_006690`, `2007_000032`,
//! `aachen_000000_000019_leftImg8bit.png`), or a CamVid-style `<image path> <label path>` line
//! whose first column's base name is used (its folders, e.g. `train`, pick the split when a
//! name occurs in several). Blank lines and lines starting with `#` are skipped. Items keep the
//! list's order.
//!
//! The code, by job: [`Layout`] and the Cityscapes id table (`layout`), [`DataError`] (`error`),
//! listing a split's items from folders or split-list files (`listing`), and decoding and
//! validating one item (`load`: [`Dataset::load`], mask mapping).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};

mod error;
mod layout;
mod listing;
mod load;

pub use error::DataError;
pub use layout::{cityscapes_train_id, Layout, ParseLayoutError, CITYSCAPES_TRAIN_IDS};

use listing::{items_from_list, resolve_list_path, scan_split};

/// One image of a dataset, and its mask if the dataset has labels for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Stable name: the file name for CamVid, the id for VOC, `<city>_<seq>_<frame>` for Cityscapes.
    pub name: String,
    /// The image file.
    pub image: PathBuf,
    /// The mask file, when the dataset has a mask folder for this item.
    pub mask: Option<PathBuf>,
}

/// A decoded item.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The item's name.
    pub name: String,
    /// The image, 8-bit RGB.
    pub image: RgbImage,
    /// Train ids `0..num_classes` and [`crate::IGNORE`] for void; same size as `image`.
    pub mask: Option<GrayImage>,
}

/// The items of one split of a dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The dataset folder.
    pub root: PathBuf,
    /// How it is arranged.
    pub layout: Layout,
    /// The split's items.
    pub items: Vec<Item>,
    /// Number of classes (train ids `0..num_classes`).
    pub num_classes: usize,
    /// The void id as stored in the mask files (11 for CamVid, 255 for VOC); mapped to
    /// [`crate::IGNORE`] on load.
    pub ignore_id: u8,
}

impl Dataset {
    /// Lists the items of a split.
    ///
    /// `split` is the layout's own split (`"train"`, `"val"`, `"test"`: a folder for CamVid and
    /// Cityscapes, `ImageSets/Segmentation/<split>.txt` for VOC) or a path to a split-list
    /// file (see the module docs). Items of a folder split are sorted by name; items of a list
    /// keep its order. An item gets a mask path when the layout's mask folder exists; whether
    /// the mask file itself exists is checked by [`Dataset::load`].
    pub fn open(
        root: &Path,
        layout: Layout,
        split: &str,
        num_classes: usize,
        ignore_id: u8,
    ) -> Result<Self, DataError> {
        if num_classes == 0 || num_classes > 255 {
            return Err(DataError::BadNumClasses {
                root: root.to_path_buf(),
                num_classes,
            });
        }
        // a missing root says so, rather than "no images found"
        if let Err(error) = fs::metadata(root).and_then(|m| {
            if m.is_dir() {
                Ok(())
            } else {
                Err(io::Error::new(io::ErrorKind::NotADirectory, "not a folder"))
            }
        }) {
            return Err(DataError::Io {
                path: root.to_path_buf(),
                error,
            });
        }
        let items = match resolve_list_path(root, split) {
            Some(list) => items_from_list(root, layout, &list)?,
            None => scan_split(root, layout, split)?,
        };
        if items.is_empty() {
            return Err(DataError::NoImages {
                root: root.to_path_buf(),
                split: split.to_string(),
            });
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            layout,
            items,
            num_classes,
            ignore_id,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items (never true right after [`Dataset::open`]).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Keeps only the items for which `f` returns `true` (e.g. one video sequence).
    pub fn retain(&mut self, f: impl FnMut(&Item) -> bool) {
        self.items.retain(f);
    }
}

/// Dataset folders written by the tests.
#[cfg(test)]
mod fixtures {
    use std::fs;
    use std::path::Path;

    use image::{GrayImage, Luma, Rgb, RgbImage};

    pub(super) fn write_rgb(path: &Path, w: u32, h: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_fn(w, h, |x, y| Rgb([x as u8 * 20, y as u8 * 30, 99]))
            .save(path)
            .unwrap();
    }

    pub(super) fn write_gray(path: &Path, w: u32, h: u32, values: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        GrayImage::from_fn(w, h, |x, y| Luma([values[(y * w + x) as usize % values.len()]]))
            .save(path)
            .unwrap();
    }

    pub(super) fn camvid_fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let mask = [0, 1, 2, 10, 11, 3];
        for name in ["b_0002.png", "a_0001.png"] {
            write_rgb(&r.join("train").join(name), 8, 6);
            write_gray(&r.join("trainannot").join(name), 8, 6, &mask);
        }
        write_rgb(&r.join("val").join("c_0003.png"), 8, 6);
        write_gray(&r.join("valannot").join("c_0003.png"), 8, 6, &mask);
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{camvid_fixture, write_rgb};
    use super::*;
    use crate::IGNORE;

    #[test]
    fn camvid_without_annot_folder_is_unlabeled() {
        let dir = tempfile::tempdir().unwrap();
        write_rgb(&dir.path().join("test").join("x.png"), 4, 4);
        let ds = Dataset::open(dir.path(), Layout::Camvid, "test", 11, 11).unwrap();
        assert_eq!(ds.items[0].mask, None);
        assert!(ds.load(0).unwrap().mask.is_none());
    }

    #[test]
    fn retain_filters_items() {
        let dir = camvid_fixture();
        let mut ds = Dataset::open(dir.path(), Layout::Camvid, "train", 11, 11).unwrap();
        ds.retain(|it| it.name.starts_with("b_"));
        assert_eq!(ds.len(), 1);
        assert_eq!(ds.items[0].name, "b_0002.png");
        ds.retain(|_| false);
        assert!(ds.is_empty());
    }

    #[test]
    fn missing_split_is_no_images() {
        let dir = camvid_fixture();
        let err = Dataset::open(dir.path(), Layout::Camvid, "test", 11, 11).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&dir.path().display().to_string()), "{msg}");
        assert!(msg.ends_with("no images found for split 'test'"), "{msg}");
        let err = Dataset::open(dir.path(), Layout::Camvid, "train", 0, 11).unwrap_err();
        assert!(matches!(err, DataError::BadNumClasses { .. }));
    }

    #[test]
    fn real_camvid_if_present() {
        let root = Path::new("/work/shared/data/camvid");
        if !root.join("train").is_dir() {
            eprintln!("skipping: no CamVid at {}", root.display());
            return;
        }
        for (split, n) in [("train", 367), ("val", 101)] {
            let ds = Dataset::open(root, Layout::Camvid, split, 11, 11).unwrap();
            assert_eq!(ds.len(), n, "{split}");
            for i in [0, ds.len() - 1] {
                let s = ds.load(i).unwrap();
                assert_eq!(s.image.dimensions(), (480, 360));
                let m = s.mask.unwrap();
                assert_eq!(m.dimensions(), (480, 360));
                assert!(m.pixels().all(|p| p[0] < 11 || p[0] == IGNORE));
            }
            // The upstream list file gives the same items in the same order.
            let listed = Dataset::open(root, Layout::Camvid, &format!("{split}.txt"), 11, 11).unwrap();
            assert_eq!(listed.items, ds.items, "{split}.txt");
        }
    }
}
