//! The `edge-seg` binary as a user meets it: the default job, and bad input giving a one-line
//! error with exit code 2.

use seg_test_support::assert_user_error;
use std::path::Path;
use std::process::{Command, Output};

use image::{GrayImage, Luma, Rgb, RgbImage};
use seg_core::classes::ClassTable;

fn edge_seg(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-seg"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn camvid_fixture(root: &Path, bad_mask: Option<GrayImage>) {
    for d in ["val", "valannot"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for i in 0..2 {
        let name = format!("F_{i}.png");
        RgbImage::from_fn(64, 48, |x, _| Rgb([(x * 4) as u8, 100, 50]))
            .save(root.join("val").join(&name))
            .unwrap();
        let mask = match (&bad_mask, i) {
            (Some(m), 1) => m.clone(),
            _ => GrayImage::from_fn(64, 48, |_, y| Luma([if y < 20 { 0 } else { 3 }])),
        };
        mask.save(root.join("valannot").join(&name)).unwrap();
    }
}

/// Issue #2: `edge-seg` with no arguments segments the embedded samples into ./edge-seg-out.
#[test]
fn issue2_default_run_writes_overlays() {
    let dir = tempfile::tempdir().unwrap();
    let out = edge_seg(&[], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pngs: Vec<_> = std::fs::read_dir(dir.path().join("edge-seg-out")).unwrap().collect();
    assert_eq!(pngs.len(), edge_seg_runtime::DEFAULT_SAMPLES.len());
    let img = image::open(dir.path().join("edge-seg-out/0016E5_07959.png")).unwrap();
    assert_eq!((img.width(), img.height()), (480, 360));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ms/frame"), "{stdout}");
}

/// CI failure of 8c682c1: two runs' overlays differed because the status line shows the
/// measured FPS. `--no-status` leaves it out, so saved frames depend only on input and model;
/// without it, the runs differ only inside the status bar (top-left).
#[test]
fn issue22_no_status_makes_saved_frames_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    for (out_dir, extra) in [("a", Some("--no-status")), ("b", Some("--no-status")), ("c", None)] {
        let mut args = vec!["run", "--backend", "tract", "--output", out_dir];
        args.extend(extra);
        let out = edge_seg(&args, dir.path());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let bar_h = seg_core::draw::line_height() + 2 * 4 + 4;
    let mut differing = 0;
    for name in pngs_in(&dir.path().join("a")) {
        let read = |d: &str| std::fs::read(dir.path().join(d).join(&name)).unwrap();
        assert!(
            read("a") == read("b"),
            "{name}: two --no-status runs wrote different files"
        );
        let a = image::open(dir.path().join("a").join(&name)).unwrap().to_rgb8();
        let c = image::open(dir.path().join("c").join(&name)).unwrap().to_rgb8();
        for (x, y, p) in c.enumerate_pixels() {
            if p != a.get_pixel(x, y) {
                differing += 1;
                assert!(
                    y < bar_h && x < c.width() / 2,
                    "{name}: ({x}, {y}) differs outside the status bar"
                );
            }
        }
    }
    assert!(differing > 0, "the default run drew no status line");
}

#[test]
fn issue2_side_by_side_doubles_the_width() {
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("f.png");
    RgbImage::from_fn(96, 72, |x, y| Rgb([x as u8, y as u8, 9]))
        .save(&frame)
        .unwrap();
    let out = edge_seg(
        &[
            "run",
            "--input",
            "f.png",
            "--output",
            "o",
            "--mode",
            "side-by-side",
            "--alpha",
            "0.3",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(dir.path().join("o/f.png")).unwrap();
    assert_eq!((img.width(), img.height()), (192, 72));
}

#[test]
fn issue2_corrupt_png_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert_user_error(&edge_seg(&["run", "--input", "bad.png"], dir.path()), "bad.png");
}

#[test]
fn issue2_malformed_onnx_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), b"\x08\x07\x12garbage-bytes\xff\xff").unwrap();
    assert_user_error(&edge_seg(&["run", "--model", "m.onnx"], dir.path()), "m.onnx");
    // a valid protobuf without edge-seg metadata
    std::fs::write(dir.path().join("e.onnx"), b"").unwrap();
    assert_user_error(&edge_seg(&["run", "--model", "e.onnx"], dir.path()), "e.onnx");
}

#[test]
fn issue2_wrong_size_mask_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    camvid_fixture(dir.path(), Some(GrayImage::new(64, 40)));
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, edge_seg_runtime::SMALL_MODEL).unwrap();
    let out = edge_seg(
        &["eval", "--model", "m.onnx", "--data", ".", "--split", "val"],
        dir.path(),
    );
    assert_user_error(&out, "F_1.png");
}

