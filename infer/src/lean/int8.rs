//! [`Int8Model`]: int8 weights computed as int8, straight from the bytes of the format.
//!
//! [`LeanModel`](super::LeanModel) decodes int8 weights into 1 MB of f32 before it runs,
//! which no microcontroller has. This model borrows the int8 bytes where they lie (flash, or
//! the bundle) and applies each row's scale inside the kernels: a sum of int8 weight x f32
//! activation, then `bias + scale x sum`. It allocates nothing. Its feature maps live on the
//! stack, and each convolution is fused with its GELU and 2x2 max-pool, one pooling window
//! and eight output channels at a time, so conv1's 64x26x26 map (173 KB) is never stored:
//! only its pooled 64x13x13 (43 KB) is. A convolution's weights are converted from int8 to
//! f32 eight channels at a time (18 KB for conv2), never all at once.
//!
//! Maps are planar (channel, row, column), as burn lays them out, so weight rows are read in
//! the order the format stores them (`[input][ky][kx]`, fc1's inputs in burn's flatten
//! order). The convolutions vectorise across output channels, each of whose sums adds its
//! inputs, then taps, in order; the dense layers sum in eight explicit lanes. The order of
//! every addition is therefore fixed by the source, not by the compiler.

use super::kernels::{gelu, max, softmax};
use super::weights::{Section, f32s, sections};
use super::{CONV1_SIDE, POOL1_SIDE, Precision};
use crate::{CONV_CHANNELS, FEATURE_SIDE, FEATURES, HIDDEN, IMAGE_SIZE, LoadError, NUM_CLASSES, PIXELS, Prediction};

/// Sums computed side by side: output channels of a convolution (64 is a multiple), partial
/// sums of a dense row (so are the fan-ins, 1600 and 128).
const LANES: usize = 8;
const _: () =
    assert!(CONV_CHANNELS.is_multiple_of(LANES) && FEATURES.is_multiple_of(LANES) && HIDDEN.is_multiple_of(LANES));

/// The model over int8 lean weights it borrows; see the module doc.
#[derive(Debug, Clone, Copy)]
pub struct Int8Model<'w> {
    conv1: Rows<'w>,
    conv2: Rows<'w>,
    fc1: Rows<'w>,
    fc2: Rows<'w>,
    fc3: Rows<'w>,
}

/// One layer's int8 rows with their scales and biases, as bytes of the format.
#[derive(Debug, Clone, Copy)]
struct Rows<'w> {
    fan_in: usize,
    weights: &'w [u8],
    scales: &'w [u8],
    bias: &'w [u8],
}

impl<'w> Rows<'w> {
    fn new(section: &Section<'w>) -> Self {
        Rows { fan_in: section.fan_in, weights: section.weights, scales: section.scales, bias: section.bias }
    }

    /// Row `output`'s weights, its scale and its bias.
    fn row(&self, output: usize) -> (&'w [u8], f32, f32) {
        let f32_at = |bytes: &[u8]| {
            let b = &bytes[4 * output..4 * output + 4];
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        (&self.weights[output * self.fan_in..][..self.fan_in], f32_at(self.scales), f32_at(self.bias))
    }
}

impl<'w> Int8Model<'w> {
    /// Borrows int8 lean weights ([`super::Weights::to_bytes`] with [`Precision::Int8`]).
    /// Refuses another precision, a wrong length, and scales or biases that are not finite.
    pub fn from_bytes(bytes: &'w [u8]) -> Result<Self, LoadError> {
        let (precision, sections) = sections(bytes)?;
        if precision != Precision::Int8 {
            return Err(LoadError::Format(alloc::format!(
                "{} lean weights, not int8: the int8 model computes from int8 weights only",
                precision.name()
            )));
        }
        if sections.iter().flat_map(|s| f32s(s.scales).chain(f32s(s.bias))).any(|v| !v.is_finite()) {
            return Err(LoadError::Format("a scale or bias is NaN or infinite".into()));
        }
        let [conv1, conv2, fc1, fc2, fc3] = sections.each_ref().map(Rows::new);
        Ok(Int8Model { conv1, conv2, fc1, fc2, fc3 })
    }

