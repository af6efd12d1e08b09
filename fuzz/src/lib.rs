//! Seeded mutation fuzzing of every parser of outside bytes (issue #23).
//!
//! `cargo fuzz` and AFL need a nightly compiler or LLVM plugins that this project's stable
//! toolchain does not have, so this is a plain, deterministic mutation fuzzer without coverage
//! feedback: each execution takes a seed input of the target (valid files built in memory),
//! applies 1–4 stacked mutations (bit flips, interesting bytes and integers, inserted and
//! deleted ranges, dictionary tokens, numbers replaced by extreme ones, splices, truncation)
//! and runs the target under `catch_unwind`. Execution `i` of a run with seed `s` is a pure
//! function of `(s, i)`, so any finding can be reproduced by its index.
//!
//! A panic is caught and counted in-process; an abort (allocation failure, stack overflow) or a
//! hang kills the child process that runs a batch, and the driver ([`driver`]) finds the input
//! by bisecting the batch. Findings are written to files and kept as regression inputs
//! (`fuzz/regressions/<target>/`), which `cargo test` replays.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub mod driver;

/// The function under test: runs the parser on one input; errors are fine, a panic is a finding.
pub type Exec = Box<dyn FnMut(&[u8])>;

/// A ready-to-run fuzz target: its seed inputs, dictionary and the function under test.
pub struct Harness {
    /// Valid (or nearly valid) inputs that mutations start from.
    pub seeds: Vec<Vec<u8>>,
    /// Tokens worth inserting (format keywords, metadata keys).
    pub dict: Vec<Vec<u8>>,
    /// The function under test.
    pub exec: Exec,
}

/// A registered target.
pub struct Target {
    /// Name on the command line and in the results.
    pub name: &'static str,
    /// What it feeds and what it exercises.
    pub about: &'static str,
    /// Builds the harness (seed files, a model for the state target, a temp dataset).
    pub build: fn() -> anyhow::Result<Harness>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "onnx",
        about: "ONNX bytes -> protobuf decode, graph validation, metadata description, the tract rewrites",
        build: targets::onnx,
    },
    Target {
        name: "onnx_load",
        about: "ONNX bytes -> the whole model load on tract (Segmenter::from_bytes_with), slower",
        build: targets::onnx_load,
    },
    Target {
        name: "y4m",
        about: "YUV4MPEG2 stream -> header, up to 3 frames, each converted to RGB",
        build: targets::y4m,
    },
    Target {
        name: "mjpeg",
        about: "MJPEG stream -> up to 3 frames, each decoded to RGB",
        build: targets::mjpeg,
    },
    Target {
        name: "raw",
        about: "first line '<rgb24|yuyv> <WxH>' (the --format/--size flags), then raw frames -> up to 3 frames to RGB",
        build: targets::raw,
    },
    Target {
        name: "adapt_toml",
        about: "adaptation config TOML (--adapt-config) -> parse and validate",
        build: targets::adapt_toml,
    },
    Target {
        name: "train_toml",
        about: "training config TOML (edge-seg-train --config) -> parse and validate",
        build: targets::train_toml,
    },
    Target {
        name: "board_toml",
        about: "Jetson board config TOML (edge-seg image --board FILE) -> parse, validate, overlay plan, the rendered service command line",
        build: targets::board_toml,
    },
    Target {
        name: "adapt_state",
        about: "adaptation state (--adapt-state, safetensors) -> checks and restore into a tiny model's adapter",
        build: targets::adapt_state,
    },
    Target {
        name: "split_list",
        about: "split list file (data.train_split = a path) -> Dataset::open on a 3-frame CamVid-layout folder",
        build: targets::split_list,
    },
    Target {
        name: "classes",
        about: "class file (--classes FILE) -> ClassTable::parse_lines",
        build: targets::classes,
    },
    Target {
        name: "tags",
        about: "tag file (data.tag_file, --tags; line format and JSON) -> TagFile::parse, check_images, to_text round trip",
        build: targets::tags,
    },
    Target {
        name: "pseudo_labels",
        about: "pseudo-label PNG (data.pseudo_labels, CAC with extra tags) -> decode, format, size and class-id checks",
        build: targets::pseudo_labels,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Numbers that tend to break size arithmetic.
const EXTREME_NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"65535",
    b"65536",
    b"4294967295",
    b"4294967296",
    b"18446744073709551615",
    b"99999999999999999999999",
    b"nan",
    b"inf",
    b"-inf",
    b"1e308",
    b"-0",
    b"0.0000001",
];

