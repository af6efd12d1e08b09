//! Image-level tags for weak supervision (issue #26): which classes an image shows, without
//! where.
//!
//! # Tag files
//! A text file, one image per line: the image's item name (its file name as in split lists;
//! an image extension `.png`/`.jpg`/`.jpeg` may be left out, names match without it), a
//! separator (`:`; or `,` / white space when the line has no `:` — with `:` the name may hold
//! spaces), then its classes — names (case-insensitive) or ids — separated by white space, `,`
//! or `;`. `#` starts a comment; blank
//! lines are skipped. A line with a name and no class says the image shows none of the classes.
//!
//! ```text
//! # image: classes
//! 0001TP_006690: Sky Building Road Car
//! 0001TP_006720, 0, 1, 3, 8
//! ```
//!
//! A `.json` file is an object from item name to a list of class names or ids:
//! `{"0001TP_006690": ["Sky", "Road", 8]}`.
//!
//! Errors name the file and line: an unknown class, an id out of range, an image listed twice,
//! an empty name. [`TagFile::check_images`] then matches the file against the images it tags
//! (an image without a line, a line without an image).
//!
//! For datasets with masks, [`tags_from_mask`] derives tags (a class is present when it covers
//! at least `min_pixels` pixels) and [`TagFile::to_text`] writes them in this format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::GrayImage;

use crate::classes::ClassTable;

/// The name an image is tagged under: its item name without an image extension.
fn key(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty() && crate::io::IMAGE_EXTENSIONS.iter().any(|x| ext.eq_ignore_ascii_case(x)) =>
        {
            stem
        }
        _ => name,
    }
}

/// Why a tag file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    /// The file cannot be read.
    #[error("{}: cannot read the tag file: {source}", path.display())]
    Io {
        /// The tag file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line (or JSON entry) is wrong.
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        /// The tag file.
        path: PathBuf,
        /// 1-based line (for JSON: the entry's 1-based position).
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The JSON does not parse or is not an object of lists.
    #[error("{}: {msg}", path.display())]
    Json {
        /// The tag file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The file and the tagged images disagree.
    #[error("{}: {msg}", path.display())]
    Images {
        /// The tag file.
        path: PathBuf,
        /// Which image and how.
        msg: String,
    },
}

/// The tags of a set of images, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagFile {
    /// The file it was read from (for messages; empty when built in memory).
    pub path: PathBuf,
    /// `(item name as written, sorted distinct class ids)` per image; names match with or
    /// without an image extension.
    pub entries: Vec<(String, Vec<u8>)>,
    index: HashMap<String, usize>,
}

