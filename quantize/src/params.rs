//! Quantization parameters and their arithmetic, following ONNX `QuantizeLinear` /
//! `DequantizeLinear`: `q = saturate(round_half_even(x / scale) + zero_point)`,
//! `x' = (q − zero_point) · scale`.

/// Errors computing quantization parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantError {
    /// The range is empty, inverted or not finite.
    #[error("invalid calibration range [{min}, {max}]")]
    BadRange {
        /// Lower end.
        min: f32,
        /// Upper end.
        max: f32,
    },
}

/// Per-tensor quantization parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    /// Step size.
    pub scale: f32,
    /// The integer that represents 0.0.
    pub zero_point: i32,
    /// Smallest integer.
    pub qmin: i32,
    /// Largest integer.
    pub qmax: i32,
}

impl QParams {
    /// Symmetric int8 (`zero_point = 0`, range `[-127, 127]`), as used for weights.
    pub fn symmetric_i8(abs_max: f32) -> Result<Self, QuantError> {
        if !abs_max.is_finite() || abs_max < 0.0 {
            return Err(QuantError::BadRange {
                min: -abs_max,
                max: abs_max,
            });
        }
        let scale = if abs_max == 0.0 { 1.0 } else { abs_max / 127.0 };
        Ok(Self {
            scale,
            zero_point: 0,
            qmin: -127,
            qmax: 127,
        })
    }

    /// Symmetric 7-bit weights (`zero_point = 0`, range `[-63, 63]` in int8): onnxruntime's
    /// U8S8 kernels on x86 without VNNI add two u8 × s8 products in 16 bits (`vpmaddubsw`),
    /// which saturates for full-range weights (255 · 127 · 2 > 32767) and not for these
    /// (255 · 63 · 2 = 32130); onnxruntime's own quantizer calls this `reduce_range`.
    pub fn symmetric_i7(abs_max: f32) -> Result<Self, QuantError> {
        let full = Self::symmetric_i8(abs_max)?;
        Ok(Self {
            scale: if abs_max == 0.0 { 1.0 } else { abs_max / 63.0 },
            qmin: -63,
            qmax: 63,
            ..full
        })
    }

    /// Symmetric int8 for activations (`zero_point = 0`, scale `abs_max / 127`, but the full
    /// `[-128, 127]` range that ONNX `QuantizeLinear` saturates to), as TensorRT wants them.
    pub fn symmetric_i8_activation(abs_max: f32) -> Result<Self, QuantError> {
        Ok(Self {
            qmin: -128,
            ..Self::symmetric_i8(abs_max)?
        })
    }

    /// Asymmetric uint8 over `[min, max]` (widened to contain 0 so that zero is exact), as
    /// used for activations.
    pub fn asymmetric_u8(min: f32, max: f32) -> Result<Self, QuantError> {
        if !(min.is_finite() && max.is_finite()) || min > max {
            return Err(QuantError::BadRange { min, max });
        }
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32;
        Ok(Self {
            scale,
            zero_point,
            qmin: 0,
            qmax: 255,
        })
    }

    /// `QuantizeLinear` of one value.
    pub fn quantize(&self, x: f32) -> i32 {
        ((x / self.scale).round_ties_even() as i64 + self.zero_point as i64).clamp(self.qmin as i64, self.qmax as i64)
            as i32
    }

    /// `DequantizeLinear` of one value.
    pub fn dequantize(&self, q: i32) -> f32 {
        (q - self.zero_point) as f32 * self.scale
    }

    /// Quantize then dequantize (the value a QDQ pair passes on).
    pub fn fake_quant(&self, x: f32) -> f32 {
        self.dequantize(self.quantize(x))
    }

    /// The representable range `[lo, hi]`.
    pub fn range(&self) -> (f32, f32) {
        (self.dequantize(self.qmin), self.dequantize(self.qmax))
    }
}

/// Signal-to-quantization-noise ratio in dB between a reference and its approximation.
pub fn sqnr_db(reference: &[f32], approx: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&v| (v as f64).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(approx)
        .map(|(&a, &b)| ((a - b) as f64).powi(2))
        .sum();
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_at_most_half_a_step_inside_the_range() {
        for (lo, hi) in [(-1.0f32, 3.0f32), (0.0, 6.0), (-0.2, 0.1)] {
            let q = QParams::asymmetric_u8(lo, hi).unwrap();
            let (rlo, rhi) = q.range();
            assert!(rlo <= lo + 1e-6 && rhi >= hi - q.scale);
            assert_eq!(q.fake_quant(0.0), 0.0, "zero must be exact");
            for i in 0..=1000 {
                let x = lo + (hi - lo) * i as f32 / 1000.0;
                if x <= rhi {
                    assert!((q.fake_quant(x) - x).abs() <= q.scale / 2.0 + 1e-6, "{x}");
                }
            }
        }
        let w = QParams::symmetric_i8(0.5).unwrap();
        for i in -100..=100 {
            let x = 0.5 * i as f32 / 100.0;
            assert!((w.fake_quant(x) - x).abs() <= w.scale / 2.0 + 1e-7);
        }
    }

    #[test]
    fn saturates_and_rounds_half_to_even_like_onnx() {
        let r = QParams::symmetric_i7(6.3).unwrap();
        assert_eq!((r.quantize(6.3), r.quantize(-100.0), r.quantize(0.1)), (63, -63, 1));
        let q = QParams::symmetric_i8(127.0).unwrap();
        assert_eq!(q.scale, 1.0);
        assert_eq!(q.quantize(1000.0), 127);
        assert_eq!(q.quantize(-1000.0), -127);
        assert_eq!(q.quantize(2.5), 2);
        assert_eq!(q.quantize(3.5), 4);
    }

    #[test]
    fn bad_ranges_are_errors() {
        assert!(QParams::asymmetric_u8(1.0, -1.0).is_err());
        assert!(QParams::asymmetric_u8(f32::NAN, 1.0).is_err());
        assert!(QParams::symmetric_i8(f32::INFINITY).is_err());
    }

    #[test]
    fn sqnr() {
        let r = [1.0f32, -1.0, 2.0];
        assert_eq!(sqnr_db(&r, &r), f64::INFINITY);
        let a = [1.1f32, -1.0, 2.0];
        assert!((sqnr_db(&r, &a) - 10.0 * (6.0f64 / 0.01).log10()).abs() < 1e-3);
    }
}
