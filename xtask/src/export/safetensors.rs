//! `model.safetensors`: the trained tensors under PyTorch's names, in PyTorch's layouts, so
//! the README's module loads them with `load_state_dict(load_file(...))` as they are.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{Tensor, torch_tensors};

/// The safetensors file of a burn record of this model; `metadata` goes into its header.
pub fn to_bytes(model_bin: &[u8], metadata: HashMap<String, String>) -> anyhow::Result<Vec<u8>> {
    let tensors = torch_tensors(model_bin)?;
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(tensor, data)| Ok((tensor.name.as_str(), TensorView::new(Dtype::F32, tensor.shape.clone(), data)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Reads a safetensors file back with the `safetensors` crate, as f32 tensors by name.
pub fn read(bytes: &[u8]) -> anyhow::Result<Vec<Tensor>> {
    let file = SafeTensors::deserialize(bytes)?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            anyhow::ensure!(view.dtype() == Dtype::F32, "{name} is {:?}, not f32", view.dtype());
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Ok(Tensor { name, shape: view.shape().to_vec(), values })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::committed_model;

    #[test]
    fn every_tensor_reads_back_as_pytorchs_layout_of_model_bin() {
        let model_bin = std::fs::read(committed_model()).unwrap();
        let bytes = to_bytes(&model_bin, HashMap::from([("format".into(), "pt".into())])).unwrap();
        let back = read(&bytes).unwrap();
        let record = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(model_bin))
            .and_then(burn_pack::Reader::into_tensors)
            .unwrap();
        assert_eq!(back.len(), record.len(), "one tensor per tensor of the record");
        for tensor in &record {
            let torch_name = tensor.name.replace(".gamma", ".weight").replace(".beta", ".bias");
            let ours = back.iter().find(|t| t.name == torch_name).unwrap_or_else(|| panic!("no {torch_name}"));
            let bytes = tensor.to_bytes().unwrap();
            let burn: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            if tensor.name.starts_with("fc") && tensor.name.ends_with(".weight") {
                // burn [inputs, outputs], PyTorch [outputs, inputs].
                let (inputs, outputs) = (tensor.shape[0], tensor.shape[1]);
                assert_eq!(ours.shape, [outputs, inputs], "{torch_name}");
                for (i, o) in (0..inputs).flat_map(|i| (0..outputs).map(move |o| (i, o))) {
                    assert_eq!(ours.values[o * inputs + i], burn[i * outputs + o], "{torch_name}[{o}, {i}]");
                }
            } else {
                assert_eq!(ours.shape, tensor.shape.to_vec(), "{torch_name}");
                assert_eq!(ours.values, burn, "{torch_name}");
            }
        }
    }
}
