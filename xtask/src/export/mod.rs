//! The model in the formats the rest of the ML world reads: `model.safetensors`, under the
//! names and in the layouts of the equivalent PyTorch module (the README shows it), and
//! `model.onnx`, the whole network from grey pixels to probabilities. Both are written from a
//! burn record (`model.bin`) as trained: f32, BatchNorm kept as BatchNorm.

pub mod onnx;
pub mod safetensors;

use anyhow::{Context, bail, ensure};

/// One trained tensor under its PyTorch name, in PyTorch's layout.
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The PyTorch name of each tensor `model.bin` holds, in the module's order, and whether its
/// layout is the transpose of burn's (a dense layer's weight: burn keeps `[inputs, outputs]`,
/// PyTorch `[outputs, inputs]`). Convolutions are `[out, in, kh, kw]` in both.
const NAMES: [(&str, &str, bool); 18] = [
    ("conv1.weight", "conv1.weight", false),
    ("conv1.bias", "conv1.bias", false),
    ("norm1.gamma", "norm1.weight", false),
    ("norm1.beta", "norm1.bias", false),
    ("norm1.running_mean", "norm1.running_mean", false),
    ("norm1.running_var", "norm1.running_var", false),
    ("conv2.weight", "conv2.weight", false),
    ("conv2.bias", "conv2.bias", false),
    ("norm2.gamma", "norm2.weight", false),
    ("norm2.beta", "norm2.bias", false),
    ("norm2.running_mean", "norm2.running_mean", false),
    ("norm2.running_var", "norm2.running_var", false),
    ("fc1.weight", "fc1.weight", true),
    ("fc1.bias", "fc1.bias", false),
    ("fc2.weight", "fc2.weight", true),
    ("fc2.bias", "fc2.bias", false),
    ("fc3.weight", "fc3.weight", true),
    ("fc3.bias", "fc3.bias", false),
];

/// Every tensor of a burn record of this model, renamed and laid out as PyTorch's.
pub fn torch_tensors(model_bin: &[u8]) -> anyhow::Result<Vec<Tensor>> {
    let tensors = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(model_bin.to_vec()))
        .and_then(burn_pack::Reader::into_tensors)
        .map_err(|e| anyhow::anyhow!("not a burn record: {e}"))?;
    ensure!(tensors.len() == NAMES.len(), "the record holds {} tensors, this model has {}", tensors.len(), NAMES.len());
    NAMES
        .iter()
        .map(|&(burn_name, torch_name, transposed)| {
            let tensor = tensors
                .iter()
                .find(|t| t.name == burn_name)
                .with_context(|| format!("the record has no {burn_name}"))?;
            if tensor.dtype != burn_pack::DType::F32 {
                bail!("{burn_name} is {:?}, not f32", tensor.dtype);
            }
            let bytes = tensor.to_bytes().map_err(|e| anyhow::anyhow!("{burn_name}: {e}"))?;
            let values: Vec<f32> =
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let mut shape = tensor.shape.to_vec();
            ensure!(values.len() == shape.iter().product::<usize>(), "{burn_name}: its data does not fill its shape");
            let values = if transposed {
                let [inputs, outputs] = shape[..] else { bail!("{burn_name} is not a matrix") };
                shape = vec![outputs, inputs];
                (0..outputs * inputs).map(|i| values[(i % inputs) * outputs + i / inputs]).collect()
            } else {
                values
            };
            Ok(Tensor { name: torch_name.to_string(), shape, values })
        })
        .collect()
}