/// Input `i` of a run with seed `seed`: a deterministic mutation of one of `h`'s seeds.
pub fn generate(h: &Harness, seed: u64, i: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let base = &h.seeds[rng.random_range(0..h.seeds.len())];
    match rng.random_range(0..32) {
        0 => return base.clone(),
        1 => {
            let n = rng.random_range(0..256);
            return (0..n).map(|_| rng.random()).collect();
        }
        _ => {}
    }
    let mut x = base.clone();
    for _ in 0..rng.random_range(1..=4) {
        mutate(&mut x, h, &mut rng);
    }
    x
}

fn mutate(x: &mut Vec<u8>, h: &Harness, rng: &mut ChaCha8Rng) {
    let pos = |rng: &mut ChaCha8Rng, len: usize| if len == 0 { 0 } else { rng.random_range(0..len) };
    match rng.random_range(0..11) {
        0 if !x.is_empty() => {
            let p = pos(rng, x.len());
            x[p] ^= 1 << rng.random_range(0..8);
        }
        1 if !x.is_empty() => {
            let p = pos(rng, x.len());
            x[p] = rng.random();
        }
        2 if !x.is_empty() => {
            let p = pos(rng, x.len());
            x[p] = [0u8, 1, 0x7f, 0x80, 0xff, b'\n', b' ', 0xc3][rng.random_range(0..8)];
        }
        3 => {
            let p = pos(rng, x.len() + 1);
            let n = rng.random_range(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            x.splice(p..p, bytes);
        }
        4 if !x.is_empty() => {
            let p = pos(rng, x.len());
            let n = rng.random_range(1..=16.min(x.len() - p).max(1));
            x.drain(p..(p + n).min(x.len()));
        }
        5 if !x.is_empty() => {
            let p = pos(rng, x.len());
            let n = rng.random_range(1..=64).min(x.len() - p);
            let chunk = x[p..p + n].to_vec();
            let q = pos(rng, x.len() + 1);
            x.splice(q..q, chunk);
        }
        6 if x.len() >= 8 => {
            let p = rng.random_range(0..=x.len() - 8);
            let v: u64 = [
                0,
                u64::MAX,
                u32::MAX as u64,
                i32::MAX as u64,
                1 << 31,
                1 << 40,
                0x8000_0000_0000_0000,
            ][rng.random_range(0..7)];
            let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
            x[p..p + width].copy_from_slice(&v.to_le_bytes()[..width]);
        }
        7 if !h.dict.is_empty() => {
            let t = &h.dict[rng.random_range(0..h.dict.len())];
            let p = pos(rng, x.len() + 1);
            x.splice(p..p, t.iter().copied());
        }
        8 => {
            // replace a run of ASCII digits with an extreme number
            let starts: Vec<usize> = (0..x.len())
                .filter(|&k| x[k].is_ascii_digit() && (k == 0 || !x[k - 1].is_ascii_digit()))
                .collect();
            if let Some(&s) = starts.get(pos(rng, starts.len())) {
                let e = (s..x.len()).find(|&k| !x[k].is_ascii_digit()).unwrap_or(x.len());
                let n = EXTREME_NUMBERS[rng.random_range(0..EXTREME_NUMBERS.len())];
                x.splice(s..e, n.iter().copied());
            }
        }
        9 if h.seeds.len() > 1 => {
            let other = &h.seeds[rng.random_range(0..h.seeds.len())];
            let (p, q) = (pos(rng, x.len() + 1), pos(rng, other.len() + 1));
            x.truncate(p);
            x.extend_from_slice(&other[q..]);
        }
        _ => {
            let p = pos(rng, x.len() + 1);
            x.truncate(p);
        }
    }
}

thread_local! {
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs `exec` on `input`, returning the panic message (and, after [`quiet_panics`], where it
/// happened) if it panicked.
pub fn run_one(exec: &mut dyn FnMut(&[u8]), input: &[u8]) -> Option<String> {
    PANIC_AT.with(|p| p.borrow_mut().clear());
    catch_unwind(AssertUnwindSafe(|| exec(input))).err().map(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".into());
        let at = PANIC_AT.with(|p| p.borrow().clone());
        if at.is_empty() {
            msg
        } else {
            format!("{msg} (at {at})")
        }
    })
}

/// Replaces the default panic hook with one that only notes where the panic happened
/// (findings are reported by the driver, not on stderr).
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        if let Some(l) = info.location() {
            PANIC_AT.with(|p| *p.borrow_mut() = format!("{}:{}", l.file(), l.line()));
        }
    }));
}

