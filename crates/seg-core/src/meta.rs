//! The model description carried in ONNX `metadata_props`: what a runtime needs to feed a model
//! and draw its output without any other file.

use std::collections::BTreeMap;

use crate::classes::ClassTable;

/// Metadata keys.
pub mod keys {
    /// Model name.
    pub const NAME: &str = "edge_seg.name";
    /// Comma-separated class names.
    pub const CLASSES: &str = "edge_seg.classes";
    /// `r,g,b;r,g,b;…` palette.
    pub const PALETTE: &str = "edge_seg.palette";
    /// Input height in pixels.
    pub const INPUT_HEIGHT: &str = "edge_seg.input_height";
    /// Input width in pixels.
    pub const INPUT_WIDTH: &str = "edge_seg.input_width";
    /// `m0,m1,m2` normalisation mean (on 0..1 pixel values).
    pub const MEAN: &str = "edge_seg.mean";
    /// `s0,s1,s2` normalisation std.
    pub const STD: &str = "edge_seg.std";
    /// The resolved training config (TOML).
    pub const CONFIG: &str = "edge_seg.config";
}

/// How to run a model and display its output.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    /// Model name.
    pub name: String,
    /// Classes and colours.
    pub classes: ClassTable,
    /// Network input `(height, width)`.
    pub input_hw: (u32, u32),
    /// Normalisation mean.
    pub mean: [f32; 3],
    /// Normalisation std.
    pub std: [f32; 3],
}

impl ModelMeta {
    /// As `metadata_props` entries.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let f3 = |v: [f32; 3]| format!("{},{},{}", v[0], v[1], v[2]);
        BTreeMap::from([
            (keys::NAME.into(), self.name.clone()),
            (keys::CLASSES.into(), self.classes.names.join(",")),
            (keys::PALETTE.into(), self.classes.palette_string()),
            (keys::INPUT_HEIGHT.into(), self.input_hw.0.to_string()),
            (keys::INPUT_WIDTH.into(), self.input_hw.1.to_string()),
            (keys::MEAN.into(), f3(self.mean)),
            (keys::STD.into(), f3(self.std)),
        ])
    }

    /// Reads the entries written by [`Self::to_map`]; the error names the missing or bad key.
    pub fn from_map(m: &BTreeMap<String, String>) -> Result<Self, String> {
        let get = |k: &str| m.get(k).ok_or_else(|| format!("metadata key '{k}' is missing"));
        let f3 = |k: &str| -> Result<[f32; 3], String> {
            let v: Vec<f32> = get(k)?
                .split(',')
                .map(|x| x.trim().parse::<f32>())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("metadata key '{k}': {e}"))?;
            <[f32; 3]>::try_from(v.as_slice()).map_err(|_| format!("metadata key '{k}': expected 3 numbers"))
        };
        let dim =
            |k: &str| -> Result<u32, String> { get(k)?.parse::<u32>().map_err(|e| format!("metadata key '{k}': {e}")) };
        Ok(Self {
            name: m.get(keys::NAME).cloned().unwrap_or_else(|| "model".into()),
            classes: ClassTable::parse(get(keys::CLASSES)?, get(keys::PALETTE)?)
                .map_err(|e| format!("metadata key '{}': {e}", keys::PALETTE))?,
            input_hw: (dim(keys::INPUT_HEIGHT)?, dim(keys::INPUT_WIDTH)?),
            mean: f3(keys::MEAN)?,
            std: f3(keys::STD)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_key() {
        let m = ModelMeta {
            name: "x".into(),
            classes: ClassTable::camvid(),
            input_hw: (360, 480),
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        let map = m.to_map();
        assert_eq!(ModelMeta::from_map(&map).unwrap(), m);
        let mut bad = map.clone();
        bad.remove(keys::MEAN);
        assert!(ModelMeta::from_map(&bad).unwrap_err().contains("edge_seg.mean"));
    }
}
