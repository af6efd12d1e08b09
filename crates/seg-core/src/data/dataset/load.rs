//! Decoding and validating one item: the image, and the mask mapped to train ids.

use std::fs;
use std::io;
use std::path::Path;

use image::{GrayImage, RgbImage};

use super::{cityscapes_train_id, DataError, Dataset, Item, Layout, Sample};
use crate::IGNORE;

impl Dataset {
    /// Decodes item `i` and its mask (if it has one), validating both.
    ///
    /// Checks that the image and mask decode, that the mask exists and has the image's size,
    /// and that every mask value is a class id (`< num_classes`) or the dataset's `ignore_id`
    /// (Cityscapes: a `labelIds` value, mapped with [`CITYSCAPES_TRAIN_IDS`](super::CITYSCAPES_TRAIN_IDS)). The returned
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::fixtures::{camvid_fixture, write_gray, write_rgb};
    use super::*;

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
}
