//! Class tables: names and palette colours of each supported label set.

use serde::{Deserialize, Serialize};

/// The most classes a table may have: label masks and predictions are 8-bit class ids.
pub const MAX_CLASSES: usize = 255;

/// The classes a model predicts, with a display colour each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassTable {
    /// Class names, index = class id.
    pub names: Vec<String>,
    /// RGB colour per class, same length as `names`.
    pub palette: Vec<[u8; 3]>,
}

impl Default for ClassTable {
    fn default() -> Self {
        Self::camvid()
    }
}

impl ClassTable {
    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there is no class.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// CamVid, SegNet's 11-class version (void = 11 is not a class).
    pub fn camvid() -> Self {
        let t: [(&str, [u8; 3]); 11] = [
            ("Sky", [128, 128, 128]),
            ("Building", [128, 0, 0]),
            ("Pole", [192, 192, 128]),
            ("Road", [128, 64, 128]),
            ("Pavement", [60, 40, 222]),
            ("Tree", [128, 128, 0]),
            ("SignSymbol", [192, 128, 128]),
            ("Fence", [64, 64, 128]),
            ("Car", [64, 0, 128]),
            ("Pedestrian", [64, 64, 0]),
            ("Bicyclist", [0, 128, 192]),
        ];
        Self::from_pairs(&t)
    }

    /// PASCAL VOC 2012, 21 classes with the standard colour map.
    pub fn voc() -> Self {
        let names = [
            "background",
            "aeroplane",
            "bicycle",
            "bird",
            "boat",
            "bottle",
            "bus",
            "car",
            "cat",
            "chair",
            "cow",
            "diningtable",
            "dog",
            "horse",
            "motorbike",
            "person",
            "pottedplant",
            "sheep",
            "sofa",
            "train",
            "tvmonitor",
        ];
        let palette = (0..names.len()).map(voc_color).collect();
        Self {
            names: names.iter().map(|s| s.to_string()).collect(),
            palette,
        }
    }

    /// Cityscapes' 19 training classes.
    pub fn cityscapes() -> Self {
        let t: [(&str, [u8; 3]); 19] = [
            ("road", [128, 64, 128]),
            ("sidewalk", [244, 35, 232]),
            ("building", [70, 70, 70]),
            ("wall", [102, 102, 156]),
            ("fence", [190, 153, 153]),
            ("pole", [153, 153, 153]),
            ("traffic light", [250, 170, 30]),
            ("traffic sign", [220, 220, 0]),
            ("vegetation", [107, 142, 35]),
            ("terrain", [152, 251, 152]),
            ("sky", [70, 130, 180]),
            ("person", [220, 20, 60]),
            ("rider", [255, 0, 0]),
            ("car", [0, 0, 142]),
            ("truck", [0, 0, 70]),
            ("bus", [0, 60, 100]),
            ("train", [0, 80, 100]),
            ("motorcycle", [0, 0, 230]),
            ("bicycle", [119, 11, 32]),
        ];
        Self::from_pairs(&t)
    }

    fn from_pairs(t: &[(&str, [u8; 3])]) -> Self {
        Self {
            names: t.iter().map(|(n, _)| n.to_string()).collect(),
            palette: t.iter().map(|(_, c)| *c).collect(),
        }
    }

    /// `n` classes named `class0`, `class1`, … with the VOC colour map (for a model that does
    /// not name its classes).
    pub fn generic(n: usize) -> Self {
        Self {
            names: (0..n).map(|i| format!("class{i}")).collect(),
            palette: (0..n).map(voc_color).collect(),
        }
    }