impl TagFile {
    /// Builds a tag set from entries (class ids are sorted and deduplicated); fails on a
    /// duplicate name or an id `>= num_classes`.
    pub fn from_entries(entries: Vec<(String, Vec<u8>)>, num_classes: usize) -> Result<Self, TagError> {
        let mut t = Self::default();
        for (i, (name, ids)) in entries.into_iter().enumerate() {
            let line_err = |msg: String| TagError::Line {
                path: PathBuf::new(),
                line: i + 1,
                msg,
            };
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= num_classes) {
                return Err(line_err(format!("class id {id} is out of range (0..{num_classes})")));
            }
            t.push(name, ids).map_err(line_err)?;
        }
        Ok(t)
    }

    /// Reads a tag file (`.json` by extension, the line format otherwise) against `classes`.
    pub fn read(path: &Path, classes: &ClassTable) -> Result<Self, TagError> {
        let bytes = std::fs::read(path).map_err(|source| TagError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Self::parse(&bytes, json, classes, path)
    }

    /// Parses tag-file bytes; `path` only names the file in errors.
    pub fn parse(bytes: &[u8], json: bool, classes: &ClassTable, path: &Path) -> Result<Self, TagError> {
        let text = std::str::from_utf8(bytes).map_err(|e| TagError::Json {
            path: path.to_path_buf(),
            msg: format!("not UTF-8 text ({e})"),
        })?;
        let mut t = if json {
            Self::parse_json(text, classes, path)?
        } else {
            Self::parse_lines(text, classes, path)?
        };
        t.path = path.to_path_buf();
        Ok(t)
    }

    fn parse_lines(text: &str, classes: &ClassTable, path: &Path) -> Result<Self, TagError> {
        let mut t = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |msg: String| TagError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                msg,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            // `name: classes` (the name may hold spaces), else `name,classes` / `name classes`
            let cut = line
                .find(':')
                .unwrap_or_else(|| line.find(|c: char| c == ',' || c.is_whitespace()).unwrap_or(line.len()));
            let (name, rest) = line.split_at(cut);
            let rest = rest.strip_prefix([':', ',']).unwrap_or(rest);
            let name = name.trim();
            if name.is_empty() {
                return Err(err("the line has no image name".into()));
            }
            let mut ids = Vec::new();
            for tok in rest.split(|c: char| c == ',' || c == ';' || c.is_whitespace()) {
                if !tok.is_empty() {
                    ids.push(class_id(tok, classes).map_err(&err)?);
                }
            }
            t.push(name.to_string(), ids).map_err(err)?;
        }
        Ok(t)
    }

    fn parse_json(text: &str, classes: &ClassTable, path: &Path) -> Result<Self, TagError> {
        let json_err = |msg: String| TagError::Json {
            path: path.to_path_buf(),
            msg,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| json_err(format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(json_err(
                "expected an object from image name to a list of classes".into(),
            ));
        };
        let mut t = Self::default();
        // serde_json's map is ordered by key: entries come out sorted by name
        for (i, (name, list)) in map.into_iter().enumerate() {
            let err = |msg: String| TagError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                msg: format!("entry '{name}': {msg}"),
            };
            if name.trim().is_empty() {
                return Err(err("empty image name".into()));
            }
            let serde_json::Value::Array(items) = list else {
                return Err(err("expected a list of class names or ids".into()));
            };
            let mut ids = Vec::new();
            for it in items {
                let tok = match it {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    other => return Err(err(format!("{other} is not a class name or id"))),
                };
                ids.push(class_id(&tok, classes).map_err(&err)?);
            }
            t.push(name.trim().to_string(), ids).map_err(err)?;
        }
        Ok(t)
    }

    fn push(&mut self, name: String, mut ids: Vec<u8>) -> Result<(), String> {
        if name.trim() != name || name.contains([':', '#', '\n', '\r']) {
            return Err(format!(
                "image name {name:?} cannot be written in a tag file (':', '#', line breaks or white space at the ends)"
            ));
        }
        let k = key(&name).to_string();
        if let Some(&first) = self.index.get(&k) {
            return Err(format!("image '{k}' is tagged twice (first as entry {})", first + 1));
        }
        ids.sort_unstable();
        ids.dedup();
        self.index.insert(k, self.entries.len());
        self.entries.push((name, ids));
        Ok(())
    }

    /// Number of tagged images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no image is tagged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The class ids of image `name` (a file name, with or without its image extension).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.index.get(key(name)).map(|&i| self.entries[i].1.as_slice())
    }

    /// Checks that the file tags exactly the images `names` (each has a line, each line has an
    /// image); `what` names the image set in the message (e.g. `data.unlabeled_splits`).
    pub fn check_images(&self, names: &[String], what: &str) -> Result<(), TagError> {
        let err = |msg: String| TagError::Images {
            path: self.path.clone(),
            msg,
        };
        let mut missing = names.iter().filter(|n| self.get(n).is_none());
        if let Some(first) = missing.next() {
            let more = missing.count();
            let tail = if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            };
            return Err(err(format!("image '{first}' of {what} has no tag line{tail}")));
        }
        let known: std::collections::HashSet<&str> = names.iter().map(|n| key(n)).collect();
        let mut extra = self.entries.iter().filter(|(n, _)| !known.contains(key(n)));
        if let Some((first, _)) = extra.next() {
            let more = extra.count();
            let tail = if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            };
            return Err(err(format!(
                "tags image '{first}', which is not among the images of {what}{tail}"
            )));
        }
        Ok(())
    }

    /// The file in the line format, class names from `classes`.
    pub fn to_text(&self, classes: &ClassTable) -> String {
        let mut s = String::from("# edge-seg tag file: item name, then the classes the image shows\n");
        for (name, ids) in &self.entries {
            s.push_str(name);
            s.push(':');
            for &id in ids {
                s.push(' ');
                s.push_str(&classes.names[id as usize]);
            }
            s.push('\n');
        }
        s
    }

    /// In how many images each class `0..num_classes` is tagged.
    pub fn presence(&self, num_classes: usize) -> Vec<usize> {
        presence(self.entries.iter().map(|(_, ids)| ids.as_slice()), num_classes)
    }
}

