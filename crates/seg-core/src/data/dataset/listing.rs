//! Listing a split's items: folder splits of each layout, and split-list files.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{DataError, Item, Layout};

/// The split-list file `split` names, if it names one (see the [module docs](super)).
pub(super) fn resolve_list_path(root: &Path, split: &str) -> Option<PathBuf> {
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

/// Parses a split-list file's text (see the [module docs](super)).
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
pub(super) fn scan_split(root: &Path, layout: Layout, split: &str) -> Result<Vec<Item>, DataError> {
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
pub(super) fn items_from_list(root: &Path, layout: Layout, list: &Path) -> Result<Vec<Item>, DataError> {
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
    use super::super::fixtures::{camvid_fixture, write_gray, write_rgb};
    use super::super::Dataset;
    use super::*;

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
}
