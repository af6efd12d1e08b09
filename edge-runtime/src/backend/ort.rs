//! onnxruntime backend, through the `ort` crate with `load-dynamic`: nothing is downloaded or
//! linked at build time; `libonnxruntime.so` is loaded when the first session is created, from
//! `ORT_DYLIB_PATH` or from the pip package `onnxruntime` ([`find_library`]).
//!
//! Session settings follow onnxruntime's advice for low-latency, single-stream inference:
//! all graph optimisations, sequential execution (`inter_op` 1), `intra_op` threads = the
//! `--threads` of the run, the CPU memory arena and memory patterns on (fixed input shape). The
//! input tensor is allocated once and refilled for every frame.
//!
//! Execution providers: CPU (tested here), CUDA and TensorRT (compiled in always; asking for one
//! the loaded library lacks is an error naming the library). The GPU providers are untested in
//! this repository: no GPU was available where it was written.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ort::ep::{self, ExecutionProvider};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use super::{Backend, Logits};
use crate::RuntimeError;

/// Where to look for the library; named in every "not found" error.
pub const HOW_TO_GET: &str = "set ORT_DYLIB_PATH to a libonnxruntime.so (1.17 or newer), or `pip install onnxruntime`";

/// An onnxruntime execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Ep {
    /// MLAS on the CPU (every onnxruntime build has it).
    #[default]
    Cpu,
    /// CUDA (needs a CUDA build of onnxruntime, e.g. onnxruntime-gpu or a Jetson build).
    Cuda,
    /// TensorRT, with CUDA for the nodes TensorRT does not take (needs a TensorRT build).
    Tensorrt,
}

impl Ep {
    /// The name used on the command line.
    pub fn flag(self) -> &'static str {
        match self {
            Ep::Cpu => "cpu",
            Ep::Cuda => "cuda",
            Ep::Tensorrt => "tensorrt",
        }
    }
}

/// Settings of an onnxruntime session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrtOptions {
    /// The execution provider.
    pub ep: Ep,
    /// Intra-op threads (0 = onnxruntime's default: one per physical core).
    pub threads: usize,
    /// CUDA / TensorRT device.
    pub device_id: i32,
    /// TensorRT: build fp16 engines.
    pub trt_fp16: bool,
    /// TensorRT: build int8 engines (for QDQ graphs the scales come from the graph).
    pub trt_int8: bool,
    /// TensorRT: keep built engines in this folder and reuse them at the next start.
    pub trt_cache: Option<PathBuf>,
    /// Idle intra-op threads sleep instead of spinning (onnxruntime's
    /// `session.intra_op.allow_spinning = 0`): leaves the cores to the pipeline's other stages
    /// between frames, at the cost of a wake-up per parallel section.
    pub no_spin: bool,
}

/// The loaded library: its path and version, or why it could not be loaded (once per process).
struct Loaded {
    env: ort::environment::Environment,
    path: PathBuf,
    version: String,
}

static LIBRARY: OnceLock<Result<Loaded, String>> = OnceLock::new();

/// Loads onnxruntime (once per process) and describes it: `onnxruntime 1.32.0 (PATH)`.
/// The error is one line saying what was tried and how to get the library.
pub fn library() -> Result<String, RuntimeError> {
    loaded().map(|l| format!("onnxruntime {} ({})", l.version, l.path.display()))
}

fn loaded() -> Result<&'static Loaded, RuntimeError> {
    LIBRARY
        .get_or_init(load)
        .as_ref()
        .map_err(|e| RuntimeError::Backend(e.clone()))
}

fn load() -> Result<Loaded, String> {
    let path = find_library()?;
    let builder = ort::init_from(&path).map_err(|e| format!("onnxruntime: {e}; {HOW_TO_GET}"))?;
    let env = builder
        .with_name("edge-seg")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("onnxruntime ({}): cannot create its environment: {e}", path.display()))?;
    let version = ort::info()
        .split(',')
        .find_map(|p| p.trim().strip_prefix("git-branch=rel-"))
        .map(str::to_string)
        .unwrap_or_else(|| "(version unknown)".into());
    Ok(Loaded { env, path, version })
}

