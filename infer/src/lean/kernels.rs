//! The few kernels this network needs, written so LLVM vectorises them (WASM SIMD128 in the
//! browser, SSE/AVX natively): feature maps keep channels innermost, and every inner loop
//! updates [`BLOCK`] independent output channels from one broadcast input.

use alloc::vec;
use alloc::vec::Vec;

use crate::CONV_CHANNELS;

/// Output channels updated together: four 128-bit vectors.
pub const BLOCK: usize = 16;

/// 3x3 convolution without padding over a `(rows, width, inputs)` map, writing the top-left
/// `(out_rows, out_columns, 64)` of its output (`out_rows` from `output`'s length);
/// `out_columns` must be even.
///
/// Two output columns are computed together so each weight vector loaded serves two pixels.
/// `taps` is `[tap][input][output]`.
pub fn conv3x3(
    input: &[f32],
    width: usize,
    taps: &[f32],
    inputs: usize,
    bias: &[f32; CONV_CHANNELS],
    out_columns: usize,
    output: &mut [f32],
) {
    let out_rows = output.len() / (out_columns * CONV_CHANNELS);
    for lane in (0..CONV_CHANNELS).step_by(BLOCK) {
        let bias: [f32; BLOCK] = bias[lane..lane + BLOCK].try_into().unwrap();
        for y in 0..out_rows {
            for x in (0..out_columns).step_by(2) {
                let (mut left, mut right) = (bias, bias);
                for ky in 0..3 {
                    let row = &input[((y + ky) * width + x) * inputs..];
                    for kx in 0..3 {
                        let a = &row[kx * inputs..(kx + 1) * inputs];
                        let b = &row[(kx + 1) * inputs..(kx + 2) * inputs];
                        let tap = &taps[(ky * 3 + kx) * inputs * CONV_CHANNELS..][..inputs * CONV_CHANNELS];
                        for ((&a, &b), w) in a.iter().zip(b).zip(tap.chunks_exact(CONV_CHANNELS)) {
                            let w: &[f32; BLOCK] = w[lane..lane + BLOCK].try_into().unwrap();
                            for c in 0..BLOCK {
                                left[c] += w[c] * a;
                                right[c] += w[c] * b;
                            }
                        }
                    }
                }
                let at = (y * out_columns + x) * CONV_CHANNELS + lane;
                output[at..at + BLOCK].copy_from_slice(&left);
                output[at + CONV_CHANNELS..at + CONV_CHANNELS + BLOCK].copy_from_slice(&right);
            }
        }
    }
}

/// 2x2 max-pooling of a `(rows, width, 64)` map into `(side, side, 64)`; trailing rows and
/// columns beyond `2 * side` are dropped, as burn does.
pub fn max_pool_2x2(input: &[f32], width: usize, side: usize, output: &mut [f32]) {
    let pixel = |y: usize, x: usize| &input[(y * width + x) * CONV_CHANNELS..][..CONV_CHANNELS];
    for y in 0..side {
        for x in 0..side {
            let out = &mut output[(y * side + x) * CONV_CHANNELS..][..CONV_CHANNELS];
            let (a, b, c, d) =
                (pixel(2 * y, 2 * x), pixel(2 * y, 2 * x + 1), pixel(2 * y + 1, 2 * x), pixel(2 * y + 1, 2 * x + 1));
            for i in 0..CONV_CHANNELS {
                out[i] = max(max(a[i], b[i]), max(c[i], d[i]));
            }
        }
    }
}

/// A dense layer with its weights in blocks of [`BLOCK`] outputs: `[block][input][lane]`,
/// the outputs padded with zero rows to a whole block.
#[derive(Debug, Clone)]
pub struct Dense {
    inputs: usize,
    blocks: Vec<f32>,
    bias: Vec<f32>,
}

impl Dense {
    /// From rows of weights per output; `source(i)` is the row position of kernel input `i`.
    pub fn new(layer: &super::weights::Layer, source: impl Fn(usize) -> usize) -> Self {
        let (inputs, padded) = (layer.fan_in, layer.outputs.next_multiple_of(BLOCK));
        let mut blocks = vec![0.0; padded * inputs];
        let mut bias = vec![0.0; padded];
        for (output, row) in layer.weight.chunks_exact(inputs).enumerate() {
            let (block, lane) = (output / BLOCK, output % BLOCK);
            for input in 0..inputs {
                blocks[(block * inputs + input) * BLOCK + lane] = row[source(input)];
            }
            bias[output] = layer.bias[output];
        }
        Dense { inputs, blocks, bias }
    }

    /// `output` (the padded outputs) = bias + weights x `input`.
    pub fn forward(&self, input: &[f32], output: &mut [f32]) {
        for ((block, bias), out) in self
            .blocks
            .chunks_exact(self.inputs * BLOCK)
            .zip(self.bias.chunks_exact(BLOCK))
            .zip(output.chunks_exact_mut(BLOCK))
        {
            let mut acc: [f32; BLOCK] = bias.try_into().unwrap();
            for (&x, w) in input.iter().zip(block.chunks_exact(BLOCK)) {
                for c in 0..BLOCK {
                    acc[c] += w[c] * x;
                }
            }
            out.copy_from_slice(&acc);
        }
    }
}

pub fn relu_in_place(values: &mut [f32]) {
    for v in values {
        *v = max(*v, 0.0);
    }
}

/// Exact GELU, `x * Φ(x)`, as burn computes it, with [`erf`] evaluated in a form that
/// vectorises (no table, no branch).
#[inline(always)]
pub fn gelu_in_place(values: &mut [f32]) {
    for v in values {
        *v = gelu(*v);
    }
}

#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// erf for f32 as a rational function of x, accurate to a few ulp: erf is ±1 in f32 beyond
/// |x| = 4, and inside it an odd degree-13 over an even degree-8 polynomial fits it (the
/// coefficients are the ones Eigen and XLA use for their vectorised erf).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

pub fn softmax(logits: [f32; crate::NUM_CLASSES]) -> [f32; crate::NUM_CLASSES] {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, max);
    let exps = logits.map(|l| libm::expf(l - top));
    let sum: f32 = exps.iter().sum();
    exps.map(|e| e / sum)
}

/// The larger of two values, in the form that lowers to one SIMD max instruction.
#[inline(always)]
pub fn max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm_to_a_few_ulp() {
        let worst =
            (-60_000..=60_000).map(|i| i as f32 / 10_000.0).map(|x| (erf(x) - libm::erff(x)).abs()).fold(0.0, f32::max);
        assert!(worst < 5e-7, "largest error {worst}");
    }

    #[test]
    fn gelu_is_exact_gelu() {
        for x in [-3.0f32, -0.75, -0.1, 0.0, 0.3, 1.0, 2.5] {
            let mut v = [x];
            gelu_in_place(&mut v);
            let exact = 0.5 * x * (1.0 + libm::erff(x / core::f32::consts::SQRT_2));
            assert!((v[0] - exact).abs() < 1e-6, "gelu({x}) = {} not {exact}", v[0]);
        }
    }
}
