//! A loaded model: its metadata, a backend, and frame → class-map inference.

use std::path::Path;

use image::RgbImage;
use seg_core::meta::ModelMeta;
use seg_core::preprocess::{half_pixel_taps, normalize_into, resize_rgb};

use crate::backend::{Backend, BackendOptions, Logits};
use crate::describe::MetaOverrides;
use crate::RuntimeError;

/// How to load a model: the backend, and values that replace (or, for a model without edge-seg
/// metadata, supply) its description.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// The backend.
    pub backend: BackendOptions,
    /// Classes, input size, normalisation given by the user.
    pub meta: MetaOverrides,
}

impl LoadOptions {
    /// tract, the model's own description.
    pub fn tract() -> Self {
        Self::backend(BackendOptions::tract())
    }

    /// `backend`, the model's own description.
    pub fn backend(backend: BackendOptions) -> Self {
        Self {
            backend,
            meta: MetaOverrides::default(),
        }
    }
}

/// A model ready to segment frames.
pub struct Segmenter {
    /// How to feed the model and draw its output (from the ONNX metadata).
    pub meta: ModelMeta,
    /// Where the model came from (file path or "embedded").
    pub origin: String,
    /// What was assumed about a model without edge-seg metadata (one line), if anything.
    pub warning: Option<String>,
    backend: Box<dyn Backend>,
    input: Vec<f32>,
}

impl Segmenter {
    /// Loads an ONNX file written by `edge-seg-train export` (or any ONNX with the same
    /// metadata keys and a fixed `[1, 3, H, W]` input) on tract.
    pub fn open(path: &Path) -> Result<Self, RuntimeError> {
        Self::open_with(path, &LoadOptions::tract())
    }

    /// Like [`Segmenter::open`], on the backend `opts` asks for.
    pub fn open_with(path: &Path, opts: &LoadOptions) -> Result<Self, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|e| RuntimeError::Model {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes_with(&bytes, &path.display().to_string(), opts)
    }

