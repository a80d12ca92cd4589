//! [`Weights`]: the folded layers, and their byte format.
//!
//! Format: the magic `LEANWT01`, one precision byte, three zero bytes, then per layer
//! (conv1, conv2, fc1, fc2, fc3) its weights and then its f32 biases, little-endian.
//! Weights are rows per output channel: f32, f16, or for int8 first one f32 scale per row
//! and then the rows as i8 (weight = scale x i8). The layer shapes are the model's, so the
//! file's length is fixed by its precision and checked exactly.

use alloc::format;
use alloc::vec::Vec;

use half::f16;

use crate::{CONV_CHANNELS, FEATURES, HIDDEN, LoadError, NUM_CLASSES};

const MAGIC: &[u8; 8] = b"LEANWT01";
const HEADER: usize = 12;
/// (outputs, inputs per output) of conv1, conv2, fc1, fc2, fc3.
const SHAPES: [(usize, usize); 5] = [
    (CONV_CHANNELS, 9),
    (CONV_CHANNELS, CONV_CHANNELS * 9),
    (HIDDEN, FEATURES),
    (HIDDEN, HIDDEN),
    (NUM_CLASSES, HIDDEN),
];

/// How the weights are stored in the byte format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    /// Symmetric int8, one scale per output channel.
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Int8];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    /// Bytes of one layer's weights: values, plus one scale per row for int8.
    fn layer_bytes(self, outputs: usize, fan_in: usize) -> usize {
        match self {
            Precision::F32 => 4 * outputs * fan_in,
            Precision::F16 => 2 * outputs * fan_in,
            Precision::Int8 => 4 * outputs + outputs * fan_in,
        }
    }

    /// Length of a whole file in this precision.
    pub fn file_bytes(self) -> usize {
        HEADER + SHAPES.iter().map(|&(outputs, fan_in)| self.layer_bytes(outputs, fan_in) + 4 * outputs).sum::<usize>()
    }
}

/// One layer: `outputs` rows of `fan_in` weights, and a bias per output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer {
    pub outputs: usize,
    pub fan_in: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The network's weights with BatchNorm folded into the convolutions; see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    layers: [Layer; 5],
}

impl Weights {
    pub(crate) fn layers(&self) -> &[Layer; 5] {
        &self.layers
    }

    /// Freezes a trained model: BatchNorm (running statistics) folded into the conv before it.
    #[cfg(feature = "burn")]
    pub fn from_model(model: &crate::Model) -> Self {
        Self::from_record(&model.clone().to_bytes()).expect("a model's own record fits the model")
    }