/// In how many of the images (each given by its class ids) each class `0..num_classes` is
/// tagged; ids outside the range are not counted.
pub fn presence<'a>(images: impl IntoIterator<Item = &'a [u8]>, num_classes: usize) -> Vec<usize> {
    let mut p = vec![0; num_classes];
    for ids in images {
        for &id in ids {
            if let Some(k) = p.get_mut(id as usize) {
                *k += 1;
            }
        }
    }
    p
}

/// `[num_classes]` multi-hot vector of `ids` (1 for a tagged class).
pub fn multi_hot(ids: &[u8], num_classes: usize) -> Vec<f32> {
    let mut v = vec![0f32; num_classes];
    for &id in ids {
        if (id as usize) < num_classes {
            v[id as usize] = 1.0;
        }
    }
    v
}

/// The classes of `mask` covering at least `min_pixels` pixels (void and ids `>= num_classes`
/// are not classes).
pub fn tags_from_mask(mask: &GrayImage, num_classes: usize, min_pixels: u64) -> Vec<u8> {
    crate::data::splits::class_histogram(mask, num_classes)
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c >= min_pixels.max(1))
        .map(|(id, _)| id as u8)
        .collect()
}

/// Which classes tags can teach: present in some images but absent from at least
/// `min_absent` of them (a class tagged in every image gives the classifier nothing to tell
/// apart, so its CAM never learns where it is).
pub fn teachable(presence: &[usize], images: usize, min_absent: f64) -> Vec<bool> {
    presence
        .iter()
        .map(|&p| p > 0 && images > 0 && (images - p.min(images)) as f64 / images as f64 >= min_absent)
        .collect()
}

