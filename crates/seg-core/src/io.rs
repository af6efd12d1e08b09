//! The image files of a folder; atomic writes, the stable hash and panic messages
//! (re-exported from `seg-fs`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use seg_fs::{fnv1a, panic_message, write_atomic, write_atomic_with};

/// Extensions of the image files every folder reader takes (the formats the `image` build
/// decodes: PNG and JPEG), lower case.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Whether `p`'s extension (any case) is one of [`IMAGE_EXTENSIONS`].
pub fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The image files ([`IMAGE_EXTENSIONS`]) of folder `dir` (links to files count), sorted by path.
pub fn image_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| has_image_extension(p) && p.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_files_lists_images_sorted_whatever_the_case() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.PNG", "a.jpg", "c.jpeg", "notes.txt", "d.png.bak"] {
            fs::write(dir.path().join(n), b"").unwrap();
        }
        fs::create_dir(dir.path().join("e.png")).unwrap();
        let names: Vec<String> = image_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.jpg", "b.PNG", "c.jpeg"]);
        assert!(image_files(&dir.path().join("missing")).is_err());
    }
}
