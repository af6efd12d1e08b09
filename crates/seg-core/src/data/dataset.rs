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

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::IGNORE;

/// How a dataset's files are arranged on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// SegNet's CamVid: `<split>/` images, `<split>annot/` masks with the same file names.
    Camvid,
    /// PASCAL-VOC 2012: `JPEGImages/`, paletted `SegmentationClass/`, `ImageSets/Segmentation/`.
    Voc,
    /// Cityscapes: `leftImg8bit/<split>/<city>/` and `gtFine/<split>/<city>/` label ids.
    Cityscapes,
}

impl Layout {
    /// Every layout, in declaration order.
    pub const ALL: [Layout; 3] = [Layout::Camvid, Layout::Voc, Layout::Cityscapes];

    /// The lowercase name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Camvid => "camvid",
            Layout::Voc => "voc",
            Layout::Cityscapes => "cityscapes",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`Layout::from_str`]: the name is not a known layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dataset layout '{0}' (expected camvid, voc or cityscapes)")]
pub struct ParseLayoutError(pub String);

impl FromStr for Layout {
    type Err = ParseLayoutError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Layout::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseLayoutError(s.to_string()))
    }
}

/// Cityscapes `labelIds` → train ids (the 19 evaluated classes). Every id not listed is void.
pub const CITYSCAPES_TRAIN_IDS: [(u8, u8); 19] = [
    (7, 0),
    (8, 1),
    (11, 2),
    (12, 3),
    (13, 4),
    (17, 5),
    (19, 6),
    (20, 7),
    (21, 8),
    (22, 9),
    (23, 10),
    (24, 11),
    (25, 12),
    (26, 13),
    (27, 14),
    (28, 15),
    (31, 16),
    (32, 17),
    (33, 18),
];

/// The Cityscapes train id of a `labelIds` value, or [`IGNORE`] for ids that are not evaluated.
pub fn cityscapes_train_id(label_id: u8) -> u8 {
    CITYSCAPES_TRAIN_IDS
        .iter()
        .find(|&&(l, _)| l == label_id)
        .map_or(IGNORE, |&(_, t)| t)
}