#[test]
fn issue2_unknown_class_id_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    camvid_fixture(dir.path(), Some(GrayImage::from_pixel(64, 48, Luma([14]))));
    std::fs::write(dir.path().join("m.onnx"), edge_seg_runtime::SMALL_MODEL).unwrap();
    let out = edge_seg(
        &["eval", "--model", "m.onnx", "--data", ".", "--split", "val"],
        dir.path(),
    );
    assert_user_error(&out, "label id 14");
}

#[test]
fn issue2_eval_prints_miou_and_writes_confusion_and_record() {
    let dir = tempfile::tempdir().unwrap();
    camvid_fixture(dir.path(), None);
    std::fs::write(dir.path().join("m.onnx"), edge_seg_runtime::SMALL_MODEL).unwrap();
    let out = edge_seg(
        &[
            "eval",
            "--model",
            "m.onnx",
            "--data",
            ".",
            "--split",
            "val",
            "--confusion",
            "cm.csv",
            "--record",
            "r.json",
            "--record-name",
            "x_miou",
            "--json",
            "e.json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // issue #24: --json for scripts, the same mIoU as the record
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("e.json")).unwrap()).unwrap();
    assert_eq!(j["images"], 2);
    assert_eq!(j["classes"].as_object().unwrap().len(), 11);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mIoU") && stdout.contains("Road"), "{stdout}");
    let csv = std::fs::read_to_string(dir.path().join("cm.csv")).unwrap();
    assert_eq!(csv.lines().count(), 12);
    let total: u64 = csv
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').skip(1).map(|v| v.parse::<u64>().unwrap()))
        .sum();
    assert_eq!(total, 2 * 64 * 48);
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(rec[0]["name"], "x_miou");
    assert!((rec[0]["value"].as_f64().unwrap() - j["miou"].as_f64().unwrap()).abs() < 1e-9);
    assert!(rec[0]["date"].as_str().unwrap().len() == 10);
}

/// `edge-seg quantize` writes a QDQ model that `edge-seg run` can use (issue #3 groundwork).
#[test]
fn quantize_then_run_the_int8_graph() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), edge_seg_runtime::SMALL_MODEL).unwrap();
    std::fs::create_dir_all(dir.path().join("calib")).unwrap();
    for (name, bytes) in edge_seg_runtime::DEFAULT_SAMPLES.iter().take(2) {
        std::fs::write(dir.path().join("calib").join(name), bytes).unwrap();
    }
    let out = edge_seg(
        &[
            "quantize", "--model", "m.onnx", "--calib", "calib", "--out", "q.onnx", "--report", "q.json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("argmax agreement"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("q.json")).unwrap()).unwrap();
    assert!(report.is_object());
    let out = edge_seg(
        &["run", "--model", "q.onnx", "--input", "calib", "--output", "o"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_dir(dir.path().join("o")).unwrap().count(), 2);
    let bad = edge_seg(
        &[
            "quantize", "--model", "m.onnx", "--calib", "calib", "--out", "x.onnx", "--method", "kl",
        ],
        dir.path(),
    );
    assert_user_error(&bad, "invalid value 'kl' for '--method");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("minmax, percentile, entropy"));
}

// ---------------------------------------------------------------- issue #4: camera runtime

/// `n` distinct 64×48 test frames.
fn test_frames(n: usize) -> Vec<RgbImage> {
    (0..n)
        .map(|i| RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, (i * 40) as u8])))
        .collect()
}

fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .unwrap();
    out
}

fn stats_lines(path: &Path) -> (Vec<serde_json::Value>, serde_json::Value) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = lines.pop().unwrap()["summary"].clone();
    (lines, summary)
}

fn pngs_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Issue #4: a recorded YUYV stream (a camera's format) goes through the capture → preprocess →
/// inference → draw → output pipeline: every frame is written, timings are logged as JSON lines.
#[test]
fn issue4_recorded_yuyv_stream_drives_the_camera_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Vec::new();
    for f in test_frames(3) {
        rec.extend(edge_seg_runtime::frame::rgb_to_yuyv(&f));
    }
    std::fs::write(dir.path().join("cam.yuyv"), &rec).unwrap();
    let out = edge_seg(
        &[
            "run", "--input", "cam.yuyv", "--size", "64x48", "--output", "o", "--stats", "s.jsonl",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        pngs_in(&dir.path().join("o")),
        ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    );
    let (frames, summary) = stats_lines(&dir.path().join("s.jsonl"));
    assert_eq!(frames.len(), 3);
    assert_eq!(summary["frames_out"], 3);
    assert_eq!(summary["dropped"], 0, "recorded input waits instead of dropping");
    for f in &frames {
        assert!(f["infer_ms"].as_f64().unwrap() > 0.0);
        assert!(f["latency_ms"].as_f64().unwrap() >= f["infer_ms"].as_f64().unwrap());
    }
    assert!(summary["peak_rss_mib"].as_f64().unwrap() > 1.0);
    // no --size for raw frames: one-line error
    assert_user_error(&edge_seg(&["run", "--input", "cam.yuyv"], dir.path()), "--size");
}