    /// Loads a model from memory on tract; `origin` names it in errors. The graph is rewritten
    /// for the backend first ([`crate::backend::open`]).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, RuntimeError> {
        Self::load(bytes, origin, true, &LoadOptions::tract())
    }

    /// Like [`Segmenter::from_bytes`], on the backend `opts` asks for.
    pub fn from_bytes_with(bytes: &[u8], origin: &str, opts: &LoadOptions) -> Result<Self, RuntimeError> {
        Self::load(bytes, origin, true, opts)
    }

    /// Like [`Segmenter::from_bytes_with`], but runs the graph exactly as written, final
    /// `Resize` included (for comparisons).
    pub fn from_bytes_unmodified(bytes: &[u8], origin: &str, opts: &LoadOptions) -> Result<Self, RuntimeError> {
        Self::load(bytes, origin, false, opts)
    }

    /// The checks every model passes before a backend sees it: the protobuf decodes, the graph
    /// has nodes and is valid ([`edge_seg_quantize::validate`]), and its metadata (or, for a
    /// foreign model, the graph) describes it ([`crate::describe::describe`]). Returns the
    /// proto with the metadata written in, the description and an optional warning.
    pub fn parse_model(
        bytes: &[u8],
        origin: &str,
        overrides: &crate::describe::MetaOverrides,
    ) -> Result<(seg_onnx::pb::ModelProto, ModelMeta, Option<String>), RuntimeError> {
        let model_err = |reason: String| RuntimeError::Model {
            path: origin.to_string(),
            reason,
        };
        let mut proto = seg_onnx::decode(bytes).map_err(|e| model_err(format!("not a valid ONNX model: {e}")))?;
        if proto.graph.as_ref().is_none_or(|g| g.node.is_empty()) {
            return Err(model_err("not a valid ONNX model: it has no graph nodes".into()));
        }
        if let Some(g) = &proto.graph {
            edge_seg_quantize::validate(g).map_err(|e| model_err(format!("invalid graph: {e}")))?;
        }
        let (meta, warning) = crate::describe::describe(&mut proto, overrides).map_err(model_err)?;
        Ok((proto, meta, warning))
    }

    fn load(bytes: &[u8], origin: &str, rewrite: bool, opts: &LoadOptions) -> Result<Self, RuntimeError> {
        let model_err = |reason: String| RuntimeError::Model {
            path: origin.to_string(),
            reason,
        };
        let (proto, meta, warning) = Self::parse_model(bytes, origin, &opts.meta)?;
        // a graph the checks above let through may still trip an assertion inside a backend:
        // that is this model's error, not a crash
        let backend = crate::pipeline::catch_reported(|| {
            crate::backend::open(proto, origin, meta.input_hw, rewrite, &opts.backend)
        })
        .map_err(|p| {
            model_err(format!(
                "the backend cannot load this graph: {}",
                crate::pipeline::panic_message(p.as_ref())
            ))
        })??;
        let mut seg = Self::with_backend(meta, origin, backend);
        seg.warning = warning;
        Ok(seg)
    }

    /// Wraps an already-built backend.
    pub fn with_backend(meta: ModelMeta, origin: &str, backend: Box<dyn Backend>) -> Self {
        let (h, w) = meta.input_hw;
        Self {
            meta,
            origin: origin.to_string(),
            warning: None,
            backend,
            input: vec![0.0; 3 * h as usize * w as usize],
        }
    }

    /// Replaces the backend (e.g. with an adapted plan); the next frame runs on it.
    pub fn set_backend(&mut self, backend: Box<dyn Backend>) {
        self.backend = backend;
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The frame → input-tensor step, usable on another thread.
    pub fn preprocessor(&self) -> Preprocessor {
        Preprocessor {
            input_hw: self.meta.input_hw,
            mean: self.meta.mean,
            std: self.meta.std,
        }
    }

    /// Runs the backend on a prepared `[1, 3, h, w]` input and checks the class count.
    pub fn infer(&mut self, input: &[f32]) -> Result<Logits, RuntimeError> {
        let l = self.backend.run(input)?;
        if l.classes != self.meta.classes.len() {
            return Err(RuntimeError::Model {
                path: self.origin.clone(),
                reason: format!(
                    "the model outputs {} classes, its metadata names {}",
                    l.classes,
                    self.meta.classes.len()
                ),
            });
        }
        Ok(l)
    }

    /// Class scores at the network resolution (the frame is resized to the network input).
    pub fn logits(&mut self, frame: &RgbImage) -> Result<Logits, RuntimeError> {
        let mut input = std::mem::take(&mut self.input);
        self.preprocessor().run(frame, &mut input);
        let l = self.infer(&input);
        self.input = input;
        l
    }

    /// Class id per pixel of `frame` (row-major, frame resolution): the logits are resized
    /// bilinearly (half-pixel) to the frame before the arg-max.
    pub fn segment(&mut self, frame: &RgbImage) -> Result<Vec<u8>, RuntimeError> {
        let l = self.logits(frame)?;
        Ok(argmax_resized(&l, frame.height() as usize, frame.width() as usize))
    }
}

/// Resize + normalisation of frames into the network input, from the model metadata.
#[derive(Debug, Clone, Copy)]
pub struct Preprocessor {
    /// Network input `(h, w)`.
    pub input_hw: (u32, u32),
    /// Normalisation mean.
    pub mean: [f32; 3],
    /// Normalisation std.
    pub std: [f32; 3],
}

impl Preprocessor {
    /// Fills `out` (`3 * h * w`, resized as needed) with the normalised frame.
    pub fn run(&self, frame: &RgbImage, out: &mut Vec<f32>) {
        let (h, w) = self.input_hw;
        out.resize(3 * h as usize * w as usize, 0.0);
        if frame.dimensions() == (w, h) {
            normalize_into(frame, self.mean, self.std, out);
        } else {
            normalize_into(&resize_rgb(frame, h, w), self.mean, self.std, out);
        }
    }
}

