//! Errors from opening or loading a dataset.

use std::io;
use std::path::PathBuf;

use super::Layout;

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
    /// [`Dataset::load`](super::Dataset::load) was asked for an item that does not exist.
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