/// Issue #4: MJPEG stream files and Y4M on stdin.
#[test]
fn issue4_mjpeg_file_and_y4m_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let frames = test_frames(2);
    let mjpeg: Vec<u8> = frames.iter().flat_map(jpeg_bytes).collect();
    std::fs::write(dir.path().join("rec.mjpeg"), mjpeg).unwrap();
    let out = edge_seg(&["run", "--input", "rec.mjpeg", "--output", "m"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pngs_in(&dir.path().join("m")).len(), 2);

    // Y4M 4:4:4 through a pipe
    let mut y4m = b"YUV4MPEG2 W64 H48 F30:1 C444\n".to_vec();
    for f in &frames {
        y4m.extend_from_slice(b"FRAME\n");
        let yuv: Vec<[u8; 3]> = f.pixels().map(|p| edge_seg_runtime::frame::rgb_to_ycbcr(p.0)).collect();
        for c in 0..3 {
            y4m.extend(yuv.iter().map(|p| p[c]));
        }
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edge-seg"))
        .args(["run", "--input", "-", "--output", "y"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&y4m).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = pngs_in(&dir.path().join("y"));
    assert_eq!(written, ["frame_000000.png", "frame_000001.png"]);
    // the overlay blends the decoded frame: the frame's blue channel differs between the frames
    let a = image::open(dir.path().join("y/frame_000000.png")).unwrap().to_rgb8();
    let b = image::open(dir.path().join("y/frame_000001.png")).unwrap().to_rgb8();
    assert_ne!(a.get_pixel(32, 40), b.get_pixel(32, 40));
}

/// Issue #4: a corrupt frame stops a recorded run with a one-line error naming the frame, but a
/// live feed (here a recording played at camera pace) skips it and goes on.
#[test]
fn issue4_corrupt_frames_fatal_for_files_skipped_when_live() {
    let dir = tempfile::tempdir().unwrap();
    let frames = test_frames(3);
    let mut bad = jpeg_bytes(&frames[1]);
    // zero the image height in the SOF0 segment: structurally a JPEG, undecodable
    let sof = bad.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bad[sof + 5] = 0;
    bad[sof + 6] = 0;
    let mut rec = jpeg_bytes(&frames[0]);
    rec.extend(&bad);
    rec.extend(jpeg_bytes(&frames[2]));
    std::fs::write(dir.path().join("rec.mjpg"), rec).unwrap();
    assert_user_error(
        &edge_seg(&["run", "--input", "rec.mjpg", "--output", "a"], dir.path()),
        "rec.mjpg frame 1",
    );
    let out = edge_seg(
        &[
            "run", "--input", "rec.mjpg", "--pace", "20", "--queue", "8", "--output", "b", "--stats", "s.jsonl",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pngs_in(&dir.path().join("b")), ["frame_000000.png", "frame_000002.png"]);
    assert_eq!(stats_lines(&dir.path().join("s.jsonl")).1["skipped"], 1);
}

/// Issue #4: the MJPEG-over-HTTP output, read by a real HTTP client while the pipeline runs.
#[test]
fn issue4_serve_streams_frames_to_an_http_client() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mjpeg: Vec<u8> = test_frames(40).iter().flat_map(jpeg_bytes).collect();
    std::fs::write(dir.path().join("rec.mjpeg"), mjpeg).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edge-seg"))
        .args(["run", "--input", "rec.mjpeg", "--pace", "10", "--serve", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no 'serving' line");
        if let Some(rest) = line.trim().strip_prefix("serving http://") {
            break rest.trim_end_matches('/').parse::<std::net::SocketAddr>().unwrap();
        }
    };
    let parts =
        edge_seg_runtime::output::serve::read_stream_parts(addr, 2, std::time::Duration::from_secs(30)).unwrap();
    assert_eq!(parts.len(), 2);
    for p in &parts {
        let img = image::load_from_memory_with_format(p, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
    }
    let page = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut v = String::new();
        s.read_to_string(&mut v).unwrap();
        v
    };
    assert!(page.contains("/stream.mjpg"), "{page}");
    let status = child.wait().unwrap();
    assert!(status.success());
}

/// Issue #4: `--display fb` draws through the framebuffer DrawTarget (a file stands in for
/// /dev/fb0, with its geometry given).
#[test]
fn issue4_framebuffer_output() {
    let dir = tempfile::tempdir().unwrap();
    test_frames(1)[0].save(dir.path().join("f.png")).unwrap();
    let out = edge_seg(
        &[
            "run",
            "--input",
            "f.png",
            "--display",
            "fb:fb0",
            "--fb-geometry",
            "80x60x32",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fb = std::fs::read(dir.path().join("fb0")).unwrap();
    assert_eq!(fb.len(), 80 * 60 * 4);
    // 64x48 centred in 80x60: the corner is black, the centre is drawn (alpha byte set)
    assert_eq!(&fb[..4], &[0, 0, 0, 0xFF]);
    let centre = (30 * 80 + 40) * 4;
    assert_ne!(&fb[centre..centre + 3], &[0, 0, 0]);
    assert!(
        !dir.path().join("edge-seg-out").exists(),
        "--display alone writes no PNGs"
    );
}

/// Issue #4: a missing camera is a one-line error; with --reconnect the process stays up,
/// retrying, and Ctrl-C (SIGINT) ends it cleanly.
#[test]
fn issue4_missing_camera_and_reconnect_until_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    assert_user_error(&edge_seg(&["run", "--camera", "97"], dir.path()), "/dev/video97");
    assert_user_error(
        &edge_seg(&["run", "--camera", "/dev/null"], dir.path()),
        "not a V4L2 device",
    );
    /// The child, killed and reaped however the test ends.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_edge-seg"))
            .args(["run", "--camera", "97", "--reconnect", "--stats", "s.jsonl"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // interrupt once it has retried twice (waiting for the lines, not a fixed time, so a loaded
    // machine does not fail the test)
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(stderr);
        let (mut all, mut line, mut retries) = (String::new(), Vec::new(), 0);
        while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            retries += usize::from(text.contains("retrying in"));
            if retries == 2 {
                let _ = tx.send(());
            }
            all.push_str(&text);
            line.clear();
        }
        all
    });
    let seen = rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "still running 30 s after SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let err = reader.join().unwrap();
    assert!(seen, "no two retries within 60 s: {err}");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.matches("retrying in").count() >= 2, "{err}");
    let (_, summary) = stats_lines(&dir.path().join("s.jsonl"));
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["frames_out"], 0);
}

/// Issue #4 end to end: the page served by `--serve`, rendered by headless Chromium, shows the
/// live segmentation stream. Needs Debian's `chromium` (.ci/run installs it); without it the
/// test says so and passes, unless EDGE_SEG_REQUIRE_CHROMIUM=1.
#[test]
fn issue4_headless_chromium_renders_the_stream_page() {
    use std::io::BufRead;
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(chromium) = chromium else {
        assert_ne!(
            std::env::var("EDGE_SEG_REQUIRE_CHROMIUM").as_deref(),
            Ok("1"),
            "chromium is required but not installed"
        );
        eprintln!("skipping: no chromium (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let frames: Vec<RgbImage> = (0..80)
        .map(|i| RgbImage::from_fn(160, 120, |x, y| Rgb([(x + i) as u8, (y * 2) as u8, 200])))
        .collect();
    let mjpeg: Vec<u8> = frames.iter().flat_map(jpeg_bytes).collect();
    std::fs::write(dir.path().join("rec.mjpeg"), mjpeg).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edge-seg"))
        // --alpha 0: the overlay shows the frame's own colours, so what reaches the page does
        // not depend on what the embedded model predicts on these synthetic frames
        .args([
            "run",
            "--input",
            "rec.mjpeg",
            "--pace",
            "10",
            "--serve",
            "127.0.0.1:0",
            "--alpha",
            "0",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no 'serving' line");
        if let Some(rest) = line.trim().strip_prefix("serving ") {
            break rest.to_string();
        }
    };
    // wait for the first frame, so the page has something to show
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    edge_seg_runtime::output::serve::read_stream_parts(addr, 1, std::time::Duration::from_secs(30)).unwrap();
    let shot = dir.path().join("shot.png");
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=400,320",
            "--timeout=3000",
        ])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    child.kill().ok();
    child.wait().ok();
    let img = image::open(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&out.stderr)))
        .to_rgb8();
    // the page itself is grey (background #111, text #ddd): coloured pixels come from the stream
    let coloured = img
        .pixels()
        .filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 40)
        .count();
    assert!(
        coloured > 160 * 120 / 2,
        "only {coloured} coloured pixels: the stream is not on the page"
    );
}