/// Arg-max over classes of the logits resized to `(h, w)`.
pub fn argmax_resized(l: &Logits, h: usize, w: usize) -> Vec<u8> {
    let plane = l.height * l.width;
    if (l.height, l.width) == (h, w) {
        return (0..plane)
            .map(|p| {
                let mut best = (f32::NEG_INFINITY, 0u8);
                for c in 0..l.classes {
                    let v = l.data[c * plane + p];
                    if v > best.0 {
                        best = (v, c as u8);
                    }
                }
                best.1
            })
            .collect();
    }
    let ty = half_pixel_taps(l.height, h);
    let tx = half_pixel_taps(l.width, w);
    let mut out = vec![0u8; h * w];
    let mut best = vec![f32::NEG_INFINITY; w];
    let mut row = vec![0f32; l.width];
    for (y, &(y0, y1, wy)) in ty.iter().enumerate() {
        best.iter_mut().for_each(|b| *b = f32::NEG_INFINITY);
        let out_row = &mut out[y * w..(y + 1) * w];
        for c in 0..l.classes {
            let p = &l.data[c * plane..(c + 1) * plane];
            let (r0, r1) = (
                &p[y0 * l.width..(y0 + 1) * l.width],
                &p[y1 * l.width..(y1 + 1) * l.width],
            );
            for ((v, a), b) in row.iter_mut().zip(r0).zip(r1) {
                *v = a + (b - a) * wy;
            }
            for (x, &(x0, x1, wx)) in tx.iter().enumerate() {
                let v = row[x0] + (row[x1] - row[x0]) * wx;
                if v > best[x] {
                    best[x] = v;
                    out_row[x] = c as u8;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::strip_final_resize;

    /// Two class maps agree on ≥ 99.9 % of pixels (float rounding may flip near-ties).
    fn assert_agree(a: &[u8], b: &[u8]) {
        assert_eq!(a.len(), b.len());
        let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
        assert!(
            same as f64 >= 0.999 * a.len() as f64,
            "{same} of {} pixels agree",
            a.len()
        );
    }

    /// The shipped model ends in a Resize; without it, the runtime's own interpolation gives the
    /// same class map (up to float rounding at near-ties) on a real frame at the network's input
    /// size. (For a frame of another size the two differ by design: the graph as written
    /// interpolates to the network input and the arg-max again to the frame, the stripped graph
    /// once, straight to the frame.)
    #[test]
    fn stripping_the_final_resize_keeps_the_segmentation() {
        let mut proto = seg_onnx::decode(crate::DEFAULT_MODEL).unwrap();
        let stripped = strip_final_resize(&mut proto).expect("the shipped model ends in a Resize");
        assert!(stripped.starts_with("Resize"), "{stripped}");
        assert!(strip_final_resize(&mut proto).is_none(), "the next node is a Conv");
        let mut fast = Segmenter::from_bytes(crate::DEFAULT_MODEL, "m").unwrap();
        let mut full = Segmenter::from_bytes_unmodified(crate::DEFAULT_MODEL, "m", &LoadOptions::tract()).unwrap();
        let (h, w) = (fast.meta.input_hw.0 as usize, fast.meta.input_hw.1 as usize);
        let frame = image::load_from_memory(crate::DEFAULT_SAMPLES[0].1).unwrap().to_rgb8();
        let frame = resize_rgb(&frame, h as u32, w as u32);
        let l = fast.logits(&frame).unwrap();
        // the stride-4 scores: ceil(h / 4) with TF "SAME" padding
        assert_eq!((l.classes, l.height, l.width), (11, h.div_ceil(4), w.div_ceil(4)));
        assert_eq!(full.logits(&frame).unwrap().height, h);
        assert_agree(&fast.segment(&frame).unwrap(), &full.segment(&frame).unwrap());
    }

    /// Issue #22: torchvision's LR-ASPP export computes the size of its final upsampling from
    /// the scores' shape (`Shape → Slice → Concat`); that Resize is stripped as well, and the
    /// runtime's interpolating arg-max gives the graph's class map at the input size.
    #[test]
    fn issue22_foreign_final_resize_is_stripped() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/lraspp_mnv3_w025.onnx"
        ))
        .unwrap();
        let mut proto = seg_onnx::decode(&bytes).unwrap();
        let nodes = proto.graph.as_ref().unwrap().node.len();
        assert!(strip_final_resize(&mut proto).is_some());
        // the Resize and its size computation (Shape, 3 Constants, Slice, a Constant, Concat)
        assert_eq!(proto.graph.as_ref().unwrap().node.len(), nodes - 8);
        let mut fast = Segmenter::from_bytes(&bytes, "tv").unwrap();
        let mut full = Segmenter::from_bytes_unmodified(&bytes, "tv", &LoadOptions::tract()).unwrap();
        let (h, w) = fast.meta.input_hw;
        let frame = image::load_from_memory(crate::DEFAULT_SAMPLES[0].1).unwrap().to_rgb8();
        let frame = resize_rgb(&frame, h, w);
        let l = fast.logits(&frame).unwrap();
        assert_eq!((l.height, l.width), (h as usize / 8, w as usize / 8), "stride-8 scores");
        assert_eq!(full.logits(&frame).unwrap().height, h as usize);
        assert_agree(&fast.segment(&frame).unwrap(), &full.segment(&frame).unwrap());
    }

    /// The int8 (QDQ) graph of the shipped model: with the runtime's rewrites (Q→DQ pairs fused,
    /// Resizes as MatMuls, final Resize stripped) it segments like the graph as written.
    #[test]
    fn rewritten_int8_graph_keeps_the_segmentation() {
        let proto = seg_onnx::decode(crate::DEFAULT_MODEL).unwrap();
        let (h, w) = ModelMeta::from_map(&seg_onnx::metadata(&proto)).unwrap().input_hw;
        // at the network's input size (see the test above)
        let frames: Vec<RgbImage> = crate::DEFAULT_SAMPLES
            .iter()
            .map(|(_, b)| resize_rgb(&image::load_from_memory(b).unwrap().to_rgb8(), h, w))
            .collect();
        let (qdq, _) =
            edge_seg_quantize::quantize_model(&proto, &frames, &edge_seg_quantize::QuantizeOptions::default()).unwrap();
        let bytes = seg_onnx::encode(&qdq);
        let mut rewritten = qdq.clone();
        let hw = seg_core::meta::ModelMeta::from_map(&seg_onnx::metadata(&qdq))
            .unwrap()
            .input_hw;
        let done = crate::rewrite::prepare_graph(&mut rewritten, hw).unwrap();
        assert!(done.fused_qdq >= 20 && done.resizes_as_matmuls == 1, "{done:?}");
        assert!(done.stripped_resize.is_some());
        let mut fast = Segmenter::from_bytes(&bytes, "int8").unwrap();
        let mut full = Segmenter::from_bytes_unmodified(&bytes, "int8", &LoadOptions::tract()).unwrap();
        for frame in &frames {
            assert_agree(&fast.segment(frame).unwrap(), &full.segment(frame).unwrap());
        }
    }

    #[test]
    fn argmax_same_size_and_resized() {
        // 2 classes, 1x2: class 1 wins on the right
        let l = Logits {
            classes: 2,
            height: 1,
            width: 2,
            data: vec![1.0, 0.0, 0.0, 1.0],
        };
        assert_eq!(argmax_resized(&l, 1, 2), vec![0, 1]);
        // upsampled to 1x4: half-pixel: x=0,1 -> left side, x=2,3 -> right side
        assert_eq!(argmax_resized(&l, 1, 4), vec![0, 0, 1, 1]);
        assert_eq!(argmax_resized(&l, 2, 4), vec![0, 0, 1, 1, 0, 0, 1, 1]);
    }
}