/// The onnxruntime library to load: `ORT_DYLIB_PATH` when set (it must exist), else
/// `onnxruntime/capi/libonnxruntime.so*` of the pip package that `python3` imports, else of a
/// site-packages folder in the usual places.
pub fn find_library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ORT_DYLIB_PATH={}: no such file", p.display()))
        };
    }
    let mut dirs: Vec<PathBuf> = python_package_dir().into_iter().collect();
    dirs.extend(site_package_dirs().into_iter().map(|d| d.join("onnxruntime")));
    for d in &dirs {
        if let Some(lib) = library_in(&d.join("capi")) {
            return Ok(lib);
        }
    }
    Err(format!("onnxruntime library not found: {HOW_TO_GET}"))
}

/// `libonnxruntime.so*` in `dir` (the highest version when there are several).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n == "libonnxruntime.so" || n.starts_with("libonnxruntime.so."))
        })
        .collect();
    libs.sort();
    libs.pop()
}

/// The folder of the `onnxruntime` package that `python3` would import, asked without importing
/// it; `None` when python3 is absent, fails, or takes more than 5 s.
fn python_package_dir() -> Option<PathBuf> {
    let code = "import importlib.util as u; s = u.find_spec('onnxruntime'); \
                print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    let mut child = Command::new("python3")
        .args(["-c", code])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(None) if start.elapsed() < Duration::from_secs(5) => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    let dir = out.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// site-packages / dist-packages folders of the usual Python installs.
fn site_package_dirs() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/local/lib")];
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".local/lib"));
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        roots.insert(0, PathBuf::from(venv).join("lib"));
    }
    let mut out = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut pys: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python3"))
            })
            .collect();
        pys.sort();
        for py in pys.into_iter().rev() {
            out.push(py.join("site-packages"));
            out.push(py.join("dist-packages"));
        }
    }
    out
}

/// An onnxruntime session for a fixed `[1, 3, h, w]` input.
pub struct OrtBackend {
    session: Session,
    input: Tensor<f32>,
    input_name: String,
    label: &'static str,
}

impl OrtBackend {
    /// Builds a session from ONNX bytes; `origin` names the model in errors.
    pub fn new(bytes: &[u8], origin: &str, hw: (u32, u32), opts: &OrtOptions) -> Result<Self, RuntimeError> {
        let lib = loaded()?;
        let model_err = |what: &str, e: String| RuntimeError::Model {
            path: origin.to_string(),
            reason: format!("onnxruntime: {what}: {}", one_line(&e)),
        };
        let ep_err = |e: String| {
            RuntimeError::Backend(format!(
                "--ep {}: onnxruntime {} ({}): {}",
                opts.ep.flag(),
                lib.version,
                lib.path.display(),
                one_line(&e)
            ))
        };
        let available = |avail: ort::Result<bool>, what: &str| match avail {
            Ok(true) => Ok(()),
            Ok(false) => Err(ep_err(format!(
                "this library has no {what} execution provider; point ORT_DYLIB_PATH at a build with it"
            ))),
            Err(e) => Err(ep_err(e.to_string())),
        };
        let providers = match opts.ep {
            Ep::Cpu => vec![ep::CPU::default().with_arena_allocator(true).build().error_on_failure()],
            Ep::Cuda => {
                available(ep::CUDA::is_available(), "CUDA")?;
                vec![ep::CUDA::default()
                    .with_device_id(opts.device_id)
                    .build()
                    .error_on_failure()]
            }
            Ep::Tensorrt => {
                available(ep::TensorRT::is_available(), "TensorRT")?;
                let mut trt = ep::TensorRT::default()
                    .with_device_id(opts.device_id)
                    .with_fp16(opts.trt_fp16)
                    .with_int8(opts.trt_int8);
                if let Some(dir) = &opts.trt_cache {
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display())
                        .with_timing_cache(true)
                        .with_timing_cache_path(dir.display());
                }
                vec![
                    trt.build().error_on_failure(),
                    ep::CUDA::default()
                        .with_device_id(opts.device_id)
                        .build()
                        .error_on_failure(),
                ]
            }
        };
        let builder = Session::builder(&lib.env)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::Level3)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_intra_threads(opts.threads).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|b| b.with_parallel_execution(false).map_err(Into::into))
            .and_then(|b| b.with_memory_pattern(true).map_err(Into::into))
            .and_then(|b| b.with_intra_op_spinning(!opts.no_spin).map_err(Into::into))
            .map_err(|e: ort::Error| ep_err(e.to_string()))?;
        let mut builder = builder
            .with_execution_providers(providers)
            .map_err(|e| ep_err(e.to_string()))?;
        let session = builder
            .commit_from_memory(bytes)
            .map_err(|e| model_err("cannot load the model", e.to_string()))?;
        let input_name = session
            .inputs()
            .first()
            .map(|i| i.name().to_string())
            .ok_or_else(|| model_err("graph", "it has no input".into()))?;
        let (h, w) = (hw.0 as usize, hw.1 as usize);
        let input = Tensor::from_array(([1usize, 3, h, w], vec![0f32; 3 * h * w]))
            .map_err(|e| model_err("input", e.to_string()))?;
        Ok(Self {
            session,
            input,
            input_name,
            label: match opts.ep {
                Ep::Cpu => "ort-cpu",
                Ep::Cuda => "ort-cuda",
                Ep::Tensorrt => "ort-tensorrt",
            },
        })
    }
}

