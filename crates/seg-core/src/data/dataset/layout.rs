//! How a dataset's files are arranged, and the Cityscapes label-id table.

use std::fmt;
use std::str::FromStr;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_round_trip() {
        for l in Layout::ALL {
            assert_eq!(l.to_string().parse::<Layout>().unwrap(), l);
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(json, format!("\"{}\"", l.name()));
        }
        assert!("kitti".parse::<Layout>().is_err());
    }
}