    /// Reads a class file: one class per line, `name` or `name r g b` (0..255 each), in class-id
    /// order; blank lines and lines starting with `#` are skipped; classes without a colour get
    /// the VOC colour of their id. Errors name the line.
    pub fn parse_lines(text: &str) -> Result<Self, String> {
        let (mut names, mut palette) = (Vec::new(), Vec::new());
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let colour = match fields.len() {
                1 => voc_color(names.len()),
                4 => {
                    let mut c = [0u8; 3];
                    for (k, f) in fields[1..].iter().enumerate() {
                        c[k] = f
                            .parse()
                            .map_err(|_| format!("line {}: colour value '{f}' is not 0..255", i + 1))?;
                    }
                    c
                }
                _ => return Err(format!("line {}: expected `name` or `name r g b`", i + 1)),
            };
            if fields[0].contains(',') {
                return Err(format!("line {}: a class name cannot contain ','", i + 1));
            }
            if names.iter().any(|n| n == fields[0]) {
                return Err(format!("line {}: class '{}' is listed twice", i + 1, fields[0]));
            }
            names.push(fields[0].to_string());
            palette.push(colour);
        }
        if names.is_empty() {
            return Err("no classes".into());
        }
        if names.len() > MAX_CLASSES {
            return Err(format!("{} classes: at most {MAX_CLASSES}", names.len()));
        }
        Ok(Self { names, palette })
    }

    /// Palette as a flat `r,g,b;r,g,b;…` string (used in ONNX metadata).
    pub fn palette_string(&self) -> String {
        self.palette
            .iter()
            .map(|c| format!("{},{},{}", c[0], c[1], c[2]))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Parses names (comma separated) and a palette string written by [`Self::palette_string`].
    pub fn parse(names: &str, palette: &str) -> Result<Self, String> {
        let names: Vec<String> = names.split(',').map(|s| s.trim().to_string()).collect();
        let palette = palette
            .split(';')
            .map(|c| {
                let v: Vec<u8> = c
                    .split(',')
                    .map(|x| x.trim().parse::<u8>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("bad palette entry '{c}': {e}"))?;
                <[u8; 3]>::try_from(v.as_slice()).map_err(|_| format!("bad palette entry '{c}': expected r,g,b"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if names.len() != palette.len() {
            return Err(format!(
                "{} class names but {} palette colours",
                names.len(),
                palette.len()
            ));
        }
        if names.len() > MAX_CLASSES {
            return Err(format!(
                "{} classes: label masks are 8-bit, at most {MAX_CLASSES} classes",
                names.len()
            ));
        }
        Ok(Self { names, palette })
    }
}

/// The standard VOC colour map (bit-interleaved).
fn voc_color(i: usize) -> [u8; 3] {
    let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
    let mut c = i;
    for j in 0..8 {
        r |= ((c & 1) as u8) << (7 - j);
        g |= (((c >> 1) & 1) as u8) << (7 - j);
        b |= (((c >> 2) & 1) as u8) << (7 - j);
        c >>= 3;
    }
    [r, g, b]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue22_class_file_and_generic_table() {
        let t = ClassTable::parse_lines("# comment\nroad 128 64 128\n\ncar\n").unwrap();
        assert_eq!(t.names, ["road", "car"]);
        assert_eq!(t.palette, [[128, 64, 128], voc_color(1)]);
        for (bad, what) in [
            ("a 1 2", "line 1"),
            ("a\nb 1 2 300", "line 2"),
            ("a\na", "twice"),
            ("", "no classes"),
            ("a,b", "','"),
        ] {
            let e = ClassTable::parse_lines(bad).unwrap_err();
            assert!(e.contains(what), "{bad:?}: {e}");
        }
        let g = ClassTable::generic(21);
        assert_eq!(
            (g.names[20].as_str(), g.palette),
            ("class20", ClassTable::voc().palette)
        );
    }

    /// Issue #22: random class files (a seeded stand-in for a fuzz target; the project builds on
    /// stable only) give a table or an error, never a panic, and every table is consistent.
    #[test]
    fn issue22_class_file_random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let alphabet = b"ab\xc3\xa9 0123456789#,\n\t-+.";
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(22);
        for _ in 0..3000 {
            let n = rng.random_range(0..40);
            let bytes: Vec<u8> = (0..n).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            if let Ok(t) = ClassTable::parse_lines(&String::from_utf8_lossy(&bytes)) {
                assert_eq!(t.names.len(), t.palette.len());
                assert!(!t.is_empty() && t.len() <= MAX_CLASSES);
            }
        }
    }

    #[test]
    fn parse_rejects_more_classes_than_8_bit_ids_hold() {
        let names = vec!["c"; MAX_CLASSES + 1].join(",");
        let palette = vec!["1,2,3"; MAX_CLASSES + 1].join(";");
        let e = ClassTable::parse(&names, &palette).unwrap_err();
        assert!(e.contains("at most 255 classes"), "{e}");
        let names = vec!["c"; MAX_CLASSES].join(",");
        let palette = vec!["1,2,3"; MAX_CLASSES].join(";");
        assert_eq!(ClassTable::parse(&names, &palette).unwrap().len(), MAX_CLASSES);
    }

    #[test]
    fn voc_colormap_matches_reference() {
        let t = ClassTable::voc();
        assert_eq!(t.palette[1], [128, 0, 0]);
        assert_eq!(t.palette[15], [192, 128, 128]);
        assert_eq!(t.len(), 21);
    }

    #[test]
    fn palette_string_round_trips() {
        let t = ClassTable::camvid();
        let names = t.names.join(",");
        assert_eq!(ClassTable::parse(&names, &t.palette_string()).unwrap(), t);
        assert!(ClassTable::parse("a,b", "1,2,3").is_err());
        assert!(ClassTable::parse("a", "1,2").is_err());
    }
}