fn class_id(tok: &str, classes: &ClassTable) -> Result<u8, String> {
    let n = classes.len();
    if let Ok(id) = tok.parse::<usize>() {
        return if id < n {
            Ok(id as u8)
        } else {
            Err(format!("class id {id} is out of range (0..{n})"))
        };
    }
    classes
        .names
        .iter()
        .position(|c| c.eq_ignore_ascii_case(tok))
        .map(|i| i as u8)
        .ok_or_else(|| format!("unknown class '{tok}' (classes: {})", classes.names.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camvid() -> ClassTable {
        ClassTable::camvid()
    }

    fn parse(text: &str) -> Result<TagFile, TagError> {
        TagFile::parse(text.as_bytes(), false, &camvid(), Path::new("tags.txt"))
    }

    #[test]
    fn lines_with_names_ids_and_separators() {
        let t = parse("# comment\n\na: Sky road 8 # trailing\nb,0,1;3\nc\tsky\u{20}\n e:\nmy frame.png: 9\n").unwrap();
        assert_eq!(t.get("my frame"), Some(&[9u8][..]));
        let names = camvid().names;
        assert_eq!(names[3], "Road");
        assert_eq!(t.get("a"), Some(&[0u8, 3, 8][..]));
        assert_eq!(t.get("b"), Some(&[0u8, 1, 3][..]));
        assert_eq!(t.get("c"), Some(&[0u8][..]));
        assert_eq!(t.get("e"), Some(&[][..]));
        assert_eq!(t.len(), 5);
        // round trip through the writer
        let again = parse(&t.to_text(&camvid())).unwrap();
        assert_eq!(again.entries, t.entries);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = parse("a: Sky\nb: Tree Zebra\n").unwrap_err().to_string();
        assert!(e.starts_with("tags.txt:2: unknown class 'Zebra'"), "{e}");
        let e = parse("a: 0\n\na: 1\n").unwrap_err().to_string();
        assert!(e.starts_with("tags.txt:3: image 'a' is tagged twice"), "{e}");
        let e = parse("a: 11\n").unwrap_err().to_string();
        assert!(e.contains("tags.txt:1: class id 11 is out of range (0..11)"), "{e}");
        let e = parse(": Sky\n").unwrap_err().to_string();
        assert!(e.contains("tags.txt:1: the line has no image name"), "{e}");
        let e = TagFile::parse(b"\xff\xfe", false, &camvid(), Path::new("t.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.txt: not UTF-8"), "{e}");
        let e = TagFile::read(Path::new("/no/such/tags.txt"), &camvid())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/no/such/tags.txt: cannot read the tag file"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn json_files() {
        let p = Path::new("tags.json");
        let t = TagFile::parse(br#"{"b": ["sky", 3], "a": []}"#, true, &camvid(), p).unwrap();
        assert_eq!(t.get("b"), Some(&[0u8, 3][..]));
        assert_eq!(t.get("a"), Some(&[][..]));
        for (bad, want) in [
            (&br#"["a"]"#[..], "tags.json: expected an object"),
            (br#"{"a": "Sky"}"#, "tags.json:1: entry 'a': expected a list"),
            (br#"{"a": [true]}"#, "tags.json:1: entry 'a': true is not a class"),
            (br#"{"a": ["Cat"]}"#, "tags.json:1: entry 'a': unknown class 'Cat'"),
            (br#"{"a": [1"#, "tags.json: not valid JSON"),
            (
                br#"{"a:b": [1]}"#,
                "tags.json:1: entry 'a:b': image name \"a:b\" cannot be written",
            ),
        ] {
            let e = TagFile::parse(bad, true, &camvid(), p).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn images_must_match_the_file() {
        let t = TagFile::parse(b"a: Sky\nb: Road\n", false, &camvid(), Path::new("t.txt")).unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        t.check_images(&names(&["b", "a"]), "the split").unwrap();
        // item names are file names: the image extension is optional on either side
        t.check_images(&names(&["b.png", "a.JPG"]), "the split").unwrap();
        assert_eq!(t.get("b.png"), Some(&[3u8][..]));
        assert_eq!(t.get("b.tif"), None);
        let e = TagFile::parse(b"a.png: Sky\na: Road\n", false, &camvid(), Path::new("t.txt")).unwrap_err();
        assert!(e.to_string().contains("t.txt:2: image 'a' is tagged twice"), "{e}");
        let e = t
            .check_images(&names(&["a", "b", "c", "d"]), "the split")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.txt: image 'c' of the split has no tag line (and 1 more)");
        let e = t.check_images(&names(&["a"]), "the split").unwrap_err().to_string();
        assert_eq!(e, "t.txt: tags image 'b', which is not among the images of the split");
    }

    #[test]
    fn tags_from_masks_and_teachable_classes() {
        let mut m = GrayImage::new(10, 10); // all class 0
        for x in 0..10 {
            m.put_pixel(x, 0, image::Luma([4]));
        }
        m.put_pixel(0, 1, image::Luma([7]));
        m.put_pixel(1, 1, image::Luma([11])); // void
        assert_eq!(tags_from_mask(&m, 11, 5), vec![0, 4]);
        assert_eq!(tags_from_mask(&m, 11, 1), vec![0, 4, 7]);
        assert_eq!(multi_hot(&[0, 4], 5), vec![1.0, 0.0, 0.0, 0.0, 1.0]);
        let t = TagFile::from_entries(vec![("x".into(), vec![4, 0, 4]), ("y".into(), vec![0])], 11).unwrap();
        assert_eq!(t.get("x"), Some(&[0u8, 4][..]));
        let p = t.presence(5);
        assert_eq!(p, vec![2, 0, 0, 0, 1]);
        // class 0 is in every image: not teachable; class 4 is absent from half
        assert_eq!(teachable(&p, 2, 0.1), vec![false, false, false, false, true]);
        assert!(TagFile::from_entries(vec![("x".into(), vec![11])], 11).is_err());
    }
}