    /// Freezes the model a burn record (`model.bin`) holds, read with burn-pack alone: no burn
    /// runtime is needed, so the edge worker loads `model.bin` itself.
    #[cfg(feature = "record")]
    pub fn from_record(bytes: &[u8]) -> Result<Self, LoadError> {
        let format = |e: burn_pack::Error| LoadError::Format(format!("{e}"));
        let tensors = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(bytes.to_vec()))
            .and_then(burn_pack::Reader::into_tensors)
            .map_err(format)?;
        let values = |name: &str, len: usize| -> Result<Vec<f32>, LoadError> {
            let tensor =
                tensors.iter().find(|t| t.name == name).ok_or_else(|| LoadError::Shape(format!("no tensor {name}")))?;
            if tensor.dtype != burn_pack::DType::F32 {
                return Err(LoadError::Shape(format!("{name} is {:?}, not f32", tensor.dtype)));
            }
            let bytes = tensor.to_bytes().map_err(format)?;
            if bytes.len() != 4 * len {
                return Err(LoadError::Shape(format!("{name} has {} values, the model needs {len}", bytes.len() / 4)));
            }
            let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(LoadError::Format(format!("{name} holds a NaN or infinite value")));
            }
            Ok(values)
        };
        let conv = |conv: &str, norm: &str, fan_in: usize| -> Result<Layer, LoadError> {
            let channels = CONV_CHANNELS;
            let stat = |field: &str| values(&format!("{norm}.{field}"), channels);
            let (gamma, beta, mean, var) = (stat("gamma")?, stat("beta")?, stat("running_mean")?, stat("running_var")?);
            let mut weight = values(&format!("{conv}.weight"), channels * fan_in)?;
            let mut bias = values(&format!("{conv}.bias"), channels)?;
            for c in 0..channels {
                let scale = gamma[c] as f64 / libm::sqrt(var[c] as f64 + crate::BATCH_NORM_EPSILON);
                for w in &mut weight[c * fan_in..(c + 1) * fan_in] {
                    *w = (*w as f64 * scale) as f32;
                }
                bias[c] = ((bias[c] - mean[c]) as f64 * scale + beta[c] as f64) as f32;
            }
            Ok(Layer { outputs: channels, fan_in, weight, bias })
        };
        let dense = |name: &str, (outputs, fan_in): (usize, usize)| -> Result<Layer, LoadError> {
            // burn keeps [inputs, outputs]; rows per output are the transpose.
            let stored = values(&format!("{name}.weight"), fan_in * outputs)?;
            let weight = (0..outputs * fan_in).map(|i| stored[(i % fan_in) * outputs + i / fan_in]).collect();
            Ok(Layer { outputs, fan_in, weight, bias: values(&format!("{name}.bias"), outputs)? })
        };
        Ok(Weights {
            layers: [
                conv("conv1", "norm1", SHAPES[0].1)?,
                conv("conv2", "norm2", SHAPES[1].1)?,
                dense("fc1", SHAPES[2])?,
                dense("fc2", SHAPES[3])?,
                dense("fc3", SHAPES[4])?,
            ],
        })
    }

    /// Whether `bytes` claim to be lean weights (they start with the format's magic).
    pub fn recognises(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// The byte format in `precision`; see the module doc.
    pub fn to_bytes(&self, precision: Precision) -> Vec<u8> {
        let mut out = Vec::with_capacity(precision.file_bytes());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[precision.code(), 0, 0, 0]);
        for layer in &self.layers {
            match precision {
                Precision::F32 => layer.weight.iter().for_each(|w| out.extend_from_slice(&w.to_le_bytes())),
                Precision::F16 => {
                    layer.weight.iter().for_each(|&w| out.extend_from_slice(&f16::from_f32(w).to_le_bytes()))
                }
                Precision::Int8 => {
                    let rows = layer.weight.chunks_exact(layer.fan_in);
                    let scales: Vec<f32> =
                        rows.clone().map(|row| row.iter().fold(0.0f32, |m, w| m.max(w.abs())) / 127.0).collect();
                    scales.iter().for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
                    for (row, &scale) in rows.zip(&scales) {
                        let quantise =
                            |w: f32| if scale == 0.0 { 0 } else { libm::roundf(w / scale).clamp(-127.0, 127.0) as i8 };
                        out.extend(row.iter().map(|&w| quantise(w) as u8));
                    }
                }
            }
            layer.bias.iter().for_each(|b| out.extend_from_slice(&b.to_le_bytes()));
        }
        out
    }

    /// Reads the byte format; any precision. Refuses a wrong magic, precision or length, and
    /// values that are not finite.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        let (precision, sections) = sections(bytes)?;
        let layers = sections.map(|section| {
            let weight = match precision {
                Precision::F32 => f32s(section.weights).collect(),
                Precision::F16 => {
                    section.weights.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                Precision::Int8 => section
                    .weights
                    .chunks_exact(section.fan_in)
                    .zip(f32s(section.scales))
                    .flat_map(|(row, s)| row.iter().map(move |&q| q as i8 as f32 * s))
                    .collect(),
            };
            Layer { outputs: section.outputs, fan_in: section.fan_in, weight, bias: f32s(section.bias).collect() }
        });
        if layers.iter().flat_map(|l| l.weight.iter().chain(&l.bias)).any(|v| !v.is_finite()) {
            return Err(LoadError::Format("a weight is NaN or infinite".into()));
        }
        Ok(Weights { layers })
    }
}

