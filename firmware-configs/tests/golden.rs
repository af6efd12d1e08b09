//! Golden files: what every shipped board renders (`firmware-configs/tests/golden/<board>/`),
//! byte for byte. After an intended change, regenerate them with
//! `EDGE_SEG_UPDATE_GOLDEN=1 cargo test -p edge-seg-firmware --test golden` and review the diff.

use std::path::{Path, PathBuf};

use edge_seg_firmware::overlay::Source;
use edge_seg_firmware::{BoardConfig, Overlay};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn every_board_renders_its_golden_files() {
    let update = std::env::var("EDGE_SEG_UPDATE_GOLDEN").as_deref() == Ok("1");
    let tmp = tempfile::tempdir().unwrap();
    // the model's name is part of the unit; its bytes are not compared
    let model = tmp.path().join("camvid-lite0.onnx");
    std::fs::write(&model, b"model").unwrap();
    let mut mismatches = Vec::new();
    let mut expected_files = Vec::new();
    for board in BoardConfig::shipped().unwrap() {
        let ov = Overlay::plan(&board, &model, None).unwrap();
        for f in &ov.files {
            let Source::Text(text) = &f.source else { continue };
            // flat names: rootfs/etc/udev/rules.d/70-edge-seg-camera.rules → 70-edge-seg-camera.rules
            let name = f.path.rsplit('/').next().unwrap();
            let path = golden_dir().join(&board.name).join(name);
            expected_files.push(path.clone());
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, text).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(want) if want == *text => {}
                Ok(_) => mismatches.push(format!("{} differs", path.display())),
                Err(e) => mismatches.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "rendered files differ from the golden ones (EDGE_SEG_UPDATE_GOLDEN=1 regenerates them):\n{}",
        mismatches.join("\n")
    );
    // and no stale golden file is left over
    let mut on_disk = Vec::new();
    for d in std::fs::read_dir(golden_dir()).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            on_disk.push(f.unwrap().path());
        }
    }
    on_disk.sort();
    expected_files.sort();
    assert_eq!(on_disk, expected_files);
}