/// Errors from opening or loading a dataset. Every message is one line that starts with the
/// offending file (or folder) path.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// An image file is not a decodable image.
    #[error("{}: cannot decode image: {message}", path.display())]
    DecodeImage {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A mask file is not a decodable PNG.
    #[error("{}: cannot decode PNG: {message}", path.display())]
    DecodeMask {
        /// The mask file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A mask PNG is not single-channel (8-bit or less grayscale, or paletted).
    #[error("{}: mask must be a grayscale (up to 8-bit) or paletted PNG, got {format}", path.display())]
    UnsupportedMask {
        /// The mask file.
        path: PathBuf,
        /// The PNG colour type and bit depth found.
        format: String,
    },
    /// An item should have a mask but its file does not exist.
    #[error("{}: missing mask for image {}", mask.display(), image.display())]
    MissingMask {
        /// The expected mask path.
        mask: PathBuf,
        /// The image it belongs to.
        image: PathBuf,
    },
    /// Mask and image sizes differ.
    #[error("{}: mask is {mask_w}x{mask_h} but its image is {image_w}x{image_h}", mask.display())]
    SizeMismatch {
        /// The mask file.
        mask: PathBuf,
        /// Mask width.
        mask_w: u32,
        /// Mask height.
        mask_h: u32,
        /// Image width.
        image_w: u32,
        /// Image height.
        image_h: u32,
    },
    /// A mask value is neither a class id nor the void id.
    #[error(
        "{}: label id {id} is not a class (0..{num_classes}) nor the ignore id {ignore_id} (first at x={x}, y={y})",
        path.display()
    )]
    BadLabel {
        /// The mask file.
        path: PathBuf,
        /// The offending value.
        id: u8,
        /// The dataset's class count.
        num_classes: usize,
        /// The dataset's void id in the files.
        ignore_id: u8,
        /// Column of the first offending pixel.
        x: u32,
        /// Row of the first offending pixel.
        y: u32,
    },
    /// A Cityscapes label id maps to a train id that is not below `num_classes`.
    #[error(
        "{}: label id {id} maps to train id {train_id}, which is not a class (0..{num_classes}) (first at x={x}, y={y})",
        path.display()
    )]
    BadTrainId {
        /// The mask file.
        path: PathBuf,
        /// The offending label id.
        id: u8,
        /// Its train id.
        train_id: u8,
        /// The dataset's class count.
        num_classes: usize,
        /// Column of the first offending pixel.
        x: u32,
        /// Row of the first offending pixel.
        y: u32,
    },
    /// The split has no images.
    #[error("{}: no images found for split '{split}'", root.display())]
    NoImages {
        /// The dataset root.
        root: PathBuf,
        /// The split asked for.
        split: String,
    },
    /// A split-list entry names no item of the dataset.
    #[error("{}:{line}: entry '{entry}' not found in the {layout} dataset at {}", list.display(), root.display())]
    ListEntry {
        /// The split-list file.
        list: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The entry as written.
        entry: String,
        /// The dataset root.
        root: PathBuf,
        /// The dataset layout.
        layout: Layout,
    },
    /// A split-list file has no entries.
    #[error("{}: split list has no entries", list.display())]
    EmptyList {
        /// The split-list file.
        list: PathBuf,
    },
    /// `num_classes` cannot be represented next to the ignore id 255.
    #[error("{}: num_classes must be in 1..=255, got {num_classes}", root.display())]
    BadNumClasses {
        /// The dataset root.
        root: PathBuf,
        /// The value given.
        num_classes: usize,
    },
    /// [`Dataset::load`] was asked for an item that does not exist.
    #[error("{}: item index {index} out of range (the dataset has {len} items)", root.display())]
    IndexOutOfRange {
        /// The dataset root.
        root: PathBuf,
        /// The index asked for.
        index: usize,
        /// The number of items.
        len: usize,
    },
}

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

    /// Decodes item `i` and its mask (if it has one), validating both.
    ///
    /// Checks that the image and mask decode, that the mask exists and has the image's size,
    /// and that every mask value is a class id (`< num_classes`) or the dataset's `ignore_id`
    /// (Cityscapes: a `labelIds` value, mapped with [`CITYSCAPES_TRAIN_IDS`]). The returned
    /// mask holds train ids and [`crate::IGNORE`].
    pub fn load(&self, i: usize) -> Result<Sample, DataError> {
        let item = self.item(i)?;
        let image = read_rgb(&item.image)?;
        let mask = match &item.mask {
            Some(path) => Some(self.read_mask(path, &item.image, image.dimensions())?),
            None => None,
        };
        Ok(Sample {
            name: item.name.clone(),
            image,
            mask,
        })
    }

    /// Decodes only the image of item `i` (for unlabeled use); the sample's mask is `None`.
    pub fn load_image_only(&self, i: usize) -> Result<Sample, DataError> {
        let item = self.item(i)?;
        Ok(Sample {
            name: item.name.clone(),
            image: read_rgb(&item.image)?,
            mask: None,
        })
    }

    /// Keeps only the items for which `f` returns `true` (e.g. one video sequence).
    pub fn retain(&mut self, f: impl FnMut(&Item) -> bool) {
        self.items.retain(f);
    }

    fn item(&self, index: usize) -> Result<&Item, DataError> {
        self.items.get(index).ok_or_else(|| DataError::IndexOutOfRange {
            root: self.root.clone(),
            index,
            len: self.items.len(),
        })
    }

    /// Reads, checks and maps one mask file to train ids.
    fn read_mask(&self, path: &Path, image: &Path, size: (u32, u32)) -> Result<GrayImage, DataError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DataError::MissingMask {
                    mask: path.to_path_buf(),
                    image: image.to_path_buf(),
                })
            }
            Err(error) => {
                return Err(DataError::Io {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        let mut mask = decode_label_png(&bytes).map_err(|e| match e {
            MaskDecodeError::Decode(message) => DataError::DecodeMask {
                path: path.to_path_buf(),
                message,
            },
            MaskDecodeError::Unsupported(format) => DataError::UnsupportedMask {
                path: path.to_path_buf(),
                format,
            },
        })?;
        let (mask_w, mask_h) = mask.dimensions();
        if (mask_w, mask_h) != size {
            return Err(DataError::SizeMismatch {
                mask: path.to_path_buf(),
                mask_w,
                mask_h,
                image_w: size.0,
                image_h: size.1,
            });
        }
        let lut = self.label_lut();
        let width = mask_w.max(1) as usize;
        for (idx, v) in mask.iter_mut().enumerate() {
            match lut[*v as usize] {
                Some(t) => *v = t,
                None => return Err(self.bad_label(path, *v, idx, width)),
            }
        }
        Ok(mask)
    }

    /// File value → train id (`None`: invalid value).
    fn label_lut(&self) -> [Option<u8>; 256] {
        let mut lut = [None; 256];
        for (v, slot) in lut.iter_mut().enumerate() {
            let v = v as u8;
            *slot = if v == self.ignore_id {
                Some(IGNORE)
            } else {
                let t = match self.layout {
                    Layout::Cityscapes => cityscapes_train_id(v),
                    Layout::Camvid | Layout::Voc => v,
                };
                if t == IGNORE && self.layout == Layout::Cityscapes {
                    Some(IGNORE)
                } else if (t as usize) < self.num_classes {
                    Some(t)
                } else {
                    None
                }
            };
        }
        lut
    }

    fn bad_label(&self, path: &Path, id: u8, idx: usize, width: usize) -> DataError {
        let (x, y) = ((idx % width) as u32, (idx / width) as u32);
        match self.layout {
            Layout::Cityscapes => DataError::BadTrainId {
                path: path.to_path_buf(),
                id,
                train_id: cityscapes_train_id(id),
                num_classes: self.num_classes,
                x,
                y,
            },
            Layout::Camvid | Layout::Voc => DataError::BadLabel {
                path: path.to_path_buf(),
                id,
                num_classes: self.num_classes,
                ignore_id: self.ignore_id,
                x,
                y,
            },
        }
    }
}

/// Reads and decodes an image file (any format the `image` crate was built with) as RGB.
fn read_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let bytes = fs::read(path).map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    image::load_from_memory(&bytes)
        .map(|img| img.into_rgb8())
        .map_err(|e| DataError::DecodeImage {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Why a mask PNG could not be turned into raw label values.
enum MaskDecodeError {
    Decode(String),
    Unsupported(String),
}

/// Decodes a single-channel PNG to its raw sample values: palette *indices* for paletted
/// images, grey levels (unscaled) for grayscale images of 1 to 8 bits.
fn decode_label_png(bytes: &[u8]) -> Result<GrayImage, MaskDecodeError> {
    let decode_err = |e: png::DecodingError| MaskDecodeError::Decode(e.to_string());
    let mut decoder = png::Decoder::new(io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(decode_err)?;
    let (color, depth) = reader.output_color_type();
    let single_channel = matches!(color, png::ColorType::Grayscale | png::ColorType::Indexed);
    if !single_channel || depth == png::BitDepth::Sixteen {
        return Err(MaskDecodeError::Unsupported(format!("{color:?} {}-bit", depth as u8)));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| MaskDecodeError::Decode("image too large".to_string()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(decode_err)?;
    let (w, h) = (info.width, info.height);
    if info.line_size == 0 || w == 0 || h == 0 {
        return Err(MaskDecodeError::Decode("image has no pixels".to_string()));
    }
    let bits = depth as usize;
    let data = if bits == 8 {
        let mut data = Vec::with_capacity(w as usize * h as usize);
        for row in buf.chunks(info.line_size).take(h as usize) {
            data.extend_from_slice(&row[..w as usize]);
        }
        data
    } else {
        let per_byte = 8 / bits;
        let mask = (1u8 << bits) - 1;
        let mut data = Vec::with_capacity(w as usize * h as usize);
        for row in buf.chunks(info.line_size).take(h as usize) {
            data.extend((0..w as usize).map(|x| {
                let byte = row[x / per_byte];
                let shift = 8 - bits * (x % per_byte + 1);
                (byte >> shift) & mask
            }));
        }
        data
    };
    GrayImage::from_raw(w, h, data).ok_or_else(|| MaskDecodeError::Decode("truncated image data".to_string()))
}

/// The split-list file `split` names, if it names one (see the module docs).
fn resolve_list_path(root: &Path, split: &str) -> Option<PathBuf> {
    let p = Path::new(split);
    let looks_like_file = split.contains('/') || split.contains('\\') || p.extension().is_some();
    if !looks_like_file {
        return None;
    }
    if p.is_absolute() || p.is_file() {
        return Some(p.to_path_buf());
    }
    let in_root = root.join(p);
    Some(if in_root.is_file() { in_root } else { p.to_path_buf() })
}

/// One entry of a split-list file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListEntry {
    /// 1-based line number.
    line: usize,
    /// The first column as written.
    raw: String,
    /// Its base name.
    name: String,
    /// The folder names in front of the base name (split hints).
    dirs: Vec<String>,
}

/// Parses a split-list file's text (see the module docs).
fn parse_split_list(text: &str) -> Vec<ListEntry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let raw = line.split_whitespace().next()?;
            let mut parts: Vec<String> = raw
                .split(['/', '\\'])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let name = parts.pop()?;
            Some(ListEntry {
                line: i + 1,
                raw: raw.to_string(),
                name,
                dirs: parts,
            })
        })
        .collect()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataError + '_ {
    move |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Sorted entries of a folder: (file name, path, is_dir).
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, DataError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let is_dir = path.is_dir();
        out.push((entry.file_name().to_string_lossy().into_owned(), path, is_dir));
    }
    out.sort();
    Ok(out)
}

fn has_image_ext(name: &str) -> bool {
    crate::io::has_image_extension(Path::new(name))
}

/// File name without its last extension.
fn stem(name: &str) -> &str {
    Path::new(name).file_stem().and_then(|s| s.to_str()).unwrap_or(name)
}

const CITYSCAPES_IMAGE_SUFFIX: &str = "_leftImg8bit.png";
const CITYSCAPES_MASK_SUFFIX: &str = "_gtFine_labelIds.png";

/// Lists a folder split of the layout (VOC: its `ImageSets/Segmentation` list).
fn scan_split(root: &Path, layout: Layout, split: &str) -> Result<Vec<Item>, DataError> {
    match layout {
        Layout::Camvid => {
            let dir = root.join(split);
            if !dir.is_dir() {
                return Ok(Vec::new());
            }
            let annot = root.join(format!("{split}annot"));
            let has_masks = annot.is_dir();
            Ok(list_dir(&dir)?
                .into_iter()
                .filter(|(name, _, is_dir)| !is_dir && has_image_ext(name))
                .map(|(name, image, _)| Item {
                    mask: has_masks.then(|| annot.join(format!("{}.png", stem(&name)))),
                    name,
                    image,
                })
                .collect())
        }
        Layout::Voc => {
            let list = root.join("ImageSets").join("Segmentation").join(format!("{split}.txt"));
            if !list.is_file() {
                return Ok(Vec::new());
            }
            items_from_list(root, layout, &list)
        }
        Layout::Cityscapes => {
            let dir = root.join("leftImg8bit").join(split);
            if !dir.is_dir() {
                return Ok(Vec::new());
            }
            let gt = root.join("gtFine").join(split);
            let has_masks = gt.is_dir();
            let mut items = Vec::new();
            for (city, city_dir, is_dir) in list_dir(&dir)? {
                if !is_dir {
                    continue;
                }
                for (file, image, is_dir) in list_dir(&city_dir)? {
                    let Some(name) = file.strip_suffix(CITYSCAPES_IMAGE_SUFFIX) else {
                        continue;
                    };
                    if is_dir {
                        continue;
                    }
                    items.push(Item {
                        mask: has_masks.then(|| gt.join(&city).join(format!("{name}{CITYSCAPES_MASK_SUFFIX}"))),
                        name: name.to_string(),
                        image,
                    });
                }
            }
            items.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(items)
        }
    }
}

/// Every item of every folder split of a CamVid or Cityscapes root, keyed by the names a
/// split list may use for it, with the split each came from.
fn index_all(root: &Path, layout: Layout) -> Result<HashMap<String, Vec<(String, Item)>>, DataError> {
    let split_parent = match layout {
        Layout::Camvid => root.to_path_buf(),
        Layout::Cityscapes => root.join("leftImg8bit"),
        Layout::Voc => return Ok(HashMap::new()),
    };
    let mut splits = Vec::new();
    if split_parent.is_dir() {
        for (name, _, is_dir) in list_dir(&split_parent)? {
            let is_split = match layout {
                Layout::Camvid => {
                    !name.ends_with("annot")
                        && (["train", "val", "test"].contains(&name.as_str())
                            || root.join(format!("{name}annot")).is_dir())
                }
                _ => true,
            };
            if is_dir && is_split {
                splits.push(name);
            }
        }
    }
    let mut index: HashMap<String, Vec<(String, Item)>> = HashMap::new();
    for split in splits {
        for item in scan_split(root, layout, &split)? {
            let mut keys = vec![item.name.clone(), stem(&item.name).to_string()];
            if layout == Layout::Cityscapes {
                keys.push(format!("{}{CITYSCAPES_IMAGE_SUFFIX}", item.name));
                keys.push(format!("{}_leftImg8bit", item.name));
            }
            keys.dedup();
            for key in keys {
                index.entry(key).or_default().push((split.clone(), item.clone()));
            }
        }
    }
    Ok(index)
}

/// The items a split-list file names, in its order.
fn items_from_list(root: &Path, layout: Layout, list: &Path) -> Result<Vec<Item>, DataError> {
    let text = fs::read_to_string(list).map_err(io_err(list))?;
    let entries = parse_split_list(&text);
    if entries.is_empty() {
        return Err(DataError::EmptyList {
            list: list.to_path_buf(),
        });
    }
    let not_found = |e: &ListEntry| DataError::ListEntry {
        list: list.to_path_buf(),
        line: e.line,
        entry: e.raw.clone(),
        root: root.to_path_buf(),
        layout,
    };
    let mut items = Vec::with_capacity(entries.len());
    if layout == Layout::Voc {
        let masks = root.join("SegmentationClass");
        let has_masks = masks.is_dir();
        for e in &entries {
            let id = if has_image_ext(&e.name) {
                stem(&e.name)
            } else {
                e.name.as_str()
            };
            let image = root.join("JPEGImages").join(format!("{id}.jpg"));
            if !image.is_file() {
                return Err(not_found(e));
            }
            items.push(Item {
                name: id.to_string(),
                image,
                mask: has_masks.then(|| masks.join(format!("{id}.png"))),
            });
        }
        return Ok(items);
    }
    let index = index_all(root, layout)?;
    for e in &entries {
        let candidates = index.get(&e.name).ok_or_else(|| not_found(e))?;
        let chosen = candidates
            .iter()
            .find(|(split, _)| e.dirs.iter().any(|d| d == split))
            .or_else(|| candidates.first())
            .ok_or_else(|| not_found(e))?;
        items.push(chosen.1.clone());
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};
    use std::io::Write;

    fn write_rgb(path: &Path, w: u32, h: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_fn(w, h, |x, y| Rgb([x as u8 * 20, y as u8 * 30, 99]))
            .save(path)
            .unwrap();
    }

    fn write_gray(path: &Path, w: u32, h: u32, values: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        GrayImage::from_fn(w, h, |x, y| Luma([values[(y * w + x) as usize % values.len()]]))
            .save(path)
            .unwrap();
    }

    /// Writes a real paletted PNG of the given bit depth with the `png` crate.
    fn write_paletted(path: &Path, w: u32, h: u32, indices: &[u8], depth: png::BitDepth) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(io::BufWriter::new(file), w, h);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(depth);
        // A palette whose colours are unrelated to the indices (VOC-like).
        let palette: Vec<u8> = (0..256u32)
            .flat_map(|i| [(i * 37 % 256) as u8, (i * 91 % 256) as u8, 255 - i as u8])
            .collect();
        let entries = 1usize << (depth as u8);
        enc.set_palette(palette[..entries * 3].to_vec());
        let mut writer = enc.write_header().unwrap();
        let bits = depth as usize;
        let row_bytes = (w as usize * bits).div_ceil(8);
        let mut data = vec![0u8; row_bytes * h as usize];
        for y in 0..h as usize {
            for x in 0..w as usize {
                let v = indices[y * w as usize + x];
                let bit = x * bits;
                data[y * row_bytes + bit / 8] |= v << (8 - bits - bit % 8);
            }
        }
        writer.write_image_data(&data).unwrap();
    }

    fn camvid_fixture() -> tempfile::TempDir {
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

    #[test]
    fn camvid_loads_and_maps_void_to_ignore() {
        let dir = camvid_fixture();
        let ds = Dataset::open(dir.path(), Layout::Camvid, "train", 11, 11).unwrap();
        assert_eq!(ds.len(), 2);
        let names: Vec<_> = ds.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a_0001.png", "b_0002.png"]);
        let s = ds.load(0).unwrap();
        assert_eq!(s.name, "a_0001.png");
        assert_eq!(s.image.dimensions(), (8, 6));
        let m = s.mask.unwrap();
        assert_eq!(m.dimensions(), (8, 6));
        assert_eq!(&m.as_raw()[..6], &[0, 1, 2, 10, IGNORE, 3]);
        assert!(!m.as_raw().contains(&11));
        let only = ds.load_image_only(1).unwrap();
        assert!(only.mask.is_none());
        assert!(matches!(
            ds.load(2),
            Err(DataError::IndexOutOfRange { index: 2, len: 2, .. })
        ));
    }

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
    fn voc_paletted_masks_decode_to_indices() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let (w, h) = (8u32, 6u32);
        let idx8: Vec<u8> = (0..w * h).map(|i| [0u8, 1, 15, 20, 255, 7][i as usize % 6]).collect();
        write_rgb(&r.join("JPEGImages/2007_000032.jpg"), w, h);
        write_paletted(
            &r.join("SegmentationClass/2007_000032.png"),
            w,
            h,
            &idx8,
            png::BitDepth::Eight,
        );
        // A 4-bit paletted mask exercises sub-byte unpacking.
        let idx4: Vec<u8> = (0..w * h).map(|i| (i % 16) as u8 % 13).collect();
        write_rgb(&r.join("JPEGImages/2007_000033.jpg"), w, h);
        write_paletted(
            &r.join("SegmentationClass/2007_000033.png"),
            w,
            h,
            &idx4,
            png::BitDepth::Four,
        );
        let sets = r.join("ImageSets/Segmentation");
        fs::create_dir_all(&sets).unwrap();
        fs::write(sets.join("train.txt"), "2007_000032\n2007_000033\n").unwrap();

        let ds = Dataset::open(r, Layout::Voc, "train", 21, 255).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.items[0].name, "2007_000032");
        let s = ds.load(0).unwrap();
        assert_eq!(s.image.dimensions(), (w, h));
        assert_eq!(s.mask.unwrap().as_raw(), &idx8);
        let s = ds.load(1).unwrap();
        assert_eq!(s.mask.unwrap().as_raw(), &idx4);

        // With fewer classes, index 20 becomes invalid.
        let ds = Dataset::open(r, Layout::Voc, "train", 20, 255).unwrap();
        let msg = ds.load(0).unwrap_err().to_string();
        assert!(
            msg.contains("label id 20 is not a class (0..20) nor the ignore id 255"),
            "{msg}"
        );
    }

    #[test]
    fn rgb_mask_is_rejected_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write_rgb(&r.join("train/a.png"), 4, 4);
        write_rgb(&r.join("trainannot/a.png"), 4, 4);
        let ds = Dataset::open(r, Layout::Camvid, "train", 11, 11).unwrap();
        let err = ds.load(0).unwrap_err();
        assert!(matches!(err, DataError::UnsupportedMask { .. }), "{err}");
        let mask_path = r.join("trainannot/a.png").display().to_string();
        assert!(err.to_string().starts_with(&mask_path));
    }

    #[test]
    fn cityscapes_label_ids_map_to_train_ids() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let raw = [7u8, 8, 33, 0, 1, 255, 26, 24, 6, 31, 11, 34];
        let (w, h) = (6u32, 2u32);
        for (split, city, x) in [
            ("train", "zurich", "zurich_000001_000019"),
            ("train", "aachen", "aachen_000000_000019"),
            ("val", "bonn", "bonn_000000_000019"),
        ] {
            write_rgb(&r.join(format!("leftImg8bit/{split}/{city}/{x}_leftImg8bit.png")), w, h);
            write_gray(
                &r.join(format!("gtFine/{split}/{city}/{x}_gtFine_labelIds.png")),
                w,
                h,
                &raw,
            );
        }
        let ds = Dataset::open(r, Layout::Cityscapes, "train", 19, 255).unwrap();
        let names: Vec<_> = ds.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["aachen_000000_000019", "zurich_000001_000019"]);
        let m = ds.load(0).unwrap().mask.unwrap();
        let want = [0u8, 1, 18, IGNORE, IGNORE, IGNORE, 13, 11, IGNORE, 16, 2, IGNORE];
        assert_eq!(m.as_raw(), &want);
        assert_eq!(cityscapes_train_id(28), 15);
        assert_eq!(cityscapes_train_id(29), IGNORE);

        // A class count below 19 turns high train ids into errors.
        let ds = Dataset::open(r, Layout::Cityscapes, "val", 10, 255).unwrap();
        let msg = ds.load(0).unwrap_err().to_string();
        assert!(msg.contains("label id 33 maps to train id 18"), "{msg}");

        // Split lists may use the image file name.
        let list = r.join("mine.txt");
        fs::write(&list, "bonn_000000_000019_leftImg8bit.png\naachen_000000_000019\n").unwrap();
        let ds = Dataset::open(r, Layout::Cityscapes, list.to_str().unwrap(), 19, 255).unwrap();
        let names: Vec<_> = ds.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["bonn_000000_000019", "aachen_000000_000019"]);
        assert!(ds.items[0].image.to_string_lossy().contains("/val/bonn/"));
    }

    #[test]
    fn missing_mask_error_names_the_mask() {
        let dir = camvid_fixture();
        let mask = dir.path().join("trainannot/a_0001.png");
        fs::remove_file(&mask).unwrap();
        let ds = Dataset::open(dir.path(), Layout::Camvid, "train", 11, 11).unwrap();
        let msg = ds.load(0).unwrap_err().to_string();
        assert!(msg.starts_with(&mask.display().to_string()), "{msg}");
        assert!(msg.contains("missing mask for image"), "{msg}");
        assert!(msg.contains("a_0001.png"));
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn mask_size_mismatch_is_reported() {
        let dir = camvid_fixture();
        let mask = dir.path().join("trainannot/b_0002.png");
        write_gray(&mask, 8, 7, &[1]);
        let ds = Dataset::open(dir.path(), Layout::Camvid, "train", 11, 11).unwrap();
        let msg = ds.load(1).unwrap_err().to_string();
        assert_eq!(msg, format!("{}: mask is 8x7 but its image is 8x6", mask.display()));
    }

    #[test]
    fn label_id_out_of_range_is_reported() {
        let dir = camvid_fixture();
        let mask = dir.path().join("trainannot/b_0002.png");
        write_gray(&mask, 8, 6, &[0, 1, 14, 2]);
        let ds = Dataset::open(dir.path(), Layout::Camvid, "train", 11, 11).unwrap();
        let msg = ds.load(1).unwrap_err().to_string();
        assert!(msg.starts_with(&mask.display().to_string()), "{msg}");
        assert!(
            msg.contains("label id 14 is not a class (0..11) nor the ignore id 11"),
            "{msg}"
        );
        assert!(msg.contains("x=2, y=0"), "{msg}");
    }

    #[test]
    fn corrupt_png_errors_name_the_file() {
        let dir = camvid_fixture();
        let image = dir.path().join("train/a_0001.png");
        let mask = dir.path().join("trainannot/b_0002.png");
        let mut f = fs::File::create(&image).unwrap();
        f.write_all(b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
        fs::write(&mask, b"garbage").unwrap();
        let ds = Dataset::open(dir.path(), Layout::Camvid, "train", 11, 11).unwrap();
        let msg = ds.load(0).unwrap_err().to_string();
        assert!(msg.starts_with(&image.display().to_string()), "{msg}");
        assert!(msg.contains("cannot decode image"), "{msg}");
        let msg = ds.load(1).unwrap_err().to_string();
        assert!(msg.starts_with(&mask.display().to_string()), "{msg}");
        assert!(msg.contains("cannot decode PNG"), "{msg}");
        // Image-only loading of the good image still works.
        assert!(ds.load_image_only(1).is_ok());
    }

    #[test]
    fn split_list_parsing() {
        let text = "# comment\n\n  a.png  \n/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/0001TP_006690.png\n2007_000032\r\n";
        let e = parse_split_list(text);
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].line, e[0].name.as_str()), (3, "a.png"));
        assert_eq!(e[1].line, 4);
        assert_eq!(e[1].name, "0001TP_006690.png");
        assert_eq!(e[1].dirs, ["SegNet", "CamVid", "train"]);
        assert_eq!(e[2].name, "2007_000032");
    }

    #[test]
    fn camvid_split_list_files() {
        let dir = camvid_fixture();
        let r = dir.path();
        // The same name in train and val: the folder in the line picks the split.
        write_rgb(&r.join("val/a_0001.png"), 8, 6);
        write_gray(&r.join("valannot/a_0001.png"), 8, 6, &[5]);
        fs::write(
            r.join("list.txt"),
            "# labeled\n/SegNet/CamVid/val/a_0001.png /SegNet/CamVid/valannot/a_0001.png\n\nb_0002.png\nc_0003\n",
        )
        .unwrap();
        // Relative to the root.
        let ds = Dataset::open(r, Layout::Camvid, "list.txt", 11, 11).unwrap();
        let names: Vec<_> = ds.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a_0001.png", "b_0002.png", "c_0003.png"]);
        assert_eq!(ds.items[0].image, r.join("val/a_0001.png"));
        assert_eq!(ds.items[0].mask.as_deref(), Some(&*r.join("valannot/a_0001.png")));
        assert_eq!(ds.items[2].image, r.join("val/c_0003.png"));
        assert!(ds.load(0).unwrap().mask.unwrap().pixels().all(|p| p[0] == 5));

        // Unknown entries name the list, the line and the entry.
        let list = r.join("bad.txt");
        fs::write(&list, "a_0001.png\nnope.png\n").unwrap();
        let msg = Dataset::open(r, Layout::Camvid, list.to_str().unwrap(), 11, 11)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with(&format!("{}:2:", list.display())), "{msg}");
        assert!(msg.contains("'nope.png'"), "{msg}");

        let empty = r.join("empty.txt");
        fs::write(&empty, "# nothing\n\n").unwrap();
        let err = Dataset::open(r, Layout::Camvid, empty.to_str().unwrap(), 11, 11).unwrap_err();
        assert!(matches!(err, DataError::EmptyList { .. }));
        let err = Dataset::open(r, Layout::Camvid, "missing.txt", 11, 11).unwrap_err();
        assert!(err.to_string().starts_with("missing.txt: "), "{err}");
    }

    #[test]
    fn layout_names_round_trip() {
        for l in Layout::ALL {
            assert_eq!(l.to_string().parse::<Layout>().unwrap(), l);
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(json, format!("\"{}\"", l.name()));
        }
        assert!("kitti".parse::<Layout>().is_err());
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