/// Issue #4: the shipped edge student loads, carries its metadata, and segments the sample frames
/// mostly like its teacher (the embedded baseline), in f32 and after int8 quantization.
#[test]
fn issue4_edge_student_segments_like_its_teacher() {
    use edge_seg_runtime::Segmenter;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/camvid-edge.onnx");
    let mut student = Segmenter::open(&path).unwrap();
    assert_eq!(student.meta.name, "camvid-edge");
    assert_eq!(student.meta.classes.len(), 11);
    let mut teacher = Segmenter::from_bytes(edge_seg_runtime::SMALL_MODEL, "teacher").unwrap();
    let frames: Vec<RgbImage> = edge_seg_runtime::DEFAULT_SAMPLES
        .iter()
        .map(|(_, b)| image::load_from_memory(b).unwrap().to_rgb8())
        .collect();
    let (qdq, _) = edge_seg_quantize::quantize_model(
        &seg_onnx::load(&path).unwrap(),
        &frames,
        &edge_seg_quantize::QuantizeOptions::default(),
    )
    .unwrap();
    let mut int8 = Segmenter::from_bytes(&seg_onnx::encode(&qdq), "student int8").unwrap();
    for frame in &frames {
        let t = teacher.segment(frame).unwrap();
        for (which, s) in [
            ("f32", student.segment(frame).unwrap()),
            ("int8", int8.segment(frame).unwrap()),
        ] {
            let same = s.iter().zip(&t).filter(|(a, b)| a == b).count() as f64 / t.len() as f64;
            eprintln!("{which}: {:.1} % of pixels agree with the teacher", 100.0 * same);
            assert!(same > 0.8, "{which}: only {:.1} % agree", 100.0 * same);
        }
    }
}