/// Regression inputs of `target` (files under `dir/<target>/`), sorted.
pub fn regression_inputs(dir: &Path, target: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(target))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The targets' inputs and functions.
pub mod targets {
    use super::*;
    use edge_seg_runtime::source::{FrameSource, MjpegReader, RawReader, Y4mReader};

    /// Reads up to 3 frames of `src` and converts each to RGB (what the pipeline does).
    fn drain(src: &mut dyn FrameSource) {
        for _ in 0..3 {
            match src.next_frame() {
                Ok(Some(f)) => {
                    let _ = f.to_rgb();
                }
                _ => break,
            }
        }
    }

    /// A tiny random-weight edge-seg model (ResNet-lite encoder, 3 classes) at 32×48, with
    /// metadata, as ONNX bytes.
    pub fn tiny_model_bytes() -> anyhow::Result<Vec<u8>> {
        use prost::Message;
        let mut cfg = edge_seg_trainer::config::TrainConfig {
            model: seg_nn::ModelConfig {
                num_classes: 3,
                ..seg_nn::ModelConfig::tiny()
            },
            ..Default::default()
        };
        cfg.data.classes =
            seg_core::classes::ClassTable::parse_lines("sky\nroad\ncar\n").map_err(anyhow::Error::msg)?;
        cfg.data.input_size = [32, 48];
        let vars = candle_nn::VarMap::new();
        let model = seg_nn::SegModel::new(
            &cfg.model,
            candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, &candle_core::Device::Cpu),
        )?;
        seg_nn::init::reseed(&vars, 7)?;
        let meta = cfg.model_meta().to_map();
        let proto = seg_nn::export::to_onnx(&model, (32, 48), &meta)?;
        Ok(proto.encode_to_vec())
    }

    fn onnx_dict() -> Vec<Vec<u8>> {
        [
            "edge_seg.classes",
            "edge_seg.input_height",
            "edge_seg.input_width",
            "edge_seg.mean",
            "edge_seg.std",
            "Resize",
            "Conv",
            "QuantizeLinear",
            "DequantizeLinear",
            "strides",
            "pads",
            "kernel_shape",
            "dilations",
            "group",
            "logits",
            "input",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    }

    /// See [`TARGETS`].
    pub fn onnx() -> anyhow::Result<Harness> {
        let overrides = edge_seg_runtime::describe::MetaOverrides::default();
        Ok(Harness {
            seeds: vec![tiny_model_bytes()?],
            dict: onnx_dict(),
            exec: Box::new(move |b| {
                if let Ok((mut proto, meta, _)) = edge_seg_runtime::Segmenter::parse_model(b, "fuzz.onnx", &overrides) {
                    let _ = edge_seg_runtime::rewrite::prepare_graph(&mut proto, meta.input_hw);
                }
            }),
        })
    }

    /// See [`TARGETS`].
    pub fn onnx_load() -> anyhow::Result<Harness> {
        let opts = edge_seg_runtime::LoadOptions::tract();
        Ok(Harness {
            seeds: vec![tiny_model_bytes()?],
            dict: onnx_dict(),
            exec: Box::new(move |b| {
                if let Ok(mut seg) = edge_seg_runtime::Segmenter::from_bytes_with(b, "fuzz.onnx", &opts) {
                    let (h, w) = seg.meta.input_hw;
                    if (h as u64) * (w as u64) <= 1 << 16 {
                        let frame = image::RgbImage::new(w.max(1), h.max(1));
                        let _ = seg.segment(&frame);
                    }
                }
            }),
        })
    }

    fn y4m_seed(header: &str, w: usize, h: usize, frame_bytes: usize) -> Vec<u8> {
        let mut v = format!("YUV4MPEG2 W{w} H{h} {header}\n").into_bytes();
        for k in 0..2 {
            v.extend_from_slice(b"FRAME\n");
            v.extend((0..frame_bytes).map(|i| (i * 7 + k * 13) as u8));
        }
        v
    }

    /// See [`TARGETS`].
    pub fn y4m() -> anyhow::Result<Harness> {
        Ok(Harness {
            seeds: vec![
                y4m_seed("F25:1 Ip A1:1 C420jpeg", 8, 6, 8 * 6 * 3 / 2),
                y4m_seed("F30000:1001 C444", 4, 4, 4 * 4 * 3),
                y4m_seed("C422", 4, 2, 4 * 2 * 2),
                y4m_seed("Cmono XYSCSS=MONO", 6, 2, 12),
            ],
            dict: [
                "FRAME",
                "W",
                "H",
                "C420",
                "C420jpeg",
                "C420paldv",
                "C422",
                "C444",
                "Cmono",
                "F",
                "X",
                "\n",
                " ",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
            exec: Box::new(|b| {
                if let Ok(mut r) = Y4mReader::new(Box::new(Cursor::new(b.to_vec())), "fuzz.y4m".into()) {
                    drain(&mut r);
                }
            }),
        })
    }

    fn jpeg(w: u32, h: u32, q: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
            .encode_image(&img)
            .expect("in-memory JPEG encode");
        out
    }

    /// See [`TARGETS`].
    pub fn mjpeg() -> anyhow::Result<Harness> {
        let (a, b) = (jpeg(16, 8, 80), jpeg(8, 8, 30));
        let multipart = {
            let mut v = Vec::new();
            for j in [&a, &b] {
                v.extend_from_slice(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n");
                v.extend_from_slice(j);
                v.extend_from_slice(b"\r\n");
            }
            v
        };
        Ok(Harness {
            seeds: vec![[a.clone(), b.clone()].concat(), multipart, a],
            dict: vec![
                vec![0xff, 0xd8],
                vec![0xff, 0xd9],
                vec![0xff, 0xc0],
                vec![0xff, 0xda],
                b"--frame\r\n".to_vec(),
            ],
            exec: Box::new(|b| {
                let mut r = MjpegReader::new(Box::new(Cursor::new(b.to_vec())), "fuzz.mjpeg".into());
                drain(&mut r);
            }),
        })
    }

    /// See [`TARGETS`].
    pub fn raw() -> anyhow::Result<Harness> {
        let seed = |fmt: &str, w: usize, h: usize, bpp: usize| {
            let mut v = format!("{fmt} {w}x{h}\n").into_bytes();
            v.extend((0..w * h * bpp * 2).map(|i| (i * 5) as u8));
            v
        };
        Ok(Harness {
            seeds: vec![seed("rgb24", 4, 3, 3), seed("yuyv", 4, 2, 2)],
            dict: ["rgb24", "yuyv", "x", "\n"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            exec: Box::new(|b| {
                let Some(nl) = b.iter().position(|&c| c == b'\n') else {
                    return;
                };
                let Ok(line) = std::str::from_utf8(&b[..nl]) else {
                    return;
                };
                let Some((fmt, size)) = line.split_once(' ') else {
                    return;
                };
                let pf = match fmt.parse::<edge_seg_runtime::source::StreamFormat>() {
                    Ok(edge_seg_runtime::source::StreamFormat::Rgb24) => edge_seg_runtime::frame::PixelFormat::Rgb24,
                    Ok(edge_seg_runtime::source::StreamFormat::Yuyv) => edge_seg_runtime::frame::PixelFormat::Yuyv,
                    _ => return,
                };
                let Ok((w, h)) = edge_seg_runtime::source::parse_size(size) else {
                    return;
                };
                let mut r = RawReader::new(Box::new(Cursor::new(b[nl + 1..].to_vec())), "fuzz.raw".into(), pf, w, h);
                drain(&mut r);
            }),
        })
    }

    fn toml_dict() -> Vec<Vec<u8>> {
        [
            "=", "[", "]", "\"", "\n", "nan", "inf", "-1", "1e400", "true", "[[x]]", "{}", "'''",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    }

    /// See [`TARGETS`].
    pub fn adapt_toml() -> anyhow::Result<Harness> {
        let default = seg_core::config::to_toml(&edge_seg_runtime::adapt::AdaptConfig::default())?;
        Ok(Harness {
            seeds: vec![default.into_bytes(), b"lr = 0.001\nsteps_per_frame = 2\n".to_vec()],
            dict: toml_dict(),
            exec: Box::new(|b| {
                let Ok(text) = std::str::from_utf8(b) else {
                    return;
                };
                if let Ok(cfg) = seg_core::config::parse_toml::<edge_seg_runtime::adapt::AdaptConfig>(text, "fuzz.toml")
                {
                    let _ = cfg.validate();
                }
            }),
        })
    }

    /// See [`TARGETS`].
    pub fn train_toml() -> anyhow::Result<Harness> {
        let mut seeds =
            vec![seg_core::config::to_toml(&edge_seg_trainer::config::TrainConfig::default())?.into_bytes()];
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer/configs");
        for name in ["camvid_lite0.toml", "xseq_cac.toml", "xseqt_w2s.toml"] {
            if let Ok(t) = std::fs::read(configs.join(name)) {
                seeds.push(t);
            }
        }
        Ok(Harness {
            seeds,
            dict: toml_dict(),
            exec: Box::new(|b| {
                let Ok(text) = std::str::from_utf8(b) else {
                    return;
                };
                if let Ok(cfg) =
                    seg_core::config::parse_toml::<edge_seg_trainer::config::TrainConfig>(text, "fuzz.toml")
                {
                    let _ = cfg.validate();
                }
            }),
        })
    }

    /// See [`TARGETS`].
    pub fn board_toml() -> anyhow::Result<Harness> {
        let boards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs/boards");
        let mut seeds = Vec::new();
        for e in std::fs::read_dir(&boards)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "toml") {
                seeds.push(std::fs::read(&p)?);
            }
        }
        anyhow::ensure!(!seeds.is_empty(), "{}: no board files", boards.display());
        let dir = tempfile::tempdir()?;
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"model")?;
        Ok(Harness {
            seeds,
            dict: toml_dict()
                .into_iter()
                .chain(
                    ["'", "$", "%", "\\", "`", ";", "camera", "args", "/dev/video0"]
                        .iter()
                        .map(|s| s.as_bytes().to_vec()),
                )
                .collect(),
            exec: Box::new(move |b| {
                let _keep = &dir;
                let Ok(text) = std::str::from_utf8(b) else {
                    return;
                };
                if let Ok(board) = edge_seg_firmware::BoardConfig::parse(text, "fuzz.toml") {
                    if let Ok(o) = edge_seg_firmware::Overlay::plan(&board, &model, None) {
                        let _ = o.service_argv();
                    }
                }
            }),
        })
    }

    /// See [`TARGETS`].
    pub fn adapt_state() -> anyhow::Result<Harness> {
        use edge_seg_runtime::adapt::{state, AdaptConfig, Adapter};
        let model = tiny_model_bytes()?;
        let mut adapter = Adapter::new(&model, "fuzz.onnx", AdaptConfig::default())?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.safetensors");
        state::save(&adapter, &path)?;
        let seed = std::fs::read(&path)?;
        let origin = PathBuf::from("fuzz.state");
        Ok(Harness {
            seeds: vec![seed],
            dict: [
                "format",
                "model_fingerprint",
                "steps",
                "edge-seg-adapt-1",
                "dtype",
                "F32",
                "shape",
                "data_offsets",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
            exec: Box::new(move |b| {
                let _ = state::load_bytes(&mut adapter, b, &origin);
            }),
        })
    }

    /// See [`TARGETS`].
    pub fn split_list() -> anyhow::Result<Harness> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        for split in ["train", "trainannot"] {
            std::fs::create_dir_all(root.join(split))?;
        }
        for n in ["a_001.png", "a_002.png", "b_001.png"] {
            image::RgbImage::new(2, 2).save(root.join("train").join(n))?;
            image::GrayImage::new(2, 2).save(root.join("trainannot").join(n))?;
        }
        let list = root.join("list.txt");
        Ok(Harness {
            seeds: vec![
                b"a_001.png\na_002.png\n".to_vec(),
                b"# comment\n  b_001.png  \r\n\na_001.png".to_vec(),
                b"train/a_001.png trainannot/a_001.png\n".to_vec(),
            ],
            dict: ["a_001.png", "../", "/", "\n", "#", " ", "\r\n", "train/"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            exec: Box::new(move |b| {
                let _keep = &dir;
                if std::fs::write(&list, b).is_ok() {
                    let _ = seg_core::data::Dataset::open(
                        &root,
                        seg_core::data::Layout::Camvid,
                        &list.display().to_string(),
                        11,
                        11,
                    );
                }
            }),
        })
    }

    /// See [`TARGETS`].
    pub fn classes() -> anyhow::Result<Harness> {
        Ok(Harness {
            seeds: vec![
                b"sky\nroad 128 64 128\n# comment\ncar #400080\n".to_vec(),
                b"background\naeroplane\n".to_vec(),
            ],
            dict: ["#", " ", "\n", "255", "256", "#ffffff", ","]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            exec: Box::new(|b| {
                if let Ok(text) = std::str::from_utf8(b) {
                    let _ = seg_core::classes::ClassTable::parse_lines(text);
                }
            }),
        })
    }

    /// See [`TARGETS`].
    pub fn tags() -> anyhow::Result<Harness> {
        let classes = seg_core::classes::ClassTable::camvid();
        let mut seeds = vec![
            b"# image: classes\n0001TP_006690: Sky Building Road Car\n0001TP_006720, 0, 1, 3, 8\nb.png:\n".to_vec(),
            br#"{"0001TP_006690": ["Sky", "Road", 8], "b": []}"#.to_vec(),
        ];
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../splits/camvid-tags/train.txt");
        if let Ok(t) = std::fs::read(&file) {
            seeds.push(t.into_iter().take(2000).collect());
        }
        let names: Vec<String> = ["0001TP_006690.png", "0001TP_006720.png", "b.png"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Ok(Harness {
            seeds,
            dict: [
                "#", ":", ",", ";", "\n", "\t", " ", "{", "}", "[", "]", "\"", "11", "255", "256", "-1", "sky", ".png",
                "\u{e9}",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
            exec: Box::new(move |b| {
                // the JSON reader on inputs that look like JSON, the line reader on all
                let json = b.first() == Some(&b'{');
                for as_json in [false, json] {
                    if let Ok(t) = seg_core::tags::TagFile::parse(b, as_json, &classes, Path::new("fuzz.txt")) {
                        let _ = t.check_images(&names, "the split");
                        let again = seg_core::tags::TagFile::parse(
                            t.to_text(&classes).as_bytes(),
                            false,
                            &classes,
                            Path::new("fuzz.txt"),
                        )
                        .expect("the writer's output parses");
                        assert_eq!(again.len(), t.len(), "round trip");
                        let _ = t.presence(classes.len());
                    }
                }
            }),
        })
    }

    /// See [`TARGETS`].
    pub fn pseudo_labels() -> anyhow::Result<Harness> {
        let dir = tempfile::tempdir()?;
        let folder = dir.path().to_path_buf();
        let (w, h) = (24u32, 16u32);
        let images = edge_seg_trainer::data::Samples {
            names: vec!["a.png".into()],
            images: vec![image::RgbImage::new(w, h)],
            ..Default::default()
        };
        let png = |img: image::GrayImage| -> anyhow::Result<Vec<u8>> {
            let mut v = Vec::new();
            img.write_to(&mut Cursor::new(&mut v), image::ImageFormat::Png)?;
            Ok(v)
        };
        let seeds = vec![
            png(image::GrayImage::from_fn(w, h, |x, y| {
                image::Luma([((x + y) % 11) as u8])
            }))?,
            png(image::GrayImage::from_fn(w, h, |x, _| {
                image::Luma([if x < 8 { 255 } else { 3 }])
            }))?,
            png(image::GrayImage::new(h, w))?,
        ];
        Ok(Harness {
            seeds,
            dict: vec![
                b"IHDR".to_vec(),
                b"IDAT".to_vec(),
                b"IEND".to_vec(),
                vec![255],
                vec![11],
            ],
            exec: Box::new(move |b| {
                let _keep = &dir;
                if std::fs::write(folder.join("a.png"), b).is_ok() {
                    let _ = edge_seg_trainer::data::load_pseudo_labels(&folder, &images, 11);
                }
            }),
        })
    }
}