/// One layer's bytes in the format, split but not decoded.
pub(crate) struct Section<'a> {
    pub outputs: usize,
    pub fan_in: usize,
    /// The rows of weights, in the file's precision.
    pub weights: &'a [u8],
    /// For int8, one f32 scale per row; empty otherwise.
    pub scales: &'a [u8],
    /// One f32 per output.
    pub bias: &'a [u8],
}

/// Splits the byte format into its layers after checking its magic, precision and length.
pub(crate) fn sections(bytes: &[u8]) -> Result<(Precision, [Section<'_>; 5]), LoadError> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(LoadError::Format("no LEANWT01 header (not lean weights)".into()));
    }
    let precision = Precision::ALL
        .into_iter()
        .find(|p| p.code() == bytes[8])
        .ok_or_else(|| LoadError::Format(format!("unknown precision code {}", bytes[8])))?;
    if bytes.len() != precision.file_bytes() {
        return Err(LoadError::Shape(format!(
            "{} lean weights take {} bytes, the file has {}",
            precision.name(),
            precision.file_bytes(),
            bytes.len()
        )));
    }
    let mut rest = &bytes[HEADER..];
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head
    };
    let sections = SHAPES.map(|(outputs, fan_in)| {
        let scales = take(if precision == Precision::Int8 { 4 * outputs } else { 0 });
        let weights = take(precision.layer_bytes(outputs, fan_in) - scales.len());
        Section { outputs, fan_in, weights, scales, bias: take(4 * outputs) }
    });
    Ok((precision, sections))
}

/// Little-endian f32s.
pub(crate) fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Weights {
        let mut n = 0u32;
        let layers = SHAPES.map(|(outputs, fan_in)| {
            let mut next = || {
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (n >> 8) as f32 / (1 << 24) as f32 - 0.5
            };
            Layer {
                outputs,
                fan_in,
                weight: (0..outputs * fan_in).map(|_| next()).collect(),
                bias: (0..outputs).map(|_| next()).collect(),
            }
        });
        Weights { layers }
    }

    #[test]
    fn every_precision_round_trips_within_its_resolution() {
        let weights = sample();
        for (precision, tolerance) in
            [(Precision::F32, 0.0), (Precision::F16, 2.5e-4), (Precision::Int8, 0.5 / 127.0 * 0.5 + 1e-7)]
        {
            let bytes = weights.to_bytes(precision);
            assert_eq!(bytes.len(), precision.file_bytes());
            let back = Weights::from_bytes(&bytes).unwrap();
            for (a, b) in weights.layers.iter().zip(&back.layers) {
                assert_eq!(a.bias, b.bias, "biases stay f32");
                let worst = a.weight.iter().zip(&b.weight).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                assert!(worst <= tolerance, "{}: error {worst} > {tolerance}", precision.name());
            }
        }
    }

    #[test]
    fn refuses_what_is_not_lean_weights() {
        let bytes = sample().to_bytes(Precision::Int8);
        let error = |b: &[u8]| Weights::from_bytes(b).unwrap_err();
        assert!(matches!(error(b"LEANWT0"), LoadError::Format(_)));
        assert!(matches!(error(&[b"burnpack".as_slice(), &bytes[8..]].concat()), LoadError::Format(_)));
        assert!(matches!(error(&bytes[..bytes.len() - 1]), LoadError::Shape(_)));
        let mut unknown = bytes.clone();
        unknown[8] = 9;
        assert!(matches!(error(&unknown), LoadError::Format(_)));
        let mut nan = sample().to_bytes(Precision::F32);
        nan[HEADER..HEADER + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(error(&nan), LoadError::Format(_)));
    }
}