/// Issue #21 (decoder chosen by config): a model with the LR-ASPP decoder, exported by seg-nn,
/// runs through `edge-seg run`; on-device adaptation, which needs the DeepLab-lite decoder,
/// refuses it in one line (exit 2) and writes nothing.
#[cfg(feature = "adapt")]
#[test]
fn issue21_lraspp_model_runs_and_adaptation_refuses_it() {
    use candle_nn::{VarBuilder, VarMap};
    use seg_nn::model::DecoderKind;
    let dir = tempfile::tempdir().unwrap();
    let cfg = seg_nn::ModelConfig {
        decoder: DecoderKind::Lraspp,
        ..seg_nn::ModelConfig::tiny()
    };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F32, &candle_core::Device::Cpu);
    let model = seg_nn::SegModel::new(&cfg, vb).unwrap();
    seg_nn::init::reseed(&vm, 3).unwrap();
    let meta = seg_core::meta::ModelMeta {
        name: "lraspp".into(),
        classes: ClassTable::camvid(),
        input_hw: (64, 96),
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    let onnx = seg_nn::export::to_onnx(&model, (64, 96), &meta.to_map()).unwrap();
    std::fs::write(dir.path().join("lr.onnx"), seg_onnx::encode(&onnx)).unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for (name, bytes) in edge_seg_runtime::DEFAULT_SAMPLES {
        std::fs::write(frames.join(name), bytes).unwrap();
    }
    let out = edge_seg(
        &[
            "run",
            "--model",
            "lr.onnx",
            "--input",
            "frames",
            "--output",
            "out",
            "--backend",
            "tract",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pngs_in(&dir.path().join("out")).len(), 3);
    let out = edge_seg(
        &[
            "adapt",
            "--model",
            "lr.onnx",
            "--frames",
            "frames",
            "--out",
            "adapted.onnx",
        ],
        dir.path(),
    );
    assert_user_error(&out, "deeplab_lite");
    assert!(!dir.path().join("adapted.onnx").exists());
}

/// Issue #5: `run --adapt` adapts in the background, publishes guarded weights (the status line
/// says so), saves them to --adapt-state and loads them on restart; a truncated state file is
/// reported in one line and the run goes on with the source weights; `edge-seg adapt` is the
/// offline twin and writes an adapted model that `eval`-style loading accepts.
#[cfg(feature = "adapt")]
#[test]
fn issue5_run_adapt_persists_state_and_rejects_a_truncated_one() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for (name, bytes) in edge_seg_runtime::DEFAULT_SAMPLES {
        std::fs::write(frames.join(name), bytes).unwrap();
    }
    let state = dir.path().join("adapt.safetensors");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "run",
            "--input",
            "frames",
            "--output",
            "out",
            "--adapt",
            "--adapt-state",
            "adapt.safetensors",
            "--adapt-set",
            "every_n_frames=1",
            "--adapt-set",
            "swap_every=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        edge_seg(&a.iter().map(String::as_str).collect::<Vec<_>>(), dir.path())
    };
    let out = run(&[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("adapt: ") && stdout.contains("steps"), "{stdout}");
    assert!(state.exists(), "state written");
    assert_eq!(pngs_in(&dir.path().join("out")).len(), 3);

    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("adapted weights loaded"), "{stderr}");

    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&["--adapt-set", "swap_every=1000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warn: Vec<&str> = stderr.lines().filter(|l| l.contains("adapt.safetensors")).collect();
    assert_eq!(warn.len(), 1, "{stderr}");
    assert!(warn[0].contains("truncated") && warn[0].contains("keeping"), "{stderr}");
    // issue #23: the rejected file is kept aside, not overwritten by the new state
    let kept = dir.path().join("adapt.safetensors.rejected");
    assert_eq!(std::fs::read(&kept).unwrap(), &bytes[..bytes.len() / 2]);

    // bad settings: one line, exit 2
    assert_user_error(&run(&["--adapt-set", "crop=[100, 100]"]), "multiples of 32");
    assert_user_error(
        &edge_seg(&["run", "--input", "frames", "--adapt-reset"], dir.path()),
        "need --adapt",
    );

    // the offline twin
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/models/camvid-small.onnx");
    let out = edge_seg(
        &[
            "adapt",
            "--model",
            model,
            "--frames",
            "frames",
            "--out",
            "adapted.onnx",
            "--adapt-set",
            "every_n_frames=1",
            "--adapt-set",
            "swap_every=2",
            "--passes",
            "2",
            "--summary",
            "s.json",
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("6 frames") && stdout.contains("6 steps"), "{stdout}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap();
    assert_eq!(s["stats"]["steps"], 6);
    assert!(s["mean_step_ms"].as_f64().unwrap() > 0.0);
    edge_seg_runtime::Segmenter::open(&dir.path().join("adapted.onnx")).unwrap();
    // the collapse stress test: one near-constant frame after each of the 3 frames
    let out = edge_seg(
        &[
            "adapt",
            "--model",
            model,
            "--frames",
            "frames",
            "--out",
            "stressed.onnx",
            "--stress",
            "1",
            "--summary",
            "stress.json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("stress.json")).unwrap()).unwrap();
    assert_eq!((s["frames"].as_u64(), s["stats"]["steps"].as_u64()), (Some(6), Some(6)));
    assert_user_error(
        &edge_seg(
            &["adapt", "--model", model, "--frames", "nope", "--out", "a.onnx"],
            dir.path(),
        ),
        "nope",
    );
    // issue #25: the encoder's statistics re-estimated on the folder first (needs source frames;
    // refused by `run --adapt`, which has no folder to measure)
    // the frames darkened: a scene the source frames do not describe
    let dark = dir.path().join("dark");
    std::fs::create_dir_all(&dark).unwrap();
    for (name, bytes) in edge_seg_runtime::DEFAULT_SAMPLES {
        let mut f = image::load_from_memory(bytes).unwrap().to_rgb8();
        f.pixels_mut().for_each(|p| p.0 = p.0.map(|v| v / 3));
        f.save(dark.join(name)).unwrap();
    }
    let bn = |extra: &[&str]| {
        let mut a = vec![
            "adapt",
            "--model",
            model,
            "--frames",
            "dark",
            "--out",
            "bn.onnx",
            "--adapt-set",
            "lr=0.0",
        ];
        a.extend_from_slice(extra);
        edge_seg(&a, dir.path())
    };
    let out = bn(&[
        "--adapt-set",
        "encoder_stats=0.5",
        "--adapt-set",
        "guard.source_frames=\"frames\"",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("encoder statistics re-estimated on 3 frames against 3 source frames"),
        "{stderr}"
    );
    // the encoder's folded convolutions moved, the decoder's (lr 0) did not
    let inits = |p: &Path| -> std::collections::HashMap<String, Vec<f32>> {
        let g = seg_onnx::load(p).unwrap().graph.unwrap();
        g.initializer
            .iter()
            .filter(|t| t.data_type == 1)
            .map(|t| (t.name.clone(), seg_onnx::tensor_to_f32(t).unwrap()))
            .collect()
    };
    let (before, after) = (inits(Path::new(model)), inits(&dir.path().join("bn.onnx")));
    let changed = |prefix: &str| {
        before
            .iter()
            .filter(|(n, v)| n.starts_with(prefix) && after[*n] != **v)
            .count()
    };
    assert!(changed("encoder.") > 5, "the encoder did not change");
    assert_eq!(changed("decoder."), 0, "lr 0 changed the decoder");
    std::fs::remove_file(dir.path().join("bn.onnx")).unwrap();
    assert_user_error(&bn(&["--adapt-set", "encoder_stats=0.5"]), "guard.source_frames");
    assert_user_error(&bn(&["--adapt-set", "encoder_stats=1.5"]), "encoder_stats");
    assert!(!dir.path().join("bn.onnx").exists());
    assert_user_error(
        &edge_seg(
            &[
                "run",
                "--input",
                "frames",
                "--adapt",
                "--adapt-set",
                "encoder_stats=0.5",
                "--adapt-set",
                "guard.source_frames=\"frames\"",
            ],
            dir.path(),
        ),
        "edge-seg adapt --frames",
    );
}

/// Issue #24: an inference-only `edge-seg` (`--no-default-features`) keeps the adaptation flags
/// and the `adapt` verb in its parser and --help; using one is a one-line error naming it and
/// saying the binary was built without adaptation (exit 2), before any model is loaded or
/// anything is written.
#[cfg(not(feature = "adapt"))]
#[test]
fn issue24_adaptation_flags_without_the_feature_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let built_without = "built without on-device adaptation";
    for (args, flag) in [
        (&["run", "--adapt"][..], "--adapt"),
        (&["run", "--adapt", "--adapt-set", "lr=0.01"], "--adapt"),
        (&["run", "--adapt-set", "lr=0.01"], "--adapt-set"),
        (
            &["run", "--adapt-state", "s.safetensors", "--output", "out"],
            "--adapt-state",
        ),
        (&["run", "--adapt-config", "a.toml"], "--adapt-config"),
        (&["run", "--adapt-reset"], "--adapt-reset"),
        (
            &["adapt", "--model", "m.onnx", "--frames", "f", "--out", "a.onnx"],
            "edge-seg adapt",
        ),
        // the verb, not its (here missing) arguments
        (&["adapt"], "edge-seg adapt"),
    ] {
        let out = edge_seg(args, dir.path());
        assert_user_error(&out, &format!("{flag}: this edge-seg was {built_without}"));
        assert_user_error(&out, "cargo build -p edge-seg-runtime");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "something was written"
    );
    // --help says so
    for args in [&["--help"][..], &["run", "--help"], &["adapt", "--help"]] {
        let out = edge_seg(args, dir.path());
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("built without on-device adaptation"), "{args:?}: {help}");
    }
    // inference itself is there
    let out = edge_seg(&["run", "--max-frames", "1"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// torchvision's LR-ASPP MobileNetV3-Large (width 0.25, random weights) exported by
/// `torch.onnx.export` without edge-seg metadata (benches/engines/export_torchvision.py).
const FOREIGN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lraspp_mnv3_w025.onnx");

/// Issue #22: a PyTorch export without edge-seg metadata goes through run, eval and quantize,
/// with one warning line saying what was assumed; the int8 file it writes carries the
/// description.
#[test]
fn issue22_foreign_model_through_every_verb() {
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("f.png");
    RgbImage::from_fn(128, 96, |x, y| Rgb([(x * 2) as u8, (y * 2) as u8, 90]))
        .save(&frame)
        .unwrap();
    for backend in ["tract", "auto"] {
        let out = edge_seg(
            &[
                "run",
                "--model",
                FOREIGN,
                "--input",
                "f.png",
                "--output",
                backend,
                "--backend",
                backend,
            ],
            dir.path(),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("warning:") && err.contains("11 classes") && err.contains("ImageNet"),
            "{err}"
        );
        assert!(dir.path().join(backend).join("f.png").exists());
    }
    // a class file and the normalisation given: nothing assumed, no warning
    std::fs::write(dir.path().join("classes.txt"), ClassTable::camvid().names.join("\n")).unwrap();
    camvid_fixture(&dir.path().join("camvid"), None);
    let out = edge_seg(
        &[
            "eval",
            "--model",
            FOREIGN,
            "--data",
            "camvid",
            "--classes",
            "classes.txt",
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.25,0.25,0.25",
            "--backend",
            "tract",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Sky"));
    // quantize, then the int8 file runs without flags or warnings
    std::fs::create_dir(dir.path().join("calib")).unwrap();
    std::fs::copy(&frame, dir.path().join("calib/f.png")).unwrap();
    let out = edge_seg(
        &["quantize", "--model", FOREIGN, "--calib", "calib", "--out", "q.onnx"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta = seg_onnx::metadata(&seg_onnx::load(&dir.path().join("q.onnx")).unwrap());
    assert_eq!(meta.get("edge_seg.input_height").map(String::as_str), Some("96"));
    let out = edge_seg(
        &[
            "run",
            "--model",
            "q.onnx",
            "--input",
            "f.png",
            "--output",
            "q",
            "--backend",
            "tract",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

/// Issue #22: a foreign model whose input size is not fixed needs --input-size; bad flags and
/// class files are one-line errors.
#[test]
fn issue22_foreign_model_errors() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let mut proto = seg_onnx::load(Path::new(FOREIGN)).unwrap();
    {
        use seg_onnx::pb::tensor_shape_proto::dimension::Value;
        use seg_onnx::pb::type_proto::Value as T;
        let input = &mut proto.graph.as_mut().unwrap().input[0];
        let Some(T::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
            panic!("input is not a tensor")
        };
        let dims = &mut t.shape.as_mut().unwrap().dim;
        dims[2].value = Some(Value::DimParam("height".into()));
        dims[3].value = Some(Value::DimParam("width".into()));
    }
    std::fs::write(dir.path().join("dyn.onnx"), proto.encode_to_vec()).unwrap();
    let out = edge_seg(&["run", "--model", "dyn.onnx", "--backend", "tract"], dir.path());
    assert_user_error(&out, "--input-size");
    let out = edge_seg(
        &[
            "run",
            "--model",
            "dyn.onnx",
            "--backend",
            "tract",
            "--input-size",
            "96x128",
            "--output",
            "o",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // a class file with fewer classes than the output has
    std::fs::write(dir.path().join("c.txt"), "road\ncar\n").unwrap();
    let out = edge_seg(
        &[
            "run",
            "--model",
            FOREIGN,
            "--classes",
            "c.txt",
            "--backend",
            "tract",
            "--output",
            "o2",
        ],
        dir.path(),
    );
    assert_user_error(&out, "the model outputs 11");
    std::fs::write(dir.path().join("bad.txt"), "road 1 2\n").unwrap();
    let out = edge_seg(&["run", "--model", FOREIGN, "--classes", "bad.txt"], dir.path());
    assert_user_error(&out, "bad.txt");
    let out = edge_seg(&["run", "--model", FOREIGN, "--std", "0,1,1"], dir.path());
    assert_user_error(&out, "std");
    let out = edge_seg(&["run", "--mean", "1,2"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

/// Issue #23: graphs that would panic inside the backend are one-line model errors.
#[test]
fn issue23_invalid_graphs_are_model_errors() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let base = seg_onnx::load(Path::new(FOREIGN)).unwrap();
    // a graph output no node produces
    let mut p = base.clone();
    p.graph.as_mut().unwrap().output[0].name = "nobody_makes_this".into();
    std::fs::write(dir.path().join("a.onnx"), p.encode_to_vec()).unwrap();
    let out = edge_seg(&["run", "--model", "a.onnx", "--backend", "tract"], dir.path());
    assert_user_error(&out, "nobody_makes_this");
    // a Conv with stride 0
    let mut p = base.clone();
    let conv = p
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Conv")
        .unwrap();
    conv.attribute.iter_mut().find(|a| a.name == "strides").unwrap().ints = vec![0, 0];
    std::fs::write(dir.path().join("b.onnx"), p.encode_to_vec()).unwrap();
    let out = edge_seg(&["run", "--model", "b.onnx", "--backend", "tract"], dir.path());
    assert_user_error(&out, "strides");
}

/// Issue #23: `--output` into the input folder is refused before anything is written, and two
/// inputs with one stem get two overlays.
#[test]
fn issue23_overlays_never_overwrite_inputs_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir(&d).unwrap();
    let img = RgbImage::from_fn(64, 48, |x, _| Rgb([(x * 4) as u8, 100, 50]));
    img.save(d.join("a.png")).unwrap();
    img.save(d.join("a.jpg")).unwrap();
    let before = std::fs::read(d.join("a.png")).unwrap();
    for args in [
        vec!["run", "--input", "d", "--output", "d", "--backend", "tract"],
        vec!["run", "--input", "d/a.png", "--output", "d/", "--backend", "tract"],
    ] {
        let out = edge_seg(&args, dir.path());
        assert_user_error(&out, "overwrite");
    }
    assert_eq!(std::fs::read(d.join("a.png")).unwrap(), before);
    let out = edge_seg(
        &["run", "--input", "d", "--output", "o", "--backend", "tract"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pngs_in(&dir.path().join("o")), ["a.jpg.png", "a.png.png"]);
}

/// Issue #23: a Resize asking for an absurd output is a model error before tract allocates it.
#[test]
fn issue23_huge_resize_is_a_model_error() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let mut p = seg_onnx::pb::ModelProto::decode(edge_seg_runtime::SMALL_MODEL).unwrap();
    let g = p.graph.as_mut().unwrap();
    let resize = g.node.iter().rev().find(|n| n.op_type == "Resize").unwrap().clone();
    // point the last Resize at huge constant scales
    let name = "huge_scales".to_string();
    g.initializer
        .push(seg_onnx::tensor_f32(&name, &[4], &[1.0, 1.0, 1e6, 1e6]));
    let r = g.node.iter_mut().find(|n| n.name == resize.name).unwrap();
    r.input.resize(4, String::new());
    r.input[2] = name;
    r.input[3] = String::new();
    std::fs::write(dir.path().join("h.onnx"), p.encode_to_vec()).unwrap();
    let out = edge_seg(&["run", "--model", "h.onnx", "--backend", "tract"], dir.path());
    assert_user_error(&out, "Resize scale");
}