    /// Classifies one 28x28 grey image (0 = paper, 255 = ink), e.g. from [`crate::preprocess`].
    pub fn classify(&self, grey: &[u8; PIXELS]) -> Prediction {
        Prediction::new(self.probabilities(&grey.map(crate::normalise)), grey)
    }

    /// Class probabilities for one image of [`crate::normalise`]d pixels.
    pub fn probabilities(&self, pixels: &[f32; PIXELS]) -> [f32; NUM_CLASSES] {
        let mut pool1 = [0.0; CONV_CHANNELS * POOL1_SIDE * POOL1_SIDE];
        conv_gelu_pool::<CONV1_SIDE>(pixels, IMAGE_SIZE, &self.conv1, &mut pool1);
        let mut features = [0.0; FEATURES];
        conv_gelu_pool::<{ 2 * FEATURE_SIDE }>(&pool1, POOL1_SIDE, &self.conv2, &mut features);
        let mut hidden1 = [0.0; HIDDEN];
        dense(&features, &self.fc1, &mut hidden1);
        hidden1.iter_mut().for_each(|v| *v = max(*v, 0.0));
        let mut hidden2 = [0.0; HIDDEN];
        dense(&hidden1, &self.fc2, &mut hidden2);
        hidden2.iter_mut().for_each(|v| *v = max(*v, 0.0));
        let mut logits = [0.0; NUM_CLASSES];
        dense(&hidden2, &self.fc3, &mut logits);
        softmax(logits)
    }
}

/// 3x3 convolution without padding, GELU, and 2x2 max-pooling of a planar `(inputs, side,
/// side)` map into a planar `(64, COLUMNS / 2, COLUMNS / 2)` one. Only what pooling reads is
/// computed (conv2's 11th row and column are dropped, as burn drops them), one pooling window
/// at a time: its four sums for [`LANES`] output channels side by side, where they vectorise.
/// Each block of channels has its weights converted from int8 once, into a table of 18 KB
/// (conv2; conv1's is 288 B) that lives while the block is computed.
fn conv_gelu_pool<const COLUMNS: usize>(input: &[f32], side: usize, layer: &Rows, output: &mut [f32]) {
    let pooled = COLUMNS / 2;
    let mut table = [[0.0f32; LANES]; CONV_CHANNELS * 9];
    let table = &mut table[..layer.fan_in];
    for (block, out) in output.chunks_exact_mut(LANES * pooled * pooled).enumerate() {
        let rows: [_; LANES] = core::array::from_fn(|lane| layer.row(block * LANES + lane));
        let (scale, bias) = (rows.map(|(_, scale, _)| scale), rows.map(|(_, _, bias)| bias));
        for (at, weights) in table.iter_mut().enumerate() {
            *weights = rows.map(|(row, _, _)| row[at] as i8 as f32);
        }
        for py in 0..pooled {
            for px in 0..pooled {
                // The window's four pixels, row by row; each sums inputs, then taps, in order.
                let mut sums = [[0.0f32; LANES]; 4];
                for (plane, kernel) in input.chunks_exact(side * side).zip(table.chunks_exact(9)) {
                    for (ky, taps) in kernel.chunks_exact(3).enumerate() {
                        // The window's two input rows under this row of taps, four pixels each.
                        let upper = &plane[(2 * py + ky) * side + 2 * px..][..4];
                        let lower = &plane[(2 * py + ky + 1) * side + 2 * px..][..4];
                        for (kx, w) in taps.iter().enumerate() {
                            let pixels = [upper[kx], upper[kx + 1], lower[kx], lower[kx + 1]];
                            for (sum, pixel) in sums.iter_mut().zip(pixels) {
                                for lane in 0..LANES {
                                    sum[lane] += w[lane] * pixel;
                                }
                            }
                        }
                    }
                }
                // Lane by lane over whole arrays, so GELU vectorises too.
                let [a, b, c, d] = sums.map(|sum| {
                    let mut activated = [0.0f32; LANES];
                    for lane in 0..LANES {
                        activated[lane] = gelu(bias[lane] + scale[lane] * sum[lane]);
                    }
                    activated
                });
                for lane in 0..LANES {
                    out[(lane * pooled + py) * pooled + px] = max(max(a[lane], b[lane]), max(c[lane], d[lane]));
                }
            }
        }
    }
}

/// `output[o] = bias[o] + scale[o] x (row o . input)`, the dot product in [`LANES`] partial sums.
fn dense(input: &[f32], layer: &Rows, output: &mut [f32]) {
    for (o, out) in output.iter_mut().enumerate() {
        let (row, scale, bias) = layer.row(o);
        let mut lanes = [0.0f32; LANES];
        for (x, w) in input.chunks_exact(LANES).zip(row.chunks_exact(LANES)) {
            for lane in 0..LANES {
                lanes[lane] += w[lane] as i8 as f32 * x[lane];
            }
        }
        let sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        *out = bias + scale * sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lean::{LeanModel, Weights};

    /// The committed model's int8 weights, through the f32 decode and computed as int8.
    #[cfg(feature = "record")]
    fn both() -> (alloc::vec::Vec<u8>, LeanModel) {
        let weights = Weights::from_record(include_bytes!("../../../artifacts/model.bin")).unwrap();
        let int8 = weights.to_bytes(Precision::Int8);
        let decoded = LeanModel::from_bytes(&int8).unwrap();
        (int8, decoded)
    }

    #[cfg(feature = "record")]
    #[test]
    fn computing_from_int8_gives_the_decoded_int8_models_probabilities() {
        let (int8, decoded) = both();
        let model = Int8Model::from_bytes(&int8).unwrap();
        for k in 0..16u32 {
            // Strokes of varying slope, thickness and grey: ink where digits have it.
            let image: [u8; PIXELS] = core::array::from_fn(|i| {
                let (y, x) = ((i / IMAGE_SIZE) as i32, (i % IMAGE_SIZE) as i32);
                let d = (y - 14) * (k as i32 % 3 + 1) - (x - 14) * (k as i32 % 5 - 2);
                if d.abs() < 2 + (k % 4) as i32 && (4..24).contains(&y) { 255 - 30 * d.unsigned_abs() as u8 } else { 0 }
            });
            let (ours, reference) = (model.classify(&image), decoded.classify(&image));
            assert_eq!(ours.digit, reference.digit);
            for (a, b) in ours.probabilities.iter().zip(&reference.probabilities) {
                assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", ours.probabilities, reference.probabilities);
            }
        }
    }

    /// A file of `precision` with every weight, scale and bias zero.
    fn zeros(precision: Precision) -> alloc::vec::Vec<u8> {
        let mut bytes = alloc::vec![0; precision.file_bytes()];
        bytes[..8].copy_from_slice(b"LEANWT01");
        bytes[8] = precision as u8;
        bytes
    }

    #[test]
    fn refuses_weights_that_are_not_int8_or_not_finite() {
        assert!(Int8Model::from_bytes(&zeros(Precision::Int8)).is_ok());
        let LoadError::Format(why) = Int8Model::from_bytes(&zeros(Precision::F32)).unwrap_err() else { panic!() };
        assert!(why.contains("not int8"), "{why}");
        let mut nan_scale = zeros(Precision::Int8);
        nan_scale[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(Int8Model::from_bytes(&nan_scale), Err(LoadError::Format(_))));
        assert!(matches!(Int8Model::from_bytes(&zeros(Precision::Int8)[1..]), Err(LoadError::Format(_))));
    }
}