/// Whether onnxruntime's CPU int8 kernels can use full-range (8-bit) weights on this CPU
/// without saturating: x86-64 without VNNI multiplies u8 activations by s8 weights with
/// `vpmaddubsw`, whose 16-bit pair sums saturate (onnxruntime's quantization guide; measured on
/// `camvid-lite0.onnx`: 56.97 val mIoU with full-range weights against 58.49 on a VNNI CPU).
/// Other architectures (the Jetson's ARM cores) have no such path.
pub fn full_range_int8_is_exact() -> bool {
    seg_core::results::cpu_has_vnni().unwrap_or(true)
}

/// The largest magnitude of the int8 weight initializers of a quantized graph: those read by
/// `DequantizeLinear` (QDQ graphs, input 0), `QLinearConv` / `QLinearMatMul` (input 3) and
/// `ConvInteger` / `MatMulInteger` (input 1); `None` when there are none. Weights in `Constant`
/// nodes or external data are not looked at.
pub fn int8_weight_peak(proto: &seg_onnx::pb::ModelProto) -> Option<u8> {
    let graph = proto.graph.as_ref()?;
    let int8 = seg_onnx::pb::tensor_proto::DataType::Int8 as i32;
    let weights: std::collections::HashMap<&str, &seg_onnx::pb::TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == int8)
        .map(|t| (t.name.as_str(), t))
        .collect();
    graph
        .node
        .iter()
        .filter_map(|n| {
            let slot = match n.op_type.as_str() {
                "DequantizeLinear" => 0,
                "QLinearConv" | "QLinearMatMul" => 3,
                "ConvInteger" | "MatMulInteger" => 1,
                _ => return None,
            };
            weights.get(n.input.get(slot)?.as_str())
        })
        .map(|t| {
            // int8 initializers hold their values in raw_data (one byte each) or int32_data
            let raw = t.raw_data.iter().map(|&b| (b as i8).unsigned_abs());
            let wide = t.int32_data.iter().map(|&v| v.unsigned_abs().min(128) as u8);
            raw.chain(wide).max().unwrap_or(0)
        })
        .max()
}

/// A warning when onnxruntime's CPU kernels will saturate this graph's int8 weights here
/// (full-range weights, an x86-64 CPU without VNNI; see [`full_range_int8_is_exact`]).
pub fn saturation_warning(proto: &seg_onnx::pb::ModelProto) -> Option<String> {
    let peak = int8_weight_peak(proto)?;
    // two u8 × s8 products sum to at most 2 · 255 · 64 = 32,640 ≤ i16::MAX for |w| ≤ 64
    // (onnxruntime's own reduced range is [-64, 64]); larger weights can saturate
    (peak > 64 && !full_range_int8_is_exact()).then(|| {
        format!(
            "its int8 weights use the full range (up to {peak}) and this CPU lacks VNNI: onnxruntime's \
             int8 kernels saturate on them here and lose accuracy; re-quantize with \
             `edge-seg quantize --weight-range reduced` to run it on this CPU"
        )
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        self.label
    }

    fn run(&mut self, input: &[f32]) -> Result<Logits, RuntimeError> {
        let err = |e: ort::Error| RuntimeError::Backend(format!("onnxruntime: {}", one_line(&e.to_string())));
        let (_, buf) = self.input.extract_tensor_mut();
        if buf.len() != input.len() {
            return Err(RuntimeError::Backend(format!(
                "input: {} values for a tensor of {}",
                input.len(),
                buf.len()
            )));
        }
        buf.copy_from_slice(input);
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => &self.input])
            .map_err(err)?;
        if outputs.len() == 0 {
            return Err(RuntimeError::Backend("onnxruntime: the graph gave no output".into()));
        }
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        let s: Vec<i64> = shape.iter().copied().collect();
        Logits::from_output(&s, data.to_vec())
    }
}
